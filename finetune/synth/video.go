package synth

import (
	"fmt"
	"image"
	"image/color"
	"math"
	"math/rand/v2"
)

// DefaultVideoConfig returns moving scenes of width x height pixels with 1
// to 5 objects of 22% to 45% of the shorter side (about the sizes of
// DefaultConfig's objects once the frame is letterboxed to a square
// network input), placed with at most 0.1 IoU when they appear.
func DefaultVideoConfig(width, height int) Config {
	return Config{Width: width, Height: height, MinObjects: 1, MaxObjects: 5, MinSize: 0.22, MaxSize: 0.45, Overlap: 0.1}
}

// Frame is one frame of a Video: the scene (image and labels), the ids of
// the labelled objects and the frame's index.
type Frame struct {
	Scene
	// IDs holds, per label, the id of its object: an object keeps its id
	// from the frame it appears in to the frame it disappears in, and ids
	// are never reused.
	IDs []int
	// Index is the frame's number, from 0; its time is Index/fps seconds.
	Index int
}

// Video draws a moving scene, frame after frame: shapes drift at constant
// velocity and bounce off the borders and off each other (two boxes never
// overlap by more than the configured IoU, so occlusion stays partial); now and then one disappears (at the
// end of its lifetime) or a new one appears, keeping between MinObjects and
// MaxObjects on screen; the background (a static pattern with static
// noise) slowly changes colour and brightness. Frames are a pure function
// of the configuration, the seed and the frame rate.
type Video struct {
	cfg   Config
	fps   float64
	rng   *rand.Rand
	frame int
	objs  []mover
	next  int // id of the next object
	bg    videoBackground
}

// mover is one object of a Video.
type mover struct {
	id, class int
	x, y, s   float64 // top-left corner and side of its square box, pixels
	vx, vy    float64 // velocity, pixels per frame
	col       color.RGBA
	life      int // frames left on screen, this one included
}

// videoBackground is a Video's background: per pixel a weight between two
// colours and a noise offset, both static; the colours drift.
type videoBackground struct {
	weight []uint8 // 0: colour a, 255: colour b
	noise  []int8
	a, b   [3]float64 // base colours
	// Per channel of a and b: amplitude, angular frequency (radians per
	// second) and phase of the colour drift.
	amp, omega, phase [6]float64
	// Brightness oscillation: amplitude (fraction), angular frequency and
	// phase.
	light [3]float64
}

// Speeds of the objects, as fractions of the shorter side per second.
const (
	minVideoSpeed = 0.04
	maxVideoSpeed = 0.16
)

// Lifetimes of the objects, in seconds, and the mean time between
// appearances while fewer than MaxObjects are on screen.
const (
	minVideoLife     = 4.0
	maxVideoLife     = 16.0
	videoAppearEvery = 2.0
)

// NewVideo returns a video of cfg scenes from seed at fps frames per
// second (which sets the objects' speed per frame and the background's
// drift).
func NewVideo(cfg Config, seed uint64, fps float64) (*Video, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if !(fps > 0 && fps <= 1000) {
		return nil, fmt.Errorf("synth: video at %g fps (want 0 < fps <= 1000)", fps)
	}
	v := &Video{cfg: cfg, fps: fps, rng: rand.New(rand.NewPCG(seed, 0x7fd30))}
	v.bg = v.newBackground()
	n := cfg.MinObjects + v.rng.IntN(cfg.MaxObjects-cfg.MinObjects+1)
	for tries := 0; len(v.objs) < n && tries < 50*max(n, 1); tries++ {
		v.spawn()
	}
	return v, nil
}

// Config returns the video's scene configuration.
func (v *Video) Config() Config { return v.cfg }

// FPS returns the video's frame rate.
func (v *Video) FPS() float64 { return v.fps }

