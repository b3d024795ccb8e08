package tiny

import (
	"archive/zip"
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// ptTen is a tensor of a test checkpoint: a view of storage key.
type ptTen struct {
	name, class, key string
	numel, offset    int64
	size, stride     []int64
}

// ptMod is a torch module of a test checkpoint.
type ptMod struct {
	mod, class      string
	attrs           func(pickleW) pickleW // extra attribute key/value pairs
	params, buffers []ptTen
	children        []ptChild
}

type ptChild struct {
	name string
	m    ptMod
}

func (m ptMod) write(p pickleW) pickleW {
	p = p.global(m.mod, m.class).op(')', 0x81, '}', '(')
	p = p.str("training").op(0x89)
	for _, f := range []struct {
		field string
		ts    []ptTen
	}{{"_parameters", m.params}, {"_buffers", m.buffers}} {
		p = p.str(f.field).global("collections", "OrderedDict").op(')', 'R', '(')
		for _, t := range f.ts {
			p = tensorPickle(p.str(t.name), t.class, t.key, t.numel, t.offset, t.size, t.stride)
		}
		p = p.op('u')
	}
	p = p.str("_non_persistent_buffers_set").global("__builtin__", "set").op(']', 0x85, 'R')
	p = p.str("_modules").global("collections", "OrderedDict").op(')', 'R', '(')
	for _, c := range m.children {
		p = c.m.write(p.str(c.name))
	}
	p = p.op('u')
	if m.attrs != nil {
		p = m.attrs(p)
	}
	return p.op('u', 'b')
}

// f32ToHalf encodes a float32 that is exactly a normal binary16 value.
func f32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	if f == 0 {
		return uint16(b >> 16)
	}
	return uint16(b>>16)&0x8000 | uint16((b>>23&0xff)-112)<<10 | uint16(b>>13&0x3ff)
}

