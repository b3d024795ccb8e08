package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"gocv.io/x/gocv"

	"github.com/yolo7d/yolo7d/infer"
	"github.com/yolo7d/yolo7d/tiny"
)

type detectOptions struct {
	model     string
	conf, iou float64
	img       int
	annotate  string
}

// imageResult is the JSON written by `yolo7d detect` for one image.
type imageResult struct {
	Image      string            `json:"image"`
	Width      int               `json:"width"`
	Height     int               `json:"height"`
	InferMS    float64           `json:"infer_ms"`
	Detections []imageDetection  `json:"detections"`
	Annotated  string            `json:"annotated,omitempty"`
	Model      map[string]string `json:"model"`
}

type imageDetection struct {
	Class   string     `json:"class"`
	ClassID int        `json:"class_id"`
	Score   float32    `json:"score"`
	Box     [4]float32 `json:"box"` // x1, y1, x2, y2 in pixels
}

func detectImages(ctx context.Context, o detectOptions, images []string) ([]imageResult, error) {
	eng, err := infer.Open(ctx, infer.Options{
		Model: o.model, Backend: "auto", InputSize: o.img,
		ConfThreshold: float32(o.conf), IoUThreshold: float32(o.iou),
	})
	if err != nil {
		return nil, err
	}
	defer eng.Close()
	info := eng.Info()
	if o.annotate != "" {
		if err := os.MkdirAll(o.annotate, 0o755); err != nil {
			return nil, err
		}
	}
	var out []imageResult
	for _, path := range images {
		r, err := detectOne(ctx, eng, path, o.annotate)
		if err != nil {
			return nil, err
		}
		r.Model = map[string]string{"path": info.Path, "sha256": info.SHA256, "backend": info.Backend}
		out = append(out, r)
	}
	return out, nil
}

func detectOne(ctx context.Context, eng infer.Engine, path, annotateDir string) (imageResult, error) {
	mat := gocv.IMRead(path, gocv.IMReadColor)
	defer mat.Close()
	if mat.Empty() {
		return imageResult{}, fmt.Errorf("%s: not a readable image", path)
	}
	res, err := eng.Detect(ctx, mat)
	if err != nil {
		return imageResult{}, fmt.Errorf("%s: %w", path, err)
	}
	r := imageResult{Image: path, Width: res.Width, Height: res.Height, InferMS: res.InferMS, Detections: []imageDetection{}}
	for _, d := range res.Detections {
		r.Detections = append(r.Detections, imageDetection{Class: d.Class, ClassID: d.ClassID, Score: d.Score,
			Box: [4]float32{d.Box.X1, d.Box.Y1, d.Box.X2, d.Box.Y2}})
	}
	if annotateDir != "" {
		jpeg, err := infer.Annotate(mat, res.Detections, 90)
		if err != nil {
			return r, fmt.Errorf("%s: annotate: %w", path, err)
		}
		name := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)) + ".jpg"
		r.Annotated = filepath.Join(annotateDir, name)
		if err := os.WriteFile(r.Annotated, jpeg, 0o644); err != nil {
			return r, err
		}
	}
	return r, nil
}

// importModel reads an official checkpoint (.pt) or ONNX export (raw or
// --grid, fused or not), folds it into the deploy form and writes it as a
// raw-output ONNX file that every backend runs.
func importModel(src, dst string, img int) error {
	if img < 32 || img > 1280 || img%32 != 0 {
		return fmt.Errorf("--img %d: want a multiple of 32 in 32..1280", img)
	}
	m, err := tiny.ImportModel(src)
	if err != nil {
		return err
	}
	if dir := filepath.Dir(dst); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return tiny.WriteONNXFile(dst, m, img)
}
