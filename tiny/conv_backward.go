package tiny

/*
#cgo CFLAGS: -O3
#cgo LDFLAGS: -lopenblas
#include <stddef.h>
#include <cblas.h>

// td_sgemm is C = A·B + beta*C in row-major order, A stored transposed
// (k x m) when ta, B stored transposed (n x k) when tb.
static void td_sgemm(int ta, int tb, int m, int n, int k, const float *a, int lda,
		const float *b, int ldb, float beta, float *c, int ldc) {
	cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
		m, n, k, 1.0f, a, lda, b, ldb, beta, c, ldc);
}

// td_row_sums sets (acc 0) or adds to (acc 1) out[o] the sum of cols
// values of row o of y (row stride ld), for rows rows.
static void td_row_sums(const float *y, int rows, int cols, int ld, float *out, int acc) {
	for (int o = 0; o < rows; o++) {
		const float *r = y + (size_t)o * ld;
		float s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
		int i = 0;
		for (; i + 8 <= cols; i += 8) {
			s0 += r[i]; s1 += r[i + 1]; s2 += r[i + 2]; s3 += r[i + 3];
			s4 += r[i + 4]; s5 += r[i + 5]; s6 += r[i + 6]; s7 += r[i + 7];
		}
		for (; i < cols; i++) s0 += r[i];
		const float s = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7));
		out[o] = acc ? out[o] + s : s;
	}
}

// td_col2im adds the columns of an im2col-layout gradient back into the
// image gradient dx (C x h x w): col row ((c-c0)*k+ky)*k+kx, column
// (oy-oy0)*wo+ox is added to dx(c, oy*s-pad+ky, ox*s-pad+kx) when inside,
// for channels [c0, c1) and output rows [oy0, oy1).
static void td_col2im(float *dx, const float *col, int h, int w, int k, int s, int pad,
		int c0, int c1, int oy0, int oy1, int wo) {
	const size_t nt = (size_t)(oy1 - oy0) * wo;
	for (int c = c0; c < c1; c++) {
		float *plane = dx + (size_t)c * h * w;
		for (int ky = 0; ky < k; ky++) {
			for (int kx = 0; kx < k; kx++) {
				const float *row = col + (size_t)(((c - c0) * k + ky) * k + kx) * nt;
				int lo = pad > kx ? (pad - kx + s - 1) / s : 0;
				int hi = w - 1 + pad - kx >= 0 ? (w - 1 + pad - kx) / s + 1 : 0;
				if (lo > wo) lo = wo;
				if (hi > wo) hi = wo;
				if (hi < lo) hi = lo;
				const int n = hi - lo;
				for (int oy = oy0; oy < oy1; oy++) {
					const int iy = oy * s - pad + ky;
					if (iy < 0 || iy >= h) continue;
					const float *src = row + (size_t)(oy - oy0) * wo + lo;
					float *dst = plane + (size_t)iy * w + (lo * s - pad + kx);
					if (s == 1) {
						for (int j = 0; j < n; j++) dst[j] += src[j];
					} else if (s == 2) {
						for (int j = 0; j < n; j++) dst[2 * j] += src[j];
					} else {
						for (int j = 0; j < n; j++) dst[s * j] += src[j];
					}
				}
			}
		}
	}
}

// td_add_sum_t adds to rows [o0, o1) of dst (out x cr) the transposes of
// parts matrices cr x out at src + p*stride, in order of p: dst[o][r] +=
// src_p[r][o]. Reading src along rows of o keeps its cache lines whole.
static void td_add_sum_t(float *dst, const float *src, int parts, size_t stride, int o0, int o1, int out, int cr) {
	for (int p = 0; p < parts; p++) {
		const float *s = src + p * stride;
		for (int r = 0; r < cr; r++) {
			const float *sr = s + (size_t)r * out;
			for (int o = o0; o < o1; o++) dst[(size_t)o * cr + r] += sr[o];
		}
	}
}
*/
import "C"

import "fmt"

// Convolution backward on the CPU, in two parallel passes over the
// output's row tiles (each tile is an im2col block, as in the forward):
//
//   - weights: the tiles of the batch are split into one contiguous range
//     per goroutine slot; each slot accumulates dWᵀ = im2col(x)_tile ·
//     dy_tileᵀ (In*K*K x Out: measured 10-30% faster than dW = dy_tile ·
//     im2col(x)_tileᵀ on the layers with few input channels) into its own
//     partial (and the row sums of dy into its partial dB), and the
//     partials are added to dW (transposed) and dB in slot order, so the
//     result does not depend on scheduling;
//   - input: items are (image, chunk of input channels); each computes
//     dcol = W[:, chunk]ᵀ·dy_tile tile after tile and adds it into its
//     channels of dx (col2im), so no two items write the same value.
//
// A 1x1 stride-1 unpadded conv needs neither im2col nor col2im: x is the
// In x H*W matrix and dx += Wᵀ·dy goes straight into dx.

