package finetune

import (
	"fmt"
	"math"
	"sort"
)

// This file reproduces the official evaluation: the per-image matching loop
// of test.py and utils.metrics.ap_per_class / compute_ap, including numpy's
// interp, trapz and pairwise-summation semantics, so that the numbers agree
// with the official ones to the last few ulps.

// NumIoUThresholds is the number of IoU thresholds of test.py (0.50:0.05:0.95).
const NumIoUThresholds = 10

// Box is an axis-aligned box in pixels, corners (X1, Y1) and (X2, Y2).
type Box struct{ X1, Y1, X2, Y2 float32 }

// Detection is one NMS output box. A slice of detections of one image must
// be in NMS order (descending Conf): the matching loop relies on it.
type Detection struct {
	Box
	Conf  float32
	Class int
}

// GroundTruth is one labelled box of an image.
type GroundTruth struct {
	Box
	Class int
}

// IoUThresholds returns test.py's iouv = torch.npLinspace(0.5, 0.95, 10) in
// float32. The torch values are exactly the float32 roundings of 0.50, 0.55,
// …, 0.95 (checked against map_case.json).
func IoUThresholds() [NumIoUThresholds]float32 {
	return [NumIoUThresholds]float32{0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95}
}

// ClipBox clips b to an image of w×h pixels as the official clip_coords
// does (x to [0, w], y to [0, h]). test.py clips both the predictions and
// the labels (scale_coords) before matching; MatchImage expects clipped
// boxes.
func ClipBox(b Box, w, h float32) Box {
	return Box{
		X1: clipCoord(b.X1, 0, w), Y1: clipCoord(b.Y1, 0, h),
		X2: clipCoord(b.X2, 0, w), Y2: clipCoord(b.Y2, 0, h),
	}
}

// clipCoord is torch.clamp_(v, lo, hi) for a finite interval (NaN passes).
func clipCoord(v, lo, hi float32) float32 {
	if v < lo {
		return lo
	}
	if v > hi {
		return hi
	}
	return v
}

// evalIoU is the official box_iou for one pair, in float32 with torch's
// operation order: inter / (area1 + area2 - inter). The explicit
// conversions keep the compiler from fusing operations.
func evalIoU(a, b Box) float32 {
	area1 := float32((a.X2 - a.X1) * (a.Y2 - a.Y1))
	area2 := float32((b.X2 - b.X1) * (b.Y2 - b.Y1))
	w := float32(min(a.X2, b.X2) - max(a.X1, b.X1))
	h := float32(min(a.Y2, b.Y2) - max(a.Y1, b.Y1))
	if w < 0 { // clamp(0)
		w = 0
	}
	if h < 0 {
		h = 0
	}
	inter := float32(w * h)
	union := float32(float32(area1+area2) - inter)
	return inter / union
}

// MatchImage is test.py's per-image matching. It returns, for every
// detection (in the order given), whether it is a true positive at each of
// the IoUThresholds.
//
// For every ground-truth class c (ascending, as torch.unique), each
// detection of class c takes its best-IoU ground truth of class c (the first
// one on ties; a NaN IoU makes the best NaN, as torch.max does). Walking the
// detections in order, one whose best IoU is strictly above 0.5 claims that
// ground truth if it is not yet detected and is then correct at every
// threshold its IoU strictly exceeds; otherwise it stays a false positive:
// there is no fallback to the second-best ground truth (unlike COCO). The
// walk stops once every ground truth of the image is detected.
//
// Boxes must already be scaled to the original image and clipped to it
// (see ClipBox). Detections of classes without ground truth stay false.
func MatchImage(dets []Detection, gts []GroundTruth) [][NumIoUThresholds]bool {
	correct := make([][NumIoUThresholds]bool, len(dets))
	if len(dets) == 0 || len(gts) == 0 {
		return correct
	}
	iouv := IoUThresholds()
	classes := make([]int, 0, 4)
	for _, g := range gts {
		classes = append(classes, g.Class)
	}
	classes = evalUnique(classes)

	detected := 0 // len(detected) of test.py, over all classes of the image
	var ti, pi []int
	var ious []float32
	var best []int
	taken := make([]bool, len(gts))
	for _, c := range classes {
		ti, pi = ti[:0], pi[:0]
		for k, g := range gts {
			if g.Class == c {
				ti = append(ti, k)
			}
		}
		for k, d := range dets {
			if d.Class == c {
				pi = append(pi, k)
			}
		}
		if len(pi) == 0 {
			continue
		}
		ious, best = ious[:0], best[:0]
		for _, p := range pi {
			// torch.max(1): the first maximum; a NaN wins and stays.
			bi, bv := 0, evalIoU(dets[p].Box, gts[ti[0]].Box)
			for k := 1; k < len(ti) && bv == bv; k++ {
				if v := evalIoU(dets[p].Box, gts[ti[k]].Box); v > bv || v != v {
					bi, bv = k, v
				}
			}
			ious = append(ious, bv)
			best = append(best, ti[bi])
		}
		for j, p := range pi {
			if !(ious[j] > iouv[0]) {
				continue
			}
			d := best[j]
			if taken[d] {
				continue
			}
			taken[d] = true
			detected++
			for k := range iouv {
				correct[p][k] = ious[j] > iouv[k]
			}
			if detected == len(gts) {
				break
			}
		}
	}
	return correct
}

