package tiny

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// Gradient checks of the CPU's TrainDevice ops. For each op, a float64
// reference forward written here with naive loops defines a loss
// L = Σ r·y for random r; the analytic float32 gradients of the device
// (given dy = r) are compared with central finite differences of L in
// float64. The tolerance is tdTol relative to the largest numeric
// gradient: the float32 analytic values err by ~1e-6 relative and the
// central differences of these smooth (or, for conv, bilinear) losses by
// less.

const tdTol = 1e-3

// tdF64 returns a float64 copy of s.
func tdF64(s []float32) []float64 {
	d := make([]float64, len(s))
	for i, v := range s {
		d[i] = float64(v)
	}
	return d
}

// tdDot is Σ r[i]*y[i].
func tdDot(r, y []float64) float64 {
	var s float64
	for i := range r {
		s += r[i] * y[i]
	}
	return s
}

// tdNumGrad is the central-difference gradient of loss with respect to
// every value of p (step h), restoring p.
func tdNumGrad(p []float64, h float64, loss func() float64) []float64 {
	g := make([]float64, len(p))
	for i := range p {
		v := p[i]
		p[i] = v + h
		lp := loss()
		p[i] = v - h
		lm := loss()
		p[i] = v
		g[i] = (lp - lm) / (2 * h)
	}
	return g
}

// tdCompare fails when got (an analytic float32 gradient) and want (the
// numeric float64 one) differ by more than tdTol of want's largest
// magnitude, and returns the relative maximum error.
func tdCompare(t *testing.T, what string, got []float32, want []float64) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	scale := 0.0
	for _, v := range want {
		scale = max(scale, math.Abs(v))
	}
	scale = max(scale, 1e-6)
	worst, at := 0.0, 0
	for i := range want {
		if e := math.Abs(float64(got[i]) - want[i]); e > worst {
			worst, at = e, i
		}
	}
	if worst > tdTol*scale {
		t.Fatalf("%s[%d] = %v, want %v (max error %.3g, %.3g of the largest %.3g)", what, at, got[at], want[at], worst, worst/scale, scale)
	}
	t.Logf("%s: max error %.3g relative to %.3g", what, worst/scale, scale)
	return worst / scale
}

// tdDelta returns after[i] - before[i] over the values of view v (dense).
func tdDelta(v NCHW, before []float32) []float32 {
	after := devDense(v)
	b := devDense(NCHW{Data: before, N: v.N, C: v.C, H: v.H, W: v.W, Stride: v.Stride})
	for i := range after {
		after[i] -= b[i]
	}
	return after
}

// tdSub returns a - b.
func tdSub(a, b []float32) []float32 {
	d := make([]float32, len(a))
	for i := range a {
		d[i] = a[i] - b[i]
	}
	return d
}

// tdScale returns s*v.
func tdScale(s float64, v []float64) []float64 {
	d := make([]float64, len(v))
	for i := range v {
		d[i] = s * v[i]
	}
	return d
}

// tdConv64 is the float64 reference conv (no bias): x dense n x in x h x w,
// wt out x in x k x k.
func tdConv64(x []float64, n, in, h, w int, wt []float64, out, k, s, pad int) []float64 {
	ho, wo := convOut(h, k, s, pad), convOut(w, k, s, pad)
	y := make([]float64, n*out*ho*wo)
	for b := 0; b < n; b++ {
		for o := 0; o < out; o++ {
			for oy := 0; oy < ho; oy++ {
				for ox := 0; ox < wo; ox++ {
					var acc float64
					for c := 0; c < in; c++ {
						for ky := 0; ky < k; ky++ {
							iy := oy*s - pad + ky
							if iy < 0 || iy >= h {
								continue
							}
							for kx := 0; kx < k; kx++ {
								ix := ox*s - pad + kx
								if ix < 0 || ix >= w {
									continue
								}
								acc += wt[((o*in+c)*k+ky)*k+kx] * x[((b*in+c)*h+iy)*w+ix]
							}
						}
					}
					y[((b*out+o)*ho+oy)*wo+ox] = acc
				}
			}
		}
	}
	return y
}

