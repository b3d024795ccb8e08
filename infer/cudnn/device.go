package cudnn

/*
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"slices"
	"unsafe"

	"github.com/yolo7d/yolo7d/tiny"
)

// Precision is the arithmetic of the convolutions.
type Precision int

const (
	// FP32 runs everything in float32.
	FP32 Precision = iota
	// FP16 runs the convolutions of inference on half tensors (tensor
	// cores where the shapes allow), weights converted once; activations
	// between layers stay float32. Training always runs in FP32.
	FP16
)

// String names the precision as in configuration files.
func (p Precision) String() string {
	switch p {
	case FP32:
		return "fp32"
	case FP16:
		return "fp16"
	}
	return fmt.Sprintf("Precision(%d)", int(p))
}

// ParsePrecision reads "fp32" or "fp16".
func ParsePrecision(s string) (Precision, error) {
	switch s {
	case "fp32", "":
		return FP32, nil
	case "fp16":
		return FP16, nil
	}
	return 0, fmt.Errorf("precision %q: want fp32 or fp16", s)
}

// DeviceOptions configure a Device.
type DeviceOptions struct {
	Precision Precision
	// Async leaves the GPU work queued when a method returns: the caller
	// calls Sync before the host reads or writes device memory (tiny.Plan
	// does). Otherwise every method waits for its work.
	Async bool
	// ConstParams promises that parameter slices (weights, biases) passed
	// to the ops never change while the Device lives, so they can be kept
	// on the GPU (and in half precision) after their first use. Inference
	// sets it; training must not.
	ConstParams bool
}

// Device is a tiny.TrainDevice on the GPU. Make one per model: it owns the
// memory it allocates (freed by Close) and, with ConstParams, caches
// parameters by address.
type Device struct {
	lib    *Lib
	a      *C.y7_api
	opts   DeviceOptions
	stream unsafe.Pointer
	handle unsafe.Pointer
	mapped bool // Alloc uses pinned mapped host memory (integrated GPU)
	closed bool

	allocs []allocation // sorted by base address

	stage     arena // per-call device buffers for Go-memory operands
	workspace arena // cuDNN workspace
	flushes   []flush

	descs descriptors

	// caches, all keyed by shape or address
	fwdAlgo  map[convKey]algoChoice
	bwdData  map[convKey]algoChoice
	bwdFiltr map[convKey]algoChoice
	params   map[paramKey]unsafe.Pointer // ConstParams: device copies of Go-memory parameters
	ones     map[int]unsafe.Pointer      // C -> C x 1 x 2 x 2 filter of ones (upsampling)
	host     []float32                   // host scratch for per-channel values
}

// allocation is one block of device-visible memory: base is the pointer
// the host uses (Go slices alias it), dev the one the GPU uses (the same
// except for mapped memory on systems without unified addressing).
type allocation struct {
	base, dev unsafe.Pointer
	bytes     uintptr
	managed   bool // cudaMallocManaged (cudaFree) vs cudaHostAlloc (cudaFreeHost)
}

// flush copies a staged output back into Go memory at the end of a method.
type flush struct {
	host unsafe.Pointer
	dev  unsafe.Pointer
	n    uintptr
}

type paramKey struct {
	ptr  uintptr
	n    int
	half bool
}

// NewDevice creates a stream, a cuDNN handle bound to it and the reusable
// descriptors.
func (l *Lib) NewDevice(opts DeviceOptions) (*Device, error) {
	if opts.Precision != FP32 && opts.Precision != FP16 {
		return nil, fmt.Errorf("cudnn: device: unknown precision %v", opts.Precision)
	}
	d := &Device{
		lib: l, a: l.api, opts: opts, mapped: l.info.Integrated,
		fwdAlgo: map[convKey]algoChoice{}, bwdData: map[convKey]algoChoice{}, bwdFiltr: map[convKey]algoChoice{},
		params: map[paramKey]unsafe.Pointer{}, ones: map[int]unsafe.Pointer{},
	}
	if rc := C.y7_cudaSetDevice(d.a, C.int(l.info.Device)); rc != 0 {
		return nil, l.cudaErr("cudaSetDevice", rc)
	}
	var stream, handle unsafe.Pointer
	if rc := C.y7_cudaStreamCreateWithFlags(d.a, &stream, C.Y7_cudaStreamNonBlocking); rc != 0 {
		return nil, fmt.Errorf("cudnn: device: %w", l.cudaErr("cudaStreamCreateWithFlags", rc))
	}
	d.stream = stream
	if rc := C.y7_cudnnCreate(d.a, &handle); rc != 0 {
		d.Close()
		return nil, fmt.Errorf("cudnn: device: %w", l.dnnErr("cudnnCreate", rc))
	}
	d.handle = handle
	if rc := C.y7_cudnnSetStream(d.a, d.handle, d.stream); rc != 0 {
		d.Close()
		return nil, fmt.Errorf("cudnn: device: %w", l.dnnErr("cudnnSetStream", rc))
	}
	if err := d.descs.create(d); err != nil {
		d.Close()
		return nil, fmt.Errorf("cudnn: device: %w", err)
	}
	return d, nil
}

// Options are the options the Device was made with.
func (d *Device) Options() DeviceOptions { return d.opts }

// Close waits for the queued work and frees everything the Device
// allocated: slices returned by Alloc must not be used afterwards. Close
// is safe to call more than once.
func (d *Device) Close() error {
	if d.closed {
		return nil
	}
	d.closed = true
	var errs []error
	if d.stream != nil {
		if rc := C.y7_cudaStreamSynchronize(d.a, d.stream); rc != 0 {
			errs = append(errs, d.lib.cudaErr("cudaStreamSynchronize", rc))
		}
	}
	d.descs.destroy(d)
	d.stage.free(d)
	d.workspace.free(d)
	for _, p := range d.params {
		C.y7_cudaFree(d.a, p)
	}
	for _, p := range d.ones {
		C.y7_cudaFree(d.a, p)
	}
	for _, al := range d.allocs {
		if al.managed {
			C.y7_cudaFree(d.a, al.base)
		} else {
			C.y7_cudaFreeHost(d.a, al.base)
		}
	}
	d.allocs, d.params, d.ones = nil, nil, nil
	if d.handle != nil {
		C.y7_cudnnDestroy(d.a, d.handle)
		d.handle = nil
	}
	if d.stream != nil {
		C.y7_cudaStreamDestroy(d.a, d.stream)
		d.stream = nil
	}
	return errors.Join(errs...)
}

// Sync waits until every queued operation of the Device has finished: the
// host may then read and write the memory of Alloc.
func (d *Device) Sync() error {
	if d.closed {
		return errClosed
	}
	if rc := C.y7_cudaStreamSynchronize(d.a, d.stream); rc != 0 {
		return d.lib.cudaErr("cudaStreamSynchronize", rc)
	}
	return nil
}

var errClosed = errors.New("cudnn: device is closed")

// Alloc returns n zeroed float32 values that both the host and the GPU
// can use (see the package doc). The host must not touch them while work
// is queued (Async devices: call Sync first).
func (d *Device) Alloc(n int) ([]float32, error) {
	if d.closed {
		return nil, errClosed
	}
	if n < 0 {
		return nil, fmt.Errorf("cudnn alloc: negative size %d", n)
	}
	if n == 0 {
		return []float32{}, nil
	}
	bytes := C.size_t(n) * 4
	var p, dev unsafe.Pointer
	al := allocation{bytes: uintptr(bytes)}
	if d.mapped {
		if rc := C.y7_cudaHostAlloc(d.a, &p, bytes, C.Y7_cudaHostAllocMapped); rc != 0 {
			return nil, fmt.Errorf("cudnn alloc %d floats: %w", n, d.lib.cudaErr("cudaHostAlloc", rc))
		}
		if rc := C.y7_cudaHostGetDevicePointer(d.a, &dev, p, 0); rc != 0 {
			C.y7_cudaFreeHost(d.a, p)
			return nil, fmt.Errorf("cudnn alloc %d floats: %w", n, d.lib.cudaErr("cudaHostGetDevicePointer", rc))
		}
	} else {
		// Managed memory beyond what the GPU has free would page against
		// the host (and can hang a driver): refuse it.
		var free, total C.size_t
		if rc := C.y7_cudaMemGetInfo(d.a, &free, &total); rc != 0 {
			return nil, fmt.Errorf("cudnn alloc %d floats: %w", n, d.lib.cudaErr("cudaMemGetInfo", rc))
		}
		if bytes > free/10*9 {
			return nil, fmt.Errorf("cudnn alloc %d floats: %d MiB asked, %d MiB of %d MiB free on the GPU", n, bytes>>20, free>>20, total>>20)
		}
		if rc := C.y7_cudaMallocManaged(d.a, &p, bytes, C.Y7_cudaMemAttachGlobal); rc != 0 {
			return nil, fmt.Errorf("cudnn alloc %d floats: %w", n, d.lib.cudaErr("cudaMallocManaged", rc))
		}
		dev, al.managed = p, true
	}
	al.base, al.dev = p, dev
	if rc := C.y7_cudaMemsetAsync(d.a, dev, 0, bytes, d.stream); rc != 0 {
		d.freeAlloc(al)
		return nil, fmt.Errorf("cudnn alloc %d floats: %w", n, d.lib.cudaErr("cudaMemsetAsync", rc))
	}
	if err := d.Sync(); err != nil {
		d.freeAlloc(al)
		return nil, fmt.Errorf("cudnn alloc %d floats: %w", n, err)
	}
	i, _ := slices.BinarySearchFunc(d.allocs, uintptr(p), func(a allocation, b uintptr) int {
		switch {
		case uintptr(a.base) < b:
			return -1
		case uintptr(a.base) > b:
			return 1
		}
		return 0
	})
	d.allocs = slices.Insert(d.allocs, i, al)
	return unsafe.Slice((*float32)(p), n), nil
}

func (d *Device) freeAlloc(al allocation) {
	if al.managed {
		C.y7_cudaFree(d.a, al.base)
	} else {
		C.y7_cudaFreeHost(d.a, al.base)
	}
}

// owned returns the GPU address of the n floats at p when they lie in
// one of the Device's allocations.
func (d *Device) owned(p unsafe.Pointer, n int) (unsafe.Pointer, bool) {
	a := uintptr(p)
	i, found := slices.BinarySearchFunc(d.allocs, a, func(al allocation, b uintptr) int {
		switch {
		case uintptr(al.base)+al.bytes <= b:
			return -1
		case uintptr(al.base) > b:
			return 1
		}
		return 0
	})
	if !found {
		return nil, false
	}
	al := d.allocs[i]
	off := a - uintptr(al.base)
	if off+uintptr(n)*4 > al.bytes {
		return nil, false
	}
	return unsafe.Add(al.dev, off), true
}

// operand is how a method reaches n floats starting at s[0]: the GPU
// address of Device memory as is; Go memory is copied into the staging
// arena (in), and copied back when the method finishes (out).
func (d *Device) operand(s []float32, n int, in, out bool) (unsafe.Pointer, error) {
	if n == 0 {
		return nil, nil
	}
	if len(s) < n {
		return nil, fmt.Errorf("operand of %d values given %d", n, len(s))
	}
	host := unsafe.Pointer(unsafe.SliceData(s))
	if p, ok := d.owned(host, n); ok {
		return p, nil
	}
	bytes := uintptr(n) * 4
	p, err := d.stage.take(d, bytes)
	if err != nil {
		return nil, err
	}
	// An output view may skip values (a channel slice of a concat buffer,
	// values not written): copy them in so that the copy back keeps them.
	if in || out {
		if rc := C.y7_cudaMemcpyAsync(d.a, p, host, C.size_t(bytes), C.Y7_cudaMemcpyHostToDevice, d.stream); rc != 0 {
			return nil, d.lib.cudaErr("cudaMemcpyAsync", rc)
		}
	}
	if out {
		d.flushes = append(d.flushes, flush{host: host, dev: p, n: bytes})
	}
	return p, nil
}

// param is operand for a read-only parameter: with ConstParams, Go memory
// is copied to the GPU once (converted to half when half is set) and kept.
func (d *Device) param(s []float32, half bool) (unsafe.Pointer, error) {
	if len(s) == 0 {
		return nil, nil
	}
	host := unsafe.Pointer(unsafe.SliceData(s))
	if !half {
		if p, ok := d.owned(host, len(s)); ok {
			return p, nil
		}
	}
	if !d.opts.ConstParams {
		if half {
			return nil, errors.New("half parameters need ConstParams")
		}
		return d.operand(s, len(s), true, false)
	}
	key := paramKey{ptr: uintptr(host), n: len(s), half: half}
	if p, ok := d.params[key]; ok {
		return p, nil
	}
	var p unsafe.Pointer
	bytes := C.size_t(len(s)) * 4
	if rc := C.y7_cudaMalloc(d.a, &p, bytes); rc != 0 {
		return nil, d.lib.cudaErr("cudaMalloc", rc)
	}
	if rc := C.y7_cudaMemcpyAsync(d.a, p, host, bytes, C.Y7_cudaMemcpyHostToDevice, d.stream); rc != 0 {
		C.y7_cudaFree(d.a, p)
		return nil, d.lib.cudaErr("cudaMemcpyAsync", rc)
	}
	if half {
		var h unsafe.Pointer
		if rc := C.y7_cudaMalloc(d.a, &h, C.size_t(len(s))*2); rc != 0 {
			C.y7_cudaFree(d.a, p)
			return nil, d.lib.cudaErr("cudaMalloc", rc)
		}
		err := d.convert(h, C.Y7_CUDNN_DATA_HALF, p, C.Y7_CUDNN_DATA_FLOAT, len(s))
		if err == nil {
			err = d.Sync()
		}
		C.y7_cudaFree(d.a, p)
		if err != nil {
			C.y7_cudaFree(d.a, h)
			return nil, err
		}
		p = h
	}
	d.params[key] = p
	return p, nil
}

// begin starts a method: the staging arena is reused from its start (the
// stream orders the new copies after the work that read the old ones).
func (d *Device) begin() error {
	if d.closed {
		return errClosed
	}
	d.flushes = d.flushes[:0]
	if err := d.stage.reset(d); err != nil {
		return err
	}
	return d.workspace.reset(d)
}

// end finishes a method: staged outputs go back to Go memory, and a
// synchronous Device waits for its work.
func (d *Device) end(err error) error {
	if err != nil {
		d.flushes = d.flushes[:0]
		return err
	}
	for _, f := range d.flushes {
		if rc := C.y7_cudaMemcpyAsync(d.a, f.host, f.dev, C.size_t(f.n), C.Y7_cudaMemcpyDeviceToHost, d.stream); rc != 0 {
			return d.lib.cudaErr("cudaMemcpyAsync", rc)
		}
	}
	if len(d.flushes) > 0 || !d.opts.Async {
		d.flushes = d.flushes[:0]
		return d.Sync()
	}
	return nil
}

// arena hands out device buffers front to back within one method. A
// method that needs more than the current block gets more blocks (nothing
// handed out moves); the next method that finds several blocks replaces
// them by one block of their total size, once the stream is idle.
type arena struct {
	blocks []block
	cur    int // block being filled
}

type block struct {
	p          unsafe.Pointer
	size, used uintptr
}

func (a *arena) reset(d *Device) error {
	if len(a.blocks) > 1 {
		total := uintptr(0)
		for _, b := range a.blocks {
			total += b.size
		}
		if err := d.Sync(); err != nil {
			return err
		}
		a.free(d)
		var p unsafe.Pointer
		if rc := C.y7_cudaMalloc(d.a, &p, C.size_t(total)); rc != 0 {
			return d.lib.cudaErr("cudaMalloc", rc)
		}
		a.blocks = []block{{p: p, size: total}}
	}
	for i := range a.blocks {
		a.blocks[i].used = 0
	}
	a.cur = 0
	return nil
}

// take returns n bytes, 256-aligned.
func (a *arena) take(d *Device, n uintptr) (unsafe.Pointer, error) {
	n = (n + 255) &^ 255
	for a.cur < len(a.blocks) {
		b := &a.blocks[a.cur]
		if b.used+n <= b.size {
			p := unsafe.Add(b.p, b.used)
			b.used += n
			return p, nil
		}
		a.cur++
	}
	size := max(n, 1<<20)
	var p unsafe.Pointer
	if rc := C.y7_cudaMalloc(d.a, &p, C.size_t(size)); rc != 0 {
		return nil, d.lib.cudaErr("cudaMalloc", rc)
	}
	a.blocks = append(a.blocks, block{p: p, size: size, used: n})
	a.cur = len(a.blocks) - 1
	return p, nil
}

func (a *arena) free(d *Device) {
	for _, b := range a.blocks {
		C.y7_cudaFree(d.a, b.p)
	}
	a.blocks, a.cur = nil, 0
}

// span is the number of floats a view covers of a view: (N-1)*batch stride + C*H*W floats.
func span(t tiny.NCHW) int { return (t.N-1)*t.BatchStride() + t.C*t.H*t.W }
