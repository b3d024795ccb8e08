package trt

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/yolo7d/yolo7d/tiny/tinytest"
)

func TestParsePrecision(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Precision
	}{
		{"fp32", FP32}, {"FP32", FP32}, {"float32", FP32},
		{"fp16", FP16}, {" Fp16 ", FP16}, {"float16", FP16}, {"half", FP16},
		{"int8", INT8}, {"INT8", INT8},
	} {
		got, err := ParsePrecision(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParsePrecision(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "fp64", "int4", "16", "bf16"} {
		_, err := ParsePrecision(bad)
		if err == nil {
			t.Errorf("ParsePrecision(%q) accepted", bad)
			continue
		}
		if !strings.Contains(err.Error(), `"`+bad+`"`) {
			t.Errorf("ParsePrecision(%q) error %q does not name the value", bad, err)
		}
	}
}

func TestPrecisionText(t *testing.T) {
	for _, p := range []Precision{FP32, FP16, INT8} {
		b, err := p.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var back Precision
		if err := back.UnmarshalText(b); err != nil || back != p {
			t.Errorf("%v: round trip through %q gave %v, %v", p, b, back, err)
		}
	}
	if s := Precision(7).String(); s != "Precision(7)" {
		t.Errorf("Precision(7).String() = %q", s)
	}
	if _, err := Precision(-1).MarshalText(); err == nil {
		t.Error("Precision(-1) marshalled")
	}
}

func TestOpenWithoutTensorRTReturnsErrNotBuilt(t *testing.T) {
	if Built {
		t.Skip("built with -tags tensorrt")
	}
	_, err := Open(context.Background(), Options{ONNX: "model.onnx", Precision: FP16})
	if !errors.Is(err, ErrNotBuilt) {
		t.Fatalf("Open: %v, want ErrNotBuilt", err)
	}
	if !strings.Contains(err.Error(), "model.onnx") || !strings.Contains(err.Error(), "TAGS=tensorrt") {
		t.Errorf("error %q should name the model and how to rebuild", err)
	}
	if _, err := Version(); !errors.Is(err, ErrNotBuilt) {
		t.Errorf("Version: %v, want ErrNotBuilt", err)
	}
	var e Engine
	if err := e.Infer(nil, nil); !errors.Is(err, ErrNotBuilt) {
		t.Errorf("Infer: %v, want ErrNotBuilt", err)
	}
}

func TestOptionsCheck(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string // "" = valid
	}{
		{Options{ONNX: "m.onnx"}, ""},
		{Options{ONNX: "m.onnx", Precision: INT8, CalibDir: "calib"}, ""},
		{Options{}, "no ONNX model"},
		{Options{ONNX: "m.onnx", Precision: 3}, "invalid precision 3"},
		{Options{ONNX: "m.onnx", Precision: INT8}, "CalibDir"},
		{Options{ONNX: "m.onnx", WorkspaceBytes: -1}, "negative workspace"},
	} {
		err := tc.opts.check()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%+v: %v", tc.opts, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%+v: error %v, want one containing %q", tc.opts, err, tc.want)
		}
	}
}

func TestPlanKeyChangesWithEveryInput(t *testing.T) {
	base := planKey{ONNX: [32]byte{1}, Library: 8502, Headers: "8.5.2.2", GPU: "Orin", Major: 8, Minor: 7, Precision: FP16}
	seen := map[string]string{base.sum(): "base"}
	for name, k := range map[string]planKey{
		"onnx":      {ONNX: [32]byte{2}, Library: 8502, Headers: "8.5.2.2", GPU: "Orin", Major: 8, Minor: 7, Precision: FP16},
		"library":   {ONNX: [32]byte{1}, Library: 100300, Headers: "8.5.2.2", GPU: "Orin", Major: 8, Minor: 7, Precision: FP16},
		"headers":   {ONNX: [32]byte{1}, Library: 8502, Headers: "8.5.2.1", GPU: "Orin", Major: 8, Minor: 7, Precision: FP16},
		"gpu":       {ONNX: [32]byte{1}, Library: 8502, Headers: "8.5.2.2", GPU: "Xavier", Major: 8, Minor: 7, Precision: FP16},
		"cc":        {ONNX: [32]byte{1}, Library: 8502, Headers: "8.5.2.2", GPU: "Orin", Major: 7, Minor: 2, Precision: FP16},
		"precision": {ONNX: [32]byte{1}, Library: 8502, Headers: "8.5.2.2", GPU: "Orin", Major: 8, Minor: 7, Precision: FP32},
		"calib":     {ONNX: [32]byte{1}, Library: 8502, Headers: "8.5.2.2", GPU: "Orin", Major: 8, Minor: 7, Precision: FP16, Calib: []calibFile{{Name: "a.bin", Size: 4}}},
	} {
		s := k.sum()
		if prev, ok := seen[s]; ok {
			t.Errorf("changing %s gives the same key as %s", name, prev)
		}
		seen[s] = name
	}
	if base.sum() != base.sum() || len(base.sum()) != 64 {
		t.Errorf("key %q is not a stable 64-hex SHA-256", base.sum())
	}

	plan, calib := base.cachePaths("/c", "/models/yolov7-tiny.onnx")
	if want := "/c/yolov7-tiny.fp16." + base.sum() + ".plan"; plan != want || calib != "" {
		t.Errorf("cachePaths = %q, %q; want %q, \"\"", plan, calib, want)
	}
	base.Precision = INT8
	_, calib = base.cachePaths("/c", "/models/yolov7-tiny.onnx")
	if !strings.HasPrefix(calib, "/c/yolov7-tiny.int8.") || !strings.HasSuffix(calib, ".calib") {
		t.Errorf("calibration cache path %q", calib)
	}
	other := base
	other.GPU = "Xavier"
	if other.calibSum() != base.calibSum() {
		t.Error("the calibration cache key depends on the GPU; it should carry over")
	}
}

