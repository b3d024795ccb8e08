package cudnn

/*
#include "shim.h"
*/
import "C"

import (
	"unsafe"

	"github.com/yolo7d/yolo7d/tiny"
)

// Nearest 2x upsampling without a custom kernel: it is exactly the
// backward-data of a depthwise (one group per channel) 2x2 stride-2
// convolution whose filters are all ones, and its backward (the sum of
// each 2x2 block) is that convolution's forward.

// onesFilter returns the device copy of C x 1 x 2 x 2 ones, made once per
// channel count.
func (d *Device) onesFilter(c int) (unsafe.Pointer, error) {
	if p, ok := d.ones[c]; ok {
		return p, nil
	}
	host := make([]float32, 4*c)
	for i := range host {
		host[i] = 1
	}
	var p unsafe.Pointer
	if rc := C.y7_cudaMalloc(d.a, &p, C.size_t(len(host))*4); rc != 0 {
		return nil, d.lib.cudaErr("cudaMalloc", rc)
	}
	if rc := C.y7_cudaMemcpyAsync(d.a, p, unsafe.Pointer(&host[0]), C.size_t(len(host))*4, C.Y7_cudaMemcpyHostToDevice, d.stream); rc != 0 {
		C.y7_cudaFree(d.a, p)
		return nil, d.lib.cudaErr("cudaMemcpyAsync", rc)
	}
	d.ones[c] = p
	return p, nil
}

// Upsample2x implements tiny.Device.
func (d *Device) Upsample2x(y, x tiny.NCHW) error {
	if err := tiny.CheckUpsample(y, x); err != nil {
		return err
	}
	if err := d.begin(); err != nil {
		return err
	}
	return d.end(d.upsample(y, x))
}

func (d *Device) upsample(y, x tiny.NCHW) error {
	xp, err := d.operand(x.Data, span(x), true, false)
	if err != nil {
		return err
	}
	yp, err := d.operand(y.Data, span(y), false, true)
	if err != nil {
		return err
	}
	wp, err := d.onesFilter(x.C)
	if err != nil {
		return err
	}
	// The convolution maps the big tensor (y) to the small one (x).
	cd, err := d.convDescs(x, y, x.C, 1, 2, 2, 0, x.C, C.Y7_CUDNN_DATA_FLOAT, false)
	if err != nil {
		return err
	}
	algo, err := d.backwardDataAlgo(keyOf(x, y, 2, 2, 0, x.C, false), cd)
	if err != nil {
		return err
	}
	ws, err := d.workspace.take(d, algo.ws)
	if err != nil {
		return err
	}
	if rc := C.y7_cudnnConvolutionBackwardData(d.a, d.handle, 1, cd.w, wp, cd.y, xp, cd.conv, algo.algo, ws, C.size_t(algo.ws), 0, cd.x, yp); rc != 0 {
		return d.lib.dnnErr("cudnnConvolutionBackwardData", rc)
	}
	return nil
}

// Upsample2xBackward implements tiny.TrainDevice: dx += the sum of each
// 2x2 block of dy.
func (d *Device) Upsample2xBackward(dx, dy tiny.NCHW) error {
	if err := tiny.CheckUpsampleBackward(dx, dy); err != nil {
		return err
	}
	if err := d.begin(); err != nil {
		return err
	}
	return d.end(d.upsampleBackward(dx, dy))
}

func (d *Device) upsampleBackward(dx, dy tiny.NCHW) error {
	dyp, err := d.operand(dy.Data, span(dy), true, false)
	if err != nil {
		return err
	}
	dxp, err := d.operand(dx.Data, span(dx), true, true)
	if err != nil {
		return err
	}
	wp, err := d.onesFilter(dx.C)
	if err != nil {
		return err
	}
	cd, err := d.convDescs(dx, dy, dx.C, 1, 2, 2, 0, dx.C, C.Y7_CUDNN_DATA_FLOAT, false)
	if err != nil {
		return err
	}
	algo, err := d.forwardAlgo(keyOf(dx, dy, 2, 2, 0, dx.C, false), cd)
	if err != nil {
		return err
	}
	ws, err := d.workspace.take(d, algo.ws)
	if err != nil {
		return err
	}
	if rc := C.y7_cudnnConvolutionForward(d.a, d.handle, 1, cd.x, dyp, cd.w, wp, cd.conv, algo.algo, ws, C.size_t(algo.ws), 1, cd.y, dxp); rc != 0 {
		return d.lib.dnnErr("cudnnConvolutionForward", rc)
	}
	return nil
}
