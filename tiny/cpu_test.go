package tiny

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

// Reference implementations: direct loops in float64 over dense NCHW
// tensors, written for clarity, not speed.

func devRefConv(x NCHW, c ConvArgs, out int) (y []float64, mag []float64, ho, wo int) {
	ho, wo = convOut(x.H, c.K, c.S, c.Pad), convOut(x.W, c.K, c.S, c.Pad)
	y = make([]float64, x.N*out*ho*wo)
	mag = make([]float64, len(y)) // sum of |terms|, for the error bound
	for n := 0; n < x.N; n++ {
		img := x.Image(n)
		for o := 0; o < out; o++ {
			for oy := 0; oy < ho; oy++ {
				for ox := 0; ox < wo; ox++ {
					s, m := float64(c.Bias[o]), math.Abs(float64(c.Bias[o]))
					for ci := 0; ci < x.C; ci++ {
						for ky := 0; ky < c.K; ky++ {
							for kx := 0; kx < c.K; kx++ {
								iy, ix := oy*c.S-c.Pad+ky, ox*c.S-c.Pad+kx
								if iy < 0 || iy >= x.H || ix < 0 || ix >= x.W {
									continue
								}
								t := float64(c.Weight[((o*x.C+ci)*c.K+ky)*c.K+kx]) * float64(img[(ci*x.H+iy)*x.W+ix])
								s += t
								m += math.Abs(t)
							}
						}
					}
					switch {
					case c.Act == ActReLU && s < 0:
						s = 0
					case c.Act == ActLeaky && s < 0:
						s *= LeakySlope
					}
					i := ((n*out+o)*ho+oy)*wo + ox
					y[i], mag[i] = s, m
				}
			}
		}
	}
	return y, mag, ho, wo
}

func devRefMaxPool(x NCHW, p PoolArgs) (y []float32, ho, wo int) {
	ho, wo = convOut(x.H, p.K, p.S, p.Pad), convOut(x.W, p.K, p.S, p.Pad)
	y = make([]float32, x.N*x.C*ho*wo)
	for n := 0; n < x.N; n++ {
		img := x.Image(n)
		for c := 0; c < x.C; c++ {
			for oy := 0; oy < ho; oy++ {
				for ox := 0; ox < wo; ox++ {
					m := float32(math.Inf(-1))
					for ky := 0; ky < p.K; ky++ {
						for kx := 0; kx < p.K; kx++ {
							iy, ix := oy*p.S-p.Pad+ky, ox*p.S-p.Pad+kx
							if iy >= 0 && iy < x.H && ix >= 0 && ix < x.W {
								m = max(m, img[(c*x.H+iy)*x.W+ix])
							}
						}
					}
					y[((n*x.C+c)*ho+oy)*wo+ox] = m
				}
			}
		}
	}
	return y, ho, wo
}

func devRandSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

// devEmbed returns a view of a random dense tensor placed as channels
// [off, off+c) of a larger (off+c+2)-channel tensor, so that the ops are
// also checked on concat slices with a batch stride.
func devEmbed(r *rand.Rand, n, c, h, w, off int) NCHW {
	big := NCHW{Data: devRandSlice(r, n*(off+c+2)*h*w), N: n, C: off + c + 2, H: h, W: w}
	return big.Channels(off, c)
}

// devDense returns a dense copy of a view's values.
func devDense(t NCHW) []float32 {
	var d []float32
	for n := 0; n < t.N; n++ {
		d = append(d, t.Image(n)...)
	}
	return d
}