// TestTrainDeviceConvBackward checks dx, dW and dB of ConvBackward
// against finite differences, on channel-slice views (input, output and
// input gradient), with several tiles per image, the direct 1x1 path,
// 1, 2 and 3 goroutines, accumulation (a second call doubles every
// gradient) and determinism.
func TestTrainDeviceConvBackward(t *testing.T) {
	tests := []struct {
		n, in, out, h, w, k, s, pad int
		tile                        int // backward tile width (0: default)
		noDX, noDB                  bool
	}{
		{2, 3, 4, 7, 9, 3, 2, 1, 0, false, false},  // first layer: 3 channels, stride 2
		{2, 4, 5, 7, 9, 3, 1, 1, 20, false, false}, // 3 tiles of 3, 3, 1 rows
		{2, 6, 5, 7, 9, 1, 1, 0, 20, false, false}, // direct 1x1, tiles
		{2, 5, 4, 8, 6, 1, 2, 0, 0, false, false},  // 1x1 stride 2 through im2col
		{1, 4, 3, 7, 9, 3, 1, 1, 9, false, false},  // batch 1: dx split over channels
		{1, 3, 4, 6, 5, 3, 1, 1, 0, false, false},  // batch 1, one default tile: split for the goroutines
		{3, 4, 6, 9, 7, 3, 2, 1, 8, false, false},  // stride 2, odd sides, tiles
		{2, 3, 4, 6, 5, 3, 1, 1, 0, true, true},    // no dx, no dB
	}
	for _, tc := range tests {
		name := fmt.Sprintf("%dx%dx%dx%d-o%d-k%ds%dp%d-tile%d", tc.n, tc.in, tc.h, tc.w, tc.out, tc.k, tc.s, tc.pad, tc.tile)
		t.Run(name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(7, uint64(tc.in*100+tc.out*10+tc.k)))
			x := devEmbed(r, tc.n, tc.in, tc.h, tc.w, 2)
			wt := devRandSlice(r, tc.out*tc.in*tc.k*tc.k)
			ho, wo := convOut(tc.h, tc.k, tc.s, tc.pad), convOut(tc.w, tc.k, tc.s, tc.pad)
			dy := devEmbed(r, tc.n, tc.out, ho, wo, 1)
			rr := tdF64(devDense(dy))

			// Numeric gradients of L = Σ r·conv(x, W).
			x64, w64 := tdF64(devDense(x)), tdF64(wt)
			loss := func() float64 {
				return tdDot(rr, tdConv64(x64, tc.n, tc.in, tc.h, tc.w, w64, tc.out, tc.k, tc.s, tc.pad))
			}
			numW := tdNumGrad(w64, 1e-2, loss)
			var numX []float64
			if !tc.noDX {
				numX = tdNumGrad(x64, 1e-2, loss)
			}
			numB := make([]float64, tc.out)
			for i, v := range rr {
				numB[(i/(ho*wo))%tc.out] += v
			}

			c := ConvArgs{Weight: wt, K: tc.k, S: tc.s, Pad: tc.pad, Act: ActNone}
			for _, threads := range []int{1, 2, 3} {
				dev := NewCPU(threads)
				dev.bwdTileCols = tc.tile
				var dx NCHW
				var before []float32
				if !tc.noDX {
					dx = devEmbed(r, tc.n, tc.in, tc.h, tc.w, 3)
					before = append([]float32(nil), dx.Data...)
				}
				dW0 := devRandSlice(r, len(wt))
				dW := append([]float32(nil), dW0...)
				var dB0, dB []float32
				if !tc.noDB {
					dB0 = devRandSlice(r, tc.out)
					dB = append([]float32(nil), dB0...)
				}
				scratch := make([]float32, dev.ConvBackwardScratch(dy, x, c))
				for i := range scratch {
					scratch[i] = float32(math.NaN()) // scratch is never read before it is written
				}
				if err := dev.ConvBackward(dx, dy, x, c, dW, dB, scratch); err != nil {
					t.Fatal(err)
				}
				tdCompare(t, fmt.Sprintf("t%d dW", threads), tdSub(dW, dW0), numW)
				if !tc.noDB {
					tdCompare(t, fmt.Sprintf("t%d dB", threads), tdSub(dB, dB0), numB)
				}
				if !tc.noDX {
					tdCompare(t, fmt.Sprintf("t%d dx", threads), tdDelta(dx, before), numX)
					devCheckOutside(t, dx, before)
				}
				// A second call adds the same gradients again.
				dW1 := append([]float32(nil), dW...)
				if err := dev.ConvBackward(dx, dy, x, c, dW, dB, scratch); err != nil {
					t.Fatal(err)
				}
				tdCompare(t, fmt.Sprintf("t%d 2x dW", threads), tdSub(dW, dW0), tdScale(2, numW))
				if !tc.noDB {
					tdCompare(t, fmt.Sprintf("t%d 2x dB", threads), tdSub(dB, dB0), tdScale(2, numB))
				}
				if !tc.noDX {
					tdCompare(t, fmt.Sprintf("t%d 2x dx", threads), tdDelta(dx, before), tdScale(2, numX))
				}
				// Deterministic: the second call's increment equals the first's.
				for i := range dW {
					if a, b := dW[i]-dW1[i], dW1[i]-dW0[i]; math.Abs(float64(a-b)) > 1e-5*(1+math.Abs(float64(dW1[i]))) {
						t.Fatalf("t%d: dW[%d] increments %v then %v", threads, i, b, a)
					}
				}
				dev.Close()
			}
		})
	}
}

// TestTrainDeviceConvBackwardDeterministic: the same call on the same
// device gives bit-identical gradients (fixed slot ranges, ordered
// reduction), on a shape with many tiles.
func TestTrainDeviceConvBackwardDeterministic(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	dev := NewCPU(3)
	defer dev.Close()
	dev.bwdTileCols = 40
	x := devEmbed(r, 3, 8, 20, 21, 1)
	c := ConvArgs{Weight: devRandSlice(r, 16*8*9), K: 3, S: 1, Pad: 1, Act: ActNone}
	dy := devEmbed(r, 3, 16, 20, 21, 0)
	scratch := make([]float32, dev.ConvBackwardScratch(dy, x, c))
	var first []float32
	for range 3 {
		dW, dB := make([]float32, len(c.Weight)), make([]float32, 16)
		dx := NCHW{Data: make([]float32, 3*8*20*21), N: 3, C: 8, H: 20, W: 21}
		if err := dev.ConvBackward(dx, dy, x, c, dW, dB, scratch); err != nil {
			t.Fatal(err)
		}
		all := append(append(dW, dB...), dx.Data...)
		if first == nil {
			first = all
			continue
		}
		for i := range all {
			if all[i] != first[i] {
				t.Fatalf("value %d: %v then %v", i, first[i], all[i])
			}
		}
	}
}

