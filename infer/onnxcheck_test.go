package infer

import (
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestCheckONNXGolden(t *testing.T) {
	info, err := CheckONNXForOpenCV(goldenFile(t, "yolov7-tiny-relu-raw.onnx"))
	if err != nil {
		t.Fatalf("raw export rejected: %v", err)
	}
	if info.InputSize != 640 || info.NumClasses != 80 || info.Input != "images" || info.Opset != 12 {
		t.Errorf("info = size %d, nc %d, input %q, opset %d; want 640, 80, images, 12", info.InputSize, info.NumClasses, info.Input, info.Opset)
	}
	wantH := []int{80, 40, 20}
	for i, o := range info.Outputs {
		if o.Shape[2] != wantH[i] || o.Stride != 8<<i {
			t.Errorf("output %d %q: shape %v stride %d, want H %d stride %d", i, o.Name, o.Shape, o.Stride, wantH[i], 8<<i)
		}
	}
	if info.Ops["Conv"] != 58 || info.Ops["Relu"] != 55 || info.Nodes != 154 {
		t.Errorf("ops %v, %d nodes; want 58 Conv, 55 Relu, 154 nodes (MANIFEST section 6)", info.Ops, info.Nodes)
	}

	_, err = CheckONNXForOpenCV(goldenFile(t, "yolov7-tiny-leaky-fused-grid.onnx"))
	if err == nil || !strings.Contains(err.Error(), "export without --grid") {
		t.Errorf("fused-grid export: err = %v, want a --grid rejection", err)
	} else {
		t.Logf("fused-grid rejected: %v", err)
	}
}

func TestCheckONNXTruncated(t *testing.T) {
	b, err := os.ReadFile(goldenFile(t, "yolov7-tiny-relu-raw.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 7, 100, 1000, len(b) / 2, len(b) - 1} {
		if _, err := CheckONNX(b[:n]); err == nil {
			t.Errorf("truncated to %d of %d bytes: accepted", n, len(b))
		}
	}
}

// Small ModelProto builder for hand-made graphs.
type pbuf []byte

func (b pbuf) str(n protowire.Number, s string) pbuf {
	b = protowire.AppendTag(b, n, protowire.BytesType)
	return protowire.AppendString(b, s)
}
func (b pbuf) msg(n protowire.Number, m pbuf) pbuf {
	b = protowire.AppendTag(b, n, protowire.BytesType)
	return protowire.AppendBytes(b, m)
}
func (b pbuf) varint(n protowire.Number, v uint64) pbuf {
	b = protowire.AppendTag(b, n, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func node(op string, in, out []string) pbuf {
	var n pbuf
	for _, s := range in {
		n = n.str(1, s)
	}
	for _, s := range out {
		n = n.str(2, s)
	}
	return n.str(3, op+"_0").str(4, op)
}

func valueInfo(name string, elem uint64, dims ...uint64) pbuf {
	var shape pbuf
	for _, d := range dims {
		shape = shape.msg(1, pbuf(nil).varint(1, d))
	}
	tt := pbuf(nil).varint(1, elem).msg(2, shape)
	return pbuf(nil).str(1, name).msg(2, pbuf(nil).msg(1, tt))
}

// toyModel is a graph "images" -> nodes -> three raw outputs.
func toyModel(nodes []pbuf, inits []string, in pbuf, outs []pbuf) []byte {
	var g pbuf
	for _, n := range nodes {
		g = g.msg(1, n)
	}
	for _, name := range inits {
		g = g.msg(5, pbuf(nil).varint(1, 4).varint(2, 1).str(8, name))
	}
	g = g.msg(11, in)
	for _, o := range outs {
		g = g.msg(12, o)
	}
	m := pbuf(nil).varint(1, 7).msg(8, pbuf(nil).varint(2, 12)).msg(7, g)
	return m
}

func TestCheckONNXRejects(t *testing.T) {
	img := valueInfo("images", 1, 1, 3, 64, 64)
	raw := []pbuf{valueInfo("a", 1, 1, 3, 8, 8, 7), valueInfo("b", 1, 1, 3, 4, 4, 7), valueInfo("c", 1, 1, 3, 2, 2, 7)}
	conv := node("Conv", []string{"images", "w"}, []string{"a", "b", "c"})
	cases := []struct {
		name  string
		model []byte
		want  string
	}{
		{"ok", toyModel([]pbuf{conv}, []string{"w"}, img, raw), ""},
		{"garbage", []byte("this is not a model at all"), "onnx"},
		{"no graph", pbuf(nil).varint(1, 7), "no graph"},
		{"unknown op", toyModel([]pbuf{node("NonMaxSuppression", []string{"images"}, []string{"a"})}, nil, img, raw), `"NonMaxSuppression"`},
		{"grid", toyModel([]pbuf{node("ScatterND", []string{"images"}, []string{"a"})}, nil, img, raw), "export without --grid"},
		{"identity of initializer", toyModel([]pbuf{node("Identity", []string{"w"}, []string{"x"}), conv}, []string{"w"}, img, raw), "Identity of initializer"},
		{"undefined input", toyModel([]pbuf{node("Conv", []string{"images", "nope"}, []string{"a"})}, nil, img, raw), `"nope"`},
		{"fp16 input", toyModel([]pbuf{conv}, []string{"w"}, valueInfo("images", 10, 1, 3, 64, 64), raw), "float32"},
		{"size 100", toyModel([]pbuf{conv}, []string{"w"}, valueInfo("images", 1, 1, 3, 100, 100), raw), "multiple of 32"},
		{"not square", toyModel([]pbuf{conv}, []string{"w"}, valueInfo("images", 1, 1, 3, 64, 32), raw), "1x3xSxS"},
		{"decoded output", toyModel([]pbuf{conv}, []string{"w"}, img, []pbuf{valueInfo("output", 1, 1, 252, 7)}), "--grid"},
		{"255 channels", toyModel([]pbuf{conv}, []string{"w"}, img, []pbuf{valueInfo("a", 1, 1, 21, 8, 8), raw[1], raw[2]}), "1x3xHxWx(5+nc)"},
		{"two outputs", toyModel([]pbuf{conv}, []string{"w"}, img, raw[:2]), "want 3 raw outputs"},
		{"same stride", toyModel([]pbuf{conv}, []string{"w"}, img, []pbuf{raw[0], raw[0], raw[2]}), "both stride"},
	}
	for _, c := range cases {
		info, err := CheckONNX(c.model)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: rejected: %v", c.name, err)
		case c.want == "" && (info.InputSize != 64 || info.NumClasses != 2):
			t.Errorf("%s: size %d nc %d, want 64, 2", c.name, info.InputSize, info.NumClasses)
		case c.want != "" && err == nil:
			t.Errorf("%s: accepted", c.name)
		case c.want != "" && !strings.Contains(err.Error(), c.want):
			t.Errorf("%s: error %q does not mention %q", c.name, err, c.want)
		}
	}
}

// FuzzCheckONNX feeds CheckONNX (and so tiny.ParseONNXStructure) arbitrary
// bytes: it must never panic, and whatever it accepts must be a consistent
// raw YOLOv7 export.
func FuzzCheckONNX(f *testing.F) {
	img := valueInfo("images", 1, 1, 3, 64, 64)
	raw := []pbuf{valueInfo("a", 1, 1, 3, 8, 8, 7), valueInfo("b", 1, 1, 3, 4, 4, 7), valueInfo("c", 1, 1, 3, 2, 2, 7)}
	f.Add(toyModel([]pbuf{node("Conv", []string{"images", "w"}, []string{"a", "b", "c"})}, []string{"w"}, img, raw))
	f.Add(toyModel([]pbuf{node("ScatterND", []string{"images"}, []string{"a"})}, nil, img, raw))
	f.Add([]byte{0x3a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := CheckONNX(b)
		if err != nil {
			return
		}
		s := info.InputSize
		if s <= 0 || s%32 != 0 || info.NumClasses < 1 || info.Nodes < 1 || len(info.Outputs) != 3 {
			t.Fatalf("accepted inconsistent model: %+v", info)
		}
		for i, o := range info.Outputs {
			if o.Stride != 8<<i || len(o.Shape) != 5 || o.Shape[2] != s/o.Stride || o.Shape[4] != info.NumClasses+5 {
				t.Fatalf("accepted output %d %+v of model %+v", i, o, info)
			}
		}
	})
}
