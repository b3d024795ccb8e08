package tiny

import (
	"fmt"
	"math"
)

// ModelFromONNX builds a deploy-form YOLOv7-Tiny model from an ONNX graph
// made by the official export.py, raw or fused (BatchNorm is always folded
// into the Conv nodes by torch's exporter). The graph's Conv nodes, in file
// order, are the network's convolutions in state_dict order; where
// ImplicitA/ImplicitM remain as Add/Mul nodes around a detect conv they are
// folded into it (Conv.FoldImplicit). The activation comes from the Relu or
// LeakyRelu nodes, the class count from the detect convs' outputs.
func ModelFromONNX(om *ONNXModel) (*Model, error) {
	var convs []*ONNXNode
	producer := make(map[string]*ONNXNode)
	consumers := make(map[string][]*ONNXNode)
	act := Act("")
	for i := range om.Nodes {
		n := &om.Nodes[i]
		for _, o := range n.Outputs {
			producer[o] = n
		}
		for _, in := range n.Inputs {
			consumers[in] = append(consumers[in], n)
		}
		switch n.OpType {
		case "Conv":
			convs = append(convs, n)
		case "Relu":
			act = ActReLU
		case "LeakyRelu":
			if a, ok := n.Attr("alpha"); ok && math.Abs(float64(a.F)-LeakySlope) > 1e-6 {
				return nil, fmt.Errorf("tiny: import onnx: LeakyRelu alpha %v, want %v", a.F, LeakySlope)
			}
			act = ActLeaky
		}
	}
	if act == "" {
		return nil, fmt.Errorf("tiny: import onnx: no Relu or LeakyRelu node")
	}
	spec := YOLOv7Tiny()
	if len(convs) == 0 {
		return nil, fmt.Errorf("tiny: import onnx: no Conv node")
	}
	last, ok := om.Initializer(inputAt(convs[len(convs)-1], 1))
	na := spec.NumAnchors()
	if !ok || len(last.Dims) != 4 || last.Dims[0]%int64(na) != 0 || last.Dims[0]/int64(na) <= 5 {
		return nil, fmt.Errorf("tiny: import onnx: last conv has no usable detect weight")
	}
	nc := int(last.Dims[0]/int64(na)) - 5
	m, err := NewModel(spec, act, nc)
	if err != nil {
		return nil, fmt.Errorf("tiny: import onnx: %w", err)
	}
	if len(convs) != len(m.Convs) {
		return nil, fmt.Errorf("tiny: import onnx: %d Conv nodes, %s has %d convolutions", len(convs), spec.Name, len(m.Convs))
	}
	for i, n := range convs {
		c := &m.Convs[i]
		w, ok := om.Initializer(inputAt(n, 1))
		want := []int64{int64(c.Out), int64(c.In), int64(c.K), int64(c.K)}
		if !ok || !sameDims(w.Dims, want) || w.DataType != DTypeFloat {
			return nil, fmt.Errorf("tiny: import onnx: Conv node %q (%s): weight is not a float32 %v initializer", n.Name, c.ConvShape.Name, want)
		}
		if a, ok := n.Attr("strides"); ok && (len(a.Ints) != 2 || a.Ints[0] != int64(c.S) || a.Ints[1] != int64(c.S)) {
			return nil, fmt.Errorf("tiny: import onnx: Conv node %q (%s): strides %v, want %d", n.Name, c.ConvShape.Name, a.Ints, c.S)
		}
		copy(c.Weight, w.Float)
		if bn := inputAt(n, 2); bn != "" {
			b, ok := om.Initializer(bn)
			if !ok || !sameDims(b.Dims, []int64{int64(c.Out)}) || b.DataType != DTypeFloat {
				return nil, fmt.Errorf("tiny: import onnx: Conv node %q (%s): bias is not a float32 [%d] initializer", n.Name, c.ConvShape.Name, c.Out)
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
		if p := producer[inputAt(n, 0)]; p != nil && p.OpType == "Add" {
			v, err := implicitOperand(om, p, c.In)
			if err != nil {
				return nil, fmt.Errorf("tiny: import onnx: ImplicitA of %s: %w", c.ConvShape.Name, err)
			}
			ia = v
		}
		if cs := consumers[outputAt(n, 0)]; len(cs) == 1 && cs[0].OpType == "Mul" {
			v, err := implicitOperand(om, cs[0], c.Out)
			if err != nil {
				return nil, fmt.Errorf("tiny: import onnx: ImplicitM of %s: %w", c.ConvShape.Name, err)
			}
			im = v
		}
		if err := c.FoldImplicit(ia, im); err != nil {
			return nil, fmt.Errorf("tiny: import onnx: %w", err)
		}
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("tiny: import onnx: %w", err)
	}
	return m, nil
}

// implicitOperand returns the 1xCx1x1 initializer operand of an Add or Mul.
func implicitOperand(om *ONNXModel, n *ONNXNode, c int) ([]float32, error) {
	for _, in := range n.Inputs {
		if t, ok := om.Initializer(in); ok {
			if t.DataType != DTypeFloat || t.NumElems() != int64(c) {
				return nil, fmt.Errorf("node %q: initializer %q has dims %v, want %d values", n.Name, in, t.Dims, c)
			}
			return t.Float, nil
		}
	}
	return nil, fmt.Errorf("node %q has no initializer operand", n.Name)
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
