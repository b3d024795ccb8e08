package cudnn

import (
	"os"
	"path/filepath"
	"testing"
)

// The stub libraries (testdata/stub) are CPU implementations of the CUDA
// runtime, driver and cuDNN calls of api.h, built by gcc once per test
// binary (TestMain, main_test.go). Their test switches, read at each call:
//
//	Y7STUB_DEVICES=n        device count (default 1; 0: cudaErrorNoDevice)
//	Y7STUB_INTEGRATED=1     cudaDevAttrIntegrated
//	Y7STUB_RUNTIME_VERSION, Y7STUB_DRIVER_VERSION, Y7STUB_CUDNN_VERSION
//	Y7STUB_FAIL=name[:code][@n],...
//	                        the function of that exact name returns code
//	                        (default 3000 for cudnn*, 2 for cuda*, 999 for
//	                        cu*) on its n-th call since the library was
//	                        loaded (default: every call)
//
// libcudnn.so.9 also exports int y7stub_count(const char *name) (calls of
// a cudnn*, cuda* or cu* function, -1 for an unknown name) and void
// y7stub_reset(void).

// stubLibDir builds the stub CUDA/cuDNN libraries of testdata/stub once per test binary and returns their directory; it skips the test when gcc is missing.
func stubLibDir(t testing.TB) string {
	t.Helper()
	if stubBuild.noGCC {
		t.Skip(stubBuild.err)
	}
	if stubBuild.err != nil {
		t.Fatal(stubBuild.err)
	}
	return stubBuild.dir
}

// TestStubLibs: the build made every library Load looks for.
func TestStubLibs(t *testing.T) {
	dir := stubLibDir(t)
	for _, so := range []string{"libcudart.so.12", "libcuda.so.1", "libcublasLt.so.12", "libcublas.so.12", "libcudnn.so.9"} {
		if _, err := os.Stat(filepath.Join(dir, so)); err != nil {
			t.Error(err)
		}
	}
}
