package tiny

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"strings"
)

// ModelFromONNX builds a deploy-form YOLOv7-Tiny model from an ONNX graph
// made by the official export.py: raw or --grid, fused or not (BatchNorm is
// always folded into the Conv nodes by torch's exporter). The graph's Conv
// nodes, in file order, are the network's convolutions in state_dict order;
// where ImplicitA/ImplicitM remain as Add/Mul nodes around a detect conv
// they are folded into it (Conv.FoldImplicit). The activation comes from the
// Relu or LeakyRelu nodes, the class count from the detect convs' outputs.
//
// Everything after the detect convs is checked and dropped (detectHead):
// the raw per-level Reshape(1,NA,5+nc,H,W) + Transpose(0,1,3,4,2), which
// the deploy form reproduces, and the --grid decode subgraph (sigmoid, grid
// offsets, anchors; fused: Split/Pow/Concat; unfused: ScatterND, Expand,
// Where ...), which the detector does itself.
func ModelFromONNX(om *ONNXModel) (*Model, error) {
	m, _, err := importONNX(om)
	return m, err
}

// importONNX is ModelFromONNX, also naming the head form (headRaw, ...).
func importONNX(om *ONNXModel) (*Model, string, error) {
	var convs []*ONNXNode
	g := newImportGraph(om)
	act := Act("")
	for i := range om.Nodes {
		n := &om.Nodes[i]
		switch n.OpType {
		case "Conv":
			convs = append(convs, n)
		case "Relu":
			act = ActReLU
		case "LeakyRelu":
			if a, ok := n.Attr("alpha"); ok && math.Abs(float64(a.F)-LeakySlope) > 1e-6 {
				return nil, "", fmt.Errorf("tiny: import onnx: LeakyRelu alpha %v, want %v", a.F, LeakySlope)
			}
			act = ActLeaky
		}
	}
	if act == "" {
		return nil, "", fmt.Errorf("tiny: import onnx: no Relu or LeakyRelu node")
	}
	// yolo7d's own exports name their (possibly scaled) spec; official
	// exports are yolov7-tiny.
	spec := YOLOv7Tiny()
	if name, ok := om.Metadata["spec"]; ok && name != spec.Name {
		s, err := SpecByName(name)
		if err != nil {
			return nil, "", fmt.Errorf("tiny: import onnx: metadata spec: %w", err)
		}
		spec = s
	}
	if len(convs) == 0 {
		return nil, "", fmt.Errorf("tiny: import onnx: no Conv node")
	}
	last, ok := om.Initializer(inputAt(convs[len(convs)-1], 1))
	na := spec.NumAnchors()
	if !ok || len(last.Dims) != 4 || last.Dims[0]%int64(na) != 0 || last.Dims[0]/int64(na) <= 5 {
		return nil, "", fmt.Errorf("tiny: import onnx: last conv has no usable detect weight")
	}
	nc := int(last.Dims[0]/int64(na)) - 5
	m, err := NewModel(spec, act, nc)
	if err != nil {
		return nil, "", fmt.Errorf("tiny: import onnx: %w", err)
	}
	if len(convs) != len(m.Convs) {
		return nil, "", fmt.Errorf("tiny: import onnx: %d Conv nodes, %s has %d convolutions", len(convs), spec.Name, len(m.Convs))
	}
	var heads []detectOut
	for i, n := range convs {
		c := &m.Convs[i]
		w, ok := om.Initializer(inputAt(n, 1))
		want := []int64{int64(c.Out), int64(c.In), int64(c.K), int64(c.K)}
		if !ok || !sameDims(w.Dims, want) || w.DataType != DTypeFloat {
			return nil, "", fmt.Errorf("tiny: import onnx: Conv node %q (%s): weight is not a float32 %v initializer", n.Name, c.ConvShape.Name, want)
		}
		if a, ok := n.Attr("strides"); ok && (len(a.Ints) != 2 || a.Ints[0] != int64(c.S) || a.Ints[1] != int64(c.S)) {
			return nil, "", fmt.Errorf("tiny: import onnx: Conv node %q (%s): strides %v, want %d", n.Name, c.ConvShape.Name, a.Ints, c.S)
		}
		copy(c.Weight, w.Float)
		if bn := inputAt(n, 2); bn != "" {
			b, ok := om.Initializer(bn)
			if !ok || !sameDims(b.Dims, []int64{int64(c.Out)}) || b.DataType != DTypeFloat {
				return nil, "", fmt.Errorf("tiny: import onnx: Conv node %q (%s): bias is not a float32 [%d] initializer", n.Name, c.ConvShape.Name, c.Out)
			}
			copy(c.Bias, b.Float)
		}
		if c.Level < 0 {
			continue
		}
		ia, im := make([]float32, c.In), make([]float32, c.Out)
		for j := range im {
			im[j] = 1
		}
		if p := g.producer[inputAt(n, 0)]; p != nil && p.OpType == "Add" {
			v, err := g.implicitOperand(p, c.In)
			if err != nil {
				return nil, "", fmt.Errorf("tiny: import onnx: ImplicitA of %s: %w", c.ConvShape.Name, err)
			}
			ia = v
		}
		out := detectOut{conv: n, tensor: outputAt(n, 0), level: c.Level}
		if mul := g.implicitMul(out.tensor, c.Out); mul != nil {
			v, err := g.implicitOperand(mul, c.Out)
			if err != nil {
				return nil, "", fmt.Errorf("tiny: import onnx: ImplicitM of %s: %w", c.ConvShape.Name, err)
			}
			im, out.tensor = v, outputAt(mul, 0)
		}
		heads = append(heads, out)
		if err := c.FoldImplicit(ia, im); err != nil {
			return nil, "", fmt.Errorf("tiny: import onnx: %w", err)
		}
	}
	form, err := g.detectHead(heads, na, 5+nc)
	if err != nil {
		return nil, "", fmt.Errorf("tiny: import onnx: %w", err)
	}
	if err := m.Validate(); err != nil {
		return nil, "", fmt.Errorf("tiny: import onnx: %s head: %w", form, err)
	}
	return m, form, nil
}

