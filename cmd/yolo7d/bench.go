package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/yolo7d/yolo7d/infer"
	"github.com/yolo7d/yolo7d/infer/cudnn"
	"github.com/yolo7d/yolo7d/tiny"
)

// benchOptions are the settings of `yolo7d bench`.
type benchOptions struct {
	model    string   // model file; "" = a generated random model
	sizes    []int    // input sides
	backends []string // cpu, opencv
	runs     int      // timed runs per size and backend
	warmup   int      // untimed runs before them
	threads  int      // 0 = all cores
}

// benchResult is the latency of one backend at one input size.
type benchResult struct {
	Backend string  `json:"backend"`
	Size    int     `json:"size"`
	Runs    int     `json:"runs"`
	MeanMS  float64 `json:"mean_ms"`
	P50MS   float64 `json:"p50_ms"`
	P90MS   float64 `json:"p90_ms"`
	P99MS   float64 `json:"p99_ms"`
	MinMS   float64 `json:"min_ms"`
}

// benchReport is what `yolo7d bench --json` prints.
type benchReport struct {
	Model   string        `json:"model"` // path, or "random" for a generated model
	Act     string        `json:"act"`
	Classes int           `json:"classes"`
	Threads int           `json:"threads"`
	CPUs    int           `json:"cpus"`
	BLAS    string        `json:"blas"`    // OpenBLAS's kernels (tiny.BLASCore)
	Kernels string        `json:"kernels"` // what runs the cpu backend's convs (tiny.CPUKernels)
	Results []benchResult `json:"results"`
}

// parseSizes parses "640,416,320".
func parseSizes(s string) ([]int, error) {
	var sizes []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("--sizes %q: %w", s, err)
		}
		if err := checkImg(n); err != nil {
			return nil, fmt.Errorf("--sizes: %w", err)
		}
		sizes = append(sizes, n)
	}
	return sizes, nil
}

// parseBackends parses "cpu,opencv".
func parseBackends(s string) ([]string, error) {
	var bs []string
	for _, f := range strings.Split(s, ",") {
		b := strings.ToLower(strings.TrimSpace(f))
		if b != "cpu" && b != "opencv" && b != "cudnn" && b != "cudnn-fp16" {
			return nil, fmt.Errorf("--backends: unknown backend %q (want cpu, opencv, cudnn or cudnn-fp16)", f)
		}
		bs = append(bs, b)
	}
	return bs, nil
}

// runBench measures the forward latency (network only: no letterbox, no
// decode) of every backend at every size. The cpu backend runs the tiny CPU
// plan; opencv runs an ONNX export of the model written to a temporary
// directory, since OpenCV reads ONNX only.
func runBench(ctx context.Context, o benchOptions) (*benchReport, error) {
	if o.runs < 1 {
		return nil, fmt.Errorf("--runs %d: want at least 1", o.runs)
	}
	rep := &benchReport{Model: o.model, CPUs: runtime.NumCPU(), BLAS: tiny.BLASCore(), Kernels: tiny.CPUKernels()}
	var m *tiny.Model
	if o.model == "" {
		var err error
		if m, err = tiny.NewRandom(tiny.Config{Seed: 1}); err != nil {
			return nil, err
		}
		rep.Model = "random"
	} else {
		var err error
		if m, _, err = loadModel(o.model); err != nil {
			return nil, err
		}
	}
	rep.Act, rep.Classes = string(m.Act), m.NC
	var tmp string
	if slices.Contains(o.backends, "opencv") {
		var err error
		if tmp, err = os.MkdirTemp("", "yolo7d-bench-"); err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
	}
	r := rand.New(rand.NewPCG(1, 1))
	for _, size := range o.sizes {
		input := &infer.Tensor{Shape: []int{1, 3, size, size}, Data: make([]float32, 3*size*size)}
		for i := range input.Data {
			input.Data[i] = r.Float32()
		}
		for _, name := range o.backends {
			be, threads, err := benchBackend(name, m, size, o.threads, tmp)
			if err != nil {
				return nil, fmt.Errorf("bench %s at %d: %w", name, size, err)
			}
			rep.Threads = threads
			res, err := timeBackend(ctx, be, input, o.warmup, o.runs)
			be.Close()
			if err != nil {
				return nil, fmt.Errorf("bench %s at %d: %w", name, size, err)
			}
			res.Backend, res.Size = name, size
			rep.Results = append(rep.Results, res)
		}
	}
	return rep, nil
}

