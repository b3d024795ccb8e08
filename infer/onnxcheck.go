package infer

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/yolo7d/yolo7d/tiny"
)

// onnxFloat is TensorProto.DataType FLOAT.
const onnxFloat = tiny.DTypeFloat

// maxONNXSize is the largest model file the checker reads (the protobuf
// limit).
const maxONNXSize = tiny.MaxONNXBytes

// ONNXInfo summarises a model that passed CheckONNXForOpenCV.
type ONNXInfo struct {
	IRVersion    int64
	Opset        int64
	Producer     string
	Input        string       // name of the image input
	InputSize    int          // S of the 1x3xSxS input
	Outputs      []ONNXOutput // raw head outputs, p3, p4, p5
	NumClasses   int
	Ops          map[string]int // op type -> count
	Nodes        int
	Initializers int
}

// ONNXOutput is one raw head output of the model.
type ONNXOutput struct {
	Name   string
	Shape  []int // 1x3xHxWx(5+nc)
	Stride int
}

// opencvOps are the ops OpenCV 4.6's ONNX importer handles for plain
// (raw-export) YOLOv7 models, fused or not.
var opencvOps = map[string]bool{
	"Conv": true, "Relu": true, "LeakyRelu": true, "Sigmoid": true, "MaxPool": true,
	"Concat": true, "Resize": true, "Upsample": true, "Add": true, "Mul": true,
	"Reshape": true, "Transpose": true, "Constant": true, "Identity": true,
	"BatchNormalization": true,
}

// gridOps are the ops of the decode subgraph that export.py --grid adds
// (ScatterND and its helpers in the unfused export, Split/Pow in the fused
// one); OpenCV 4.6 aborts on them.
var gridOps = map[string]bool{
	"Expand": true, "ScatterND": true, "ConstantOfShape": true, "Equal": true,
	"Where": true, "Split": true, "Pow": true, "Slice": true, "Shape": true,
	"Unsqueeze": true, "Sub": true, "Gather": true,
}

// CheckONNXForOpenCV reads an ONNX file and rejects, with an error naming
// the node or value, anything OpenCV 4.6's importer would abort on for
// YOLOv7 models (unsupported ops, Identity of an initializer, --grid decode
// subgraphs), and anything that is not a raw YOLOv7 export: one float32
// 1x3xSxS input with S a multiple of 32 and three 1x3xHxWx(5+nc) outputs.
func CheckONNXForOpenCV(path string) (ONNXInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return ONNXInfo{}, fmt.Errorf("onnx check: %w", err)
	}
	if st.Size() > maxONNXSize {
		return ONNXInfo{}, fmt.Errorf("onnx check %s: %d bytes is over the 2 GiB protobuf limit", path, st.Size())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ONNXInfo{}, fmt.Errorf("onnx check: %w", err)
	}
	info, err := CheckONNX(b)
	if err != nil {
		return ONNXInfo{}, fmt.Errorf("onnx check %s: %w", path, err)
	}
	return info, nil
}

