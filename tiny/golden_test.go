package tiny

import (
	"os"
	"path/filepath"
	"testing"
)

// goldenForward returns ../shared/golden/forward next to the module root
// (the directory holding go.mod), or skips the test when it is absent.
func goldenForward(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("golden data: no go.mod above the package directory")
		}
		dir = parent
	}
	g := filepath.Join(dir, "..", "shared", "golden", "forward")
	if _, err := os.Stat(filepath.Join(g, "MANIFEST.md")); err != nil {
		t.Skipf("golden data absent (%s): %v", g, err)
	}
	return g
}
