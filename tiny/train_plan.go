package tiny

import (
	"errors"
	"fmt"
)

// The training graph of a TrainModel on a TrainDevice: a forward in
// training mode that keeps what the backward needs (each conv's output
// before BatchNorm, the statistics BatchNorm normalised with, every
// activation), and the backward through the whole network, lead and aux
// heads included. Everything is allocated once, in NewTrainPlan; a step
// (Forward, Backward) allocates nothing.
//
// Buffers follow the deploy Plan: a tensor that feeds a Concat is written
// by its producer straight into its channel slice of the concat buffer,
// so the forward copies nothing. The gradients use the same placement in
// a second set of buffers: the gradient of a concat is one buffer whose
// channel slices are its inputs' gradients, so each consumer of a tensor
// accumulates into the producer's gradient view (the device's backward
// ops add to dx) and a tensor with several consumers (the SPP input, the
// routes 14, 21, 37, 47, 57) sums them without extra work.

// TrainOptions configure a TrainPlan.
type TrainOptions struct {
	// Batch is the number of images per step.
	Batch int
	// Height and Width are the input size, multiples of the largest
	// stride (32 for yolov7-tiny).
	Height, Width int
	// BN selects the BatchNorm mode: BNFrozen (the zero value) or
	// BNBatch.
	BN BNMode
	// Aux computes the aux head (and its backward); without it
	// TrainOutputs.Aux is nil and Params leaves the aux tensors out.
	Aux bool
	// FrozenLayers keeps the BatchNorms of layers 0..FrozenLayers-1 on
	// their running statistics (BNFrozen, not updated) whatever BN says:
	// the layers a fine-tune freezes keep their statistics as well as
	// their weights.
	FrozenLayers int
}

// TrainPlan is a TrainModel prepared for training steps of one batch and
// input size on one TrainDevice (see the comment above). The plan keeps
// the model's slices and reads them at every Forward (the CPU uses them
// in place; another device gets a copy in its memory), so an optimiser
// updates the model in place between a Backward and the next Forward; in
// BNBatch mode Forward updates the model's running statistics. A
// TrainPlan is not safe for concurrent use.
type TrainPlan struct {
	tm     *TrainModel
	dev    TrainDevice
	o      TrainOptions
	na, no int

	input NCHW   // Batch x 3 x H x W
	outs  []NCHW // per layer output (none for the detect layer)
	grads []NCHW // per layer output gradient, placed as outs

	steps     []trainStep
	blocks    []trainBlock // one per tm.Convs
	auxBlocks []trainBlock // one per tm.AuxConvs when o.Aux
	heads     []leadHead
	auxHeads  []auxHead

	// tensors are the model's tensors and their device copies, uploaded
	// at every Forward unless shared (the device works on host memory,
	// the CPU: the copies are the model's slices); params are the
	// trainable ones.
	tensors []planTensor
	params  []Param
	shared  bool

	clearGrads [][]float32 // activation gradient buffers, zeroed by Backward
	scratch    []float32   // the largest conv / pool scratch
	dz         []float32   // head output gradient in NCHW (largest head)
	dxa        []float32   // lead head input gradient (largest level)
	dpre1      []float32   // RepConv 1x1 pre-BN gradient (largest block)

	res               TrainOutputs
	gradLead, gradAux [][]float32
	forwarded         bool // the last Forward succeeded
}

// planTensor is one model tensor and its device copy (and gradient, for a
// parameter). runStat marks a BatchNorm running statistic.
type planTensor struct {
	src, dev, grad []float32
	runStat        bool
}

// trainStep is one layer of the forward: a conv block (index into
// blocks), a max-pool or upsample from x to y (and dy back to dx), a
// concat (copies for inputs that live elsewhere) or the detect layer.
type trainStep struct {
	kind   Kind
	layer  int
	block  int
	x, dx  NCHW
	y, dy  NCHW
	pool   PoolArgs
	copies []trainCopy
}