// convBwdTileCols is the target width (output positions) of a backward
// tile: wider than the forward's, since the weight GEMM reduces over it.
const convBwdTileCols = 1024

// convBwdPlan is how ConvBackward divides one convolution's backward.
type convBwdPlan struct {
	direct   bool // 1x1, stride 1, no padding
	colRows  int  // In*K*K
	outPlane int  // Ho*Wo
	rows     int  // output rows per tile
	tiles    int  // tiles per image
	units    int  // N*tiles
	perTile  int  // values of one im2col block (0 when direct)
	slots    int  // weight-pass slots
	wSize    int  // Out*colRows: values of dW
	part     int  // values of one slot's partial dW and dB
	scratch  int  // scratch values in all
}

// bwdPlan decides how to divide the backward of the conv of x into dy.
func (d *CPU) bwdPlan(dy, x NCHW, c ConvArgs) convBwdPlan {
	p := convBwdPlan{
		direct:   c.K == 1 && c.S == 1 && c.Pad == 0,
		colRows:  x.C * c.K * c.K,
		outPlane: dy.H * dy.W,
	}
	tc := convBwdTileCols
	if d.bwdTileCols > 0 {
		tc = d.bwdTileCols
	}
	p.rows = max(1, min((tc+dy.W-1)/dy.W, dy.H))
	if per := (d.threads + dy.N - 1) / dy.N; per > 1 {
		// Fewer images than goroutines: at least per tiles an image, so
		// that every slot of the weight pass has work.
		p.rows = max(1, min(p.rows, dy.H/per))
	}
	p.tiles = (dy.H + p.rows - 1) / p.rows
	p.units = dy.N * p.tiles
	p.slots = max(1, min(d.threads, p.units))
	if !p.direct {
		p.perTile = p.colRows * p.rows * dy.W
	}
	p.wSize = dy.C * p.colRows
	p.part = p.wSize + dy.C
	p.scratch = d.threads*p.perTile + p.slots*p.part
	return p
}

// ConvBackwardScratch implements TrainDevice: an im2col block per
// goroutine and a partial dW and dB per weight-pass slot.
func (d *CPU) ConvBackwardScratch(dy, x NCHW, c ConvArgs) int {
	if dy.N <= 0 || dy.C <= 0 || dy.H <= 0 || dy.W <= 0 || x.C <= 0 || c.K <= 0 {
		return 0
	}
	return d.bwdPlan(dy, x, c).scratch
}

// ConvBackward implements TrainDevice.
func (d *CPU) ConvBackward(dx, dy, x NCHW, c ConvArgs, dW, dB, scratch []float32) error {
	if err := checkConvBackward(dx, dy, x, c, dW, dB); err != nil {
		return err
	}
	p := d.bwdPlan(dy, x, c)
	if len(scratch) < p.scratch {
		return errConvBackwardScratch(len(scratch), p.scratch)
	}
	cols := scratch[:d.threads*p.perTile]
	parts := scratch[len(cols) : len(cols)+p.slots*p.part]
	d.mu.Lock()
	defer d.mu.Unlock()

	wt := &d.convBwdW
	*wt = convBwdWTask{dy: dy, x: x, c: c, p: p, cols: cols, parts: parts, bias: dB != nil}
	d.parallel(p.slots, wt)
	*wt = convBwdWTask{}

	rt := &d.convBwdR
	*rt = convBwdReduceTask{dst: dW, parts: parts, slots: p.slots, stride: p.part, out: dy.C, cr: p.colRows}
	d.parallel((dy.C+convBwdReduceRows-1)/convBwdReduceRows, rt)
	if dB != nil {
		*rt = convBwdReduceTask{dst: dB, parts: parts[p.wSize:], slots: p.slots, stride: p.part, out: 1, cr: dy.C}
		d.parallel(1, rt)
	}
	*rt = convBwdReduceTask{}

	if dx.Data == nil {
		return nil
	}
	// Input pass: whole images per item when there are enough of them,
	// else each image split into chunks of input channels.
	chunks := 1
	if dy.N < d.threads {
		chunks = min(x.C, (d.threads+dy.N-1)/dy.N)
	}
	chunk := (x.C + chunks - 1) / chunks
	chunks = (x.C + chunk - 1) / chunk
	xt := &d.convBwdX
	*xt = convBwdXTask{dx: dx, dy: dy, c: c, p: p, cols: cols, chunk: chunk, chunks: chunks}
	d.parallel(dy.N*chunks, xt)
	*xt = convBwdXTask{}
	return nil
}

// convBwdWTask is the weight pass: item s is slot s, the tiles
// [s*units/slots, (s+1)*units/slots) of the batch (tile u is tile u%tiles
// of image u/tiles), accumulated into the slot's partial dW and dB.
type convBwdWTask struct {
	dy, x       NCHW
	c           ConvArgs
	p           convBwdPlan
	cols, parts []float32
	bias        bool
}

