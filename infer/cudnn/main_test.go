package cudnn

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// stubBuild is the test binary's one build of the stub libraries of
// testdata/stub, made by TestMain before any test runs and only read
// afterwards (by stubLibDir).
var stubBuild struct {
	dir   string // the built libraries, when err is nil
	err   error  // why there are none
	noGCC bool   // err is a missing gcc: tests skip instead of failing
}

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

// runTests builds the stubs into a temporary directory, runs the tests and
// removes the directory (TestMain's os.Exit would skip a deferred call).
func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "yolo7d-cudnn-stub-")
	if err != nil {
		stubBuild.err = fmt.Errorf("stub libraries: %w", err)
		return m.Run()
	}
	defer os.RemoveAll(dir)
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		stubBuild.err, stubBuild.noGCC = fmt.Errorf("stub libraries need gcc: %w", err), true
		return m.Run()
	}
	cmd := exec.Command("sh", filepath.Join("testdata", "stub", "build.sh"), dir)
	cmd.Env = append(os.Environ(), "CC="+gcc)
	if out, err := cmd.CombinedOutput(); err != nil {
		stubBuild.err = fmt.Errorf("stub libraries: testdata/stub/build.sh: %w\n%s", err, out)
		return m.Run()
	}
	stubBuild.dir = dir
	return m.Run()
}
