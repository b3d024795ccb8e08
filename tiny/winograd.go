package tiny

/*
#cgo CFLAGS: -O3
#include <stddef.h>
#include <string.h>
#include "vec.h"
#include "gemm.h"
#include "pool.h"

// Winograd F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for Convolutional
// Neural Networks", 2016): a 2x2 output tile of a 3x3 stride-1 conv is
// A^T [ sum_c (G g_c G^T) .* (B^T d_c B) ] A for the 4x4 input patch d_c of
// each input channel, so the 9 multiply-adds per output, input channel and
// output channel become 16/4 = 4 (2.25x fewer) in 16 independent GEMMs,
// one per position xi of the 4x4 transformed tile.
//
//   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
//   G   = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
//   A^T = [1 1 1 0; 0 1 -1 -1]

// wino_filter transforms one 3x3 filter g into its 4x4 u = G g G^T.
static void wino_filter(float u[16], const float g[9]) {
	float t[4][3]; // G g
	for (int j = 0; j < 3; j++) {
		t[0][j] = g[j];
		t[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
		t[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
		t[3][j] = g[6 + j];
	}
	for (int i = 0; i < 4; i++) { // (G g) G^T
		u[4 * i + 0] = t[i][0];
		u[4 * i + 1] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
		u[4 * i + 2] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
		u[4 * i + 3] = t[i][2];
	}
}

// wino_input transforms the input patches of tile rows [ty0, ty1) (tw
// tiles each) of channels [0, cin) of one image x (cin x h x w, padding 1)
// into V[xi][c][t] (row stride ldv), t = (ty-ty0)*tw + tx. B^T runs down
// four input rows at once (whole rows), B along them on the even and odd
// columns of the padded rows (column -1 is even index 0), so every loop
// runs over contiguous values.
Y7_VEC static void wino_input(float *V, size_t ldv, size_t vplane, const float *x, int cin, int h, int w,
		int ty0, int ty1, int tw) {
	const int pw = 2 * tw + 2; // padded row: columns -1 .. 2*tw
	float zero[pw], in[4][pw], ev[4][tw + 1], od[4][tw + 1];
	for (int k = 0; k < pw; k++) zero[k] = 0;
	for (int c = 0; c < cin; c++) {
		const float *xc = x + (size_t)c * h * w;
		for (int ty = ty0; ty < ty1; ty++) {
			for (int r = 0; r < 4; r++) {
				const int iy = 2 * ty - 1 + r;
				float *p = in[r];
				if (iy < 0 || iy >= h) {
					memcpy(p, zero, sizeof(float) * pw);
					continue;
				}
				p[0] = 0;
				const int n = w < pw - 1 ? w : pw - 1;
				memcpy(p + 1, xc + (size_t)iy * w, sizeof(float) * n);
				for (int k = n + 1; k < pw; k++) p[k] = 0;
			}
			// B^T d, then split into even and odd padded columns.
			for (int j = 0; j <= tw; j++) {
				const float a0 = in[0][2 * j], a1 = in[1][2 * j], a2 = in[2][2 * j], a3 = in[3][2 * j];
				ev[0][j] = a0 - a2; ev[1][j] = a1 + a2; ev[2][j] = a2 - a1; ev[3][j] = a1 - a3;
				const float b0 = in[0][2 * j + 1], b1 = in[1][2 * j + 1], b2 = in[2][2 * j + 1], b3 = in[3][2 * j + 1];
				od[0][j] = b0 - b2; od[1][j] = b1 + b2; od[2][j] = b2 - b1; od[3][j] = b1 - b3;
			}
			float *vt = V + (size_t)c * ldv + (size_t)(ty - ty0) * tw;
			for (int r = 0; r < 4; r++) { // (B^T d) B: columns 2tx-1 .. 2tx+2 are e[tx], o[tx], e[tx+1], o[tx+1]
				const float *e = ev[r], *o = od[r];
				float *v0 = vt + (4 * r + 0) * vplane, *v1 = vt + (4 * r + 1) * vplane;
				float *v2 = vt + (4 * r + 2) * vplane, *v3 = vt + (4 * r + 3) * vplane;
				for (int tx = 0; tx < tw; tx++) {
					v0[tx] = e[tx] - e[tx + 1];
					v1[tx] = o[tx] + e[tx + 1];
					v2[tx] = e[tx + 1] - o[tx];
					v3[tx] = o[tx] - o[tx + 1];
				}
			}
		}
	}
}

// wino_output turns M[xi][o][t] (mc output channels, row stride ldm) of
// tile rows [ty0, ty1) into the output rows of channels [0, mc) of y
// (channel stride ho*wo), with bias and activation act (0 none, 1 ReLU,
// 2 LeakyReLU(slope)); tiles over the edge of an odd-sized output write
// only their inside.
Y7_VEC static void wino_output(float *y, int ho, int wo, const float *M, size_t ldm, int mc,
		int ty0, int ty1, int tw, const float *bias, int act, float slope) {
	const size_t mplane = (size_t)mc * ldm;
	float u[2][4][tw], row[2 * tw];
	for (int o = 0; o < mc; o++) {
		float *yo = y + (size_t)o * ho * wo;
		const float b = bias[o];
		for (int ty = ty0; ty < ty1; ty++) {
			const float *s = M + (size_t)o * ldm + (size_t)(ty - ty0) * tw;
			for (int k = 0; k < 4; k++) { // A^T s
				const float *s0 = s + k * mplane, *s1 = s + (4 + k) * mplane;
				const float *s2 = s + (8 + k) * mplane, *s3 = s + (12 + k) * mplane;
				for (int tx = 0; tx < tw; tx++) {
					u[0][k][tx] = s0[tx] + s1[tx] + s2[tx];
					u[1][k][tx] = s1[tx] - s2[tx] - s3[tx];
				}
			}
			for (int r = 0; r < 2 && 2 * ty + r < ho; r++) { // (A^T s) A, bias, activation
				for (int tx = 0; tx < tw; tx++) {
					row[2 * tx] = u[r][0][tx] + u[r][1][tx] + u[r][2][tx] + b;
					row[2 * tx + 1] = u[r][1][tx] - u[r][2][tx] - u[r][3][tx] + b;
				}
				if (act == 1) {
					for (int k = 0; k < 2 * tw; k++) row[k] = row[k] > 0 ? row[k] : 0;
				} else if (act == 2) {
					for (int k = 0; k < 2 * tw; k++) row[k] = row[k] > 0 ? row[k] : row[k] * slope;
				}
				memcpy(yo + (size_t)(2 * ty + r) * wo, row, sizeof(float) * wo);
			}
		}
	}
}

// Winograd F(4x4, 3x3) (the packed-GEMM path): a 4x4 output tile from a
// 6x6 input patch, 36 products per tile instead of 144 multiply-adds (4x
// fewer; F(2x2,3x3) saves 2.25x), with the interpolation points 0, +-1,
// +-2 (Lavin and Gray):
//
//   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
//          0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
//   G   = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6;
//          1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
//   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1]

// wino43_filter transforms one 3x3 filter g into its 6x6 u = G g G^T.
static void wino43_filter(float u[36], const float g[9]) {
	static const float G[6][3] = {{1.f / 4, 0, 0}, {-1.f / 6, -1.f / 6, -1.f / 6}, {-1.f / 6, 1.f / 6, -1.f / 6},
		{1.f / 24, 1.f / 12, 1.f / 6}, {1.f / 24, -1.f / 12, 1.f / 6}, {0, 0, 1}};
	float t[6][3]; // G g
	for (int i = 0; i < 6; i++) {
		for (int j = 0; j < 3; j++) t[i][j] = G[i][0] * g[j] + G[i][1] * g[3 + j] + G[i][2] * g[6 + j];
	}
	for (int i = 0; i < 6; i++) {
		for (int j = 0; j < 6; j++) u[6 * i + j] = t[i][0] * G[j][0] + t[i][1] * G[j][1] + t[i][2] * G[j][2];
	}
}

// wino_filters writes U[xi][o][c] ((m+2)^2 matrices of out x in) for
// weights w[o][c][3][3], m the output tile side: 2, F(2x2,3x3), or 4,
// F(4x4,3x3).
static void wino_filters(float *U, const float *w, int out, int in, int m) {
	const size_t plane = (size_t)out * in;
	const int nxi = (m + 2) * (m + 2);
	float u[36];
	for (int o = 0; o < out; o++) {
		for (int c = 0; c < in; c++) {
			const float *g = w + ((size_t)o * in + c) * 9;
			if (m == 4) {
				wino43_filter(u, g);
			} else {
				wino_filter(u, g);
			}
			for (int xi = 0; xi < nxi; xi++) U[xi * plane + (size_t)o * in + c] = u[xi];
		}
	}
}

// wino43_input transforms the 6x6 input patches of tile rows [ty0, ty1)
// (tw tiles each) of channels [0, cin) of one image x (cin x h x w,
// padding 1) into V[xi][c][t] (row stride ldv, xi stride vplane), t =
// (ty-ty0)*tw + tx. B^T runs down six padded input rows at once, B along
// them on the four phases (columns mod 4) of the transformed rows, so
// every loop runs over contiguous values.
Y7_VEC static void wino43_input(float *V, size_t ldv, size_t vplane, const float *x, int cin, int h, int w,
		int ty0, int ty1, int tw) {
	const int pw = 4 * tw + 4; // padded row: columns -1 .. 4*tw+2
	float in[6][pw], t[pw], ph[4][tw + 1];
	for (int c = 0; c < cin; c++) {
		const float *xc = x + (size_t)c * h * w;
		for (int ty = ty0; ty < ty1; ty++) {
			for (int r = 0; r < 6; r++) {
				const int iy = 4 * ty - 1 + r;
				float *p = in[r];
				for (int k = 0; k < pw; k++) p[k] = 0;
				if (iy < 0 || iy >= h) continue;
				const int n = w < pw - 1 ? w : pw - 1;
				memcpy(p + 1, xc + (size_t)iy * w, sizeof(float) * n);
			}
			float *vt = V + (size_t)c * ldv + (size_t)(ty - ty0) * tw;
			for (int i = 0; i < 6; i++) {
				const float *a0 = in[0], *a1 = in[1], *a2 = in[2], *a3 = in[3], *a4 = in[4], *a5 = in[5];
				switch (i) { // row i of B^T d
				case 0: for (int q = 0; q < pw; q++) t[q] = 4 * a0[q] - 5 * a2[q] + a4[q]; break;
				case 1: for (int q = 0; q < pw; q++) t[q] = -4 * (a1[q] + a2[q]) + a3[q] + a4[q]; break;
				case 2: for (int q = 0; q < pw; q++) t[q] = 4 * (a1[q] - a2[q]) - a3[q] + a4[q]; break;
				case 3: for (int q = 0; q < pw; q++) t[q] = 2 * (a3[q] - a1[q]) - a2[q] + a4[q]; break;
				case 4: for (int q = 0; q < pw; q++) t[q] = 2 * (a1[q] - a3[q]) - a2[q] + a4[q]; break;
				default: for (int q = 0; q < pw; q++) t[q] = 4 * a1[q] - 5 * a3[q] + a5[q]; break;
				}
				for (int k = 0; k < 4; k++) {
					for (int j = 0; j <= tw; j++) ph[k][j] = t[4 * j + k];
				}
				// (B^T d) B: the patch's columns 4tx-1 .. 4tx+4 are
				// ph0[tx], ph1[tx], ph2[tx], ph3[tx], ph0[tx+1], ph1[tx+1]
				const float *d0 = ph[0], *d1 = ph[1], *d2 = ph[2], *d3 = ph[3], *d4 = ph[0] + 1, *d5 = ph[1] + 1;
				float *v0 = vt + (6 * i + 0) * vplane, *v1 = vt + (6 * i + 1) * vplane, *v2 = vt + (6 * i + 2) * vplane;
				float *v3 = vt + (6 * i + 3) * vplane, *v4 = vt + (6 * i + 4) * vplane, *v5 = vt + (6 * i + 5) * vplane;
				for (int tx = 0; tx < tw; tx++) {
					v0[tx] = 4 * d0[tx] - 5 * d2[tx] + d4[tx];
					v1[tx] = -4 * (d1[tx] + d2[tx]) + d3[tx] + d4[tx];
					v2[tx] = 4 * (d1[tx] - d2[tx]) - d3[tx] + d4[tx];
					v3[tx] = 2 * (d3[tx] - d1[tx]) - d2[tx] + d4[tx];
					v4[tx] = 2 * (d1[tx] - d3[tx]) - d2[tx] + d4[tx];
					v5[tx] = 4 * d1[tx] - 5 * d3[tx] + d5[tx];
				}
			}
		}
	}
}

// wino43_output turns M[xi][o][t] (36 planes of mc output channels, row
// stride ldm) of tile rows [ty0, ty1) into the output rows of channels
// [0, mc) of y (channel stride ho*wo), with bias and activation act;
// tiles over the edge of the output write only their inside.
Y7_VEC static void wino43_output(float *y, int ho, int wo, const float *M, size_t ldm, int mc,
		int ty0, int ty1, int tw, const float *bias, int act, float slope) {
	const size_t mplane = (size_t)mc * ldm;
	float u[4][6][tw], row[4 * tw];
	for (int o = 0; o < mc; o++) {
		float *yo = y + (size_t)o * ho * wo;
		const float b = bias[o];
		for (int ty = ty0; ty < ty1; ty++) {
			const float *s = M + (size_t)o * ldm + (size_t)(ty - ty0) * tw;
			for (int k = 0; k < 6; k++) { // A^T s, column k of the 6x6
				const float *s0 = s + k * mplane, *s1 = s + (6 + k) * mplane, *s2 = s + (12 + k) * mplane;
				const float *s3 = s + (18 + k) * mplane, *s4 = s + (24 + k) * mplane, *s5 = s + (30 + k) * mplane;
				for (int tx = 0; tx < tw; tx++) {
					const float p12 = s1[tx] + s2[tx], m12 = s1[tx] - s2[tx];
					const float p34 = s3[tx] + s4[tx], m34 = s3[tx] - s4[tx];
					u[0][k][tx] = s0[tx] + p12 + p34;
					u[1][k][tx] = m12 + 2 * m34;
					u[2][k][tx] = p12 + 4 * p34;
					u[3][k][tx] = m12 + 8 * m34 + s5[tx];
				}
			}
			for (int r = 0; r < 4 && 4 * ty + r < ho; r++) { // (A^T s) A, bias, activation
				const float *e0 = u[r][0], *e1 = u[r][1], *e2 = u[r][2], *e3 = u[r][3], *e4 = u[r][4], *e5 = u[r][5];
				for (int tx = 0; tx < tw; tx++) {
					const float p12 = e1[tx] + e2[tx], m12 = e1[tx] - e2[tx];
					const float p34 = e3[tx] + e4[tx], m34 = e3[tx] - e4[tx];
					row[4 * tx + 0] = e0[tx] + p12 + p34 + b;
					row[4 * tx + 1] = m12 + 2 * m34 + b;
					row[4 * tx + 2] = p12 + 4 * p34 + b;
					row[4 * tx + 3] = m12 + 8 * m34 + e5[tx] + b;
				}
				if (act == 1) {
					for (int k = 0; k < 4 * tw; k++) row[k] = row[k] > 0 ? row[k] : 0;
				} else if (act == 2) {
					for (int k = 0; k < 4 * tw; k++) row[k] = row[k] > 0 ? row[k] : row[k] * slope;
				}
				memcpy(yo + (size_t)(4 * ty + r) * wo, row, sizeof(float) * wo);
			}
		}
	}
}

// wino_args are one Winograd conv's parameters on the packed-GEMM path
// (see convWinograd).
typedef struct {
	const float *u, *bias, *x;
	float *y, *scratch;
	size_t xbatch, ybatch, perItem, ldv, uper;
	int cin, cout, h, w, ho, wo, tw, th, rows, bands, mc, chunks, kc, tile, act;
	int m; // output tile side: 2 for F(2x2,3x3), 4 for F(4x4,3x3)
	float slope;
} wino_args;

// wino_item is item i: chunk i%chunks of output channels, band
// (i/chunks)%bands of tile rows, image i/(chunks*bands).
static void wino_item(const void *va, int worker, int i) {
	const wino_args *a = va;
	const int j = i % a->chunks, b = (i / a->chunks) % a->bands, n = i / (a->chunks * a->bands);
	const int ty0 = b * a->rows, ty1 = ty0 + a->rows < a->th ? ty0 + a->rows : a->th;
	const int m0 = j * a->mc, mc = a->mc < a->cout - m0 ? a->mc : a->cout - m0;
	const int cols = (ty1 - ty0) * a->tw;
	const int nxi = (a->m + 2) * (a->m + 2);
	float *v = a->scratch + (size_t)worker * a->perItem;
	float *m = v + (size_t)nxi * a->cin * a->ldv;
	float *y = a->y + n * a->ybatch + (size_t)m0 * a->ho * a->wo;
	if (a->m == 4) {
		wino43_input(v, a->ldv, (size_t)a->cin * a->ldv, a->x + n * a->xbatch, a->cin, a->h, a->w, ty0, ty1, a->tw);
	} else {
		wino_input(v, a->ldv, (size_t)a->cin * a->ldv, a->x + n * a->xbatch, a->cin, a->h, a->w, ty0, ty1, a->tw);
	}
	for (int xi = 0; xi < nxi; xi++) {
		gemm_tiles(a->u + xi * a->uper + (size_t)m0 * a->cin, mc, a->cin, a->kc, v + (size_t)xi * a->cin * a->ldv, a->ldv,
			cols, a->tile, m + (size_t)xi * mc * a->ldv, a->ldv);
	}
	if (a->m == 4) {
		wino43_output(y, a->ho, a->wo, m, a->ldv, mc, ty0, ty1, a->tw, a->bias + m0, a->act, a->slope);
	} else {
		wino_output(y, a->ho, a->wo, m, a->ldv, mc, ty0, ty1, a->tw, a->bias + m0, a->act, a->slope);
	}
}

static int wino_packed(y7_pool *pool, y7_queue *q, int items, wino_args a) {
	return y7_run_or_queue(pool, q, items, wino_item, &a, sizeof a);
}
*/
import "C"

