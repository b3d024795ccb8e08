package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/yolo7d/yolo7d/finetune"
	"github.com/yolo7d/yolo7d/infer"
	"github.com/yolo7d/yolo7d/publish"
	"github.com/yolo7d/yolo7d/tiny"
)

// On-device fine-tuning: <prefix>/cmd/finetune starts one run of a
// finetune.Tuner in a goroutine, progress goes to <prefix>/finetune/status
// (retained, QoS 1), and a candidate that passes the gate is promoted
// (promote.go) and hot-swapped into the running engine.

// States of FinetuneStatusPayload.State beyond the tuner's own
// (finetune.StateLoading, StateTraining, StateEvaluating, StateDone,
// StateFailed, StateCancelled).
const (
	// FinetuneStarted: the command was accepted, the tuner is starting.
	FinetuneStarted = "started"
	// FinetunePromoting: the candidate passed the gate and is being
	// installed as the model.
	FinetunePromoting = "promoting"
	// FinetuneIdle is the stats' finetune state when no run ever started.
	FinetuneIdle = "idle"
)

// finetuneStatusEvery is the least time between two progress statuses of
// the same state (state changes and the final status always go out).
const finetuneStatusEvery = time.Second

// finetuneStopWait is how long shutdown waits for a cancelled run to end.
const finetuneStopWait = 10 * time.Second // a run stops within a batch; the unit allows 30 s for the whole shutdown

// finetuner is the agent's fine-tune state: at most one job at a time.
type finetuner struct {
	// tuner runs the training; nil means the build's default (see
	// defaultTuner), and none means fine-tuning is refused. Tests set it.
	tuner finetune.Tuner
	// afterStep, when set, is called after each numbered step of a
	// promotion or rollback (promote.go); an error stops it there. Tests
	// use it to check that the model file is whole after every step.
	afterStep func(step int) error

	mu   sync.Mutex
	job  *finetuneJob
	last FinetuneBrief // the current or last run, for the stats

	files sync.Mutex // serializes promotions and rollbacks (the model files)
}

// finetuneJob is the run in progress.
type finetuneJob struct {
	id     string
	cancel context.CancelCauseFunc
	done   chan struct{}
}

// tunerDefaulter is implemented by the Agent when the build provides the
// real trainer (finetune_default.go).
type tunerDefaulter interface{ defaultTuner() finetune.Tuner }

// tunerFor returns the Tuner to use, or nil when fine-tuning is not
// available in this build.
func (a *Agent) tunerFor() finetune.Tuner {
	if a.ft.tuner != nil {
		return a.ft.tuner
	}
	if d, ok := any(a).(tunerDefaulter); ok {
		return d.defaultTuner()
	}
	return nil
}

// finetuneBrief is the fine-tune part of the stats.
func (a *Agent) finetuneBrief() FinetuneBrief {
	a.ft.mu.Lock()
	defer a.ft.mu.Unlock()
	if a.ft.last.State == "" {
		return FinetuneBrief{State: FinetuneIdle}
	}
	return a.ft.last
}

