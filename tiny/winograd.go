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

// wino_filters writes U[xi][o][c] (16 matrices of out x in) for weights
// w[o][c][3][3].
static void wino_filters(float *U, const float *w, int out, int in) {
	const size_t plane = (size_t)out * in;
	float u[16];
	for (int o = 0; o < out; o++) {
		for (int c = 0; c < in; c++) {
			wino_filter(u, w + ((size_t)o * in + c) * 9);
			for (int xi = 0; xi < 16; xi++) U[xi * plane + (size_t)o * in + c] = u[xi];
		}
	}
}

// wino_input transforms the input patches of tile rows [ty0, ty1) (tw
// tiles each) of channels [0, cin) of one image x (cin x h x w, padding 1)
// into V[xi][c][t] (row stride ldv), t = (ty-ty0)*tw + tx. B^T runs down
// four input rows at once (whole rows), B along them on the even and odd
// columns of the padded rows (column -1 is even index 0), so every loop
// runs over contiguous values.
Y7_VEC static void wino_input(float *V, size_t ldv, const float *x, int cin, int h, int w,
		int ty0, int ty1, int tw) {
	const size_t vplane = (size_t)cin * ldv;
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

// wino_args are one Winograd conv's parameters on the packed-GEMM path
// (see convWinograd).
typedef struct {
	const float *u, *bias, *x;
	float *y, *scratch;
	size_t xbatch, ybatch, perItem, ldv, uper;
	int cin, cout, h, w, ho, wo, tw, th, rows, bands, mc, chunks, kc, tile, act;
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
	float *v = a->scratch + (size_t)worker * a->perItem;
	float *m = v + (size_t)16 * a->cin * a->ldv;
	wino_input(v, a->ldv, a->x + n * a->xbatch, a->cin, a->h, a->w, ty0, ty1, a->tw);
	for (int xi = 0; xi < 16; xi++) {
		gemm_tiles(a->u + xi * a->uper + (size_t)m0 * a->cin, mc, a->cin, a->kc, v + (size_t)xi * a->cin * a->ldv, a->ldv,
			cols, a->tile, m + (size_t)xi * mc * a->ldv, a->ldv);
	}
	wino_output(a->y + n * a->ybatch + (size_t)m0 * a->ho * a->wo, a->ho, a->wo, m, a->ldv, mc, ty0, ty1, a->tw,
		a->bias + m0, a->act, a->slope);
}

static void wino_packed(y7_pool *pool, int items, wino_args a) {
	y7_pool_run(pool, items, wino_item, &a);
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
func (d *CPU) winogradSplit(y, x NCHW) winogradPlan {
	best := winogradPlan{}
	bestScore := -1.0
	tw, th := (y.W+1)/2, (y.H+1)/2
	for _, chunks := range []int{1, d.threads} {
		mc := min(y.C, ((y.C+chunks-1)/chunks+15)/16*16)
		rowsMax := min(th, max(1, d.winoBudget/(16*(x.C+mc))/tw))
		b0 := (th + rowsMax - 1) / rowsMax
		for _, bands := range []int{b0, min(th, (b0+d.threads-1)/d.threads*d.threads)} {
			s := winogradPlan{tw: tw, th: th, outPlane: y.H * y.W, mc: mc, chunks: (y.C + mc - 1) / mc}
			s.rows = (th + bands - 1) / bands
			s.bands = (th + s.rows - 1) / s.rows
			s.ldv = s.rows * tw
			s.perItem = 16 * (x.C + s.mc) * s.ldv
			if d.packedGEMM() {
				// V and M rows of an odd number of cache lines (the
				// kernel reads V column-wise, see oddLines)
				s.ldv = oddLines(s.ldv)
				s.perItem = 16 * (x.C + s.mc) * s.ldv
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

// PrepareConv implements ConvPreparer: a 3x3 stride-1 conv on a map large
// enough gets its Winograd filters (16/9 of its weights in memory); any
// other conv, on a CPU with AVX-512, its filters packed for the
// packed-GEMM path (cpu_gemm.go).
func (d *CPU) PrepareConv(y, x NCHW, c ConvArgs) (ConvArgs, error) {
	c.Winograd, c.Packed = nil, nil
	if s := d.winogradSplit(y, x); !d.noWinograd && winogradApplies(x, c) && s.rows*s.tw >= winogradMinTiles {
		return d.withWinograd(y, x, c)
	}
	if d.packedGEMM() {
		return withPackedWeights(y, x, c)
	}
	return c, nil
}

// withWinograd returns c with its Winograd filters: U[xi] (16 matrices of
// y.C x x.C), each packed for the packed-GEMM path where d runs it.
func (d *CPU) withWinograd(y, x NCHW, c ConvArgs) (ConvArgs, error) {
	if len(c.Weight) != 9*y.C*x.C {
		return c, fmt.Errorf("conv: %d weights, want %d (%dx%dx3x3)", len(c.Weight), 9*y.C*x.C, y.C, x.C)
	}
	u := make([]float32, 16*y.C*x.C)
	C.wino_filters(fptr(u), fptr(c.Weight), C.int(y.C), C.int(x.C))
	if !d.packedGEMM() {
		c.Winograd = u
		return c, nil
	}
	c.Winograd = make([]float32, d.winogradLen(y.C, x.C))
	per := len(c.Winograd) / 16
	for xi := 0; xi < 16; xi++ {
		packWeights(c.Winograd[xi*per:], u[xi*y.C*x.C:], y.C, x.C)
	}
	return c, nil
}

// winogradLen is the number of Winograd filter values of an out x in conv
// on d: 16 matrices, padded to whole blocks of gemmMR rows when packed.
func (d *CPU) winogradLen(out, in int) int {
	if d.packedGEMM() {
		out = (out + gemmMR - 1) / gemmMR * gemmMR
	}
	return 16 * out * in
}

// convWinograd is Conv for c.Winograd set (checked by Conv).
func (d *CPU) convWinograd(y, x NCHW, c ConvArgs, scratch []float32) error {
	s := d.winogradSplit(y, x)
	if need := s.scratch(d.threads, y.N); len(scratch) < need {
		return errConvScratch(len(scratch), need)
	}
	if s.kc > 0 {
		a := C.wino_args{
			u: fptr(c.Winograd), bias: fptr(c.Bias), x: fptr(x.Data), y: fptr(y.Data), scratch: fptr(scratch),
			xbatch: C.size_t(x.BatchStride()), ybatch: C.size_t(y.BatchStride()), perItem: C.size_t(s.perItem),
			ldv: C.size_t(s.ldv), uper: C.size_t(len(c.Winograd) / 16),
			cin: C.int(x.C), cout: C.int(y.C), h: C.int(x.H), w: C.int(x.W), ho: C.int(y.H), wo: C.int(y.W),
			tw: C.int(s.tw), th: C.int(s.th), rows: C.int(s.rows), bands: C.int(s.bands), mc: C.int(s.mc), chunks: C.int(s.chunks),
			kc: C.int(s.kc), tile: C.int(s.tile), act: actCode(c.Act), slope: C.float(LeakySlope),
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		C.wino_packed((*C.y7_pool)(d.cpool()), C.int(y.N*s.bands*s.chunks), a)
		return nil
	}
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
	C.wino_input(fptr(v), C.size_t(s.ldv), fptr(x.Image(n)), C.int(x.C), C.int(x.H), C.int(x.W),
		C.int(ty0), C.int(ty1), C.int(s.tw))
	for xi := 0; xi < 16; xi++ {
		u := c.Winograd[(xi*y.C+m0)*x.C:]
		sgemm(mc, cols, x.C, u, x.C, v[xi*x.C*s.ldv:], s.ldv, m[xi*mc*s.ldv:], s.ldv)
	}
	C.wino_output(fptr(y.Image(n)[m0*s.outPlane:]), C.int(y.H), C.int(y.W), fptr(m), C.size_t(s.ldv), C.int(mc),
		C.int(ty0), C.int(ty1), C.int(s.tw), fptr(c.Bias[m0:]), actCode(c.Act), C.float(LeakySlope))
}
