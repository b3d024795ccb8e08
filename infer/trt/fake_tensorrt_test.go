//go:build tensorrt && cgo && trtfake

package trt

// Run by TestShimAgainstFakeTensorRT (fake_test.go) against the fake
// TensorRT of testdata/fake: see fake.cpp for its model and plan formats.

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeModel writes a fake ONNX file: input 1x3x64x64, 2 classes.
func fakeModel(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tiny.onnx")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func fakeOpen(t *testing.T, opts Options) (*Engine, *logBuf) {
	t.Helper()
	lb := &logBuf{}
	opts.Logger = slog.New(slog.NewTextHandler(lb, nil))
	e, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("Open: %v\nlog:\n%s", err, lb)
	}
	return e, lb
}

func plans(t *testing.T, dir string) []string {
	t.Helper()
	p, _ := filepath.Glob(filepath.Join(dir, "*.plan"))
	return p
}

func TestFakeVersion(t *testing.T) {
	v, err := Version()
	want := map[string]string{"8": "8.5.2 (headers 8.5.2.2)", "10": "10.3.0 (headers 10.3.0.26)"}[os.Getenv("FAKE_TRT_MAJOR")]
	if err != nil || v != want {
		t.Errorf("Version() = %q, %v; want %q", v, err, want)
	}
}

func TestFakeBuildCacheAndInfer(t *testing.T) {
	onnx, cache := fakeModel(t, "fake-onnx 64 2"), t.TempDir()
	e, lb := fakeOpen(t, Options{ONNX: onnx, CacheDir: cache, Precision: FP16})
	defer e.Close()
	if e.InputSize() != 64 {
		t.Errorf("InputSize = %d", e.InputSize())
	}
	if got := strings.Join(e.OutputNames(), ","); got != "out_p3,out_p4,out_p5" {
		t.Errorf("outputs %s, want them ordered largest first: out_p3,out_p4,out_p5", got)
	}
	if got := dimsString(e.OutputShapes()[2]); got != "1x3x2x2x7" {
		t.Errorf("p5 shape %s", got)
	}
	log := lb.String()
	for _, want := range []string{"building the engine", "tensorrt: fake: building", "plan cached"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "info message") {
		t.Errorf("TensorRT's INFO messages reached the log:\n%s", log)
	}
	p := plans(t, cache)
	if len(p) != 1 || !strings.HasPrefix(filepath.Base(p[0]), "tiny.fp16.") {
		t.Fatalf("cache holds %v", p)
	}
	plan, _ := os.ReadFile(p[0])
	// Builder flags: FP16 (bit 0) plus the default TF32 (bit 7); default workspace.
	if want := "FAKEPLAN"; !strings.HasPrefix(string(plan), want) || !strings.HasSuffix(string(plan), " 0 129 1073741824\n") {
		t.Errorf("plan %q: want flags 129 and a 1 GiB workspace", plan)
	}

	input := make([]float32, 3*64*64)
	for i := range input {
		input[i] = float32(i)
	}
	outs := outputBuffers(e)
	if err := e.Infer(input, outs); err != nil {
		t.Fatal(err)
	}
	for level, o := range outs {
		for j, v := range o {
			if want := input[j%len(input)] + 10*float32(level); v != want {
				t.Fatalf("p%d[%d] = %g, want %g", level+3, j, v, want)
			}
		}
	}
	if n := testing.AllocsPerRun(50, func() { _ = e.Infer(input, outs) }); n != 0 {
		t.Errorf("Infer allocates %v times per call", n)
	}
	copy(e.InputBuffer(), input)
	if err := e.Infer(e.InputBuffer(), e.OutputBuffers()); err != nil || e.OutputBuffers()[1][5] != 15 {
		t.Errorf("in-place Infer: %v, p4[5] = %g, want 15", err, e.OutputBuffers()[1][5])
	}

	// A second Open loads the plan without building.
	e2, lb2 := fakeOpen(t, Options{ONNX: onnx, CacheDir: cache, Precision: FP16})
	e2.Close()
	if log := lb2.String(); !strings.Contains(log, "loaded cached plan") || strings.Contains(log, "building") {
		t.Errorf("second Open did not load the cache:\n%s", log)
	}
	// Another precision is another plan.
	e3, _ := fakeOpen(t, Options{ONNX: onnx, CacheDir: cache, Precision: FP32, WorkspaceBytes: 1 << 20})
	e3.Close()
	if p := plans(t, cache); len(p) != 2 {
		t.Errorf("cache holds %v, want an fp16 and an fp32 plan", p)
	}
	p, _ = filepath.Glob(filepath.Join(cache, "tiny.fp32.*.plan"))
	if plan, _ := os.ReadFile(p[0]); !strings.HasSuffix(string(plan), " 0 0 1048576\n") {
		t.Errorf("fp32 plan %q: want no flags (TF32 cleared) and the given workspace", plan)
	}
}

