package tiny

import (
	"math"
	"sort"
	"testing"
)

// testDet is one detection of testNMS: a box in input pixels, score and
// class.
type testDet struct {
	box   [4]float64
	score float64
	class int
}

// testNMS decodes raw lead outputs (per level 1 x NA x H x W x NO) as the
// official IDetect inference (xy = (2σ-0.5+grid)·stride, wh = (2σ)²·anchor,
// score = σ(obj)·σ(cls)) and keeps the best class per box above conf,
// then greedy per-class NMS at IoU iou. A minimal test-side twin of
// infer's decoder (which tiny cannot import).
func testNMS(spec *Spec, nc, size int, outs [][]float32, conf, iou float64) []testDet {
	sig := func(v float32) float64 { return 1 / (1 + math.Exp(-float64(v))) }
	no := 5 + nc
	var cands []testDet
	for l, o := range outs {
		s := spec.Strides[l]
		g := size / s
		for a := range spec.NumAnchors() {
			for i := range g {
				for j := range g {
					p := o[((a*g+i)*g+j)*no:][:no]
					best, bc := 0.0, 0
					for c := range nc {
						if v := sig(p[4]) * sig(p[5+c]); v > best {
							best, bc = v, c
						}
					}
					if best <= conf {
						continue
					}
					cx := (2*sig(p[0]) - 0.5 + float64(j)) * float64(s)
					cy := (2*sig(p[1]) - 0.5 + float64(i)) * float64(s)
					w := math.Pow(2*sig(p[2]), 2) * float64(spec.Anchors[l][a][0])
					h := math.Pow(2*sig(p[3]), 2) * float64(spec.Anchors[l][a][1])
					cands = append(cands, testDet{[4]float64{cx - w/2, cy - h/2, cx + w/2, cy + h/2}, best, bc})
				}
			}
		}
	}
	sort.SliceStable(cands, func(x, y int) bool { return cands[x].score > cands[y].score })
	area := func(b [4]float64) float64 { return (b[2] - b[0]) * (b[3] - b[1]) }
	var keep []testDet
	for _, c := range cands {
		ok := true
		for _, k := range keep {
			if k.class != c.class {
				continue
			}
			iw := math.Min(c.box[2], k.box[2]) - math.Max(c.box[0], k.box[0])
			ih := math.Min(c.box[3], k.box[3]) - math.Max(c.box[1], k.box[1])
			if iw > 0 && ih > 0 && iw*ih/(area(c.box)+area(k.box)-iw*ih) > iou {
				ok = false
				break
			}
		}
		if ok {
			keep = append(keep, c)
		}
	}
	return keep
}

// testSameDets fails unless a and b hold the same detections as
// multisets (class equal, box corners within boxTol px, scores within
// scoreTol); the order may differ where scores tie within rounding.
func testSameDets(t *testing.T, what string, a, b []testDet, boxTol, scoreTol float64) {
	t.Helper()
	if len(a) != len(b) {
		t.Fatalf("%s: %d detections, want %d", what, len(a), len(b))
	}
	used := make([]bool, len(b))
	for i := range a {
		found := false
		for j := range b {
			if used[j] || a[i].class != b[j].class || math.Abs(a[i].score-b[j].score) > scoreTol {
				continue
			}
			d := 0.0
			for k := range 4 {
				d = math.Max(d, math.Abs(a[i].box[k]-b[j].box[k]))
			}
			if d <= boxTol {
				used[j], found = true, true
				break
			}
		}
		if !found {
			t.Fatalf("%s: detection %d %+v has no match", what, i, a[i])
		}
	}
}

// TestTrainAndDeployGiveSameDetections runs the training form and its
// deploy fold through decode + NMS (conf 0.001, IoU 0.65 as test.py) on
// random models and expects identical detection lists.
func TestTrainAndDeployGiveSameDetections(t *testing.T) {
	for _, spec := range testSpecs(t)[1:] {
		for _, act := range []Act{ActReLU, ActLeaky} {
			tm, err := NewTrainModel(spec, act, 3, 11)
			if err != nil {
				t.Fatal(err)
			}
			trainRandomize(tm, 11)
			dm, err := tm.Deploy()
			if err != nil {
				t.Fatal(err)
			}
			in := trainInput(160)
			got, err := tm.Forward(NewCPU(2), in, 160)
			if err != nil {
				t.Fatal(err)
			}
			a := testNMS(&spec, 3, 160, got.Lead, 0.001, 0.65)
			b := testNMS(&spec, 3, 160, deployForward(t, dm, in, 160), 0.001, 0.65)
			if len(b) == 0 {
				t.Fatalf("%s %s: no detections to compare", spec.Name, act)
			}
			t.Logf("%s %s: %d detections", spec.Name, act, len(b))
			testSameDets(t, spec.Name+" "+string(act), a, b, 0.01, 1e-4)
		}
	}
}