import "fmt"

// The CPU's Winograd path for 3x3 stride-1 convs with padding 1. A plan
// asks for it through PrepareConv, which stores the transformed filters in
// ConvArgs.Winograd; Conv then runs one work item per (band of tile rows,
// chunk of output channels): transform the band's input patches, 16 GEMMs
// into per-worker scratch (the packed-GEMM kernel on the C pool where the
// CPU has AVX-512, the filters packed per plan; else OpenBLAS SGEMM on the
// goroutine pool), transform back with bias and activation. Small
// maps, with too few tile rows to keep every goroutine busy, are split by
// output channels instead, each goroutine transforming the (small) input
// itself.

// winogradBudget is the target size in float32 values of one work item's
// scratch (transformed input and products), about 4 MiB: large enough for
// wide GEMMs, small enough to stay in the last-level cache of two workers.
const winogradBudget = 1 << 20

// winogradPlan is how Conv divides one Winograd convolution.
type winogradPlan struct {
	tw, th   int // tiles across and down
	rows     int // tile rows per band
	bands    int // bands per image
	mc       int // output channels per chunk
	chunks   int // chunks of output channels
	ldv      int // tiles per band (rows*tw): the row stride of V and M
	perItem  int // scratch values of one worker
	kc, tile int // packed GEMM: K block and columns per call (0: SGEMM)
	outPlane int
	m, nxi   int // output tile side (2 or 4) and products per tile ((m+2)^2)
}

