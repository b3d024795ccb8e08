package tiny

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// smallONNX is a two-node model built with the writer's encoders: a seed
// for the fuzzer and the base of the corruption tests.
func smallONNX() []byte {
	var g pb
	g = g.msg(fGraphNode, onnxNode("Constant", "c", nil, []string{"s"},
		attrTensor("value", onnxInt64Tensor("", []int64{2}, []int64{1, -1}))))
	g = g.msg(fGraphNode, onnxNode("Conv", "conv", []string{"x", "w", "b"}, []string{"y"},
		attrInts("kernel_shape", 1, 1), attrFloat("alpha", 0.5), attrString("mode", "nearest"), attrInt("group", 1)))
	g = g.str(fGraphName, "g")
	g = g.msg(fGraphInitializer, onnxFloatTensor("w", []int64{2, 1, 1, 1}, []float32{1.5, -2}))
	g = g.msg(fGraphInitializer, onnxFloatTensor("b", []int64{2}, []float32{0.25, 0}))
	g = g.msg(fGraphInput, onnxValueInfo("x", DTypeFloat, []int64{1, 1, 4, 4}))
	g = g.msg(fGraphOutput, onnxValueInfo("y", DTypeFloat, []int64{1, 2, 4, 4}))
	var m pb
	m = m.int64(fModelIRVersion, 7).str(fModelProducerName, "t").msg(fModelGraph, g)
	m = m.msg(fModelOpsetImport, pb(nil).str(fOpsetDomain, "").int64(fOpsetVersion, 12))
	return m
}

func TestParseONNXSmall(t *testing.T) {
	om, err := ParseONNX(smallONNX())
	if err != nil {
		t.Fatal(err)
	}
	if om.IRVersion != 7 || om.Opset != 12 || om.GraphName != "g" || len(om.Nodes) != 2 {
		t.Fatalf("parsed %+v", om)
	}
	w, ok := om.Initializer("w")
	if !ok || w.Float[0] != 1.5 || w.Float[1] != -2 || w.NumElems() != 2 {
		t.Fatalf("initializer w: %+v", w)
	}
	c := om.Nodes[1]
	if a, _ := c.Attr("kernel_shape"); a == nil || len(a.Ints) != 2 {
		t.Errorf("kernel_shape: %+v", a)
	}
	if a, _ := c.Attr("alpha"); a == nil || a.F != 0.5 {
		t.Errorf("alpha: %+v", a)
	}
	if v := om.Nodes[0].Attrs[0].T; v == nil || v.Int64[1] != -1 {
		t.Errorf("constant: %+v", v)
	}
	if om.Outputs[0].Dims[1] != 2 {
		t.Errorf("output dims %v", om.Outputs[0].Dims)
	}
}

