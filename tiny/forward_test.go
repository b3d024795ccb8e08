package tiny

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"testing"
	"time"
	"unsafe"
)

// devRefForward is the network written the obvious way: every layer into its
// own dense buffer with the reference ops, Concat as copies, the detect
// outputs permuted by index arithmetic.
func devRefForward(m *Model, input []float32, size int) [][]float32 {
	shapes, err := m.Spec.Resolve(3, m.NC)
	if err != nil {
		panic(err)
	}
	outs := make([]NCHW, len(shapes))
	view := func(i int) NCHW {
		if i < 0 {
			return NCHW{Data: input, N: 1, C: 3, H: size, W: size}
		}
		return outs[i]
	}
	ci := 0
	var heads [][]float32
	na, no := m.Spec.NumAnchors(), 5+m.NC
	toF32 := func(v []float64) []float32 {
		f := make([]float32, len(v))
		for i := range v {
			f[i] = float32(v[i])
		}
		return f
	}
	for i, l := range m.Spec.Layers {
		x := view(shapes[i].From[0])
		switch l.Kind {
		case KindConv:
			c := m.Convs[ci]
			ci++
			y, _, ho, wo := devRefConv(x, ConvArgs{Weight: c.Weight, Bias: c.Bias, K: c.K, S: c.S, Pad: c.Pad, Act: m.Act}, c.Out)
			outs[i] = NCHW{Data: toF32(y), N: 1, C: c.Out, H: ho, W: wo}
		case KindMaxPool:
			y, ho, wo := devRefMaxPool(x, PoolArgs{K: l.K, S: l.S, Pad: l.Pad})
			outs[i] = NCHW{Data: y, N: 1, C: x.C, H: ho, W: wo}
		case KindUpsample:
			y := make([]float32, x.C*4*x.H*x.W)
			for c := 0; c < x.C; c++ {
				for r := 0; r < 2*x.H; r++ {
					for j := 0; j < 2*x.W; j++ {
						y[(c*2*x.H+r)*2*x.W+j] = x.Data[(c*x.H+r/2)*x.W+j/2]
					}
				}
			}
			outs[i] = NCHW{Data: y, N: 1, C: x.C, H: 2 * x.H, W: 2 * x.W}
		case KindConcat:
			var y []float32
			for _, f := range shapes[i].From {
				y = append(y, view(f).Data...)
			}
			outs[i] = NCHW{Data: y, N: 1, C: shapes[i].OutC, H: x.H, W: x.W}
		case KindDetect:
			for _, f := range shapes[i].From {
				c := m.Convs[ci]
				ci++
				in := outs[f]
				y, _, _, _ := devRefConv(in, ConvArgs{Weight: c.Weight, Bias: c.Bias, K: 1, S: 1, Act: ActNone}, c.Out)
				hw := in.H * in.W
				h := make([]float32, len(y))
				for a := 0; a < na; a++ {
					for p := 0; p < hw; p++ {
						for k := 0; k < no; k++ {
							h[(a*hw+p)*no+k] = float32(y[(a*no+k)*hw+p])
						}
					}
				}
				heads = append(heads, h)
			}
		}
	}
	return heads
}

// devMaxAbsDiff is the largest |a-b| over two equally long slices.
func devMaxAbsDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// TestPlanMatchesReferenceNetwork runs a seeded random model through the
// plan and through devRefForward at a small size. Both activations, one and
// two threads. Tolerance 1e-4 abs: logits are O(1..10) and each of ~20
// chained layers adds float32 reassociation error of ~1e-6 relative.
func TestPlanMatchesReferenceNetwork(t *testing.T) {
	const size = 64
	for _, act := range []Act{ActReLU, ActLeaky} {
		m, err := NewRandom(Config{Act: act, NC: 3, Seed: 5})
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(9, 9))
		in := make([]float32, 3*size*size)
		for i := range in {
			in[i] = r.Float32()
		}
		want := devRefForward(m, in, size)
		for _, threads := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s-t%d", act, threads), func(t *testing.T) {
				p, err := m.NewPlan(NewCPU(threads), size)
				if err != nil {
					t.Fatal(err)
				}
				for run := 0; run < 2; run++ { // a second run must not depend on the first
					got, err := p.Forward(in)
					if err != nil {
						t.Fatal(err)
					}
					if len(got) != 3 {
						t.Fatalf("%d outputs, want 3", len(got))
					}
					for k := range got {
						sh := p.OutputShapes()[k]
						if n := sh[0] * sh[1] * sh[2] * sh[3] * sh[4]; len(got[k]) != len(want[k]) || n != len(want[k]) {
							t.Fatalf("p%d: %d values (shape %v), want %d", k+3, len(got[k]), sh, len(want[k]))
						}
						if d := devMaxAbsDiff(got[k], want[k]); d > 1e-4 {
							t.Errorf("run %d p%d: max abs diff %.3g vs the reference network", run, k+3, d)
						}
					}
				}
			})
		}
	}
}

