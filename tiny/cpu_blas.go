package tiny

/*
#cgo CFLAGS: -O3
#cgo LDFLAGS: -lopenblas
#include <stddef.h>
#include <string.h>
#include <cblas.h>
#include "im2col.h"
#include "pool.h"

// bias_act adds bias[o] to cols values of each of rows rows of y (row
// stride ld), then applies act (0 none, 1 ReLU, 2 LeakyReLU(slope)).
// Plain loops the compiler vectorises.
static void bias_act(float *y, int rows, int cols, int ld, const float *bias, int act, float slope) {
	for (int o = 0; o < rows; o++) {
		float *r = y + (size_t)o * ld;
		const float b = bias[o];
		if (act == 1) {
			for (int i = 0; i < cols; i++) { float v = r[i] + b; r[i] = v > 0 ? v : 0; }
		} else if (act == 2) {
			for (int i = 0; i < cols; i++) { float v = r[i] + b; r[i] = v > 0 ? v : v * slope; }
		} else {
			for (int i = 0; i < cols; i++) r[i] += b;
		}
	}
}

// add_bias_rows adds bias[j] to column j of each of rows rows of y (row
// stride ld, cols columns).
static void add_bias_rows(float *y, int rows, int cols, int ld, const float *bias) {
	for (int i = 0; i < rows; i++) {
		float *r = y + (size_t)i * ld;
		for (int j = 0; j < cols; j++) r[j] += bias[j];
	}
}

// max_pool_plane pools one h x w plane into ho x wo (window k, stride s,
// padding pad, which Pad <= K/2 keeps out of every window), separably: a
// k-wide max along each input row into tmp (h x wo), then a k-tall max
// down the columns of tmp. The comparisons are written so the compiler
// vectorises them (no NaN special case: max-pool inputs are finite).
static void max_pool_plane(float *dst, const float *src, float *tmp, int h, int w, int ho, int wo,
		int k, int s, int pad) {
	const int taps = s == 1 && 2 * pad < k;
	for (int iy = 0; iy < h && taps; iy++) {
		// stride 1: the window's taps one after another over the row,
		// each over the outputs it reaches (tap pad, in[ox], reaches all:
		// 2*pad < k, so wo <= w)
		const float *in = src + (size_t)iy * w;
		float *out = tmp + (size_t)iy * wo;
		memcpy(out, in, sizeof(float) * wo);
		for (int t = 0; t < k; t++) {
			if (t == pad) continue;
			int lo = pad - t, hi = w + pad - t; // 0 <= ox-pad+t < w
			if (lo < 0) lo = 0;
			if (hi > wo) hi = wo;
			for (int ox = lo; ox < hi; ox++) out[ox] = in[ox + t - pad] > out[ox] ? in[ox + t - pad] : out[ox];
		}
	}
	for (int iy = 0; iy < h && !taps; iy++) {
		const float *in = src + (size_t)iy * w;
		float *out = tmp + (size_t)iy * wo;
		for (int ox = 0; ox < wo; ox++) {
			int x0 = ox * s - pad, x1 = x0 + k;
			if (x1 > w) x1 = w;
			if (x0 < 0) x0 = 0;
			float m = in[x0];
			for (int j = x0 + 1; j < x1; j++) m = in[j] > m ? in[j] : m;
			out[ox] = m;
		}
	}
	for (int oy = 0; oy < ho; oy++) {
		int y0 = oy * s - pad, y1 = y0 + k;
		if (y1 > h) y1 = h;
		if (y0 < 0) y0 = 0;
		float *out = dst + (size_t)oy * wo;
		memcpy(out, tmp + (size_t)y0 * wo, sizeof(float) * wo);
		for (int iy = y0 + 1; iy < y1; iy++) {
			const float *row = tmp + (size_t)iy * wo;
			for (int j = 0; j < wo; j++) out[j] = row[j] > out[j] ? row[j] : out[j];
		}
	}
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define Y7_SAME_MAX_VEC 64 // planes of up to 64 vectors (1024 values)
#define Y7_SAME_MAX_K 13

// same_masks are the lane masks of max_pool_same for one plane shape:
// per vector, the lanes inside the plane (all) and those whose tap t
// stays inside their row (cm) or column (rm).
typedef struct {
	__mmask16 cm[Y7_SAME_MAX_VEC][Y7_SAME_MAX_K], rm[Y7_SAME_MAX_VEC][Y7_SAME_MAX_K], all[Y7_SAME_MAX_VEC];
} same_masks;

static void make_same_masks(same_masks *mk, int h, int w, int k) {
	const int hw = h * w, nv = (hw + 15) / 16, pad = (k - 1) / 2;
	for (int v = 0; v < nv; v++) {
		mk->all[v] = 0;
		for (int t = 0; t < k; t++) mk->cm[v][t] = mk->rm[v][t] = 0;
		for (int l = 0; l < 16 && 16 * v + l < hw; l++) {
			const int q = 16 * v + l, oy = q / w, ox = q % w;
			const __mmask16 bit = (__mmask16)(1u << l);
			mk->all[v] |= bit;
			for (int t = 0; t < k; t++) {
				if (ox + t - pad >= 0 && ox + t - pad < w) mk->cm[v][t] |= bit;
				if (oy + t - pad >= 0 && oy + t - pad < h) mk->rm[v][t] |= bit;
			}
		}
	}
}

// max_pool_same pools one plane (h x w, h*w <= 16*Y7_SAME_MAX_VEC) with a
// k x k window, stride 1 and padding (k-1)/2 (k <= Y7_SAME_MAX_K), so the
// output has the input's shape: the SPP pools. Each pass (along rows into
// tmp, then down columns) runs over the plane as one flat array of
// vectors, every tap a masked load and max (masks from make_same_masks).
__attribute__((target("avx512f")))
static void max_pool_same(float *out, const float *in, float *tmp, int h, int w, int k, const same_masks *mk) {
	const int nv = (h * w + 15) / 16, pad = (k - 1) / 2;
	for (int v = 0; v < nv; v++) {
		const float *c = in + 16 * v;
		__m512 m = _mm512_maskz_loadu_ps(mk->all[v], c);
		for (int t = 0; t < k; t++) {
			if (t != pad) m = _mm512_mask_max_ps(m, mk->cm[v][t], m, _mm512_maskz_loadu_ps(mk->cm[v][t], c + (t - pad)));
		}
		_mm512_mask_storeu_ps(tmp + 16 * v, mk->all[v], m);
	}
	for (int v = 0; v < nv; v++) {
		const float *c = tmp + 16 * v;
		__m512 m = _mm512_maskz_loadu_ps(mk->all[v], c);
		for (int t = 0; t < k; t++) {
			if (t != pad) m = _mm512_mask_max_ps(m, mk->rm[v][t], m, _mm512_maskz_loadu_ps(mk->rm[v][t], c + (t - pad) * w));
		}
		_mm512_mask_storeu_ps(out + 16 * v, mk->all[v], m);
	}
}
#else
#define Y7_SAME_MAX_VEC 0
#define Y7_SAME_MAX_K 0
typedef struct { int unused; } same_masks;
static void make_same_masks(same_masks *mk, int h, int w, int k) {}
static void max_pool_same(float *out, const float *in, float *tmp, int h, int w, int k, const same_masks *mk) {}
#endif

// max_pool_2x2 is the k2 s2 p0 window in one pass over two input rows of
// width w per output row.
static void max_pool_2x2(float *dst, const float *src, int w, int ho, int wo) {
	for (int oy = 0; oy < ho; oy++) {
		const float *r0 = src + (size_t)2 * oy * w, *r1 = r0 + w;
		float *out = dst + (size_t)oy * wo;
		for (int ox = 0; ox < wo; ox++) {
			float a = r0[2 * ox] > r0[2 * ox + 1] ? r0[2 * ox] : r0[2 * ox + 1];
			float b = r1[2 * ox] > r1[2 * ox + 1] ? r1[2 * ox] : r1[2 * ox + 1];
			out[ox] = a > b ? a : b;
		}
	}
}

// The loop bodies of MaxPool, Upsample2x and Head, run on the C pool.

// pool_args are one max-pool's parameters: item i is planes [i*per,
// (i+1)*per) of the n*c, plane p being channel p%c of image p/c.
typedef struct {
	const float *x;
	float *y, *scratch;
	size_t xbatch, ybatch, perItem;
	int c, h, w, ho, wo, k, s, pad, per, planes, same;
} pool_args;

static void pool_item(const void *va, int worker, int i) {
	const pool_args *a = va;
	same_masks mk;
	if (a->same) make_same_masks(&mk, a->h, a->w, a->k);
	for (int p = i * a->per; p < (i + 1) * a->per && p < a->planes; p++) {
		const int n = p / a->c, ch = p % a->c;
		const float *src = a->x + n * a->xbatch + (size_t)ch * a->h * a->w;
		float *dst = a->y + n * a->ybatch + (size_t)ch * a->ho * a->wo;
		if (a->same) {
			max_pool_same(dst, src, a->scratch + worker * a->perItem, a->h, a->w, a->k, &mk);
		} else if (a->k == 2 && a->s == 2 && a->pad == 0) {
			max_pool_2x2(dst, src, a->w, a->ho, a->wo);
		} else {
			max_pool_plane(dst, src, a->scratch + worker * a->perItem, a->h, a->w, a->ho, a->wo, a->k, a->s, a->pad);
		}
	}
}

static int max_pool(y7_pool *pool, y7_queue *q, int items, pool_args a) {
	return y7_run_or_queue(pool, q, items, pool_item, &a, sizeof a);
}

// up_args are one 2x nearest upsample's parameters: item i is planes
// [i*per, (i+1)*per) as in pool_args.
typedef struct {
	const float *x;
	float *y;
	size_t xbatch, ybatch;
	int c, h, w, per, planes;
} up_args;

static void up_item(const void *va, int worker, int i) {
	const up_args *a = va;
	const int h = a->h, w = a->w;
	for (int p = i * a->per; p < (i + 1) * a->per && p < a->planes; p++) {
		const int n = p / a->c, ch = p % a->c;
		const float *src = a->x + n * a->xbatch + (size_t)ch * h * w;
		float *dst = a->y + n * a->ybatch + (size_t)ch * 4 * h * w;
		for (int r = 0; r < h; r++) {
			const float *in = src + (size_t)r * w;
			float *out = dst + (size_t)2 * r * 2 * w;
			for (int j = 0; j < w; j++) out[2 * j] = out[2 * j + 1] = in[j];
			memcpy(out + 2 * w, out, sizeof(float) * 2 * w);
		}
	}
}

static int upsample2x(y7_pool *pool, y7_queue *q, int items, up_args a) {
	return y7_run_or_queue(pool, q, items, up_item, &a, sizeof a);
}

// head_args are one detect conv's parameters: item i is position tile
// i%tiles (rows positions) of image i/tiles; for each anchor the GEMM
// X^T·W_a^T (positions x no) lands in the NA x H x W x NO layout.
typedef struct {
	float *dst;
	const float *x, *w, *bias;
	size_t xbatch;
	int in, hw, na, no, rows, tiles;
} head_args;

static void head_item(const void *va, int worker, int i) {
	const head_args *a = va;
	const int n = i / a->tiles, ti = i % a->tiles;
	const int p0 = ti * a->rows, p1 = p0 + a->rows < a->hw ? p0 + a->rows : a->hw;
	const float *img = a->x + n * a->xbatch;
	for (int an = 0; an < a->na; an++) {
		float *out = a->dst + ((size_t)(n * a->na + an) * a->hw + p0) * a->no;
		cblas_sgemm(CblasRowMajor, CblasTrans, CblasTrans, p1 - p0, a->no, a->in, 1,
			img + p0, a->hw, a->w + (size_t)an * a->no * a->in, a->in, 0, out, a->no);
		add_bias_rows(out, p1 - p0, a->no, a->no, a->bias + an * a->no);
	}
}

static int head(y7_pool *pool, y7_queue *q, int items, head_args a) {
	return y7_run_or_queue(pool, q, items, head_item, &a, sizeof a);
}
*/
import "C"

