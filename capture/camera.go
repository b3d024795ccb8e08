package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// ErrStopped is returned by Next once the camera has stopped: its Run
// returned (context done, or the end of a file that does not loop).
var ErrStopped = errors.New("capture: camera stopped")

// DefaultHealthyPeriod is how long a session must stream before the
// reconnect delay starts again from BackoffMin.
const DefaultHealthyPeriod = 30 * time.Second

// fpsWindow is the span over which Stats.FPS is averaged.
const fpsWindow = time.Second

// Options are the collaborators of a Camera. The zero value is usable.
type Options struct {
	// Logger receives state changes and errors, and should already name
	// the camera; nil means slog.Default() with a "camera" attribute.
	Logger *slog.Logger
	// OnState, when set, is called with a snapshot of the stats on every
	// state change, from the goroutine running Run. It must not block.
	OnState func(Stats)
	// OpenSource builds the Source for a URI; nil means OpenSource. Tests
	// inject fakes here.
	OpenSource func(URI, Config) (Source, error)
	// Rand draws the backoff jitter; nil means a randomly seeded generator.
	// It is used only by the goroutine running Run.
	Rand *rand.Rand
	// HealthyPeriod is how long a session must stream before the backoff
	// is reset; 0 means DefaultHealthyPeriod.
	HealthyPeriod time.Duration
}

// Camera supervises one camera: Run keeps a Source open and reading, and
// Next hands out the newest frame.
type Camera struct {
	cfg     Config
	uri     URI
	log     *slog.Logger
	onState func(Stats)
	open    func(URI, Config) (Source, error)
	rnd     *rand.Rand
	healthy time.Duration

	running atomic.Bool
	readers sync.WaitGroup // reader goroutines, abandoned ones included

	mu          sync.Mutex // guards everything below
	stats       Stats
	seq         uint64
	pending     *Frame        // newest frame not yet taken
	ready       chan struct{} // closed and replaced when pending changes or the camera stops
	stopped     bool
	lastFrameAt time.Time
	winStart    time.Time
	winFrames   int
}

// NewCamera returns a camera for cfg (with defaults applied). It checks the
// URI but opens nothing; call Run to start capturing.
func NewCamera(cfg Config, opts Options) (*Camera, error) {
	u, err := ParseURI(cfg.URI)
	if err != nil {
		return nil, fmt.Errorf("camera %q: %w", cfg.Name, err)
	}
	c := &Camera{
		cfg:     cfg.WithDefaults(),
		uri:     u,
		log:     opts.Logger,
		onState: opts.OnState,
		open:    opts.OpenSource,
		rnd:     opts.Rand,
		healthy: opts.HealthyPeriod,
		ready:   make(chan struct{}),
		stats:   Stats{State: StateStarting},
	}
	if c.log == nil {
		c.log = slog.Default().With("camera", cfg.Name)
	}
	if c.open == nil {
		c.open = OpenSource
	}
	if c.rnd == nil {
		c.rnd = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if c.healthy <= 0 {
		c.healthy = DefaultHealthyPeriod
	}
	return c, nil
}

// Config returns the camera's configuration with defaults applied.
func (c *Camera) Config() Config { return c.cfg }

// Stats returns a snapshot of the camera's counters.
func (c *Camera) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.snapshot(time.Now())
}

// snapshot returns the stats; c.mu must be held. FPS decays to 0 when no
// frame has come for two averaging windows.
func (c *Camera) snapshot(now time.Time) Stats {
	s := c.stats
	if now.Sub(c.lastFrameAt) > 2*fpsWindow {
		s.FPS = 0
	}
	return s
}

// Next returns the newest frame that has not been returned yet, waiting for
// one if needed. Frames that were replaced before anyone took them are
// counted in Stats.Dropped. Next does not apply Config.MaxFPS: a consumer
// that rate-limits waits before calling Next, so that it takes the newest
// frame. The caller owns Frame.Mat and must Close it. Next returns ctx's
// error when ctx is done first, and ErrStopped once the camera has stopped.
func (c *Camera) Next(ctx context.Context) (Frame, error) {
	for {
		c.mu.Lock()
		if f := c.pending; f != nil {
			c.pending = nil
			c.mu.Unlock()
			return *f, nil
		}
		if c.stopped {
			c.mu.Unlock()
			return Frame{}, ErrStopped
		}
		ready := c.ready
		c.mu.Unlock()
		select {
		case <-ready:
		case <-ctx.Done():
			return Frame{}, ctx.Err()
		}
	}
}

// deliver puts a frame read at ev.time into the slot, replacing (and
// counting as dropped) any frame not yet taken.
func (c *Camera) deliver(ev event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	if c.pending != nil {
		c.pending.Mat.Close()
		c.stats.Dropped++
	}
	c.pending = &Frame{Mat: ev.mat, Seq: c.seq, Time: ev.time, Camera: c.cfg.Name}
	close(c.ready)
	c.ready = make(chan struct{})

	c.stats.Frames++
	c.lastFrameAt = ev.time
	if c.winStart.IsZero() || ev.time.Sub(c.winStart) > 2*fpsWindow {
		c.winStart, c.winFrames = ev.time, 0 // first frame, or after a gap
		return
	}
	c.winFrames++
	if el := ev.time.Sub(c.winStart); el >= fpsWindow {
		c.stats.FPS = float64(c.winFrames) / el.Seconds()
		c.winStart, c.winFrames = ev.time, 0
	}
}

// setState records state and, when lastErr is not empty, the last error.
// On a change of state it logs and calls OnState.
func (c *Camera) setState(st State, lastErr string) {
	c.mu.Lock()
	changed := c.stats.State != st
	c.stats.State = st
	if lastErr != "" {
		c.stats.LastError = lastErr
	}
	snap := c.snapshot(time.Now())
	c.mu.Unlock()
	if !changed {
		return
	}
	if lastErr != "" && st != StateStopped {
		c.log.Warn("camera state", "state", st, "error", lastErr)
	} else {
		c.log.Info("camera state", "state", st)
	}
	if c.onState != nil {
		c.onState(snap)
	}
}

func (c *Camera) count(f func(*Stats)) {
	c.mu.Lock()
	f(&c.stats)
	c.mu.Unlock()
}

// stop marks the camera stopped, discards an untaken frame and wakes every
// Next.
func (c *Camera) stop(lastErr string) {
	c.mu.Lock()
	c.stopped = true
	if c.pending != nil {
		c.pending.Mat.Close()
		c.pending = nil
	}
	close(c.ready)
	c.ready = make(chan struct{})
	c.mu.Unlock()
	c.setState(StateStopped, lastErr)
}
