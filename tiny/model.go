package tiny

import (
	"fmt"
	"math"
)

// Act is the activation after every Conv block.
type Act string

// Activations. The detect convs have none.
const (
	ActReLU  Act = "relu"  // the default edge model: fused into the conv by cuDNN/TensorRT
	ActLeaky Act = "leaky" // LeakyReLU(LeakySlope), the official weights
)

// LeakySlope is the negative slope of ActLeaky.
const LeakySlope = 0.1

// ParseAct parses "relu" or "leaky"; "" is ActReLU.
func ParseAct(s string) (Act, error) {
	switch Act(s) {
	case "", ActReLU:
		return ActReLU, nil
	case ActLeaky:
		return ActLeaky, nil
	}
	return "", fmt.Errorf("tiny: unknown activation %q (want relu or leaky)", s)
}

// Conv is one deploy-form convolution: BatchNorm (and for the detect convs
// ImplicitA/ImplicitM) already folded into Weight and Bias.
type Conv struct {
	ConvShape
	Weight []float32 // Out x In x K x K, C order
	Bias   []float32 // Out
}

// Model is the deploy form of a network: the spec, the activation, the
// classes and one Conv per convolution in ConvShapes order.
type Model struct {
	Spec  Spec
	Act   Act
	NC    int
	Names []string // class names, len NC (may be nil)
	Convs []Conv
}

// NewModel allocates a deploy-form model with zero parameters for a
// 3-channel input.
func NewModel(spec Spec, act Act, nc int) (*Model, error) {
	if act != ActReLU && act != ActLeaky {
		return nil, fmt.Errorf("tiny: unknown activation %q", act)
	}
	shapes, err := spec.ConvShapes(3, nc)
	if err != nil {
		return nil, err
	}
	m := &Model{Spec: spec, Act: act, NC: nc, Convs: make([]Conv, len(shapes))}
	for i, s := range shapes {
		m.Convs[i] = Conv{ConvShape: s, Weight: make([]float32, s.WeightLen()), Bias: make([]float32, s.Out)}
	}
	return m, nil
}

// Validate checks that the parameters match the spec and are finite.
func (m *Model) Validate() error {
	if m.Act != ActReLU && m.Act != ActLeaky {
		return fmt.Errorf("tiny: model: unknown activation %q", m.Act)
	}
	if m.Names != nil && len(m.Names) != m.NC {
		return fmt.Errorf("tiny: model: %d class names for %d classes", len(m.Names), m.NC)
	}
	shapes, err := m.Spec.ConvShapes(3, m.NC)
	if err != nil {
		return err
	}
	if len(shapes) != len(m.Convs) {
		return fmt.Errorf("tiny: model: %d convs, spec has %d", len(m.Convs), len(shapes))
	}
	for i, s := range shapes {
		c := &m.Convs[i]
		if c.ConvShape.Name != s.Name || c.Out != s.Out || c.In != s.In || c.K != s.K || c.S != s.S || c.Pad != s.Pad {
			return fmt.Errorf("tiny: model: conv %d is %+v, spec wants %+v", i, c.ConvShape, s)
		}
		if len(c.Weight) != s.WeightLen() || len(c.Bias) != s.Out {
			return fmt.Errorf("tiny: model: %s has %d weights and %d biases, want %d and %d",
				s.Name, len(c.Weight), len(c.Bias), s.WeightLen(), s.Out)
		}
		for _, v := range c.Weight {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("tiny: model: %s has a non-finite weight", s.Name)
			}
		}
		for _, v := range c.Bias {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("tiny: model: %s has a non-finite bias", s.Name)
			}
		}
	}
	return nil
}

// FoldImplicit folds IDetect's ImplicitA (ia, one value per input channel,
// added to the conv input) and ImplicitM (im, one per output channel,
// multiplying the conv output) into a 1x1 detect conv, as the official
// IDetect.fuse: b' = (b + W.ia) * im, W' = W * im.
func (c *Conv) FoldImplicit(ia, im []float32) error {
	if c.K != 1 || len(ia) != c.In || len(im) != c.Out {
		return fmt.Errorf("tiny: fold implicit into %s (%dx%dx%dx%d): ia has %d values, im %d",
			c.ConvShape.Name, c.Out, c.In, c.K, c.K, len(ia), len(im))
	}
	for o := 0; o < c.Out; o++ {
		w := c.Weight[o*c.In : (o+1)*c.In]
		var dot float64
		for i, v := range w {
			dot += float64(v) * float64(ia[i])
		}
		c.Bias[o] = float32((float64(c.Bias[o]) + dot) * float64(im[o]))
		for i := range w {
			w[i] *= im[o]
		}
	}
	return nil
}
