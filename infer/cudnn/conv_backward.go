package cudnn

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"

	"github.com/yolo7d/yolo7d/tiny"
)

// backwardDataAlgo is forwardAlgo for cudnnConvolutionBackwardData.
func (d *Device) backwardDataAlgo(key convKey, cd convDescs) (algoChoice, error) {
	if a, ok := d.bwdData[key]; ok {
		return a, nil
	}
	var perf [C.Y7_CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT]C.y7_cudnnAlgoPerf
	var n C.int
	if rc := C.y7_cudnnGetConvolutionBackwardDataAlgorithm_v7(d.a, d.handle, cd.w, cd.y, cd.conv, cd.x, C.int(len(perf)), &n, &perf[0]); rc != 0 {
		return algoChoice{}, d.lib.dnnErr("cudnnGetConvolutionBackwardDataAlgorithm_v7", rc)
	}
	for i := 0; i < int(n); i++ {
		if perf[i].status != 0 {
			continue
		}
		var ws C.size_t
		if rc := C.y7_cudnnGetConvolutionBackwardDataWorkspaceSize(d.a, d.handle, cd.w, cd.y, cd.conv, cd.x, perf[i].algo, &ws); rc != 0 {
			continue
		}
		a := algoChoice{algo: perf[i].algo, ws: uintptr(ws)}
		d.bwdData[key] = a
		return a, nil
	}
	return algoChoice{}, fmt.Errorf("no backward-data algorithm for %+v (%d proposed)", key, int(n))
}

// backwardFilterAlgo is forwardAlgo for cudnnConvolutionBackwardFilter.
func (d *Device) backwardFilterAlgo(key convKey, cd convDescs) (algoChoice, error) {
	if a, ok := d.bwdFiltr[key]; ok {
		return a, nil
	}
	var perf [C.Y7_CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT]C.y7_cudnnAlgoPerf
	var n C.int
	if rc := C.y7_cudnnGetConvolutionBackwardFilterAlgorithm_v7(d.a, d.handle, cd.x, cd.y, cd.conv, cd.w, C.int(len(perf)), &n, &perf[0]); rc != 0 {
		return algoChoice{}, d.lib.dnnErr("cudnnGetConvolutionBackwardFilterAlgorithm_v7", rc)
	}
	for i := 0; i < int(n); i++ {
		if perf[i].status != 0 {
			continue
		}
		var ws C.size_t
		if rc := C.y7_cudnnGetConvolutionBackwardFilterWorkspaceSize(d.a, d.handle, cd.x, cd.y, cd.conv, cd.w, perf[i].algo, &ws); rc != 0 {
			continue
		}
		a := algoChoice{algo: perf[i].algo, ws: uintptr(ws)}
		d.bwdFiltr[key] = a
		return a, nil
	}
	return algoChoice{}, fmt.Errorf("no backward-filter algorithm for %+v (%d proposed)", key, int(n))
}

// ConvBackwardScratch implements tiny.TrainDevice: no scratch.
func (d *Device) ConvBackwardScratch(dy, x tiny.NCHW, c tiny.ConvArgs) int { return 0 }

// ConvBackward implements tiny.TrainDevice: dx += convᵀ(dy, W) (when
// dx.Data is set), dW += x ⋆ dy, dB += Σdy, each with β = 1.
func (d *Device) ConvBackward(dx, dy, x tiny.NCHW, c tiny.ConvArgs, dW, dB, _ []float32) error {
	if err := tiny.CheckConvBackward(dx, dy, x, c, dW, dB); err != nil {
		return err
	}
	if err := d.begin(); err != nil {
		return err
	}
	return d.end(d.convBackward(dx, dy, x, c, dW, dB))
}

func (d *Device) convBackward(dx, dy, x tiny.NCHW, c tiny.ConvArgs, dW, dB []float32) error {
	xp, err := d.operand(x.Data, span(x), true, false)
	if err != nil {
		return err
	}
	dyp, err := d.operand(dy.Data, span(dy), true, false)
	if err != nil {
		return err
	}
	wp, err := d.param(c.Weight, false)
	if err != nil {
		return err
	}
	dWp, err := d.operand(dW, len(dW), true, true)
	if err != nil {
		return err
	}
	// The descriptors: x and dx share a shape, dy is the output.
	cd, err := d.convDescs(dy, x, dy.C, x.C, c.K, c.S, c.Pad, 1, C.Y7_CUDNN_DATA_FLOAT, false)
	if err != nil {
		return err
	}
	key := keyOf(dy, x, c.K, c.S, c.Pad, 1, false)
	if dx.Data != nil {
		dxp, err := d.operand(dx.Data, span(dx), true, true)
		if err != nil {
			return err
		}
		dxd, err := d.tensor(3, dx, C.Y7_CUDNN_DATA_FLOAT)
		if err != nil {
			return err
		}
		bd := convDescs{x: dxd, y: cd.y, w: cd.w, conv: cd.conv}
		algo, err := d.backwardDataAlgo(keyOf(dy, dx, c.K, c.S, c.Pad, 1, false), bd)
		if err != nil {
			return err
		}
		ws, err := d.workspace.take(d, algo.ws)
		if err != nil {
			return err
		}
		if rc := C.y7_cudnnConvolutionBackwardData(d.a, d.handle, 1, cd.w, wp, cd.y, dyp, cd.conv, algo.algo, ws, C.size_t(algo.ws), 1, dxd, dxp); rc != 0 {
			return d.lib.dnnErr("cudnnConvolutionBackwardData", rc)
		}
	}
	algo, err := d.backwardFilterAlgo(key, cd)
	if err != nil {
		return err
	}
	ws, err := d.workspace.take(d, algo.ws)
	if err != nil {
		return err
	}
	if rc := C.y7_cudnnConvolutionBackwardFilter(d.a, d.handle, 1, cd.x, xp, cd.y, dyp, cd.conv, algo.algo, ws, C.size_t(algo.ws), 1, cd.w, dWp); rc != 0 {
		return d.lib.dnnErr("cudnnConvolutionBackwardFilter", rc)
	}
	if dB != nil {
		dBp, err := d.operand(dB, len(dB), true, true)
		if err != nil {
			return err
		}
		bd, err := d.vector(4, dy.C)
		if err != nil {
			return err
		}
		if rc := C.y7_cudnnConvolutionBackwardBias(d.a, d.handle, 1, cd.y, dyp, 1, bd, dBp); rc != 0 {
			return d.lib.dnnErr("cudnnConvolutionBackwardBias", rc)
		}
	}
	return nil
}