// importGraph indexes a model's nodes by the tensors they produce and read.
type importGraph struct {
	om        *ONNXModel
	producer  map[string]*ONNXNode
	consumers map[string][]*ONNXNode
}

func newImportGraph(om *ONNXModel) *importGraph {
	g := &importGraph{om: om, producer: make(map[string]*ONNXNode), consumers: make(map[string][]*ONNXNode)}
	for i := range om.Nodes {
		n := &om.Nodes[i]
		for _, o := range n.Outputs {
			g.producer[o] = n
		}
		for _, in := range n.Inputs {
			g.consumers[in] = append(g.consumers[in], n)
		}
	}
	return g
}

// constant returns the value of name when it is an initializer or the
// output of a Constant node.
func (g *importGraph) constant(name string) (*ONNXTensor, bool) {
	if t, ok := g.om.Initializer(name); ok {
		return t, true
	}
	if p := g.producer[name]; p != nil && p.OpType == "Constant" {
		if a, ok := p.Attr("value"); ok && a.T != nil {
			return a.T, true
		}
	}
	return nil, false
}

// implicitOperand returns the 1xCx1x1 constant operand of an Add or Mul.
func (g *importGraph) implicitOperand(n *ONNXNode, c int) ([]float32, error) {
	for _, in := range n.Inputs {
		if t, ok := g.constant(in); ok {
			if t.DataType != DTypeFloat || t.NumElems() != int64(c) || len(t.Float) != c {
				return nil, fmt.Errorf("node %q: constant %q has dims %v, want %d float32 values", n.Name, in, t.Dims, c)
			}
			return t.Float, nil
		}
	}
	return nil, fmt.Errorf("node %q has no constant operand", n.Name)
}

