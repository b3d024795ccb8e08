package finetune

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/yolo7d/yolo7d/tiny"
)

// A training checkpoint is a safetensors file: the training-form state
// ("model/<name>": parameters and BatchNorm statistics), the EMA
// ("ema/<name>"), the SGD momentum buffers ("opt/<index>") and, in the
// metadata, where the run stands and what it was started with (a resume
// with a different base, dataset or size is refused).

const checkpointFormat = "yolo7d-checkpoint/1"

// checkpointMeta is the JSON metadata of a checkpoint.
type checkpointMeta struct {
	Format     string `json:"format"`
	Epoch      int    `json:"epoch"` // epochs completed
	Iteration  int    `json:"iteration"`
	EMAUpdates int    `json:"ema_updates"`
	BaseSHA256 string `json:"base_sha256"`
	Data       string `json:"data"`
	Size       int    `json:"img"`
	Batch      int    `json:"batch"`
	Epochs     int    `json:"epochs"`
}

// saveCheckpoint writes the trainer's state after epoch epochs
// atomically to path.
func (t *Trainer) saveCheckpoint(path string, cfg RunConfig, epoch int) error {
	sum, err := tiny.FileSHA256(cfg.Base)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	m := checkpointMeta{Format: checkpointFormat, Epoch: epoch, Iteration: t.ni, EMAUpdates: t.ema.Updates,
		BaseSHA256: sum, Data: cfg.Data, Size: t.cfg.Size, Batch: t.cfg.Batch, Epochs: cfg.Epochs}
	js, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var ts []tiny.STensor
	for _, e := range t.model.State() {
		ts = append(ts, tiny.STensor{Name: "model/" + e.Name, Shape: []int{len(e.Data)}, Data: e.Data})
	}
	for _, e := range t.ema.Shadow {
		ts = append(ts, tiny.STensor{Name: "ema/" + e.Name, Shape: []int{len(e.Data)}, Data: e.Data})
	}
	for i, b := range t.opt.State() {
		if b != nil {
			ts = append(ts, tiny.STensor{Name: "opt/" + strconv.Itoa(i), Shape: []int{len(b)}, Data: b})
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	err = tiny.WriteFileAtomic(path, func(w io.Writer) error {
		return tiny.WriteSafetensors(w, ts, map[string]string{"checkpoint": string(js)})
	})
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", path, err)
	}
	return nil
}

// loadCheckpoint restores the trainer from path and returns the number of
// epochs it had completed.
func (t *Trainer) loadCheckpoint(path string, cfg RunConfig) (int, error) {
	if _, err := os.Stat(path); err != nil {
		return 0, fmt.Errorf("no checkpoint to resume: %w", err)
	}
	st, err := tiny.ReadSafetensorsFile(path)
	if err != nil {
		return 0, err
	}
	var m checkpointMeta
	if err := json.Unmarshal([]byte(st.Metadata["checkpoint"]), &m); err != nil || m.Format != checkpointFormat {
		return 0, fmt.Errorf("%s is not a yolo7d training checkpoint", path)
	}
	sum, err := tiny.FileSHA256(cfg.Base)
	if err != nil {
		return 0, err
	}
	switch {
	case m.BaseSHA256 != sum:
		return 0, fmt.Errorf("%s was made from another base model than %s", path, cfg.Base)
	case m.Data != cfg.Data || m.Size != t.cfg.Size || m.Batch != t.cfg.Batch || m.Epochs != cfg.Epochs:
		return 0, fmt.Errorf("%s was made with data %s, img %d, batch %d, %d epochs; this run has %s, %d, %d, %d",
			path, m.Data, m.Size, m.Batch, m.Epochs, cfg.Data, t.cfg.Size, t.cfg.Batch, cfg.Epochs)
	case m.Epoch < 0 || m.Epoch > cfg.Epochs || m.Iteration < 0:
		return 0, fmt.Errorf("%s: epoch %d, iteration %d out of range", path, m.Epoch, m.Iteration)
	}
	get := func(name string, n int) ([]float32, error) {
		e, ok := st.Tensor(name)
		if !ok {
			return nil, fmt.Errorf("%s: tensor %s missing", path, name)
		}
		if len(e.Data) != n {
			return nil, fmt.Errorf("%s: tensor %s has %d values, want %d", path, name, len(e.Data), n)
		}
		return e.Data, nil
	}
	model := t.model.State()
	vals := make([][]float32, 0, 2*len(model))
	for _, e := range model {
		v, err := get("model/"+e.Name, len(e.Data))
		if err != nil {
			return 0, err
		}
		vals = append(vals, v)
	}
	for _, e := range t.ema.Shadow {
		v, err := get("ema/"+e.Name, len(e.Data))
		if err != nil {
			return 0, err
		}
		vals = append(vals, v)
	}
	params := t.opt.Params()
	bufs := make([][]float32, len(params))
	for i, p := range params {
		if e, ok := st.Tensor("opt/" + strconv.Itoa(i)); ok {
			if len(e.Data) != len(p.Value) {
				return 0, fmt.Errorf("%s: momentum %d has %d values, want %d", path, i, len(e.Data), len(p.Value))
			}
			bufs[i] = e.Data
		}
	}
	if err := t.opt.LoadState(bufs); err != nil {
		return 0, err
	}
	for i, e := range model {
		copy(e.Data, vals[i])
	}
	for i, e := range t.ema.Shadow {
		copy(e.Data, vals[len(model)+i])
	}
	t.ema.Updates, t.ni, t.epoch = m.EMAUpdates, m.Iteration, m.Epoch
	return m.Epoch, nil
}
