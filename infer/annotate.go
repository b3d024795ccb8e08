package infer

import (
	"fmt"
	"image"
	"image/color"

	"gocv.io/x/gocv"
)

// Annotate draws the detections on a copy of frame (boxes and "class score"
// labels) and encodes it as JPEG at the given quality (1..100; 0 means 85).
// frame is not modified.
func Annotate(frame gocv.Mat, dets []Detection, quality int) ([]byte, error) {
	if frame.Empty() {
		return nil, fmt.Errorf("annotate: empty frame")
	}
	if quality <= 0 {
		quality = 85
	}
	if quality > 100 {
		quality = 100
	}
	img := frame.Clone()
	defer img.Close()
	thick := max(1, min(img.Cols(), img.Rows())/300)
	for _, d := range dets {
		c := classColor(d.ClassID)
		r := image.Rect(int(d.Box.X1), int(d.Box.Y1), int(d.Box.X2), int(d.Box.Y2))
		gocv.Rectangle(&img, r, c, thick)
		label := fmt.Sprintf("%s %.2f", d.Class, d.Score)
		size := gocv.GetTextSize(label, gocv.FontHersheySimplex, 0.5, 1)
		top := max(r.Min.Y, size.Y+4)
		bg := image.Rect(r.Min.X, top-size.Y-4, r.Min.X+size.X+4, top)
		gocv.Rectangle(&img, bg, c, -1)
		gocv.PutText(&img, label, image.Pt(r.Min.X+2, top-3), gocv.FontHersheySimplex, 0.5, color.RGBA{255, 255, 255, 0}, 1)
	}
	buf, err := gocv.IMEncodeWithParams(gocv.JPEGFileExt, img, []int{gocv.IMWriteJpegQuality, quality})
	if err != nil {
		return nil, fmt.Errorf("annotate: encode JPEG: %w", err)
	}
	defer buf.Close()
	return append([]byte(nil), buf.GetBytes()...), nil
}

// classColor is a stable, distinct colour per class id.
func classColor(id int) color.RGBA {
	palette := [...]color.RGBA{
		{56, 56, 255, 0}, {151, 157, 255, 0}, {31, 112, 255, 0}, {29, 178, 255, 0},
		{49, 210, 207, 0}, {10, 249, 72, 0}, {23, 204, 146, 0}, {134, 219, 61, 0},
		{52, 147, 26, 0}, {187, 212, 0, 0}, {168, 153, 44, 0}, {255, 194, 0, 0},
		{147, 69, 52, 0}, {255, 115, 100, 0}, {236, 24, 0, 0}, {255, 56, 132, 0},
	}
	if id < 0 {
		id = -id
	}
	return palette[id%len(palette)]
}