func TestFakeUnusablePlanIsRebuilt(t *testing.T) {
	for name, bad := range map[string]string{
		"corrupt":      "garbage",
		"old TensorRT": "FAKEPLAN 1234 64 2 0 129 0\n",
	} {
		t.Run(name, func(t *testing.T) {
			onnx, cache := fakeModel(t, "fake-onnx 64 2"), t.TempDir()
			e, _ := fakeOpen(t, Options{ONNX: onnx, CacheDir: cache})
			e.Close()
			p := plans(t, cache)[0]
			if err := os.WriteFile(p, []byte(bad), 0o644); err != nil {
				t.Fatal(err)
			}
			e, lb := fakeOpen(t, Options{ONNX: onnx, CacheDir: cache})
			e.Close()
			log := lb.String()
			want := map[string]string{"corrupt": "magic tag does not match", "old TensorRT": "Version tag does not match"}[name]
			if !strings.Contains(log, "cached plan unusable, rebuilding") || !strings.Contains(log, want) {
				t.Errorf("log lacks the rebuild warning with %q:\n%s", want, log)
			}
			if plan, _ := os.ReadFile(p); !strings.HasPrefix(string(plan), "FAKEPLAN "+map[string]string{"8": "8502", "10": "100300"}[os.Getenv("FAKE_TRT_MAJOR")]) {
				t.Errorf("the plan was not overwritten: %q", plan)
			}
		})
	}
}

func TestFakeContractBreakingPlanIsNotRebuilt(t *testing.T) {
	onnx, cache := fakeModel(t, "fake-onnx 64 2"), t.TempDir()
	e, _ := fakeOpen(t, Options{ONNX: onnx, CacheDir: cache})
	e.Close()
	p := plans(t, cache)[0]
	plan, _ := os.ReadFile(p)
	if err := os.WriteFile(p, bytes.Replace(plan, []byte(" 64 2 0 "), []byte(" 64 2 1 "), 1), 0o644); err != nil { // a grid engine
		t.Fatal(err)
	}
	lb := &logBuf{}
	_, err := Open(context.Background(), Options{ONNX: onnx, CacheDir: cache, Logger: slog.New(slog.NewTextHandler(lb, nil))})
	if err == nil || !strings.Contains(err.Error(), "--grid") {
		t.Errorf("Open: %v, want the --grid error", err)
	}
	if strings.Contains(lb.String(), "building") {
		t.Errorf("rebuilt a plan whose engine breaks the model contract:\n%s", lb)
	}
}

func TestFakeOpenErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		model string
		want  []string
	}{
		"not onnx":    {"hello", []string{"tiny.onnx", "parsing", "node 7: not a fake ONNX model", "failed to parse onnx file"}},
		"grid export": {"fake-onnx 64 2 grid", []string{"tiny.onnx", "--grid"}},
		"odd size":    {"fake-onnx 48 2", []string{"multiple of 32"}},
	} {
		onnx := fakeModel(t, tc.model)
		_, err := Open(context.Background(), Options{ONNX: onnx, CacheDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(&logBuf{}, nil))})
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %v, want one containing %q", name, err, w)
			}
		}
	}
	if _, err := Open(context.Background(), Options{ONNX: filepath.Join(t.TempDir(), "missing.onnx")}); err == nil || !strings.Contains(err.Error(), "missing.onnx") {
		t.Errorf("missing model: %v", err)
	}
}

