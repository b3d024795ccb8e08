package tiny

import "fmt"

// Training-form forward in eval mode: BatchNorm with its running
// statistics, RepConv as the sum of its two branches, ImplicitA added to
// the detect conv input and ImplicitM multiplied on its output, the aux
// head computed as well. Every heavy op runs through the Device (Conv,
// Affine, MaxPool, Upsample2x, Head); concat and the head-layout
// permutation of the lead outputs are host copies.

// trainFwd is one forward's device and its first error: once err is set,
// every helper is a no-op, so a layer checks the error once.
type trainFwd struct {
	dev Device
	err error
}

// alloc returns a dense N x C x H x W device tensor.
func (f *trainFwd) alloc(n, c, h, w int) NCHW {
	if f.err != nil {
		return NCHW{}
	}
	d, err := f.dev.Alloc(n * c * h * w)
	if err != nil {
		f.err = fmt.Errorf("alloc %dx%dx%dx%d: %w", n, c, h, w, err)
		return NCHW{}
	}
	return NCHW{Data: d, N: n, C: c, H: h, W: w}
}

// put copies v into device memory.
func (f *trainFwd) put(v []float32) []float32 {
	if f.err != nil {
		return nil
	}
	d, err := f.dev.Alloc(len(v))
	if err != nil {
		f.err = fmt.Errorf("alloc %d: %w", len(v), err)
		return nil
	}
	copy(d, v)
	return d
}

// conv returns conv(x, w) + bias (bias nil: none; no activation) for a
// K x K, stride S, padding pad conv with out filters: x is N x In x H x W,
// w out x In x K x K, the result N x out x Ho x Wo.
func (f *trainFwd) conv(x NCHW, w []float32, out, k, s, pad int, bias []float32) NCHW {
	y := f.alloc(x.N, out, convOut(x.H, k, s, pad), convOut(x.W, k, s, pad))
	if f.err != nil {
		return y
	}
	if bias == nil {
		bias = make([]float32, out)
	}
	c := ConvArgs{Weight: f.put(w), Bias: f.put(bias), K: k, S: s, Pad: pad, Act: ActNone}
	scratch, err := f.dev.Alloc(f.dev.ConvScratch(y, x, c))
	if err != nil {
		f.err = fmt.Errorf("conv scratch: %w", err)
		return y
	}
	if f.err == nil {
		f.err = f.dev.Conv(y, x, c, scratch)
	}
	return y
}

// affine applies y = act(y*t + b + add) in place (t, b: y.C values; add
// empty or y's shape).
func (f *trainFwd) affine(y NCHW, t, b []float32, add NCHW, act Act) {
	if f.err == nil {
		f.err = f.dev.Affine(y, y, AffineArgs{Scale: f.put(t), Shift: f.put(b), Add: add, Act: act})
	}
}

// block is a training-form Conv block on x: act(BN(conv(x))), or for a
// RepConv act(BN(conv3x3(x)) + PointBN(conv1x1(x))); N x c.Out x Ho x Wo.
func (f *trainFwd) block(x NCHW, c *TrainConv, act Act) NCHW {
	y := f.conv(x, c.Weight, c.Out, c.K, c.S, c.Pad, nil)
	var add NCHW
	if c.Point != nil {
		add = f.conv(x, c.Point.Weight, c.Out, 1, c.S, 0, nil)
		t, b := c.Point.BN.scale()
		f.affine(add, t, b, NCHW{}, ActNone)
	}
	t, b := c.BN.scale()
	f.affine(y, t, b, add, act)
	return y
}

// TrainOutputs are the raw outputs of a training-form forward, each level
// dense 1 x NA x H/stride x W/stride x (5+NC) (the layout of
// Plan.Forward): Lead from IDetect, Aux from IAuxDetect's aux convs.
type TrainOutputs struct {
	Lead, Aux [][]float32
}

// Forward runs the training form in eval mode on dev for one
// 1 x 3 x size x size input (size a multiple of the largest stride) and
// returns the lead and aux outputs. It allocates its buffers per call
// (an evaluation and test path; a training step needs a prepared plan).
func (tm *TrainModel) Forward(dev Device, input []float32, size int) (*TrainOutputs, error) {
	out, err := tm.forward(dev, input, size)
	if err != nil {
		return nil, fmt.Errorf("tiny: train forward: %w", err)
	}
	return out, nil
}

