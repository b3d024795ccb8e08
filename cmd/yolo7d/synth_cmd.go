package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/yolo7d/yolo7d/finetune/synth"
)

// Synthetic data commands: `synth dataset` writes a YOLO dataset of shapes
// (the demo model's training data), `synth video` encodes a moving scene of
// the same shapes with ffmpeg (the demo video).

const synthUsage = `usage:
  yolo7d synth dataset DIR [--train N] [--val N] [--img N] [--seed N] [--jpeg] [--overwrite]
  yolo7d synth video OUT.mp4 [--width N] [--height N] [--fps X] [--seconds X] [--seed N] [--labels FILE.jsonl]
`

// usageErr prints "yolo7d <cmd>: msg" and the synth usage on stderr and
// returns an error wrapping flag.ErrHelp, which run maps to exit code 2
// without printing it again.
func usageErr(stderr io.Writer, cmd, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	fmt.Fprintf(stderr, "yolo7d %s: %s\n%s", cmd, msg, synthUsage)
	return fmt.Errorf("%s: %s: %w", cmd, msg, flag.ErrHelp)
}

// cmdSynth runs `yolo7d synth dataset|video ...`. Usage and flag errors
// print a message and the usage on stderr and return an error wrapping
// flag.ErrHelp (exit code 2); failures return other errors (exit code 1).
func cmdSynth(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, synthUsage)
		return flag.ErrHelp
	}
	switch args[0] {
	case "dataset":
		return cmdSynthDataset(args[1:], stdout, stderr)
	case "video":
		return cmdSynthVideo(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, synthUsage)
		return nil
	default:
		return usageErr(stderr, "synth", "unknown subcommand %q (want dataset or video)", args[0])
	}
}

// parseSynthFlags parses args with fs: flags, and one positional argument
// before, between or after them. It returns the positional argument.
func parseSynthFlags(fs *flag.FlagSet, args []string, what string, stderr io.Writer) (string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(stderr)
				fmt.Fprint(stderr, synthUsage)
				fs.PrintDefaults()
				return "", flag.ErrHelp
			}
			return "", usageErr(stderr, fs.Name(), "%v", err)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch len(pos) {
	case 0:
		return "", usageErr(stderr, fs.Name(), "%s not given", what)
	case 1:
		return pos[0], nil
	default:
		return "", usageErr(stderr, fs.Name(), "unexpected arguments %q", pos[1:])
	}
}

func cmdSynthDataset(args []string, stdout, stderr io.Writer) error {
	const name = "synth dataset"
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	train := fs.Int("train", 512, "train images")
	val := fs.Int("val", 128, "val images")
	img := fs.Int("img", synth.DefaultDatasetSize, "image side in pixels (16..8192)")
	seed := fs.Uint64("seed", 1, "random seed (the same seed writes the same dataset)")
	jpg := fs.Bool("jpeg", false, "write JPEG (quality 90) instead of PNG images")
	overwrite := fs.Bool("overwrite", false, "replace images/, labels/ and data.yaml of a non-empty DIR")
	dir, err := parseSynthFlags(fs, args, "the dataset folder DIR", stderr)
	if err != nil {
		return err
	}
	switch {
	case *train < 0 || *train > 999999:
		return usageErr(stderr, name, "--train %d: want 0..999999", *train)
	case *val < 0 || *val > 999999:
		return usageErr(stderr, name, "--val %d: want 0..999999", *val)
	case *train+*val == 0:
		return usageErr(stderr, name, "--train 0 --val 0: no images to write")
	case *img < 16 || *img > 8192:
		return usageErr(stderr, name, "--img %d: want 16..8192", *img)
	}
	o := synth.DatasetOptions{Config: synth.DefaultConfig(*img), Train: *train, Val: *val, Seed: *seed, JPEG: *jpg, Overwrite: *overwrite}
	if err := synth.WriteDataset(dir, o); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	format := "png"
	if *jpg {
		format = "jpg"
	}
	fmt.Fprintf(stdout, "wrote %s (%d train + %d val %dx%d %s images of %s, seed %d)\n",
		filepath.Join(dir, "data.yaml"), *train, *val, *img, *img, format, strings.Join(synth.ClassNames(), ", "), *seed)
	return nil
}

