package infer

import (
	"image"
	"image/color"
	"math"
	"math/rand/v2"
	"testing"

	"gocv.io/x/gocv"
)

func TestNewGeometry(t *testing.T) {
	cases := []struct {
		name                                 string
		w, h, s                              int
		newW, newH, left, right, top, bottom int
		padX, padY                           float64
	}{
		{"bus.jpg (MANIFEST)", 810, 1080, 640, 480, 640, 80, 80, 0, 0, 80, 0},
		{"720p", 1280, 720, 640, 640, 360, 0, 0, 140, 140, 0, 140},
		{"same size", 640, 640, 640, 640, 640, 0, 0, 0, 0, 0, 0},
		{"upscale", 320, 240, 640, 640, 480, 0, 0, 80, 80, 0, 80},
		{"odd pad", 1000, 999, 640, 640, 639, 0, 0, 0, 1, 0, 0.32},
		{"tie rounds to even (2.5 -> 2)", 5, 64, 32, 2, 32, 15, 15, 0, 0, 14.75, 0},
		{"tie rounds to even (3.5 -> 4)", 7, 64, 32, 4, 32, 14, 14, 0, 0, 14.25, 0},
		{"tie 0.5 pad split", 3, 64, 32, 2, 32, 15, 15, 0, 0, 15.25, 0},
	}
	for _, c := range cases {
		g, err := NewGeometry(c.w, c.h, c.s)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got := [6]int{g.NewW, g.NewH, g.Left, g.Right, g.Top, g.Bottom}
		want := [6]int{c.newW, c.newH, c.left, c.right, c.top, c.bottom}
		if got != want {
			t.Errorf("%s: newW,newH,left,right,top,bottom = %v, want %v", c.name, got, want)
		}
		if math.Abs(g.PadX-c.padX) > 1e-9 || math.Abs(g.PadY-c.padY) > 1e-9 {
			t.Errorf("%s: pad %v,%v, want %v,%v", c.name, g.PadX, g.PadY, c.padX, c.padY)
		}
	}
	// The padding always adds up to the input size.
	for w := 1; w < 300; w += 7 {
		for h := 1; h < 300; h += 11 {
			for _, s := range []int{32, 64, 320} {
				g, _ := NewGeometry(w, h, s)
				if g.Left+g.NewW+g.Right != s || g.Top+g.NewH+g.Bottom != s {
					t.Fatalf("%dx%d -> %d: %d+%d+%d, %d+%d+%d != %d", w, h, s, g.Left, g.NewW, g.Right, g.Top, g.NewH, g.Bottom, s)
				}
			}
		}
	}
	if _, err := NewGeometry(0, 10, 640); err == nil {
		t.Error("0-width frame: no error")
	}
}

func TestGeometryToFrame(t *testing.T) {
	g, _ := NewGeometry(810, 1080, 640)
	got := g.ToFrame(Box{X1: 80, Y1: 0, X2: 560, Y2: 640})
	want := Box{0, 0, 810, 1080}
	if d := boxDiff(got, want); d > 1e-3 {
		t.Errorf("full image box -> %+v, want %+v (diff %.3g)", got, want, d)
	}
	got = g.ToFrame(Box{X1: 10, Y1: -5, X2: 700, Y2: 320})
	want = Box{0, 0, 810, 540}
	if d := boxDiff(got, want); d > 1e-3 {
		t.Errorf("clipped box -> %+v, want %+v (diff %.3g)", got, want, d)
	}
}

func boxDiff(a, b Box) float64 {
	return math.Max(math.Max(math.Abs(float64(a.X1-b.X1)), math.Abs(float64(a.Y1-b.Y1))),
		math.Max(math.Abs(float64(a.X2-b.X2)), math.Abs(float64(a.Y2-b.Y2))))
}

func randomBGR(w, h int, seed uint64) gocv.Mat {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, 3*w*h)
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	m, err := gocv.NewMatFromBytes(h, w, gocv.MatTypeCV8UC3, b)
	if err != nil {
		panic(err)
	}
	return m
}

