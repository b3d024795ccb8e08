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

// convKey identifies a convolution's shapes for the algorithm caches.
type convKey struct {
	n, in, h, w, xStride int
	out, k, s, pad       int
	yStride, groups      int
	half                 bool
}

func keyOf(y, x tiny.NCHW, k, s, pad, groups int, half bool) convKey {
	return convKey{x.N, x.C, x.H, x.W, x.BatchStride(), y.C, k, s, pad, y.BatchStride(), groups, half}
}

// algoChoice is a cached algorithm with its workspace; noFused records
// that cudnnConvolutionBiasActivationForward refused this shape.
type algoChoice struct {
	algo    C.int
	ws      uintptr
	noFused bool
}

// The convolution's descriptors, set for one call.
type convDescs struct {
	x, y, w, conv unsafe.Pointer
}

func (d *Device) convDescs(y, x tiny.NCHW, out, in, k, s, pad, groups int, dt C.int, half bool) (convDescs, error) {
	var cd convDescs
	var err error
	if cd.x, err = d.tensor(0, x, dt); err != nil {
		return cd, err
	}
	if cd.y, err = d.tensor(1, y, dt); err != nil {
		return cd, err
	}
	if cd.w, err = d.filter(out, in, k, dt); err != nil {
		return cd, err
	}
	cd.conv, err = d.convolution(pad, s, groups, half)
	return cd, err
}

// forwardAlgo is the fastest algorithm cuDNN's heuristics propose for the
// shape whose workspace it can size, cached.
func (d *Device) forwardAlgo(key convKey, cd convDescs) (algoChoice, error) {
	if a, ok := d.fwdAlgo[key]; ok {
		return a, nil
	}
	var perf [C.Y7_CUDNN_CONVOLUTION_FWD_ALGO_COUNT]C.y7_cudnnAlgoPerf
	var n C.int
	if rc := C.y7_cudnnGetConvolutionForwardAlgorithm_v7(d.a, d.handle, cd.x, cd.w, cd.conv, cd.y, C.int(len(perf)), &n, &perf[0]); rc != 0 {
		return algoChoice{}, d.lib.dnnErr("cudnnGetConvolutionForwardAlgorithm_v7", rc)
	}
	for i := 0; i < int(n); i++ {
		if perf[i].status != 0 {
			continue
		}
		var ws C.size_t
		if rc := C.y7_cudnnGetConvolutionForwardWorkspaceSize(d.a, d.handle, cd.x, cd.w, cd.conv, cd.y, perf[i].algo, &ws); rc != 0 {
			continue
		}
		a := algoChoice{algo: perf[i].algo, ws: uintptr(ws)}
		d.fwdAlgo[key] = a
		return a, nil
	}
	return algoChoice{}, fmt.Errorf("no forward algorithm for %+v (%d proposed)", key, int(n))
}

// ConvScratch implements tiny.Device: the Device keeps its own workspace.
func (d *Device) ConvScratch(y, x tiny.NCHW, c tiny.ConvArgs) int { return 0 }

// Conv implements tiny.Device: y = act(conv(x, W) + b). ReLU runs fused
// in cudnnConvolutionBiasActivationForward (with ONNX Runtime's fallback
// to three calls where cuDNN refuses a shape); no activation is a
// convolution plus a bias add; LeakyReLU adds one in-place activation
// call computing 0.9·relu(y) + 0.1·y.
func (d *Device) Conv(y, x tiny.NCHW, c tiny.ConvArgs, _ []float32) error {
	if err := tiny.CheckConv(y, x, c); err != nil {
		return err
	}
	if err := d.begin(); err != nil {
		return err
	}
	return d.end(d.conv(y, x, c))
}

func (d *Device) conv(y, x tiny.NCHW, c tiny.ConvArgs) error {
	yp, err := d.operand(y.Data, span(y), false, true)
	if err != nil {
		return err
	}
	return d.convInto(y, yp, x, c)
}

// convInto is Conv writing the output view y at the GPU address yp.
func (d *Device) convInto(y tiny.NCHW, yp unsafe.Pointer, x tiny.NCHW, c tiny.ConvArgs) error {
	if d.opts.Precision == FP16 && d.opts.ConstParams {
		return d.convHalf(y, yp, x, c)
	}
	xp, err := d.operand(x.Data, span(x), true, false)
	if err != nil {
		return err
	}
	wp, err := d.param(c.Weight, false)
	if err != nil {
		return err
	}
	bp, err := d.param(c.Bias, false)
	if err != nil {
		return err
	}
	cd, err := d.convDescs(y, x, y.C, x.C, c.K, c.S, c.Pad, 1, C.Y7_CUDNN_DATA_FLOAT, false)
	if err != nil {
		return err
	}
	key := keyOf(y, x, c.K, c.S, c.Pad, 1, false)
	algo, err := d.forwardAlgo(key, cd)
	if err != nil {
		return err
	}
	ws, err := d.workspace.take(d, algo.ws)
	if err != nil {
		return err
	}
	bd, err := d.vector(2, y.C)
	if err != nil {
		return err
	}
	if c.Act == tiny.ActReLU && !algo.noFused {
		ad, err := d.activation(true)
		if err != nil {
			return err
		}
		rc := C.y7_cudnnConvolutionBiasActivationForward(d.a, d.handle, 1, cd.x, xp, cd.w, wp, cd.conv, algo.algo, ws, C.size_t(algo.ws),
			0, cd.y, yp, bd, bp, ad, cd.y, yp)
		if rc == 0 {
			return nil
		}
		// Refused for this shape (e.g. an algorithm the fused call does
		// not support): remember, and run the three calls.
		algo.noFused = true
		d.fwdAlgo[key] = algo
	}
	if rc := C.y7_cudnnConvolutionForward(d.a, d.handle, 1, cd.x, xp, cd.w, wp, cd.conv, algo.algo, ws, C.size_t(algo.ws), 0, cd.y, yp); rc != 0 {
		return d.lib.dnnErr("cudnnConvolutionForward", rc)
	}
	return d.biasAct(cd.y, yp, bd, bp, c.Act)
}

