package finetune

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"math"
	"math/rand/v2"
	"testing"
)

// fixtureSource serves the standard fixture dataset to augmentSample.
func fixtureSource(t testing.TB, size int) *datasetSource {
	ds := openFixture(t)
	return &datasetSource{ds: ds, size: size, upscale: true, cache: NewImageCache(1 << 22)}
}

func TestAugmentSameSeedSameBytes(t *testing.T) {
	src := fixtureSource(t, 64)
	differs := false
	for idx := range src.count() {
		run := func(seed uint64) *augmented {
			a, err := augmentSample(src, idx, 64, DefaultHyp(), rand.New(rand.NewPCG(seed, uint64(idx))))
			if err != nil {
				t.Fatal(err)
			}
			return a
		}
		a, b, c := run(1), run(1), run(2)
		if !bytes.Equal(a.Image.Pix, b.Image.Pix) || fmt.Sprint(a.Labels) != fmt.Sprint(b.Labels) {
			t.Fatalf("index %d: same seed, different output", idx)
		}
		if a.Image.W != 64 || a.Image.H != 64 {
			t.Fatalf("index %d: %dx%d image, want 64x64", idx, a.Image.W, a.Image.H)
		}
		if !bytes.Equal(a.Image.Pix, c.Image.Pix) {
			differs = true
		}
	}
	if !differs {
		t.Error("seeds 1 and 2 gave identical images")
	}
}

// isColor reports a pixel within 40 levels of a pure fixture colour.
func isColor(img *RGBImage, x, y int, c [3]uint8) bool {
	r, g, b := img.At(x, y)
	near := func(a, b uint8) bool { return math.Abs(float64(a)-float64(b)) <= 40 }
	return near(r, c[0]) && near(g, c[1]) && near(b, c[2])
}

// checkBoxesFollowPixels checks that every box encloses exactly the pixels
// of its class colour within tol pixels: the box shrunk by tol is all that
// colour, and, for classes whose every drawn copy kept its box, no pixel of
// that colour lies outside the boxes grown by tol. It returns the number
// of boxes checked.
func checkBoxesFollowPixels(t *testing.T, what string, img *RGBImage, labels []BoxLabel, copies map[int]int, tol float64) int {
	t.Helper()
	boxes := toPixBoxes(labels, img.W, img.H, 0, 0)
	byClass := map[int][]pixBox{}
	for _, b := range boxes {
		byClass[b.cls] = append(byClass[b.cls], b)
		c := fixtureColors[b.cls]
		for y := int(math.Ceil(b.y1 + tol)); float64(y+1) <= b.y2-tol; y++ {
			for x := int(math.Ceil(b.x1 + tol)); float64(x+1) <= b.x2-tol; x++ {
				if !isColor(img, x, y, c) {
					r, g, bb := img.At(x, y)
					t.Fatalf("%s: pixel (%d,%d) = %d,%d,%d inside box %+v is not colour %v", what, x, y, r, g, bb, b, c)
				}
			}
		}
	}
	for cls, n := range copies {
		if len(byClass[cls]) != n {
			continue // a copy was filtered by box_candidates: its remnant has no box
		}
		c := fixtureColors[cls]
		for y := range img.H {
			for x := range img.W {
				if !isColor(img, x, y, c) {
					continue
				}
				px, py := float64(x)+0.5, float64(y)+0.5
				inside := false
				for _, b := range byClass[cls] {
					if px >= b.x1-tol && px <= b.x2+tol && py >= b.y1-tol && py <= b.y2+tol {
						inside = true
						break
					}
				}
				if !inside {
					t.Fatalf("%s: pixel (%d,%d) of class %d lies outside its boxes %+v", what, x, y, cls, byClass[cls])
				}
			}
		}
	}
	return len(boxes)
}