func (t *convBwdWTask) run(_, s int) {
	dy, x, c, p := &t.dy, &t.x, &t.c, &t.p
	pw := t.parts[s*p.part : (s+1)*p.part]
	pb := pw[p.wSize:]
	col := t.cols[s*p.perTile : (s+1)*p.perTile]
	u0, u1 := s*p.units/p.slots, (s+1)*p.units/p.slots
	var beta float32
	for u := u0; u < u1; u++ {
		n, ti := u/p.tiles, u%p.tiles
		oy0 := ti * p.rows
		oy1 := min(oy0+p.rows, dy.H)
		cols := (oy1 - oy0) * dy.W
		g := dy.Image(n)[oy0*dy.W:]
		var b []float32
		ldb := cols
		if p.direct {
			b, ldb = x.Image(n)[oy0*x.W:], x.Plane()
		} else {
			b = col[:p.colRows*cols]
			im2col(b, x.Image(n), x.H, x.W, *c, 0, x.C, oy0, oy1, dy.W)
		}
		tdSgemm(false, true, p.colRows, dy.C, cols, b, ldb, g, p.outPlane, beta, pw, dy.C)
		if t.bias {
			C.td_row_sums(fptr(g), C.int(dy.C), C.int(cols), C.int(p.outPlane), fptr(pb), C.int(beta))
		}
		beta = 1
	}
	if u0 == u1 { // no tile: a zero partial
		clear(pw)
	}
}

// convBwdReduceRows is the number of rows of dW (output channels) of one
// reduction item: 16 floats, a cache line of each partial's row.
const convBwdReduceRows = 16

// convBwdReduceTask adds the slots' transposed partials (cr x out each,
// stride apart) to dst (out x cr): item i is rows [i*16, (i+1)*16) of dst.
// dB is the case out = 1 (its partials are plain vectors).
type convBwdReduceTask struct {
	dst, parts    []float32
	slots, stride int
	out, cr       int
}

func (t *convBwdReduceTask) run(_, i int) {
	o0 := i * convBwdReduceRows
	o1 := min(o0+convBwdReduceRows, t.out)
	// The last slot's partial ends cr*out values past its start.
	_ = t.parts[(t.slots-1)*t.stride+t.cr*t.out-1]
	_ = t.dst[t.out*t.cr-1]
	C.td_add_sum_t(fptr(t.dst), fptr(t.parts), C.int(t.slots), C.size_t(t.stride), C.int(o0), C.int(o1), C.int(t.out), C.int(t.cr))
}

// convBwdXTask is the input pass: item i is input channels
// [j*chunk, (j+1)*chunk) of image n, j = i%chunks, n = i/chunks.
type convBwdXTask struct {
	dx, dy        NCHW
	c             ConvArgs
	p             convBwdPlan
	cols          []float32
	chunk, chunks int
}

func (t *convBwdXTask) run(w, i int) {
	dx, dy, c, p := &t.dx, &t.dy, &t.c, &t.p
	n, j := i/t.chunks, i%t.chunks
	c0 := j * t.chunk
	c1 := min(c0+t.chunk, dx.C)
	kk := c.K * c.K
	img := dx.Image(n)
	g := dy.Image(n)
	if p.direct {
		hw := dx.Plane()
		tdSgemm(true, false, c1-c0, hw, dy.C, c.Weight[c0:], p.colRows, g, p.outPlane, 1, img[c0*hw:], hw)
		return
	}
	col := t.cols[w*p.perTile : (w+1)*p.perTile]
	nr := (c1 - c0) * kk
	for ti := 0; ti < p.tiles; ti++ {
		oy0 := ti * p.rows
		oy1 := min(oy0+p.rows, dy.H)
		cols := (oy1 - oy0) * dy.W
		dcol := col[:nr*cols]
		tdSgemm(true, false, nr, cols, dy.C, c.Weight[c0*kk:], p.colRows, g[oy0*dy.W:], p.outPlane, 0, dcol, cols)
		C.td_col2im(fptr(img), fptr(dcol), C.int(dx.H), C.int(dx.W), C.int(c.K), C.int(c.S), C.int(c.Pad),
			C.int(c0), C.int(c1), C.int(oy0), C.int(oy1), C.int(dy.W))
	}
}

// tdSgemm computes C = A·B + beta*C (row-major; A stored transposed,
// k x m, when ta; B stored transposed, n x k, when tb). Callers check
// every extent.
func tdSgemm(ta, tb bool, m, n, k int, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	var cta, ctb C.int
	if ta {
		cta = 1
	}
	if tb {
		ctb = 1
	}
	C.td_sgemm(cta, ctb, C.int(m), C.int(n), C.int(k), fptr(a), C.int(lda), fptr(b), C.int(ldb), C.float(beta), fptr(c), C.int(ldc))
}

func errConvBackwardScratch(have, want int) error {
	return fmt.Errorf("conv backward: scratch has %d values, want %d (see ConvBackwardScratch)", have, want)
}
