package capture

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// Kind is the kind of a camera source.
type Kind string

// Source kinds, one per URI scheme.
const (
	KindV4L2      Kind = "v4l2"
	KindFile      Kind = "file"
	KindRTSP      Kind = "rtsp"
	KindHTTP      Kind = "http" // http:// and https:// (MJPEG or anything FFmpeg reads)
	KindGStreamer Kind = "gst"
	KindCSI       Kind = "csi"
)

// URI is a parsed camera source URI.
type URI struct {
	Kind Kind
	// Device is the V4L2 device index (v4l2://0, v4l2:///dev/video0 -> 0) or
	// the CSI sensor id (csi://0).
	Device int
	// Path is the file path of file:// sources.
	Path string
	// Target is what is handed to OpenCV: the URL for rtsp/http, the
	// pipeline for gst, the path for file.
	Target string
}

// ParseURI parses a camera source URI:
//
//	v4l2:///dev/video0   v4l2://0       a V4L2 device
//	file:///abs/path.mp4 file://rel.mp4 a video file (relative to the working directory)
//	rtsp://host:554/path                an RTSP stream (FFmpeg)
//	http://host/cam.mjpg https://...    an HTTP stream, typically MJPEG (FFmpeg)
//	gst://<pipeline>                    a GStreamer pipeline ending in appsink
//	csi://0                             the Jetson CSI camera preset (nvarguscamerasrc)
func ParseURI(raw string) (URI, error) {
	if strings.TrimSpace(raw) == "" {
		return URI{}, fmt.Errorf("empty source URI")
	}
	shown := redact(raw) // for error messages: no passwords in logs
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return URI{}, fmt.Errorf("source URI %q: missing scheme (want v4l2://, file://, rtsp://, http://, https://, gst:// or csi://)", shown)
	}
	switch strings.ToLower(scheme) {
	case "v4l2":
		dev, err := parseV4L2(rest)
		if err != nil {
			return URI{}, fmt.Errorf("source URI %q: %w", shown, err)
		}
		return URI{Kind: KindV4L2, Device: dev, Target: rest}, nil
	case "csi":
		n, err := strconv.Atoi(rest)
		if err != nil || n < 0 || n > 15 {
			return URI{}, fmt.Errorf("source URI %q: csi:// wants a sensor id 0..15", shown)
		}
		return URI{Kind: KindCSI, Device: n}, nil
	case "file":
		if rest == "" {
			return URI{}, fmt.Errorf("source URI %q: empty file path", shown)
		}
		p, err := url.PathUnescape(rest)
		if err != nil {
			return URI{}, fmt.Errorf("source URI %q: %w", shown, err)
		}
		return URI{Kind: KindFile, Path: p, Target: p}, nil
	case "rtsp", "rtsps":
		if err := checkURL(raw); err != nil {
			return URI{}, err
		}
		return URI{Kind: KindRTSP, Target: raw}, nil
	case "http", "https":
		if err := checkURL(raw); err != nil {
			return URI{}, err
		}
		return URI{Kind: KindHTTP, Target: raw}, nil
	case "gst":
		p := strings.TrimSpace(rest)
		if p == "" {
			return URI{}, fmt.Errorf("source URI %q: empty GStreamer pipeline", shown)
		}
		return URI{Kind: KindGStreamer, Target: p}, nil
	default:
		return URI{}, fmt.Errorf("source URI %q: unknown scheme %q (want v4l2, file, rtsp, http, https, gst or csi)", shown, scheme)
	}
}

func parseV4L2(rest string) (int, error) {
	s := rest
	if strings.HasPrefix(s, "/dev/video") {
		s = strings.TrimPrefix(s, "/dev/video")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 {
		return 0, fmt.Errorf("v4l2:// wants /dev/videoN or an index N (0..255), got %q", rest)
	}
	return n, nil
}

func checkURL(raw string) error {
	shown := redact(raw)
	u, err := url.Parse(raw)
	if err != nil {
		if ue, ok := err.(*url.Error); ok {
			err = ue.Err // without the URL, which may hold a password
		}
		return fmt.Errorf("source URI %q: %w", shown, err)
	}
	if u.Host == "" {
		return fmt.Errorf("source URI %q: missing host", shown)
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("source URI %q: bad port %q", shown, p)
		}
	}
	return nil
}