// trainCopy is a concat input that is not placed in the concat buffer:
// src (gradient dsrc, Data nil for the network input) is copied into dst
// (gradient ddst) in the forward, and ddst added to dsrc in the backward.
type trainCopy struct {
	src, dsrc, dst, ddst NCHW
}

// trainBlock is a Conv block's forward and backward state: input x
// (gradient dx, Data nil for the network input), output y (gradient dy),
// the conv output before BatchNorm pre, the conv and BatchNorm arguments
// on the device copies and the parameter gradients. For a RepConv the 1x1
// branch adds pre1, its BatchNorm output padd (the dense BN's residual)
// and its own arguments and gradients.
type trainBlock struct {
	name          string
	x, dx, y, dy  NCHW
	pre           NCHW
	conv          ConvArgs
	dW            []float32
	bn            BNArgs
	dGamma, dBeta []float32

	point           bool
	pre1, padd      NCHW
	conv1           ConvArgs
	dW1             []float32
	bn1             BNArgs
	dGamma1, dBeta1 []float32
	act             Act
}

// leadHead is one IDetect level: xa = x + IA (saved), z = conv(xa) + b
// (saved, NCHW), out = IM * z in the head layout; dout is the caller's
// gradient of out.
type leadHead struct {
	level          int
	x, dx, xa, z   NCHW
	conv           ConvArgs
	ia, im, ones   []float32
	dW, dB         []float32
	dIA, dIM       []float32
	out, dout      []float32
	outC, inC, pix int
}

// auxHead is one IAuxDetect m2 conv on its aux block's output (block
// index into auxBlocks): out = conv(y) + b in the head layout.
type auxHead struct {
	block     int
	conv      ConvArgs
	dW, dB    []float32
	out, dout []float32
}

// NewTrainPlan prepares tm for training steps with o on dev: it checks
// tm against its spec and allocates every activation, saved tensor,
// gradient, device weight copy and scratch buffer once.
func NewTrainPlan(tm *TrainModel, dev TrainDevice, o TrainOptions) (*TrainPlan, error) {
	p, err := newTrainPlan(tm, dev, o)
	if err != nil {
		return nil, fmt.Errorf("tiny: train plan: %w", err)
	}
	return p, nil
}

// planBuilder carries NewTrainPlan's first allocation error and the device
// copies of the model's tensors by name.
type planBuilder struct {
	dev   TrainDevice
	err   error
	index map[string]int // tensor name -> index in p.tensors
}

// alloc returns n zeroed device values, or nil after the first error.
func (b *planBuilder) alloc(n int, what string) []float32 {
	if b.err != nil {
		return nil
	}
	d, err := b.dev.Alloc(n)
	if err != nil {
		b.err = fmt.Errorf("%s: alloc %d: %w", what, n, err)
		return nil
	}
	return d
}

// get returns the plan tensor called name; a missing one sets the error.
func (b *planBuilder) get(p *TrainPlan, name string) planTensor {
	i, ok := b.index[name]
	if !ok {
		if b.err == nil {
			b.err = fmt.Errorf("no tensor %s", name)
		}
		return planTensor{}
	}
	return p.tensors[i]
}

// tensor returns a dense N x C x H x W device tensor.
func (b *planBuilder) tensor(n, c, h, w int, what string) NCHW {
	return NCHW{Data: b.alloc(n*c*h*w, what), N: n, C: c, H: h, W: w}
}

