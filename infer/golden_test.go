package infer

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/yolo7d/yolo7d/tiny"

	"github.com/yolo7d/yolo7d/tiny/tinytest"
)

// findGolden returns ../shared/golden/forward, or an error saying why it
// is absent.
func findGolden() (string, error) { return tinytest.Golden("forward") }

// goldenDir returns the golden forward directory or skips the test.
func goldenDir(tb testing.TB) string {
	tb.Helper()
	g, err := findGolden()
	if err != nil {
		tb.Skipf("golden data absent: %v", err)
	}
	return g
}

// goldenFile returns the path of a golden file, skipping when it is absent.
func goldenFile(tb testing.TB, name string) string {
	tb.Helper()
	p := filepath.Join(goldenDir(tb), name)
	if _, err := os.Stat(p); err != nil {
		tb.Skipf("golden file %s absent", p)
	}
	return p
}

// loadTensor reads a golden .npy as a Tensor.
func loadTensor(tb testing.TB, name string) *Tensor {
	tb.Helper()
	shape, data, err := tiny.ReadNPYFile(goldenFile(tb, name))
	if err != nil {
		tb.Fatal(err)
	}
	return &Tensor{Shape: shape, Data: data}
}

// loadRaw reads the three raw head outputs of a variant (relu or leaky).
func loadRaw(tb testing.TB, variant string) []*Tensor {
	tb.Helper()
	out := make([]*Tensor, 3)
	for i := range out {
		out[i] = loadTensor(tb, fmt.Sprintf("%s_raw_p%d.npy", variant, i+3))
	}
	return out
}
