package infer

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"gocv.io/x/gocv"

	"github.com/yolo7d/yolo7d/tiny"

	"github.com/yolo7d/yolo7d/tiny/tinytest"
)

// runONNXWithOpenCV loads path with OpenCV DNN (CPU), feeds the 1x3xSxS
// input and returns the unconnected outputs keyed by their height.
func runONNXWithOpenCV(t *testing.T, path string, size int, input []float32) map[int]*Tensor {
	t.Helper()
	net := gocv.ReadNetFromONNX(path)
	if net.Empty() {
		t.Fatalf("OpenCV could not load %s", path)
	}
	defer net.Close()
	if err := net.SetPreferableBackend(gocv.NetBackendOpenCV); err != nil {
		t.Fatal(err)
	}
	if err := net.SetPreferableTarget(gocv.NetTargetCPU); err != nil {
		t.Fatal(err)
	}
	raw := make([]byte, 4*len(input))
	for i, v := range input {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	blob, err := gocv.NewMatWithSizesFromBytes([]int{1, 3, size, size}, gocv.MatTypeCV32F, raw)
	if err != nil {
		t.Fatal(err)
	}
	defer blob.Close()
	net.SetInput(blob, tiny.ONNXInputName)
	var names []string
	for _, id := range net.GetUnconnectedOutLayers() {
		l := net.GetLayer(id)
		names = append(names, l.GetName())
		l.Close()
	}
	outs := net.ForwardLayers(names)
	res := make(map[int]*Tensor)
	for i, o := range outs {
		dims := o.Size()
		data, err := o.DataPtrFloat32()
		if err != nil {
			t.Fatalf("output %s: %v", names[i], err)
		}
		if len(dims) != 5 {
			t.Fatalf("output %s has dims %v, want 5", names[i], dims)
		}
		res[dims[2]] = &Tensor{Shape: dims, Data: append([]float32(nil), data...)}
		o.Close()
	}
	return res
}

func TestGeneratedModelRunsInOpenCV(t *testing.T) {
	tests := []struct {
		act  tiny.Act
		size int
	}{{tiny.ActReLU, 320}, {tiny.ActReLU, 640}, {tiny.ActLeaky, 320}}
	for _, tc := range tests {
		size := tc.size
		t.Run(string(tc.act)+"-"+strconv.Itoa(size), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "yolov7-tiny.onnx")
			if err := tiny.WriteRandomONNX(path, tiny.Config{Act: tc.act, NC: 80, Seed: 1}, size); err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(7, 7))
			in := make([]float32, 3*size*size)
			for i := range in {
				in[i] = rng.Float32()
			}
			outs := runONNXWithOpenCV(t, path, size, in)
			if len(outs) != 3 {
				t.Fatalf("%d outputs, want 3", len(outs))
			}
			for _, stride := range []int{8, 16, 32} {
				h := size / stride
				o := outs[h]
				if o == nil {
					t.Fatalf("no output of height %d (stride %d)", h, stride)
				}
				if want := []int{1, 3, h, h, 85}; fmt.Sprint(o.Shape) != fmt.Sprint(want) {
					t.Fatalf("stride %d: shape %v, want %v", stride, o.Shape, want)
				}
				var low, n int
				var objSum, objSq float64
				for i := 0; i < len(o.Data); i += 85 {
					for _, v := range o.Data[i : i+85] {
						if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
							t.Fatalf("stride %d: non-finite output %v", stride, v)
						}
					}
					obj := o.Data[i+4]
					p := 1 / (1 + math.Exp(-float64(obj)))
					objSum += float64(obj)
					objSq += float64(obj) * float64(obj)
					if p < 0.1 {
						low++
					}
					n++
				}
				mean := objSum / float64(n)
				std := math.Sqrt(max(objSq/float64(n)-mean*mean, 0))
				t.Logf("size %d stride %d: obj logit mean %.2f std %.2f, %.1f%% of cells with sigmoid(obj) < 0.1",
					size, stride, mean, std, 100*float64(low)/float64(n))
				if std < 0.05 {
					t.Errorf("stride %d: obj logits barely vary (std %.3g): the features died on the way", stride, std)
				}
				if float64(low) < 0.9*float64(n) {
					t.Errorf("stride %d: only %d of %d cells have sigmoid(obj) < 0.1", stride, low, n)
				}
			}
		})
	}
}

// goldenForwardDir returns ../shared/golden/forward holding the relu raw
// export, or skips.
func goldenForwardDir(t *testing.T) string {
	t.Helper()
	g := tinytest.GoldenOrSkip(t, "forward")
	if _, err := os.Stat(filepath.Join(g, "yolov7-tiny-relu-raw.onnx")); err != nil {
		t.Skipf("golden data absent: %v", err)
	}
	return g
}

// readNPYFloat32 reads a float32 .npy with tiny.ReadNPYFile.
func readNPYFloat32(t *testing.T, path string) ([]int, []float32) {
	t.Helper()
	shape, data, err := tiny.ReadNPYFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return shape, data
}

// TestExportOfGoldenWeightsMatchesOfficialOutputs proves the writer writes
// the right graph: the official relu raw export's weights (BN folded by
// torch, ImplicitA/M folded here) go through tiny.ModelFromONNX and
// tiny.ExportONNX, OpenCV runs the result on the golden input, and the
// outputs must equal the official torch outputs within 1e-3.
func TestExportOfGoldenWeightsMatchesOfficialOutputs(t *testing.T) {
	g := goldenForwardDir(t)
	om, err := tiny.ReadONNXFile(filepath.Join(g, "yolov7-tiny-relu-raw.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := tiny.ModelFromONNX(om)
	if err != nil {
		t.Fatal(err)
	}
	if m.Act != tiny.ActReLU || m.NC != 80 {
		t.Fatalf("imported act %s nc %d, want relu 80", m.Act, m.NC)
	}
	path := filepath.Join(t.TempDir(), "golden-reexport.onnx")
	if err := tiny.WriteONNXFile(path, m, 640); err != nil {
		t.Fatal(err)
	}
	shape, in := readNPYFloat32(t, filepath.Join(g, "input.npy"))
	if fmt.Sprint(shape) != "[1 3 640 640]" {
		t.Fatalf("input.npy shape %v", shape)
	}
	outs := runONNXWithOpenCV(t, path, 640, in)
	for i, h := range []int{80, 40, 20} {
		wantShape, want := readNPYFloat32(t, filepath.Join(g, fmt.Sprintf("relu_raw_p%d.npy", i+3)))
		got := outs[h]
		if got == nil {
			t.Fatalf("no output of height %d", h)
		}
		if fmt.Sprint(got.Shape) != fmt.Sprint(wantShape) {
			t.Fatalf("p%d: shape %v, want %v", i+3, got.Shape, wantShape)
		}
		var maxErr float64
		at := 0
		for j := range want {
			if d := math.Abs(float64(got.Data[j] - want[j])); d > maxErr || math.IsNaN(d) {
				maxErr, at = d, j
			}
		}
		t.Logf("p%d: max abs error %.3g (at %d: got %v, want %v)", i+3, maxErr, at, got.Data[at], want[at])
		if !(maxErr <= 1e-3) {
			t.Errorf("p%d: max abs error %.3g > 1e-3 (at %d: got %v, want %v)", i+3, maxErr, at, got.Data[at], want[at])
		}
	}
}
