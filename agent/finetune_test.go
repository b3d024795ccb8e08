package agent

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/yolo7d/yolo7d/capture/capturetest"
	"github.com/yolo7d/yolo7d/finetune"
	"github.com/yolo7d/yolo7d/finetune/synth"
	"github.com/yolo7d/yolo7d/infer"
	"github.com/yolo7d/yolo7d/publish"
	"github.com/yolo7d/yolo7d/tiny"
)

// candidateModels caches a second model (different weights, same graph and
// input size as testModel) per input size: what a fake fine-tune "trains".
var candidateModels struct {
	mu    sync.Mutex
	paths map[int]string
}

func candidateModel(t *testing.T, size int) []byte {
	t.Helper()
	candidateModels.mu.Lock()
	defer candidateModels.mu.Unlock()
	p, ok := candidateModels.paths[size]
	if !ok {
		dir, err := os.MkdirTemp("", "yolo7d-candidate")
		if err != nil {
			t.Fatal(err)
		}
		p = filepath.Join(dir, fmt.Sprintf("candidate-%d.onnx", size))
		if err := tiny.WriteRandomONNX(p, tiny.Config{Act: "relu", NC: 80, Seed: 7}, size); err != nil {
			t.Fatalf("generate the candidate model: %v", err)
		}
		if candidateModels.paths == nil {
			candidateModels.paths = map[int]string{}
		}
		candidateModels.paths[size] = p
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// nativeCandidate is a native .safetensors model (what finetune.Run
// writes) for input size size, cached.
var nativeCandidates struct {
	mu    sync.Mutex
	bytes map[int][]byte
}

func nativeCandidate(t *testing.T, size int) []byte {
	t.Helper()
	nativeCandidates.mu.Lock()
	defer nativeCandidates.mu.Unlock()
	if b, ok := nativeCandidates.bytes[size]; ok {
		return b
	}
	m, err := tiny.NewRandom(tiny.Config{Act: "relu", NC: 80, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "native.safetensors")
	if err := tiny.WriteModelFile(p, m, tiny.ModelMeta{InputSize: size}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if nativeCandidates.bytes == nil {
		nativeCandidates.bytes = map[int][]byte{}
	}
	nativeCandidates.bytes[size] = b
	return b
}

// fakeTuner is a finetune.Tuner that does not train: it reports progress
// for Epochs x Batches batches, Delay apart, then writes Candidate to
// cfg.Out and returns a result with Promote. With Hold set it waits for the
// channel to close (or for cancellation) before its evaluation.
type fakeTuner struct {
	Epochs, Batches int
	Delay           time.Duration
	Hold            chan struct{}
	Candidate       []byte
	Promote         bool

	mu      sync.Mutex
	calls   int
	configs []finetune.RunConfig
}

func (f *fakeTuner) run(ctx context.Context, cfg finetune.RunConfig, progress func(finetune.Progress)) (*finetune.Result, error) {
	f.mu.Lock()
	f.configs = append(f.configs, cfg)
	f.mu.Unlock()
	progress(finetune.Progress{State: finetune.StateLoading, Epochs: f.Epochs})
	for e := 1; e <= f.Epochs; e++ {
		for b := 1; b <= f.Batches; b++ {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(f.Delay):
			}
			f.mu.Lock()
			f.calls++
			f.mu.Unlock()
			progress(finetune.Progress{State: finetune.StateTraining, Epoch: e, Epochs: f.Epochs, Batch: b, Batches: f.Batches,
				Loss: finetune.LossItems{Box: 0.05, Obj: 0.02, Cls: 0.01, Total: 0.08}, ETA: time.Duration(f.Epochs*f.Batches-b) * f.Delay})
		}
	}
	if f.Hold != nil {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-f.Hold:
		}
	}
	progress(finetune.Progress{State: finetune.StateEvaluating, Epoch: f.Epochs, Epochs: f.Epochs, ValMAP50: 0.6, ValMAP50_95: 0.4})
	if err := os.WriteFile(cfg.Out, f.Candidate, 0o644); err != nil {
		return nil, err
	}
	base := finetune.Metrics{P: 0.5, R: 0.5, MAP50: 0.55, MAP50_95: 0.35,
		PerClass: []finetune.ClassMetrics{{Class: 0, NGT: 10, P: 0.5, R: 0.5, AP50: 0.55, AP50_95: 0.35}}}
	tuned := finetune.Metrics{P: 0.6, R: 0.6, MAP50: 0.6, MAP50_95: 0.4}
	reason := "mAP@0.5:0.95 0.4000 >= 0.3500 + 0.005"
	if !f.Promote {
		tuned.MAP50_95 = 0.3
		reason = "mAP@0.5:0.95 0.3000 < 0.3500 + 0.005"
	}
	// Like finetune.Run, report the end of the run (the agent publishes its
	// own final state after promotion).
	progress(finetune.Progress{State: finetune.StateDone, Epoch: f.Epochs, Epochs: f.Epochs, ValMAP50: tuned.MAP50, ValMAP50_95: tuned.MAP50_95})
	return &finetune.Result{Candidate: cfg.Out, Base: base, Tuned: tuned, Promote: f.Promote, Reason: reason,
		Epochs: f.Epochs, EpochDuration: time.Duration(f.Batches) * f.Delay}, nil
}

// ftEnv is an agent with a fake tuner, its broker and a subscriber to
// everything under its prefix.
type ftEnv struct {
	t        *testing.T
	a        *Agent
	sub      *subscriber
	stop     func() error
	stopped  bool
	model    string // the model path the agent runs
	old, new []byte // the model's initial bytes and the candidate's
	prefix   string
	broker   string
}

// startFinetuneAgent runs an agent on a private copy of the test model
// (promotion replaces it) with tuner injected and extra TOML appended.
func startFinetuneAgent(t *testing.T, tuner finetune.Tuner, extra string) *ftEnv {
	t.Helper()
	src := testModel(t)
	old, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	size := inputSizeOf(src)
	name := "model.onnx"
	if size == 320 {
		name = "model-320.onnx"
	}
	return startAgentOnModel(t, tuner, extra, name, old, candidateModel(t, size))
}

// startAgentOnModel is startFinetuneAgent on a model file name holding
// old; new is what a fake tuner writes.
func startAgentOnModel(t *testing.T, tuner finetune.Tuner, extra, name string, old, new []byte) *ftEnv {
	t.Helper()
	broker := startMosquitto(t)
	dir := t.TempDir()
	video := capturetest.MakeVideo(t, dir, 320, 240, 15, 2)
	modelDir := filepath.Join(dir, "models")
	os.MkdirAll(modelDir, 0o755)
	model := writeFile(t, modelDir, name, old)
	stateDir := filepath.Join(dir, "state")
	data := filepath.Join(stateDir, "data", "sets", "yard")
	os.MkdirAll(data, 0o755)
	writeFile(t, data, "data.yaml", []byte("train: images\nval: images\nnames: [a]\n"))
	tc := testConfig{Broker: broker.URL(), StateDir: stateDir, Model: model, Cameras: fileCamera("cam1", video, 10), Extra: extra}
	cfgPath := tc.write(t, dir)
	e := &ftEnv{t: t, model: model, old: old, new: new, prefix: prefixFor(t), broker: broker.URL()}
	e.sub = subscribe(t, broker.URL(), e.prefix+"/#")

	a, err := New(Options{ConfigPath: cfgPath, LogOutput: newTestLog(t)})
	if err != nil {
		t.Fatal(err)
	}
	if tuner != nil {
		a.ft.tuner = tuner
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	e.a = a
	e.stop = func() error {
		if e.stopped {
			return nil
		}
		e.stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(40 * time.Second):
			t.Fatal("agent did not stop within 40s")
			return nil
		}
	}
	t.Cleanup(func() {
		if err := e.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	waitFor(t, 30*time.Second, "detections", func() bool { return len(e.sub.on("/cameras/cam1/detections")) > 2 })
	return e
}

// send publishes a command.
func (e *ftEnv) send(name, payload string) {
	e.t.Helper()
	if tok := e.sub.client.Publish(e.prefix+"/cmd/"+name, 1, false, payload); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		e.t.Fatalf("publish %s: %v", name, tok.Error())
	}
}

// cmdResult is a reply on <p>/cmd/result.
type cmdResult struct {
	V      int            `json:"v"`
	ID     string         `json:"id"`
	OK     bool           `json:"ok"`
	Error  string         `json:"error"`
	Result map[string]any `json:"result"`
}

// result waits for the reply to command id.
func (e *ftEnv) result(id string) cmdResult {
	e.t.Helper()
	var r cmdResult
	waitFor(e.t, 20*time.Second, "the result of command "+id, func() bool {
		for _, m := range e.sub.on("/cmd/result") {
			var x cmdResult
			if json.Unmarshal(m.Payload, &x) == nil && x.ID == id {
				r = x
				return true
			}
		}
		return false
	})
	return r
}

// call sends a command and waits for its reply.
func (e *ftEnv) call(name, payload string) cmdResult {
	e.t.Helper()
	var id struct{ ID string }
	json.Unmarshal([]byte(payload), &id)
	e.send(name, payload)
	return e.result(id.ID)
}

// statuses decodes every status published for run id, strictly.
func (e *ftEnv) statuses(id string) []FinetuneStatusPayload {
	e.t.Helper()
	var out []FinetuneStatusPayload
	for _, m := range e.sub.on("/finetune/status") {
		var s FinetuneStatusPayload
		dec := json.NewDecoder(bytes.NewReader(m.Payload))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			e.t.Fatalf("status payload does not match the schema: %v\n%s", err, m.Payload)
		}
		if s.ID == id {
			out = append(out, s)
		}
	}
	// The MQTT contract: delivery is at least once and not necessarily in
	// order; consumers order by seq and drop duplicates.
	slices.SortStableFunc(out, func(a, b FinetuneStatusPayload) int { return cmp.Compare(a.Seq, b.Seq) })
	return slices.CompactFunc(out, func(a, b FinetuneStatusPayload) bool { return a.Seq == b.Seq })
}

// final waits for the final status of run id.
func (e *ftEnv) final(id string, within time.Duration) FinetuneStatusPayload {
	e.t.Helper()
	var f FinetuneStatusPayload
	waitFor(e.t, within, "the final status of "+id, func() bool {
		for _, s := range e.statuses(id) {
			switch s.State {
			case finetune.StateDone, finetune.StateFailed, finetune.StateCancelled:
				f = s
				return true
			}
		}
		return false
	})
	return f
}

// detections is the number of detections messages so far.
func (e *ftEnv) detections() int { return len(e.sub.on("/cameras/cam1/detections")) }

// lastDetectionModel is the model sha256 of the newest detections message.
func (e *ftEnv) lastDetectionModel() string {
	var d detectionsMsg
	e.sub.lastJSON(e.t, "/cameras/cam1/detections", &d)
	return d.Model
}

func sha(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "x")
	os.WriteFile(p, b, 0o644)
	s, err := infer.FileSHA256(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestFinetuneOutcomes runs a fake fine-tune to each of its ends and checks
// the statuses, the model files and that the cameras detect throughout.
func TestFinetuneOutcomes(t *testing.T) {
	tests := []struct {
		name        string
		promote     bool
		corrupt     bool   // the candidate is truncated
		native      bool   // the candidate is a native .safetensors model, as finetune.Run writes
		wantState   string // final state
		wantErr     string
		wantNew     bool // the model path holds the candidate afterwards
		wantPrev    bool
		wantKeptCan bool // the candidate file stays for inspection
	}{
		{name: "promoted", promote: true, wantState: finetune.StateDone, wantNew: true, wantPrev: true},
		{name: "native candidate exported to ONNX", promote: true, native: true, wantState: finetune.StateDone, wantNew: true, wantPrev: true},
		{name: "not promoted", promote: false, wantState: finetune.StateDone, wantKeptCan: true},
		{name: "corrupt candidate", promote: true, corrupt: true, wantState: finetune.StateFailed, wantErr: "does not load", wantKeptCan: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := &fakeTuner{Epochs: 3, Batches: 5, Delay: 150 * time.Millisecond, Promote: tt.promote}
			e := startFinetuneAgent(t, fake.run, "")
			fake.Candidate = e.new
			if tt.corrupt {
				fake.Candidate = e.new[:len(e.new)/3]
			}
			if tt.native {
				fake.Candidate = nativeCandidate(t, inputSizeOf(e.model))
			}
			oldSHA, newSHA := sha(t, e.old), sha(t, e.new)
			if got := e.lastDetectionModel(); got != oldSHA {
				t.Fatalf("detections before the run name model %s, want %s", got, oldSHA)
			}

			r := e.call("finetune", `{"id":"ft1","data":"sets/yard/data.yaml","epochs":3}`)
			if !r.OK || r.Result["accepted"] != true || r.Result["state"] != "started" || r.Result["id"] != "ft1" {
				t.Fatalf("finetune reply = %+v, want accepted and started", r)
			}
			// Detections go on while it trains.
			waitFor(t, 20*time.Second, "training statuses", func() bool {
				for _, s := range e.statuses("ft1") {
					if s.State == finetune.StateTraining {
						return true
					}
				}
				return false
			})
			n := e.detections()
			waitFor(t, 10*time.Second, "detections during the fine-tune", func() bool { return e.detections() > n+2 })
			f := e.final("ft1", 30*time.Second)

			if f.State != tt.wantState || !strings.Contains(f.Error, tt.wantErr) {
				t.Fatalf("final status %s %q, want %s with %q", f.State, f.Error, tt.wantState, tt.wantErr)
			}
			if tt.wantErr == "" && f.Error != "" {
				t.Fatalf("final status has an error: %q", f.Error)
			}
			if f.V != 1 || f.Device != "test" || f.Result == nil || f.Result.Promote != tt.promote || f.Result.Reason == "" ||
				f.Result.Base.MAP50_95 != 0.35 || len(f.Result.Base.PerClass) != 1 || f.Result.EpochS <= 0 {
				t.Fatalf("final status = %+v (result %+v)", f, f.Result)
			}
			if f.Result.Promoted != tt.wantNew {
				t.Errorf("result.promoted = %v, want %v", f.Result.Promoted, tt.wantNew)
			}

			// States in order, throttled progress.
			var states []string
			training := 0
			for _, s := range e.statuses("ft1") {
				if len(states) == 0 || states[len(states)-1] != s.State {
					states = append(states, s.State)
				}
				if s.State == finetune.StateTraining {
					training++
					if s.Epochs != 3 || s.Batches != 5 || s.Loss.Total != 0.08 {
						t.Errorf("training status = %+v", s)
					}
				}
			}
			want := []string{FinetuneStarted, finetune.StateLoading, finetune.StateTraining, finetune.StateEvaluating}
			if tt.promote {
				want = append(want, FinetunePromoting)
			}
			want = append(want, tt.wantState)
			if strings.Join(states, ",") != strings.Join(want, ",") {
				t.Errorf("states %v, want %v", states, want)
			}
			if training == 0 || training > 6 {
				t.Errorf("%d training statuses for 15 batches over ~2.3s, want throttling to about 1 per second", training)
			}

			// The files.
			if tt.native {
				// The promoted file is the candidate's ONNX export.
				if native, err := tiny.IsSafetensorsFile(e.model); err != nil || native {
					t.Fatalf("the promoted .onnx model is not ONNX (native %v, %v)", native, err)
				}
				e.new, _ = os.ReadFile(e.model)
				newSHA = sha(t, e.new)
				if f.Result.Model != newSHA {
					t.Errorf("result.model = %s, want the model file's %s", f.Result.Model, newSHA)
				}
			}
			wantModel := e.old
			if tt.wantNew {
				wantModel = e.new
			}
			wholeModel(t, e.model, wantModel)
			if tt.wantPrev {
				wholeModel(t, prevPath(e.model), e.old)
			} else if _, err := os.Stat(prevPath(e.model)); !os.IsNotExist(err) {
				t.Errorf("%s exists after a run that did not promote: %v", prevPath(e.model), err)
			}
			if tt.wantKeptCan {
				if _, err := os.Stat(f.Result.Candidate); err != nil {
					t.Errorf("the candidate was not kept: %v", err)
				}
			}

			// The engine, and detections on it.
			wantSHA := oldSHA
			if tt.wantNew {
				wantSHA = newSHA
			}
			if got := e.a.engine.Info().SHA256; got != wantSHA {
				t.Errorf("engine model %s, want %s", got, wantSHA)
			}
			n = e.detections()
			waitFor(t, 10*time.Second, "detections after the run", func() bool { return e.detections() > n+2 })
			if got := e.lastDetectionModel(); got != wantSHA {
				t.Errorf("detections after the run name model %s, want %s", got, wantSHA)
			}

			// The final status is retained.
			late := subscribe(t, e.broker, e.prefix+"/finetune/status")
			waitFor(t, 10*time.Second, "the retained status", func() bool {
				var s FinetuneStatusPayload
				ms := late.on("/finetune/status")
				return len(ms) > 0 && ms[0].Retained && json.Unmarshal(ms[0].Payload, &s) == nil && s.ID == "ft1" && s.State == tt.wantState
			})
			// The stats carry the fine-tune's state.
			waitFor(t, 10*time.Second, "the stats' finetune field", func() bool {
				var st struct {
					Finetune FinetuneBrief `json:"finetune"`
				}
				return e.sub.lastJSON(t, "/stats", &st) && st.Finetune == FinetuneBrief{State: tt.wantState, ID: "ft1"}
			})

			// The run's configuration: defaults from [finetune], paths.
			rc := fake.configs[0]
			if rc.Base != e.model || rc.Epochs != 3 || rc.Batch != DefaultFinetuneBatch || !rc.Aux || rc.Margin != DefaultFinetuneMargin ||
				filepath.Dir(rc.Out) != filepath.Dir(e.model) || rc.WorkDir != filepath.Join(e.a.Config().Agent.StateDir, "finetune", "ft1") ||
				rc.Data != filepath.Join(e.a.Config().Agent.StateDir, "data", "sets", "yard", "data.yaml") {
				t.Errorf("run configuration = %+v", rc)
			}
		})
	}
}

// TestFinetuneOneAtATimeAndCancel: a second fine-tune is refused naming the
// running one; cancel ends it as cancelled; shutdown cancels a run too.
func TestFinetuneOneAtATimeAndCancel(t *testing.T) {
	hold := make(chan struct{})
	fake := &fakeTuner{Epochs: 1, Batches: 1, Delay: 10 * time.Millisecond, Hold: hold, Promote: true}
	e := startFinetuneAgent(t, fake.run, "")
	fake.Candidate = e.new

	cases := []struct {
		name, cmd, payload string
		ok                 bool
		errHas             string
	}{
		{"cancel with nothing running", "finetune", `{"id":"c0","cancel":true}`, false, "no fine-tune is running"},
		{"start", "finetune", `{"id":"ft1","data":"sets/yard/data.yaml"}`, true, ""},
		{"second refused", "finetune", `{"id":"ft2","data":"sets/yard/data.yaml"}`, false, `"ft1" is already running`},
		{"missing data", "finetune", `{"id":"ft3","data":"sets/none/data.yaml"}`, false, "no such file"},
		{"cancel with fields", "finetune", `{"id":"c1","cancel":true,"epochs":2}`, false, "not allowed with"},
		{"cancel", "finetune", `{"id":"c2","cancel":true}`, true, ""},
	}
	for _, c := range cases {
		r := e.call(c.cmd, c.payload)
		if r.OK != c.ok || !strings.Contains(r.Error, c.errHas) {
			t.Fatalf("%s: reply %+v, want ok=%v and an error with %q", c.name, r, c.ok, c.errHas)
		}
	}
	f := e.final("ft1", 20*time.Second)
	if f.State != finetune.StateCancelled || !strings.Contains(f.Error, `cancelled by command "c2"`) || !strings.Contains(f.Error, "checkpoints") {
		t.Fatalf("final status %s %q, want cancelled by c2 naming the checkpoints", f.State, f.Error)
	}
	wholeModel(t, e.model, e.old)
	if len(e.statuses("ft2")) != 0 {
		t.Error("the refused fine-tune published statuses")
	}

	// A new run may start now; the agent's shutdown cancels it.
	if r := e.call("finetune", `{"id":"ft4","data":"sets/yard/data.yaml"}`); !r.OK {
		t.Fatalf("a fine-tune after the cancelled one: %+v", r)
	}
	waitFor(t, 10*time.Second, "ft4 started", func() bool { return len(e.statuses("ft4")) > 0 })
	if err := e.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// The publisher stops sending once shutdown begins, so the final status
	// goes to the QoS 1 outbox (delivered on the next start).
	if b := e.a.finetuneBrief(); b != (FinetuneBrief{State: finetune.StateCancelled, ID: "ft4"}) {
		t.Fatalf("after shutdown the fine-tune is %+v, want ft4 cancelled", b)
	}
	if !outboxHas(t, e.a.Config().Agent.StateDir, `"id":"ft4","state":"cancelled"`, "shutting down") {
		t.Error("the final status of the run cancelled by the shutdown is not in the outbox")
	}
	wholeModel(t, e.model, e.old)
}

// outboxHas reports whether a file under stateDir/mqtt contains every one
// of parts.
func outboxHas(t *testing.T, stateDir string, parts ...string) bool {
	t.Helper()
	found := false
	filepath.WalkDir(filepath.Join(stateDir, "mqtt"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(p)
		all := true
		for _, part := range parts {
			all = all && bytes.Contains(b, []byte(part))
		}
		found = found || all
		return nil
	})
	return found
}

// TestFinetuneRollbackToggles: after a promotion, rollback swaps the
// previous model back (and the promoted one becomes the previous), again
// and again, answering with the model's sha256 while detections go on.
func TestFinetuneRollbackToggles(t *testing.T) {
	fake := &fakeTuner{Epochs: 1, Batches: 2, Delay: 20 * time.Millisecond, Promote: true}
	e := startFinetuneAgent(t, fake.run, "")
	fake.Candidate = e.new
	oldSHA, newSHA := sha(t, e.old), sha(t, e.new)

	if r := e.call("rollback", `{"id":"r0"}`); r.OK || !strings.Contains(r.Error, "no previous model") {
		t.Fatalf("rollback without a previous model: %+v", r)
	}
	if r := e.call("finetune", `{"id":"ft1","data":"sets/yard/data.yaml"}`); !r.OK {
		t.Fatalf("finetune: %+v", r)
	}
	if f := e.final("ft1", 30*time.Second); f.State != finetune.StateDone || !f.Result.Promoted || f.Result.Model != newSHA {
		t.Fatalf("final status %+v", f)
	}
	steps := []struct {
		id             string
		model, prev    []byte
		wantSHA        string
		wantPrevSHA    string
		wantDetections string
	}{
		{"r1", e.old, e.new, oldSHA, newSHA, oldSHA},
		{"r2", e.new, e.old, newSHA, oldSHA, newSHA},
		{"r3", e.old, e.new, oldSHA, newSHA, oldSHA},
	}
	for _, s := range steps {
		r := e.call("rollback", fmt.Sprintf(`{"id":%q}`, s.id))
		if !r.OK || r.Result["model"] != s.wantSHA || r.Result["prev"] != s.wantPrevSHA {
			t.Fatalf("rollback %s: %+v, want model %s", s.id, r, s.wantSHA)
		}
		wholeModel(t, e.model, s.model)
		wholeModel(t, prevPath(e.model), s.prev)
		n := e.detections()
		waitFor(t, 10*time.Second, "detections after "+s.id, func() bool { return e.detections() > n+2 && e.lastDetectionModel() == s.wantDetections })
	}
}

// TestFinetunePauseMode: with mode = "pause" the cameras stop detecting
// while the model trains and resume afterwards.
func TestFinetunePauseMode(t *testing.T) {
	hold := make(chan struct{})
	fake := &fakeTuner{Epochs: 1, Batches: 1, Delay: 10 * time.Millisecond, Hold: hold, Promote: false}
	e := startFinetuneAgent(t, fake.run, "[finetune]\nmode = \"pause\"\nthreads = 1\n")
	fake.Candidate = e.new
	if r := e.call("finetune", `{"id":"ft1","data":"sets/yard/data.yaml"}`); !r.OK {
		t.Fatalf("finetune: %+v", r)
	}
	waitFor(t, 10*time.Second, "training", func() bool {
		ss := e.statuses("ft1")
		return len(ss) > 0 && ss[len(ss)-1].State == finetune.StateTraining
	})
	time.Sleep(time.Second) // a Detect in flight when the pause began may still publish
	n := e.detections()
	time.Sleep(1500 * time.Millisecond)
	if got := e.detections(); got != n {
		t.Errorf("%d detections published while detection was paused", got-n)
	}
	if rc := fake.configs[0]; rc.Threads != 1 {
		t.Errorf("threads = %d, want 1 from [finetune]", rc.Threads)
	}
	close(hold)
	if f := e.final("ft1", 20*time.Second); f.State != finetune.StateDone {
		t.Fatalf("final status %+v", f)
	}
	n = e.detections()
	waitFor(t, 20*time.Second, "detections after the pause", func() bool { return e.detections() > n+2 })
}

// TestFinetuneRunConfig maps command arguments over the [finetune]
// defaults.
func TestFinetuneRunConfig(t *testing.T) {
	cfg := &Config{}
	cfg.Agent.StateDir = "/var/lib/yolo7d"
	cfg.Detector.Model = "/m/best.onnx"
	cfg.Finetune = FinetuneSettings{Epochs: 30, Img: 0, Batch: 8, Freeze: 3, Aux: true, Margin: 0.005,
		Replay: "/r/data.yaml", MaxReplayDrop: 0.02, ReplayMix: 0.25, BN: "batch", Threads: 3, Mode: "share", Seed: 9, Strict: true}
	tests := []struct {
		name  string
		args  publish.FinetuneArgs
		check func(finetune.RunConfig) bool
	}{
		{"defaults", publish.FinetuneArgs{Data: "/d/data.yaml", Freeze: -1}, func(rc finetune.RunConfig) bool {
			return rc.Base == "/m/best.onnx" && rc.Out == "/m/best.candidate-x1.safetensors" && rc.WorkDir == "/var/lib/yolo7d/finetune/x1" &&
				rc.Epochs == 30 && rc.ImgSize == 0 && rc.Batch == 8 && rc.Freeze == 3 && rc.Aux && rc.BN == tiny.BNBatch &&
				rc.Threads == 3 && rc.Seed == 9 && rc.Margin == 0.005 && rc.Replay == "/r/data.yaml" && rc.MaxReplayDrop == 0.02 &&
				rc.ReplayMix == 0.25 && rc.StrictData && rc.Hyp == finetune.DefaultRunConfig().Hyp && rc.Warmup == 0 && rc.NominalBatch == 0
		}},
		{"command wins", publish.FinetuneArgs{Data: "/d/data.yaml", Base: "/s/data/b.onnx", Epochs: 2, Img: 320, Batch: 4, Freeze: 0, AuxSet: true, Resume: true},
			func(rc finetune.RunConfig) bool {
				return rc.Base == "/s/data/b.onnx" && rc.Epochs == 2 && rc.ImgSize == 320 && rc.Batch == 4 && rc.Freeze == 0 && !rc.Aux && rc.Resume
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if rc := finetuneRunConfig(cfg, "x1", tt.args); !tt.check(rc) {
				t.Errorf("finetuneRunConfig = %+v", rc)
			}
		})
	}
}

// TestFinetuneUnavailableWithoutATuner: with no tuner the command is
// refused clearly (a build without the trainer).
func TestFinetuneUnavailableWithoutATuner(t *testing.T) {
	a := &Agent{}
	if a.tunerFor() != nil {
		t.Skip("this build has the default trainer")
	}
	_, err := a.handleFinetune(publish.Command{Name: "finetune", ID: "x", Finetune: publish.FinetuneArgs{Data: "d.yaml"}})
	if err == nil || !strings.Contains(err.Error(), "not available") {
		t.Fatalf("err = %v", err)
	}
	if _, err := a.handleFinetune(publish.Command{Name: "finetune", ID: "x", Finetune: publish.FinetuneArgs{Cancel: true}}); err == nil {
		t.Fatal("cancel with nothing running succeeded")
	}
}

// setAfterStep installs the promotion/rollback step hook of a running agent.
func (e *ftEnv) setAfterStep(f func(int) error) {
	e.a.ft.mu.Lock()
	e.a.ft.afterStep = f
	e.a.ft.mu.Unlock()
}

// TestPromoteAndRollbackStepFailuresKeepFileAndEngineAgreeing stops a
// promotion, then a rollback, after each of their steps inside the running
// agent: the model path always holds a complete model, the engine runs the
// model the file holds, and detections go on.
func TestPromoteAndRollbackStepFailuresKeepFileAndEngineAgreeing(t *testing.T) {
	fake := &fakeTuner{Epochs: 1, Batches: 1, Delay: 10 * time.Millisecond, Promote: true}
	e := startFinetuneAgent(t, fake.run, "")
	fake.Candidate = e.new
	oldSHA, newSHA := sha(t, e.old), sha(t, e.new)
	stopAt := func(n int) func(int) error {
		return func(step int) error {
			if step == n {
				return errStepStop
			}
			return nil
		}
	}
	agree := func(what string) {
		t.Helper()
		got := wholeModel(t, e.model, e.old, e.new)
		want := []string{oldSHA, newSHA}[got]
		if eng := e.a.engine.Info().SHA256; eng != want {
			t.Fatalf("%s: the engine runs %s but the model file is %s", what, eng, want)
		}
		n := e.detections()
		waitFor(t, 10*time.Second, "detections after "+what, func() bool { return e.detections() > n+1 && e.lastDetectionModel() == want })
	}

	for step := promoteStepPrevTemp; step <= promoteStepSyncDir; step++ {
		id := fmt.Sprintf("p%d", step)
		e.setAfterStep(stopAt(step))
		if r := e.call("finetune", fmt.Sprintf(`{"id":%q,"data":"sets/yard/data.yaml"}`, id)); !r.OK {
			t.Fatalf("finetune %s: %+v", id, r)
		}
		f := e.final(id, 30*time.Second)
		if f.State != finetune.StateFailed || !strings.Contains(f.Error, fmt.Sprintf("step %d", step)) || f.Result == nil || f.Result.Promoted {
			t.Fatalf("promotion stopped after step %d: final %s %q", step, f.State, f.Error)
		}
		wholeModel(t, e.model, e.old)
		agree("promotion stopped after step " + fmt.Sprint(step))
	}

	e.setAfterStep(nil)
	if r := e.call("finetune", `{"id":"ok","data":"sets/yard/data.yaml"}`); !r.OK {
		t.Fatalf("finetune: %+v", r)
	}
	if f := e.final("ok", 30*time.Second); f.State != finetune.StateDone || !f.Result.Promoted {
		t.Fatalf("promotion without failures: %+v", f)
	}
	agree("promotion")

	for step := swapStepTemp; step <= swapStepSyncDir; step++ {
		e.setAfterStep(stopAt(step))
		r := e.call("rollback", fmt.Sprintf(`{"id":"r%d"}`, step))
		if r.OK || !strings.Contains(r.Error, fmt.Sprintf("step %d", step)) {
			t.Fatalf("rollback stopped after step %d: %+v", step, r)
		}
		agree(fmt.Sprintf("rollback stopped after step %d", step))
		if _, err := os.Stat(prevPath(e.model)); err != nil {
			t.Fatalf("no .prev after a rollback stopped after step %d: %v", step, err)
		}
	}
}

// TestFinetuneRealTrainerEndToEnd runs the build's real trainer through the
// MQTT command on a small synthetic dataset and a 64-pixel 3-class model:
// progress statuses, a promotion forced by margin = -1 (a random model
// barely improves in two epochs), the native candidate exported to ONNX and
// hot-swapped, detections going on.
func TestFinetuneRealTrainerEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model")
	}
	if (&Agent{}).tunerFor() == nil {
		t.Skip("this build has no trainer")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "m.onnx")
	if err := tiny.WriteRandomONNX(src, tiny.Config{Act: "relu", NC: 3, Seed: 5}, 64); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	e := startAgentOnModel(t, nil, "[finetune]\nmargin = -1.0\nthreads = 1\n", "model.onnx", old, nil)
	data := filepath.Join(e.a.Config().Agent.StateDir, "data", "shapes")
	if err := synth.WriteDataset(data, synth.DatasetOptions{Config: synth.DefaultConfig(64), Train: 8, Val: 4, Seed: 1, Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	r := e.call("finetune", `{"id":"real","data":"shapes/data.yaml","epochs":2,"img":64,"batch":4}`)
	if !r.OK {
		t.Fatalf("finetune: %+v", r)
	}
	n := e.detections()
	f := e.final("real", 3*time.Minute)
	if f.State != finetune.StateDone || f.Result == nil || !f.Result.Promote || !f.Result.Promoted || f.Error != "" {
		t.Fatalf("final status %+v (result %+v)", f, f.Result)
	}
	var sawTraining bool
	for _, s := range e.statuses("real") {
		sawTraining = sawTraining || s.State == finetune.StateTraining && s.Epochs == 2 && s.Loss.Total > 0
	}
	if !sawTraining {
		t.Error("no training status with a loss")
	}
	if e.detections() <= n {
		t.Error("no detections while the real trainer ran")
	}
	if native, err := tiny.IsSafetensorsFile(e.model); err != nil || native {
		t.Fatalf("the promoted .onnx model is not ONNX (native %v, %v)", native, err)
	}
	wholeModel(t, prevPath(e.model), old)
	if got := e.a.engine.Info().SHA256; got != f.Result.Model {
		t.Errorf("engine runs %s, the status says %s", got, f.Result.Model)
	}
	n = e.detections()
	waitFor(t, 20*time.Second, "detections on the fine-tuned model", func() bool {
		return e.detections() > n+1 && e.lastDetectionModel() == f.Result.Model
	})
}
