package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/yolo7d/yolo7d/tiny"

	"github.com/yolo7d/yolo7d/tiny/tinytest"
)

// goldenDir returns ../shared/golden/forward, or "" when it is absent.
func goldenDir(t *testing.T) string {
	t.Helper()
	g, err := tinytest.Golden("forward")
	if err != nil {
		return ""
	}
	return g
}

// yolo7d runs the command line and fails the test on a non-zero exit.
func yolo7d(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if code := run(args, &out, &errOut); code != 0 {
		t.Fatalf("yolo7d %v: exit %d: %s", args, code, errOut.String())
	}
	return out.String()
}

// readOutputs reads p3.npy, p4.npy, p5.npy from dir.
func readOutputs(t *testing.T, dir string) [3][]float32 {
	t.Helper()
	var outs [3][]float32
	for i := range outs {
		shape, data, err := tiny.ReadNPYFile(filepath.Join(dir, "p"+string(rune('3'+i))+".npy"))
		if err != nil {
			t.Fatal(err)
		}
		if len(shape) != 5 || shape[0] != 1 || shape[1] != 3 {
			t.Fatalf("p%d shape %v, want 1x3xHxWx(5+nc)", i+3, shape)
		}
		outs[i] = data
	}
	return outs
}

// maxAbsDiff is the largest |a-b| (Inf when the lengths differ).
func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// TestModelRoundTripsForwardTheSame: a source model is imported as native
// .safetensors, exported back to ONNX, and both run by `yolo7d forward`
// give the same outputs (and the official ones, for the golden files).
func TestModelRoundTripsForwardTheSame(t *testing.T) {
	dir := t.TempDir()
	gen := filepath.Join(dir, "gen.onnx")
	yolo7d(t, "model", "init", "-o", gen, "--act", "leaky", "--nc", "3", "--img", "64", "--seed", "3")
	genInput := filepath.Join(dir, "in64.npy")
	r := rand.New(rand.NewPCG(4, 5))
	data := make([]float32, 3*64*64)
	for i := range data {
		data[i] = r.Float32()
	}
	if err := writeNPYFile(genInput, []int{1, 3, 64, 64}, data); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, src, input string
		img              string
		want             string // golden raw output prefix ("" = none)
	}{
		{name: "generated onnx", src: gen, input: genInput, img: "64"},
	}
	if g := goldenDir(t); g != "" {
		in := filepath.Join(g, "input.npy")
		tests = append(tests,
			struct{ name, src, input, img, want string }{"official leaky pt", filepath.Join(g, "yolov7-tiny-leaky.pt"), in, "640", filepath.Join(g, "leaky_raw")},
			struct{ name, src, input, img, want string }{"official relu raw onnx", filepath.Join(g, "yolov7-tiny-relu-raw.onnx"), in, "640", filepath.Join(g, "relu_raw")},
		)
	} else {
		t.Log("golden data absent: only the generated model is checked")
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			native, onnx := filepath.Join(d, "m.safetensors"), filepath.Join(d, "m.onnx")
			yolo7d(t, "import", tc.src, "-o", native, "--img", tc.img)
			yolo7d(t, "export", native, "-o", onnx)
			yolo7d(t, "forward", "-m", native, "--input", tc.input, "--out-dir", filepath.Join(d, "native"))
			yolo7d(t, "forward", "-m", onnx, "--input", tc.input, "--out-dir", filepath.Join(d, "onnx"))
			a, b := readOutputs(t, filepath.Join(d, "native")), readOutputs(t, filepath.Join(d, "onnx"))
			for i := range a {
				if diff := maxAbsDiff(a[i], b[i]); diff > 1e-5 {
					t.Errorf("p%d: native and exported ONNX differ by %.3g", i+3, diff)
				}
			}
			if tc.want == "" {
				return
			}
			for i := range a {
				_, want, err := tiny.ReadNPYFile(tc.want + "_p" + string(rune('3'+i)) + ".npy")
				if err != nil {
					t.Fatal(err)
				}
				diff := maxAbsDiff(a[i], want)
				t.Logf("p%d: max abs error %.3g vs PyTorch", i+3, diff)
				if diff > 1e-3 {
					t.Errorf("p%d: max abs error %.3g vs PyTorch > 1e-3", i+3, diff)
				}
			}
		})
	}
}

