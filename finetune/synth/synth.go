// Package synth draws synthetic detection scenes: filled shapes (circles,
// squares, triangles) of random sizes and colours on varied backgrounds
// (flat, gradients, stripes, noise, clutter), with their YOLO labels. It
// feeds the training smoke tests, the demo model and the demo video, so
// a new user sees real detections without a dataset or a camera. Scenes
// are a pure function of the seed.
package synth

import (
	"fmt"
	"image"
	"image/color"
	"math"
	"math/rand/v2"
)

// Class names of the shapes, indexed by class id.
var classNames = [...]string{"circle", "square", "triangle"}

// ClassNames returns the names of the classes, indexed by class id.
func ClassNames() []string { return append([]string(nil), classNames[:]...) }

// Label is one object in YOLO form: class id, then centre and size
// normalised by the image width (X, W) and height (Y, H).
type Label struct {
	Class      int
	X, Y, W, H float32
}

// Scene is one drawn image and its labels.
type Scene struct {
	Image  *image.RGBA
	Labels []Label
}

// Config sets the scenes' size and content.
type Config struct {
	Width, Height int     // pixels
	MinObjects    int     // per scene (at least 0)
	MaxObjects    int     // per scene (at least MinObjects)
	MinSize       float64 // object size as a fraction of min(Width, Height)
	MaxSize       float64
	// Overlap is the largest IoU allowed between two objects' boxes (0:
	// objects never overlap).
	Overlap float64
}

// DefaultConfig returns scenes of size x size pixels with 1 to 4 objects
// of 12% to 40% of the side, overlapping at most 0.1 IoU.
func DefaultConfig(size int) Config {
	return Config{Width: size, Height: size, MinObjects: 1, MaxObjects: 4, MinSize: 0.12, MaxSize: 0.4, Overlap: 0.1}
}

// Validate reports the first unusable setting.
func (c Config) Validate() error {
	switch {
	case c.Width < 16 || c.Height < 16 || c.Width > 8192 || c.Height > 8192:
		return fmt.Errorf("synth: size %dx%d outside 16..8192", c.Width, c.Height)
	case c.MinObjects < 0 || c.MaxObjects < c.MinObjects || c.MaxObjects > 100:
		return fmt.Errorf("synth: objects %d..%d (want 0 <= min <= max <= 100)", c.MinObjects, c.MaxObjects)
	case !(c.MinSize > 0) || c.MaxSize < c.MinSize || c.MaxSize > 1:
		return fmt.Errorf("synth: object size %g..%g (want 0 < min <= max <= 1)", c.MinSize, c.MaxSize)
	case c.Overlap < 0 || c.Overlap > 1:
		return fmt.Errorf("synth: overlap %g outside [0, 1]", c.Overlap)
	}
	return nil
}

// Generator draws scenes from a seeded random stream.
type Generator struct {
	cfg Config
	rng *rand.Rand
}

// New returns a generator of cfg scenes from seed.
func New(cfg Config, seed uint64) (*Generator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Generator{cfg: cfg, rng: rand.New(rand.NewPCG(seed, 0x5e7e5))}, nil
}

// Scene draws the next scene.
func (g *Generator) Scene() Scene {
	c := g.cfg
	img := image.NewRGBA(image.Rect(0, 0, c.Width, c.Height))
	g.background(img)
	n := c.MinObjects + g.rng.IntN(c.MaxObjects-c.MinObjects+1)
	side := float64(min(c.Width, c.Height))
	var boxes [][4]float64
	var labels []Label
	for tries := 0; len(labels) < n && tries < 50*max(n, 1); tries++ {
		s := side * (c.MinSize + g.rng.Float64()*(c.MaxSize-c.MinSize))
		x0 := g.rng.Float64() * (float64(c.Width) - s)
		y0 := g.rng.Float64() * (float64(c.Height) - s)
		b := [4]float64{x0, y0, x0 + s, y0 + s}
		ok := true
		for _, o := range boxes {
			if iou(b, o) > c.Overlap {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		cls := g.rng.IntN(len(classNames))
		col := g.contrasting(img, b)
		tight := drawShape(img, cls, b, col)
		if tight[2] <= tight[0] || tight[3] <= tight[1] {
			continue
		}
		boxes = append(boxes, b)
		w, h := float64(c.Width), float64(c.Height)
		labels = append(labels, Label{Class: cls,
			X: float32((tight[0] + tight[2]) / 2 / w), Y: float32((tight[1] + tight[3]) / 2 / h),
			W: float32((tight[2] - tight[0]) / w), H: float32((tight[3] - tight[1]) / h)})
	}
	return Scene{Image: img, Labels: labels}
}

// background fills img with one of five kinds of backgrounds.
func (g *Generator) background(img *image.RGBA) {
	b := img.Bounds()
	c1, c2 := g.color(), g.color()
	kind := g.rng.IntN(5)
	period := 6 + g.rng.Float64()*30
	angle := g.rng.Float64() * math.Pi
	ca, sa := math.Cos(angle), math.Sin(angle)
	noise := 8 + g.rng.Float64()*30
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			var t float64
			switch kind {
			case 0: // flat
			case 1: // linear gradient
				t = (float64(x)*ca + float64(y)*sa) / float64(b.Dx()+b.Dy())
			case 2: // stripes
				if math.Mod(float64(x)*ca+float64(y)*sa+1e6, period) < period/2 {
					t = 1
				}
				t *= 0.35
			case 3: // checker
				if (int(float64(x)/period)+int(float64(y)/period))%2 == 0 {
					t = 0.3
				}
			}
			p := mix(c1, c2, t)
			if kind == 4 || kind == 0 { // noise
				d := (g.rng.Float64()*2 - 1) * noise
				p = color.RGBA{clamp8(float64(p.R) + d), clamp8(float64(p.G) + d), clamp8(float64(p.B) + d), 255}
			}
			img.SetRGBA(x, y, p)
		}
	}
	if kind == 4 { // clutter: faint thin lines that are not objects
		for i := 0; i < 6; i++ {
			col := mix(c1, g.color(), 0.3)
			x0, y0 := g.rng.Float64()*float64(b.Dx()), g.rng.Float64()*float64(b.Dy())
			l := float64(min(b.Dx(), b.Dy())) * (0.2 + 0.5*g.rng.Float64())
			a := g.rng.Float64() * 2 * math.Pi
			for s := 0.0; s < l; s += 0.5 {
				setClipped(img, int(x0+s*math.Cos(a)), int(y0+s*math.Sin(a)), col)
			}
		}
	}
}

