package finetune

import (
	"context"
	"time"

	"github.com/yolo7d/yolo7d/tiny"
)

// RunConfig describes one fine-tune run: the product-level job behind
// `yolo7d finetune` and the <prefix>/cmd/finetune command.
type RunConfig struct {
	Data    string // the dataset's data.yaml
	Base    string // the deploy model (.safetensors) to start from
	Out     string // where the candidate deploy model is written (temp, fsync, rename)
	WorkDir string // checkpoints of this run (one per epoch), for Resume
	Resume  bool   // continue the interrupted run found in WorkDir

	Epochs  int // 0: DefaultEpochs
	ImgSize int // training and validation input side; 0: the base model's
	Batch   int // 0: DefaultBatch
	Freeze  int // the first Freeze layers keep their weights (0: none)
	Aux     bool
	Hyp     Hyp
	BN      tiny.BNMode
	Seed    uint64
	Threads int // CPU threads (0: all)
	// Device, when set, runs the training steps (a GPU device of
	// infer/cudnn); the caller owns it. Nil: the CPU with Threads.
	// Evaluation always runs on the CPU.
	Device tiny.TrainDevice `json:"-"`
	// Warmup is the warm-up length in batches: 0 sizes it to the run (the
	// official 3 epochs, but at most a tenth of the run); -1 is the
	// official max(3 epochs, 1000 batches).
	Warmup int
	// NominalBatch is the images per optimiser step (gradient
	// accumulation over batches); 0: the official 64.
	NominalBatch int

	// Margin is how much better (mAP@0.5:0.95 on the val split) the
	// candidate must score than the base model to be promoted.
	Margin float64
	// Replay is an optional data.yaml of the base model's domain whose val
	// split is evaluated too, to catch forgetting; empty: none.
	Replay string
	// MaxReplayDrop is the largest drop of replay mAP@0.5 tolerated for
	// promotion (used when Replay is set).
	MaxReplayDrop float64
	// ReplayMix is the fraction, in [0, 0.9), of the training images that
	// come from the replay dataset's train split (rehearsal: the old
	// domain keeps its place in the weights and the BatchNorm
	// statistics); 0: none. It needs Replay.
	ReplayMix float64
	// StrictData makes any bad label line or image of the dataset fatal
	// (the error lists them with file and line); otherwise they are
	// skipped and listed in Result.DataIssues.
	StrictData bool
}

// DefaultRunConfig returns the settings a fine-tune uses unless told
// otherwise, chosen for small on-device datasets (see the closing notes of
// BenchmarkGoldenFinetune): frozen BatchNorm statistics, the
// coarse-to-fine aux head, a warm-up sized to the run.
func DefaultRunConfig() RunConfig {
	return RunConfig{Epochs: DefaultEpochs, Batch: DefaultBatch, Aux: true, BN: tiny.BNFrozen, Hyp: FinetuneHyp(),
		Margin: 0.005, MaxReplayDrop: 0.02}
}

// Defaults of a fine-tune run.
const (
	DefaultEpochs = 30
	DefaultBatch  = 8
)

// Run states reported in Progress.State.
const (
	StateLoading    = "loading"
	StateTraining   = "training"
	StateEvaluating = "evaluating"
	StateDone       = "done"
	StateFailed     = "failed"
	StateCancelled  = "cancelled"
)

// Progress is a snapshot of a running fine-tune, reported after every
// batch (training) and every evaluation.
type Progress struct {
	State         string        `json:"state"`
	Epoch         int           `json:"epoch"` // 1-based, the epoch in progress or just finished
	Epochs        int           `json:"epochs"`
	Batch         int           `json:"batch"` // 1-based inside the epoch
	Batches       int           `json:"batches"`
	Loss          LossItems     `json:"loss"`
	ETA           time.Duration `json:"eta_ns"`
	ValMAP50      float64       `json:"val_map50"`
	ValMAP50_95   float64       `json:"val_map50_95"`
	EpochDuration time.Duration `json:"epoch_ns"`
	// Validated marks the report made after an epoch's validation (the
	// ValMAP fields are that epoch's).
	Validated bool `json:"validated"`
}

// Result is the outcome of a finished run.
type Result struct {
	Candidate     string        `json:"candidate"` // path of the candidate deploy model (RunConfig.Out)
	Base          Metrics       `json:"base"`      // the base model on the val split
	Tuned         Metrics       `json:"tuned"`     // the candidate on the same split
	ReplayBase    *Metrics      `json:"replay_base,omitempty"`
	ReplayTuned   *Metrics      `json:"replay_tuned,omitempty"`
	Promote       bool          `json:"promote"` // the candidate passed the gate
	Reason        string        `json:"reason"`  // why it passed or not
	Epochs        int           `json:"epochs"`
	EpochDuration time.Duration `json:"epoch_ns"` // mean wall time per epoch
	// DataIssues are the dataset problems that were skipped ("file:line:
	// what"), at most MaxReportedIssues of them; DataIssueCount counts all.
	DataIssues     []string `json:"data_issues,omitempty"`
	DataIssueCount int      `json:"data_issue_count"`
}

// MaxReportedIssues bounds Result.DataIssues.
const MaxReportedIssues = 20

// Tuner is the signature of Run, for callers (the agent) that take the
// job as a dependency so tests can substitute it.
type Tuner func(ctx context.Context, cfg RunConfig, progress func(Progress)) (*Result, error)