// tdBN64 is the float64 reference of BNForward for x dense n x c x hw:
// the normalised value before residual and activation, and the mean and
// biased variance used.
func tdBN64(x []float64, n, c, hw int, gamma, beta, rm, rv []float64, eps float64, mode BNMode) (z, mean, vr []float64) {
	z = make([]float64, len(x))
	mean, vr = make([]float64, c), make([]float64, c)
	for ch := 0; ch < c; ch++ {
		if mode == BNBatch {
			var s float64
			for b := 0; b < n; b++ {
				for j := 0; j < hw; j++ {
					s += x[(b*c+ch)*hw+j]
				}
			}
			mean[ch] = s / float64(n*hw)
			var v float64
			for b := 0; b < n; b++ {
				for j := 0; j < hw; j++ {
					d := x[(b*c+ch)*hw+j] - mean[ch]
					v += d * d
				}
			}
			vr[ch] = v / float64(n*hw)
		} else {
			mean[ch], vr[ch] = rm[ch], rv[ch]
		}
		for b := 0; b < n; b++ {
			for j := 0; j < hw; j++ {
				i := (b*c+ch)*hw + j
				z[i] = (x[i]-mean[ch])/math.Sqrt(vr[ch]+eps)*gamma[ch] + beta[ch]
			}
		}
	}
	return z, mean, vr
}

// tdAct64 applies act to v.
func tdAct64(v float64, act Act) float64 {
	if v < 0 {
		switch act {
		case ActReLU:
			return 0
		case ActLeaky:
			return v * LeakySlope
		}
	}
	return v
}

// TestTrainDeviceBN checks BNForward (outputs, saved and running
// statistics) against the float64 reference, and the chain BNForward ->
// ActBackward -> BNBackward against finite differences of
// L = Σ r·act(BN(x) + add) in x, gamma and beta, in both modes, with and
// without a residual (y aliasing it), on channel-slice views, with dx
// aliasing dy.
func TestTrainDeviceBN(t *testing.T) {
	tests := []struct {
		n, c, h, w int
		mode       BNMode
		act        Act
		add, alias bool
	}{
		{2, 3, 7, 9, BNBatch, ActNone, false, false},
		{2, 3, 7, 9, BNBatch, ActLeaky, true, true},
		{2, 4, 5, 3, BNBatch, ActReLU, true, false},
		{1, 2, 3, 1, BNBatch, ActNone, false, true}, // M = 3
		{2, 3, 7, 9, BNFrozen, ActNone, false, false},
		{2, 3, 7, 9, BNFrozen, ActLeaky, true, true},
		{2, 4, 5, 3, BNFrozen, ActReLU, false, false},
	}
	for _, threads := range []int{1, 2} {
		dev := NewCPU(threads)
		for _, tc := range tests {
			name := fmt.Sprintf("t%d/%dx%dx%dx%d-%s-%s-add%v-alias%v", threads, tc.n, tc.c, tc.h, tc.w, tc.mode, tc.act, tc.add, tc.alias)
			t.Run(name, func(t *testing.T) {
				r := rand.New(rand.NewPCG(11, uint64(tc.c*100+tc.h)))
				hw := tc.h * tc.w
				x := devEmbed(r, tc.n, tc.c, tc.h, tc.w, 1)
				// Shift and scale the channels so the statistics matter.
				for b := 0; b < tc.n; b++ {
					img := x.Image(b)
					for i := range img {
						ch := i / hw
						img[i] = img[i]*float32(0.5+float64(ch)) + float32(ch) - 1
					}
				}
				gamma := devRandSlice(r, tc.c)
				beta := devRandSlice(r, tc.c)
				rm := devRandSlice(r, tc.c)
				rv := make([]float32, tc.c)
				for i := range rv {
					rv[i] = 0.5 + r.Float32()*2
				}
				const eps = 1e-3
				x64, g64, b64 := tdF64(devDense(x)), tdF64(gamma), tdF64(beta)
				z, mean, vr := tdBN64(x64, tc.n, tc.c, hw, g64, b64, tdF64(rm), tdF64(rv), eps, tc.mode)

				// The residual keeps every pre-activation value at least
				// 0.1 away from the activation's kink.
				var add NCHW
				add64 := make([]float64, len(z))
				if tc.add {
					add = devEmbed(r, tc.n, tc.c, tc.h, tc.w, 2)
					for b := 0; b < tc.n; b++ {
						img := add.Image(b)
						for i := range img {
							j := b*tc.c*hw + i
							if v := z[j] + float64(img[i]); math.Abs(v) < 0.1 {
								img[i] += float32(math.Copysign(0.2, v))
							}
							add64[j] = float64(img[i])
						}
					}
				} else if tc.act != ActNone {
					for i, v := range z {
						if math.Abs(v) < 0.1 {
							b := tc.c * hw
							x64[i] += math.Copysign(0.3, v) / g64[(i%b)/hw] * math.Sqrt(vr[(i%b)/hw]+eps)
						}
					}
					// Re-place the shifted inputs (frozen mode: exact; batch
					// mode shifts the statistics slightly, hence margin 0.1
					// against a shift of 0.3).
					for b := 0; b < tc.n; b++ {
						img := x.Image(b)
						for i := range img {
							img[i] = float32(x64[b*tc.c*hw+i])
						}
					}
					x64 = tdF64(devDense(x))
					z, mean, vr = tdBN64(x64, tc.n, tc.c, hw, g64, b64, tdF64(rm), tdF64(rv), eps, tc.mode)
					for i, v := range z {
						if math.Abs(v) < 0.02 {
							t.Fatalf("value %d at %.3g too close to the kink", i, v)
						}
					}
				}

				y := devEmbed(r, tc.n, tc.c, tc.h, tc.w, 0)
				if tc.alias && tc.add {
					y = add
				}
				yBefore := append([]float32(nil), y.Data...)
				a := BNArgs{
					Weight: gamma, Bias: beta,
					RunMean: append([]float32(nil), rm...), RunVar: append([]float32(nil), rv...),
					Eps: eps, Momentum: BNMomentum, Mode: tc.mode,
					SaveMean: make([]float32, tc.c), SaveInvStd: make([]float32, tc.c),
					Add: add, Act: tc.act,
				}
				if err := dev.BNForward(y, x, a); err != nil {
					t.Fatal(err)
				}
				devCheckOutside(t, y, yBefore)

				// Forward values and statistics.
				want := make([]float64, len(z))
				for i := range z {
					want[i] = tdAct64(z[i]+add64[i], tc.act)
				}
				got := devDense(y)
				for i := range want {
					if e := math.Abs(float64(got[i]) - want[i]); e > 1e-5*(1+math.Abs(want[i])) {
						t.Fatalf("y[%d] = %v, want %v", i, got[i], want[i])
					}
				}
				m := float64(tc.n * hw)
				for ch := 0; ch < tc.c; ch++ {
					wantRM, wantRV := float64(rm[ch]), float64(rv[ch])
					if tc.mode == BNBatch {
						wantRM = (1-BNMomentum)*wantRM + BNMomentum*mean[ch]
						wantRV = (1-BNMomentum)*wantRV + BNMomentum*vr[ch]*m/(m-1)
					}
					for _, v := range []struct {
						what      string
						got, want float64
					}{
						{"running mean", float64(a.RunMean[ch]), wantRM},
						{"running var", float64(a.RunVar[ch]), wantRV},
						{"saved mean", float64(a.SaveMean[ch]), mean[ch]},
						{"saved inverse std", float64(a.SaveInvStd[ch]), 1 / math.Sqrt(vr[ch]+eps)},
					} {
						if math.Abs(v.got-v.want) > 1e-5*(1+math.Abs(v.want)) {
							t.Fatalf("channel %d: %s %v, want %v", ch, v.what, v.got, v.want)
						}
					}
				}

				// Backward: dy = r, then the activation's and BN's backward.
				dy := devEmbed(r, tc.n, tc.c, tc.h, tc.w, 1)
				rr := tdF64(devDense(dy))
				if err := dev.ActBackward(dy, y, tc.act); err != nil {
					t.Fatal(err)
				}
				dx := devEmbed(r, tc.n, tc.c, tc.h, tc.w, 3)
				if tc.alias {
					dx = dy
				}
				dG0, dB0 := devRandSlice(r, tc.c), devRandSlice(r, tc.c)
				dG, dB := append([]float32(nil), dG0...), append([]float32(nil), dB0...)
				dyKeep := append([]float32(nil), dy.Data...)
				if err := dev.BNBackward(dx, dy, x, a, dG, dB); err != nil {
					t.Fatal(err)
				}

				loss := func(x64, g64, b64 []float64) float64 {
					z, _, _ := tdBN64(x64, tc.n, tc.c, hw, g64, b64, tdF64(rm), tdF64(rv), eps, tc.mode)
					var s float64
					for i := range z {
						s += rr[i] * tdAct64(z[i]+add64[i], tc.act)
					}
					return s
				}
				const h = 1e-4
				numX := tdNumGrad(x64, h, func() float64 { return loss(x64, g64, b64) })
				numG := tdNumGrad(g64, h, func() float64 { return loss(x64, g64, b64) })
				numB := tdNumGrad(b64, h, func() float64 { return loss(x64, g64, b64) })
				tdCompare(t, "dx", devDense(dx), numX)
				tdCompare(t, "dGamma", tdSub(dG, dG0), numG)
				tdCompare(t, "dBeta", tdSub(dB, dB0), numB)

				if !tc.alias {
					// A second call overwrites dx and adds to dGamma, dBeta.
					copy(dy.Data, dyKeep)
					if err := dev.BNBackward(dx, dy, x, a, dG, dB); err != nil {
						t.Fatal(err)
					}
					tdCompare(t, "dx again", devDense(dx), numX)
					tdCompare(t, "2x dGamma", tdSub(dG, dG0), tdScale(2, numG))
					tdCompare(t, "2x dBeta", tdSub(dB, dB0), tdScale(2, numB))
				}
			})
		}
		dev.Close()
	}
}