// newTrainPlan is NewTrainPlan without the error prefix.
func newTrainPlan(tm *TrainModel, dev TrainDevice, o TrainOptions) (*TrainPlan, error) {
	if tm == nil || dev == nil {
		return nil, fmt.Errorf("nil model or device")
	}
	if tm.Act != ActReLU && tm.Act != ActLeaky {
		return nil, fmt.Errorf("unknown activation %q", tm.Act)
	}
	if o.BN != BNFrozen && o.BN != BNBatch {
		return nil, fmt.Errorf("unknown BatchNorm mode %v", o.BN)
	}
	spec := &tm.Spec
	maxStride := 1
	for _, s := range spec.Strides {
		maxStride = max(maxStride, s)
	}
	if o.Batch <= 0 || o.Height <= 0 || o.Width <= 0 || o.Height%maxStride != 0 || o.Width%maxStride != 0 {
		return nil, fmt.Errorf("batch %d, input %dx%d: want a positive batch and sides that are positive multiples of %d",
			o.Batch, o.Height, o.Width, maxStride)
	}
	shapes, err := spec.Resolve(3, tm.NC)
	if err != nil {
		return nil, err
	}
	n := o.Batch
	p := &TrainPlan{tm: tm, dev: dev, o: o, na: spec.NumAnchors(), no: 5 + tm.NC}
	b := &planBuilder{dev: dev, index: map[string]int{}}
	p.input = b.tensor(n, 3, o.Height, o.Width, "input")
	nl := len(spec.Layers)
	p.outs = make([]NCHW, nl)
	p.grads = make([]NCHW, nl)
	for i, sh := range shapes {
		if o.Height%sh.Stride != 0 || o.Width%sh.Stride != 0 {
			return nil, fmt.Errorf("layer %d: stride %d does not divide the input %dx%d", i, sh.Stride, o.Height, o.Width)
		}
		t := NCHW{N: n, C: sh.OutC, H: o.Height / sh.Stride, W: o.Width / sh.Stride}
		p.outs[i], p.grads[i] = t, t
	}

	// Placement, as NewPlan: every tensor that feeds a concat lives in its
	// slice of the last concat that takes it; other concat inputs copy.
	placed := make([]bool, nl)
	parent := make([]int, nl)
	offset := make([]int, nl)
	for i := range parent {
		parent[i] = -1
	}
	copyIn := make([][][2]int, nl) // (input layer, channel offset)
	for j := nl - 1; j >= 0; j-- {
		if spec.Layers[j].Kind != KindConcat {
			continue
		}
		off := 0
		for _, f := range shapes[j].From {
			switch {
			case f < 0 || placed[f] || spec.Layers[f].Kind == KindDetect:
				copyIn[j] = append(copyIn[j], [2]int{f, off})
			default:
				placed[f] = true
				parent[f], offset[f] = j, off
			}
			if f < 0 {
				off += 3
			} else {
				off += p.outs[f].C
			}
		}
	}
	for i := 0; i < nl; i++ {
		if parent[i] >= 0 || spec.Layers[i].Kind == KindDetect {
			continue
		}
		t := p.outs[i]
		what := fmt.Sprintf("layer %d", i)
		p.outs[i].Data = b.alloc(t.N*t.C*t.H*t.W, what+" output")
		p.grads[i].Data = b.alloc(t.N*t.C*t.H*t.W, what+" gradient")
		p.clearGrads = append(p.clearGrads, p.grads[i].Data)
	}
	if b.err != nil {
		return nil, b.err
	}
	var resolve func(ts []NCHW, i int) NCHW
	resolve = func(ts []NCHW, i int) NCHW {
		if parent[i] < 0 || ts[i].Data != nil {
			return ts[i]
		}
		v := resolve(ts, parent[i]).Channels(offset[i], ts[i].C)
		ts[i].Data, ts[i].Stride = v.Data, v.Stride
		return ts[i]
	}
	for i := 0; i < nl; i++ {
		resolve(p.outs, i)
		resolve(p.grads, i)
	}

	// Device copies of the model's tensors (on the CPU the model's own
	// slices), and the parameter list.
	_, p.shared = dev.(*CPU)
	for _, t := range tm.tensors(o.Aux) {
		if _, dup := b.index[t.name]; dup {
			return nil, fmt.Errorf("duplicate tensor name %s", t.name)
		}
		pt := planTensor{src: t.data, dev: t.data, runStat: !t.param}
		if !p.shared {
			pt.dev = b.alloc(len(t.data), t.name)
		}
		if t.param {
			pt.grad = b.alloc(len(t.data), t.name+" gradient")
			p.params = append(p.params, Param{Name: t.name, Value: t.data, Grad: pt.grad, Group: t.group})
		}
		b.index[t.name] = len(p.tensors)
		p.tensors = append(p.tensors, pt)
	}
	if b.err != nil {
		return nil, b.err
	}
	maxOut := 0
	for _, c := range tm.Convs {
		maxOut = max(maxOut, c.Out)
	}
	for _, c := range tm.AuxConvs {
		maxOut = max(maxOut, c.Out)
	}
	zeros := b.alloc(maxOut, "zero bias")
	if b.err != nil {
		return nil, b.err
	}

	// Steps. Layer -1 is the input, which has no gradient.
	view := func(j int) NCHW {
		if j < 0 {
			return p.input
		}
		return p.outs[j]
	}
	gview := func(j int) NCHW {
		if j < 0 {
			return NCHW{}
		}
		return p.grads[j]
	}
	ci := 0
	for i, l := range spec.Layers {
		from := shapes[i].From
		st := trainStep{kind: l.Kind, layer: i, block: -1, x: view(from[0]), dx: gview(from[0])}
		if l.Kind != KindDetect {
			st.y, st.dy = p.outs[i], p.grads[i]
		}
		switch l.Kind {
		case KindConv:
			if ci >= len(tm.Convs) || tm.Convs[ci].Layer != i {
				return nil, fmt.Errorf("layer %d: conv blocks do not match the spec", i)
			}
			c := &tm.Convs[ci]
			blk, err := p.newBlock(b, c, fmt.Sprintf("layer %d (%s)", i, c.ConvShape.Name), st.x, st.dx, st.y, st.dy, zeros)
			if err != nil {
				return nil, err
			}
			st.block = len(p.blocks)
			p.blocks = append(p.blocks, blk)
			ci++
		case KindMaxPool:
			st.pool = PoolArgs{K: l.K, S: l.S, Pad: l.Pad}
		case KindUpsample:
		case KindConcat:
			for _, c := range copyIn[i] {
				src := view(c[0])
				st.copies = append(st.copies, trainCopy{src: src, dsrc: gview(c[0]),
					dst: p.outs[i].Channels(c[1], src.C), ddst: p.grads[i].Channels(c[1], src.C)})
			}
		case KindDetect:
			if len(tm.Heads) != len(from) {
				return nil, fmt.Errorf("layer %d: %d detect convs for %d levels", i, len(tm.Heads), len(from))
			}
			for k, j := range from {
				h, err := p.newLeadHead(b, &tm.Heads[k], k, view(j), gview(j))
				if err != nil {
					return nil, err
				}
				p.heads = append(p.heads, h)
			}
		default:
			return nil, fmt.Errorf("layer %d: unknown kind %v", i, l.Kind)
		}
		p.steps = append(p.steps, st)
	}
	if ci != len(tm.Convs) {
		return nil, fmt.Errorf("spec has %d conv blocks, model %d", ci, len(tm.Convs))
	}
	if o.Aux {
		if len(tm.AuxConvs) != len(tm.AuxSrc) || len(tm.AuxHeads) != len(tm.AuxSrc) {
			return nil, fmt.Errorf("%d aux convs and %d aux heads for %d aux sources", len(tm.AuxConvs), len(tm.AuxHeads), len(tm.AuxSrc))
		}
		for k, src := range tm.AuxSrc {
			if src < 0 || src >= nl || spec.Layers[src].Kind == KindDetect {
				return nil, fmt.Errorf("aux level %d: bad source layer %d", k, src)
			}
			c := &tm.AuxConvs[k]
			x := p.outs[src]
			ho, wo := convOut(x.H, c.K, c.S, c.Pad), convOut(x.W, c.K, c.S, c.Pad)
			y := b.tensor(n, c.Out, ho, wo, fmt.Sprintf("aux level %d output", k))
			dy := b.tensor(n, c.Out, ho, wo, fmt.Sprintf("aux level %d gradient", k))
			if b.err != nil {
				return nil, b.err
			}
			p.clearGrads = append(p.clearGrads, dy.Data)
			blk, err := p.newBlock(b, c, fmt.Sprintf("aux level %d (%s)", k, c.ConvShape.Name), x, p.grads[src], y, dy, zeros)
			if err != nil {
				return nil, err
			}
			p.auxBlocks = append(p.auxBlocks, blk)
			h, err := p.newAuxHead(b, &tm.AuxHeads[k], k, len(p.auxBlocks)-1)
			if err != nil {
				return nil, err
			}
			p.auxHeads = append(p.auxHeads, h)
		}
	}

	// Outputs, their gradients, and the shared scratch.
	for _, h := range p.heads {
		p.res.Lead = append(p.res.Lead, h.out)
		p.gradLead = append(p.gradLead, h.dout)
	}
	for _, h := range p.auxHeads {
		p.res.Aux = append(p.res.Aux, h.out)
		p.gradAux = append(p.gradAux, h.dout)
	}
	if err := p.allocScratch(b); err != nil {
		return nil, err
	}
	return p, nil
}

