package finetune

import (
	"math"
	"math/rand"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/yolo7d/yolo7d/tiny/tinytest"
)

// ltIntermediates is assignment_intermediates.json (s05).
type ltIntermediates struct {
	Lead []ltImageIntermediates `json:"lead_build_targets"`
	Aux  []ltImageIntermediates `json:"aux_build_targets2"`
}

// ltImageIntermediates is the matcher's state for one image.
type ltImageIntermediates struct {
	Image      int         `json:"image"`
	GTs        []int       `json:"gt_target_indices"`
	Candidates [][6]int    `json:"candidates"`
	IoU        [][]float64 `json:"pair_wise_iou"`
	Cost       [][]float64 `json:"cost"`
	TopK       int         `json:"topk_for_dynamic_k"`
	DynamicK   []int       `json:"dynamic_k"`
}

// TestAssignAllGoldenMatches checks the lead and aux assignments of every
// golden case as multisets per level; TestLossGolden does it too, this
// test only reports the counts so a failure there is easy to place.
func TestAssignAllGoldenMatches(t *testing.T) {
	root := tinytest.GoldenOrSkip(t, "train")
	for _, name := range ltGoldenCases {
		c := ltLoadCase(t, root, name)
		l, err := NewLoss(c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		_, asg, err := l.Compute(c.lead, c.aux, c.batch, c.h, c.w, c.targets, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := &c.asg.ltLevelsJSON
		if st := c.meta.Determinism.Stable; st != nil && !st.Identical {
			want = c.asg.Stable
		}
		ltCompareMatches(t, name+" lead", asg.Lead, want.Lead)
		n := 0
		for _, m := range asg.Lead {
			n += len(m)
		}
		na := 0
		if c.cfg.Aux {
			ltCompareMatches(t, name+" aux", asg.Aux, want.Aux)
			for _, m := range asg.Aux {
				na += len(m)
			}
		}
		t.Logf("%s: %d lead and %d aux positives", name[:3], n, na)
	}
}

// TestAssignIntermediatesS05 compares the candidates (in official column
// order), IoUs, costs and dynamic k of s05 with the official values.
func TestAssignIntermediatesS05(t *testing.T) {
	root := tinytest.GoldenOrSkip(t, "train")
	c := ltLoadCase(t, root, ltGoldenCases[4])
	var want ltIntermediates
	ltReadJSON(t, filepath.Join(c.dir, "assignment_intermediates.json"), &want)
	l, err := NewLoss(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	l.trace = &otaTrace{}
	if _, _, err := l.Compute(c.lead, c.aux, c.batch, c.h, c.w, c.targets, nil, nil); err != nil {
		t.Fatal(err)
	}
	var got [2][]otaImageTrace
	for _, im := range l.trace.images {
		k := 0
		if im.aux {
			k = 1
		}
		got[k] = append(got[k], im)
	}
	var maxIoU, maxCost float64
	for k, ws := range [2][]ltImageIntermediates{want.Lead, want.Aux} {
		head := [2]string{"lead", "aux"}[k]
		if len(got[k]) != len(ws) {
			t.Fatalf("%s: %d images traced, want %d", head, len(got[k]), len(ws))
		}
		for i, w := range ws {
			g := got[k][i]
			if g.image != w.Image || !reflect.DeepEqual(g.gts, w.GTs) {
				t.Fatalf("%s image %d: gts %v, want image %d gts %v", head, g.image, g.gts, w.Image, w.GTs)
			}
			if !reflect.DeepEqual(g.cands, w.Candidates) {
				t.Errorf("%s image %d: candidates differ\n got  %v\n want %v", head, w.Image, g.cands, w.Candidates)
				continue
			}
			if w.TopK != 20 {
				t.Errorf("%s image %d: top-k %d, want 20 for AuxOTA", head, w.Image, w.TopK)
			}
			if !reflect.DeepEqual(g.dynK, w.DynamicK) {
				t.Errorf("%s image %d: dynamic k %v, want %v", head, w.Image, g.dynK, w.DynamicK)
			}
			n := len(w.Candidates)
			for r := range w.IoU {
				for j := 0; j < n; j++ {
					maxIoU = math.Max(maxIoU, math.Abs(g.iou[r*n+j]-w.IoU[r][j]))
					e := ltRelErr(g.cost[r*n+j], w.Cost[r][j])
					maxCost = math.Max(maxCost, e)
				}
			}
		}
	}
	if maxIoU > 1e-6 || maxCost > 1e-5 {
		t.Errorf("max IoU error %.3g, max cost rel error %.3g", maxIoU, maxCost)
	}
	t.Logf("max |IoU − official| %.3g, max cost rel error %.3g", maxIoU, maxCost)
}

// ltTestLoss returns a yolov7-tiny loss for nc classes.
func ltTestLoss(t *testing.T, nc int, aux bool) *Loss {
	t.Helper()
	l, err := NewLoss(LossConfig{NC: nc, Anchors: ltAnchors, Strides: []int{8, 16, 32}, Gains: Gains{Box: 0.05, Obj: 1, Cls: 0.5}, Aux: aux})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// ltCells renders candidates as (anchor, gj, gi, target) for comparisons.
func ltCells(cs []otaCand) [][4]int {
	var out [][4]int
	for _, c := range cs {
		out = append(out, [4]int{int(c.anchor), int(c.gj), int(c.gi), int(c.target)})
	}
	return out
}

// TestAssignFindPositive checks the candidate rules: float32 boundaries,
// the exact-integer duplicate, border limits, the anchor filter and the
// official order.
func TestAssignFindPositive(t *testing.T) {
	l := ltTestLoss(t, 3, false)
	// Level 1 (stride 16), a 20×20 grid (320 px). A box of 62×45 px fits
	// anchor 1 exactly; anchors 0 (30×61) and 2 (59×119) are within 4×.
	w, h := float32(62.0/320), float32(45.0/320)
	tests := []struct {
		name string
		x, y float32
		g    float32
		want [][4]int // for anchor 0 only (all three anchors pass)
	}{
		// 0.525f·20 rounds to 10.5 in float32: no left/right neighbour
		// (10.49999952 in float64 would add the left one).
		{"float32 10.5", 0.525, 0.3125, 0.5, [][4]int{{0, 6, 10, 0}, {0, 5, 10, 0}}},
		// 0.05f·20 is exactly 1.0: "gx > 1" fails, so no left neighbour
		// (1.0000000149 in float64 would add it); gxi = 19 is an integer,
		// so "right" is taken and is floor(1.5) = 1, the centre again.
		{"float32 1.0", 0.05, 0.3125, 0.5, [][4]int{{0, 6, 1, 0}, {0, 5, 1, 0}, {0, 6, 1, 0}}},
		// An exact integer centre (gx = 8): left (7) and right (8, the
		// centre again) are both taken: a duplicate.
		{"integer centre", 0.4, 0.3125, 0.5, [][4]int{{0, 6, 8, 0}, {0, 6, 7, 0}, {0, 5, 8, 0}, {0, 6, 8, 0}}},
		// find_5_positive: all 4 neighbours away from the borders.
		{"five", 0.33, 0.61, 1.0, [][4]int{{0, 12, 6, 0}, {0, 12, 5, 0}, {0, 11, 6, 0}, {0, 12, 7, 0}, {0, 13, 6, 0}}},
		// find_5_positive within 1 of the left/top border: gx = 0.8.
		{"five border", 0.04, 0.04, 1.0, [][4]int{{0, 0, 0, 0}, {0, 0, 1, 0}, {0, 1, 0, 0}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := []Target{{X: tc.x, Y: tc.y, W: w, H: h}}
			cs := l.findPositive(1, 20, 20, tg, tc.g, nil)
			var a0 [][4]int
			for _, c := range ltCells(cs) {
				if c[0] == 0 {
					a0 = append(a0, c)
				}
			}
			if !reflect.DeepEqual(a0, tc.want) {
				t.Fatalf("anchor-0 candidates %v, want %v (all %v)", a0, tc.want, ltCells(cs))
			}
			if len(cs) != 3*len(tc.want) {
				t.Fatalf("%d candidates, want %d (every anchor passes the filter)", len(cs), 3*len(tc.want))
			}
		})
	}

	// Order: offset, then anchor, then target; the anchor filter drops a
	// 2-pixel box everywhere.
	tg := []Target{
		{X: 0.33, Y: 0.61, W: w, H: h},
		{X: 0.5, Y: 0.5, W: 2.0 / 320, H: 2.0 / 320},
		{Image: 1, X: 0.71, Y: 0.27, W: w, H: h},
	}
	cs := l.findPositive(1, 20, 20, tg, 0.5, nil)
	for _, c := range cs {
		if c.target == 1 {
			t.Fatalf("the 2 px box produced a candidate %+v", c)
		}
	}
	// gx 6.6 → right (7), gy 12.2 → up (11); gx 14.2 → left (13), gy 5.4 → up (4).
	want := [][4]int{
		{0, 12, 6, 0}, {0, 5, 14, 2}, {1, 12, 6, 0}, {1, 5, 14, 2}, {2, 12, 6, 0}, {2, 5, 14, 2}, // centre
		{0, 5, 13, 2}, {1, 5, 13, 2}, {2, 5, 13, 2}, // left
		{0, 11, 6, 0}, {0, 4, 14, 2}, {1, 11, 6, 0}, {1, 4, 14, 2}, {2, 11, 6, 0}, {2, 4, 14, 2}, // up
		{0, 12, 7, 0}, {1, 12, 7, 0}, {2, 12, 7, 0}, // right
	}
	if got := ltCells(cs); !reflect.DeepEqual(got, want) {
		t.Fatalf("candidates\n got  %v\n want %v", got, want)
	}
	if cs[1].image != 1 || cs[0].image != 0 {
		t.Fatalf("image indices %d, %d", cs[0].image, cs[1].image)
	}
}

// TestAssignFixedWHSquare checks that FixedWH changes nothing on a square
// batch, and that the official H scaling differs on a non-square one.
func TestAssignFixedWHSquare(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	cfg, lead, _, tg, batch, h, _ := ltSynthCase(rng, 3, true, 1.5)
	// Square: drop the aux head and use a 64×64 crop of the levels.
	cfg.Aux = false
	sq := make([]Level, len(lead))
	for i, lv := range lead {
		ny := lv.NY
		d := make([]float32, batch*3*ny*ny*(5+cfg.NC))
		for k := range d {
			d[k] = float32(rng.NormFloat64())
		}
		sq[i] = Level{Data: d, NY: ny, NX: ny}
	}
	run := func(fixed bool, lv []Level, w int) (LossItems, *Assignment) {
		c := cfg
		c.FixedWH = fixed
		l, err := NewLoss(c)
		if err != nil {
			t.Fatal(err)
		}
		it, asg, err := l.Compute(lv, nil, batch, h, w, tg, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		return it, asg
	}
	a, asgA := run(false, sq, h)
	b, asgB := run(true, sq, h)
	if a != b || !reflect.DeepEqual(asgA, asgB) {
		t.Fatalf("FixedWH changed a square batch: %+v vs %+v", a, b)
	}
	c, _ := run(false, lead, 96)
	d, _ := run(true, lead, 96)
	if c == d {
		t.Logf("note: the non-square synthetic case did not change with FixedWH (%+v)", c)
	}
}

// TestAssignStableTies checks the stable top-k on exact ties: duplicate
// columns (two identical targets) with k smaller than the tie group take
// the lowest columns, and the conflict rule gives each column to the first
// gt of minimal cost.
func TestAssignStableTies(t *testing.T) {
	l := ltTestLoss(t, 3, false)
	// One image, 64×64; two identical targets: every candidate appears
	// twice (once per target) with identical cost for both gts.
	ny := []int{8, 4, 2}
	lead := make([]Level, 3)
	for i := range lead {
		d := make([]float32, 3*ny[i]*ny[i]*8)
		lead[i] = Level{Data: d, NY: ny[i], NX: ny[i]}
	}
	tg := []Target{
		{X: 0.3, Y: 0.45, W: 0.3, H: 0.4, Class: 1},
		{X: 0.3, Y: 0.45, W: 0.3, H: 0.4, Class: 1},
	}
	l.trace = &otaTrace{}
	_, asg, err := l.Compute(lead, nil, 1, 64, 64, tg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := l.trace.images[0]
	n := len(tr.cands)
	// Both gts see identical rows: both select the same columns, and every
	// conflict goes to gt 0 (the first minimum), so target 1 never appears.
	for j := 0; j < n; j++ {
		if tr.cost[j] != tr.cost[n+j] {
			t.Fatalf("column %d: costs %v and %v differ for identical targets", j, tr.cost[j], tr.cost[n+j])
		}
	}
	total := 0
	for _, lv := range asg.Lead {
		for _, m := range lv {
			total++
			if m.Target != 0 {
				t.Fatalf("match %+v went to target 1; ties go to the first gt", m)
			}
		}
	}
	// Stable: inside each group of equal-cost columns the selected ones
	// are the lowest indices. Recompute the selection of gt 0.
	k := tr.dynK[0]
	if total != k {
		t.Fatalf("%d positives, want dynamic k %d", total, k)
	}
	sel := map[int]bool{}
	for _, lv := range asg.Lead {
		for _, m := range lv {
			for j, c := range tr.cands {
				if !sel[j] && c[2] == m.Anchor && c[3] == m.GJ && c[4] == m.GI && tr.cost[j] == tr.cost[j] && c[0] == ltLevelOf(asg, m) {
					sel[j] = true
					break
				}
			}
		}
	}
	for j := 0; j < n; j++ {
		for i := 0; i < n; i++ {
			if sel[j] && !sel[i] && otaCostLess(tr.cost[i], int32(i), tr.cost[j], int32(j)) {
				t.Fatalf("column %d (cost %v) selected but column %d (cost %v) ranks before it", j, tr.cost[j], i, tr.cost[i])
			}
		}
	}
}

// ltLevelOf returns the level whose list holds m.
func ltLevelOf(asg *Assignment, m Match) int {
	for i, lv := range asg.Lead {
		for _, x := range lv {
			if x == m {
				return i
			}
		}
	}
	return -1
}

// TestAssignCostLess checks the stable order with NaN last.
func TestAssignCostLess(t *testing.T) {
	nan := math.NaN()
	cases := []struct {
		a    float64
		ia   int32
		b    float64
		ib   int32
		want bool
	}{
		{1, 5, 2, 1, true},
		{2, 1, 1, 5, false},
		{1, 1, 1, 2, true},
		{1, 2, 1, 1, false},
		{math.Inf(1), 0, nan, 1, true},
		{nan, 0, math.Inf(1), 1, false},
		{nan, 0, nan, 1, true},
		{nan, 1, nan, 0, false},
	}
	for _, c := range cases {
		if got := otaCostLess(c.a, c.ia, c.b, c.ib); got != c.want {
			t.Errorf("otaCostLess(%v,%d,%v,%d) = %v", c.a, c.ia, c.b, c.ib, got)
		}
	}
}
