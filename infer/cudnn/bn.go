package cudnn

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"math"
	"unsafe"

	"github.com/yolo7d/yolo7d/tiny"
)

// Training-form BatchNorm. Batch statistics run in cuDNN's
// cudnnBatchNormalizationForwardTraining/Backward (SPATIAL mode; it keeps
// the running variance unbiased and saves 1/sqrt(var+eps), as tiny's CPU
// device does). Frozen statistics are an affine map whose per-channel
// factors the host computes from the C running values.

// BNForward implements tiny.TrainDevice.
func (d *Device) BNForward(y, x tiny.NCHW, a tiny.BNArgs) error {
	if err := tiny.CheckBNForward(y, x, a); err != nil {
		return err
	}
	if err := d.begin(); err != nil {
		return err
	}
	if a.Mode == tiny.BNFrozen {
		return d.end(d.bnFrozenForward(y, x, a))
	}
	return d.end(d.bnBatchForward(y, x, a))
}

func (d *Device) bnFrozenForward(y, x tiny.NCHW, a tiny.BNArgs) error {
	if float64(a.Eps) < 0 {
		return fmt.Errorf("bn forward: eps %v", a.Eps)
	}
	if err := d.Sync(); err != nil { // the host reads the statistics
		return err
	}
	c := x.C
	tmp := d.hostFloats(2 * c)
	scale, shift := tmp[:c], tmp[c:]
	for i := 0; i < c; i++ {
		invstd := 1 / math.Sqrt(float64(a.RunVar[i])+float64(a.Eps))
		mean := float64(a.RunMean[i])
		a.SaveMean[i] = float32(mean)
		a.SaveInvStd[i] = float32(invstd)
		s := invstd * float64(a.Weight[i])
		scale[i] = float32(s)
		shift[i] = float32(float64(a.Bias[i]) - mean*s)
	}
	sp, err := d.operand(scale, c, true, false)
	if err != nil {
		return err
	}
	tp, err := d.operand(shift, c, true, false)
	if err != nil {
		return err
	}
	return d.affineWith(y, x, sp, tp, a.Add, a.Act)
}

func (d *Device) bnBatchForward(y, x tiny.NCHW, a tiny.BNArgs) error {
	if float64(a.Eps) < C.Y7_CUDNN_BN_MIN_EPSILON {
		return fmt.Errorf("bn forward: eps %v below cuDNN's minimum %v", a.Eps, C.Y7_CUDNN_BN_MIN_EPSILON)
	}
	xp, err := d.operand(x.Data, span(x), true, false)
	if err != nil {
		return err
	}
	c := x.C
	gamma, err := d.operand(a.Weight, c, true, false)
	if err != nil {
		return err
	}
	beta, err := d.operand(a.Bias, c, true, false)
	if err != nil {
		return err
	}
	rm, err := d.operand(a.RunMean, c, true, true)
	if err != nil {
		return err
	}
	rv, err := d.operand(a.RunVar, c, true, true)
	if err != nil {
		return err
	}
	sm, err := d.operand(a.SaveMean, c, false, true)
	if err != nil {
		return err
	}
	si, err := d.operand(a.SaveInvStd, c, false, true)
	if err != nil {
		return err
	}
	// The normalised values go to y directly unless y is x or a residual
	// follows: then to a dense temporary.
	aliasX := unsafe.SliceData(y.Data) == unsafe.SliceData(x.Data)
	aliasAdd := a.Add.Data != nil && unsafe.SliceData(a.Add.Data) == unsafe.SliceData(y.Data)
	yp, err := d.operand(y.Data, span(y), aliasAdd, true)
	if err != nil {
		return err
	}
	yd, err := d.tensor(1, y, C.Y7_CUDNN_DATA_FLOAT)
	if err != nil {
		return err
	}
	xd, err := d.tensor(0, x, C.Y7_CUDNN_DATA_FLOAT)
	if err != nil {
		return err
	}
	bnd, err := d.vector(2, c)
	if err != nil {
		return err
	}
	outp, outd := yp, yd
	direct := !aliasX && a.Add.Data == nil
	if !direct {
		if outp, err = d.stage.take(d, uintptr(x.N*c*x.H*x.W)*4); err != nil {
			return err
		}
		if outd, err = d.dense(3, x.N, c, x.H, x.W, C.Y7_CUDNN_DATA_FLOAT); err != nil {
			return err
		}
	}
	if rc := C.y7_cudnnBatchNormalizationForwardTraining(d.a, d.handle, C.Y7_CUDNN_BATCHNORM_SPATIAL, xd, xp, outd, outp, bnd,
		gamma, beta, C.double(a.Momentum), rm, rv, C.double(a.Eps), sm, si); rc != 0 {
		return d.lib.dnnErr("cudnnBatchNormalizationForwardTraining", rc)
	}
	if !direct {
		// y = out (+ Add): with y = Add, y += out; else y = out, y += Add.
		betaY := C.float(0)
		if aliasAdd {
			betaY = 1
		}
		if rc := C.y7_cudnnAddTensor(d.a, d.handle, 1, outd, outp, betaY, yd, yp); rc != 0 {
			return d.lib.dnnErr("cudnnAddTensor", rc)
		}
		if a.Add.Data != nil && !aliasAdd {
			ap, err := d.operand(a.Add.Data, span(a.Add), true, false)
			if err != nil {
				return err
			}
			ad, err := d.tensor(4, a.Add, C.Y7_CUDNN_DATA_FLOAT)
			if err != nil {
				return err
			}
			if rc := C.y7_cudnnAddTensor(d.a, d.handle, 1, ad, ap, 1, yd, yp); rc != 0 {
				return d.lib.dnnErr("cudnnAddTensor", rc)
			}
		}
	}
	return d.act(yd, yp, a.Act)
}

