package tiny

import "fmt"

// Max-pool forward on the CPU, separable: a KxK max is a K-wide max along
// each input row (into per-goroutine scratch, H x Wo) followed by a K-tall
// max down the columns of that, so a window costs 2K comparisons instead of
// K*K (the SPP windows are 5, 9 and 13 wide). Padding is left out of the
// window rather than filled with -Inf: the same result, since Pad <= K/2
// keeps at least one real value in every window.

// PoolScratch implements Device: one H x Wo plane per goroutine (none for
// the 2x2 stride-2 window, pooled in one pass).
func (d *CPU) PoolScratch(y, x NCHW, p PoolArgs) int {
	if p.K == 2 && p.S == 2 && p.Pad == 0 {
		return 0
	}
	return min(d.threads, x.N*x.C) * x.H * y.W
}

// MaxPool implements Device: each of the N*C planes on one goroutine.
func (d *CPU) MaxPool(y, x NCHW, p PoolArgs, scratch []float32) error {
	if err := checkPool(y, x, p); err != nil {
		return err
	}
	plane := x.H * y.W
	if need := d.PoolScratch(y, x, p); len(scratch) < need {
		return fmt.Errorf("maxpool: scratch has %d values, want %d (see PoolScratch)", len(scratch), need)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	t := &d.pool2
	*t = poolTask{y: y, x: x, p: p, scratch: scratch, plane: plane}
	d.parallel(x.N*x.C, t)
	*t = poolTask{}
	return nil
}

// poolTask is MaxPool's loop body: item i is plane i.
type poolTask struct {
	y, x    NCHW
	p       PoolArgs
	scratch []float32
	plane   int
}

func (t *poolTask) run(w, i int) {
	x, y, p := &t.x, &t.y, t.p
	hw, ohw := x.Plane(), y.Plane()
	n, c := i/x.C, i%x.C
	src := x.Image(n)[c*hw : (c+1)*hw]
	dst := y.Image(n)[c*ohw : (c+1)*ohw]
	if p.K == 2 && p.S == 2 && p.Pad == 0 {
		maxPool2x2(dst, src, x.W, y.H, y.W)
		return
	}
	maxPoolPlane(dst, src, t.scratch[w*t.plane:(w+1)*t.plane], x.H, x.W, y.H, y.W, p)
}

// maxPoolPlane pools one h x w plane into ho x wo, through tmp (h x wo).
func maxPoolPlane(dst, src, tmp []float32, h, w, ho, wo int, p PoolArgs) {
	k, s, pad := p.K, p.S, p.Pad
	for iy := 0; iy < h; iy++ {
		in := src[iy*w : (iy+1)*w]
		out := tmp[iy*wo : (iy+1)*wo]
		for ox := range out {
			x0 := ox*s - pad
			x1 := min(x0+k, w)
			x0 = max(x0, 0)
			m := in[x0]
			for _, v := range in[x0+1 : x1] {
				m = max(m, v)
			}
			out[ox] = m
		}
	}
	for oy := 0; oy < ho; oy++ {
		y0 := oy*s - pad
		y1 := min(y0+k, h)
		y0 = max(y0, 0)
		out := dst[oy*wo : (oy+1)*wo]
		copy(out, tmp[y0*wo:(y0+1)*wo])
		for iy := y0 + 1; iy < y1; iy++ {
			row := tmp[iy*wo : (iy+1)*wo]
			for j, v := range row {
				out[j] = max(out[j], v)
			}
		}
	}
}

// maxPool2x2 is the MP layer (k2 s2 p0) in one pass: each output is the
// max of a 2x2 block of two input rows of width w.
func maxPool2x2(dst, src []float32, w, ho, wo int) {
	for oy := 0; oy < ho; oy++ {
		r0 := src[2*oy*w : 2*oy*w+2*wo]
		r1 := src[(2*oy+1)*w : (2*oy+1)*w+2*wo]
		out := dst[oy*wo : (oy+1)*wo]
		for ox := range out {
			out[ox] = max(r0[2*ox], r0[2*ox+1], r1[2*ox], r1[2*ox+1])
		}
	}
}
