package agent

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/yolo7d/yolo7d/capture/capturetest"
)

// TestReloadKeepsTheWorkingModelWhenTheNewOneIsCorrupt: a reload pointing
// at a truncated model file is refused, the running engine stays, and
// detections go on; a reload with new thresholds swaps the engine in place
// without stopping the camera.
func TestReloadKeepsTheWorkingModelWhenTheNewOneIsCorrupt(t *testing.T) {
	broker := startMosquitto(t)
	dir := t.TempDir()
	video := capturetest.MakeVideo(t, dir, 320, 240, 15, 2)
	model := testModel(t)
	tc := testConfig{
		Broker:   broker.URL(),
		StateDir: filepath.Join(dir, "state"),
		Model:    model,
		Cameras:  fileCamera("cam1", video, 10),
	}
	cfgPath := tc.write(t, dir)
	sub := subscribe(t, broker.URL(), prefixFor(t)+"/cameras/cam1/detections")

	a, stop := runAgent(t, cfgPath)
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitFor(t, 30*time.Second, "detections", func() bool { return len(sub.on("/detections")) > 2 })
	before := a.engine.Info().SHA256

	// A truncated copy of the model.
	whole, err := os.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	corrupt := filepath.Join(dir, "corrupt-"+filepath.Base(model))
	if err := os.WriteFile(corrupt, whole[:len(whole)/3], 0o644); err != nil {
		t.Fatal(err)
	}
	tc.Model = corrupt
	tc.write(t, dir)
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	err = a.Reload(rctx)
	if err == nil || !strings.Contains(err.Error(), "corrupt-") {
		t.Fatalf("reload with a truncated model: got %v, want an error naming the file", err)
	}
	if got := a.engine.Info().SHA256; got != before {
		t.Fatalf("engine changed after a failed reload: %s -> %s", before, got)
	}
	n := len(sub.on("/detections"))
	waitFor(t, 10*time.Second, "detections after the refused reload", func() bool { return len(sub.on("/detections")) > n+2 })

	// New thresholds: the engine is replaced, the camera keeps running.
	tc.Model = model
	tc.Extra = ""
	text, _ := os.ReadFile(tc.write(t, dir))
	os.WriteFile(cfgPath, []byte(strings.Replace(string(text), "conf_threshold = 0.01", "conf_threshold = 0.02", 1)), 0o644)
	if err := a.Reload(rctx); err != nil {
		t.Fatalf("reload with new thresholds: %v", err)
	}
	if got := a.Config().Detector.ConfThreshold; got != 0.02 {
		t.Errorf("conf_threshold after reload = %v, want 0.02", got)
	}
	n = len(sub.on("/detections"))
	waitFor(t, 10*time.Second, "detections after the threshold reload", func() bool { return len(sub.on("/detections")) > n+2 })
}
