package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/yolo7d/yolo7d/infer"
	"github.com/yolo7d/yolo7d/tiny"
)

// Model file commands: init (a seeded random model, native or ONNX),
// import (official .pt/ONNX -> native or ONNX), export (any model -> deploy
// ONNX) and forward (raw head outputs as .npy).

// modelInitUsage is the usage line of `yolo7d model init`.
const modelInitUsage = "usage: yolo7d model init -o FILE.safetensors|FILE.onnx [--act relu|leaky] [--nc N | --names a,b,c] [--depth X] [--width X] [--img N] [--seed N]\n"

// modelInitOptions sets the model `yolo7d model init` writes.
type modelInitOptions struct {
	out          string   // .safetensors (native) or .onnx
	act          string   // relu or leaky
	nc           int      // number of classes (len(names) when names is set)
	names        []string // class names, or nil
	img          int      // input size
	seed         uint64   // weights seed
	depth, width float64  // tiny.YOLOv7TinyScaled factors (1, 1: yolov7-tiny)
}

// cmdModelInit runs `yolo7d model init` (args are those after "init"):
// a seeded random YOLOv7-tiny, optionally scaled (--depth, --width), with
// --nc classes or the classes named by --names, written as a native
// .safetensors model (with names, input size and spec) or as an ONNX
// export, by -o's extension.
func cmdModelInit(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("model init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o modelInitOptions
	fs.StringVar(&o.out, "o", "", "output `file`: .safetensors (native, with names and input size) or .onnx")
	fs.StringVar(&o.act, "act", "relu", "activation: relu or leaky")
	fs.IntVar(&o.nc, "nc", 80, "number of classes")
	names := fs.String("names", "", "comma-separated class names (sets the number of classes)")
	fs.IntVar(&o.img, "img", 640, "input size (multiple of 32)")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed")
	fs.Float64Var(&o.depth, "depth", 1, "depth factor of the scaled yolov7-tiny (ELAN depth round(2*X)), in (0, 8]")
	fs.Float64Var(&o.width, "width", 1, "width factor of the scaled yolov7-tiny (channels x X), in (0, 8]")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fmt.Fprint(stderr, modelInitUsage)
		return flag.ErrHelp
	}
	if o.out == "" {
		return errors.New("model init: -o FILE is required")
	}
	o.act = strings.ToLower(o.act)
	if *names != "" {
		ns, err := parseClassNames(*names)
		if err != nil {
			return fmt.Errorf("model init: --names: %w", err)
		}
		ncSet := false
		fs.Visit(func(f *flag.Flag) { ncSet = ncSet || f.Name == "nc" })
		if ncSet && o.nc != len(ns) {
			return fmt.Errorf("model init: --nc %d but --names gives %d names", o.nc, len(ns))
		}
		o.names, o.nc = ns, len(ns)
	}
	spec, err := writeInitModel(o)
	if err != nil {
		return fmt.Errorf("model init: %w", err)
	}
	classes := fmt.Sprintf("%d classes", o.nc)
	if o.names != nil {
		classes += " (" + strings.Join(o.names, ", ") + ")"
	}
	fmt.Fprintf(stdout, "wrote %s (%s, %s, %s, %dx%d, seed %d, random weights)\n", o.out, spec, o.act, classes, o.img, o.img, o.seed)
	return nil
}

// parseClassNames splits a comma-separated list of class names; names are
// trimmed, and must be non-empty and distinct.
func parseClassNames(s string) ([]string, error) {
	var names []string
	seen := map[string]bool{}
	for i, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		switch {
		case n == "":
			return nil, fmt.Errorf("name %d is empty", i+1)
		case seen[n]:
			return nil, fmt.Errorf("%q given twice", n)
		}
		seen[n] = true
		names = append(names, n)
	}
	if len(names) > 10000 {
		return nil, fmt.Errorf("%d names, want at most 10000", len(names))
	}
	return names, nil
}

// writeInitModel writes the random model o describes and returns its spec
// name. A .safetensors file records the names, the input size and the
// spec (its provenance names the seed, and no time, so the same options
// write the same bytes); an .onnx file is the deploy export for input
// size o.img.
func writeInitModel(o modelInitOptions) (string, error) {
	ext := strings.ToLower(filepath.Ext(o.out))
	if ext != ".safetensors" && ext != ".onnx" {
		return "", fmt.Errorf("output %s: want a .safetensors (native) or .onnx file", o.out)
	}
	if o.act != "relu" && o.act != "leaky" {
		return "", fmt.Errorf("--act %q: want relu or leaky", o.act)
	}
	if o.nc < 1 || o.nc > 10000 {
		return "", fmt.Errorf("--nc %d: want 1..10000", o.nc)
	}
	if err := checkImg(o.img); err != nil {
		return "", err
	}
	if !(o.depth > 0 && o.depth <= 8) {
		return "", fmt.Errorf("--depth %g: want a factor in (0, 8]", o.depth)
	}
	if !(o.width > 0 && o.width <= 8) {
		return "", fmt.Errorf("--width %g: want a factor in (0, 8]", o.width)
	}
	cfg := tiny.Config{Act: tiny.Act(o.act), NC: o.nc, Names: o.names, Seed: o.seed}
	if o.depth != 1 || o.width != 1 {
		spec, err := tiny.YOLOv7TinyScaled(o.depth, o.width)
		if err != nil {
			return "", err
		}
		if _, err := tiny.SpecByName(spec.Name); err != nil {
			return "", fmt.Errorf("--depth %g --width %g: %w", o.depth, o.width, err)
		}
		cfg.Spec = &spec
	}
	m, err := tiny.NewRandom(cfg)
	if err != nil {
		return "", err
	}
	if err := mkdirFor(o.out); err != nil {
		return "", err
	}
	if ext == ".onnx" {
		return m.Spec.Name, tiny.WriteONNXFile(o.out, m, o.img)
	}
	meta := tiny.ModelMeta{
		InputSize: o.img,
		Provenance: tiny.Provenance{
			Source: fmt.Sprintf("random weights (yolo7d model init --seed %d)", o.seed),
			Tool:   "yolo7d " + version,
		},
	}
	return m.Spec.Name, tiny.WriteModelFile(o.out, m, meta)
}

