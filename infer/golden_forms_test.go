package infer

import (
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/yolo7d/yolo7d/tiny"
)

// The official golden sources (MANIFEST sections 3, 6, 7) and the variant
// whose PyTorch outputs they must reproduce.
var formsSources = []struct {
	file    string
	variant string // relu or leaky: the golden <variant>_raw/_nms files
}{
	{"yolov7-tiny-leaky.pt", "leaky"},
	{"yolov7-tiny-relu-raw.onnx", "relu"},
	{"yolov7-tiny-leaky-fused-grid.onnx", "leaky"},
}

// formsNMS are the three golden NMS settings (MANIFEST section 5).
var formsNMS = []struct {
	conf  float32
	iou   float32
	multi bool
	file  string
}{
	{0.25, 0.45, false, "nms_c0.25_i0.45"},
	{0.001, 0.65, false, "nms_c0.001_i0.65"},
	{0.001, 0.65, true, "nms_c0.001_i0.65_multilabel"},
}

// formsRawTol is the bound on |ours - PyTorch| for every raw logit
// (MANIFEST section 8: the official fused model is off by ~2e-4).
const formsRawTol = 1e-3

// formsCache holds each (source, form)'s raw outputs, computed once for
// all the subtests that need them.
var formsCache struct {
	sync.Mutex
	outs map[string]formsResult
}

type formsResult struct {
	outs []*Tensor
	err  error
}

// formsOutputs returns the raw p3, p4, p5 outputs (each 1x3xHxWx85) of
// the official file in the given form on the golden input:
//   - deploy: ImportModel -> NewPlan(NewCPU(0), 640) -> Forward;
//   - train: for a .pt, TrainModelFromPT(ReadPT) (the unfused BN and
//     implicit weights); for an ONNX file, UnfoldDeploy(ImportModel)
//     (training form holding the folded weights) -> TrainModel.Forward,
//     lead outputs.
func formsOutputs(t *testing.T, file, form string) []*Tensor {
	t.Helper()
	key := file + "/" + form
	formsCache.Lock()
	defer formsCache.Unlock()
	if r, ok := formsCache.outs[key]; ok {
		if r.err != nil {
			t.Fatal(r.err)
		}
		return r.outs
	}
	path := goldenFile(t, file)
	in := loadTensor(t, "input.npy")
	start := time.Now()
	outs, err := runForm(path, form, in)
	t.Logf("%s %s forward (load + run): %v", file, form, time.Since(start).Round(time.Millisecond))
	if formsCache.outs == nil {
		formsCache.outs = map[string]formsResult{}
	}
	formsCache.outs[key] = formsResult{outs, err}
	if err != nil {
		t.Fatal(err)
	}
	return outs
}

func runForm(path, form string, in *Tensor) ([]*Tensor, error) {
	const size = 640
	if len(in.Data) != 3*size*size {
		return nil, fmt.Errorf("input.npy has shape %v, want 1x3x%dx%d", in.Shape, size, size)
	}
	input := append([]float32(nil), in.Data...)
	var levels [][]float32
	var shapes [][]int
	switch form {
	case "deploy":
		m, err := tiny.ImportModel(path)
		if err != nil {
			return nil, err
		}
		p, err := m.NewPlan(tiny.NewCPU(0), size)
		if err != nil {
			return nil, err
		}
		levels, err = p.Forward(input)
		if err != nil {
			return nil, err
		}
		shapes = p.OutputShapes()
	case "train":
		var tm *tiny.TrainModel
		if strings.HasSuffix(path, ".pt") {
			ck, err := tiny.ReadPT(path)
			if err != nil {
				return nil, err
			}
			if tm, err = tiny.TrainModelFromPT(ck); err != nil {
				return nil, err
			}
		} else {
			m, err := tiny.ImportModel(path)
			if err != nil {
				return nil, err
			}
			tm = tiny.UnfoldDeploy(m)
		}
		o, err := tm.Forward(tiny.NewCPU(0), input, size)
		if err != nil {
			return nil, err
		}
		levels = o.Lead
		for l, s := range tm.Spec.Strides {
			if l < len(levels) {
				shapes = append(shapes, []int{1, tm.Spec.NumAnchors(), size / s, size / s, 5 + tm.NC})
			}
		}
	default:
		return nil, fmt.Errorf("unknown form %q", form)
	}
	if len(levels) != len(shapes) {
		return nil, fmt.Errorf("%d outputs, %d shapes", len(levels), len(shapes))
	}
	outs := make([]*Tensor, len(levels))
	for i, v := range levels {
		n := 1
		for _, d := range shapes[i] {
			n *= d
		}
		if n != len(v) {
			return nil, fmt.Errorf("output %d: %d values, shape %v", i, len(v), shapes[i])
		}
		// Copy: the plan's outputs are overwritten by its next Forward.
		outs[i] = &Tensor{Shape: shapes[i], Data: append([]float32(nil), v...)}
	}
	return outs, nil
}

