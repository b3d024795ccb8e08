package capture

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/yolo7d/yolo7d/capture/capturetest"
	"gocv.io/x/gocv"
)

// fakeSource is a Source whose behaviour is given by functions.
type fakeSource struct {
	name   string
	open   func() error
	read   func(dst *gocv.Mat) error
	closed atomic.Int32
}

func (f *fakeSource) Open() error {
	if f.open == nil {
		return nil
	}
	return f.open()
}
func (f *fakeSource) Read(dst *gocv.Mat) error { return f.read(dst) }
func (f *fakeSource) Close() error             { f.closed.Add(1); return nil }
func (f *fakeSource) String() string           { return f.name }

// fill writes test image n into dst.
func fill(dst *gocv.Mat, n uint64) {
	img := capturetest.MakeImage(64, 48, n)
	img.CopyTo(dst)
	img.Close()
}

// testConfig returns a config with short timeouts for tests.
func testConfig(uri string) Config {
	return Config{
		Name:          "test",
		URI:           uri,
		StallTimeout:  time.Second,
		FrozenTimeout: -1,
		OpenTimeout:   2 * time.Second,
		BackoffMin:    50 * time.Millisecond,
		BackoffMax:    300 * time.Millisecond,
	}
}

// stateLog records OnState calls.
type stateLog struct {
	mu     sync.Mutex
	states []State
}

func (l *stateLog) add(s Stats) {
	l.mu.Lock()
	l.states = append(l.states, s.State)
	l.mu.Unlock()
}

func (l *stateLog) seen(st State) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.states {
		if s == st {
			return true
		}
	}
	return false
}

// startCamera creates a camera and runs it until the test ends; cleanup
// cancels Run, waits for it, and waits for the camera's reader goroutines
// (abandoned ones included) to release their Mats.
func startCamera(t *testing.T, cfg Config, open func(URI, Config) (Source, error)) (*Camera, *stateLog) {
	t.Helper()
	log := &stateLog{}
	c, err := NewCamera(cfg, Options{
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		OnState:    log.add,
		OpenSource: open,
		Rand:       rand.New(rand.NewPCG(1, 2)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		waitReaders(t, c, 15*time.Second)
	})
	return c, log
}

// waitReaders waits for every reader goroutine of c to exit.
func waitReaders(t testing.TB, c *Camera, timeout time.Duration) {
	t.Helper()
	ch := make(chan struct{})
	go func() { c.readers.Wait(); close(ch) }()
	select {
	case <-ch:
	case <-time.After(timeout):
		t.Errorf("reader goroutines still running after %s", timeout)
	}
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitState waits until the camera is in state st.
func waitState(t testing.TB, c *Camera, st State, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "state "+string(st), func() bool { return c.Stats().State == st })
}

// nextFrame takes one frame within timeout and closes it, returning it
// (with a closed Mat) for its metadata.
func nextFrame(t testing.TB, c *Camera, timeout time.Duration) Frame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	f, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v (stats %+v)", err, c.Stats())
	}
	f.Mat.Close()
	return f
}
