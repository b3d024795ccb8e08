package cudnn

/*
#include "shim.h"
*/
import "C"

import (
	"github.com/yolo7d/yolo7d/tiny"
)

// ActBackward implements tiny.TrainDevice: dy *= f'(y) in place, with
// cudnnActivationBackward's dx = α·f'·dy + β·dx and dx = dy: relu α = 1,
// β = 0; leaky α = 0.9, β = 0.1 (1 where y > 0, 0.1 elsewhere). The
// output y stands for the input: for both, y > 0 exactly where x > 0.
func (d *Device) ActBackward(dy, y tiny.NCHW, act tiny.Act) error {
	if err := tiny.CheckActBackward(dy, y, act); err != nil {
		return err
	}
	if act == tiny.ActNone {
		return nil
	}
	if err := d.begin(); err != nil {
		return err
	}
	return d.end(d.actBackward(dy, y, act))
}

func (d *Device) actBackward(dy, y tiny.NCHW, act tiny.Act) error {
	yp, err := d.operand(y.Data, span(y), true, false)
	if err != nil {
		return err
	}
	dyp, err := d.operand(dy.Data, span(dy), true, true)
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
	ad, err := d.activation(true)
	if err != nil {
		return err
	}
	alpha, beta := C.float(1), C.float(0)
	if act == tiny.ActLeaky {
		alpha, beta = 1-tiny.LeakySlope, tiny.LeakySlope
	}
	if rc := C.y7_cudnnActivationBackward(d.a, d.handle, ad, alpha, yd, yp, dyd, dyp, yd, yp, beta, dyd, dyp); rc != 0 {
		return d.lib.dnnErr("cudnnActivationBackward", rc)
	}
	return nil
}