// newBlock checks the Conv block c against its input x and output y and
// prepares its saved tensors and device arguments.
func (p *TrainPlan) newBlock(b *planBuilder, c *TrainConv, name string, x, dx, y, dy NCHW, zeros []float32) (trainBlock, error) {
	blk := trainBlock{name: name, x: x, dx: dx, y: y, dy: dy, act: p.tm.Act}
	if c.In != x.C || c.Out != y.C || c.K <= 0 || c.S <= 0 || c.Pad < 0 ||
		convOut(x.H, c.K, c.S, c.Pad) != y.H || convOut(x.W, c.K, c.S, c.Pad) != y.W {
		return blk, fmt.Errorf("%s: conv %dx%d k%d s%d p%d does not map %dx%dx%d to %dx%dx%d",
			name, c.Out, c.In, c.K, c.S, c.Pad, x.C, x.H, x.W, y.C, y.H, y.W)
	}
	if len(c.Weight) != c.WeightLen() {
		return blk, fmt.Errorf("%s: %d weights, want %d", name, len(c.Weight), c.WeightLen())
	}
	mode := p.o.BN
	if c.Layer < p.o.FrozenLayers {
		mode = BNFrozen
	}
	if m := y.N * y.H * y.W; mode == BNBatch && m < 2 {
		// as PyTorch: the unbiased running variance needs two values
		return blk, fmt.Errorf("%s: batch statistics over %d value per channel (batch %d, %dx%d output)", name, m, y.N, y.H, y.W)
	}
	if err := c.BN.check(c.Out); err != nil {
		return blk, fmt.Errorf("%s: %w", name, err)
	}
	nm := c.names()
	get := func(name string) (dev, grad []float32) {
		t := b.get(p, name)
		return t.dev, t.grad
	}
	bnArgs := func(prefix string, bn *BatchNorm, act Act) (BNArgs, []float32, []float32) {
		g, dg := get(prefix + ".weight")
		be, dbe := get(prefix + ".bias")
		rm, _ := get(prefix + ".running_mean")
		rv, _ := get(prefix + ".running_var")
		a := BNArgs{Weight: g, Bias: be, RunMean: rm, RunVar: rv, Eps: bn.Eps, Momentum: BNMomentum, Mode: mode,
			SaveMean: b.alloc(len(g), prefix+" saved mean"), SaveInvStd: b.alloc(len(g), prefix+" saved invstd"), Act: act}
		return a, dg, dbe
	}
	w, dw := get(nm.conv + ".weight")
	blk.conv = ConvArgs{Weight: w, Bias: zeros[:c.Out:c.Out], K: c.K, S: c.S, Pad: c.Pad, Act: ActNone}
	blk.dW = dw
	blk.pre = b.tensor(y.N, y.C, y.H, y.W, name+" pre-BN")
	blk.bn, blk.dGamma, blk.dBeta = bnArgs(nm.bn, &c.BN, p.tm.Act)
	if c.Point != nil {
		if len(c.Point.Weight) != c.Out*c.In || c.K != 2*c.Pad+1 {
			return blk, fmt.Errorf("%s: RepConv 1x1 branch has %d weights, want %d (and a same-padded %dx%d dense conv)",
				name, len(c.Point.Weight), c.Out*c.In, c.K, c.K)
		}
		if err := c.Point.BN.check(c.Out); err != nil {
			return blk, fmt.Errorf("%s: 1x1 branch: %w", name, err)
		}
		blk.point = true
		w1, dw1 := get(nm.pconv + ".weight")
		blk.conv1 = ConvArgs{Weight: w1, Bias: zeros[:c.Out:c.Out], K: 1, S: c.S, Pad: 0, Act: ActNone}
		blk.dW1 = dw1
		blk.pre1 = b.tensor(y.N, y.C, y.H, y.W, name+" 1x1 pre-BN")
		blk.padd = b.tensor(y.N, y.C, y.H, y.W, name+" 1x1 output")
		blk.bn1, blk.dGamma1, blk.dBeta1 = bnArgs(nm.pbn, &c.Point.BN, ActNone)
		blk.bn.Add = blk.padd
	}
	return blk, b.err
}