// scratch is the scratch a conv of n images needs on threads workers.
func (s winogradPlan) scratch(threads, n int) int {
	return min(threads, n*s.bands*s.chunks) * s.perItem
}

// winogradApplies reports whether the Winograd path can run the conv: 3x3,
// stride 1, padding 1, an input of at least one tile.
func winogradApplies(x NCHW, c ConvArgs) bool {
	return c.K == 3 && c.S == 1 && c.Pad == 1 && x.H >= 2 && x.W >= 2
}

// winogradSplit plans the conv y = conv(x) over d.threads: work items of
// whole tile rows and one or d.threads chunks of output channels. Among
// the splits that fit the scratch budget it takes the one that keeps the
// goroutines busiest, discounted for GEMMs narrower than 64 (tiles or
// output channels), where SGEMM loses efficiency.
func (d *CPU) winogradSplit(y, x NCHW, m int) winogradPlan {
	best := winogradPlan{}
	bestScore := -1.0
	nxi := (m + 2) * (m + 2)
	tw, th := (y.W+m-1)/m, (y.H+m-1)/m
	for _, chunks := range []int{1, d.threads} {
		mc := min(y.C, ((y.C+chunks-1)/chunks+15)/16*16)
		rowsMax := min(th, max(1, winogradBudget/(nxi*(x.C+mc))/tw))
		b0 := (th + rowsMax - 1) / rowsMax
		for _, bands := range []int{b0, min(th, (b0+d.threads-1)/d.threads*d.threads)} {
			s := winogradPlan{tw: tw, th: th, outPlane: y.H * y.W, mc: mc, chunks: (y.C + mc - 1) / mc, m: m, nxi: nxi}
			s.rows = (th + bands - 1) / bands
			s.bands = (th + s.rows - 1) / s.rows
			s.ldv = s.rows * tw
			s.perItem = nxi * (x.C + s.mc) * s.ldv
			if d.packedGEMM() {
				// V and M rows of an odd number of cache lines (the
				// kernel reads V column-wise, see oddLines)
				s.ldv = oddLines(s.ldv)
				s.perItem = nxi * (x.C + s.mc) * s.ldv
				s.kc = min(x.C, gemmKC)
				s.tile = min((d.tileCols+gemmNR-1)/gemmNR, (s.ldv+gemmNR-1)/gemmNR) * gemmNR
			}
			items := y.N * s.bands * s.chunks
			rounds := (items + d.threads - 1) / d.threads
			score := float64(items) / float64(rounds*d.threads) * min(1, float64(s.ldv)/64) * min(1, float64(s.mc)/64)
			if score > bestScore+0.01 {
				best, bestScore = s, score
			}
		}
	}
	return best
}

