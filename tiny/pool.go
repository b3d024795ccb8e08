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
	if need := d.PoolScratch(y, x, p); len(scratch) < need {
		return fmt.Errorf("maxpool: scratch has %d values, want %d (see PoolScratch)", len(scratch), need)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.maxPoolPlanes(y, x, p, scratch)
}