import "unsafe"

// This file is the package's cgo: OpenBLAS's SGEMM, and the two loops of
// the conv that Go does not vectorise (im2col and the bias+activation
// epilogue, 5-10x faster in C). Callers check every shape and length
// before calling in; the C code trusts them.

// setBLASThreads sets OpenBLAS's thread count for the whole process (the
// pthread build honours it; the OpenMP build reads OMP_NUM_THREADS).
func setBLASThreads(n int) { C.openblas_set_num_threads(C.int(n)) }

func fptr(s []float32) *C.float { return (*C.float)(unsafe.Pointer(unsafe.SliceData(s))) }

// sgemm computes C = A·B in row-major order: A is m x k with row stride
// lda, B is k x n with row stride ldb, C is m x n with row stride ldc.
func sgemm(m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	sgemmT(false, false, m, n, k, a, lda, b, ldb, c, ldc)
}

// sgemmT is sgemm with A stored transposed (k x m, row stride lda) when ta,
// and B stored transposed (n x k, row stride ldb) when tb.
func sgemmT(ta, tb bool, m, n, k int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int) {
	var tra, trb C.enum_CBLAS_TRANSPOSE = C.CblasNoTrans, C.CblasNoTrans
	if ta {
		tra = C.CblasTrans
	}
	if tb {
		trb = C.CblasTrans
	}
	C.cblas_sgemm(C.CblasRowMajor, tra, trb,
		C.blasint(m), C.blasint(n), C.blasint(k), 1,
		fptr(a), C.blasint(lda), fptr(b), C.blasint(ldb),
		0, fptr(c), C.blasint(ldc))
}

