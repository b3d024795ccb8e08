// Package cudnn is a tiny.Device (inference and training) on an NVIDIA GPU
// through cuDNN, reached by cgo WITHOUT linking to CUDA: the CUDA runtime,
// cuBLAS(Lt) and cuDNN are dlopen()ed at run time by soname (CUDA 11, 12
// and 13; cuDNN 8 and 9), so one binary built on a machine without CUDA
// runs everywhere and reports, where the libraries are missing, exactly
// which one and where it looked (the caller then falls back to the CPU).
//
// Every C prototype and enum value the package uses is declared once, in
// api.h; shim.h holds the table of entry points and the trampolines Go
// calls them through; api.c resolves them with dlsym. gpucheck/ checks
// api.h against NVIDIA's real headers on a GPU machine.
//
// Memory: Device.Alloc returns memory both the host and the GPU can use —
// managed memory (cudaMallocManaged) on a discrete GPU, mapped pinned host
// memory (cudaHostAlloc) on an integrated one (Jetson), where the GPU reads
// the same DRAM. Tensors and parameters that live in ordinary Go memory
// (the input image, a TrainModel's weights and gradients) are staged
// through device buffers on every call: correct for any caller, at the
// cost of the copies.
//
// Ops, one file each (darknet style): conv.go (cudnnConvolutionBiasActivationForward
// with the folded bias and ReLU in one call; LeakyReLU as
// 0.9·relu(y)+0.1·y in one in-place cudnnActivationForward), pool.go (max
// pooling, SPP windows with -Inf padding), upsample.go (nearest 2x as the
// backward-data of a depthwise all-ones 2x2 stride-2 convolution, exact),
// head.go (the detect conv, transposed into the raw head layout by one
// strided cudnnTransformTensor), affine.go and bn.go (BatchNorm, frozen and
// batch statistics), act.go (activation backward). No custom kernels are
// needed: every op of the network is a cuDNN call.
//
// Precision: FP32, or FP16 for inference (the convolutions run on half
// tensors with tensor-op math; activations are stored in FP32 between
// layers). Algorithms are chosen per shape by cuDNN's heuristics and
// cached. A Device is not safe for concurrent use; all calls of one Device
// should come from one goroutine.
package cudnn
