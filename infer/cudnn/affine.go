package cudnn

/*
#include "shim.h"
*/
import "C"

import (
	"unsafe"

	"github.com/yolo7d/yolo7d/tiny"
)

// Affine implements tiny.Device: y = act(x·Scale[c] + Shift[c] + Add).
func (d *Device) Affine(y, x tiny.NCHW, a tiny.AffineArgs) error {
	if err := tiny.CheckAffine(y, x, a); err != nil {
		return err
	}
	if err := d.begin(); err != nil {
		return err
	}
	return d.end(d.affine(y, x, a))
}

func (d *Device) affine(y, x tiny.NCHW, a tiny.AffineArgs) error {
	scale, err := d.operand(a.Scale, len(a.Scale), true, false)
	if err != nil {
		return err
	}
	shift, err := d.operand(a.Shift, len(a.Shift), true, false)
	if err != nil {
		return err
	}
	return d.affineWith(y, x, scale, shift, a.Add, a.Act)
}

// affineWith is Affine with the per-channel vectors at GPU addresses.
// Cases by aliasing: y = Add: y = x·s + 1·y (one op-tensor with β = 1);
// otherwise y = x·s (β = 0, y may be x), then y += Add. Then the shift and
// the activation, in place.
func (d *Device) affineWith(y, x tiny.NCHW, scale, shift unsafe.Pointer, add tiny.NCHW, act tiny.Act) error {
	xp, err := d.operand(x.Data, span(x), true, false)
	if err != nil {
		return err
	}
	aliasAdd := add.Data != nil && unsafe.SliceData(add.Data) == unsafe.SliceData(y.Data)
	yp, err := d.operand(y.Data, span(y), aliasAdd, true)
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
	vd, err := d.vector(2, x.C)
	if err != nil {
		return err
	}
	mul, err := d.opTensor(C.Y7_CUDNN_OP_TENSOR_MUL)
	if err != nil {
		return err
	}
	beta := C.float(0)
	if aliasAdd {
		beta = 1
	}
	if rc := C.y7_cudnnOpTensor(d.a, d.handle, mul, 1, xd, xp, 1, vd, scale, beta, yd, yp); rc != 0 {
		return d.lib.dnnErr("cudnnOpTensor", rc)
	}
	if add.Data != nil && !aliasAdd {
		ap, err := d.operand(add.Data, span(add), true, false)
		if err != nil {
			return err
		}
		ad, err := d.tensor(3, add, C.Y7_CUDNN_DATA_FLOAT)
		if err != nil {
			return err
		}
		if rc := C.y7_cudnnAddTensor(d.a, d.handle, 1, ad, ap, 1, yd, yp); rc != 0 {
			return d.lib.dnnErr("cudnnAddTensor", rc)
		}
	}
	return d.biasAct(yd, yp, vd, shift, act)
}
