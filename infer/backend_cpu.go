package infer

import (
	"context"
	"fmt"

	"github.com/yolo7d/yolo7d/tiny"
)

// CPUBackend runs YOLOv7-Tiny with the tiny package's CPU device: OpenBLAS
// SGEMM for the convolutions, everything else in Go, no OpenCV. It loads a
// raw or fused export of the official export.py (or `yolo7d model init`)
// and runs it at the input size the file declares. It is not safe for
// concurrent use (the Engine serializes calls).
type CPUBackend struct {
	dev  *tiny.CPU
	plan *tiny.Plan
	info CPUInfo
	outs []*Tensor
}

// CPUInfo describes the model a CPUBackend runs.
type CPUInfo struct {
	InputSize  int
	NumClasses int
	Act        tiny.Act
	Threads    int
	Names      []string // class names the model file carries (may be nil)
}

// defaultCPUInputSize is used when the model's input has no fixed size.
const defaultCPUInputSize = DefaultInputSize

// NewCPUBackend loads the model at path (NewCPUBackendSize with no
// fallback input size).
func NewCPUBackend(path string, threads int) (*CPUBackend, error) {
	return NewCPUBackendSize(path, threads, 0)
}

// NewCPUBackendSize loads the model at path as a deploy-form model and
// plans its forward on the CPU device with threads goroutines (0 = all
// cores). The file may be a yolo7d native .safetensors model
// (tiny.ReadModelFile), an ONNX export (tiny.ModelFromONNX: BatchNorm and
// ImplicitA/M folded) or an official .pt checkpoint (tiny.ImportModel).
// The input size is the one the file declares (native metadata input_size,
// a fixed ONNX input), else size, else DefaultInputSize.
func NewCPUBackendSize(path string, threads, size int) (*CPUBackend, error) {
	m, declared, err := loadCPUModel(path)
	if err != nil {
		return nil, fmt.Errorf("cpu backend: %w", err)
	}
	if declared > 0 {
		size = declared
	}
	if size <= 0 {
		size = defaultCPUInputSize
	}
	dev := tiny.NewCPU(threads)
	plan, err := m.NewPlan(dev, size)
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("cpu backend: %s: %w", path, err)
	}
	b := &CPUBackend{
		dev:  dev,
		plan: plan,
		info: CPUInfo{InputSize: size, NumClasses: m.NC, Act: m.Act, Threads: dev.Threads(), Names: m.Names},
	}
	for _, s := range plan.OutputShapes() {
		b.outs = append(b.outs, &Tensor{Shape: s})
	}
	return b, nil
}

// Info describes the loaded model.
func (b *CPUBackend) Info() CPUInfo { return b.info }

// Forward runs the network on a 1x3xSxS input and returns the raw head
// outputs p3, p4, p5 (each 1x3xHxWx(5+nc)). The returned tensors are
// reused by the next call.
func (b *CPUBackend) Forward(ctx context.Context, input *Tensor) ([]*Tensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("cpu forward: %w", err)
	}
	s := b.info.InputSize
	if input == nil || len(input.Shape) != 4 || input.Shape[0] != 1 || input.Shape[1] != 3 || input.Shape[2] != s || input.Shape[3] != s || len(input.Data) != 3*s*s {
		var sh []int
		if input != nil {
			sh = input.Shape
		}
		return nil, fmt.Errorf("cpu forward: input shape %v, want [1 3 %d %d] with %d values", sh, s, s, 3*s*s)
	}
	outs, err := b.plan.Forward(input.Data)
	if err != nil {
		return nil, fmt.Errorf("cpu forward: %w", err)
	}
	for i, o := range outs {
		b.outs[i].Data = o
	}
	return b.outs, nil
}

// Close stops the CPU device's worker goroutines; the plan's memory is
// garbage collected. The backend must not be used afterwards. Close is
// safe to call more than once.
func (b *CPUBackend) Close() error {
	if b.dev != nil {
		b.dev.Close()
	}
	return nil
}

// loadCPUModel reads a native, ONNX or .pt model and the input size the
// file declares (0 when none).
func loadCPUModel(path string) (*tiny.Model, int, error) {
	native, err := tiny.IsSafetensorsFile(path)
	if err != nil {
		return nil, 0, err
	}
	if native {
		m, meta, err := tiny.ReadModelFile(path)
		if err != nil {
			return nil, 0, err
		}
		return m, meta.InputSize, nil
	}
	om, err := tiny.ReadONNXFile(path)
	if err != nil {
		// Not ONNX: an official checkpoint, or an error naming the file.
		m, ierr := tiny.ImportModel(path)
		if ierr != nil {
			return nil, 0, ierr
		}
		return m, 0, nil
	}
	m, err := tiny.ModelFromONNX(om)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", path, err)
	}
	size := 0
	if len(om.Inputs) > 0 {
		if d := om.Inputs[0].Dims; len(d) == 4 && d[2] > 0 && d[2] == d[3] {
			size = int(d[2])
		}
	}
	return m, size, nil
}