// handleFinetune runs the finetune command: start a run, or cancel the
// running one. It answers at once; the run goes on in the background.
func (a *Agent) handleFinetune(cmd publish.Command) (any, error) {
	if cmd.Finetune.Cancel {
		return a.cancelFinetune(cmd.ID)
	}
	tuner := a.tunerFor()
	if tuner == nil {
		return nil, errors.New("finetune: on-device fine-tuning is not available in this build")
	}
	if cmd.ID == "." || cmd.ID == ".." {
		return nil, fmt.Errorf("finetune: id %q cannot name a work directory; choose another id", cmd.ID)
	}
	a.mu.Lock()
	cfg, runCtx := a.cfg, a.runCtx
	a.mu.Unlock()
	if runCtx == nil {
		return nil, errors.New("finetune: the agent is still starting; try again")
	}
	if ext := strings.ToLower(filepath.Ext(cfg.Detector.Model)); ext == ".pt" || ext == ".pth" {
		// A promotion replaces the model file, and yolo7d writes no torch
		// checkpoints: the model must be a native or ONNX file.
		return nil, fmt.Errorf("finetune: detector.model %s is a torch checkpoint, which a promotion cannot replace; "+
			"convert it (yolo7d import %s -o model.safetensors) and point detector.model at the result", cfg.Detector.Model, cfg.Detector.Model)
	}
	rc := finetuneRunConfig(cfg, cmd.ID, cmd.Finetune)
	if _, err := os.Stat(rc.Data); err != nil {
		return nil, fmt.Errorf("finetune: data: %w", err)
	}
	if _, err := os.Stat(rc.Base); err != nil {
		return nil, fmt.Errorf("finetune: base model: %w", err)
	}

	a.ft.mu.Lock()
	if j := a.ft.job; j != nil {
		a.ft.mu.Unlock()
		return nil, fmt.Errorf("finetune: fine-tune %q is already running; wait for it or cancel it with {\"id\": \"...\", \"cancel\": true}", j.id)
	}
	ctx, cancel := context.WithCancelCause(runCtx)
	j := &finetuneJob{id: cmd.ID, cancel: cancel, done: make(chan struct{})}
	a.ft.job = j
	a.ft.last = FinetuneBrief{State: FinetuneStarted, ID: cmd.ID}
	a.ft.mu.Unlock()

	a.log.Info("finetune: started", "id", cmd.ID, "data", rc.Data, "base", rc.Base, "epochs", rc.Epochs,
		"workdir", rc.WorkDir, "mode", cfg.Finetune.Mode)
	go a.runFinetune(ctx, j, tuner, rc, cfg.Finetune.Mode, cfg.Finetune.Device, cfg.Detector)
	return map[string]any{"id": cmd.ID, "accepted": true, "state": FinetuneStarted,
		"workdir": rc.WorkDir, "candidate": rc.Out}, nil
}

// cancelFinetune cancels the running fine-tune on behalf of command id.
func (a *Agent) cancelFinetune(id string) (any, error) {
	a.ft.mu.Lock()
	j := a.ft.job
	a.ft.mu.Unlock()
	if j == nil {
		return nil, errors.New("finetune: no fine-tune is running")
	}
	j.cancel(fmt.Errorf("cancelled by command %q", id))
	a.log.Info("finetune: cancel requested", "id", j.id, "by", id)
	return map[string]any{"id": j.id, "cancelled": true}, nil
}

// stopFinetune cancels the running fine-tune (agent shutdown) and waits a
// while for its final status.
func (a *Agent) stopFinetune() {
	a.ft.mu.Lock()
	j := a.ft.job
	a.ft.mu.Unlock()
	if j == nil {
		return
	}
	j.cancel(errors.New("the agent is shutting down"))
	select {
	case <-j.done:
	case <-time.After(finetuneStopWait):
		a.log.Error("finetune: the run did not stop in time after cancellation", "id", j.id, "waited", finetuneStopWait)
	}
}

// finetuneRunConfig maps the command's arguments and the [finetune]
// defaults to a finetune.RunConfig: Base "" is the current model, Out a
// name beside the model (same directory, so promotion is a rename), WorkDir
// <state_dir>/finetune/<id>.
func finetuneRunConfig(cfg *Config, id string, args publish.FinetuneArgs) finetune.RunConfig {
	f := cfg.Finetune
	model := cfg.Detector.Model
	rc := finetune.DefaultRunConfig() // the run's own defaults (hyp, warm-up, BN) unless [finetune] says otherwise
	rc.Data, rc.Base, rc.Resume = args.Data, args.Base, args.Resume
	rc.Out = candidateStem(model, id) + ".safetensors"
	rc.WorkDir = filepath.Join(cfg.Agent.StateDir, "finetune", id)
	rc.Epochs, rc.ImgSize, rc.Batch, rc.Freeze, rc.Aux = f.Epochs, f.Img, f.Batch, f.Freeze, f.Aux
	rc.Seed, rc.Threads, rc.StrictData = f.Seed, f.Threads, f.Strict
	rc.Margin, rc.Replay, rc.MaxReplayDrop, rc.ReplayMix = f.Margin, f.Replay, f.MaxReplayDrop, f.ReplayMix
	rc.BN = tiny.BNFrozen
	if rc.Base == "" {
		rc.Base = model
	}
	if f.BN == "batch" {
		rc.BN = tiny.BNBatch
	}
	if args.Epochs > 0 {
		rc.Epochs = args.Epochs
	}
	if args.Img > 0 {
		rc.ImgSize = args.Img
	}
	if args.Batch > 0 {
		rc.Batch = args.Batch
	}
	if args.Freeze >= 0 {
		rc.Freeze = args.Freeze
	}
	if args.AuxSet {
		rc.Aux = args.Aux
	}
	return rc
}

