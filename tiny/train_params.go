package tiny

import (
	"fmt"
	"slices"
	"strings"
)

// The tensors of a TrainModel under their official state_dict names, in
// one stable order shared by TrainModel.State, TrainPlan.Params and the
// plan's device copies: the Conv blocks in layer order (a plain block
// conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var; a
// RepConv rbr_dense.0.weight, rbr_dense.1.*, rbr_1x1.0.weight,
// rbr_1x1.1.*), the aux Conv blocks, then the detect module as
// IAuxDetect registers it: m.<k>.weight/bias, m2.<k>.weight/bias,
// ia.<k>.implicit, im.<k>.implicit. BatchNorm's num_batches_tracked is an
// integer and not listed.

// trainTensor is one tensor of a TrainModel: its name, the model's slice,
// whether it is trainable (running statistics are not) and its optimiser
// group.
type trainTensor struct {
	name  string
	data  []float32
	param bool
	group ParamGroup
}

// blockNames are the state_dict prefixes of a Conv block's tensors: the
// conv and its BatchNorm, and for a RepConv the 1x1 branch's.
type blockNames struct {
	conv, bn, pconv, pbn string
}

// names returns c's prefixes: "model.<l>.conv" and "model.<l>.bn", or
// "model.<l>.rbr_dense.0/1" and "model.<l>.rbr_1x1.0/1" for a RepConv.
func (c *TrainConv) names() blockNames {
	base := strings.TrimSuffix(c.ConvShape.Name, ".conv")
	if c.Point == nil {
		return blockNames{conv: base + ".conv", bn: base + ".bn"}
	}
	return blockNames{conv: base + ".rbr_dense.0", bn: base + ".rbr_dense.1",
		pconv: base + ".rbr_1x1.0", pbn: base + ".rbr_1x1.1"}
}

// implicitNames returns the names of a lead head's ImplicitA and ImplicitM
// vectors: "model.<l>.ia.<k>.implicit" and "model.<l>.im.<k>.implicit".
func (h *TrainHead) implicitNames() (ia, im string) {
	base := strings.TrimSuffix(h.ConvShape.Name, fmt.Sprintf(".m.%d", h.Level))
	return fmt.Sprintf("%s.ia.%d.implicit", base, h.Level), fmt.Sprintf("%s.im.%d.implicit", base, h.Level)
}

// appendBN appends a BatchNorm's four tensors under prefix.
func appendBN(ts []trainTensor, prefix string, bn *BatchNorm) []trainTensor {
	return append(ts,
		trainTensor{name: prefix + ".weight", data: bn.Weight, param: true, group: GroupNoDecay},
		trainTensor{name: prefix + ".bias", data: bn.Bias, param: true, group: GroupBias},
		trainTensor{name: prefix + ".running_mean", data: bn.Mean},
		trainTensor{name: prefix + ".running_var", data: bn.Var})
}

// appendBlock appends a Conv block's tensors.
func appendBlock(ts []trainTensor, c *TrainConv) []trainTensor {
	n := c.names()
	ts = append(ts, trainTensor{name: n.conv + ".weight", data: c.Weight, param: true, group: GroupDecay})
	ts = appendBN(ts, n.bn, &c.BN)
	if c.Point != nil {
		ts = append(ts, trainTensor{name: n.pconv + ".weight", data: c.Point.Weight, param: true, group: GroupDecay})
		ts = appendBN(ts, n.pbn, &c.Point.BN)
	}
	return ts
}