// videoOptions sets what writeSynthVideo writes.
type videoOptions struct {
	out           string
	width, height int
	fps, seconds  float64
	seed          uint64
	labels        string // JSON lines of each frame's labels ("" = none)
	ffmpeg        string // the ffmpeg program ("" = ffmpeg on PATH)
}

// frames is the number of frames of the video: seconds x fps, rounded, at
// least 1.
func (o videoOptions) frames() int { return max(1, int(math.Round(o.seconds*o.fps))) }

func cmdSynthVideo(args []string, stdout, stderr io.Writer) error {
	const name = "synth video"
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var o videoOptions
	fs.IntVar(&o.width, "width", 1280, "frame width in pixels (even, 16..8192)")
	fs.IntVar(&o.height, "height", 720, "frame height in pixels (even, 16..8192)")
	fs.Float64Var(&o.fps, "fps", 15, "frames per second (0 < fps <= 240)")
	fs.Float64Var(&o.seconds, "seconds", 20, "duration in seconds (0 < s <= 3600)")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed (the same seed draws the same video)")
	fs.StringVar(&o.labels, "labels", "", "also write each frame's labels as JSON lines to `file`")
	out, err := parseSynthFlags(fs, args, "the output video OUT.mp4", stderr)
	if err != nil {
		return err
	}
	o.out = out
	switch {
	case o.width < 16 || o.width > 8192 || o.width%2 != 0:
		return usageErr(stderr, name, "--width %d: want an even number in 16..8192 (yuv420p)", o.width)
	case o.height < 16 || o.height > 8192 || o.height%2 != 0:
		return usageErr(stderr, name, "--height %d: want an even number in 16..8192 (yuv420p)", o.height)
	case !(o.fps > 0 && o.fps <= 240):
		return usageErr(stderr, name, "--fps %g: want 0 < fps <= 240", o.fps)
	case !(o.seconds > 0 && o.seconds <= 3600):
		return usageErr(stderr, name, "--seconds %g: want 0 < seconds <= 3600", o.seconds)
	}
	n, err := writeSynthVideo(context.Background(), o)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	fmt.Fprintf(stdout, "wrote %s (%d frames, %dx%d at %g fps, seed %d)\n", o.out, n, o.width, o.height, o.fps, o.seed)
	if o.labels != "" {
		fmt.Fprintf(stdout, "wrote %s\n", o.labels)
	}
	return nil
}

// frameLabels is one line of the --labels file.
type frameLabels struct {
	Frame  int           `json:"frame"`
	Time   float64       `json:"time"` // seconds
	Labels []objectLabel `json:"labels"`
}

// objectLabel is one object of a frame: YOLO-normalised centre and size.
type objectLabel struct {
	ID    int     `json:"id"`
	Class int     `json:"class"`
	Name  string  `json:"name"`
	X     float32 `json:"x"`
	Y     float32 `json:"y"`
	W     float32 `json:"w"`
	H     float32 `json:"h"`
}

