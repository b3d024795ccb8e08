package infer

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/yolo7d/yolo7d/tiny"
)

// writeNative writes a seeded random model as a native file and as ONNX
// (at onnxSize) and returns both paths.
func writeNative(t *testing.T, inputSize, onnxSize int) (native, onnx string) {
	t.Helper()
	m, err := tiny.NewRandom(tiny.Config{Act: tiny.ActLeaky, NC: 2, Names: []string{"cat", "dog"}, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	native, onnx = filepath.Join(dir, "m.safetensors"), filepath.Join(dir, "m.onnx")
	if err := tiny.WriteModelFile(native, m, tiny.ModelMeta{InputSize: inputSize}); err != nil {
		t.Fatal(err)
	}
	if err := tiny.WriteONNXFile(onnx, m, onnxSize); err != nil {
		t.Fatal(err)
	}
	return native, onnx
}

func TestCPUBackendRunsNativeFileLikeItsONNXExport(t *testing.T) {
	const size = 256
	native, onnx := writeNative(t, size, size)
	nb, err := NewCPUBackend(native, 2)
	if err != nil {
		t.Fatal(err)
	}
	ob, err := NewCPUBackend(onnx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if ni := nb.Info(); ni.InputSize != size || ni.NumClasses != 2 || !slices.Equal(ni.Names, []string{"cat", "dog"}) {
		t.Fatalf("native info %+v, want %d, 2 classes cat/dog", ni, size)
	}
	in := &Tensor{Shape: []int{1, 3, size, size}, Data: make([]float32, 3*size*size)}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range in.Data {
		in.Data[i] = r.Float32()
	}
	no, err := nb.Forward(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	oo, err := ob.Forward(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	for i := range no {
		if d := maxDiff(t, "native vs onnx", no[i], oo[i]); d > 1e-5 {
			t.Errorf("p%d: native and ONNX differ by %.3g", i+3, d)
		}
	}
}

func TestCPUBackendNativeInputSize(t *testing.T) {
	tests := []struct {
		name           string
		meta, fallback int
		want           int
	}{
		{"metadata wins", 320, 128, 320},
		{"fallback when metadata has none", 0, 128, 128},
		{"default 640", 0, 0, 640},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			native, _ := writeNative(t, tc.meta, 64)
			b, err := NewCPUBackendSize(native, 1, tc.fallback)
			if err != nil {
				t.Fatal(err)
			}
			if got := b.Info().InputSize; got != tc.want {
				t.Errorf("input size %d, want %d", got, tc.want)
			}
		})
	}
}

func TestOpenNativeFile(t *testing.T) {
	native, _ := writeNative(t, 128, 128)
	ctx := context.Background()
	if _, err := Open(ctx, Options{Model: native, Backend: "opencv"}); err == nil || !strings.Contains(err.Error(), "opencv needs ONNX; export with yolo7d export") {
		t.Errorf("opencv on a native file: err %v, want the export hint", err)
	}
	e, err := Open(ctx, Options{Model: native, Backend: "cpu", InputSize: 640})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if info := e.Info(); info.InputSize != 128 || !slices.Equal(info.Classes, []string{"cat", "dog"}) || info.Backend != "cpu" {
		t.Errorf("info %+v, want 128, cat/dog, cpu", info)
	}
}
