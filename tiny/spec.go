package tiny

import (
	"errors"
	"fmt"
	"math"
)

// Kind is the type of a layer in a Spec.
type Kind int

// Layer kinds of YOLOv7-Tiny.
const (
	// KindConv is the official Conv block: Conv2d (padding K/2, no bias in
	// the training form) -> BatchNorm2d -> activation. In the deploy form
	// BN is folded: conv with bias -> activation.
	KindConv Kind = iota
	// KindMaxPool is MaxPool2d(K, S, Pad): the official MP (k2 s2 p0) and SP
	// (k5/9/13 s1 p k/2).
	KindMaxPool
	// KindConcat concatenates its inputs along channels, in From order.
	KindConcat
	// KindUpsample is nearest-neighbour upsampling by 2.
	KindUpsample
	// KindDetect is IDetect: per input level ImplicitA (added to the input),
	// a 1x1 conv with bias to NA*(5+nc) channels, ImplicitM (multiplied with
	// the output). In the deploy form the implicits are folded into the conv.
	KindDetect
)

// String returns the kind's name as in the official yaml.
func (k Kind) String() string {
	switch k {
	case KindConv:
		return "Conv"
	case KindMaxPool:
		return "MaxPool"
	case KindConcat:
		return "Concat"
	case KindUpsample:
		return "Upsample"
	case KindDetect:
		return "IDetect"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Layer is one row of the official yaml: where its inputs come from, what it
// is and its arguments. From holds yaml indices: negative = relative to this
// layer (-1 is the previous layer), otherwise an absolute layer index.
type Layer struct {
	Kind Kind
	From []int
	Out  int // output channels (KindConv)
	K    int // kernel (KindConv, KindMaxPool)
	S    int // stride (KindConv, KindMaxPool)
	Pad  int // padding on every side (KindConv: K/2, KindMaxPool)
}

// Spec is a network topology: the layer table, and the detection head's
// anchors and strides. It is plain data, so scaled variants can be derived
// from it by rewriting the table.
type Spec struct {
	Name    string
	Layers  []Layer
	Anchors [][][2]float32 // per level, NA (w, h) pairs in input pixels
	Strides []int          // per level, input pixels per output cell
	Depth   float64        // depth factor of YOLOv7TinyScaled (1 for yolov7-tiny; 0: not recorded)
	Width   float64        // width factor of YOLOv7TinyScaled (1 for yolov7-tiny; 0: not recorded)
}

func conv(from, out, k, s int) Layer {
	return Layer{Kind: KindConv, From: []int{from}, Out: out, K: k, S: s, Pad: k / 2}
}
func mp(from int) Layer { return Layer{Kind: KindMaxPool, From: []int{from}, K: 2, S: 2} }
func sp(from, k int) Layer {
	return Layer{Kind: KindMaxPool, From: []int{from}, K: k, S: 1, Pad: k / 2}
}
func cat(from ...int) Layer    { return Layer{Kind: KindConcat, From: from} }
func up(from int) Layer        { return Layer{Kind: KindUpsample, From: []int{from}} }
func detect(from ...int) Layer { return Layer{Kind: KindDetect, From: from} }

// YOLOv7Tiny returns the topology of the official cfg/training/yolov7-tiny.yaml
// (depth and width 1.0): 77 layers and IDetect as layer 77. Each call returns
// a fresh copy.
func YOLOv7Tiny() Spec {
	return Spec{
		Name: "yolov7-tiny",
		Layers: []Layer{
			// backbone
			conv(-1, 32, 3, 2), // 0-P1/2
			conv(-1, 64, 3, 2), // 1-P2/4
			conv(-1, 32, 1, 1),
			conv(-2, 32, 1, 1),
			conv(-1, 32, 3, 1),
			conv(-1, 32, 3, 1),
			cat(-1, -2, -3, -4),
			conv(-1, 64, 1, 1), // 7
			mp(-1),             // 8-P3/8
			conv(-1, 64, 1, 1),
			conv(-2, 64, 1, 1),
			conv(-1, 64, 3, 1),
			conv(-1, 64, 3, 1),
			cat(-1, -2, -3, -4),
			conv(-1, 128, 1, 1), // 14
			mp(-1),              // 15-P4/16
			conv(-1, 128, 1, 1),
			conv(-2, 128, 1, 1),
			conv(-1, 128, 3, 1),
			conv(-1, 128, 3, 1),
			cat(-1, -2, -3, -4),
			conv(-1, 256, 1, 1), // 21
			mp(-1),              // 22-P5/32
			conv(-1, 256, 1, 1),
			conv(-2, 256, 1, 1),
			conv(-1, 256, 3, 1),
			conv(-1, 256, 3, 1),
			cat(-1, -2, -3, -4),
			conv(-1, 512, 1, 1), // 28
			// head: SPP-CSP
			conv(-1, 256, 1, 1), // 29
			conv(-2, 256, 1, 1), // 30
			sp(-1, 5),           // 31
			sp(-2, 9),           // 32
			sp(-3, 13),          // 33
			cat(-1, -2, -3, -4), // 34
			conv(-1, 256, 1, 1), // 35
			cat(-1, -7),         // 36
			conv(-1, 256, 1, 1), // 37
			// top-down to P4
			conv(-1, 128, 1, 1), // 38
			up(-1),              // 39
			conv(21, 128, 1, 1), // 40 route backbone P4
			cat(-1, -2),         // 41
			conv(-1, 64, 1, 1),
			conv(-2, 64, 1, 1),
			conv(-1, 64, 3, 1),
			conv(-1, 64, 3, 1),
			cat(-1, -2, -3, -4),
			conv(-1, 128, 1, 1), // 47
			// top-down to P3
			conv(-1, 64, 1, 1), // 48
			up(-1),             // 49
			conv(14, 64, 1, 1), // 50 route backbone P3
			cat(-1, -2),        // 51
			conv(-1, 32, 1, 1),
			conv(-2, 32, 1, 1),
			conv(-1, 32, 3, 1),
			conv(-1, 32, 3, 1),
			cat(-1, -2, -3, -4),
			conv(-1, 64, 1, 1), // 57
			// bottom-up to P4
			conv(-1, 128, 3, 2), // 58
			cat(-1, 47),         // 59
			conv(-1, 64, 1, 1),
			conv(-2, 64, 1, 1),
			conv(-1, 64, 3, 1),
			conv(-1, 64, 3, 1),
			cat(-1, -2, -3, -4),
			conv(-1, 128, 1, 1), // 65
			// bottom-up to P5
			conv(-1, 256, 3, 2), // 66
			cat(-1, 37),         // 67
			conv(-1, 128, 1, 1),
			conv(-2, 128, 1, 1),
			conv(-1, 128, 3, 1),
			conv(-1, 128, 3, 1),
			cat(-1, -2, -3, -4),
			conv(-1, 256, 1, 1), // 73
			// detect-head inputs (RepConv in the training form)
			conv(57, 128, 3, 1), // 74
			conv(65, 256, 3, 1), // 75
			conv(73, 512, 3, 1), // 76
			detect(74, 75, 76),  // 77
		},
		Anchors: [][][2]float32{
			{{10, 13}, {16, 30}, {33, 23}},      // P3/8
			{{30, 61}, {62, 45}, {59, 119}},     // P4/16
			{{116, 90}, {156, 198}, {373, 326}}, // P5/32
		},
		Strides: []int{8, 16, 32},
		Depth:   1,
		Width:   1,
	}
}

// NumAnchors is the number of anchors per level (3 for yolov7-tiny).
func (s *Spec) NumAnchors() int {
	if len(s.Anchors) == 0 {
		return 0
	}
	return len(s.Anchors[0])
}

// LayerShape is what Resolve computes for a layer: its inputs as absolute
// layer indices, and its output channels and stride (input pixels per
// output cell). For the detect layer OutC and Stride are those of the first
// level.
type LayerShape struct {
	From   []int
	InC    int // sum of the input channels
	OutC   int
	Stride int
}

// ConvShape is one convolution of the network in the order of the official
// state_dict: the 55 Conv blocks in layer order, then the 3 detect convs.
type ConvShape struct {
	Name          string // state_dict prefix: "model.7.conv", "model.77.m.0"
	Layer         int    // index in Spec.Layers
	Level         int    // detect level (0..2) of a detect conv, -1 otherwise
	Out, In, K, S int
	Pad           int
}

// WeightLen is the number of weights, Out*In*K*K.
func (c ConvShape) WeightLen() int { return c.Out * c.In * c.K * c.K }

// Resolve checks the table and computes every layer's input indices,
// channels and stride for an inC-channel input and nc classes.
func (s *Spec) Resolve(inC, nc int) ([]LayerShape, error) {
	if inC <= 0 || nc <= 0 {
		return nil, fmt.Errorf("tiny: spec %s: bad input channels %d or classes %d", s.Name, inC, nc)
	}
	if len(s.Layers) == 0 {
		return nil, fmt.Errorf("tiny: spec %s: no layers", s.Name)
	}
	na := s.NumAnchors()
	if na == 0 || len(s.Strides) != len(s.Anchors) {
		return nil, fmt.Errorf("tiny: spec %s: %d anchor levels, %d strides", s.Name, len(s.Anchors), len(s.Strides))
	}
	shapes := make([]LayerShape, len(s.Layers))
	for i, l := range s.Layers {
		sh := &shapes[i]
		if len(l.From) == 0 {
			return nil, fmt.Errorf("tiny: spec %s: layer %d (%v) has no input", s.Name, i, l.Kind)
		}
		for _, f := range l.From {
			j := f
			if f < 0 {
				j = i + f
			}
			if j >= i || (j < 0 && !(i == 0 && f == -1)) {
				return nil, fmt.Errorf("tiny: spec %s: layer %d (%v) input %d out of range", s.Name, i, l.Kind, f)
			}
			sh.From = append(sh.From, j)
		}
		in := func(k int) (c, stride int) {
			if sh.From[k] < 0 {
				return inC, 1
			}
			p := shapes[sh.From[k]]
			return p.OutC, p.Stride
		}
		c0, st0 := in(0)
		switch l.Kind {
		case KindConv, KindMaxPool:
			if len(l.From) != 1 || l.K <= 0 || l.S <= 0 || l.Pad < 0 || l.Pad > l.K/2 {
				return nil, fmt.Errorf("tiny: spec %s: layer %d (%v): bad arguments %+v", s.Name, i, l.Kind, l)
			}
			sh.InC, sh.OutC, sh.Stride = c0, c0, st0*l.S
			if l.Kind == KindConv {
				if l.Out <= 0 {
					return nil, fmt.Errorf("tiny: spec %s: layer %d: %d output channels", s.Name, i, l.Out)
				}
				sh.OutC = l.Out
			}
		case KindUpsample:
			if len(l.From) != 1 || st0%2 != 0 {
				return nil, fmt.Errorf("tiny: spec %s: layer %d: upsample of stride %d", s.Name, i, st0)
			}
			sh.InC, sh.OutC, sh.Stride = c0, c0, st0/2
		case KindConcat:
			for k := range l.From {
				c, st := in(k)
				if st != st0 {
					return nil, fmt.Errorf("tiny: spec %s: layer %d: concat of strides %d and %d", s.Name, i, st0, st)
				}
				sh.InC += c
			}
			sh.OutC, sh.Stride = sh.InC, st0
		case KindDetect:
			if i != len(s.Layers)-1 || len(l.From) != len(s.Strides) {
				return nil, fmt.Errorf("tiny: spec %s: detect must be the last layer with one input per level", s.Name)
			}
			for k := range l.From {
				c, st := in(k)
				if st != s.Strides[k] {
					return nil, fmt.Errorf("tiny: spec %s: detect level %d has stride %d, want %d", s.Name, k, st, s.Strides[k])
				}
				sh.InC += c
			}
			sh.OutC, sh.Stride = na*(5+nc), st0
		default:
			return nil, fmt.Errorf("tiny: spec %s: layer %d: unknown kind %v", s.Name, i, l.Kind)
		}
	}
	if s.Layers[len(s.Layers)-1].Kind != KindDetect {
		return nil, errors.New("tiny: spec " + s.Name + ": last layer is not a detect layer")
	}
	return shapes, nil
}

// ConvShapes lists every convolution in state_dict order (see ConvShape).
func (s *Spec) ConvShapes(inC, nc int) ([]ConvShape, error) {
	shapes, err := s.Resolve(inC, nc)
	if err != nil {
		return nil, err
	}
	var cs []ConvShape
	for i, l := range s.Layers {
		switch l.Kind {
		case KindConv:
			cs = append(cs, ConvShape{
				Name: fmt.Sprintf("model.%d.conv", i), Layer: i, Level: -1,
				Out: l.Out, In: shapes[i].InC, K: l.K, S: l.S, Pad: l.Pad,
			})
		case KindDetect:
			for k, f := range shapes[i].From {
				cs = append(cs, ConvShape{
					Name: fmt.Sprintf("model.%d.m.%d", i, k), Layer: i, Level: k,
					Out: shapes[i].OutC, In: shapes[f].OutC, K: 1, S: 1,
				})
			}
		}
	}
	return cs, nil
}

// elanDepth is the number of stacked 3x3 convs in a yolov7-tiny ELAN block.
const elanDepth = 2

// specBuilder appends layers to a table and remembers the absolute index of
// named layers, so a scaled table gets its From indices right.
type specBuilder struct {
	layers []Layer
	width  float64
	n      int // stacked 3x3 convs per ELAN block
}

// ch scales a channel count by the width factor as the official
// make_divisible: ceil(c*width/8)*8, at least 8.
func (b *specBuilder) ch(c float64) int {
	return max(8, int(math.Ceil(c*b.width/8-1e-9))*8)
}

// add appends l and returns its index.
func (b *specBuilder) add(l Layer) int {
	b.layers = append(b.layers, l)
	return len(b.layers) - 1
}

// elan appends an ELAN block reading the previous layer: two 1x1 branches
// of c channels, b.n stacked 3x3 convs, the concat of the last b.n+2
// outputs, and the transition 1x1 conv whose unscaled width out is scaled
// by the width factor and by the concat's width ratio (b.n+2)/4. It
// returns the index of the transition conv.
func (b *specBuilder) elan(c, out int) int {
	cc := b.ch(float64(c))
	b.add(conv(-1, cc, 1, 1))
	b.add(conv(-2, cc, 1, 1))
	from := []int{-1, -2}
	for i := 0; i < b.n; i++ {
		b.add(conv(-1, cc, 3, 1))
		from = append(from, -3-i)
	}
	b.add(cat(from...))
	ratio := float64(b.n+elanDepth) / float64(2+elanDepth)
	return b.add(conv(-1, b.ch(float64(out)*ratio), 1, 1))
}

// YOLOv7TinyScaled returns yolov7-tiny scaled as the YOLOv7 paper scales
// concatenation-based models: the depth factor sets the number of stacked
// 3x3 convs in every ELAN block to round(2*depth) (at least 1, Python's
// round half to even), and the transition 1x1 conv after each ELAN concat
// changes its width by the ratio the concat's width changed; the width
// factor scales every channel count (ceil to a multiple of 8, at least 8).
// YOLOv7TinyScaled(1, 1) equals YOLOv7Tiny(). The table is generated from
// a block description, so concat and detect From indices follow the new
// layer count. The name is "yolov7-tiny" for (1, 1), else
// "yolov7-tiny-d<depth>-w<width>".
func YOLOv7TinyScaled(depth, width float64) (Spec, error) {
	if !(depth > 0 && depth <= 8) || !(width > 0 && width <= 8) {
		return Spec{}, fmt.Errorf("tiny: scaled spec: depth %v and width %v must be in (0, 8]", depth, width)
	}
	b := &specBuilder{width: width, n: max(1, int(math.RoundToEven(elanDepth*depth)))}
	c := func(x int) int { return b.ch(float64(x)) }
	// backbone
	b.add(conv(-1, c(32), 3, 2))
	b.add(conv(-1, c(64), 3, 2))
	b.elan(32, 64)
	b.add(mp(-1))
	p3 := b.elan(64, 128)
	b.add(mp(-1))
	p4 := b.elan(128, 256)
	b.add(mp(-1))
	b.elan(256, 512)
	// head: SPP-CSP
	b.add(conv(-1, c(256), 1, 1))
	b.add(conv(-2, c(256), 1, 1))
	b.add(sp(-1, 5))
	b.add(sp(-2, 9))
	b.add(sp(-3, 13))
	b.add(cat(-1, -2, -3, -4))
	b.add(conv(-1, c(256), 1, 1))
	b.add(cat(-1, -7))
	sppcsp := b.add(conv(-1, c(256), 1, 1))
	// top-down to P4
	b.add(conv(-1, c(128), 1, 1))
	b.add(up(-1))
	b.add(conv(p4, c(128), 1, 1))
	b.add(cat(-1, -2))
	td4 := b.elan(64, 128)
	// top-down to P3
	b.add(conv(-1, c(64), 1, 1))
	b.add(up(-1))
	b.add(conv(p3, c(64), 1, 1))
	b.add(cat(-1, -2))
	td3 := b.elan(32, 64)
	// bottom-up to P4, P5
	b.add(conv(-1, c(128), 3, 2))
	b.add(cat(-1, td4))
	bu4 := b.elan(64, 128)
	b.add(conv(-1, c(256), 3, 2))
	b.add(cat(-1, sppcsp))
	bu5 := b.elan(128, 256)
	// detect-head inputs (RepConv in the training form)
	h3 := b.add(conv(td3, c(128), 3, 1))
	h4 := b.add(conv(bu4, c(256), 3, 1))
	h5 := b.add(conv(bu5, c(512), 3, 1))
	b.add(detect(h3, h4, h5))
	base := YOLOv7Tiny()
	s := Spec{Name: base.Name, Layers: b.layers, Anchors: base.Anchors, Strides: base.Strides, Depth: depth, Width: width}
	if depth != 1 || width != 1 {
		s.Name = fmt.Sprintf("%s-d%g-w%g", base.Name, depth, width)
	}
	if _, err := s.Resolve(3, 1); err != nil {
		return Spec{}, fmt.Errorf("tiny: scaled spec: %w", err)
	}
	return s, nil
}

// AuxSources returns the layers the auxiliary head reads (the top-down
// neck outputs P3, P4 and the SPP-CSP output P5: 57, 47 and 37 in
// yolov7-tiny) and their unscaled aux conv widths 160, 320, 640, found
// from the detect layer's inputs: P3's source is the lead P3 source, P4's
// and P5's are the second inputs of the bottom-up concats that precede
// the lead P4 and P5 sources' ELAN blocks.
func (s *Spec) AuxSources() ([3]int, error) {
	var src [3]int
	n := len(s.Layers)
	if n == 0 || s.Layers[n-1].Kind != KindDetect || len(s.Layers[n-1].From) != 3 {
		return src, fmt.Errorf("tiny: spec %s: no 3-level detect layer", s.Name)
	}
	abs := func(i, f int) int {
		if f < 0 {
			return i + f
		}
		return f
	}
	det := s.Layers[n-1].From
	src[0] = abs(n-1, s.Layers[det[0]].From[0])
	for lvl := 1; lvl < 3; lvl++ {
		// walk back from the lead source to the nearest two-input concat
		// whose second input is absolute (cat(-1, td)).
		i := abs(det[lvl], s.Layers[det[lvl]].From[0])
		for ; i >= 0; i-- {
			l := s.Layers[i]
			if l.Kind == KindConcat && len(l.From) == 2 && l.From[1] >= 0 {
				break
			}
		}
		if i < 0 {
			return src, fmt.Errorf("tiny: spec %s: no bottom-up concat before level %d", s.Name, lvl)
		}
		src[lvl] = s.Layers[i].From[1]
	}
	return src, nil
}

// SpecByName returns the spec a Spec.Name stands for: "yolov7-tiny" or a
// YOLOv7TinyScaled name "yolov7-tiny-d<depth>-w<width>" (the name ONNX
// exports record in their "spec" metadata).
func SpecByName(name string) (Spec, error) {
	base := YOLOv7Tiny()
	if name == base.Name {
		return base, nil
	}
	var d, w float64
	if n, err := fmt.Sscanf(name, base.Name+"-d%g-w%g", &d, &w); err != nil || n != 2 {
		return Spec{}, fmt.Errorf("tiny: unknown spec name %q", name)
	}
	s, err := YOLOv7TinyScaled(d, w)
	if err != nil {
		return Spec{}, err
	}
	if s.Name != name {
		return Spec{}, fmt.Errorf("tiny: spec name %q is not canonical (%q)", name, s.Name)
	}
	return s, nil
}
