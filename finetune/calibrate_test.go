package finetune

import (
	"math"
	"slices"
	"testing"

	"github.com/yolo7d/yolo7d/tiny"
)

// TestCalibrateAuxBN: after calibration on two batches, the aux head's
// running statistics are the per-channel mean and variance of the aux
// convs' outputs over those batches (recomputed here independently, one
// batch at a time), the rest of the model is unchanged and the EMA starts
// from the calibrated model; in BNBatch mode and without the aux head it
// changes nothing.
func TestCalibrateAuxBN(t *testing.T) {
	const size, batch = 64, 2
	imgs, _ := overfitSet(t, 2*batch, size, 3)
	batches := [][]float32{slices.Concat(imgs[0], imgs[1]), slices.Concat(imgs[2], imgs[3])}
	newTrainer := func(bn tiny.BNMode, aux bool) (*tiny.TrainModel, *Trainer) {
		tm := smallTrainModel(t)
		dev := tiny.NewCPU(1)
		t.Cleanup(func() { dev.Close() })
		tr, err := NewTrainer(tm, dev, TrainConfig{Hyp: DefaultHyp(), Batch: batch, Size: size, Epochs: 1, BatchesPerEpoch: 1, BN: bn, Aux: aux})
		if err != nil {
			t.Fatal(err)
		}
		return tm, tr
	}

	tm, tr := newTrainer(tiny.BNFrozen, true)
	before := tm.State()
	snapshot := make(map[string][]float32, len(before))
	for _, e := range before {
		snapshot[e.Name] = slices.Clone(e.Data)
	}
	// The expected statistics, from the aux outputs of each batch.
	levels := len(tm.AuxConvs)
	sum, sq := make([][]float64, levels), make([][]float64, levels)
	count := make([]float64, levels)
	for _, b := range batches {
		copy(tr.plan.Input(), b)
		if _, err := tr.plan.Forward(); err != nil {
			t.Fatal(err)
		}
		for k := range levels {
			x, err := tr.plan.AuxPreBN(k)
			if err != nil {
				t.Fatal(err)
			}
			if sum[k] == nil {
				sum[k], sq[k] = make([]float64, x.C), make([]float64, x.C)
			}
			for n := 0; n < x.N; n++ {
				for c := 0; c < x.C; c++ {
					for _, v := range x.Image(n)[c*x.H*x.W : (c+1)*x.H*x.W] {
						sum[k][c] += float64(v)
						sq[k][c] += float64(v) * float64(v)
					}
				}
			}
			count[k] += float64(x.N * x.H * x.W)
		}
	}
	if err := tr.CalibrateAuxBN(batches); err != nil {
		t.Fatal(err)
	}
	var changed int
	for k := range levels {
		bn := tm.AuxConvs[k].BN
		for c := range bn.Mean {
			m := sum[k][c] / count[k]
			v := sq[k][c]/count[k] - m*m
			if math.Abs(float64(bn.Mean[c])-m) > 1e-4*(1+math.Abs(m)) || math.Abs(float64(bn.Var[c])-v) > 1e-3*(1+v) {
				t.Fatalf("aux level %d channel %d: running mean %g var %g, want %g and %g", k, c, bn.Mean[c], bn.Var[c], m, v)
			}
			if bn.Var[c] != 1-tiny.BNEps {
				changed++
			}
		}
	}
	if changed == 0 {
		t.Fatal("calibration left every aux variance at its initial value")
	}
	for _, e := range tm.State() {
		isAuxStat := slices.ContainsFunc(tm.AuxConvs, func(c tiny.TrainConv) bool {
			return &c.BN.Mean[0] == &e.Data[0] || &c.BN.Var[0] == &e.Data[0]
		})
		if !isAuxStat && !slices.Equal(e.Data, snapshot[e.Name]) {
			t.Errorf("%s changed by the calibration", e.Name)
		}
	}
	em, err := tr.EMAModel()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(em.AuxConvs[0].BN.Var, tm.AuxConvs[0].BN.Var) {
		t.Error("the EMA does not start from the calibrated statistics")
	}

	for _, c := range []struct {
		bn  tiny.BNMode
		aux bool
	}{{tiny.BNBatch, true}, {tiny.BNFrozen, false}} {
		tm, tr := newTrainer(c.bn, c.aux)
		want := slices.Clone(tm.AuxConvs[0].BN.Var)
		if err := tr.CalibrateAuxBN(batches); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(tm.AuxConvs[0].BN.Var, want) {
			t.Errorf("BN mode %v, aux %v: calibration changed the aux statistics", c.bn, c.aux)
		}
	}
}
