package capture

import "time"

// Defaults applied by WithDefaults to zero-valued durations.
const (
	DefaultStallTimeout  = 10 * time.Second
	DefaultFrozenTimeout = 30 * time.Second
	DefaultOpenTimeout   = 15 * time.Second
	DefaultBackoffMin    = 500 * time.Millisecond
	DefaultBackoffMax    = 30 * time.Second
)

// WithDefaults returns c with every zero (or negative) duration replaced by
// its default: StallTimeout 10s, FrozenTimeout 30s, OpenTimeout 15s,
// BackoffMin 500ms and BackoffMax 30s. A BackoffMax below BackoffMin is
// raised to BackoffMin. FrozenTimeout cannot be switched off through the
// zero value; a negative FrozenTimeout disables frozen detection and is kept.
func (c Config) WithDefaults() Config {
	if c.StallTimeout <= 0 {
		c.StallTimeout = DefaultStallTimeout
	}
	if c.FrozenTimeout == 0 {
		c.FrozenTimeout = DefaultFrozenTimeout
	}
	if c.OpenTimeout <= 0 {
		c.OpenTimeout = DefaultOpenTimeout
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = DefaultBackoffMin
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = DefaultBackoffMax
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = c.BackoffMin
	}
	return c
}