// implicitMul returns the ImplicitM node reading a detect conv's output:
// the one Mul consumer with a constant operand of c values, or nil.
func (g *importGraph) implicitMul(tensor string, c int) *ONNXNode {
	var found *ONNXNode
	for _, n := range g.consumers[tensor] {
		if n.OpType != "Mul" || len(n.Inputs) != 2 {
			continue
		}
		other := n.Inputs[0]
		if other == tensor {
			other = n.Inputs[1]
		}
		if t, ok := g.constant(other); ok && t.NumElems() == int64(c) {
			if found != nil {
				return nil
			}
			found = n
		}
	}
	return found
}

// detectOut is one detect level's output: the conv and the tensor holding
// its (ImplicitM-multiplied) 1 x NA*(5+nc) x H x W result.
type detectOut struct {
	conv   *ONNXNode
	tensor string
	level  int
}

// isHeadOp tells the operators of the official heads after the detect
// convs: the raw view/permute and the --grid decode (fused: Split/Pow/Concat;
// unfused: in-place slice writes exported as ScatterND with helpers).
func isHeadOp(op string) bool {
	switch op {
	case "Reshape", "Transpose", "Sigmoid", "Split", "Mul", "Add", "Sub", "Div", "Pow", "Concat",
		"Constant", "Shape", "Slice", "Gather", "Unsqueeze", "Squeeze", "Expand", "Where", "Equal",
		"ConstantOfShape", "ScatterND", "Cast", "Range", "Identity", "Tile":
		return true
	}
	return false
}

// Head forms recognised by detectHead.
const (
	headRaw     = "raw"      // export.py without --grid: 3 outputs 1xNAxHxWx(5+nc)
	headGrid    = "grid"     // --grid, fused model: 1 output 1xNx(5+nc), decoded
	headGridRaw = "grid+raw" // --grid, unfused model: the decoded output and the 3 raw ones
)

// detectHead checks what follows the detect convs and names the form.
// Every node downstream of them must be a head operator reading only the
// detect outputs and constants (never the network before them); each
// level's output must be viewed as Reshape(1,NA,no,H,W) (H, W halving per
// level) + Transpose(0,1,3,4,2), the layout the deploy form reproduces; and
// the graph outputs must be the three raw tensors, one decoded tensor, or
// both.
func (g *importGraph) detectHead(heads []detectOut, na, no int) (string, error) {
	if len(heads) == 0 {
		return "", fmt.Errorf("no detect convs")
	}
	detect := make(map[*ONNXNode]bool)
	for _, h := range heads {
		detect[h.conv] = true
	}
	// The network: reachable from the graph inputs without passing
	// through a detect conv.
	network := make(map[*ONNXNode]bool)
	var queue []string
	for _, in := range g.om.Inputs {
		queue = append(queue, in.Name)
	}
	for len(queue) > 0 {
		t := queue[0]
		queue = queue[1:]
		for _, n := range g.consumers[t] {
			if network[n] {
				continue
			}
			network[n] = true
			if !detect[n] {
				queue = append(queue, n.Outputs...)
			}
		}
	}
	// The head: reachable from the detect outputs.
	head := make(map[*ONNXNode]bool)
	queue = queue[:0]
	for _, h := range heads {
		queue = append(queue, h.tensor)
	}
	for len(queue) > 0 {
		t := queue[0]
		queue = queue[1:]
		for _, n := range g.consumers[t] {
			if head[n] {
				continue
			}
			if !isHeadOp(n.OpType) {
				return "", fmt.Errorf("node %q (%s) after the detect convs is not part of an official head", n.Name, n.OpType)
			}
			if network[n] {
				return "", fmt.Errorf("head node %q (%s) reads the network before the detect convs", n.Name, n.OpType)
			}
			head[n] = true
			queue = append(queue, n.Outputs...)
		}
	}
	raw := make(map[string]int) // raw output tensor -> level
	var h0, w0 int64
	for k, h := range heads {
		var reshape *ONNXNode
		for _, n := range g.consumers[h.tensor] {
			switch {
			case n.OpType == "Reshape" && reshape == nil && inputAt(n, 0) == h.tensor:
				reshape = n
			case n.OpType == "Shape":
			default:
				return "", fmt.Errorf("detect level %d: output read by %s node %q, want one Reshape", h.level, n.OpType, n.Name)
			}
		}
		if reshape == nil {
			return "", fmt.Errorf("detect level %d: no Reshape of the output", h.level)
		}
		if s, ok := g.constant(inputAt(reshape, 1)); ok {
			d := s.Int64
			if len(d) != 5 || (d[0] != 1 && d[0] != -1) || d[1] != int64(na) || d[2] != int64(no) || d[3] <= 0 || d[4] <= 0 {
				return "", fmt.Errorf("detect level %d: Reshape %q to %v, want [1 %d %d H W]", h.level, reshape.Name, d, na, no)
			}
			if k == 0 {
				h0, w0 = d[3], d[4]
			} else if d[3]<<k != h0 || d[4]<<k != w0 {
				return "", fmt.Errorf("detect level %d: grid %dx%d, level 0 has %dx%d", h.level, d[3], d[4], h0, w0)
			}
		}
		cs := g.consumers[outputAt(reshape, 0)]
		if len(cs) != 1 || cs[0].OpType != "Transpose" {
			return "", fmt.Errorf("detect level %d: Reshape %q is not followed by one Transpose", h.level, reshape.Name)
		}
		if a, ok := cs[0].Attr("perm"); !ok || !sameDims(a.Ints, []int64{0, 1, 3, 4, 2}) {
			return "", fmt.Errorf("detect level %d: Transpose %q does not permute to 1xNAxHxWx(5+nc)", h.level, cs[0].Name)
		}
		raw[outputAt(cs[0], 0)] = h.level
	}
	nRaw, nDecoded := 0, 0
	for _, o := range g.om.Outputs {
		p := g.producer[o.Name]
		switch {
		case p == nil || !head[p]:
			return "", fmt.Errorf("graph output %q does not come from the detect head", o.Name)
		case func() bool { _, ok := raw[o.Name]; return ok }():
			nRaw++
		default:
			nDecoded++
		}
	}
	switch {
	case nRaw == len(heads) && nDecoded == 0:
		return headRaw, nil
	case nRaw == 0 && nDecoded == 1:
		return headGrid, nil
	case nRaw == len(heads) && nDecoded == 1:
		return headGridRaw, nil
	}
	return "", fmt.Errorf("head with %d raw and %d decoded outputs, want %d raw, 1 decoded or both", nRaw, nDecoded, len(heads))
}