// checkImg checks an --img value.
func checkImg(img int) error {
	if img < 32 || img > 1280 || img%32 != 0 {
		return fmt.Errorf("--img %d: want a multiple of 32 in 32..1280", img)
	}
	return nil
}

// mkdirFor creates the directory that will hold path.
func mkdirFor(path string) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// importModelFile reads an official checkpoint (.pt), ONNX export (raw or
// --grid, fused or not) or native model, folds it into the deploy form and
// writes it to dst: the native format when dst ends in .safetensors (with
// input size img and the source's provenance), a raw-output ONNX model for
// input size img when it ends in .onnx.
func importModelFile(src, dst string, img int, tool string) error {
	ext := strings.ToLower(filepath.Ext(dst))
	switch ext {
	case ".onnx":
		return importModel(src, dst, img) // detect.go
	case ".safetensors":
	default:
		return fmt.Errorf("output %s: want a .safetensors (native) or .onnx file", dst)
	}
	if err := checkImg(img); err != nil {
		return err
	}
	m, err := tiny.ImportModel(src)
	if err != nil {
		return err
	}
	if err := mkdirFor(dst); err != nil {
		return err
	}
	sum, err := infer.FileSHA256(src)
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(src)
	if err != nil {
		abs = src
	}
	meta := tiny.ModelMeta{
		InputSize: img,
		Provenance: tiny.Provenance{
			Source:       abs,
			SourceSHA256: sum,
			Tool:         tool,
			Time:         time.Now().UTC().Format(time.RFC3339),
		},
	}
	return tiny.WriteModelFile(dst, m, meta)
}

// loadModel reads any model file (native, ONNX, .pt) and the input size it
// declares (0 when none).
func loadModel(path string) (*tiny.Model, int, error) {
	native, err := tiny.IsSafetensorsFile(path)
	if err != nil {
		return nil, 0, err
	}
	if native {
		m, meta, err := tiny.ReadModelFile(path)
		return m, meta.InputSize, err
	}
	m, err := tiny.ImportModel(path)
	if err != nil {
		return nil, 0, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	if om, err := tiny.ParseONNXStructure(b); err == nil && len(om.Inputs) > 0 {
		if d := om.Inputs[0].Dims; len(d) == 4 && d[2] > 0 && d[2] == d[3] {
			return m, int(d[2]), nil
		}
	}
	return m, 0, nil
}

// exportModel writes the model at src as a deploy ONNX file for input size
// img (0: the size src declares, else 640).
func exportModel(src, dst string, img int) error {
	if !strings.EqualFold(filepath.Ext(dst), ".onnx") {
		return fmt.Errorf("output %s: want an .onnx file", dst)
	}
	m, declared, err := loadModel(src)
	if err != nil {
		return err
	}
	if img == 0 {
		img = declared
	}
	if img == 0 {
		img = 640
	}
	if err := checkImg(img); err != nil {
		return err
	}
	if err := mkdirFor(dst); err != nil {
		return err
	}
	return tiny.WriteONNXFile(dst, m, img)
}

// forwardNPY runs the model at modelPath on the CPU for the 1x3xSxS input
// in inputPath and writes the raw head outputs (logits, 1x3xHxWx(5+nc)) as
// p3.npy, p4.npy, p5.npy in outDir. It returns the files written.
func forwardNPY(modelPath, inputPath, outDir string) ([]string, error) {
	m, _, err := loadModel(modelPath)
	if err != nil {
		return nil, err
	}
	shape, data, err := tiny.ReadNPYFile(inputPath)
	if err != nil {
		return nil, err
	}
	if len(shape) != 4 || shape[0] != 1 || shape[1] != 3 || shape[2] != shape[3] {
		return nil, fmt.Errorf("input %s: shape %v, want [1 3 S S]", inputPath, shape)
	}
	if err := checkImg(shape[2]); err != nil {
		return nil, fmt.Errorf("input %s: side %d: %w", inputPath, shape[2], err)
	}
	plan, err := m.NewPlan(tiny.NewCPU(0), shape[2])
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", modelPath, err)
	}
	outs, err := plan.Forward(data)
	if err != nil {
		return nil, fmt.Errorf("forward %s on %s: %w", modelPath, inputPath, err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	var written []string
	for i, s := range plan.OutputShapes() {
		path := filepath.Join(outDir, fmt.Sprintf("p%d.npy", i+3))
		if err := writeNPYFile(path, slices.Clone(s), outs[i]); err != nil {
			return written, err
		}
		written = append(written, path)
	}
	return written, nil
}

// writeNPYFile writes one float32 array as .npy.
func writeNPYFile(path string, shape []int, data []float32) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := tiny.WriteNPY(f, shape, data); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
