package finetune

import (
	"bufio"
	"bytes"
	"container/list"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	_ "image/jpeg" // registers the JPEG decoder with image.Decode
	_ "image/png"  // registers the PNG decoder with image.Decode
	"io"
	"math"
	"os"
	"sync"
)

// padValue is the grey the official code fills borders with (letterbox
// padding, the mosaic canvas, the affine warp's border).
const padValue = 114

// RGBImage is an 8-bit RGB image: 3 bytes per pixel (R, G, B), rows of
// 3·W bytes, no padding. It is the working format of decoding, resizing and
// augmentation: a third smaller than image.RGBA, and the channel order the
// network is fed with.
type RGBImage struct {
	W, H int
	Pix  []uint8
}

// NewRGBImage returns a w×h image filled with the grey value fill.
func NewRGBImage(w, h int, fill uint8) *RGBImage {
	m := &RGBImage{W: w, H: h, Pix: make([]uint8, 3*w*h)}
	if fill != 0 && len(m.Pix) > 0 {
		m.Pix[0] = fill
		for n := 1; n < len(m.Pix); n *= 2 {
			copy(m.Pix[n:], m.Pix[:n])
		}
	}
	return m
}

// Bytes returns the size of the pixel buffer, for cache accounting.
func (m *RGBImage) Bytes() int64 { return int64(len(m.Pix)) }

// At returns the pixel at (x, y); it is zero outside the image.
func (m *RGBImage) At(x, y int) (r, g, b uint8) {
	if x < 0 || y < 0 || x >= m.W || y >= m.H {
		return 0, 0, 0
	}
	i := 3 * (y*m.W + x)
	return m.Pix[i], m.Pix[i+1], m.Pix[i+2]
}

// Set sets the pixel at (x, y); it does nothing outside the image.
func (m *RGBImage) Set(x, y int, r, g, b uint8) {
	if x < 0 || y < 0 || x >= m.W || y >= m.H {
		return
	}
	i := 3 * (y*m.W + x)
	m.Pix[i], m.Pix[i+1], m.Pix[i+2] = r, g, b
}

// Clone returns a deep copy.
func (m *RGBImage) Clone() *RGBImage {
	return &RGBImage{W: m.W, H: m.H, Pix: append([]uint8(nil), m.Pix...)}
}

// RGBA converts to a standard library image (for saving or viewing).
func (m *RGBImage) RGBA() *image.RGBA {
	out := image.NewRGBA(image.Rect(0, 0, m.W, m.H))
	for i, j := 0, 0; i < len(m.Pix); i, j = i+3, j+4 {
		out.Pix[j], out.Pix[j+1], out.Pix[j+2], out.Pix[j+3] = m.Pix[i], m.Pix[i+1], m.Pix[i+2], 255
	}
	return out
}

// ToRGBImage converts any image to RGB. Alpha is dropped (the colour is
// kept as if composed over black, as the image's own premultiplied values
// give it); grayscale, paletted, CMYK and YCbCr images are expanded to RGB.
func ToRGBImage(src image.Image) *RGBImage {
	b := src.Bounds()
	w, h := b.Dx(), b.Dy()
	out := &RGBImage{W: w, H: h, Pix: make([]uint8, 3*w*h)}
	switch s := src.(type) {
	case *image.RGBA:
		for y := 0; y < h; y++ {
			row := s.Pix[(y)*s.Stride : y*s.Stride+4*w]
			o := out.Pix[3*y*w : 3*(y+1)*w]
			for x := 0; x < w; x++ {
				o[3*x], o[3*x+1], o[3*x+2] = row[4*x], row[4*x+1], row[4*x+2]
			}
		}
	case *image.Gray:
		for y := 0; y < h; y++ {
			row := s.Pix[y*s.Stride : y*s.Stride+w]
			o := out.Pix[3*y*w : 3*(y+1)*w]
			for x, v := range row {
				o[3*x], o[3*x+1], o[3*x+2] = v, v, v
			}
		}
	case *image.YCbCr:
		for y := 0; y < h; y++ {
			o := out.Pix[3*y*w : 3*(y+1)*w]
			for x := 0; x < w; x++ {
				yi := s.YOffset(b.Min.X+x, b.Min.Y+y)
				ci := s.COffset(b.Min.X+x, b.Min.Y+y)
				r, g, bb := color.YCbCrToRGB(s.Y[yi], s.Cb[ci], s.Cr[ci])
				o[3*x], o[3*x+1], o[3*x+2] = r, g, bb
			}
		}
	case *image.Paletted:
		pal := make([][3]uint8, 256)
		for i, c := range s.Palette {
			if i >= 256 {
				break
			}
			r, g, bb, _ := c.RGBA()
			pal[i] = [3]uint8{uint8(r >> 8), uint8(g >> 8), uint8(bb >> 8)}
		}
		for y := 0; y < h; y++ {
			row := s.Pix[y*s.Stride : y*s.Stride+w]
			o := out.Pix[3*y*w : 3*(y+1)*w]
			for x, v := range row {
				p := pal[v]
				o[3*x], o[3*x+1], o[3*x+2] = p[0], p[1], p[2]
			}
		}
	default:
		// Everything else (Gray16, RGBA64, NRGBA, CMYK, ...) goes through
		// the generic path once, into RGBA.
		tmp := image.NewRGBA(image.Rect(0, 0, w, h))
		draw.Draw(tmp, tmp.Bounds(), src, b.Min, draw.Src)
		return ToRGBImage(tmp)
	}
	return out
}

