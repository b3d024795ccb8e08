package finetune

import (
	"math"
	"testing"

	"github.com/yolo7d/yolo7d/tiny"
)

func TestScheduleAt(t *testing.T) {
	// Expected values from the train.py formulas, evaluated in Python
	// double precision (lr0 = lrf = 0.01, warmup_bias_lr 0.1, momentum
	// 0.8 → 0.937, nbs 64). E.g. epochs 300, nb 100, bs 16: nw =
	// max(round(3·100), 1000) = 1000 and accumulate 64/16 = 4; at ni = 500
	// accumulate interp = 1 + 3·0.5 = 2.5 → 2 (half to even), momentum
	// 0.8 + 0.137·0.5 = 0.8685, lr = lr0·lf(5)/2 with lf(5) = 1 −
	// 0.99·(1 − cos(π/60))/2, bias lr = 0.1 + (lr0·lf(5) − 0.1)/2.
	tests := []struct {
		name               string
		epochs, nb, bs     int
		warmup             int
		linear             bool
		ni, epoch          int
		lr                 [3]float64
		mom                float64
		acc                int
		inWarmup           bool
		nw                 int
		wd                 float64
		optimizerStepAtNi0 bool
	}{
		{"start", 300, 100, 16, 0, false, 0, 0, [3]float64{0, 0, 0.1}, 0.8, 1, true, 1000, 0.0005, true},
		{"quarter warm-up", 300, 100, 16, 0, false, 250, 2,
			[3]float64{0.0024997285958001216, 0.0024997285958001216, 0.07749972859580012}, 0.83425, 2, true, 1000, 0.0005, true},
		{"mid warm-up, 2.5 rounds to 2", 300, 100, 16, 0, false, 500, 5,
			[3]float64{0.0049966080985175704, 0.0049966080985175704, 0.05499660809851757}, 0.8685, 2, true, 1000, 0.0005, true},
		{"end of warm-up", 300, 100, 16, 0, false, 1000, 10,
			[3]float64{0.009972883382072953, 0.009972883382072953, 0.009972883382072953}, 0.937, 4, true, 1000, 0.0005, true},
		{"after warm-up", 300, 100, 16, 0, false, 1001, 10,
			[3]float64{0.009972883382072953, 0.009972883382072953, 0.009972883382072953}, 0.937, 4, false, 1000, 0.0005, true},
		{"last epoch", 300, 100, 16, 0, false, 29999, 299,
			[3]float64{0.00010027141164071552, 0.00010027141164071552, 0.00010027141164071552}, 0.937, 4, false, 1000, 0.0005, true},
		// A small fine-tune (20 epochs × 10 batches) never leaves the
		// official 1000-batch warm-up ...
		{"small run, official warm-up", 20, 10, 8, 0, false, 150, 15,
			[3]float64{0.00023247321496898854, 0.00023247321496898854, 0.08523247321496899}, 0.82055, 2, true, 1000, 0.0005, true},
		// ... unless WarmupIters sizes it to the run (3 epochs = 30 batches).
		{"small run, sized warm-up", 20, 10, 8, 30, false, 150, 15,
			[3]float64{0.0015498214331265902, 0.0015498214331265902, 0.0015498214331265902}, 0.937, 8, false, 30, 0.0005, true},
		{"sized warm-up, 4.5 rounds to 4", 20, 10, 8, 30, false, 15, 1,
			[3]float64{0.004969528642972966, 0.004969528642972966, 0.05496952864297297}, 0.8685, 4, true, 30, 0.0005, true},
		// bs 128: accumulate max(round(0.5), 1) = 1, wd 5e-4·128/64 = 1e-3;
		// at ni 5: lr 0.01/6, bias 0.1 − 0.09/6, momentum 0.8 + 0.137/6.
		{"batch 128", 20, 10, 128, 30, false, 5, 0,
			[3]float64{0.0016666666666666666, 0.0016666666666666666, 0.085}, 0.8228333333333334, 1, true, 30, 0.001, true},
		// bs 24: accumulate round(2.667) = 3, wd 5e-4·72/64 = 5.625e-4.
		{"batch 24", 20, 10, 24, 30, false, 31, 3,
			[3]float64{0.009460482294732422, 0.009460482294732422, 0.009460482294732422}, 0.937, 3, false, 30, 0.0005625000000000001, true},
		// linear: lf(3) = (1 − 3/19)·0.99 + 0.01
		{"linear", 20, 10, 24, 30, true, 31, 3,
			[3]float64{0.008436842105263158, 0.008436842105263158, 0.008436842105263158}, 0.937, 3, false, 30, 0.0005625000000000001, true},
		{"linear last epoch", 20, 10, 24, 30, true, 199, 19, [3]float64{0.0001, 0.0001, 0.0001}, 0.937, 3, false, 30, 0.0005625000000000001, true},
		{"no warm-up", 20, 10, 16, -1, false, 0, 0, [3]float64{0.01, 0.01, 0.01}, 0.937, 4, false, 0, 0.0005, true},
	}
	near := func(a, b float64) bool { return a == b } // bit-exact with Python
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := Schedule{Hyp: DefaultHyp(), Epochs: tc.epochs, BatchesPerEpoch: tc.nb, BatchSize: tc.bs, LinearLR: tc.linear, WarmupIters: tc.warmup}
			if err := s.Validate(); err != nil {
				t.Fatal(err)
			}
			if nw := s.WarmupLength(); nw != tc.nw {
				t.Errorf("warm-up %d batches, want %d", nw, tc.nw)
			}
			if wd := s.WeightDecay(); !near(wd, tc.wd) {
				t.Errorf("weight decay %.17g, want %.17g", wd, tc.wd)
			}
			st := s.At(tc.ni, tc.epoch)
			for j := range st.LR {
				if !near(st.LR[j], tc.lr[j]) {
					t.Errorf("lr[%d] = %.17g, want %.17g", j, st.LR[j], tc.lr[j])
				}
			}
			if !near(st.Momentum, tc.mom) || st.Accumulate != tc.acc || st.Warmup != tc.inWarmup {
				t.Errorf("momentum %.17g accumulate %d warmup %v, want %.17g %d %v", st.Momentum, st.Accumulate, st.Warmup, tc.mom, tc.acc, tc.inWarmup)
			}
			if st.OptimizerStep(0) != tc.optimizerStepAtNi0 {
				t.Errorf("OptimizerStep(0) = %v", st.OptimizerStep(0))
			}
		})
	}
}

