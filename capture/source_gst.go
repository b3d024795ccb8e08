package capture

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"gocv.io/x/gocv"
)

// appsinkSuffix ends pipelines that lack an appsink: keep only the newest
// buffer and never wait for the clock, so a slow reader sees fresh frames.
const appsinkSuffix = "appsink drop=true max-buffers=1 sync=false"

// CSI preset defaults, used where Config leaves width, height or fps at 0.
const (
	DefaultCSIWidth  = 1280
	DefaultCSIHeight = 720
	DefaultCSIFPS    = 30
)

// gstSource reads a GStreamer pipeline ending in appsink.
type gstSource struct {
	capture
	name     string
	pipeline string
}

func newGstSource(name, pipeline string) *gstSource {
	return &gstSource{name: name, pipeline: pipeline}
}

func (s *gstSource) String() string { return s.name }

// Open starts the pipeline.
func (s *gstSource) Open() error {
	if err := s.set(gocv.VideoCaptureFileWithAPI(s.pipeline, gocv.VideoCaptureGstreamer)); err != nil {
		return errors.New("cannot start GStreamer pipeline " + s.pipeline)
	}
	return nil
}

// Read reads the next frame.
func (s *gstSource) Read(dst *gocv.Mat) error { return s.read(dst) }

// Close stops the pipeline.
func (s *gstSource) Close() error { return s.close() }

// EnsureAppsink returns pipeline unchanged when one of its elements is an
// appsink, and otherwise appends "! appsink drop=true max-buffers=1
// sync=false".
func EnsureAppsink(pipeline string) string {
	for _, elem := range strings.Split(pipeline, "!") {
		if f := strings.Fields(elem); len(f) > 0 && f[0] == "appsink" {
			return pipeline
		}
	}
	return strings.TrimSpace(pipeline) + " ! " + appsinkSuffix
}

// CSIPipeline returns the GStreamer pipeline for the Jetson CSI camera with
// the given sensor id: nvarguscamerasrc at width x height and fps (the
// CSI defaults 1280x720 at 30 fps where 0), converted by nvvidconv to BGRx
// and by videoconvert to the BGR that OpenCV wants, into an appsink that
// keeps only the newest frame.
func CSIPipeline(sensorID, width, height int, fps float64) string {
	if width <= 0 {
		width = DefaultCSIWidth
	}
	if height <= 0 {
		height = DefaultCSIHeight
	}
	if fps <= 0 || math.IsNaN(fps) || math.IsInf(fps, 0) {
		fps = DefaultCSIFPS
	}
	num, den := fraction(fps)
	return fmt.Sprintf("nvarguscamerasrc sensor-id=%d ! "+
		"video/x-raw(memory:NVMM),width=%d,height=%d,framerate=%d/%d,format=NV12 ! "+
		"nvvidconv ! video/x-raw,width=%d,height=%d,format=BGRx ! "+
		"videoconvert ! video/x-raw,format=BGR ! "+
		"appsink drop=true max-buffers=1",
		sensorID, width, height, num, den, width, height)
}

// fraction returns fps as a reduced fraction with a denominator of at most
// 1000 (29.97 -> 2997/100).
func fraction(fps float64) (num, den int) {
	num, den = int(math.Round(fps*1000)), 1000
	if num <= 0 {
		return 1, 1
	}
	a, b := num, den
	for b != 0 {
		a, b = b, a%b
	}
	return num / a, den / a
}