// TestTrainDeviceBNFrozenKeepsRunningStats: frozen mode leaves the
// running statistics alone.
func TestTrainDeviceBNFrozenKeepsRunningStats(t *testing.T) {
	dev := NewCPU(2)
	defer dev.Close()
	x := NCHW{Data: []float32{1, 2, 3, 4, 5, 6, 7, 8}, N: 2, C: 2, H: 1, W: 2}
	y := NCHW{Data: make([]float32, 8), N: 2, C: 2, H: 1, W: 2}
	a := BNArgs{Weight: []float32{1, 1}, Bias: []float32{0, 0}, RunMean: []float32{0.5, -1}, RunVar: []float32{2, 3},
		Eps: 1e-5, Momentum: 0.1, Mode: BNFrozen, SaveMean: make([]float32, 2), SaveInvStd: make([]float32, 2), Act: ActNone}
	if err := dev.BNForward(y, x, a); err != nil {
		t.Fatal(err)
	}
	if a.RunMean[0] != 0.5 || a.RunMean[1] != -1 || a.RunVar[0] != 2 || a.RunVar[1] != 3 {
		t.Fatalf("running statistics changed: %v %v", a.RunMean, a.RunVar)
	}
	if a.SaveMean[1] != -1 || math.Abs(float64(a.SaveInvStd[1])-1/math.Sqrt(3+1e-5)) > 1e-7 {
		t.Fatalf("saved %v %v, want the running statistics", a.SaveMean, a.SaveInvStd)
	}
}

