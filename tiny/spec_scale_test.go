package tiny

import (
	"bytes"
	"path/filepath"
	"reflect"
	"testing"
)

func TestYOLOv7TinyScaledOneOneIsYOLOv7Tiny(t *testing.T) {
	s, err := YOLOv7TinyScaled(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := YOLOv7Tiny()
	if !reflect.DeepEqual(s, want) {
		for i := range min(len(s.Layers), len(want.Layers)) {
			if !reflect.DeepEqual(s.Layers[i], want.Layers[i]) {
				t.Fatalf("layer %d: %+v, want %+v", i, s.Layers[i], want.Layers[i])
			}
		}
		t.Fatalf("scaled(1,1) differs from YOLOv7Tiny: %d layers, want %d", len(s.Layers), len(want.Layers))
	}
	src, err := want.AuxSources()
	if err != nil || src != [3]int{57, 47, 37} {
		t.Fatalf("aux sources %v (%v), want [57 47 37]", src, err)
	}
}

func TestYOLOv7TinyScaledDepthAndWidth(t *testing.T) {
	for _, tc := range []struct {
		depth, width float64
		n            int // stacked 3x3 per ELAN
		first, p5    int // layer 0 width, transition width of the last backbone ELAN
	}{
		{0.5, 0.25, 1, 8, 96},  // 512*0.25*(3/4) = 96
		{1.5, 0.5, 3, 16, 320}, // 512*0.5*(5/4) = 320
		{1, 1, 2, 32, 512},
	} {
		s, err := YOLOv7TinyScaled(tc.depth, tc.width)
		if err != nil {
			t.Fatal(err)
		}
		if want := 30 + 8*(tc.n+4); len(s.Layers) != want {
			t.Fatalf("(%v,%v): %d layers, want %d", tc.depth, tc.width, len(s.Layers), want)
		}
		if s.Layers[0].Out != tc.first {
			t.Fatalf("(%v,%v): layer 0 width %d, want %d", tc.depth, tc.width, s.Layers[0].Out, tc.first)
		}
		// count the 3x3 stride-1 convs inside ELAN blocks: 8 blocks of n
		// plus the 3 detect-head inputs.
		k3 := 0
		for _, l := range s.Layers {
			if l.Kind == KindConv && l.K == 3 && l.S == 1 {
				k3++
			}
		}
		if k3 != 8*tc.n+3 {
			t.Fatalf("(%v,%v): %d 3x3 s1 convs, want %d", tc.depth, tc.width, k3, 8*tc.n+3)
		}
		// the 4th ELAN transition (backbone P5) is just before the SPP.
		trans := 1 + 1 + 4*(tc.n+4) + 3 - 1
		if got := s.Layers[trans].Out; got != tc.p5 {
			t.Fatalf("(%v,%v): backbone P5 width %d, want %d", tc.depth, tc.width, got, tc.p5)
		}
		if s.Depth != tc.depth || s.Width != tc.width {
			t.Fatalf("factors %v %v stored as %v %v", tc.depth, tc.width, s.Depth, s.Width)
		}
		if _, err := s.AuxSources(); err != nil {
			t.Fatal(err)
		}
		if byName, err := SpecByName(s.Name); err != nil || !reflect.DeepEqual(byName, s) {
			t.Fatalf("SpecByName(%q): %v", s.Name, err)
		}
		if tc.depth == 1 && tc.width == 1 {
			continue
		}
		m, err := NewRandom(Config{Act: ActLeaky, NC: 3, Seed: 5, Spec: &s})
		if err != nil {
			t.Fatal(err)
		}
		p, err := m.NewPlan(NewCPU(2), 320)
		if err != nil {
			t.Fatal(err)
		}
		in := make([]float32, 3*320*320)
		for i := range in {
			in[i] = float32(i%251) / 251
		}
		outs, err := p.Forward(in)
		if err != nil {
			t.Fatal(err)
		}
		for k, o := range outs {
			if want := 3 * (320 / s.Strides[k]) * (320 / s.Strides[k]) * 8; len(o) != want {
				t.Fatalf("level %d: %d values, want %d", k, len(o), want)
			}
		}
		var buf bytes.Buffer
		if err := ExportONNX(&buf, m, 320); err != nil {
			t.Fatalf("export %s: %v", s.Name, err)
		}
		om, err := ReadONNX(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatalf("read back %s: %v", s.Name, err)
		}
		for _, c := range m.Convs {
			w, ok := om.Initializer(c.ConvShape.Name + ".weight")
			if !ok || !reflect.DeepEqual(w.Float, c.Weight) {
				t.Fatalf("%s: exported weight differs", c.ConvShape.Name)
			}
		}
		// The export names its spec, so the scaled model comes back whole,
		// through ONNX and through the native format.
		back, err := ModelFromONNX(om)
		if err != nil {
			t.Fatalf("re-import %s: %v", s.Name, err)
		}
		if back.Spec.Name != s.Name || !reflect.DeepEqual(back.Convs, m.Convs) {
			t.Fatalf("%s: ONNX round trip gives spec %q and different convs", s.Name, back.Spec.Name)
		}
		path := filepath.Join(t.TempDir(), "m.safetensors")
		if err := WriteModelFile(path, m, ModelMeta{InputSize: 320}); err != nil {
			t.Fatalf("write %s: %v", s.Name, err)
		}
		native, _, err := ReadModelFile(path)
		if err != nil {
			t.Fatalf("read %s: %v", s.Name, err)
		}
		if native.Spec.Name != s.Name || !reflect.DeepEqual(native.Convs, m.Convs) {
			t.Fatalf("%s: native round trip gives spec %q and different convs", s.Name, native.Spec.Name)
		}
	}
}
