//go:build tensorrt && cgo

package trt

/*
#cgo CXXFLAGS: -std=c++17 -O2
#cgo CPPFLAGS: -I/usr/include/aarch64-linux-gnu -I/usr/local/cuda/include
#cgo LDFLAGS: -L/usr/lib/aarch64-linux-gnu -L/usr/local/cuda/lib64 -Wl,-rpath,/usr/local/cuda/lib64
#cgo LDFLAGS: -lnvinfer -lnvonnxparser -lcudart -lstdc++
#include <stdlib.h>
#include "trt_shim.h"
*/
import "C"

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"time"
	"unsafe"
)

// Built reports whether this binary has the TensorRT engine.
const Built = true

const (
	errLen = 4096    // C error buffers
	logLen = 1 << 16 // TensorRT messages of one build
)

// Engine is a loaded TensorRT engine with its execution context, CUDA
// stream, and device and pinned host buffers, all allocated once. An
// Engine is not safe for concurrent use: call Infer from one goroutine at
// a time (the detector pipeline serializes its calls).
type Engine struct {
	c      *C.y7trt_engine
	onnx   string
	errBuf *C.char
	size   int
	shapes [][]int
	names  []string
	in     []float32   // pinned host input (C memory)
	outs   [][]float32 // pinned host outputs (C memory)
	hout   **C.float   // the shim's array of the outs pointers
	log    *slog.Logger
}

// Version returns the TensorRT library version and the headers the shim
// was compiled against, e.g. "8.5.2 (headers 8.5.2.2)".
func Version() (string, error) {
	return fmt.Sprintf("%s (headers %s)", libVersion(int(C.y7trt_version())), headerVersion()), nil
}

func headerVersion() string {
	var major, minor, patch, build C.int
	C.y7trt_header_version(&major, &minor, &patch, &build)
	return fmt.Sprintf("%d.%d.%d.%d", major, minor, patch, build)
}

// Open loads the plan cached for opts (see the package doc for its key)
// or, when there is none or it does not deserialize, builds one from
// opts.ONNX, caches it and loads it. A build takes minutes on a Jetson;
// it cannot be interrupted, so when ctx ends first Open returns ctx's
// error while the build finishes in the background, still writing the
// cache, and its engine is freed.
func Open(ctx context.Context, opts Options) (*Engine, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tensorrt %s: %w", opts.ONNX, err)
	}
	type result struct {
		e   *Engine
		err error
	}
	done := make(chan result, 1)
	go func() {
		e, err := open(opts, opts.logger())
		done <- result{e, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, fmt.Errorf("tensorrt %s: %w", opts.ONNX, r.err)
		}
		return r.e, nil
	case <-ctx.Done():
		go func() {
			if r := <-done; r.e != nil {
				r.e.Close()
			}
		}()
		return nil, fmt.Errorf("tensorrt %s: %w (the engine build goes on in the background and still writes the plan cache)", opts.ONNX, ctx.Err())
	}
}

func open(opts Options, log *slog.Logger) (*Engine, error) {
	gpu, major, minor, err := device()
	if err != nil {
		return nil, err
	}
	sum, err := readModel(opts.ONNX)
	if err != nil {
		return nil, err
	}
	key := planKey{ONNX: sum, Library: int(C.y7trt_version()), Headers: headerVersion(),
		GPU: gpu, Major: major, Minor: minor, Precision: opts.Precision}
	var calib []calibFile
	if opts.Precision == INT8 {
		if calib, err = listCalib(opts.CalibDir); err != nil {
			return nil, err
		}
		key.Calib = calib
	}
	var planPath, calibPath string
	if dir, err := cacheDir(opts); err != nil {
		log.Warn("tensorrt: no plan cache: the engine is built on every start", "onnx", opts.ONNX, "err", err)
	} else {
		planPath, calibPath = key.cachePaths(dir, opts.ONNX)
	}
	attrs := []any{"onnx", opts.ONNX, "precision", opts.Precision, "gpu", fmt.Sprintf("%s sm_%d%d", gpu, major, minor),
		"tensorrt", libVersion(key.Library)}

	if planPath != "" {
		plan, err := os.ReadFile(planPath)
		switch {
		case err == nil:
			e, deserialized, err := load(plan, opts.ONNX, log)
			if err == nil {
				log.Info("tensorrt: loaded cached plan", append(attrs, "plan", planPath)...)
				return e, nil
			}
			if deserialized { // the model breaks the contract: a rebuild would not help
				return nil, err
			}
			log.Warn("tensorrt: cached plan unusable, rebuilding it", append(attrs, "plan", planPath, "err", err)...)
		case !errors.Is(err, fs.ErrNotExist):
			log.Warn("tensorrt: cannot read cached plan, rebuilding it", append(attrs, "plan", planPath, "err", err)...)
		}
	}

	log.Info("tensorrt: building the engine; this takes minutes on a Jetson", attrs...)
	start := time.Now()
	plan, err := build(opts, calib, calibPath, log)
	if err != nil {
		return nil, err
	}
	log.Info("tensorrt: engine built", append(attrs, "took", time.Since(start).Round(time.Second), "bytes", len(plan))...)
	if planPath != "" {
		if err := writeFileAtomic(planPath, plan); err != nil {
			log.Warn("tensorrt: cannot cache the plan: the next start builds again", "plan", planPath, "err", err)
		} else {
			log.Info("tensorrt: plan cached", "plan", planPath)
		}
	}
	e, _, err := load(plan, opts.ONNX, log)
	return e, err
}

