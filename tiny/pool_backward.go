package tiny

/*
#cgo CFLAGS: -O3
#include <math.h>
#include <stddef.h>

// td_has_nan reports whether any of x[0..n) is a NaN.
static int td_has_nan(const float *x, int n) {
	int r = 0;
	for (int i = 0; i < n; i++) r |= x[i] != x[i];
	return r;
}

// TD_MORE(v, m) is PyTorch's update rule of a max-pool scan: v takes over
// when strictly greater or a NaN. Without NaNs in the plane it is v > m,
// a form the compiler vectorises; each kernel below comes in both forms
// (the exact one only runs on planes holding a NaN).
#define TD_MORE_EXACT(v, m) ((v) > (m) || (v) != (v))
#define TD_MORE_FAST(v, m) ((v) > (m))

// td_mp2_row_fast is one output row of the k2 s2 p0 pool's backward, no
// NaN: every position of each 2x2 block gets + g or + 0, so the loop has
// no branch and vectorises.
static void td_mp2_row_fast(float *restrict d0, float *restrict d1, const float *restrict r0,
		const float *restrict r1, const float *restrict gr, int wo) {
	for (int ox = 0; ox < wo; ox++) {
		const float a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], e = r1[2 * ox + 1];
		const int ub = b > a;
		const float m1 = ub ? b : a;
		const int uc = c > m1;
		const float m2 = uc ? c : m1;
		const int ue = e > m2;
		const float v = gr[ox];
		const float ge = ue ? v : 0.0f, r2 = ue ? 0.0f : v;
		const float gc = uc ? r2 : 0.0f, r3 = uc ? 0.0f : r2;
		const float gb = ub ? r3 : 0.0f, ga = ub ? 0.0f : r3;
		d0[2 * ox] += ga;
		d0[2 * ox + 1] += gb;
		d1[2 * ox] += gc;
		d1[2 * ox + 1] += ge;
	}
}

// td_maxpool2_bwd is the backward of one plane of the k2 s2 p0 pool (the
// MP layer; windows do not overlap): each g value goes to the first
// maximum of its 2x2 block.
static void td_maxpool2_bwd(float *dst, const float *g, const float *src, int h, int w, int ho, int wo) {
	const int exact = td_has_nan(src, h * w);
	for (int oy = 0; oy < ho; oy++) {
		const float *r0 = src + (size_t)2 * oy * w, *r1 = r0 + w;
		float *d0 = dst + (size_t)2 * oy * w, *d1 = d0 + w;
		const float *gr = g + (size_t)oy * wo;
		if (!exact) {
			td_mp2_row_fast(d0, d1, r0, r1, gr, wo);
			continue;
		}
		for (int ox = 0; ox < wo; ox++) {
			float m = r0[2 * ox];
			float *at = d0 + 2 * ox;
			if (TD_MORE_EXACT(r0[2 * ox + 1], m)) { m = r0[2 * ox + 1]; at = d0 + 2 * ox + 1; }
			if (TD_MORE_EXACT(r1[2 * ox], m)) { m = r1[2 * ox]; at = d1 + 2 * ox; }
			if (TD_MORE_EXACT(r1[2 * ox + 1], m)) { m = r1[2 * ox + 1]; at = d1 + 2 * ox + 1; }
			*at += gr[ox];
		}
	}
}

// TD_MAXPOOL_BWD defines the backward of one h x w plane of any window
// (k, s, pad <= k/2), separable: a row pass finds, for every input row
// and output column, the first maximum of the row's k-wide window (rmax,
// ridx: h x wo), then a column pass finds for every output the first row
// whose maximum takes over from the rows above. Together: the first
// maximum of the window in row-major order, in 2k comparisons instead of
// k*k. m and bi are wo values of scratch. Both passes run over the output
// columns innermost.
#define TD_MAXPOOL_BWD(NAME, MORE) \
static void NAME(float *dst, const float *g, const float *src, int h, int w, int ho, int wo, \
		int k, int s, int pad, float *restrict rmax, int *restrict ridx, float *restrict m, int *restrict bi) { \
	for (int iy = 0; iy < h; iy++) { \
		const float *restrict row = src + (size_t)iy * w; \
		float *restrict rm = rmax + (size_t)iy * wo; \
		int *restrict ri = ridx + (size_t)iy * wo; \
		for (int ox = 0; ox < wo; ox++) { \
			const int x0 = ox * s - pad; \
			rm[ox] = -INFINITY; \
			ri[ox] = x0 < 0 ? 0 : x0; \
		} \
		for (int kx = 0; kx < k; kx++) { \
			int lo = pad > kx ? (pad - kx + s - 1) / s : 0; \
			int hi = w - 1 + pad - kx >= 0 ? (w - 1 + pad - kx) / s + 1 : 0; \
			if (hi > wo) hi = wo; \
			if (lo > hi) lo = hi; \
			for (int ox = lo; ox < hi; ox++) { \
				const int ix = ox * s - pad + kx; \
				const float v = row[ix]; \
				const int u = MORE(v, rm[ox]); \
				rm[ox] = u ? v : rm[ox]; \
				ri[ox] = u ? ix : ri[ox]; \
			} \
		} \
	} \
	for (int oy = 0; oy < ho; oy++) { \
		int y0 = oy * s - pad, y1 = y0 + k; \
		if (y0 < 0) y0 = 0; \
		if (y1 > h) y1 = h; \
		for (int ox = 0; ox < wo; ox++) { \
			m[ox] = -INFINITY; \
			bi[ox] = y0 * w + ridx[(size_t)y0 * wo + ox]; \
		} \
		for (int iy = y0; iy < y1; iy++) { \
			const float *restrict rm = rmax + (size_t)iy * wo; \
			const int *restrict ri = ridx + (size_t)iy * wo; \
			for (int ox = 0; ox < wo; ox++) { \
				const float v = rm[ox]; \
				const int u = MORE(v, m[ox]); \
				m[ox] = u ? v : m[ox]; \
				bi[ox] = u ? iy * w + ri[ox] : bi[ox]; \
			} \
		} \
		const float *gr = g + (size_t)oy * wo; \
		for (int ox = 0; ox < wo; ox++) dst[bi[ox]] += gr[ox]; \
	} \
}

TD_MAXPOOL_BWD(td_maxpool_bwd_fast, TD_MORE_FAST)
TD_MAXPOOL_BWD(td_maxpool_bwd_exact, TD_MORE_EXACT)

// td_maxpool_bwd is the backward of one plane of any window (see
// TD_MAXPOOL_BWD), exact on planes holding a NaN.
static void td_maxpool_bwd(float *dst, const float *g, const float *src, int h, int w, int ho, int wo,
		int k, int s, int pad, float *rmax, int *ridx, float *m, int *bi) {
	if (td_has_nan(src, h * w))
		td_maxpool_bwd_exact(dst, g, src, h, w, ho, wo, k, s, pad, rmax, ridx, m, bi);
	else
		td_maxpool_bwd_fast(dst, g, src, h, w, ho, wo, k, s, pad, rmax, ridx, m, bi);
}
*/
import "C"

