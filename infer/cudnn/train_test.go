package cudnn

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/yolo7d/yolo7d/tiny"
)

// trainStepModel is a seeded training-form model.
func trainStepModel(t testing.TB, depth, width float64) *tiny.TrainModel {
	t.Helper()
	spec, err := tiny.YOLOv7TinyScaled(depth, width)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := tiny.NewTrainModel(spec, tiny.ActReLU, 3, 5)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// TestTrainStep runs one forward and backward of a small training-form
// model (aux head, both BatchNorm modes) on the CPU and on the Device and
// compares the outputs, every parameter gradient and the running
// statistics.
func TestTrainStep(t *testing.T) {
	l := testLib(t)
	cpu := tiny.NewCPU(1)
	defer cpu.Close()
	for _, bn := range []tiny.BNMode{tiny.BNBatch, tiny.BNFrozen} {
		t.Run(bn.String(), func(t *testing.T) {
			base := trainStepModel(t, 0.5, 0.25)
			o := tiny.TrainOptions{Batch: 2, Height: 64, Width: 64, BN: bn, Aux: true}
			type result struct {
				outs  [][]float32
				grads [][]float32
				state [][]float32
			}
			step := func(dev tiny.TrainDevice, tm *tiny.TrainModel) result {
				p, err := tiny.NewTrainPlan(tm, dev, o)
				if err != nil {
					t.Fatal(err)
				}
				rng := rand.New(rand.NewPCG(3, 4))
				for i := range p.Input() {
					p.Input()[i] = rng.Float32()
				}
				out, err := p.Forward()
				if err != nil {
					t.Fatal(err)
				}
				var r result
				for _, s := range append(append([][]float32(nil), out.Lead...), out.Aux...) {
					r.outs = append(r.outs, append([]float32(nil), s...))
				}
				lead, aux := p.GradOutputs()
				for _, g := range append(append([][]float32(nil), lead...), aux...) {
					for i := range g {
						g[i] = float32(rng.NormFloat64()) * 0.01
					}
				}
				p.ZeroGrad()
				if err := p.Backward(); err != nil {
					t.Fatal(err)
				}
				if err := syncOf(dev); err != nil {
					t.Fatal(err)
				}
				for _, prm := range p.Params() {
					r.grads = append(r.grads, append([]float32(nil), prm.Grad...))
				}
				for _, s := range tm.State() {
					r.state = append(r.state, append([]float32(nil), s.Data...))
				}
				return r
			}
			want := step(cpu, base.Clone())
			d := testDevice(t, l, DeviceOptions{})
			got := step(d, base.Clone())
			check := func(what string, g, w [][]float32, tol float64) {
				if len(g) != len(w) {
					t.Fatalf("%s: %d tensors, want %d", what, len(g), len(w))
				}
				var worst float64
				for i := range w {
					e, scale, err := compare(g[i], w[i])
					if err != nil {
						t.Fatalf("%s %d: %v", what, i, err)
					}
					worst = max(worst, e/scale)
				}
				t.Logf("RESULT train/%s/%s max_rel_err=%.3g tol=%.3g", bn, what, worst, tol)
				if worst > tol {
					t.Errorf("%s: max |cudnn - cpu| / max(1, |cpu|) = %.3g > %.3g", what, worst, tol)
				}
			}
			check("outputs", got.outs, want.outs, 1e-4)
			check("gradients", got.grads, want.grads, 1e-3)
			check("state", got.state, want.state, 1e-5)
		})
	}
}

// benchLib loads the real libraries: timings of the stub mean nothing.
func benchLib(b *testing.B) *Lib {
	if !realGPU() {
		b.Skip("set YOLO7D_GPU_TEST=1 on a GPU machine: the stub libraries' timings mean nothing")
	}
	return testLib(b)
}

// BenchmarkForward times the golden relu model's forward (batch 1).
func BenchmarkForward(b *testing.B) {
	l := benchLib(b)
	dir := goldenDir(b)
	m, err := tiny.ImportModel(filepath.Join(dir, "yolov7-tiny-relu-raw.onnx"))
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{640, 416, 320} {
		for _, prec := range []Precision{FP32, FP16} {
			b.Run(fmt.Sprintf("size=%d/%s", size, prec), func(b *testing.B) {
				d := testDevice(b, l, DeviceOptions{Precision: prec, Async: true, ConstParams: true})
				plan, err := m.NewPlan(d, size)
				if err != nil {
					b.Fatal(err)
				}
				input := make([]float32, 3*size*size)
				for i := range input {
					input[i] = float32(i%255) / 255
				}
				for i := 0; i < 3; i++ { // algorithms, parameters, page migration
					if _, err := plan.Forward(input); err != nil {
						b.Fatal(err)
					}
				}
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := plan.Forward(input); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkTrainStep times one forward and backward of yolov7-tiny
// (training form with the aux head, batch 8, 320, batch BatchNorm).
func BenchmarkTrainStep(b *testing.B) {
	l := benchLib(b)
	tm := trainStepModel(b, 1, 1)
	d := testDevice(b, l, DeviceOptions{})
	p, err := tiny.NewTrainPlan(tm, d, tiny.TrainOptions{Batch: 8, Height: 320, Width: 320, BN: tiny.BNBatch, Aux: true})
	if err != nil {
		b.Fatal(err)
	}
	for i := range p.Input() {
		p.Input()[i] = float32(i%251) / 251
	}
	lead, aux := p.GradOutputs()
	for _, g := range append(append([][]float32(nil), lead...), aux...) {
		for i := range g {
			g[i] = float32(math.Sin(float64(i))) * 1e-3
		}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := p.Forward(); err != nil {
			b.Fatal(err)
		}
		p.ZeroGrad()
		if err := p.Backward(); err != nil {
			b.Fatal(err)
		}
	}
}