// biasAct adds bias[o] to columns [0, cols) of rows [m0, m1) of y (row
// stride ld) and applies act, in one pass.
func biasAct(y []float32, ld, m0, m1, cols int, bias []float32, act Act) {
	C.bias_act(fptr(y[m0*ld:]), C.int(m1-m0), C.int(cols), C.int(ld), fptr(bias[m0:]), actCode(act), C.float(LeakySlope))
}

// actCode is act as the C loops take it: 0 none, 1 ReLU, 2 LeakyReLU.
func actCode(act Act) C.int {
	switch act {
	case ActReLU:
		return 1
	case ActLeaky:
		return 2
	}
	return 0
}

// im2col fills rows [c0*K*K, c1*K*K) of the im2col matrix of one image for
// output rows [oy0, oy1): col row (c*K+ky)*K+kx, column (oy-oy0)*wo+ox holds
// x(c, oy*S-Pad+ky, ox*S-Pad+kx), or 0 in the padding. col has
// (oy1-oy0)*wo columns; x is the image's C x h x w values.
func im2col(col, x []float32, h, w int, c ConvArgs, c0, c1, oy0, oy1, wo int) {
	im2colSpan(col, x, h, w, c, c0, c1, oy0*wo, oy1*wo, wo)
}

// im2colSpan is im2col for the output positions [p0, p1) (row-major over
// the Ho x wo output; a span may start or end inside a row): col has p1-p0
// columns, column p-p0 for position p.
func im2colSpan(col, x []float32, h, w int, c ConvArgs, c0, c1, p0, p1, wo int) {
	nt := p1 - p0
	C.im2col(fptr(col[c0*c.K*c.K*nt:]), C.size_t(nt), fptr(x), C.int(h), C.int(w), C.int(c.K), C.int(c.S), C.int(c.Pad),
		C.int(c0), C.int(c1), C.int(p0), C.int(p1), C.int(wo))
}

