package finetune

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// This file holds the training augmentation of the official
// utils/datasets.py LoadImagesAndLabels.__getitem__, in its order:
//
//  1. with probability hyp.Mosaic a 4-image mosaic (load_mosaic), else the
//     image alone, letterboxed to size×size (auto=False);
//  2. random_perspective with degrees = shear = perspective = 0, i.e. a
//     random scale in [1−scale, 1.1+scale] (the official YOLOv7 range,
//     slightly biased upwards) about the centre and a random translation of
//     ±translate; on a mosaic its border of −size/2 crops the 2·size canvas
//     back to size×size; boxes are transformed, clipped and filtered by
//     box_candidates (wh_thr = 2 px, ar_thr = 20, area_thr = 0.1);
//  3. augment_hsv with random gains, in OpenCV's uint8 HSV (H in [0, 180));
//  4. a horizontal flip with probability hyp.FlipLR.
//
// Not done: load_mosaic9 (the official code picks it for 20% of mosaics),
// mixup, paste_in and copy_paste (hyp.scratch.tiny sets mixup and paste_in
// to 0.05; the Hyp here has no such fields), flipud (0 in every hyp file).
// Rotation, shear and perspective are 0 in hyp.scratch.tiny, so the warp
// is axis-aligned and runs as a separable bilinear remap.
//
// Pixel convention: pixel i covers [i, i+1); box coordinates and the warp
// use the same convention, so boxes follow the pixels exactly (OpenCV's
// warpAffine samples at integer coordinates, a sub-pixel difference).

// LetterboxInfo says how an original image was placed on the network
// input: resized by RatioW, RatioH (resized / original size) to W×H pixels,
// then shifted by PadW, PadH pixels (left and top padding).
type LetterboxInfo struct {
	RatioW, RatioH float64
	PadW, PadH     int
	W, H           int
}

// ToOriginal maps a point of the network input to original image pixels.
func (l LetterboxInfo) ToOriginal(x, y float64) (float64, float64) {
	return (x - float64(l.PadW)) / l.RatioW, (y - float64(l.PadH)) / l.RatioH
}

// FromOriginal maps a point of the original image to the network input.
func (l LetterboxInfo) FromOriginal(x, y float64) (float64, float64) {
	return x*l.RatioW + float64(l.PadW), y*l.RatioH + float64(l.PadH)
}

// fitSize returns the size an image of w×h pixels gets when its long side
// is resized to size (the official load_image), without enlarging it when
// upscale is false. Sides are truncated, as int(w0·r) does, but computed
// in integers so that the long side is exactly size.
func fitSize(w, h, size int, upscale bool) (int, int) {
	long := max(w, h)
	if long <= 0 || (!upscale && long <= size) {
		return w, h
	}
	return max(1, w*size/long), max(1, h*size/long)
}

// ResizeToFit resizes img bilinearly so that its long side is size pixels
// (not enlarging it when upscale is false), as the official load_image
// does for training.
func ResizeToFit(img *RGBImage, size int, upscale bool) *RGBImage {
	w, h := fitSize(img.W, img.H, size, upscale)
	return ResizeBilinear(img, w, h)
}

// resizeToFitEval is ResizeToFit for evaluation: the official load_image
// shrinks with INTER_AREA when not augmenting.
func resizeToFitEval(img *RGBImage, size int, upscale bool) *RGBImage {
	w, h := fitSize(img.W, img.H, size, upscale)
	return ResizeArea(img, w, h)
}

// Letterbox resizes img to fit in size×size (never enlarging it unless
// upscale; shrinking by area, enlarging bilinearly, as the official
// evaluation loader) and pads it centred with grey 114, as the official
// letterbox with auto=False: the left/top padding is round(d/2 − 0.1) of
// the total d. The returned info maps boxes between the two images. It is
// what the Loader does to an image without augmentation.
func Letterbox(img *RGBImage, size int, upscale bool) (*RGBImage, LetterboxInfo) {
	r := resizeToFitEval(img, size, upscale)
	out, padW, padH := padToSquare(r, size)
	return out, LetterboxInfo{
		RatioW: float64(r.W) / float64(img.W), RatioH: float64(r.H) / float64(img.H),
		PadW: padW, PadH: padH, W: r.W, H: r.H,
	}
}

