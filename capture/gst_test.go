package capture

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// needGst skips the test unless GStreamer has every element named.
func needGst(t *testing.T, elements ...string) {
	t.Helper()
	inspect, err := exec.LookPath("gst-inspect-1.0")
	if err != nil {
		t.Skip("gst-inspect-1.0 not installed")
	}
	for _, e := range elements {
		if exec.Command(inspect, "--exists", e).Run() != nil {
			t.Skipf("GStreamer element %s not installed", e)
		}
	}
}

func TestGStreamerSource(t *testing.T) {
	needGst(t, "videotestsrc", "videoconvert", "appsink")
	cfg := testConfig("gst://videotestsrc is-live=true pattern=ball ! video/x-raw,width=160,height=120,framerate=30/1 ! videoconvert")
	cfg.FrozenTimeout = time.Second // the ball moves: never frozen
	c, log := startCamera(t, cfg, nil)
	waitState(t, c, StateStreaming, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	f, err := c.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkSize(t, f, 160, 120)
	f.Mat.Close()
	waitFor(t, 3*time.Second, "45 frames", func() bool { return c.Stats().Frames >= 45 })
	if s := c.Stats(); s.Reconnects != 0 || log.seen(StateFrozen) {
		t.Errorf("stats %+v", s)
	}
}

// rtspServer is the GStreamer RTSP server recipe of the toolchain study.
const rtspServer = `
import sys, gi
gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0')
from gi.repository import Gst, GstRtspServer, GLib
Gst.init(None)
src = "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert"
launch = f"( {src} ! openh264enc bitrate=500000 gop-size=30 ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )"
s = GstRtspServer.RTSPServer(); s.set_address("127.0.0.1"); s.set_service(sys.argv[1])
f = GstRtspServer.RTSPMediaFactory(); f.set_launch(launch); f.set_shared(True)
s.get_mount_points().add_factory("/cam", f); s.attach(None); GLib.MainLoop().run()
`

// startRTSP starts the RTSP server on port and waits until it listens.
func startRTSP(t *testing.T, script string, port int) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("/usr/bin/python3", script, strconv.Itoa(port))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start the RTSP server: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	waitFor(t, 10*time.Second, "RTSP server", func() bool {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	return cmd
}

func TestRTSPCamera(t *testing.T) {
	needGst(t, "videotestsrc", "openh264enc", "h264parse", "rtph264pay")
	if exec.Command("/usr/bin/python3", "-c",
		"import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer").Run() != nil {
		t.Skip("python3 GstRtspServer bindings not installed")
	}
	script := filepath.Join(t.TempDir(), "rtsp.py")
	if err := os.WriteFile(script, []byte(rtspServer), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	server := startRTSP(t, script, port)

	cfg := testConfig("rtsp://127.0.0.1:" + strconv.Itoa(port) + "/cam")
	cfg.StallTimeout = 3 * time.Second
	cfg.OpenTimeout = 8 * time.Second
	c, _ := startCamera(t, cfg, nil)
	waitState(t, c, StateStreaming, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	f, err := c.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkSize(t, f, 320, 240)
	f.Mat.Close()

	server.Process.Kill()
	server.Wait()
	waitState(t, c, StateReconnecting, cfg.StallTimeout+2*time.Second)
	startRTSP(t, script, port)
	waitState(t, c, StateStreaming, 10*time.Second)
	nextFrame(t, c, 3*time.Second)
}
