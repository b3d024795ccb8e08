package infer

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenCVBackendGolden(t *testing.T) {
	b, err := NewOpenCVBackend(goldenFile(t, "yolov7-tiny-relu-raw.onnx"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	in := loadTensor(t, "input.npy")
	want := loadRaw(t, "relu")
	for run := 0; run < 2; run++ { // the second run reuses every buffer
		outs, err := b.Forward(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if len(outs) != 3 {
			t.Fatalf("%d outputs, want 3", len(outs))
		}
		for _, o := range outs {
			var w *Tensor
			for _, c := range want {
				if c.Shape[2] == o.Shape[2] {
					w = c
				}
			}
			if w == nil || len(w.Data) != len(o.Data) {
				t.Fatalf("output shape %v matches no golden level", o.Shape)
			}
			maxErr, at := 0.0, 0
			for i := range o.Data {
				if d := math.Abs(float64(o.Data[i] - w.Data[i])); d > maxErr {
					maxErr, at = d, i
				}
			}
			if run == 0 {
				t.Logf("H=%d: max abs error %.3g at %d (got %v, want %v)", o.Shape[2], maxErr, at, o.Data[at], w.Data[at])
			}
			if maxErr > 1e-3 {
				t.Errorf("H=%d: max abs error %.3g at %d (got %v, want %v), limit 1e-3", o.Shape[2], maxErr, at, o.Data[at], w.Data[at])
			}
		}
	}
	if _, err := b.Forward(context.Background(), &Tensor{Shape: []int{1, 3, 320, 320}, Data: make([]float32, 3*320*320)}); err == nil {
		t.Error("320 input to a 640 model: no error")
	}
}

func TestOpenCVBackendRejects(t *testing.T) {
	raw, err := os.ReadFile(goldenFile(t, "yolov7-tiny-relu-raw.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	corrupt := filepath.Join(dir, "corrupt.onnx")
	if err := os.WriteFile(corrupt, raw[:len(raw)/3], 0o644); err != nil {
		t.Fatal(err)
	}
	garbage := filepath.Join(dir, "garbage.onnx")
	if err := os.WriteFile(garbage, []byte("not an onnx file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ path, want string }{
		{corrupt, "onnx"},
		{garbage, "onnx"},
		{filepath.Join(dir, "missing.onnx"), "no such file"},
		{goldenFile(t, "yolov7-tiny-leaky-fused-grid.onnx"), "--grid"},
	}
	for _, c := range cases {
		b, err := NewOpenCVBackend(c.path, 1)
		if err == nil {
			b.Close()
			t.Errorf("%s: loaded", c.path)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not mention %q", c.path, err, c.want)
		}
	}
}
