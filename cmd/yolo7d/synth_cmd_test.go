package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestSynthCommandErrors(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "v.mp4")
	for _, tc := range []struct {
		name   string
		args   []string
		stderr string // substring expected on stderr
	}{
		{"no subcommand", nil, "usage:"},
		{"unknown subcommand", []string{"frobnicate"}, `unknown subcommand "frobnicate"`},
		{"dataset without folder", []string{"dataset", "--train", "2"}, "dataset folder DIR not given"},
		{"dataset unknown flag", []string{"dataset", dir, "--bogus"}, "flag provided but not defined: -bogus"},
		{"dataset bad number", []string{"dataset", dir, "--train", "many"}, `invalid value "many" for flag -train`},
		{"dataset negative train", []string{"dataset", dir, "--train", "-1"}, "--train -1: want 0..999999"},
		{"dataset no images", []string{"dataset", dir, "--train", "0", "--val", "0"}, "no images"},
		{"dataset tiny images", []string{"dataset", dir, "--img", "8"}, "--img 8: want 16..8192"},
		{"dataset two folders", []string{"dataset", dir, "--img", "32", "other"}, "unexpected arguments"},
		{"video without output", []string{"video", "--fps", "10"}, "output video OUT.mp4 not given"},
		{"video odd width", []string{"video", out, "--width", "161"}, "--width 161: want an even number"},
		{"video odd height", []string{"video", out, "--height", "95"}, "--height 95: want an even number"},
		{"video zero fps", []string{"video", out, "--fps", "0"}, "--fps 0: want 0 < fps <= 240"},
		{"video negative duration", []string{"video", out, "--seconds", "-2"}, "--seconds -2"},
		{"video unknown flag", []string{"video", out, "--codec", "vp9"}, "flag provided but not defined: -codec"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := cmdSynth(tc.args, &stdout, &stderr)
			if !errors.Is(err, flag.ErrHelp) {
				t.Errorf("error %v, want one wrapping flag.ErrHelp (exit code 2)", err)
			}
			if !strings.Contains(stderr.String(), tc.stderr) || !strings.Contains(stderr.String(), "usage:") {
				t.Errorf("stderr %q, want %q and the usage", stderr.String(), tc.stderr)
			}
		})
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a video was written despite the errors")
	}
}

func TestSynthDatasetCommand(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		ext  string
	}{
		{"png, folder first", []string{"DIR", "--train", "3", "--val", "2", "--img", "64", "--seed", "2"}, ".png"},
		{"jpeg, folder last", []string{"--train", "3", "--val", "2", "--img", "64", "--jpeg", "DIR"}, ".jpg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "synth")
			args := append([]string{"dataset"}, tc.args...)
			args[slices.Index(args, "DIR")] = dir
			var stdout, stderr bytes.Buffer
			if err := cmdSynth(args, &stdout, &stderr); err != nil {
				t.Fatalf("%v: %v\n%s", args, err, stderr.String())
			}
			if !strings.Contains(stdout.String(), "3 train + 2 val 64x64") {
				t.Errorf("stdout %q", stdout.String())
			}
			for _, sp := range []struct {
				name string
				n    int
			}{{"train", 3}, {"val", 2}} {
				imgs, _ := filepath.Glob(filepath.Join(dir, "images", sp.name, "*"+tc.ext))
				lbls, _ := filepath.Glob(filepath.Join(dir, "labels", sp.name, "*.txt"))
				if len(imgs) != sp.n || len(lbls) != sp.n {
					t.Errorf("%s: %d images and %d label files, want %d", sp.name, len(imgs), len(lbls), sp.n)
				}
			}
			data, err := os.ReadFile(filepath.Join(dir, "data.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			var y struct {
				Train, Val string
				NC         int
				Names      []string
			}
			if err := yaml.Unmarshal(data, &y); err != nil || y.Train != "images/train" || y.Val != "images/val" || y.NC != 3 ||
				!slices.Equal(y.Names, []string{"circle", "square", "triangle"}) {
				t.Errorf("data.yaml %+v (%v):\n%s", y, err, data)
			}

			// A second run into the same folder is refused, --overwrite
			// replaces it.
			stderr.Reset()
			err = cmdSynth(args, &stdout, &stderr)
			if err == nil || errors.Is(err, flag.ErrHelp) || !strings.Contains(err.Error(), "is not empty") {
				t.Errorf("second run: error %v, want a failure saying the folder is not empty", err)
			}
			if err := cmdSynth(append(args, "--overwrite"), &stdout, &stderr); err != nil {
				t.Errorf("--overwrite: %v", err)
			}
		})
	}
}

