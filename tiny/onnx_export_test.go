package tiny

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func exportParse(t *testing.T, m *Model, size int) *ONNXModel {
	t.Helper()
	var buf bytes.Buffer
	if err := ExportONNX(&buf, m, size); err != nil {
		t.Fatal(err)
	}
	om, err := ParseONNX(buf.Bytes())
	if err != nil {
		t.Fatalf("reading back the export: %v", err)
	}
	return om
}

func opCounts(om *ONNXModel) map[string]int {
	c := map[string]int{}
	for _, n := range om.Nodes {
		c[n.OpType]++
	}
	return c
}

func TestExportONNXGraph(t *testing.T) {
	tests := []struct {
		act  Act
		op   string
		nc   int
		size int
	}{
		{ActReLU, "Relu", 80, 320},
		{ActLeaky, "LeakyRelu", 3, 416},
	}
	for _, tc := range tests {
		t.Run(string(tc.act), func(t *testing.T) {
			m, err := NewRandom(Config{Act: tc.act, NC: tc.nc, Seed: 5})
			if err != nil {
				t.Fatal(err)
			}
			om := exportParse(t, m, tc.size)
			if om.IRVersion != 7 || om.Opset != 12 {
				t.Errorf("IR version %d opset %d, want 7 and 12", om.IRVersion, om.Opset)
			}
			// The official fused raw export: 148 nodes.
			want := map[string]int{"Conv": 58, tc.op: 55, "Concat": 14, "Constant": 7, "MaxPool": 6,
				"Reshape": 3, "Transpose": 3, "Resize": 2}
			if got := opCounts(om); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("ops %v, want %v", got, want)
			}
			if len(om.Inputs) != 1 || om.Inputs[0].Name != "images" || fmt.Sprint(om.Inputs[0].Dims) != fmt.Sprintf("[1 3 %d %d]", tc.size, tc.size) {
				t.Errorf("inputs %+v", om.Inputs)
			}
			names := []string{"output", "p4", "p5"}
			for i, o := range om.Outputs {
				h := tc.size / (8 << i)
				if o.Name != names[i] || o.ElemType != DTypeFloat || fmt.Sprint(o.Dims) != fmt.Sprintf("[1 3 %d %d %d]", h, h, 5+tc.nc) {
					t.Errorf("output %d: %+v", i, o)
				}
			}
			// Every node input is defined before use; outputs are produced.
			defined := map[string]bool{"images": true}
			for _, in := range om.Initializers {
				defined[in.Name] = true
			}
			for _, n := range om.Nodes {
				for _, in := range n.Inputs {
					if !defined[in] {
						t.Fatalf("node %s uses %q before it is defined", n.Name, in)
					}
				}
				for _, o := range n.Outputs {
					defined[o] = true
				}
				if n.OpType == "LeakyRelu" {
					if a, ok := n.Attr("alpha"); !ok || a.F != 0.1 {
						t.Fatalf("node %s: alpha %+v", n.Name, a)
					}
				}
			}
			for _, o := range om.Outputs {
				if !defined[o.Name] {
					t.Errorf("output %s is not produced", o.Name)
				}
			}
			// Initializers carry the model's parameters bit for bit.
			if len(om.Initializers) != 2*len(m.Convs) {
				t.Fatalf("%d initializers, want %d", len(om.Initializers), 2*len(m.Convs))
			}
			for _, c := range m.Convs {
				w, ok1 := om.Initializer(c.Name + ".weight")
				b, ok2 := om.Initializer(c.Name + ".bias")
				if !ok1 || !ok2 || !slices.Equal(w.Float, c.Weight) || !slices.Equal(b.Float, c.Bias) {
					t.Fatalf("%s: initializers missing or different", c.Name)
				}
			}
		})
	}
}

