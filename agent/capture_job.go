package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"gocv.io/x/gocv"

	"github.com/yolo7d/yolo7d/capture"
	"github.com/yolo7d/yolo7d/infer"
	"github.com/yolo7d/yolo7d/publish"
	"github.com/yolo7d/yolo7d/tiny"
)

// captureJob saves frames of one camera into a dataset folder: the
// `capture` command, the way to collect training images for a fine-tune.
// The detect loop calls offer with every frame it has detected on; the job
// keeps one frame per interval until it has count of them.
type captureJob struct {
	id       string
	camera   string
	args     publish.CaptureArgs
	onDone   func(saved int, err error)
	mu       sync.Mutex
	saved    int
	last     time.Time
	finished bool
}

// offer saves frame (with the detections res as YOLO labels when the job
// asks for labels) if the job's interval has passed. It reports whether
// the job is finished.
func (j *captureJob) offer(frame gocv.Mat, seq uint64, res infer.Result) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.finished {
		return true
	}
	now := time.Now()
	if j.saved > 0 && now.Sub(j.last) < j.args.Interval {
		return false
	}
	err := saveCapturedFrame(j.args, j.camera, seq, now, frame, res.Detections)
	if err == nil {
		j.saved++
		j.last = now
	}
	if err != nil || j.saved == j.args.Count {
		j.finished = true
		j.onDone(j.saved, err)
	}
	return j.finished
}

// cancel ends the job early (the camera stopped or the agent shuts down).
func (j *captureJob) cancel(err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.finished {
		j.finished = true
		j.onDone(j.saved, err)
	}
}

// saveCapturedFrame writes frame as images/<split>/<camera>-<time>-<seq>.jpg
// under args.Dir and, with args.Labels, the detections as the YOLO label
// file labels/<split>/<same name>.txt (class cx cy w h, normalised; an
// empty file when nothing was detected: a background image until
// corrected). Both are written atomically.
func saveCapturedFrame(args publish.CaptureArgs, camera string, seq uint64, t time.Time, frame gocv.Mat, dets []infer.Detection) error {
	if frame.Empty() {
		return errors.New("capture: empty frame")
	}
	buf, err := gocv.IMEncode(gocv.JPEGFileExt, frame)
	if err != nil {
		return fmt.Errorf("capture: encode the frame: %w", err)
	}
	defer buf.Close()
	name := fmt.Sprintf("%s-%s-%06d", camera, t.UTC().Format("20060102T150405.000"), seq)
	images := filepath.Join(args.Dir, "images", args.Split)
	if err := os.MkdirAll(images, 0o755); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	data := buf.GetBytes()
	if err := tiny.WriteFileAtomic(filepath.Join(images, name+".jpg"), func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	}); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	if !args.Labels {
		return nil
	}
	labels := filepath.Join(args.Dir, "labels", args.Split)
	if err := os.MkdirAll(labels, 0o755); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	text := yoloLabels(dets, frame.Cols(), frame.Rows())
	if err := tiny.WriteFileAtomic(filepath.Join(labels, name+".txt"), func(w io.Writer) error {
		_, err := io.WriteString(w, text)
		return err
	}); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	return nil
}

// yoloLabels formats detections (pixel boxes on a w x h frame) as YOLO
// label lines, boxes clipped to the frame; boxes left less than a pixel
// wide or high are left out.
func yoloLabels(dets []infer.Detection, w, h int) string {
	var b strings.Builder
	fw, fh := float64(w), float64(h)
	for _, d := range dets {
		x1, y1 := clamp(float64(d.Box.X1), 0, fw), clamp(float64(d.Box.Y1), 0, fh)
		x2, y2 := clamp(float64(d.Box.X2), 0, fw), clamp(float64(d.Box.Y2), 0, fh)
		if x2-x1 < 1 || y2-y1 < 1 {
			continue
		}
		fmt.Fprintf(&b, "%d %.6f %.6f %.6f %.6f\n", d.ClassID, (x1+x2)/2/fw, (y1+y2)/2/fh, (x2-x1)/fw, (y2-y1)/fh)
	}
	return b.String()
}

func clamp(v, lo, hi float64) float64 { return min(max(v, lo), hi) }

// writeDataYAML writes dir/data.yaml for a captured dataset if there is
// none: train and val folders and the model's class names, ready for a
// fine-tune once the labels are checked.
func writeDataYAML(dir string, names []string) error {
	path := filepath.Join(dir, "data.yaml")
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("# written by yolo7d capture: check the labels, then fine-tune on it\ntrain: images/train\nval: images/val\n")
	fmt.Fprintf(&b, "nc: %d\nnames: [", len(names))
	for i, n := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(n))
	}
	b.WriteString("]\n")
	return tiny.WriteFileAtomic(path, func(w io.Writer) error {
		_, err := io.WriteString(w, b.String())
		return err
	})
}

