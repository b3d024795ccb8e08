package tiny

// Inference-mode BatchNorm on the CPU: a per-channel affine map, an
// optional residual and the activation, in one pass.

// Affine computes y = act(x*Scale[c] + Shift[c] + r) (see Device.Affine):
// x, y and a.Add are N x C x H x W (any batch stride); y may alias x or
// a.Add. Each (image, channel) plane is one work item.
func (d *CPU) Affine(y, x NCHW, a AffineArgs) error {
	if err := checkAffine(y, x, a); err != nil {
		return err
	}
	d.flush() // a batch's queued ops first: this one runs now
	d.mu.Lock()
	defer d.mu.Unlock()
	t := &d.affine
	t.y, t.x, t.a = y, x, a
	d.parallel(x.N*x.C, t)
	*t = affineTask{}
	return nil
}

// affineTask is Affine's loop body: item i is plane i.
type affineTask struct {
	y, x NCHW
	a    AffineArgs
}

func (t *affineTask) run(_, i int) {
	x, y, a := &t.x, &t.y, &t.a
	plane := x.Plane()
	n, c := i/x.C, i%x.C
	xs := x.Data[n*x.BatchStride()+c*plane:][:plane]
	ys := y.Data[n*y.BatchStride()+c*plane:][:plane]
	var rs []float32
	if a.Add.Data != nil {
		rs = a.Add.Data[n*a.Add.BatchStride()+c*plane:][:plane]
	}
	affinePlane(ys, xs, rs, a.Scale[c], a.Shift[c], a.Act)
}

// affinePlane is one channel plane of Affine: y[i] = act(x[i]*s + b (+
// r[i])). The product is rounded to float32 before the sum (no FMA), as
// PyTorch's eval BatchNorm on the CPU.
func affinePlane(y, x, r []float32, s, b float32, act Act) {
	for i, v := range x {
		v = float32(v*s) + b
		if r != nil {
			v += r[i]
		}
		switch {
		case v >= 0 || act == ActNone:
		case act == ActReLU:
			v = 0
		default:
			v *= LeakySlope
		}
		y[i] = v
	}
}
