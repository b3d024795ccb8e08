package cudnn

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/yolo7d/yolo7d/tiny"
	"github.com/yolo7d/yolo7d/tiny/tinytest"
)

// goldenDir is YOLO7D_GOLDEN_DIR (the device check carries the files
// there) or ../shared/golden/forward; the test skips when neither exists.
func goldenDir(t testing.TB) string {
	if d := os.Getenv("YOLO7D_GOLDEN_DIR"); d != "" {
		return d
	}
	return tinytest.GoldenOrSkip(t, "forward")
}

// TestGoldenForward runs the official relu model (its raw ONNX export) on
// the golden input through a tiny.Plan on the Device, FP32 and FP16, and
// compares the raw head outputs with PyTorch's.
func TestGoldenForward(t *testing.T) {
	dir := goldenDir(t)
	l := testLib(t)
	m, err := tiny.ImportModel(filepath.Join(dir, "yolov7-tiny-relu-raw.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	_, input, err := tiny.ReadNPYFile(filepath.Join(dir, "input.npy"))
	if err != nil {
		t.Fatal(err)
	}
	var want [3][]float32
	for k := range want {
		if _, want[k], err = tiny.ReadNPYFile(filepath.Join(dir, fmt.Sprintf("relu_raw_p%d.npy", k+3))); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		prec Precision
		tol  float64
	}{{FP32, 1e-3}, {FP16, fp16RawTol}} {
		t.Run(c.prec.String(), func(t *testing.T) {
			d := testDevice(t, l, DeviceOptions{Precision: c.prec, Async: true, ConstParams: true})
			plan, err := m.NewPlan(d, 640)
			if err != nil {
				t.Fatal(err)
			}
			for run := 0; run < 2; run++ { // the second run uses the cached parameters and algorithms
				outs, err := plan.Forward(input)
				if err != nil {
					t.Fatal(err)
				}
				for k, o := range outs {
					worst, scale, err := compare(o, want[k])
					if err != nil {
						t.Fatalf("p%d: %v", k+3, err)
					}
					over, rel := 0, 0.0
					for i, w := range want[k] {
						e := math.Abs(float64(o[i] - w))
						if e > c.tol {
							over++
						}
						rel = max(rel, e/max(1, math.Abs(float64(w))))
					}
					t.Logf("p%d: max |want| %.3g, %d of %d values off by more than %g, max error relative to max(1, |want|) %.3g", k+3, scale, over, len(o), c.tol, rel)
					if run == 1 {
						t.Logf("RESULT golden/%s/p%d max_abs_err=%.3g tol=%.3g", c.prec, k+3, worst, c.tol)
					}
					if worst > c.tol {
						t.Errorf("run %d p%d: max |ours - PyTorch| = %.3g > %.3g", run, k+3, worst, c.tol)
					}
				}
				if c.prec == FP16 && run == 1 {
					checkDetections(t, outs, want[:])
				}
			}
		})
	}
}

// fp16RawTol bounds |FP16 - PyTorch FP32| on the raw logits. The issue
// asked for 2e-2; that is below what half precision can give on this
// network: rounding ONLY the weights to half (activations and arithmetic
// in float32, on the CPU) already moves the logits by up to 0.25 (p3
// 0.249, p4 0.168, p5 0.261), and half activations add as much again (the
// stub's exact emulation: 0.57). So the bound is 1.0 — a layout or
// descriptor bug moves logits by whole units — and the check that matters
// is checkDetections.
const fp16RawTol = 1.0

// checkDetections compares the detections (conf 0.25, IoU 0.45) of the
// FP16 outputs with those of PyTorch's FP32 outputs: every detection must
// have a partner among the other side's candidates of the same class whose corners are within 4 px (of 640)
// plus 3% of the box's side and whose score is within 0.03, except
// detections whose score is within 0.03 of the threshold (they may fall
// on either side). Corners, not IoU: the golden input gives many boxes a
// few pixels thin, where half a pixel is a large IoU change, and some
// wider than the image, whose side grows exponentially with a logit.
func checkDetections(t *testing.T, got [][]float32, want [][]float32) {
	t.Helper()
	decode := func(outs [][]float32, o tiny.NMSOptions) []tiny.Candidate {
		ts := make([]*tiny.Tensor, len(outs))
		for k, o := range outs {
			s := 640 / (8 << k)
			ts[k] = &tiny.Tensor{Shape: []int{1, 3, s, s, len(o) / (3 * s * s)}, Data: o}
		}
		var d tiny.Decoder
		c, err := d.Decode(ts, o)
		if err != nil {
			t.Fatal(err)
		}
		return append([]tiny.Candidate(nil), c...)
	}
	// Detections after NMS, and every candidate above the threshold (no
	// suppression): a partner is looked for among the other side's
	// candidates, so NMS picking another of two near-equal boxes is not a
	// difference.
	all := tiny.DefaultNMSOptions()
	all.IoU, all.MaxDet, all.MaxNMS = 1.1, 1<<20, 1<<20
	g, w := decode(got, tiny.DefaultNMSOptions()), decode(want, tiny.DefaultNMSOptions())
	gAll, wAll := decode(got, all), decode(want, all)
	const conf, near, maxPx = 0.25, 0.03, 4
	unmatched := func(a, b []tiny.Candidate) int {
		n := 0
		for _, x := range a {
			found := false
			for _, y := range b {
				if x.Class == y.Class && cornerDist(x, y) <= maxPx+0.03*float64(max(x.X2-x.X1, x.Y2-x.Y1)) && math.Abs(float64(x.Score-y.Score)) <= near {
					found = true
					break
				}
			}
			if !found && x.Score > conf+near {
				n++
				t.Logf("no partner: class %d score %.3f box %.0f,%.0f,%.0f,%.0f", x.Class, x.Score, x.X1, x.Y1, x.X2, x.Y2)
			}
		}
		return n
	}
	missing, extra := unmatched(w, gAll), unmatched(g, wAll)
	t.Logf("RESULT golden/fp16/detections want=%d got=%d missing=%d extra=%d", len(w), len(g), missing, extra)
	// Half precision moves logits by up to ~0.5 here (see fp16RawTol), and
	// a box side grows like exp(logit): a few boxes move further than the
	// tolerance. A bug moves most of them; 95% must match on each side.
	if len(w) == 0 || float64(missing) > 0.05*float64(len(w)) || float64(extra) > 0.05*float64(len(g)) {
		t.Errorf("fp16 detections: %d of PyTorch's %d have no partner, %d of our %d have none (at most 5%% may not)", missing, len(w), extra, len(g))
	}
}

// cornerDist is the largest difference of the two boxes' coordinates.
func cornerDist(a, b tiny.Candidate) float64 {
	d := max(math.Abs(float64(a.X1-b.X1)), math.Abs(float64(a.Y1-b.Y1)))
	return max(d, math.Abs(float64(a.X2-b.X2)), math.Abs(float64(a.Y2-b.Y2)))
}
