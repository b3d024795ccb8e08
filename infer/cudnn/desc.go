package cudnn

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/yolo7d/yolo7d/tiny"
)

// Descriptor kinds of y7_cudnnCreateDesc.
const (
	descTensor = iota
	descFilter
	descConv
	descAct
	descPool
	descOp
)

// descriptors are the Device's reusable cuDNN descriptors, set again for
// each call (setting one is a host-side write of a few fields).
type descriptors struct {
	t    [6]unsafe.Pointer // tensors
	f    unsafe.Pointer    // filter
	conv unsafe.Pointer
	act  unsafe.Pointer
	pool unsafe.Pointer
	op   unsafe.Pointer
}

func (s *descriptors) create(d *Device) error {
	mk := func(kind int, dst *unsafe.Pointer) error {
		var p unsafe.Pointer // a local: cgo may not see the Device's Go pointers
		if rc := C.y7_cudnnCreateDesc(d.a, C.int(kind), &p); rc != 0 {
			return d.lib.dnnErr("cudnnCreate*Descriptor", rc)
		}
		*dst = p
		return nil
	}
	for i := range s.t {
		if err := mk(descTensor, &s.t[i]); err != nil {
			return err
		}
	}
	for _, x := range []struct {
		kind int
		p    *unsafe.Pointer
	}{{descFilter, &s.f}, {descConv, &s.conv}, {descAct, &s.act}, {descPool, &s.pool}, {descOp, &s.op}} {
		if err := mk(x.kind, x.p); err != nil {
			return err
		}
	}
	return nil
}

func (s *descriptors) destroy(d *Device) {
	for i, p := range s.t {
		if p != nil {
			C.y7_cudnnDestroyDesc(d.a, descTensor, p)
			s.t[i] = nil
		}
	}
	for _, x := range []struct {
		kind int
		p    *unsafe.Pointer
	}{{descFilter, &s.f}, {descConv, &s.conv}, {descAct, &s.act}, {descPool, &s.pool}, {descOp, &s.op}} {
		if *x.p != nil {
			C.y7_cudnnDestroyDesc(d.a, C.int(x.kind), *x.p)
			*x.p = nil
		}
	}
}

// tensor sets tensor descriptor i to the view t (its batch stride kept:
// a channel slice of a concat buffer is described in place).
func (d *Device) tensor(i int, t tiny.NCHW, dtype C.int) (unsafe.Pointer, error) {
	desc := d.descs.t[i]
	hw := t.H * t.W
	if rc := C.y7_cudnnSetTensor4dDescriptorEx(d.a, desc, dtype, C.int(t.N), C.int(t.C), C.int(t.H), C.int(t.W),
		C.int(t.BatchStride()), C.int(hw), C.int(t.W), 1); rc != 0 {
		return nil, fmt.Errorf("tensor %dx%dx%dx%d: %w", t.N, t.C, t.H, t.W, d.lib.dnnErr("cudnnSetTensor4dDescriptorEx", rc))
	}
	return desc, nil
}

// dense sets tensor descriptor i to a dense n x c x h x w tensor.
func (d *Device) dense(i, n, c, h, w int, dtype C.int) (unsafe.Pointer, error) {
	return d.tensor(i, tiny.NCHW{N: n, C: c, H: h, W: w}, dtype)
}

// vector sets tensor descriptor i to 1 x c x 1 x 1 (per-channel values).
func (d *Device) vector(i, c int) (unsafe.Pointer, error) {
	return d.dense(i, 1, c, 1, 1, C.Y7_CUDNN_DATA_FLOAT)
}

// filter sets the filter descriptor to out x in x k x k.
func (d *Device) filter(out, in, k int, dtype C.int) (unsafe.Pointer, error) {
	if rc := C.y7_cudnnSetFilter4dDescriptor(d.a, d.descs.f, dtype, C.Y7_CUDNN_TENSOR_NCHW, C.int(out), C.int(in), C.int(k), C.int(k)); rc != 0 {
		return nil, fmt.Errorf("filter %dx%dx%dx%d: %w", out, in, k, k, d.lib.dnnErr("cudnnSetFilter4dDescriptor", rc))
	}
	return d.descs.f, nil
}

// convolution sets the convolution descriptor (cross-correlation, as
// every framework's "conv").
func (d *Device) convolution(pad, stride, groups int, half bool) (unsafe.Pointer, error) {
	c := d.descs.conv
	math := C.int(C.Y7_CUDNN_DEFAULT_MATH)
	if half {
		math = C.Y7_CUDNN_TENSOR_OP_MATH
	}
	// Half data accumulates in float (cuDNN's "pseudo half" configuration).
	if rc := C.y7_cudnnSetConvolution2dDescriptor(d.a, c, C.int(pad), C.int(pad), C.int(stride), C.int(stride), 1, 1,
		C.Y7_CUDNN_CROSS_CORRELATION, C.Y7_CUDNN_DATA_FLOAT); rc != 0 {
		return nil, d.lib.dnnErr("cudnnSetConvolution2dDescriptor", rc)
	}
	if rc := C.y7_cudnnSetConvolutionMathType(d.a, c, math); rc != 0 {
		return nil, d.lib.dnnErr("cudnnSetConvolutionMathType", rc)
	}
	if rc := C.y7_cudnnSetConvolutionGroupCount(d.a, c, C.int(groups)); rc != 0 {
		return nil, d.lib.dnnErr("cudnnSetConvolutionGroupCount", rc)
	}
	return c, nil
}

// activation sets the activation descriptor: relu or identity.
func (d *Device) activation(relu bool) (unsafe.Pointer, error) {
	mode := C.int(C.Y7_CUDNN_ACTIVATION_IDENTITY)
	if relu {
		mode = C.Y7_CUDNN_ACTIVATION_RELU
	}
	if rc := C.y7_cudnnSetActivationDescriptor(d.a, d.descs.act, mode, C.Y7_CUDNN_PROPAGATE_NAN, 0); rc != 0 {
		return nil, d.lib.dnnErr("cudnnSetActivationDescriptor", rc)
	}
	return d.descs.act, nil
}

// opTensor sets the op-tensor descriptor (float compute).
func (d *Device) opTensor(op C.int) (unsafe.Pointer, error) {
	if rc := C.y7_cudnnSetOpTensorDescriptor(d.a, d.descs.op, op, C.Y7_CUDNN_DATA_FLOAT, C.Y7_CUDNN_PROPAGATE_NAN); rc != 0 {
		return nil, d.lib.dnnErr("cudnnSetOpTensorDescriptor", rc)
	}
	return d.descs.op, nil
}

// convert copies n values between dense buffers of two data types.
func (d *Device) convert(dst unsafe.Pointer, dt C.int, src unsafe.Pointer, st C.int, n int) error {
	sd, err := d.dense(4, 1, n, 1, 1, st)
	if err != nil {
		return err
	}
	dd, err := d.dense(5, 1, n, 1, 1, dt)
	if err != nil {
		return err
	}
	if rc := C.y7_cudnnTransformTensor(d.a, d.handle, 1, sd, src, 0, dd, dst); rc != 0 {
		return d.lib.dnnErr("cudnnTransformTensor", rc)
	}
	return nil
}
