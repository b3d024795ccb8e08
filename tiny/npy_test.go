package tiny

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestNPYRoundTrip(t *testing.T) {
	cases := []struct {
		shape []int
		n     int
	}{
		{[]int{}, 1},
		{[]int{0}, 0},
		{[]int{5}, 5},
		{[]int{2, 3}, 6},
		{[]int{1, 3, 4, 5, 7}, 420},
	}
	for _, c := range cases {
		data := make([]float32, c.n)
		for i := range data {
			data[i] = float32(i)*0.5 - 3
		}
		var buf bytes.Buffer
		if err := WriteNPY(&buf, c.shape, data); err != nil {
			t.Fatalf("WriteNPY(%v): %v", c.shape, err)
		}
		if hl := int(binary.LittleEndian.Uint16(buf.Bytes()[8:])); (10+hl)%64 != 0 {
			t.Errorf("shape %v: header not 64-aligned: 10+%d", c.shape, hl)
		}
		shape, got, err := ReadNPY(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatalf("ReadNPY(%v): %v", c.shape, err)
		}
		if len(shape) != len(c.shape) {
			t.Fatalf("shape %v: read back %v", c.shape, shape)
		}
		for i := range shape {
			if shape[i] != c.shape[i] {
				t.Fatalf("shape %v: read back %v", c.shape, shape)
			}
		}
		if len(got) != len(data) {
			t.Fatalf("shape %v: %d elements read, want %d", c.shape, len(got), len(data))
		}
		for i := range got {
			if got[i] != data[i] {
				t.Fatalf("shape %v: element %d = %v, want %v", c.shape, i, got[i], data[i])
			}
		}
	}
}

func npyBytes(major byte, hdr string, payload []byte) []byte {
	b := append([]byte("\x93NUMPY"), major, 0)
	if major == 1 {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(hdr)))
	} else {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(hdr)))
	}
	b = append(b, hdr...)
	return append(b, payload...)
}

func TestReadNPYVersion2(t *testing.T) {
	b := npyBytes(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", []byte{0, 0, 128, 63, 0, 0, 0, 64})
	shape, data, err := ReadNPY(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if len(shape) != 1 || shape[0] != 2 || data[0] != 1 || data[1] != 2 {
		t.Fatalf("got shape %v data %v, want [2] [1 2]", shape, data)
	}
}

func TestReadNPYRejects(t *testing.T) {
	good := "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n"
	eight := make([]byte, 8)
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "magic"},
		{"bad magic", []byte("\x93NUMPZ\x01\x00\x00\x00"), "bad magic"},
		{"version 9", npyBytes(9, good, eight), "version"},
		{"short header", npyBytes(1, good, eight)[:20], "header"},
		{"float64", npyBytes(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", eight), "dtype"},
		{"big endian", npyBytes(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", eight), "dtype"},
		{"fortran", npyBytes(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", eight), "fortran"},
		{"negative dim", npyBytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }", eight), "dimension"},
		{"huge", npyBytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 100000), }", eight), "more than"},
		{"lying count", npyBytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000,), }", eight), "truncated"},
		{"truncated data", npyBytes(1, good, eight[:6]), "truncated"},
		{"missing shape", npyBytes(1, "{'descr': '<f4', 'fortran_order': False, }", eight), "needs"},
		{"not dict", npyBytes(1, "descr", eight), "not a dict"},
		{"unknown key", npyBytes(1, "{'descr': '<f4', 'x': 1}", eight), "unknown key"},
		{"v2 huge header", append([]byte("\x93NUMPY\x02\x00"), 0xff, 0xff, 0xff, 0x7f), "exceeds"},
	}
	for _, c := range cases {
		_, _, err := ReadNPY(bytes.NewReader(c.b))
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not mention %q", c.name, err, c.want)
		}
	}
}

func TestReadNPYFileSizeMismatch(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.npy")
	b := npyBytes(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }\n", make([]byte, 12))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ReadNPYFile(p); err == nil || !strings.Contains(err.Error(), "file has") {
		t.Fatalf("trailing bytes: err = %v, want size mismatch", err)
	}
	if err := os.WriteFile(p, b[:len(b)-4], 0o644); err != nil {
		t.Fatal(err)
	}
	shape, data, err := ReadNPYFile(p)
	if err != nil || len(shape) != 1 || len(data) != 2 {
		t.Fatalf("exact file: shape %v, %d elements, err %v", shape, len(data), err)
	}
}

func FuzzReadNPY(f *testing.F) {
	var buf bytes.Buffer
	WriteNPY(&buf, []int{2, 2}, []float32{1, 2, 3, 4})
	f.Add(buf.Bytes())
	f.Add(npyBytes(2, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", make([]byte, 4)))
	f.Add([]byte("\x93NUMPY\x01\x00\xff\xff{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		shape, data, err := ReadNPY(bytes.NewReader(b))
		if err != nil {
			return
		}
		n := 1
		for _, d := range shape {
			n *= d
		}
		if n != len(data) {
			t.Fatalf("shape %v but %d elements", shape, len(data))
		}
		var out bytes.Buffer
		if err := WriteNPY(&out, shape, data); err != nil {
			t.Fatalf("rewrite: %v", err)
		}
	})
}
