package synth

import (
	"bytes"
	"math"
	"testing"
)

// videoFrames draws n frames of a video.
func videoFrames(t *testing.T, cfg Config, seed uint64, fps float64, n int) []Frame {
	t.Helper()
	v, err := NewVideo(cfg, seed, fps)
	if err != nil {
		t.Fatal(err)
	}
	fr := make([]Frame, n)
	for i := range fr {
		fr[i] = v.Next()
		if fr[i].Index != i {
			t.Fatalf("frame %d has index %d", i, fr[i].Index)
		}
		if len(fr[i].IDs) != len(fr[i].Labels) {
			t.Fatalf("frame %d: %d ids for %d labels", i, len(fr[i].IDs), len(fr[i].Labels))
		}
	}
	return fr
}

func TestVideoIsDeterministic(t *testing.T) {
	cfg := DefaultVideoConfig(96, 64)
	a := videoFrames(t, cfg, 5, 15, 30)
	for _, tc := range []struct {
		name string
		seed uint64
		fps  float64
		same bool
	}{
		{"same seed", 5, 15, true},
		{"other seed", 6, 15, false},
		{"other frame rate", 5, 30, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := videoFrames(t, cfg, tc.seed, tc.fps, 30)
			same := true
			for i := range a {
				eq := bytes.Equal(a[i].Image.Pix, b[i].Image.Pix) && len(a[i].Labels) == len(b[i].Labels)
				for j := 0; eq && j < len(a[i].Labels); j++ {
					eq = a[i].Labels[j] == b[i].Labels[j] && a[i].IDs[j] == b[i].IDs[j]
				}
				same = same && eq
			}
			if same != tc.same {
				t.Errorf("frames equal: %v, want %v", same, tc.same)
			}
		})
	}
}

// TestVideoObjectsMove follows every object through 40 s of video: its
// box stays inside the frame and moves at most the largest speed per
// frame, boxes overlap at most the configured IoU, most objects do move, objects appear and disappear, and there are
// never more than MaxObjects.
func TestVideoObjectsMove(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		fps  float64
	}{
		{"landscape 15 fps", DefaultVideoConfig(128, 72), 15},
		{"portrait 30 fps", Config{Width: 48, Height: 80, MinObjects: 2, MaxObjects: 3, MinSize: 0.2, MaxSize: 0.3, Overlap: 0.2}, 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg
			n := int(40 * tc.fps)
			fr := videoFrames(t, c, 11, tc.fps, n)
			side := float64(min(c.Width, c.Height))
			// Largest per-frame step of a centre: speed, plus a pixel of
			// rounding of the tight box on each side.
			maxStep := maxVideoSpeed*side/tc.fps*math.Sqrt2 + 2
			type pos struct{ x, y float64 }
			last := map[int]pos{}
			first := map[int]pos{}
			ids := map[int]int{} // frames each id is on screen
			movedIDs := map[int]bool{}
			moved, under := 0, 0
			for i, f := range fr {
				if len(f.Labels) > c.MaxObjects {
					t.Fatalf("frame %d: %d objects, max %d", i, len(f.Labels), c.MaxObjects)
				}
				if len(f.Labels) < c.MinObjects {
					under++
				}
				for j := range f.Labels {
					for k := j + 1; k < len(f.Labels); k++ {
						if o := iou(labelBox(f.Labels[j]), labelBox(f.Labels[k])); o > c.Overlap+0.05 {
							t.Errorf("frame %d: objects %d and %d overlap by %.2f IoU (max %.2f)", i, f.IDs[j], f.IDs[k], o, c.Overlap)
						}
					}
				}
				cur := map[int]pos{}
				for j, l := range f.Labels {
					if l.X-l.W/2 < -1e-6 || l.Y-l.H/2 < -1e-6 || l.X+l.W/2 > 1+1e-6 || l.Y+l.H/2 > 1+1e-6 {
						t.Errorf("frame %d: box %+v outside the frame", i, l)
					}
					id := f.IDs[j]
					p := pos{float64(l.X) * float64(c.Width), float64(l.Y) * float64(c.Height)}
					if _, dup := cur[id]; dup {
						t.Fatalf("frame %d: id %d twice", i, id)
					}
					cur[id] = p
					if q, ok := last[id]; ok {
						if d := math.Hypot(p.x-q.x, p.y-q.y); d > maxStep {
							t.Errorf("frame %d: object %d jumped %.1f px (max %.1f)", i, id, d, maxStep)
						}
					} else if i > 0 && ids[id] > 0 {
						t.Errorf("frame %d: object %d reappears", i, id)
					}
					if q, ok := first[id]; !ok {
						first[id] = p
					} else if q != p {
						movedIDs[id] = true
					}
					ids[id]++
				}
				last = cur
			}
			for range movedIDs {
				moved++
			}
			if moved < len(first)*3/4 {
				t.Errorf("only %d of %d objects moved", moved, len(first))
			}
			gone := 0
			for id := range ids {
				if _, ok := last[id]; !ok {
					gone++
				}
			}
			if len(ids) <= c.MaxObjects || gone == 0 {
				t.Errorf("%d objects in all, %d disappeared: want appearances and disappearances", len(ids), gone)
			}
			if under > n/10 {
				t.Errorf("%d of %d frames have fewer than %d objects", under, n, c.MinObjects)
			}
		})
	}
}