// TestTrainDeviceActBackward checks ActBackward against finite
// differences of L = Σ r·act(z), z kept away from 0.
func TestTrainDeviceActBackward(t *testing.T) {
	dev := NewCPU(2)
	defer dev.Close()
	for _, act := range []Act{ActNone, ActReLU, ActLeaky} {
		r := rand.New(rand.NewPCG(5, 6))
		zv := devEmbed(r, 2, 3, 7, 9, 1)
		for b := 0; b < zv.N; b++ {
			img := zv.Image(b)
			for i, v := range img {
				img[i] = v + float32(math.Copysign(0.05, float64(v)))
			}
		}
		z64 := tdF64(devDense(zv))
		y := devEmbed(r, 2, 3, 7, 9, 2)
		for b := 0; b < y.N; b++ {
			img, zi := y.Image(b), zv.Image(b)
			for i := range img {
				img[i] = float32(tdAct64(float64(zi[i]), act))
			}
		}
		dy := devEmbed(r, 2, 3, 7, 9, 0)
		rr := tdF64(devDense(dy))
		before := append([]float32(nil), dy.Data...)
		if err := dev.ActBackward(dy, y, act); err != nil {
			t.Fatal(err)
		}
		devCheckOutside(t, dy, before)
		num := tdNumGrad(z64, 1e-3, func() float64 {
			var s float64
			for i, v := range z64 {
				s += rr[i] * tdAct64(v, act)
			}
			return s
		})
		tdCompare(t, string(act), devDense(dy), num)
	}
}

// tdPool64 is the float64 reference max-pool of x dense n x c x h x w.
func tdPool64(x []float64, n, c, h, w int, p PoolArgs) []float64 {
	ho, wo := convOut(h, p.K, p.S, p.Pad), convOut(w, p.K, p.S, p.Pad)
	y := make([]float64, n*c*ho*wo)
	for pl := 0; pl < n*c; pl++ {
		for oy := 0; oy < ho; oy++ {
			for ox := 0; ox < wo; ox++ {
				m := math.Inf(-1)
				for ky := 0; ky < p.K; ky++ {
					for kx := 0; kx < p.K; kx++ {
						iy, ix := oy*p.S-p.Pad+ky, ox*p.S-p.Pad+kx
						if iy >= 0 && iy < h && ix >= 0 && ix < w {
							m = max(m, x[(pl*h+iy)*w+ix])
						}
					}
				}
				y[(pl*ho+oy)*wo+ox] = m
			}
		}
	}
	return y
}

// tdPools are the pools of YOLOv7-tiny (MP and the SPP windows) plus a
// strided 3x3.
var tdPools = []PoolArgs{{K: 2, S: 2}, {K: 5, S: 1, Pad: 2}, {K: 9, S: 1, Pad: 4}, {K: 13, S: 1, Pad: 6}, {K: 3, S: 2, Pad: 1}}

// TestTrainDeviceMaxPoolBackward checks MaxPoolBackward against finite
// differences on inputs without ties (values 0.01 apart, step 1e-4), on
// channel-slice views, and accumulation into dx.
func TestTrainDeviceMaxPoolBackward(t *testing.T) {
	const n, c, h, w = 2, 3, 7, 9
	for _, threads := range []int{1, 2} {
		dev := NewCPU(threads)
		for _, p := range tdPools {
			t.Run(fmt.Sprintf("t%d/k%ds%dp%d", threads, p.K, p.S, p.Pad), func(t *testing.T) {
				r := rand.New(rand.NewPCG(9, uint64(p.K)))
				x := devEmbed(r, n, c, h, w, 1)
				perm := r.Perm(n * c * h * w)
				for b := 0; b < n; b++ {
					img := x.Image(b)
					for i := range img {
						img[i] = float32(perm[b*c*h*w+i]) * 0.01
					}
				}
				ho, wo := convOut(h, p.K, p.S, p.Pad), convOut(w, p.K, p.S, p.Pad)
				dy := devEmbed(r, n, c, ho, wo, 2)
				rr := tdF64(devDense(dy))
				dx := devEmbed(r, n, c, h, w, 0)
				before := append([]float32(nil), dx.Data...)
				if err := dev.MaxPoolBackward(dx, dy, x, p); err != nil {
					t.Fatal(err)
				}
				devCheckOutside(t, dx, before)
				x64 := tdF64(devDense(x))
				num := tdNumGrad(x64, 1e-4, func() float64 { return tdDot(rr, tdPool64(x64, n, c, h, w, p)) })
				tdCompare(t, "dx", tdDelta(dx, before), num)
				if err := dev.MaxPoolBackward(dx, dy, x, p); err != nil {
					t.Fatal(err)
				}
				tdCompare(t, "2x dx", tdDelta(dx, before), tdScale(2, num))
			})
		}
		dev.Close()
	}
}

