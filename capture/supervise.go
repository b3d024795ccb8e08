package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// outcome is how a session ended.
type outcome int

const (
	outFailed outcome = iota // reconnect
	outDone                  // ctx done
	outEOF                   // the source ended for good
)

// result describes the end of one session.
type result struct {
	out      outcome
	err      error
	frozen   bool          // the session was ended because the stream froze
	streamed time.Duration // from the first to the last frame
}

// Run captures until ctx is done, reopening the source with exponential
// backoff whenever it fails, stalls or freezes, and returns nil. It also
// returns nil, with the camera stopped, when a source ends for good (a
// file without Loop reaching its end). Run may be called only once.
func (c *Camera) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return fmt.Errorf("camera %q: Run called twice", c.cfg.Name)
	}
	bo := newBackoff(c.cfg.BackoffMin, c.cfg.BackoffMax, c.rnd)
	fd := &frozenDetector{timeout: c.cfg.FrozenTimeout}
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			c.count(func(s *Stats) { s.Reconnects++ })
		}
		res := c.session(ctx, fd)
		switch res.out {
		case outDone:
			c.stop("")
			return nil
		case outEOF:
			c.stop("end of stream")
			return nil
		}
		if res.streamed >= c.healthy {
			bo.Reset()
		}
		st := StateReconnecting
		if res.frozen {
			st = StateFrozen // stays frozen until the content changes
		}
		c.setState(st, res.err.Error())
		delay := bo.Next()
		c.log.Debug("reconnecting", "in", delay, "error", res.err)
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			c.stop("")
			return nil
		case <-t.C:
		}
	}
}

// session opens the source once and reads it until it fails, stalls,
// freezes, ends, or ctx is done.
func (c *Camera) session(ctx context.Context, fd *frozenDetector) result {
	if ctx.Err() != nil {
		return result{out: outDone}
	}
	src, err := c.open(c.uri, c.cfg)
	if err != nil {
		return result{err: fmt.Errorf("open %s: %w", redact(c.cfg.URI), err)}
	}
	name := src.String()
	r := startReader(src, &c.readers)
	defer r.release()

	openTimer := time.NewTimer(c.cfg.OpenTimeout)
	defer openTimer.Stop()
	select {
	case ev := <-r.events:
		if ev.err != nil {
			return result{err: fmt.Errorf("open %s: %w", name, ev.err)}
		}
	case <-openTimer.C:
		c.count(func(s *Stats) { s.Abandoned++ })
		return result{err: fmt.Errorf("open %s: no answer within %s", name, c.cfg.OpenTimeout)}
	case <-ctx.Done():
		return result{out: outDone}
	}
	opened := time.Now()
	var first, last time.Time
	streamed := func() time.Duration { return last.Sub(first) }

	stall := time.NewTimer(c.cfg.StallTimeout)
	defer stall.Stop()
	for {
		select {
		case ev := <-r.events:
			if ev.err != nil {
				if errors.Is(ev.err, io.EOF) {
					return result{out: outEOF}
				}
				return result{err: fmt.Errorf("read %s: %w", name, ev.err), streamed: streamed()}
			}
			stall.Reset(c.cfg.StallTimeout)
			if first.IsZero() {
				first = ev.time
			}
			last = ev.time
			frozen := fd.observe(ev.hash, ev.time)
			c.deliver(ev)
			if !frozen {
				c.setState(StateStreaming, "")
				continue
			}
			msg := fmt.Sprintf("frozen: identical frames for %s", ev.time.Sub(fd.since()).Round(time.Millisecond))
			c.setState(StateFrozen, msg)
			// Reopen once this session has shown nothing new for the
			// timeout: at once when the freeze is first seen, then every
			// FrozenTimeout while it lasts.
			if ev.time.Sub(later(fd.since(), opened)) >= c.cfg.FrozenTimeout {
				return result{err: errors.New(msg), frozen: true}
			}
		case <-stall.C:
			c.count(func(s *Stats) { s.Abandoned++ })
			return result{err: fmt.Errorf("no frame for %s", c.cfg.StallTimeout), streamed: streamed()}
		case <-ctx.Done():
			return result{out: outDone}
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
