package synth

import (
	"bytes"
	"testing"
)

func TestScenesAreDeterministicAndLabelled(t *testing.T) {
	cfg := DefaultConfig(96)
	g1, err := New(cfg, 7)
	if err != nil {
		t.Fatal(err)
	}
	g2, _ := New(cfg, 7)
	g3, _ := New(cfg, 8)
	objects := 0
	differs := false
	for i := 0; i < 40; i++ {
		a, b, c := g1.Scene(), g2.Scene(), g3.Scene()
		if !bytes.Equal(a.Image.Pix, b.Image.Pix) || len(a.Labels) != len(b.Labels) {
			t.Fatalf("scene %d differs between two generators of the same seed", i)
		}
		if !bytes.Equal(a.Image.Pix, c.Image.Pix) {
			differs = true
		}
		if len(a.Labels) > cfg.MaxObjects {
			t.Errorf("scene %d: %d objects, max %d", i, len(a.Labels), cfg.MaxObjects)
		}
		for j, l := range a.Labels {
			objects++
			if l.Class < 0 || l.Class >= len(ClassNames()) {
				t.Errorf("scene %d label %d: class %d", i, j, l.Class)
			}
			if l.W <= 0 || l.H <= 0 || l.X-l.W/2 < -1e-6 || l.Y-l.H/2 < -1e-6 || l.X+l.W/2 > 1+1e-6 || l.Y+l.H/2 > 1+1e-6 {
				t.Errorf("scene %d label %d: box %+v outside the image", i, j, l)
			}
			side := float32(min(cfg.Width, cfg.Height))
			if s := max(l.W, l.H) * side; s < float32(cfg.MinSize)*side-2 || s > float32(cfg.MaxSize)*side+2 {
				t.Errorf("scene %d label %d: size %.1f px outside %.1f..%.1f", i, j, s, cfg.MinSize*float64(side), cfg.MaxSize*float64(side))
			}
		}
	}
	if !differs {
		t.Error("two seeds drew the same scenes")
	}
	if objects < 40 {
		t.Errorf("only %d objects in 40 scenes", objects)
	}
}

// TestLabelIsTightBox checks that a label's box is exactly the extent of
// the shape's colour: the pixel rows and columns just inside the box
// edges hold the shape's colour, and no pixel of it lies outside.
func TestLabelIsTightBox(t *testing.T) {
	cfg := Config{Width: 64, Height: 48, MinObjects: 1, MaxObjects: 1, MinSize: 0.3, MaxSize: 0.6}
	g, err := New(cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		s := g.Scene()
		if len(s.Labels) != 1 {
			t.Fatalf("scene %d: %d labels, want 1", i, len(s.Labels))
		}
		l := s.Labels[0]
		x1 := int(l.X*64 - l.W*64/2 + 0.5)
		x2 := int(l.X*64 + l.W*64/2 + 0.5)
		y1 := int(l.Y*48 - l.H*48/2 + 0.5)
		y2 := int(l.Y*48 + l.H*48/2 + 0.5)
		// The shape's colour is the colour at the box centre's row for a
		// square, or at the bottom-centre pixel for any shape.
		col := s.Image.RGBAAt((x1+x2)/2, y2-1)
		found := [4]bool{}
		for y := y1; y < y2; y++ {
			for x := x1; x < x2; x++ {
				if s.Image.RGBAAt(x, y) != col {
					continue
				}
				found[0] = found[0] || x == x1
				found[1] = found[1] || x == x2-1
				found[2] = found[2] || y == y1
				found[3] = found[3] || y == y2-1
			}
		}
		if found != [4]bool{true, true, true, true} {
			t.Errorf("scene %d (class %d): box %d,%d..%d,%d not touched by the shape on every side: %v", i, l.Class, x1, y1, x2, y2, found)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
	}{
		{"tiny image", Config{Width: 8, Height: 64, MaxObjects: 1, MinSize: 0.1, MaxSize: 0.2}},
		{"min above max objects", Config{Width: 64, Height: 64, MinObjects: 3, MaxObjects: 2, MinSize: 0.1, MaxSize: 0.2}},
		{"zero size", Config{Width: 64, Height: 64, MaxObjects: 1, MaxSize: 0.2}},
		{"size above 1", Config{Width: 64, Height: 64, MaxObjects: 1, MinSize: 0.5, MaxSize: 1.5}},
		{"negative overlap", Config{Width: 64, Height: 64, MaxObjects: 1, MinSize: 0.1, MaxSize: 0.2, Overlap: -1}},
	} {
		if _, err := New(c.cfg, 1); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
}

func TestTensor(t *testing.T) {
	g, _ := New(DefaultConfig(32), 1)
	s := g.Scene()
	dst := make([]float32, 3*32*32)
	if err := Tensor(dst, s.Image); err != nil {
		t.Fatal(err)
	}
	p := s.Image.RGBAAt(5, 7)
	if dst[7*32+5] != float32(p.R)/255 || dst[32*32+7*32+5] != float32(p.G)/255 || dst[2*32*32+7*32+5] != float32(p.B)/255 {
		t.Error("tensor does not hold the pixel's RGB planes")
	}
	if err := Tensor(dst[:10], s.Image); err == nil {
		t.Error("short tensor: no error")
	}
}