// TestTrainDeviceMaxPoolBackwardTies: with ties (values from {0, 1, 2}),
// each gradient goes to the first maximum of its window in row-major
// order, as PyTorch's CPU kernel; with NaNs (some planes), to the window's
// last NaN (PyTorch's rule: a NaN always takes over, nothing beats one).
func TestTrainDeviceMaxPoolBackwardTies(t *testing.T) {
	const n, c, h, w = 2, 2, 7, 9
	dev := NewCPU(2)
	defer dev.Close()
	r := rand.New(rand.NewPCG(1, 2))
	for pi := range 2 * len(tdPools) {
		p := tdPools[pi%len(tdPools)]
		nan := pi >= len(tdPools)
		x := NCHW{Data: make([]float32, n*c*h*w), N: n, C: c, H: h, W: w}
		for i := range x.Data {
			x.Data[i] = float32(r.IntN(3))
			if nan && i < h*w*3 && r.IntN(8) == 0 { // NaNs in three of the four planes
				x.Data[i] = float32(math.NaN())
			}
		}
		ho, wo := convOut(h, p.K, p.S, p.Pad), convOut(w, p.K, p.S, p.Pad)
		dy := NCHW{Data: devRandSlice(r, n*c*ho*wo), N: n, C: c, H: ho, W: wo}
		dx := NCHW{Data: make([]float32, n*c*h*w), N: n, C: c, H: h, W: w}
		if err := dev.MaxPoolBackward(dx, dy, x, p); err != nil {
			t.Fatal(err)
		}
		want := make([]float64, len(dx.Data))
		for pl := 0; pl < n*c; pl++ {
			for oy := 0; oy < ho; oy++ {
				for ox := 0; ox < wo; ox++ {
					best, bi := math.Inf(-1), -1
					for ky := 0; ky < p.K; ky++ {
						for kx := 0; kx < p.K; kx++ {
							iy, ix := oy*p.S-p.Pad+ky, ox*p.S-p.Pad+kx
							if iy < 0 || iy >= h || ix < 0 || ix >= w {
								continue
							}
							j := (pl*h+iy)*w + ix
							if v := float64(x.Data[j]); v > best || math.IsNaN(v) || bi < 0 {
								best, bi = v, j
							}
						}
					}
					want[bi] += float64(dy.Data[(pl*ho+oy)*wo+ox])
				}
			}
		}
		for i := range want {
			if math.Abs(float64(dx.Data[i])-want[i]) > 1e-5 {
				t.Fatalf("k%d s%d (NaNs %v): dx[%d] = %v, want %v", p.K, p.S, nan, i, dx.Data[i], want[i])
			}
		}
	}
}

// TestTrainDeviceUpsampleBackward checks Upsample2xBackward against
// finite differences of L = Σ r·upsample(x), on views, accumulating.
func TestTrainDeviceUpsampleBackward(t *testing.T) {
	const n, c, h, w = 2, 3, 5, 7
	dev := NewCPU(2)
	defer dev.Close()
	r := rand.New(rand.NewPCG(2, 3))
	dy := devEmbed(r, n, c, 2*h, 2*w, 1)
	rr := tdF64(devDense(dy))
	dx := devEmbed(r, n, c, h, w, 2)
	before := append([]float32(nil), dx.Data...)
	if err := dev.Upsample2xBackward(dx, dy); err != nil {
		t.Fatal(err)
	}
	devCheckOutside(t, dx, before)
	x64 := make([]float64, n*c*h*w)
	num := tdNumGrad(x64, 1e-3, func() float64 {
		var s float64
		for pl := 0; pl < n*c; pl++ {
			for i := 0; i < 2*h; i++ {
				for j := 0; j < 2*w; j++ {
					s += rr[(pl*2*h+i)*2*w+j] * x64[(pl*h+i/2)*w+j/2]
				}
			}
		}
		return s
	})
	tdCompare(t, "dx", tdDelta(dx, before), num)
	if err := dev.Upsample2xBackward(dx, dy); err != nil {
		t.Fatal(err)
	}
	tdCompare(t, "2x dx", tdDelta(dx, before), tdScale(2, num))
}

