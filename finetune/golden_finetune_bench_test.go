package finetune

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/yolo7d/yolo7d/tiny"
	"github.com/yolo7d/yolo7d/tiny/tinytest"
)

// The official fine-tune of ../shared/golden/finetune (RESULTS.md):
// base.pt fine-tuned 30 epochs on B-train at 320 with batch 8, evaluated by
// test.py (conf 0.001, IoU 0.65).
const (
	officialFTBVal50  = 0.1668 // B-val mAP@0.5 after the official fine-tune
	officialFTAVal50  = 0.0903 // A-val mAP@0.5 after it (forgetting)
	officialBaseAVal  = 0.4640 // A-val mAP@0.5 of base.pt
	officialEpochSecs = 18.0   // median wall time per fine-tune epoch (2 cores, incl. its B-val test)
)

// BenchmarkGoldenFinetune fine-tunes the golden base.pt on domain B with
// the same budget as the official run (30 epochs, 320, batch 8) and reports
// B-val and A-val mAP@0.5 (test.py settings) next to the official
// fine-tune's, and the seconds per epoch. Recipes:
//   - official: train.py's choices (BatchNorm batch statistics, warm-up of
//     max(3 epochs, 1000 batches) from a bias LR of 0.1, accumulation to
//     64 images, lead head only);
//   - default: Run's defaults for small on-device datasets.
//
// It takes about 10-15 minutes per recipe on 2 cores: make bench only.
func BenchmarkGoldenFinetune(b *testing.B) {
	g, err := tinytest.Golden("finetune")
	if err != nil {
		b.Skipf("golden data absent: %v", err)
	}
	for _, r := range []struct {
		name string
		cfg  RunConfig
	}{
		{"official", RunConfig{BN: tiny.BNBatch, Warmup: -1, Aux: false}},
		{"default", DefaultRunConfig()},
	} {
		b.Run(r.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				cfg := r.cfg
				cfg.Data = filepath.Join(g, "B", "data.yaml")
				cfg.Base = filepath.Join(g, "base.pt")
				cfg.Out = filepath.Join(b.TempDir(), "ft.safetensors")
				cfg.Epochs, cfg.ImgSize, cfg.Batch, cfg.Seed = 30, 320, 8, 1
				start := time.Now()
				res, err := Run(context.Background(), cfg, func(p Progress) {
					if p.Validated {
						b.Logf("%s epoch %d/%d: B-val mAP@0.5 %.4f (iou 0.6), %.1f s", r.name, p.Epoch, p.Epochs, p.ValMAP50, p.EpochDuration.Seconds())
					}
				})
				if err != nil {
					b.Fatal(err)
				}
				wall := time.Since(start)
				m, _, err := tiny.ReadModelFile(cfg.Out)
				if err != nil {
					b.Fatal(err)
				}
				bv, err := EvalDataset(context.Background(), m, filepath.Join(g, "B", "data.yaml"), "val", 320, 0)
				if err != nil {
					b.Fatal(err)
				}
				av, err := EvalDataset(context.Background(), m, filepath.Join(g, "A", "data.yaml"), "val", 320, 0)
				if err != nil {
					b.Fatal(err)
				}
				es := res.EpochDuration.Seconds()
				b.Logf("%s: B-val mAP@0.5 %.4f (official ft %.4f, ratio %.2f), A-val %.4f (official ft %.4f; base.pt %.4f), %.1f s/epoch (official %.1f), %.1f min in all, promote %v: %s",
					r.name, bv.MAP50, officialFTBVal50, bv.MAP50/officialFTBVal50, av.MAP50, officialFTAVal50, officialBaseAVal,
					es, officialEpochSecs, wall.Minutes(), res.Promote, res.Reason)
				b.ReportMetric(bv.MAP50, "Bval_map50")
				b.ReportMetric(bv.MAP50_95, "Bval_map50_95")
				b.ReportMetric(av.MAP50, "Aval_map50")
				b.ReportMetric(bv.MAP50/officialFTBVal50, "Bval_x_official")
				b.ReportMetric(es, "s/epoch")
				b.ReportMetric(es/officialEpochSecs, "epoch_x_official")
			}
		})
	}
}