// CheckONNX is CheckONNXForOpenCV on the bytes of a model. The model is
// parsed with tiny.ParseONNXStructure: tensor data is not decoded.
func CheckONNX(b []byte) (ONNXInfo, error) {
	g, err := tiny.ParseONNXStructure(b)
	if err != nil {
		return ONNXInfo{}, err
	}
	opset, haveOpset := g.DefaultOpset()
	info := ONNXInfo{
		IRVersion: g.IRVersion, Opset: opset, Producer: g.ProducerName,
		Ops: map[string]int{}, Nodes: len(g.Nodes), Initializers: len(g.Initializers),
	}
	if !haveOpset {
		info.Opset = -1
	}
	if len(g.Nodes) == 0 {
		return info, fmt.Errorf("graph has no nodes")
	}
	if !haveOpset {
		return info, fmt.Errorf("no opset_import for the default domain")
	}
	defined := map[string]bool{"": true}
	inits := map[string]bool{}
	for _, t := range g.Initializers {
		inits[t.Name] = true
		defined[t.Name] = true
	}
	for _, v := range g.Inputs {
		defined[v.Name] = true
	}
	// Grid decode first: it explains every other failure of such a file.
	for i, n := range g.Nodes {
		if gridOps[n.OpType] {
			return info, fmt.Errorf("node %s: op %s belongs to the decode subgraph of a --grid export, which OpenCV 4.6 cannot import; export without --grid (raw outputs)", nodeName(i, n), n.OpType)
		}
	}
	for i, n := range g.Nodes {
		info.Ops[n.OpType]++
		if n.Domain != "" && n.Domain != "ai.onnx" {
			return info, fmt.Errorf("node %s: op %s of custom domain %q is not supported by OpenCV", nodeName(i, n), n.OpType, n.Domain)
		}
		if !opencvOps[n.OpType] {
			return info, fmt.Errorf("node %s: op %q is not supported by this model family under OpenCV 4.6", nodeName(i, n), n.OpType)
		}
		if n.OpType == "Identity" && len(n.Inputs) > 0 && inits[n.Inputs[0]] {
			return info, fmt.Errorf("node %s: Identity of initializer %q aborts OpenCV 4.6's importer; re-export (e.g. with onnx-simplifier) so that it is folded", nodeName(i, n), n.Inputs[0])
		}
		for _, in := range n.Inputs {
			if !defined[in] {
				return info, fmt.Errorf("node %s: input %q is not produced by an earlier node, an initializer or a graph input", nodeName(i, n), in)
			}
		}
		for _, out := range n.Outputs {
			defined[out] = true
		}
	}
	var inputs []tiny.ONNXValueInfo
	for _, v := range g.Inputs {
		if !inits[v.Name] {
			inputs = append(inputs, v)
		}
	}
	if len(inputs) != 1 {
		return info, fmt.Errorf("want one image input, the graph has %d", len(inputs))
	}
	in := inputs[0]
	if in.ElemType != onnxFloat {
		return info, fmt.Errorf("input %q has element type %d, want float32 (1)", in.Name, in.ElemType)
	}
	d := in.Dims
	if len(d) != 4 || d[0] != 1 || d[1] != 3 || d[2] != d[3] || d[2] <= 0 || d[2]%32 != 0 || d[2] > 1<<14 {
		return info, fmt.Errorf("input %q has shape %s, want a fixed 1x3xSxS with S a multiple of 32", in.Name, dimsString(d))
	}
	info.Input = in.Name
	info.InputSize = int(d[2])
	if err := checkONNXOutputs(g, &info); err != nil {
		return info, err
	}
	return info, nil
}

// checkONNXOutputs checks for three raw head outputs 1x3xHxWx(5+nc) with
// H = S/8, S/16, S/32 and fills info.Outputs in level order.
func checkONNXOutputs(g *tiny.ONNXModel, info *ONNXInfo) error {
	s := info.InputSize
	for _, o := range g.Outputs {
		if len(o.Dims) == 3 {
			return fmt.Errorf("output %q has shape %s: a decoded 1xNx(5+nc) output means a --grid export; export without --grid (raw outputs)", o.Name, dimsString(o.Dims))
		}
	}
	if len(g.Outputs) != 3 {
		return fmt.Errorf("want 3 raw outputs (p3, p4, p5), the graph has %d", len(g.Outputs))
	}
	k := int64(-1)
	for _, o := range g.Outputs {
		if o.ElemType != onnxFloat {
			return fmt.Errorf("output %q has element type %d, want float32 (1)", o.Name, o.ElemType)
		}
		d := o.Dims
		if len(d) != 5 || d[0] != 1 || d[1] != numAnchors || d[4] < 6 || (k >= 0 && d[4] != k) || d[2] != d[3] {
			return fmt.Errorf("output %q has shape %s, want raw 1x3xHxWx(5+nc)", o.Name, dimsString(d))
		}
		k = d[4]
		stride := 0
		for _, st := range levelStrides {
			if int64(s/st) == d[2] {
				stride = st
			}
		}
		if stride == 0 {
			return fmt.Errorf("output %q has grid %dx%d, not S/8, S/16 or S/32 of input size %d", o.Name, d[2], d[3], s)
		}
		for _, prev := range info.Outputs {
			if prev.Stride == stride {
				return fmt.Errorf("outputs %q and %q are both stride %d", prev.Name, o.Name, stride)
			}
		}
		sh := make([]int, 5)
		for i := range sh {
			sh[i] = int(d[i])
		}
		info.Outputs = append(info.Outputs, ONNXOutput{Name: o.Name, Shape: sh, Stride: stride})
	}
	sort.Slice(info.Outputs, func(a, b int) bool { return info.Outputs[a].Stride < info.Outputs[b].Stride })
	info.NumClasses = int(k) - 5
	return nil
}

func nodeName(i int, n tiny.ONNXNode) string {
	if n.Name != "" {
		return fmt.Sprintf("%q (#%d, %s)", n.Name, i, n.OpType)
	}
	out := ""
	if len(n.Outputs) > 0 {
		out = n.Outputs[0]
	}
	return fmt.Sprintf("#%d (%s -> %q)", i, n.OpType, out)
}

func dimsString(d []int64) string {
	if d == nil {
		return "unknown"
	}
	s := make([]string, len(d))
	for i, v := range d {
		if v < 0 {
			s[i] = "?"
		} else {
			s[i] = fmt.Sprint(v)
		}
	}
	return strings.Join(s, "x")
}
