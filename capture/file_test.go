package capture

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/yolo7d/yolo7d/capture/capturetest"
	"gocv.io/x/gocv"
)

func TestFileSource(t *testing.T) {
	path := capturetest.MakeVideo(t, t.TempDir(), 160, 120, 30, 1)

	t.Run("paced", func(t *testing.T) {
		src := newFileSource(path, Config{})
		defer src.Close()
		if err := src.Open(); err != nil {
			t.Fatal(err)
		}
		m := gocv.NewMat()
		defer m.Close()
		start := time.Now()
		n := 0
		for {
			err := src.Read(&m)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Cols() != 160 || m.Rows() != 120 {
				t.Fatalf("frame %dx%d", m.Cols(), m.Rows())
			}
			n++
		}
		el := time.Since(start)
		if n != 30 {
			t.Errorf("read %d frames, want 30", n)
		}
		// 30 frames at 30 fps: about one second, not as fast as decoding.
		if el < 800*time.Millisecond || el > 5*time.Second {
			t.Errorf("30 frames took %s, want about 1s", el)
		}
	})

	t.Run("missing", func(t *testing.T) {
		src := newFileSource(path+".nope", Config{})
		defer src.Close()
		if err := src.Open(); err == nil {
			t.Error("opened a missing file")
		}
	})

	t.Run("no loop", func(t *testing.T) {
		cfg := testConfig("file://" + path)
		cfg.CaptureFPS = 120 // pace faster than the file's 30 fps
		c, _ := startCamera(t, cfg, nil)
		f := nextFrame(t, c, 5*time.Second)
		if f.Seq < 1 {
			t.Errorf("seq %d", f.Seq)
		}
		waitState(t, c, StateStopped, 5*time.Second)
		s := c.Stats()
		if s.Frames != 30 || s.Reconnects != 0 || s.LastError != "end of stream" {
			t.Errorf("stats %+v, want 30 frames, stopped at end of stream", s)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := c.Next(ctx); err != ErrStopped {
			t.Errorf("Next after the end: %v", err)
		}
	})

	t.Run("loop", func(t *testing.T) {
		cfg := testConfig("file://" + path)
		cfg.Loop = true
		cfg.CaptureFPS = 120
		c, _ := startCamera(t, cfg, nil)
		waitFor(t, 5*time.Second, "more frames than the file has", func() bool { return c.Stats().Frames > 150 })
		s := c.Stats()
		if s.State != StateStreaming || s.Reconnects != 0 {
			t.Errorf("stats %+v, want streaming without reconnects", s)
		}
		// Paced to 120 fps, never faster (a loaded machine may be slower).
		if s.FPS <= 0 || s.FPS > 150 {
			t.Errorf("fps %.1f, want up to 120", s.FPS)
		}
		nextFrame(t, c, time.Second)
	})
}
