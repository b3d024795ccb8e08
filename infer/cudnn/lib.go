package cudnn

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"
)

// LibsEnv is the environment variable naming extra directories (separated
// by ':') searched for the CUDA and cuDNN libraries before the system ones.
const LibsEnv = "YOLO7D_GPU_LIBS"

// ErrNotAvailable is wrapped by Load's error when the libraries or a GPU
// are missing: the caller falls back to the CPU.
var ErrNotAvailable = errors.New("GPU libraries or device not available")

// Options say where to find the libraries and which GPU to use.
type Options struct {
	// Dirs are searched first, in order (a config's gpu_lib_dir; the
	// directories of LibsEnv are appended by Load).
	Dirs []string
	// OnlyDirs restricts the search to Dirs (and LibsEnv): no system
	// directories, no bare-soname dlopen. Tests use it with stub libraries.
	OnlyDirs bool
	// Device is the CUDA device ordinal.
	Device int
}

// Info describes what Load found.
type Info struct {
	Runtime, Driver int               // CUDA versions, e.g. 12060 = 12.6
	CUDNN           int               // e.g. 90600 = 9.6.0, 8906 = 8.9.6
	Device          int               // ordinal
	Name            string            // GPU name ("" when libcuda did not say)
	Major, Minor    int               // compute capability
	Integrated      bool              // shares DRAM with the CPU (Jetson)
	SMs             int               // multiprocessors
	Paths           map[string]string // library -> file loaded
}

// String is the one line logged when the backend starts.
func (i Info) String() string {
	name := i.Name
	if name == "" {
		name = "GPU"
	}
	kind := "discrete"
	if i.Integrated {
		kind = "integrated"
	}
	return fmt.Sprintf("%s #%d (sm_%d%d, %d SMs, %s), CUDA runtime %s, driver %s, cuDNN %s",
		name, i.Device, i.Major, i.Minor, i.SMs, kind, cudaVersion(i.Runtime), cudaVersion(i.Driver), cudnnVersion(i.CUDNN))
}

func cudaVersion(v int) string { return fmt.Sprintf("%d.%d", v/1000, v%1000/10) }

func cudnnVersion(v int) string {
	if v >= 90000 { // cuDNN 9: M*10000 + m*100 + p
		return fmt.Sprintf("%d.%d.%d", v/10000, v%10000/100, v%100)
	}
	return fmt.Sprintf("%d.%d.%d", v/1000, v%1000/100, v%100) // cuDNN 8: M*1000 + m*100 + p
}

// Lib is the loaded set of libraries with its resolved entry points. It
// stays loaded for the life of the process once in use (Close unloads it
// and must only be called when no Device uses it).
type Lib struct {
	api     *C.y7_api
	handles []unsafe.Pointer
	info    Info
}

// Info describes the libraries and the GPU.
func (l *Lib) Info() Info { return l.info }

// libSpec is one library: its sonames, newest first, and whether it is
// required.
type libSpec struct {
	key      string
	sonames  []string
	required bool
}