// TestVideoLabelsFollowShapes checks, on a one-object video, that each
// frame's label is the tight box of the drawn shape as it moves.
func TestVideoLabelsFollowShapes(t *testing.T) {
	cfg := Config{Width: 80, Height: 60, MinObjects: 1, MaxObjects: 1, MinSize: 0.3, MaxSize: 0.5}
	fr := videoFrames(t, cfg, 2, 10, 120)
	centres := map[[2]int]bool{}
	for i, f := range fr {
		if len(f.Labels) != 1 {
			continue // between a disappearance and the next appearance
		}
		l := f.Labels[0]
		w, h := float32(cfg.Width), float32(cfg.Height)
		x1, x2 := int(l.X*w-l.W*w/2+0.5), int(l.X*w+l.W*w/2+0.5)
		y1, y2 := int(l.Y*h-l.H*h/2+0.5), int(l.Y*h+l.H*h/2+0.5)
		centres[[2]int{x1 + x2, y1 + y2}] = true
		col := f.Image.RGBAAt((x1+x2)/2, y2-1) // in every shape: the base's middle
		var found [4]bool
		for y := y1; y < y2; y++ {
			for x := x1; x < x2; x++ {
				if f.Image.RGBAAt(x, y) != col {
					continue
				}
				found[0] = found[0] || x == x1
				found[1] = found[1] || x == x2-1
				found[2] = found[2] || y == y1
				found[3] = found[3] || y == y2-1
			}
		}
		if found != [4]bool{true, true, true, true} {
			t.Errorf("frame %d (class %d): box %d,%d..%d,%d not touched by the shape on every side: %v", i, l.Class, x1, y1, x2, y2, found)
		}
	}
	if len(centres) < 20 {
		t.Errorf("the box took only %d positions in 120 frames", len(centres))
	}
}

// TestVideoBackgroundDrifts: away from the objects the background changes
// little from frame to frame but noticeably over seconds.
func TestVideoBackgroundDrifts(t *testing.T) {
	cfg := Config{Width: 64, Height: 48, MinObjects: 0, MaxObjects: 0, MinSize: 0.2, MaxSize: 0.3}
	fr := videoFrames(t, cfg, 4, 15, 300)
	maxStep, total := 0, 0
	for i := 1; i < len(fr); i++ {
		a, b := fr[i-1].Image.Pix, fr[i].Image.Pix
		for k := range a {
			maxStep = max(maxStep, absInt(int(a[k])-int(b[k])))
		}
	}
	a, b := fr[0].Image.Pix, fr[len(fr)-1].Image.Pix
	for k := range a {
		total = max(total, absInt(int(a[k])-int(b[k])))
	}
	if maxStep > 4 {
		t.Errorf("background changes by up to %d levels between two frames, want <= 4", maxStep)
	}
	if total < 8 {
		t.Errorf("background changes by only %d levels in 20 s", total)
	}
}

// labelBox returns a label's x1y1x2y2 box in normalised units.
func labelBox(l Label) [4]float64 {
	return [4]float64{float64(l.X - l.W/2), float64(l.Y - l.H/2), float64(l.X + l.W/2), float64(l.Y + l.H/2)}
}

func absInt(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

func TestNewVideoErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		fps  float64
	}{
		{"zero fps", DefaultVideoConfig(64, 64), 0},
		{"negative fps", DefaultVideoConfig(64, 64), -5},
		{"NaN fps", DefaultVideoConfig(64, 64), math.NaN()},
		{"bad config", Config{Width: 4, Height: 64, MaxObjects: 1, MinSize: 0.1, MaxSize: 0.2}, 15},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewVideo(tc.cfg, 1, tc.fps); err == nil {
				t.Error("no error")
			}
		})
	}
}

func BenchmarkVideo720p(b *testing.B) {
	v, err := NewVideo(DefaultVideoConfig(1280, 720), 1, 15)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		v.Next()
	}
}
