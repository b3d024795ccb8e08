package finetune

import (
	"math"
	"math/big"
	"math/rand"
	"testing"

	"github.com/yolo7d/yolo7d/tiny"
)

// sgdTestParams returns one scalar parameter per group, value 1, grad 0.5.
func sgdTestParams() []tiny.Param {
	return []tiny.Param{
		{Name: "bn.weight", Value: []float32{1}, Grad: []float32{0.5}, Group: tiny.GroupNoDecay},
		{Name: "conv.weight", Value: []float32{1}, Grad: []float32{0.5}, Group: tiny.GroupDecay},
		{Name: "conv.bias", Value: []float32{1}, Grad: []float32{0.5}, Group: tiny.GroupBias},
	}
}

func TestSGDHandComputed(t *testing.T) {
	// Worked by hand (constant grad 0.5, p0 = 1):
	//  pg0 lr .1 mom .9: buf .5, g .95, p .905; buf .95, g 1.355, p .7695
	//  pg1 lr .1 mom .9 wd .1: g .6, buf .6, g 1.14, p .886;
	//      g .5886, buf 1.1286, g 1.60434, p .725566
	//  pg2 lr .2 mom .8: buf .5, g .9, p .82; buf .9, g 1.22, p .576
	want := [][2]float64{{0.905, 0.7695}, {0.886, 0.725566}, {0.82, 0.576}}
	ps := sgdTestParams()
	o := NewSGD(ps, 0.1)
	o.SetGroup(tiny.GroupNoDecay, 0.1, 0.9)
	o.SetGroup(tiny.GroupDecay, 0.1, 0.9)
	o.SetGroup(tiny.GroupBias, 0.2, 0.8)
	for step := 0; step < 2; step++ {
		if err := o.Step(); err != nil {
			t.Fatal(err)
		}
		for i, p := range ps {
			if got := float64(p.Value[0]); math.Abs(got-want[i][step]) > 5e-7 {
				t.Errorf("step %d %s: %.9g, want %.9g", step+1, p.Name, got, want[i][step])
			}
		}
	}
	if lr, mom, wd := o.Group(tiny.GroupDecay); lr != 0.1 || mom != 0.9 || wd != 0.1 {
		t.Errorf("Group(decay) = %v %v %v", lr, mom, wd)
	}
	if _, _, wd := o.Group(tiny.GroupBias); wd != 0 {
		t.Errorf("bias group has weight decay %v", wd)
	}
}

// sgdRef is a float64 reference of torch's nesterov SGD for one parameter.
type sgdRef struct {
	p, buf []float64
	init   bool
}

func (r *sgdRef) step(grad []float32, lr, mom, wd float64) {
	if !r.init {
		r.buf = make([]float64, len(r.p))
	}
	for k := range r.p {
		g := float64(grad[k]) + wd*r.p[k]
		if !r.init {
			r.buf[k] = g
		} else {
			r.buf[k] = mom*r.buf[k] + g
		}
		g += mom * r.buf[k]
		r.p[k] -= lr * g
	}
	r.init = true
}

func TestSGDAgainstFloat64Sequence(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	groups := []tiny.ParamGroup{tiny.GroupNoDecay, tiny.GroupDecay, tiny.GroupBias, tiny.GroupDecay}
	var ps []tiny.Param
	var refs []*sgdRef
	for i, g := range groups {
		n := 5 + i
		p := tiny.Param{Name: "p", Value: make([]float32, n), Grad: make([]float32, n), Group: g}
		r := &sgdRef{p: make([]float64, n)}
		for k := range p.Value {
			p.Value[k] = float32(rng.NormFloat64())
			r.p[k] = float64(p.Value[k])
		}
		ps = append(ps, p)
		refs = append(refs, r)
	}
	const wd = 5e-4
	o := NewSGD(ps, wd)
	maxErr := 0.0
	for step := 0; step < 6; step++ {
		// warm-up-like settings that change every step
		lrs := [3]float64{0.001 * float64(step), 0.002 * float64(step), 0.1 - 0.01*float64(step)}
		mom := 0.8 + 0.02*float64(step)
		for g := range lrs {
			o.SetGroup(tiny.ParamGroup(g), lrs[g], mom)
		}
		o.ZeroGrad()
		for i := range ps {
			for k := range ps[i].Grad {
				if ps[i].Grad[k] != 0 {
					t.Fatal("ZeroGrad left a gradient")
				}
				ps[i].Grad[k] = float32(rng.NormFloat64())
			}
		}
		if err := o.Step(); err != nil {
			t.Fatal(err)
		}
		for i, r := range refs {
			w := 0.0
			if ps[i].Group == tiny.GroupDecay {
				w = wd
			}
			r.step(ps[i].Grad, lrs[ps[i].Group], mom, w)
			for k, v := range ps[i].Value {
				e := math.Abs(float64(v) - r.p[k])
				maxErr = math.Max(maxErr, e)
				if e > 1e-6*math.Max(1, math.Abs(r.p[k])) {
					t.Errorf("step %d param %d[%d]: %.9g, float64 %.12g", step, i, k, v, r.p[k])
				}
			}
		}
	}
	t.Logf("max |float32 − float64| after 6 steps: %.3g", maxErr)
}

