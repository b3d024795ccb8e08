// gemm.h: the packed-GEMM conv kernels (cpu_gemm.go), shared by the
// conv paths of cpu_gemm.go and winograd.go (each cgo file is its own C
// translation unit; the functions are static).
#ifndef Y7_GEMM_H
#define Y7_GEMM_H
#include <stddef.h>
#include <string.h>
#include "im2col.h"

// The packed-GEMM conv: the CPU's own GEMM for the convs that Winograd does
// not take, on x86-64 CPUs with AVX-512 (elsewhere OpenBLAS, conv.go).
//
// A conv is y[m x P] = act(W[m x K] · B[K x P] + bias), K = In*k*k, B the
// im2col matrix (or, for a 1x1 stride-1 conv, the input itself). W is
// packed once per plan into blocks of MR rows, k-major: Wp[i][kk][r] =
// W[i*MR+r][kk] (rows past m are zero). Conv runs one work item per tile of
// positions (and, on small maps, per chunk of output rows); the item walks
// K in blocks of at most kc rows. For a kxk conv the im2col loop fills the
// block for the tile into the worker's scratch (rows of an odd number of
// cache lines, so reading down a column does not thrash a few cache sets);
// a 1x1 conv reads its input in place. The MR x NR micro-kernel then runs
// over every (row block, NR columns of B): it keeps the MR x NR outputs in
// registers for the whole K block, adds the previous blocks' partial sums
// from y, and on the last block adds the bias and applies the activation
// before its (masked) stores. The NR columns of a K block (kc x NR
// values, 36 KiB) stay in L1 while all the row blocks pass over them; y is
// written once per K block; W is never repacked.
//
// The same kernel runs the 16 products of a Winograd conv (gemm_tiles,
// winograd.go) and the detect head with positions as rows (head_tile).

#define MR 8
#define NR 48
#define KC_MAX 192 // the target K block (gemmKC in cpu_gemm.go)

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

static int gemm_supported(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f");
}

// kern_nv computes the MR x (16*nv) block c (row stride ldc; rows x cols of
// it are stored) += or = a[kc x MR] · b[kc x 16*nv] (row stride ldb; only
// cols columns are read), then on the last block adds bias (unless NULL)
// and applies act. Inlined with a constant nv (kern below), so the
// accumulators live in registers.
__attribute__((target("avx512f,fma"), always_inline))
static inline void kern_nv(const int nv, int kc, const float *a, size_t lda, const float *b, size_t ldb, float *c, size_t ldc,
		int rows, int cols, int first, int last, const float *bias, const float *cbias, int act, float slope) {
	__m512 acc[MR][3];
	__mmask16 mk[3];
	for (int v = 0; v < 3; v++) {
		const int n = cols - 16 * v;
		mk[v] = n >= 16 ? 0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1);
	}
#pragma GCC unroll 8
	for (int r = 0; r < MR; r++) {
#pragma GCC unroll 3
		for (int v = 0; v < nv; v++) {
			acc[r][v] = first || r >= rows ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mk[v], c + (size_t)r * ldc + 16 * v);
		}
	}
	for (int p = 0; p < kc; p++) {
		__m512 bv[3];
#pragma GCC unroll 3
		for (int v = 0; v < nv; v++) bv[v] = _mm512_maskz_loadu_ps(mk[v], b + 16 * v);
		// the same row of the next NR columns, which the next call reads
		// (in place, a 1x1 conv's input rows are a page apart: too many
		// streams for the hardware prefetcher)
		_mm_prefetch((const char *)(b + NR), _MM_HINT_T0);
		_mm_prefetch((const char *)(b + NR + 16), _MM_HINT_T0);
		_mm_prefetch((const char *)(b + NR + 32), _MM_HINT_T0);
#pragma GCC unroll 8
		for (int r = 0; r < MR; r++) {
			const __m512 av = _mm512_set1_ps(a[r]);
#pragma GCC unroll 3
			for (int v = 0; v < nv; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
		}
		a += lda;
		b += ldb;
	}
	const __m512 zero = _mm512_setzero_ps(), sl = _mm512_set1_ps(slope);
	__m512 cb[3];
#pragma GCC unroll 3
	for (int v = 0; v < nv; v++) cb[v] = last && cbias ? _mm512_maskz_loadu_ps(mk[v], cbias + 16 * v) : zero;
#pragma GCC unroll 8
	for (int r = 0; r < MR; r++) {
		if (r >= rows) break;
		const __m512 bb = _mm512_set1_ps(last && bias ? bias[r] : 0.0f);
#pragma GCC unroll 3
		for (int v = 0; v < nv; v++) {
			__m512 t = acc[r][v];
			if (last) {
				t = _mm512_add_ps(_mm512_add_ps(t, bb), cb[v]);
				if (act == 1) t = _mm512_max_ps(t, zero);
				else if (act == 2) t = _mm512_mask_mul_ps(t, _mm512_cmp_ps_mask(t, zero, _CMP_LT_OQ), t, sl);
			}
			_mm512_mask_storeu_ps(c + (size_t)r * ldc + 16 * v, mk[v], t);
		}
	}
}