// BNBackward implements tiny.TrainDevice (dx may alias dy).
func (d *Device) BNBackward(dx, dy, x tiny.NCHW, a tiny.BNArgs, dGamma, dBeta []float32) error {
	if err := tiny.CheckBNBackward(dx, dy, x, a, dGamma, dBeta); err != nil {
		return err
	}
	if err := d.begin(); err != nil {
		return err
	}
	if a.Mode == tiny.BNFrozen {
		return d.end(d.bnFrozenBackward(dx, dy, x, a, dGamma, dBeta))
	}
	return d.end(d.bnBatchBackward(dx, dy, x, a, dGamma, dBeta))
}

func (d *Device) bnBatchBackward(dx, dy, x tiny.NCHW, a tiny.BNArgs, dGamma, dBeta []float32) error {
	c := x.C
	xp, err := d.operand(x.Data, span(x), true, false)
	if err != nil {
		return err
	}
	alias := unsafe.SliceData(dx.Data) == unsafe.SliceData(dy.Data)
	dyp, err := d.operand(dy.Data, span(dy), true, alias)
	if err != nil {
		return err
	}
	dxp := dyp
	if !alias {
		if dxp, err = d.operand(dx.Data, span(dx), false, true); err != nil {
			return err
		}
	}
	gamma, err := d.operand(a.Weight, c, true, false)
	if err != nil {
		return err
	}
	sm, err := d.operand(a.SaveMean, c, true, false)
	if err != nil {
		return err
	}
	si, err := d.operand(a.SaveInvStd, c, true, false)
	if err != nil {
		return err
	}
	dg, err := d.operand(dGamma, c, true, true)
	if err != nil {
		return err
	}
	db, err := d.operand(dBeta, c, true, true)
	if err != nil {
		return err
	}
	xd, err := d.tensor(0, x, C.Y7_CUDNN_DATA_FLOAT)
	if err != nil {
		return err
	}
	dyd, err := d.tensor(1, dy, C.Y7_CUDNN_DATA_FLOAT)
	if err != nil {
		return err
	}
	dxd, err := d.tensor(2, dx, C.Y7_CUDNN_DATA_FLOAT)
	if err != nil {
		return err
	}
	bnd, err := d.vector(3, c)
	if err != nil {
		return err
	}
	outp, outd := dxp, dxd
	if alias { // cuDNN does not promise in-place: write a temporary, copy
		if outp, err = d.stage.take(d, uintptr(x.N*c*x.H*x.W)*4); err != nil {
			return err
		}
		if outd, err = d.dense(4, x.N, c, x.H, x.W, C.Y7_CUDNN_DATA_FLOAT); err != nil {
			return err
		}
	}
	if rc := C.y7_cudnnBatchNormalizationBackward(d.a, d.handle, C.Y7_CUDNN_BATCHNORM_SPATIAL, 0, 1, xd, xp, dyd, dyp, outd, outp, bnd,
		gamma, dg, db, C.double(a.Eps), sm, si); rc != 0 {
		return d.lib.dnnErr("cudnnBatchNormalizationBackward", rc)
	}
	if alias {
		if rc := C.y7_cudnnAddTensor(d.a, d.handle, 1, outd, outp, 0, dxd, dxp); rc != 0 {
			return d.lib.dnnErr("cudnnAddTensor", rc)
		}
	}
	return nil
}

