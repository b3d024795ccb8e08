package infer

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gocv.io/x/gocv"

	"github.com/yolo7d/yolo7d/infer/cudnn"
)

// childEnv marks a test binary started by inChild: its value is the name
// of the one test the child runs.
const childEnv = "YOLO7D_INFER_CHILD"

// inChild reruns test t alone in a child process and reports whether the
// caller is that child (true: go on with the test body) or the parent
// (false: the child's verdict is already recorded, return). Tests that
// load a libcudart run there: once a process has loaded one (the stub),
// the dynamic loader finds it again by soname, and "auto" in every later
// test of the process would pick it up.
func inChild(t *testing.T, env ...string) bool {
	t.Helper()
	if os.Getenv(childEnv) == t.Name() {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(append(os.Environ(), childEnv+"="+t.Name()), env...)
	out, err := cmd.CombinedOutput()
	t.Logf("child:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	return false
}

// stubGPU builds infer/cudnn's stub CUDA/cuDNN libraries (CPU
// implementations of the calls) into a temporary directory. Only call it
// inside inChild.
func stubGPU(t *testing.T) string {
	t.Helper()
	if os.Getenv(childEnv) != t.Name() {
		t.Fatal("stubGPU outside a child process: the stub libcudart would stay loaded for the other tests")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Skip("gcc not found: the stub GPU libraries cannot be built")
	}
	dir := t.TempDir()
	out, err := exec.Command("bash", filepath.Join("cudnn", "testdata", "stub", "build.sh"), dir).CombinedOutput()
	if err != nil {
		t.Fatalf("build stub libraries: %v\n%s", err, out)
	}
	return dir
}

// TestCUDNNBackendMatchesCPU runs one model through the cudnn backend on
// the stub libraries and through the CPU backend: same raw outputs.
func TestCUDNNBackendMatchesCPU(t *testing.T) {
	if !inChild(t) {
		return
	}
	stub := stubGPU(t)
	native, _ := writeNative(t, 128, 128)
	cpu, err := NewCPUBackendSize(native, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer cpu.Close()
	for _, prec := range []cudnn.Precision{cudnn.FP32, cudnn.FP16} {
		gpu, err := NewCUDNNBackend(native, 0, prec, cudnn.Options{Dirs: []string{stub}, OnlyDirs: true})
		if err != nil {
			t.Fatal(err)
		}
		if gpu.Info().InputSize != 128 || !strings.Contains(gpu.GPU().String(), "stub") {
			t.Errorf("info %+v on %s", gpu.Info(), gpu.GPU())
		}
		in := &Tensor{Shape: []int{1, 3, 128, 128}, Data: make([]float32, 3*128*128)}
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range in.Data {
			in.Data[i] = rng.Float32()
		}
		want, err := cpu.Forward(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := gpu.Forward(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		tol := 1e-4
		if prec == cudnn.FP16 {
			tol = 0.1
		}
		for k := range want {
			var worst float64
			for i, w := range want[k].Data {
				worst = max(worst, math.Abs(float64(got[k].Data[i]-w)))
			}
			t.Logf("%s level %d: max |cudnn - cpu| = %.3g", prec, k, worst)
			if worst > tol || (prec == cudnn.FP16 && worst == 0) {
				t.Errorf("%s level %d: max |cudnn - cpu| = %.3g (tolerance %g)", prec, k, worst, tol)
			}
		}
		if err := gpu.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpenBackendSelection: auto picks the GPU where its libraries load
// (the stub here) and says why TensorRT was passed over; a named GPU
// backend that cannot load fails with the reason; auto without GPU
// libraries falls back to the CPU and says why.
func TestOpenBackendSelection(t *testing.T) {
	if !inChild(t) {
		return
	}
	stub := stubGPU(t)
	native, _ := writeNative(t, 128, 128)
	ctx := context.Background()

	e, err := Open(ctx, Options{Model: native, Backend: "auto", GPULibDir: stub})
	if err != nil {
		t.Fatal(err)
	}
	info := e.Info()
	if info.Backend != "cudnn" || !strings.Contains(info.Device, "stub") || !strings.Contains(info.BackendNote, "tensorrt") {
		t.Errorf("auto with the stub: %+v", info)
	}
	frame := gocv.NewMatWithSize(96, 160, gocv.MatTypeCV8UC3)
	defer frame.Close()
	if _, err := e.Detect(ctx, frame); err != nil {
		t.Errorf("detect on the cudnn backend: %v", err)
	}
	e.Close()

	if _, err := Open(ctx, Options{Model: native, Backend: "tensorrt"}); err == nil || !strings.Contains(err.Error(), "TensorRT") {
		t.Errorf("tensorrt in a build without it: %v", err)
	}
	if _, err := Open(ctx, Options{Model: native, Backend: "cpu", Precision: "fp8"}); err == nil || !strings.Contains(err.Error(), "fp8") {
		t.Errorf("precision fp8: %v", err)
	}
}

// TestOpenAutoFallback: without GPU libraries, auto runs on the CPU and
// says why, and a named cudnn fails with the reason.
func TestOpenAutoFallback(t *testing.T) {
	if !inChild(t, cudnn.LibsEnv+"=") {
		return
	}
	native, _ := writeNative(t, 128, 128)
	ctx := context.Background()
	e, err := Open(ctx, Options{Model: native, Backend: "auto"})
	if err != nil {
		t.Fatal(err)
	}
	info := e.Info()
	e.Close()
	if info.Backend != "cpu" {
		t.Skipf("this machine has usable GPU libraries (%s): the fallback is not exercised", info.Device)
	}
	t.Logf("auto: %s", info.BackendNote)
	if !strings.Contains(info.BackendNote, "cudnn:") || !strings.Contains(info.BackendNote, "not available") {
		t.Errorf("auto fallback note %q does not say why cudnn was not used", info.BackendNote)
	}
	_, err = Open(ctx, Options{Model: native, Backend: "cudnn"})
	if !errors.Is(err, cudnn.ErrNotAvailable) || !strings.Contains(err.Error(), "libcudart") {
		t.Errorf("named cudnn without libraries: %v", err)
	}
}