func TestAugmentMosaicBoxesFollowPixels(t *testing.T) {
	src := fixtureSource(t, 64)
	hyp := DefaultHyp()
	hyp.HSVH, hyp.HSVS, hyp.HSVV = 0, 0, 0 // keep the colours
	for _, tc := range []struct {
		name           string
		mosaic, fliplr float64
	}{
		{"mosaic", 1, 0}, {"mosaic flipped", 1, 1}, {"letterbox affine", 0, 0}, {"letterbox affine flipped", 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := hyp
			h.Mosaic, h.FlipLR = tc.mosaic, tc.fliplr
			checked := 0
			for seed := range uint64(12) {
				for idx := range src.count() {
					a, err := augmentSample(src, idx, 64, h, rand.New(rand.NewPCG(seed, uint64(idx))))
					if err != nil {
						t.Fatal(err)
					}
					if a.Mosaic != (tc.mosaic == 1) || a.Flipped != (tc.fliplr == 1) || len(a.Sources) != map[bool]int{true: 4, false: 1}[a.Mosaic] {
						t.Fatalf("mosaic %v flipped %v sources %v", a.Mosaic, a.Flipped, a.Sources)
					}
					copies := map[int]int{}
					for _, s := range a.Sources {
						copies[s]++ // image s holds one object of class s
					}
					what := fmt.Sprintf("seed %d index %d sources %v", seed, idx, a.Sources)
					checked += checkBoxesFollowPixels(t, what, a.Image, a.Labels, copies, 1)
				}
			}
			if checked < 50 {
				t.Errorf("only %d boxes checked", checked)
			}
		})
	}
}

func TestAugmentHSV(t *testing.T) {
	for _, tc := range []struct {
		rgb, hsv [3]uint8
	}{
		{[3]uint8{255, 0, 0}, [3]uint8{0, 255, 255}},
		{[3]uint8{0, 255, 0}, [3]uint8{60, 255, 255}},
		{[3]uint8{0, 0, 255}, [3]uint8{120, 255, 255}},
		{[3]uint8{255, 0, 255}, [3]uint8{150, 255, 255}},
		{[3]uint8{114, 114, 114}, [3]uint8{0, 0, 114}},
		{[3]uint8{0, 0, 0}, [3]uint8{0, 0, 0}},
		{[3]uint8{200, 100, 50}, [3]uint8{10, 191, 200}},
	} {
		h, s, v := rgbToHSV(tc.rgb[0], tc.rgb[1], tc.rgb[2])
		if [3]uint8{h, s, v} != tc.hsv {
			t.Errorf("rgbToHSV%v = %v, want %v", tc.rgb, [3]uint8{h, s, v}, tc.hsv)
		}
		r, g, b := hsvToRGB(h, s, v)
		if [3]uint8{r, g, b} != tc.rgb && tc.rgb != [3]uint8{200, 100, 50} {
			t.Errorf("hsvToRGB%v = %v, want %v", tc.hsv, [3]uint8{r, g, b}, tc.rgb)
		}
	}
	// The round trip is close for every colour (H is quantised to 2°).
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		c := [3]uint8{uint8(rng.IntN(256)), uint8(rng.IntN(256)), uint8(rng.IntN(256))}
		h, s, v := rgbToHSV(c[0], c[1], c[2])
		if h >= 180 {
			t.Fatalf("hue %d of %v outside [0, 180)", h, c)
		}
		r, g, b := hsvToRGB(h, s, v)
		for k, got := range []uint8{r, g, b} {
			if d := math.Abs(float64(got) - float64(c[k])); d > 6 {
				t.Fatalf("round trip of %v gave %v", c, [3]uint8{r, g, b})
			}
		}
	}
	// Gains of 0 leave the image alone; gains change it, and grey stays grey.
	img := NewRGBImage(8, 8, padValue)
	img.Set(1, 1, 200, 100, 50)
	orig := img.Clone()
	augmentHSV(img, 0, 0, 0, rand.New(rand.NewPCG(1, 1)))
	if !bytes.Equal(img.Pix, orig.Pix) {
		t.Error("zero gains changed the image")
	}
	augmentHSV(img, 0.015, 0.7, 0.4, rand.New(rand.NewPCG(1, 1)))
	if bytes.Equal(img.Pix, orig.Pix) {
		t.Error("random gains left the image unchanged")
	}
	if r, g, b := img.At(5, 5); r != g || g != b {
		t.Errorf("grey became %d,%d,%d", r, g, b)
	}
}