// fakeFFmpeg writes a shell script standing for ffmpeg that prints msg on
// stderr and exits with code 1 without reading its input.
func fakeFFmpeg(t *testing.T, msg string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ffmpeg")
	if err := os.WriteFile(p, []byte("#!/bin/sh\necho 'ffmpeg version fake' >&2\necho '"+msg+"' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSynthVideoFFmpegErrors(t *testing.T) {
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	for _, tc := range []struct {
		name   string
		ffmpeg string
		want   []string // substrings of the error
	}{
		{"missing", filepath.Join(t.TempDir(), "no-such-ffmpeg"), []string{"not found", "apt-get install ffmpeg"}},
		{"failing", fakeFFmpeg(t, "Unknown encoder libx264"), []string{"ffmpeg failed", "exit status 1", "Unknown encoder libx264"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := videoOptions{out: filepath.Join(dir, "v.mp4"), width: 160, height: 96, fps: 15, seconds: 2, seed: 1,
				labels: filepath.Join(dir, "v.jsonl"), ffmpeg: tc.ffmpeg}
			_, err := writeSynthVideo(t.Context(), o)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("files left behind: %v", ents)
			}
		})
	}
}

func TestSynthVideoCommand(t *testing.T) {
	if _, err := exec.LookPath("ffmpeg"); err != nil {
		t.Skip("ffmpeg is not installed")
	}
	dir := t.TempDir()
	out, labels := filepath.Join(dir, "sub", "demo.mp4"), filepath.Join(dir, "demo.jsonl")
	var stdout, stderr bytes.Buffer
	args := []string{"video", out, "--width", "160", "--height", "96", "--fps", "15", "--seconds", "2", "--seed", "3", "--labels", labels}
	if err := cmdSynth(args, &stdout, &stderr); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "30 frames, 160x96 at 15 fps") {
		t.Errorf("stdout %q", stdout.String())
	}
	st, err := os.Stat(out)
	if err != nil || st.Size() < 1000 {
		t.Fatalf("video: %v, %v", st, err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 1 {
		t.Errorf("%d entries beside the video, want none (temporary files left?)", len(ents)-1)
	}
	if probe, err := exec.LookPath("ffprobe"); err == nil {
		b, err := exec.Command(probe, "-v", "error", "-count_frames", "-select_streams", "v:0",
			"-show_entries", "stream=codec_name,width,height,nb_read_frames,pix_fmt", "-of", "csv=p=0", out).Output()
		if err != nil {
			t.Fatalf("ffprobe: %v", err)
		}
		if got := strings.TrimSpace(string(b)); got != "h264,160,96,yuv420p,30" {
			t.Errorf("ffprobe: %q, want h264,160,96,yuv420p,30", got)
		}
	}

	f, err := os.Open(labels)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for ; sc.Scan(); n++ {
		var fl frameLabels
		if err := json.Unmarshal(sc.Bytes(), &fl); err != nil {
			t.Fatalf("labels line %d: %v", n+1, err)
		}
		if fl.Frame != n || len(fl.Labels) == 0 && n == 0 {
			t.Errorf("labels line %d: frame %d with %d labels", n+1, fl.Frame, len(fl.Labels))
		}
		for _, l := range fl.Labels {
			if l.Name != []string{"circle", "square", "triangle"}[l.Class] || l.W <= 0 || l.H <= 0 {
				t.Errorf("frame %d: label %+v", n, l)
			}
		}
	}
	if n != 30 {
		t.Errorf("%d label lines, want 30", n)
	}

	// The same seed encodes the same frames: a second run writes the same
	// labels (the encoder's output is not compared).
	labels2 := filepath.Join(dir, "again.jsonl")
	args[len(args)-1] = labels2
	if err := cmdSynth(args, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(labels)
	b, _ := os.ReadFile(labels2)
	if !bytes.Equal(a, b) {
		t.Error("two runs with one seed wrote different labels")
	}
}