// addBiasRows adds bias[j] to column j of rows [0, rows) of y (row stride
// ld, len(bias) columns).
func addBiasRows(y []float32, rows, ld int, bias []float32) {
	C.add_bias_rows(fptr(y), C.int(rows), C.int(len(bias)), C.int(ld), fptr(bias))
}

// maxPoolPlane pools one h x w plane into ho x wo, through tmp (h x wo).
func maxPoolPlane(dst, src, tmp []float32, h, w, ho, wo int, p PoolArgs) {
	C.max_pool_plane(fptr(dst), fptr(src), fptr(tmp), C.int(h), C.int(w), C.int(ho), C.int(wo),
		C.int(p.K), C.int(p.S), C.int(p.Pad))
}

// maxPool2x2 is the MP layer (k2 s2 p0) in one pass: each output is the
// max of a 2x2 block of two input rows of width w.
func maxPool2x2(dst, src []float32, w, ho, wo int) {
	C.max_pool_2x2(fptr(dst), fptr(src), C.int(w), C.int(ho), C.int(wo))
}

// maxPoolPlanes runs MaxPool's planes on the C pool (scratch: one H x Wo
// plane per worker, or none for the 2x2 window). The caller holds d.mu.
func (d *CPU) maxPoolPlanes(y, x NCHW, p PoolArgs, scratch []float32) error {
	a := C.pool_args{
		x: fptr(x.Data), y: fptr(y.Data), xbatch: C.size_t(x.BatchStride()), ybatch: C.size_t(y.BatchStride()),
		perItem: C.size_t(x.H * y.W), c: C.int(x.C), h: C.int(x.H), w: C.int(x.W), ho: C.int(y.H), wo: C.int(y.W),
		k: C.int(p.K), s: C.int(p.S), pad: C.int(p.Pad),
	}
	if len(scratch) > 0 {
		a.scratch = fptr(scratch)
	}
	per, items := d.planesPerItem(x.N*x.C, x.Plane())
	a.per, a.planes = C.int(per), C.int(x.N*x.C)
	if hasPackedGEMM && p.S == 1 && 2*p.Pad == p.K-1 && p.K <= C.Y7_SAME_MAX_K && x.Plane() <= 16*C.Y7_SAME_MAX_VEC {
		a.same = 1
	}
	if C.max_pool(d.cpool(), d.queue(), C.int(items), a) == 0 {
		return errBatchMemory
	}
	return nil
}

