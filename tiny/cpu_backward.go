package tiny

/*
#cgo CFLAGS: -O3

// td_act_bwd multiplies g[i] by the derivative of the activation whose
// output is y[i]: 1 where y > 0, else slope (ReLU: g[i] = 0). Written as
// selects the compiler vectorises (a branch per value mispredicts on
// random signs; gcc 12 -O3 vectorises these forms, not all others).
static void td_act_bwd(float *g, const float *y, int n, float slope) {
	if (slope == 0) {
		for (int i = 0; i < n; i++) g[i] = y[i] > 0 ? g[i] : 0.0f;
		return;
	}
	for (int i = 0; i < n; i++) {
		float m = y[i] > 0 ? 1.0f : slope;
		g[i] *= m;
	}
}
*/
import "C"

// The CPU's TrainDevice: the backward of every op and training-form
// BatchNorm, one file per layer kind (conv_backward.go, bn_train.go,
// pool_backward.go; the activation's backward is here). As for the
// inference ops, each op runs under d.mu on the device's worker pool with
// a preallocated task struct, so a steady-state op allocates nothing.

var _ TrainDevice = (*CPU)(nil)

// cpuTrain holds the CPU's preallocated task structs of the training ops
// (embedded in CPU).
type cpuTrain struct {
	actBwd   actBackwardTask
	convBwdW convBwdWTask
	convBwdX convBwdXTask
	convBwdR convBwdReduceTask
	bnFwd    bnForwardTask
	bnBwd    bnBackwardTask
	poolBwd  poolBackwardTask
	upBwd    upsampleBackwardTask

	// MaxPoolBackward's per-goroutine scratch, grown on demand.
	poolVal []float32
	poolIdx []int32

	// bwdTileCols overrides convBwdTileCols when positive (tests).
	bwdTileCols int
}

// ActBackward implements TrainDevice: dy *= act'(y), one (image, channel)
// plane per work item. ActNone leaves dy as it is.
func (d *CPU) ActBackward(dy, y NCHW, act Act) error {
	if err := checkActBackward(dy, y, act); err != nil {
		return err
	}
	if act == ActNone {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	t := &d.actBwd
	*t = actBackwardTask{dy: dy, y: y, act: act}
	d.parallel(dy.N*dy.C, t)
	*t = actBackwardTask{}
	return nil
}

// actBackwardTask is ActBackward's loop body: item i is plane i.
type actBackwardTask struct {
	dy, y NCHW
	act   Act
}

func (t *actBackwardTask) run(_, i int) {
	dy, y := &t.dy, &t.y
	plane := dy.Plane()
	n, c := i/dy.C, i%dy.C
	g := dy.Data[n*dy.BatchStride()+c*plane:][:plane]
	ys := y.Data[n*y.BatchStride()+c*plane:][:plane]
	var slope float32
	if t.act == ActLeaky {
		slope = LeakySlope
	}
	C.td_act_bwd(fptr(g), fptr(ys), C.int(plane), C.float(slope))
}
