//go:build tensorrt && cgo

package trt

// Tests on a real TensorRT (a Jetson, or any CUDA machine with TensorRT):
//
//	YOLO7D_TRT_ONNX=../../../shared/golden/forward/yolov7-tiny-relu-raw.onnx \
//	YOLO7D_TRT_GOLDEN_DIR=../../../shared/golden/forward \
//	go test -tags tensorrt -run TestEngine -v ./infer/trt
//
// YOLO7D_TRT_ONNX: the model (the tests skip without it).
// YOLO7D_TRT_GOLDEN_DIR: holds input.npy and the expected raw outputs
// <prefix>p3.npy, <prefix>p4.npy, <prefix>p5.npy; the prefix is
// YOLO7D_TRT_GOLDEN_PREFIX, "relu_raw_" by default (shared/golden/forward).
// YOLO7D_TRT_PRECISION: fp32 (default) or fp16; outputs must agree within
// 1e-3 (fp32) or 2e-2 (fp16), absolute plus relative.

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/yolo7d/yolo7d/tiny"
)

type gpuEnv struct {
	onnx, golden, prefix string
	prec                 Precision
}

func gpuTestEnv(t *testing.T) gpuEnv {
	t.Helper()
	env := gpuEnv{onnx: os.Getenv("YOLO7D_TRT_ONNX"), golden: os.Getenv("YOLO7D_TRT_GOLDEN_DIR"), prefix: "relu_raw_"}
	if env.onnx == "" {
		t.Skip("YOLO7D_TRT_ONNX is not set")
	}
	if p := os.Getenv("YOLO7D_TRT_GOLDEN_PREFIX"); p != "" {
		env.prefix = p
	}
	env.prec = FP32
	if s := os.Getenv("YOLO7D_TRT_PRECISION"); s != "" {
		p, err := ParsePrecision(s)
		if err != nil || p == INT8 {
			t.Fatalf("YOLO7D_TRT_PRECISION=%q: want fp32 or fp16 (%v)", s, err)
		}
		env.prec = p
	}
	return env
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func outputBuffers(e *Engine) [][]float32 {
	var outs [][]float32
	for _, s := range e.OutputShapes() {
		outs = append(outs, make([]float32, volume(s)))
	}
	return outs
}

func TestEngineMatchesGolden(t *testing.T) {
	env := gpuTestEnv(t)
	v, err := Version()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("TensorRT %s, precision %s", v, env.prec)
	cache := t.TempDir()
	start := time.Now()
	e, err := Open(context.Background(), Options{ONNX: env.onnx, CacheDir: cache, Precision: env.prec, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	t.Logf("built in %v: input %d, outputs %v %v", time.Since(start).Round(time.Millisecond), e.InputSize(), e.OutputShapes(), e.OutputNames())
	plans, _ := filepath.Glob(filepath.Join(cache, "*.plan"))
	if len(plans) != 1 {
		t.Errorf("cache holds %v, want one plan", plans)
	}

	s := e.InputSize()
	input := make([]float32, 3*s*s)
	if env.golden != "" {
		shape, data, err := tiny.ReadNPYFile(filepath.Join(env.golden, "input.npy"))
		if err != nil {
			t.Fatal(err)
		}
		if len(data) != len(input) {
			t.Fatalf("input.npy has shape %v, the engine wants 1x3x%dx%d", shape, s, s)
		}
		input = data
	}
	outs := outputBuffers(e)
	if err := e.Infer(input, outs); err != nil {
		t.Fatal(err)
	}
	if env.golden == "" {
		t.Log("YOLO7D_TRT_GOLDEN_DIR is not set: outputs not compared")
		return
	}
	tol := 1e-3
	if env.prec == FP16 {
		tol = 2e-2
	}
	for i, level := range []string{"p3", "p4", "p5"} {
		path := filepath.Join(env.golden, env.prefix+level+".npy")
		shape, want, err := tiny.ReadNPYFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if dimsString(shape) != dimsString(e.OutputShapes()[i]) {
			t.Fatalf("%s: engine output %s, %s has %s", level, dimsString(e.OutputShapes()[i]), path, dimsString(shape))
		}
		worst, at := 0.0, 0
		for j := range want {
			d := math.Abs(float64(outs[i][j])-float64(want[j])) / (1 + math.Abs(float64(want[j])))
			if d > worst || math.IsNaN(d) {
				worst, at = d, j
			}
		}
		t.Logf("%s: worst |got-want|/(1+|want|) = %.2g at %d (got %g, want %g)", level, worst, at, outs[i][at], want[at])
		if !(worst <= tol) {
			t.Errorf("%s differs: %.3g > %g at element %d: got %g, want %g", level, worst, tol, at, outs[i][at], want[at])
		}
	}
}

func TestEngineReusesAndRebuildsCache(t *testing.T) {
	env := gpuTestEnv(t)
	if testing.Short() {
		t.Skip("builds the engine twice")
	}
	cache := t.TempDir()
	opts := Options{ONNX: env.onnx, CacheDir: cache, Precision: env.prec, Logger: testLogger(t)}
	e, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	plans, _ := filepath.Glob(filepath.Join(cache, "*.plan"))
	if len(plans) != 1 {
		t.Fatalf("cache holds %v, want one plan", plans)
	}
	built, _ := os.Stat(plans[0])

	start := time.Now()
	if e, err = Open(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	e.Close()
	t.Logf("loaded from the cache in %v", time.Since(start).Round(time.Millisecond))
	if st, _ := os.Stat(plans[0]); !st.ModTime().Equal(built.ModTime()) {
		t.Error("the cached plan was rewritten instead of reused")
	}

	if err := os.WriteFile(plans[0], []byte("not a TensorRT plan"), 0o644); err != nil {
		t.Fatal(err)
	}
	if e, err = Open(context.Background(), opts); err != nil {
		t.Fatalf("a corrupt cached plan was not rebuilt: %v", err)
	}
	e.Close()
	if st, _ := os.Stat(plans[0]); st.Size() <= int64(len("not a TensorRT plan")) {
		t.Error("the corrupt plan was not overwritten")
	}
}

func TestEngineInferAllocatesNothing(t *testing.T) {
	env := gpuTestEnv(t)
	e, err := Open(context.Background(), Options{ONNX: env.onnx, CacheDir: t.TempDir(), Precision: env.prec, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	input, outs := make([]float32, 3*e.InputSize()*e.InputSize()), outputBuffers(e)
	if n := testing.AllocsPerRun(20, func() {
		if err := e.Infer(input, outs); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Infer allocates %v times per call", n)
	}
	// The engine's own buffers skip the copies and give the same result.
	copy(e.InputBuffer(), input)
	if err := e.Infer(e.InputBuffer(), e.OutputBuffers()); err != nil {
		t.Fatal(err)
	}
	for i := range outs {
		for j := range outs[i] {
			if outs[i][j] != e.OutputBuffers()[i][j] {
				t.Fatalf("output %d element %d: %g through copies, %g in place", i, j, outs[i][j], e.OutputBuffers()[i][j])
			}
		}
	}
	if err := e.Infer(input[1:], outs); err == nil {
		t.Error("a short input was accepted")
	}
	if err := e.Infer(input, outs[:2]); err == nil {
		t.Error("two output buffers were accepted")
	}
	e.Close()
	if err := e.Infer(input, outs); err == nil {
		t.Error("Infer after Close succeeded")
	}
	if err := e.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestOpenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Open(ctx, Options{ONNX: "model.onnx"})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Open with a cancelled context: %v", err)
	}
}
