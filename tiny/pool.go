package tiny

import "fmt"

// Max-pool forward on the CPU (the loops in C, cpu_blas.go), separable: a
// KxK max is a K-wide max along each input row (into per-goroutine
// scratch, H x Wo) followed by a K-tall max down the columns of that, so
// a window costs 2K comparisons instead of K*K (the SPP windows are 5, 9
// and 13 wide). Padding is left out of the
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
