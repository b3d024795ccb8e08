package trt

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// ErrNotBuilt is returned by Open, Infer and Version in a binary built
// without the tensorrt build tag (or without cgo).
var ErrNotBuilt = errors.New("yolo7d was built without TensorRT: rebuild on the Jetson with `make build TAGS=tensorrt`")

// DefaultWorkspaceBytes is the builder's workspace limit when
// Options.WorkspaceBytes is 0: enough for every tactic of YOLOv7-tiny at
// 640, small enough for an 8 GB Jetson whose DRAM the CPU shares.
const DefaultWorkspaceBytes = 1 << 30

// Precision is the arithmetic an engine is built for. The zero value is
// FP32.
type Precision int

// The precisions; their values are the shim's Y7TRT_FP32/FP16/INT8.
const (
	FP32 Precision = iota // float32 everywhere; TF32 disabled, so results match the CPU
	FP16                  // float16 layers where faster, float32 elsewhere; I/O stays float32
	INT8                  // int8 layers from entropy calibration (Options.CalibDir), FP16 fallback
)

var precisionNames = [...]string{FP32: "fp32", FP16: "fp16", INT8: "int8"}

// String returns "fp32", "fp16" or "int8".
func (p Precision) String() string {
	if p.valid() {
		return precisionNames[p]
	}
	return fmt.Sprintf("Precision(%d)", int(p))
}

func (p Precision) valid() bool { return p >= FP32 && p <= INT8 }

// ParsePrecision reads a precision name, case-insensitively: fp32
// (float32), fp16 (float16, half) or int8.
func ParsePrecision(s string) (Precision, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "fp32", "float32":
		return FP32, nil
	case "fp16", "float16", "half":
		return FP16, nil
	case "int8":
		return INT8, nil
	}
	return 0, fmt.Errorf("tensorrt: unknown precision %q (want fp32, fp16 or int8)", s)
}

// MarshalText makes a Precision a TOML/JSON string.
func (p Precision) MarshalText() ([]byte, error) {
	if !p.valid() {
		return nil, fmt.Errorf("tensorrt: invalid precision %d", int(p))
	}
	return []byte(p.String()), nil
}

// UnmarshalText is ParsePrecision.
func (p *Precision) UnmarshalText(b []byte) error {
	v, err := ParsePrecision(string(b))
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// Options say which model to build and where to keep the plan.
type Options struct {
	// ONNX is the exported model: one input 1x3xSxS float32, three raw
	// head outputs 1x3xHxWx(5+nc) (export without --grid and --end2end).
	ONNX string
	// CacheDir holds the built plans (and INT8 calibration caches). Empty:
	// os.UserCacheDir()/yolo7d/tensorrt, else the ONNX file's directory.
	// It is created when missing; when it cannot be, the engine is built
	// on every Open (with a warning).
	CacheDir string
	// Precision of the build (zero value FP32).
	Precision Precision
	// CalibDir, for INT8 only: a directory of raw little-endian float32
	// tensors (*.bin, 1x3xSxS each, preprocessed exactly like the
	// detector's input), read in name order.
	CalibDir string
	// WorkspaceBytes limits the builder's scratch memory (0:
	// DefaultWorkspaceBytes).
	WorkspaceBytes int64
	// Logger receives the build/load progress and TensorRT's warnings
	// (nil: slog.Default()).
	Logger *slog.Logger
}

func (o Options) logger() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// check validates the options that need no TensorRT.
func (o Options) check() error {
	if o.ONNX == "" {
		return errors.New("tensorrt: no ONNX model (Options.ONNX)")
	}
	if !o.Precision.valid() {
		return fmt.Errorf("tensorrt %s: invalid precision %d", o.ONNX, int(o.Precision))
	}
	if o.Precision == INT8 && o.CalibDir == "" {
		return fmt.Errorf("tensorrt %s: int8 needs calibration tensors (Options.CalibDir)", o.ONNX)
	}
	if o.WorkspaceBytes < 0 {
		return fmt.Errorf("tensorrt %s: negative workspace %d", o.ONNX, o.WorkspaceBytes)
	}
	return nil
}
