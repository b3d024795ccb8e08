package infer

import (
	"fmt"
	"math"
	"testing"
)

// Tolerances of MANIFEST section 5: same class, box within 0.1 px, conf
// within 1e-4.
const (
	boxTol  = 0.1
	confTol = 1e-4
)

func rowMatches(c Candidate, g []float32) bool {
	return int(g[5]) == c.Class &&
		math.Abs(float64(c.X1-g[0])) <= boxTol && math.Abs(float64(c.Y1-g[1])) <= boxTol &&
		math.Abs(float64(c.X2-g[2])) <= boxTol && math.Abs(float64(c.Y2-g[3])) <= boxTol &&
		math.Abs(float64(c.Score-g[4])) <= confTol
}

func TestDecodeNMSGolden(t *testing.T) {
	cases := []struct {
		conf  float32
		iou   float32
		multi bool
		file  string
	}{
		{0.25, 0.45, false, "nms_c0.25_i0.45"},
		{0.001, 0.65, false, "nms_c0.001_i0.65"},
		{0.001, 0.65, true, "nms_c0.001_i0.65_multilabel"},
	}
	for _, variant := range []string{"relu", "leaky"} {
		raw := loadRaw(t, variant)
		// Shuffle the outputs: levels must be found by H, not by order.
		raw[0], raw[2] = raw[2], raw[0]
		var d Decoder
		for _, c := range cases {
			name := variant + "_" + c.file
			t.Run(name, func(t *testing.T) {
				gold := loadTensor(t, name+".npy")
				o := NMSOptions{Conf: c.conf, IoU: IoUThreshold(c.iou), MultiLabel: c.multi, MaxDet: 300}
				got, err := d.Decode(raw, o)
				if err != nil {
					t.Fatal(err)
				}
				compareNMS(t, got, gold)
			})
		}
	}
}

// compareNMS compares got with the golden rows as sets. When the golden
// file is capped at 300 rows, rows whose score is within confTol of the
// 300th (lowest) golden score may be swapped for another near-tied row:
// the cap cuts through nearly equal scores (MANIFEST section 5). Nothing
// else may differ, and the result must be sorted by score.
func compareNMS(t *testing.T, got []Candidate, gold *Tensor) {
	t.Helper()
	n := gold.Shape[0]
	capped := n == 300
	if len(got) != n {
		t.Errorf("got %d detections, golden has %d", len(got), n)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Score > got[i-1].Score {
			t.Fatalf("not sorted: score[%d]=%v > score[%d]=%v", i, got[i].Score, i-1, got[i-1].Score)
		}
	}
	capScore := gold.Data[(n-1)*6+4]
	m := matchNMS(got, gold)
	used := m.used
	var maxBox, maxConf float64
	for r, found := range m.found {
		g := gold.Data[r*6 : r*6+6]
		if found < 0 {
			if capped && math.Abs(float64(g[4]-capScore)) <= confTol {
				t.Logf("golden row %d (cls %v, conf %.6g) not in ours: tie at the 300 cap (cap score %.6g)", r, g[5], g[4], capScore)
				continue
			}
			t.Errorf("golden row %d %v not found (closest: %s)", r, g, closest(got, g))
			continue
		}
		c := got[found]
		for k, v := range []float32{c.X1, c.Y1, c.X2, c.Y2} {
			maxBox = math.Max(maxBox, math.Abs(float64(v-g[k])))
		}
		maxConf = math.Max(maxConf, math.Abs(float64(c.Score-g[4])))
	}
	inOrder, unmatched := m.inOrder, m.missing
	for i, u := range used {
		if !u {
			c := got[i]
			if capped && math.Abs(float64(c.Score-capScore)) <= confTol {
				continue
			}
			t.Errorf("our row %d %+v not in golden", i, c)
		}
	}
	t.Logf("%d golden rows, %d ours, %d matched in the same position, %d unmatched (ties at cap), max box diff %.3g px, max conf diff %.3g",
		n, len(got), inOrder, unmatched, maxBox, maxConf)
}

// nmsMatch is how golden NMS rows map onto ours: found[r] is the index of
// our row matching golden row r (-1 when none), used marks our rows taken.
type nmsMatch struct {
	found            []int
	used             []bool
	inOrder, missing int
}

// matchNMS matches golden rows to ours greedily: a golden row takes our row
// at the same position when it matches (rowMatches), else the first unused
// one that does.
func matchNMS(got []Candidate, gold *Tensor) nmsMatch {
	n := gold.Shape[0]
	m := nmsMatch{found: make([]int, n), used: make([]bool, len(got))}
	for r := 0; r < n; r++ {
		g := gold.Data[r*6 : r*6+6]
		found := -1
		if r < len(got) && !m.used[r] && rowMatches(got[r], g) {
			found = r
			m.inOrder++
		} else {
			for i := range got {
				if !m.used[i] && rowMatches(got[i], g) {
					found = i
					break
				}
			}
		}
		m.found[r] = found
		if found < 0 {
			m.missing++
			continue
		}
		m.used[found] = true
	}
	return m
}

func closest(got []Candidate, g []float32) string {
	best, bd := -1, math.Inf(1)
	for i, c := range got {
		d := math.Abs(float64(c.X1-g[0])) + math.Abs(float64(c.Y1-g[1])) + math.Abs(float64(c.X2-g[2])) + math.Abs(float64(c.Y2-g[3]))
		if d < bd {
			best, bd = i, d
		}
	}
	if best < 0 {
		return "none"
	}
	return fmt.Sprintf("row %d %+v, L1 box distance %.3g", best, got[best], bd)
}