// winogradMinTiles is the fewest tiles of a work item for which PrepareConv
// chooses Winograd: below it (maps of 10x10 and smaller) the 16 GEMMs are
// too narrow to beat one im2col GEMM.
const winogradMinTiles = 32

// winogradPays reports whether a 3x3 stride-1 conv y = conv(x) runs faster
// through Winograd F(4x4,3x3) than through taps on the packed-GEMM path:
// on maps of at least 40x40 with channels enough (in*out*min(plane, 6400)
// at least 64*128*1600), where the 16 GEMMs are wide and long enough to
// pay for the transforms. Measured (BenchmarkCPUConvs, 2 threads) on the
// yolov7-tiny shapes at 320, 416 and 640.
func winogradPays(y, x NCHW) bool {
	plane := y.H * y.W
	return plane >= 1600 && x.C*y.C*min(plane, 6400) >= 64*128*1600
}

// PrepareConv implements ConvPreparer: a 3x3 stride-1 conv on a map large
// enough gets its Winograd filters (F(4x4,3x3) on the packed-GEMM path
// where a work item has winogradMinTiles 4x4 tiles, else F(2x2,3x3) where
// it has that many 2x2 tiles: 4 or 16/9 of its weights in memory), on
// the packed-GEMM path only where winogradPays (else it runs through
// taps); any other conv, on a CPU with AVX-512, its filters packed for
// the packed-GEMM path (cpu_gemm.go).
func (d *CPU) PrepareConv(y, x NCHW, c ConvArgs) (ConvArgs, error) {
	c.Winograd, c.Packed = nil, nil
	if !d.noWinograd && winogradApplies(x, c) && (!d.packedGEMM() || !d.tapsApply(x, c) || winogradPays(y, x)) {
		for _, m := range d.winogradTiles() {
			if s := d.winogradSplit(y, x, m); s.rows*s.tw >= winogradMinTiles {
				return d.withWinograd(y, x, c, m)
			}
		}
	}
	if d.packedGEMM() {
		return withPackedWeights(y, x, c)
	}
	return c, nil
}

