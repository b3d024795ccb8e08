package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gocv.io/x/gocv"

	"github.com/yolo7d/yolo7d/infer"
	"github.com/yolo7d/yolo7d/publish"
	"github.com/yolo7d/yolo7d/tiny"
)

// Model file changes (promotion of a fine-tuned candidate, rollback) are
// written so that a crash (kill -9, power loss) at any moment leaves a
// complete, loadable model at the model path, old or new: the model path is
// only ever replaced by rename(2) of a complete, fsynced file in the same
// directory, and the directory is fsynced afterwards. Each function below
// is a short list of numbered steps; after every step the afterStep hook
// (tests) may stop it, which is how the tests check that invariant.

// Steps of promoteFiles.
const (
	promoteStepPrevTemp  = 1 // a copy of the model written to <model>.prev.tmp and fsynced
	promoteStepPrev      = 2 // <model>.prev.tmp renamed to <model>.prev
	promoteStepCandidate = 3 // the candidate renamed onto the model path
	promoteStepSyncDir   = 4 // the directory fsynced
)

// Steps of swapPrevFiles (rollback, and undoing a promotion).
const (
	swapStepTemp     = 1 // a copy of the model written to <model>.swap.tmp and fsynced
	swapStepPrev     = 2 // <model>.prev renamed onto the model path
	swapStepTempPrev = 3 // <model>.swap.tmp renamed to <model>.prev
	swapStepSyncDir  = 4 // the directory fsynced
)

// errStepStop is what a test's afterStep returns to stop after a step.
var errStepStop = errors.New("stopped after step")

// prevPath is where the model replaced by a promotion or rollback is kept.
func prevPath(model string) string { return model + ".prev" }

// promoteFiles installs candidate (in model's directory) as model and keeps
// the replaced model as <model>.prev.
func promoteFiles(model, candidate string, afterStep func(int) error) error {
	if filepath.Dir(filepath.Clean(candidate)) != filepath.Dir(filepath.Clean(model)) {
		return fmt.Errorf("promote: candidate %s is not in the model's directory %s", candidate, filepath.Dir(model))
	}
	if _, err := os.Stat(candidate); err != nil {
		return fmt.Errorf("promote: candidate: %w", err)
	}
	prev := prevPath(model)
	tmp := prev + ".tmp"
	step := stepper(afterStep)
	// 1. Copy the model to a temporary name, fsynced.
	if err := copyFileSync(model, tmp); err != nil {
		return fmt.Errorf("promote: keep the current model: %w", err)
	}
	if err := step(promoteStepPrevTemp); err != nil {
		return err
	}
	// 2. Rename it to <model>.prev.
	if err := os.Rename(tmp, prev); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("promote: %w", err)
	}
	if err := step(promoteStepPrev); err != nil {
		return err
	}
	// 3. Rename the candidate onto the model path: atomic, same directory.
	if err := os.Rename(candidate, model); err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	if err := step(promoteStepCandidate); err != nil {
		return err
	}
	// 4. Make the renames durable.
	if err := syncDir(filepath.Dir(model)); err != nil {
		return fmt.Errorf("promote: %w", err)
	}
	return step(promoteStepSyncDir)
}

// swapPrevFiles exchanges model and <model>.prev: the model becomes the
// previous one and the previous one the model. Run twice, it toggles back.
func swapPrevFiles(model string, afterStep func(int) error) error {
	prev := prevPath(model)
	tmp := model + ".swap.tmp"
	if _, err := os.Stat(prev); err != nil {
		return fmt.Errorf("no previous model: %w", err)
	}
	step := stepper(afterStep)
	// 1. Copy the model to a temporary name, fsynced.
	if err := copyFileSync(model, tmp); err != nil {
		return fmt.Errorf("keep the current model: %w", err)
	}
	if err := step(swapStepTemp); err != nil {
		return err
	}
	// 2. Rename the previous model onto the model path (atomic).
	if err := os.Rename(prev, model); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := step(swapStepPrev); err != nil {
		return err
	}
	// 3. The copy of the replaced model becomes the previous one.
	if err := os.Rename(tmp, prev); err != nil {
		return err
	}
	if err := step(swapStepTempPrev); err != nil {
		return err
	}
	// 4. Make the renames durable.
	if err := syncDir(filepath.Dir(model)); err != nil {
		return err
	}
	return step(swapStepSyncDir)
}

// restoreFiles undoes promoteFiles: the promoted file is linked back to
// the candidate's name and <model>.prev is renamed onto the model path.
func restoreFiles(model, candidate string) error {
	if err := os.Link(model, candidate); err != nil && !errors.Is(err, os.ErrExist) {
		if cerr := copyFileSync(model, candidate); cerr != nil {
			return fmt.Errorf("keep the candidate: %w", cerr)
		}
	}
	if err := os.Rename(prevPath(model), model); err != nil {
		return err
	}
	return syncDir(filepath.Dir(model))
}