func TestLetterboxInvertible(t *testing.T) {
	for _, tc := range []struct {
		w, h, size int
		upscale    bool
		wantW      int
		wantH      int
	}{
		{100, 50, 64, true, 64, 32},
		{50, 100, 64, false, 32, 64},
		{33, 17, 64, false, 33, 17},
		{33, 17, 64, true, 64, 32},
		{640, 480, 320, false, 320, 240},
		{64, 64, 64, false, 64, 64},
		{101, 37, 96, true, 96, 35},
	} {
		t.Run(fmt.Sprintf("%dx%d_to_%d_up%v", tc.w, tc.h, tc.size, tc.upscale), func(t *testing.T) {
			r := fixtureRect{cls: 2, x1: tc.w / 4, y1: tc.h / 4, x2: tc.w / 4 * 3, y2: tc.h / 4 * 3}
			src := ToRGBImage(drawFixture(tc.w, tc.h, r))
			out, info := Letterbox(src, tc.size, tc.upscale)
			if out.W != tc.size || out.H != tc.size || info.W != tc.wantW || info.H != tc.wantH {
				t.Fatalf("output %dx%d, content %dx%d, want %dx%d in %d", out.W, out.H, info.W, info.H, tc.wantW, tc.wantH, tc.size)
			}
			// Official padding: left/top round((size − side)/2 − 0.1).
			if wantPad := int(math.Round(float64(tc.size-tc.wantW)/2 - 0.1)); info.PadW != wantPad {
				t.Errorf("PadW %d, want %d", info.PadW, wantPad)
			}
			for _, p := range [][2]float64{{0, 0}, {float64(tc.w), float64(tc.h)}, {3.25, 7.5}} {
				x, y := info.FromOriginal(p[0], p[1])
				bx, by := info.ToOriginal(x, y)
				if math.Abs(bx-p[0]) > 1e-9 || math.Abs(by-p[1]) > 1e-9 {
					t.Errorf("%v -> (%v, %v) -> (%v, %v)", p, x, y, bx, by)
				}
			}
			if x, y := info.FromOriginal(float64(tc.w), float64(tc.h)); x != float64(info.PadW+info.W) || y != float64(info.PadH+info.H) {
				t.Errorf("far corner maps to (%v, %v), want (%d, %d)", x, y, info.PadW+info.W, info.PadH+info.H)
			}
			if info.PadW > 0 {
				if r, g, b := out.At(info.PadW-1, tc.size/2); r != padValue || g != padValue || b != padValue {
					t.Errorf("left padding is %d,%d,%d, want grey %d", r, g, b, padValue)
				}
			}
			// The object box, mapped through the info, encloses the object.
			x1, y1 := info.FromOriginal(float64(r.x1), float64(r.y1))
			x2, y2 := info.FromOriginal(float64(r.x2), float64(r.y2))
			s := float64(tc.size)
			lb := BoxLabel{Class: 2, X: float32((x1 + x2) / 2 / s), Y: float32((y1 + y2) / 2 / s), W: float32((x2 - x1) / s), H: float32((y2 - y1) / s)}
			checkBoxesFollowPixels(t, "letterbox", out, []BoxLabel{lb}, map[int]int{2: 1}, 1)
		})
	}
}