// candidateStem is the path, without extension, of run id's candidate:
// beside the model, so that promotion is a rename in one directory.
// finetune.Run writes the native format (.safetensors); promotion converts
// it to ONNX when the model is an .onnx file (see onnxCandidate).
func candidateStem(model, id string) string {
	return strings.TrimSuffix(model, filepath.Ext(model)) + ".candidate-" + id
}

// runFinetune runs one job to its end and publishes its final status.
func (a *Agent) runFinetune(ctx context.Context, j *finetuneJob, tuner finetune.Tuner, rc finetune.RunConfig, mode, devName string, det infer.Options) {
	defer close(j.done)
	rep := &statusReporter{a: a, cur: FinetuneStatusPayload{Device: a.deviceID, ID: j.id, Epochs: rc.Epochs}}
	rep.set(FinetuneStarted, true)

	resume := func() {}
	if mode == "pause" {
		resume = a.pauseDetection()
		a.log.Info("finetune: detection paused while training", "id", j.id)
	}
	var res *finetune.Result
	err := os.MkdirAll(rc.WorkDir, 0o750)
	if err != nil {
		err = fmt.Errorf("work directory: %w", err)
	} else {
		dev, closeDev, note, derr := OpenTrainDevice(devName, det)
		if derr != nil {
			err = derr
		} else {
			a.log.Info("finetune: "+note, "id", j.id)
			rc.Device = dev
			res, err = callTuner(ctx, tuner, rc, rep.progress)
			closeDev()
		}
	}
	resume()

	final := rep.snapshot()
	final.ETAS = 0
	switch {
	case ctx.Err() != nil:
		// Cancelled; a result that came with the cancellation is reported
		// but not promoted (the agent may be shutting down).
		final.State = finetune.StateCancelled
		final.Error = fmt.Sprintf("%v; checkpoints are kept in %s (continue with the same id and \"resume\": true)", context.Cause(ctx), rc.WorkDir)
		if res != nil {
			final.Result = newFinetuneResult(res, rc.Out)
		}
	case err != nil:
		final.State = finetune.StateFailed
		final.Error = err.Error()
	case res == nil:
		final.State = finetune.StateFailed
		final.Error = "the trainer returned no result"
	default:
		final.State = finetune.StateDone
		final.Result = newFinetuneResult(res, rc.Out)
		if res.Promote {
			rep.set(FinetunePromoting, true)
			info, perr := a.promote(final.Result.Candidate)
			if perr != nil {
				final.State = finetune.StateFailed
				final.Error = perr.Error()
			} else {
				final.Result.Promoted = true
				final.Result.Model = info.SHA256
			}
		}
	}
	a.ft.mu.Lock()
	a.ft.job = nil
	a.ft.last = FinetuneBrief{State: final.State, ID: j.id}
	a.ft.mu.Unlock()
	rep.final(final)

	attrs := []any{"id", j.id, "state", final.State}
	if final.Result != nil {
		attrs = append(attrs, "promote", final.Result.Promote, "promoted", final.Result.Promoted, "reason", final.Result.Reason)
	}
	if final.Error != "" {
		a.log.Warn("finetune: ended", append(attrs, "err", final.Error)...)
	} else {
		a.log.Info("finetune: ended", attrs...)
	}
}

// callTuner runs the tuner, turning a panic into an error.
func callTuner(ctx context.Context, tuner finetune.Tuner, rc finetune.RunConfig, progress func(finetune.Progress)) (res *finetune.Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			res, err = nil, fmt.Errorf("the trainer panicked: %v", r)
		}
	}()
	return tuner(ctx, rc, progress)
}