// smallPT builds a one-Conv-block checkpoint in torch's zip layout under
// the folder "ckpt-stem/", with fp16, fp32 and int64 storages, a storage
// shared by two tensors and a transposed view. The archive member named
// drop is left out; the storages named in cut lose their last byte.
func smallPT(t testing.TB, drop string, cut ...string) []byte {
	half := func(vs ...float32) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint16(b, f32ToHalf(v))
		}
		return b
	}
	f32 := func(vs ...float32) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		return b
	}
	storages := map[string][]byte{
		"0": half(0.5, -1.25),             // conv weight 2x1x1x1
		"1": half(2, 0.25, -3, 1),         // bn weight, bias (offset 2)
		"2": half(0.125, -0.5, 1.5, 0.75), // running mean, var (offset 2)
		"3": binary.LittleEndian.AppendUint64(nil, 42),
		"4": f32(0, 1, 2, 3, 4, 5), // 2x3 view with stride (1, 2)
	}
	conv := ptMod{mod: "torch.nn.modules.conv", class: "Conv2d",
		params: []ptTen{{"weight", "HalfStorage", "0", 2, 0, []int64{2, 1, 1, 1}, []int64{1, 1, 1, 1}}}}
	bn := ptMod{mod: "torch.nn.modules.batchnorm", class: "BatchNorm2d",
		attrs: func(p pickleW) pickleW { return p.str("eps").float(0.001).str("momentum").float(0.03) },
		params: []ptTen{
			{"weight", "HalfStorage", "1", 4, 0, []int64{2}, []int64{1}},
			{"bias", "HalfStorage", "1", 4, 2, []int64{2}, []int64{1}}},
		buffers: []ptTen{
			{"running_mean", "HalfStorage", "2", 4, 0, []int64{2}, []int64{1}},
			{"running_var", "HalfStorage", "2", 4, 2, []int64{2}, []int64{1}},
			{"num_batches_tracked", "LongStorage", "3", 1, 0, nil, nil}}}
	act := ptMod{mod: "torch.nn.modules.activation", class: "LeakyReLU",
		attrs: func(p pickleW) pickleW { return p.str("negative_slope").float(0.1).str("inplace").op(0x89) }}
	block := ptMod{mod: "models.common", class: "Conv", children: []ptChild{{"conv", conv}, {"bn", bn}, {"act", act}}}
	seq := ptMod{mod: "torch.nn.modules.container", class: "Sequential", children: []ptChild{{"0", block}}}
	model := ptMod{mod: "models.yolo", class: "Model",
		buffers:  []ptTen{{"view", "FloatStorage", "4", 6, 0, []int64{2, 3}, []int64{1, 2}}},
		children: []ptChild{{"model", seq}},
		attrs: func(p pickleW) pickleW {
			return p.str("nc").int(2).str("names").op(']', '(').str("cat").str("dog").op('e')
		}}
	p := pickleW{0x80, 2, '}', '('}.str("epoch").int(-1).str("model")
	p = model.write(p).str("ema").op('N', 'u', '.')

	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	add := func(name string, b []byte) {
		if name == drop {
			return
		}
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
	}
	add("ckpt-stem/data.pkl", p)
	for _, k := range []string{"0", "1", "2", "3", "4"} {
		b := storages[k]
		if slices.Contains(cut, k) {
			b = b[:len(b)-1]
		}
		add("ckpt-stem/data/"+k, b)
	}
	add("ckpt-stem/version", []byte("3\n"))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestReadPTSmallCheckpoint(t *testing.T) {
	ck, err := ReadPTBytes(smallPT(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name  string
		shape []int
		data  []float32
	}{
		{"view", []int{2, 3}, []float32{0, 2, 4, 1, 3, 5}},
		{"model.0.conv.weight", []int{2, 1, 1, 1}, []float32{0.5, -1.25}},
		{"model.0.bn.weight", []int{2}, []float32{2, 0.25}},
		{"model.0.bn.bias", []int{2}, []float32{-3, 1}},
		{"model.0.bn.running_mean", []int{2}, []float32{0.125, -0.5}},
		{"model.0.bn.running_var", []int{2}, []float32{1.5, 0.75}},
		{"model.0.bn.num_batches_tracked", []int{}, []float32{42}},
	}
	if len(ck.Tensors) != len(want) {
		t.Fatalf("%d tensors, want %d", len(ck.Tensors), len(want))
	}
	for i, w := range want {
		g := ck.Tensors[i]
		if g.Name != w.name || !slices.Equal(g.Shape, w.shape) || !slices.Equal(g.Data, w.data) {
			t.Errorf("tensor %d: %s %v %v, want %s %v %v", i, g.Name, g.Shape, g.Data, w.name, w.shape, w.data)
		}
	}
	if ck.NC != 2 || !slices.Equal(ck.Names, []string{"cat", "dog"}) || ck.Act != ActLeaky {
		t.Errorf("nc %d names %v act %q (%s)", ck.NC, ck.Names, ck.Act, ck.ActClass)
	}
	if m, ok := ck.Module("model.0.bn"); !ok || m.Attrs["eps"] != 0.001 || m.Class != "torch.nn.modules.batchnorm.BatchNorm2d" {
		t.Errorf("module model.0.bn: %+v", m)
	}
}

func TestReadPTRejectsBadArchives(t *testing.T) {
	good := smallPT(t, "")
	for n := 0; n < len(good); n += 7 {
		if _, err := ReadPTBytes(good[:n]); err == nil {
			t.Errorf("truncated to %d of %d bytes: accepted", n, len(good))
		}
	}
	zipOf := func(files map[string][]byte) []byte {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		for name, b := range files {
			w, _ := zw.Create(name)
			w.Write(b)
		}
		zw.Close()
		return buf.Bytes()
	}
	selfLoop := pickleW{0x80, 2, '}', '('}.str("model").global("models.yolo", "Model").op(')', 0x81).put(9).op('}', '(')
	selfLoop = selfLoop.str("_modules").global("collections", "OrderedDict").op(')', 'R', '(').str("me").get(9).op('u', 'u', 'b', 'u', '.')
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"not a zip", []byte("\x80\x02}q\x00."), "not a torch zip"},
		{"no data.pkl", zipOf(map[string][]byte{"x/data/0": {1, 2}}), "no <folder>/data.pkl"},
		{"missing storage", smallPT(t, "ckpt-stem/data/3"), "data/3 missing"},
		{"short storage", smallPT(t, "", "0"), "data/0 has 3 bytes"},
		{"root is a list", zipOf(map[string][]byte{"a/data.pkl": {0x80, 2, ']', '.'}}), "want a checkpoint dict"},
		{"no model", zipOf(map[string][]byte{"a/data.pkl": {0x80, 2, '}', '.'}}), "no \"model\""},
		{"module cycle", zipOf(map[string][]byte{"a/data.pkl": selfLoop}), "contains itself"},
		{"garbled pickle", zipOf(map[string][]byte{"a/data.pkl": {0x80, 2, 0xff}}), "unsupported opcode"},
	}
	for _, tc := range tests {
		_, err := ReadPTBytes(tc.b)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func FuzzReadPT(f *testing.F) {
	f.Add(smallPT(f, ""))
	f.Add(smallPT(f, "ckpt-stem/data/2"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ck, err := ReadPTBytes(b)
		if err != nil {
			return
		}
		for _, x := range ck.Tensors {
			n := 1
			for _, d := range x.Shape {
				n *= d
			}
			if n != len(x.Data) {
				t.Fatalf("tensor %s: shape %v with %d values", x.Name, x.Shape, len(x.Data))
			}
		}
		ModelFromPT(ck) // must not panic
	})
}

func TestHalfToFloat32(t *testing.T) {
	tests := []struct {
		h    uint16
		want float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x7bff, 65504}, {0x0001, 1.0 / (1 << 24)}, {0x03ff, 1023.0 / (1 << 24)},
		{0x0400, 1.0 / (1 << 14)}, {0x3555, 0.333251953125}, {0x7c00, float32(math.Inf(1))}, {0xfc00, float32(math.Inf(-1))},
	}
	for _, tc := range tests {
		if got := HalfToFloat32(tc.h); got != tc.want {
			t.Errorf("HalfToFloat32(%#04x) = %v, want %v", tc.h, got, tc.want)
		}
	}
	if v := HalfToFloat32(0x7e00); !math.IsNaN(float64(v)) {
		t.Errorf("0x7e00 = %v, want NaN", v)
	}
	if v := HalfToFloat32(0x8000); v != 0 || !math.Signbit(float64(v)) {
		t.Errorf("0x8000 = %v, want -0", v)
	}
	// Every finite half: (-1)^s * m * 2^(e-25) with m = 1024+mantissa
	// (normal) or mantissa (e = 1, subnormal).
	for h := 0; h < 1<<16; h++ {
		e, man := h>>10&0x1f, float64(h&0x3ff)
		if e == 0x1f {
			continue
		}
		if e == 0 {
			e = 1
		} else {
			man += 1024
		}
		want := math.Ldexp(man, e-25)
		if h&0x8000 != 0 {
			want = -want
		}
		if got := HalfToFloat32(uint16(h)); float64(got) != want {
			t.Fatalf("HalfToFloat32(%#04x) = %v, want %v", h, got, want)
		}
	}
}

