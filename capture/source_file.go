package capture

import (
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"gocv.io/x/gocv"
)

// defaultFileFPS paces files whose container does not state a usable rate.
const defaultFileFPS = 30

// fileSource reads a video file with the FFmpeg backend, paced to the
// file's own frame rate (or Config.CaptureFPS when set) so that a file
// behaves like a live camera. With loop it reopens the file at its end.
type fileSource struct {
	capture
	path     string
	loop     bool
	fps      float64 // pacing override; 0 = the file's rate
	interval time.Duration
	next     time.Time // when the next frame is due
}

func newFileSource(path string, cfg Config) *fileSource {
	return &fileSource{path: path, loop: cfg.Loop, fps: cfg.CaptureFPS}
}

func (s *fileSource) String() string { return "file://" + s.path }

// Open opens the file and reads its frame rate.
func (s *fileSource) Open() error {
	if _, err := os.Stat(s.path); err != nil {
		return err
	}
	if err := s.open(); err != nil {
		return err
	}
	fps := s.fps
	if fps <= 0 {
		fps = s.vc.Get(gocv.VideoCaptureFPS)
	}
	if math.IsNaN(fps) || fps <= 0 || fps > 1000 {
		fps = defaultFileFPS
	}
	s.interval = time.Duration(float64(time.Second) / fps)
	return nil
}

func (s *fileSource) open() error {
	return s.set(gocv.VideoCaptureFileWithAPI(s.path, gocv.VideoCaptureFFmpeg))
}

// Read returns the next frame when it is due. At the end of the file it
// returns io.EOF, or, when looping, starts again from the first frame.
func (s *fileSource) Read(dst *gocv.Mat) error {
	if err := s.read(dst); err != nil {
		if !s.loop {
			return io.EOF
		}
		// Reopening is more reliable than seeking to frame 0 with FFmpeg.
		s.close()
		if err := s.open(); err != nil {
			return fmt.Errorf("reopen for loop: %w", err)
		}
		if err := s.read(dst); err != nil {
			return fmt.Errorf("first frame after loop: %w", err)
		}
	}
	s.pace()
	return nil
}

// pace sleeps until the current frame is due. A reader that falls behind
// by more than one frame is resynchronised instead of bursting.
func (s *fileSource) pace() {
	now := time.Now()
	if s.next.IsZero() || now.Sub(s.next) > s.interval {
		s.next = now
	} else if d := s.next.Sub(now); d > 0 {
		time.Sleep(d)
	}
	s.next = s.next.Add(s.interval)
}

// Close closes the file.
func (s *fileSource) Close() error { return s.close() }
