package infer

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/yolo7d/yolo7d/tiny"
)

// benchModel returns an ONNX file of fixed input size: the golden relu
// weights re-exported at that size when the golden data is present (the
// golden file itself at 640), else a generated relu model. CPU and OpenCV
// benchmarks of one size run the same file.
func benchModel(b *testing.B, size int) string {
	b.Helper()
	if g, err := findGolden(); err == nil {
		p := filepath.Join(g, "yolov7-tiny-relu-raw.onnx")
		if _, err := os.Stat(p); err == nil {
			if size == 640 {
				return p
			}
			om, err := tiny.ReadONNXFile(p)
			if err != nil {
				b.Fatal(err)
			}
			m, err := tiny.ModelFromONNX(om)
			if err != nil {
				b.Fatal(err)
			}
			out := filepath.Join(b.TempDir(), "golden-relu.onnx")
			if err := tiny.WriteONNXFile(out, m, size); err != nil {
				b.Fatal(err)
			}
			return out
		}
	}
	out := filepath.Join(b.TempDir(), "random-relu.onnx")
	if err := tiny.WriteRandomONNX(out, tiny.Config{Act: tiny.ActReLU, NC: 80, Seed: 7}, size); err != nil {
		b.Fatal(err)
	}
	return out
}

// benchForward times Backend.Forward on a mid-grey input and reports
// ms/frame.
func benchForward(b *testing.B, be Backend, size int) {
	in := &Tensor{Shape: []int{1, 3, size, size}, Data: make([]float32, 3*size*size)}
	for i := range in.Data {
		in.Data[i] = 0.5
	}
	ctx := context.Background()
	if _, err := be.Forward(ctx, in); err != nil { // warm-up
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := be.Forward(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/frame")
}

func benchCPU(b *testing.B, size int) {
	be, err := NewCPUBackend(benchModel(b, size), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	b.ReportMetric(float64(be.Info().Threads), "threads")
	benchForward(b, be, size)
}

// BenchmarkCPUForward640 is the CPU backend's forward at 640 on the golden
// relu weights (the file BenchmarkOpenCVForward640 runs).
func BenchmarkCPUForward640(b *testing.B) { benchCPU(b, 640) }

// BenchmarkCPUForward320 is the CPU backend's forward at 320.
func BenchmarkCPUForward320(b *testing.B) { benchCPU(b, 320) }

// BenchmarkOpenCVForward320 is OpenCV DNN on the same 320 file as
// BenchmarkCPUForward320, with OpenCV's default thread count.
func BenchmarkOpenCVForward320(b *testing.B) {
	be, err := NewOpenCVBackend(benchModel(b, 320), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	b.ReportMetric(float64(cvThreads()), "threads")
	benchForward(b, be, 320)
}