// TestCPUConvMatchesReference checks the im2col+SGEMM and direct paths,
// both splits (over positions and over output channels), strides,
// K blocks of the packed-GEMM path (run after the OpenBLAS path on CPUs
// with AVX-512),
// paddings, activations, batch 2 and channel-slice views. Tolerance: the
// float64 reference is exact to float32 precision; a float32 sum of K
// terms errs by at most about K*eps32*sum|terms| (eps32 = 6e-8), and far
// less in practice, so 2e-6*sum|terms| + 1e-6 allows K up to ~30 at the
// worst-case bound and any K here for realistic rounding.
func TestCPUConvMatchesReference(t *testing.T) {
	tests := []struct {
		n, in, out, h, w, k, s, pad int
		act                         Act
	}{
		{1, 3, 8, 17, 13, 3, 2, 1, ActReLU},     // the first layer's shape, odd sides
		{1, 5, 7, 9, 9, 3, 1, 1, ActLeaky},      // channel split (small map)
		{2, 4, 16, 40, 40, 3, 1, 1, ActLeaky},   // position split, batch 2
		{1, 16, 33, 48, 40, 1, 1, 0, ActReLU},   // direct 1x1, position split
		{2, 6, 40, 8, 8, 1, 1, 0, ActNone},      // direct 1x1, channel split, chunk edge
		{1, 8, 12, 33, 35, 3, 2, 1, ActReLU},    // stride 2, odd sides, position split
		{1, 3, 5, 7, 7, 5, 1, 2, ActLeaky},      // 5x5
		{1, 4, 6, 10, 10, 1, 2, 0, ActNone},     // 1x1 stride 2 goes through im2col
		{1, 2, 3, 6, 6, 3, 1, 0, ActReLU},       // no padding
		{1, 32, 64, 64, 64, 3, 1, 1, ActReLU},   // several tiles per goroutine
		{1, 64, 20, 20, 20, 3, 1, 1, ActLeaky},  // 20x20, channel split with im2col
		{1, 128, 255, 10, 10, 1, 1, 0, ActNone}, // detect conv shape
		{1, 300, 20, 12, 12, 1, 1, 0, ActReLU},  // 1x1 over two K blocks (packed path)
		{2, 40, 24, 30, 29, 3, 1, 1, ActLeaky},  // 3x3 over two K blocks, batch 2
		{1, 24, 13, 50, 50, 3, 2, 1, ActReLU},   // stride 2 over two K blocks, rows past a block of 8
		{2, 45, 9, 15, 14, 3, 2, 1, ActLeaky},   // stride 2, batch 2, three K blocks of taps
		{1, 7, 17, 1, 20, 3, 1, 1, ActReLU},     // one row: every tap above or below is padding
		{1, 5, 8, 21, 1, 3, 2, 1, ActNone},      // one column, stride 2
	}
	for _, threads := range []int{1, 2, 3} {
		dev := NewCPU(threads)
		dev.tileCols = 300 // several tiles even on small maps
		for _, tc := range tests {
			name := fmt.Sprintf("t%d/%dx%dx%dx%d-o%d-k%ds%dp%d-%s", threads, tc.n, tc.in, tc.h, tc.w, tc.out, tc.k, tc.s, tc.pad, tc.act)
			t.Run(name, func(t *testing.T) {
				r := rand.New(rand.NewPCG(1, uint64(tc.in*1000+tc.out)))
				x := devEmbed(r, tc.n, tc.in, tc.h, tc.w, 3)
				c := ConvArgs{Weight: devRandSlice(r, tc.out*tc.in*tc.k*tc.k), Bias: devRandSlice(r, tc.out), K: tc.k, S: tc.s, Pad: tc.pad, Act: tc.act}
				want, mag, ho, wo := devRefConv(x, c, tc.out)
				y := devEmbed(r, tc.n, tc.out, ho, wo, 2)
				devCheckConv(t, dev, y, x, c, want, mag, 2e-6, 1e-6) // OpenBLAS
				if !hasPackedGEMM {
					return // no AVX-512: the packed path is never chosen
				}
				pc, err := withPackedWeights(y, x, c)
				if err != nil {
					t.Fatal(err)
				}
				// 3x3 convs through taps (stride 2 too), then through im2col
				dev.tapsS2MinIn = 1
				devCheckConv(t, dev, y, x, pc, want, mag, 2e-6, 1e-6)
				if dev.tapsApply(x, c) {
					dev.noTaps = true
					devCheckConv(t, dev, y, x, pc, want, mag, 2e-6, 1e-6)
					dev.noTaps = false
				}
				dev.tapsS2MinIn = 16
			})
		}
	}
}