// Next draws the next frame into a new image.
func (v *Video) Next() Frame {
	if v.frame > 0 {
		v.step()
	}
	c := v.cfg
	img := image.NewRGBA(image.Rect(0, 0, c.Width, c.Height))
	v.bg.draw(img, float64(v.frame)/v.fps)
	f := Frame{Index: v.frame}
	w, h := float64(c.Width), float64(c.Height)
	for _, o := range v.objs {
		t := drawShape(img, o.class, [4]float64{o.x, o.y, o.x + o.s, o.y + o.s}, o.col)
		if t[2] <= t[0] || t[3] <= t[1] {
			continue
		}
		f.Labels = append(f.Labels, Label{Class: o.class,
			X: float32((t[0] + t[2]) / 2 / w), Y: float32((t[1] + t[3]) / 2 / h),
			W: float32((t[2] - t[0]) / w), H: float32((t[3] - t[1]) / h)})
		f.IDs = append(f.IDs, o.id)
	}
	f.Image = img
	v.frame++
	return f
}

// step advances the objects by one frame: they move and bounce, those at
// the end of their lifetime disappear, and new ones may appear.
func (v *Video) step() {
	c := v.cfg
	kept := v.objs[:0] // moved objects; v.objs[i+1:] have not moved yet
	for i, o := range v.objs {
		if o.life--; o.life <= 0 {
			continue
		}
		n := o
		n.x, n.vx = bounce(o.x+o.vx, o.vx, float64(c.Width)-o.s)
		n.y, n.vy = bounce(o.y+o.vy, o.vy, float64(c.Height)-o.s)
		if v.collides(n, kept) || v.collides(n, v.objs[i+1:]) {
			// Bounce off the other object: stay, and turn back.
			o.vx, o.vy = -o.vx, -o.vy
			n = o
		}
		kept = append(kept, n)
	}
	v.objs = kept
	switch {
	case len(v.objs) < c.MinObjects:
		v.spawn()
	case len(v.objs) < c.MaxObjects && v.rng.Float64() < 1/(videoAppearEvery*v.fps):
		v.spawn()
	}
}

// collides reports whether o's box overlaps one of others' by more than
// the configured IoU.
func (v *Video) collides(o mover, others []mover) bool {
	b := [4]float64{o.x, o.y, o.x + o.s, o.y + o.s}
	for _, p := range others {
		if iou(b, [4]float64{p.x, p.y, p.x + p.s, p.y + p.s}) > v.cfg.Overlap {
			return true
		}
	}
	return false
}

// bounce reflects position p (moving at velocity vel) into [0, hi].
func bounce(p, vel, hi float64) (float64, float64) {
	if hi <= 0 {
		return 0, vel
	}
	for p < 0 || p > hi {
		if p < 0 {
			p, vel = -p, -vel
		} else {
			p, vel = 2*hi-p, -vel
		}
	}
	return p, vel
}

// spawn tries once to place a new object that overlaps no other by more
// than cfg.Overlap IoU; it reports whether it did.
func (v *Video) spawn() bool {
	c := v.cfg
	side := float64(min(c.Width, c.Height))
	s := side * (c.MinSize + v.rng.Float64()*(c.MaxSize-c.MinSize))
	x := v.rng.Float64() * (float64(c.Width) - s)
	y := v.rng.Float64() * (float64(c.Height) - s)
	speed := side * (minVideoSpeed + v.rng.Float64()*(maxVideoSpeed-minVideoSpeed)) / v.fps
	dir := v.rng.Float64() * 2 * math.Pi
	life := int(math.Round(v.fps * (minVideoLife + v.rng.Float64()*(maxVideoLife-minVideoLife))))
	cls := v.rng.IntN(len(classNames))
	col := v.contrasting()
	o := mover{id: v.next, class: cls, x: x, y: y, s: s,
		vx: speed * math.Cos(dir), vy: speed * math.Sin(dir), col: col, life: max(1, life)}
	if v.collides(o, v.objs) {
		return false
	}
	v.objs = append(v.objs, o)
	v.next++
	return true
}