func stepper(afterStep func(int) error) func(int) error {
	return func(n int) error {
		if afterStep == nil {
			return nil
		}
		if err := afterStep(n); err != nil {
			return fmt.Errorf("step %d: %w", n, err)
		}
		return nil
	}
}

// copyFileSync copies src to dst (replacing it) and fsyncs dst.
func copyFileSync(src, dst string) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fi.Mode().Perm())
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			out.Close()
			os.Remove(dst)
		}
	}()
	if _, err = io.Copy(out, in); err != nil {
		return fmt.Errorf("copy %s to %s: %w", src, dst, err)
	}
	if err = out.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dst, err)
	}
	if err = out.Close(); err != nil {
		return fmt.Errorf("close %s: %w", dst, err)
	}
	return nil
}

// syncDir fsyncs a directory, making renames in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// promoteOpenTimeout bounds loading a model during promotion and rollback.
const promoteOpenTimeout = 2 * time.Minute

// promote installs the candidate as the model and hot-swaps the running
// engine to it, as Reload does (the cameras keep running). The candidate is
// loaded first: one that does not load leaves the files and the engine as
// they are. If the promoted file then fails to load, the files are
// restored and the old engine stays.
func (a *Agent) promote(candidate string) (infer.ModelInfo, error) {
	a.ft.files.Lock()
	defer a.ft.files.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), promoteOpenTimeout)
	defer cancel()
	opts := a.Config().Detector
	model := opts.Model
	candidate, err := onnxCandidate(model, candidate, opts.InputSize)
	if err != nil {
		return infer.ModelInfo{}, fmt.Errorf("promote: the current model stays: %w", err)
	}

	check := opts
	check.Model = candidate
	eng, err := infer.Open(ctx, check)
	if err != nil {
		return infer.ModelInfo{}, fmt.Errorf("promote: the candidate does not load, the current model stays: %w", err)
	}
	eng.Close()

	a.ft.mu.Lock()
	afterStep := a.ft.afterStep
	a.ft.mu.Unlock()
	if err := promoteFiles(model, candidate, afterStep); err != nil {
		if _, serr := os.Stat(candidate); errors.Is(serr, os.ErrNotExist) {
			// The candidate was renamed onto the model path: put the
			// previous model back, as the engine still runs it.
			if uerr := restoreFiles(model, candidate); uerr != nil {
				a.log.Error("promote: restoring the previous model file failed", "model", model, "err", uerr)
			}
		}
		return infer.ModelInfo{}, fmt.Errorf("promote: the current model stays: %w", err)
	}
	info, err := a.swapEngine(ctx)
	if err != nil {
		// Undo: the candidate back under its own name for inspection, the
		// previous model back at the model path (atomic rename).
		uerr := restoreFiles(model, candidate)
		if uerr != nil {
			a.log.Error("promote: restoring the previous model file failed", "model", model, "err", uerr)
		}
		return infer.ModelInfo{}, fmt.Errorf("promote: the promoted model does not load, the previous one stays: %w", err)
	}
	a.log.Info("finetune: candidate promoted", "model", model, "sha256", info.SHA256, "prev", prevPath(model))
	return info, nil
}

// onnxCandidate returns the file to promote: candidate itself, or, when
// the model is an .onnx file and the candidate a native .safetensors model
// (what finetune.Run writes), its deploy ONNX export written beside it for
// input size img (the candidate's own input size when it declares one).
func onnxCandidate(model, candidate string, img int) (string, error) {
	if !strings.EqualFold(filepath.Ext(model), ".onnx") {
		return candidate, nil
	}
	native, err := tiny.IsSafetensorsFile(candidate)
	if err != nil {
		return "", fmt.Errorf("candidate: %w", err)
	}
	if !native {
		return candidate, nil
	}
	m, meta, err := tiny.ReadModelFile(candidate)
	if err != nil {
		return "", fmt.Errorf("candidate %s: %w", candidate, err)
	}
	if meta.InputSize > 0 {
		img = meta.InputSize
	}
	out := strings.TrimSuffix(candidate, filepath.Ext(candidate)) + ".onnx"
	if err := tiny.WriteONNXFile(out, m, img); err != nil {
		return "", fmt.Errorf("candidate %s: export to ONNX: %w", candidate, err)
	}
	return out, nil
}

