package finetune

import (
	"fmt"
	"math"

	"github.com/yolo7d/yolo7d/tiny"
)

// numParamGroups is the number of official optimiser groups (pg0, pg1, pg2).
const numParamGroups = 3

// sgdGroup holds the settings of one parameter group.
type sgdGroup struct {
	lr, momentum, weightDecay float64
}

// SGD is torch.optim.SGD(nesterov=True, dampening=0) over the three official
// parameter groups of train.py, indexed by tiny.ParamGroup:
//   - tiny.GroupNoDecay (pg0): BatchNorm weights and implicit vectors, no decay;
//   - tiny.GroupDecay (pg1): other weights, with weight decay;
//   - tiny.GroupBias (pg2): biases, no decay.
//
// Each group has its own lr and momentum (SetGroup; the schedule changes
// them every batch during warm-up). For every parameter with a gradient,
// Step does, element-wise in float32:
//
//	g = grad + wd·p                   (wd ≠ 0 only in pg1)
//	buf = g on the first step, else buf = momentum·buf + g
//	g = g + momentum·buf              (Nesterov)
//	p = p − lr·g
//
// The arithmetic follows torch's CPU/CUDA kernels: the scalars are rounded
// to float32, `x.add(y, alpha=a)` is a fused multiply-add x + a·y rounded
// once, and `buf.mul_(momentum)` is a separate rounded product. With
// momentum 0 no buffer is kept (plain SGD), as in torch.
type SGD struct {
	params []tiny.Param
	groups [numParamGroups]sgdGroup
	bufs   [][]float32 // momentum buffers; nil until a parameter's first step
}

// NewSGD creates the optimiser over params, which it updates in place
// (tiny.Param.Value aliases the model). weightDecay applies to
// tiny.GroupDecay only; pass the scaled value (Schedule.WeightDecay). Every
// group starts with lr 0 and momentum 0: call SetGroup before Step.
func NewSGD(params []tiny.Param, weightDecay float64) *SGD {
	o := &SGD{params: params, bufs: make([][]float32, len(params))}
	o.groups[tiny.GroupDecay].weightDecay = weightDecay
	return o
}

// SetGroup sets the learning rate and momentum of one group. It panics on
// a group outside the three official ones (a programming error).
func (o *SGD) SetGroup(group tiny.ParamGroup, lr, momentum float64) {
	if group < 0 || int(group) >= numParamGroups {
		panic(fmt.Sprintf("finetune.SGD.SetGroup: parameter group %d out of range", group))
	}
	o.groups[group].lr, o.groups[group].momentum = lr, momentum
}

// Group returns the current lr, momentum and weight decay of a group (zeros
// for a group outside the three official ones).
func (o *SGD) Group(group tiny.ParamGroup) (lr, momentum, weightDecay float64) {
	if group < 0 || int(group) >= numParamGroups {
		return 0, 0, 0
	}
	g := o.groups[group]
	return g.lr, g.momentum, g.weightDecay
}

// Params returns the parameters the optimiser updates.
func (o *SGD) Params() []tiny.Param { return o.params }

// Step applies one update to every parameter that has a gradient (a nil
// Grad is skipped, as torch skips a None grad). It checks every parameter
// first and changes nothing if a group is unknown or a gradient's length
// differs from its value's.
func (o *SGD) Step() error {
	for i, p := range o.params {
		if p.Group < 0 || int(p.Group) >= numParamGroups {
			return fmt.Errorf("sgd step: parameter %d (%s) has unknown group %d", i, p.Name, p.Group)
		}
		if p.Grad != nil && len(p.Grad) != len(p.Value) {
			return fmt.Errorf("sgd step: parameter %d (%s) has %d gradient values for %d values", i, p.Name, len(p.Grad), len(p.Value))
		}
		if b := o.bufs[i]; b != nil && len(b) != len(p.Value) {
			return fmt.Errorf("sgd step: parameter %d (%s) has a %d-value momentum buffer for %d values", i, p.Name, len(b), len(p.Value))
		}
	}
	for i, p := range o.params {
		if p.Grad == nil {
			continue
		}
		g := o.groups[p.Group]
		wd, mom, negLR := float32(g.weightDecay), float32(g.momentum), float32(-g.lr)
		buf := o.bufs[i]
		first := buf == nil && g.momentum != 0
		if first {
			buf = make([]float32, len(p.Value))
			o.bufs[i] = buf
		}
		for k, v := range p.Value {
			d := p.Grad[k]
			if g.weightDecay != 0 {
				d = fma32(v, wd, d) // d_p.add(param, alpha=wd)
			}
			if g.momentum != 0 {
				if first {
					buf[k] = d // torch.clone(d_p)
				} else {
					buf[k] = float32(buf[k]*mom) + d // buf.mul_(momentum).add_(d_p)
				}
				d = fma32(buf[k], mom, d) // d_p.add(buf, alpha=momentum)
			}
			p.Value[k] = fma32(d, negLR, v) // param.add_(d_p, alpha=-lr)
		}
	}
	return nil
}

// ZeroGrad zeroes every gradient (torch's zero_grad(set_to_none=False)).
func (o *SGD) ZeroGrad() {
	for _, p := range o.params {
		clear(p.Grad)
	}
}

// State returns a copy of the momentum buffers, one per parameter in
// Params order; nil where a parameter has not been stepped yet (torch has
// no momentum_buffer for it then).
func (o *SGD) State() [][]float32 {
	s := make([][]float32, len(o.bufs))
	for i, b := range o.bufs {
		if b != nil {
			s[i] = append([]float32(nil), b...)
		}
	}
	return s
}

// LoadState restores momentum buffers saved by State (copied), for resuming
// from a checkpoint. It needs one entry per parameter, each nil or as long
// as the parameter, and changes nothing on error.
func (o *SGD) LoadState(bufs [][]float32) error {
	if len(bufs) != len(o.params) {
		return fmt.Errorf("sgd load state: %d momentum buffers for %d parameters", len(bufs), len(o.params))
	}
	for i, b := range bufs {
		if b != nil && len(b) != len(o.params[i].Value) {
			return fmt.Errorf("sgd load state: buffer %d (%s) has %d values, the parameter %d", i, o.params[i].Name, len(b), len(o.params[i].Value))
		}
	}
	for i, b := range bufs {
		if b == nil {
			o.bufs[i] = nil
		} else {
			o.bufs[i] = append([]float32(nil), b...)
		}
	}
	return nil
}

// fma32 is the float32 fused multiply-add a·b + c with a single rounding
// (what torch's vec::fmadd and nvcc's contraction give). a·b is exact in
// float64; the sum is rounded to odd in float64 and then to float32, which
// is correctly rounded because float64 has more than 24+2 bits.
func fma32(a, b, c float32) float32 {
	p := float64(a) * float64(b) // exact
	cc := float64(c)
	s := p + cc
	if math.IsInf(s, 0) || math.IsNaN(s) {
		return float32(s)
	}
	// TwoSum: e is the exact rounding error of s = p + cc.
	bb := s - p
	e := (p - (s - bb)) + (cc - bb)
	if e != 0 && math.Float64bits(s)&1 == 0 {
		// Round to odd: step towards the exact value to the odd neighbour.
		s = math.Nextafter(s, math.Copysign(math.Inf(1), e))
	}
	return float32(s)
}
