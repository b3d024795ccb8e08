package finetune

import (
	"testing"

	"github.com/yolo7d/yolo7d/finetune/synth"
	"github.com/yolo7d/yolo7d/tiny"
)

// pytorchStepMs is one training step of the official code (yolov7-tiny,
// batch 8, 320x320, ComputeLossOTA, forward+loss+backward+SGD) measured on
// this machine class (2 cores): ~270 ms forward, ~17 ms loss, ~410 ms
// backward. The benchmark reports its own time as a ratio to it.
const pytorchStepMs = 690.0

// BenchmarkTrainStep is one full training step of unscaled yolov7-tiny
// (nc 3) at batch 8 and 320x320 on synthetic scenes: forward in training
// mode, the loss and its gradient, backward, and every 8th batch
// the optimiser step and EMA update, as train.py at batch 8. Sub-benchmarks: the lead-only OTA loss (what the
// PyTorch figure measures) and the aux head with AuxOTA (the fine-tune
// default), each with frozen and batch BatchNorm statistics.
func BenchmarkTrainStep(b *testing.B) {
	const size, batch = 320, 8
	imgs, tgts := overfitSet(b, batch, size, 5)
	var all []Target
	for _, ts := range tgts {
		all = append(all, ts...)
	}
	for _, c := range []struct {
		name string
		aux  bool
		bn   tiny.BNMode
	}{
		{"ota-bnbatch", false, tiny.BNBatch},
		{"ota-bnfrozen", false, tiny.BNFrozen},
		{"auxota-bnfrozen", true, tiny.BNFrozen},
	} {
		b.Run(c.name, func(b *testing.B) {
			tm, err := tiny.NewTrainModel(tiny.YOLOv7Tiny(), tiny.ActReLU, len(synth.ClassNames()), 1)
			if err != nil {
				b.Fatal(err)
			}
			dev := tiny.NewCPU(0)
			defer dev.Close()
			// A warm-up of 1 iteration, then train.py's accumulation: an
			// optimiser step (and EMA update) every 64/batch = 8 batches.
			hyp := DefaultHyp()
			tr, err := NewTrainer(tm, dev, TrainConfig{Hyp: hyp, Batch: batch, Size: size, Epochs: 300,
				BatchesPerEpoch: 1, BN: c.bn, Aux: c.aux, WarmupIters: 1})
			if err != nil {
				b.Fatal(err)
			}
			in := tr.Input()
			for i, im := range imgs {
				copy(in[i*len(im):], im)
			}
			if _, err := tr.Step(all); err != nil { // allocate lazily built state
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := tr.Step(all); err != nil {
					b.Fatal(err)
				}
			}
			ms := float64(b.Elapsed().Milliseconds()) / float64(b.N)
			b.ReportMetric(ms, "ms/step")
			b.ReportMetric(ms/pytorchStepMs, "x_pytorch")
		})
	}
}
