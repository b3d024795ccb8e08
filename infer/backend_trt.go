package infer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/yolo7d/yolo7d/infer/cudnn"
	"github.com/yolo7d/yolo7d/infer/trt"
	"github.com/yolo7d/yolo7d/tiny"
)

// trtBackend runs a TensorRT engine (infer/trt) built from the model's
// ONNX export; a native or .pt model is exported to ONNX first, into the
// engine cache directory.
type trtBackend struct {
	e         *trt.Engine
	inputSize int
	nc        int
	device    string
	outs      []*Tensor
}

// newTRTBackend opens a TensorRT engine for opts.Model; trt.ErrNotBuilt
// (wrapped) in builds without the tensorrt tag.
func newTRTBackend(ctx context.Context, opts Options, prec cudnn.Precision) (*trtBackend, error) {
	if !trt.Built {
		return nil, trt.ErrNotBuilt
	}
	cache := opts.TRTCacheDir
	if cache == "" {
		cache = filepath.Join(filepath.Dir(opts.Model), ".trt-cache")
	}
	onnx := opts.Model
	if !strings.EqualFold(filepath.Ext(onnx), ".onnx") {
		m, declared, err := loadCPUModel(opts.Model)
		if err != nil {
			return nil, fmt.Errorf("tensorrt: %w", err)
		}
		size := declared
		if size == 0 {
			size = opts.InputSize
		}
		if size == 0 {
			size = DefaultInputSize
		}
		if err := os.MkdirAll(cache, 0o750); err != nil {
			return nil, fmt.Errorf("tensorrt: engine cache: %w", err)
		}
		sum, err := FileSHA256(opts.Model)
		if err != nil {
			return nil, fmt.Errorf("tensorrt: %w", err)
		}
		onnx = filepath.Join(cache, fmt.Sprintf("%s-%d.onnx", sum[:16], size))
		if _, err := os.Stat(onnx); err != nil {
			if err := tiny.WriteONNXFile(onnx, m, size); err != nil {
				return nil, fmt.Errorf("tensorrt: export %s: %w", opts.Model, err)
			}
		}
	}
	p := trt.FP32
	if prec == cudnn.FP16 {
		p = trt.FP16
	}
	e, err := trt.Open(ctx, trt.Options{ONNX: onnx, CacheDir: cache, Precision: p})
	if err != nil {
		return nil, err
	}
	b := &trtBackend{e: e, inputSize: e.InputSize()}
	for _, s := range e.OutputShapes() {
		if len(s) != 5 || s[0] != 1 {
			e.Close()
			return nil, fmt.Errorf("tensorrt: %s: output shape %v, want 1x3xHxWx(5+nc)", onnx, s)
		}
		b.outs = append(b.outs, &Tensor{Shape: s, Data: make([]float32, s[0]*s[1]*s[2]*s[3]*s[4])})
		b.nc = s[4] - 5
	}
	if len(b.outs) != 3 {
		e.Close()
		return nil, fmt.Errorf("tensorrt: %s: %d outputs, want 3 raw head levels", onnx, len(b.outs))
	}
	if v, err := trt.Version(); err == nil {
		b.device = "TensorRT " + v + " " + p.String()
	}
	return b, nil
}

func (b *trtBackend) Forward(ctx context.Context, input *Tensor) ([]*Tensor, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tensorrt forward: %w", err)
	}
	s := b.inputSize
	if input == nil || len(input.Data) != 3*s*s {
		return nil, errors.New("tensorrt forward: input is not 1x3xSxS for the engine's S")
	}
	outs := [][]float32{b.outs[0].Data, b.outs[1].Data, b.outs[2].Data}
	if err := b.e.Infer(input.Data, outs); err != nil {
		return nil, fmt.Errorf("tensorrt forward: %w", err)
	}
	return b.outs, nil
}

func (b *trtBackend) Close() error { return b.e.Close() }
