package tiny

import (
	"fmt"
	"runtime"
)

// Plan is a deploy Model prepared for one input size on one Device: every
// activation allocated once, the weights copied into device memory, the
// scratch sized for the largest op. Concat costs nothing: a tensor that
// feeds a Concat is written by its producer straight into its channel
// slice of the concat buffer (for batch 1 the slice is one contiguous
// NCHW block), so consumers of either read the same memory. A Plan is not
// safe for concurrent use; make one per goroutine.
type Plan struct {
	dev        Device
	size       int
	na, no     int
	input      NCHW   // Data set by Forward
	outs       []NCHW // per layer output; layer -1 is input
	steps      []step
	scratch    []float32
	heads      [][]float32 // raw outputs, 1 x NA x H x W x NO per level
	headShapes [][]int
	// pins holds every buffer of the plan pinned when dev is a Batcher
	// (its batches keep pointers to them between cgo calls); unpinned
	// once the plan is unreachable.
	pins *runtime.Pinner
}

// step is one layer of the forward.
type step struct {
	kind  Kind
	layer int
	from  []int
	conv  ConvArgs   // KindConv
	pool  PoolArgs   // KindMaxPool
	det   []ConvArgs // KindDetect: one per level
	// concat inputs that live elsewhere and are copied in: (input layer,
	// channel offset)
	copyIn [][2]int
	// fusedOut, when Data is set, is where this conv writes: its own
	// output and the next step's, adjacent channels of one buffer (see
	// fuseSiblings); the next step then has skip set.
	fusedOut NCHW
	skip     bool
}

