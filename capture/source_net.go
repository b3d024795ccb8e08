package capture

import (
	"fmt"
	"os"
	"sync"
	"time"

	"gocv.io/x/gocv"
)

// ffmpegOptionsEnv is read by OpenCV's FFmpeg backend on every open. With
// OpenCV 4.6 through gocv 0.31 it is the only way to give FFmpeg a socket
// timeout: without one, a stalled stream blocks Read for 30 s, and
// CAP_PROP_READ_TIMEOUT_MSEC set after opening has no effect.
const ffmpegOptionsEnv = "OPENCV_FFMPEG_CAPTURE_OPTIONS"

// ffmpegEnvMu serialises opens that set ffmpegOptionsEnv. The process
// environment is global, so this is the package's one piece of global
// mutable state: each open sets the variable, opens, and restores the
// previous value while holding the lock.
var ffmpegEnvMu sync.Mutex

// netSource reads rtsp:// and http(s):// URLs with the FFmpeg backend.
type netSource struct {
	capture
	target  string
	name    string
	options string
}

func newNetSource(u URI, cfg Config) *netSource {
	return &netSource{
		target:  u.Target,
		name:    redact(u.Target),
		options: FFmpegOptions(u.Kind, cfg.WithDefaults().StallTimeout),
	}
}

// FFmpegOptions returns the OPENCV_FFMPEG_CAPTURE_OPTIONS value used to open
// a stream of kind k: RTSP over TCP, and a socket timeout of stall (in
// microseconds, as FFmpeg wants it) so that a stalled stream fails its read
// instead of blocking for OpenCV's default 30 s.
func FFmpegOptions(k Kind, stall time.Duration) string {
	opts := fmt.Sprintf("timeout;%d", stall.Microseconds())
	if k == KindRTSP {
		opts = "rtsp_transport;tcp|" + opts
	}
	return opts
}

func (s *netSource) String() string { return s.name }

// Open connects with ffmpegOptionsEnv set to the source's options. A value
// already in the environment is kept after ours, so the user's options
// win (FFmpeg keeps the last value of a repeated key).
func (s *netSource) Open() error {
	ffmpegEnvMu.Lock()
	defer ffmpegEnvMu.Unlock()
	old, had := os.LookupEnv(ffmpegOptionsEnv)
	val := s.options
	if had && old != "" {
		val += "|" + old
	}
	if err := os.Setenv(ffmpegOptionsEnv, val); err != nil {
		return fmt.Errorf("set %s: %w", ffmpegOptionsEnv, err)
	}
	defer func() {
		if had {
			os.Setenv(ffmpegOptionsEnv, old)
		} else {
			os.Unsetenv(ffmpegOptionsEnv)
		}
	}()
	if err := s.set(gocv.VideoCaptureFileWithAPI(s.target, gocv.VideoCaptureFFmpeg)); err != nil {
		return fmt.Errorf("cannot open stream (FFmpeg)")
	}
	return nil
}

// Read reads the next frame.
func (s *netSource) Read(dst *gocv.Mat) error { return s.read(dst) }

// Close disconnects.
func (s *netSource) Close() error { return s.close() }
