package tiny

import "fmt"

// Shape checks of the TrainDevice ops, shared by every implementation:
// each op checks once, at entry, and returns an error instead of writing
// out of bounds.

// sameShape reports an error when b's shape differs from a's.
func sameShape(op, an string, a NCHW, bn string, b NCHW) error {
	if a.N != b.N || a.C != b.C || a.H != b.H || a.W != b.W {
		return fmt.Errorf("%s: %s %dx%dx%dx%d, want the %s's %dx%dx%dx%d", op, bn, b.N, b.C, b.H, b.W, an, a.N, a.C, a.H, a.W)
	}
	return nil
}

// checkConvBackward checks ConvBackward's shapes: dy is the output of the
// conv c of x, dW (and dB when non-nil) match the weights (and biases),
// dx (when dx.Data is non-nil) has x's shape. c.Bias is not read.
func checkConvBackward(dx, dy, x NCHW, c ConvArgs, dW, dB []float32) error {
	if err := x.check("conv backward input"); err != nil {
		return err
	}
	if err := dy.check("conv backward output gradient"); err != nil {
		return err
	}
	if c.K <= 0 || c.S <= 0 || c.Pad < 0 || c.Pad >= c.K {
		return fmt.Errorf("conv backward: bad kernel %d stride %d pad %d (pad must be below k)", c.K, c.S, c.Pad)
	}
	if c.Act != ActNone && c.Act != "" {
		return fmt.Errorf("conv backward: activation %q, want none (its backward is ActBackward)", c.Act)
	}
	if x.H+2*c.Pad < c.K || x.W+2*c.Pad < c.K {
		return fmt.Errorf("conv backward: kernel %d larger than the padded %dx%d input", c.K, x.H, x.W)
	}
	ho, wo := convOut(x.H, c.K, c.S, c.Pad), convOut(x.W, c.K, c.S, c.Pad)
	if dy.N != x.N || dy.H != ho || dy.W != wo {
		return fmt.Errorf("conv backward: output gradient %dx%dx%dx%d, want %dx%dx%dx%d for input %dx%dx%dx%d k%d s%d p%d",
			dy.N, dy.C, dy.H, dy.W, x.N, dy.C, ho, wo, x.N, x.C, x.H, x.W, c.K, c.S, c.Pad)
	}
	nw := dy.C * x.C * c.K * c.K
	if len(c.Weight) != nw {
		return fmt.Errorf("conv backward: %d weights, want %d (%dx%dx%dx%d)", len(c.Weight), nw, dy.C, x.C, c.K, c.K)
	}
	if len(dW) != nw {
		return fmt.Errorf("conv backward: weight gradient has %d values, want %d (%dx%dx%dx%d)", len(dW), nw, dy.C, x.C, c.K, c.K)
	}
	if dB != nil && len(dB) != dy.C {
		return fmt.Errorf("conv backward: bias gradient has %d values, want %d", len(dB), dy.C)
	}
	if dx.Data != nil {
		if err := dx.check("conv backward input gradient"); err != nil {
			return err
		}
		if err := sameShape("conv backward", "input", x, "input gradient", dx); err != nil {
			return err
		}
	}
	return nil
}

// checkActBackward checks ActBackward's shapes and activation.
func checkActBackward(dy, y NCHW, act Act) error {
	if err := dy.check("act backward gradient"); err != nil {
		return err
	}
	if err := y.check("act backward output"); err != nil {
		return err
	}
	if act != ActReLU && act != ActLeaky && act != ActNone {
		return fmt.Errorf("act backward: unknown activation %q", act)
	}
	return sameShape("act backward", "output", y, "gradient", dy)
}