func TestParseONNXRejectsBadInput(t *testing.T) {
	good := smallONNX()
	// The graph ends before the trailing opset_import; any cut inside the
	// header or the graph must fail.
	graphEnd := bytes.LastIndex(good, pb(nil).msg(fModelOpsetImport, pb(nil).str(fOpsetDomain, "").int64(fOpsetVersion, 12)))
	if graphEnd <= 0 {
		t.Fatal("opset_import not found in the test model")
	}
	for n := 0; n < graphEnd; n++ {
		if _, err := ParseONNX(good[:n]); err == nil {
			t.Errorf("truncated to %d of %d bytes: accepted", n, len(good))
		}
	}
	tensor := func(dims []int64, raw []byte) []byte {
		var tp pb
		tp = tp.packedInt64s(fTensorDims, dims).varint(fTensorDataType, DTypeFloat).str(fTensorName, "t").bytes(fTensorRawData, raw)
		g := pb(nil).msg(fGraphInitializer, tp)
		return pb(nil).msg(fModelGraph, g)
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"no graph", pb(nil).int64(fModelIRVersion, 7)},
		{"bad tag", []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}},
		{"length past end", protowire.AppendVarint(protowire.AppendTag(nil, fModelGraph, protowire.BytesType), 1<<40)},
		{"raw data too short", tensor([]int64{4}, make([]byte, 12))},
		{"huge dims", tensor([]int64{1 << 20, 1 << 20, 1 << 20}, nil)},
		{"negative dim", tensor([]int64{-1}, nil)},
		{"external data", pb(nil).msg(fModelGraph, pb(nil).msg(fGraphInitializer,
			pb(nil).varint(fTensorDataType, DTypeFloat).bytes(fTensorExternal, nil)))},
	}
	for _, tc := range tests {
		if _, err := ParseONNX(tc.b); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func TestParseONNXStructure(t *testing.T) {
	full, err := ParseONNX(smallONNX())
	if err != nil {
		t.Fatal(err)
	}
	st, err := ParseONNXStructure(smallONNX())
	if err != nil {
		t.Fatal(err)
	}
	if !sameStructure(full, st) {
		t.Errorf("structure %+v differs from full parse %+v", st, full)
	}
	if w, ok := st.Initializer("w"); !ok || w.Float != nil || w.DataType != DTypeFloat || w.NumElems() != 2 {
		t.Errorf("structure-only initializer w: %+v", w)
	}
	if v, ok := st.DefaultOpset(); !ok || v != 12 || len(st.OpsetImports) != 1 || st.ProducerName != "t" {
		t.Errorf("opset %d %v, imports %v, producer %q", v, ok, st.OpsetImports, st.ProducerName)
	}
	if st.Inputs[0].ElemType != DTypeFloat || len(st.Inputs[0].Dims) != 4 {
		t.Errorf("input %+v", st.Inputs[0])
	}

	// Tensors without (or with external) data pass the structure parse
	// only; dims are checked by both.
	noData := pb(nil).msg(fModelGraph, pb(nil).msg(fGraphInitializer,
		pb(nil).packedInt64s(fTensorDims, []int64{4}).varint(fTensorDataType, DTypeFloat).str(fTensorName, "t")))
	external := pb(nil).msg(fModelGraph, pb(nil).msg(fGraphInitializer,
		pb(nil).varint(fTensorDataType, DTypeFloat).str(fTensorName, "e").bytes(fTensorExternal, nil)))
	for _, b := range [][]byte{noData, external} {
		if _, err := ParseONNX(b); err == nil {
			t.Errorf("ParseONNX accepted %x", b)
		}
		if _, err := ParseONNXStructure(b); err != nil {
			t.Errorf("ParseONNXStructure: %v", err)
		}
	}
	if m, _ := ParseONNXStructure(external); m == nil || !m.Initializers[0].External {
		t.Errorf("external data not flagged: %+v", m)
	}
	negDim := pb(nil).msg(fModelGraph, pb(nil).msg(fGraphInitializer,
		pb(nil).packedInt64s(fTensorDims, []int64{-1}).varint(fTensorDataType, DTypeFloat)))
	if _, err := ParseONNXStructure(negDim); err == nil {
		t.Error("ParseONNXStructure accepted a negative dim")
	}

	// No default-domain opset; a scalar and a shapeless value; two graphs.
	scalar := pb(nil).str(fValueInfoName, "s").msg(fValueInfoType, pb(nil).msg(fTypeTensor,
		pb(nil).varint(fTypeTensorElem, DTypeFloat).msg(fTypeTensorShape, nil)))
	shapeless := pb(nil).str(fValueInfoName, "u").msg(fValueInfoType, pb(nil).msg(fTypeTensor,
		pb(nil).varint(fTypeTensorElem, DTypeFloat)))
	g := pb(nil).msg(fGraphInput, scalar).msg(fGraphOutput, shapeless)
	m, err := ParseONNXStructure(pb(nil).msg(fModelOpsetImport, pb(nil).str(fOpsetDomain, "com.x").int64(fOpsetVersion, 1)).msg(fModelGraph, g))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.DefaultOpset(); ok || len(m.OpsetImports) != 1 || m.OpsetImports[0].Domain != "com.x" {
		t.Errorf("opset imports %v", m.OpsetImports)
	}
	if m.Inputs[0].Dims == nil || len(m.Inputs[0].Dims) != 0 || m.Outputs[0].Dims != nil {
		t.Errorf("scalar dims %#v, shapeless dims %#v", m.Inputs[0].Dims, m.Outputs[0].Dims)
	}
	two := pb(nil).msg(fModelGraph, g).msg(fModelGraph, g)
	if _, err := ParseONNXStructure(two); err == nil || !strings.Contains(err.Error(), "more than one graph") {
		t.Errorf("two graphs: %v", err)
	}
}

// sameStructure reports whether a and b agree on everything but tensor
// data.
func sameStructure(a, b *ONNXModel) bool {
	hdr := func(m *ONNXModel) string {
		s := fmt.Sprintf("%d %q %q %d %v %q %v %v|", m.IRVersion, m.ProducerName, m.ProducerVersion, m.Opset, m.OpsetImports, m.GraphName, m.Inputs, m.Outputs)
		for _, t := range m.Initializers {
			s += fmt.Sprintf("%q %d %v|", t.Name, t.DataType, t.Dims)
		}
		for _, n := range m.Nodes {
			s += fmt.Sprintf("%q %q %q %q %q|", n.Name, n.OpType, n.Domain, n.Inputs, n.Outputs)
			for _, at := range n.Attrs {
				s += fmt.Sprintf("%q %d %v %d %q %v %v", at.Name, at.Type, at.F, at.I, at.S, at.Floats, at.Ints)
				if at.T != nil {
					s += fmt.Sprintf(" T %q %d %v", at.T.Name, at.T.DataType, at.T.Dims)
				}
			}
		}
		return s
	}
	return hdr(a) == hdr(b)
}

func TestModelFromONNXRejectsForeignGraphs(t *testing.T) {
	om, err := ParseONNX(smallONNX())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ModelFromONNX(om); err == nil {
		t.Fatal("a two-node graph was imported as yolov7-tiny")
	}
}

func FuzzReadONNX(f *testing.F) {
	f.Add(smallONNX())
	f.Add([]byte{})
	f.Add([]byte{0x3a, 0x02, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		om, err := ReadONNX(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, in := range om.Initializers {
			if in.DataType == DTypeFloat && int64(len(in.Float)) != in.NumElems() {
				t.Fatalf("initializer %q: %d floats for dims %v", in.Name, len(in.Float), in.Dims)
			}
			if int64(len(in.Float))*4 > int64(len(b)) {
				t.Fatalf("initializer %q: %d floats from %d bytes", in.Name, len(in.Float), len(b))
			}
		}
		ModelFromONNX(om) // must not panic
		// What parses in full parses as structure too, with the same graph.
		st, err := ParseONNXStructure(b)
		if err != nil {
			t.Fatalf("ParseONNX accepted what ParseONNXStructure rejects: %v", err)
		}
		if !sameStructure(om, st) {
			t.Fatal("ParseONNXStructure and ParseONNX disagree on the graph")
		}
	})
}