// nmsTally counts, as compareNMS matches them (matchNMS), the golden rows
// found in ours, those found at the same position, and those not found
// (allowed only as ties at the 300 cap).
func nmsTally(got []Candidate, gold *Tensor) (matched, inOrder, missing int) {
	m := matchNMS(got, gold)
	return gold.Shape[0] - m.missing, m.inOrder, m.missing
}

// TestGoldenForms runs every official golden source (the .pt checkpoint,
// the relu raw ONNX, the leaky fused --grid ONNX) in both forms (deploy
// plan; training form: real unfused BN/implicit weights for the .pt,
// UnfoldDeploy of the import for the ONNX files) on the golden input and
// checks
//
//  1. raw: every logit of p3, p4, p5 within 1e-3 absolute of the PyTorch
//     <variant>_raw_p{3,4,5}.npy;
//  2. nms: decode + NMS of our raw outputs reproduces each golden
//     <variant>_nms_*.npy as a set, with compareNMS's rules: same count,
//     sorted by score, each golden row matched by one of ours of the same
//     class with box corners within 0.1 px and conf within 1e-4, order
//     free. The only allowance: in the 300-row (max_det capped) files a
//     golden row missing from ours, or one of ours missing from the golden
//     rows, is accepted when its score is within 1e-4 of the golden 300th
//     score (the cap cuts through near ties; the official fused model,
//     whose logits differ by ~2e-4 like ours, gets 299/300 on
//     relu c0.001 i0.65, MANIFEST section 5). The count of such rows is
//     logged per file.
func TestGoldenForms(t *testing.T) {
	goldenDir(t)
	type summary struct {
		name                      string
		rows, matched, inOrder, n int
	}
	var (
		mu   sync.Mutex
		sums []summary
	)
	for _, src := range formsSources {
		for _, form := range []string{"deploy", "train"} {
			base := src.file + "/" + form
			t.Run(base+"/raw", func(t *testing.T) {
				outs := formsOutputs(t, src.file, form)
				want := loadRaw(t, src.variant)
				if len(outs) != len(want) {
					t.Fatalf("%d outputs, want %d", len(outs), len(want))
				}
				for i := range outs {
					d := maxDiff(t, fmt.Sprintf("p%d", i+3), outs[i], want[i])
					t.Logf("p%d: max abs error %.3g vs PyTorch %s_raw_p%d", i+3, d, src.variant, i+3)
					if d > formsRawTol || math.IsNaN(d) {
						t.Errorf("p%d: max abs error %.3g > %g", i+3, d, formsRawTol)
					}
				}
			})
			for _, c := range formsNMS {
				gname := src.variant + "_" + c.file
				t.Run(base+"/"+c.file, func(t *testing.T) {
					outs := formsOutputs(t, src.file, form)
					gold := loadTensor(t, gname+".npy")
					var d Decoder
					o := NMSOptions{Conf: c.conf, IoU: IoUThreshold(c.iou), MultiLabel: c.multi, MaxDet: 300}
					got, err := d.Decode(outs, o)
					if err != nil {
						t.Fatal(err)
					}
					compareNMS(t, got, gold)
					matched, inOrder, missing := nmsTally(got, gold)
					t.Logf("%s: %d/%d golden rows matched (%d at the same position), %d not found (allowed only as ties at the 300 cap)",
						gname, matched, gold.Shape[0], inOrder, missing)
					mu.Lock()
					sums = append(sums, summary{base + " " + gname, gold.Shape[0], matched, inOrder, missing})
					mu.Unlock()
				})
			}
		}
	}
	for _, s := range sums {
		t.Logf("%-55s %3d rows: %3d matched, %3d same position, %d not found (tie at cap)", s.name, s.rows, s.matched, s.inOrder, s.n)
	}
}