// maxImagePixels bounds the size of an image we agree to decode (a
// decompression bomb guard): 100 megapixels.
const maxImagePixels = 100 << 20

// DecodeImage decodes a JPEG or PNG image held in memory into RGB, turned
// upright by its EXIF orientation as cv2.imread does (JPEG only). It
// refuses images larger than 100 megapixels or with no pixels, looking at
// the header before decoding.
func DecodeImage(data []byte) (*RGBImage, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("decode image header: %w", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > maxImagePixels {
		return nil, fmt.Errorf("%s image of %dx%d pixels: size out of range", format, cfg.Width, cfg.Height)
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("decode %s image: %w", format, err)
	}
	m := ToRGBImage(img)
	if format == "jpeg" {
		m = orient(m, exifOrientation(data))
	}
	return m, nil
}

// LoadImage reads and decodes a JPEG or PNG file into RGB.
func LoadImage(path string) (*RGBImage, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := DecodeImage(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// ImageSize reads only the start of a JPEG or PNG file and returns its
// upright width and height (EXIF orientation applied) and format name.
func ImageSize(path string) (w, h int, format string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, "", err
	}
	defer f.Close()
	// EXIF lives in APP1, at most 64 KiB, right after the SOI marker.
	head, err := io.ReadAll(io.LimitReader(f, 256<<10))
	if err != nil {
		return 0, 0, "", fmt.Errorf("%s: %w", path, err)
	}
	cfg, format, err := image.DecodeConfig(io.MultiReader(bytes.NewReader(head), bufio.NewReader(f)))
	if err != nil {
		return 0, 0, "", fmt.Errorf("%s: decode image header: %w", path, err)
	}
	w, h = cfg.Width, cfg.Height
	if format == "jpeg" && exifOrientation(head) >= 5 {
		w, h = h, w
	}
	return w, h, format, nil
}

// exifOrientation returns the EXIF orientation (1..8) of a JPEG stream, or
// 1 when it has none or it cannot be read. It looks at the APP1 segments
// before the first scan and never reads outside data.
func exifOrientation(data []byte) int {
	if len(data) < 4 || data[0] != 0xFF || data[1] != 0xD8 {
		return 1
	}
	p := 2
	for p+4 <= len(data) {
		if data[p] != 0xFF {
			return 1
		}
		marker := data[p+1]
		if marker == 0xFF { // fill byte
			p++
			continue
		}
		if marker == 0xDA || marker == 0xD9 { // start of scan, end of image
			return 1
		}
		n := int(data[p+2])<<8 | int(data[p+3])
		if n < 2 || p+2+n > len(data) {
			return 1
		}
		seg := data[p+4 : p+2+n]
		if marker == 0xE1 && len(seg) >= 6 && string(seg[:6]) == "Exif\x00\x00" {
			if o := tiffOrientation(seg[6:]); o != 0 {
				return o
			}
		}
		p += 2 + n
	}
	return 1
}

// tiffOrientation reads tag 0x0112 of IFD0 of a TIFF header; 0 if absent
// or invalid.
func tiffOrientation(t []byte) int {
	if len(t) < 8 {
		return 0
	}
	var u16 func([]byte) int
	var u32 func([]byte) int
	switch string(t[:2]) {
	case "II":
		u16 = func(b []byte) int { return int(b[0]) | int(b[1])<<8 }
		u32 = func(b []byte) int { return int(b[0]) | int(b[1])<<8 | int(b[2])<<16 | int(b[3])<<24 }
	case "MM":
		u16 = func(b []byte) int { return int(b[1]) | int(b[0])<<8 }
		u32 = func(b []byte) int { return int(b[3]) | int(b[2])<<8 | int(b[1])<<16 | int(b[0])<<24 }
	default:
		return 0
	}
	if u16(t[2:]) != 42 {
		return 0
	}
	off := u32(t[4:])
	if off < 8 || off+2 > len(t) {
		return 0
	}
	n := u16(t[off:])
	for i := range n {
		e := off + 2 + 12*i
		if e+12 > len(t) {
			return 0
		}
		if u16(t[e:]) == 0x0112 && u16(t[e+2:]) == 3 {
			if v := u16(t[e+8:]); v >= 1 && v <= 8 {
				return v
			}
			return 0
		}
	}
	return 0
}

// orient turns an image stored with EXIF orientation o upright.
func orient(m *RGBImage, o int) *RGBImage {
	if o <= 1 || o > 8 {
		return m
	}
	sw, sh := m.W, m.H
	dw, dh := sw, sh
	if o >= 5 {
		dw, dh = sh, sw
	}
	out := &RGBImage{W: dw, H: dh, Pix: make([]uint8, len(m.Pix))}
	for y := range dh {
		for x := range dw {
			var sx, sy int
			switch o {
			case 2: // mirrored
				sx, sy = sw-1-x, y
			case 3: // rotated 180°
				sx, sy = sw-1-x, sh-1-y
			case 4: // mirrored vertically
				sx, sy = x, sh-1-y
			case 5: // transposed
				sx, sy = y, x
			case 6: // needs 90° clockwise
				sx, sy = y, sh-1-x
			case 7: // transversed
				sx, sy = sw-1-y, sh-1-x
			case 8: // needs 90° counter-clockwise
				sx, sy = sw-1-y, x
			}
			d, s := 3*(y*dw+x), 3*(sy*sw+sx)
			out.Pix[d], out.Pix[d+1], out.Pix[d+2] = m.Pix[s], m.Pix[s+1], m.Pix[s+2]
		}
	}
	return out
}

// tapBits is the fixed-point precision of the interpolation weights (as
// OpenCV's INTER_RESIZE_COEF_BITS): a weight of 1 is 1<<tapBits.
const tapBits = 11

// axisTap is one output coordinate's bilinear sample along an axis: the
// two source indices and the fixed-point weight of the second. An index of
// -1 stands for the constant border value.
type axisTap struct {
	i0, i1 int32
	w1     int32
}

// newTap rounds the fraction f in [0, 1) to a fixed-point weight.
func newTap(i0, i1 int, f float64) axisTap {
	return axisTap{int32(i0), int32(i1), int32(math.Round(f * (1 << tapBits)))}
}

// resizeTaps returns OpenCV INTER_LINEAR taps for resizing n source
// samples to m: half-pixel centres, source coordinate
// (d+0.5)·n/m − 0.5, clamped to the edges (replicated border).
func resizeTaps(n, m int) []axisTap {
	taps := make([]axisTap, m)
	scale := float64(n) / float64(m)
	for d := range taps {
		s := (float64(d)+0.5)*scale - 0.5
		i0 := int(math.Floor(s))
		f := s - float64(i0)
		if i0 < 0 {
			i0, f = 0, 0
		}
		if i0 >= n-1 {
			i0, f = n-1, 0
		}
		i1 := min(i0+1, n-1)
		taps[d] = newTap(i0, i1, f)
	}
	return taps
}

// affineTaps returns taps for the axis map dst = a·src + b, in the same
// half-pixel convention as resizeTaps (so boxes transformed by the same map
// follow the pixels exactly); samples outside [0, n) read the border
// value (index -1), as cv2.warpAffine with BORDER_CONSTANT.
func affineTaps(n, m int, a, b float64) []axisTap {
	taps := make([]axisTap, m)
	for d := range taps {
		s := (float64(d)+0.5-b)/a - 0.5
		fl := math.Floor(s)
		f := s - fl
		i0, i1 := -1, -1
		if fl >= 0 && fl < float64(n) {
			i0 = int(fl)
		}
		if fl+1 >= 0 && fl+1 < float64(n) {
			i1 = int(fl) + 1
		}
		taps[d] = newTap(i0, i1, f)
	}
	return taps
}

// remap samples src separably with the x and y taps into a new
// len(xt)×len(yt) image; taps with index -1 read the grey value border.
// It first interpolates each needed source row horizontally into a
// fixed-point row (values scaled by 1<<tapBits), keeping the last two, then
// blends two such rows per output row, in integers as OpenCV does.
func remap(src *RGBImage, xt, yt []axisTap, border uint8) *RGBImage {
	dw, dh := len(xt), len(yt)
	dst := &RGBImage{W: dw, H: dh, Pix: make([]uint8, 3*dw*dh)}
	const one = 1 << tapBits
	bv := int32(border) * one
	borderRow := make([]int32, 3*dw)
	for i := range borderRow {
		borderRow[i] = bv
	}
	type slot struct {
		y   int32
		row []int32
	}
	cache := [2]slot{{y: -2, row: make([]int32, 3*dw)}, {y: -2, row: make([]int32, 3*dw)}}
	next := 0
	hrow := func(y int32, keep []int32) []int32 {
		if y < 0 {
			return borderRow
		}
		for k := range cache {
			if cache[k].y == y {
				return cache[k].row
			}
		}
		s := &cache[next]
		if len(keep) > 0 && &s.row[0] == &keep[0] {
			// Never overwrite the row the caller still holds.
			next ^= 1
			s = &cache[next]
		}
		next ^= 1
		s.y = y
		srow := src.Pix[3*int(y)*src.W : 3*(int(y)+1)*src.W]
		b := int32(border)
		for x, t := range xt {
			a0, a1, a2 := b, b, b
			b0, b1, b2 := b, b, b
			if t.i0 >= 0 {
				j := 3 * t.i0
				a0, a1, a2 = int32(srow[j]), int32(srow[j+1]), int32(srow[j+2])
			}
			if t.i1 >= 0 {
				j := 3 * t.i1
				b0, b1, b2 = int32(srow[j]), int32(srow[j+1]), int32(srow[j+2])
			}
			w1 := t.w1
			w0 := one - w1
			o := s.row[3*x : 3*x+3 : 3*x+3]
			o[0] = a0*w0 + b0*w1
			o[1] = a1*w0 + b1*w1
			o[2] = a2*w0 + b2*w1
		}
		return s.row
	}
	const shift = 2 * tapBits
	const half = 1 << (shift - 1)
	for y, t := range yt {
		r0 := hrow(t.i0, nil)
		r1 := hrow(t.i1, r0)
		o := dst.Pix[3*y*dw : 3*(y+1)*dw]
		w1 := t.w1
		w0 := one - w1
		r0, r1 = r0[:len(o)], r1[:len(o)]
		if w1 == 0 {
			for i := range o {
				o[i] = uint8((r0[i]*one + half) >> shift)
			}
			continue
		}
		for i := range o {
			o[i] = uint8((r0[i]*w0 + r1[i]*w1 + half) >> shift)
		}
	}
	return dst
}

// ResizeBilinear resizes src to w×h with bilinear interpolation (the
// sampling of OpenCV's INTER_LINEAR: half-pixel centres, replicated
// border). It returns src itself when the size does not change.
func ResizeBilinear(src *RGBImage, w, h int) *RGBImage {
	if w == src.W && h == src.H {
		return src
	}
	if w <= 0 || h <= 0 || src.W <= 0 || src.H <= 0 {
		return &RGBImage{W: max(w, 0), H: max(h, 0), Pix: make([]uint8, 3*max(w, 0)*max(h, 0))}
	}
	return remap(src, resizeTaps(src.W, w), resizeTaps(src.H, h), 0)
}

// areaTap is one output coordinate's box-filter sample along an axis:
// consecutive source indices from start, with their weights.
type areaTap struct {
	start int
	w     []float32
}

// areaTaps returns OpenCV INTER_AREA taps for shrinking n source samples to
// m < n (computeResizeAreaTab): each output averages the source cells its
// footprint [d·n/m, (d+1)·n/m) covers, partial cells weighted by their
// overlap.
func areaTaps(n, m int) []areaTap {
	scale := float64(n) / float64(m)
	taps := make([]areaTap, m)
	for d := range taps {
		f1 := float64(d) * scale
		f2 := f1 + scale
		cell := math.Min(scale, float64(n)-f1)
		s1, s2 := int(math.Ceil(f1)), int(math.Floor(f2))
		s2 = min(s2, n-1)
		s1 = min(s1, s2)
		var t areaTap
		t.start = s1
		if float64(s1)-f1 > 1e-3 {
			t.start = s1 - 1
			t.w = append(t.w, float32((float64(s1)-f1)/cell))
		}
		for range s2 - s1 {
			t.w = append(t.w, float32(1/cell))
		}
		if f2-float64(s2) > 1e-3 {
			t.w = append(t.w, float32(math.Min(math.Min(f2-float64(s2), 1), cell)/cell))
		}
		taps[d] = t
	}
	return taps
}

// ResizeArea shrinks src to w×h by area averaging (OpenCV's INTER_AREA,
// which the official loader uses to shrink evaluation images). It resizes
// bilinearly when either side grows, as OpenCV does.
func ResizeArea(src *RGBImage, w, h int) *RGBImage {
	if w <= 0 || h <= 0 || src.W <= 0 || src.H <= 0 || w > src.W || h > src.H || (w == src.W && h == src.H) {
		return ResizeBilinear(src, w, h)
	}
	xt, yt := areaTaps(src.W, w), areaTaps(src.H, h)
	dst := &RGBImage{W: w, H: h, Pix: make([]uint8, 3*w*h)}
	row := make([]float32, 3*w)
	acc := make([]float32, 3*w)
	for y, ty := range yt {
		clear(acc)
		for k, wy := range ty.w {
			sy := min(ty.start+k, src.H-1)
			srow := src.Pix[3*sy*src.W : 3*(sy+1)*src.W]
			for x, tx := range xt {
				var r, g, b float32
				for j, wx := range tx.w {
					i := 3 * min(tx.start+j, src.W-1)
					r += wx * float32(srow[i])
					g += wx * float32(srow[i+1])
					b += wx * float32(srow[i+2])
				}
				row[3*x], row[3*x+1], row[3*x+2] = r, g, b
			}
			for i, v := range row {
				acc[i] += wy * v
			}
		}
		o := dst.Pix[3*y*w : 3*(y+1)*w]
		for i, v := range acc {
			o[i] = sat8(v)
		}
	}
	return dst
}

// ImageCache keeps decoded images in memory up to a byte budget and drops
// the least recently used ones beyond it. It is safe for concurrent use. A
// nil *ImageCache caches nothing.
type ImageCache struct {
	mu      sync.Mutex
	max     int64
	used    int64
	ll      *list.List
	entries map[string]*list.Element
	hits    int64
	misses  int64
}

type cacheEntry struct {
	key string
	img *RGBImage
}

// NewImageCache returns a cache holding at most maxBytes of pixels.
func NewImageCache(maxBytes int64) *ImageCache {
	return &ImageCache{max: maxBytes, ll: list.New(), entries: map[string]*list.Element{}}
}

// Get returns the cached image for key. Callers must not modify it.
func (c *ImageCache) Get(key string) (*RGBImage, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		c.ll.MoveToFront(e)
		c.hits++
		return e.Value.(*cacheEntry).img, true
	}
	c.misses++
	return nil, false
}

// Put stores img under key, evicting the oldest entries to stay within
// budget. An image larger than the whole budget is not stored.
func (c *ImageCache) Put(key string, img *RGBImage) {
	if c == nil || img.Bytes() > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		old := e.Value.(*cacheEntry)
		c.used += img.Bytes() - old.img.Bytes()
		old.img = img
		c.ll.MoveToFront(e)
	} else {
		c.entries[key] = c.ll.PushFront(&cacheEntry{key: key, img: img})
		c.used += img.Bytes()
	}
	for c.used > c.max {
		e := c.ll.Back()
		ce := e.Value.(*cacheEntry)
		c.ll.Remove(e)
		delete(c.entries, ce.key)
		c.used -= ce.img.Bytes()
	}
}

// Stats returns the bytes held, the number of images, and the hit and miss
// counts since creation.
func (c *ImageCache) Stats() (used int64, images int, hits, misses int64) {
	if c == nil {
		return 0, 0, 0, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used, len(c.entries), c.hits, c.misses
}
