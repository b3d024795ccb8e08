package tiny

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// trainRandomize gives tm random BN statistics and affines, random RepConv
// 1x1 branches and random implicits, so folding has work to do.
func trainRandomize(tm *TrainModel, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 99))
	bn := func(b *BatchNorm) {
		for o := range b.Weight {
			b.Weight[o] = float32(0.7 + 0.6*rng.Float64())
			b.Bias[o] = float32(0.1 * rng.NormFloat64())
			b.Mean[o] = float32(0.1 * rng.NormFloat64())
			b.Var[o] = float32(0.6 + 0.8*rng.Float64())
		}
	}
	for i := range tm.Convs {
		c := &tm.Convs[i]
		bn(&c.BN)
		if c.Point != nil {
			for j := range c.Point.Weight {
				c.Point.Weight[j] = float32(0.05 * rng.NormFloat64())
			}
			bn(&c.Point.BN)
		}
	}
	for i := range tm.Heads {
		h := &tm.Heads[i]
		for j := range h.IA {
			h.IA[j] = float32(0.05 * rng.NormFloat64())
		}
		for j := range h.IM {
			h.IM[j] = float32(1 + 0.05*rng.NormFloat64())
		}
	}
}

// trainInput is a deterministic 1x3xsize x size image in [0, 1).
func trainInput(size int) []float32 {
	in := make([]float32, 3*size*size)
	for i := range in {
		in[i] = float32((i*7919)%1000) / 1000
	}
	return in
}

// deployForward runs m's Plan on the CPU.
func deployForward(t *testing.T, m *Model, in []float32, size int) [][]float32 {
	t.Helper()
	p, err := m.NewPlan(NewCPU(2), size)
	if err != nil {
		t.Fatal(err)
	}
	out, err := p.Forward(in)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// trainCompare fails when a level differs by more than tol; it returns
// the largest difference.
func trainCompare(t *testing.T, what string, got, want [][]float32, tol float64) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d levels, want %d", what, len(got), len(want))
	}
	worst := 0.0
	for k := range got {
		if len(got[k]) != len(want[k]) {
			t.Fatalf("%s level %d: %d values, want %d", what, k, len(got[k]), len(want[k]))
		}
		d := devMaxAbsDiff(got[k], want[k])
		worst = max(worst, d)
		if d > tol || math.IsNaN(d) {
			t.Errorf("%s level %d: max abs diff %.3g > %.g", what, k, d, tol)
		}
	}
	return worst
}

