package tiny

import (
	"math"
	"slices"
	"testing"
)

func TestNewRandomIsDeterministic(t *testing.T) {
	a, err := NewRandom(Config{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewRandom(Config{Seed: 1})
	c, _ := NewRandom(Config{Seed: 2})
	if a.Act != ActReLU || a.NC != 80 {
		t.Fatalf("defaults: act %q nc %d, want relu 80", a.Act, a.NC)
	}
	for i := range a.Convs {
		if !slices.Equal(a.Convs[i].Weight, b.Convs[i].Weight) || !slices.Equal(a.Convs[i].Bias, b.Convs[i].Bias) {
			t.Fatalf("%s differs between two models of seed 1", a.Convs[i].Name)
		}
		if slices.Equal(a.Convs[i].Weight, c.Convs[i].Weight) {
			t.Fatalf("%s equal for seeds 1 and 2", a.Convs[i].Name)
		}
	}
}

func TestNewRandomFilterNorms(t *testing.T) {
	tests := []struct {
		act  Act
		gain float64
	}{{ActReLU, 2}, {ActLeaky, 2 / 1.01}}
	for _, tc := range tests {
		m, err := NewRandom(Config{Act: tc.act, Seed: 3})
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Validate(); err != nil {
			t.Fatal(err)
		}
		for _, c := range m.Convs {
			want := tc.gain
			if c.Level >= 0 {
				want = detectLogitStd * detectLogitStd
			}
			fan := c.In * c.K * c.K
			for o := 0; o < c.Out; o++ {
				var ss float64
				for _, v := range c.Weight[o*fan : (o+1)*fan] {
					ss += float64(v) * float64(v)
				}
				if math.Abs(ss-want) > 1e-4*want {
					t.Fatalf("%s %s filter %d: squared norm %.6f, want %.6f", tc.act, c.Name, o, ss, want)
				}
			}
		}
	}
}

func TestNewRandomDetectBiases(t *testing.T) {
	for _, nc := range []int{80, 3} {
		m, err := NewRandom(Config{NC: nc, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		no := 5 + nc
		cls := math.Log(0.6 / (float64(nc) - 0.99))
		for _, c := range m.Convs {
			if c.Level < 0 {
				if slices.ContainsFunc(c.Bias, func(v float32) bool { return v != 0 }) {
					t.Fatalf("%s: nonzero bias in a Conv block", c.Name)
				}
				continue
			}
			s := float64(m.Spec.Strides[c.Level])
			obj := math.Log(8 / ((640 / s) * (640 / s)))
			for a := 0; a < 3; a++ {
				for k := 0; k < no; k++ {
					want := 0.0
					if k == 4 {
						want = obj
					} else if k > 4 {
						want = cls
					}
					if got := float64(c.Bias[a*no+k]); math.Abs(got-want) > 1e-6 {
						t.Fatalf("nc %d %s anchor %d channel %d: bias %v, want %v", nc, c.Name, a, k, got, want)
					}
				}
			}
		}
	}
}

func TestNewRandomRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"activation", Config{Act: "swish"}},
		{"names", Config{NC: 2, Names: []string{"a"}}},
		{"classes", Config{NC: -1}},
	}
	for _, tc := range tests {
		if _, err := NewRandom(tc.cfg); err == nil {
			t.Errorf("%s: accepted %+v", tc.name, tc.cfg)
		}
	}
}

func TestFoldImplicit(t *testing.T) {
	c := Conv{ConvShape: ConvShape{Name: "d", Out: 2, In: 3, K: 1, S: 1}, Weight: []float32{1, 2, 3, 4, 5, 6}, Bias: []float32{0.5, -1}}
	ia, im := []float32{1, 0, -1}, []float32{2, 0.5}
	// x = (1,1,1): im * (W (x + ia) + b) must equal W' x + b'.
	var want [2]float64
	for o := 0; o < 2; o++ {
		for i := 0; i < 3; i++ {
			want[o] += float64(c.Weight[o*3+i]) * (1 + float64(ia[i]))
		}
		want[o] = (want[o] + float64(c.Bias[o])) * float64(im[o])
	}
	if err := c.FoldImplicit(ia, im); err != nil {
		t.Fatal(err)
	}
	for o := 0; o < 2; o++ {
		got := float64(c.Bias[o])
		for i := 0; i < 3; i++ {
			got += float64(c.Weight[o*3+i])
		}
		if math.Abs(got-want[o]) > 1e-6 {
			t.Errorf("output %d: folded conv gives %v, unfolded %v", o, got, want[o])
		}
	}
	if err := c.FoldImplicit(ia[:2], im); err == nil {
		t.Error("FoldImplicit accepted a short ImplicitA")
	}
}
