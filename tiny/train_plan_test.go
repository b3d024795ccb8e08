package tiny

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// tpDevice is the TrainDevice of the tests: the CPU on two threads.
func tpDevice(tb testing.TB) TrainDevice {
	tb.Helper()
	d := NewCPU(2)
	tb.Cleanup(d.Close)
	return d
}

// tpSmallSpec is a small scaled yolov7-tiny for the numerical tests.
func tpSmallSpec(tb testing.TB) Spec {
	tb.Helper()
	s, err := YOLOv7TinyScaled(0.5, 0.25)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// tpModel is a seeded training-form model with random BatchNorm
// statistics and affines everywhere (aux included), random RepConv 1x1
// branches, implicits and biases, so every parameter matters.
func tpModel(tb testing.TB, spec Spec, act Act, nc int, seed uint64) *TrainModel {
	tb.Helper()
	tm, err := NewTrainModel(spec, act, nc, seed)
	if err != nil {
		tb.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	bn := func(b *BatchNorm) {
		for o := range b.Weight {
			b.Weight[o] = float32(0.7 + 0.6*rng.Float64())
			b.Bias[o] = float32(0.2 * rng.NormFloat64())
			b.Mean[o] = float32(0.1 * rng.NormFloat64())
			b.Var[o] = float32(0.6 + 0.8*rng.Float64())
		}
	}
	for _, cs := range [][]TrainConv{tm.Convs, tm.AuxConvs} {
		for i := range cs {
			bn(&cs[i].BN)
			if p := cs[i].Point; p != nil {
				bn(&p.BN)
			}
		}
	}
	for _, hs := range [][]TrainHead{tm.Heads, tm.AuxHeads} {
		for i := range hs {
			h := &hs[i]
			for j := range h.Bias {
				h.Bias[j] += float32(0.3 * rng.NormFloat64())
			}
			for j := range h.IA {
				h.IA[j] = float32(0.1 * rng.NormFloat64())
			}
			for j := range h.IM {
				h.IM[j] = float32(1 + 0.1*rng.NormFloat64())
			}
		}
	}
	return tm
}

// tpFill fills v with uniform values in [lo, hi) from seed.
func tpFill(v []float32, seed uint64, lo, hi float64) {
	rng := rand.New(rand.NewPCG(seed, 3))
	for i := range v {
		v[i] = float32(lo + (hi-lo)*rng.Float64())
	}
}

// tpPlan makes a plan or fails.
func tpPlan(tb testing.TB, tm *TrainModel, dev TrainDevice, o TrainOptions) *TrainPlan {
	tb.Helper()
	p, err := NewTrainPlan(tm, dev, o)
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// ---------------------------------------------------------------------
// A float64 reference of the training form, plain loops, parameters by
// their state names (so a finite difference perturbs one float64 value).

// tpT is a dense float64 NCHW tensor.
type tpT struct {
	n, c, h, w int
	d          []float64
}

// tpNew returns a zero n x c x h x w tensor.
func tpNew(n, c, h, w int) tpT { return tpT{n, c, h, w, make([]float64, n*c*h*w)} }

// at is the index of element (n, c, y, x).
func (t tpT) at(n, c, y, x int) int { return ((n*t.c+c)*t.h+y)*t.w + x }

// tpRef evaluates the training form of tm with the values in v (name ->
// tensor, from TrainModel.State) in BatchNorm mode mode.
type tpRef struct {
	tm   *TrainModel
	v    map[string][]float64
	mode BNMode
}

// newTPRef copies tm's state into float64 tensors by name.
func newTPRef(tm *TrainModel, mode BNMode) *tpRef {
	r := &tpRef{tm: tm, v: map[string][]float64{}, mode: mode}
	for _, e := range tm.State() {
		d := make([]float64, len(e.Data))
		for i, x := range e.Data {
			d[i] = float64(x)
		}
		r.v[e.Name] = d
	}
	return r
}

// tpConv is a bias-free k x k convolution, stride s, zero padding pad.
func tpConv(x tpT, w []float64, out, k, s, pad int) tpT {
	ho, wo := convOut(x.h, k, s, pad), convOut(x.w, k, s, pad)
	y := tpNew(x.n, out, ho, wo)
	for n := 0; n < x.n; n++ {
		for o := 0; o < out; o++ {
			for c := 0; c < x.c; c++ {
				for u := 0; u < k; u++ {
					for v := 0; v < k; v++ {
						wv := w[((o*x.c+c)*k+u)*k+v]
						for i := 0; i < ho; i++ {
							yy := i*s - pad + u
							if yy < 0 || yy >= x.h {
								continue
							}
							for j := 0; j < wo; j++ {
								xx := j*s - pad + v
								if xx < 0 || xx >= x.w {
									continue
								}
								y.d[y.at(n, o, i, j)] += wv * x.d[x.at(n, c, yy, xx)]
							}
						}
					}
				}
			}
		}
	}
	return y
}

// bn normalises x with the BatchNorm under prefix (batch or running
// statistics) and applies gamma and beta.
func (r *tpRef) bn(x tpT, prefix string, eps float64) tpT {
	g, b := r.v[prefix+".weight"], r.v[prefix+".bias"]
	y := tpNew(x.n, x.c, x.h, x.w)
	pl := x.h * x.w
	for c := 0; c < x.c; c++ {
		mean, vr := r.v[prefix+".running_mean"][c], r.v[prefix+".running_var"][c]
		if r.mode == BNBatch {
			mean, vr = 0, 0
			for n := 0; n < x.n; n++ {
				for i := 0; i < pl; i++ {
					mean += x.d[(n*x.c+c)*pl+i]
				}
			}
			mean /= float64(x.n * pl)
			for n := 0; n < x.n; n++ {
				for i := 0; i < pl; i++ {
					d := x.d[(n*x.c+c)*pl+i] - mean
					vr += d * d
				}
			}
			vr /= float64(x.n * pl)
		}
		is := 1 / math.Sqrt(vr+eps)
		for n := 0; n < x.n; n++ {
			for i := 0; i < pl; i++ {
				k := (n*x.c+c)*pl + i
				y.d[k] = (x.d[k]-mean)*is*g[c] + b[c]
			}
		}
	}
	return y
}

// tpAct applies relu or leaky in place.
func tpAct(x tpT, act Act) {
	for i, v := range x.d {
		if v < 0 {
			if act == ActReLU {
				x.d[i] = 0
			} else {
				x.d[i] = v * LeakySlope
			}
		}
	}
}

// block is a Conv block (or RepConv) of the training form.
func (r *tpRef) block(x tpT, c *TrainConv) tpT {
	nm := c.names()
	y := r.bn(tpConv(x, r.v[nm.conv+".weight"], c.Out, c.K, c.S, c.Pad), nm.bn, float64(c.BN.Eps))
	if c.Point != nil {
		y1 := r.bn(tpConv(x, r.v[nm.pconv+".weight"], c.Out, 1, c.S, 0), nm.pbn, float64(c.Point.BN.Eps))
		for i := range y.d {
			y.d[i] += y1.d[i]
		}
	}
	tpAct(y, r.tm.Act)
	return y
}

// tpMaxPool is a k x k max-pool, stride s, padding pad (never the max).
func tpMaxPool(x tpT, k, s, pad int) tpT {
	ho, wo := convOut(x.h, k, s, pad), convOut(x.w, k, s, pad)
	y := tpNew(x.n, x.c, ho, wo)
	for n := 0; n < x.n; n++ {
		for c := 0; c < x.c; c++ {
			for i := 0; i < ho; i++ {
				for j := 0; j < wo; j++ {
					m := math.Inf(-1)
					for u := 0; u < k; u++ {
						for v := 0; v < k; v++ {
							yy, xx := i*s-pad+u, j*s-pad+v
							if yy >= 0 && yy < x.h && xx >= 0 && xx < x.w {
								m = max(m, x.d[x.at(n, c, yy, xx)])
							}
						}
					}
					y.d[y.at(n, c, i, j)] = m
				}
			}
		}
	}
	return y
}

// tpUpsample is nearest-neighbour upsampling by 2.
func tpUpsample(x tpT) tpT {
	y := tpNew(x.n, x.c, 2*x.h, 2*x.w)
	for n := 0; n < x.n; n++ {
		for c := 0; c < x.c; c++ {
			for i := 0; i < y.h; i++ {
				for j := 0; j < y.w; j++ {
					y.d[y.at(n, c, i, j)] = x.d[x.at(n, c, i/2, j/2)]
				}
			}
		}
	}
	return y
}

// tpConcat concatenates along channels.
func tpConcat(xs []tpT) tpT {
	c := 0
	for _, x := range xs {
		c += x.c
	}
	y := tpNew(xs[0].n, c, xs[0].h, xs[0].w)
	for n := 0; n < y.n; n++ {
		c0 := 0
		for _, x := range xs {
			copy(y.d[y.at(n, c0, 0, 0):], x.d[x.at(n, 0, 0, 0):x.at(n, x.c-1, x.h-1, x.w-1)+1])
			c0 += x.c
		}
	}
	return y
}

// head is a detect conv in the head layout: out = im * (W (x + ia) + b),
// ia and im nil for the aux head.
func (r *tpRef) head(x tpT, name string, ia, im []float64, na, no int) []float64 {
	w, b := r.v[name+".weight"], r.v[name+".bias"]
	oc, pl := na*no, x.h*x.w
	out := make([]float64, x.n*oc*pl)
	xa := make([]float64, x.c)
	for n := 0; n < x.n; n++ {
		for q := 0; q < pl; q++ {
			for c := 0; c < x.c; c++ {
				xa[c] = x.d[(n*x.c+c)*pl+q]
				if ia != nil {
					xa[c] += ia[c]
				}
			}
			for o := 0; o < oc; o++ {
				s := b[o]
				for c := 0; c < x.c; c++ {
					s += w[o*x.c+c] * xa[c]
				}
				if im != nil {
					s *= im[o]
				}
				a, k := o/no, o%no
				out[((n*na+a)*pl+q)*no+k] = s
			}
		}
	}
	return out
}

// forward runs the reference on a batch x 3 x h x w input.
func (r *tpRef) forward(in []float32, batch, h, w int, aux bool) (lead, auxOut [][]float64) {
	tm := r.tm
	spec := &tm.Spec
	shapes, err := spec.Resolve(3, tm.NC)
	if err != nil {
		panic(err)
	}
	x0 := tpNew(batch, 3, h, w)
	for i, v := range in {
		x0.d[i] = float64(v)
	}
	outs := make([]tpT, len(spec.Layers))
	view := func(j int) tpT {
		if j < 0 {
			return x0
		}
		return outs[j]
	}
	na, no := spec.NumAnchors(), 5+tm.NC
	ci := 0
	for i, l := range spec.Layers {
		from := shapes[i].From
		switch l.Kind {
		case KindConv:
			outs[i] = r.block(view(from[0]), &tm.Convs[ci])
			ci++
		case KindMaxPool:
			outs[i] = tpMaxPool(view(from[0]), l.K, l.S, l.Pad)
		case KindUpsample:
			outs[i] = tpUpsample(view(from[0]))
		case KindConcat:
			var xs []tpT
			for _, j := range from {
				xs = append(xs, view(j))
			}
			outs[i] = tpConcat(xs)
		case KindDetect:
			for k, j := range from {
				hd := &tm.Heads[k]
				ian, imn := hd.implicitNames()
				lead = append(lead, r.head(view(j), hd.ConvShape.Name, r.v[ian], r.v[imn], na, no))
			}
		}
	}
	if aux {
		for k := range tm.AuxConvs {
			y := r.block(view(tm.AuxSrc[k]), &tm.AuxConvs[k])
			auxOut = append(auxOut, r.head(y, tm.AuxHeads[k].ConvShape.Name, nil, nil, na, no))
		}
	}
	return lead, auxOut
}

// loss is sum(rl*lead) + sum(ra*aux).
func tpLoss(lead, aux [][]float64, rl, ra [][]float32) float64 {
	var s float64
	for k := range lead {
		for i, v := range lead[k] {
			s += v * float64(rl[k][i])
		}
	}
	for k := range aux {
		for i, v := range aux[k] {
			s += v * float64(ra[k][i])
		}
	}
	return s
}

// tpMaxDiff returns the largest |got - want| and the largest |want| over
// every level.
func tpMaxDiff(got [][]float32, want [][]float64) (diff, scale float64) {
	for k := range want {
		for i, w := range want[k] {
			diff = max(diff, math.Abs(float64(got[k][i])-w))
			scale = max(scale, math.Abs(w))
		}
	}
	return diff, scale
}

// ---------------------------------------------------------------------

// TestTrainPlanEvalMatchesTrainForward: with frozen BatchNorm a batch-2
// plan gives, per image, TrainModel.Forward's outputs (lead and aux).
func TestTrainPlanEvalMatchesTrainForward(t *testing.T) {
	dev := tpDevice(t)
	spec := tpSmallSpec(t)
	const size, batch = 96, 2
	for _, act := range []Act{ActLeaky, ActReLU} {
		tm := tpModel(t, spec, act, 3, 11)
		p := tpPlan(t, tm, dev, TrainOptions{Batch: batch, Height: size, Width: size, BN: BNFrozen, Aux: true})
		tpFill(p.Input(), 5, 0, 1)
		out, err := p.Forward()
		if err != nil {
			t.Fatal(err)
		}
		img := 3 * size * size
		for n := 0; n < batch; n++ {
			want, err := tm.Forward(dev, p.Input()[n*img:(n+1)*img], size)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				what      string
				got, want [][]float32
			}{{"lead", out.Lead, want.Lead}, {"aux", out.Aux, want.Aux}} {
				if len(c.got) != len(c.want) {
					t.Fatalf("%s %s: %d levels, want %d", act, c.what, len(c.got), len(c.want))
				}
				for k := range c.want {
					per := len(c.want[k])
					if len(c.got[k]) != batch*per {
						t.Fatalf("%s %s level %d: %d values, want %d", act, c.what, k, len(c.got[k]), batch*per)
					}
					got := c.got[k][n*per : (n+1)*per]
					var worst, scale float64
					for i, w := range c.want[k] {
						worst = max(worst, math.Abs(float64(got[i]-w)))
						scale = max(scale, math.Abs(float64(w)))
					}
					if worst > 1e-5*max(1, scale) {
						t.Errorf("%s %s level %d image %d: max diff %g (max |out| %g)", act, c.what, k, n, worst, scale)
					}
					if k == 0 && n == 0 {
						t.Logf("%s %s level 0 image 0: max diff %.3g (max |out| %.3g)", act, c.what, worst, scale)
					}
				}
			}
		}
	}
}

// tpCoords picks the parameters and indices the finite-difference test
// checks: the first conv and its BN, a mid ELAN conv and BN, a RepConv's
// 1x1 branch and BNs, the implicits, a lead head's bias and weight, an
// aux conv and its BN, and an aux head's bias and weight.
func tpCoords(t *testing.T, tm *TrainModel, ps []Param, rng *rand.Rand) [][2]int {
	t.Helper()
	var coords [][2]int
	pick := func(match func(string) bool, n int) {
		var cand []int
		for i, p := range ps {
			if match(p.Name) {
				cand = append(cand, i)
			}
		}
		if len(cand) == 0 {
			t.Fatalf("no parameter to check")
		}
		pi := cand[len(cand)/2]
		g := ps[pi].Grad
		for j := 0; j < n; j++ {
			// the largest of a few random gradients, so the comparison
			// is not lost in rounding
			best := rng.IntN(len(g))
			for r := 0; r < 8; r++ {
				if k := rng.IntN(len(g)); math.Abs(float64(g[k])) > math.Abs(float64(g[best])) {
					best = k
				}
			}
			coords = append(coords, [2]int{pi, best})
		}
	}
	is := func(s string) func(string) bool { return func(n string) bool { return n == s } }
	has := func(parts ...string) func(string) bool {
		return func(n string) bool {
			for _, p := range parts {
				if !strings.Contains(n, p) {
					return false
				}
			}
			return true
		}
	}
	aux := tm.AuxConvs[1].names()
	pick(is("model.0.conv.weight"), 2)
	pick(is("model.0.bn.weight"), 1)
	pick(is("model.0.bn.bias"), 1)
	pick(has(".conv.weight"), 2) // the middle Conv block
	pick(has(".bn.weight"), 1)
	pick(has(".bn.bias"), 1)
	pick(has("rbr_1x1.0.weight"), 2)
	pick(has("rbr_dense.1.weight"), 1)
	pick(has("rbr_1x1.1.bias"), 1)
	pick(has(".ia."), 2)
	pick(has(".im."), 2)
	pick(has(".m.", ".bias"), 1)
	pick(has(".m.", ".weight"), 1)
	pick(is(aux.conv+".weight"), 2)
	pick(is(aux.bn+".weight"), 1)
	pick(has(".m2.", ".bias"), 1)
	pick(has(".m2.", ".weight"), 1)
	return coords
}

// TestTrainPlanGradientsMatchFiniteDifferences checks the whole network's
// backward: the plan's forward against a float64 reference of the
// training form, then the analytic gradients of L = sum(r*outputs) (lead
// and aux, random r) against float64 central differences of the
// reference, for leaky and relu, frozen and batch BatchNorm.
func TestTrainPlanGradientsMatchFiniteDifferences(t *testing.T) {
	dev := tpDevice(t)
	spec := tpSmallSpec(t)
	const batch, size = 2, 96 // 3x3 at P5: batch statistics over 18 values
	for ci, c := range []struct {
		act  Act
		mode BNMode
	}{{ActLeaky, BNFrozen}, {ActLeaky, BNBatch}, {ActReLU, BNBatch}} {
		name := fmt.Sprintf("%s/%s", c.act, c.mode)
		tm := tpModel(t, spec, c.act, 3, uint64(20+ci))
		ref := newTPRef(tm, c.mode) // before Forward: BNBatch moves the running stats
		p := tpPlan(t, tm, dev, TrainOptions{Batch: batch, Height: size, Width: size, BN: c.mode, Aux: true})
		tpFill(p.Input(), uint64(30+ci), 0, 1)
		out, err := p.Forward()
		if err != nil {
			t.Fatal(err)
		}
		wl, wa := ref.forward(p.Input(), batch, size, size, true)
		for _, o := range []struct {
			what string
			got  [][]float32
			want [][]float64
		}{{"lead", out.Lead, wl}, {"aux", out.Aux, wa}} {
			d, s := tpMaxDiff(o.got, o.want)
			t.Logf("%s: %s forward max diff %.3g (max |out| %.3g)", name, o.what, d, s)
			if d > 1e-4*max(1, s) {
				t.Errorf("%s: %s forward differs from the float64 reference by %g (max |out| %g)", name, o.what, d, s)
			}
		}
		rl, ra := p.GradOutputs()
		for k := range rl {
			tpFill(rl[k], uint64(40+k), -1, 1)
		}
		for k := range ra {
			tpFill(ra[k], uint64(50+k), -1, 1)
		}
		p.ZeroGrad()
		if err := p.Backward(); err != nil {
			t.Fatal(err)
		}
		// Batch statistics over as few as 18 values (P5 at 96x96, batch
		// 2) make the float32 forward ill-conditioned: it differs from
		// float64 30 times more than with frozen statistics, and the
		// first layers' gradients (in the thousands) inherit that, up
		// to a few 1e-4 relative while the finite differences agree
		// with each other to 1e-6 over steps of 1e-7 to 1e-9.
		tol := 1e-3
		if c.mode == BNBatch {
			tol = 3e-3
		}
		ps := p.Params()
		rng := rand.New(rand.NewPCG(uint64(60+ci), 1))
		worst := 0.0
		for _, co := range tpCoords(t, tm, ps, rng) {
			pr := ps[co[0]]
			v := ref.v[pr.Name]
			x0 := v[co[1]]
			fd := func(h float64) float64 {
				v[co[1]] = x0 + h
				lp, ap := ref.forward(p.Input(), batch, size, size, true)
				v[co[1]] = x0 - h
				lm, am := ref.forward(p.Input(), batch, size, size, true)
				v[co[1]] = x0
				return (tpLoss(lp, ap, rl, ra) - tpLoss(lm, am, rl, ra)) / (2 * h)
			}
			an := float64(pr.Grad[co[1]])
			// A small step keeps the difference off the kinks of relu,
			// leaky and max-pool (the first-layer gradients in batch
			// mode are in the thousands: a step of 1e-6 already moves
			// some pre-activations across zero); float64 rounding
			// stays near 1e-6 of the gradient. Should a kink fall
			// inside the step anyway, a ten times smaller one decides.
			h := 1e-7 * max(1, math.Abs(x0))
			d := fd(h)
			rel := math.Abs(an-d) / max(math.Abs(d), 1e-3)
			if rel > tol {
				d2 := fd(h / 10)
				t.Logf("%s: d/d %s[%d]: step %g gives %.7g, step %g %.7g (a kink in the step?)", name, pr.Name, co[1], h, d, h/10, d2)
				d = d2
				rel = math.Abs(an-d) / max(math.Abs(d), 1e-3)
			}
			worst = max(worst, rel)
			if rel > tol {
				t.Errorf("%s: d/d %s[%d]: analytic %.7g, finite difference %.7g (rel %.2g)", name, pr.Name, co[1], an, d, rel)
			}
		}
		t.Logf("%s: max relative gradient error %.3g", name, worst)
	}
}

// TestTrainPlanNonSquare: a non-square batch matches the float64
// reference, forward and one first-layer gradient.
func TestTrainPlanNonSquare(t *testing.T) {
	dev := tpDevice(t)
	tm := tpModel(t, tpSmallSpec(t), ActLeaky, 2, 12)
	const batch, h, w = 1, 64, 96
	ref := newTPRef(tm, BNFrozen)
	p := tpPlan(t, tm, dev, TrainOptions{Batch: batch, Height: h, Width: w, Aux: true})
	tpFill(p.Input(), 13, 0, 1)
	out, err := p.Forward()
	if err != nil {
		t.Fatal(err)
	}
	wl, wa := ref.forward(p.Input(), batch, h, w, true)
	for k := range wl {
		if n := batch * 3 * (h / tm.Spec.Strides[k]) * (w / tm.Spec.Strides[k]) * (5 + tm.NC); len(out.Lead[k]) != n || len(out.Aux[k]) != n {
			t.Fatalf("level %d: %d lead and %d aux values, want %d", k, len(out.Lead[k]), len(out.Aux[k]), n)
		}
	}
	for _, o := range []struct {
		got  [][]float32
		want [][]float64
	}{{out.Lead, wl}, {out.Aux, wa}} {
		if d, s := tpMaxDiff(o.got, o.want); d > 1e-4*max(1, s) {
			t.Errorf("forward differs from the float64 reference by %g (max |out| %g)", d, s)
		}
	}
	rl, ra := p.GradOutputs()
	for k := range rl {
		tpFill(rl[k], uint64(70+k), -1, 1)
		tpFill(ra[k], uint64(80+k), -1, 1)
	}
	p.ZeroGrad()
	if err := p.Backward(); err != nil {
		t.Fatal(err)
	}
	pr := p.Params()[0]
	v := ref.v[pr.Name]
	const i, step = 17, 1e-7
	x0 := v[i]
	v[i] = x0 + step
	lp, ap := ref.forward(p.Input(), batch, h, w, true)
	v[i] = x0 - step
	lm, am := ref.forward(p.Input(), batch, h, w, true)
	v[i] = x0
	fd := (tpLoss(lp, ap, rl, ra) - tpLoss(lm, am, rl, ra)) / (2 * step)
	if an := float64(pr.Grad[i]); math.Abs(an-fd) > 1e-3*max(math.Abs(fd), 1e-3) {
		t.Errorf("d/d %s[%d]: analytic %.7g, finite difference %.7g", pr.Name, i, an, fd)
	}
}

// TestTrainPlanConcatCopies: a tensor that feeds two concats lives in the
// later one and is copied into the earlier one; the copy's gradient is
// added back. yolov7-tiny has no such tensor, so the test makes one: the
// SPP-CSP output (already in the P5 route concat) also feeds the last
// ELAN concat.
func TestTrainPlanConcatCopies(t *testing.T) {
	dev := tpDevice(t)
	spec := tpSmallSpec(t)
	src, err := spec.AuxSources()
	if err != nil {
		t.Fatal(err)
	}
	last := -1
	for i, l := range spec.Layers {
		if l.Kind == KindConcat {
			last = i
		}
	}
	spec.Layers[last].From = append(spec.Layers[last].From, src[2])
	tm := tpModel(t, spec, ActLeaky, 3, 14)
	const batch, size = 2, 64
	ref := newTPRef(tm, BNFrozen)
	p := tpPlan(t, tm, dev, TrainOptions{Batch: batch, Height: size, Width: size, Aux: true})
	copies := 0
	for _, st := range p.steps {
		copies += len(st.copies)
	}
	if copies != 1 {
		t.Fatalf("%d concat copies, want 1", copies)
	}
	tpFill(p.Input(), 15, 0, 1)
	out, err := p.Forward()
	if err != nil {
		t.Fatal(err)
	}
	wl, wa := ref.forward(p.Input(), batch, size, size, true)
	for _, o := range []struct {
		got  [][]float32
		want [][]float64
	}{{out.Lead, wl}, {out.Aux, wa}} {
		if d, s := tpMaxDiff(o.got, o.want); d > 1e-4*max(1, s) {
			t.Errorf("forward differs from the float64 reference by %g (max |out| %g)", d, s)
		}
	}
	rl, ra := p.GradOutputs()
	for k := range rl {
		tpFill(rl[k], uint64(90+k), -1, 1)
		tpFill(ra[k], uint64(95+k), -1, 1)
	}
	p.ZeroGrad()
	if err := p.Backward(); err != nil {
		t.Fatal(err)
	}
	// the copied tensor's own conv, and one before it
	var sppConv, before TrainConv
	for i, c := range tm.Convs {
		if c.Layer == src[2] {
			sppConv, before = c, tm.Convs[i-3]
		}
	}
	for _, name := range []string{sppConv.names().conv + ".weight", before.names().conv + ".weight"} {
		var pr Param
		for _, q := range p.Params() {
			if q.Name == name {
				pr = q
			}
		}
		v := ref.v[name]
		// the largest gradient in each half of the tensor
		var idx [2]int
		for j, g := range pr.Grad {
			h := 2 * j / len(pr.Grad)
			if math.Abs(float64(g)) > math.Abs(float64(pr.Grad[idx[h]])) || idx[h] < h*len(pr.Grad)/2 {
				idx[h] = j
			}
		}
		for _, i := range idx {
			x0 := v[i]
			const step = 1e-7
			v[i] = x0 + step
			lp, ap := ref.forward(p.Input(), batch, size, size, true)
			v[i] = x0 - step
			lm, am := ref.forward(p.Input(), batch, size, size, true)
			v[i] = x0
			fd := (tpLoss(lp, ap, rl, ra) - tpLoss(lm, am, rl, ra)) / (2 * step)
			if an := float64(pr.Grad[i]); math.Abs(an-fd) > 1e-3*max(math.Abs(fd), 1e-3) {
				t.Errorf("d/d %s[%d]: analytic %.7g, finite difference %.7g", name, i, an, fd)
			}
		}
	}
}

// TestTrainPlanParams checks the parameter list of the unscaled model
// with nc = 3: unique official names, groups, aliasing and the count of
// the yolov7-tiny-aux graph (8.16 M, 1.96 M of them aux-only).
func TestTrainPlanParams(t *testing.T) {
	dev := tpDevice(t)
	tm, err := NewTrainModel(YOLOv7Tiny(), ActLeaky, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	p := tpPlan(t, tm, dev, TrainOptions{Batch: 1, Height: 32, Width: 32, Aux: true})
	ps := p.Params()
	seen := map[string]bool{}
	total, aux := 0, 0
	auxPrefix := []string{"model.77.conv.", "model.77.bn.", "model.78.", "model.79.", "model.80.m2."}
	for _, q := range ps {
		if seen[q.Name] {
			t.Errorf("duplicate parameter %s", q.Name)
		}
		seen[q.Name] = true
		if len(q.Value) == 0 || len(q.Grad) != len(q.Value) {
			t.Errorf("%s: %d values, %d gradients", q.Name, len(q.Value), len(q.Grad))
		}
		want := GroupDecay
		switch {
		case strings.HasSuffix(q.Name, ".bias"):
			want = GroupBias
		case strings.HasSuffix(q.Name, ".implicit"), strings.HasSuffix(q.Name, ".bn.weight"),
			strings.HasSuffix(q.Name, "rbr_dense.1.weight"), strings.HasSuffix(q.Name, "rbr_1x1.1.weight"):
			want = GroupNoDecay
		}
		if q.Group != want {
			t.Errorf("%s: group %d, want %d", q.Name, q.Group, want)
		}
		total += len(q.Value)
		for _, a := range auxPrefix {
			if strings.HasPrefix(q.Name, a) {
				aux += len(q.Value)
			}
		}
	}
	for _, n := range []string{"model.0.conv.weight", "model.0.bn.weight", "model.0.bn.bias",
		"model.74.rbr_dense.0.weight", "model.74.rbr_dense.1.weight", "model.74.rbr_dense.1.bias",
		"model.76.rbr_1x1.0.weight", "model.76.rbr_1x1.1.weight", "model.76.rbr_1x1.1.bias",
		"model.77.m.0.weight", "model.77.m.2.bias", "model.77.ia.1.implicit", "model.77.im.2.implicit",
		"model.77.conv.weight", "model.79.bn.bias", "model.80.m2.0.weight", "model.80.m2.2.bias"} {
		if !seen[n] {
			t.Errorf("no parameter %s", n)
		}
	}
	t.Logf("%d tensors, %d parameters, %d aux-only", len(ps), total, aux)
	const wantTotal, wantAux = 8158776, 1964552
	if total != wantTotal || aux != wantAux {
		t.Errorf("%d parameters (%d aux-only), want %d (%d)", total, aux, wantTotal, wantAux)
	}
	if r := math.Round(float64(total)/1e4) / 100; r != 8.16 {
		t.Errorf("%d parameters is %.2f M, MANIFEST says 8.16 M", total, r)
	}
	if r := math.Round(float64(aux)/1e4) / 100; r != 1.96 {
		t.Errorf("%d aux-only parameters is %.2f M, MANIFEST says 1.96 M", aux, r)
	}
	if &ps[0].Value[0] != &tm.Convs[0].Weight[0] {
		t.Error("model.0.conv.weight does not alias the model's slice")
	}
	lead := tpPlan(t, tm, dev, TrainOptions{Batch: 1, Height: 32, Width: 32})
	n := 0
	for _, q := range lead.Params() {
		n += len(q.Value)
	}
	if n != total-aux {
		t.Errorf("without aux: %d parameters, want %d", n, total-aux)
	}
}

// TestTrainModelStateAndClone: State lists every float tensor (running
// statistics included) under unique names, aliasing the model; Clone
// shares no memory and has the same state.
func TestTrainModelStateAndClone(t *testing.T) {
	tm := tpModel(t, tpSmallSpec(t), ActLeaky, 3, 2)
	st := tm.State()
	seen := map[string]bool{}
	nstat := 0
	for _, e := range st {
		if seen[e.Name] {
			t.Errorf("duplicate state entry %s", e.Name)
		}
		seen[e.Name] = true
		if strings.HasSuffix(e.Name, ".running_mean") || strings.HasSuffix(e.Name, ".running_var") {
			nstat++
		}
	}
	bns := 2 * (len(tm.Convs) + len(tm.AuxConvs) + 3) // 3 RepConv 1x1 branches
	if nstat != bns {
		t.Errorf("%d running statistics, want %d", nstat, bns)
	}
	if &st[0].Data[0] != &tm.Convs[0].Weight[0] {
		t.Error("State does not alias the model")
	}
	c := tm.Clone()
	cs := c.State()
	if len(cs) != len(st) {
		t.Fatalf("clone has %d state entries, want %d", len(cs), len(st))
	}
	for i := range st {
		if cs[i].Name != st[i].Name || len(cs[i].Data) != len(st[i].Data) {
			t.Fatalf("clone entry %d is %s (%d), want %s (%d)", i, cs[i].Name, len(cs[i].Data), st[i].Name, len(st[i].Data))
		}
		for j := range st[i].Data {
			if cs[i].Data[j] != st[i].Data[j] {
				t.Fatalf("clone %s[%d] = %v, want %v", st[i].Name, j, cs[i].Data[j], st[i].Data[j])
			}
		}
		if &cs[i].Data[0] == &st[i].Data[0] {
			t.Errorf("clone shares %s", st[i].Name)
		}
		cs[i].Data[0] += 1
		if st[i].Data[0] == cs[i].Data[0] {
			t.Errorf("writing the clone's %s changed the model", st[i].Name)
		}
	}
	c.Spec.Layers[0].From[0] = 5
	if tm.Spec.Layers[0].From[0] != -1 {
		t.Error("clone shares the spec")
	}
}

// TestTrainPlanBNModes: BNBatch moves the running statistics at every
// Forward (as PyTorch's momentum update); BNFrozen leaves them be.
func TestTrainPlanBNModes(t *testing.T) {
	dev := tpDevice(t)
	spec := tpSmallSpec(t)
	for _, mode := range []BNMode{BNFrozen, BNBatch} {
		tm := tpModel(t, spec, ActLeaky, 3, 4)
		before := tm.Clone()
		p := tpPlan(t, tm, dev, TrainOptions{Batch: 2, Height: 64, Width: 64, BN: mode, Aux: true})
		tpFill(p.Input(), 8, 0, 1)
		if _, err := p.Forward(); err != nil {
			t.Fatal(err)
		}
		st, bt := tm.State(), before.State()
		moved, stats := 0, 0
		for i := range st {
			isStat := strings.HasSuffix(st[i].Name, ".running_mean") || strings.HasSuffix(st[i].Name, ".running_var")
			same := true
			for j := range st[i].Data {
				if st[i].Data[j] != bt[i].Data[j] {
					same = false
				}
			}
			if isStat {
				stats++
				if !same {
					moved++
				}
			} else if !same {
				t.Errorf("%s: Forward changed %s", mode, st[i].Name)
			}
		}
		switch {
		case mode == BNFrozen && moved != 0:
			t.Errorf("frozen: %d of %d running statistics changed", moved, stats)
		case mode == BNBatch && moved != stats:
			t.Errorf("batch: %d of %d running statistics changed, want all", moved, stats)
		}
		if mode == BNBatch {
			// model.0's running mean: (1-m)*old + m*batch mean of its conv output
			ref := newTPRef(before, BNBatch)
			x0 := tpNew(2, 3, 64, 64)
			for i, v := range p.Input() {
				x0.d[i] = float64(v)
			}
			c := &before.Convs[0]
			y := tpConv(x0, ref.v["model.0.conv.weight"], c.Out, c.K, c.S, c.Pad)
			pl := y.h * y.w
			for o := 0; o < c.Out; o++ {
				var s, ss float64
				for n := 0; n < y.n; n++ {
					for i := 0; i < pl; i++ {
						s += y.d[(n*y.c+o)*pl+i]
					}
				}
				m := s / float64(y.n*pl)
				for n := 0; n < y.n; n++ {
					for i := 0; i < pl; i++ {
						d := y.d[(n*y.c+o)*pl+i] - m
						ss += d * d
					}
				}
				cnt := float64(y.n * pl)
				wm := (1-BNMomentum)*float64(c.BN.Mean[o]) + BNMomentum*m
				wv := (1-BNMomentum)*float64(c.BN.Var[o]) + BNMomentum*ss/(cnt-1)
				gm, gv := float64(tm.Convs[0].BN.Mean[o]), float64(tm.Convs[0].BN.Var[o])
				if math.Abs(gm-wm) > 1e-5*max(1, math.Abs(wm)) || math.Abs(gv-wv) > 1e-5*max(1, wv) {
					t.Errorf("model.0.bn channel %d: running mean/var %g/%g, want %g/%g", o, gm, gv, wm, wv)
				}
			}
		}
	}
}

// TestTrainPlanFrozenLayers: in BNBatch mode the BatchNorms of the layers
// below FrozenLayers keep their running statistics and normalise with
// them (the output of such a layer equals the BNFrozen plan's), the others
// move.
func TestTrainPlanFrozenLayers(t *testing.T) {
	dev := tpDevice(t)
	spec := tpSmallSpec(t)
	const frozen = 10
	tm := tpModel(t, spec, ActLeaky, 3, 4)
	before := tm.Clone()
	p := tpPlan(t, tm, dev, TrainOptions{Batch: 2, Height: 64, Width: 64, BN: BNBatch, Aux: true, FrozenLayers: frozen})
	tpFill(p.Input(), 8, 0, 1)
	if _, err := p.Forward(); err != nil {
		t.Fatal(err)
	}
	var kept, moved int
	for i := range tm.Convs {
		c, b := &tm.Convs[i], &before.Convs[i]
		same := slices.Equal(c.BN.Mean, b.BN.Mean) && slices.Equal(c.BN.Var, b.BN.Var)
		switch {
		case c.Layer < frozen && !same:
			t.Errorf("layer %d (%s): running statistics moved below FrozenLayers %d", c.Layer, c.Name, frozen)
		case c.Layer >= frozen && same:
			t.Errorf("layer %d (%s): running statistics did not move in BNBatch mode", c.Layer, c.Name)
		case same:
			kept++
		default:
			moved++
		}
	}
	if kept == 0 || moved == 0 {
		t.Fatalf("%d layers kept and %d moved their statistics; want some of each", kept, moved)
	}
	// The frozen layers' outputs are those of an all-frozen plan.
	ref := tpPlan(t, before.Clone(), dev, TrainOptions{Batch: 2, Height: 64, Width: 64, BN: BNFrozen, Aux: true})
	copy(ref.Input(), p.Input())
	if _, err := ref.Forward(); err != nil {
		t.Fatal(err)
	}
	compared := 0
	for l := 0; l < frozen; l++ {
		a, b := p.outs[l], ref.outs[l]
		if a.Data != nil {
			compared++
		}
		for n := 0; a.Data != nil && n < a.N; n++ {
			if !slices.Equal(a.Image(n), b.Image(n)) {
				t.Errorf("layer %d image %d: output differs from the BNFrozen plan's", l, n)
			}
		}
	}
	if compared == 0 {
		t.Fatal("no layer output compared")
	}
}

// TestTrainPlanGradientsAccumulate: Backward adds to the gradients; two
// calls without ZeroGrad give twice one call's.
func TestTrainPlanGradientsAccumulate(t *testing.T) {
	dev := tpDevice(t)
	tm := tpModel(t, tpSmallSpec(t), ActLeaky, 3, 6)
	p := tpPlan(t, tm, dev, TrainOptions{Batch: 2, Height: 64, Width: 64, BN: BNBatch, Aux: true})
	tpFill(p.Input(), 9, 0, 1)
	if _, err := p.Forward(); err != nil {
		t.Fatal(err)
	}
	rl, ra := p.GradOutputs()
	for k := range rl {
		tpFill(rl[k], uint64(10+k), -1, 1)
		tpFill(ra[k], uint64(20+k), -1, 1)
	}
	p.ZeroGrad()
	if err := p.Backward(); err != nil {
		t.Fatal(err)
	}
	var once [][]float32
	for _, q := range p.Params() {
		once = append(once, append([]float32(nil), q.Grad...))
	}
	if err := p.Backward(); err != nil {
		t.Fatal(err)
	}
	for i, q := range p.Params() {
		// the second call adds each partial sum to the first call's
		// total, so the rounding differs: compare to the tensor's scale
		scale := 0.0
		for _, g := range once[i] {
			scale = max(scale, math.Abs(float64(g)))
		}
		for j, g := range q.Grad {
			if w := 2 * once[i][j]; math.Abs(float64(g-w)) > 1e-5*scale {
				t.Fatalf("%s[%d]: %g after two Backward calls, want 2 x %g", q.Name, j, g, once[i][j])
			}
		}
	}
	p.ZeroGrad()
	if err := p.Backward(); err != nil {
		t.Fatal(err)
	}
	for i, q := range p.Params() {
		for j, g := range q.Grad {
			if g != once[i][j] {
				t.Fatalf("%s[%d]: %g after ZeroGrad and Backward, want %g", q.Name, j, g, once[i][j])
			}
		}
	}
}

// TestTrainPlanReadsModelWeights: Forward uses the model's current values
// (an optimiser updates them in place between steps).
func TestTrainPlanReadsModelWeights(t *testing.T) {
	dev := tpDevice(t)
	tm := tpModel(t, tpSmallSpec(t), ActLeaky, 3, 16)
	p := tpPlan(t, tm, dev, TrainOptions{Batch: 1, Height: 64, Width: 64, Aux: true})
	tpFill(p.Input(), 17, 0, 1)
	out, err := p.Forward()
	if err != nil {
		t.Fatal(err)
	}
	before := out.Lead[0][0] // image 0, anchor 0, cell (0, 0), channel 0
	ps := p.Params()
	for _, q := range ps {
		if q.Name == tm.Heads[0].ConvShape.Name+".bias" {
			q.Value[0] += 1
		}
	}
	if out, err = p.Forward(); err != nil {
		t.Fatal(err)
	}
	want := float64(before) + float64(tm.Heads[0].IM[0])
	if got := float64(out.Lead[0][0]); math.Abs(got-want) > 1e-5*max(1, math.Abs(want)) {
		t.Errorf("after bias += 1: output %g, want %g", got, want)
	}
}

// tpCopyDevice hides the CPU behind the interface, so the plan treats it
// as a device with its own memory and copies the model in and out.
type tpCopyDevice struct{ TrainDevice }

// TestTrainPlanDeviceCopies: on a device with its own memory (the weights
// uploaded at each Forward, the running statistics copied back) a step
// gives exactly what the CPU gives working on the model's slices.
func TestTrainPlanDeviceCopies(t *testing.T) {
	dev := tpDevice(t)
	tm := tpModel(t, tpSmallSpec(t), ActLeaky, 3, 18)
	tc := tm.Clone()
	o := TrainOptions{Batch: 2, Height: 64, Width: 64, BN: BNBatch, Aux: true}
	p := tpPlan(t, tm, dev, o)
	q := tpPlan(t, tc, tpCopyDevice{dev}, o)
	if !p.shared || q.shared {
		t.Fatalf("shared: CPU %v, wrapped %v", p.shared, q.shared)
	}
	for step := 0; step < 2; step++ {
		tpFill(p.Input(), uint64(19+step), 0, 1)
		copy(q.Input(), p.Input())
		for _, pl := range []*TrainPlan{p, q} {
			if _, err := pl.Forward(); err != nil {
				t.Fatal(err)
			}
			rl, ra := pl.GradOutputs()
			for k := range rl {
				tpFill(rl[k], uint64(30+k), -1, 1)
				tpFill(ra[k], uint64(40+k), -1, 1)
			}
			pl.ZeroGrad()
			if err := pl.Backward(); err != nil {
				t.Fatal(err)
			}
		}
		for k := range p.res.Lead {
			for i, v := range p.res.Lead[k] {
				if q.res.Lead[k][i] != v {
					t.Fatalf("step %d: lead level %d [%d]: %v, CPU %v", step, k, i, q.res.Lead[k][i], v)
				}
			}
		}
		pp, qp := p.Params(), q.Params()
		for i := range pp {
			for j, g := range pp[i].Grad {
				if qp[i].Grad[j] != g {
					t.Fatalf("step %d: %s gradient [%d]: %v, CPU %v", step, pp[i].Name, j, qp[i].Grad[j], g)
				}
			}
			// an optimiser step on both models
			for j := range pp[i].Value {
				pp[i].Value[j] -= 1e-3 * pp[i].Grad[j]
				qp[i].Value[j] -= 1e-3 * qp[i].Grad[j]
			}
		}
		ps, qs := tm.State(), tc.State()
		for i := range ps {
			for j, v := range ps[i].Data {
				if qs[i].Data[j] != v {
					t.Fatalf("step %d: %s[%d]: %v, CPU %v", step, ps[i].Name, j, qs[i].Data[j], v)
				}
			}
		}
	}
}

// TestTrainPlanSteadyStateAllocs: a training step allocates nothing.
func TestTrainPlanSteadyStateAllocs(t *testing.T) {
	dev := tpDevice(t)
	tm := tpModel(t, tpSmallSpec(t), ActReLU, 3, 7)
	p := tpPlan(t, tm, dev, TrainOptions{Batch: 2, Height: 64, Width: 64, BN: BNBatch, Aux: true})
	tpFill(p.Input(), 9, 0, 1)
	var err error
	step := func() {
		if _, e := p.Forward(); e != nil && err == nil {
			err = e
		}
		if e := p.Backward(); e != nil && err == nil {
			err = e
		}
	}
	step()
	if n := testing.AllocsPerRun(3, step); n != 0 {
		t.Errorf("%v allocations per step, want 0", n)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestTrainPlanRejects: bad options and a model that does not match its
// spec are errors naming the problem.
func TestTrainPlanRejects(t *testing.T) {
	dev := tpDevice(t)
	tm := tpModel(t, tpSmallSpec(t), ActLeaky, 3, 8)
	for _, o := range []TrainOptions{
		{Batch: 0, Height: 64, Width: 64},
		{Batch: 1, Height: 48, Width: 64},
		{Batch: 1, Height: 64, Width: 0},
		{Batch: 1, Height: 64, Width: 64, BN: BNMode(7)},
		{Batch: 1, Height: 32, Width: 32, BN: BNBatch}, // P5 is 1x1: one value per channel
	} {
		if _, err := NewTrainPlan(tm, dev, o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
	bad := tm.Clone()
	bad.Convs[5].Weight = bad.Convs[5].Weight[1:]
	if _, err := NewTrainPlan(bad, dev, TrainOptions{Batch: 1, Height: 64, Width: 64}); err == nil || !strings.Contains(err.Error(), bad.Convs[5].ConvShape.Name) {
		t.Errorf("short weight: error %v, want one naming %s", err, bad.Convs[5].ConvShape.Name)
	}
	p := tpPlan(t, tm, dev, TrainOptions{Batch: 1, Height: 64, Width: 64})
	if err := p.Backward(); err == nil {
		t.Error("Backward before Forward: no error")
	}
}

// BenchmarkTrainStep is one training step of the unscaled model (batch 8,
// 320x320, frozen BatchNorm, aux head): Forward, then Backward of a fixed
// random output gradient.
func BenchmarkTrainStep(b *testing.B) {
	dev := tpDevice(b)
	tm, err := NewTrainModel(YOLOv7Tiny(), ActLeaky, 3, 1)
	if err != nil {
		b.Fatal(err)
	}
	p := tpPlan(b, tm, dev, TrainOptions{Batch: 8, Height: 320, Width: 320, BN: BNFrozen, Aux: true})
	tpFill(p.Input(), 1, 0, 1)
	rl, ra := p.GradOutputs()
	for k := range rl {
		tpFill(rl[k], uint64(10+k), -1e-3, 1e-3)
		tpFill(ra[k], uint64(20+k), -1e-3, 1e-3)
	}
	// a warm-up step (the device sizes some scratch on first use), and a
	// collection of the previous run's plan, outside the measurement
	if _, err := p.Forward(); err != nil {
		b.Fatal(err)
	}
	if err := p.Backward(); err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	var fwd, bwd float64
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := p.Forward(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := p.Backward(); err != nil {
			b.Fatal(err)
		}
		fwd += float64(t1.Sub(t0))
		bwd += float64(time.Since(t1))
	}
	b.StopTimer()
	b.ReportMetric(fwd/float64(b.N)/1e6, "fwd-ms/op")
	b.ReportMetric(bwd/float64(b.N)/1e6, "bwd-ms/op")
	b.ReportMetric((fwd+bwd)/float64(b.N)/1e6, "ms/op")
}
