package tiny

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
)

// ONNX header values of the export; they mirror what the official export.py
// (torch 1.13, opset 12) writes.
const (
	ONNXOpset     = 12
	ONNXIRVersion = 7
	ONNXInputName = "images"
)

// ONNXOutputNames returns the names of the export's outputs, one per level:
// "output" for the first (as export.py names it), then "p<log2 stride>"
// ("p4", "p5"). Each output is 1 x NA x H x W x (5+nc) raw logits.
func ONNXOutputNames(s *Spec) []string {
	names := make([]string, len(s.Strides))
	for i, st := range s.Strides {
		if i == 0 {
			names[i] = "output"
		} else {
			names[i] = "p" + strconv.Itoa(bits.Len(uint(st))-1)
		}
	}
	return names
}

// ExportONNX writes m as an ONNX model with a fixed 1x3xSxS float32 input
// "images" (S = inputSize, a multiple of the largest stride), in the shape of
// the official export.py raw export of the fused model: opset 12, IR version
// 7, Conv with weight and bias initializers, Relu or LeakyRelu(0.1), MaxPool,
// Concat on axis 1, Resize (nearest, asymmetric, floor) with Constant roi and
// scales, and per level Reshape(1,NA,5+nc,H,W) + Transpose(0,1,3,4,2) to
// 1xNAxHxWx(5+nc). No Identity nodes (OpenCV 4.6 rejects those fed by
// initializers). Metadata props carry act, nc, names, strides, anchors.
func ExportONNX(w io.Writer, m *Model, inputSize int) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("tiny: export onnx: %w", err)
	}
	maxStride := 1
	for _, s := range m.Spec.Strides {
		maxStride = max(maxStride, s)
	}
	if inputSize <= 0 || inputSize%maxStride != 0 {
		return fmt.Errorf("tiny: export onnx: input size %d is not a positive multiple of %d", inputSize, maxStride)
	}
	graph, err := onnxGraph(m, inputSize)
	if err != nil {
		return fmt.Errorf("tiny: export onnx: %w", err)
	}
	glen := 0
	for _, f := range graph {
		glen += len(f)
	}
	var head pb
	head = head.int64(fModelIRVersion, ONNXIRVersion)
	head = head.str(fModelProducerName, "yolo7d")
	head = head.str(fModelProducerVersion, "tiny")
	head = protowire.AppendTag(head, fModelGraph, protowire.BytesType)
	head = protowire.AppendVarint(head, uint64(glen))

	var tail pb
	tail = tail.msg(fModelOpsetImport, pb(nil).str(fOpsetDomain, "").int64(fOpsetVersion, ONNXOpset))
	meta, err := onnxMetadata(m, inputSize)
	if err != nil {
		return fmt.Errorf("tiny: export onnx: %w", err)
	}
	for _, kv := range meta {
		tail = tail.msg(fModelMetadataProps, pb(nil).str(1, kv[0]).str(2, kv[1]))
	}

	bw := bufio.NewWriterSize(w, 1<<20)
	bw.Write(head)
	for _, f := range graph {
		bw.Write(f)
	}
	bw.Write(tail)
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("tiny: export onnx: %w", err)
	}
	return nil
}