// ClassMetrics are the results of one ground-truth class.
type ClassMetrics struct {
	Class   int                       // class index
	NGT     int                       // number of ground truths of the class
	P, R    float64                   // precision and recall at the max-mean-F1 confidence
	F1      float64                   // F1 there
	AP50    float64                   // AP at IoU 0.5
	AP50_95 float64                   // mean AP over the 10 thresholds
	AP      [NumIoUThresholds]float64 // AP at each of IoUThresholds
}

// Metrics are test.py's summary over the classes that have ground truth:
// the means of P, R, AP50 and AP50_95 over PerClass, and the official
// fitness 0.1·MAP50 + 0.9·MAP50_95.
type Metrics struct {
	P        float64        // mean precision (mp)
	R        float64        // mean recall (mr)
	MAP50    float64        // mean AP at IoU 0.5 (map50)
	MAP50_95 float64        // mean AP over IoU 0.5:0.95 (map)
	Fitness  float64        // 0.1·MAP50 + 0.9·MAP50_95
	PerClass []ClassMetrics // ascending class, gt classes only
}

// Fitness is the official utils.metrics.fitness of [P, R, mAP@.5,
// mAP@.5:.95] with weights [0, 0, 0.1, 0.9].
func Fitness(p, r, map50, map50_95 float64) float64 {
	return ((0*p + 0*r) + 0.1*map50) + 0.9*map50_95
}