// TestTrainDeviceRejectsBadShapes: every op returns an error for a wrong
// shape, never a write out of bounds.
func TestTrainDeviceRejectsBadShapes(t *testing.T) {
	dev := NewCPU(2)
	defer dev.Close()
	t4 := func(n, c, h, w int) NCHW { return NCHW{Data: make([]float32, n*c*h*w), N: n, C: c, H: h, W: w} }
	x, dy := t4(2, 3, 8, 8), t4(2, 4, 8, 8)
	c := ConvArgs{Weight: make([]float32, 4*3*9), K: 3, S: 1, Pad: 1, Act: ActNone}
	dW, dB := make([]float32, 4*3*9), make([]float32, 4)
	scratch := make([]float32, dev.ConvBackwardScratch(dy, x, c))
	if err := dev.ConvBackward(t4(2, 3, 8, 8), dy, x, c, dW, dB, scratch); err != nil {
		t.Fatalf("valid conv backward: %v", err)
	}
	withAct := c
	withAct.Act = ActReLU
	shortW := c
	shortW.Weight = c.Weight[:5]
	badK := c
	badK.Pad = 3
	conv := []struct {
		name      string
		dx, dy, x NCHW
		c         ConvArgs
		dW, dB, s []float32
	}{
		{"wrong dy side", NCHW{}, t4(2, 4, 7, 8), x, c, dW, dB, scratch},
		{"wrong dy batch", NCHW{}, t4(1, 4, 8, 8), x, c, dW, dB, scratch},
		{"wrong dx shape", t4(2, 3, 8, 7), dy, x, c, dW, dB, scratch},
		{"short input", NCHW{}, dy, NCHW{Data: x.Data[:10], N: 2, C: 3, H: 8, W: 8}, c, dW, dB, scratch},
		{"activation", NCHW{}, dy, x, withAct, dW, dB, scratch},
		{"short weights", NCHW{}, dy, x, shortW, dW, dB, scratch},
		{"short dW", NCHW{}, dy, x, c, dW[:7], dB, scratch},
		{"short dB", NCHW{}, dy, x, c, dW, dB[:3], scratch},
		{"pad >= k", NCHW{}, dy, x, badK, dW, dB, scratch},
		{"short scratch", NCHW{}, dy, x, c, dW, dB, scratch[:1]},
	}
	for _, b := range conv {
		if err := dev.ConvBackward(b.dx, b.dy, b.x, b.c, b.dW, b.dB, b.s); err == nil {
			t.Errorf("conv backward, %s: no error", b.name)
		} else {
			t.Logf("conv backward, %s: %v", b.name, err)
		}
	}

	if err := dev.ActBackward(x, t4(2, 3, 8, 7), ActReLU); err == nil {
		t.Error("act backward of mismatched shapes: no error")
	}
	if err := dev.ActBackward(x, x, "gelu"); err == nil {
		t.Error("act backward of an unknown activation: no error")
	}

	ch := func(n int) []float32 { return make([]float32, n) }
	a := BNArgs{Weight: ch(3), Bias: ch(3), RunMean: ch(3), RunVar: ch(3), Eps: 1e-5, Momentum: BNMomentum,
		Mode: BNBatch, SaveMean: ch(3), SaveInvStd: ch(3), Act: ActNone}
	if err := dev.BNForward(t4(2, 3, 8, 8), x, a); err != nil {
		t.Fatalf("valid bn forward: %v", err)
	}
	short := a
	short.RunVar = ch(2)
	mode := a
	mode.Mode = 7
	res := a
	res.Add = t4(2, 3, 4, 8)
	act := a
	act.Act = "gelu"
	one := a
	oneX := t4(1, 3, 1, 1)
	for _, b := range []struct {
		name string
		y, x NCHW
		a    BNArgs
	}{
		{"mismatched output", t4(2, 3, 8, 7), x, a},
		{"short running var", t4(2, 3, 8, 8), x, short},
		{"unknown mode", t4(2, 3, 8, 8), x, mode},
		{"mismatched residual", t4(2, 3, 8, 8), x, res},
		{"unknown activation", t4(2, 3, 8, 8), x, act},
		{"one value per channel", oneX, oneX, one},
	} {
		if err := dev.BNForward(b.y, b.x, b.a); err == nil {
			t.Errorf("bn forward, %s: no error", b.name)
		}
	}
	if err := dev.BNBackward(x, x, x, a, ch(3), ch(3)); err != nil {
		t.Fatalf("valid bn backward: %v", err)
	}
	if err := dev.BNBackward(x, t4(2, 3, 8, 7), x, a, ch(3), ch(3)); err == nil {
		t.Error("bn backward of mismatched dy: no error")
	}
	if err := dev.BNBackward(x, x, x, a, ch(2), ch(3)); err == nil {
		t.Error("bn backward with a short dGamma: no error")
	}
	if err := dev.BNBackward(x, x, x, short, ch(3), ch(3)); err == nil {
		t.Error("bn backward with a short running var: no error")
	}

	p := PoolArgs{K: 2, S: 2}
	if err := dev.MaxPoolBackward(x, t4(2, 3, 4, 4), x, p); err != nil {
		t.Fatalf("valid maxpool backward: %v", err)
	}
	if err := dev.MaxPoolBackward(x, t4(2, 3, 4, 3), x, p); err == nil {
		t.Error("maxpool backward of a mismatched dy: no error")
	}
	if err := dev.MaxPoolBackward(t4(2, 3, 8, 7), t4(2, 3, 4, 4), x, p); err == nil {
		t.Error("maxpool backward into a mismatched dx: no error")
	}
	if err := dev.Upsample2xBackward(x, t4(2, 3, 16, 16)); err != nil {
		t.Fatalf("valid upsample backward: %v", err)
	}
	if err := dev.Upsample2xBackward(x, t4(2, 3, 16, 15)); err == nil {
		t.Error("upsample backward of a mismatched dy: no error")
	}
}

// TestTrainDeviceNoAllocs: a steady-state call of every op allocates
// nothing.
func TestTrainDeviceNoAllocs(t *testing.T) {
	dev := NewCPU(2)
	defer dev.Close()
	t4 := func(n, c, h, w int) NCHW { return NCHW{Data: make([]float32, n*c*h*w), N: n, C: c, H: h, W: w} }
	x, dx, dy, y := t4(2, 8, 16, 16), t4(2, 8, 16, 16), t4(2, 16, 16, 16), t4(2, 8, 16, 16)
	c := ConvArgs{Weight: make([]float32, 16*8*9), K: 3, S: 1, Pad: 1, Act: ActNone}
	dW, dB := make([]float32, len(c.Weight)), make([]float32, 16)
	scratch := make([]float32, dev.ConvBackwardScratch(dy, x, c))
	ch := func(n int) []float32 { return make([]float32, n) }
	a := BNArgs{Weight: ch(8), Bias: ch(8), RunMean: ch(8), RunVar: ch(8), Eps: 1e-5, Momentum: BNMomentum,
		Mode: BNBatch, SaveMean: ch(8), SaveInvStd: ch(8), Act: ActLeaky}
	pooled, up := t4(2, 8, 16, 16), t4(2, 8, 32, 32)
	ops := func() {
		_ = dev.ConvBackward(dx, dy, x, c, dW, dB, scratch)
		_ = dev.ActBackward(y, x, ActLeaky)
		_ = dev.BNForward(y, x, a)
		_ = dev.BNBackward(dx, y, x, a, dW[:8], dB[:8])
		_ = dev.MaxPoolBackward(dx, pooled, x, PoolArgs{K: 5, S: 1, Pad: 2})
		_ = dev.Upsample2xBackward(dx, up)
	}
	ops()
	if n := testing.AllocsPerRun(5, ops); n != 0 {
		t.Errorf("%v allocations per run of the training ops", n)
	}
}

