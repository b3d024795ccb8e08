//go:build matprofile

package capture

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/yolo7d/yolo7d/capture/capturetest"
	"gocv.io/x/gocv"
)

// TestNoMatLeaks runs cameras through many frames, drops, failed reads,
// an abandoned (hung) read, a freeze, and a real HTTP camera going down and
// stalling, then checks that every gocv.Mat was closed. Run with
// go test -tags matprofile.
func TestNoMatLeaks(t *testing.T) {
	base := gocv.MatProfile.Count()

	t.Run("fake", func(t *testing.T) {
		hang := make(chan struct{})
		var sessions atomic.Int32
		open := func(URI, Config) (Source, error) {
			n := sessions.Add(1)
			var i uint64
			return &fakeSource{name: "fake", read: func(dst *gocv.Mat) error {
				i++
				switch {
				case n == 1 && i > 100:
					return errors.New("read failed")
				case n == 2 && i > 50:
					<-hang // abandoned after the stall timeout
				case n == 3:
					fill(dst, 7) // frozen
					time.Sleep(2 * time.Millisecond)
					return nil
				}
				fill(dst, uint64(n)*1000+i)
				time.Sleep(time.Millisecond)
				return nil
			}}, nil
		}
		cfg := testConfig("http://cam/x")
		cfg.StallTimeout = 200 * time.Millisecond
		cfg.FrozenTimeout = 200 * time.Millisecond
		c, _ := startCamera(t, cfg, open)
		defer close(hang)
		taken := 0
		for c.Stats().Frames < 500 {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			f, err := c.Next(ctx)
			cancel()
			if err != nil {
				t.Fatalf("Next: %v (stats %+v)", err, c.Stats())
			}
			f.Mat.Close()
			taken++
			if taken%3 == 0 {
				time.Sleep(5 * time.Millisecond) // drops
			}
		}
		s := c.Stats()
		if s.Abandoned < 1 || s.Reconnects < 3 || s.Dropped == 0 {
			t.Errorf("stats %+v: want an abandoned read, reconnects and drops", s)
		}
	})

	t.Run("http", func(t *testing.T) {
		srv, err := capturetest.NewMJPEGServer(capturetest.MJPEGOptions{FPS: 50})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		cfg := testConfig(srv.URL())
		cfg.BackoffMin, cfg.BackoffMax = 50*time.Millisecond, 200*time.Millisecond
		c, _ := startCamera(t, cfg, nil)
		waitState(t, c, StateStreaming, 5*time.Second)
		for _, m := range []capturetest.Mode{capturetest.Down, capturetest.Serving, capturetest.Stalled, capturetest.Serving} {
			if err := srv.SetMode(m); err != nil {
				t.Fatal(err)
			}
			if m == capturetest.Serving {
				waitState(t, c, StateStreaming, 5*time.Second)
				nextFrame(t, c, 2*time.Second)
			} else {
				waitState(t, c, StateReconnecting, 3*time.Second)
			}
		}
	})

	// Subtests' cleanups have stopped the cameras and waited for their
	// readers, abandoned ones included.
	if n := gocv.MatProfile.Count(); n != base {
		var b strings.Builder
		gocv.MatProfile.WriteTo(&b, 1)
		t.Errorf("%d Mats open after the cameras stopped, %d before\n%s", n, base, b.String())
	}
}
