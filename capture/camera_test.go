package capture

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gocv.io/x/gocv"
)

// checkSize checks the size of frame f.
func checkSize(t *testing.T, f Frame, w, h int) {
	t.Helper()
	if f.Mat.Cols() != w || f.Mat.Rows() != h {
		t.Errorf("frame %d is %dx%d, want %dx%d", f.Seq, f.Mat.Cols(), f.Mat.Rows(), w, h)
	}
}

func TestLatestFrameWins(t *testing.T) {
	feed := make(chan uint64)
	open := func(URI, Config) (Source, error) {
		return &fakeSource{name: "fake", read: func(dst *gocv.Mat) error {
			n, ok := <-feed
			if !ok {
				return io.EOF
			}
			fill(dst, n)
			return nil
		}}, nil
	}
	cfg := testConfig("file:///fake.mp4")
	cfg.StallTimeout = time.Minute
	c, _ := startCamera(t, cfg, open)
	defer close(feed)

	push := func(from, to uint64) {
		for n := from; n <= to; n++ {
			feed <- n
		}
		waitFor(t, 2*time.Second, "frames delivered", func() bool { return c.Stats().Frames == to })
	}
	push(1, 5)
	f, err := c.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	checkSize(t, f, 64, 48)
	if f.Seq != 5 || f.Camera != "test" {
		t.Errorf("got frame %d of %q, want 5 of test", f.Seq, f.Camera)
	}
	if h := contentHash(&f.Mat); h != hashOf(5) {
		t.Errorf("frame 5 content is not image 5")
	}
	f.Mat.Close()
	if d := c.Stats().Dropped; d != 4 {
		t.Errorf("dropped %d, want 4", d)
	}

	// Next blocks until a newer frame comes.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	if _, err := c.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Next with no new frame: %v, want deadline exceeded", err)
	}
	cancel()
	push(6, 8)
	if f := nextFrame(t, c, time.Second); f.Seq != 8 {
		t.Errorf("got frame %d, want 8", f.Seq)
	}
	if d := c.Stats().Dropped; d != 6 {
		t.Errorf("dropped %d, want 6", d)
	}

	// A slow consumer of a fast stream: every frame is taken or dropped.
	go func() {
		for n := uint64(9); n <= 200; n++ {
			feed <- n
			time.Sleep(time.Millisecond)
		}
	}()
	var taken uint64
	last := uint64(8)
	for c.Stats().Frames < 200 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		f, err := c.Next(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if f.Seq <= last {
			t.Errorf("frame %d after %d", f.Seq, last)
		}
		last = f.Seq
		f.Mat.Close()
		taken++
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond)
	s := c.Stats()
	pending := uint64(0)
	if last < 200 {
		pending = 1
	}
	if s.Dropped+taken+2+pending != 200 { // 2 taken earlier
		t.Errorf("frames 200 = dropped %d + taken %d + 2 + pending %d does not add up", s.Dropped, taken, pending)
	}
	if s.Dropped == 0 {
		t.Error("a slow consumer saw no drops")
	}
}

func hashOf(n uint64) uint64 {
	m := gocv.NewMat()
	defer m.Close()
	fill(&m, n)
	return contentHash(&m)
}

func TestEOFStops(t *testing.T) {
	var i atomic.Int32
	open := func(URI, Config) (Source, error) {
		return &fakeSource{name: "fake", read: func(dst *gocv.Mat) error {
			if i.Add(1) > 3 {
				return io.EOF
			}
			fill(dst, uint64(i.Load()))
			return nil
		}}, nil
	}
	c, log := startCamera(t, testConfig("file:///fake.mp4"), open)
	waitState(t, c, StateStopped, 2*time.Second)
	if _, err := c.Next(context.Background()); !errors.Is(err, ErrStopped) {
		t.Errorf("Next after EOF: %v, want ErrStopped", err)
	}
	if s := c.Stats(); s.Frames != 3 || s.Reconnects != 0 {
		t.Errorf("stats %+v, want 3 frames, no reconnect", s)
	}
	if !log.seen(StateStreaming) {
		t.Error("never streaming")
	}
}

