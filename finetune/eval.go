package finetune

import (
	"context"
	"fmt"

	"github.com/yolo7d/yolo7d/tiny"
)

// EvalOptions are the NMS settings of an evaluation. The official
// validation during training (train.py calling test.test) uses conf 0.001,
// IoU 0.6 and multi-label NMS: DefaultEvalOptions.
type EvalOptions struct {
	Conf       float32
	IoU        float32
	MultiLabel bool
	V5Metric   bool // YOLOv5's AP interpolation (recall sentinel 1.0)
}

// DefaultEvalOptions returns train.py's validation settings.
func DefaultEvalOptions() EvalOptions { return EvalOptions{Conf: 0.001, IoU: 0.6, MultiLabel: true} }

// EvalSample is one image to evaluate: the network input (3 x S x S RGB in
// [0, 1], letterboxed) and the ground truths, both in input pixels; Map
// takes a box from input pixels to original-image pixels (nil: identity)
// and OrigW, OrigH are the original image's size (boxes are clipped to it,
// as test.py's scale_coords does).
type EvalSample struct {
	Input        []float32
	Truth        []GroundTruth
	OrigW, OrigH int
	Map          func(Box) Box
}

// Evaluate runs the deploy model m on n samples (load fills sample i; its
// Input buffer is provided) and returns the official metrics.
func Evaluate(ctx context.Context, m *tiny.Model, dev tiny.Device, size, n int, o EvalOptions,
	load func(i int, s *EvalSample) error) (Metrics, error) {
	plan, err := m.NewPlan(dev, size)
	if err != nil {
		return Metrics{}, fmt.Errorf("evaluate: %w", err)
	}
	shapes := plan.OutputShapes()
	outs := make([]*tiny.Tensor, len(shapes))
	for i := range outs {
		outs[i] = &tiny.Tensor{Shape: shapes[i]}
	}
	nms := tiny.NMSOptions{Conf: o.Conf, IoU: tiny.IoUThreshold(o.IoU), MultiLabel: o.MultiLabel, MaxDet: 300, MaxNMS: 30000}
	var dec tiny.Decoder
	var ev Evaluator
	input := make([]float32, 3*size*size)
	var dets []Detection
	for i := 0; i < n; i++ {
		if err := ctx.Err(); err != nil {
			return Metrics{}, fmt.Errorf("evaluate: %w", err)
		}
		s := EvalSample{Input: input, OrigW: size, OrigH: size}
		if err := load(i, &s); err != nil {
			return Metrics{}, fmt.Errorf("evaluate: sample %d: %w", i, err)
		}
		raw, err := plan.Forward(s.Input)
		if err != nil {
			return Metrics{}, fmt.Errorf("evaluate: sample %d: %w", i, err)
		}
		for k := range outs {
			outs[k].Data = raw[k]
		}
		cands, err := dec.Decode(outs, nms)
		if err != nil {
			return Metrics{}, fmt.Errorf("evaluate: sample %d: %w", i, err)
		}
		dets = dets[:0]
		for _, c := range cands {
			b := Box{X1: c.X1, Y1: c.Y1, X2: c.X2, Y2: c.Y2}
			if s.Map != nil {
				b = s.Map(b)
			}
			dets = append(dets, Detection{Box: ClipBox(b, float32(s.OrigW), float32(s.OrigH)), Conf: c.Score, Class: c.Class})
		}
		gts := make([]GroundTruth, len(s.Truth))
		for j, g := range s.Truth {
			gts[j] = GroundTruth{Box: ClipBox(g.Box, float32(s.OrigW), float32(s.OrigH)), Class: g.Class}
		}
		ev.Add(dets, gts)
	}
	return ev.Metrics(o.V5Metric), nil
}
