// Package tiny is the YOLOv7-Tiny network in Go, written out by hand in the
// spirit of llm.c and darknet: plain float32 buffers, explicit shapes, one
// file per idea.
//
//   - The topology as a layer table (spec.go) and the deploy-form parameters:
//     one conv with bias and activation per layer (model.go), with a seeded
//     initialisation (init.go).
//   - Fusion of the training form into the deploy form: BatchNorm into the
//     conv, RepConv into one 3x3, ImplicitA/ImplicitM into the detect convs
//     (fuse.go).
//   - The forward pass on a Device (device.go): a Plan allocates every
//     activation once per input size, and producers write straight into the
//     channel slices of concat buffers (forward.go). The CPU device (cpu.go,
//     conv.go, pool.go) runs GEMMs through OpenBLAS via cgo (cpu_blas.go), so
//     the package needs cgo and libopenblas; the cuDNN device lives in
//     infer/cudnn.
//   - File formats: ONNX read (onnx_read.go), import of the official raw and
//     --grid exports (onnx_import.go) and export (onnx_export.go,
//     protobuf_writer.go); the official .pt checkpoints read without Python
//     (pt.go, pickle.go); NumPy .npy (npy.go).
//
// The package imports nothing of this module and no OpenCV, so it builds and
// tests on machines without OpenCV (GPU test machines among them).
package tiny