func testSpecs(t *testing.T) []Spec {
	small, err := YOLOv7TinyScaled(0.5, 0.25)
	if err != nil {
		t.Fatal(err)
	}
	deep, err := YOLOv7TinyScaled(1.5, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	return []Spec{YOLOv7Tiny(), small, deep}
}

// TestTrainForwardMatchesDeploy checks that the eval-mode training forward
// (BN, RepConv branches, implicits explicit) equals the folded deploy
// model's Plan within 1e-4 abs, for both activations, several seeds and
// scaled specs; the aux outputs have the lead shapes.
func TestTrainForwardMatchesDeploy(t *testing.T) {
	for si, spec := range testSpecs(t) {
		for _, act := range []Act{ActReLU, ActLeaky} {
			for seed := uint64(1); seed <= 2; seed++ {
				name := fmt.Sprintf("%s/%s/seed%d", spec.Name, act, seed)
				size := 128
				if si == 0 && seed == 2 {
					continue // the full model once per activation is enough
				}
				tm, err := NewTrainModel(spec, act, 3, seed)
				if err != nil {
					t.Fatal(err)
				}
				trainRandomize(tm, seed)
				dm, err := tm.Deploy()
				if err != nil {
					t.Fatal(err)
				}
				in := trainInput(size)
				got, err := tm.Forward(NewCPU(2), in, size)
				if err != nil {
					t.Fatal(err)
				}
				d := trainCompare(t, name, got.Lead, deployForward(t, dm, in, size), 1e-4)
				t.Logf("%s: train vs deploy max abs diff %.3g", name, d)
				for k, a := range got.Aux {
					if len(a) != len(got.Lead[k]) {
						t.Fatalf("%s: aux level %d has %d values, lead %d", name, k, len(a), len(got.Lead[k]))
					}
				}
			}
		}
	}
}

// TestUnfoldDeployKeepsForward checks that the fine-tuning start computes
// what the deploy model computes, and folds back to the same weights.
func TestUnfoldDeployKeepsForward(t *testing.T) {
	for _, spec := range testSpecs(t)[1:] {
		for _, act := range []Act{ActReLU, ActLeaky} {
			m, err := NewRandom(Config{Act: act, NC: 3, Seed: 7, Spec: &spec})
			if err != nil {
				t.Fatal(err)
			}
			tm := UnfoldDeploy(m)
			in := trainInput(128)
			got, err := tm.Forward(NewCPU(2), in, 128)
			if err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("%s/%s", spec.Name, act)
			d := trainCompare(t, name, got.Lead, deployForward(t, m, in, 128), 1e-4)
			t.Logf("%s: unfolded vs deploy max abs diff %.3g", name, d)
			back, err := tm.Deploy()
			if err != nil {
				t.Fatal(err)
			}
			for i := range m.Convs {
				if d := devMaxAbsDiff(back.Convs[i].Weight, m.Convs[i].Weight); d > 1e-6 {
					t.Fatalf("%s: %s weight changed by %.3g through unfold+deploy", name, m.Convs[i].ConvShape.Name, d)
				}
			}
		}
	}
}

// TestTrainModelShapes checks the aux head of yolov7-tiny-aux.yaml: 3x3
// convs on 57/47/37 of widths 160/320/640, RepConv at 74-76.
func TestTrainModelShapes(t *testing.T) {
	tm, err := NewTrainModel(YOLOv7Tiny(), ActLeaky, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	if tm.AuxSrc != [3]int{57, 47, 37} {
		t.Fatalf("aux sources %v", tm.AuxSrc)
	}
	for k, want := range [][2]int{{160, 64}, {320, 128}, {640, 256}} {
		c := tm.AuxConvs[k]
		if c.Out != want[0] || c.In != want[1] || c.K != 3 || tm.AuxHeads[k].In != want[0] || tm.AuxHeads[k].Out != 24 {
			t.Fatalf("aux %d: conv %dx%dx%d, head in %d out %d", k, c.Out, c.In, c.K, tm.AuxHeads[k].In, tm.AuxHeads[k].Out)
		}
	}
	reps := 0
	for _, c := range tm.Convs {
		if c.Point != nil {
			reps++
			if c.Layer < 74 || c.K != 3 {
				t.Fatalf("RepConv at layer %d k%d", c.Layer, c.K)
			}
		}
	}
	if reps != 3 {
		t.Fatalf("%d RepConvs, want 3", reps)
	}
}

// TestTrainModelFromPTMatchesGolden builds the training form from the
// official leaky checkpoint's unfused tensors and compares its eval
// forward with the official PyTorch raw outputs within 1e-3 abs.
func TestTrainModelFromPTMatchesGolden(t *testing.T) {
	g := goldenForward(t)
	shape, in, err := ReadNPYFile(filepath.Join(g, "input.npy"))
	if err != nil {
		t.Fatal(err)
	}
	ck, err := ReadPT(filepath.Join(g, "yolov7-tiny-leaky.pt"))
	if err != nil {
		t.Fatal(err)
	}
	tm, err := TrainModelFromPT(ck)
	if err != nil {
		t.Fatal(err)
	}
	unfused := 0
	for _, c := range tm.Convs {
		if _, ok := ck.Tensor(fmt.Sprintf("model.%d.bn.weight", c.Layer)); ok {
			unfused++
		}
	}
	t.Logf("%d of %d Conv blocks carry a separate BatchNorm in the checkpoint", unfused, len(tm.Convs))
	got, err := tm.Forward(NewCPU(0), in, shape[2])
	if err != nil {
		t.Fatal(err)
	}
	for k := range got.Lead {
		_, want, err := ReadNPYFile(filepath.Join(g, fmt.Sprintf("leaky_raw_p%d.npy", k+3)))
		if err != nil {
			t.Fatal(err)
		}
		if len(want) != len(got.Lead[k]) {
			t.Fatalf("p%d: %d values, golden %d", k+3, len(got.Lead[k]), len(want))
		}
		d := devMaxAbsDiff(got.Lead[k], want)
		t.Logf("p%d: max abs error %.3g vs the official PyTorch outputs", k+3, d)
		if d > 1e-3 {
			t.Errorf("p%d: max abs error %.3g > 1e-3", k+3, d)
		}
	}
	dm, err := tm.Deploy()
	if err != nil {
		t.Fatal(err)
	}
	dep := deployForward(t, dm, in, shape[2])
	// 640x640 with trained weights: logits up to ~10, so the two float32
	// evaluation orders differ by ~2e-4 (as each does from PyTorch).
	d := trainCompare(t, "golden train vs its deploy", got.Lead, dep, 1e-3)
	a := testNMS(&tm.Spec, tm.NC, shape[2], got.Lead, 0.25, 0.45)
	b := testNMS(&tm.Spec, tm.NC, shape[2], dep, 0.25, 0.45)
	t.Logf("train vs deploy: max abs diff %.3g, %d detections at conf 0.25", d, len(b))
	testSameDets(t, "golden train vs deploy", a, b, 0.1, 1e-3)
}

// TestTrainModelSharesNoMemory checks that NewTrainModel's tensors are
// distinct: changing one BN leaves the RepConv branch and Deploy's
// result untouched elsewhere.
func TestTrainModelSharesNoMemory(t *testing.T) {
	spec, err := YOLOv7TinyScaled(0.5, 0.25)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := NewTrainModel(spec, ActReLU, 2, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range tm.Convs {
		if c.Point == nil {
			continue
		}
		c.BN.Mean[0], c.BN.Bias[0], c.BN.Var[0], c.BN.Weight[0] = 5, 5, 5, 5
		if p := c.Point.BN; p.Mean[0] != 0 || p.Bias[0] != 0 || p.Var[0] != 1 || p.Weight[0] != 1 {
			t.Fatalf("%s: RepConv 1x1 BN shares memory with the 3x3 BN: %+v", c.ConvShape.Name, p)
		}
	}
}
