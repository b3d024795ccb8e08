package capture

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/yolo7d/yolo7d/capture/capturetest"
)

// TestHTTPCamera runs a camera against the fake MJPEG camera through its
// faults: down and back, stalled and back, frozen and back.
func TestHTTPCamera(t *testing.T) {
	srv, err := capturetest.NewMJPEGServer(capturetest.MJPEGOptions{Width: 320, Height: 240, FPS: 25})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cfg := testConfig(srv.URL())
	cfg.StallTimeout = 1500 * time.Millisecond
	cfg.OpenTimeout = 3 * time.Second
	cfg.FrozenTimeout = time.Second
	cfg.BackoffMin = 100 * time.Millisecond
	cfg.BackoffMax = 500 * time.Millisecond
	c, log := startCamera(t, cfg, nil)

	waitState(t, c, StateStreaming, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	f, err := c.Next(ctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	checkSize(t, f, 320, 240)
	f.Mat.Close()

	setMode := func(m capturetest.Mode) time.Time {
		t.Helper()
		if err := srv.SetMode(m); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}
	// resumes checks that fresh frames flow within 5s of since.
	resumes := func(since time.Time) {
		t.Helper()
		waitState(t, c, StateStreaming, 5*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second-time.Since(since))
		defer cancel()
		for {
			f, err := c.Next(ctx)
			if err != nil {
				t.Fatalf("no fresh frame within 5s: %v (stats %+v)", err, c.Stats())
			}
			f.Mat.Close()
			if f.Time.After(since) {
				return
			}
		}
	}

	t.Run("down", func(t *testing.T) {
		setMode(capturetest.Down)
		waitState(t, c, StateReconnecting, 2*time.Second)
		time.Sleep(time.Second) // a few refused reconnects
		if s := c.Stats(); s.Reconnects < 2 || !strings.HasPrefix(s.LastError, "open http://127.0.0.1") {
			t.Errorf("stats while down %+v", s)
		}
		resumes(setMode(capturetest.Serving))
	})

	t.Run("stalled", func(t *testing.T) {
		since := setMode(capturetest.Stalled)
		waitState(t, c, StateReconnecting, cfg.StallTimeout+2*time.Second)
		if el := time.Since(since); el < cfg.StallTimeout-200*time.Millisecond {
			t.Errorf("reconnecting %s after the stall, before the stall timeout", el)
		}
		t.Logf("stalled: %+v", c.Stats())
		resumes(setMode(capturetest.Serving))
	})

	t.Run("frozen", func(t *testing.T) {
		setMode(capturetest.Frozen)
		waitState(t, c, StateFrozen, cfg.FrozenTimeout+2*time.Second)
		if !log.seen(StateFrozen) {
			t.Error("OnState never saw frozen")
		}
		resumes(setMode(capturetest.Serving))
	})
}
