package tiny

/*
#cgo CFLAGS: -O3
#include <stddef.h>
#include <string.h>

// v4f is four floats, v4d four doubles (two SSE2 registers): explicit
// vectors make the double sums below SIMD in a fixed order (the compiler
// does not reassociate scalar floating-point sums).
typedef float v4f __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));

// td_pair is two double sums.
typedef struct { double s, t; } td_pair;

// TD_LOAD4D sets out (a v4d) to x[0..4) converted to doubles.
#define TD_LOAD4D(out, x) do { v4f f_; memcpy(&f_, (x), sizeof f_); (out) = __builtin_convertvector(f_, v4d); } while (0)

// td_shifted_sums returns the double sums of d and d*d, d = x[i] - k, in
// one pass (k near the mean keeps the variance from cancelling).
static td_pair td_shifted_sums(const float *x, int n, double k) {
	const v4d kv = {k, k, k, k};
	v4d s0 = {0}, s1 = {0}, q0 = {0}, q1 = {0};
	int i = 0;
	for (; i + 8 <= n; i += 8) {
		v4d d0, d1;
		TD_LOAD4D(d0, x + i);
		TD_LOAD4D(d1, x + i + 4);
		d0 -= kv;
		d1 -= kv;
		s0 += d0;
		s1 += d1;
		q0 += d0 * d0;
		q1 += d1 * d1;
	}
	double s = 0, q = 0;
	for (; i < n; i++) { const double d = x[i] - k; s += d; q += d * d; }
	const v4d sv = s0 + s1, qv = q0 + q1;
	td_pair p = {((sv[0] + sv[1]) + (sv[2] + sv[3])) + s, ((qv[0] + qv[1]) + (qv[2] + qv[3])) + q};
	return p;
}

// td_bn_apply is y[i] = act(x[i]*s + b (+ r[i] when r)), act 0 none,
// 1 ReLU, 2 LeakyReLU(slope) written as max(v, v*slope) (the same for
// 0 < slope < 1, NaN included); the product is rounded before the sum, as
// affinePlane. y may be r or x. Every loop is a select the compiler
// vectorises (a branch per value mispredicts on random signs).
static void td_bn_apply(float *y, const float *x, const float *r, int n, float s, float b, int act, float slope) {
	if (r) {
		if (act == 0) {
			for (int i = 0; i < n; i++) { float p = x[i] * s; y[i] = (p + b) + r[i]; }
		} else if (act == 1) {
			for (int i = 0; i < n; i++) { float p = x[i] * s; float v = (p + b) + r[i]; y[i] = v >= 0 ? v : 0.0f; }
		} else {
			for (int i = 0; i < n; i++) {
				float p = x[i] * s;
				float v = (p + b) + r[i];
				float w = v * slope;
				y[i] = v > w ? v : w;
			}
		}
		return;
	}
	if (act == 0) {
		for (int i = 0; i < n; i++) { float p = x[i] * s; y[i] = p + b; }
	} else if (act == 1) {
		for (int i = 0; i < n; i++) { float p = x[i] * s; float v = p + b; y[i] = v >= 0 ? v : 0.0f; }
	} else {
		for (int i = 0; i < n; i++) {
			float p = x[i] * s;
			float v = p + b;
			float w = v * slope;
			y[i] = v > w ? v : w;
		}
	}
}

// td_bn_sums returns the double sums of g[i] and of g[i]*(x[i]-mean).
static td_pair td_bn_sums(const float *g, const float *x, int n, double mean) {
	const v4d mv = {mean, mean, mean, mean};
	v4d s0 = {0}, s1 = {0}, t0 = {0}, t1 = {0};
	int i = 0;
	for (; i + 8 <= n; i += 8) {
		v4d g0, g1, x0, x1;
		TD_LOAD4D(g0, g + i);
		TD_LOAD4D(g1, g + i + 4);
		TD_LOAD4D(x0, x + i);
		TD_LOAD4D(x1, x + i + 4);
		s0 += g0;
		s1 += g1;
		t0 += g0 * (x0 - mv);
		t1 += g1 * (x1 - mv);
	}
	double s = 0, t = 0;
	for (; i < n; i++) { const double d = g[i]; s += d; t += d * (x[i] - mean); }
	const v4d sv = s0 + s1, tv = t0 + t1;
	td_pair p = {((sv[0] + sv[1]) + (sv[2] + sv[3])) + s, ((tv[0] + tv[1]) + (tv[2] + tv[3])) + t};
	return p;
}

// td_bn_bwd_apply is dx[i] = g[i]*k1 + (x[i]-mean)*k2 + k0; dx may be g.
static void td_bn_bwd_apply(float *dx, const float *g, const float *x, int n, float mean, float k1, float k2, float k0) {
	for (int i = 0; i < n; i++) dx[i] = g[i] * k1 + (x[i] - mean) * k2 + k0;
}
*/
import "C"

import "math"

// Training-form BatchNorm on the CPU. Every channel is one work item: its
// statistics (float64 sums over N, H and W), its running-statistics
// update, then the normalisation, residual and activation of its N
// planes, so an item reads and writes only its own channel.