// devCheckConv runs dev.Conv(y, x, c) and checks every output against the
// reference want within rel*mag + abs (mag: the sum of the absolute
// terms), and that nothing outside the view of y changed.
func devCheckConv(t *testing.T, dev *CPU, y, x NCHW, c ConvArgs, want, mag []float64, rel, abs float64) {
	t.Helper()
	outside := append([]float32(nil), y.Data...)
	scratch := make([]float32, dev.ConvScratch(y, x, c))
	if err := dev.Conv(y, x, c, scratch); err != nil {
		t.Fatal(err)
	}
	got := devDense(y)
	worst := 0.0
	for i := range want {
		e := math.Abs(float64(got[i]) - want[i])
		if bound := rel*mag[i] + abs; e > bound {
			t.Fatalf("y[%d] = %v, want %v (error %.3g, bound %.3g)", i, got[i], want[i], e, bound)
		}
		worst = max(worst, e)
	}
	devCheckOutside(t, y, outside)
	t.Logf("max abs error %.3g", worst)
}

// devCheckOutside fails if the op wrote outside its view of a larger tensor.
func devCheckOutside(t *testing.T, y NCHW, before []float32) {
	t.Helper()
	inside := make([]bool, len(y.Data))
	for n := 0; n < y.N; n++ {
		o := n * y.BatchStride()
		for i := 0; i < y.C*y.H*y.W; i++ {
			inside[o+i] = true
		}
	}
	for i := range y.Data {
		if !inside[i] && y.Data[i] != before[i] {
			t.Fatalf("value %d outside the output view changed", i)
		}
	}
}

// TestCPUMaxPoolMatchesReference: max is exact, so the outputs must be
// equal bit for bit.
func TestCPUMaxPoolMatchesReference(t *testing.T) {
	tests := []struct {
		n, c, h, w int
		p          PoolArgs
	}{
		{1, 5, 16, 16, PoolArgs{K: 2, S: 2}},          // MP
		{2, 3, 15, 9, PoolArgs{K: 2, S: 2}},           // MP, odd sides
		{1, 4, 20, 20, PoolArgs{K: 5, S: 1, Pad: 2}},  // SP 5
		{1, 4, 10, 10, PoolArgs{K: 9, S: 1, Pad: 4}},  // SP 9
		{2, 3, 10, 7, PoolArgs{K: 13, S: 1, Pad: 6}},  // SP 13, window wider than the map
		{1, 2, 11, 11, PoolArgs{K: 3, S: 2, Pad: 1}},  // strided, padded
		{1, 2, 6, 6, PoolArgs{K: 3, S: 1, Pad: 0}},    // no padding
		{1, 1, 1, 1, PoolArgs{K: 13, S: 1, Pad: 6}},   // a single pixel
		{1, 16, 40, 40, PoolArgs{K: 5, S: 1, Pad: 2}}, // many planes
		{2, 9, 32, 32, PoolArgs{K: 5, S: 1, Pad: 2}},  // the largest plane of the vector path
		{1, 70, 13, 13, PoolArgs{K: 9, S: 1, Pad: 4}}, // SPP at 416: several planes per item
	}
	for _, threads := range []int{1, 2} {
		dev := NewCPU(threads)
		for _, tc := range tests {
			t.Run(fmt.Sprintf("t%d/%dx%dx%dx%d-%+v", threads, tc.n, tc.c, tc.h, tc.w, tc.p), func(t *testing.T) {
				r := rand.New(rand.NewPCG(2, uint64(tc.h)))
				x := devEmbed(r, tc.n, tc.c, tc.h, tc.w, 1)
				want, ho, wo := devRefMaxPool(x, tc.p)
				y := devEmbed(r, tc.n, tc.c, ho, wo, 4)
				outside := append([]float32(nil), y.Data...)
				if err := dev.MaxPool(y, x, tc.p, make([]float32, dev.PoolScratch(y, x, tc.p))); err != nil {
					t.Fatal(err)
				}
				got := devDense(y)
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("y[%d] = %v, want %v", i, got[i], want[i])
					}
				}
				devCheckOutside(t, y, outside)
			})
		}
	}
}

// TestCPUUpsample: every output is its nearest input, for one plane per
// work item and for several (many small planes).
func TestCPUUpsample(t *testing.T) {
	dev := NewCPU(2)
	for _, nc := range []int{3, 40} {
		r := rand.New(rand.NewPCG(3, 3))
		x := devEmbed(r, 2, nc, 5, 7, 2)
		y := devEmbed(r, 2, nc, 10, 14, 1)
		outside := append([]float32(nil), y.Data...)
		if err := dev.Upsample2x(y, x); err != nil {
			t.Fatal(err)
		}
		got, in := devDense(y), devDense(x)
		for n := 0; n < 2; n++ {
			for c := 0; c < nc; c++ {
				for i := 0; i < 10; i++ {
					for j := 0; j < 14; j++ {
						if g, w := got[((n*nc+c)*10+i)*14+j], in[((n*nc+c)*5+i/2)*7+j/2]; g != w {
							t.Fatalf("%d channels: upsample (%d,%d,%d,%d) = %v, want %v", nc, n, c, i, j, g, w)
						}
					}
				}
			}
		}
		devCheckOutside(t, y, outside)
	}
}

