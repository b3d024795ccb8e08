package capture

import (
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	good := []struct {
		in   string
		want URI
	}{
		{"v4l2:///dev/video0", URI{Kind: KindV4L2, Device: 0, Target: "/dev/video0"}},
		{"v4l2://3", URI{Kind: KindV4L2, Device: 3, Target: "3"}},
		{"V4L2:///dev/video12", URI{Kind: KindV4L2, Device: 12, Target: "/dev/video12"}},
		{"file:///var/lib/yolo7d/a.mp4", URI{Kind: KindFile, Path: "/var/lib/yolo7d/a.mp4", Target: "/var/lib/yolo7d/a.mp4"}},
		{"file://rel/b%20c.mp4", URI{Kind: KindFile, Path: "rel/b c.mp4", Target: "rel/b c.mp4"}},
		{"rtsp://user:pw@10.0.0.2:554/stream1", URI{Kind: KindRTSP, Target: "rtsp://user:pw@10.0.0.2:554/stream1"}},
		{"rtsps://cam.local/s", URI{Kind: KindRTSP, Target: "rtsps://cam.local/s"}},
		{"http://127.0.0.1:8080/cam.mjpg", URI{Kind: KindHTTP, Target: "http://127.0.0.1:8080/cam.mjpg"}},
		{"https://cam.example/video", URI{Kind: KindHTTP, Target: "https://cam.example/video"}},
		{"gst:// videotestsrc ! videoconvert ! appsink ", URI{Kind: KindGStreamer, Target: "videotestsrc ! videoconvert ! appsink"}},
		{"csi://0", URI{Kind: KindCSI, Device: 0}},
		{"csi://15", URI{Kind: KindCSI, Device: 15}},
	}
	for _, tc := range good {
		got, err := ParseURI(tc.in)
		if err != nil {
			t.Errorf("ParseURI(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseURI(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	bad := []struct{ in, msg string }{
		{"", "empty"},
		{"   ", "empty"},
		{"/dev/video0", "missing scheme"},
		{"ftp://host/x", "unknown scheme"},
		{"v4l2://", "v4l2://"},
		{"v4l2:///dev/videoX", "v4l2://"},
		{"v4l2://-1", "v4l2://"},
		{"v4l2://256", "v4l2://"},
		{"csi://", "sensor id"},
		{"csi://16", "sensor id"},
		{"csi://a", "sensor id"},
		{"file://", "empty file path"},
		{"file://%zz", "invalid URL escape"},
		{"rtsp:///nohost", "missing host"},
		{"http://host:0/x", "bad port"},
		{"http://host:99999/x", "bad port"},
		{"http://[::1/x", "source URI"},
		{"gst://  ", "empty GStreamer pipeline"},
	}
	for _, tc := range bad {
		_, err := ParseURI(tc.in)
		if err == nil {
			t.Errorf("ParseURI(%q): no error", tc.in)
			continue
		}
		if !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ParseURI(%q) = %v, want it to mention %q", tc.in, err, tc.msg)
		}
	}
}

func TestParseURIHidesPasswords(t *testing.T) {
	for _, raw := range []string{"rtsp://admin:hunter2@cam:99999/s", "rtsp://admin:hunter2@[::1/s", "http://u:hunter2@/x"} {
		_, err := ParseURI(raw)
		if err == nil {
			t.Errorf("ParseURI(%q): no error", raw)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("ParseURI(%q) error shows the password: %v", raw, err)
		}
	}
}

func FuzzParseURI(f *testing.F) {
	for _, s := range []string{"v4l2:///dev/video0", "v4l2://1", "file:///a.mp4", "rtsp://u:p@h:554/s",
		"http://h/x.mjpg", "gst://videotestsrc ! appsink", "csi://0", "", "x://", "http://[::1]:80/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := ParseURI(raw)
		if err != nil {
			if u != (URI{}) {
				t.Errorf("ParseURI(%q) returned %+v with error %v", raw, u, err)
			}
			return
		}
		switch u.Kind {
		case KindV4L2:
			if u.Device < 0 || u.Device > 255 {
				t.Errorf("v4l2 device %d out of range", u.Device)
			}
		case KindCSI:
			if u.Device < 0 || u.Device > 15 {
				t.Errorf("csi sensor %d out of range", u.Device)
			}
		case KindFile:
			if u.Path == "" {
				t.Error("empty file path accepted")
			}
		case KindRTSP, KindHTTP:
			if u.Target != raw {
				t.Errorf("target %q != %q", u.Target, raw)
			}
		case KindGStreamer:
			if strings.TrimSpace(u.Target) == "" {
				t.Error("empty pipeline accepted")
			}
		default:
			t.Errorf("unknown kind %q", u.Kind)
		}
		// The default opener accepts everything ParseURI accepts.
		src, err := OpenSource(u, Config{})
		if err != nil || src == nil || src.String() == "" {
			t.Errorf("OpenSource(%+v) = %v, %v", u, src, err)
		}
	})
}