// biasAct adds the per-channel bias (bp, described by bd) to y in place,
// then applies act.
func (d *Device) biasAct(yd, yp, bd, bp unsafe.Pointer, act tiny.Act) error {
	if bp != nil {
		if rc := C.y7_cudnnAddTensor(d.a, d.handle, 1, bd, bp, 1, yd, yp); rc != 0 {
			return d.lib.dnnErr("cudnnAddTensor", rc)
		}
	}
	return d.act(yd, yp, act)
}

// act applies the activation to y in place: relu, or leaky as
// 0.9·relu(y) + 0.1·y (cudnnActivationForward's y = α·f(x) + β·y).
func (d *Device) act(yd, yp unsafe.Pointer, act tiny.Act) error {
	var alpha, beta C.float
	switch act {
	case tiny.ActReLU:
		alpha, beta = 1, 0
	case tiny.ActLeaky:
		alpha, beta = 1-tiny.LeakySlope, tiny.LeakySlope
	default:
		return nil
	}
	ad, err := d.activation(true)
	if err != nil {
		return err
	}
	if rc := C.y7_cudnnActivationForward(d.a, d.handle, ad, alpha, yd, yp, beta, yd, yp); rc != 0 {
		return d.lib.dnnErr("cudnnActivationForward", rc)
	}
	return nil
}

// convHalf is Conv in FP16: x converted to a dense half tensor, the
// weights to half once (ConstParams), the convolution with tensor-op math
// into a half output, converted back into y, then bias and activation in
// float.
func (d *Device) convHalf(y tiny.NCHW, yp unsafe.Pointer, x tiny.NCHW, c tiny.ConvArgs) error {
	xp, err := d.operand(x.Data, span(x), true, false)
	if err != nil {
		return err
	}
	wp, err := d.param(c.Weight, true)
	if err != nil {
		return err
	}
	bp, err := d.param(c.Bias, false)
	if err != nil {
		return err
	}
	xh, err := d.stage.take(d, uintptr(x.N*x.C*x.H*x.W)*2)
	if err != nil {
		return err
	}
	yh, err := d.stage.take(d, uintptr(y.N*y.C*y.H*y.W)*2)
	if err != nil {
		return err
	}
	// x (float, strided) -> xh (half, dense)
	xf, err := d.tensor(0, x, C.Y7_CUDNN_DATA_FLOAT)
	if err != nil {
		return err
	}
	xhd, err := d.dense(1, x.N, x.C, x.H, x.W, C.Y7_CUDNN_DATA_HALF)
	if err != nil {
		return err
	}
	if rc := C.y7_cudnnTransformTensor(d.a, d.handle, 1, xf, xp, 0, xhd, xh); rc != 0 {
		return d.lib.dnnErr("cudnnTransformTensor", rc)
	}
	dx, dy := tiny.NCHW{N: x.N, C: x.C, H: x.H, W: x.W}, tiny.NCHW{N: y.N, C: y.C, H: y.H, W: y.W}
	cd, err := d.convDescs(dy, dx, y.C, x.C, c.K, c.S, c.Pad, 1, C.Y7_CUDNN_DATA_HALF, true)
	if err != nil {
		return err
	}
	algo, err := d.forwardAlgo(keyOf(dy, dx, c.K, c.S, c.Pad, 1, true), cd)
	if err != nil {
		return err
	}
	ws, err := d.workspace.take(d, algo.ws)
	if err != nil {
		return err
	}
	if rc := C.y7_cudnnConvolutionForward(d.a, d.handle, 1, cd.x, xh, cd.w, wp, cd.conv, algo.algo, ws, C.size_t(algo.ws), 0, cd.y, yh); rc != 0 {
		return d.lib.dnnErr("cudnnConvolutionForward", rc)
	}
	// yh (half, dense) -> y (float, strided)
	yhd, err := d.dense(2, y.N, y.C, y.H, y.W, C.Y7_CUDNN_DATA_HALF)
	if err != nil {
		return err
	}
	yf, err := d.tensor(3, y, C.Y7_CUDNN_DATA_FLOAT)
	if err != nil {
		return err
	}
	if rc := C.y7_cudnnTransformTensor(d.a, d.handle, 1, yhd, yh, 0, yf, yp); rc != 0 {
		return d.lib.dnnErr("cudnnTransformTensor", rc)
	}
	bd, err := d.vector(2, y.C)
	if err != nil {
		return err
	}
	return d.biasAct(yf, yp, bd, bp, c.Act)
}
