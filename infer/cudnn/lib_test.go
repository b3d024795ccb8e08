package cudnn

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/yolo7d/yolo7d/tiny"
)

// stubOnly skips tests that need the stub's switches (device count,
// failure injection) when running on a real GPU.
func stubOnly(t *testing.T) string {
	t.Helper()
	if realGPU() {
		t.Skip("stub-only test (YOLO7D_GPU_TEST=1)")
	}
	return stubLibDir(t)
}

func loadStub(t *testing.T, dir string) (*Lib, error) {
	t.Helper()
	l, err := Load(Options{Dirs: []string{dir}, OnlyDirs: true})
	if err == nil {
		t.Cleanup(l.Close)
	}
	return l, err
}

func TestLoadMissingLibraries(t *testing.T) {
	t.Setenv(LibsEnv, "")
	empty := t.TempDir()
	_, err := Load(Options{Dirs: []string{empty}, OnlyDirs: true})
	if !errors.Is(err, ErrNotAvailable) {
		t.Fatalf("err = %v, want ErrNotAvailable", err)
	}
	for _, want := range []string{"cudart", "libcudart.so.12", empty} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

func TestLoadStub(t *testing.T) {
	dir := stubOnly(t)
	l, err := loadStub(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	info := l.Info()
	if info.Runtime != 12060 || info.Driver != 12080 || info.CUDNN != 90600 || info.Major != 9 || info.Minor != 0 || info.Integrated {
		t.Errorf("info = %+v", info)
	}
	if got := info.Paths["cudnn"]; got != filepath.Join(dir, "libcudnn.so.9") {
		t.Errorf("cudnn loaded from %q", got)
	}
	s := info.String()
	for _, want := range []string{"stub", "sm_90", "CUDA runtime 12.6", "driver 12.8", "cuDNN 9.6.0"} {
		if !strings.Contains(s, want) {
			t.Errorf("Info.String() = %q, missing %q", s, want)
		}
	}
}

func TestLoadErrors(t *testing.T) {
	dir := stubOnly(t)
	for _, c := range []struct {
		name, env, val string
		notAvail       bool
		want           string
	}{
		{"no GPU", "Y7STUB_DEVICES", "0", true, "cudaGetDeviceCount: cudaErrorNoDevice (100)"},
		{"version check", "Y7STUB_FAIL", "cudnnCnnVersionCheck:1001", false, "cnn sub-library version check"},
		{"runtime version", "Y7STUB_FAIL", "cudaRuntimeGetVersion", false, "cudaRuntimeGetVersion: cudaErrorMemoryAllocation (2)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(c.env, c.val)
			_, err := loadStub(t, dir)
			if err == nil {
				t.Fatal("loaded")
			}
			if errors.Is(err, ErrNotAvailable) != c.notAvail {
				t.Errorf("errors.Is(ErrNotAvailable) = %v, want %v: %v", !c.notAvail, c.notAvail, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not contain %q", err, c.want)
			}
		})
	}
}

// TestLoadPartialCuDNN: a libcudnn that lacks a symbol is refused naming
// the symbol and the file.
func TestLoadPartialCuDNN(t *testing.T) {
	dir := stubOnly(t)
	part := t.TempDir()
	for _, f := range []string{"libcudart.so.12", "libcuda.so.1"} {
		if err := os.Symlink(filepath.Join(dir, f), filepath.Join(part, f)); err != nil {
			t.Fatal(err)
		}
	}
	src := filepath.Join(part, "partial.c")
	if err := os.WriteFile(src, []byte("#include <stddef.h>\nsize_t cudnnGetVersion(void) { return 90600; }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("gcc", "-shared", "-fPIC", "-o", filepath.Join(part, "libcudnn.so.9"), src).CombinedOutput()
	if err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	_, err = loadStub(t, part)
	if err == nil || !strings.Contains(err.Error(), "symbol cudnnGetErrorString not found") || !strings.Contains(err.Error(), "libcudnn.so.9") {
		t.Fatalf("err = %v", err)
	}
}

// TestErrorMapping: a failing call surfaces as *Error with the call, the
// status and the library's name for it.
func TestErrorMapping(t *testing.T) {
	dir := stubOnly(t)
	t.Run("cudnnCreate", func(t *testing.T) {
		t.Setenv("Y7STUB_FAIL", "cudnnCreate")
		l, err := loadStub(t, dir)
		if err != nil {
			t.Fatal(err)
		}
		_, err = l.NewDevice(DeviceOptions{})
		var e *Error
		if !errors.As(err, &e) || e.Call != "cudnnCreate" || e.Code != 3000 || e.Msg != "CUDNN_STATUS_NOT_SUPPORTED" {
			t.Fatalf("err = %v (%#v)", err, e)
		}
	})
	t.Run("alloc", func(t *testing.T) {
		t.Setenv("Y7STUB_FAIL", "cudaMallocManaged")
		l, err := loadStub(t, dir)
		if err != nil {
			t.Fatal(err)
		}
		d := testDevice(t, l, DeviceOptions{})
		if _, err := d.Alloc(10); err == nil || !strings.Contains(err.Error(), "cudaMallocManaged: cudaErrorMemoryAllocation (2)") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("conv", func(t *testing.T) {
		t.Setenv("Y7STUB_FAIL", "cudnnConvolutionForward")
		l, err := loadStub(t, dir)
		if err != nil {
			t.Fatal(err)
		}
		d := testDevice(t, l, DeviceOptions{})
		x, y := make([]float32, 16), make([]float32, 16)
		err = d.Conv(view(y, 1, 1, 4, 4), view(x, 1, 1, 4, 4), tiny.ConvArgs{Weight: []float32{1}, Bias: []float32{0}, K: 1, S: 1, Act: tiny.ActNone}, nil)
		if err == nil || !strings.Contains(err.Error(), "cudnnConvolutionForward: CUDNN_STATUS_NOT_SUPPORTED (3000)") {
			t.Fatalf("err = %v", err)
		}
	})
}

// TestAlgorithmCache: the algorithm query runs once per shape (its second
// call fails in the stub, so only a cached first answer lets the second
// conv of the same shape through), and a new shape queries again.
func TestAlgorithmCache(t *testing.T) {
	dir := stubOnly(t)
	t.Setenv("Y7STUB_FAIL", "cudnnGetConvolutionForwardAlgorithm_v7@2")
	l, err := loadStub(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	d := testDevice(t, l, DeviceOptions{})
	c := tiny.ConvArgs{Weight: make([]float32, 9), Bias: []float32{0}, K: 3, S: 1, Pad: 1, Act: tiny.ActReLU}
	x, y := make([]float32, 25), make([]float32, 25)
	for i := 0; i < 2; i++ {
		if err := d.Conv(view(y, 1, 1, 5, 5), view(x, 1, 1, 5, 5), c, nil); err != nil {
			t.Fatalf("conv %d of one shape: %v", i, err)
		}
	}
	x2, y2 := make([]float32, 36), make([]float32, 36)
	if err := d.Conv(view(y2, 1, 1, 6, 6), view(x2, 1, 1, 6, 6), c, nil); err == nil || !strings.Contains(err.Error(), "cudnnGetConvolutionForwardAlgorithm_v7") {
		t.Fatalf("new shape: err = %v, want the second algorithm query to run (and fail)", err)
	}
}

// TestFusedFallback: where cudnnConvolutionBiasActivationForward refuses,
// the conv runs as three calls with the same result; and an integrated
// GPU (mapped host memory) gives the same numbers.
func TestFusedFallback(t *testing.T) {
	dir := stubOnly(t)
	cpu := tiny.NewCPU(1)
	defer cpu.Close()
	c := convCase("relu", 2, 5, 8, 8, 6, 3, 1, 1, tiny.ActReLU, 1e-5)
	want, err := c.run(cpu, allocator(t, cpu, true, 9))
	if err != nil {
		t.Fatal(err)
	}
	for _, env := range [][2]string{{"Y7STUB_FAIL", "cudnnConvolutionBiasActivationForward"}, {"Y7STUB_INTEGRATED", "1"}} {
		t.Run(env[0], func(t *testing.T) {
			t.Setenv(env[0], env[1])
			l, err := loadStub(t, dir)
			if err != nil {
				t.Fatal(err)
			}
			if l.Info().Integrated != (env[0] == "Y7STUB_INTEGRATED") {
				t.Fatalf("integrated = %v", l.Info().Integrated)
			}
			d := testDevice(t, l, DeviceOptions{})
			got, err := c.run(d, allocator(t, d, false, 9))
			if err != nil {
				t.Fatal(err)
			}
			worst, scale, err := compare(got, want)
			if err != nil || worst > 1e-5*scale {
				t.Fatalf("max err %g (%v)", worst, err)
			}
		})
	}
}
