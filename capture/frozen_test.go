package capture

import (
	"image"
	"testing"
	"time"

	"gocv.io/x/gocv"
)

func TestContentHash(t *testing.T) {
	if hashOf(1) != hashOf(1) {
		t.Error("same image, different hash")
	}
	if hashOf(1) == hashOf(2) {
		t.Error("different images, same hash")
	}
	// A one-pixel change on the sampling grid changes the hash.
	m := gocv.NewMat()
	defer m.Close()
	fill(&m, 3)
	before := contentHash(&m)
	r, c := m.Rows()/(2*hashGrid), m.Cols()/(2*hashGrid)
	data, err := m.DataPtrUint8()
	if err != nil {
		t.Fatal(err)
	}
	data[(r*m.Cols()+c)*m.Channels()]++
	if contentHash(&m) == before {
		t.Error("pixel change on the grid not seen")
	}
	// Not continuous: a region of interest.
	roi := m.Region(image.Rect(0, 0, 10, 10))
	defer roi.Close()
	_ = contentHash(&roi)
	empty := gocv.NewMat()
	defer empty.Close()
	_ = contentHash(&empty)
}

func TestFrozenDetector(t *testing.T) {
	t0 := time.Unix(0, 0)
	f := frozenDetector{timeout: time.Second}
	if f.observe(1, t0) || f.observe(1, t0.Add(500*time.Millisecond)) {
		t.Error("frozen too early")
	}
	if !f.observe(1, t0.Add(time.Second)) {
		t.Error("not frozen after the timeout")
	}
	if f.observe(2, t0.Add(1100*time.Millisecond)) || f.since() != t0.Add(1100*time.Millisecond) {
		t.Error("a change did not reset")
	}
	off := frozenDetector{timeout: -1}
	off.observe(1, t0)
	if off.observe(1, t0.Add(time.Hour)) {
		t.Error("disabled detector reported frozen")
	}
}