// newLeadHead prepares lead level k's detect conv h on its input x.
func (p *TrainPlan) newLeadHead(b *planBuilder, h *TrainHead, k int, x, dx NCHW) (leadHead, error) {
	name := fmt.Sprintf("detect level %d (%s)", k, h.ConvShape.Name)
	lh := leadHead{level: k, x: x, dx: dx}
	if h.K != 1 || h.In != x.C || h.Out != p.na*p.no || len(h.Weight) != h.Out*h.In || len(h.Bias) != h.Out ||
		len(h.IA) != h.In || len(h.IM) != h.Out {
		return lh, fmt.Errorf("%s: %dx%d k%d with %d weights, %d biases, %d/%d implicits does not fit input channels %d and %d outputs",
			name, h.Out, h.In, h.K, len(h.Weight), len(h.Bias), len(h.IA), len(h.IM), x.C, p.na*p.no)
	}
	get := func(name string) (dev, grad []float32) {
		t := b.get(p, name)
		return t.dev, t.grad
	}
	w, dw := get(h.ConvShape.Name + ".weight")
	bias, db := get(h.ConvShape.Name + ".bias")
	ian, imn := h.implicitNames()
	lh.ia, lh.dIA = get(ian)
	lh.im, lh.dIM = get(imn)
	lh.conv = ConvArgs{Weight: w, Bias: bias, K: 1, S: 1, Act: ActNone}
	lh.dW, lh.dB = dw, db
	lh.ones = b.alloc(x.C, name+" ones")
	for i := range lh.ones {
		lh.ones[i] = 1
	}
	lh.xa = b.tensor(x.N, x.C, x.H, x.W, name+" input+ia")
	lh.z = b.tensor(x.N, h.Out, x.H, x.W, name+" conv output")
	lh.out = b.alloc(x.N*h.Out*x.H*x.W, name+" output")
	lh.dout = b.alloc(x.N*h.Out*x.H*x.W, name+" output gradient")
	lh.outC, lh.inC, lh.pix = h.Out, x.C, x.H*x.W
	return lh, b.err
}

