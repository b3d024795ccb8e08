package infer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"gocv.io/x/gocv"

	"github.com/yolo7d/yolo7d/infer/cudnn"
	"github.com/yolo7d/yolo7d/tiny"
)

// Defaults applied by NewEngine to zero Options fields.
const (
	DefaultInputSize = 640
	DefaultConf      = 0.25
	DefaultIoU       = 0.45
	DefaultMaxDet    = 300
)

// pipeline is the Engine: letterbox -> Backend.Forward -> decode + NMS ->
// back to frame pixels -> names -> class filter.
type pipeline struct {
	mu     sync.Mutex
	closed bool
	b      Backend
	info   ModelInfo
	lb     *Letterboxer
	dec    Decoder
	input  Tensor
	nms    NMSOptions
	names  []string // nil until the number of classes is known
	given  []string // Options.ClassNames
	filter []string // Options.Classes
}

// NewEngine builds the detection pipeline around a Backend. info.InputSize
// is the network input side (opts.InputSize, then 640, when 0);
// info.Classes, when set, names the model's classes (otherwise
// opts.ClassNames, COCO for 80 classes, or class<N>, once the first output
// shows the class count). The Engine owns b and closes it.
func NewEngine(opts Options, b Backend, info ModelInfo) (Engine, error) {
	if b == nil {
		return nil, errors.New("engine: nil backend")
	}
	if info.InputSize == 0 {
		info.InputSize = opts.InputSize
	}
	if info.InputSize == 0 {
		info.InputSize = DefaultInputSize
	}
	if info.InputSize < 32 || info.InputSize%32 != 0 {
		return nil, fmt.Errorf("engine: input size %d is not a positive multiple of 32", info.InputSize)
	}
	p := &pipeline{
		b:      b,
		info:   info,
		lb:     NewLetterboxer(),
		nms:    nmsFromOptions(opts),
		given:  opts.ClassNames,
		filter: opts.Classes,
	}
	s := info.InputSize
	p.input = Tensor{Shape: []int{1, 3, s, s}, Data: make([]float32, 3*s*s)}
	if len(info.Classes) > 0 {
		p.names = slices.Clone(info.Classes)
		if len(opts.ClassNames) > 0 && !slices.Equal(opts.ClassNames, info.Classes) {
			if len(opts.ClassNames) != len(info.Classes) {
				p.lb.Close()
				return nil, fmt.Errorf("engine: class_names has %d names, the model has %d classes", len(opts.ClassNames), len(info.Classes))
			}
			p.names = slices.Clone(opts.ClassNames)
		}
		p.info.Classes = slices.Clone(p.names)
		if err := p.resolveFilter(); err != nil {
			p.lb.Close()
			return nil, err
		}
	}
	return p, nil
}

// nmsFromOptions applies the defaults to the detector settings.
func nmsFromOptions(opts Options) NMSOptions {
	o := NMSOptions{Conf: opts.ConfThreshold, IoU: IoUThreshold(opts.IoUThreshold), MultiLabel: opts.MultiLabel, MaxDet: opts.MaxDetections, MaxNMS: 30000}
	if opts.ConfThreshold == 0 {
		o.Conf = DefaultConf
	}
	if opts.IoUThreshold == 0 {
		o.IoU = DefaultIoU
	}
	if o.MaxDet <= 0 {
		o.MaxDet = DefaultMaxDet
	}
	return o
}

// resolveFilter turns the class names of Options.Classes into class ids.
func (p *pipeline) resolveFilter() error {
	p.nms.Classes = p.nms.Classes[:0]
	for _, want := range p.filter {
		id := slices.Index(p.names, want)
		if id < 0 {
			return fmt.Errorf("engine: classes: unknown class %q (the model's classes are %s)", want, summarize(p.names))
		}
		p.nms.Classes = append(p.nms.Classes, id)
	}
	return nil
}

func summarize(names []string) string {
	if len(names) > 8 {
		return strings.Join(names[:8], ", ") + fmt.Sprintf(", ... (%d in all)", len(names))
	}
	return strings.Join(names, ", ")
}

// Info describes the model.
func (p *pipeline) Info() ModelInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	info := p.info
	info.Classes = slices.Clone(p.info.Classes)
	return info
}

// Detect runs the whole pipeline on one BGR frame. Calls are serialized.
func (p *pipeline) Detect(ctx context.Context, frame gocv.Mat) (Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return Result{}, errors.New("detect: engine closed")
	}
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("detect: %w", err)
	}
	start := time.Now()
	g, err := p.lb.Letterbox(frame, p.info.InputSize, p.input.Data)
	if err != nil {
		return Result{}, fmt.Errorf("detect: %w", err)
	}
	outs, err := p.b.Forward(ctx, &p.input)
	if err != nil {
		return Result{}, fmt.Errorf("detect: forward: %w", err)
	}
	nc, err := tiny.OutputClasses(outs)
	if err != nil {
		return Result{}, fmt.Errorf("detect: %w", err)
	}
	if len(p.names) != nc {
		// First call without known class names (or the backend changed its
		// class count): name the classes, resolve the class filter.
		if err := p.setClasses(nc); err != nil {
			return Result{}, fmt.Errorf("detect: %w", err)
		}
	}
	cands, err := p.dec.Decode(outs, p.nms)
	if err != nil {
		return Result{}, fmt.Errorf("detect: %w", err)
	}
	res := Result{Width: g.SrcW, Height: g.SrcH, Detections: make([]Detection, 0, len(cands))}
	for _, c := range cands {
		res.Detections = append(res.Detections, Detection{
			ClassID: c.Class,
			Class:   p.names[c.Class],
			Score:   c.Score,
			Box:     g.ToFrame(Box{X1: c.X1, Y1: c.Y1, X2: c.X2, Y2: c.Y2}),
		})
	}
	res.InferMS = float64(time.Since(start).Microseconds()) / 1000
	return res, nil
}

