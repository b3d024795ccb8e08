package capture

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := newBackoff(500*time.Millisecond, 5*time.Second, rand.New(rand.NewPCG(7, 7)))
	base := []time.Duration{500, 1000, 2000, 4000, 5000, 5000}
	check := func() {
		t.Helper()
		for i, ms := range base {
			want := ms * time.Millisecond
			got := b.Next()
			if got < want*8/10 || got > want*12/10 {
				t.Errorf("delay %d = %s, want %s +-20%%", i, got, want)
			}
		}
	}
	check()
	b.Reset()
	check()

	// The jitter spreads: not every draw is the same.
	seen := map[time.Duration]bool{}
	for range 20 {
		b.Reset()
		seen[b.Next()] = true
	}
	if len(seen) < 10 {
		t.Errorf("only %d distinct delays in 20 draws", len(seen))
	}
}