func TestImageDecodeFormats(t *testing.T) {
	rgba := drawFixture(16, 12, fixtureRect{cls: 0, x1: 2, y1: 2, x2: 8, y2: 8}, fixtureRect{cls: 2, x1: 9, y1: 3, x2: 15, y2: 11})
	gray := image.NewGray(image.Rect(0, 0, 16, 12))
	gray16 := image.NewGray16(image.Rect(0, 0, 16, 12))
	pal := image.NewPaletted(image.Rect(0, 0, 16, 12), color.Palette{color.Black, color.RGBA{255, 0, 0, 255}, color.RGBA{0, 0, 255, 255}})
	nrgba := image.NewNRGBA(image.Rect(0, 0, 16, 12))
	for y := range 12 {
		for x := range 16 {
			c := rgba.RGBAAt(x, y)
			gray.SetGray(x, y, color.Gray{uint8(x * 16)})
			gray16.SetGray16(x, y, color.Gray16{uint16(x * 16 << 8)})
			pal.Set(x, y, c)
			nrgba.SetNRGBA(x, y, color.NRGBA{c.R, c.G, c.B, 255})
		}
	}
	wantRGB := ToRGBImage(rgba)
	wantGray := NewRGBImage(16, 12, 0)
	for y := range 12 {
		for x := range 16 {
			v := uint8(x * 16)
			wantGray.Set(x, y, v, v, v)
		}
	}
	jpegColor := encodeJPEG(t, rgba)
	for _, tc := range []struct {
		name string
		data []byte
		want *RGBImage
		tol  float64
	}{
		{"png rgba", encodePNG(t, rgba), wantRGB, 0},
		{"png gray", encodePNG(t, gray), wantGray, 0},
		{"png gray16", encodePNG(t, gray16), wantGray, 0},
		{"png paletted", encodePNG(t, pal), wantRGB, 0},
		{"png nrgba", encodePNG(t, nrgba), wantRGB, 0},
		{"jpeg color", jpegColor, viaRGBA(t, jpegColor), 0},
		{"jpeg color vs original", jpegColor, wantRGB, 20},
		{"jpeg gray", encodeJPEG(t, gray), wantGray, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeImage(tc.data)
			if err != nil {
				t.Fatal(err)
			}
			if got.W != tc.want.W || got.H != tc.want.H {
				t.Fatalf("size %dx%d, want %dx%d", got.W, got.H, tc.want.W, tc.want.H)
			}
			// Lossless formats must match exactly; JPEG on average.
			var sum float64
			for i := range got.Pix {
				sum += math.Abs(float64(got.Pix[i]) - float64(tc.want.Pix[i]))
			}
			if mean := sum / float64(len(got.Pix)); mean > tc.tol {
				t.Errorf("pixels differ by %v on average, want <= %v", mean, tc.tol)
			}
		})
	}
	for _, bad := range [][]byte{nil, []byte("\x89PNG\r\n\x1a\n"), []byte("GIF89a"), encodePNG(t, rgba)[:60]} {
		if _, err := DecodeImage(bad); err == nil {
			t.Errorf("DecodeImage(%q) gave no error", bad)
		}
	}
}

// viaRGBA decodes an image with the standard library and converts it to
// RGB through image/draw's generic path.
func viaRGBA(t *testing.T, data []byte) *RGBImage {
	t.Helper()
	m, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	rgba := image.NewRGBA(m.Bounds())
	draw.Draw(rgba, rgba.Bounds(), m, m.Bounds().Min, draw.Src)
	return ToRGBImage(rgba)
}

func TestImageResizeBilinear(t *testing.T) {
	row := func(vals ...uint8) *RGBImage {
		m := NewRGBImage(len(vals), 1, 0)
		for i, v := range vals {
			m.Set(i, 0, v, v, v)
		}
		return m
	}
	for _, tc := range []struct {
		in   *RGBImage
		w    int
		want []uint8
	}{
		{row(0, 100), 4, []uint8{0, 25, 75, 100}},       // OpenCV INTER_LINEAR: half-pixel centres, replicated edges
		{row(0, 100, 200, 250), 2, []uint8{50, 225}},    // downscale
		{row(10, 20, 30), 3, []uint8{10, 20, 30}},       // same size
		{row(0, 200), 5, []uint8{0, 20, 100, 180, 200}}, // weights 0.1, 0.5, 0.9
	} {
		got := ResizeBilinear(tc.in, tc.w, 1)
		for i, w := range tc.want {
			if r, _, _ := got.At(i, 0); r != w {
				t.Errorf("resize %v to %d: got %v, want %v", tc.in.Pix, tc.w, got.Pix, tc.want)
				break
			}
		}
	}
	// A flat image stays flat at any size.
	flat := NewRGBImage(37, 23, 77)
	for _, sz := range [][2]int{{64, 64}, {5, 3}, {1, 1}, {100, 7}} {
		m := ResizeBilinear(flat, sz[0], sz[1])
		for _, v := range m.Pix {
			if v != 77 {
				t.Fatalf("flat image resized to %v has value %d", sz, v)
			}
		}
	}
}

