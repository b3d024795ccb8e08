package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/yolo7d/yolo7d/capture/capturetest"
	"github.com/yolo7d/yolo7d/tiny"
)

// TestCmdCapture saves frames of a video into a dataset folder, labelled
// by a model, with a data.yaml naming the model's classes.
func TestCmdCapture(t *testing.T) {
	dir := t.TempDir()
	video := capturetest.MakeVideo(t, dir, 160, 120, 10, 1)
	model := filepath.Join(dir, "m.onnx")
	if err := tiny.WriteRandomONNX(model, tiny.Config{Act: "relu", NC: 2, Seed: 3}, 64); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "set")
	var stdout, stderr bytes.Buffer
	code := run([]string{"capture", "file://" + video, "-o", out, "--count", "3", "--interval", "0s", "-m", model, "--split", "val"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "saved 3 frames") {
		t.Errorf("stdout %q", stdout.String())
	}
	images, _ := filepath.Glob(filepath.Join(out, "images", "val", "*.jpg"))
	labels, _ := filepath.Glob(filepath.Join(out, "labels", "val", "*.txt"))
	if len(images) != 3 || len(labels) != 3 {
		t.Fatalf("%d images, %d label files; want 3 each", len(images), len(labels))
	}
	yaml, err := os.ReadFile(filepath.Join(out, "data.yaml"))
	if err != nil || !strings.Contains(string(yaml), "nc: 2\n") {
		t.Errorf("data.yaml %q: %v", yaml, err)
	}
}

func TestCmdCaptureFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"capture"}, "give one camera URI"},
		{[]string{"capture", "file://x.mp4"}, "-o DIR is required"},
		{[]string{"capture", "file://x.mp4", "-o", "d", "--count", "0"}, "--count 0"},
		{[]string{"capture", "file://x.mp4", "-o", "d", "--interval", "2h"}, "--interval 2h0m0s"},
		{[]string{"capture", "file://x.mp4", "-o", "d", "--split", "test"}, `--split "test"`},
		{[]string{"capture", "file://x.mp4", "-o", "d", "--conf", "1.5"}, "--conf 1.5"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(tc.args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and %q", tc.args, code, stderr.String(), tc.want)
		}
	}
}
