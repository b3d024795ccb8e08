package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gocv.io/x/gocv"

	"github.com/yolo7d/yolo7d/capture/capturetest"
)

func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[agent]\nstate_dir = \"s\"\n[detector]\nmodel = \"m.onnx\"\n[[camera]]\nname = \"c\"\nuri = \"ftp://x\"\n"), 0o644)
	tests := []struct {
		name       string
		args       []string
		code       int
		stdout     string // substring expected on stdout
		stderr     string // substring expected on stderr
		skipSystem bool   // skip where systemd runs
	}{
		{name: "no arguments", args: nil, code: 2, stderr: "usage:"},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`},
		{name: "version", args: []string{"version"}, code: 0, stdout: "yolo7d"},
		{name: "shipped config is valid", args: []string{"config", "check", "../../config.toml"}, code: 0, stdout: "is valid"},
		{name: "bad config names the line", args: []string{"config", "check", bad}, code: 1, stderr: "line 7: camera[0].uri"},
		{name: "config without file", args: []string{"config", "check"}, code: 2, stderr: "usage: yolo7d config check FILE"},
		{name: "model init needs -o", args: []string{"model", "init"}, code: 1, stderr: "-o FILE is required"},
		{name: "model init bad size", args: []string{"model", "init", "-o", filepath.Join(dir, "m.onnx"), "--img", "100"}, code: 1, stderr: "multiple of 32"},
		{name: "detect without model", args: []string{"detect", "x.jpg"}, code: 2, stderr: "usage: yolo7d detect"},
		{name: "import without output", args: []string{"import", "x.pt"}, code: 2, stderr: "usage: yolo7d import"},
		{name: "import of a non-model", args: []string{"import", bad, "-o", filepath.Join(dir, "o.onnx")}, code: 1, stderr: "import " + bad},
		{name: "install without systemd", args: []string{"install", "--config", "../../config.toml"}, code: 1, stderr: "does not run systemd", skipSystem: true},
		{name: "status without systemd", args: []string{"status"}, code: 1, stderr: "does not run systemd", skipSystem: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := os.Stat("/run/systemd/system"); tt.skipSystem && err == nil {
				t.Skip("this machine runs systemd")
			}
			var out, errOut bytes.Buffer
			code := run(tt.args, &out, &errOut)
			if code != tt.code || !strings.Contains(out.String(), tt.stdout) || !strings.Contains(errOut.String(), tt.stderr) {
				t.Errorf("yolo7d %v: exit %d, stdout %q, stderr %q; want exit %d, stdout with %q, stderr with %q",
					tt.args, code, out.String(), errOut.String(), tt.code, tt.stdout, tt.stderr)
			}
		})
	}
}

// TestModelInitThenDetect makes a model with `model init` and runs
// `detect` on a JPEG with it: JSON out, an annotated image written.
func TestModelInitThenDetect(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "m.onnx")
	var out, errOut bytes.Buffer
	if code := run([]string{"model", "init", "-o", model, "--img", "320"}, &out, &errOut); code != 0 {
		t.Fatalf("model init: exit %d: %s", code, errOut.String())
	}
	img := capturetest.MakeImage(400, 300, 7)
	defer img.Close()
	jpg := filepath.Join(dir, "frame.jpg")
	if !gocv.IMWrite(jpg, img) {
		t.Fatal("write test image")
	}
	notImage := filepath.Join(dir, "not.jpg")
	os.WriteFile(notImage, []byte("not a jpeg"), 0o644)

	out.Reset()
	errOut.Reset()
	annotated := filepath.Join(dir, "annotated")
	if code := run([]string{"detect", "-m", model, "--img", "320", "--conf", "0.001", "--annotate", annotated, jpg}, &out, &errOut); code != 0 {
		t.Fatalf("detect: exit %d: %s", code, errOut.String())
	}
	var results []imageResult
	if err := json.Unmarshal(out.Bytes(), &results); err != nil {
		t.Fatalf("detect output is not JSON: %v\n%s", err, out.String())
	}
	if len(results) != 1 || results[0].Width != 400 || results[0].Height != 300 || len(results[0].Model["sha256"]) != 64 {
		t.Fatalf("unexpected result: %+v", results)
	}
	if len(results[0].Detections) == 0 {
		t.Errorf("no detections at conf 0.001 (a random model still scores some boxes above that)")
	}
	if fi, err := os.Stat(results[0].Annotated); err != nil || fi.Size() == 0 {
		t.Errorf("annotated image %q: %v", results[0].Annotated, err)
	}

	errOut.Reset()
	if code := run([]string{"detect", "-m", model, "--img", "320", notImage}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "not a readable image") {
		t.Errorf("detect on a non-image: exit %d, stderr %q", code, errOut.String())
	}
}
