package finetune

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
	recipes := []struct {
		name string
		cfg  RunConfig
	}{
		{"official", RunConfig{BN: tiny.BNBatch, Warmup: -1, Aux: false, Hyp: DefaultHyp()}},
		{"default", DefaultRunConfig()},
	}
	if v := os.Getenv("YOLO7D_FT_VARIANT"); v != "" {
		cfg, err := parseVariant(v)
		if err != nil {
			b.Fatal(err)
		}
		recipes = append(recipes, struct {
			name string
			cfg  RunConfig
		}{"variant", cfg})
	}
	for _, r := range recipes {
		b.Run(r.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				cfg := r.cfg
				cfg.Data = filepath.Join(g, "B", "data.yaml")
				cfg.Base = filepath.Join(g, "base.pt")
				cfg.Out = filepath.Join(b.TempDir(), "ft.safetensors")
				cfg.ImgSize, cfg.Batch, cfg.Seed = 320, 8, 1
				if cfg.ReplayMix > 0 {
					cfg.Replay = filepath.Join(g, "A", "data.yaml")
				}
				if cfg.Epochs == 0 {
					cfg.Epochs = 30 // the official budget
				}
				start := time.Now()
				res, err := Run(context.Background(), cfg, func(p Progress) {
					if p.Validated {
						b.Logf("%s epoch %d/%d: B-val mAP@0.5 %.4f (iou 0.6), last batch loss %.4f (box %.4f obj %.4f cls %.4f), %.1f s", r.name, p.Epoch, p.Epochs, p.ValMAP50, p.Loss.Total, p.Loss.Box, p.Loss.Obj, p.Loss.Cls, p.EpochDuration.Seconds())
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

// parseVariant reads a recipe for BenchmarkGoldenFinetune/variant from
// YOLO7D_FT_VARIANT, comma-separated key=value changes to
// DefaultRunConfig: bn=frozen|batch, aux=0|1, warmup=N, nbs=N, freeze=N,
// lr0=X, lrf=X, bias_lr=X (warm-up bias LR), mosaic=X, epochs=N,
// replay_mix=X (A's train split rehearsed, A/data.yaml as Replay). It is for
// exploring defaults: make bench runs the official and default recipes.
func parseVariant(v string) (RunConfig, error) {
	cfg := DefaultRunConfig()
	for _, kv := range strings.Split(v, ",") {
		k, val, ok := strings.Cut(kv, "=")
		if !ok {
			return cfg, fmt.Errorf("YOLO7D_FT_VARIANT: %q is not key=value", kv)
		}
		f, err := strconv.ParseFloat(val, 64)
		if err != nil && k != "bn" {
			return cfg, fmt.Errorf("YOLO7D_FT_VARIANT: %s: %w", k, err)
		}
		switch k {
		case "bn":
			switch val {
			case "frozen":
				cfg.BN = tiny.BNFrozen
			case "batch":
				cfg.BN = tiny.BNBatch
			default:
				return cfg, fmt.Errorf("YOLO7D_FT_VARIANT: bn=%s: want frozen or batch", val)
			}
		case "aux":
			cfg.Aux = f != 0
		case "warmup":
			cfg.Warmup = int(f)
		case "nbs":
			cfg.NominalBatch = int(f)
		case "freeze":
			cfg.Freeze = int(f)
		case "lr0":
			cfg.Hyp.LR0 = f
		case "lrf":
			cfg.Hyp.LRF = f
		case "bias_lr":
			cfg.Hyp.WarmupBiasLR = f
		case "mosaic":
			cfg.Hyp.Mosaic = f
		case "epochs":
			cfg.Epochs = int(f)
		case "replay_mix":
			cfg.ReplayMix = f
		default:
			return cfg, fmt.Errorf("YOLO7D_FT_VARIANT: unknown key %q", k)
		}
	}
	return cfg, nil
}