// color returns a random opaque colour.
func (g *Generator) color() color.RGBA {
	return color.RGBA{uint8(g.rng.IntN(256)), uint8(g.rng.IntN(256)), uint8(g.rng.IntN(256)), 255}
}

// contrasting returns a random colour far enough from the mean of img
// under box b to be seen.
func (g *Generator) contrasting(img *image.RGBA, b [4]float64) color.RGBA {
	var sr, sg, sb, n float64
	for y := int(b[1]); y < int(b[3]); y += 2 {
		for x := int(b[0]); x < int(b[2]); x += 2 {
			p := img.RGBAAt(x, y)
			sr, sg, sb, n = sr+float64(p.R), sg+float64(p.G), sb+float64(p.B), n+1
		}
	}
	if n == 0 {
		n = 1
	}
	mr, mg, mb := sr/n, sg/n, sb/n
	best, bestD := g.color(), -1.0
	for i := 0; i < 8; i++ {
		c := g.color()
		d := math.Abs(float64(c.R)-mr) + math.Abs(float64(c.G)-mg) + math.Abs(float64(c.B)-mb)
		if d > bestD {
			best, bestD = c, d
		}
		if d > 200 {
			break
		}
	}
	return best
}

// drawShape fills shape cls inside the square box b and returns the tight
// pixel box of what it drew (x1, y1, x2, y2 with x2, y2 exclusive).
func drawShape(img *image.RGBA, cls int, b [4]float64, col color.RGBA) [4]float64 {
	r := img.Bounds()
	cx, cy, s := (b[0]+b[2])/2, (b[1]+b[3])/2, b[2]-b[0]
	tight := [4]float64{math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)}
	for y := max(r.Min.Y, int(b[1])); y < min(r.Max.Y, int(math.Ceil(b[3]))); y++ {
		for x := max(r.Min.X, int(b[0])); x < min(r.Max.X, int(math.Ceil(b[2]))); x++ {
			px, py := float64(x)+0.5, float64(y)+0.5
			var in bool
			switch cls {
			case 0: // circle
				dx, dy := px-cx, py-cy
				in = dx*dx+dy*dy <= s*s/4
			case 1: // square
				in = px >= b[0] && px <= b[2] && py >= b[1] && py <= b[3]
			default: // triangle, apex up
				t := (py - b[1]) / s // 0 at the apex row, 1 at the base
				in = t >= 0 && t <= 1 && math.Abs(px-cx) <= t*s/2
			}
			if !in {
				continue
			}
			img.SetRGBA(x, y, col)
			tight[0], tight[1] = min(tight[0], float64(x)), min(tight[1], float64(y))
			tight[2], tight[3] = max(tight[2], float64(x+1)), max(tight[3], float64(y+1))
		}
	}
	return tight
}

// iou is the IoU of two x1y1x2y2 boxes.
func iou(a, b [4]float64) float64 {
	iw := min(a[2], b[2]) - max(a[0], b[0])
	ih := min(a[3], b[3]) - max(a[1], b[1])
	if iw <= 0 || ih <= 0 {
		return 0
	}
	in := iw * ih
	return in / ((a[2]-a[0])*(a[3]-a[1]) + (b[2]-b[0])*(b[3]-b[1]) - in)
}

func mix(a, b color.RGBA, t float64) color.RGBA {
	f := func(x, y uint8) uint8 { return clamp8(float64(x)*(1-t) + float64(y)*t) }
	return color.RGBA{f(a.R, b.R), f(a.G, b.G), f(a.B, b.B), 255}
}

func clamp8(v float64) uint8 { return uint8(max(0, min(255, math.Round(v)))) }

func setClipped(img *image.RGBA, x, y int, c color.RGBA) {
	if (image.Point{x, y}).In(img.Bounds()) {
		img.SetRGBA(x, y, c)
	}
}

// Tensor writes img as a 3 x H x W float32 RGB tensor in [0, 1] (the
// network's input layout) into dst, which must hold 3*H*W values.
func Tensor(dst []float32, img *image.RGBA) error {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if len(dst) != 3*w*h {
		return fmt.Errorf("synth: tensor has %d values, want 3x%dx%d", len(dst), h, w)
	}
	plane := w * h
	for y := 0; y < h; y++ {
		row := img.Pix[y*img.Stride:]
		for x := 0; x < w; x++ {
			p := row[4*x:]
			i := y*w + x
			dst[i] = float32(p[0]) / 255
			dst[plane+i] = float32(p[1]) / 255
			dst[2*plane+i] = float32(p[2]) / 255
		}
	}
	return nil
}
