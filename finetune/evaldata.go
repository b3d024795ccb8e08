package finetune

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/yolo7d/yolo7d/tiny"
)

// TestEvalOptions are the settings of the official test.py run on its own
// (conf 0.001, IoU 0.65, multi-label): what `yolo7d eval` reports.
func TestEvalOptions() EvalOptions { return EvalOptions{Conf: 0.001, IoU: 0.65, MultiLabel: true} }

// EvalDataset evaluates the deploy model m on one split ("train", "val" or
// "test") of the dataset described by dataYAML at input size img (0: 320)
// with test.py's settings (TestEvalOptions), on threads CPU threads (0:
// all). Boxes are compared in original-image pixels.
func EvalDataset(ctx context.Context, m *tiny.Model, dataYAML, split string, img, threads int) (Metrics, error) {
	cfg, err := LoadDataYAML(dataYAML)
	if err != nil {
		return Metrics{}, fmt.Errorf("eval: %w", err)
	}
	if cfg.NC != m.NC {
		return Metrics{}, fmt.Errorf("eval: %s has %d classes, the model %d", dataYAML, cfg.NC, m.NC)
	}
	ds, err := OpenSplit(cfg, split, SplitOptions{})
	if err != nil {
		return Metrics{}, fmt.Errorf("eval: %w", err)
	}
	if img == 0 {
		img = 320
	}
	dev := tiny.NewCPU(threads)
	defer dev.Close()
	met, err := evalSplit(ctx, m, dev, ds, img, TestEvalOptions())
	if err != nil {
		return Metrics{}, fmt.Errorf("eval: %w", err)
	}
	return met, nil
}

// evalSplit evaluates m on every image of ds, letterboxed to size as
// test.py loads them (long side resized to size, small images enlarged),
// with ground truths and predictions in original pixels.
func evalSplit(ctx context.Context, m *tiny.Model, dev tiny.Device, ds *Dataset, size int, o EvalOptions) (Metrics, error) {
	if len(ds.Samples) == 0 {
		return Metrics{}, fmt.Errorf("the %s split has no images", ds.Split)
	}
	ld, err := NewLoader(ds, LoaderOptions{ImgSize: size, BatchSize: 1, ValUpscale: true})
	if err != nil {
		return Metrics{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	it := ld.Epoch(ctx, 0)
	defer it.Close()
	n := ld.NumBatches()
	return Evaluate(ctx, m, dev, size, n, o, func(i int, s *EvalSample) error {
		b, err := it.Next()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("the loader ended after %d of %d images", i, n)
		}
		if err != nil {
			return err
		}
		meta := b.Meta[0]
		copy(s.Input, b.Images)
		ld.Release(b)
		s.OrigW, s.OrigH = meta.OrigW, meta.OrigH
		lb := meta.Letterbox
		s.Map = func(bx Box) Box {
			x1, y1 := lb.ToOriginal(float64(bx.X1), float64(bx.Y1))
			x2, y2 := lb.ToOriginal(float64(bx.X2), float64(bx.Y2))
			return Box{X1: float32(x1), Y1: float32(y1), X2: float32(x2), Y2: float32(y2)}
		}
		w, h := float32(meta.OrigW), float32(meta.OrigH)
		for _, l := range ds.Samples[meta.Index].Labels {
			s.Truth = append(s.Truth, GroundTruth{Class: l.Class, Box: Box{
				X1: (l.X - l.W/2) * w, Y1: (l.Y - l.H/2) * h, X2: (l.X + l.W/2) * w, Y2: (l.Y + l.H/2) * h}})
		}
		return nil
	})
}
