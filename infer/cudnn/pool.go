package cudnn

/*
#include "shim.h"
*/
import "C"

import (
	"unsafe"

	"github.com/yolo7d/yolo7d/tiny"
)

// pooling sets the pooling descriptor: max, padding acting as -Inf
// (cuDNN's max pooling never lets padding win), deterministic backward.
func (d *Device) pooling(p tiny.PoolArgs) (unsafe.Pointer, error) {
	if rc := C.y7_cudnnSetPooling2dDescriptor(d.a, d.descs.pool, C.Y7_CUDNN_POOLING_MAX_DETERMINISTIC, C.Y7_CUDNN_PROPAGATE_NAN,
		C.int(p.K), C.int(p.K), C.int(p.Pad), C.int(p.Pad), C.int(p.S), C.int(p.S)); rc != 0 {
		return nil, d.lib.dnnErr("cudnnSetPooling2dDescriptor", rc)
	}
	return d.descs.pool, nil
}

// PoolScratch implements tiny.Device: no scratch.
func (d *Device) PoolScratch(y, x tiny.NCHW, p tiny.PoolArgs) int { return 0 }

// MaxPool implements tiny.Device (the k2 s2 pools and the SPP windows).
func (d *Device) MaxPool(y, x tiny.NCHW, p tiny.PoolArgs, _ []float32) error {
	if err := tiny.CheckPool(y, x, p); err != nil {
		return err
	}
	if err := d.begin(); err != nil {
		return err
	}
	return d.end(d.maxPool(y, x, p))
}

func (d *Device) maxPool(y, x tiny.NCHW, p tiny.PoolArgs) error {
	xp, err := d.operand(x.Data, span(x), true, false)
	if err != nil {
		return err
	}
	yp, err := d.operand(y.Data, span(y), false, true)
	if err != nil {
		return err
	}
	return d.poolForward(y, yp, x, xp, p)
}

func (d *Device) poolForward(y tiny.NCHW, yp unsafe.Pointer, x tiny.NCHW, xp unsafe.Pointer, p tiny.PoolArgs) error {
	pd, err := d.pooling(p)
	if err != nil {
		return err
	}
	xd, err := d.tensor(0, x, C.Y7_CUDNN_DATA_FLOAT)
	if err != nil {
		return err
	}
	yd, err := d.tensor(1, y, C.Y7_CUDNN_DATA_FLOAT)
	if err != nil {
		return err
	}
	if rc := C.y7_cudnnPoolingForward(d.a, d.handle, pd, 1, xd, xp, 0, yd, yp); rc != 0 {
		return d.lib.dnnErr("cudnnPoolingForward", rc)
	}
	return nil
}

// MaxPoolBackward implements tiny.TrainDevice: the pool's output is
// recomputed (cuDNN's backward wants it), then cudnnPoolingBackward adds
// the routed gradient to dx (β = 1).
func (d *Device) MaxPoolBackward(dx, dy, x tiny.NCHW, p tiny.PoolArgs) error {
	if err := tiny.CheckPoolBackward(dx, dy, x, p); err != nil {
		return err
	}
	if err := d.begin(); err != nil {
		return err
	}
	return d.end(d.maxPoolBackward(dx, dy, x, p))
}

func (d *Device) maxPoolBackward(dx, dy, x tiny.NCHW, p tiny.PoolArgs) error {
	xp, err := d.operand(x.Data, span(x), true, false)
	if err != nil {
		return err
	}
	dyp, err := d.operand(dy.Data, span(dy), true, false)
	if err != nil {
		return err
	}
	dxp, err := d.operand(dx.Data, span(dx), true, true)
	if err != nil {
		return err
	}
	y := tiny.NCHW{N: dy.N, C: dy.C, H: dy.H, W: dy.W}
	yp, err := d.stage.take(d, uintptr(span(y))*4)
	if err != nil {
		return err
	}
	if err := d.poolForward(y, yp, x, xp, p); err != nil {
		return err
	}
	pd, err := d.pooling(p)
	if err != nil {
		return err
	}
	yd, err := d.tensor(0, y, C.Y7_CUDNN_DATA_FLOAT)
	if err != nil {
		return err
	}
	dyd, err := d.tensor(1, dy, C.Y7_CUDNN_DATA_FLOAT)
	if err != nil {
		return err
	}
	xd, err := d.tensor(2, x, C.Y7_CUDNN_DATA_FLOAT)
	if err != nil {
		return err
	}
	dxd, err := d.tensor(3, dx, C.Y7_CUDNN_DATA_FLOAT)
	if err != nil {
		return err
	}
	if rc := C.y7_cudnnPoolingBackward(d.a, d.handle, pd, 1, yd, yp, dyd, dyp, xd, xp, 1, dxd, dxp); rc != 0 {
		return d.lib.dnnErr("cudnnPoolingBackward", rc)
	}
	return nil
}