func TestWriteFileAtomicReplaces(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.fp16.plan")
	for _, data := range [][]byte{[]byte("first plan"), []byte("second")} {
		if err := writeFileAtomic(p, data); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back %q, %v; want %q", got, err, data)
		}
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
	if err := writeFileAtomic(filepath.Join(dir, "missing", "x.plan"), []byte("x")); err == nil {
		t.Error("writing into a missing directory succeeded")
	}
}

func TestListCalib(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, n int) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), make([]byte, n), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := listCalib(dir); err == nil || !strings.Contains(err.Error(), "no *.bin") {
		t.Errorf("empty dir: %v", err)
	}
	write("b.bin", 48)
	write("a.bin", 48)
	write("notes.txt", 3)
	files, err := listCalib(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 2 || files[0].Name != "a.bin" || files[1].Name != "b.bin" || files[0].Size != 48 {
		t.Errorf("listCalib = %+v, want a.bin, b.bin of 48 bytes", files)
	}
	write("c.bin", 44)
	if _, err := listCalib(dir); err == nil || !strings.Contains(err.Error(), "c.bin") {
		t.Errorf("mixed sizes: %v, want an error naming c.bin", err)
	}
	write("c.bin", 47)
	if _, err := listCalib(dir); err == nil || !strings.Contains(err.Error(), "float32") {
		t.Errorf("odd size: %v", err)
	}
	if _, err := listCalib(filepath.Join(dir, "nope")); err == nil {
		t.Error("missing dir accepted")
	}
}

func TestCheckIO(t *testing.T) {
	names := []string{"a", "b", "c"}
	good := [][]int{{1, 3, 80, 80, 85}, {1, 3, 40, 40, 85}, {1, 3, 20, 20, 85}}
	if s, err := checkIO([]int{1, 3, 640, 640}, good, names); err != nil || s != 640 {
		t.Fatalf("checkIO(640) = %d, %v", s, err)
	}
	for _, tc := range []struct {
		name string
		in   []int
		outs [][]int
		want string
	}{
		{"dynamic input", []int{1, 3, -1, -1}, good, "input has shape 1x3x-1x-1"},
		{"batch 2", []int{2, 3, 640, 640}, good, "want 1x3xSxS"},
		{"not /32", []int{1, 3, 630, 630}, good, "multiple of 32"},
		{"grid export", []int{1, 3, 640, 640}, [][]int{{1, 25200, 85}}, "--grid"},
		{"two outputs", []int{1, 3, 640, 640}, good[:2], "want 3 raw outputs"},
		{"class mismatch", []int{1, 3, 640, 640}, [][]int{{1, 3, 80, 80, 85}, {1, 3, 40, 40, 6}, {1, 3, 20, 20, 85}}, `output "b" has shape`},
		{"wrong grid", []int{1, 3, 320, 320}, good, "want 40x40"},
		{"anchors", []int{1, 3, 640, 640}, [][]int{{1, 4, 80, 80, 85}, {1, 3, 40, 40, 85}, {1, 3, 20, 20, 85}}, "1x3xHxWx(5+nc)"},
	} {
		if _, err := checkIO(tc.in, tc.outs, names); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

func TestLibVersion(t *testing.T) {
	for v, want := range map[int]string{8502: "8.5.2", 8602: "8.6.2", 100300: "10.3.0", 101303: "10.13.3"} {
		if got := libVersion(v); got != want {
			t.Errorf("libVersion(%d) = %q, want %q", v, got, want)
		}
	}
}

func TestPrecheckONNX(t *testing.T) {
	dir := tinytest.GoldenOrSkip(t, "forward")
	raw, err := os.ReadFile(filepath.Join(dir, "yolov7-tiny-relu-raw.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if err := precheckONNX(raw); err != nil {
		t.Errorf("raw export rejected: %v", err)
	}
	grid, err := os.ReadFile(filepath.Join(dir, "yolov7-tiny-leaky-fused-grid.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if err := precheckONNX(grid); err == nil || !strings.Contains(err.Error(), "--grid") {
		t.Errorf("grid export: %v, want an error telling to export without --grid", err)
	}
	if err := precheckONNX([]byte("not onnx")); err != nil {
		t.Errorf("an unreadable graph is TensorRT's to judge, got %v", err)
	}
}
