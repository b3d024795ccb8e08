// Package capture reads frames from cameras with GoCV: V4L2 devices, files,
// RTSP and HTTP (MJPEG) URLs, GStreamer pipelines and the Jetson CSI preset.
//
// A Camera runs one goroutine that opens its Source, reads frames, and keeps
// only the newest one in a slot (latest frame wins; every overwritten frame is
// counted as dropped). A source that fails, stalls (no frame for
// StallTimeout) or freezes (identical content for FrozenTimeout) is reopened
// with exponential backoff and jitter. A read that hangs inside OpenCV is
// abandoned by a watchdog so it can never block the agent.
//
// Usage, one goroutine per camera:
//
//	cam, err := capture.NewCamera(cfg, capture.Options{Logger: log, OnState: publishState})
//	go cam.Run(ctx)
//	for {
//		f, err := cam.Next(ctx) // the newest frame; blocks until there is one
//		if err != nil {
//			break // ctx done, or capture.ErrStopped
//		}
//		detect(f.Mat)
//		f.Mat.Close()
//	}
//
// Sizes: Width, Height and CaptureFPS are requests made to V4L2 devices and
// the CSI preset. Frames are never resized here; every source delivers
// frames at the size it produces, and the detector letterboxes them.
//
// Timeouts: OpenCV 4.6 through gocv 0.31 honours no read or open timeout
// for FFmpeg streams except the OPENCV_FFMPEG_CAPTURE_OPTIONS environment
// variable, which rtsp:// and http(s):// sources set (to StallTimeout)
// around each open under a package mutex. Whatever hangs regardless is
// abandoned: the goroutine stuck in OpenCV keeps its VideoCapture and Mat
// and closes them if the call ever returns (see Stats.Abandoned).
package capture

import (
	"time"

	"gocv.io/x/gocv"
)

// Config describes one camera. The TOML keys are those of the [[camera]]
// tables in config.toml.
type Config struct {
	Name          string        `toml:"name"`           // unique, [a-z0-9_-]+, used in MQTT topics
	URI           string        `toml:"uri"`            // v4l2:///dev/video0, v4l2://0, file://path, rtsp://, http(s)://, gst://<pipeline>, csi://N
	Enabled       bool          `toml:"enabled"`        // default true
	Loop          bool          `toml:"loop"`           // file:// only: restart at end of file
	Width         int           `toml:"width"`          // requested capture size (v4l2/csi); 0 = source default; frames are not resized
	Height        int           `toml:"height"`         //
	CaptureFPS    float64       `toml:"capture_fps"`    // requested source fps (v4l2/csi); file://: pacing rate instead of the file's own; 0 = default
	MaxFPS        float64       `toml:"max_fps"`        // max detections per second (applied by the consumer); 0 = as fast as possible
	StallTimeout  time.Duration `toml:"stall_timeout"`  // no frame for this long = stalled -> reopen (default 10s)
	FrozenTimeout time.Duration `toml:"frozen_timeout"` // same content for this long = frozen (default 30s; negative disables)
	OpenTimeout   time.Duration `toml:"open_timeout"`   // open must finish within (default 15s)
	BackoffMin    time.Duration `toml:"backoff_min"`    // first reconnect delay (default 500ms)
	BackoffMax    time.Duration `toml:"backoff_max"`    // reconnect delay cap (default 30s)
}

// State is the health of a camera as published on <p>/cameras/<cam>/state.
type State string

// Camera states.
const (
	StateStarting     State = "starting"
	StateStreaming    State = "streaming"
	StateReconnecting State = "reconnecting"
	StateFrozen       State = "frozen"
	StateStopped      State = "stopped"
)

// Frame is one captured image. The receiver owns Mat and must Close it.
type Frame struct {
	Mat    gocv.Mat
	Seq    uint64    // 1, 2, 3... per camera, counts every frame read (dropped ones too)
	Time   time.Time // capture time
	Camera string
}

// Stats is a snapshot of a camera's counters.
type Stats struct {
	State      State
	FPS        float64 // frames read per second, recent average
	Frames     uint64  // frames read since start
	Dropped    uint64  // frames overwritten in the slot before anyone took them
	Reconnects uint64  // reopen attempts after the first open
	Abandoned  uint64  // opens and reads given up while blocked inside OpenCV
	LastError  string  // what last went wrong, kept after recovery ("no frame for 10s")
}
