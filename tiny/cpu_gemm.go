package tiny

/*
#cgo CFLAGS: -O3
#cgo LDFLAGS: -lpthread
#include "gemm.h"
#include "pool.h"

// conv_args are one packed-GEMM conv's parameters (see convPacked).
typedef struct {
	const float *wp, *bias, *x;
	float *y, *scratch;
	size_t xbatch, ybatch, perItem, ldbp;
	int m, kdim, kc, mc, chunks, tiles, cols;
	int h, w, k, s, pad, ho, wo, direct, act;
	float slope;
	int taps; // 3x3 through taps (conv_tile_taps): kc is input channels per K block
	conv_taps tp;
} conv_args;

// conv_item is item i of a packed-GEMM conv: row chunk i%chunks of
// position tile (i/chunks)%tiles of image i/(chunks*tiles).
static void conv_item(const void *va, int worker, int i) {
	const conv_args *a = va;
	const int j = i % a->chunks, ti = (i / a->chunks) % a->tiles, n = i / (a->chunks * a->tiles);
	const int m0 = j * a->mc, m1 = m0 + a->mc < a->m ? m0 + a->mc : a->m;
	const int plane = a->ho * a->wo;
	const int p0 = ti * a->cols, p1 = p0 + a->cols < plane ? p0 + a->cols : plane;
	float *bp = a->scratch ? a->scratch + (size_t)worker * a->perItem : NULL;
	if (a->taps) {
		const int cin = a->kdim / 9;
		const float *x = a->x + n * a->xbatch;
		conv_taps tp = a->tp;
		int qbase = 0;
		if (a->s == 2) {
			// the phases of the input rows this tile reads, into the
			// worker's scratch (L2-sized; a tile's own rows, so the
			// split costs one pass over the input per chunk)
			const int i0 = p0 / a->wo > 0 ? p0 / a->wo - 1 : 0, rows = (p1 - 1) / a->wo - i0 + 1;
			phase_split(bp, x, cin, a->h, a->w, a->wo, i0, rows);
			tp = make_taps(2, rows, a->wo);
			x = bp;
			qbase = i0 * a->wo;
		}
		conv_tile_taps(a->wp + (size_t)m0 * a->kdim, m1 - m0, cin, a->kc, x, &tp, a->ho, a->wo,
			qbase, p0, p1, a->y + n * a->ybatch + (size_t)m0 * plane, plane, a->bias + m0, a->act, a->slope);
		return;
	}
	conv_tile(a->wp + (size_t)m0 * a->kdim, m1 - m0, a->kdim, a->kc,
		a->x + n * a->xbatch, a->h, a->w, a->k, a->s, a->pad, a->wo, a->direct, (size_t)a->h * a->w,
		p0, p1, a->y + n * a->ybatch + (size_t)m0 * plane, plane, a->bias + m0, a->act, a->slope, bp, a->ldbp);
}

// conv_packed runs the conv's items on pool now, or, with q, queues them
// (0: out of memory).
static int conv_packed(y7_pool *pool, y7_queue *q, int items, conv_args a) {
	if (a.taps) a.tp = make_taps(a.s, a.ho, a.wo);
	return y7_run_or_queue(pool, q, items, conv_item, &a, sizeof a);
}

// head_args are one detect conv's parameters: item i is position tile
// i%tiles (rows positions) of image i/tiles, every anchor.
typedef struct {
	float *dst;
	const float *x, *wt, *bias;
	size_t xbatch;
	int in, hw, na, no, rows, tiles;
} packed_head_args;

static void packed_head_item(const void *va, int worker, int i) {
	const packed_head_args *a = va;
	const int n = i / a->tiles, ti = i % a->tiles;
	const int p0 = ti * a->rows, p1 = p0 + a->rows < a->hw ? p0 + a->rows : a->hw;
	for (int an = 0; an < a->na; an++) {
		head_tile(a->x + n * a->xbatch, a->in, a->hw, a->wt + (size_t)an * a->in * a->no, a->no, a->bias + an * a->no,
			a->dst + ((size_t)(n * a->na + an) * a->hw + p0) * a->no, p0, p1);
	}
}

static int head_packed(y7_pool *pool, y7_queue *q, int items, packed_head_args a) {
	return y7_run_or_queue(pool, q, items, packed_head_item, &a, sizeof a);
}

static y7_pool *pool_new(int helpers, long spin_ns) { return y7_pool_new(helpers, spin_ns); }
static void pool_free(y7_pool *p) { y7_pool_free(p); }
static y7_queue *queue_new(void) { return y7_queue_new(); }
static void queue_free(y7_queue *q) { y7_queue_free(q); }
static void queue_run(y7_pool *p, y7_queue *q) { y7_queue_run(p, q); }
*/
import "C"

