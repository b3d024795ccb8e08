//go:build !tensorrt

package trt

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestShimAgainstFakeTensorRT compiles the tensorrt build of this package
// (trt_shim.cpp and trt.go) against testdata/fake, a fake TensorRT 8.5 and
// 10.3 with CUDA on host memory, and runs fake_tensorrt_test.go with it:
// the C++ compiles against both API versions without warnings, and the
// cache, the output ordering, INT8 calibration, the logs and the error
// paths work end to end. It says nothing about real TensorRT's behaviour
// (trt_gpu_test.go on a Jetson does).
func TestShimAgainstFakeTensorRT(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles the package twice with cgo")
	}
	gxx, err := exec.LookPath("g++")
	if err != nil {
		t.Skip("no g++")
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if out, err := exec.Command(goBin, "env", "CGO_ENABLED").Output(); err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Skip("cgo is disabled")
	}
	include, err := filepath.Abs("testdata/fake/include")
	if err != nil {
		t.Fatal(err)
	}
	for _, major := range []string{"8", "10"} {
		t.Run("TensorRT"+major, func(t *testing.T) {
			// The shim itself, with every warning an error.
			cmd := exec.Command(gxx, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-DFAKE_TRT_MAJOR="+major, "-I"+include, "trt_shim.cpp")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("g++ trt_shim.cpp: %v\n%s", err, out)
			}
			lib := t.TempDir()
			cmd = exec.Command(gxx, "-std=c++17", "-shared", "-fPIC", "-O1", "-Wno-deprecated-declarations", "-DFAKE_TRT_MAJOR="+major,
				"-I"+include, "-Wl,-soname,libnvinfer.so", "-o", filepath.Join(lib, "libnvinfer.so"), "testdata/fake/fake.cpp")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("g++ fake.cpp: %v\n%s", err, out)
			}
			for _, name := range []string{"libnvonnxparser.so", "libcudart.so"} {
				if err := os.Symlink("libnvinfer.so", filepath.Join(lib, name)); err != nil {
					t.Fatal(err)
				}
			}
			cmd = exec.Command(goBin, "test", "-tags", "tensorrt,trtfake", "-count=1", "-run", "Fake", ".")
			cmd.Env = append(os.Environ(),
				"CGO_ENABLED=1",
				"CGO_CPPFLAGS=-I"+include+" -DFAKE_TRT_MAJOR="+major,
				"CGO_LDFLAGS=-L"+lib+" -Wl,-rpath,"+lib,
				"FAKE_TRT_MAJOR="+major,
				"YOLO7D_TRT_ONNX=")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("go test -tags tensorrt,trtfake: %v\n%s", err, out)
			}
			t.Logf("%s", out)
		})
	}
}