// padToSquare places img (at most size×size) centred on a size×size grey
// canvas and returns the left and top padding.
func padToSquare(img *RGBImage, size int) (*RGBImage, int, int) {
	padW := int(math.Round(float64(size-img.W)/2 - 0.1))
	padH := int(math.Round(float64(size-img.H)/2 - 0.1))
	if img.W == size && img.H == size {
		return img.Clone(), 0, 0
	}
	out := NewRGBImage(size, size, padValue)
	blit(out, img, padW, padH, 0, 0, img.W, img.H)
	return out, padW, padH
}

// blit copies the rectangle [x1, x2)×[y1, y2) of src to dst at (dx, dy).
// The caller keeps both rectangles inside their images.
func blit(dst, src *RGBImage, dx, dy, x1, y1, x2, y2 int) {
	n := 3 * (x2 - x1)
	if n <= 0 {
		return
	}
	for y := y1; y < y2; y++ {
		s := 3 * (y*src.W + x1)
		d := 3 * ((dy+y-y1)*dst.W + dx)
		copy(dst.Pix[d:d+n], src.Pix[s:s+n])
	}
}

// pixBox is a box in pixels (x1, y1, x2, y2) with its class.
type pixBox struct {
	cls            int
	x1, y1, x2, y2 float64
}

// toPixBoxes converts normalised labels of a w×h image to pixel boxes
// shifted by (padW, padH) (the official xywhn2xyxy).
func toPixBoxes(labels []BoxLabel, w, h int, padW, padH float64) []pixBox {
	out := make([]pixBox, len(labels))
	fw, fh := float64(w), float64(h)
	for i, l := range labels {
		x, y, bw, bh := float64(l.X), float64(l.Y), float64(l.W), float64(l.H)
		out[i] = pixBox{l.Class, fw*(x-bw/2) + padW, fh*(y-bh/2) + padH, fw*(x+bw/2) + padW, fh*(y+bh/2) + padH}
	}
	return out
}

// toBoxLabels converts pixel boxes on a w×h image to normalised labels.
func toBoxLabels(boxes []pixBox, w, h int) []BoxLabel {
	out := make([]BoxLabel, len(boxes))
	fw, fh := float64(w), float64(h)
	for i, b := range boxes {
		out[i] = BoxLabel{Class: b.cls,
			X: float32((b.x1 + b.x2) / 2 / fw), Y: float32((b.y1 + b.y2) / 2 / fh),
			W: float32((b.x2 - b.x1) / fw), H: float32((b.y2 - b.y1) / fh)}
	}
	return out
}

// sampleSource gives the augmenter the training images: their count, the
// image of index i resized to fit the training size (load_image), its
// original size and its labels.
type sampleSource interface {
	count() int
	loadFit(i int) (*RGBImage, error)
	origSize(i int) (w, h int)
	labelsOf(i int) []BoxLabel
}

// augmented is one augmented training image and its objects.
type augmented struct {
	Image   *RGBImage  // size×size
	Labels  []BoxLabel // normalised to the image
	Sources []int      // the dataset indices drawn: 1, or 4 for a mosaic
	Mosaic  bool
	Flipped bool
	// Letterbox is the placement of the (single) source image before the
	// random affine; zero for a mosaic.
	Letterbox LetterboxInfo
}

