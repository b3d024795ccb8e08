package finetune

import (
	"fmt"
	"math"
	"math/big"

	"github.com/yolo7d/yolo7d/tiny"
)

// NominalBatchSize is train.py's nbs: gradients are accumulated until about
// 64 images have contributed, and the weight decay is scaled to it.
const NominalBatchSize = 64

// MinWarmupIters is train.py's minimum warm-up length in batches:
// nw = max(round(warmup_epochs·nb), 1000).
const MinWarmupIters = 1000

// Schedule is train.py's learning-rate, momentum and gradient-accumulation
// schedule for the three SGD parameter groups (tiny.ParamGroup order).
//
// WarmupIters chooses the warm-up length nw in batches:
//   - 0: the official max(round(Hyp.WarmupEpochs·BatchesPerEpoch), 1000).
//     Because of the 1000-batch minimum, a small fine-tune (say 20 epochs
//     of 10 batches) spends its whole run warming up: the learning rates
//     never reach lr0·lf(epoch) and the accumulation never reaches its
//     nominal value.
//   - > 0: exactly that many batches. This lets the caller size the
//     warm-up to the run, e.g. round(WarmupEpochs·BatchesPerEpoch) without
//     the minimum; the warm-up formulas are otherwise the official ones.
//   - < 0: no warm-up at all (the post-warm-up values from batch 0).
type Schedule struct {
	Hyp             Hyp
	Epochs          int  // total epochs (the one-cycle period)
	BatchesPerEpoch int  // nb, batches per epoch
	BatchSize       int  // total batch size (images per batch)
	LinearLR        bool // --linear-lr instead of the one-cycle cosine
	WarmupIters     int  // 0: official; > 0: that many batches; < 0: none
	// NominalBatch is the images per optimiser step that gradient
	// accumulation aims at (train.py's nbs); 0: NominalBatchSize (64).
	NominalBatch int
}

// nbs is the nominal batch size of the schedule.
func (s Schedule) nbs() int {
	if s.NominalBatch > 0 {
		return s.NominalBatch
	}
	return NominalBatchSize
}

// StepSettings are the optimiser settings of one batch.
type StepSettings struct {
	// LR is the learning rate of each group, indexed by tiny.ParamGroup.
	LR [numParamGroups]float64
	// Momentum is the SGD momentum of every group.
	Momentum float64
	// Accumulate is the number of batches whose gradients are summed per
	// optimiser step.
	Accumulate int
	// Warmup tells whether the batch is inside the warm-up (ni <= nw).
	Warmup bool
}

// OptimizerStep reports whether train.py steps the optimiser (and updates
// the EMA) after global batch ni: ni % Accumulate == 0.
func (st StepSettings) OptimizerStep(ni int) bool {
	return st.Accumulate <= 1 || ni%st.Accumulate == 0
}

// Validate checks that the schedule can be evaluated.
func (s Schedule) Validate() error {
	switch {
	case s.Epochs < 1:
		return fmt.Errorf("schedule: epochs must be at least 1, got %d", s.Epochs)
	case s.LinearLR && s.Epochs < 2:
		return fmt.Errorf("schedule: the linear lr schedule needs at least 2 epochs, got %d", s.Epochs)
	case s.BatchesPerEpoch < 1:
		return fmt.Errorf("schedule: batches per epoch must be at least 1, got %d", s.BatchesPerEpoch)
	case s.BatchSize < 1:
		return fmt.Errorf("schedule: batch size must be at least 1, got %d", s.BatchSize)
	}
	return nil
}

// LF is the LambdaLR factor of an epoch: one-cycle
// ((1 − cos(π·epoch/epochs))/2)·(lrf − 1) + 1, going from 1 to lrf, or with
// LinearLR (1 − epoch/(epochs − 1))·(1 − lrf) + lrf. The learning rate of
// every group after the warm-up is Hyp.LR0·LF(epoch).
func (s Schedule) LF(epoch int) float64 {
	x, lrf := float64(epoch), s.Hyp.LRF
	if s.LinearLR {
		return (1-x/float64(s.Epochs-1))*(1.0-lrf) + lrf
	}
	return ((1-cosRN(x*math.Pi/float64(s.Epochs)))/2)*(lrf-1) + 1
}