// onnxGraph encodes the GraphProto's fields (each already tagged): nodes,
// name, initializers, input, outputs.
func onnxGraph(m *Model, size int) ([]pb, error) {
	shapes, err := m.Spec.Resolve(3, m.NC)
	if err != nil {
		return nil, err
	}
	var nodes, inits []pb
	addNode := func(n pb) { nodes = append(nodes, pb(nil).msg(fGraphNode, n)) }
	addInit := func(name string, dims []int64, data []float32) {
		inits = append(inits, pb(nil).msg(fGraphInitializer, onnxFloatTensor(name, dims, data)))
	}
	// conv emits Conv (+ activation when act) and returns its output name.
	conv := func(prefix, in string, c *Conv, act bool) string {
		wn, bn := c.ConvShape.Name+".weight", c.ConvShape.Name+".bias"
		addInit(wn, []int64{int64(c.Out), int64(c.In), int64(c.K), int64(c.K)}, c.Weight)
		addInit(bn, []int64{int64(c.Out)}, c.Bias)
		out := prefix + "/Conv_output_0"
		k, p, s := int64(c.K), int64(c.Pad), int64(c.S)
		addNode(onnxNode("Conv", prefix+"/Conv", []string{in, wn, bn}, []string{out},
			attrInts("dilations", 1, 1), attrInt("group", 1), attrInts("kernel_shape", k, k),
			attrInts("pads", p, p, p, p), attrInts("strides", s, s)))
		return out
	}

	convAt := make(map[int]*Conv)
	var detects []*Conv
	for i := range m.Convs {
		c := &m.Convs[i]
		if c.Level >= 0 {
			detects = append(detects, c)
		} else {
			convAt[c.Layer] = c
		}
	}
	outNames := ONNXOutputNames(&m.Spec)
	na, no := int64(m.Spec.NumAnchors()), int64(5+m.NC)
	var outputs []pb

	names := make([]string, len(shapes)) // output tensor of each layer
	for i, l := range m.Spec.Layers {
		ins := make([]string, len(shapes[i].From))
		for k, f := range shapes[i].From {
			if f < 0 {
				ins[k] = ONNXInputName
			} else {
				ins[k] = names[f]
			}
		}
		pre := "/model." + strconv.Itoa(i)
		switch l.Kind {
		case KindConv:
			c := convAt[i]
			if c == nil {
				return nil, fmt.Errorf("layer %d: no conv parameters", i)
			}
			x := conv(pre+"/conv", ins[0], c, true)
			switch m.Act {
			case ActReLU:
				names[i] = pre + "/act/Relu_output_0"
				addNode(onnxNode("Relu", pre+"/act/Relu", []string{x}, []string{names[i]}))
			case ActLeaky:
				names[i] = pre + "/act/LeakyRelu_output_0"
				addNode(onnxNode("LeakyRelu", pre+"/act/LeakyRelu", []string{x}, []string{names[i]},
					attrFloat("alpha", LeakySlope)))
			}
		case KindMaxPool:
			names[i] = pre + "/m/MaxPool_output_0"
			k, p, s := int64(l.K), int64(l.Pad), int64(l.S)
			addNode(onnxNode("MaxPool", pre+"/m/MaxPool", ins, []string{names[i]},
				attrInt("ceil_mode", 0), attrInts("kernel_shape", k, k),
				attrInts("pads", p, p, p, p), attrInts("strides", s, s)))
		case KindConcat:
			names[i] = pre + "/Concat_output_0"
			addNode(onnxNode("Concat", pre+"/Concat", ins, []string{names[i]}, attrInt("axis", 1)))
		case KindUpsample:
			scales, roi := pre+"/Constant_output_0", pre+"/Constant_1_output_0"
			addNode(onnxNode("Constant", pre+"/Constant", nil, []string{scales},
				attrTensor("value", onnxFloatTensor("", []int64{4}, []float32{1, 1, 2, 2}))))
			addNode(onnxNode("Constant", pre+"/Constant_1", nil, []string{roi},
				attrTensor("value", onnxFloatTensor("", []int64{0}, nil))))
			names[i] = pre + "/Resize_output_0"
			addNode(onnxNode("Resize", pre+"/Resize", []string{ins[0], roi, scales}, []string{names[i]},
				attrString("coordinate_transformation_mode", "asymmetric"), attrFloat("cubic_coeff_a", -0.75),
				attrString("mode", "nearest"), attrString("nearest_mode", "floor")))
		case KindDetect:
			if len(detects) != len(ins) {
				return nil, fmt.Errorf("detect: %d convs for %d levels", len(detects), len(ins))
			}
			for k, c := range detects {
				sfx := ""
				if k > 0 {
					sfx = "_" + strconv.Itoa(k)
				}
				x := conv(pre+"/m."+strconv.Itoa(k), ins[k], c, false)
				hw := int64(size / m.Spec.Strides[k])
				shape := pre + "/Constant" + sfx + "_output_0"
				addNode(onnxNode("Constant", pre+"/Constant"+sfx, nil, []string{shape},
					attrTensor("value", onnxInt64Tensor("", []int64{5}, []int64{1, na, no, hw, hw}))))
				r := pre + "/Reshape" + sfx + "_output_0"
				addNode(onnxNode("Reshape", pre+"/Reshape"+sfx, []string{x, shape}, []string{r}))
				addNode(onnxNode("Transpose", pre+"/Transpose"+sfx, []string{r}, []string{outNames[k]},
					attrInts("perm", 0, 1, 3, 4, 2)))
				outputs = append(outputs, pb(nil).msg(fGraphOutput,
					onnxValueInfo(outNames[k], DTypeFloat, []int64{1, na, hw, hw, no})))
			}
		default:
			return nil, fmt.Errorf("layer %d: cannot export %v", i, l.Kind)
		}
	}

	g := nodes
	g = append(g, pb(nil).str(fGraphName, "yolo7d"))
	g = append(g, inits...)
	s := int64(size)
	g = append(g, pb(nil).msg(fGraphInput, onnxValueInfo(ONNXInputName, DTypeFloat, []int64{1, 3, s, s})))
	g = append(g, outputs...)
	return g, nil
}

// onnxMetadata returns the model's metadata_props as key/value pairs.
func onnxMetadata(m *Model, size int) ([][2]string, error) {
	js := func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	}
	names, err := js(m.Names)
	if err != nil {
		return nil, err
	}
	strides, err := js(m.Spec.Strides)
	if err != nil {
		return nil, err
	}
	anchors, err := js(m.Spec.Anchors)
	if err != nil {
		return nil, err
	}
	return [][2]string{
		{"spec", m.Spec.Name},
		{"act", string(m.Act)},
		{"nc", strconv.Itoa(m.NC)},
		{"names", names},
		{"input_size", strconv.Itoa(size)},
		{"strides", strides},
		{"anchors", anchors},
		{"form", "deploy"},
	}, nil
}

// WriteONNXFile exports m to path atomically: a temporary file in the same
// directory is written, fsynced and renamed over path, so a reader never
// sees a partial model.
func WriteONNXFile(path string, m *Model, inputSize int) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("tiny: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = ExportONNX(f, m, inputSize); err != nil {
		return fmt.Errorf("tiny: write %s: %w", path, err)
	}
	if err = f.Chmod(0o644); err != nil {
		return fmt.Errorf("tiny: write %s: %w", path, err)
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("tiny: write %s: %w", path, err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("tiny: write %s: %w", path, err)
	}
	if err = os.Rename(tmp, path); err != nil {
		return fmt.Errorf("tiny: write %s: %w", path, err)
	}
	if d, derr := os.Open(dir); derr == nil { // persist the rename; best effort
		d.Sync()
		d.Close()
	}
	return nil
}

// WriteRandomONNX writes a NewRandom(cfg) model as ONNX at path (atomically,
// see WriteONNXFile) for a square input of inputSize pixels. It backs
// `yolo7d model init`.
func WriteRandomONNX(path string, cfg Config, inputSize int) error {
	m, err := NewRandom(cfg)
	if err != nil {
		return err
	}
	return WriteONNXFile(path, m, inputSize)
}
