package infer

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/yolo7d/yolo7d/tiny"
)

// maxDiff is the largest |a-b| of two tensors of the same shape.
func maxDiff(t *testing.T, what string, got, want *Tensor) float64 {
	t.Helper()
	if fmt.Sprint(got.Shape) != fmt.Sprint(want.Shape) || len(got.Data) != len(want.Data) {
		t.Fatalf("%s: shape %v (%d values), want %v (%d values)", what, got.Shape, len(got.Data), want.Shape, len(want.Data))
	}
	d := 0.0
	for i := range got.Data {
		d = max(d, math.Abs(float64(got.Data[i])-float64(want.Data[i])))
	}
	return d
}

// TestCPUBackendMatchesGolden: the official relu raw export on the golden
// input, against the official PyTorch raw outputs, within 1e-3 abs (the
// logits span about -23..+13; OpenCV itself is off by ~2e-4).
func TestCPUBackendMatchesGolden(t *testing.T) {
	b, err := NewCPUBackend(goldenFile(t, "yolov7-tiny-relu-raw.onnx"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if info := b.Info(); info.InputSize != 640 || info.NumClasses != 80 || info.Act != tiny.ActReLU {
		t.Fatalf("info %+v, want 640, 80 classes, relu", info)
	}
	outs, err := b.Forward(context.Background(), loadTensor(t, "input.npy"))
	if err != nil {
		t.Fatal(err)
	}
	want := loadRaw(t, "relu")
	if len(outs) != len(want) {
		t.Fatalf("%d outputs, want %d", len(outs), len(want))
	}
	for i := range outs {
		d := maxDiff(t, fmt.Sprintf("p%d", i+3), outs[i], want[i])
		t.Logf("p%d: max abs error %.3g vs PyTorch", i+3, d)
		if d > 1e-3 {
			t.Errorf("p%d: max abs error %.3g > 1e-3", i+3, d)
		}
	}
}

// TestCPUBackendMatchesOpenCV: a generated random model exported at 320,
// run by both backends on the same random input, within 1e-3 abs.
func TestCPUBackendMatchesOpenCV(t *testing.T) {
	const size = 320
	for _, act := range []tiny.Act{tiny.ActReLU, tiny.ActLeaky} {
		t.Run(string(act), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "m.onnx")
			if err := tiny.WriteRandomONNX(path, tiny.Config{Act: act, NC: 80, Seed: 3}, size); err != nil {
				t.Fatal(err)
			}
			cb, err := NewCPUBackend(path, 2)
			if err != nil {
				t.Fatal(err)
			}
			defer cb.Close()
			if cb.Info().InputSize != size {
				t.Fatalf("input size %d, want %d", cb.Info().InputSize, size)
			}
			r := rand.New(rand.NewPCG(4, 4))
			in := &Tensor{Shape: []int{1, 3, size, size}, Data: make([]float32, 3*size*size)}
			for i := range in.Data {
				in.Data[i] = r.Float32()
			}
			want := runONNXWithOpenCV(t, path, size, in.Data)
			outs, err := cb.Forward(context.Background(), in)
			if err != nil {
				t.Fatal(err)
			}
			for i, o := range outs {
				h := size / (8 << i)
				d := maxDiff(t, fmt.Sprintf("p%d", i+3), o, want[h])
				t.Logf("p%d: max abs diff %.3g vs OpenCV", i+3, d)
				if d > 1e-3 {
					t.Errorf("p%d: max abs diff %.3g > 1e-3", i+3, d)
				}
			}
		})
	}
}

func TestCPUBackendRejects(t *testing.T) {
	if _, err := NewCPUBackend(filepath.Join(t.TempDir(), "absent.onnx"), 1); err == nil {
		t.Error("absent file: no error")
	}
	path := filepath.Join(t.TempDir(), "m.onnx")
	if err := tiny.WriteRandomONNX(path, tiny.Config{NC: 2, Seed: 1}, 64); err != nil {
		t.Fatal(err)
	}
	b, err := NewCPUBackend(path, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Forward(context.Background(), &Tensor{Shape: []int{1, 3, 32, 32}, Data: make([]float32, 3*32*32)}); err == nil {
		t.Error("wrong input size: no error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Forward(ctx, &Tensor{Shape: []int{1, 3, 64, 64}, Data: make([]float32, 3*64*64)}); err == nil {
		t.Error("cancelled context: no error")
	}
}