func TestBenchJSONParses(t *testing.T) {
	for _, backends := range []string{"cpu", "cpu,opencv"} {
		t.Run(backends, func(t *testing.T) {
			out := yolo7d(t, "bench", "--sizes", "64,96", "--backends", backends, "--runs", "3", "--warmup", "0", "--json")
			var rep benchReport
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatalf("bench --json output does not parse: %v\n%s", err, out)
			}
			n := 2 * len(strings.Split(backends, ","))
			if rep.Model != "random" || len(rep.Results) != n {
				t.Fatalf("report %+v, want a random model and %d results", rep, n)
			}
			for _, r := range rep.Results {
				if r.Runs != 3 || !(r.P50MS > 0 && r.P50MS <= r.P90MS && r.P90MS <= r.P99MS && r.MinMS <= r.MeanMS) {
					t.Errorf("result %+v: want 3 runs and 0 < p50 <= p90 <= p99, min <= mean", r)
				}
			}
		})
	}
}

func TestLatencyStats(t *testing.T) {
	ms := make([]float64, 100)
	for i := range ms {
		ms[i] = float64(100 - i) // 100..1
	}
	r := latencyStats(ms)
	if r.P50MS != 50 || r.P90MS != 90 || r.P99MS != 99 || r.MeanMS != 50.5 || r.MinMS != 1 {
		t.Errorf("stats %+v, want p50 50, p90 90, p99 99, mean 50.5, min 1", r)
	}
}

func TestModelCommandErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.bin")
	os.WriteFile(junk, []byte("not a model at all"), 0o644)
	model := filepath.Join(dir, "m.safetensors")
	m, err := tiny.NewRandom(tiny.Config{NC: 2, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := tiny.WriteModelFile(model, m, tiny.ModelMeta{InputSize: 64}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(model)
	b[len(b)-8] ^= 0xff
	corrupt := filepath.Join(dir, "corrupt.safetensors")
	os.WriteFile(corrupt, b, 0o644)
	badInput := filepath.Join(dir, "bad.npy")
	if err := writeNPYFile(badInput, []int{1, 3, 64, 32}, make([]float32, 3*64*32)); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.safetensors")
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"import junk", []string{"import", junk, "-o", filepath.Join(dir, "o.safetensors")}, 1, junk},
		{"import to unknown format", []string{"import", model, "-o", filepath.Join(dir, "o.txt")}, 1, "o.txt"},
		{"export corrupt", []string{"export", corrupt, "-o", filepath.Join(dir, "o.onnx")}, 1, corrupt},
		{"export missing", []string{"export", missing, "-o", filepath.Join(dir, "o.onnx")}, 1, missing},
		{"export without output", []string{"export", model}, 2, "usage: yolo7d export"},
		{"forward corrupt model", []string{"forward", "-m", corrupt, "--input", badInput, "--out-dir", dir}, 1, corrupt},
		{"forward bad input shape", []string{"forward", "-m", model, "--input", badInput, "--out-dir", dir}, 1, badInput},
		{"forward missing input", []string{"forward", "-m", model, "--input", filepath.Join(dir, "none.npy"), "--out-dir", dir}, 1, "none.npy"},
		{"forward without input", []string{"forward", "-m", model}, 2, "usage: yolo7d forward"},
		{"bench missing model", []string{"bench", "-m", missing, "--sizes", "64"}, 1, missing},
		{"bench bad size", []string{"bench", "--sizes", "100"}, 1, "multiple of 32"},
		{"bench bad backend", []string{"bench", "--backends", "tpu"}, 1, `unknown backend "tpu"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(tc.args, &out, &errOut)
			if code != tc.code || !strings.Contains(errOut.String(), tc.stderr) {
				t.Errorf("yolo7d %v: exit %d, stderr %q; want exit %d, stderr with %q", tc.args, code, errOut.String(), tc.code, tc.stderr)
			}
		})
	}
}

// TestModelInitScaledNative: `model init` with --depth, --width and --names
// writes a model that tiny's readers load back with that spec, those names
// and the input size, and the same weights as tiny.NewRandom.
func TestModelInitScaledNative(t *testing.T) {
	names := []string{"circle", "square", "triangle"}
	for _, tc := range []struct {
		name      string
		file      string
		args      []string
		spec      string
		act       tiny.Act
		nc        int
		names     []string // nil: none recorded
		depth     float64
		width     float64
		inputSize int // the native file's input_size (0: not checked)
	}{
		{name: "scaled native with names", file: "m.safetensors",
			args: []string{"--act", "relu", "--depth", "0.5", "--width", "0.5", "--names", "circle, square,triangle", "--img", "64", "--seed", "1"},
			spec: "yolov7-tiny-d0.5-w0.5", act: tiny.ActReLU, nc: 3, names: names, depth: 0.5, width: 0.5, inputSize: 64},
		{name: "default spec native", file: "m.safetensors",
			args: []string{"--act", "leaky", "--nc", "2", "--img", "96", "--seed", "4"},
			spec: "yolov7-tiny", act: tiny.ActLeaky, nc: 2, depth: 1, width: 1, inputSize: 96},
		{name: "names agreeing with nc", file: "m.safetensors",
			args: []string{"--nc", "3", "--names", "circle,square,triangle", "--width", "0.25", "--img", "32"},
			spec: "yolov7-tiny-d1-w0.25", act: tiny.ActReLU, nc: 3, names: names, depth: 1, width: 0.25, inputSize: 32},
		{name: "scaled onnx", file: "m.onnx",
			args: []string{"--depth", "0.5", "--width", "0.25", "--names", "circle,square,triangle", "--img", "64", "--seed", "2"},
			spec: "yolov7-tiny-d0.5-w0.25", act: tiny.ActReLU, nc: 3, depth: 0.5, width: 0.25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sub", tc.file)
			var out, errOut bytes.Buffer
			if err := cmdModelInit(append([]string{"-o", path}, tc.args...), &out, &errOut); err != nil {
				t.Fatalf("model init %v: %v\n%s", tc.args, err, errOut.String())
			}
			if !strings.Contains(out.String(), "wrote "+path+" ("+tc.spec+",") {
				t.Errorf("stdout %q", out.String())
			}
			var m *tiny.Model
			if strings.HasSuffix(tc.file, ".safetensors") {
				var meta tiny.ModelMeta
				var err error
				if m, meta, err = tiny.ReadModelFile(path); err != nil {
					t.Fatal(err)
				}
				if meta.InputSize != tc.inputSize {
					t.Errorf("input size %d, want %d", meta.InputSize, tc.inputSize)
				}
				if !slices.Equal(m.Names, tc.names) {
					t.Errorf("names %q, want %q", m.Names, tc.names)
				}
			} else {
				var err error
				if m, err = tiny.ImportModel(path); err != nil {
					t.Fatal(err)
				}
			}
			if m.Spec.Name != tc.spec || m.Spec.Depth != tc.depth || m.Spec.Width != tc.width || m.Act != tc.act || m.NC != tc.nc {
				t.Errorf("model %s (depth %g, width %g), %s, %d classes; want %s (%g, %g), %s, %d",
					m.Spec.Name, m.Spec.Depth, m.Spec.Width, m.Act, m.NC, tc.spec, tc.depth, tc.width, tc.act, tc.nc)
			}
			// The weights are tiny.NewRandom's for that spec and seed.
			spec, err := tiny.SpecByName(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			seed := uint64(1)
			if i := slices.Index(tc.args, "--seed"); i >= 0 {
				fmt.Sscan(tc.args[i+1], &seed)
			}
			want, err := tiny.NewRandom(tiny.Config{Act: tc.act, NC: tc.nc, Seed: seed, Spec: &spec})
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Convs) != len(want.Convs) {
				t.Fatalf("%d convs, want %d", len(m.Convs), len(want.Convs))
			}
			for _, i := range []int{0, len(m.Convs) / 2, len(m.Convs) - 1} {
				if d := maxAbsDiff(m.Convs[i].Weight, want.Convs[i].Weight); d > 1e-6 {
					t.Errorf("conv %d weights differ from tiny.NewRandom's by %g", i, d)
				}
			}
		})
	}
}

func TestModelInitErrors(t *testing.T) {
	dir := t.TempDir()
	st := filepath.Join(dir, "m.safetensors")
	for _, tc := range []struct {
		name string
		args []string
		want string // substring of the error or stderr
	}{
		{"no output", []string{"--nc", "3"}, "-o FILE is required"},
		{"other extension", []string{"-o", filepath.Join(dir, "m.pt")}, "want a .safetensors (native) or .onnx file"},
		{"empty name", []string{"-o", st, "--names", "a,,b"}, "--names: name 2 is empty"},
		{"duplicate name", []string{"-o", st, "--names", "a,b,a"}, `"a" given twice`},
		{"nc disagrees with names", []string{"-o", st, "--nc", "4", "--names", "a,b"}, "--nc 4 but --names gives 2 names"},
		{"zero depth", []string{"-o", st, "--depth", "0"}, "--depth 0: want a factor in (0, 8]"},
		{"huge width", []string{"-o", st, "--width", "9"}, "--width 9: want a factor in (0, 8]"},
		{"bad activation", []string{"-o", st, "--act", "silu"}, `--act "silu"`},
		{"bad size", []string{"-o", st, "--img", "100"}, "multiple of 32"},
		{"not a number", []string{"-o", st, "--depth", "half"}, `invalid value "half" for flag -depth`},
		{"stray argument", []string{"-o", st, "extra"}, "usage: yolo7d model init"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := cmdModelInit(tc.args, &out, &errOut)
			if err == nil {
				t.Fatal("no error")
			}
			if msg := err.Error() + "\n" + errOut.String(); !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, stderr %q: want %q", err, errOut.String(), tc.want)
			}
		})
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("files written despite the errors: %v", ents)
	}
}
