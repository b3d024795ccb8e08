package infer

import "github.com/yolo7d/yolo7d/tiny"

// The decode and NMS of the raw head outputs live in package tiny (they
// are the network's post-processing, also used by evaluation during
// fine-tuning); these names keep infer's API.

// numAnchors is the number of anchors per level of YOLOv7-tiny.
const numAnchors = 3

// levelStrides are the strides of p3, p4, p5.
var levelStrides = [3]int{8, 16, 32}

// Candidate is a detection in network-input pixels (tiny.Candidate).
type Candidate = tiny.Candidate

// NMSOptions are the arguments of the official non_max_suppression
// (tiny.NMSOptions).
type NMSOptions = tiny.NMSOptions

// Decoder decodes raw head outputs and runs NMS (tiny.Decoder).
type Decoder = tiny.Decoder

// DefaultNMSOptions returns the official defaults of detect.py.
func DefaultNMSOptions() NMSOptions { return tiny.DefaultNMSOptions() }

// IoUThreshold turns a float32 setting into the float64 the official code
// compares against (tiny.IoUThreshold).
func IoUThreshold(f float32) float64 { return tiny.IoUThreshold(f) }