// checkBNArgs checks the parameters and state of a training BatchNorm of
// c channels.
func checkBNArgs(op string, c int, a BNArgs) error {
	for _, v := range []struct {
		name string
		s    []float32
	}{
		{"weight", a.Weight}, {"bias", a.Bias}, {"running mean", a.RunMean},
		{"running var", a.RunVar}, {"saved mean", a.SaveMean}, {"saved inverse std", a.SaveInvStd},
	} {
		if len(v.s) != c {
			return fmt.Errorf("%s: %s has %d values, want %d channels", op, v.name, len(v.s), c)
		}
	}
	if a.Mode != BNFrozen && a.Mode != BNBatch {
		return fmt.Errorf("%s: unknown mode %v", op, a.Mode)
	}
	if !(a.Eps >= 0) {
		return fmt.Errorf("%s: bad eps %v", op, a.Eps)
	}
	return nil
}

// checkBNForward checks BNForward's shapes: y, x and a.Add (when non-nil)
// have one shape, every per-channel slice has C values, and batch mode
// has more than one value per channel.
func checkBNForward(y, x NCHW, a BNArgs) error {
	if err := x.check("bn forward input"); err != nil {
		return err
	}
	if err := y.check("bn forward output"); err != nil {
		return err
	}
	if err := sameShape("bn forward", "input", x, "output", y); err != nil {
		return err
	}
	if err := checkBNArgs("bn forward", x.C, a); err != nil {
		return err
	}
	if a.Mode == BNBatch && x.N*x.H*x.W < 2 {
		return fmt.Errorf("bn forward: batch statistics need more than 1 value per channel, have %dx%dx%d", x.N, x.H, x.W)
	}
	if !(a.Momentum >= 0 && a.Momentum <= 1) {
		return fmt.Errorf("bn forward: momentum %v outside [0, 1]", a.Momentum)
	}
	if a.Act != ActReLU && a.Act != ActLeaky && a.Act != ActNone {
		return fmt.Errorf("bn forward: unknown activation %q", a.Act)
	}
	if a.Add.Data != nil {
		if err := a.Add.check("bn forward residual"); err != nil {
			return err
		}
		if err := sameShape("bn forward", "input", x, "residual", a.Add); err != nil {
			return err
		}
	}
	return nil
}

// checkBNBackward checks BNBackward's shapes: dx, dy and x have one shape,
// dGamma and dBeta and the saved statistics have C values.
func checkBNBackward(dx, dy, x NCHW, a BNArgs, dGamma, dBeta []float32) error {
	if err := x.check("bn backward input"); err != nil {
		return err
	}
	if err := dy.check("bn backward output gradient"); err != nil {
		return err
	}
	if err := dx.check("bn backward input gradient"); err != nil {
		return err
	}
	if err := sameShape("bn backward", "input", x, "output gradient", dy); err != nil {
		return err
	}
	if err := sameShape("bn backward", "input", x, "input gradient", dx); err != nil {
		return err
	}
	if err := checkBNArgs("bn backward", x.C, a); err != nil {
		return err
	}
	if len(dGamma) != x.C || len(dBeta) != x.C {
		return fmt.Errorf("bn backward: %d weight and %d bias gradients for %d channels", len(dGamma), len(dBeta), x.C)
	}
	return nil
}

// checkPoolBackward checks MaxPoolBackward's shapes: dy is the output of
// the pool p of x, dx has x's shape.
func checkPoolBackward(dx, dy, x NCHW, p PoolArgs) error {
	if err := checkPool(dy, x, p); err != nil {
		return fmt.Errorf("maxpool backward: %w", err)
	}
	if err := dx.check("maxpool backward input gradient"); err != nil {
		return err
	}
	return sameShape("maxpool backward", "input", x, "input gradient", dx)
}

// checkUpsampleBackward checks Upsample2xBackward's shapes: dy is
// N x C x 2H x 2W for dx N x C x H x W.
func checkUpsampleBackward(dx, dy NCHW) error {
	if err := checkUpsample(dy, dx); err != nil {
		return fmt.Errorf("upsample backward: %w", err)
	}
	return nil
}