// forward is Forward without the error prefix.
func (tm *TrainModel) forward(dev Device, input []float32, size int) (*TrainOutputs, error) {
	spec := &tm.Spec
	maxStride := 1
	for _, s := range spec.Strides {
		maxStride = max(maxStride, s)
	}
	if size <= 0 || size%maxStride != 0 {
		return nil, fmt.Errorf("input size %d is not a positive multiple of %d", size, maxStride)
	}
	if len(input) != 3*size*size {
		return nil, fmt.Errorf("input has %d values, want 1x3x%dx%d", len(input), size, size)
	}
	shapes, err := spec.Resolve(3, tm.NC)
	if err != nil {
		return nil, err
	}
	f := &trainFwd{dev: dev}
	in := f.alloc(1, 3, size, size)
	if f.err != nil {
		return nil, f.err
	}
	copy(in.Data, input)
	outs := make([]NCHW, len(spec.Layers))
	view := func(j int) NCHW {
		if j < 0 {
			return in
		}
		return outs[j]
	}
	na, no := spec.NumAnchors(), 5+tm.NC
	res := &TrainOutputs{}
	ci := 0
	for i, l := range spec.Layers {
		from := shapes[i].From
		x := view(from[0])
		switch l.Kind {
		case KindConv:
			if ci >= len(tm.Convs) || tm.Convs[ci].Layer != i {
				return nil, fmt.Errorf("layer %d: conv blocks do not match the spec", i)
			}
			outs[i] = f.block(x, &tm.Convs[ci], tm.Act)
			ci++
		case KindMaxPool:
			y := f.alloc(1, x.C, convOut(x.H, l.K, l.S, l.Pad), convOut(x.W, l.K, l.S, l.Pad))
			if f.err == nil {
				p := PoolArgs{K: l.K, S: l.S, Pad: l.Pad}
				var scratch []float32
				if scratch, f.err = dev.Alloc(dev.PoolScratch(y, x, p)); f.err == nil {
					f.err = dev.MaxPool(y, x, p, scratch)
				}
			}
			outs[i] = y
		case KindUpsample:
			y := f.alloc(1, x.C, 2*x.H, 2*x.W)
			if f.err == nil {
				f.err = dev.Upsample2x(y, x)
			}
			outs[i] = y
		case KindConcat:
			y := f.alloc(1, shapes[i].OutC, x.H, x.W)
			c0 := 0
			for _, j := range from {
				if f.err != nil {
					break
				}
				v := view(j)
				copy(y.Channels(c0, v.C).Image(0), v.Image(0))
				c0 += v.C
			}
			outs[i] = y
		case KindDetect:
			if len(tm.Heads) != len(from) {
				return nil, fmt.Errorf("%d detect convs for %d levels", len(tm.Heads), len(from))
			}
			for k, j := range from {
				res.Lead = append(res.Lead, f.leadHead(view(j), &tm.Heads[k], na, no))
			}
		}
		if f.err != nil {
			return nil, fmt.Errorf("layer %d (%v): %w", i, l.Kind, f.err)
		}
	}
	for k := range tm.AuxConvs {
		y := f.block(view(tm.AuxSrc[k]), &tm.AuxConvs[k], tm.Act)
		h := &tm.AuxHeads[k]
		dst := f.put(make([]float32, y.N*h.Out*y.H*y.W))
		if f.err == nil {
			c := ConvArgs{Weight: f.put(h.Weight), Bias: f.put(h.Bias), K: 1, S: 1, Act: ActNone}
			if f.err == nil {
				f.err = dev.Head(dst, y, c, na)
			}
		}
		if f.err != nil {
			return nil, fmt.Errorf("aux level %d: %w", k, f.err)
		}
		res.Aux = append(res.Aux, dst)
	}
	return res, nil
}

// leadHead is one IDetect level: conv(x + IA) * IM, returned in the head
// layout 1 x NA x H x W x NO.
func (f *trainFwd) leadHead(x NCHW, h *TrainHead, na, no int) []float32 {
	xa := f.alloc(x.N, x.C, x.H, x.W)
	if f.err != nil {
		return nil
	}
	f.affine(xa, ones(x.C), h.IA, x, ActNone) // xa = 0*1 + IA + x
	y := f.conv(xa, h.Weight, h.Out, 1, 1, 0, h.Bias)
	f.affine(y, h.IM, make([]float32, h.Out), NCHW{}, ActNone)
	if f.err != nil {
		return nil
	}
	plane := y.Plane()
	dst := make([]float32, na*no*plane)
	for a := 0; a < na; a++ {
		for k := 0; k < no; k++ {
			src := y.Data[(a*no+k)*plane:][:plane]
			for p, v := range src {
				dst[(a*plane+p)*no+k] = v
			}
		}
	}
	return dst
}