// tensors lists tm's tensors in state order (see above); aux false leaves
// out the aux Conv blocks and the aux detect convs.
func (tm *TrainModel) tensors(aux bool) []trainTensor {
	var ts []trainTensor
	for i := range tm.Convs {
		ts = appendBlock(ts, &tm.Convs[i])
	}
	if aux {
		for i := range tm.AuxConvs {
			ts = appendBlock(ts, &tm.AuxConvs[i])
		}
	}
	heads := func(hs []TrainHead) {
		for i := range hs {
			h := &hs[i]
			ts = append(ts,
				trainTensor{name: h.ConvShape.Name + ".weight", data: h.Weight, param: true, group: GroupDecay},
				trainTensor{name: h.ConvShape.Name + ".bias", data: h.Bias, param: true, group: GroupBias})
		}
	}
	heads(tm.Heads)
	if aux {
		heads(tm.AuxHeads)
	}
	for i := range tm.Heads {
		ia, _ := tm.Heads[i].implicitNames()
		ts = append(ts, trainTensor{name: ia, data: tm.Heads[i].IA, param: true, group: GroupNoDecay})
	}
	for i := range tm.Heads {
		_, im := tm.Heads[i].implicitNames()
		ts = append(ts, trainTensor{name: im, data: tm.Heads[i].IM, param: true, group: GroupNoDecay})
	}
	return ts
}

// State returns every floating-point tensor of tm, parameters and
// BatchNorm running statistics, aux head included, under its official
// name in a stable order (what ModelEMA averages). Data aliases tm's
// slices.
func (tm *TrainModel) State() []StateEntry {
	ts := tm.tensors(true)
	st := make([]StateEntry, len(ts))
	for i, t := range ts {
		st[i] = StateEntry{Name: t.name, Data: t.data}
	}
	return st
}

// Clone returns a deep copy of tm that shares no memory with it.
func (tm *TrainModel) Clone() *TrainModel {
	c := &TrainModel{Spec: cloneSpec(tm.Spec), Act: tm.Act, NC: tm.NC, AuxSrc: tm.AuxSrc}
	if tm.Names != nil {
		c.Names = slices.Clone(tm.Names)
	}
	cloneConvs := func(cs []TrainConv) []TrainConv {
		if cs == nil {
			return nil
		}
		out := make([]TrainConv, len(cs))
		for i, t := range cs {
			out[i] = TrainConv{ConvShape: t.ConvShape, Weight: slices.Clone(t.Weight), BN: cloneBN(t.BN)}
			if t.Point != nil {
				out[i].Point = &TrainPoint{Weight: slices.Clone(t.Point.Weight), BN: cloneBN(t.Point.BN)}
			}
		}
		return out
	}
	cloneHeads := func(hs []TrainHead) []TrainHead {
		if hs == nil {
			return nil
		}
		out := make([]TrainHead, len(hs))
		for i, h := range hs {
			out[i] = TrainHead{ConvShape: h.ConvShape, Weight: slices.Clone(h.Weight), Bias: slices.Clone(h.Bias),
				IA: slices.Clone(h.IA), IM: slices.Clone(h.IM)}
		}
		return out
	}
	c.Convs = cloneConvs(tm.Convs)
	c.AuxConvs = cloneConvs(tm.AuxConvs)
	c.Heads = cloneHeads(tm.Heads)
	c.AuxHeads = cloneHeads(tm.AuxHeads)
	return c
}

// cloneSpec returns a copy of s that shares no memory with it.
func cloneSpec(s Spec) Spec {
	c := s
	c.Layers = make([]Layer, len(s.Layers))
	for i, l := range s.Layers {
		l.From = slices.Clone(l.From)
		c.Layers[i] = l
	}
	if s.Anchors != nil {
		c.Anchors = make([][][2]float32, len(s.Anchors))
		for i, a := range s.Anchors {
			c.Anchors[i] = slices.Clone(a)
		}
	}
	c.Strides = slices.Clone(s.Strides)
	return c
}

// Params returns every trainable tensor the plan computes gradients for,
// in state order (see TrainModel.State; the aux head only when the plan
// was made with Aux): Value aliases the model's slice, Grad the plan's
// gradient, Group the official optimiser group (BatchNorm weights and
// implicits GroupNoDecay, other weights GroupDecay, biases GroupBias).
// The slice belongs to the plan; the plan keeps the model's slices, so
// an optimiser must update them in place.
func (p *TrainPlan) Params() []Param { return p.params }

// ZeroGrad sets every parameter gradient to zero (Backward accumulates).
func (p *TrainPlan) ZeroGrad() {
	for i := range p.params {
		clear(p.params[i].Grad)
	}
}