// APPerClass is the official ap_per_class followed by test.py's means.
// correct, conf and predClass describe every prediction of the data set
// (one row each, as MatchImage and the NMS give them); targetClass holds the
// class of every ground truth. v5 selects the v5_metric recall sentinel
// (1.0 instead of recall_last + 0.01).
//
// Only classes that have ground truth are evaluated (predictions of other
// classes are ignored); a class without predictions gets P = R = AP = 0.
// Predictions are ordered by descending confidence with a stable sort: numpy's
// argsort is not stable, so with tied confidences the official order (and
// possibly the result) is implementation-defined. It panics if correct,
// conf and predClass differ in length (a programming error).
func APPerClass(correct [][NumIoUThresholds]bool, conf []float32, predClass []int, targetClass []int, v5 bool) Metrics {
	if len(correct) != len(conf) || len(conf) != len(predClass) {
		panic(fmt.Sprintf("finetune.APPerClass: %d correct rows, %d confidences and %d classes differ", len(correct), len(conf), len(predClass)))
	}
	order := make([]int, len(conf))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return conf[order[a]] > conf[order[b]] })

	classes := evalUnique(append([]int(nil), targetClass...))
	nc := len(classes)
	const npx = 1000
	px := npLinspace(0, 1, npx)
	x101 := npLinspace(0, 1, 101)
	p := make([][]float64, nc)
	r := make([][]float64, nc)
	out := Metrics{PerClass: make([]ClassMetrics, nc)}

	ngt := make(map[int]int, nc)
	for _, t := range targetClass {
		ngt[t]++
	}
	byClass := make(map[int][]int, nc) // prediction rows of each gt class, by descending conf
	for _, k := range order {
		if _, ok := ngt[predClass[k]]; ok {
			byClass[predClass[k]] = append(byClass[predClass[k]], k)
		}
	}
	var xp, rec0, pre0 []float64
	for ci, c := range classes {
		cm := &out.PerClass[ci]
		cm.Class, cm.NGT = c, ngt[c]
		p[ci] = make([]float64, npx)
		r[ci] = make([]float64, npx)
		idx := byClass[c]
		if len(idx) == 0 || cm.NGT == 0 {
			continue
		}
		n := len(idx)
		xp = evalResize(xp, n)
		for k, i := range idx {
			xp[k] = -float64(conf[i])
		}
		nl := float64(cm.NGT) + 1e-16
		recall := make([]float64, n)
		precision := make([]float64, n)
		for j := 0; j < NumIoUThresholds; j++ {
			tpc, fpc := 0, 0
			for k, i := range idx {
				if correct[i][j] {
					tpc++
				} else {
					fpc++
				}
				recall[k] = float64(tpc) / nl
				precision[k] = float64(tpc) / float64(tpc+fpc)
			}
			if j == 0 {
				rec0 = append(rec0[:0], recall...)
				pre0 = append(pre0[:0], precision...)
			}
			cm.AP[j] = computeAP(recall, precision, x101, v5)
		}
		for q, x := range px {
			r[ci][q] = npInterp(-x, xp, rec0, 0, rec0[n-1])
			p[ci][q] = npInterp(-x, xp, pre0, 1, pre0[n-1])
		}
	}
	if nc == 0 {
		return out
	}

	// f1 = 2pr/(p+r+1e-16); i = f1.mean(0).argmax()
	f1 := make([][]float64, nc)
	for ci := range f1 {
		f1[ci] = make([]float64, npx)
		for q := range f1[ci] {
			f1[ci][q] = 2 * p[ci][q] * r[ci][q] / (p[ci][q] + r[ci][q] + 1e-16)
		}
	}
	bestQ, bestV := 0, 0.0
	for q := 0; q < npx; q++ {
		s := 0.0 // numpy reduces axis 0 row by row
		for ci := range f1 {
			s += f1[ci][q]
		}
		s /= float64(nc)
		if q == 0 || s > bestV { // argmax: the first maximum
			bestQ, bestV = q, s
		}
	}

	ps, rs, ap50s, aps := make([]float64, nc), make([]float64, nc), make([]float64, nc), make([]float64, nc)
	for ci := range out.PerClass {
		cm := &out.PerClass[ci]
		cm.P, cm.R, cm.F1 = p[ci][bestQ], r[ci][bestQ], f1[ci][bestQ]
		cm.AP50 = cm.AP[0]
		cm.AP50_95 = npMean(cm.AP[:])
		ps[ci], rs[ci], ap50s[ci], aps[ci] = cm.P, cm.R, cm.AP50, cm.AP50_95
	}
	out.P, out.R, out.MAP50, out.MAP50_95 = npMean(ps), npMean(rs), npMean(ap50s), npMean(aps)
	out.Fitness = Fitness(out.P, out.R, out.MAP50, out.MAP50_95)
	return out
}

// computeAP is the official compute_ap with the 101-point 'interp' method:
// sentinels mrec = [0, recall, recall_last+0.01 (v5: 1)], mpre = [1,
// precision, 0], the precision envelope from the right, then
// npTrapz(npInterp(x101, mrec, mpre), x101).
func computeAP(recall, precision, x101 []float64, v5 bool) float64 {
	n := len(recall)
	mrec := make([]float64, n+2)
	mpre := make([]float64, n+2)
	copy(mrec[1:], recall)
	copy(mpre[1:], precision)
	mpre[0] = 1
	if v5 {
		mrec[n+1] = 1
	} else {
		mrec[n+1] = recall[n-1] + 0.01
	}
	for i := n; i >= 0; i-- { // np.maximum.accumulate from the right
		mpre[i] = npMaximum(mpre[i], mpre[i+1])
	}
	y := make([]float64, len(x101))
	for i, x := range x101 {
		y[i] = npInterp(x, mrec, mpre, mpre[0], mpre[n+1])
	}
	return npTrapz(y, x101)
}

// npMaximum is np.maximum (NaN propagates).
func npMaximum(a, b float64) float64 {
	if a != a || b != b {
		return math.NaN()
	}
	return math.Max(a, b)
}