func TestOpenErrorBacksOff(t *testing.T) {
	var opens atomic.Int32
	open := func(URI, Config) (Source, error) {
		return &fakeSource{name: "fake://cam", open: func() error {
			opens.Add(1)
			return errors.New("connection refused")
		}}, nil
	}
	c, _ := startCamera(t, testConfig("rtsp://cam/x"), open)
	waitFor(t, 3*time.Second, "4 reconnects", func() bool { return c.Stats().Reconnects >= 4 })
	s := c.Stats()
	if s.State != StateReconnecting || s.LastError != "open fake://cam: connection refused" {
		t.Errorf("stats %+v", s)
	}
}

func TestStalledReadIsAbandoned(t *testing.T) {
	hang := make(chan struct{})
	var sessions, closed atomic.Int32
	open := func(URI, Config) (Source, error) {
		n := sessions.Add(1)
		var i uint64
		src := &fakeSource{name: "fake"}
		src.read = func(dst *gocv.Mat) error {
			i++
			if n == 1 && i > 3 {
				<-hang // stuck inside "OpenCV"
				if src.closed.Load() != 0 {
					t.Error("source closed while a read was in progress")
				}
			}
			fill(dst, i)
			time.Sleep(5 * time.Millisecond)
			return nil
		}
		return &closeCounter{fakeSource: src, closed: &closed}, nil
	}
	cfg := testConfig("http://cam/x")
	cfg.StallTimeout = 300 * time.Millisecond
	c, _ := startCamera(t, cfg, open)
	defer close(hang)
	waitFor(t, 3*time.Second, "a reconnect", func() bool { return c.Stats().Reconnects >= 1 })
	waitState(t, c, StateStreaming, 2*time.Second)
	s := c.Stats()
	if s.Abandoned < 1 || s.LastError != "no frame for 300ms" {
		t.Errorf("stats %+v, want 1 abandoned, no frame for 300ms", s)
	}
	if closed.Load() != 0 {
		t.Error("the hung source was closed by someone else than its reader")
	}
}

type closeCounter struct {
	*fakeSource
	closed *atomic.Int32
}

func (c *closeCounter) Close() error { c.closed.Add(1); return c.fakeSource.Close() }

func TestOpenTimeout(t *testing.T) {
	hang := make(chan struct{})
	open := func(URI, Config) (Source, error) {
		return &fakeSource{name: "fake://slow", open: func() error {
			<-hang
			return errors.New("too late")
		}}, nil
	}
	cfg := testConfig("rtsp://cam/x")
	cfg.OpenTimeout = 200 * time.Millisecond
	c, _ := startCamera(t, cfg, open)
	defer close(hang)
	waitFor(t, 3*time.Second, "abandoned opens", func() bool { return c.Stats().Abandoned >= 2 })
	if s := c.Stats(); !strings.Contains(s.LastError, "open fake://slow: no answer within 200ms") {
		t.Errorf("last error %q", s.LastError)
	}
}

func TestFrozen(t *testing.T) {
	var frozen atomic.Bool
	frozen.Store(true)
	var opens atomic.Int32
	open := func(URI, Config) (Source, error) {
		opens.Add(1)
		var i uint64
		return &fakeSource{name: "fake", read: func(dst *gocv.Mat) error {
			i++
			if frozen.Load() {
				fill(dst, 42)
			} else {
				fill(dst, i)
			}
			time.Sleep(10 * time.Millisecond)
			return nil
		}}, nil
	}
	cfg := testConfig("http://cam/x")
	cfg.FrozenTimeout = 300 * time.Millisecond
	c, log := startCamera(t, cfg, open)
	waitState(t, c, StateFrozen, 2*time.Second)
	waitFor(t, 3*time.Second, "reopens while frozen", func() bool { return opens.Load() >= 3 })
	if !strings.HasPrefix(c.Stats().LastError, "frozen: identical frames for") {
		t.Errorf("last error %q", c.Stats().LastError)
	}
	if log.seen(StateReconnecting) {
		t.Error("a frozen camera went to reconnecting")
	}
	frozen.Store(false)
	waitState(t, c, StateStreaming, 2*time.Second)
}

func TestRunTwice(t *testing.T) {
	c, _ := startCamera(t, testConfig("http://cam/x"), func(URI, Config) (Source, error) {
		return nil, errors.New("nope")
	})
	waitFor(t, time.Second, "running", func() bool { return c.running.Load() })
	if err := c.Run(context.Background()); err == nil {
		t.Error("second Run did not fail")
	}
}

func TestNewCameraBadURI(t *testing.T) {
	if _, err := NewCamera(Config{Name: "x", URI: "ftp://nope"}, Options{}); err == nil {
		t.Error("no error for ftp://")
	}
}