func TestFakeInferErrors(t *testing.T) {
	e, _ := fakeOpen(t, Options{ONNX: fakeModel(t, "fake-onnx 32 1"), CacheDir: t.TempDir()})
	input, outs := make([]float32, 3*32*32), outputBuffers(e)
	input[0] = float32(math.NaN())
	if err := e.Infer(input, outs); err == nil || !strings.Contains(err.Error(), "enqueueV3: fake: NaN input") || !strings.Contains(err.Error(), "tiny.onnx") {
		t.Errorf("failing enqueue: %v", err)
	}
	input[0] = 0
	if err := e.Infer(input, outs); err != nil {
		t.Errorf("Infer after a failure: %v", err)
	}
	if err := e.Infer(input[1:], outs); err == nil || !strings.Contains(err.Error(), "3071 values, want 3072") {
		t.Errorf("short input: %v", err)
	}
	if err := e.Infer(input, [][]float32{outs[0], outs[1], outs[1]}); err == nil || !strings.Contains(err.Error(), "output 2") {
		t.Errorf("wrong output size: %v", err)
	}
	e.Close()
	if err := e.Infer(input, outs); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Infer after Close: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Error(err)
	}
}

func writeCalibTensors(t *testing.T, dir string, n int, floats int) {
	t.Helper()
	for i := 0; i < n; i++ {
		b := make([]byte, 4*floats)
		for j := 0; j < floats; j++ {
			binary.LittleEndian.PutUint32(b[4*j:], math.Float32bits(float32(i+j)/1000))
		}
		if err := os.WriteFile(filepath.Join(dir, "frame"+string(rune('a'+i))+".bin"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFakeInt8Calibration(t *testing.T) {
	onnx, cache, calib := fakeModel(t, "fake-onnx 32 1"), t.TempDir(), t.TempDir()
	writeCalibTensors(t, calib, 3, 3*32*32)
	e, lb := fakeOpen(t, Options{ONNX: onnx, CacheDir: cache, Precision: INT8, CalibDir: calib})
	e.Close()
	if !strings.Contains(lb.String(), "wrote the INT8 calibration cache") {
		t.Errorf("log:\n%s", lb)
	}
	tables, _ := filepath.Glob(filepath.Join(cache, "tiny.int8.*.calib"))
	if len(tables) != 1 {
		t.Fatalf("calibration caches: %v", tables)
	}
	if b, _ := os.ReadFile(tables[0]); string(b) != "fake calibration of 3 batches\n" {
		t.Errorf("calibration cache %q", b)
	}
	p := plans(t, cache)
	if plan, _ := os.ReadFile(p[0]); !strings.Contains(string(plan), " 131 ") { // FP16 | INT8 | TF32
		t.Errorf("int8 plan %q: want flags 131", plan)
	}
	// Rebuilding reuses the calibration.
	os.Remove(p[0])
	e, lb = fakeOpen(t, Options{ONNX: onnx, CacheDir: cache, Precision: INT8, CalibDir: calib})
	e.Close()
	if !strings.Contains(lb.String(), "using the INT8 calibration cache") {
		t.Errorf("rebuild did not use the calibration cache:\n%s", lb)
	}

	bad := t.TempDir()
	writeCalibTensors(t, bad, 2, 3*16*16)
	_, err := Open(context.Background(), Options{ONNX: onnx, CacheDir: t.TempDir(), Precision: INT8, CalibDir: bad, Logger: slog.New(slog.NewTextHandler(&logBuf{}, nil))})
	if err == nil || !strings.Contains(err.Error(), "framea.bin has 3072 bytes, the network input needs 12288") {
		t.Errorf("wrong-size calibration tensors: %v", err)
	}
}

func TestFakeUnwritableCacheStillWorks(t *testing.T) {
	file := filepath.Join(t.TempDir(), "a-file")
	os.WriteFile(file, nil, 0o644)
	e, lb := fakeOpen(t, Options{ONNX: fakeModel(t, "fake-onnx 32 1"), CacheDir: filepath.Join(file, "cache")})
	e.Close()
	if !strings.Contains(lb.String(), "no plan cache") {
		t.Errorf("log:\n%s", lb)
	}
}