// npInterp is np.interp for one point: xp ascending, left/right for points
// outside, and inside the interval the largest j with xp[j] <= x gives
// slope·(x − xp[j]) + fp[j] (fp[j] exactly at a knot and at the last knot).
func npInterp(x float64, xp, fp []float64, left, right float64) float64 {
	n := len(xp)
	switch {
	case x != x:
		return x
	case x > xp[n-1]:
		return right
	case x < xp[0]:
		return left
	}
	// largest j with xp[j] <= x
	j := sort.Search(n, func(i int) bool { return xp[i] > x }) - 1
	if j == n-1 || xp[j] == x {
		return fp[j]
	}
	slope := (fp[j+1] - fp[j]) / (xp[j+1] - xp[j])
	res := float64(slope*(x-xp[j])) + fp[j]
	if res != res {
		res = float64(slope*(x-xp[j+1])) + fp[j+1]
		if res != res && fp[j] == fp[j+1] {
			res = fp[j]
		}
	}
	return res
}

// npLinspace is np.linspace(start, stop, num) in float64: i·step + start with
// the last point set to stop.
func npLinspace(start, stop float64, num int) []float64 {
	y := make([]float64, num)
	if num == 1 {
		y[0] = start
		return y
	}
	step := (stop - start) / float64(num-1)
	for i := range y {
		y[i] = float64(float64(i)*step) + start
	}
	y[num-1] = stop
	return y
}

// npTrapz is np.trapz(y, x): add.reduce(diff(x)·(y[1:] + y[:-1]) / 2).
func npTrapz(y, x []float64) float64 {
	if len(y) < 2 {
		return 0
	}
	t := make([]float64, len(y)-1)
	for i := range t {
		t[i] = float64((x[i+1]-x[i])*(y[i+1]+y[i])) / 2
	}
	return npPairwiseSum(t)
}

// npMean is ndarray.mean of a 1-D float64 array: pairwise sum / n.
func npMean(a []float64) float64 {
	return npPairwiseSum(a) / float64(len(a))
}

// npPairwiseSum is numpy's float64 add.reduce (pairwise summation with an
// 8-way unrolled base case of up to 128 elements).
func npPairwiseSum(a []float64) float64 {
	n := len(a)
	switch {
	case n < 8:
		res := 0.0
		for _, v := range a {
			res += v
		}
		return res
	case n <= 128:
		var r [8]float64
		copy(r[:], a[:8])
		i := 8
		for ; i < n-n%8; i += 8 {
			for k := range r {
				r[k] += a[i+k]
			}
		}
		res := ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
		for ; i < n; i++ {
			res += a[i]
		}
		return res
	default:
		n2 := n / 2
		n2 -= n2 % 8
		return npPairwiseSum(a[:n2]) + npPairwiseSum(a[n2:])
	}
}

// evalUnique sorts s in place and drops duplicates (np.unique).
func evalUnique(s []int) []int {
	sort.Ints(s)
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// evalResize returns s with length n, reusing its storage when possible.
func evalResize(s []float64, n int) []float64 {
	if cap(s) < n {
		return make([]float64, n)
	}
	return s[:n]
}

// Evaluator accumulates test.py's statistics over a validation set: Add one
// image at a time, then read Metrics. The zero value is ready to use.
type Evaluator struct {
	correct   [][NumIoUThresholds]bool
	conf      []float32
	predClass []int
	gtClass   []int
	images    int
}

// Add matches one image's detections (NMS order, scaled and clipped) against
// its ground truths (scaled and clipped) with MatchImage and records the
// result. An image without detections still contributes its ground truths
// (misses); one without ground truth contributes its detections as false
// positives.
func (e *Evaluator) Add(dets []Detection, gts []GroundTruth) {
	e.images++
	c := MatchImage(dets, gts)
	e.correct = append(e.correct, c...)
	for _, d := range dets {
		e.conf = append(e.conf, d.Conf)
		e.predClass = append(e.predClass, d.Class)
	}
	for _, g := range gts {
		e.gtClass = append(e.gtClass, g.Class)
	}
}

// Images returns the number of images added.
func (e *Evaluator) Images() int { return e.images }

// Reset forgets every image, keeping the storage.
func (e *Evaluator) Reset() {
	e.correct, e.conf, e.predClass, e.gtClass = e.correct[:0], e.conf[:0], e.predClass[:0], e.gtClass[:0]
	e.images = 0
}

// Metrics computes APPerClass over everything added so far. v5 selects the
// v5_metric AP sentinel (train.py's default is false).
func (e *Evaluator) Metrics(v5 bool) Metrics {
	return APPerClass(e.correct, e.conf, e.predClass, e.gtClass, v5)
}