// rollback exchanges the model with <model>.prev and hot-swaps the engine.
func (a *Agent) rollback(ctx context.Context) (any, error) {
	a.ft.files.Lock()
	defer a.ft.files.Unlock()
	ctx, cancel := context.WithTimeout(ctx, promoteOpenTimeout)
	defer cancel()
	opts := a.Config().Detector
	model, prev := opts.Model, prevPath(opts.Model)
	if _, err := os.Stat(prev); err != nil {
		return nil, fmt.Errorf("rollback: no previous model to go back to: %w", err)
	}
	check := opts
	check.Model = prev
	eng, err := infer.Open(ctx, check)
	if err != nil {
		return nil, fmt.Errorf("rollback: the previous model does not load, nothing changed: %w", err)
	}
	eng.Close()
	a.ft.mu.Lock()
	afterStep := a.ft.afterStep
	a.ft.mu.Unlock()
	if err := swapPrevFiles(model, afterStep); err != nil {
		// Stopped half way: finish keeping the replaced model as .prev,
		// and run whatever the model path now holds (it was checked to
		// load), so that engine and file agree.
		tmp := model + ".swap.tmp"
		if _, serr := os.Stat(prev); errors.Is(serr, os.ErrNotExist) {
			if rerr := os.Rename(tmp, prev); rerr != nil {
				a.log.Error("rollback: keeping the replaced model as .prev failed", "model", model, "err", rerr)
			}
		} else {
			os.Remove(tmp)
		}
		if sum, serr := infer.FileSHA256(model); serr == nil && sum != a.engine.Info().SHA256 {
			if _, oerr := a.swapEngine(ctx); oerr != nil {
				a.log.Error("rollback: the model file changed but does not load", "model", model, "err", oerr)
			}
		}
		return nil, fmt.Errorf("rollback: %s: %w", model, err)
	}
	info, err := a.swapEngine(ctx)
	if err != nil {
		if uerr := swapPrevFiles(model, nil); uerr != nil {
			a.log.Error("rollback: restoring the model file failed", "model", model, "err", uerr)
		}
		return nil, fmt.Errorf("rollback: the previous model does not load, nothing changed: %w", err)
	}
	prevSum, _ := infer.FileSHA256(prev)
	a.log.Info("rollback: done", "model", model, "sha256", info.SHA256, "prev_sha256", prevSum)
	return map[string]any{"model": info.SHA256, "path": model, "prev": prevSum}, nil
}

// swapEngine opens the configured model again and swaps it in, as Reload
// does; on error the running engine stays.
func (a *Agent) swapEngine(ctx context.Context) (infer.ModelInfo, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	eng, err := infer.Open(ctx, a.cfg.Detector)
	if err != nil {
		return infer.ModelInfo{}, err
	}
	_ = a.engine.Swap(eng)
	return eng.Info(), nil
}

// ---- pausing detection while training (finetune.mode = "pause") ----

// errDetectionPaused is the Detect error of a paused engine.
var errDetectionPaused = errors.New(`detection paused while a fine-tune trains (finetune.mode = "pause")`)

// pausedWait is how long a Detect call on a paused engine waits before
// giving up with errDetectionPaused (well below the watchdog's minute).
const pausedWait = 10 * time.Second

// pausedEngine stands in for the real engine while detection is paused:
// Detect waits until resume and then runs on the real engine.
type pausedEngine struct {
	real    infer.Engine
	resumed chan struct{}
}

func (p *pausedEngine) Detect(ctx context.Context, frame gocv.Mat) (infer.Result, error) {
	t := time.NewTimer(pausedWait)
	defer t.Stop()
	select {
	case <-p.resumed:
		return p.real.Detect(ctx, frame)
	case <-ctx.Done():
		return infer.Result{}, ctx.Err()
	case <-t.C:
		return infer.Result{}, errDetectionPaused
	}
}

func (p *pausedEngine) Info() infer.ModelInfo { return p.real.Info() }

// Close is called when a reload replaced the paused engine; the real one is
// closed by resume.
func (p *pausedEngine) Close() error { return nil }

// pauseDetection makes every camera's Detect wait, and returns the function
// that resumes it. A reload meanwhile installs its engine (detection
// resumes with it) and resume then closes the engine it had put aside.
func (a *Agent) pauseDetection() (resume func()) {
	s := &a.engine
	s.mu.Lock()
	real := s.eng
	if real == nil {
		s.mu.Unlock()
		return func() {}
	}
	p := &pausedEngine{real: real, resumed: make(chan struct{})}
	s.eng = p
	s.mu.Unlock()
	return func() {
		close(p.resumed)
		s.mu.Lock()
		still := s.eng == p
		if still {
			s.eng = real
		}
		s.mu.Unlock()
		if !still {
			real.Close()
		}
	}
}

// publishStats publishes the stats with the fine-tune state added.
func (a *Agent) publishStats() {
	s := a.stats()
	st := a.pub.Stats()
	s.QueueDepth, s.OutboxRecords, s.OutboxBytes = st.QueueDepth, st.OutboxRecords, st.OutboxBytes
	s.DroppedQoS0, s.DroppedQoS1, s.Sent = st.DroppedQoS0, st.DroppedQoS1, st.Sent
	s.Reconnects, s.Connected = st.Reconnects, st.Connected
	msg := statsMessage{StatsPayload: s, Finetune: a.finetuneBrief()}
	if err := a.pub.PublishJSON(a.topics.Stats(), 1, true, msg); err != nil && !errors.Is(err, publish.ErrClosed) {
		a.log.Warn("publish stats", "topic", a.topics.Stats(), "err", err)
	}
}
