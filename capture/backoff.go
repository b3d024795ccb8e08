package capture

import (
	"math/rand/v2"
	"time"
)

// jitter is the relative spread applied to every backoff delay (+-20%).
const jitter = 0.2

// backoff yields exponentially growing reconnect delays: min, 2*min, 4*min
// ... capped at max, each randomised by +-20%.
type backoff struct {
	min, max time.Duration
	cur      time.Duration // the next delay before jitter; 0 = min
	rnd      *rand.Rand
}

func newBackoff(min, max time.Duration, rnd *rand.Rand) *backoff {
	return &backoff{min: min, max: max, rnd: rnd}
}

// Next returns the delay to wait before the next attempt and doubles the
// following one.
func (b *backoff) Next() time.Duration {
	if b.cur < b.min {
		b.cur = b.min
	}
	d := b.cur
	if b.cur = 2 * b.cur; b.cur > b.max || b.cur <= 0 {
		b.cur = b.max
	}
	f := 1 + jitter*(2*b.rnd.Float64()-1)
	return time.Duration(float64(d) * f)
}

// Reset starts again from min.
func (b *backoff) Reset() { b.cur = 0 }
