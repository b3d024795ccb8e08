// Package trt runs the exported YOLOv7-tiny ONNX model with NVIDIA
// TensorRT, the fastest backend on a Jetson: it builds an engine for the
// GPU it runs on, caches the plan, and runs the network from pinned host
// buffers, one CUDA stream, no allocation per frame.
//
// The model contract is the one of the other backends: one input
// 1x3xSxS float32 (RGB in [0,1], NCHW, letterboxed), three raw head
// outputs 1x3xHxWx(5+nc) float32 (pre-sigmoid), which Engine returns in
// level order p3, p4, p5 — TensorRT's output names are not relied on: the
// outputs are ordered by size, largest first, and checked (H = S/8, S/16,
// S/32). Export without --grid and without --end2end: no NMS plugin is
// loaded (NMS runs in Go).
//
// # Plan cache
//
// A TensorRT plan is valid only for the TensorRT version and the GPU that
// built it, and building one takes minutes on a Jetson. Open therefore
// keeps plans in Options.CacheDir, named
// <onnx stem>.<precision>.<key>.plan, where key is the hex SHA-256 of the
// ONNX file's bytes, the TensorRT library version (getInferLibVersion) and
// the version of the headers the shim was compiled against, the GPU's name
// and compute capability, the precision and, for INT8, the calibration
// files' names and sizes. Any change of these builds a new plan. A plan is
// written to a temporary file and renamed, so a crash never leaves half a
// plan. If a cached plan still fails to deserialize (a corrupt file, a
// "Version tag does not match" after an in-place library upgrade), Open
// logs a warning with TensorRT's message, rebuilds the plan and overwrites
// the file. Old plans are never deleted: remove them by hand when a model
// is replaced for good.
//
// # Precision
//
// FP32 builds with TF32 disabled (TensorRT enables it by default on
// Ampere GPUs such as Orin), so raw logits should match the CPU backend
// (trt_gpu_test.go checks 1e-3). FP16, the usual choice on a Jetson, lets
// TensorRT pick half precision per layer (checked to 2e-2); inputs and
// outputs stay float32. INT8 adds int8 layers (with FP16 fallback) calibrated by
// entropy calibration (IInt8EntropyCalibrator2) from Options.CalibDir: raw
// little-endian float32 files (*.bin, 1x3xSxS each) preprocessed exactly
// like the detector's input, a few hundred representative frames. The
// calibration result is cached next to the plans
// (<stem>.int8.<key>.calib). TensorRT 10.1 deprecates implicit
// calibration in favour of explicit Q/DQ quantization and TensorRT 11
// removes it; the shim still compiles and runs it on 10.x with the
// deprecation warnings silenced.
//
// # Building
//
// The engine is compiled only with the build tag tensorrt (and cgo); any
// other build gets the same API with Built = false, where Open returns
// ErrNotBuilt, so the program compiles everywhere. The C++ shim
// (trt_shim.cpp, behind the plain-C trt_shim.h) uses only TensorRT APIs
// present in both 8.5 and 10.x and compiles against either. It links
// libnvinfer, libnvonnxparser and libcudart; the include and library paths
// are JetPack's (/usr/include/aarch64-linux-gnu, /usr/local/cuda/include,
// /usr/lib/aarch64-linux-gnu, /usr/local/cuda/lib64), and CGO_CPPFLAGS and
// CGO_LDFLAGS add others (they come first).
//
// Build ON the Jetson, with the TensorRT and CUDA development packages
// JetPack installs (sudo apt install nvidia-jetpack, or libnvinfer-dev,
// libnvonnxparsers-dev and the cuda-cudart-dev package of its CUDA):
//
//	make build TAGS=tensorrt        # or: go build -tags tensorrt -o build/yolo7d ./cmd/yolo7d
//
// JetPack 5.1.x (L4T 35, Xavier and Orin): TensorRT 8.5.2, CUDA 11.4,
// Ubuntu 20.04 with glibc 2.31 and g++ 9 (C++17 is enough). Ubuntu's
// golang-go there is 1.13, far too old: install Go from the go.dev
// tarball for linux-arm64 into /usr/local/go.
//
// JetPack 6 (L4T 36, Orin only): 6.0 has TensorRT 8.6.2 and CUDA 12.2,
// 6.1 and 6.2 have TensorRT 10.3 and CUDA 12.6; Ubuntu 22.04, glibc 2.35.
// Build with OPENCV=4.8 there (JetPack 6 ships OpenCV 4.8).
//
// glibc: a cgo binary built on Debian 12 (glibc 2.36) needs GLIBC_2.34
// symbols (__libc_start_main, pthread_create, dlopen) and does not start
// on JetPack 5 (glibc 2.31); it does run on JetPack 6. Check a binary with
//
//	objdump -T yolo7d | grep GLIBC_
//
// and build for JetPack 5 on the device itself, or cross-compile against
// a glibc 2.31 arm64 sysroot (Debian 11 or Ubuntu 20.04 with
// gcc-aarch64-linux-gnu) that also holds the JetPack TensorRT and CUDA
// headers and libraries.
//
// The CUDA device is the current one (device 0 on a Jetson). An Engine is
// not safe for concurrent use.
package trt
