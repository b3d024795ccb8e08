package infer

import (
	"fmt"
	"image"
	"math"

	"gocv.io/x/gocv"
)

// padValue is the grey of the official letterbox border.
const padValue = 114

// Geometry is the mapping between an original frame and the square network
// input made by the official utils.datasets.letterbox (auto=False,
// scaleFill=False, scaleup=True).
type Geometry struct {
	SrcW, SrcH int     // original frame size
	Size       int     // network input side S
	Scale      float64 // r = min(S/h, S/w)
	NewW, NewH int     // resized image size, Python round(w*r), round(h*r)
	Left, Top  int     // padding before the image (int(round(dw-0.1)), ...)
	Right      int     // padding after the image
	Bottom     int     //
	PadX, PadY float64 // scale_coords padding (S - w*r)/2, (S - h*r)/2
}

// NewGeometry computes the letterbox of a w x h frame into an S x S input
// exactly as the official code does in float64, with Python's round-half-to-
// even.
func NewGeometry(w, h, size int) (Geometry, error) {
	if w <= 0 || h <= 0 || size <= 0 {
		return Geometry{}, fmt.Errorf("letterbox: bad sizes: frame %dx%d, input %d", w, h, size)
	}
	s := float64(size)
	r := math.Min(s/float64(h), s/float64(w))
	g := Geometry{SrcW: w, SrcH: h, Size: size, Scale: r}
	g.NewW = int(math.RoundToEven(float64(w) * r))
	g.NewH = int(math.RoundToEven(float64(h) * r))
	g.NewW = min(max(g.NewW, 1), size)
	g.NewH = min(max(g.NewH, 1), size)
	dw := float64(size-g.NewW) / 2
	dh := float64(size-g.NewH) / 2
	g.Top = int(math.RoundToEven(dh - 0.1))
	g.Bottom = int(math.RoundToEven(dh + 0.1))
	g.Left = int(math.RoundToEven(dw - 0.1))
	g.Right = int(math.RoundToEven(dw + 0.1))
	// utils.general.scale_coords recomputes the padding from the gain.
	g.PadX = (s - float64(w)*r) / 2
	g.PadY = (s - float64(h)*r) / 2
	return g, nil
}

// ToFrame maps a box in network-input pixels back to the original frame as
// utils.general.scale_coords does: subtract the padding, divide by the gain,
// clip to the frame.
func (g Geometry) ToFrame(b Box) Box {
	fx := func(x float32) float32 {
		v := (float64(x) - g.PadX) / g.Scale
		return float32(min(max(v, 0), float64(g.SrcW)))
	}
	fy := func(y float32) float32 {
		v := (float64(y) - g.PadY) / g.Scale
		return float32(min(max(v, 0), float64(g.SrcH)))
	}
	return Box{X1: fx(b.X1), Y1: fy(b.Y1), X2: fx(b.X2), Y2: fy(b.Y2)}
}

// Letterboxer turns BGR frames into the network input tensor. It keeps its
// intermediate Mats between calls; it is not safe for concurrent use. Close
// releases them.
type Letterboxer struct {
	resized gocv.Mat
	conv    gocv.Mat
	lut     [256]float32
}

// NewLetterboxer returns a Letterboxer with empty reusable buffers.
func NewLetterboxer() *Letterboxer {
	l := &Letterboxer{resized: gocv.NewMat(), conv: gocv.NewMat()}
	for i := range l.lut {
		l.lut[i] = float32(i) / 255
	}
	return l
}

// Close releases the reusable Mats.
func (l *Letterboxer) Close() error {
	l.resized.Close()
	l.conv.Close()
	return nil
}

// Letterbox resizes frame (8-bit BGR; grey and BGRA are converted) with
// INTER_LINEAR when its size differs, pads it with 114 to size x size, and
// writes it as RGB float32 in [0,1], CHW, into dst, which must hold
// 3*size*size values. It allocates nothing in the steady state.
func (l *Letterboxer) Letterbox(frame gocv.Mat, size int, dst []float32) (Geometry, error) {
	if frame.Empty() {
		return Geometry{}, fmt.Errorf("letterbox: empty frame")
	}
	if len(dst) != 3*size*size {
		return Geometry{}, fmt.Errorf("letterbox: destination holds %d values, want 3*%d*%d", len(dst), size, size)
	}
	src := frame
	switch frame.Type() {
	case gocv.MatTypeCV8UC3:
	case gocv.MatTypeCV8UC1:
		gocv.CvtColor(frame, &l.conv, gocv.ColorGrayToBGR)
		src = l.conv
	case gocv.MatTypeCV8UC4:
		gocv.CvtColor(frame, &l.conv, gocv.ColorBGRAToBGR)
		src = l.conv
	default:
		return Geometry{}, fmt.Errorf("letterbox: unsupported frame type %v (want 8-bit BGR)", frame.Type())
	}
	g, err := NewGeometry(src.Cols(), src.Rows(), size)
	if err != nil {
		return Geometry{}, err
	}
	if g.NewW != g.SrcW || g.NewH != g.SrcH {
		gocv.Resize(src, &l.resized, image.Pt(g.NewW, g.NewH), 0, 0, gocv.InterpolationLinear)
		src = l.resized
	} else if !src.IsContinuous() {
		src.CopyTo(&l.resized)
		src = l.resized
	}
	pix, err := src.DataPtrUint8()
	if err != nil {
		return Geometry{}, fmt.Errorf("letterbox: %w", err)
	}
	if len(pix) < 3*g.NewW*g.NewH {
		return Geometry{}, fmt.Errorf("letterbox: resized image has %d bytes, want %d", len(pix), 3*g.NewW*g.NewH)
	}
	fillCHW(dst, pix, g, &l.lut)
	return g, nil
}

// fillCHW writes the padded RGB planes. The image occupies rows
// [Top, Top+NewH) and columns [Left, Left+NewW); cv2.copyMakeBorder gives
// the remaining Bottom/Right pixels (they add up to size) the pad value.
func fillCHW(dst []float32, bgr []uint8, g Geometry, lut *[256]float32) {
	s := g.Size
	plane := s * s
	rP, gP, bP := dst[:plane], dst[plane:2*plane], dst[2*plane:3*plane]
	pad := lut[padValue]
	fill := func(p []float32) {
		if len(p) == 0 {
			return
		}
		p[0] = pad
		for i := 1; i < len(p); i *= 2 { // doubling copies are memmoves
			copy(p[i:], p[:i])
		}
	}
	w, h := g.NewW, g.NewH
	// Clamp in case Top+NewH+Bottom != size (cannot happen for valid sizes,
	// but never write out of range).
	top := min(g.Top, s-h)
	left := min(g.Left, s-w)
	for _, p := range [][]float32{rP, gP, bP} {
		fill(p[:top*s])
		fill(p[(top+h)*s:])
	}
	for y := 0; y < h; y++ {
		row := (top + y) * s
		src := bgr[3*w*y : 3*w*(y+1)]
		rr := rP[row : row+s]
		gg := gP[row : row+s]
		bb := bP[row : row+s]
		fill(rr[:left])
		fill(gg[:left])
		fill(bb[:left])
		fill(rr[left+w:])
		fill(gg[left+w:])
		fill(bb[left+w:])
		rr = rr[left : left+w]
		gg = gg[left : left+w]
		bb = bb[left : left+w]
		for x := range rr {
			p := src[3*x : 3*x+3 : 3*x+3]
			bb[x] = lut[p[0]]
			gg[x] = lut[p[1]]
			rr[x] = lut[p[2]]
		}
	}
}