func TestImageResizeArea(t *testing.T) {
	row := func(vals ...uint8) *RGBImage {
		m := NewRGBImage(len(vals), 1, 0)
		for i, v := range vals {
			m.Set(i, 0, v, v, v)
		}
		return m
	}
	for _, tc := range []struct {
		in   *RGBImage
		w    int
		want []uint8
	}{
		{row(0, 100, 200, 250), 2, []uint8{50, 225}}, // integer factor: block means
		{row(0, 90, 180), 2, []uint8{30, 150}},       // 1.5: partial cells weighted by overlap
		{row(0, 100), 4, []uint8{0, 25, 75, 100}},    // enlarging falls back to bilinear
	} {
		got := ResizeArea(tc.in, tc.w, 1)
		for i, w := range tc.want {
			if r, _, _ := got.At(i, 0); r != w {
				t.Errorf("area resize %v to %d: got %v, want %v", tc.in.Pix, tc.w, got.Pix, tc.want)
				break
			}
		}
	}
	// 4x4 to 2x2: each output is the mean of its 2x2 block.
	m := NewRGBImage(4, 4, 0)
	for y := range 4 {
		for x := range 4 {
			v := uint8(10*x + 40*y)
			m.Set(x, y, v, 255-v, 7)
		}
	}
	got := ResizeArea(m, 2, 2)
	for y := range 2 {
		for x := range 2 {
			want := uint8(10*(2*x) + 5 + 40*(2*y) + 20)
			if r, g, b := got.At(x, y); r != want || g != 255-want || b != 7 {
				t.Errorf("pixel (%d,%d) = %d,%d,%d, want %d,%d,7", x, y, r, g, b, want, 255-want)
			}
		}
	}
}

func TestImageCacheBudget(t *testing.T) {
	c := NewImageCache(3 * 10 * 10 * 2) // two 10x10 images
	for i := range 3 {
		c.Put(fmt.Sprint(i), NewRGBImage(10, 10, uint8(i)))
	}
	if _, ok := c.Get("0"); ok {
		t.Error("oldest image not evicted")
	}
	if m, ok := c.Get("2"); !ok || m.Pix[0] != 2 {
		t.Error("newest image missing")
	}
	c.Put("big", NewRGBImage(20, 20, 0))
	if bytes, n, hits, misses := c.Stats(); bytes > 600 || n != 2 || hits != 1 || misses != 1 {
		t.Errorf("stats %d bytes, %d images, %d hits, %d misses", bytes, n, hits, misses)
	}
	var none *ImageCache
	none.Put("x", NewRGBImage(1, 1, 0))
	if _, ok := none.Get("x"); ok {
		t.Error("nil cache returned an image")
	}
}

func BenchmarkAugmentSample(b *testing.B) {
	src := fixtureSource(b, 640)
	hyp := DefaultHyp()
	for i := 0; b.Loop(); i++ {
		if _, err := augmentSample(src, i%src.count(), 640, hyp, rand.New(rand.NewPCG(1, uint64(i)))); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkResizeBilinear(b *testing.B) {
	src := NewRGBImage(1920, 1080, 50)
	for b.Loop() {
		ResizeBilinear(src, 640, 360)
	}
}

// withEXIFOrientation inserts an APP1 EXIF segment holding orientation o
// (in byte order "II" or "MM") right after a JPEG's SOI marker.
func withEXIFOrientation(jpg []byte, o int, order string) []byte {
	le := order == "II"
	u16 := func(v int) []byte {
		if le {
			return []byte{byte(v), byte(v >> 8)}
		}
		return []byte{byte(v >> 8), byte(v)}
	}
	u32 := func(v int) []byte {
		if le {
			return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)}
		}
		return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
	}
	var tiff []byte
	tiff = append(tiff, order...)
	tiff = append(tiff, u16(42)...)
	tiff = append(tiff, u32(8)...)
	tiff = append(tiff, u16(2)...)                                                                // two entries
	tiff = append(tiff, append(append(u16(0x010F), u16(2)...), append(u32(1), 0, 0, 0, 0)...)...) // Make, ignored
	tiff = append(tiff, append(append(u16(0x0112), u16(3)...), append(u32(1), append(u16(o), 0, 0)...)...)...)
	tiff = append(tiff, u32(0)...)
	seg := append([]byte("Exif\x00\x00"), tiff...)
	out := []byte{0xFF, 0xD8, 0xFF, 0xE1, byte((len(seg) + 2) >> 8), byte(len(seg) + 2)}
	out = append(out, seg...)
	return append(out, jpg[2:]...)
}