// expectLetterbox computes the letterbox the slow way with OpenCV's own
// copyMakeBorder and per-pixel reads.
func expectLetterbox(t *testing.T, frame gocv.Mat, s int) []float32 {
	g, err := NewGeometry(frame.Cols(), frame.Rows(), s)
	if err != nil {
		t.Fatal(err)
	}
	img := frame.Clone()
	defer img.Close()
	if g.NewW != g.SrcW || g.NewH != g.SrcH {
		gocv.Resize(frame, &img, image.Pt(g.NewW, g.NewH), 0, 0, gocv.InterpolationLinear)
	}
	padded := gocv.NewMat()
	defer padded.Close()
	gocv.CopyMakeBorder(img, &padded, g.Top, g.Bottom, g.Left, g.Right, gocv.BorderConstant, color.RGBA{padValue, padValue, padValue, 0})
	if padded.Cols() != s || padded.Rows() != s {
		t.Fatalf("copyMakeBorder gave %dx%d, want %d", padded.Cols(), padded.Rows(), s)
	}
	out := make([]float32, 3*s*s)
	for y := 0; y < s; y++ {
		for x := 0; x < s; x++ {
			v := padded.GetVecbAt(y, x)
			for c := 0; c < 3; c++ {
				out[c*s*s+y*s+x] = float32(v[2-c]) / 255
			}
		}
	}
	return out
}

func TestLetterboxPixels(t *testing.T) {
	lb := NewLetterboxer()
	defer lb.Close()
	cases := []struct{ w, h, s int }{{37, 23, 64}, {64, 64, 64}, {100, 31, 96}, {20, 50, 32}, {1280, 720, 128}}
	for i, c := range cases {
		frame := randomBGR(c.w, c.h, uint64(i))
		want := expectLetterbox(t, frame, c.s)
		got := make([]float32, 3*c.s*c.s)
		for k := range got {
			got[k] = -1
		}
		if _, err := lb.Letterbox(frame, c.s, got); err != nil {
			t.Fatal(err)
		}
		frame.Close()
		for k := range got {
			if got[k] != want[k] {
				p := k % (c.s * c.s)
				t.Errorf("%dx%d -> %d: channel %d y %d x %d = %v, want %v", c.w, c.h, c.s, k/(c.s*c.s), p/c.s, p%c.s, got[k], want[k])
				break
			}
		}
	}
	// A non-continuous ROI of the same size as the input.
	big := randomBGR(80, 80, 9)
	defer big.Close()
	roi := big.Region(image.Rect(8, 8, 72, 72))
	defer roi.Close()
	want := expectLetterbox(t, roi, 64)
	got := make([]float32, 3*64*64)
	if _, err := lb.Letterbox(roi, 64, got); err != nil {
		t.Fatal(err)
	}
	for k := range got {
		if got[k] != want[k] {
			t.Fatalf("ROI frame: value %d = %v, want %v", k, got[k], want[k])
		}
	}
	if _, err := lb.Letterbox(roi, 32, got); err == nil {
		t.Error("wrong destination size: no error")
	}
}

// TestLetterboxPaddingGolden checks the border of the official input.npy
// (bus.jpg, 810x1080 -> 640): 80 columns of 114/255 on each side.
func TestLetterboxPaddingGolden(t *testing.T) {
	in := loadTensor(t, "input.npy")
	g, _ := NewGeometry(810, 1080, 640)
	pad := float32(padValue) / 255
	for c := 0; c < 3; c++ {
		for y := 0; y < 640; y++ {
			for x := 0; x < 640; x++ {
				inside := x >= g.Left && x < g.Left+g.NewW && y >= g.Top && y < g.Top+g.NewH
				if v := in.Data[c*640*640+y*640+x]; !inside && v != pad {
					t.Fatalf("input.npy channel %d y %d x %d = %v, want pad %v", c, y, x, v, pad)
				}
			}
		}
	}
}