// withWinograd returns c with its Winograd filters: U[xi] (16 matrices of
// y.C x x.C), each packed for the packed-GEMM path where d runs it.
func (d *CPU) withWinograd(y, x NCHW, c ConvArgs, m int) (ConvArgs, error) {
	if len(c.Weight) != 9*y.C*x.C {
		return c, fmt.Errorf("conv: %d weights, want %d (%dx%dx3x3)", len(c.Weight), 9*y.C*x.C, y.C, x.C)
	}
	if m != 2 && (m != 4 || !d.packedGEMM()) {
		return c, fmt.Errorf("conv: Winograd tiles of %d on this device", m)
	}
	nxi := (m + 2) * (m + 2)
	u := make([]float32, nxi*y.C*x.C)
	C.wino_filters(fptr(u), fptr(c.Weight), C.int(y.C), C.int(x.C), C.int(m))
	if !d.packedGEMM() {
		c.Winograd = u
		return c, nil
	}
	c.Winograd = make([]float32, d.winogradLen(y.C, x.C, m))
	per := len(c.Winograd) / nxi
	for xi := 0; xi < nxi; xi++ {
		packWeights(c.Winograd[xi*per:], u[xi*y.C*x.C:], y.C, x.C)
	}
	return c, nil
}

// winogradLen is the number of Winograd filter values of an out x in conv
// with output tiles of m x m on d: (m+2)^2 matrices, padded to whole
// blocks of gemmMR rows when packed.
func (d *CPU) winogradLen(out, in, m int) int {
	if d.packedGEMM() {
		out = (out + gemmMR - 1) / gemmMR * gemmMR
	}
	return (m + 2) * (m + 2) * out * in
}