// TestPlanConcatIsFree: every yolov7-tiny tensor that feeds a Concat is
// written straight into the concat buffer, so no concat copies anything.
func TestPlanConcatIsFree(t *testing.T) {
	m, err := NewRandom(Config{NC: 2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	p, err := m.NewPlan(NewCPU(1), 64)
	if err != nil {
		t.Fatal(err)
	}
	shapes, _ := m.Spec.Resolve(3, m.NC)
	for _, st := range p.steps {
		if st.kind != KindConcat {
			continue
		}
		if len(st.copyIn) != 0 {
			t.Errorf("concat %d copies inputs %v", st.layer, st.copyIn)
		}
		y := p.outs[st.layer]
		off := 0
		for _, f := range shapes[st.layer].From {
			x := p.outs[f]
			if unsafe.SliceData(x.Data) != unsafe.SliceData(y.Channels(off, x.C).Data) {
				t.Errorf("concat %d: input %d is not at channel %d of its buffer", st.layer, f, off)
			}
			off += x.C
		}
	}
}

func TestNewPlanRejects(t *testing.T) {
	m, err := NewRandom(Config{NC: 2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{0, -32, 48, 100} {
		if _, err := m.NewPlan(NewCPU(1), size); err == nil {
			t.Errorf("input size %d: no error", size)
		}
	}
	p, err := m.NewPlan(NewCPU(1), 32)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Forward(make([]float32, 10)); err == nil {
		t.Error("short input: no error")
	}
	m.Convs[3].Bias = m.Convs[3].Bias[:1]
	if _, err := m.NewPlan(NewCPU(1), 32); err == nil {
		t.Error("invalid model: no error")
	}
}

// TestPlanMatchesGolden runs the official relu raw ONNX export (imported
// with ModelFromONNX: BN folded by the exporter, ImplicitA/M folded here)
// on the golden input and compares with the official PyTorch raw outputs.
// 1e-3 abs: logits span about -23..+13 and OpenCV/PyTorch themselves
// differ by ~2e-4 (float32 reassociation through 58 convs).
// TestPlanMatchesGolden runs the deploy form imported from each official
// file — the raw ReLU export, the fused --grid leaky export, and the leaky
// release checkpoint (.pt, fp16, BN and implicit folded here) — on
// input.npy and compares the raw head outputs with the official PyTorch
// ones.
func TestPlanMatchesGolden(t *testing.T) {
	g := goldenForward(t)
	shape, in, err := ReadNPYFile(filepath.Join(g, "input.npy"))
	if err != nil {
		t.Fatal(err)
	}
	if len(shape) != 4 || shape[1] != 3 || shape[2] != shape[3] {
		t.Fatalf("input.npy has shape %v", shape)
	}
	for _, tc := range []struct{ file, act string }{
		{"yolov7-tiny-relu-raw.onnx", "relu"},
		{"yolov7-tiny-leaky-fused-grid.onnx", "leaky"},
		{"yolov7-tiny-leaky.pt", "leaky"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			m, err := ImportModel(filepath.Join(g, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if string(m.Act) != tc.act {
				t.Fatalf("activation %q, want %q", m.Act, tc.act)
			}
			p, err := m.NewPlan(NewCPU(0), shape[2])
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.Forward(in)
			if err != nil {
				t.Fatal(err)
			}
			for k := range got {
				wshape, want, err := ReadNPYFile(filepath.Join(g, fmt.Sprintf("%s_raw_p%d.npy", tc.act, k+3)))
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(wshape) != fmt.Sprint(p.OutputShapes()[k]) {
					t.Fatalf("p%d: shape %v, golden %v", k+3, p.OutputShapes()[k], wshape)
				}
				d := devMaxAbsDiff(got[k], want)
				t.Logf("p%d: max abs error %.3g vs the official PyTorch outputs", k+3, d)
				if d > 1e-3 {
					t.Errorf("p%d: max abs error %.3g > 1e-3", k+3, d)
				}
			}
		})
	}
}

// BenchmarkPlanForward times the CPU plan of a random relu model (speed
// does not depend on the values) at 640 and 320.
func BenchmarkPlanForward(b *testing.B) {
	for _, size := range []int{640, 320} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			m, err := NewRandom(Config{NC: 80, Seed: 1})
			if err != nil {
				b.Fatal(err)
			}
			p, err := m.NewPlan(NewCPU(0), size)
			if err != nil {
				b.Fatal(err)
			}
			in := make([]float32, 3*size*size)
			for i := range in {
				in[i] = 0.5
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.Forward(in); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/frame")
		})
	}
}

// TestPlanCascadesSPPPools: the plan runs the SPP block's 9 and 13 pools
// as 5-wide pools of the 5 and 9 outputs, and the results are exactly the
// direct pools of the block's input.
func TestPlanCascadesSPPPools(t *testing.T) {
	m, err := NewRandom(Config{NC: 3, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	dev := NewCPU(2)
	defer dev.Close()
	const size = 160
	p, err := m.NewPlan(dev, size)
	if err != nil {
		t.Fatal(err)
	}
	in := make([]float32, 3*size*size)
	r := rand.New(rand.NewPCG(4, 5))
	for i := range in {
		in[i] = r.Float32()
	}
	if _, err := p.Forward(in); err != nil {
		t.Fatal(err)
	}
	var cascaded int
	for _, st := range p.steps {
		l := m.Spec.Layers[st.layer]
		if st.kind != KindMaxPool || l.S != 1 {
			continue
		}
		src := st.layer + l.From[0]
		if st.from[0] != src {
			cascaded++
			if st.pool.K != 5 || st.from[0] != st.layer-1 {
				t.Errorf("layer %d (pool %d): runs as a %d-wide pool of layer %d, want 5-wide of layer %d", st.layer, l.K, st.pool.K, st.from[0], st.layer-1)
			}
		}
		x := p.outs[src]
		y := NCHW{N: 1, C: x.C, H: x.H, W: x.W, Data: make([]float32, x.C*x.H*x.W)}
		args := PoolArgs{K: l.K, S: 1, Pad: l.Pad}
		if err := dev.MaxPool(y, x, args, make([]float32, dev.PoolScratch(y, x, args))); err != nil {
			t.Fatal(err)
		}
		got := p.outs[st.layer]
		for c := 0; c < x.C; c++ {
			g := got.Image(0)[c*x.Plane() : (c+1)*x.Plane()]
			w := y.Data[c*x.Plane() : (c+1)*x.Plane()]
			for i := range w {
				if g[i] != w[i] {
					t.Fatalf("layer %d (pool %d): channel %d value %d = %v, direct pool %v", st.layer, l.K, c, i, g[i], w[i])
				}
			}
		}
	}
	if cascaded != 2 {
		t.Errorf("%d SPP pools cascaded, want 2 (the 9 and 13 pools)", cascaded)
	}
}

// unbatchedCPU is the CPU device without its Batcher side (its
// StartBatch has another signature), so a plan runs every op at once.
type unbatchedCPU struct{ *CPU }

func (unbatchedCPU) StartBatch() {}

// TestPlanBatchMatchesUnbatched: a plan on the CPU runs its ops as one
// batch (Batcher); the outputs are bit for bit those of the same ops run
// one by one, for several forwards of different inputs, and a batched
// forward allocates nothing.
func TestPlanBatchMatchesUnbatched(t *testing.T) {
	m, err := NewRandom(Config{NC: 5, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	const size = 128
	dev := NewCPU(2)
	defer dev.Close()
	var _ Batcher = dev
	batched, err := m.NewPlan(dev, size)
	if err != nil {
		t.Fatal(err)
	}
	if batched.pins == nil {
		t.Fatal("the CPU plan pinned nothing: it would not batch")
	}
	plain, err := m.NewPlan(unbatchedCPU{dev}, size)
	if err != nil {
		t.Fatal(err)
	}
	if plain.pins != nil {
		t.Fatal("a plan on a device without StartBatch pinned its buffers")
	}
	r := rand.New(rand.NewPCG(5, 6))
	in := make([]float32, 3*size*size)
	for round := 0; round < 3; round++ {
		for i := range in {
			in[i] = r.Float32()
		}
		got, err := batched.Forward(in)
		if err != nil {
			t.Fatal(err)
		}
		want, err := plain.Forward(in)
		if err != nil {
			t.Fatal(err)
		}
		for k := range want {
			for i := range want[k] {
				if got[k][i] != want[k][i] {
					t.Fatalf("round %d, p%d[%d]: batched %v, one by one %v", round, k+3, i, got[k][i], want[k][i])
				}
			}
		}
	}
	if n := testing.AllocsPerRun(5, func() {
		if _, err := batched.Forward(in); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("a batched forward allocates %v times, want 0", n)
	}
}

// TestPlanUnpinsWhenDropped: a CPU plan pins its buffers for its batches;
// plans dropped without any call unpin them once unreachable (a Pinner
// collected with pins left makes the runtime panic).
func TestPlanUnpinsWhenDropped(t *testing.T) {
	m, err := NewRandom(Config{NC: 2, Seed: 12})
	if err != nil {
		t.Fatal(err)
	}
	dev := NewCPU(2)
	defer dev.Close()
	for i := 0; i < 4; i++ {
		p, err := m.NewPlan(dev, 64)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Forward(make([]float32, 3*64*64)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 5; i++ {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}