// BenchmarkConvBackward times ConvBackward (dW, dB and, except for the
// first conv, whose input is the image, dx) on yolov7-tiny training shapes
// at batch 8, 320x320, next to the forward Conv of the same shape (the
// reference speed). GFLOP/s counts 2*N*Out*Ho*Wo*In*K*K per GEMM product
// (one in the forward, two in the backward with dx, one without).
func BenchmarkConvBackward(b *testing.B) {
	shapes := []struct {
		name                  string
		in, out, h, k, s, pad int
		noDX                  bool
	}{
		{"first-3to32-k3s2-320", 3, 32, 320, 3, 2, 1, true},
		{"32to64-k3s2-160", 32, 64, 160, 3, 2, 1, false},
		{"32to32-k3s1-80", 32, 32, 80, 3, 1, 1, false},
		{"64to32-k1-80", 64, 32, 80, 1, 1, 0, false},
		{"64to64-k3s1-40", 64, 64, 40, 3, 1, 1, false},
		{"128to64-k1-40", 128, 64, 40, 1, 1, 0, false},
		{"256to128-k1-20", 256, 128, 20, 1, 1, 0, false},
		{"128to256-k3s1-20", 128, 256, 20, 3, 1, 1, false},
	}
	const n = 8
	dev := NewCPU(0)
	defer dev.Close()
	for _, sh := range shapes {
		r := rand.New(rand.NewPCG(1, 1))
		ho := convOut(sh.h, sh.k, sh.s, sh.pad)
		x := NCHW{Data: devRandSlice(r, n*sh.in*sh.h*sh.h), N: n, C: sh.in, H: sh.h, W: sh.h}
		y := NCHW{Data: make([]float32, n*sh.out*ho*ho), N: n, C: sh.out, H: ho, W: ho}
		dy := NCHW{Data: devRandSlice(r, n*sh.out*ho*ho), N: n, C: sh.out, H: ho, W: ho}
		c := ConvArgs{Weight: devRandSlice(r, sh.out*sh.in*sh.k*sh.k), Bias: make([]float32, sh.out), K: sh.k, S: sh.s, Pad: sh.pad, Act: ActNone}
		flop := 2 * float64(n*sh.out*ho*ho*sh.in*sh.k*sh.k)
		b.Run(sh.name+"/fwd", func(b *testing.B) {
			scratch := make([]float32, dev.ConvScratch(y, x, c))
			for b.Loop() {
				if err := dev.Conv(y, x, c, scratch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(flop*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(sh.name+"/bwd", func(b *testing.B) {
			var dx NCHW
			f := flop
			if !sh.noDX {
				dx = NCHW{Data: make([]float32, len(x.Data)), N: n, C: sh.in, H: sh.h, W: sh.h}
				f *= 2
			}
			dW, dB := make([]float32, len(c.Weight)), make([]float32, sh.out)
			scratch := make([]float32, dev.ConvBackwardScratch(dy, x, c))
			for b.Loop() {
				if err := dev.ConvBackward(dx, dy, x, c, dW, dB, scratch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(f*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}

// BenchmarkTrainDeviceOps times the other training ops on yolov7-tiny
// shapes at batch 8, 320x320: BatchNorm in batch mode on the largest
// activation (32 x 160 x 160), the activation's backward, the SPP pools'
// backward (256 x 10 x 10, k5/9/13), the MP pool's and the upsample's.
func BenchmarkTrainDeviceOps(b *testing.B) {
	const n = 8
	dev := NewCPU(0)
	defer dev.Close()
	r := rand.New(rand.NewPCG(1, 2))
	t4 := func(c, h, w int) NCHW { return NCHW{Data: devRandSlice(r, n*c*h*w), N: n, C: c, H: h, W: w} }
	big, big2, big3 := t4(32, 160, 160), t4(32, 160, 160), t4(32, 160, 160)
	ch := func(v float32) []float32 {
		s := make([]float32, 32)
		for i := range s {
			s[i] = v
		}
		return s
	}
	a := BNArgs{Weight: ch(1), Bias: ch(0), RunMean: ch(0), RunVar: ch(1), Eps: 1e-3, Momentum: BNMomentum,
		Mode: BNBatch, SaveMean: ch(0), SaveInvStd: ch(0), Act: ActLeaky}
	dG, dB := ch(0), ch(0)
	bench := func(name string, values int, f func() error) {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if err := f(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(values)*float64(b.N)/b.Elapsed().Seconds()/1e9, "Gvalues/s")
		})
	}
	bench("bn-forward-batch-32x160", len(big.Data), func() error { return dev.BNForward(big2, big, a) })
	bench("bn-backward-batch-32x160", len(big.Data), func() error { return dev.BNBackward(big3, big2, big, a, dG, dB) })
	bench("act-backward-relu-32x160", len(big.Data), func() error { return dev.ActBackward(big3, big2, ActReLU) })
	mpx, mpy := t4(32, 160, 160), t4(32, 80, 80)
	bench("maxpool-backward-k2s2-32x160", len(mpx.Data), func() error { return dev.MaxPoolBackward(big3, mpy, mpx, PoolArgs{K: 2, S: 2}) })
	spx, spy, spdx := t4(256, 10, 10), t4(256, 10, 10), t4(256, 10, 10)
	for _, k := range []int{5, 9, 13} {
		bench(fmt.Sprintf("maxpool-backward-k%d-256x10", k), len(spx.Data), func() error {
			return dev.MaxPoolBackward(spdx, spy, spx, PoolArgs{K: k, S: 1, Pad: k / 2})
		})
	}
	upx, upy := t4(64, 20, 20), t4(64, 40, 40)
	bench("upsample-backward-64x20", len(upy.Data), func() error { return dev.Upsample2xBackward(upx, upy) })
}