// The load order matters (../shared/research/gpu.md §6.2): the driver,
// the runtime, cuBLASLt and cuBLAS (which cuDNN 9 dlopens by bare soname:
// preloading them with RTLD_GLOBAL makes it find these copies), cuDNN.
var libSpecs = []libSpec{
	{"cuda", []string{"libcuda.so.1"}, false},
	{"cudart", []string{"libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"}, true},
	{"cublasLt", []string{"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so.11"}, false},
	{"cublas", []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11"}, false},
	{"cudnn", []string{"libcudnn.so.9", "libcudnn.so.8"}, true},
}

// systemDirs are searched after Options.Dirs unless OnlyDirs is set, then
// the dynamic loader's own search (LD_LIBRARY_PATH, ld.so.cache).
var systemDirs = []string{
	"/usr/local/cuda/lib64",
	"/usr/local/cuda/targets/x86_64-linux/lib",
	"/usr/local/cuda/targets/aarch64-linux/lib",
	"/usr/lib/x86_64-linux-gnu",
	"/usr/lib/aarch64-linux-gnu",
	"/usr/lib/aarch64-linux-gnu/tegra",
	"/usr/lib/aarch64-linux-gnu/nvidia",
	"/usr/lib64",
}

// Load opens the libraries, resolves every symbol of api.h, checks the
// versions and the device. The error names the library or call that
// failed and the places searched; it wraps ErrNotAvailable when a library
// or the GPU is missing.
func Load(opts Options) (*Lib, error) {
	dirs := append([]string(nil), opts.Dirs...)
	if env := os.Getenv(LibsEnv); env != "" {
		for _, d := range strings.Split(env, ":") {
			if d != "" {
				dirs = append(dirs, d)
			}
		}
	}
	if !opts.OnlyDirs {
		dirs = append(dirs, systemDirs...)
	}
	l := &Lib{info: Info{Device: opts.Device, Paths: map[string]string{}}}
	handles := map[string]unsafe.Pointer{}
	for _, spec := range libSpecs {
		h, path, err := openLib(spec.sonames, dirs, !opts.OnlyDirs)
		if err != nil {
			if spec.required {
				l.Close()
				return nil, fmt.Errorf("cudnn: load %s: %w: %v", spec.key, ErrNotAvailable, err)
			}
			continue
		}
		l.handles = append(l.handles, h)
		handles[spec.key] = h
		l.info.Paths[spec.key] = path
	}
	l.api = (*C.y7_api)(C.calloc(1, C.sizeof_y7_api))
	if missing := C.y7_resolve(l.api, handles["cudart"], handles["cudnn"], handles["cuda"]); missing != nil {
		name := C.GoString(missing)
		l.Close()
		return nil, fmt.Errorf("cudnn: load: symbol %s not found in %s or %s: %w", name, l.info.Paths["cudart"], l.info.Paths["cudnn"], ErrNotAvailable)
	}
	if err := l.check(opts.Device); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// openLib dlopens the first soname found in dirs (absolute paths, so the
// process's LD_LIBRARY_PATH does not matter), then, if bare is set, by
// soname through the dynamic loader.
func openLib(sonames, dirs []string, bare bool) (unsafe.Pointer, string, error) {
	var tried []string
	errBuf := (*C.char)(C.malloc(512))
	defer C.free(unsafe.Pointer(errBuf))
	try := func(path string) unsafe.Pointer {
		cpath := C.CString(path)
		defer C.free(unsafe.Pointer(cpath))
		h := C.y7_dlopen(cpath, errBuf, 512)
		// A file that exists but does not load (wrong architecture, a
		// missing dependency) is worth its message; "not found" is not.
		if msg := C.GoString(errBuf); h == nil && !strings.Contains(msg, "No such file") {
			tried = append(tried, msg)
		}
		return h
	}
	for _, so := range sonames {
		for _, d := range dirs {
			p := filepath.Join(d, so)
			if _, err := os.Stat(p); err != nil {
				continue
			}
			if h := try(p); h != nil {
				return h, p, nil
			}
		}
	}
	if bare {
		for _, so := range sonames {
			if h := try(so); h != nil {
				return h, so, nil
			}
		}
	}
	msg := fmt.Sprintf("none of %s found in %s", strings.Join(sonames, ", "), strings.Join(dirs, ":"))
	if bare {
		msg += ", nor on the dynamic loader's path (LD_LIBRARY_PATH, ld.so.cache)"
	} else {
		msg += " (only these directories were searched)"
	}
	if len(tried) > 0 {
		msg += "; " + strings.Join(tried, "; ")
	}
	return nil, "", errors.New(msg)
}

// check reads the versions, runs cuDNN's own version checks (which fail
// on a partial or mixed set of cuDNN sub-libraries) and selects the GPU.
func (l *Lib) check(device int) error {
	a := l.api
	var n, rt, drv C.int
	if rc := C.y7_cudaRuntimeGetVersion(a, &rt); rc != 0 {
		return l.cudaErr("cudaRuntimeGetVersion", rc)
	}
	if rc := C.y7_cudaDriverGetVersion(a, &drv); rc != 0 {
		return l.cudaErr("cudaDriverGetVersion", rc)
	}
	l.info.Runtime, l.info.Driver = int(rt), int(drv)
	if drv == 0 {
		return fmt.Errorf("cudnn: no NVIDIA driver installed (CUDA runtime %s): %w", cudaVersion(int(rt)), ErrNotAvailable)
	}
	if drv < rt {
		return fmt.Errorf("cudnn: the driver supports CUDA %s, older than the runtime %s (%s): %w",
			cudaVersion(int(drv)), cudaVersion(int(rt)), l.info.Paths["cudart"], ErrNotAvailable)
	}
	if rc := C.y7_cudaGetDeviceCount(a, &n); rc != 0 {
		return fmt.Errorf("cudnn: %w: %w", l.cudaErr("cudaGetDeviceCount", rc), ErrNotAvailable)
	}
	if device < 0 || device >= int(n) {
		return fmt.Errorf("cudnn: GPU %d requested, %d present: %w", device, int(n), ErrNotAvailable)
	}
	if rc := C.y7_cudaSetDevice(a, C.int(device)); rc != 0 {
		return l.cudaErr("cudaSetDevice", rc)
	}
	attr := func(id C.int) (int, error) {
		var v C.int
		if rc := C.y7_cudaDeviceGetAttribute(a, &v, id, C.int(device)); rc != 0 {
			return 0, l.cudaErr("cudaDeviceGetAttribute", rc)
		}
		return int(v), nil
	}
	var err error
	if l.info.Major, err = attr(C.Y7_cudaDevAttrComputeCapabilityMajor); err != nil {
		return err
	}
	if l.info.Minor, err = attr(C.Y7_cudaDevAttrComputeCapabilityMinor); err != nil {
		return err
	}
	if l.info.SMs, err = attr(C.Y7_cudaDevAttrMultiProcessorCount); err != nil {
		return err
	}
	integrated, err := attr(C.Y7_cudaDevAttrIntegrated)
	if err != nil {
		return err
	}
	l.info.Integrated = integrated != 0
	var name [256]C.char
	if C.y7_cuDeviceName(a, C.int(device), &name[0], 256) == 0 {
		l.info.Name = C.GoString(&name[0])
	}
	l.info.CUDNN = int(C.y7_cudnnGetVersion(a))
	for which, what := range []string{"ops", "cnn"} {
		if rc := C.y7_cudnnVersionCheck(a, C.int(which)); rc > 0 {
			return fmt.Errorf("cudnn: %s sub-library version check: %s (%d): the cuDNN files in %s are incomplete or of mixed versions",
				what, C.GoString(C.y7_cudnnGetErrorString(a, rc)), int(rc), filepath.Dir(l.info.Paths["cudnn"]))
		}
	}
	return nil
}

// Close unloads the libraries.
func (l *Lib) Close() {
	for i := len(l.handles) - 1; i >= 0; i-- {
		C.y7_dlclose(l.handles[i])
	}
	l.handles = nil
	if l.api != nil {
		C.free(unsafe.Pointer(l.api))
		l.api = nil
	}
}

// Error is a failed CUDA or cuDNN call.
type Error struct {
	Call string // the C function
	Code int    // its status
	Msg  string // the library's name for the status
}

func (e *Error) Error() string { return fmt.Sprintf("%s: %s (%d)", e.Call, e.Msg, e.Code) }

// cudaErr maps a cudaError_t.
func (l *Lib) cudaErr(call string, rc C.int) error {
	return &Error{Call: call, Code: int(rc), Msg: C.GoString(C.y7_cudaGetErrorString(l.api, rc))}
}

// dnnErr maps a cudnnStatus_t (only 0 is success: the numbers changed
// between cuDNN 8 and 9, the names did not).
func (l *Lib) dnnErr(call string, rc C.int) error {
	return &Error{Call: call, Code: int(rc), Msg: C.GoString(C.y7_cudnnGetErrorString(l.api, rc))}
}