// contrasting returns a random colour far from both background colours.
func (v *Video) contrasting() color.RGBA {
	var best color.RGBA
	bestD := -1.0
	for i := 0; i < 8; i++ {
		c := color.RGBA{uint8(v.rng.IntN(256)), uint8(v.rng.IntN(256)), uint8(v.rng.IntN(256)), 255}
		d := math.Inf(1)
		for _, bg := range [][3]float64{v.bg.a, v.bg.b} {
			d = min(d, math.Abs(float64(c.R)-bg[0])+math.Abs(float64(c.G)-bg[1])+math.Abs(float64(c.B)-bg[2]))
		}
		if d > bestD {
			best, bestD = c, d
		}
	}
	return best
}

// newBackground draws the static pattern and noise and the colours'
// drift. Objects are coloured far from both base colours (contrasting).
func (v *Video) newBackground() videoBackground {
	c := v.cfg
	r := v.rng
	bg := videoBackground{weight: make([]uint8, c.Width*c.Height), noise: make([]int8, c.Width*c.Height)}
	rgb := func() [3]float64 {
		return [3]float64{float64(r.IntN(256)), float64(r.IntN(256)), float64(r.IntN(256))}
	}
	bg.a, bg.b = rgb(), rgb()
	for i := range bg.amp {
		bg.amp[i] = 10 + 25*r.Float64()
		bg.omega[i] = 2 * math.Pi / (15 + 30*r.Float64())
		bg.phase[i] = 2 * math.Pi * r.Float64()
	}
	bg.light = [3]float64{0.05 + 0.1*r.Float64(), 2 * math.Pi / (10 + 20*r.Float64()), 2 * math.Pi * r.Float64()}
	kind := r.IntN(4)
	period := float64(min(c.Width, c.Height)) * (0.05 + 0.2*r.Float64())
	angle := r.Float64() * math.Pi
	ca, sa := math.Cos(angle), math.Sin(angle)
	amp := 4 + 10*r.Float64()
	for y := 0; y < c.Height; y++ {
		for x := 0; x < c.Width; x++ {
			var t float64
			switch kind {
			case 0: // linear gradient
				t = (float64(x)*ca + float64(y)*sa) / float64(c.Width+c.Height)
				t = math.Abs(t)
			case 1: // soft stripes
				t = 0.2 + 0.2*math.Sin(2*math.Pi*(float64(x)*ca+float64(y)*sa)/period)
			case 2: // checker
				if (int(float64(x)/period)+int(float64(y)/period))%2 == 0 {
					t = 0.3
				}
			case 3: // radial vignette
				dx, dy := float64(x)/float64(c.Width)-0.5, float64(y)/float64(c.Height)-0.5
				t = min(1, 1.4*math.Sqrt(dx*dx+dy*dy))
			}
			i := y*c.Width + x
			bg.weight[i] = clamp8(255 * t)
			bg.noise[i] = int8(math.Round((r.Float64()*2 - 1) * amp))
		}
	}
	return bg
}

// draw fills img with the background at time t seconds.
func (bg *videoBackground) draw(img *image.RGBA, t float64) {
	var col [2][3]float64
	for k, base := range [2][3]float64{bg.a, bg.b} {
		for ch := range 3 {
			i := 3*k + ch
			col[k][ch] = base[ch] + bg.amp[i]*math.Sin(bg.omega[i]*t+bg.phase[i])
		}
	}
	light := 1 + bg.light[0]*math.Sin(bg.light[1]*t+bg.light[2])
	var lut [256][3]int16
	for w := range lut {
		f := float64(w) / 255
		for ch := range 3 {
			lut[w][ch] = int16(math.Round(light * (col[0][ch]*(1-f) + col[1][ch]*f)))
		}
	}
	b := img.Bounds()
	wd := b.Dx()
	for y := 0; y < b.Dy(); y++ {
		row := img.Pix[y*img.Stride : y*img.Stride+4*wd]
		for x := 0; x < wd; x++ {
			i := y*wd + x
			p := &lut[bg.weight[i]]
			n := int16(bg.noise[i])
			row[4*x] = clampInt8(p[0] + n)
			row[4*x+1] = clampInt8(p[1] + n)
			row[4*x+2] = clampInt8(p[2] + n)
			row[4*x+3] = 255
		}
	}
}

func clampInt8(v int16) uint8 {
	return uint8(max(0, min(255, v)))
}
