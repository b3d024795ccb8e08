// Package infer turns frames into detections: letterbox exactly as the
// official YOLOv7, a Backend that runs the network to its raw head outputs,
// decode of those outputs, and NMS with the official semantics.
package infer

import (
	"context"

	"github.com/yolo7d/yolo7d/tiny"
	"gocv.io/x/gocv"
)

// Box is an axis-aligned box in pixels of the original frame.
type Box struct {
	X1, Y1, X2, Y2 float32
}

// Detection is one detected object.
type Detection struct {
	ClassID int
	Class   string
	Score   float32 // obj * cls
	Box     Box
}

// ModelInfo describes the loaded model.
type ModelInfo struct {
	Path    string
	SHA256  string // hex of the model file
	Backend string // "opencv", "cpu", "cudnn", "tensorrt"
	// BackendNote says how "auto" chose, or why a GPU backend was not
	// used ("" when the named backend simply ran); the agent logs it.
	BackendNote string
	// Device describes the GPU and its libraries for GPU backends.
	Device    string
	InputSize int // square network input, e.g. 640
	Classes   []string
}

// Result is what one Detect call returns.
type Result struct {
	Detections []Detection
	Width      int     // original frame size
	Height     int     //
	InferMS    float64 // letterbox + forward + decode + NMS
}

// Engine is what the agent uses: one frame in, detections out. An Engine is
// safe for concurrent use (calls are serialized inside).
type Engine interface {
	Detect(ctx context.Context, frame gocv.Mat) (Result, error)
	Info() ModelInfo
	Close() error
}

// Tensor is a dense float32 array in C order (tiny.Tensor).
type Tensor = tiny.Tensor

// Backend runs the network: a letterboxed 1x3xSxS RGB [0,1] NCHW input in,
// the raw head outputs (each 1x3xHxWx(5+nc), pre-sigmoid) out, in level order
// p3, p4, p5.
type Backend interface {
	Forward(ctx context.Context, input *Tensor) ([]*Tensor, error)
	Close() error
}

// Options are the detector settings (TOML table [detector]).
type Options struct {
	Model         string   `toml:"model"`          // path of the model file (.onnx)
	Backend       string   `toml:"backend"`        // auto | cpu | cudnn | tensorrt | opencv (default auto)
	InputSize     int      `toml:"input_size"`     // network input side, multiple of 32 (default 640)
	ConfThreshold float32  `toml:"conf_threshold"` // default 0.25
	IoUThreshold  float32  `toml:"iou_threshold"`  // default 0.45
	MultiLabel    bool     `toml:"multi_label"`    // default false (best class only)
	MaxDetections int      `toml:"max_detections"` // default 300
	Classes       []string `toml:"classes"`        // keep only these class names; empty = all
	ClassNames    []string `toml:"class_names"`    // names of the model's classes; empty = COCO 80 when nc=80, else "class<N>"
	Threads       int      `toml:"threads"`        // CPU threads for the backend; 0 = all cores
	Precision     string   `toml:"precision"`      // GPU arithmetic: fp32 | fp16 (default fp32)
	GPULibDir     string   `toml:"gpu_lib_dir"`    // extra directory searched first for the CUDA/cuDNN libraries
	GPUDevice     int      `toml:"gpu_device"`     // CUDA device ordinal (default 0)
	// TRTCacheDir is where TensorRT engines are cached (the agent sets
	// <state_dir>/trt); empty: next to the model.
	TRTCacheDir string `toml:"-"`
}
