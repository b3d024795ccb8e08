package cudnn

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/yolo7d/yolo7d/tiny"
)

// The tests run the Device against tiny's CPU device. By default they load
// the stub libraries of testdata/stub (CPU implementations of the cuDNN
// calls, built by gcc): that checks our descriptors, strides, α/β use,
// staging and aliasing. With YOLO7D_GPU_TEST=1 they load the real
// libraries (system, or YOLO7D_GPU_LIBS) and fail if those do not load:
// the device check (gpucheck/) runs them so on a GPU machine.

func realGPU() bool { return os.Getenv("YOLO7D_GPU_TEST") == "1" }

// testLib loads the libraries the tests run on.
func testLib(t testing.TB) *Lib {
	t.Helper()
	var opts Options
	if !realGPU() {
		opts = Options{Dirs: []string{stubLibDir(t)}, OnlyDirs: true}
	}
	l, err := Load(opts)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(l.Close)
	if realGPU() {
		t.Logf("GPU: %s", l.Info())
	}
	return l
}

func testDevice(t testing.TB, l *Lib, o DeviceOptions) *Device {
	t.Helper()
	d, err := l.NewDevice(o)
	if err != nil {
		t.Fatalf("new device: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return d
}

// opCase is one op run on a device: it allocates its tensors with alloc
// (filled from rng, identically on every device) and returns the values to
// compare.
type opCase struct {
	name string
	tol  float64 // relative to max(1, max |want|)
	run  func(dev tiny.TrainDevice, alloc func(n int, lo, hi float64) []float32) ([]float32, error)
}

// allocator returns alloc functions over dev.Alloc (device memory) or Go
// memory, filled from a fixed seed.
func allocator(t *testing.T, dev tiny.Device, goMem bool, seed uint64) func(n int, lo, hi float64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	return func(n int, lo, hi float64) []float32 {
		var s []float32
		if goMem {
			s = make([]float32, n)
		} else {
			var err error
			if s, err = dev.Alloc(n); err != nil {
				t.Fatalf("alloc: %v", err)
			}
		}
		for i := range s {
			s[i] = float32(lo + (hi-lo)*rng.Float64())
		}
		return s
	}
}

func view(data []float32, n, c, h, w int) tiny.NCHW {
	return tiny.NCHW{Data: data, N: n, C: c, H: h, W: w}
}

// convCase: y (a channel slice at offset 2 of a 3-channel-wider buffer)
// = act(conv(x)), x also a channel slice.
func convCase(name string, n, in, h, w, out, k, s, pad int, act tiny.Act, tol float64) opCase {
	return opCase{name: name, tol: tol, run: func(dev tiny.TrainDevice, alloc func(int, float64, float64) []float32) ([]float32, error) {
		ho, wo := (h+2*pad-k)/s+1, (w+2*pad-k)/s+1
		xb := alloc(n*(in+1)*h*w, -1, 1)
		x := tiny.NCHW{Data: xb[h*w:], N: n, C: in, H: h, W: w, Stride: (in + 1) * h * w}
		yb := alloc(n*(out+3)*ho*wo, -5, 5)
		y := tiny.NCHW{Data: yb[2*ho*wo:], N: n, C: out, H: ho, W: wo, Stride: (out + 3) * ho * wo}
		c := tiny.ConvArgs{Weight: alloc(out*in*k*k, -0.5, 0.5), Bias: alloc(out, -0.5, 0.5), K: k, S: s, Pad: pad, Act: act}
		if err := dev.Conv(y, x, c, make([]float32, dev.ConvScratch(y, x, c))); err != nil {
			return nil, err
		}
		return yb, syncOf(dev)
	}}
}

func syncOf(dev tiny.Device) error {
	if s, ok := dev.(tiny.Syncer); ok {
		return s.Sync()
	}
	return nil
}

func opCases() []opCase {
	cases := []opCase{
		convCase("conv3x3s1 relu", 2, 5, 9, 7, 6, 3, 1, 1, tiny.ActReLU, 1e-5),
		convCase("conv3x3s2 leaky", 2, 4, 10, 8, 5, 3, 2, 1, tiny.ActLeaky, 1e-5),
		convCase("conv1x1 none", 1, 16, 6, 6, 8, 1, 1, 0, tiny.ActNone, 1e-5),
	}
	for _, p := range []tiny.PoolArgs{{K: 2, S: 2}, {K: 5, S: 1, Pad: 2}, {K: 13, S: 1, Pad: 6}} {
		cases = append(cases, opCase{name: fmt.Sprintf("maxpool k%d s%d p%d", p.K, p.S, p.Pad), tol: 1e-6,
			run: func(dev tiny.TrainDevice, alloc func(int, float64, float64) []float32) ([]float32, error) {
				n, c, h, w := 2, 3, 8, 10
				ho, wo := (h+2*p.Pad-p.K)/p.S+1, (w+2*p.Pad-p.K)/p.S+1
				x := view(alloc(n*c*h*w, -3, -1), n, c, h, w) // all negative: padding must not win
				y := view(alloc(n*c*ho*wo, 0, 1), n, c, ho, wo)
				if err := dev.MaxPool(y, x, p, make([]float32, dev.PoolScratch(y, x, p))); err != nil {
					return nil, err
				}
				if err := syncOf(dev); err != nil {
					return nil, err
				}
				dy := view(alloc(len(y.Data), -1, 1), n, c, ho, wo)
				dx := view(alloc(len(x.Data), -1, 1), n, c, h, w)
				if err := dev.MaxPoolBackward(dx, dy, x, p); err != nil {
					return nil, err
				}
				return append(append([]float32(nil), y.Data...), dx.Data...), syncOf(dev)
			}})
	}
	cases = append(cases,
		opCase{name: "upsample and backward", tol: 1e-6, run: func(dev tiny.TrainDevice, alloc func(int, float64, float64) []float32) ([]float32, error) {
			n, c, h, w := 2, 3, 4, 5
			x := view(alloc(n*c*h*w, -1, 1), n, c, h, w)
			yb := alloc(n*(c+2)*4*h*w, -1, 1)
			y := tiny.NCHW{Data: yb, N: n, C: c, H: 2 * h, W: 2 * w, Stride: (c + 2) * 4 * h * w}
			if err := dev.Upsample2x(y, x); err != nil {
				return nil, err
			}
			if err := syncOf(dev); err != nil {
				return nil, err
			}
			dx := view(alloc(len(x.Data), -1, 1), n, c, h, w)
			if err := dev.Upsample2xBackward(dx, y); err != nil {
				return nil, err
			}
			return append(append([]float32(nil), yb...), dx.Data...), syncOf(dev)
		}},
		opCase{name: "head", tol: 1e-5, run: func(dev tiny.TrainDevice, alloc func(int, float64, float64) []float32) ([]float32, error) {
			n, in, h, w, na, no := 2, 6, 3, 5, 3, 7
			x := view(alloc(n*in*h*w, -1, 1), n, in, h, w)
			c := tiny.ConvArgs{Weight: alloc(na*no*in, -1, 1), Bias: alloc(na*no, -1, 1), K: 1, S: 1, Act: tiny.ActNone}
			dst := alloc(n*na*no*h*w, -9, 9)
			if err := dev.Head(dst, x, c, na); err != nil {
				return nil, err
			}
			return dst, syncOf(dev)
		}},
	)
	for _, ac := range []struct {
		name string
		add  int // 0 none, 1 separate, 2 y is Add, 3 y is x
		act  tiny.Act
	}{{"affine relu", 0, tiny.ActReLU}, {"affine add leaky", 1, tiny.ActLeaky}, {"affine into add", 2, tiny.ActNone}, {"affine in place relu", 3, tiny.ActReLU}} {
		cases = append(cases, opCase{name: ac.name, tol: 1e-6, run: func(dev tiny.TrainDevice, alloc func(int, float64, float64) []float32) ([]float32, error) {
			n, c, h, w := 2, 4, 3, 3
			x := view(alloc(n*c*h*w, -1, 1), n, c, h, w)
			y := view(alloc(n*c*h*w, -1, 1), n, c, h, w)
			a := tiny.AffineArgs{Scale: alloc(c, 0.5, 2), Shift: alloc(c, -1, 1), Act: ac.act}
			switch ac.add {
			case 1:
				a.Add = view(alloc(n*c*h*w, -1, 1), n, c, h, w)
			case 2:
				a.Add = y
			case 3:
				y = x
			}
			if err := dev.Affine(y, x, a); err != nil {
				return nil, err
			}
			return y.Data, syncOf(dev)
		}})
	}
	cases = append(cases, opCase{name: "conv backward", tol: 1e-5, run: func(dev tiny.TrainDevice, alloc func(int, float64, float64) []float32) ([]float32, error) {
		n, in, h, w, out, k, s, pad := 2, 3, 7, 6, 4, 3, 2, 1
		ho, wo := (h+2*pad-k)/s+1, (w+2*pad-k)/s+1
		xb := alloc(n*(in+2)*h*w, -1, 1)
		x := tiny.NCHW{Data: xb, N: n, C: in, H: h, W: w, Stride: (in + 2) * h * w}
		dx := view(alloc(n*in*h*w, -1, 1), n, in, h, w) // accumulated into
		dy := view(alloc(n*out*ho*wo, -1, 1), n, out, ho, wo)
		c := tiny.ConvArgs{Weight: alloc(out*in*k*k, -1, 1), Bias: alloc(out, -1, 1), K: k, S: s, Pad: pad, Act: tiny.ActNone}
		dW, dB := alloc(len(c.Weight), -1, 1), alloc(out, -1, 1)
		scratch := make([]float32, dev.ConvBackwardScratch(dy, x, c))
		if err := dev.ConvBackward(dx, dy, x, c, dW, dB, scratch); err != nil {
			return nil, err
		}
		if err := dev.ConvBackward(tiny.NCHW{}, dy, x, c, dW, nil, scratch); err != nil { // no dx, no dB
			return nil, err
		}
		if err := syncOf(dev); err != nil {
			return nil, err
		}
		return append(append(append([]float32(nil), dx.Data...), dW...), dB...), nil
	}})
	for _, act := range []tiny.Act{tiny.ActReLU, tiny.ActLeaky} {
		cases = append(cases, opCase{name: "act backward " + string(act), tol: 1e-6, run: func(dev tiny.TrainDevice, alloc func(int, float64, float64) []float32) ([]float32, error) {
			y := view(alloc(2*3*4*4, -1, 1), 2, 3, 4, 4)
			dy := view(alloc(len(y.Data), -1, 1), 2, 3, 4, 4)
			if err := dev.ActBackward(dy, y, act); err != nil {
				return nil, err
			}
			return dy.Data, syncOf(dev)
		}})
	}
	for _, mode := range []tiny.BNMode{tiny.BNBatch, tiny.BNFrozen} {
		for _, withAdd := range []bool{false, true} {
			cases = append(cases, opCase{name: fmt.Sprintf("bn %v add=%v", mode, withAdd), tol: 1e-5, run: func(dev tiny.TrainDevice, alloc func(int, float64, float64) []float32) ([]float32, error) {
				n, c, h, w := 3, 4, 5, 3
				x := view(alloc(n*c*h*w, -2, 3), n, c, h, w)
				y := view(alloc(n*c*h*w, -1, 1), n, c, h, w)
				a := tiny.BNArgs{Weight: alloc(c, 0.5, 1.5), Bias: alloc(c, -0.5, 0.5), RunMean: alloc(c, -0.2, 0.2), RunVar: alloc(c, 0.5, 1.5),
					Eps: 1e-3, Momentum: 0.03, Mode: mode, SaveMean: alloc(c, 0, 0), SaveInvStd: alloc(c, 0, 0), Act: tiny.ActLeaky}
				if withAdd {
					a.Add = y // RepConv style: y = act(BN(x) + y)
				}
				if err := dev.BNForward(y, x, a); err != nil {
					return nil, err
				}
				if err := syncOf(dev); err != nil {
					return nil, err
				}
				dy := view(alloc(len(x.Data), -1, 1), n, c, h, w)
				dG, dB := alloc(c, -1, 1), alloc(c, -1, 1)
				if err := dev.BNBackward(dy, dy, x, a, dG, dB); err != nil { // dx aliases dy
					return nil, err
				}
				if err := syncOf(dev); err != nil {
					return nil, err
				}
				var all []float32
				for _, s := range [][]float32{y.Data, a.RunMean, a.RunVar, a.SaveMean, a.SaveInvStd, dy.Data, dG, dB} {
					all = append(all, s...)
				}
				return all, nil
			}})
		}
	}
	return cases
}

// compare returns max |got - want| and the tolerance's scale.
func compare(got, want []float32) (worst, scale float64, err error) {
	if len(got) != len(want) {
		return 0, 0, fmt.Errorf("%d values, want %d", len(got), len(want))
	}
	for i := range want {
		if math.IsNaN(float64(got[i])) != math.IsNaN(float64(want[i])) {
			return math.Inf(1), 0, fmt.Errorf("value %d: got %v want %v", i, got[i], want[i])
		}
		worst = max(worst, math.Abs(float64(got[i]-want[i])))
		scale = max(scale, math.Abs(float64(want[i])))
	}
	return worst, max(1, scale), nil
}

// TestOps runs every op on the CPU device and on the cuDNN device (with
// its tensors in device memory, then in Go memory) and compares.
func TestOps(t *testing.T) {
	l := testLib(t)
	cpu := tiny.NewCPU(1)
	defer cpu.Close()
	for i, c := range opCases() {
		t.Run(c.name, func(t *testing.T) {
			seed := uint64(100 + i)
			want, err := c.run(cpu, allocator(t, cpu, true, seed))
			if err != nil {
				t.Fatalf("cpu: %v", err)
			}
			for _, goMem := range []bool{false, true} {
				d := testDevice(t, l, DeviceOptions{})
				got, err := c.run(d, allocator(t, d, goMem, seed))
				if err != nil {
					t.Fatalf("cudnn (go memory %v): %v", goMem, err)
				}
				worst, scale, err := compare(got, want)
				if err != nil {
					t.Fatalf("cudnn (go memory %v): %v", goMem, err)
				}
				t.Logf("RESULT op/%s/gomem=%v max_abs_err=%.3g tol=%.3g", c.name, goMem, worst, c.tol*scale)
				if worst > c.tol*scale {
					t.Errorf("go memory %v: max |cudnn - cpu| = %.3g > %.3g", goMem, worst, c.tol*scale)
				}
			}
		})
	}
}

// TestConvFP16 compares half-precision convolutions with the CPU's float.
func TestConvFP16(t *testing.T) {
	l := testLib(t)
	cpu := tiny.NewCPU(1)
	defer cpu.Close()
	for i, c := range []opCase{
		convCase("fp16 conv3x3 relu", 1, 16, 10, 10, 16, 3, 1, 1, tiny.ActReLU, 2e-2),
		convCase("fp16 conv1x1 leaky", 2, 8, 5, 6, 24, 1, 1, 0, tiny.ActLeaky, 2e-2),
	} {
		seed := uint64(200 + i)
		want, err := c.run(cpu, allocator(t, cpu, true, seed))
		if err != nil {
			t.Fatal(err)
		}
		d := testDevice(t, l, DeviceOptions{Precision: FP16, ConstParams: true, Async: true})
		got, err := c.run(d, allocator(t, d, false, seed))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		worst, scale, err := compare(got, want)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("RESULT op/%s max_abs_err=%.3g tol=%.3g", c.name, worst, c.tol*scale)
		if worst > c.tol*scale {
			t.Errorf("%s: max |fp16 - cpu| = %.3g > %.3g", c.name, worst, c.tol*scale)
		}
		if worst == 0 {
			t.Errorf("%s: fp16 equals fp32 exactly: the half path did not run", c.name)
		}
	}
}

// TestBadCalls: shape errors are refused before any GPU work, and a
// closed Device refuses work.
func TestBadCalls(t *testing.T) {
	l := testLib(t)
	d := testDevice(t, l, DeviceOptions{})
	x, _ := d.Alloc(2 * 3 * 4 * 4)
	y, _ := d.Alloc(2 * 5 * 4 * 4)
	err := d.Conv(view(y, 2, 5, 4, 4), view(x, 2, 3, 4, 4), tiny.ConvArgs{Weight: make([]float32, 5*3*9), Bias: make([]float32, 4), K: 3, S: 1, Pad: 1, Act: tiny.ActReLU}, nil)
	if err == nil || !strings.Contains(err.Error(), "biases") {
		t.Errorf("conv with 4 biases for 5 outputs: %v", err)
	}
	if _, err := d.Alloc(-1); err == nil {
		t.Error("Alloc(-1) accepted")
	}
	if !realGPU() { // the stub has 64 GiB free
		if _, err := d.Alloc(20 << 30); err == nil || !strings.Contains(err.Error(), "MiB free on the GPU") {
			t.Errorf("Alloc of 80 GiB: %v", err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Upsample2x(view(make([]float32, 16), 1, 1, 4, 4), view(make([]float32, 4), 1, 1, 2, 2)); !errors.Is(err, errClosed) {
		t.Errorf("op on a closed device: %v", err)
	}
	if _, err := d.Alloc(4); !errors.Is(err, errClosed) {
		t.Errorf("alloc on a closed device: %v", err)
	}
}

// TestForwardAllocs: a planned forward allocates nothing on the Go heap
// once its algorithms and parameters are cached (the input is staged
// through the Device's own buffers).
func TestForwardAllocs(t *testing.T) {
	l := testLib(t)
	spec, err := tiny.YOLOv7TinyScaled(0.5, 0.25)
	if err != nil {
		t.Fatal(err)
	}
	m, err := tiny.NewRandom(tiny.Config{NC: 3, Seed: 1, Spec: &spec})
	if err != nil {
		t.Fatal(err)
	}
	for _, prec := range []Precision{FP32, FP16} {
		d := testDevice(t, l, DeviceOptions{Precision: prec, Async: true, ConstParams: true})
		plan, err := m.NewPlan(d, 64)
		if err != nil {
			t.Fatal(err)
		}
		input := make([]float32, 3*64*64)
		for i := 0; i < 2; i++ {
			if _, err := plan.Forward(input); err != nil {
				t.Fatal(err)
			}
		}
		allocs := testing.AllocsPerRun(5, func() {
			if _, err := plan.Forward(input); err != nil {
				t.Fatal(err)
			}
		})
		t.Logf("%s: %.1f allocations per forward", prec, allocs)
		if allocs != 0 {
			t.Errorf("%s: %.1f allocations per forward, want 0", prec, allocs)
		}
	}
}
