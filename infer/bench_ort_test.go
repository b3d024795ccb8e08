//go:build ort

// ONNX Runtime as a peer in BenchmarkForward (backend=ort), built only with
// -tags ort (cgo; github.com/yalue/onnxruntime_go), so builds without the
// tag need neither the library nor its headers.
//
// Fetching the library (CPU build of ONNX Runtime 1.30.0, linux x64, from
// the npm registry; no install script needed):
//
//	mkdir -p /tmp/ort && cd /tmp/ort
//	npm pack onnxruntime-node@1.30.0     # onnxruntime-node-1.30.0.tgz, 114 MB
//	tar xzf onnxruntime-node-1.30.0.tgz package/bin/napi-v6/linux/x64/
//	export YOLO7D_ORT_LIB=/tmp/ort/package/bin/napi-v6/linux/x64/libonnxruntime.so.1
//
// then
//
//	go test -run '^$' -bench Forward -count 6 -tags ort ./infer/
//
// The ort backend is skipped when YOLO7D_ORT_LIB is unset or names no file.
// It runs 2 intra-op threads (benchThreads), 1 inter-op thread, and
// requests every output of the graph: with only p3 requested ORT prunes
// the other heads and times a smaller network.

package infer

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"

	ort "github.com/yalue/onnxruntime_go"
	"github.com/yolo7d/yolo7d/tiny"
)

func init() {
	benchPeers = append(benchPeers, benchPeer{"ort", openORTBench})
}

var ortInit struct {
	once sync.Once
	err  error
}

// ortLib initialises the ONNX Runtime environment once, from
// YOLO7D_ORT_LIB, or skips b.
func ortLib(b testing.TB) {
	lib := os.Getenv("YOLO7D_ORT_LIB")
	if lib == "" {
		b.Skip("YOLO7D_ORT_LIB unset (see bench_ort_test.go)")
	}
	if _, err := os.Stat(lib); err != nil {
		b.Skipf("YOLO7D_ORT_LIB: %v", err)
	}
	ortInit.once.Do(func() {
		ort.SetSharedLibraryPath(lib)
		ortInit.err = ort.InitializeEnvironment()
	})
	if ortInit.err != nil {
		b.Skipf("onnxruntime %s: %v", lib, ortInit.err)
	}
}

// ortBackend is a Backend over an ort.AdvancedSession with preallocated
// input and output tensors (all outputs of the graph).
type ortBackend struct {
	sess  *ort.AdvancedSession
	in    *ort.Tensor[float32]
	outs  []*ort.Tensor[float32]
	views []*Tensor
}

func openORTBench(b *testing.B, path string, size, threads int) Backend {
	ortLib(b)
	be, err := newORTBackend(path, size, threads)
	if err != nil {
		b.Fatal(err)
	}
	return be
}

func newORTBackend(path string, size, threads int) (*ortBackend, error) {
	ins, outs, err := ort.GetInputOutputInfo(path)
	if err != nil {
		return nil, err
	}
	if len(ins) != 1 {
		return nil, fmt.Errorf("ort: %d inputs, want 1", len(ins))
	}
	opts, err := ort.NewSessionOptions()
	if err != nil {
		return nil, err
	}
	defer opts.Destroy()
	if err := opts.SetIntraOpNumThreads(threads); err != nil {
		return nil, err
	}
	if err := opts.SetInterOpNumThreads(1); err != nil {
		return nil, err
	}
	be := &ortBackend{}
	if be.in, err = ort.NewEmptyTensor[float32](ort.NewShape(1, 3, int64(size), int64(size))); err != nil {
		return nil, err
	}
	var outNames []string
	var outVals []ort.Value
	for _, o := range outs {
		t, err := ort.NewEmptyTensor[float32](o.Dimensions)
		if err != nil {
			be.Close()
			return nil, fmt.Errorf("ort: output %s: %w", o.Name, err)
		}
		be.outs = append(be.outs, t)
		outNames = append(outNames, o.Name)
		outVals = append(outVals, t)
		sh := make([]int, len(o.Dimensions))
		for i, d := range o.Dimensions {
			sh[i] = int(d)
		}
		be.views = append(be.views, &Tensor{Shape: sh, Data: t.GetData()})
	}
	be.sess, err = ort.NewAdvancedSession(path, []string{ins[0].Name}, outNames, []ort.Value{be.in}, outVals, opts)
	if err != nil {
		be.Close()
		return nil, err
	}
	return be, nil
}

// Forward copies input into the session's input tensor and runs the graph.
func (be *ortBackend) Forward(_ context.Context, input *Tensor) ([]*Tensor, error) {
	copy(be.in.GetData(), input.Data)
	if err := be.sess.Run(); err != nil {
		return nil, err
	}
	return be.views, nil
}

func (be *ortBackend) Close() error {
	if be.sess != nil {
		be.sess.Destroy()
	}
	if be.in != nil {
		be.in.Destroy()
	}
	for _, t := range be.outs {
		t.Destroy()
	}
	return nil
}

// TestORTMatchesCPU: the ort peer requests all three heads and agrees with
// the CPU backend on a generated model (when YOLO7D_ORT_LIB is set).
func TestORTMatchesCPU(t *testing.T) {
	ortLib(t)
	const size = 160
	path := filepath.Join(t.TempDir(), "m.onnx")
	if err := tiny.WriteRandomONNX(path, tiny.Config{Act: tiny.ActReLU, NC: 80, Seed: 7}, size); err != nil {
		t.Fatal(err)
	}
	ob, err := newORTBackend(path, size, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	cb, err := NewCPUBackend(path, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	in := &Tensor{Shape: []int{1, 3, size, size}, Data: make([]float32, 3*size*size)}
	for i := range in.Data {
		in.Data[i] = float32(i%251) / 250
	}
	want, err := cb.Forward(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ob.Forward(context.Background(), in)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || len(want) != 3 {
		t.Fatalf("ort %d outputs, cpu %d, want 3", len(got), len(want))
	}
	for k := range got {
		if len(got[k].Data) != len(want[k].Data) {
			t.Fatalf("p%d: ort %d values, cpu %d", k+3, len(got[k].Data), len(want[k].Data))
		}
		var d float64
		for i, v := range got[k].Data {
			d = max(d, math.Abs(float64(v-want[k].Data[i])))
		}
		if d > 1e-3 {
			t.Errorf("p%d: max abs diff %.3g between ort and cpu", k+3, d)
		}
	}
}
