package tiny

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// smallSafetensors returns a valid two-tensor file.
func smallSafetensors(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	err := WriteSafetensors(&buf, []STensor{
		{Name: "a", Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}},
		{Name: "b", Shape: []int{1}, Data: []float32{-7}},
	}, map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rawSafetensors builds a file from a literal header and data.
func rawSafetensors(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(b, header...), data...)
}

func TestSafetensorsRoundTripKeepsOrderAndMetadata(t *testing.T) {
	b := smallSafetensors(t)
	if n := binary.LittleEndian.Uint64(b); (8+n)%8 != 0 {
		t.Errorf("data starts at %d, not 8-byte aligned", 8+n)
	}
	st, err := ParseSafetensors(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Tensors) != 2 || st.Tensors[0].Name != "a" || st.Tensors[1].Name != "b" {
		t.Fatalf("tensors %+v, want a then b", st.Tensors)
	}
	if !slices.Equal(st.Tensors[0].Shape, []int{2, 3}) || !slices.Equal(st.Tensors[0].Data, []float32{1, 2, 3, 4, 5, 6}) {
		t.Errorf("a = %+v", st.Tensors[0])
	}
	if st.Metadata["k"] != "v" || len(st.Metadata["content_sha256"]) != 64 {
		t.Errorf("metadata %v", st.Metadata)
	}
}

func TestParseSafetensorsRejectsHostileFiles(t *testing.T) {
	valid := smallSafetensors(t)
	corrupt := slices.Clone(valid)
	corrupt[len(corrupt)-1] ^= 0x40
	f4 := make([]byte, 8)
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"short", []byte{1, 2, 3}, "shorter than"},
		{"huge header length", binary.LittleEndian.AppendUint64(nil, 1<<40), "header length"},
		{"truncated header", valid[:20], "truncated"},
		{"truncated data", valid[:len(valid)-4], "outside"},
		{"corrupt data", corrupt, "corrupt"},
		{"not json", rawSafetensors("[1,2]", nil), "not a JSON object"},
		{"f16", rawSafetensors(`{"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}`, f4[:4]), "only F32"},
		{"shape mismatch", rawSafetensors(`{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, f4), "shape"},
		{"huge shape", rawSafetensors(`{"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}`, f4), "needs more"},
		{"gap", rawSafetensors(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f4), "gap"},
		{"overlap", rawSafetensors(`{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f4), "overlaps"},
		{"trailing data", rawSafetensors(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, f4), "after the last tensor"},
		{"offsets past end", rawSafetensors(`{"x":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, f4), "outside"},
		{"duplicate", rawSafetensors(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, f4), "duplicate"},
		{"bad metadata", rawSafetensors(`{"__metadata__":{"a":1}}`, nil), "__metadata__"},
		{"unknown field", rawSafetensors(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"z":1}}`, f4[:4]), "bad header entry"},
		{"junk after header", rawSafetensors(`{} x`, nil), "after the JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSafetensors(tc.file)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestModelFileRoundTripIsExact(t *testing.T) {
	m, err := NewRandom(Config{Act: ActLeaky, NC: 3, Names: []string{"a", "b", "c"}, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "m.safetensors")
	meta := ModelMeta{InputSize: 320, Provenance: Provenance{Source: "x.pt", Tool: "test"}, Metrics: json.RawMessage(`{"map50":0.5}`)}
	if err := WriteModelFile(path, m, meta); err != nil {
		t.Fatal(err)
	}
	got, gm, err := ReadModelFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Act != m.Act || got.NC != m.NC || !slices.Equal(got.Names, m.Names) || got.Spec.Name != m.Spec.Name {
		t.Errorf("model header %v %v %v, want %v %v %v", got.Act, got.NC, got.Names, m.Act, m.NC, m.Names)
	}
	for i := range m.Convs {
		if !slices.Equal(got.Convs[i].Weight, m.Convs[i].Weight) || !slices.Equal(got.Convs[i].Bias, m.Convs[i].Bias) {
			t.Fatalf("conv %s differs after the round trip", m.Convs[i].ConvShape.Name)
		}
	}
	if gm.InputSize != 320 || gm.Provenance != meta.Provenance || string(gm.Metrics) != `{"map50":0.5}` || gm.FormatVersion != SafetensorsFormatVersion {
		t.Errorf("meta %+v, want %+v", gm, meta)
	}
	im, err := ImportModel(path)
	if err != nil {
		t.Fatalf("ImportModel of a native file: %v", err)
	}
	if !slices.Equal(im.Convs[0].Weight, m.Convs[0].Weight) {
		t.Error("ImportModel read other weights")
	}
	// A flipped bit in the weights is caught by content_sha256.
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-100] ^= 1
	bad := filepath.Join(t.TempDir(), "bad.safetensors")
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ReadModelFile(bad); err == nil || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), bad) {
		t.Errorf("corrupt file: error %v, want one saying corrupt and naming the file", err)
	}
}

func TestModelFromSafetensorsRejectsForeignFiles(t *testing.T) {
	st, err := ParseSafetensors(smallSafetensors(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ModelFromSafetensors(st); err == nil || !strings.Contains(err.Error(), "not a yolo7d model file") {
		t.Errorf("error %v, want not a yolo7d model file", err)
	}
}

func TestModelFromSafetensorsBoundsTheSpecByTheStoredValues(t *testing.T) {
	spec := YOLOv7Tiny()
	for i := range spec.Layers {
		if spec.Layers[i].Kind == KindConv {
			spec.Layers[i].Out = 1 << 40 // would allocate terabytes
			break
		}
	}
	sj, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	st := &Safetensors{
		Tensors: []STensor{{Name: "model.0.conv.weight", Shape: []int{1}, Data: []float32{0}}},
		Metadata: map[string]string{"format": SafetensorsFormat, "format_version": SafetensorsFormatVersion,
			"form": "deploy", "content_sha256": "x", "spec": string(sj), "act": "relu", "nc": "80"},
	}
	if _, _, err := ModelFromSafetensors(st); err == nil {
		t.Fatal("a spec far larger than the stored weights was accepted")
	}
}

func FuzzReadSafetensors(f *testing.F) {
	f.Add(smallSafetensors(f))
	f.Add(rawSafetensors(`{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4)))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ParseSafetensors(b)
		if err != nil {
			return
		}
		for _, ts := range st.Tensors {
			n := 1
			for _, d := range ts.Shape {
				n *= d
			}
			if n != len(ts.Data) {
				t.Fatalf("tensor %q shape %v with %d values", ts.Name, ts.Shape, len(ts.Data))
			}
		}
		ModelFromSafetensors(st) // must not panic
	})
}
