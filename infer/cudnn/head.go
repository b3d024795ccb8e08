package cudnn

/*
#include "shim.h"
*/
import "C"

import (
	"github.com/yolo7d/yolo7d/tiny"
)

// Head implements tiny.Device: the detect conv into a dense staging
// tensor (N x NA·NO x H x W), then one cudnnTransformTensor that writes
// it in the raw head layout N x NA x H x W x NO: both sides are described
// as N x NA x NO x H x W, the destination with the strides of the
// transposed layout.
func (d *Device) Head(dst []float32, x tiny.NCHW, c tiny.ConvArgs, na int) error {
	if err := tiny.CheckHead(dst, x, c, na); err != nil {
		return err
	}
	if err := d.begin(); err != nil {
		return err
	}
	return d.end(d.head(dst, x, c, na))
}

func (d *Device) head(dst []float32, x tiny.NCHW, c tiny.ConvArgs, na int) error {
	out := len(c.Bias)
	no := out / na
	y := tiny.NCHW{N: x.N, C: out, H: x.H, W: x.W}
	tmp, err := d.stage.take(d, uintptr(span(y))*4)
	if err != nil {
		return err
	}
	dp, err := d.operand(dst, len(dst), false, true)
	if err != nil {
		return err
	}
	if err := d.convInto(y, tmp, x, c); err != nil {
		return err
	}
	h, w := x.H, x.W
	hw := h * w
	// Both sides as N x NA x NO x H x W: the source dense, the destination
	// with the strides of N x NA x H x W x NO.
	sd, dd := d.descs.t[4], d.descs.t[5]
	if rc := C.y7_cudnnSetTensor5d(d.a, sd, C.Y7_CUDNN_DATA_FLOAT, C.int(x.N), C.int(na), C.int(no), C.int(h), C.int(w),
		C.int(out*hw), C.int(no*hw), C.int(hw), C.int(w), 1); rc != 0 {
		return d.lib.dnnErr("cudnnSetTensorNdDescriptor", rc)
	}
	if rc := C.y7_cudnnSetTensor5d(d.a, dd, C.Y7_CUDNN_DATA_FLOAT, C.int(x.N), C.int(na), C.int(no), C.int(h), C.int(w),
		C.int(na*hw*no), C.int(hw*no), 1, C.int(w*no), C.int(no)); rc != 0 {
		return d.lib.dnnErr("cudnnSetTensorNdDescriptor", rc)
	}
	if rc := C.y7_cudnnTransformTensor(d.a, d.handle, 1, sd, tmp, 0, dd, dp); rc != 0 {
		return d.lib.dnnErr("cudnnTransformTensor", rc)
	}
	return nil
}
