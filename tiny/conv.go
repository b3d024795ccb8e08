package tiny

import "fmt"

// Convolution forward on the CPU through OpenBLAS (the path of CPUs
// without AVX-512 and of convs a plan did not prepare; cpu_gemm.go has the
// packed-GEMM path): y = act(W·im2col(x) + b), one SGEMM per tile. A 1x1
// stride-1 unpadded conv needs no im2col: its input already is the In x
// H*W matrix B. The output is split one of two ways:
//
//   - over positions (large maps): each goroutine takes tiles of output
//     positions (spans of the row-major output plane), fills its own
//     im2col block (In*K*K x tile), runs a single-threaded SGEMM into the
//     tile's columns of y and adds bias and activation while the tile is
//     still in cache;
//   - over output channels (small maps, where position tiles would be too
//     narrow for an efficient GEMM): the goroutines first fill one im2col
//     matrix together (split by input channel), then each multiplies its
//     share of the filter rows and finishes those rows.

// minSplitCols is the smallest tile width (output positions per goroutine)
// for which a conv is split over positions rather than output channels.
const minSplitCols = 256

// convSplit is how Conv divides one convolution.
type convSplit struct {
	direct   bool // 1x1, stride 1, no padding: no im2col
	byCols   bool // split over output positions, else over output channels
	cols     int  // output positions per tile (byCols)
	tiles    int  // tiles per image (byCols)
	colRows  int  // In*K*K: rows of the im2col matrix
	perTile  int  // scratch values of one im2col block
	scratch  int  // scratch values in all
	outPlane int  // Ho*Wo
}

// split decides how to divide the conv y = conv(x) over d.threads.
func (d *CPU) split(y, x NCHW, c ConvArgs) convSplit {
	s := convSplit{
		direct:   c.K == 1 && c.S == 1 && c.Pad == 0,
		colRows:  x.C * c.K * c.K,
		outPlane: y.H * y.W,
	}
	if s.outPlane >= d.threads*minSplitCols {
		s.byCols = true
		s.cols = min(d.tileCols, (s.outPlane+d.threads-1)/d.threads)
		s.tiles = (s.outPlane + s.cols - 1) / s.cols
		if !s.direct {
			s.perTile = s.colRows * s.cols
			s.scratch = min(d.threads, s.tiles*y.N) * s.perTile
		}
		return s
	}
	if !s.direct {
		s.perTile = s.colRows * s.outPlane
		s.scratch = s.perTile
	}
	return s
}

// ConvScratch implements Device.
func (d *CPU) ConvScratch(y, x NCHW, c ConvArgs) int {
	if c.Winograd != nil && winogradApplies(x, c) {
		if m := d.winogradTileOf(y, x, c); m > 0 {
			return d.winogradSplit(y, x, m).scratch(d.threads, y.N)
		}
	}
	if c.Packed != nil {
		return d.packedSplit(y, x, c).scratch(d.threads, y.N)
	}
	return d.split(y, x, c).scratch
}

// Conv implements Device.
func (d *CPU) Conv(y, x NCHW, c ConvArgs, scratch []float32) error {
	if err := checkConv(y, x, c); err != nil {
		return err
	}
	if c.Winograd != nil {
		if !winogradApplies(x, c) || d.winogradTileOf(y, x, c) == 0 {
			return fmt.Errorf("conv: %d Winograd filter values for a %dx%d k%d s%d p%d conv (see PrepareConv)", len(c.Winograd), y.C, x.C, c.K, c.S, c.Pad)
		}
		return d.convWinograd(y, x, c, scratch)
	}
	if c.Packed != nil {
		if want := (y.C + gemmMR - 1) / gemmMR * gemmMR * x.C * c.K * c.K; len(c.Packed) != want || !d.packedGEMM() {
			return fmt.Errorf("conv: %d packed filter values for a %dx%d k%d conv, want %d on a CPU with AVX-512 (see PrepareConv)", len(c.Packed), y.C, x.C, c.K, want)
		}
		return d.convPacked(y, x, c, scratch)
	}
	s := d.split(y, x, c)
	if len(scratch) < s.scratch {
		return errConvScratch(len(scratch), s.scratch)
	}
	d.flush() // a batch's queued ops first: this path runs now
	d.mu.Lock()
	defer d.mu.Unlock()
	if s.byCols {
		t := &d.convCols
		*t = convColsTask{y: y, x: x, c: c, s: s, scratch: scratch}
		d.parallel(y.N*s.tiles, t)
		*t = convColsTask{}
		return nil
	}
	// Split over output channels: chunks of filter rows, a multiple of 16
	// (the GEMM kernels' register tile) where possible.
	m := y.C
	chunk := max(16, (m+d.threads-1)/d.threads)
	chunk = (chunk + 15) / 16 * 16
	chunks := (m + chunk - 1) / chunk
	ct, rt := &d.convCol, &d.convRows
	for n := 0; n < y.N; n++ {
		img := x.Image(n)
		b, ldb := img, x.Plane()
		if !s.direct {
			b, ldb = scratch[:s.perTile], s.outPlane
			*ct = im2colTask{b: b, img: img, x: x, y: y, c: c}
			d.parallel(x.C, ct)
			*ct = im2colTask{}
		}
		*rt = convRowsTask{out: y.Image(n), b: b, ldb: ldb, c: c, s: s, m: m, chunk: chunk}
		d.parallel(chunks, rt)
		*rt = convRowsTask{}
	}
	return nil
}