// NewPlan prepares m for a square inputSize x inputSize input (a positive
// multiple of the largest stride) on dev.
func (m *Model) NewPlan(dev Device, inputSize int) (*Plan, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("tiny: plan: %w", err)
	}
	spec := &m.Spec
	maxStride := 1
	for _, s := range spec.Strides {
		maxStride = max(maxStride, s)
	}
	if inputSize <= 0 || inputSize%maxStride != 0 {
		return nil, fmt.Errorf("tiny: plan: input size %d is not a positive multiple of %d", inputSize, maxStride)
	}
	shapes, err := spec.Resolve(3, m.NC)
	if err != nil {
		return nil, fmt.Errorf("tiny: plan: %w", err)
	}
	p := &Plan{dev: dev, size: inputSize, na: spec.NumAnchors(), no: 5 + m.NC}
	p.input = NCHW{N: 1, C: 3, H: inputSize, W: inputSize}
	nl := len(spec.Layers)
	p.outs = make([]NCHW, nl)
	for i, sh := range shapes {
		side := inputSize / sh.Stride
		if side*sh.Stride != inputSize {
			return nil, fmt.Errorf("tiny: plan: layer %d: stride %d does not divide input size %d", i, sh.Stride, inputSize)
		}
		p.outs[i] = NCHW{N: 1, C: sh.OutC, H: side, W: side}
	}

	// Placement: walk the concats from the last one back, so that a concat
	// that itself feeds a later concat is placed before its own inputs.
	// Every tensor that feeds a concat lives in its slice of the first
	// concat (from the end) that takes it; any other use copies.
	placed := make([]bool, nl)
	parent := make([]int, nl) // concat layer holding the tensor, -1 if own buffer
	offset := make([]int, nl) // its first channel there
	for i := range parent {
		parent[i] = -1
	}
	copyIn := make([][][2]int, nl)
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
	// Allocate the buffers of unplaced tensors (the detect layer has none
	// of its own), then resolve the views of placed ones in layer order of
	// their parents, outermost first.
	for i := 0; i < nl; i++ {
		if parent[i] >= 0 || spec.Layers[i].Kind == KindDetect {
			continue
		}
		t := &p.outs[i]
		buf, err := dev.Alloc(t.C * t.H * t.W)
		if err != nil {
			return nil, fmt.Errorf("tiny: plan: layer %d output: %w", i, err)
		}
		t.Data = buf
	}
	var resolve func(i int) NCHW
	resolve = func(i int) NCHW {
		if parent[i] < 0 || p.outs[i].Data != nil {
			return p.outs[i]
		}
		outer := resolve(parent[i])
		v := outer.Channels(offset[i], p.outs[i].C)
		p.outs[i].Data, p.outs[i].Stride = v.Data, v.Stride
		return p.outs[i]
	}
	for i := 0; i < nl; i++ {
		resolve(i)
	}

	// Weights into device memory, one buffer.
	total := 0
	for _, c := range m.Convs {
		total += len(c.Weight) + len(c.Bias)
	}
	params, err := dev.Alloc(total)
	if err != nil {
		return nil, fmt.Errorf("tiny: plan: weights: %w", err)
	}
	convArgs := make([]ConvArgs, len(m.Convs))
	for i, c := range m.Convs {
		w := params[:len(c.Weight):len(c.Weight)]
		copy(w, c.Weight)
		b := params[len(w) : len(w)+len(c.Bias) : len(w)+len(c.Bias)]
		copy(b, c.Bias)
		params = params[len(w)+len(b):]
		act := m.Act
		if c.Level >= 0 {
			act = ActNone
		}
		convArgs[i] = ConvArgs{Weight: w, Bias: b, K: c.K, S: c.S, Pad: c.Pad, Act: act}
	}

	// Steps, and the scratch of the largest op.
	scratch := 0
	ci := 0
	for i, l := range spec.Layers {
		st := step{kind: l.Kind, layer: i, from: shapes[i].From, copyIn: copyIn[i]}
		x := p.view(st.from[0])
		switch l.Kind {
		case KindConv:
			st.conv = convArgs[ci]
			ci++
			if cp, ok := dev.(ConvPreparer); ok {
				if st.conv, err = cp.PrepareConv(p.outs[i], x, st.conv); err != nil {
					return nil, fmt.Errorf("tiny: plan: layer %d: %w", i, err)
				}
			}
			scratch = max(scratch, dev.ConvScratch(p.outs[i], x, st.conv))
		case KindMaxPool:
			st.pool = PoolArgs{K: l.K, S: l.S, Pad: l.Pad}
			scratch = max(scratch, dev.PoolScratch(p.outs[i], x, st.pool))
		case KindDetect:
			for k, f := range st.from {
				a := convArgs[ci]
				ci++
				in := p.outs[f]
				if hp, ok := dev.(HeadPreparer); ok {
					if a, err = hp.PrepareHead(in, a, p.na); err != nil {
						return nil, fmt.Errorf("tiny: plan: detect level %d: %w", k, err)
					}
				}
				hb, err := dev.Alloc(p.na * p.no * in.H * in.W)
				if err != nil {
					return nil, fmt.Errorf("tiny: plan: detect level %d: %w", k, err)
				}
				st.det = append(st.det, a)
				p.heads = append(p.heads, hb)
				p.headShapes = append(p.headShapes, []int{1, p.na, in.H, in.W, p.no})
			}
		}
		p.steps = append(p.steps, st)
	}
	if ci != len(convArgs) {
		return nil, fmt.Errorf("tiny: plan: used %d of %d convolutions", ci, len(convArgs))
	}
	p.cascadePools()
	if err := p.fuseSiblings(); err != nil {
		return nil, err
	}
	for _, st := range p.steps {
		if st.fusedOut.Data != nil {
			scratch = max(scratch, dev.ConvScratch(st.fusedOut, p.view(st.from[0]), st.conv))
		}
	}
	if p.scratch, err = dev.Alloc(scratch); err != nil {
		return nil, fmt.Errorf("tiny: plan: scratch: %w", err)
	}
	if _, ok := dev.(Batcher); ok {
		p.pinBuffers()
	}
	return p, nil
}

// pinBuffers pins every buffer the plan's ops read or write, except the
// input (Forward runs the steps that read it outside the batch), and
// unpins them when the plan becomes unreachable.
func (p *Plan) pinBuffers() {
	pins := new(runtime.Pinner)
	pin := func(b []float32) {
		if len(b) > 0 {
			pins.Pin(&b[0])
		}
	}
	for _, t := range p.outs {
		pin(t.Data)
	}
	for _, h := range p.heads {
		pin(h)
	}
	pin(p.scratch)
	for _, st := range p.steps {
		for _, c := range append([]ConvArgs{st.conv}, st.det...) {
			pin(c.Weight)
			pin(c.Bias)
			pin(c.Packed)
			pin(c.Winograd)
		}
	}
	p.pins = pins
	runtime.AddCleanup(p, func(pins *runtime.Pinner) { pins.Unpin() }, pins)
}