import (
	"fmt"
	"time"
	"unsafe"
)

// The packed-GEMM conv path (the C above). Why not OpenBLAS here: on two
// cores sharing a cache, what limits a conv is the data each worker moves,
// not its multiply-adds. Through SGEMM a kxk conv writes an im2col block,
// OpenBLAS copies it again into its own packed layout and repacks the
// filters on every call; here the filters are packed once per plan, the
// kernel reads the im2col block (one K block of the tile, L2-sized) or a
// 1x1 conv's input where they are, and the bias and activation are
// applied in registers. Measured on one core: 206 GFLOP/s on an
// L2-resident 1x1 conv where OpenBLAS reaches 169.

const (
	gemmMR = C.MR // output channels per micro-kernel block
	gemmNR = C.NR // output positions per micro-kernel block (one B panel)
	// gemmKC is the target K block: one B panel (gemmKC x gemmNR values,
	// 36 KiB) stays in L1 while the kernel sweeps the filter rows over it.
	gemmKC = C.KC_MAX
)

// defaultTapKC is the input channels of one K block of a conv through
// taps (9 rows each): a 3x3 conv of up to 64 input channels runs in one
// block (no partial sums in y), and larger blocks measured no faster.
const defaultTapKC = 64

// hasPackedGEMM is whether this processor can run the packed-GEMM path
// (read once; never changes).
var hasPackedGEMM = C.gemm_supported() != 0

// packedGEMM reports whether d runs convs through the packed-GEMM path.
func (d *CPU) packedGEMM() bool { return hasPackedGEMM && !d.noPacked }

// withPackedWeights returns c with its filters packed for the packed-GEMM
// path.
func withPackedWeights(y, x NCHW, c ConvArgs) (ConvArgs, error) {
	kdim := x.C * c.K * c.K
	if len(c.Weight) != y.C*kdim {
		return c, fmt.Errorf("conv: %d weights, want %d (%dx%dx%dx%d)", len(c.Weight), y.C*kdim, y.C, x.C, c.K, c.K)
	}
	c.Packed = make([]float32, (y.C+gemmMR-1)/gemmMR*gemmMR*kdim)
	C.pack_weights(fptr(c.Packed), fptr(c.Weight), C.int(y.C), C.int(kdim))
	return c, nil
}

// packedPlan is how Conv divides one packed-GEMM convolution: items are
// (image, tile of positions, chunk of output rows).
type packedPlan struct {
	kdim    int // In*K*K
	kc      int // K block
	cols    int // positions per tile, a multiple of gemmNR
	tiles   int // tiles per image
	mc      int // output rows per chunk, a multiple of gemmMR
	chunks  int // chunks of output rows
	ldbp    int // row stride of a K block of the im2col matrix (0: direct)
	perItem int // im2col scratch of one worker
	// taps: a 3x3 conv as an implicit GEMM (conv_tile_taps), kc then
	// counts input channels (and perItem, for stride 2, is the phases of
	// a tile's input rows)
	taps bool
}

// packedSplit plans y = conv(x) over d.threads: tiles of at most
// d.tileCols positions that keep the workers evenly busy
// (balancedTiles); maps with fewer tiles than the workers (a 1x1 conv or
// a conv through taps: twice the workers) are also split over output
// rows, so every worker has items. A 3x3 conv with padding 1 runs through
// taps where tapsApply says so, any other kxk conv through im2col.
func (d *CPU) packedSplit(y, x NCHW, c ConvArgs) packedPlan {
	s := packedPlan{kdim: x.C * c.K * c.K}
	kk := c.K * c.K
	s.kc = min(s.kdim, max(kk, gemmKC/kk*kk))
	plane := y.H * y.W
	s.cols = balancedTiles(plane, y.N, d.threads, d.tileCols)
	s.tiles = (plane + s.cols - 1) / s.cols
	if d.tapsApply(x, c) {
		s.taps = true
		s.kc = min(x.C, max(1, d.tapKC))
		if c.S == 2 {
			s.perItem = x.C * 4 * int(C.phase_rows(C.int(s.cols), C.int(y.H), C.int(y.W))) * y.W
		}
	}
	s.mc, s.chunks = y.C, 1
	// Each row chunk of a tile fills the tile's im2col blocks again, so a
	// kxk conv takes one chunk per worker; a 1x1 conv fills nothing and
	// takes two, for balance.
	want := d.threads
	if direct1x1(c) || s.taps {
		want = 2 * d.threads
	}
	if y.N*s.tiles < want && y.C > gemmMR {
		chunks := (want + y.N*s.tiles - 1) / (y.N * s.tiles)
		s.mc = ((y.C+chunks-1)/chunks + gemmMR - 1) / gemmMR * gemmMR
		s.chunks = (y.C + s.mc - 1) / s.mc
	}
	if !direct1x1(c) && !s.taps {
		s.ldbp = oddLines(s.cols)
		s.perItem = s.kc * s.ldbp
	}
	return s
}