// writeSynthVideo draws o.frames() frames of a synth.Video and pipes them
// as raw RGB into ffmpeg, which encodes them with libx264 (yuv420p, a
// keyframe every 30 frames) into a temporary file next to o.out that is
// renamed over o.out when ffmpeg succeeds. It returns the number of
// frames. A missing or failing ffmpeg is an error quoting the end of its
// stderr.
func writeSynthVideo(ctx context.Context, o videoOptions) (frames int, err error) {
	prog := o.ffmpeg
	if prog == "" {
		prog = "ffmpeg"
	}
	path, err := exec.LookPath(prog)
	if err != nil {
		return 0, fmt.Errorf("%s not found (install it: apt-get install ffmpeg): %w", prog, err)
	}
	v, err := synth.NewVideo(synth.DefaultVideoConfig(o.width, o.height), o.seed, o.fps)
	if err != nil {
		return 0, err
	}
	if err := mkdirFor(o.out); err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(o.out), "."+filepath.Base(o.out)+".tmp-*"+filepath.Ext(o.out))
	if err != nil {
		return 0, err
	}
	tmp.Close()
	defer func() {
		if err != nil {
			os.Remove(tmp.Name())
		}
	}()

	var labels *bufio.Writer
	var labelsFile *os.File
	if o.labels != "" {
		if err := mkdirFor(o.labels); err != nil {
			return 0, err
		}
		if labelsFile, err = os.CreateTemp(filepath.Dir(o.labels), "."+filepath.Base(o.labels)+".tmp-*"); err != nil {
			return 0, err
		}
		defer func() {
			labelsFile.Close()
			if err != nil {
				os.Remove(labelsFile.Name())
			}
		}()
		labels = bufio.NewWriter(labelsFile)
	}

	cmd := exec.CommandContext(ctx, path, "-hide_banner", "-loglevel", "error", "-y",
		"-f", "rawvideo", "-pix_fmt", "rgb24", "-s", fmt.Sprintf("%dx%d", o.width, o.height),
		"-r", strconv.FormatFloat(o.fps, 'g', -1, 64), "-i", "-",
		"-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "30", tmp.Name())
	stderrTail := &tailBuffer{max: 4 << 10}
	cmd.Stderr = stderrTail
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, fmt.Errorf("ffmpeg: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", path, err)
	}
	n := o.frames()
	names := synth.ClassNames()
	rgb := make([]byte, 3*o.width*o.height)
	var enc *json.Encoder
	if labels != nil {
		enc = json.NewEncoder(labels)
	}
	var writeErr error
	for i := 0; i < n && writeErr == nil; i++ {
		f := v.Next()
		pix := f.Image.Pix
		for p, q := 0, 0; q < len(rgb); p, q = p+4, q+3 {
			rgb[q], rgb[q+1], rgb[q+2] = pix[p], pix[p+1], pix[p+2]
		}
		if _, err := stdin.Write(rgb); err != nil {
			writeErr = fmt.Errorf("write frame %d to ffmpeg: %w", i, err)
			break
		}
		if enc != nil {
			fl := frameLabels{Frame: f.Index, Time: float64(f.Index) / o.fps, Labels: []objectLabel{}}
			for j, l := range f.Labels {
				fl.Labels = append(fl.Labels, objectLabel{ID: f.IDs[j], Class: l.Class, Name: names[l.Class], X: l.X, Y: l.Y, W: l.W, H: l.H})
			}
			if err := enc.Encode(fl); err != nil {
				writeErr = fmt.Errorf("write labels: %w", err)
			}
		}
	}
	closeErr := stdin.Close()
	waitErr := cmd.Wait()
	if waitErr != nil {
		return 0, fmt.Errorf("ffmpeg failed: %w%s", waitErr, stderrTail.quote())
	}
	if writeErr == nil && closeErr != nil {
		writeErr = fmt.Errorf("close ffmpeg's input: %w", closeErr)
	}
	if writeErr != nil {
		return 0, fmt.Errorf("%w%s", writeErr, stderrTail.quote())
	}
	if labels != nil {
		if err := labels.Flush(); err != nil {
			return 0, fmt.Errorf("write %s: %w", o.labels, err)
		}
		if err := labelsFile.Chmod(0o644); err != nil {
			return 0, err
		}
		if err := labelsFile.Close(); err != nil {
			return 0, fmt.Errorf("write %s: %w", o.labels, err)
		}
		if err := os.Rename(labelsFile.Name(), o.labels); err != nil {
			return 0, err
		}
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp.Name(), o.out); err != nil {
		return 0, err
	}
	return n, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

// Write appends p, dropping the oldest bytes beyond max.
func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

// quote returns ": " and the last lines held, or "" when none.
func (t *tailBuffer) quote() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(t.b))
	if s == "" {
		return " (no output on stderr)"
	}
	lines := strings.Split(s, "\n")
	if len(lines) > 10 {
		lines = lines[len(lines)-10:]
	}
	return ": stderr: " + strings.Join(lines, "\n  ")
}