// convColsTask is the loop body of a conv split over positions: item i is
// tile i%tiles of image i/tiles.
type convColsTask struct {
	y, x    NCHW
	c       ConvArgs
	s       convSplit
	scratch []float32
}

func (t *convColsTask) run(w, i int) {
	y, x, c, s := &t.y, &t.x, &t.c, &t.s
	m, k := y.C, s.colRows
	ldc := s.outPlane
	n, ti := i/s.tiles, i%s.tiles
	p0 := ti * s.cols
	p1 := min(p0+s.cols, s.outPlane)
	cols := p1 - p0
	out := y.Image(n)[p0:]
	var b []float32
	ldb := cols
	if s.direct {
		b, ldb = x.Image(n)[p0:], x.Plane()
	} else {
		b = t.scratch[w*s.perTile : w*s.perTile+k*cols]
		im2colSpan(b, x.Image(n), x.H, x.W, *c, 0, x.C, p0, p1, y.W)
	}
	sgemm(m, cols, k, c.Weight, k, b, ldb, out, ldc)
	biasAct(out, ldc, 0, m, cols, c.Bias, c.Act)
}

// im2colTask fills one image's im2col matrix: item ch is input channel ch.
type im2colTask struct {
	b, img []float32
	x, y   NCHW
	c      ConvArgs
}

func (t *im2colTask) run(_, ch int) {
	im2col(t.b, t.img, t.x.H, t.x.W, t.c, ch, ch+1, 0, t.y.H, t.y.W)
}

// convRowsTask is the loop body of a conv split over output channels:
// item j is the chunk of filter rows [j*chunk, (j+1)*chunk).
type convRowsTask struct {
	out, b   []float32
	ldb      int
	c        ConvArgs
	s        convSplit
	m, chunk int
}

func (t *convRowsTask) run(_, j int) {
	k, ldc := t.s.colRows, t.s.outPlane
	m0 := j * t.chunk
	m1 := min(m0+t.chunk, t.m)
	sgemm(m1-m0, t.s.outPlane, k, t.c.Weight[m0*k:], k, t.b, t.ldb, t.out[m0*ldc:], ldc)
	biasAct(t.out, ldc, m0, m1, t.s.outPlane, t.c.Bias, t.c.Act)
}

// Head implements Device: each output position is a row of the GEMM
// X^T·W_a^T (positions x NO) for anchor a, so the product lands directly
// in the NA x H x W x NO layout with no permutation pass. Tiles of
// positions are spread over the goroutines.
func (d *CPU) Head(dst []float32, x NCHW, c ConvArgs, na int) error {
	if err := checkHead(dst, x, c, na); err != nil {
		return err
	}
	hw := x.Plane()
	rows := max(1, min(d.tileCols, (hw+d.threads-1)/d.threads))
	tiles := (hw + rows - 1) / rows
	d.mu.Lock()
	defer d.mu.Unlock()
	if c.Packed != nil {
		if len(c.Packed) != len(c.Weight) || !d.packedGEMM() {
			return fmt.Errorf("head: %d transposed filter values, want %d on a CPU with AVX-512 (see PrepareHead)", len(c.Packed), len(c.Weight))
		}
		return d.headPacked(dst, x, c, na, rows, tiles)
	}
	return d.headTiles(dst, x, c, na, rows, tiles)
}

func errConvScratch(have, want int) error {
	return fmt.Errorf("conv: scratch has %d values, want %d (see ConvScratch)", have, want)
}
