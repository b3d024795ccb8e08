package infer

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"

	"gocv.io/x/gocv"
)

// fakeBackend returns fixed raw outputs: one confident class-2 box centred
// on cell (y 5, x 4) of p3, anchor 0, for an input of size s.
type fakeBackend struct {
	s      int
	nc     int
	calls  int
	closed bool
}

func (f *fakeBackend) Forward(ctx context.Context, in *Tensor) ([]*Tensor, error) {
	f.calls++
	k := 5 + f.nc
	outs := make([]*Tensor, 3)
	for i := range outs {
		h := f.s / (8 << i)
		t := &Tensor{Shape: []int{1, 3, h, h, k}, Data: make([]float32, 3*h*h*k)}
		for j := range t.Data {
			t.Data[j] = -10
		}
		outs[2-i] = t // reversed: levels are found by H
	}
	p3 := outs[2]
	h := f.s / 8
	row := p3.Data[(5*h+4)*k : (5*h+5)*k]
	row[0], row[1], row[2], row[3] = 0, 0, 0, 0 // sig 0.5: centre of the cell, wh = anchor
	row[4] = 10
	row[5+2%f.nc] = 10
	return outs, nil
}

func (f *fakeBackend) Close() error { f.closed = true; return nil }

func TestEngineFakeBackend(t *testing.T) {
	fb := &fakeBackend{s: 64, nc: 3}
	e, err := NewEngine(Options{InputSize: 64}, fb, ModelInfo{Backend: "fake"})
	if err != nil {
		t.Fatal(err)
	}
	frame := gocv.NewMatWithSize(32, 64, gocv.MatTypeCV8UC3) // 64x32: r = 1, 16 px pad top
	defer frame.Close()
	res, err := e.Detect(context.Background(), frame)
	if err != nil {
		t.Fatal(err)
	}
	if res.Width != 64 || res.Height != 32 || len(res.Detections) != 1 || res.InferMS <= 0 {
		t.Fatalf("result %+v, want 64x32 with one detection and a time", res)
	}
	d := res.Detections[0]
	// Centre (4.5*8, 5.5*8) = (36, 44) in the input, minus 16 px top pad;
	// anchor 10x13; y2 = 34.5 is clipped to the 32-row frame.
	want := Box{X1: 31, Y1: 28 - 6.5, X2: 41, Y2: 32}
	if d.ClassID != 2 || d.Class != "class2" || boxDiff(d.Box, want) > 1e-4 || math.Abs(float64(d.Score)-0.99991) > 1e-4 {
		t.Errorf("detection %+v, want class2 %+v score 0.9999", d, want)
	}
	if got := e.Info().Classes; len(got) != 3 {
		t.Errorf("Info().Classes = %v after the first frame, want 3 names", got)
	}
	e.Close()
	if _, err := e.Detect(context.Background(), frame); err == nil {
		t.Error("Detect after Close: no error")
	}
	if !fb.closed {
		t.Error("Close did not close the backend")
	}

	// Class filter by name.
	e, err = NewEngine(Options{InputSize: 64, Classes: []string{"class1"}}, &fakeBackend{s: 64, nc: 3}, ModelInfo{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if res, err = e.Detect(context.Background(), frame); err != nil || len(res.Detections) != 0 {
		t.Errorf("filter class1: %d detections, err %v; want none", len(res.Detections), err)
	}
	if _, err := NewEngine(Options{Classes: []string{"unicorn"}}, &fakeBackend{s: 64, nc: 3}, ModelInfo{InputSize: 64, Classes: []string{"a", "b", "c"}}); err == nil || !strings.Contains(err.Error(), "unicorn") {
		t.Errorf("unknown class filter: err = %v", err)
	}
	if _, err := NewEngine(Options{}, &fakeBackend{}, ModelInfo{InputSize: 100}); err == nil {
		t.Error("input size 100: no error")
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		opts Options
		want string
	}{
		{Options{}, "no model"},
		{Options{Model: "/nonexistent/x.onnx", Backend: "cudnn"}, "no such file"},
		{Options{Model: "/nonexistent/x.onnx", Backend: "tensorrt"}, "no such file"},
		{Options{Model: "/nonexistent/x.onnx", Backend: "cpu"}, "no such file"},
		{Options{Model: "/nonexistent/x.onnx", Backend: "opencv"}, "no such file"},
		{Options{Model: "x.onnx", Backend: "tpu"}, "unknown backend"},
		{Options{Model: "/nonexistent/x.onnx"}, "no such file"},
	}
	for _, c := range cases {
		_, err := Open(ctx, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open(%+v): err = %v, want it to mention %q", c.opts, err, c.want)
		}
	}
}

// busFrame rebuilds the 480x640 BGR image inside the official input.npy.
// Letterboxing it to 640 needs no resize (r = 1) and pads 80 px on each
// side, which gives input.npy back exactly.
func busFrame(t *testing.T) gocv.Mat {
	in := loadTensor(t, "input.npy")
	const s, w, h, left = 640, 480, 640, 80
	b := make([]byte, 3*w*h)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			for c := 0; c < 3; c++ {
				v := in.Data[c*s*s+y*s+x+left] * 255
				b[3*(y*w+x)+2-c] = byte(math.Round(float64(v)))
			}
		}
	}
	m, err := gocv.NewMatFromBytes(h, w, gocv.MatTypeCV8UC3, b)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestEngineGolden(t *testing.T) {
	model := goldenFile(t, "yolov7-tiny-relu-raw.onnx")
	gold := loadTensor(t, "relu_nms_c0.25_i0.45.npy")
	frame := busFrame(t)
	defer frame.Close()
	e, err := Open(context.Background(), Options{Model: model, Backend: "auto", InputSize: 320, Threads: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	info := e.Info()
	if info.InputSize != 640 || len(info.SHA256) != 64 || info.Backend != "cpu" || len(info.Classes) != 80 || info.Classes[5] != "bus" {
		t.Errorf("info %+v: want input 640 (from the model), a sha256, cpu (what auto picks without a GPU), 80 COCO names", info)
	}
	var wg sync.WaitGroup
	results := make([]Result, 3)
	errs := make([]error, 3)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = e.Detect(context.Background(), frame)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	res := results[0]
	t.Logf("%d detections, %.1f ms", len(res.Detections), res.InferMS)
	if res.Width != 480 || res.Height != 640 {
		t.Errorf("result size %dx%d, want 480x640", res.Width, res.Height)
	}
	// Golden rows are in input pixels: x - 80 gives frame pixels (r = 1).
	// The forward differs from torch by < 2e-4 in the logits, well inside
	// the MANIFEST tolerances (0.1 px, 1e-4).
	cands := make([]Candidate, len(res.Detections))
	for i, d := range res.Detections {
		cands[i] = Candidate{X1: d.Box.X1 + 80, Y1: d.Box.Y1, X2: d.Box.X2 + 80, Y2: d.Box.Y2, Score: d.Score, Class: d.ClassID}
		if d.Class != cocoNames()[d.ClassID] {
			t.Errorf("detection %d: class %q for id %d", i, d.Class, d.ClassID)
		}
	}
	clipped := *gold
	clipped.Data = append([]float32(nil), gold.Data...)
	for r := 0; r < gold.Shape[0]; r++ { // the engine clips to the frame
		g := clipped.Data[r*6:]
		g[0], g[2] = clamp32(g[0], 80, 560), clamp32(g[2], 80, 560)
		g[1], g[3] = clamp32(g[1], 0, 640), clamp32(g[3], 0, 640)
	}
	compareNMS(t, cands, &clipped)
	for i := 1; i < len(results); i++ {
		if len(results[i].Detections) != len(res.Detections) {
			t.Errorf("concurrent call %d: %d detections, first call %d", i, len(results[i].Detections), len(res.Detections))
		}
	}

	// Class filter: only buses, as the official classes=[5] would give.
	eb, err := Open(context.Background(), Options{Model: model, Classes: []string{"bus"}})
	if err != nil {
		t.Fatal(err)
	}
	defer eb.Close()
	rb, err := eb.Detect(context.Background(), frame)
	if err != nil {
		t.Fatal(err)
	}
	nBus := 0
	for r := 0; r < gold.Shape[0]; r++ {
		if gold.Data[r*6+5] == 5 {
			nBus++
		}
	}
	for _, d := range rb.Detections {
		if d.Class != "bus" {
			t.Errorf("filtered result has %q", d.Class)
		}
	}
	if len(rb.Detections) != nBus {
		t.Errorf("bus filter: %d detections, golden has %d bus rows", len(rb.Detections), nBus)
	}
}

func clamp32(v, lo, hi float32) float32 { return min(max(v, lo), hi) }
