package finetune

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/yolo7d/yolo7d/tiny"
)

// TrainConfig is one training run's settings (what train.py takes as
// options and hyp).
type TrainConfig struct {
	Hyp   Hyp
	Batch int // images per batch
	Size  int // square input side in pixels, a multiple of 32
	// Epochs and BatchesPerEpoch size the LR schedule and the warm-up.
	Epochs, BatchesPerEpoch int
	BN                      tiny.BNMode // BatchNorm statistics (frozen by default)
	Aux                     bool        // coarse-to-fine aux head (ComputeLossAuxOTA) or lead only (ComputeLossOTA)
	// WarmupIters overrides the official warm-up length
	// max(round(warmup_epochs·nb), 1000) when > 0.
	WarmupIters int
	LinearLR    bool // linear LR decay instead of one-cycle
	// NominalBatch is the images per optimiser step (gradient
	// accumulation); 0: train.py's 64.
	NominalBatch   int
	LabelSmoothing float64 // ε of the class targets
	FixedWH        bool    // corrected non-square OTA cost
	// Freeze keeps the parameters and the BatchNorm statistics of layers
	// 0..Freeze-1 unchanged (the official --freeze keeps only the
	// parameters: its BatchNorms still update their statistics in train
	// mode); 0 trains everything.
	Freeze int
	// ZeroGrad discards every gradient before the optimiser step: a
	// control for tests that must fail without learning.
	ZeroGrad bool
}

// Trainer runs training steps of a TrainModel in place: forward in
// training mode, the official loss and its gradient, backward, SGD with
// the official warm-up, schedule and gradient accumulation, and the EMA
// of the weights.
type Trainer struct {
	cfg    TrainConfig
	model  *tiny.TrainModel
	plan   *tiny.TrainPlan
	loss   *Loss
	opt    *SGD
	sched  Schedule
	ema    *EMA
	params []tiny.Param
	ni     int // global batch index
	epoch  int
	lead   []Level
	aux    []Level
}

// NewTrainer prepares training of tm on dev.
func NewTrainer(tm *tiny.TrainModel, dev tiny.TrainDevice, cfg TrainConfig) (*Trainer, error) {
	if cfg.Batch <= 0 || cfg.Size <= 0 || cfg.Size%32 != 0 {
		return nil, fmt.Errorf("trainer: batch %d and size %d (want batch > 0, size a positive multiple of 32)", cfg.Batch, cfg.Size)
	}
	if cfg.Epochs <= 0 || cfg.BatchesPerEpoch <= 0 {
		return nil, fmt.Errorf("trainer: %d epochs of %d batches", cfg.Epochs, cfg.BatchesPerEpoch)
	}
	plan, err := tiny.NewTrainPlan(tm, dev, tiny.TrainOptions{Batch: cfg.Batch, Height: cfg.Size, Width: cfg.Size, BN: cfg.BN, Aux: cfg.Aux,
		FrozenLayers: cfg.Freeze})
	if err != nil {
		return nil, fmt.Errorf("trainer: %w", err)
	}
	gains, err := cfg.Hyp.Gains(tm.NC, len(tm.Spec.Strides), cfg.Size)
	if err != nil {
		return nil, fmt.Errorf("trainer: %w", err)
	}
	loss, err := NewLoss(LossConfig{NC: tm.NC, Anchors: tm.Spec.Anchors, Strides: tm.Spec.Strides, Gains: gains,
		LabelSmoothing: cfg.LabelSmoothing, AnchorT: cfg.Hyp.AnchorT, Aux: cfg.Aux, FixedWH: cfg.FixedWH})
	if err != nil {
		return nil, fmt.Errorf("trainer: %w", err)
	}
	sched := Schedule{Hyp: cfg.Hyp, Epochs: cfg.Epochs, BatchesPerEpoch: cfg.BatchesPerEpoch, BatchSize: cfg.Batch,
		LinearLR: cfg.LinearLR, WarmupIters: cfg.WarmupIters, NominalBatch: cfg.NominalBatch}
	if err := sched.Validate(); err != nil {
		return nil, fmt.Errorf("trainer: %w", err)
	}
	t := &Trainer{cfg: cfg, model: tm, plan: plan, loss: loss, sched: sched, params: plan.Params()}
	trainable := make([]tiny.Param, 0, len(t.params))
	for _, p := range t.params {
		if l, ok := paramLayer(p.Name); ok && l < cfg.Freeze {
			continue
		}
		trainable = append(trainable, p)
	}
	if len(trainable) == 0 {
		return nil, fmt.Errorf("trainer: freeze %d leaves nothing to train", cfg.Freeze)
	}
	t.opt = NewSGD(trainable, sched.WeightDecay())
	t.ema = NewEMA(tm.State(), 0)
	return t, nil
}

// Input is the batch's image buffer, Batch x 3 x Size x Size RGB in
// [0, 1]: fill it before Step.
func (t *Trainer) Input() []float32 { return t.plan.Input() }