func TestImageEXIFOrientation(t *testing.T) {
	// 32x16, red left half: the stored (sensor) image.
	stored := drawFixture(32, 16, fixtureRect{cls: 0, x1: 0, y1: 0, x2: 16, y2: 16})
	jpg := encodeJPEG(t, stored)
	// Where the red half ends up once upright, as (x, y) of a probe
	// pixel that must be red and one that must be black.
	for _, tc := range []struct {
		o          int
		w, h       int
		red, black [2]int
		order      string
	}{
		{1, 32, 16, [2]int{4, 8}, [2]int{28, 8}, "II"},
		{2, 32, 16, [2]int{28, 8}, [2]int{4, 8}, "MM"},
		{3, 32, 16, [2]int{28, 8}, [2]int{4, 8}, "II"},
		{4, 32, 16, [2]int{4, 8}, [2]int{28, 8}, "MM"},
		{5, 16, 32, [2]int{8, 4}, [2]int{8, 28}, "II"},
		{6, 16, 32, [2]int{8, 4}, [2]int{8, 28}, "MM"},
		{7, 16, 32, [2]int{8, 28}, [2]int{8, 4}, "II"},
		{8, 16, 32, [2]int{8, 28}, [2]int{8, 4}, "MM"},
	} {
		data := withEXIFOrientation(jpg, tc.o, tc.order)
		if got := exifOrientation(data); got != tc.o {
			t.Errorf("orientation %d read as %d", tc.o, got)
		}
		m, err := DecodeImage(data)
		if err != nil {
			t.Fatal(err)
		}
		if m.W != tc.w || m.H != tc.h {
			t.Fatalf("orientation %d: %dx%d, want %dx%d", tc.o, m.W, m.H, tc.w, tc.h)
		}
		if !isColor(m, tc.red[0], tc.red[1], fixtureColors[0]) || isColor(m, tc.black[0], tc.black[1], fixtureColors[0]) {
			t.Errorf("orientation %d: red half not where expected", tc.o)
		}
		path := t.TempDir() + "/o.jpg"
		writeFile(t, path, data)
		if w, h, _, err := ImageSize(path); err != nil || w != tc.w || h != tc.h {
			t.Errorf("orientation %d: ImageSize %dx%d, %v; want %dx%d", tc.o, w, h, err, tc.w, tc.h)
		}
	}
}

func FuzzImageEXIF(f *testing.F) {
	jpg := encodeJPEG(f, drawFixture(8, 8))
	f.Add(withEXIFOrientation(jpg, 6, "II"))
	f.Add(withEXIFOrientation(jpg, 3, "MM"))
	f.Add(jpg)
	f.Add([]byte{0xFF, 0xD8, 0xFF, 0xE1, 0, 8, 'E', 'x', 'i', 'f', 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		if o := exifOrientation(data); o < 1 || o > 8 {
			t.Fatalf("orientation %d", o)
		}
		if cfg, _, err := image.DecodeConfig(bytes.NewReader(data)); err != nil || cfg.Width*cfg.Height > 1<<16 {
			return // keep the fuzzer fast: big images are the decoder's business
		}
		if m, err := DecodeImage(data); err == nil && (m.W <= 0 || m.H <= 0 || len(m.Pix) != 3*m.W*m.H) {
			t.Fatalf("decoded %dx%d with %d bytes", m.W, m.H, len(m.Pix))
		}
	})
}