// cosRN returns cos(a) rounded to the nearest float64 for |a| <= 16 (the
// one-cycle argument is at most π within the run), matching glibc's cos,
// which Python uses; Go's math.Cos is one ulp off for about a tenth of the
// one-cycle points. It sums the Taylor series in 320-bit arithmetic (the
// largest term, 16^16/16!, costs fewer than 24 bits). Larger arguments fall
// back to math.Cos.
func cosRN(a float64) float64 {
	if !(math.Abs(a) <= 16) {
		return math.Cos(a)
	}
	const prec = 320
	x2 := new(big.Float).SetPrec(prec).SetFloat64(a)
	x2.Mul(x2, x2)
	sum := new(big.Float).SetPrec(prec).SetInt64(1)
	term := new(big.Float).SetPrec(prec).SetInt64(1)
	k := new(big.Float).SetPrec(prec)
	for i := int64(1); i <= 400; i++ {
		term.Mul(term, x2)
		term.Quo(term, k.SetInt64((2*i-1)*(2*i)))
		term.Neg(term)
		sum.Add(sum, term)
		if term.Sign() == 0 || (i > 16 && term.MantExp(nil) < -prec) {
			break
		}
	}
	f, _ := sum.Float64()
	return f
}

// WarmupLength returns the warm-up length nw in batches (see WarmupIters);
// 0 when the warm-up is disabled.
func (s Schedule) WarmupLength() int {
	switch {
	case s.WarmupIters > 0:
		return s.WarmupIters
	case s.WarmupIters < 0:
		return 0
	}
	return max(int(math.RoundToEven(s.Hyp.WarmupEpochs*float64(s.BatchesPerEpoch))), MinWarmupIters)
}

// BaseAccumulate is the accumulation after the warm-up:
// max(round(64/BatchSize), 1), rounding half to even as Python does.
func (s Schedule) BaseAccumulate() int {
	if s.BatchSize < 1 {
		return 1
	}
	return max(int(math.RoundToEven(float64(s.nbs())/float64(s.BatchSize))), 1)
}

// WeightDecay is the decay to give NewSGD, scaled as train.py does:
// weight_decay·BatchSize·BaseAccumulate/64.
func (s Schedule) WeightDecay() float64 {
	return s.Hyp.WeightDecay * (float64(s.BatchSize*s.BaseAccumulate()) / float64(s.nbs()))
}

// At returns the settings for global batch ni (= i + BatchesPerEpoch·epoch)
// of epoch epoch. During the warm-up (ni <= nw) train.py interpolates
// linearly (np.interp over [0, nw], clamped):
//   - accumulate: max(1, round(npInterp(ni, [1, 64/BatchSize])));
//   - lr of group j: npInterp(ni, [j == bias ? warmup_bias_lr : 0, lr0·lf(epoch)]);
//   - momentum: npInterp(ni, [warmup_momentum, momentum]).
//
// After it every lr is lr0·lf(epoch), the momentum Hyp.Momentum and the
// accumulation BaseAccumulate (the values the warm-up ends on). Call
// Validate first; an invalid schedule gives meaningless values.
func (s Schedule) At(ni, epoch int) StepSettings {
	base := s.Hyp.LR0 * s.LF(epoch)
	nw := s.WarmupLength()
	if nw <= 0 || ni > nw {
		st := StepSettings{Momentum: s.Hyp.Momentum, Accumulate: s.BaseAccumulate()}
		for j := range st.LR {
			st.LR[j] = base
		}
		return st
	}
	x := float64(ni)
	xi := []float64{0, float64(nw)}
	lerp := func(a, b float64) float64 { return npInterp(x, xi, []float64{a, b}, a, b) }
	st := StepSettings{Warmup: true}
	acc := math.RoundToEven(lerp(1, float64(s.nbs())/float64(max(s.BatchSize, 1))))
	st.Accumulate = max(1, int(acc))
	for j := range st.LR {
		start := 0.0
		if tiny.ParamGroup(j) == tiny.GroupBias {
			start = s.Hyp.WarmupBiasLR
		}
		st.LR[j] = lerp(start, base)
	}
	st.Momentum = lerp(s.Hyp.WarmupMomentum, s.Hyp.Momentum)
	return st
}

// Apply sets the optimiser's groups to the settings (each group's lr and
// the common momentum).
func (st StepSettings) Apply(o *SGD) {
	for j, lr := range st.LR {
		o.SetGroup(tiny.ParamGroup(j), lr, st.Momentum)
	}
}
