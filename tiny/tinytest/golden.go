// Package tinytest finds the reference data of the official YOLOv7 code for
// tests: ../shared/golden beside the module root (the directory holding
// go.mod). Tests read it at run time and skip when it is absent; nothing of
// it is copied into the repository.
package tinytest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// RepoRoot returns the directory holding go.mod, searched upwards from the
// working directory (a test's package directory).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the package directory")
		}
		dir = parent
	}
}

// Golden returns ../shared/golden/<sub> beside the module root, or an error
// saying why it is absent.
func Golden(sub string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	g := filepath.Join(root, "..", "shared", "golden", sub)
	// Each set documents itself: MANIFEST.md, or RESULTS.md for the
	// fine-tuning benchmark.
	for _, doc := range []string{"MANIFEST.md", "RESULTS.md"} {
		if _, err := os.Stat(filepath.Join(g, doc)); err == nil {
			return g, nil
		}
	}
	return "", fmt.Errorf("%s not found (see DESIGN.md, Testing)", g)
}

// GoldenOrSkip returns Golden(sub), skipping the test when it is absent.
func GoldenOrSkip(tb testing.TB, sub string) string {
	tb.Helper()
	g, err := Golden(sub)
	if err != nil {
		tb.Skipf("golden data absent: %v", err)
	}
	return g
}