// balancedTiles is the positions per tile (a multiple of 16, one vector)
// for n images of plane positions on threads workers that take the tiles
// in turn: of the tile widths up to target, the one whose busiest
// worker has the least work (tileWork); the widest among equals.
func balancedTiles(plane, n, threads, target int) int {
	best, bestSpan := 16, -1
	for cols := 16; cols < target+16; cols += 16 {
		tiles := (plane + cols - 1) / cols
		full, last := tileWork(cols), tileWork(plane-(tiles-1)*cols)
		span := 0 // the busiest worker's work: it takes items w, w+threads, ...
		for w := 0; w < threads; w++ {
			items := max(0, (n*tiles-w+threads-1)/threads)
			lasts := 0 // of them, last tiles of an image
			for img := 0; img < n; img++ {
				if (img*tiles+tiles-1)%threads == w {
					lasts++
				}
			}
			span = max(span, (items-lasts)*full+lasts*last)
		}
		if bestSpan < 0 || span <= bestSpan {
			best, bestSpan = cols, span
		}
		if cols >= plane {
			break
		}
	}
	return best
}

// tileWork is the cost of a tile of n positions in units of one position
// of a full panel: every vector the kernel runs (partial ones count
// whole), a panel's fixed cost, and a tile's.
func tileWork(n int) int {
	const perPanel, perTile = 8, 32
	work := perTile
	for ; n > 0; n -= gemmNR {
		work += (min(n, gemmNR)+15)/16*16 + perPanel
	}
	return work
}

// oddLines is the row stride (>= n) for rows of n float32 values that makes
// a row an odd number of 64-byte lines, so the rows of a block read
// column-wise spread over the cache's sets instead of thrashing a few.
func oddLines(n int) int {
	lines := (n + 15) / 16
	if lines%2 == 0 {
		lines++
	}
	return lines * 16
}

// scratch is the scratch a conv of n images needs on threads workers.
func (s packedPlan) scratch(threads, n int) int {
	return min(threads, n*s.tiles*s.chunks) * s.perItem
}

// tapsApply reports whether d runs the packed conv y = conv(x) through
// taps: a 3x3 conv with padding 1 and stride 1, or stride 2 and at least
// d.tapsS2MinIn input channels.
func (d *CPU) tapsApply(x NCHW, c ConvArgs) bool {
	return !d.noTaps && c.K == 3 && c.Pad == 1 && (c.S == 1 || c.S == 2 && x.C >= d.tapsS2MinIn)
}