func inputAt(n *ONNXNode, i int) string {
	if i < len(n.Inputs) {
		return n.Inputs[i]
	}
	return ""
}

func outputAt(n *ONNXNode, i int) string {
	if i < len(n.Outputs) {
		return n.Outputs[i]
	}
	return ""
}

func sameDims(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// ImportModel reads a deploy-form model from an official YOLOv7-Tiny file:
// a torch checkpoint (.pt, a zip archive: ReadPT + ModelFromPT) or an ONNX
// export (raw or --grid, fused or not: ReadONNXFile + ModelFromONNX). The
// content decides (a zip starts with "PK"); the extension only breaks ties
// in the error message.
func ImportModel(path string) (*Model, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tiny: import model: %w", err)
	}
	head := make([]byte, 9)
	n, _ := io.ReadFull(f, head)
	f.Close()
	if isSafetensors(head[:n]) { // yolo7d native model file
		m, _, err := ReadModelFile(path)
		return m, err
	}
	if bytes.HasPrefix(head[:n], []byte("PK\x03\x04")) {
		ck, err := ReadPT(path)
		if err != nil {
			return nil, err
		}
		m, err := ModelFromPT(ck)
		if err != nil {
			return nil, fmt.Errorf("%w (file %s)", err, path)
		}
		return m, nil
	}
	om, err := ReadONNXFile(path)
	if err != nil {
		if strings.HasSuffix(strings.ToLower(path), ".pt") || strings.HasSuffix(strings.ToLower(path), ".pth") {
			return nil, fmt.Errorf("tiny: import model %s: a .pt file that is not a torch zip archive", path)
		}
		return nil, err
	}
	m, err := ModelFromONNX(om)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return m, nil
}
