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
// A 3x3 conv with padding 1 skips im2col altogether (conv_tile_taps): the
// kernel reads each of B's rows straight from the input plane, shifted by
// its tap, with the padding masked off; for stride 1 that is the input
// itself, so nothing is copied.
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
// it are stored) += or = a · B, then on the last block adds bias (unless
// NULL) and cbias (a column bias, unless NULL) and applies act. a is kc*ntap
// rows of MR filter values (row stride lda). With ntap == 1, B is kc rows
// of b (row stride ldb), cols columns read. With ntap taps, B is the
// implicit im2col matrix of a kxk conv (conv_tile_taps): for each of kc
// input channels (b advancing by ldb) the ntap rows b + toff[t], vector v
// of row t read under tmask[3*t+v] (lanes outside the input or past cols
// read as 0; masked loads never touch those addresses). Inlined with
// constant nv and ntap (kern, kern_taps below), so the accumulators live
// in registers.
__attribute__((target("avx512f,fma"), always_inline))
static inline void kern_nv(const int nv, const int ntap, int kc, const float *a, size_t lda, const float *b, size_t ldb,
		const int *toff, const __mmask16 *tmask, float *c, size_t ldc, int rows, int cols, int first, int last,
		const float *bias, const float *cbias, int act, float slope) {
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
#pragma GCC unroll 9
		for (int t = 0; t < ntap; t++) {
			const float *bt = ntap == 1 ? b : b + toff[t];
			__m512 bv[3];
#pragma GCC unroll 3
			for (int v = 0; v < nv; v++) bv[v] = _mm512_maskz_loadu_ps(ntap == 1 ? mk[v] : tmask[3 * t + v], bt + 16 * v);
			// the same row of the next NR columns, which the next call
			// reads (in place, a 1x1 conv's input rows are a page apart:
			// too many streams for the hardware prefetcher); for taps,
			// once per input row
			if (ntap == 1 || t % 3 == 0) {
				_mm_prefetch((const char *)(bt + NR), _MM_HINT_T0);
				_mm_prefetch((const char *)(bt + NR + 16), _MM_HINT_T0);
				_mm_prefetch((const char *)(bt + NR + 32), _MM_HINT_T0);
			}
#pragma GCC unroll 8
			for (int r = 0; r < MR; r++) {
				const __m512 av = _mm512_set1_ps(a[r]);
#pragma GCC unroll 3
				for (int v = 0; v < nv; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
			}
			a += lda;
		}
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

// kern is kern_nv for B a plain matrix, at the narrowest vector count that
// covers cols (<= NR).
__attribute__((target("avx512f,fma")))
static void kern(int kc, const float *a, size_t lda, const float *b, size_t ldb, float *c, size_t ldc, int rows, int cols,
		int first, int last, const float *bias, const float *cbias, int act, float slope) {
	if (cols > 32) kern_nv(3, 1, kc, a, lda, b, ldb, NULL, NULL, c, ldc, rows, cols, first, last, bias, cbias, act, slope);
	else if (cols > 16) kern_nv(2, 1, kc, a, lda, b, ldb, NULL, NULL, c, ldc, rows, cols, first, last, bias, cbias, act, slope);
	else kern_nv(1, 1, kc, a, lda, b, ldb, NULL, NULL, c, ldc, rows, cols, first, last, bias, cbias, act, slope);
}

// kern_taps is kern_nv for the 9 taps of a 3x3 conv over kc input
// channels (channel stride ldb); filters a packed with row stride MR.
__attribute__((target("avx512f,fma")))
static void kern_taps(int kc, const float *a, const float *b, size_t ldb, const int *toff, const __mmask16 *tmask,
		float *c, size_t ldc, int rows, int cols, int first, int last, const float *bias, int act, float slope) {
	if (cols > 32) kern_nv(3, 9, kc, a, MR, b, ldb, toff, tmask, c, ldc, rows, cols, first, last, bias, NULL, act, slope);
	else if (cols > 16) kern_nv(2, 9, kc, a, MR, b, ldb, toff, tmask, c, ldc, rows, cols, first, last, bias, NULL, act, slope);
	else kern_nv(1, 9, kc, a, MR, b, ldb, toff, tmask, c, ldc, rows, cols, first, last, bias, NULL, act, slope);
}

// tap_masks sets tm[3*t+v] for the NR positions [q0, q0+n) of an ho x wo
// output (q = oy*wo + ox): lane l of vector v is set when position
// q0+16v+l < q0+n and tap t reads inside its input plane, 0 <= oy+di[t] <
// ho and 0 <= ox+dj[t] < wo.
static void tap_masks(__mmask16 *tm, int q0, int n, int ho, int wo, const signed char *di, const signed char *dj) {
	// per vector, the lanes whose row (column) shifted by -1, 0, +1 stays
	// inside the plane; a tap's mask is its row mask and its column mask
	__mmask16 rows[3][3] = {{0}}, cols[3][3] = {{0}};
	int oy = q0 / wo, ox = q0 % wo;
	for (int l = 0; l < n; l++) {
		const __mmask16 bit = (__mmask16)(1u << (l % 16));
		const int v = l / 16;
		if (oy >= 1) rows[v][0] |= bit;
		rows[v][1] |= bit;
		if (oy + 1 < ho) rows[v][2] |= bit;
		if (ox >= 1) cols[v][0] |= bit;
		cols[v][1] |= bit;
		if (ox + 1 < wo) cols[v][2] |= bit;
		if (++ox == wo) {
			ox = 0;
			oy++;
		}
	}
	for (int t = 0; t < 9; t++) {
		for (int v = 0; v < 3; v++) tm[3 * t + v] = rows[v][di[t] + 1] & cols[v][dj[t] + 1];
	}
}

#else
static int gemm_supported(void) { return 0; }
static void kern(int kc, const float *a, size_t lda, const float *b, size_t ldb, float *c, size_t ldc, int rows, int cols,
		int first, int last, const float *bias, const float *cbias, int act, float slope) {}
typedef unsigned short __mmask16;
static void kern_taps(int kc, const float *a, const float *b, size_t ldb, const int *toff, const __mmask16 *tmask,
		float *c, size_t ldc, int rows, int cols, int first, int last, const float *bias, int act, float slope) {}
static void tap_masks(__mmask16 *tm, int q0, int n, int ho, int wo, const signed char *di, const signed char *dj) {}

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

// conv_taps is a 3x3 conv (padding 1, stride 1 or 2) as an implicit GEMM:
// B's rows are read straight from the input planes, one row per (input
// channel, tap), no im2col block. Output position q = oy*wo + ox reads
// tap (ky, kx) of channel c at plane + toff[t] + q, so every row is a
// contiguous run of the input shifted by the tap: for stride 1 the input
// plane itself (toff = di*wo + dj, di = ky-1, dj = kx-1); for stride 2 the
// input rows of the tile split into their four phases (x[2i+py][2j+px],
// rows x wo each, phase_split), where tap (ky, kx) reads phase ((ky+1)%2,
// (kx+1)%2) at di = -1 for ky == 0, else 0 (likewise dj). Lanes whose tap
// falls in the padding are masked (tap_masks).
typedef struct {
	int toff[9];
	signed char di[9], dj[9];
	size_t cstride; // values from one input channel's planes to the next
} conv_taps;

// make_taps lays out the taps of a stride-s conv of output width wo; for
// stride 2, over phase planes of rows rows.
static conv_taps make_taps(int s, int rows, int wo) {
	conv_taps tp;
	for (int ky = 0; ky < 3; ky++) {
		for (int kx = 0; kx < 3; kx++) {
			const int t = ky * 3 + kx;
			if (s == 1) {
				tp.di[t] = ky - 1, tp.dj[t] = kx - 1;
				tp.toff[t] = (ky - 1) * wo + (kx - 1);
			} else {
				tp.di[t] = ky == 0 ? -1 : 0, tp.dj[t] = kx == 0 ? -1 : 0;
				tp.toff[t] = (((ky + 1) % 2) * 2 + (kx + 1) % 2) * rows * wo + tp.di[t] * wo + tp.dj[t];
			}
		}
	}
	tp.cstride = (size_t)(s == 1 ? 1 : 4) * rows * wo;
	return tp;
}

#if defined(__x86_64__) && defined(__GNUC__)
// deinterleave16 writes d0[j] = src[2j], d1[j] = src[2j+1] for j below n
// rounded down to 16 and returns that count.
__attribute__((target("avx512f")))
static int deinterleave16(float *d0, float *d1, const float *src, int n) {
	const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
	const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
	int j = 0;
	for (; j + 16 <= n; j += 16) {
		const __m512 a = _mm512_loadu_ps(src + 2 * j), b = _mm512_loadu_ps(src + 2 * j + 16);
		_mm512_storeu_ps(d0 + j, _mm512_permutex2var_ps(a, even, b));
		_mm512_storeu_ps(d1 + j, _mm512_permutex2var_ps(a, odd, b));
	}
	return j;
}
#endif

// phase_split writes rows [i0, i0+rows) of the four stride-2 phases of the
// cin channels of x (cin x h x w) into dst: per channel 4 planes of rows x
// wo, phase py*2+px holding x[2i+py][2j+px] (0 past the input's edge).
static void phase_split(float *dst, const float *x, int cin, int h, int w, int wo, int i0, int rows) {
	for (int c = 0; c < cin; c++) {
		const float *xc = x + (size_t)c * h * w;
		float *pc = dst + (size_t)c * 4 * rows * wo;
		for (int py = 0; py < 2; py++) {
			for (int i = 0; i < rows; i++) {
				float *d0 = pc + ((size_t)(py * 2) * rows + i) * wo, *d1 = pc + ((size_t)(py * 2 + 1) * rows + i) * wo;
				const int r = 2 * (i0 + i) + py;
				if (r >= h) {
					memset(d0, 0, sizeof(float) * wo);
					memset(d1, 0, sizeof(float) * wo);
					continue;
				}
				const float *src = xc + (size_t)r * w;
				const int full = w / 2 < wo ? w / 2 : wo; // j with 2j+1 < w
				int j = 0;
#if defined(__x86_64__) && defined(__GNUC__)
				j = deinterleave16(d0, d1, src, full);
#endif
				for (; j < full; j++) {
					d0[j] = src[2 * j];
					d1[j] = src[2 * j + 1];
				}
				for (; j < wo; j++) {
					d0[j] = 2 * j < w ? src[2 * j] : 0;
					d1[j] = 0;
				}
			}
		}
	}
}

// conv_tile_taps is conv_tile for a 3x3 conv through taps: rows [0, m)
// and positions [p0, p1) of y (row stride ldy) for one image, x its input
// planes laid out as tp says, holding positions from qbase on (the image
// from 0, or the tile's phases), cin input channels taken kcc at a time
// (K blocks of 9*kcc rows).
static void conv_tile_taps(const float *wp, int m, int cin, int kcc, const float *x, const conv_taps *tp, int ho, int wo,
		int qbase, int p0, int p1, float *y, size_t ldy, const float *bias, int act, float slope) {
	const int K = 9 * cin;
	__mmask16 tm[27];
	for (int c0 = 0; c0 < cin; c0 += kcc) {
		const int cc = cin - c0 < kcc ? cin - c0 : kcc;
		const int first = c0 == 0, last = c0 + cc == cin;
		for (int q0 = p0; q0 < p1; q0 += NR) {
			const int n = p1 - q0 < NR ? p1 - q0 : NR;
			tap_masks(tm, q0, n, ho, wo, tp->di, tp->dj);
			for (int i = 0; i < m; i += MR) {
				kern_taps(cc, wp + ((size_t)(i / MR) * K + (size_t)c0 * 9) * MR, x + (size_t)c0 * tp->cstride + (q0 - qbase),
					tp->cstride, tp->toff, tm, y + (size_t)i * ldy + q0, ldy, m - i < MR ? m - i : MR, n, first, last,
					bias ? bias + i : NULL, act, slope);
			}
		}
	}
}

// phase_rows is how many phase rows a stride-2 tile of cols positions of
// an ho x wo output can need: the output rows it spans and the one above.
static int phase_rows(int cols, int ho, int wo) {
	const int r = (cols + wo - 1) / wo + 2;
	return r < ho ? r : ho;
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
