//go:build !tensorrt || !cgo

package trt

import (
	"context"
	"fmt"
)

// Built reports whether this binary has the TensorRT engine: false, this
// build has only the API (see ErrNotBuilt).
const Built = false

// Engine is a TensorRT engine; in this build there is none (Open fails
// with ErrNotBuilt).
type Engine struct{}

// Version returns ErrNotBuilt in this build.
func Version() (string, error) { return "", ErrNotBuilt }

// Open returns ErrNotBuilt in this build.
func Open(ctx context.Context, opts Options) (*Engine, error) {
	return nil, fmt.Errorf("tensorrt %s: %w", opts.ONNX, ErrNotBuilt)
}

// InputSize is 0 in this build.
func (e *Engine) InputSize() int { return 0 }

// OutputShapes is nil in this build.
func (e *Engine) OutputShapes() [][]int { return nil }

// OutputNames is nil in this build.
func (e *Engine) OutputNames() []string { return nil }

// InputBuffer is nil in this build.
func (e *Engine) InputBuffer() []float32 { return nil }

// OutputBuffers is nil in this build.
func (e *Engine) OutputBuffers() [][]float32 { return nil }

// Infer returns ErrNotBuilt in this build.
func (e *Engine) Infer(input []float32, outputs [][]float32) error { return ErrNotBuilt }

// Close does nothing in this build.
func (e *Engine) Close() error { return nil }