// bnFrozenBackward: Σdy and Σdy·(x-mean) per channel on the GPU (as
// bias gradients), dx = dy·gamma·invstd by one op-tensor (in place when dx
// is dy), then dGamma += invstd·Σdy·(x-mean) and dBeta += Σdy on the host.
func (d *Device) bnFrozenBackward(dx, dy, x tiny.NCHW, a tiny.BNArgs, dGamma, dBeta []float32) error {
	if err := d.Sync(); err != nil { // the host reads the statistics
		return err
	}
	c := x.C
	tmp := d.hostFloats(4 * c)
	negMean, coef, sums := tmp[:c], tmp[c:2*c], tmp[2*c:]
	for i := 0; i < c; i++ {
		negMean[i] = -a.SaveMean[i]
		coef[i] = a.Weight[i] * a.SaveInvStd[i]
	}
	xp, err := d.operand(x.Data, span(x), true, false)
	if err != nil {
		return err
	}
	alias := unsafe.SliceData(dx.Data) == unsafe.SliceData(dy.Data)
	dyp, err := d.operand(dy.Data, span(dy), true, alias)
	if err != nil {
		return err
	}
	dxp := dyp
	if !alias {
		if dxp, err = d.operand(dx.Data, span(dx), false, true); err != nil {
			return err
		}
	}
	nm, err := d.operand(negMean, c, true, false)
	if err != nil {
		return err
	}
	cf, err := d.operand(coef, c, true, false)
	if err != nil {
		return err
	}
	sumsp, err := d.stage.take(d, uintptr(2*c)*4)
	if err != nil {
		return err
	}
	t, err := d.stage.take(d, uintptr(x.N*c*x.H*x.W)*4)
	if err != nil {
		return err
	}
	xd, err := d.tensor(0, x, C.Y7_CUDNN_DATA_FLOAT)
	if err != nil {
		return err
	}
	dyd, err := d.tensor(1, dy, C.Y7_CUDNN_DATA_FLOAT)
	if err != nil {
		return err
	}
	vd, err := d.vector(2, c)
	if err != nil {
		return err
	}
	td, err := d.dense(3, x.N, c, x.H, x.W, C.Y7_CUDNN_DATA_FLOAT)
	if err != nil {
		return err
	}
	// sums[0:c] = Σdy
	if rc := C.y7_cudnnConvolutionBackwardBias(d.a, d.handle, 1, dyd, dyp, 0, vd, sumsp); rc != 0 {
		return d.lib.dnnErr("cudnnConvolutionBackwardBias", rc)
	}
	// t = x - mean; t = t·dy; sums[c:2c] = Σt
	add, err := d.opTensor(C.Y7_CUDNN_OP_TENSOR_ADD)
	if err != nil {
		return err
	}
	if rc := C.y7_cudnnOpTensor(d.a, d.handle, add, 1, xd, xp, 1, vd, nm, 0, td, t); rc != 0 {
		return d.lib.dnnErr("cudnnOpTensor", rc)
	}
	mul, err := d.opTensor(C.Y7_CUDNN_OP_TENSOR_MUL)
	if err != nil {
		return err
	}
	if rc := C.y7_cudnnOpTensor(d.a, d.handle, mul, 1, td, t, 1, dyd, dyp, 0, td, t); rc != 0 {
		return d.lib.dnnErr("cudnnOpTensor", rc)
	}
	if rc := C.y7_cudnnConvolutionBackwardBias(d.a, d.handle, 1, td, t, 0, vd, unsafe.Add(sumsp, 4*c)); rc != 0 {
		return d.lib.dnnErr("cudnnConvolutionBackwardBias", rc)
	}
	// dx = dy·coef (after the sums, which read dy)
	dxd, err := d.tensor(4, dx, C.Y7_CUDNN_DATA_FLOAT)
	if err != nil {
		return err
	}
	if rc := C.y7_cudnnOpTensor(d.a, d.handle, mul, 1, dyd, dyp, 1, vd, cf, 0, dxd, dxp); rc != 0 {
		return d.lib.dnnErr("cudnnOpTensor", rc)
	}
	if rc := C.y7_cudaMemcpyAsync(d.a, unsafe.Pointer(&sums[0]), sumsp, C.size_t(2*c)*4, C.Y7_cudaMemcpyDeviceToHost, d.stream); rc != 0 {
		return d.lib.cudaErr("cudaMemcpyAsync", rc)
	}
	if err := d.Sync(); err != nil {
		return err
	}
	for i := 0; i < c; i++ {
		dBeta[i] += sums[i]
		dGamma[i] += a.SaveInvStd[i] * sums[c+i]
	}
	return nil
}

// hostFloats returns a reusable host buffer of n floats.
func (d *Device) hostFloats(n int) []float32 {
	if cap(d.host) < n {
		d.host = make([]float32, n)
	}
	return d.host[:n]
}