func TestScheduleLF(t *testing.T) {
	s := Schedule{Hyp: DefaultHyp(), Epochs: 300, BatchesPerEpoch: 1, BatchSize: 64}
	// one-cycle: 1 at 0, (1 + lrf)/2 at half, lrf at the end
	for _, tc := range []struct {
		epoch int
		want  float64
	}{{0, 1}, {150, 0.505}, {300, 0.01}} {
		if got := s.LF(tc.epoch); math.Abs(got-tc.want) > 1e-15 {
			t.Errorf("one-cycle lf(%d) = %.17g, want %v", tc.epoch, got, tc.want)
		}
	}
	s.LinearLR = true
	for _, tc := range []struct {
		epoch int
		want  float64
	}{{0, 1}, {299, 0.01}} {
		if got := s.LF(tc.epoch); math.Abs(got-tc.want) > 1e-15 {
			t.Errorf("linear lf(%d) = %.17g, want %v", tc.epoch, got, tc.want)
		}
	}
}

func TestScheduleMonotoneWarmup(t *testing.T) {
	s := Schedule{Hyp: DefaultHyp(), Epochs: 10, BatchesPerEpoch: 50, BatchSize: 8, WarmupIters: 120}
	prev := s.At(0, 0)
	for ni := 1; ni <= 200; ni++ {
		st := s.At(ni, ni/50)
		if st.LR[tiny.GroupBias] > prev.LR[tiny.GroupBias]+1e-18 && ni <= 120 {
			t.Errorf("ni %d: bias lr rose during warm-up", ni)
		}
		if st.Momentum < prev.Momentum || st.Accumulate < prev.Accumulate {
			t.Errorf("ni %d: momentum/accumulate fell", ni)
		}
		prev = st
	}
	if prev.Accumulate != 8 || prev.Momentum != 0.937 {
		t.Errorf("after warm-up: %+v", prev)
	}
}

func TestScheduleValidate(t *testing.T) {
	ok := Schedule{Hyp: DefaultHyp(), Epochs: 2, BatchesPerEpoch: 1, BatchSize: 1, LinearLR: true}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		mod  func(*Schedule)
	}{
		{"epochs", func(s *Schedule) { s.Epochs = 0 }},
		{"linear one epoch", func(s *Schedule) { s.Epochs = 1 }},
		{"batches", func(s *Schedule) { s.BatchesPerEpoch = 0 }},
		{"batch size", func(s *Schedule) { s.BatchSize = -1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := ok
			tc.mod(&s)
			if s.Validate() == nil {
				t.Error("no error")
			}
		})
	}
}

func TestScheduleApply(t *testing.T) {
	ps := sgdTestParams()
	o := NewSGD(ps, 0)
	st := StepSettings{LR: [3]float64{0.1, 0.2, 0.3}, Momentum: 0.9}
	st.Apply(o)
	for j, want := range st.LR {
		if lr, mom, _ := o.Group(tiny.ParamGroup(j)); lr != want || mom != 0.9 {
			t.Errorf("group %d: lr %v momentum %v", j, lr, mom)
		}
	}
}

func TestScheduleCosRN(t *testing.T) {
	// Python 3.11 (glibc) reprs: math.cos(a), and the one-cycle lf at
	// points where Go's math.Cos is one ulp off.
	for _, tc := range []struct{ a, want float64 }{
		{0, 1}, {0.1, 0.9950041652780258}, {1, 0.5403023058681398}, {2.5, -0.8011436155469337},
		{3, -0.9899924966004454}, {math.Pi, -1}, {10, -0.8390715290764524}, {15.9, -0.9816175436063844},
		{-1, 0.5403023058681398},
	} {
		if got := cosRN(tc.a); got != tc.want {
			t.Errorf("cosRN(%v) = %.17g, want %.17g", tc.a, got, tc.want)
		}
	}
	for _, tc := range []struct {
		epochs, x int
		want      float64
	}{
		{5, 1, 0.905463412215599}, {10, 1, 0.975772975566101}, {20, 2, 0.975772975566101},
		{300, 7, 0.9986706662261068}, {300, 150, 0.5050000000000001}, {300, 299, 0.010027141164071551},
	} {
		s := Schedule{Hyp: DefaultHyp(), Epochs: tc.epochs}
		if got := s.LF(tc.x); got != tc.want {
			t.Errorf("lf(%d) over %d epochs = %.17g, Python %.17g", tc.x, tc.epochs, got, tc.want)
		}
	}
}