// handleCapture starts a capture job on a running camera and answers at
// once; the job's end is published as a second result on <p>/cmd/result
// (same id, result.state "done" or "failed").
func (a *Agent) handleCapture(ctx context.Context, cmd publish.Command) (any, error) {
	a.mu.Lock()
	p, ok := a.pipes[cmd.Camera]
	a.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("capture: camera %q is not running", cmd.Camera)
	}
	names := a.engine.Info().Classes
	if err := writeDataYAML(cmd.Capture.Dir, names); err != nil {
		return nil, fmt.Errorf("capture: data.yaml: %w", err)
	}
	job := &captureJob{id: cmd.ID, camera: cmd.Camera, args: cmd.Capture}
	job.onDone = func(saved int, err error) {
		res := map[string]any{"state": "done", "camera": cmd.Camera, "dataset": cmd.Capture.Dir, "split": cmd.Capture.Split, "saved": saved}
		r := &publish.CommandResultPayload{ID: cmd.ID, Command: publish.CmdCapture, OK: err == nil, Result: res}
		if err != nil {
			res["state"] = "failed"
			r.Error = err.Error()
			a.log.Warn("capture failed", "camera", cmd.Camera, "id", cmd.ID, "saved", saved, "err", err)
		} else {
			a.log.Info("capture done", "camera", cmd.Camera, "id", cmd.ID, "saved", saved, "dataset", cmd.Capture.Dir)
		}
		if perr := a.pub.PublishJSON(a.topics.CommandResult(), 1, false, r); perr != nil && !errors.Is(perr, publish.ErrClosed) {
			a.log.Warn("capture: publish the result", "err", perr)
		}
	}
	if !p.capture.CompareAndSwap(nil, job) {
		return nil, fmt.Errorf("capture: camera %q is already capturing; wait for its result", cmd.Camera)
	}
	return map[string]any{"state": "started", "camera": cmd.Camera, "dataset": cmd.Capture.Dir, "split": cmd.Capture.Split,
		"count": cmd.Capture.Count, "interval": cmd.Capture.Interval.String(), "labels": cmd.Capture.Labels}, nil
}

// CaptureOptions configure CaptureToDataset, the `yolo7d capture` tool.
type CaptureOptions struct {
	URI   string              // a camera source, as in [[camera]] uri
	Args  publish.CaptureArgs // where and how many frames (Labels needs Model)
	Model string              // model whose detections pre-label the frames; "" writes no labels
	Conf  float32             // detection threshold of the pre-labels (0: 0.25)
}

// CaptureToDataset opens the camera and saves frames into a dataset folder
// as the capture command does (images/<split>/*.jpg, labels/<split>/*.txt
// from the model's detections, a data.yaml), without a running agent. It
// returns the number of frames saved.
func CaptureToDataset(ctx context.Context, o CaptureOptions) (int, error) {
	cam, err := capture.NewCamera(capture.Config{Name: "capture", URI: o.URI, Enabled: true}, capture.Options{})
	if err != nil {
		return 0, fmt.Errorf("capture: %w", err)
	}
	var eng infer.Engine
	var names []string
	if o.Model != "" {
		conf := o.Conf
		if conf == 0 {
			conf = 0.25
		}
		if eng, err = infer.Open(ctx, infer.Options{Model: o.Model, Backend: "auto", ConfThreshold: conf, IoUThreshold: 0.45}); err != nil {
			return 0, fmt.Errorf("capture: %w", err)
		}
		defer eng.Close()
		names = eng.Info().Classes
	}
	args := o.Args
	args.Labels = eng != nil
	if names != nil {
		if err := writeDataYAML(args.Dir, names); err != nil {
			return 0, fmt.Errorf("capture: data.yaml: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	camDone := make(chan error, 1)
	go func() { camDone <- cam.Run(ctx) }()
	defer func() { cancel(); <-camDone }()

	saved := 0
	var last time.Time
	for saved < args.Count {
		f, err := cam.Next(ctx)
		if err != nil {
			return saved, fmt.Errorf("capture: %s: %w", o.URI, err)
		}
		if saved > 0 && time.Since(last) < args.Interval {
			f.Mat.Close()
			continue
		}
		var dets []infer.Detection
		if eng != nil {
			res, err := eng.Detect(ctx, f.Mat)
			if err != nil {
				f.Mat.Close()
				return saved, fmt.Errorf("capture: detect: %w", err)
			}
			dets = res.Detections
		}
		last = time.Now()
		err = saveCapturedFrame(args, "frame", f.Seq, last, f.Mat, dets)
		f.Mat.Close()
		if err != nil {
			return saved, err
		}
		saved++
	}
	return saved, nil
}