// TestCPUHeadMatchesReference: Head equals the reference 1x1 conv followed
// by the permutation to N x NA x H x W x NO (tolerance as for Conv).
func TestCPUHeadMatchesReference(t *testing.T) {
	tests := []struct{ n, in, na, no, h, w int }{
		{1, 8, 3, 7, 9, 11},    // positions not a multiple of anything
		{2, 16, 3, 85, 20, 20}, // a p5 head at 640, batch 2
		{1, 5, 1, 4, 3, 3},     // one anchor
		{1, 32, 3, 6, 40, 40},  // several tiles
		{1, 300, 3, 85, 7, 9},  // two K blocks of the packed path, a last block of 7 positions
		{1, 24, 2, 60, 6, 6},   // 60 outputs: kernel calls of 32 and 28 columns
	}
	for _, threads := range []int{1, 2} {
		for _, packed := range []bool{false, true} {
			if packed && !hasPackedGEMM {
				continue // no AVX-512: the packed path is never chosen
			}
			dev := NewCPU(threads)
			dev.tileCols = 300
			for _, tc := range tests {
				t.Run(fmt.Sprintf("t%d/packed=%v/%+v", threads, packed, tc), func(t *testing.T) {
					r := rand.New(rand.NewPCG(5, uint64(tc.in)))
					x := devEmbed(r, tc.n, tc.in, tc.h, tc.w, 2)
					out := tc.na * tc.no
					c := ConvArgs{Weight: devRandSlice(r, out*tc.in), Bias: devRandSlice(r, out), K: 1, S: 1, Act: ActNone}
					ref, mag, _, _ := devRefConv(x, c, out)
					if packed {
						var err error
						if c, err = dev.PrepareHead(x, c, tc.na); err != nil || c.Packed == nil {
							t.Fatalf("PrepareHead: %v (transposed filters: %v)", err, c.Packed != nil)
						}
					}
					dst := make([]float32, tc.n*out*tc.h*tc.w)
					if err := dev.Head(dst, x, c, tc.na); err != nil {
						t.Fatal(err)
					}
					hw := tc.h * tc.w
					for n := 0; n < tc.n; n++ {
						for a := 0; a < tc.na; a++ {
							for p := 0; p < hw; p++ {
								for k := 0; k < tc.no; k++ {
									g := dst[((n*tc.na+a)*hw+p)*tc.no+k]
									ri := (n*out+a*tc.no+k)*hw + p
									if e := math.Abs(float64(g) - ref[ri]); e > 2e-6*mag[ri]+1e-6 {
										t.Fatalf("(n%d a%d p%d k%d) = %v, want %v", n, a, p, k, g, ref[ri])
									}
								}
							}
						}
					}
				})
			}
		}
	}
}

