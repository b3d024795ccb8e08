// Package tiny is the YOLOv7-Tiny network: its topology as a layer table
// (spec.go), the deploy-form parameters (model.go), a seeded initialisation
// (init.go), and the ONNX file format: a hand-written protobuf writer
// (protobuf_writer.go), the export of the deploy form in the shape of the
// official export.py raw export (onnx_export.go), and a small reader for
// ONNX initializers and nodes (onnx_read.go).
//
// The package imports nothing of this module and no OpenCV, so it builds and
// tests on machines without either.
package tiny
