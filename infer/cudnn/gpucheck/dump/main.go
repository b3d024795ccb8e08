// Command dump writes a deploy-form YOLOv7-Tiny model as plain files that
// another framework can rebuild layer by layer: the device check's PyTorch
// baseline (../torch_bench.py) reads them to run the very network that
// tiny's Plan runs, with torch.nn.functional ops.
//
// Usage:
//
//	dump -model yolov7-tiny-relu-raw.onnx -o DIR
//
// The model is anything tiny.ImportModel reads (an official raw or --grid
// ONNX export, fused or not; an official .pt checkpoint; a yolo7d
// .safetensors model): BatchNorm is folded into the convs, and for the
// detect convs ImplicitA/ImplicitM too, exactly as tiny does it.
//
// DIR receives layers.json and one .npy per weight and bias (little-endian
// float32, C order). layers.json is one object:
//
//	{
//	  "format": 1,
//	  "spec": "yolov7-tiny",        // tiny.Spec name
//	  "act": "relu",                // activation of every Conv layer: "relu" or "leaky"
//	  "leaky_slope": 0.1,           // negative slope of "leaky"
//	  "nc": 80, "na": 3, "no": 85,  // classes, anchors per level, outputs per anchor (5+nc)
//	  "strides": [8, 16, 32],
//	  "anchors": [[[10, 13], ...], ...],  // per level, na (w, h) pairs in input pixels
//	  "layers": [ ... ],            // in execution order; layer i is layers[i]
//	  "params": {"model.0.conv.weight.npy": [32, 3, 3, 3], ...}  // every file written, with its shape
//	}
//
// Every layer has "index" (its position), "kind" and "from": the absolute
// indices of its inputs, -1 meaning the network input (1 x 3 x S x S,
// NCHW, RGB in [0, 1]). By kind:
//
//	"Conv":     "conv": {"out", "in", "k", "s", "pad", "act", "weight", "bias"}:
//	            y = act(conv2d(x, weight, bias, stride s, zero padding pad on every side)),
//	            weight out x in x k x k, bias out; act "relu", "leaky" or "none".
//	"MaxPool":  "k", "s", "pad": max_pool2d(x, k, s, padding pad); padded cells never win
//	            (PyTorch pads with -inf).
//	"Concat":   channel concatenation of the inputs in "from" order.
//	"Upsample": nearest-neighbour upsampling by 2 (interpolate scale_factor 2, mode "nearest").
//	"IDetect":  "na", "no" and "convs": one conv object per input level (act "none");
//	            level l's raw output is conv_l(from[l]) (1 x na*no x H x W) viewed as
//	            (1, na, no, H, W) and permuted (0, 1, 3, 4, 2): 1 x na x H x W x no,
//	            pre-sigmoid logits, as the official raw ONNX export.
//
// Weight files are named after the state_dict prefix of the conv:
// "model.7.conv.weight.npy", "model.7.conv.bias.npy", "model.77.m.0.weight.npy".
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/yolo7d/yolo7d/tiny"
)

// convJSON is one deploy-form convolution.
type convJSON struct {
	Out    int    `json:"out"`
	In     int    `json:"in"`
	K      int    `json:"k"`
	S      int    `json:"s"`
	Pad    int    `json:"pad"`
	Act    string `json:"act"`
	Weight string `json:"weight"`
	Bias   string `json:"bias"`
}

// layerJSON is one layer of the spec.
type layerJSON struct {
	Index int         `json:"index"`
	Kind  string      `json:"kind"`
	From  []int       `json:"from"`
	Conv  *convJSON   `json:"conv,omitempty"`
	K     int         `json:"k,omitempty"`
	S     int         `json:"s,omitempty"`
	Pad   *int        `json:"pad,omitempty"`
	NA    int         `json:"na,omitempty"`
	NO    int         `json:"no,omitempty"`
	Convs []*convJSON `json:"convs,omitempty"`
}

// modelJSON is layers.json.
type modelJSON struct {
	Format     int              `json:"format"`
	Spec       string           `json:"spec"`
	Act        string           `json:"act"`
	LeakySlope float64          `json:"leaky_slope"`
	NC         int              `json:"nc"`
	NA         int              `json:"na"`
	NO         int              `json:"no"`
	Strides    []int            `json:"strides"`
	Anchors    [][][2]float32   `json:"anchors"`
	Layers     []layerJSON      `json:"layers"`
	Params     map[string][]int `json:"params"` // file name -> shape
}

