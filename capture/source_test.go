package capture

import (
	"strings"
	"testing"
	"time"
)

func TestCSIPipeline(t *testing.T) {
	got := CSIPipeline(1, 1920, 1080, 29.97)
	want := "nvarguscamerasrc sensor-id=1 ! " +
		"video/x-raw(memory:NVMM),width=1920,height=1080,framerate=2997/100,format=NV12 ! " +
		"nvvidconv ! video/x-raw,width=1920,height=1080,format=BGRx ! " +
		"videoconvert ! video/x-raw,format=BGR ! " +
		"appsink drop=true max-buffers=1"
	if got != want {
		t.Errorf("CSIPipeline =\n%s\nwant\n%s", got, want)
	}
	def := CSIPipeline(0, 0, 0, 0)
	for _, s := range []string{"sensor-id=0 ", "width=1280,height=720,framerate=30/1,"} {
		if !strings.Contains(def, s) {
			t.Errorf("default pipeline %q lacks %q", def, s)
		}
	}
	src, err := OpenSource(URI{Kind: KindCSI, Device: 2}, Config{Width: 640, Height: 480, CaptureFPS: 60})
	if err != nil {
		t.Fatal(err)
	}
	if g := src.(*gstSource); g.pipeline != CSIPipeline(2, 640, 480, 60) || g.String() != "csi://2" {
		t.Errorf("csi source %q %q", g.String(), g.pipeline)
	}
}

func TestEnsureAppsink(t *testing.T) {
	for in, want := range map[string]string{
		"videotestsrc ! videoconvert":                   "videotestsrc ! videoconvert ! appsink drop=true max-buffers=1 sync=false",
		"  videotestsrc ! videoconvert  ":               "videotestsrc ! videoconvert ! appsink drop=true max-buffers=1 sync=false",
		"videotestsrc ! videoconvert ! appsink":         "videotestsrc ! videoconvert ! appsink",
		"videotestsrc ! appsink name=s drop=1":          "videotestsrc ! appsink name=s drop=1",
		"videotestsrc name=appsink_like ! videoconvert": "videotestsrc name=appsink_like ! videoconvert ! appsink drop=true max-buffers=1 sync=false",
	} {
		if got := EnsureAppsink(in); got != want {
			t.Errorf("EnsureAppsink(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFFmpegOptions(t *testing.T) {
	if got := FFmpegOptions(KindRTSP, 2*time.Second); got != "rtsp_transport;tcp|timeout;2000000" {
		t.Errorf("rtsp options %q", got)
	}
	if got := FFmpegOptions(KindHTTP, 10*time.Second); got != "timeout;10000000" {
		t.Errorf("http options %q", got)
	}
	src, _ := OpenSource(URI{Kind: KindRTSP, Target: "rtsp://admin:secret@cam/s"}, Config{})
	if s := src.String(); s != "rtsp://admin:xxxxx@cam/s" {
		t.Errorf("String() = %q leaks or mangles the password", s)
	}
	if o := src.(*netSource).options; o != "rtsp_transport;tcp|timeout;10000000" {
		t.Errorf("default options %q", o)
	}
}

func TestFraction(t *testing.T) {
	for fps, want := range map[float64][2]int{30: {30, 1}, 29.97: {2997, 100}, 7.5: {15, 2}, 0.0001: {1, 1}} {
		if n, d := fraction(fps); n != want[0] || d != want[1] {
			t.Errorf("fraction(%v) = %d/%d, want %d/%d", fps, n, d, want[0], want[1])
		}
	}
}

func TestWithDefaults(t *testing.T) {
	c := Config{}.WithDefaults()
	if c.StallTimeout != 10*time.Second || c.FrozenTimeout != 30*time.Second || c.OpenTimeout != 15*time.Second ||
		c.BackoffMin != 500*time.Millisecond || c.BackoffMax != 30*time.Second {
		t.Errorf("defaults %+v", c)
	}
	c = Config{FrozenTimeout: -1, BackoffMin: time.Minute, StallTimeout: time.Second}.WithDefaults()
	if c.FrozenTimeout != -1 || c.BackoffMax != time.Minute || c.StallTimeout != time.Second {
		t.Errorf("explicit values changed: %+v", c)
	}
}
