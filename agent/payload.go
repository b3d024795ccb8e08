package agent

import (
	"github.com/yolo7d/yolo7d/capture"
	"github.com/yolo7d/yolo7d/infer"
	"github.com/yolo7d/yolo7d/publish"
)

// detectionsPayload converts one frame's result to the MQTT contract.
func detectionsPayload(device, camera string, f capture.Frame, res infer.Result, model infer.ModelInfo) *publish.DetectionsPayload {
	p := &publish.DetectionsPayload{
		Device:     device,
		Camera:     camera,
		Frame:      f.Seq,
		Width:      res.Width,
		Height:     res.Height,
		Model:      model.SHA256,
		InferMS:    res.InferMS,
		Detections: make([]publish.Detection, 0, len(res.Detections)),
	}
	w, h := float32(max(res.Width, 1)), float32(max(res.Height, 1))
	for _, d := range res.Detections {
		b := d.Box
		p.Detections = append(p.Detections, publish.Detection{
			Class:   d.Class,
			ClassID: d.ClassID,
			Score:   d.Score,
			Box:     publish.Box{X1: b.X1, Y1: b.Y1, X2: b.X2, Y2: b.Y2},
			BoxNorm: [4]float32{(b.X1 + b.X2) / 2 / w, (b.Y1 + b.Y2) / 2 / h, (b.X2 - b.X1) / w, (b.Y2 - b.Y1) / h},
		})
	}
	return p
}

// FinetuneStatusPayload is published, retained, at QoS 1 on
// <prefix>/finetune/status: when a fine-tune starts, on every state change,
// at most about once a second while it trains, and when it ends (State
// "done", "failed" or "cancelled"; Result is set when the trainer finished).
type FinetuneStatusPayload struct {
	publish.Header
	Device      string          `json:"device"`
	ID          string          `json:"id"`    // the finetune command's id
	State       string          `json:"state"` // started, loading, training, evaluating, promoting, done, failed, cancelled
	Epoch       int             `json:"epoch"` // 1-based, the epoch in progress or just finished
	Epochs      int             `json:"epochs"`
	Batch       int             `json:"batch"` // 1-based inside the epoch
	Batches     int             `json:"batches"`
	Loss        FinetuneLoss    `json:"loss"`
	ETAS        float64         `json:"eta_s"` // estimated seconds left
	ValMAP50    float64         `json:"val_map50"`
	ValMAP50_95 float64         `json:"val_map50_95"`
	Result      *FinetuneResult `json:"result,omitempty"`
	Error       string          `json:"error,omitempty"`
}

// FinetuneLoss are the training loss terms of the last batch.
type FinetuneLoss struct {
	Box   float64 `json:"box"`
	Obj   float64 `json:"obj"`
	Cls   float64 `json:"cls"`
	Total float64 `json:"total"`
}

// FinetuneResult is the outcome of a finished run: both models' scores on
// the val split, the gate's decision and whether the candidate was
// installed.
type FinetuneResult struct {
	Base        FinetuneMetrics  `json:"base"`
	Tuned       FinetuneMetrics  `json:"tuned"`
	ReplayBase  *FinetuneMetrics `json:"replay_base,omitempty"`
	ReplayTuned *FinetuneMetrics `json:"replay_tuned,omitempty"`
	Promote     bool             `json:"promote"`         // the candidate passed the gate
	Promoted    bool             `json:"promoted"`        // and is now the running model
	Model       string           `json:"model,omitempty"` // sha256 of the model now running, when promoted
	Reason      string           `json:"reason"`
	Candidate   string           `json:"candidate"` // the candidate file (kept when not promoted)
	Epochs      int              `json:"epochs"`
	EpochS      float64          `json:"epoch_s"` // mean seconds per epoch
	// DataIssues are the skipped dataset problems ("file:line: what"; the
	// first 20), DataIssueCount all of them.
	DataIssues     []string `json:"data_issues,omitempty"`
	DataIssueCount int      `json:"data_issue_count"`
}

// FinetuneMetrics are a model's scores on a split.
type FinetuneMetrics struct {
	P        float64                `json:"p"`
	R        float64                `json:"r"`
	MAP50    float64                `json:"map50"`
	MAP50_95 float64                `json:"map50_95"`
	PerClass []FinetuneClassMetrics `json:"per_class,omitempty"`
}

// FinetuneClassMetrics are the scores of one class.
type FinetuneClassMetrics struct {
	Class    int     `json:"class"`
	Targets  int     `json:"targets"`
	P        float64 `json:"p"`
	R        float64 `json:"r"`
	MAP50    float64 `json:"map50"`
	MAP50_95 float64 `json:"map50_95"`
}

// FinetuneBrief is the "finetune" field of the stats: the state and id of
// the current or last fine-tune ("idle" and no id when none ran).
type FinetuneBrief struct {
	State string `json:"state"`
	ID    string `json:"id,omitempty"`
}

// statsMessage is the stats payload with the agent's additions.
type statsMessage struct {
	*publish.StatsPayload
	Finetune FinetuneBrief `json:"finetune"`
}