// augmentSample builds the training image of dataset index idx with the
// random stream rng (see the file comment for the steps).
func augmentSample(src sampleSource, idx, size int, hyp Hyp, rng *rand.Rand) (*augmented, error) {
	a := &augmented{}
	var (
		img    *RGBImage
		boxes  []pixBox
		border int
	)
	if rng.Float64() < hyp.Mosaic {
		var err error
		img, boxes, a.Sources, err = mosaic4(src, idx, size, rng)
		if err != nil {
			return nil, err
		}
		a.Mosaic = true
		border = -size / 2
	} else {
		fit, err := src.loadFit(idx)
		if err != nil {
			return nil, err
		}
		var padW, padH int
		img, padW, padH = padToSquare(fit, size)
		boxes = toPixBoxes(src.labelsOf(idx), fit.W, fit.H, float64(padW), float64(padH))
		a.Sources = []int{idx}
		ow, oh := src.origSize(idx)
		a.Letterbox = LetterboxInfo{
			RatioW: float64(fit.W) / float64(max(ow, 1)), RatioH: float64(fit.H) / float64(max(oh, 1)),
			PadW: padW, PadH: padH, W: fit.W, H: fit.H,
		}
	}
	img, boxes = randomAffine(img, boxes, hyp.Translate, hyp.Scale, border, rng)
	augmentHSV(img, hyp.HSVH, hyp.HSVS, hyp.HSVV, rng)
	if rng.Float64() < hyp.FlipLR {
		flipLR(img)
		w := float64(img.W)
		for i := range boxes {
			boxes[i].x1, boxes[i].x2 = w-boxes[i].x2, w-boxes[i].x1
		}
		a.Flipped = true
	}
	a.Image = img
	a.Labels = toBoxLabels(boxes, img.W, img.H)
	return a, nil
}

// mosaic4 is the official load_mosaic: a 2s×2s grey canvas, a centre
// (xc, yc) drawn in [s/2, 3s/2), and the image idx plus 3 random ones
// placed top-left, top-right, bottom-left and bottom-right of it, each
// cropped by the canvas; boxes are clipped to the canvas.
func mosaic4(src sampleSource, idx, s int, rng *rand.Rand) (*RGBImage, []pixBox, []int, error) {
	lo, hi := float64(s/2), float64(2*s-s/2)
	yc := int(lo + (hi-lo)*rng.Float64())
	xc := int(lo + (hi-lo)*rng.Float64())
	idxs := []int{idx, rng.IntN(src.count()), rng.IntN(src.count()), rng.IntN(src.count())}
	canvas := NewRGBImage(2*s, 2*s, padValue)
	var boxes []pixBox
	for k, i := range idxs {
		img, err := src.loadFit(i)
		if err != nil {
			return nil, nil, nil, err
		}
		w, h := img.W, img.H
		var x1a, y1a, x2a, y2a, x1b, y1b, x2b, y2b int
		switch k {
		case 0: // top left
			x1a, y1a, x2a, y2a = max(xc-w, 0), max(yc-h, 0), xc, yc
			x1b, y1b, x2b, y2b = w-(x2a-x1a), h-(y2a-y1a), w, h
		case 1: // top right
			x1a, y1a, x2a, y2a = xc, max(yc-h, 0), min(xc+w, 2*s), yc
			x1b, y1b, x2b, y2b = 0, h-(y2a-y1a), min(w, x2a-x1a), h
		case 2: // bottom left
			x1a, y1a, x2a, y2a = max(xc-w, 0), yc, xc, min(2*s, yc+h)
			x1b, y1b, x2b, y2b = w-(x2a-x1a), 0, w, min(y2a-y1a, h)
		case 3: // bottom right
			x1a, y1a, x2a, y2a = xc, yc, min(xc+w, 2*s), min(2*s, yc+h)
			x1b, y1b, x2b, y2b = 0, 0, min(w, x2a-x1a), min(y2a-y1a, h)
		}
		blit(canvas, img, x1a, y1a, x1b, y1b, x2b, y2b)
		padW, padH := x1a-x1b, y1a-y1b
		boxes = append(boxes, toPixBoxes(src.labelsOf(i), w, h, float64(padW), float64(padH))...)
	}
	lim := float64(2 * s)
	for i := range boxes {
		b := &boxes[i]
		b.x1, b.y1 = math.Min(math.Max(b.x1, 0), lim), math.Min(math.Max(b.y1, 0), lim)
		b.x2, b.y2 = math.Min(math.Max(b.x2, 0), lim), math.Min(math.Max(b.y2, 0), lim)
	}
	return canvas, boxes, idxs, nil
}