import "unsafe"

// Max-pool and upsample backward on the CPU, one (image, channel) plane
// per work item: every write of an item lands in its own plane of dx, so
// overlapping windows (the SPP pools, stride 1) simply accumulate.

// MaxPoolBackward implements TrainDevice: each dy value is added to the
// dx position of its window's first maximum in row-major order (PyTorch's
// CPU kernel: a strictly greater value, or a NaN, takes over), padding
// never winning. Windows other than k2 s2 p0 use per-goroutine scratch
// the device keeps (grown on the first call that needs more).
func (d *CPU) MaxPoolBackward(dx, dy, x NCHW, p PoolArgs) error {
	if err := checkPoolBackward(dx, dy, x, p); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	per := x.H*dy.W + dy.W
	if need := d.threads * per; !(p.K == 2 && p.S == 2 && p.Pad == 0) && len(d.poolVal) < need {
		d.poolVal = make([]float32, need)
		d.poolIdx = make([]int32, need)
	}
	t := &d.poolBwd
	*t = poolBackwardTask{dx: dx, dy: dy, x: x, p: p, per: per, val: d.poolVal, idx: d.poolIdx}
	d.parallel(x.N*x.C, t)
	*t = poolBackwardTask{}
	return nil
}

// poolBackwardTask is MaxPoolBackward's loop body: item i is plane i;
// worker w uses values [w*per, (w+1)*per) of val and idx.
type poolBackwardTask struct {
	dx, dy, x NCHW
	p         PoolArgs
	per       int
	val       []float32
	idx       []int32
}

func (t *poolBackwardTask) run(w, i int) {
	dx, dy, x, p := &t.dx, &t.dy, &t.x, t.p
	hw, ohw := x.Plane(), dy.Plane()
	n, c := i/x.C, i%x.C
	src := x.Data[n*x.BatchStride()+c*hw:][:hw]
	dst := dx.Data[n*dx.BatchStride()+c*hw:][:hw]
	g := dy.Data[n*dy.BatchStride()+c*ohw:][:ohw]
	if p.K == 2 && p.S == 2 && p.Pad == 0 {
		C.td_maxpool2_bwd(fptr(dst), fptr(g), fptr(src), C.int(x.H), C.int(x.W), C.int(dy.H), C.int(dy.W))
		return
	}
	rows := x.H * dy.W
	val := t.val[w*t.per : (w+1)*t.per]
	idx := t.idx[w*t.per : (w+1)*t.per]
	C.td_maxpool_bwd(fptr(dst), fptr(g), fptr(src), C.int(x.H), C.int(x.W), C.int(dy.H), C.int(dy.W),
		C.int(p.K), C.int(p.S), C.int(p.Pad), fptr(val), iptr(idx), fptr(val[rows:]), iptr(idx[rows:]))
}

// iptr is the C view of an int32 slice.
func iptr(s []int32) *C.int { return (*C.int)(unsafe.Pointer(unsafe.SliceData(s))) }

// Upsample2xBackward implements TrainDevice: dx(n, c, i, j) += the sum of
// the 2x2 block of dy at (2i, 2j).
func (d *CPU) Upsample2xBackward(dx, dy NCHW) error {
	if err := checkUpsampleBackward(dx, dy); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	t := &d.upBwd
	*t = upsampleBackwardTask{dx: dx, dy: dy}
	d.parallel(dx.N*dx.C, t)
	*t = upsampleBackwardTask{}
	return nil
}

// upsampleBackwardTask is Upsample2xBackward's loop body: item i is plane
// i of dx.
type upsampleBackwardTask struct{ dx, dy NCHW }

func (t *upsampleBackwardTask) run(_, i int) {
	dx, dy := &t.dx, &t.dy
	h, w := dx.H, dx.W
	n, c := i/dx.C, i%dx.C
	dst := dx.Data[n*dx.BatchStride()+c*h*w:][:h*w]
	src := dy.Data[n*dy.BatchStride()+c*4*h*w:][:4*h*w]
	for r := 0; r < h; r++ {
		out := dst[r*w : (r+1)*w]
		a := src[2*r*2*w : (2*r+1)*2*w]
		b := src[(2*r+1)*2*w : (2*r+2)*2*w]
		for j := range out {
			out[j] += (a[2*j] + a[2*j+1]) + (b[2*j] + b[2*j+1])
		}
	}
}
