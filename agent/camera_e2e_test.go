package agent

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/yolo7d/yolo7d/capture/capturetest"
)

// TestAgentNetworkCameraOutageStallFreezeAndRecovery runs the agent on a
// fake HTTP MJPEG camera that goes down, comes back, stalls and freezes,
// and checks what a subscriber sees: reconnecting while it is away,
// detections again within 5 s of its return, frozen reported as frozen.
func TestAgentNetworkCameraOutageStallFreezeAndRecovery(t *testing.T) {
	broker := startMosquitto(t)
	cam, err := capturetest.NewMJPEGServer(capturetest.MJPEGOptions{Width: 320, Height: 240, FPS: 15})
	if err != nil {
		t.Fatal(err)
	}
	defer cam.Close()
	dir := t.TempDir()
	cfgPath := testConfig{
		Broker:   broker.URL(),
		StateDir: filepath.Join(dir, "state"),
		Model:    testModel(t),
		Cameras: fmt.Sprintf(`[[camera]]
name = "ipcam"
uri = %q
max_fps = 10
stall_timeout = "2s"
frozen_timeout = "2s"
open_timeout = "3s"
backoff_min = "200ms"
backoff_max = "1s"
`, cam.URL()),
	}.write(t, dir)
	sub := subscribe(t, broker.URL(), prefixFor(t)+"/#")

	_, stop := runAgent(t, cfgPath)
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	const detTopic = "/cameras/ipcam/detections"
	detectionsAfter := func(t0 time.Time) int {
		n := 0
		for _, m := range sub.on(detTopic) {
			if m.At.After(t0) {
				n++
			}
		}
		return n
	}
	state := func() string {
		var st stateMsg
		if !sub.lastJSON(t, "/cameras/ipcam/state", &st) {
			return ""
		}
		return st.State
	}

	waitFor(t, 30*time.Second, "detections from the camera", func() bool { return len(sub.on(detTopic)) >= 3 })
	waitFor(t, 5*time.Second, "state streaming", func() bool { return state() == "streaming" })

	phases := []struct {
		mode      capturetest.Mode
		wantState string
		within    time.Duration
	}{
		{capturetest.Down, "reconnecting", 5 * time.Second},
		{capturetest.Stalled, "reconnecting", 8 * time.Second},
		{capturetest.Frozen, "frozen", 10 * time.Second},
	}
	for _, ph := range phases {
		// Healthy first.
		if err := cam.SetMode(capturetest.Serving); err != nil {
			t.Fatal(err)
		}
		back := time.Now()
		waitFor(t, 5*time.Second, fmt.Sprintf("detections within 5 s of the camera's return (before %v)", ph.mode),
			func() bool { return detectionsAfter(back) > 0 })
		waitFor(t, 5*time.Second, "streaming", func() bool { return state() == "streaming" })
		t.Logf("camera back: first detection %v after its return", firstAfter(sub.on(detTopic), back).Sub(back).Round(time.Millisecond))

		if err := cam.SetMode(ph.mode); err != nil {
			t.Fatal(err)
		}
		waitFor(t, ph.within, fmt.Sprintf("state %s while the camera is %v", ph.wantState, ph.mode),
			func() bool { return state() == ph.wantState })
		var st stateMsg
		sub.lastJSON(t, "/cameras/ipcam/state", &st)
		if st.LastError == "" {
			t.Errorf("state %s without last_error", st.State)
		}
		t.Logf("%v -> state %s (%s)", ph.mode, st.State, st.LastError)
	}
	if err := cam.SetMode(capturetest.Serving); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	waitFor(t, 5*time.Second, "detections within 5 s of the camera's final return", func() bool { return detectionsAfter(back) > 0 })
}

func firstAfter(ms []message, t0 time.Time) time.Time {
	for _, m := range ms {
		if m.At.After(t0) {
			return m.At
		}
	}
	return time.Time{}
}
