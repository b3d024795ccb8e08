package finetune

import "math"

// ciouEps is the eps of the official bbox_iou (utils/general.py).
const ciouEps = 1e-7

// ciouV is 4/π², the weight of the aspect-ratio term v.
const ciouV = 4 / (math.Pi * math.Pi)

// ciouGrad is the gradient of a CIoU value with respect to the predicted box
// (centre x, centre y, width, height).
type ciouGrad struct {
	X, Y, W, H float64
}

// ciouMinGrad returns the share of d min(a, b) / d a that torch's minimum
// backward gives: 1 when a < b, 0 when a > b and 1/2 on a tie.
func ciouMinGrad(a, b float64) float64 {
	if a < b {
		return 1
	}
	if a > b {
		return 0
	}
	return 0.5
}

// ciouMaxGrad is ciouMinGrad for maximum.
func ciouMaxGrad(a, b float64) float64 {
	if a > b {
		return 1
	}
	if a < b {
		return 0
	}
	return 0.5
}

// ciou evaluates the complete IoU of the predicted box p = (x, y, w, h)
// against the target box t (same layout, same units) exactly as the
// official bbox_iou(x1y1x2y2=False, CIoU=True) does, eps included, and
// returns it with its gradient with respect to p scaled by g (the upstream
// gradient). α = v/(v − iou + 1 + eps) is a constant for the backward, as
// in the official no_grad block. Ties in min/max split the gradient in two
// and a clamp at exactly 0 lets it through, as torch's backward does.
func ciou(p, t [4]float64, g float64) (float64, ciouGrad) {
	const eps = ciouEps
	// Corners.
	b1x1, b1x2 := p[0]-p[2]/2, p[0]+p[2]/2
	b1y1, b1y2 := p[1]-p[3]/2, p[1]+p[3]/2
	b2x1, b2x2 := t[0]-t[2]/2, t[0]+t[2]/2
	b2y1, b2y2 := t[1]-t[3]/2, t[1]+t[3]/2

	// Intersection.
	iwRaw := math.Min(b1x2, b2x2) - math.Max(b1x1, b2x1)
	ihRaw := math.Min(b1y2, b2y2) - math.Max(b1y1, b2y1)
	iw, ih := math.Max(iwRaw, 0), math.Max(ihRaw, 0)
	inter := iw * ih

	// Union.
	w1, h1 := b1x2-b1x1, b1y2-b1y1+eps
	w2, h2 := b2x2-b2x1, b2y2-b2y1+eps
	union := w1*h1 + w2*h2 - inter + eps
	iou := inter / union

	// Enclosing box and centre distance.
	cw := math.Max(b1x2, b2x2) - math.Min(b1x1, b2x1)
	ch := math.Max(b1y2, b2y2) - math.Min(b1y1, b2y1)
	c2 := cw*cw + ch*ch + eps
	sx := b2x1 + b2x2 - b1x1 - b1x2
	sy := b2y1 + b2y2 - b1y1 - b1y2
	rho2 := (sx*sx + sy*sy) / 4

	// Aspect ratio.
	d := math.Atan(w2/(h2+eps)) - math.Atan(w1/(h1+eps))
	v := ciouV * d * d
	alpha := v / (v - iou + (1 + eps))
	val := iou - (rho2/c2 + v*alpha)

	if g == 0 {
		return val, ciouGrad{}
	}

	// Backward: val = iou − rho2/c2 − α·v.
	dIoU := g
	dRho2 := -g / c2
	dC2 := g * rho2 / (c2 * c2)
	dV := -g * alpha

	var dx1, dx2, dy1, dy2 float64 // gradients of box 1's corners
	var dw1, dh1 float64

	// iou = inter/union.
	dInter := dIoU / union
	dUnion := -dIoU * inter / (union * union)
	// union = w1·h1 + w2·h2 − inter + eps.
	dw1 += dUnion * h1
	dh1 += dUnion * w1
	dInter -= dUnion
	// inter = clamp(iwRaw, 0)·clamp(ihRaw, 0).
	if iwRaw >= 0 {
		diw := dInter * ih
		dx2 += diw * ciouMinGrad(b1x2, b2x2)
		dx1 -= diw * ciouMaxGrad(b1x1, b2x1)
	}
	if ihRaw >= 0 {
		dih := dInter * iw
		dy2 += dih * ciouMinGrad(b1y2, b2y2)
		dy1 -= dih * ciouMaxGrad(b1y1, b2y1)
	}
	// c2 = cw² + ch² + eps.
	dcw := dC2 * 2 * cw
	dch := dC2 * 2 * ch
	dx2 += dcw * ciouMaxGrad(b1x2, b2x2)
	dx1 -= dcw * ciouMinGrad(b1x1, b2x1)
	dy2 += dch * ciouMaxGrad(b1y2, b2y2)
	dy1 -= dch * ciouMinGrad(b1y1, b2y1)
	// rho2 = (sx² + sy²)/4 with sx = … − b1x1 − b1x2.
	dsx := dRho2 * sx / 2
	dsy := dRho2 * sy / 2
	dx1 -= dsx
	dx2 -= dsx
	dy1 -= dsy
	dy2 -= dsy
	// v = k·d², d = atan(w2/(h2+eps)) − atan(w1/(h1+eps)).
	dd := dV * 2 * ciouV * d
	hd := h1 + eps
	r := w1 / hd
	dr := -dd / (1 + r*r)
	dw1 += dr / hd
	dh1 -= dr * w1 / (hd * hd)
	// w1 = x2 − x1, h1 = y2 − y1 + eps.
	dx2 += dw1
	dx1 -= dw1
	dy2 += dh1
	dy1 -= dh1
	// x1 = x − w/2, x2 = x + w/2.
	return val, ciouGrad{
		X: dx1 + dx2,
		Y: dy1 + dy2,
		W: (dx2 - dx1) / 2,
		H: (dy2 - dy1) / 2,
	}
}