// newAuxHead prepares aux level k's detect conv h on aux block blk's
// output.
func (p *TrainPlan) newAuxHead(b *planBuilder, h *TrainHead, k, blk int) (auxHead, error) {
	name := fmt.Sprintf("aux detect level %d (%s)", k, h.ConvShape.Name)
	y := p.auxBlocks[blk].y
	ah := auxHead{block: blk}
	if h.K != 1 || h.In != y.C || h.Out != p.na*p.no || len(h.Weight) != h.Out*h.In || len(h.Bias) != h.Out {
		return ah, fmt.Errorf("%s: %dx%d k%d with %d weights and %d biases does not fit input channels %d and %d outputs",
			name, h.Out, h.In, h.K, len(h.Weight), len(h.Bias), y.C, p.na*p.no)
	}
	w := b.get(p, h.ConvShape.Name+".weight")
	bias := b.get(p, h.ConvShape.Name+".bias")
	ah.conv = ConvArgs{Weight: w.dev, Bias: bias.dev, K: 1, S: 1, Act: ActNone}
	ah.dW, ah.dB = w.grad, bias.grad
	ah.out = b.alloc(y.N*h.Out*y.H*y.W, name+" output")
	ah.dout = b.alloc(y.N*h.Out*y.H*y.W, name+" output gradient")
	return ah, b.err
}