// randomAffine is the official random_perspective with degrees, shear and
// perspective 0: the output is (W + 2·border)×(H + 2·border); the image is
// centred, scaled by a random factor in [1−scale, 1.1+scale] and moved to
// a random point within ±translate of the output's centre; the border is
// grey 114. Boxes are transformed, clipped to the output and filtered
// with boxCandidate.
func randomAffine(img *RGBImage, boxes []pixBox, translate, scale float64, border int, rng *rand.Rand) (*RGBImage, []pixBox) {
	ow, oh := img.W+2*border, img.H+2*border
	sc := (1 - scale) + (0.1+2*scale)*rng.Float64()
	sc = math.Max(sc, 1e-3) // a scale hyp >= 1 could draw 0 or less
	tx := ((0.5 - translate) + 2*translate*rng.Float64()) * float64(ow)
	ty := ((0.5 - translate) + 2*translate*rng.Float64()) * float64(oh)
	// dst = sc·(src − centre) + t
	bx := tx - sc*float64(img.W)/2
	by := ty - sc*float64(img.H)/2
	out := remap(img, affineTaps(img.W, ow, sc, bx), affineTaps(img.H, oh, sc, by), padValue)
	kept := boxes[:0]
	for _, b := range boxes {
		n := pixBox{cls: b.cls,
			x1: clampF(sc*b.x1+bx, 0, float64(ow)), y1: clampF(sc*b.y1+by, 0, float64(oh)),
			x2: clampF(sc*b.x2+bx, 0, float64(ow)), y2: clampF(sc*b.y2+by, 0, float64(oh))}
		if boxCandidate((b.x2-b.x1)*sc, (b.y2-b.y1)*sc, n.x2-n.x1, n.y2-n.y1) {
			kept = append(kept, n)
		}
	}
	return out, kept
}

// clampF limits v to [lo, hi].
func clampF(v, lo, hi float64) float64 { return math.Min(math.Max(v, lo), hi) }

// boxCandidate is the official box_candidates for one box of size w1×h1
// before clipping (after scaling) and w2×h2 after: both sides over 2
// pixels, at least 10% of the area left, aspect ratio under 20.
func boxCandidate(w1, h1, w2, h2 float64) bool {
	const (
		whThr   = 2
		arThr   = 20
		areaThr = 0.1
		eps     = 1e-16
	)
	ar := math.Max(w2/(h2+eps), h2/(w2+eps))
	return w2 > whThr && h2 > whThr && w2*h2/(w1*h1+eps) > areaThr && ar < arThr
}

// flipLR mirrors img horizontally in place.
func flipLR(img *RGBImage) {
	for y := 0; y < img.H; y++ {
		row := img.Pix[3*y*img.W : 3*(y+1)*img.W]
		for i, j := 0, img.W-1; i < j; i, j = i+1, j-1 {
			a, b := row[3*i:3*i+3], row[3*j:3*j+3]
			a[0], b[0] = b[0], a[0]
			a[1], b[1] = b[1], a[1]
			a[2], b[2] = b[2], a[2]
		}
	}
}

// augmentHSV is the official augment_hsv: random gains
// r = 1 + U(−1, 1)·(hgain, sgain, vgain) applied through lookup tables to
// OpenCV's uint8 HSV (hue (x·r) mod 180, saturation and value clipped to
// 255, each truncated to uint8), then back to RGB. With all gains 0 the
// image is left untouched (the official round trip would round it).
func augmentHSV(img *RGBImage, hgain, sgain, vgain float64, rng *rand.Rand) {
	r0 := 1 + (2*rng.Float64()-1)*hgain
	r1 := 1 + (2*rng.Float64()-1)*sgain
	r2 := 1 + (2*rng.Float64()-1)*vgain
	if hgain == 0 && sgain == 0 && vgain == 0 {
		return
	}
	var lutH, lutS, lutV [256]uint8
	for x := range 256 {
		h := float64(x) * r0
		h -= 180 * math.Floor(h/180) // numpy's % takes the divisor's sign
		lutH[x] = uint8(min(h, 179))
		lutS[x] = uint8(clampF(float64(x)*r1, 0, 255))
		lutV[x] = uint8(clampF(float64(x)*r2, 0, 255))
	}
	p := img.Pix
	for i := 0; i+2 < len(p); i += 3 {
		h, s, v := rgbToHSV(p[i], p[i+1], p[i+2])
		p[i], p[i+1], p[i+2] = hsvToRGB(lutH[h], lutS[s], lutV[v])
	}
}