// view is the output of layer i, or the input for i < 0.
func (p *Plan) view(i int) NCHW {
	if i < 0 {
		return p.input
	}
	return p.outs[i]
}

// InputSize is the side of the square input the plan was made for.
func (p *Plan) InputSize() int { return p.size }

// OutputShapes are the shapes of Forward's outputs, p3, p4, p5: each
// 1 x NA x H x W x (5+nc).
func (p *Plan) OutputShapes() [][]int {
	s := make([][]int, len(p.headShapes))
	for i, h := range p.headShapes {
		s[i] = append([]int(nil), h...)
	}
	return s
}

// Forward runs the network on a 1 x 3 x S x S input (NCHW, RGB in [0,1],
// S = InputSize) and returns the raw head outputs in level order p3, p4,
// p5, each 1 x NA x H x W x (5+nc) pre-sigmoid logits in C order, as the
// official raw export. The returned slices belong to the plan and are
// overwritten by the next Forward.
func (p *Plan) Forward(input []float32) ([][]float32, error) {
	if want := 3 * p.size * p.size; len(input) != want {
		return nil, fmt.Errorf("tiny: forward: input has %d values, want 1x3x%dx%d = %d", len(input), p.size, p.size, want)
	}
	p.input.Data = input
	defer func() { p.input.Data = nil }()
	// On a Batcher the ops queue up and run together (at the host's
	// copies and at the end), except those that read the input: it is
	// the caller's memory, not pinned, so they run at once, on dev.
	var batch Batch
	if b, ok := p.dev.(Batcher); ok && p.pins != nil {
		batch = b.StartBatch()
		defer batch.End()
	}
	for i := range p.steps {
		st := &p.steps[i]
		dev := p.dev
		if batch != nil {
			dev = batch
			if readsInput(st) {
				if err := batch.Sync(); err != nil {
					return nil, fmt.Errorf("tiny: forward: layer %d (%v): %w", st.layer, st.kind, err)
				}
				dev = p.dev
			}
		}
		var err error
		switch st.kind {
		case KindConv:
			switch {
			case st.skip:
			case st.fusedOut.Data != nil:
				err = dev.Conv(st.fusedOut, p.view(st.from[0]), st.conv, p.scratch)
			default:
				err = dev.Conv(p.outs[st.layer], p.view(st.from[0]), st.conv, p.scratch)
			}
		case KindMaxPool:
			err = dev.MaxPool(p.outs[st.layer], p.view(st.from[0]), st.pool, p.scratch)
		case KindUpsample:
			err = dev.Upsample2x(p.outs[st.layer], p.view(st.from[0]))
		case KindConcat:
			y := p.outs[st.layer]
			if len(st.copyIn) > 0 {
				err = syncDevice(dev) // the host copies device output
			}
			for _, c := range st.copyIn {
				if err != nil {
					break
				}
				x := p.view(c[0])
				copy(y.Channels(c[1], x.C).Image(0), x.Image(0))
			}
		case KindDetect:
			for k, f := range st.from {
				if err = dev.Head(p.heads[k], p.outs[f], st.det[k], p.na); err != nil {
					break
				}
			}
		}
		if err != nil {
			return nil, fmt.Errorf("tiny: forward: layer %d (%v): %w", st.layer, st.kind, err)
		}
	}
	if batch != nil {
		if err := batch.Sync(); err != nil {
			return nil, fmt.Errorf("tiny: forward: %w", err)
		}
	}
	if err := syncDevice(p.dev); err != nil {
		return nil, fmt.Errorf("tiny: forward: %w", err)
	}
	return p.heads, nil
}

// readsInput reports whether step st reads the plan's input (layer -1).
func readsInput(st *step) bool {
	for _, f := range st.from {
		if f < 0 {
			return true
		}
	}
	for _, c := range st.copyIn {
		if c[0] < 0 {
			return true
		}
	}
	return false
}