// goldenLeakyPT reads the official-format leaky checkpoint.
func goldenLeakyPT(t *testing.T) *Checkpoint {
	t.Helper()
	ck, err := ReadPT(filepath.Join(goldenForward(t), "yolov7-tiny-leaky.pt"))
	if err != nil {
		t.Fatal(err)
	}
	return ck
}

func TestReadPTMatchesOfficialStateDict(t *testing.T) {
	ck := goldenLeakyPT(t)
	f, err := os.Open(filepath.Join(goldenForward(t), "state_dict.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	i := 0
	for ; sc.Scan(); i++ {
		col := strings.Split(sc.Text(), "\t")
		if i >= len(ck.Tensors) {
			t.Fatalf("only %d tensors; state_dict.tsv goes on with %s", len(ck.Tensors), col[0])
		}
		x := ck.Tensors[i]
		shape := "scalar"
		if len(x.Shape) > 0 {
			shape = strings.Trim(strings.Join(strings.Fields(fmt.Sprint(x.Shape)), "x"), "[]")
		}
		if x.Name != col[0] || shape != col[1] || x.DType != col[2] {
			t.Fatalf("tensor %d: %s %s %s, state_dict.tsv has %s %s %s", i, x.Name, shape, x.DType, col[0], col[1], col[2])
		}
	}
	if i != len(ck.Tensors) || i != 344 {
		t.Errorf("%d tensors, state_dict.tsv lists %d (want 344)", len(ck.Tensors), i)
	}
	if ck.NC != 80 || len(ck.Names) != 80 || ck.Names[0] != "person" || ck.Names[79] != "toothbrush" || ck.Act != ActLeaky {
		t.Errorf("nc %d, %d names (%q...), act %q (%s)", ck.NC, len(ck.Names), ck.Names[:1], ck.Act, ck.ActClass)
	}
	bns := 0
	for _, m := range ck.Modules {
		if strings.HasSuffix(m.Class, ".BatchNorm2d") {
			bns++
			if m.Attrs["eps"] != 0.001 {
				t.Errorf("%s: eps %v, want 0.001", m.Name, m.Attrs["eps"])
			}
		}
	}
	if bns != 55 {
		t.Errorf("%d BatchNorm2d modules, want 55", bns)
	}
}

// modelMaxDiff returns the largest |a-b| and the largest |a-b| / max(|b|, 1e-3 *
// max|b|) over two parameter sets.
func modelMaxDiff(a, b *Model) (abs, rel float64) {
	for i := range a.Convs {
		for _, p := range [][2][]float32{{a.Convs[i].Weight, b.Convs[i].Weight}, {a.Convs[i].Bias, b.Convs[i].Bias}} {
			var scale float64
			for _, v := range p[1] {
				scale = math.Max(scale, math.Abs(float64(v)))
			}
			for j := range p[0] {
				d := math.Abs(float64(p[0][j]) - float64(p[1][j]))
				abs = math.Max(abs, d)
				rel = math.Max(rel, d/math.Max(math.Abs(float64(p[1][j])), 1e-3*scale))
			}
		}
	}
	return abs, rel
}

// TestModelFromPTMatchesFusedGridONNX cross-checks both readers: the
// checkpoint folded here (BN, implicits) against the official fused --grid
// export of the same weights (folded by torch).
func TestModelFromPTMatchesFusedGridONNX(t *testing.T) {
	m, err := ModelFromPT(goldenLeakyPT(t))
	if err != nil {
		t.Fatal(err)
	}
	om, err := ReadONNXFile(filepath.Join(goldenForward(t), "yolov7-tiny-leaky-fused-grid.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := ModelFromONNX(om)
	if err != nil {
		t.Fatal(err)
	}
	if m.Act != ActLeaky || ref.Act != ActLeaky || m.NC != 80 || len(m.Names) != 80 {
		t.Fatalf("act %q / %q, nc %d, %d names", m.Act, ref.Act, m.NC, len(m.Names))
	}
	abs, rel := modelMaxDiff(m, ref)
	t.Logf("ModelFromPT vs fused-grid ONNX: max abs diff %.3g, max rel diff %.3g", abs, rel)
	// Both fold the same fp16-exact values in float32: only rounding
	// differs (an eps of 1e-5 or a missed implicit would show as >1e-3).
	if abs > 1e-5 || rel > 1e-5 {
		t.Errorf("max abs diff %.3g, rel %.3g, want <= 1e-5", abs, rel)
	}
}

// ckWithTensors returns a copy of ck with the named tensors replaced (a nil
// value deletes) and the extra ones appended.
func ckWithTensors(ck *Checkpoint, repl map[string]*PTTensor, extra ...PTTensor) *Checkpoint {
	out := *ck
	out.Tensors = nil
	for _, x := range ck.Tensors {
		if r, ok := repl[x.Name]; ok {
			if r != nil {
				out.Tensors = append(out.Tensors, *r)
			}
			continue
		}
		out.Tensors = append(out.Tensors, x)
	}
	out.Tensors = append(out.Tensors, extra...)
	return &out
}

// TestModelFromPTForms checks the other checkpoint forms against the
// plain one: already fused (conv with bias, no bn) and layer 74 as a
// training-form RepConv whose 1x1 branch adds exactly zero (zero kernel;
// its BN has beta = mean = 0); both must give bit-identical models.
func TestModelFromPTForms(t *testing.T) {
	ck := goldenLeakyPT(t)
	want, err := ModelFromPT(ck)
	if err != nil {
		t.Fatal(err)
	}
	fused := map[string]*PTTensor{}
	var extra []PTTensor
	for _, c := range want.Convs[:5] {
		base := strings.TrimSuffix(c.ConvShape.Name, ".conv")
		for _, s := range []string{"weight", "bias", "running_mean", "running_var", "num_batches_tracked"} {
			fused[base+".bn."+s] = nil
		}
		fused[c.ConvShape.Name+".weight"] = &PTTensor{Name: c.ConvShape.Name + ".weight", Shape: []int{c.Out, c.In, c.K, c.K}, Data: c.Weight}
		extra = append(extra, PTTensor{Name: c.ConvShape.Name + ".bias", Shape: []int{c.Out}, Data: c.Bias})
	}
	rep := map[string]*PTTensor{"model.74.conv.weight": nil}
	w74, _ := ck.Tensor("model.74.conv.weight")
	repExtra := []PTTensor{
		{Name: "model.74.rbr_dense.0.weight", Shape: w74.Shape, Data: w74.Data},
		{Name: "model.74.rbr_1x1.0.weight", Shape: []int{128, 64, 1, 1}, Data: make([]float32, 128*64)},
	}
	zeros, ones := make([]float32, 128), make([]float32, 128)
	for i := range ones {
		ones[i] = 1
	}
	point := map[string][]float32{"weight": ones, "bias": zeros, "running_mean": zeros, "running_var": ones}
	for _, s := range []string{"weight", "bias", "running_mean", "running_var"} {
		x, _ := ck.Tensor("model.74.bn." + s)
		rep["model.74.bn."+s] = nil
		repExtra = append(repExtra, PTTensor{Name: "model.74.rbr_dense.1." + s, Shape: x.Shape, Data: x.Data},
			PTTensor{Name: "model.74.rbr_1x1.1." + s, Shape: x.Shape, Data: point[s]})
	}
	for _, tc := range []struct {
		name string
		ck   *Checkpoint
	}{
		{"fused", ckWithTensors(ck, fused, extra...)},
		{"repconv", ckWithTensors(ck, rep, repExtra...)},
	} {
		got, err := ModelFromPT(tc.ck)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if abs, _ := modelMaxDiff(got, want); abs != 0 {
			t.Errorf("%s: max abs diff %g from the plain checkpoint, want 0", tc.name, abs)
		}
	}
	mixed := *ck
	mixed.Act, mixed.ActClass = "", "torch.nn.modules.activation.LeakyReLU(0.1), torch.nn.modules.activation.SiLU"
	if _, err := ModelFromPT(&mixed); err == nil || !strings.Contains(err.Error(), "SiLU") {
		t.Errorf("mixed activations: error %v", err)
	}
	missing := ckWithTensors(ck, map[string]*PTTensor{"model.77.m.1.bias": nil})
	if _, err := ModelFromPT(missing); err == nil || !strings.Contains(err.Error(), "model.77.m.1.bias") {
		t.Errorf("missing detect bias: error %v", err)
	}
}