// TestCPURejectsBadShapes: a wrong shape is an error, never a write out of
// bounds.
func TestCPURejectsBadShapes(t *testing.T) {
	dev := NewCPU(2)
	x := NCHW{Data: make([]float32, 2*8*8), N: 1, C: 2, H: 8, W: 8}
	c := ConvArgs{Weight: make([]float32, 4*2*9), Bias: make([]float32, 4), K: 3, S: 1, Pad: 1, Act: ActReLU}
	y := NCHW{Data: make([]float32, 4*8*8), N: 1, C: 4, H: 8, W: 8}
	scratch := make([]float32, dev.ConvScratch(y, x, c))
	if err := dev.Conv(y, x, c, scratch); err != nil {
		t.Fatalf("valid conv: %v", err)
	}
	bad := []struct {
		name string
		y, x NCHW
		c    ConvArgs
		s    []float32
	}{
		{"short input", y, NCHW{Data: x.Data[:10], N: 1, C: 2, H: 8, W: 8}, c, scratch},
		{"wrong output side", NCHW{Data: y.Data, N: 1, C: 4, H: 7, W: 8}, x, c, scratch},
		{"wrong weight count", y, x, ConvArgs{Weight: c.Weight[:5], Bias: c.Bias, K: 3, S: 1, Pad: 1, Act: ActReLU}, scratch},
		{"unknown activation", y, x, ConvArgs{Weight: c.Weight, Bias: c.Bias, K: 3, S: 1, Pad: 1, Act: "gelu"}, scratch},
		{"short scratch", y, x, c, scratch[:1]},
		{"batch stride below C*H*W", y, NCHW{Data: x.Data, N: 1, C: 2, H: 8, W: 8, Stride: 10}, c, scratch},
	}
	for _, b := range bad {
		if err := dev.Conv(b.y, b.x, b.c, b.s); err == nil {
			t.Errorf("%s: no error", b.name)
		}
	}
	if err := dev.MaxPool(NCHW{Data: make([]float32, 16), N: 1, C: 1, H: 4, W: 4}, x, PoolArgs{K: 2, S: 2}, nil); err == nil {
		t.Error("maxpool with the wrong channel count: no error")
	}
	if err := dev.Upsample2x(NCHW{Data: make([]float32, 2*16*15), N: 1, C: 2, H: 16, W: 15}, x); err == nil {
		t.Error("upsample to the wrong size: no error")
	}
	head := ConvArgs{Weight: make([]float32, 6*2), Bias: make([]float32, 6), K: 1, S: 1, Act: ActNone}
	if err := dev.Head(make([]float32, 6*64), x, head, 3); err != nil {
		t.Errorf("valid head: %v", err)
	}
	if err := dev.Head(make([]float32, 6*64), x, head, 4); err == nil {
		t.Error("head of 6 channels into 4 anchors: no error")
	}
	if err := dev.Head(make([]float32, 6*64), x, ConvArgs{Weight: head.Weight, Bias: head.Bias, K: 1, S: 1, Act: ActReLU}, 3); err == nil {
		t.Error("head with an activation: no error")
	}
}

// TestBLASCore: the kernel description names OpenBLAS's core, and says
// when the environment chose it.
func TestBLASCore(t *testing.T) {
	core := BLASCore()
	t.Logf("OpenBLAS core: %s", core)
	if core == "" || strings.HasPrefix(core, " ") {
		t.Fatalf("core %q: no name", core)
	}
	if v := os.Getenv("OPENBLAS_CORETYPE"); v != "" && !strings.Contains(core, "OPENBLAS_CORETYPE="+v) {
		t.Errorf("core %q does not say OPENBLAS_CORETYPE=%s chose it", core, v)
	}
}

// TestBalancedTiles: conv tiles are whole vectors, no wider than the
// target (or the plane), and split the positions so that the busiest of
// the workers, taking tiles in turn, has at most one tile more than an
// even share.
func TestBalancedTiles(t *testing.T) {
	for _, tc := range []struct{ plane, n, threads, target int }{
		{100, 1, 2, 256}, {400, 1, 2, 256}, {1600, 1, 2, 256}, {6400, 1, 2, 256}, {102400, 1, 2, 256},
		{169, 1, 2, 256}, {2704, 1, 2, 256}, {1600, 2, 2, 256}, {1600, 1, 3, 256}, {1600, 1, 4, 300},
		{10816, 3, 4, 256}, {7, 1, 2, 256}, {1, 1, 1, 256},
	} {
		cols := balancedTiles(tc.plane, tc.n, tc.threads, tc.target)
		if cols%16 != 0 || cols < 16 || cols > max(16, tc.target) {
			t.Errorf("%+v: %d positions per tile, want a multiple of 16 in [16, %d]", tc, cols, tc.target)
			continue
		}
		tiles := (tc.plane + cols - 1) / cols
		busiest := 0
		for w := 0; w < tc.threads; w++ {
			work := 0
			for i := w; i < tc.n*tiles; i += tc.threads {
				work += min(cols, tc.plane-(i%tiles)*cols)
			}
			busiest = max(busiest, work)
		}
		if even := (tc.n*tc.plane + tc.threads - 1) / tc.threads; busiest > even+cols {
			t.Errorf("%+v: %d per tile: the busiest worker has %d positions, an even share is %d", tc, cols, busiest, even)
		}
	}
}
