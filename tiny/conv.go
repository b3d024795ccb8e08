package tiny

import "fmt"

// Convolution forward on the CPU: y = act(W·im2col(x) + b), one SGEMM per
// tile. A 1x1 stride-1 unpadded conv needs no im2col: its input already is
// the In x H*W matrix B. The output is split one of two ways:
//
//   - over positions (large maps): each goroutine takes tiles of whole
//     output rows, fills its own im2col block (In*K*K x rows*Wo), runs a
//     single-threaded SGEMM into the tile's columns of y and adds bias and
//     activation while the tile is still in cache;
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
	rows     int  // output rows per tile (byCols)
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
		s.rows = max(1, min((d.tileCols+y.W-1)/y.W, (y.H+d.threads-1)/d.threads))
		s.tiles = (y.H + s.rows - 1) / s.rows
		if !s.direct {
			s.perTile = s.colRows * s.rows * y.W
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
func (d *CPU) ConvScratch(y, x NCHW, c ConvArgs) int { return d.split(y, x, c).scratch }

// Conv implements Device.
func (d *CPU) Conv(y, x NCHW, c ConvArgs, scratch []float32) error {
	if err := checkConv(y, x, c); err != nil {
		return err
	}
	s := d.split(y, x, c)
	if len(scratch) < s.scratch {
		return errConvScratch(len(scratch), s.scratch)
	}
	m, k := y.C, s.colRows
	ldc := s.outPlane
	if s.byCols {
		d.parallel(y.N*s.tiles, func(w, i int) {
			n, t := i/s.tiles, i%s.tiles
			oy0 := t * s.rows
			oy1 := min(oy0+s.rows, y.H)
			cols := (oy1 - oy0) * y.W
			out := y.Image(n)[oy0*y.W:]
			var b []float32
			ldb := cols
			if s.direct {
				b, ldb = x.Image(n)[oy0*y.W:], x.Plane()
			} else {
				b = scratch[w*s.perTile : w*s.perTile+k*cols]
				im2col(b, x.Image(n), x.H, x.W, c, 0, x.C, oy0, oy1, y.W)
			}
			sgemm(m, cols, k, c.Weight, k, b, ldb, out, ldc)
			biasAct(out, ldc, 0, m, cols, c.Bias, c.Act)
		})
		return nil
	}
	// Split over output channels: chunks of filter rows, a multiple of 16
	// (the GEMM kernels' register tile) where possible.
	chunk := max(16, (m+d.threads-1)/d.threads)
	chunk = (chunk + 15) / 16 * 16
	chunks := (m + chunk - 1) / chunk
	for n := 0; n < y.N; n++ {
		img := x.Image(n)
		b, ldb := img, x.Plane()
		if !s.direct {
			b, ldb = scratch[:s.perTile], s.outPlane
			d.parallel(x.C, func(_, ch int) {
				im2col(b, img, x.H, x.W, c, ch, ch+1, 0, y.H, y.W)
			})
		}
		out := y.Image(n)
		d.parallel(chunks, func(_, j int) {
			m0 := j * chunk
			m1 := min(m0+chunk, m)
			sgemm(m1-m0, s.outPlane, k, c.Weight[m0*k:], k, b, ldb, out[m0*ldc:], ldc)
			biasAct(out, ldc, m0, m1, s.outPlane, c.Bias, c.Act)
		})
	}
	return nil
}

// Head implements Device: each output position is a row of the GEMM
// X^T·W_a^T (positions x NO) for anchor a, so the product lands directly
// in the NA x H x W x NO layout with no permutation pass. Tiles of
// positions are spread over the goroutines.
func (d *CPU) Head(dst []float32, x NCHW, c ConvArgs, na int) error {
	if err := checkHead(dst, x, c, na); err != nil {
		return err
	}
	in, hw := x.C, x.Plane()
	no := len(c.Bias) / na
	rows := max(1, min(d.tileCols, (hw+d.threads-1)/d.threads))
	tiles := (hw + rows - 1) / rows
	d.parallel(x.N*tiles, func(_, i int) {
		n, t := i/tiles, i%tiles
		p0 := t * rows
		p1 := min(p0+rows, hw)
		img := x.Image(n)
		for a := 0; a < na; a++ {
			out := dst[((n*na+a)*hw+p0)*no:]
			sgemmT(true, true, p1-p0, no, in, img[p0:], hw, c.Weight[a*no*in:], in, out, no)
			addBiasRows(out, p1-p0, no, c.Bias[a*no:(a+1)*no])
		}
	})
	return nil
}

func errConvScratch(have, want int) error {
	return fmt.Errorf("conv: scratch has %d values, want %d (see ConvScratch)", have, want)
}