// statusReporter publishes the status of one run, throttled.
type statusReporter struct {
	a *Agent

	mu        sync.Mutex
	cur       FinetuneStatusPayload
	lastState string
	lastPub   time.Time
}

// progress is the tuner's callback: it records p and publishes when the
// state changed or finetuneStatusEvery has passed.
func (r *statusReporter) progress(p finetune.Progress) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &r.cur
	switch p.State {
	case "", finetune.StateDone, finetune.StateFailed, finetune.StateCancelled:
		// The final states are the agent's to publish, after promotion.
	default:
		c.State = p.State
	}
	c.Epoch, c.Batch, c.Batches = p.Epoch, p.Batch, p.Batches
	if p.Epochs > 0 {
		c.Epochs = p.Epochs
	}
	c.Loss = FinetuneLoss{Box: p.Loss.Box, Obj: p.Loss.Obj, Cls: p.Loss.Cls, Total: p.Loss.Total}
	c.ETAS = p.ETA.Seconds()
	c.ValMAP50, c.ValMAP50_95 = p.ValMAP50, p.ValMAP50_95
	if c.State != r.lastState || time.Since(r.lastPub) >= finetuneStatusEvery {
		r.publishLocked()
	}
	r.a.ft.mu.Lock()
	if r.a.ft.last.ID == c.ID {
		r.a.ft.last.State = c.State
	}
	r.a.ft.mu.Unlock()
}

// set changes the state and publishes it (always when force).
func (r *statusReporter) set(state string, force bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cur.State = state
	if force || state != r.lastState {
		r.publishLocked()
	}
	r.a.ft.mu.Lock()
	if r.a.ft.last.ID == r.cur.ID && r.a.ft.job != nil {
		r.a.ft.last.State = state
	}
	r.a.ft.mu.Unlock()
}

// snapshot is the status as last reported.
func (r *statusReporter) snapshot() FinetuneStatusPayload {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

// final publishes the final status.
func (r *statusReporter) final(s FinetuneStatusPayload) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cur = s
	r.publishLocked()
}

func (r *statusReporter) publishLocked() {
	msg := r.cur // a copy: the header is stamped on it
	r.lastState, r.lastPub = msg.State, time.Now()
	if err := r.a.pub.PublishJSON(r.a.topics.FinetuneStatus(), 1, true, &msg); err != nil && !errors.Is(err, publish.ErrClosed) {
		r.a.log.Warn("finetune: publish status", "topic", r.a.topics.FinetuneStatus(), "err", err)
	}
}

// newFinetuneResult is the result part of the status.
func newFinetuneResult(res *finetune.Result, out string) *FinetuneResult {
	r := &FinetuneResult{
		Base:      newFinetuneMetrics(res.Base),
		Tuned:     newFinetuneMetrics(res.Tuned),
		Promote:   res.Promote,
		Reason:    res.Reason,
		Candidate: res.Candidate,
		Epochs:    res.Epochs,
		EpochS:    res.EpochDuration.Seconds(),

		DataIssues:     res.DataIssues,
		DataIssueCount: res.DataIssueCount,
	}
	if r.Candidate == "" {
		r.Candidate = out
	}
	if res.ReplayBase != nil {
		m := newFinetuneMetrics(*res.ReplayBase)
		r.ReplayBase = &m
	}
	if res.ReplayTuned != nil {
		m := newFinetuneMetrics(*res.ReplayTuned)
		r.ReplayTuned = &m
	}
	return r
}

func newFinetuneMetrics(m finetune.Metrics) FinetuneMetrics {
	out := FinetuneMetrics{P: m.P, R: m.R, MAP50: m.MAP50, MAP50_95: m.MAP50_95}
	for _, c := range m.PerClass {
		out.PerClass = append(out.PerClass, FinetuneClassMetrics{
			Class: c.Class, Targets: c.NGT, P: c.P, R: c.R, MAP50: c.AP50, MAP50_95: c.AP50_95,
		})
	}
	return out
}
