package infer

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// benchRaw returns the golden relu raw outputs, or synthetic ones with the
// same logit statistics (MANIFEST section 9) when the golden data is absent.
func benchRaw(b *testing.B) []*Tensor {
	if g, err := findGolden(); err == nil {
		if _, err := os.Stat(filepath.Join(g, "relu_raw_p3.npy")); err == nil {
			return loadRaw(b, "relu")
		}
	}
	b.Log("golden data absent: synthetic raw outputs")
	var outs []*Tensor
	r := rand.New(rand.NewPCG(7, 7))
	objMean := []float64{-7.5, -5.7, -3.3}
	for i, h := range []int{80, 40, 20} {
		t := &Tensor{Shape: []int{1, 3, h, h, 85}, Data: make([]float32, 3*h*h*85)}
		for j := range t.Data {
			switch j % 85 {
			case 4:
				t.Data[j] = float32(objMean[i] + 2*r.NormFloat64())
			default:
				t.Data[j] = float32(-4.88 + 1.5*r.NormFloat64())
			}
		}
		outs = append(outs, t)
	}
	return outs
}

// BenchmarkLetterboxDecodeNMS640 is the CPU work around the network for one
// 1280x720 frame at 640: letterbox, decode, NMS at conf 0.25.
func BenchmarkLetterboxDecodeNMS640(b *testing.B) {
	outs := benchRaw(b)
	frame := randomBGR(1280, 720, 1)
	defer frame.Close()
	lb := NewLetterboxer()
	defer lb.Close()
	var dec Decoder
	input := make([]float32, 3*640*640)
	o := NMSOptions{Conf: 0.25, IoU: 0.45, MaxDet: 300}
	var n int
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := lb.Letterbox(frame, 640, input); err != nil {
			b.Fatal(err)
		}
		c, err := dec.Decode(outs, o)
		if err != nil {
			b.Fatal(err)
		}
		n = len(c)
	}
	b.ReportMetric(float64(n), "dets")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/frame")
}

// BenchmarkLetterbox640 is the letterbox of a 1280x720 frame alone.
func BenchmarkLetterbox640(b *testing.B) {
	frame := randomBGR(1280, 720, 1)
	defer frame.Close()
	lb := NewLetterboxer()
	defer lb.Close()
	input := make([]float32, 3*640*640)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := lb.Letterbox(frame, 640, input); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeNMS640 is decode + NMS alone, at conf 0.25 and at the
// mAP setting conf 0.001 multi-label.
func BenchmarkDecodeNMS640(b *testing.B) {
	outs := benchRaw(b)
	for _, c := range []struct {
		name string
		o    NMSOptions
	}{
		{"conf0.25", NMSOptions{Conf: 0.25, IoU: 0.45, MaxDet: 300}},
		{"conf0.001-multilabel", NMSOptions{Conf: 0.001, IoU: 0.65, MultiLabel: true, MaxDet: 300}},
	} {
		b.Run(c.name, func(b *testing.B) {
			var dec Decoder
			b.ReportAllocs()
			for b.Loop() {
				if _, err := dec.Decode(outs, c.o); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpenCVForward640 is the OpenCV DNN forward of the golden relu
// raw export at 640 with OpenCV's default thread count.
func BenchmarkOpenCVForward640(b *testing.B) {
	be, err := NewOpenCVBackend(goldenFile(b, "yolov7-tiny-relu-raw.onnx"), 0)
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	in := &Tensor{Shape: []int{1, 3, 640, 640}, Data: make([]float32, 3*640*640)}
	ctx := context.Background()
	for b.Loop() {
		if _, err := be.Forward(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cvThreads()), "threads")
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/frame")
}