// TestExportMirrorsOfficialGraph compares the export of the golden weights
// with the official raw export node by node: same op sequence (the official
// ImplicitA/M Add/Mul nodes aside), same attributes, same wiring by layer,
// and re-importing the export gives the same model.
func TestExportMirrorsOfficialGraph(t *testing.T) {
	golden, err := ReadONNXFile(filepath.Join(goldenForward(t), "yolov7-tiny-relu-raw.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ModelFromONNX(golden)
	if err != nil {
		t.Fatal(err)
	}
	om := exportParse(t, m, 640)
	var ref []ONNXNode
	for _, n := range golden.Nodes {
		if n.OpType != "Add" && n.OpType != "Mul" {
			ref = append(ref, n)
		}
	}
	if len(ref) != len(om.Nodes) {
		t.Fatalf("%d nodes, official graph has %d (without Add/Mul)", len(om.Nodes), len(ref))
	}
	for i, n := range om.Nodes {
		r := ref[i]
		if n.OpType != r.OpType || n.Name != r.Name || len(n.Inputs) != len(r.Inputs) {
			t.Fatalf("node %d: %s %s with %d inputs, official %s %s with %d", i, n.OpType, n.Name, len(n.Inputs), r.OpType, r.Name, len(r.Inputs))
		}
		if got, want := attrsText(n.Attrs), attrsText(r.Attrs); got != want {
			t.Errorf("node %d %s: attributes %s, official %s", i, n.Name, got, want)
		}
		// Data inputs come from the same layers; the official detect convs
		// read ImplicitA's Add and their Reshapes ImplicitM's Mul, which the
		// deploy form folds away; initializer names differ.
		for k := range n.Inputs {
			if (n.OpType == "Conv" && k > 0) || strings.Contains(r.Inputs[k], "/ia.") || strings.Contains(r.Inputs[k], "/im.") {
				continue
			}
			if layerOf(n.Inputs[k]) != layerOf(r.Inputs[k]) {
				t.Errorf("node %d %s input %d: %s, official %s", i, n.Name, k, n.Inputs[k], r.Inputs[k])
			}
		}
	}
	back, err := ModelFromONNX(om)
	if err != nil {
		t.Fatal(err)
	}
	for i := range m.Convs {
		if !slices.Equal(back.Convs[i].Weight, m.Convs[i].Weight) || !slices.Equal(back.Convs[i].Bias, m.Convs[i].Bias) {
			t.Fatalf("%s changed in the export/import round trip", m.Convs[i].Name)
		}
	}
}

// layerOf maps "/model.12/act/Relu_output_0" to "/model.12/act"; other
// names (initializers, "images") to themselves.
func layerOf(s string) string {
	if i := strings.LastIndex(s, "/"); strings.HasPrefix(s, "/model.") && i > 0 {
		return s[:i]
	}
	return s
}

func attrsText(as []ONNXAttr) string {
	var b strings.Builder
	for _, a := range as {
		fmt.Fprintf(&b, "%s:%d:%v:%v:%q:%v:%v", a.Name, a.Type, a.F, a.I, a.S, a.Floats, a.Ints)
		if a.T != nil {
			fmt.Fprintf(&b, ":T%d%v%v%v", a.T.DataType, a.T.Dims, a.T.Float, a.T.Int64)
		}
		b.WriteString(";")
	}
	return b.String()
}

func TestExportONNXRejects(t *testing.T) {
	m, err := NewRandom(Config{Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{0, -32, 100, 336} {
		if err := ExportONNX(&bytes.Buffer{}, m, size); err == nil {
			t.Errorf("input size %d accepted", size)
		}
	}
	m.Convs[3].Weight = m.Convs[3].Weight[1:]
	if err := ExportONNX(&bytes.Buffer{}, m, 320); err == nil {
		t.Error("a model with a short weight was exported")
	}
}

func TestWriteRandomONNXIsAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.onnx")
	if err := WriteRandomONNX(path, Config{NC: 2, Seed: 9}, 320); err != nil {
		t.Fatal(err)
	}
	om, err := ReadONNXFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(om.Outputs) != 3 || om.Outputs[2].Dims[4] != 7 {
		t.Fatalf("outputs %+v", om.Outputs)
	}
	// A failing write leaves the old file and no temporary behind.
	if err := WriteRandomONNX(path, Config{NC: 2, Seed: 9}, 330); err == nil {
		t.Fatal("input size 330 accepted")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "model.onnx" {
		t.Fatalf("directory holds %v, want only model.onnx", ents)
	}
	if _, err := ReadONNXFile(path); err != nil {
		t.Fatalf("old model damaged: %v", err)
	}
}