// cpuPlanBackend adapts a tiny CPU plan to infer.Backend.
type cpuPlanBackend struct {
	plan *tiny.Plan
	outs []*infer.Tensor
}

func (b *cpuPlanBackend) Forward(_ context.Context, in *infer.Tensor) ([]*infer.Tensor, error) {
	outs, err := b.plan.Forward(in.Data)
	if err != nil {
		return nil, err
	}
	for i := range outs {
		b.outs[i].Data = outs[i]
	}
	return b.outs, nil
}

func (b *cpuPlanBackend) Close() error { return nil }

// benchBackend builds backend name for m at size; it returns the backend
// and the threads it uses.
func benchBackend(name string, m *tiny.Model, size, threads int, tmp string) (infer.Backend, int, error) {
	if name == "cpu" {
		dev := tiny.NewCPU(threads)
		plan, err := m.NewPlan(dev, size)
		if err != nil {
			return nil, 0, err
		}
		b := &cpuPlanBackend{plan: plan}
		for _, s := range plan.OutputShapes() {
			b.outs = append(b.outs, &infer.Tensor{Shape: s})
		}
		return b, dev.Threads(), nil
	}
	if name == "cudnn" || name == "cudnn-fp16" {
		path := filepath.Join(tmp, fmt.Sprintf("model-%d.safetensors", size))
		if err := tiny.WriteModelFile(path, m, tiny.ModelMeta{InputSize: size}); err != nil {
			return nil, 0, err
		}
		prec := cudnn.FP32
		if name == "cudnn-fp16" {
			prec = cudnn.FP16
		}
		b, err := infer.NewCUDNNBackend(path, size, prec, cudnn.Options{})
		if err != nil {
			return nil, 0, err
		}
		return b, 0, nil
	}
	path := filepath.Join(tmp, fmt.Sprintf("model-%d.onnx", size))
	if err := tiny.WriteONNXFile(path, m, size); err != nil {
		return nil, 0, err
	}
	b, err := infer.NewOpenCVBackend(path, threads)
	if err != nil {
		return nil, 0, err
	}
	if threads <= 0 {
		threads = runtime.NumCPU()
	}
	return b, threads, nil
}

// timeBackend runs warmup untimed forwards, then runs timed ones.
func timeBackend(ctx context.Context, b infer.Backend, in *infer.Tensor, warmup, runs int) (benchResult, error) {
	for range warmup {
		if _, err := b.Forward(ctx, in); err != nil {
			return benchResult{}, err
		}
	}
	ms := make([]float64, runs)
	for i := range ms {
		start := time.Now()
		if _, err := b.Forward(ctx, in); err != nil {
			return benchResult{}, err
		}
		ms[i] = float64(time.Since(start).Nanoseconds()) / 1e6
	}
	return latencyStats(ms), nil
}

// latencyStats summarizes latencies in ms: mean, min and nearest-rank
// percentiles.
func latencyStats(ms []float64) benchResult {
	s := slices.Clone(ms)
	slices.Sort(s)
	pct := func(p float64) float64 {
		i := int(p/100*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	var sum float64
	for _, v := range s {
		sum += v
	}
	return benchResult{Runs: len(s), MeanMS: sum / float64(len(s)), P50MS: pct(50), P90MS: pct(90), P99MS: pct(99), MinMS: s[0]}
}

// writeBench prints the report as JSON or as a table.
func writeBench(w io.Writer, rep *benchReport, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	fmt.Fprintf(w, "model %s (%s, %d classes), %d threads, %d CPUs, cpu convs: %s\n", rep.Model, rep.Act, rep.Classes, rep.Threads, rep.CPUs, rep.Kernels)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "backend\tsize\truns\tmean ms\tp50 ms\tp90 ms\tp99 ms\tmin ms\t")
	for _, r := range rep.Results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", r.Backend, r.Size, r.Runs, r.MeanMS, r.P50MS, r.P90MS, r.P99MS, r.MinMS)
	}
	return tw.Flush()
}
