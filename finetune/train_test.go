package finetune

import (
	"context"
	"testing"

	"github.com/yolo7d/yolo7d/finetune/synth"
	"github.com/yolo7d/yolo7d/tiny"
)

// overfitSet draws n synthetic scenes of size x size as network inputs
// and targets.
func overfitSet(t testing.TB, n, size int, seed uint64) ([][]float32, [][]Target) {
	t.Helper()
	cfg := synth.Config{Width: size, Height: size, MinObjects: 1, MaxObjects: 3, MinSize: 0.2, MaxSize: 0.45, Overlap: 0}
	g, err := synth.New(cfg, seed)
	if err != nil {
		t.Fatal(err)
	}
	imgs := make([][]float32, n)
	tgts := make([][]Target, n)
	for i := range imgs {
		s := g.Scene()
		imgs[i] = make([]float32, 3*size*size)
		if err := synth.Tensor(imgs[i], s.Image); err != nil {
			t.Fatal(err)
		}
		for _, l := range s.Labels {
			tgts[i] = append(tgts[i], Target{Image: i, Class: l.Class, X: l.X, Y: l.Y, W: l.W, H: l.H})
		}
	}
	return imgs, tgts
}

// smallTrainModel is a seeded width 0.25, depth 0.5 ReLU training-form
// model with the synthetic scenes' classes.
func smallTrainModel(t testing.TB) *tiny.TrainModel {
	t.Helper()
	spec, err := tiny.YOLOv7TinyScaled(0.5, 0.25)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := tiny.NewTrainModel(spec, tiny.ActReLU, len(synth.ClassNames()), 1)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// overfit trains a small model on the set for at most steps steps,
// evaluating the EMA every evalEvery steps, and returns the best mAP@0.5
// and the step it was reached at (stopping once it exceeds target).
func overfit(t *testing.T, imgs [][]float32, tgts [][]Target, size, steps, evalEvery int, target float64, zeroGrad bool) (float64, int) {
	t.Helper()
	tm := smallTrainModel(t)
	dev := tiny.NewCPU(0)
	defer dev.Close()
	hyp := DefaultHyp()
	hyp.LR0 = 0.02
	cfg := TrainConfig{Hyp: hyp, Batch: len(imgs), Size: size, Epochs: 2 * steps, BatchesPerEpoch: 1,
		BN: tiny.BNBatch, Aux: true, WarmupIters: 20, NominalBatch: len(imgs), ZeroGrad: zeroGrad}
	tr, err := NewTrainer(tm, dev, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var all []Target
	for _, ts := range tgts {
		all = append(all, ts...)
	}
	in := tr.Input()
	for i, im := range imgs {
		copy(in[i*len(im):], im)
	}
	best, at := 0.0, 0
	for s := 1; s <= steps; s++ {
		if _, err := tr.Step(all); err != nil {
			t.Fatal(err)
		}
		tr.NextEpoch()
		if s%evalEvery != 0 && s != steps {
			continue
		}
		em, err := tr.EMAModel()
		if err != nil {
			t.Fatal(err)
		}
		dm, err := em.Deploy()
		if err != nil {
			t.Fatal(err)
		}
		met, err := Evaluate(context.Background(), dm, dev, size, len(imgs), DefaultEvalOptions(), func(i int, es *EvalSample) error {
			copy(es.Input, imgs[i])
			for _, g := range tgts[i] {
				f := float32(size)
				es.Truth = append(es.Truth, GroundTruth{Class: g.Class, Box: Box{X1: (g.X - g.W/2) * f, Y1: (g.Y - g.H/2) * f, X2: (g.X + g.W/2) * f, Y2: (g.Y + g.H/2) * f}})
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("step %d: mAP@0.5 %.3f mAP@0.5:0.95 %.3f", s, met.MAP50, met.MAP50_95)
		if met.MAP50 > best {
			best, at = met.MAP50, s
		}
		if best > target {
			break
		}
	}
	return best, at
}

// TestOverfitSmoke trains a width-0.25 model on a handful of synthetic
// images until mAP@0.5 on them exceeds 0.9, then runs the same training
// with the gradient zeroed, which must not get there: the first result
// cannot come from the evaluation or the data alone.
func TestOverfitSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("training smoke test skipped in -short mode")
	}
	const size, n = 96, 8
	imgs, tgts := overfitSet(t, n, size, 11)
	best, at := overfit(t, imgs, tgts, size, 1000, 25, 0.9, false)
	if best <= 0.9 {
		t.Fatalf("training reached mAP@0.5 %.3f (step %d), want > 0.9", best, at)
	}
	ctrl, _ := overfit(t, imgs, tgts, size, at, at, 2, true)
	if ctrl > 0.5 {
		t.Fatalf("with the gradient zeroed the same run reached mAP@0.5 %.3f: the smoke test would pass without learning", ctrl)
	}
	t.Logf("mAP@0.5 %.3f after %d steps; %.3f with the gradient zeroed", best, at, ctrl)
}
