package tiny

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// goldenONNX reads an ONNX file of the golden forward set.
func goldenONNX(t *testing.T, name string) *ONNXModel {
	t.Helper()
	om, err := ReadONNXFile(filepath.Join(goldenForward(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return om
}

// cloneONNX copies what the tests mutate (nodes and outputs); the
// initializers are shared.
func cloneONNX(om *ONNXModel) *ONNXModel {
	c := *om
	c.Nodes = make([]ONNXNode, len(om.Nodes))
	for i, n := range om.Nodes {
		n.Inputs, n.Outputs, n.Attrs = slices.Clone(n.Inputs), slices.Clone(n.Outputs), slices.Clone(n.Attrs)
		c.Nodes[i] = n
	}
	c.Outputs = slices.Clone(om.Outputs)
	return &c
}

func constNode(out string, dims []int64, ints []int64, floats []float32) ONNXNode {
	t := &ONNXTensor{Name: out, Dims: dims, DataType: DTypeInt64, Int64: ints}
	if floats != nil {
		t.DataType, t.Int64, t.Float = DTypeFloat, nil, floats
	}
	return ONNXNode{Name: out, OpType: "Constant", Outputs: []string{out}, Attrs: []ONNXAttr{{Name: "value", T: t}}}
}

func node(op, name string, in []string, out ...string) ONNXNode {
	return ONNXNode{Name: name, OpType: op, Inputs: in, Outputs: out}
}

// rawHeads returns, per level, the index of the raw Transpose node and of
// the Reshape before it.
func rawHeads(t *testing.T, om *ONNXModel) (transposes, reshapes []int) {
	t.Helper()
	for i, n := range om.Nodes {
		if n.OpType == "Transpose" {
			transposes = append(transposes, i)
			for j, r := range om.Nodes {
				if r.OpType == "Reshape" && len(r.Outputs) > 0 && r.Outputs[0] == n.Inputs[0] {
					reshapes = append(reshapes, j)
				}
			}
		}
	}
	if len(transposes) != 3 || len(reshapes) != 3 {
		t.Fatalf("%d Transpose and %d Reshape nodes in the head, want 3 each", len(transposes), len(reshapes))
	}
	return transposes, reshapes
}

// unfusedGrid turns a raw export into the shape of an unfused --grid
// export (export.py --grid on a model that was not fused): the raw tensors
// stay outputs (renamed as torch names them) and feed a decode with
// Sigmoid, Slice, Mul, ScatterND, Reshape and Concat into "output"; the
// detect outputs are also read by Shape nodes.
func unfusedGrid(t *testing.T, raw *ONNXModel) *ONNXModel {
	om := cloneONNX(raw)
	tr, rs := rawHeads(t, om)
	var decoded []string
	for k := range tr {
		rawName := []string{"onnx::Sigmoid_560", "onnx::Sigmoid_747", "onnx::Sigmoid_933"}[k]
		old := om.Nodes[tr[k]].Outputs[0]
		om.Nodes[tr[k]].Outputs[0] = rawName
		for i := range om.Outputs {
			if om.Outputs[i].Name == old {
				om.Outputs[i].Name = rawName
			}
		}
		p := "/grid" + string(rune('0'+k))
		om.Nodes = append(om.Nodes,
			node("Shape", p+"/Shape", []string{om.Nodes[rs[k]].Inputs[0]}, p+"/shape"),
			node("Sigmoid", p+"/Sigmoid", []string{rawName}, p+"/y"),
			constNode(p+"/starts", []int64{1}, []int64{0}, nil),
			constNode(p+"/ends", []int64{1}, []int64{2}, nil),
			constNode(p+"/axes", []int64{1}, []int64{4}, nil),
			node("Slice", p+"/Slice", []string{p + "/y", p + "/starts", p + "/ends", p + "/axes"}, p+"/xy"),
			constNode(p+"/two", nil, nil, []float32{2}),
			node("Mul", p+"/Mul", []string{p + "/xy", p + "/two"}, p+"/xy2"),
			node("ConstantOfShape", p+"/ConstantOfShape", []string{p + "/shape"}, p+"/idx"),
			node("ScatterND", p+"/ScatterND", []string{p + "/y", p + "/idx", p + "/xy2"}, p+"/z"),
			constNode(p+"/flat", []int64{3}, []int64{1, -1, 85}, nil),
			node("Reshape", p+"/Reshape", []string{p + "/z", p + "/flat"}, p+"/r"),
		)
		decoded = append(decoded, p+"/r")
	}
	om.Nodes = append(om.Nodes, ONNXNode{Name: "/Concat", OpType: "Concat", Inputs: decoded, Outputs: []string{"output"},
		Attrs: []ONNXAttr{{Name: "axis", Type: 2, I: 1}}})
	om.Outputs = append([]ONNXValueInfo{{Name: "output", ElemType: DTypeFloat, Dims: []int64{1, 25200, 85}}}, om.Outputs...)
	return om
}

func sameModel(t *testing.T, what string, got, want *Model) {
	t.Helper()
	if got.Act != want.Act || got.NC != want.NC || len(got.Convs) != len(want.Convs) {
		t.Fatalf("%s: act %q nc %d %d convs, want %q %d %d", what, got.Act, got.NC, len(got.Convs), want.Act, want.NC, len(want.Convs))
	}
	for i := range got.Convs {
		if !slices.Equal(got.Convs[i].Weight, want.Convs[i].Weight) || !slices.Equal(got.Convs[i].Bias, want.Convs[i].Bias) {
			t.Fatalf("%s: %s differs", what, got.Convs[i].Name)
		}
	}
}

func TestModelFromONNXHeadForms(t *testing.T) {
	raw := goldenONNX(t, "yolov7-tiny-relu-raw.onnx")
	rawModel, form, err := importONNX(raw)
	if err != nil || form != headRaw {
		t.Fatalf("relu raw export: form %q, error %v", form, err)
	}
	var buf bytes.Buffer
	if err := ExportONNX(&buf, rawModel, 320); err != nil {
		t.Fatal(err)
	}
	ours, err := ParseONNX(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		om   *ONNXModel
		act  Act
		form string
		same *Model // when set, the import must equal it exactly
	}{
		{"official fused --grid", goldenONNX(t, "yolov7-tiny-leaky-fused-grid.onnx"), ActLeaky, headGrid, nil},
		{"unfused --grid (from the raw export)", unfusedGrid(t, raw), ActReLU, headGridRaw, rawModel},
		{"our own deploy export", ours, ActReLU, headRaw, rawModel},
	}
	for _, tc := range tests {
		m, form, err := importONNX(tc.om)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if form != tc.form || m.Act != tc.act || m.NC != 80 {
			t.Errorf("%s: form %q act %q nc %d, want %q %q 80", tc.name, form, m.Act, m.NC, tc.form, tc.act)
		}
		if tc.same != nil {
			sameModel(t, tc.name, m, tc.same)
		}
	}
}

func TestModelFromONNXRejectsUnknownHeads(t *testing.T) {
	raw := goldenONNX(t, "yolov7-tiny-relu-raw.onnx")
	tr, rs := rawHeads(t, raw)
	out0 := raw.Nodes[tr[0]].Outputs[0]
	tests := []struct {
		name   string
		mutate func(om *ONNXModel)
		want   string
	}{
		{"foreign op after the detect convs", func(om *ONNXModel) {
			om.Nodes = append(om.Nodes, node("Relu", "/x/Relu", []string{out0}, "x"))
		}, "not part of an official head"},
		{"head reading the network", func(om *ONNXModel) {
			om.Nodes = append(om.Nodes, node("Add", "/x/Add", []string{out0, "images"}, "x"))
		}, "reads the network"},
		{"other permutation", func(om *ONNXModel) {
			om.Nodes[tr[1]].Attrs = []ONNXAttr{{Name: "perm", Ints: []int64{0, 1, 2, 3, 4}}}
		}, "does not permute"},
		{"other view", func(om *ONNXModel) {
			shape := om.Nodes[rs[2]].Inputs[1]
			for i, n := range om.Nodes {
				if n.OpType == "Constant" && n.Outputs[0] == shape {
					om.Nodes[i] = constNode(shape, []int64{5}, []int64{1, 3, 85, 20, 21}, nil)
				}
			}
		}, "level 0 has 80x80"},
		{"output from the backbone", func(om *ONNXModel) {
			om.Outputs = append(om.Outputs, ONNXValueInfo{Name: om.Nodes[0].Outputs[0]})
		}, "does not come from the detect head"},
		{"two decoded outputs", func(om *ONNXModel) {
			om.Nodes = append(om.Nodes, node("Sigmoid", "/a", []string{out0}, "a"), node("Sigmoid", "/b", []string{out0}, "b"))
			om.Outputs = []ONNXValueInfo{{Name: "a"}, {Name: "b"}}
		}, "0 raw and 2 decoded"},
		{"a raw output missing", func(om *ONNXModel) {
			om.Outputs = om.Outputs[:2]
		}, "2 raw and 0 decoded"},
	}
	for _, tc := range tests {
		om := cloneONNX(raw)
		tc.mutate(om)
		_, err := ModelFromONNX(om)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestImportModelChoosesByContent(t *testing.T) {
	dir := goldenForward(t)
	pt, err := ImportModel(filepath.Join(dir, "yolov7-tiny-leaky.pt"))
	if err != nil {
		t.Fatal(err)
	}
	onnx, err := ImportModel(filepath.Join(dir, "yolov7-tiny-leaky-fused-grid.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if pt.Act != ActLeaky || onnx.Act != ActLeaky || len(pt.Names) != 80 {
		t.Errorf("act %q / %q, %d names", pt.Act, onnx.Act, len(pt.Names))
	}
	bad := filepath.Join(t.TempDir(), "model.pt")
	if err := os.WriteFile(bad, []byte("\x80\x02}q\x00."), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ImportModel(bad); err == nil || !strings.Contains(err.Error(), "not a torch zip archive") {
		t.Errorf("legacy .pt: error %v", err)
	}
	if _, err := ImportModel(filepath.Join(dir, "no-such-file.onnx")); err == nil {
		t.Error("missing file: no error")
	}
}