// BNForward implements TrainDevice: y = act((x-mean)*invstd*gamma + beta
// + Add) with the batch's statistics (BNBatch: the running statistics are
// updated) or the running ones (BNFrozen). y may alias x or a.Add.
func (d *CPU) BNForward(y, x NCHW, a BNArgs) error {
	if err := checkBNForward(y, x, a); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	t := &d.bnFwd
	*t = bnForwardTask{y: y, x: x, a: a}
	d.parallel(x.C, t)
	*t = bnForwardTask{}
	return nil
}

// bnForwardTask is BNForward's loop body: item c is channel c.
type bnForwardTask struct {
	y, x NCHW
	a    BNArgs
}

func (t *bnForwardTask) run(_, c int) {
	x, y, a := &t.x, &t.y, &t.a
	hw := x.Plane()
	var mean, invstd float64
	if a.Mode == BNBatch {
		// One pass of sums shifted by the channel's first value:
		// mean = k + Σd/M, var = Σd²/M - (Σd/M)², d = x - k, in float64.
		m := float64(x.N * hw)
		k := float64(x.Data[c*hw])
		var s, q float64
		for n := 0; n < x.N; n++ {
			p := C.td_shifted_sums(fptr(x.Data[n*x.BatchStride()+c*hw:][:hw]), C.int(hw), C.double(k))
			s += float64(p.s)
			q += float64(p.t)
		}
		mean = k + s/m
		v := max(q/m-(s/m)*(s/m), 0)
		mom := float64(a.Momentum)
		a.RunMean[c] = float32((1-mom)*float64(a.RunMean[c]) + mom*mean)
		a.RunVar[c] = float32((1-mom)*float64(a.RunVar[c]) + mom*v*m/(m-1))
		invstd = 1 / math.Sqrt(v+float64(a.Eps))
	} else {
		mean = float64(a.RunMean[c])
		invstd = 1 / math.Sqrt(float64(a.RunVar[c])+float64(a.Eps))
	}
	a.SaveMean[c] = float32(mean)
	a.SaveInvStd[c] = float32(invstd)
	scale := invstd * float64(a.Weight[c])
	shift := float64(a.Bias[c]) - mean*scale
	act := 0
	switch a.Act {
	case ActReLU:
		act = 1
	case ActLeaky:
		act = 2
	}
	for n := 0; n < x.N; n++ {
		xs := x.Data[n*x.BatchStride()+c*hw:][:hw]
		ys := y.Data[n*y.BatchStride()+c*hw:][:hw]
		var rs *C.float
		if a.Add.Data != nil {
			rs = fptr(a.Add.Data[n*a.Add.BatchStride()+c*hw:][:hw])
		}
		C.td_bn_apply(fptr(ys), fptr(xs), rs, C.int(hw), C.float(scale), C.float(shift), C.int(act), C.float(LeakySlope))
	}
}

// BNBackward implements TrainDevice: with xhat = (x-mean)*invstd (the
// statistics BNForward saved), dBeta += Σdy, dGamma += Σdy*xhat and
//
//	BNFrozen: dx = dy*gamma*invstd
//	BNBatch:  dx = gamma*invstd*(dy - Σdy/M - xhat*Σ(dy*xhat)/M)
//
// (sums per channel over M = N*H*W values, in float64). The sums are
// complete before dx is written, so dx may alias dy.
func (d *CPU) BNBackward(dx, dy, x NCHW, a BNArgs, dGamma, dBeta []float32) error {
	if err := checkBNBackward(dx, dy, x, a, dGamma, dBeta); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	t := &d.bnBwd
	*t = bnBackwardTask{dx: dx, dy: dy, x: x, a: a, dGamma: dGamma, dBeta: dBeta}
	d.parallel(x.C, t)
	*t = bnBackwardTask{}
	return nil
}

// bnBackwardTask is BNBackward's loop body: item c is channel c.
type bnBackwardTask struct {
	dx, dy, x     NCHW
	a             BNArgs
	dGamma, dBeta []float32
}

func (t *bnBackwardTask) run(_, c int) {
	dx, dy, x, a := &t.dx, &t.dy, &t.x, &t.a
	hw := x.Plane()
	mean, inv := a.SaveMean[c], float64(a.SaveInvStd[c])
	var sdy, sdyx float64 // Σdy, Σdy*(x-mean)
	for n := 0; n < x.N; n++ {
		g := dy.Data[n*dy.BatchStride()+c*hw:][:hw]
		xs := x.Data[n*x.BatchStride()+c*hw:][:hw]
		p := C.td_bn_sums(fptr(g), fptr(xs), C.int(hw), C.double(mean))
		sdy += float64(p.s)
		sdyx += float64(p.t)
	}
	t.dBeta[c] += float32(sdy)
	t.dGamma[c] += float32(sdyx * inv)
	k1 := float64(a.Weight[c]) * inv
	var k0, k2 float64
	if a.Mode == BNBatch {
		m := float64(x.N * hw)
		k0 = -k1 * sdy / m
		k2 = -k1 * inv * inv * sdyx / m
	}
	f1, f0, f2 := float32(k1), float32(k0), float32(k2)
	for n := 0; n < x.N; n++ {
		g := dy.Data[n*dy.BatchStride()+c*hw:][:hw]
		xs := x.Data[n*x.BatchStride()+c*hw:][:hw]
		out := dx.Data[n*dx.BatchStride()+c*hw:][:hw]
		C.td_bn_bwd_apply(fptr(out), fptr(g), fptr(xs), C.int(hw), C.float(mean), C.float(f1), C.float(f2), C.float(f0))
	}
}
