package tiny

import (
	"testing"

	"github.com/yolo7d/yolo7d/tiny/tinytest"
)

// goldenForward returns ../shared/golden/forward or skips the test.
func goldenForward(t testing.TB) string {
	t.Helper()
	return tinytest.GoldenOrSkip(t, "forward")
}