// Step trains on the batch in Input with its targets (Image = index in
// the batch): forward, loss, backward and, every accumulate batches, an
// optimiser step and an EMA update. It returns the loss items.
func (t *Trainer) Step(targets []Target) (LossItems, error) {
	st := t.sched.At(t.ni, t.epoch)
	st.Apply(t.opt)
	out, err := t.plan.Forward()
	if err != nil {
		return LossItems{}, fmt.Errorf("train step %d: %w", t.ni, err)
	}
	gl, ga := t.plan.GradOutputs()
	t.lead = t.levels(t.lead, out.Lead)
	t.aux = t.levels(t.aux, out.Aux)
	if !t.cfg.Aux {
		ga = nil
	}
	items, _, err := t.loss.Compute(t.lead, t.aux, t.cfg.Batch, t.cfg.Size, t.cfg.Size, targets, gl, ga)
	if err != nil {
		return LossItems{}, fmt.Errorf("train step %d: %w", t.ni, err)
	}
	if math.IsNaN(items.Total) || math.IsInf(items.Total, 0) {
		return items, fmt.Errorf("train step %d: loss is %v", t.ni, items.Total)
	}
	if err := t.plan.Backward(); err != nil {
		return LossItems{}, fmt.Errorf("train step %d: %w", t.ni, err)
	}
	if st.OptimizerStep(t.ni) {
		if t.cfg.ZeroGrad {
			t.plan.ZeroGrad()
		}
		if err := t.opt.Step(); err != nil {
			return LossItems{}, fmt.Errorf("train step %d: %w", t.ni, err)
		}
		t.plan.ZeroGrad()
		if err := t.ema.Update(t.model.State()); err != nil {
			return LossItems{}, fmt.Errorf("train step %d: %w", t.ni, err)
		}
	}
	t.ni++
	return items, nil
}

// paramLayer returns the layer index of an official parameter name
// ("model.<layer>.…").
func paramLayer(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "model.")
	if !ok {
		return 0, false
	}
	i := strings.IndexByte(rest, '.')
	if i < 0 {
		return 0, false
	}
	l, err := strconv.Atoi(rest[:i])
	return l, err == nil
}

// levels wraps the plan's head outputs as loss levels.
func (t *Trainer) levels(dst []Level, outs [][]float32) []Level {
	dst = dst[:0]
	for i, o := range outs {
		s := t.cfg.Size / t.model.Spec.Strides[i]
		dst = append(dst, Level{Data: o, NY: s, NX: s})
	}
	return dst
}

// NextEpoch advances the LR schedule by one epoch.
func (t *Trainer) NextEpoch() { t.epoch++ }

// Epoch is the current epoch (0-based); Iteration the global batch index.
func (t *Trainer) Epoch() int     { return t.epoch }
func (t *Trainer) Iteration() int { return t.ni }

// EMAModel returns a copy of the model holding the EMA weights (what
// training keeps).
func (t *Trainer) EMAModel() (*tiny.TrainModel, error) {
	m := t.model.Clone()
	st := m.State()
	if len(st) != len(t.ema.Shadow) {
		return nil, errors.New("ema: state does not match the model")
	}
	for i := range st {
		copy(st[i].Data, t.ema.Shadow[i].Data)
	}
	return m, nil
}

// CalibrateAuxBN sets the running statistics of the aux head's
// BatchNorms to the mean and variance of their inputs over the batches
// (each Batch x 3 x Size x Size, as Input) and restarts the EMA from the
// result. The aux head of a fine-tune is freshly initialised; with frozen
// BatchNorm its identity statistics would leave its outputs at whatever
// scale the backbone's features have, and its loss, a quarter of the
// total, would push large gradients into the backbone. The lead head and
// the backbone are not changed. Without the aux head, or with BatchNorm
// on batch statistics (which normalise the aux head by themselves), it
// does nothing.
func (t *Trainer) CalibrateAuxBN(batches [][]float32) error {
	if !t.cfg.Aux || t.cfg.BN != tiny.BNFrozen || len(batches) == 0 {
		return nil
	}
	levels := len(t.model.AuxConvs)
	sum, sq := make([][]float64, levels), make([][]float64, levels)
	count := make([]float64, levels)
	for k := range levels {
		sum[k] = make([]float64, t.model.AuxConvs[k].Out)
		sq[k] = make([]float64, t.model.AuxConvs[k].Out)
	}
	for i, b := range batches {
		if len(b) != len(t.plan.Input()) {
			return fmt.Errorf("calibrate aux BatchNorm: batch %d has %d values, want %d", i, len(b), len(t.plan.Input()))
		}
		copy(t.plan.Input(), b)
		if _, err := t.plan.Forward(); err != nil {
			return fmt.Errorf("calibrate aux BatchNorm: %w", err)
		}
		for k := range levels {
			x, err := t.plan.AuxPreBN(k)
			if err != nil {
				return fmt.Errorf("calibrate aux BatchNorm: %w", err)
			}
			plane := x.H * x.W
			for n := 0; n < x.N; n++ {
				img := x.Image(n)
				for c := 0; c < x.C; c++ {
					var s, s2 float64
					for _, v := range img[c*plane : (c+1)*plane] {
						s += float64(v)
						s2 += float64(v) * float64(v)
					}
					sum[k][c] += s
					sq[k][c] += s2
				}
			}
			count[k] += float64(x.N * plane)
		}
	}
	for k := range levels {
		bn := &t.model.AuxConvs[k].BN
		for c := range bn.Mean {
			m := sum[k][c] / count[k]
			bn.Mean[c] = float32(m)
			bn.Var[c] = float32(max(sq[k][c]/count[k]-m*m, 0))
		}
	}
	t.ema = NewEMA(t.model.State(), 0)
	return nil
}