// convPacked is Conv for c.Packed set (checked by Conv).
func (d *CPU) convPacked(y, x NCHW, c ConvArgs, scratch []float32) error {
	s := d.packedSplit(y, x, c)
	if need := s.scratch(d.threads, y.N); len(scratch) < need {
		return errConvScratch(len(scratch), need)
	}
	direct := 0
	if direct1x1(c) {
		direct = 1
	}
	a := C.conv_args{
		wp: fptr(c.Packed), bias: fptr(c.Bias), x: fptr(x.Data), y: fptr(y.Data),
		xbatch: C.size_t(x.BatchStride()), ybatch: C.size_t(y.BatchStride()),
		perItem: C.size_t(s.perItem), ldbp: C.size_t(s.ldbp),
		m: C.int(y.C), kdim: C.int(s.kdim), kc: C.int(s.kc), mc: C.int(s.mc), chunks: C.int(s.chunks),
		tiles: C.int(s.tiles), cols: C.int(s.cols),
		h: C.int(x.H), w: C.int(x.W), k: C.int(c.K), s: C.int(c.S), pad: C.int(c.Pad), ho: C.int(y.H), wo: C.int(y.W),
		direct: C.int(direct), act: actCode(c.Act), slope: C.float(LeakySlope),
	}
	if s.taps {
		a.taps = 1
	}
	if s.perItem > 0 {
		a.scratch = fptr(scratch)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if C.conv_packed(d.cpool(), d.queue(), C.int(y.N*s.tiles*s.chunks), a) == 0 {
		return errBatchMemory
	}
	return nil
}

// cPoolSpin is how long an idle helper thread of the C pool spins
// watching for the next loop before it sleeps (pool.h).
const cPoolSpin = 200 * time.Microsecond

// cPool is the CPU device's C worker pool (pool.h): threads-1 helper
// pthreads for the ops whose loop bodies are C.
type cPool struct{ p *C.y7_pool }

// newCPool starts helpers threads; nil if there are none to start or the
// threads could not start (the ops then run on the caller alone).
func newCPool(helpers int) *cPool {
	if helpers <= 0 {
		return nil
	}
	p := C.pool_new(C.int(helpers), C.long(cPoolSpin.Nanoseconds()))
	if p == nil {
		return nil
	}
	return &cPool{p: p}
}

// close stops the helper threads; safe to call more than once.
func (p *cPool) close() {
	if p != nil && p.p != nil {
		C.pool_free(p.p)
		p.p = nil
	}
}

// cpool is the device's C pool for a cgo call (NULL: run on the caller).
// The caller holds d.mu.
func (d *CPU) cpool() *C.y7_pool {
	if d.cp == nil {
		return nil
	}
	return d.cp.p
}

// queue is where d queues its C loops instead of running them: the
// batch's queue on a batch's copy of the device (cpu_batch.go), else NULL.
func (d *CPU) queue() *C.y7_queue { return (*C.y7_queue)(d.q) }

// runQueue runs and empties the C queue q on d's C pool. The caller holds
// d.mu.
func (d *CPU) runQueue(q unsafe.Pointer) { C.queue_run(d.cpool(), (*C.y7_queue)(q)) }

func newQueue() unsafe.Pointer { return unsafe.Pointer(C.queue_new()) }

func freeQueue(q unsafe.Pointer) { C.queue_free((*C.y7_queue)(q)) }

// PrepareHead implements HeadPreparer: on the packed-GEMM path the detect
// conv's filters, transposed per anchor (na x In x no), so the head's GEMM
// reads them as its B operand (Head).
func (d *CPU) PrepareHead(x NCHW, c ConvArgs, na int) (ConvArgs, error) {
	c.Packed = nil
	if !d.packedGEMM() || na <= 0 || len(c.Bias)%na != 0 {
		return c, nil
	}
	no := len(c.Bias) / na
	if len(c.Weight) != na*no*x.C {
		return c, fmt.Errorf("head: %d weights, want %d (%dx%d)", len(c.Weight), na*no*x.C, na*no, x.C)
	}
	c.Packed = make([]float32, len(c.Weight))
	for a := 0; a < na; a++ {
		for o := 0; o < no; o++ {
			for ci := 0; ci < x.C; ci++ {
				c.Packed[(a*x.C+ci)*no+o] = c.Weight[((a*no)+o)*x.C+ci]
			}
		}
	}
	return c, nil
}

// headPacked runs Head on the packed-GEMM path: tiles of rows positions,
// every anchor's GEMM with the positions as rows. The caller holds d.mu.
func (d *CPU) headPacked(dst []float32, x NCHW, c ConvArgs, na, rows, tiles int) error {
	a := C.packed_head_args{dst: fptr(dst), x: fptr(x.Data), wt: fptr(c.Packed), bias: fptr(c.Bias), xbatch: C.size_t(x.BatchStride()),
		in: C.int(x.C), hw: C.int(x.Plane()), na: C.int(na), no: C.int(len(c.Bias) / na), rows: C.int(rows), tiles: C.int(tiles)}
	if C.head_packed(d.cpool(), d.queue(), C.int(x.N*tiles), a) == 0 {
		return errBatchMemory
	}
	return nil
}

// packWeights writes w (m x kdim) packed for the micro-kernel into dst
// (ceil(m/gemmMR)*gemmMR*kdim values).
func packWeights(dst, w []float32, m, kdim int) {
	C.pack_weights(fptr(dst), fptr(w), C.int(m), C.int(kdim))
}
