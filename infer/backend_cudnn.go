package infer

import (
	"context"
	"fmt"

	"github.com/yolo7d/yolo7d/infer/cudnn"
	"github.com/yolo7d/yolo7d/tiny"
)

// CUDNNBackend runs YOLOv7-Tiny's tiny.Plan on the GPU through
// infer/cudnn: the same network code as the CPU backend, every heavy op a
// cuDNN call. It is not safe for concurrent use (the Engine serializes
// calls).
type CUDNNBackend struct {
	lib  *cudnn.Lib
	dev  *cudnn.Device
	plan *tiny.Plan
	info CPUInfo
	gpu  cudnn.Info
	outs []*Tensor
}

// NewCUDNNBackend loads the CUDA and cuDNN libraries (ErrNotAvailable
// wrapped when they or a GPU are missing), then the model at path as the
// CPU backend does, and plans it on a GPU device at the declared input
// size (else size, else DefaultInputSize).
func NewCUDNNBackend(path string, size int, prec cudnn.Precision, libOpts cudnn.Options) (*CUDNNBackend, error) {
	lib, err := cudnn.Load(libOpts)
	if err != nil {
		return nil, err
	}
	m, declared, err := loadCPUModel(path)
	if err != nil {
		lib.Close()
		return nil, fmt.Errorf("cudnn backend: %w", err)
	}
	if declared > 0 {
		size = declared
	}
	if size <= 0 {
		size = DefaultInputSize
	}
	dev, err := lib.NewDevice(cudnn.DeviceOptions{Precision: prec, Async: true, ConstParams: true})
	if err != nil {
		lib.Close()
		return nil, fmt.Errorf("cudnn backend: %w", err)
	}
	plan, err := m.NewPlan(dev, size)
	if err != nil {
		dev.Close()
		lib.Close()
		return nil, fmt.Errorf("cudnn backend: %s: %w", path, err)
	}
	b := &CUDNNBackend{lib: lib, dev: dev, plan: plan, gpu: lib.Info(),
		info: CPUInfo{InputSize: size, NumClasses: m.NC, Act: m.Act, Names: m.Names}}
	for _, s := range plan.OutputShapes() {
		b.outs = append(b.outs, &Tensor{Shape: s})
	}
	return b, nil
}

// Info describes the loaded model (Threads is 0).
func (b *CUDNNBackend) Info() CPUInfo { return b.info }

// GPU describes the libraries and the GPU.
func (b *CUDNNBackend) GPU() cudnn.Info { return b.gpu }

// Forward runs the network on a 1x3xSxS input and returns the raw head
// outputs p3, p4, p5, reused by the next call.
func (b *CUDNNBackend) Forward(ctx context.Context, input *Tensor) ([]*Tensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("cudnn forward: %w", err)
	}
	s := b.info.InputSize
	if input == nil || len(input.Shape) != 4 || input.Shape[0] != 1 || input.Shape[1] != 3 || input.Shape[2] != s || input.Shape[3] != s || len(input.Data) != 3*s*s {
		var sh []int
		if input != nil {
			sh = input.Shape
		}
		return nil, fmt.Errorf("cudnn forward: input shape %v, want [1 3 %d %d] with %d values", sh, s, s, 3*s*s)
	}
	outs, err := b.plan.Forward(input.Data)
	if err != nil {
		return nil, fmt.Errorf("cudnn forward: %w", err)
	}
	for i, o := range outs {
		b.outs[i].Data = o
	}
	return b.outs, nil
}

// Close frees the GPU memory. The libraries stay loaded (unloading CUDA
// under a live process is not supported by the driver).
func (b *CUDNNBackend) Close() error {
	if b.dev == nil {
		return nil
	}
	err := b.dev.Close()
	b.dev = nil
	return err
}
