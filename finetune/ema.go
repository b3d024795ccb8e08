package finetune

import (
	"fmt"
	"math"
	"math/big"

	"github.com/yolo7d/yolo7d/tiny"
)

// EMADecayMax is ModelEMA's decay (0.9999), the limit of EMADecay.
const EMADecayMax = 0.9999

// EMADecayRamp is ModelEMA's ramp length in updates (2000).
const EMADecayRamp = 2000

// EMADecay is the official ModelEMA decay after `updates` updates:
// 0.9999·(1 − exp(−updates/2000)), in float64 as Python computes it. The
// exponential is correctly rounded (like glibc's exp, which Python uses,
// in all but extremely rare cases); Go's math.Exp is off by one ulp for
// some counts, e.g. 2003.
func EMADecay(updates int) float64 {
	return EMADecayMax * (1 - expRN(-float64(updates)/EMADecayRamp))
}

// expRN returns exp(x) rounded to the nearest float64. It evaluates the
// Taylor series of exp(x/2^m) with |x/2^m| <= 2^-10 in 192-bit arithmetic
// and squares the result m times (m <= 20 for finite results, so fewer than
// 30 of the 192 bits are lost).
func expRN(x float64) float64 {
	switch {
	case x != x:
		return x
	case x == 0:
		return 1
	case x < -746:
		return 0
	case x > 710:
		return math.Inf(1)
	}
	const prec = 192
	m := 0
	for a := math.Abs(x); a > 1.0/1024; a /= 2 {
		m++
	}
	y := new(big.Float).SetPrec(prec).SetFloat64(x)
	y.SetMantExp(y, -m) // x/2^m, exact
	sum := new(big.Float).SetPrec(prec).SetInt64(1)
	term := new(big.Float).SetPrec(prec).SetInt64(1)
	k := new(big.Float).SetPrec(prec)
	for i := int64(1); i <= 40; i++ {
		term.Mul(term, y)
		term.Quo(term, k.SetInt64(i))
		sum.Add(sum, term)
		if term.Sign() == 0 || term.MantExp(nil)-sum.MantExp(nil) < -prec {
			break
		}
	}
	for i := 0; i < m; i++ {
		sum.Mul(sum, sum)
	}
	f, _ := sum.Float64()
	return f
}

// EMA is utils.torch_utils.ModelEMA over a model's floating-point state
// (parameters and BatchNorm running statistics). Integer buffers such as
// num_batches_tracked are not part of tiny.StateEntry: the official EMA keeps
// them at their construction-time copy and never averages them.
type EMA struct {
	// Updates counts the updates so far (resumed from a checkpoint; 0 for a
	// fresh EMA or stripped release weights).
	Updates int
	// Shadow is the averaged state, in the order and with the names given
	// to NewEMA. Evaluation and saving use it.
	Shadow []tiny.StateEntry
}

// NewEMA starts an EMA as a deep copy of state with the given update count.
func NewEMA(state []tiny.StateEntry, updates int) *EMA {
	sh := make([]tiny.StateEntry, len(state))
	for i, s := range state {
		sh[i] = tiny.StateEntry{Name: s.Name, Data: append([]float32(nil), s.Data...)}
	}
	return &EMA{Updates: updates, Shadow: sh}
}

// Decay returns the decay of the current update count (the one the last
// Update used).
func (e *EMA) Decay() float64 { return EMADecay(e.Updates) }

// Update is ModelEMA.update: Updates++, d = EMADecay(Updates), and for every
// entry ema = d·ema + (1 − d)·model. It computes in float32 as torch does
// for `v *= d; v += (1 - d) * m` with a Python-double d: both scalars are
// rounded to float32 first (torch casts a CPU scalar to the tensor's dtype),
// then each product is rounded to float32 before the sum. state must have
// the same entries (names, order and lengths) as the shadow; otherwise
// nothing changes and an error is returned.
func (e *EMA) Update(state []tiny.StateEntry) error {
	if len(state) != len(e.Shadow) {
		return fmt.Errorf("ema update: model state has %d entries, the EMA %d", len(state), len(e.Shadow))
	}
	for i, s := range state {
		sh := e.Shadow[i]
		if s.Name != sh.Name {
			return fmt.Errorf("ema update: entry %d is %q in the model, %q in the EMA", i, s.Name, sh.Name)
		}
		if len(s.Data) != len(sh.Data) {
			return fmt.Errorf("ema update: %s has %d values in the model, %d in the EMA", s.Name, len(s.Data), len(sh.Data))
		}
	}
	e.Updates++
	d := e.Decay()
	d32, od32 := float32(d), float32(1-d)
	for i, s := range state {
		v := e.Shadow[i].Data
		for k, m := range s.Data {
			// The conversions round each product and forbid FMA fusion.
			v[k] = float32(v[k]*d32) + float32(m*od32)
		}
	}
	return nil
}
