package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/yolo7d/yolo7d/infer"
	"github.com/yolo7d/yolo7d/tiny"
)

// Model file commands: import (official .pt/ONNX -> native or ONNX),
// export (any model -> deploy ONNX) and forward (raw head outputs as .npy).

// checkImg checks an --img value.
func checkImg(img int) error {
	if img < 32 || img > 1280 || img%32 != 0 {
		return fmt.Errorf("--img %d: want a multiple of 32 in 32..1280", img)
	}
	return nil
}

// mkdirFor creates the directory that will hold path.
func mkdirFor(path string) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// importModelFile reads an official checkpoint (.pt), ONNX export (raw or
// --grid, fused or not) or native model, folds it into the deploy form and
// writes it to dst: the native format when dst ends in .safetensors (with
// input size img and the source's provenance), a raw-output ONNX model for
// input size img when it ends in .onnx.
func importModelFile(src, dst string, img int, tool string) error {
	ext := strings.ToLower(filepath.Ext(dst))
	switch ext {
	case ".onnx":
		return importModel(src, dst, img) // detect.go
	case ".safetensors":
	default:
		return fmt.Errorf("output %s: want a .safetensors (native) or .onnx file", dst)
	}
	if err := checkImg(img); err != nil {
		return err
	}
	m, err := tiny.ImportModel(src)
	if err != nil {
		return err
	}
	if err := mkdirFor(dst); err != nil {
		return err
	}
	sum, err := infer.FileSHA256(src)
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(src)
	if err != nil {
		abs = src
	}
	meta := tiny.ModelMeta{
		InputSize: img,
		Provenance: tiny.Provenance{
			Source:       abs,
			SourceSHA256: sum,
			Tool:         tool,
			Time:         time.Now().UTC().Format(time.RFC3339),
		},
	}
	return tiny.WriteModelFile(dst, m, meta)
}

// loadModel reads any model file (native, ONNX, .pt) and the input size it
// declares (0 when none).
func loadModel(path string) (*tiny.Model, int, error) {
	native, err := tiny.IsSafetensorsFile(path)
	if err != nil {
		return nil, 0, err
	}
	if native {
		m, meta, err := tiny.ReadModelFile(path)
		return m, meta.InputSize, err
	}
	m, err := tiny.ImportModel(path)
	if err != nil {
		return nil, 0, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	if om, err := tiny.ParseONNXStructure(b); err == nil && len(om.Inputs) > 0 {
		if d := om.Inputs[0].Dims; len(d) == 4 && d[2] > 0 && d[2] == d[3] {
			return m, int(d[2]), nil
		}
	}
	return m, 0, nil
}

// exportModel writes the model at src as a deploy ONNX file for input size
// img (0: the size src declares, else 640).
func exportModel(src, dst string, img int) error {
	if !strings.EqualFold(filepath.Ext(dst), ".onnx") {
		return fmt.Errorf("output %s: want an .onnx file", dst)
	}
	m, declared, err := loadModel(src)
	if err != nil {
		return err
	}
	if img == 0 {
		img = declared
	}
	if img == 0 {
		img = 640
	}
	if err := checkImg(img); err != nil {
		return err
	}
	if err := mkdirFor(dst); err != nil {
		return err
	}
	return tiny.WriteONNXFile(dst, m, img)
}

// forwardNPY runs the model at modelPath on the CPU for the 1x3xSxS input
// in inputPath and writes the raw head outputs (logits, 1x3xHxWx(5+nc)) as
// p3.npy, p4.npy, p5.npy in outDir. It returns the files written.
func forwardNPY(modelPath, inputPath, outDir string) ([]string, error) {
	m, _, err := loadModel(modelPath)
	if err != nil {
		return nil, err
	}
	shape, data, err := tiny.ReadNPYFile(inputPath)
	if err != nil {
		return nil, err
	}
	if len(shape) != 4 || shape[0] != 1 || shape[1] != 3 || shape[2] != shape[3] {
		return nil, fmt.Errorf("input %s: shape %v, want [1 3 S S]", inputPath, shape)
	}
	if err := checkImg(shape[2]); err != nil {
		return nil, fmt.Errorf("input %s: side %d: %w", inputPath, shape[2], err)
	}
	plan, err := m.NewPlan(tiny.NewCPU(0), shape[2])
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", modelPath, err)
	}
	outs, err := plan.Forward(data)
	if err != nil {
		return nil, fmt.Errorf("forward %s on %s: %w", modelPath, inputPath, err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	var written []string
	for i, s := range plan.OutputShapes() {
		path := filepath.Join(outDir, fmt.Sprintf("p%d.npy", i+3))
		if err := writeNPYFile(path, slices.Clone(s), outs[i]); err != nil {
			return written, err
		}
		written = append(written, path)
	}
	return written, nil
}

// writeNPYFile writes one float32 array as .npy.
func writeNPYFile(path string, shape []int, data []float32) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := tiny.WriteNPY(f, shape, data); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