// allocScratch sizes and allocates the shared scratch buffers: conv and
// pool scratch for the largest op of either pass, the head gradients in
// NCHW and the RepConv 1x1 branch's gradient.
func (p *TrainPlan) allocScratch(b *planBuilder) error {
	dev := p.dev
	scratch, dz, dxa, dpre1 := 0, 0, 0, 0
	block := func(blk *trainBlock) {
		scratch = max(scratch, dev.ConvScratch(blk.pre, blk.x, blk.conv), dev.ConvBackwardScratch(blk.pre, blk.x, blk.conv))
		if blk.point {
			scratch = max(scratch, dev.ConvScratch(blk.pre1, blk.x, blk.conv1), dev.ConvBackwardScratch(blk.pre1, blk.x, blk.conv1))
			dpre1 = max(dpre1, len(blk.pre1.Data))
		}
	}
	for i := range p.blocks {
		block(&p.blocks[i])
	}
	for i := range p.auxBlocks {
		block(&p.auxBlocks[i])
		h := &p.auxHeads[i]
		y := p.auxBlocks[h.block].y
		z := NCHW{Data: h.out, N: y.N, C: len(h.conv.Bias), H: y.H, W: y.W}
		scratch = max(scratch, dev.ConvBackwardScratch(z, y, h.conv))
		dz = max(dz, len(h.out))
	}
	for i := range p.heads {
		h := &p.heads[i]
		scratch = max(scratch, dev.ConvScratch(h.z, h.xa, h.conv), dev.ConvBackwardScratch(h.z, h.xa, h.conv))
		dz = max(dz, len(h.out))
		dxa = max(dxa, len(h.xa.Data))
	}
	for i := range p.steps {
		st := &p.steps[i]
		if st.kind == KindMaxPool {
			scratch = max(scratch, dev.PoolScratch(st.y, st.x, st.pool))
		}
	}
	p.scratch = b.alloc(scratch, "scratch")
	p.dz = b.alloc(dz, "head gradient scratch")
	p.dxa = b.alloc(dxa, "head input gradient scratch")
	p.dpre1 = b.alloc(dpre1, "RepConv 1x1 gradient scratch")
	return b.err
}

// Input is the plan's Batch x 3 x Height x Width input (NCHW, C order),
// which the caller fills before Forward.
func (p *TrainPlan) Input() []float32 { return p.input.Data }

// Options are the options the plan was made with.
func (p *TrainPlan) Options() TrainOptions { return p.o }

// GradOutputs are the plan's buffers for dLoss/doutput, the shapes of
// Forward's Lead and Aux (aux nil without Aux): the caller writes them
// before Backward.
func (p *TrainPlan) GradOutputs() (lead, aux [][]float32) { return p.gradLead, p.gradAux }

