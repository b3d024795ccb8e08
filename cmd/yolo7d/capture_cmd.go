package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/yolo7d/yolo7d/agent"
	"github.com/yolo7d/yolo7d/publish"
)

const captureUsage = `usage: yolo7d capture URI -o DIR [--count N] [--interval D] [--split train|val] [-m MODEL] [--conf X]
`

// cmdCapture runs `yolo7d capture`: frames of a camera saved into a
// dataset folder for labelling (pre-labelled with MODEL's detections).
func cmdCapture(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	uri, rest := splitSource(args)
	fs := flag.NewFlagSet("capture", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, captureUsage); fs.PrintDefaults() }
	out := fs.String("o", "", "dataset `dir` (images/<split>/, labels/<split>/, data.yaml)")
	count := fs.Int("count", 10, "frames to save, 1..10000")
	interval := fs.Duration("interval", time.Second, "at least this long between saved frames, 0s..1h")
	split := fs.String("split", "train", "train or val")
	model := fs.String("m", "", "model whose detections are written as labels to correct (default: no labels)")
	conf := fs.Float64("conf", 0.25, "detection threshold of the pre-labels")
	if err := fs.Parse(rest); err != nil {
		return flag.ErrHelp
	}
	switch {
	case uri == "" || fs.NArg() != 0:
		return usageError(stderr, captureUsage, "capture: give one camera URI (v4l2:///dev/video0, rtsp://..., file://...)")
	case *out == "":
		return usageError(stderr, captureUsage, "capture: -o DIR is required")
	case *count < 1 || *count > publish.MaxCaptureCount:
		return usageError(stderr, captureUsage, "capture: --count %d: want 1..%d", *count, publish.MaxCaptureCount)
	case *interval < 0 || *interval > publish.MaxCaptureInterval:
		return usageError(stderr, captureUsage, "capture: --interval %s: want 0s..1h", *interval)
	case *split != "train" && *split != "val":
		return usageError(stderr, captureUsage, "capture: --split %q: want train or val", *split)
	case !(*conf > 0 && *conf < 1):
		return usageError(stderr, captureUsage, "capture: --conf %g: want (0, 1)", *conf)
	}
	n, err := agent.CaptureToDataset(ctx, agent.CaptureOptions{URI: uri, Model: *model, Conf: float32(*conf),
		Args: publish.CaptureArgs{Dir: *out, Split: *split, Count: *count, Interval: *interval}})
	if n > 0 {
		fmt.Fprintf(stdout, "saved %d frames in %s\n", n, filepath.Join(*out, "images", *split))
	}
	return err
}
