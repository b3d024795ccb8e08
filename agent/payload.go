package agent

import (
	"github.com/yolo7d/yolo7d/capture"
	"github.com/yolo7d/yolo7d/infer"
	"github.com/yolo7d/yolo7d/publish"
)

// detectionsPayload converts one frame's result to the MQTT contract.
func detectionsPayload(device, camera string, f capture.Frame, res infer.Result, model infer.ModelInfo) *publish.DetectionsPayload {
	p := &publish.DetectionsPayload{
		Device:     device,
		Camera:     camera,
		Frame:      f.Seq,
		Width:      res.Width,
		Height:     res.Height,
		Model:      model.SHA256,
		InferMS:    res.InferMS,
		Detections: make([]publish.Detection, 0, len(res.Detections)),
	}
	w, h := float32(max(res.Width, 1)), float32(max(res.Height, 1))
	for _, d := range res.Detections {
		b := d.Box
		p.Detections = append(p.Detections, publish.Detection{
			Class:   d.Class,
			ClassID: d.ClassID,
			Score:   d.Score,
			Box:     publish.Box{X1: b.X1, Y1: b.Y1, X2: b.X2, Y2: b.Y2},
			BoxNorm: [4]float32{(b.X1 + b.X2) / 2 / w, (b.Y1 + b.Y2) / 2 / h, (b.X2 - b.X1) / w, (b.Y2 - b.Y1) / h},
		})
	}
	return p
}