func main() {
	model := flag.String("model", "", "model file (ONNX, .pt or .safetensors)")
	out := flag.String("o", "", "output directory (created)")
	flag.Parse()
	if *model == "" || *out == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: dump -model FILE -o DIR")
		os.Exit(2)
	}
	if err := run(*model, *out); err != nil {
		fmt.Fprintln(os.Stderr, "dump:", err)
		os.Exit(1)
	}
}

func run(path, dir string) error {
	m, err := tiny.ImportModel(path)
	if err != nil {
		return err
	}
	if err := m.Validate(); err != nil {
		return err
	}
	doc, files, err := describe(m)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, c := range files {
		if err := writeNPY(filepath.Join(dir, name+".weight.npy"), []int{c.Out, c.In, c.K, c.K}, c.Weight); err != nil {
			return err
		}
		if err := writeNPY(filepath.Join(dir, name+".bias.npy"), []int{c.Out}, c.Bias); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(doc, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "layers.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Printf("dump: %s: %s, act %s, nc %d, %d layers, %d convs -> %s\n",
		path, doc.Spec, doc.Act, doc.NC, len(doc.Layers), len(files), dir)
	return nil
}

// describe builds layers.json for m and returns the convs to write, keyed
// by their state_dict prefix.
func describe(m *tiny.Model) (*modelJSON, map[string]*tiny.Conv, error) {
	spec := &m.Spec
	shapes, err := spec.Resolve(3, m.NC)
	if err != nil {
		return nil, nil, err
	}
	na := spec.NumAnchors()
	doc := &modelJSON{
		Format: 1, Spec: spec.Name, Act: string(m.Act), LeakySlope: tiny.LeakySlope,
		NC: m.NC, NA: na, NO: 5 + m.NC, Strides: spec.Strides, Anchors: spec.Anchors,
		Params: map[string][]int{},
	}
	// The convs of each layer, in Model.Convs (state_dict) order.
	byLayer := map[int][]*tiny.Conv{}
	for i := range m.Convs {
		c := &m.Convs[i]
		byLayer[c.Layer] = append(byLayer[c.Layer], c)
	}
	files := map[string]*tiny.Conv{}
	convOf := func(c *tiny.Conv, act string) *convJSON {
		files[c.Name] = c
		w, b := c.Name+".weight.npy", c.Name+".bias.npy"
		doc.Params[w] = []int{c.Out, c.In, c.K, c.K}
		doc.Params[b] = []int{c.Out}
		return &convJSON{Out: c.Out, In: c.In, K: c.K, S: c.S, Pad: c.Pad, Act: act, Weight: w, Bias: b}
	}
	for i, l := range spec.Layers {
		lj := layerJSON{Index: i, Kind: l.Kind.String(), From: append([]int{}, shapes[i].From...)}
		convs := byLayer[i]
		switch l.Kind {
		case tiny.KindConv:
			if len(convs) != 1 {
				return nil, nil, fmt.Errorf("layer %d: %d convs", i, len(convs))
			}
			lj.Conv = convOf(convs[0], string(m.Act))
		case tiny.KindMaxPool:
			pad := l.Pad
			lj.K, lj.S, lj.Pad = l.K, l.S, &pad
		case tiny.KindConcat, tiny.KindUpsample:
		case tiny.KindDetect:
			if len(convs) != len(lj.From) {
				return nil, nil, fmt.Errorf("detect layer %d: %d convs for %d levels", i, len(convs), len(lj.From))
			}
			lj.NA, lj.NO = na, 5+m.NC
			for k, c := range convs {
				if c.Level != k {
					return nil, nil, fmt.Errorf("detect layer %d: conv %s is level %d, want %d", i, c.Name, c.Level, k)
				}
				lj.Convs = append(lj.Convs, convOf(c, "none"))
			}
		default:
			return nil, nil, fmt.Errorf("layer %d: unknown kind %v", i, l.Kind)
		}
		doc.Layers = append(doc.Layers, lj)
	}
	if len(files) != len(m.Convs) {
		return nil, nil, fmt.Errorf("described %d of %d convs", len(files), len(m.Convs))
	}
	return doc, files, nil
}

func writeNPY(path string, shape []int, data []float32) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := tiny.WriteNPY(f, shape, data); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	return f.Close()
}