// planesPerItem groups planes of plane values each into work items: about
// planeItemValues values per item (one item per plane on large maps), and
// at least two items per thread where there are planes enough. It returns
// the planes per item and the number of items.
func (d *CPU) planesPerItem(planes, plane int) (per, items int) {
	const planeItemValues = 16384
	per = max(1, min(planeItemValues/max(1, plane), planes/(2*d.threads)))
	return per, (planes + per - 1) / per
}

// upsamplePlanes runs Upsample2x's planes on the C pool. The caller holds
// d.mu.
func (d *CPU) upsamplePlanes(y, x NCHW) error {
	a := C.up_args{x: fptr(x.Data), y: fptr(y.Data), xbatch: C.size_t(x.BatchStride()), ybatch: C.size_t(y.BatchStride()),
		c: C.int(x.C), h: C.int(x.H), w: C.int(x.W)}
	per, items := d.planesPerItem(x.N*x.C, x.Plane())
	a.per, a.planes = C.int(per), C.int(x.N*x.C)
	if C.upsample2x(d.cpool(), d.queue(), C.int(items), a) == 0 {
		return errBatchMemory
	}
	return nil
}

// headTiles runs Head's position tiles (rows positions each) on the C
// pool. The caller holds d.mu.
func (d *CPU) headTiles(dst []float32, x NCHW, c ConvArgs, na, rows, tiles int) error {
	a := C.head_args{dst: fptr(dst), x: fptr(x.Data), w: fptr(c.Weight), bias: fptr(c.Bias), xbatch: C.size_t(x.BatchStride()),
		in: C.int(x.C), hw: C.int(x.Plane()), na: C.int(na), no: C.int(len(c.Bias) / na), rows: C.int(rows), tiles: C.int(tiles)}
	if C.head(d.cpool(), d.queue(), C.int(x.N*tiles), a) == 0 {
		return errBatchMemory
	}
	return nil
}