// hsvShift and the division tables are OpenCV's fixed-point RGB→HSV for
// 8-bit images (color_hsv.simd.hpp).
const hsvShift = 12

var hsvTables = func() (t struct{ sdiv, hdiv [256]int32 }) {
	for i := 1; i < 256; i++ {
		t.sdiv[i] = int32(math.Round(float64(255<<hsvShift) / float64(i)))
		t.hdiv[i] = int32(math.Round(float64(180<<hsvShift) / (6 * float64(i))))
	}
	return t
}()

// rgbToHSV is OpenCV's COLOR_RGB2HSV for uint8: H in [0, 180), S and V in
// [0, 255].
func rgbToHSV(r, g, b uint8) (h, s, v uint8) {
	ri, gi, bi := int32(r), int32(g), int32(b)
	vv := max(ri, gi, bi)
	vmin := min(ri, gi, bi)
	diff := vv - vmin
	var hh int32
	switch {
	case vv == ri:
		hh = gi - bi
	case vv == gi:
		hh = bi - ri + 2*diff
	default:
		hh = ri - gi + 4*diff
	}
	ss := (diff*hsvTables.sdiv[vv] + (1 << (hsvShift - 1))) >> hsvShift
	hh = (hh*hsvTables.hdiv[diff] + (1 << (hsvShift - 1))) >> hsvShift
	if hh < 0 {
		hh += 180
	}
	return uint8(hh), uint8(ss), uint8(vv)
}

// hsvToRGB is OpenCV's COLOR_HSV2RGB for uint8 (H in [0, 180)): computed
// in float32, rounded half to even.
func hsvToRGB(h, s, v uint8) (r, g, b uint8) {
	vf := float32(v) / 255
	if s == 0 {
		return v, v, v
	}
	sf := float32(s) / 255
	hf := float32(h) * (6.0 / 180.0)
	for hf >= 6 {
		hf -= 6
	}
	sector := int(hf)
	hf -= float32(sector)
	tab := [4]float32{vf, vf * (1 - sf), vf * (1 - sf*hf), vf * (1 - sf + sf*hf)}
	sectors := [6][3]int{{1, 3, 0}, {1, 0, 2}, {3, 0, 1}, {0, 2, 1}, {0, 1, 3}, {2, 1, 0}}
	if sector < 0 || sector > 5 {
		sector = 0
	}
	sd := sectors[sector]
	// OpenCV's table is in B, G, R order.
	bb, gg, rr := tab[sd[0]], tab[sd[1]], tab[sd[2]]
	return sat8(rr * 255), sat8(gg * 255), sat8(bb * 255)
}

// sat8 rounds half to even and saturates to uint8 (OpenCV's
// saturate_cast<uchar>(float)).
func sat8(x float32) uint8 {
	v := math.RoundToEven(float64(x))
	if v <= 0 {
		return 0
	}
	if v >= 255 {
		return 255
	}
	return uint8(v)
}

// checkAugmentHyp refuses hyper-parameters the augmentation cannot use.
func checkAugmentHyp(h Hyp) error {
	for _, p := range []struct {
		name   string
		v, max float64
	}{
		{"hsv_h", h.HSVH, 1}, {"hsv_s", h.HSVS, 1}, {"hsv_v", h.HSVV, 1},
		{"translate", h.Translate, 0.5}, {"scale", h.Scale, 0.9},
		{"fliplr", h.FlipLR, 1}, {"mosaic", h.Mosaic, 1},
	} {
		if !(p.v >= 0 && p.v <= p.max) {
			return fmt.Errorf("hyp %s = %v, want 0 to %v", p.name, p.v, p.max)
		}
	}
	return nil
}
