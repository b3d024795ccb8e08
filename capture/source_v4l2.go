package capture

import (
	"errors"
	"fmt"

	"gocv.io/x/gocv"
)

// v4l2Source reads a V4L2 device. Width, height and fps from Config are
// requests: the driver picks the nearest mode it supports, and frames are
// passed on at whatever size it delivers (they are not resized).
type v4l2Source struct {
	capture
	device        int
	width, height int
	fps           float64
}

func newV4L2Source(device int, cfg Config) *v4l2Source {
	return &v4l2Source{device: device, width: cfg.Width, height: cfg.Height, fps: cfg.CaptureFPS}
}

func (s *v4l2Source) String() string { return fmt.Sprintf("v4l2:///dev/video%d", s.device) }

// Open opens the device and requests the configured mode.
func (s *v4l2Source) Open() error {
	if err := s.set(gocv.VideoCaptureDeviceWithAPI(s.device, gocv.VideoCaptureV4L2)); err != nil {
		return errors.New("cannot open V4L2 device")
	}
	if s.width > 0 {
		s.vc.Set(gocv.VideoCaptureFrameWidth, float64(s.width))
	}
	if s.height > 0 {
		s.vc.Set(gocv.VideoCaptureFrameHeight, float64(s.height))
	}
	if s.fps > 0 {
		s.vc.Set(gocv.VideoCaptureFPS, s.fps)
	}
	return nil
}

// Read reads the next frame.
func (s *v4l2Source) Read(dst *gocv.Mat) error { return s.read(dst) }

// Close closes the device.
func (s *v4l2Source) Close() error { return s.close() }