// winogradTiles are the output tile sides d's Winograd convs may use, in
// order of preference: 4, F(4x4,3x3), then 2, F(2x2,3x3), on the
// packed-GEMM path (F(4x4) only unless noWino43); 2 on the OpenBLAS one.
func (d *CPU) winogradTiles() []int {
	if d.packedGEMM() && !d.noWino43 {
		return []int{4, 2}
	}
	return []int{2}
}

// winogradTileOf is the output tile side of prepared Winograd filters,
// from their number, or 0 if they fit no tile d runs.
func (d *CPU) winogradTileOf(y, x NCHW, c ConvArgs) int {
	for _, m := range []int{4, 2} {
		if (m == 2 || d.packedGEMM()) && len(c.Winograd) == d.winogradLen(y.C, x.C, m) {
			return m
		}
	}
	return 0
}

// convWinograd is Conv for c.Winograd set (checked by Conv).
func (d *CPU) convWinograd(y, x NCHW, c ConvArgs, scratch []float32) error {
	s := d.winogradSplit(y, x, d.winogradTileOf(y, x, c))
	if need := s.scratch(d.threads, y.N); len(scratch) < need {
		return errConvScratch(len(scratch), need)
	}
	if s.kc > 0 {
		a := C.wino_args{
			u: fptr(c.Winograd), bias: fptr(c.Bias), x: fptr(x.Data), y: fptr(y.Data), scratch: fptr(scratch),
			xbatch: C.size_t(x.BatchStride()), ybatch: C.size_t(y.BatchStride()), perItem: C.size_t(s.perItem),
			ldv: C.size_t(s.ldv), uper: C.size_t(len(c.Winograd) / s.nxi),
			cin: C.int(x.C), cout: C.int(y.C), h: C.int(x.H), w: C.int(x.W), ho: C.int(y.H), wo: C.int(y.W),
			tw: C.int(s.tw), th: C.int(s.th), rows: C.int(s.rows), bands: C.int(s.bands), mc: C.int(s.mc), chunks: C.int(s.chunks),
			kc: C.int(s.kc), tile: C.int(s.tile), act: actCode(c.Act), slope: C.float(LeakySlope), m: C.int(s.m),
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		if C.wino_packed(d.cpool(), d.queue(), C.int(y.N*s.bands*s.chunks), a) == 0 {
			return errBatchMemory
		}
		return nil
	}
	d.flush() // a batch's queued ops first: this path runs now
	d.mu.Lock()
	defer d.mu.Unlock()
	t := &d.wino
	*t = winogradTask{y: y, x: x, c: c, s: s, scratch: scratch}
	d.parallel(y.N*s.bands*s.chunks, t)
	*t = winogradTask{}
	return nil
}

// winogradTask is convWinograd's loop body: item i is chunk i%chunks of
// band (i/chunks)%bands of image i/(chunks*bands).
type winogradTask struct {
	y, x    NCHW
	c       ConvArgs
	s       winogradPlan
	scratch []float32
}

func (t *winogradTask) run(w, i int) {
	y, x, c, s := &t.y, &t.x, &t.c, &t.s
	j := i % s.chunks
	b := (i / s.chunks) % s.bands
	n := i / (s.chunks * s.bands)
	ty0 := b * s.rows
	ty1 := min(ty0+s.rows, s.th)
	m0 := j * s.mc
	mc := min(s.mc, y.C-m0)
	cols := (ty1 - ty0) * s.tw
	scr := t.scratch[w*s.perItem : (w+1)*s.perItem]
	v := scr[:16*x.C*s.ldv]
	m := scr[16*x.C*s.ldv:]
	C.wino_input(fptr(v), C.size_t(s.ldv), C.size_t(x.C*s.ldv), fptr(x.Image(n)), C.int(x.C), C.int(x.H), C.int(x.W),
		C.int(ty0), C.int(ty1), C.int(s.tw))
	for xi := 0; xi < 16; xi++ {
		u := c.Winograd[(xi*y.C+m0)*x.C:]
		sgemm(mc, cols, x.C, u, x.C, v[xi*x.C*s.ldv:], s.ldv, m[xi*mc*s.ldv:], s.ldv)
	}
	C.wino_output(fptr(y.Image(n)[m0*s.outPlane:]), C.int(y.H), C.int(y.W), fptr(m), C.size_t(s.ldv), C.int(mc),
		C.int(ty0), C.int(ty1), C.int(s.tw), fptr(c.Bias[m0:]), actCode(c.Act), C.float(LeakySlope))
}
