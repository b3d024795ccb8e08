package tiny

import "fmt"

// Backward of the training graph: the aux heads and aux blocks first,
// then the layers in reverse order, each consumer adding its input
// gradient into the producer's gradient view before the producer runs.

// Backward propagates the caller's output gradients (GradOutputs) through
// the network of the last Forward and ADDS the gradient of every
// parameter to its Param.Grad (ZeroGrad clears them). It reads the
// activations that Forward saved and the model's weights, which must not
// change in between; it may run more than once.
func (p *TrainPlan) Backward() error {
	if !p.forwarded {
		return fmt.Errorf("tiny: train backward: no successful Forward to go back through")
	}
	for _, g := range p.clearGrads {
		clear(g)
	}
	for k := len(p.auxHeads) - 1; k >= 0; k-- {
		h := &p.auxHeads[k]
		blk := &p.auxBlocks[h.block]
		err := p.auxHeadBackward(h, blk)
		if err == nil {
			err = p.blockBackward(blk)
		}
		if err != nil {
			return fmt.Errorf("tiny: train backward: aux level %d: %w", k, err)
		}
	}
	dev := p.dev
	for i := len(p.steps) - 1; i >= 0; i-- {
		st := &p.steps[i]
		var err error
		switch st.kind {
		case KindConv:
			err = p.blockBackward(&p.blocks[st.block])
		case KindMaxPool:
			if st.dx.Data != nil {
				err = dev.MaxPoolBackward(st.dx, st.dy, st.x, st.pool)
			}
		case KindUpsample:
			if st.dx.Data != nil {
				err = dev.Upsample2xBackward(st.dx, st.dy)
			}
		case KindConcat:
			for _, c := range st.copies {
				if c.dsrc.Data == nil {
					continue
				}
				for n := 0; n < c.src.N; n++ {
					d, s := c.dsrc.Image(n), c.ddst.Image(n)
					for j, v := range s {
						d[j] += v
					}
				}
			}
		case KindDetect:
			for k := len(p.heads) - 1; k >= 0; k-- {
				if err = p.leadBackward(&p.heads[k]); err != nil {
					break
				}
			}
		}
		if err != nil {
			return fmt.Errorf("tiny: train backward: layer %d (%v): %w", st.layer, st.kind, err)
		}
	}
	return nil
}

// blockBackward is a Conv block's backward: dy (complete: every consumer
// has run) times the activation's derivative is the gradient of the BN
// output (and of the RepConv 1x1 branch's BN output, the residual); the
// BN backward turns it into the conv output's gradient, in place in dy
// (the 1x1 branch's into the dpre1 scratch); the conv backward adds the
// input gradient to dx and the weight gradient to dW.
func (p *TrainPlan) blockBackward(b *trainBlock) error {
	dev := p.dev
	if err := dev.ActBackward(b.dy, b.y, b.act); err != nil {
		return fmt.Errorf("%s: activation: %w", b.name, err)
	}
	var dpre1 NCHW
	if b.point {
		dpre1 = NCHW{Data: p.dpre1[:len(b.pre1.Data)], N: b.pre1.N, C: b.pre1.C, H: b.pre1.H, W: b.pre1.W}
		if err := dev.BNBackward(dpre1, b.dy, b.pre1, b.bn1, b.dGamma1, b.dBeta1); err != nil {
			return fmt.Errorf("%s: 1x1 batchnorm: %w", b.name, err)
		}
	}
	if err := dev.BNBackward(b.dy, b.dy, b.pre, b.bn, b.dGamma, b.dBeta); err != nil {
		return fmt.Errorf("%s: batchnorm: %w", b.name, err)
	}
	if err := dev.ConvBackward(b.dx, b.dy, b.x, b.conv, b.dW, nil, p.scratch); err != nil {
		return fmt.Errorf("%s: conv: %w", b.name, err)
	}
	if b.point {
		if err := dev.ConvBackward(b.dx, dpre1, b.x, b.conv1, b.dW1, nil, p.scratch); err != nil {
			return fmt.Errorf("%s: 1x1 conv: %w", b.name, err)
		}
	}
	return nil
}

// auxHeadBackward is an aux detect conv's backward: the head-layout
// gradient permuted to NCHW (dz scratch), then the conv backward into the
// aux block's output gradient, the weight and the bias.
func (p *TrainPlan) auxHeadBackward(h *auxHead, blk *trainBlock) error {
	y := blk.y
	na, no, pix, oc := p.na, p.no, y.H*y.W, len(h.conv.Bias)
	dz := NCHW{Data: p.dz[:y.N*oc*pix], N: y.N, C: oc, H: y.H, W: y.W}
	for n := 0; n < y.N; n++ {
		for a := 0; a < na; a++ {
			for k := 0; k < no; k++ {
				o := a*no + k
				src := h.dout[(n*na+a)*pix*no+k:]
				dst := dz.Data[(n*oc+o)*pix:][:pix]
				for q := range dst {
					dst[q] = src[q*no]
				}
			}
		}
	}
	if err := p.dev.ConvBackward(blk.dy, dz, y, h.conv, h.dW, h.dB, p.scratch); err != nil {
		return fmt.Errorf("aux detect conv: %w", err)
	}
	return nil
}

// leadBackward is an IDetect level's backward (host loops; device memory
// is host-addressable): with g the head-layout gradient, dIM += sum of
// g*z per channel and dz = g*IM in NCHW; the conv backward gives dW, db
// and dxa (scratch); dIA += sum of dxa per channel and dx += dxa.
func (p *TrainPlan) leadBackward(h *leadHead) error {
	na, no, pix, oc, ic := p.na, p.no, h.pix, h.outC, h.inC
	nb := h.z.N
	dz := NCHW{Data: p.dz[:nb*oc*pix], N: nb, C: oc, H: h.z.H, W: h.z.W}
	for a := 0; a < na; a++ {
		for k := 0; k < no; k++ {
			o := a*no + k
			m := h.im[o]
			var sum float64
			for n := 0; n < nb; n++ {
				src := h.dout[(n*na+a)*pix*no+k:]
				z := h.z.Data[(n*oc+o)*pix:][:pix]
				dst := dz.Data[(n*oc+o)*pix:][:pix]
				var s float32
				for q := range dst {
					g := src[q*no]
					s += g * z[q]
					dst[q] = g * m
				}
				sum += float64(s)
			}
			h.dIM[o] += float32(sum)
		}
	}
	dxa := NCHW{Data: p.dxa[:len(h.xa.Data)], N: nb, C: ic, H: h.xa.H, W: h.xa.W}
	clear(dxa.Data)
	if err := p.dev.ConvBackward(dxa, dz, h.xa, h.conv, h.dW, h.dB, p.scratch); err != nil {
		return fmt.Errorf("detect level %d: conv: %w", h.level, err)
	}
	for c := 0; c < ic; c++ {
		var sum float64
		for n := 0; n < nb; n++ {
			src := dxa.Data[(n*ic+c)*pix:][:pix]
			var s float32
			if h.dx.Data == nil {
				for _, v := range src {
					s += v
				}
			} else {
				dst := h.dx.Data[n*h.dx.BatchStride()+c*pix:][:pix]
				for q, v := range src {
					s += v
					dst[q] += v
				}
			}
			sum += float64(s)
		}
		h.dIA[c] += float32(sum)
	}
	return nil
}