// Forward runs the training-form forward on Input with the model's
// current weights, keeping what Backward needs. Lead (and Aux) are per
// level Batch x NA x ny x nx x (5+nc), the head layout, raw logits; they
// belong to the plan and are overwritten by the next Forward. In BNBatch
// mode BatchNorm uses the batch statistics and the updated running
// statistics are written back to the model.
func (p *TrainPlan) Forward() (*TrainOutputs, error) {
	p.forwarded = false
	if !p.shared {
		for i := range p.tensors {
			t := &p.tensors[i]
			copy(t.dev, t.src)
		}
	}
	dev := p.dev
	for i := range p.steps {
		st := &p.steps[i]
		var err error
		switch st.kind {
		case KindConv:
			err = p.blockForward(&p.blocks[st.block])
		case KindMaxPool:
			err = dev.MaxPool(st.y, st.x, st.pool, p.scratch)
		case KindUpsample:
			err = dev.Upsample2x(st.y, st.x)
		case KindConcat:
			for _, c := range st.copies {
				for n := 0; n < c.src.N; n++ {
					copy(c.dst.Image(n), c.src.Image(n))
				}
			}
		case KindDetect:
			for k := range p.heads {
				if err = p.leadForward(&p.heads[k]); err != nil {
					break
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("tiny: train forward: layer %d (%v): %w", st.layer, st.kind, err)
		}
	}
	for k := range p.auxHeads {
		h := &p.auxHeads[k]
		blk := &p.auxBlocks[h.block]
		err := p.blockForward(blk)
		if err == nil {
			err = dev.Head(h.out, blk.y, h.conv, p.na)
		}
		if err != nil {
			return nil, fmt.Errorf("tiny: train forward: aux level %d: %w", k, err)
		}
	}
	if p.o.BN == BNBatch && !p.shared {
		for i := range p.tensors {
			if t := &p.tensors[i]; t.runStat {
				copy(t.src, t.dev)
			}
		}
	}
	p.forwarded = true
	return &p.res, nil
}

// blockForward is a Conv block: pre = conv(x); y = act(BN(pre)), or for a
// RepConv padd = BN1(conv1x1(x)) and y = act(BN(pre) + padd).
func (p *TrainPlan) blockForward(b *trainBlock) error {
	dev := p.dev
	if err := dev.Conv(b.pre, b.x, b.conv, p.scratch); err != nil {
		return fmt.Errorf("%s: conv: %w", b.name, err)
	}
	if b.point {
		if err := dev.Conv(b.pre1, b.x, b.conv1, p.scratch); err != nil {
			return fmt.Errorf("%s: 1x1 conv: %w", b.name, err)
		}
		if err := dev.BNForward(b.padd, b.pre1, b.bn1); err != nil {
			return fmt.Errorf("%s: 1x1 batchnorm: %w", b.name, err)
		}
	}
	if err := dev.BNForward(b.y, b.pre, b.bn); err != nil {
		return fmt.Errorf("%s: batchnorm: %w", b.name, err)
	}
	return nil
}

// leadForward is one IDetect level: xa = x + IA, z = conv(xa) + b, and
// out(n, a, i, j, k) = IM[a*NO+k] * z(n, a*NO+k, i, j).
func (p *TrainPlan) leadForward(h *leadHead) error {
	if err := p.dev.Affine(h.xa, h.x, AffineArgs{Scale: h.ones, Shift: h.ia, Act: ActNone}); err != nil {
		return fmt.Errorf("detect level %d: implicit add: %w", h.level, err)
	}
	if err := p.dev.Conv(h.z, h.xa, h.conv, p.scratch); err != nil {
		return fmt.Errorf("detect level %d: conv: %w", h.level, err)
	}
	na, no, pix, oc := p.na, p.no, h.pix, h.outC
	for n := 0; n < h.z.N; n++ {
		for a := 0; a < na; a++ {
			for k := 0; k < no; k++ {
				o := a*no + k
				m := h.im[o]
				src := h.z.Data[(n*oc+o)*pix:][:pix]
				dst := h.out[(n*na+a)*pix*no+k:]
				for q, v := range src {
					dst[q*no] = m * v
				}
			}
		}
	}
	return nil
}

// AuxPreBN returns the aux head's level-k conv output before its
// BatchNorm, as computed by the last Forward (Batch x C x H x W, host
// memory). It fails without the aux head, before a Forward, or on a device
// that keeps its tensors in its own memory.
func (p *TrainPlan) AuxPreBN(k int) (NCHW, error) {
	switch {
	case k < 0 || k >= len(p.auxHeads):
		return NCHW{}, fmt.Errorf("tiny: aux level %d: the plan has %d aux levels", k, len(p.auxHeads))
	case !p.forwarded:
		return NCHW{}, errors.New("tiny: aux pre-BatchNorm output: no Forward yet")
	case !p.shared:
		return NCHW{}, errors.New("tiny: aux pre-BatchNorm output: the device keeps it in its own memory")
	}
	return p.auxBlocks[p.auxHeads[k].block].pre, nil
}