// setClasses names nc classes and resolves the class filter.
func (p *pipeline) setClasses(nc int) error {
	names, err := ClassNames(nc, p.given)
	if err != nil {
		return err
	}
	p.names = names
	p.info.Classes = slices.Clone(names)
	return p.resolveFilter()
}

// Close releases the backend and the buffers; Detect fails afterwards.
func (p *pipeline) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	p.lb.Close()
	if err := p.b.Close(); err != nil {
		return fmt.Errorf("engine close: %w", err)
	}
	return nil
}

// Open loads opts.Model with the backend named by opts.Backend and returns
// the Engine: "cpu" (tiny's CPU device), "opencv" (OpenCV DNN), "cudnn"
// (tiny on the GPU through infer/cudnn), "tensorrt" (infer/trt, in builds
// with the tensorrt tag). "auto" (and "") tries TensorRT, then cuDNN, then
// the CPU, and says in ModelInfo.BackendNote why it passed over each. A
// GPU backend named explicitly fails with its reason instead. The input
// size comes from the model when it is fixed (it then wins over
// opts.InputSize); the class count too.
func Open(ctx context.Context, opts Options) (Engine, error) {
	if opts.Model == "" {
		return nil, errors.New("open detector: no model file (detector.model)")
	}
	backend := strings.ToLower(opts.Backend)
	switch backend {
	case "":
		backend = "auto"
	case "auto", "cpu", "opencv", "cudnn", "tensorrt":
	default:
		return nil, fmt.Errorf("open detector: unknown backend %q (want auto, opencv, cpu, cudnn or tensorrt)", opts.Backend)
	}
	prec, err := cudnn.ParsePrecision(strings.ToLower(opts.Precision))
	if err != nil {
		return nil, fmt.Errorf("open detector: detector.%w", err)
	}
	sum, err := FileSHA256(opts.Model)
	if err != nil {
		return nil, fmt.Errorf("open detector: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open detector: %w", err)
	}
	if backend == "opencv" {
		if native, err := tiny.IsSafetensorsFile(opts.Model); err != nil {
			return nil, fmt.Errorf("open detector: %w", err)
		} else if native {
			return nil, fmt.Errorf("open detector: %s is a yolo7d native model: opencv needs ONNX; export with yolo7d export %s -o MODEL.onnx", opts.Model, opts.Model)
		}
	}
	var (
		b             Backend
		inputSize, nc int
		notes         []string
		device        string
	)
	libOpts := cudnn.Options{Device: opts.GPUDevice}
	if opts.GPULibDir != "" {
		libOpts.Dirs = []string{opts.GPULibDir}
	}
	if backend == "auto" || backend == "tensorrt" {
		tb, err := newTRTBackend(ctx, opts, prec)
		switch {
		case err == nil:
			b, inputSize, nc, backend, device = tb, tb.inputSize, tb.nc, "tensorrt", tb.device
		case backend == "tensorrt":
			return nil, fmt.Errorf("open detector: %w", err)
		default:
			notes = append(notes, "tensorrt: "+err.Error())
		}
	}
	if b == nil && (backend == "auto" || backend == "cudnn") {
		gb, err := NewCUDNNBackend(opts.Model, opts.InputSize, prec, libOpts)
		switch {
		case err == nil:
			b, inputSize, nc, backend, device = gb, gb.Info().InputSize, gb.Info().NumClasses, "cudnn", gb.GPU().String()
			if len(opts.ClassNames) == 0 && len(gb.Info().Names) == nc {
				opts.ClassNames = gb.Info().Names
			}
		case backend == "cudnn":
			return nil, fmt.Errorf("open detector: %w", err)
		case errors.Is(err, cudnn.ErrNotAvailable):
			notes = append(notes, "cudnn: "+strings.TrimPrefix(err.Error(), "cudnn: "))
		default:
			// The GPU is there but the model does not run on it: that is
			// worth a failure, not a silent CPU.
			return nil, fmt.Errorf("open detector: %w", err)
		}
		if b == nil {
			backend = "cpu"
		}
	}
	switch {
	case b != nil:
	case backend == "cpu":
		cb, err := NewCPUBackendSize(opts.Model, opts.Threads, opts.InputSize)
		if err != nil {
			return nil, fmt.Errorf("open detector: %w", err)
		}
		b, inputSize, nc = cb, cb.Info().InputSize, cb.Info().NumClasses
		device = fmt.Sprintf("CPU, %d threads, %s", cb.Info().Threads, tiny.CPUKernels())
		if len(opts.ClassNames) == 0 && len(cb.Info().Names) == nc {
			opts.ClassNames = cb.Info().Names // the native file names its classes
		}
	default:
		ob, err := NewOpenCVBackend(opts.Model, opts.Threads)
		if err != nil {
			return nil, fmt.Errorf("open detector: %w", err)
		}
		b, inputSize, nc = ob, ob.Info().InputSize, ob.Info().NumClasses
	}
	names, err := ClassNames(nc, opts.ClassNames)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("open detector %s: %w", opts.Model, err)
	}
	info := ModelInfo{Path: opts.Model, SHA256: sum, Backend: backend, InputSize: inputSize, Classes: names, Device: device}
	if len(notes) > 0 {
		info.BackendNote = "auto chose " + backend + ": " + strings.Join(notes, "; ")
	}
	e, err := NewEngine(opts, b, info)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("open detector %s: %w", opts.Model, err)
	}
	return e, nil
}

// FileSHA256 returns the hex SHA-256 of a file: the model identity that
// payloads carry (tiny.FileSHA256).
func FileSHA256(path string) (string, error) { return tiny.FileSHA256(path) }