// readModel checks the ONNX graph's shapes (precheckONNX) and returns the
// file's SHA-256; TensorRT's parser reads the file again itself.
func readModel(path string) ([32]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return [32]byte{}, err
	}
	if err := precheckONNX(b); err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// device names the current CUDA device and its compute capability.
func device() (name string, major, minor int, err error) {
	var buf [256]C.char
	var errBuf [errLen]C.char
	var cmaj, cmin C.int
	if C.y7trt_device(&buf[0], C.int(len(buf)), &cmaj, &cmin, &errBuf[0], errLen) != 0 {
		return "", 0, 0, fmt.Errorf("CUDA device: %s", C.GoString(&errBuf[0]))
	}
	return C.GoString(&buf[0]), int(cmaj), int(cmin), nil
}

// build runs the TensorRT builder and returns the serialized plan.
func build(opts Options, calib []calibFile, calibCache string, log *slog.Logger) ([]byte, error) {
	onnx := C.CString(opts.ONNX)
	defer C.free(unsafe.Pointer(onnx))
	cache := C.CString(calibCache)
	defer C.free(unsafe.Pointer(cache))
	var files **C.char
	if len(calib) > 0 {
		var p *C.char
		files = (**C.char)(C.malloc(C.size_t(len(calib)) * C.size_t(unsafe.Sizeof(p))))
		defer C.free(unsafe.Pointer(files))
		list := unsafe.Slice(files, len(calib))
		for i, f := range calib {
			list[i] = C.CString(f.Path)
			defer C.free(unsafe.Pointer(list[i]))
		}
	}
	ws := opts.WorkspaceBytes
	if ws == 0 {
		ws = DefaultWorkspaceBytes
	}
	logBuf := (*C.char)(C.malloc(logLen))
	defer C.free(unsafe.Pointer(logBuf))
	errBuf := (*C.char)(C.malloc(errLen))
	defer C.free(unsafe.Pointer(errBuf))
	var plan unsafe.Pointer
	var size C.size_t
	rc := C.y7trt_build(onnx, C.int(opts.Precision), files, C.int(len(calib)), cache, C.size_t(ws),
		&plan, &size, logBuf, logLen, errBuf, errLen)
	logMessages(log, C.GoString(logBuf), "onnx", opts.ONNX)
	if rc != 0 {
		return nil, fmt.Errorf("building the engine: %s", C.GoString(errBuf))
	}
	defer C.y7trt_free(plan)
	return C.GoBytes(plan, C.int(size)), nil
}

// logMessages logs the shim's "error: ", "warning: " and "info: " lines.
func logMessages(log *slog.Logger, text string, attrs ...any) {
	for _, line := range strings.Split(text, "\n") {
		level, msg := slog.LevelWarn, line
		if m, ok := strings.CutPrefix(line, "info: "); ok {
			level, msg = slog.LevelInfo, m
		} else if m, ok := strings.CutPrefix(line, "warning: "); ok {
			msg = m
		} else if m, ok := strings.CutPrefix(line, "error: "); ok {
			level, msg = slog.LevelError, m
		}
		if msg != "" {
			log.Log(context.Background(), level, "tensorrt: "+msg, attrs...)
		}
	}
}

// load deserializes a plan and checks its tensors against the model
// contract; deserialized tells a plan TensorRT refused (rebuild it) from
// an engine that breaks the contract.
func load(plan []byte, onnx string, log *slog.Logger) (e *Engine, deserialized bool, err error) {
	if len(plan) == 0 {
		return nil, false, errors.New("empty plan")
	}
	e = &Engine{onnx: onnx, log: log, errBuf: (*C.char)(C.malloc(errLen))}
	var des C.int
	e.c = C.y7trt_load(unsafe.Pointer(&plan[0]), C.size_t(len(plan)), &des, e.errBuf, errLen)
	if e.c == nil {
		err := fmt.Errorf("loading the plan: %s", C.GoString(e.errBuf))
		C.free(unsafe.Pointer(e.errBuf))
		return nil, des != 0, err
	}
	if err := e.describe(); err != nil {
		e.Close()
		return nil, true, err
	}
	e.takeLog()
	return e, true, nil
}