// kern is kern_nv for the narrowest vector count that covers cols (<= NR).
__attribute__((target("avx512f,fma")))
static void kern(int kc, const float *a, size_t lda, const float *b, size_t ldb, float *c, size_t ldc, int rows, int cols,
		int first, int last, const float *bias, const float *cbias, int act, float slope) {
	if (cols > 32) kern_nv(3, kc, a, lda, b, ldb, c, ldc, rows, cols, first, last, bias, cbias, act, slope);
	else if (cols > 16) kern_nv(2, kc, a, lda, b, ldb, c, ldc, rows, cols, first, last, bias, cbias, act, slope);
	else kern_nv(1, kc, a, lda, b, ldb, c, ldc, rows, cols, first, last, bias, cbias, act, slope);
}
#else
static int gemm_supported(void) { return 0; }
static void kern(int kc, const float *a, size_t lda, const float *b, size_t ldb, float *c, size_t ldc, int rows, int cols,
		int first, int last, const float *bias, const float *cbias, int act, float slope) {}

#endif

// pack_weights writes Wp (ceil(m/MR) x K x MR) for w (m x K).
static void pack_weights(float *wp, const float *w, int m, int K) {
	for (int i = 0; i < (m + MR - 1) / MR; i++) {
		for (int kk = 0; kk < K; kk++) {
			for (int r = 0; r < MR; r++) {
				const int o = i * MR + r;
				wp[((size_t)i * K + kk) * MR + r] = o < m ? w[(size_t)o * K + kk] : 0;
			}
		}
	}
}

// conv_tile computes rows [0, m) and positions [p0, p1) of y (row stride
// ldy) = act(W·B + bias) for one image. wp is the packed filters from row
// 0 (a block of MR rows), bias NULL for none. B is the im2col matrix of x
// (In x h x w, a kxk conv with stride s and padding pad, output width wo),
// filled one K block at a time into bp (kcMax x ldbp values, kcMax a
// multiple of k*k), or, when direct, x itself as a K x P matrix of row
// stride ldb. The kernel reads B in place, NR columns at a time.
static void conv_tile(const float *wp, int m, int K, int kcMax,
		const float *x, int h, int w, int k, int s, int pad, int wo, int direct, size_t ldb,
		int p0, int p1, float *y, size_t ldy, const float *bias, int act, float slope, float *bp, size_t ldbp) {
	for (int k0 = 0; k0 < K; k0 += kcMax) {
		const int kc = K - k0 < kcMax ? K - k0 : kcMax;
		const float *b;
		size_t ld;
		if (direct) {
			b = x + (size_t)k0 * ldb + p0;
			ld = ldb;
		} else {
			im2col(bp, ldbp, x, h, w, k, s, pad, k0 / (k * k), (k0 + kc) / (k * k), p0, p1, wo);
			b = bp;
			ld = ldbp;
		}
		const int first = k0 == 0, last = k0 + kc == K;
		for (int q0 = p0; q0 < p1; q0 += NR) {
			const int n = p1 - q0 < NR ? p1 - q0 : NR;
			for (int i = 0; i < m; i += MR) {
				kern(kc, wp + ((size_t)(i / MR) * K + k0) * MR, MR, b + (q0 - p0), ld, y + (size_t)i * ldy + q0, ldy,
					m - i < MR ? m - i : MR, n, first, last, bias ? bias + i : NULL, NULL, act, slope);
			}
		}
	}
}

// gemm_tiles is y[m x n] (row stride ldy) = W·B for B (K x n, row stride
// ldb), tile by tile of tile columns (a multiple of NR), no bias, no
// activation: the 16 products of a Winograd conv.
static void gemm_tiles(const float *wp, int m, int K, int kcMax, const float *b, size_t ldb, int n, int tile,
		float *y, size_t ldy) {
	for (int p0 = 0; p0 < n; p0 += tile) {
		const int p1 = p0 + tile < n ? p0 + tile : n;
		conv_tile(wp, m, K, kcMax, b, 0, 0, 1, 1, 0, 0, 1, ldb, p0, p1, y, ldy, NULL, 0, 0, NULL, 0);
	}
}

// head_tile is the detect conv of positions [p0, p1) of one image x (in
// x hw) for one anchor: out[p][o] = sum_c x[c][p] wt[c][o] + bias[o] (out
// row stride no), the positions as the kernel's rows (read from x in
// place, MR at a time) and the no outputs as its columns (wt: the anchor's
// filters transposed, in x no). A last block of fewer than MR positions
// is copied into a zero-padded buffer, so no read passes the plane's end.
static void head_tile(const float *x, int in, int hw, const float *wt, int no, const float *bias,
		float *out, int p0, int p1) {
	float tail[KC_MAX * MR];
	for (int k0 = 0; k0 < in; k0 += KC_MAX) {
		const int kc = in - k0 < KC_MAX ? in - k0 : KC_MAX;
		const int first = k0 == 0, last = k0 + kc == in;
		for (int r0 = p0; r0 < p1; r0 += MR) {
			const int rows = p1 - r0 < MR ? p1 - r0 : MR;
			const float *a = x + (size_t)k0 * hw + r0;
			size_t lda = hw;
			if (rows < MR) {
				for (int kk = 0; kk < kc; kk++) {
					for (int r = 0; r < MR; r++) tail[kk * MR + r] = r < rows ? a[(size_t)kk * hw + r] : 0;
				}
				a = tail;
				lda = MR;
			}
			for (int c0 = 0; c0 < no; c0 += NR) {
				kern(kc, a, lda, wt + (size_t)k0 * no + c0, no, out + (size_t)(r0 - p0) * no + c0, no, rows,
					no - c0 < NR ? no - c0 : NR, first, last, NULL, bias + c0, 0, 0);
			}
		}
	}
}
#endif
