package infer

import (
	"context"
	"fmt"

	"gocv.io/x/gocv"
)

// OpenCVBackend runs a raw YOLOv7 ONNX export with OpenCV's DNN module on
// the CPU. It is not safe for concurrent use (the Engine serializes calls).
type OpenCVBackend struct {
	net   gocv.Net
	info  ONNXInfo
	names []string // names of the unconnected output layers
	blob  gocv.Mat // 1x3xSxS input, reused
	outs  []*Tensor
}

// NewOpenCVBackend checks the model with CheckONNXForOpenCV (so that a
// file OpenCV would abort on is an error instead of a crash), loads it with
// ReadNetFromONNX on the OpenCV backend and CPU target, and sets OpenCV's
// thread pool to threads when threads > 0 (the pool is per process).
func NewOpenCVBackend(path string, threads int) (*OpenCVBackend, error) {
	info, err := CheckONNXForOpenCV(path)
	if err != nil {
		return nil, fmt.Errorf("opencv backend: %w", err)
	}
	setCVThreads(threads)
	net := gocv.ReadNetFromONNX(path)
	if net.Empty() {
		net.Close()
		return nil, fmt.Errorf("opencv backend: ReadNetFromONNX(%s) returned an empty net", path)
	}
	b := &OpenCVBackend{net: net, info: info}
	if err := net.SetPreferableBackend(gocv.NetBackendOpenCV); err != nil {
		b.Close()
		return nil, fmt.Errorf("opencv backend: set backend: %w", err)
	}
	if err := net.SetPreferableTarget(gocv.NetTargetCPU); err != nil {
		b.Close()
		return nil, fmt.Errorf("opencv backend: set target: %w", err)
	}
	for _, id := range net.GetUnconnectedOutLayers() {
		l := net.GetLayer(id)
		b.names = append(b.names, l.GetName())
		l.Close()
	}
	if len(b.names) != len(info.Outputs) {
		b.Close()
		return nil, fmt.Errorf("opencv backend: net has %d output layers %q, the model declares %d outputs", len(b.names), b.names, len(info.Outputs))
	}
	s := info.InputSize
	b.blob = gocv.NewMatWithSizes([]int{1, 3, s, s}, gocv.MatTypeCV32F)
	b.outs = make([]*Tensor, len(b.names))
	for i := range b.outs {
		b.outs[i] = &Tensor{}
	}
	return b, nil
}

// Info returns what the model checker found.
func (b *OpenCVBackend) Info() ONNXInfo { return b.info }

// Forward runs the network on a 1x3xSxS input and returns the raw head
// outputs in the net's output order (the decoder maps them to levels by
// H). The returned tensors are reused by the next call.
func (b *OpenCVBackend) Forward(ctx context.Context, input *Tensor) ([]*Tensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("opencv forward: %w", err)
	}
	s := b.info.InputSize
	if input == nil || len(input.Shape) != 4 || input.Shape[0] != 1 || input.Shape[1] != 3 || input.Shape[2] != s || input.Shape[3] != s || len(input.Data) != 3*s*s {
		var sh []int
		if input != nil {
			sh = input.Shape
		}
		return nil, fmt.Errorf("opencv forward: input shape %v, want [1 3 %d %d] with %d values", sh, s, s, 3*s*s)
	}
	dst, err := b.blob.DataPtrFloat32()
	if err != nil {
		return nil, fmt.Errorf("opencv forward: input blob: %w", err)
	}
	copy(dst, input.Data)
	b.net.SetInput(b.blob, b.info.Input)
	mats := b.net.ForwardLayers(b.names)
	defer func() {
		for i := range mats {
			mats[i].Close()
		}
	}()
	if len(mats) != len(b.outs) {
		return nil, fmt.Errorf("opencv forward: got %d outputs, want %d", len(mats), len(b.outs))
	}
	for i := range mats {
		dims := mats[i].Size()
		data, err := mats[i].DataPtrFloat32()
		if err != nil {
			return nil, fmt.Errorf("opencv forward: output %q: %w", b.names[i], err)
		}
		n := 1
		for _, d := range dims {
			n *= d
		}
		if len(dims) != 5 || n != len(data) {
			return nil, fmt.Errorf("opencv forward: output %q has dims %v and %d values, want 1x3xHxWx(5+nc)", b.names[i], dims, len(data))
		}
		t := b.outs[i]
		t.Shape = append(t.Shape[:0], dims...)
		if cap(t.Data) < n {
			t.Data = make([]float32, n)
		}
		t.Data = t.Data[:n]
		copy(t.Data, data)
	}
	return b.outs, nil
}

// Close releases the net and the input blob.
func (b *OpenCVBackend) Close() error {
	b.net.Close()
	if b.blob.Ptr() != nil {
		b.blob.Close()
	}
	return nil
}