// fuseSiblings merges two consecutive 1x1 stride-1 convs that read the same
// tensor and write adjacent channels of one buffer (the two input convs of
// an ELAN block, placed side by side in its concat) into one conv with the
// filters stacked in buffer order: one GEMM of twice the rows instead of
// two. The result is the same numbers (each output row is its own dot
// products). The fused conv is prepared again (ConvPreparer) and may need
// scratch of its own (NewPlan sizes it).
func (p *Plan) fuseSiblings() error {
	for i := 0; i+1 < len(p.steps); i++ {
		a, b := &p.steps[i], &p.steps[i+1]
		if a.kind != KindConv || b.kind != KindConv || a.skip || a.fusedOut.Data != nil {
			continue
		}
		if a.from[0] != b.from[0] || !direct1x1(a.conv) || !direct1x1(b.conv) || a.conv.Act != b.conv.Act {
			continue
		}
		ya, yb := p.outs[a.layer], p.outs[b.layer]
		if ya.N != 1 || yb.N != 1 || ya.H != yb.H || ya.W != yb.W || len(ya.Data) == 0 || len(yb.Data) == 0 {
			continue
		}
		lo, hi, first, second := ya, yb, a.conv, b.conv
		switch {
		case adjacent(ya, yb):
		case adjacent(yb, ya):
			lo, hi, first, second = yb, ya, b.conv, a.conv
		default:
			continue
		}
		if lo.Stride != hi.Stride || lo.BatchStride() < (lo.C+hi.C)*lo.Plane() {
			continue
		}
		buf, err := p.dev.Alloc(len(first.Weight) + len(second.Weight) + len(first.Bias) + len(second.Bias))
		if err != nil {
			return fmt.Errorf("tiny: plan: fused conv %d+%d: %w", a.layer, b.layer, err)
		}
		nw := len(first.Weight) + len(second.Weight)
		w, bias := buf[:nw:nw], buf[nw:]
		copy(w, first.Weight)
		copy(w[len(first.Weight):], second.Weight)
		copy(bias, first.Bias)
		copy(bias[len(first.Bias):], second.Bias)
		a.conv = ConvArgs{Weight: w, Bias: bias, K: 1, S: 1, Act: a.conv.Act}
		a.fusedOut = NCHW{Data: lo.Data, N: 1, C: lo.C + hi.C, H: lo.H, W: lo.W, Stride: lo.Stride}
		if cp, ok := p.dev.(ConvPreparer); ok {
			if a.conv, err = cp.PrepareConv(a.fusedOut, p.view(a.from[0]), a.conv); err != nil {
				return fmt.Errorf("tiny: plan: fused conv %d+%d: %w", a.layer, b.layer, err)
			}
		}
		b.skip = true
		i++
	}
	return nil
}

// cascadePools rewrites the SPP block's stride-1 max-pools (5, 9 and 13
// wide, all on one tensor) as a cascade, as YOLOv5's SPPF does: a kxk
// "same" pool equals a (k-j+1)-wide one on the output of a jxj one of the
// same tensor (a max of maxes over windows that cover exactly the same
// positions, borders included, since padding never wins), so the 9 and 13
// pools become 5-wide pools of the 5 and 9 outputs: 10 comparisons per
// output instead of 18 and 26, and the same numbers.
func (p *Plan) cascadePools() {
	type pooled struct{ layer, k int } // the widest pool of a tensor so far
	widest := make(map[int]pooled)
	for i := range p.steps {
		st := &p.steps[i]
		if st.kind != KindMaxPool || st.pool.S != 1 || st.pool.K%2 != 1 || st.pool.Pad != st.pool.K/2 {
			continue
		}
		src, k := st.from[0], st.pool.K
		if w, ok := widest[src]; ok && w.k < k {
			kk := k - w.k + 1
			st.from = []int{w.layer}
			st.pool = PoolArgs{K: kk, S: 1, Pad: kk / 2}
		}
		if w, ok := widest[src]; !ok || w.k < k {
			widest[src] = pooled{st.layer, k}
		}
	}
}

func direct1x1(c ConvArgs) bool { return c.K == 1 && c.S == 1 && c.Pad == 0 }

// adjacent reports whether hi's channels follow lo's in one buffer.
func adjacent(lo, hi NCHW) bool {
	n := lo.C * lo.Plane()
	return len(lo.Data) > n && len(hi.Data) > 0 && &hi.Data[0] == &lo.Data[n]
}
