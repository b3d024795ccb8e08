package cudnn

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/yolo7d/yolo7d/finetune"
	"github.com/yolo7d/yolo7d/tiny"
)

// TestTrainerOnDevice runs three optimiser steps of the fine-tuning
// Trainer (official loss with the aux head, SGD, EMA) on the CPU and on
// the Device from the same start: the losses and the weights must agree.
// This is the path of `yolo7d finetune --device cudnn`.
func TestTrainerOnDevice(t *testing.T) {
	l := testLib(t)
	cpu := tiny.NewCPU(1)
	defer cpu.Close()
	const batch, size = 2, 64
	base := trainStepModel(t, 0.5, 0.25)
	rng := rand.New(rand.NewPCG(8, 9))
	input := make([]float32, batch*3*size*size)
	for i := range input {
		input[i] = rng.Float32()
	}
	targets := []finetune.Target{
		{Image: 0, Class: 1, X: 0.4, Y: 0.5, W: 0.3, H: 0.4},
		{Image: 1, Class: 0, X: 0.6, Y: 0.3, W: 0.2, H: 0.2},
		{Image: 1, Class: 2, X: 0.3, Y: 0.7, W: 0.4, H: 0.3},
	}
	run := func(dev tiny.TrainDevice) ([]finetune.LossItems, *tiny.TrainModel) {
		tm := base.Clone()
		tr, err := finetune.NewTrainer(tm, dev, finetune.TrainConfig{Hyp: finetune.FinetuneHyp(), Batch: batch, Size: size,
			Epochs: 1, BatchesPerEpoch: 3, BN: tiny.BNFrozen, Aux: true, NominalBatch: batch, WarmupIters: 1})
		if err != nil {
			t.Fatal(err)
		}
		var losses []finetune.LossItems
		for step := 0; step < 3; step++ {
			copy(tr.Input(), input)
			li, err := tr.Step(targets)
			if err != nil {
				t.Fatal(err)
			}
			losses = append(losses, li)
		}
		if err := syncOf(dev); err != nil {
			t.Fatal(err)
		}
		ema, err := tr.EMAModel()
		if err != nil {
			t.Fatal(err)
		}
		return losses, ema
	}
	wantLoss, wantModel := run(cpu)
	d := testDevice(t, l, DeviceOptions{})
	gotLoss, gotModel := run(d)
	for i := range wantLoss {
		rel := math.Abs(gotLoss[i].Total-wantLoss[i].Total) / wantLoss[i].Total
		t.Logf("RESULT trainer/step%d/loss cpu=%.6f cudnn=%.6f rel_err=%.3g tol=1e-4", i, wantLoss[i].Total, gotLoss[i].Total, rel)
		if rel > 1e-4 {
			t.Errorf("step %d: loss %.6f on the device, %.6f on the CPU", i, gotLoss[i].Total, wantLoss[i].Total)
		}
	}
	if wantLoss[2].Total == wantLoss[0].Total {
		t.Error("the loss did not change over three steps: nothing was trained")
	}
	ws, gs := wantModel.State(), gotModel.State()
	var worst float64
	for i := range ws {
		e, scale, err := compare(gs[i].Data, ws[i].Data)
		if err != nil {
			t.Fatalf("%s: %v", ws[i].Name, err)
		}
		worst = max(worst, e/scale)
	}
	t.Logf("RESULT trainer/ema_weights max_rel_err=%.3g tol=1e-4", worst)
	if worst > 1e-4 {
		t.Errorf("EMA weights differ by %.3g (relative)", worst)
	}
}