func TestSGDResume(t *testing.T) {
	mk := func() []tiny.Param {
		ps := sgdTestParams()
		ps = append(ps, tiny.Param{Name: "frozen", Value: []float32{3}, Group: tiny.GroupDecay}) // nil grad
		return ps
	}
	run := func(o *SGD, ps []tiny.Param, from, to int) {
		for s := from; s < to; s++ {
			o.SetGroup(tiny.GroupNoDecay, 0.05, 0.9)
			o.SetGroup(tiny.GroupDecay, 0.05, 0.9)
			o.SetGroup(tiny.GroupBias, 0.05, 0.9)
			for i := range ps {
				if ps[i].Grad != nil {
					ps[i].Grad[0] = float32(s+1) * 0.25
				}
			}
			if err := o.Step(); err != nil {
				t.Fatal(err)
			}
		}
	}
	a := mk()
	oa := NewSGD(a, 0.01)
	run(oa, a, 0, 4)

	b := mk()
	ob := NewSGD(b, 0.01)
	run(ob, b, 0, 2)
	st := ob.State()
	if st[3] != nil {
		t.Error("a parameter without gradient got a momentum buffer")
	}
	c := mk()
	for i := range c {
		c[i].Value[0] = b[i].Value[0]
	}
	oc := NewSGD(c, 0.01)
	if err := oc.LoadState(st); err != nil {
		t.Fatal(err)
	}
	st[0][0] = 99 // LoadState must copy
	run(oc, c, 2, 4)
	for i := range a {
		if a[i].Value[0] != c[i].Value[0] {
			t.Errorf("%s: uninterrupted %v, resumed %v", a[i].Name, a[i].Value[0], c[i].Value[0])
		}
	}
	if a[3].Value[0] != 3 {
		t.Errorf("parameter without gradient moved to %v", a[3].Value[0])
	}
}

func TestSGDErrors(t *testing.T) {
	tests := []struct {
		name string
		run  func() error
	}{
		{"grad length", func() error {
			ps := sgdTestParams()
			ps[1].Grad = []float32{1, 2}
			return NewSGD(ps, 0).Step()
		}},
		{"unknown group", func() error {
			ps := sgdTestParams()
			ps[2].Group = 7
			return NewSGD(ps, 0).Step()
		}},
		{"state count", func() error { return NewSGD(sgdTestParams(), 0).LoadState(make([][]float32, 2)) }},
		{"state length", func() error {
			return NewSGD(sgdTestParams(), 0).LoadState([][]float32{nil, {1, 2}, nil})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.run(); err == nil {
				t.Error("no error")
			}
		})
	}
	// A failed Step changes nothing.
	ps := sgdTestParams()
	ps[2].Grad = []float32{1, 2}
	o := NewSGD(ps, 0)
	o.SetGroup(tiny.GroupNoDecay, 1, 0.9)
	if o.Step() == nil || ps[0].Value[0] != 1 || o.State()[0] != nil {
		t.Error("a failed Step changed the state")
	}
}

func TestSGDMomentumZero(t *testing.T) {
	ps := sgdTestParams()
	o := NewSGD(ps, 0)
	o.SetGroup(tiny.GroupNoDecay, 0.1, 0)
	if err := o.Step(); err != nil {
		t.Fatal(err)
	}
	if ps[0].Value[0] != float32(0.95) || o.State()[0] != nil {
		t.Errorf("plain SGD: %v, buffer %v", ps[0].Value[0], o.State()[0])
	}
}

func TestSGDFMA32(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	exact := func(a, b, c float32) float32 {
		x := new(big.Float).SetPrec(300).SetFloat64(float64(a))
		x.Mul(x, new(big.Float).SetPrec(300).SetFloat64(float64(b)))
		x.Add(x, new(big.Float).SetPrec(300).SetFloat64(float64(c)))
		f, _ := x.Float32()
		return f
	}
	for i := 0; i < 200000; i++ {
		a := float32(rng.NormFloat64())
		b := float32(rng.NormFloat64() * math.Pow(2, float64(rng.Intn(20)-10)))
		c := float32(rng.NormFloat64())
		if i%3 == 0 { // near-cancellation
			c = -float32(float64(a) * float64(b))
		}
		if got, want := fma32(a, b, c), exact(a, b, c); got != want {
			t.Fatalf("fma32(%g, %g, %g) = %g, exact %g", a, b, c, got, want)
		}
	}
}
