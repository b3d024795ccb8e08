package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/yolo7d/yolo7d/finetune"
	"github.com/yolo7d/yolo7d/infer"
)

// TestCaptureCommand: a capture command on a running camera saves the
// asked number of frames into the dataset folder, with label files and a
// data.yaml that the fine-tune's dataset reader accepts, answers at once
// and again when done; a second capture on a busy camera and one on an
// unknown camera are refused; detections go on meanwhile.
func TestCaptureCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the agent")
	}
	e := startFinetuneAgent(t, nil, "")
	n := e.detections()
	r := e.call("capture", `{"id":"k1","camera":"cam1","dataset":"sets/new","count":3,"interval":"100ms"}`)
	if !r.OK || r.Result["state"] != "started" || r.Result["count"] != float64(3) {
		t.Fatalf("capture: %+v", r)
	}
	if b := e.call("capture", `{"id":"k2","camera":"cam1","dataset":"sets/other"}`); b.OK || !strings.Contains(b.Error, "already capturing") {
		t.Errorf("a second capture on a busy camera: %+v", b)
	}
	if u := e.call("capture", `{"id":"k3","camera":"nosuch","dataset":"sets/other"}`); u.OK || !strings.Contains(u.Error, "not running") {
		t.Errorf("a capture on an unknown camera: %+v", u)
	}
	var done cmdResult
	waitFor(t, 20*time.Second, "the capture's second result", func() bool {
		for _, m := range e.sub.on("/cmd/result") {
			var x cmdResult
			if json.Unmarshal(m.Payload, &x) == nil && x.ID == "k1" && x.Result["state"] != "started" {
				done = x
				return true
			}
		}
		return false
	})
	if !done.OK || done.Result["state"] != "done" || done.Result["saved"] != float64(3) {
		t.Fatalf("capture end: %+v", done)
	}
	dir := filepath.Join(e.a.Config().Agent.StateDir, "data", "sets", "new")
	images, _ := filepath.Glob(filepath.Join(dir, "images", "train", "cam1-*.jpg"))
	labels, _ := filepath.Glob(filepath.Join(dir, "labels", "train", "cam1-*.txt"))
	if len(images) != 3 || len(labels) != 3 {
		t.Fatalf("%d images and %d label files, want 3 each", len(images), len(labels))
	}
	cfg, err := finetune.LoadDataYAML(filepath.Join(dir, "data.yaml"))
	if err != nil {
		t.Fatalf("the captured data.yaml: %v", err)
	}
	if cfg.NC != len(e.a.engine.Info().Classes) {
		t.Errorf("data.yaml has %d classes, the model %d", cfg.NC, len(e.a.engine.Info().Classes))
	}
	ds, err := finetune.OpenSplit(cfg, "train", finetune.SplitOptions{Strict: true, VerifyImages: true})
	if err != nil {
		t.Fatalf("the captured split does not open strictly: %v", err.Error()[:min(len(err.Error()), 800)])
	}
	if len(ds.Samples) != 3 || ds.Samples[0].Width != 320 || ds.Samples[0].Height != 240 {
		t.Errorf("captured split: %d samples, first %dx%d", len(ds.Samples), ds.Samples[0].Width, ds.Samples[0].Height)
	}
	if e.detections() <= n {
		t.Error("no detections during the capture")
	}
	// The camera is free again.
	if r := e.call("capture", `{"id":"k4","camera":"cam1","dataset":"sets/new","split":"val","count":1,"labels":false}`); !r.OK {
		t.Fatalf("capture after the first one ended: %+v", r)
	}
	waitFor(t, 20*time.Second, "the val image", func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, "images", "val", "cam1-*.jpg"))
		return len(m) == 1
	})
	if _, err := os.Stat(filepath.Join(dir, "labels", "val")); !os.IsNotExist(err) {
		t.Errorf("labels written for a capture with labels false: %v", err)
	}
}

// TestYOLOLabels: pixel boxes become normalised YOLO lines, clipped to the
// frame; boxes under a pixel (after clipping) are left out.
func TestYOLOLabels(t *testing.T) {
	dets := []infer.Detection{
		{ClassID: 2, Box: infer.Box{X1: 10, Y1: 20, X2: 50, Y2: 60}},
		{ClassID: 0, Box: infer.Box{X1: -10, Y1: 90, X2: 30, Y2: 120}}, // clipped to 0..30 x 90..100
		{ClassID: 1, Box: infer.Box{X1: 40, Y1: 40, X2: 40.5, Y2: 70}}, // under a pixel wide
		{ClassID: 1, Box: infer.Box{X1: 210, Y1: 40, X2: 250, Y2: 70}}, // outside the frame
	}
	got := yoloLabels(dets, 200, 100)
	want := "2 0.150000 0.400000 0.200000 0.400000\n0 0.075000 0.950000 0.150000 0.100000\n"
	if got != want {
		t.Errorf("labels\n%q\nwant\n%q", got, want)
	}
}
