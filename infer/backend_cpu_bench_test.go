package infer

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/yolo7d/yolo7d/tiny"
)

// Side-by-side forward benchmarks: BenchmarkForward/size=S/backend=B runs
// every backend on the same model file, the same input and the same thread
// count (benchThreads), at 640, 416 and 320. Compare backends with
//
//	go test -run '^$' -bench Forward -count 6 ./infer/ > new.txt
//	go run golang.org/x/perf/cmd/benchstat@latest -col /backend new.txt
//
// Backends: cpu (tiny's CPU device), opencv (OpenCV DNN) and, built with
// -tags ort and YOLO7D_ORT_LIB set, ort (ONNX Runtime; bench_ort_test.go).

// benchThreads is the thread count of every backend in BenchmarkForward.
const benchThreads = 2

// benchSizes are BenchmarkForward's input sizes.
var benchSizes = []int{640, 416, 320}

// benchPeer is one backend of BenchmarkForward: open loads the ONNX file at
// path with threads threads; it may b.Skip when the backend is unavailable.
type benchPeer struct {
	name string
	open func(b *testing.B, path string, size, threads int) Backend
}

// benchPeers are BenchmarkForward's backends; bench_ort_test.go appends
// ort in its init.
var benchPeers = []benchPeer{
	{"cpu", func(b *testing.B, path string, _, threads int) Backend {
		be, err := NewCPUBackend(path, threads)
		if err != nil {
			b.Fatal(err)
		}
		return be
	}},
	{"opencv", func(b *testing.B, path string, _, threads int) Backend {
		be, err := NewOpenCVBackend(path, threads)
		if err != nil {
			b.Fatal(err)
		}
		if got := cvThreads(); got != threads {
			b.Logf("opencv runs %d threads, asked for %d", got, threads)
		}
		return be
	}},
}

// BenchmarkForward is every backend's forward at every size, side by side.
func BenchmarkForward(b *testing.B) {
	b.Logf("cpu backend convs: %s", tiny.CPUKernels())
	for _, size := range benchSizes {
		path := benchModel(b, size)
		for _, p := range benchPeers {
			b.Run(fmt.Sprintf("size=%d/backend=%s", size, p.name), func(b *testing.B) {
				be := p.open(b, path, size, benchThreads)
				defer be.Close()
				benchForward(b, be, size)
				b.ReportMetric(benchThreads, "threads")
			})
		}
	}
}

// benchModel returns an ONNX file of fixed input size in b.TempDir(): the
// golden relu weights re-exported at that size when the golden data is
// present (the golden file itself at 640), else a generated relu model
// (seed 7). Every backend of one size runs the same file.
func benchModel(b *testing.B, size int) string {
	b.Helper()
	p, err := makeBenchModel(b.TempDir(), size)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

func makeBenchModel(dir string, size int) (string, error) {
	if g, err := findGolden(); err == nil {
		p := filepath.Join(g, "yolov7-tiny-relu-raw.onnx")
		if _, err := os.Stat(p); err == nil {
			if size == 640 {
				return p, nil
			}
			om, err := tiny.ReadONNXFile(p)
			if err != nil {
				return "", err
			}
			m, err := tiny.ModelFromONNX(om)
			if err != nil {
				return "", err
			}
			out := filepath.Join(dir, fmt.Sprintf("golden-relu-%d.onnx", size))
			return out, tiny.WriteONNXFile(out, m, size)
		}
	}
	out := filepath.Join(dir, fmt.Sprintf("random-relu-%d.onnx", size))
	return out, tiny.WriteRandomONNX(out, tiny.Config{Act: tiny.ActReLU, NC: 80, Seed: 7}, size)
}

// benchForward times Backend.Forward on a mid-grey input, reports ms/frame
// and allocations.
func benchForward(b *testing.B, be Backend, size int) {
	in := &Tensor{Shape: []int{1, 3, size, size}, Data: make([]float32, 3*size*size)}
	for i := range in.Data {
		in.Data[i] = 0.5
	}
	ctx := context.Background()
	if _, err := be.Forward(ctx, in); err != nil { // warm-up
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := be.Forward(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/frame")
}