// describe reads the I/O shapes, checks them and maps the host buffers.
func (e *Engine) describe() error {
	var dims [C.Y7TRT_MAX_DIMS]C.int64_t
	var rank, nOut C.int
	if C.y7trt_input(e.c, &dims[0], &rank, &nOut) != 0 {
		return errors.New("y7trt_input failed")
	}
	in := ints(dims[:rank])
	var name [256]C.char
	for i := 0; i < int(nOut); i++ {
		if C.y7trt_output(e.c, C.int(i), &dims[0], &rank, &name[0], C.int(len(name))) != 0 {
			return fmt.Errorf("y7trt_output %d failed", i)
		}
		e.shapes = append(e.shapes, ints(dims[:rank]))
		e.names = append(e.names, C.GoString(&name[0]))
	}
	size, err := checkIO(in, e.shapes, e.names)
	if err != nil {
		return err
	}
	e.size = size
	e.in = unsafe.Slice((*float32)(unsafe.Pointer(C.y7trt_host_input(e.c))), volume(in))
	e.hout = C.y7trt_host_outputs(e.c)
	for i, p := range unsafe.Slice(e.hout, len(e.shapes)) {
		e.outs = append(e.outs, unsafe.Slice((*float32)(unsafe.Pointer(p)), volume(e.shapes[i])))
	}
	return nil
}

func ints(d []C.int64_t) []int {
	s := make([]int, len(d))
	for i, v := range d {
		s[i] = int(v)
	}
	return s
}

func (e *Engine) takeLog() {
	buf := (*C.char)(C.malloc(logLen))
	defer C.free(unsafe.Pointer(buf))
	if C.y7trt_take_log(e.c, buf, logLen) > 0 {
		logMessages(e.log, C.GoString(buf), "onnx", e.onnx)
	}
}

// InputSize is the side S of the 1x3xSxS input.
func (e *Engine) InputSize() int { return e.size }

// OutputShapes are the shapes of the raw head outputs in level order p3,
// p4, p5: [1 3 S/8 S/8 5+nc], [1 3 S/16 S/16 5+nc], [1 3 S/32 S/32 5+nc].
func (e *Engine) OutputShapes() [][]int {
	s := make([][]int, len(e.shapes))
	for i, d := range e.shapes {
		s[i] = append([]int(nil), d...)
	}
	return s
}

// OutputNames are the engine's names of the outputs, in OutputShapes'
// order.
func (e *Engine) OutputNames() []string { return append([]string(nil), e.names...) }

// InputBuffer is the engine's pinned input buffer (1x3xSxS). Writing the
// input there and passing it to Infer saves a copy. It is valid until
// Close.
func (e *Engine) InputBuffer() []float32 { return e.in }

// OutputBuffers are the engine's pinned output buffers, in OutputShapes'
// order; Infer skips the copy into an output that is one of them. They
// are overwritten by every Infer and valid until Close.
func (e *Engine) OutputBuffers() [][]float32 { return e.outs }

// Infer runs the network on input (1x3xSxS, NCHW) and writes the raw head
// outputs into outputs (OutputShapes' order and sizes). It allocates
// nothing.
func (e *Engine) Infer(input []float32, outputs [][]float32) error {
	if e.c == nil {
		return fmt.Errorf("tensorrt %s: infer on a closed engine", e.onnx)
	}
	if len(input) != len(e.in) {
		return fmt.Errorf("tensorrt %s: input has %d values, want %d (1x3x%dx%d)", e.onnx, len(input), len(e.in), e.size, e.size)
	}
	if len(outputs) != len(e.outs) {
		return fmt.Errorf("tensorrt %s: %d output buffers, want %d", e.onnx, len(outputs), len(e.outs))
	}
	for i, o := range outputs {
		if len(o) != len(e.outs[i]) {
			return fmt.Errorf("tensorrt %s: output %d has %d values, want %d (%s)", e.onnx, i, len(o), len(e.outs[i]), dimsString(e.shapes[i]))
		}
	}
	if !same(input, e.in) {
		copy(e.in, input)
	}
	if C.y7trt_infer(e.c, (*C.float)(unsafe.Pointer(&e.in[0])), e.hout, e.errBuf, errLen) != 0 {
		return fmt.Errorf("tensorrt %s: infer: %s", e.onnx, C.GoString(e.errBuf))
	}
	for i, o := range outputs {
		if !same(o, e.outs[i]) {
			copy(o, e.outs[i])
		}
	}
	return nil
}

// same reports whether a and b start at the same element.
func same(a, b []float32) bool { return len(a) > 0 && len(b) > 0 && &a[0] == &b[0] }

// Close frees the engine and its buffers. The buffers of InputBuffer and
// OutputBuffers must not be used afterwards. Closing twice is a no-op.
func (e *Engine) Close() error {
	if e.c == nil {
		return nil
	}
	e.takeLog()
	C.y7trt_close(e.c)
	C.free(unsafe.Pointer(e.errBuf))
	e.c, e.errBuf, e.in, e.outs, e.hout = nil, nil, nil, nil, nil
	return nil
}
