package tiny

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Config selects what NewRandom builds.
type Config struct {
	Act   Act      // ActReLU (default) or ActLeaky
	NC    int      // number of classes; 0 means 80
	Names []string // class names, len NC, or nil
	Seed  uint64   // same seed, same weights
	Spec  *Spec    // topology; nil means YOLOv7Tiny()
}

// detectLogitStd is the target scale of the detect convs' weights: with
// inputs of unit second moment the raw logits spread by about this much
// around their bias.
const detectLogitStd = 1.0

// NewRandom returns a deploy-form model with seeded random parameters:
//
//   - every Conv block: Gaussian weights, each output filter rescaled to the
//     exact squared norm 2/(1+a²) (He / Kaiming for ReLU, a = LeakySlope for
//     leaky), so every layer preserves the second moment of its input and
//     activations stay O(1) through the network; bias 0;
//   - the detect convs: each filter rescaled to norm detectLogitStd, and
//     biases as the official Model._initialize_biases: box 0, objectness
//     log(8/(640/s)²) for stride s, classes log(0.6/(nc-0.99)).
//
// Each conv draws from its own PCG stream (seed, conv index), so the weights
// of a layer do not depend on the layers before it.
func NewRandom(cfg Config) (*Model, error) {
	act, err := ParseAct(string(cfg.Act))
	if err != nil {
		return nil, err
	}
	nc := cfg.NC
	if nc == 0 {
		nc = 80
	}
	spec := YOLOv7Tiny()
	if cfg.Spec != nil {
		spec = *cfg.Spec
	}
	m, err := NewModel(spec, act, nc)
	if err != nil {
		return nil, err
	}
	if cfg.Names != nil {
		if len(cfg.Names) != nc {
			return nil, fmt.Errorf("tiny: %d class names for %d classes", len(cfg.Names), nc)
		}
		m.Names = append([]string(nil), cfg.Names...)
	}
	gain := 2.0
	if act == ActLeaky {
		gain = 2 / (1 + LeakySlope*LeakySlope)
	}
	na := spec.NumAnchors()
	for i := range m.Convs {
		c := &m.Convs[i]
		rng := rand.New(rand.NewPCG(cfg.Seed, uint64(i)))
		norm := math.Sqrt(gain)
		if c.Level >= 0 {
			norm = detectLogitStd
		}
		fan := c.In * c.K * c.K
		for o := 0; o < c.Out; o++ {
			w := c.Weight[o*fan : (o+1)*fan]
			var ss float64
			for j := range w {
				v := rng.NormFloat64()
				w[j] = float32(v)
				ss += v * v
			}
			scale := norm / math.Sqrt(ss)
			for j := range w {
				w[j] = float32(float64(w[j]) * scale)
			}
		}
		if c.Level >= 0 {
			initDetectBias(c.Bias, na, nc, spec.Strides[c.Level])
		}
	}
	return m, nil
}

// initDetectBias sets a detect conv's bias (NA*(5+nc) values, channel
// a*(5+nc)+k) as the official _initialize_biases, starting from 0.
func initDetectBias(b []float32, na, nc, stride int) {
	obj := math.Log(8 / math.Pow(640/float64(stride), 2))
	cls := math.Log(0.6 / (float64(nc) - 0.99))
	no := 5 + nc
	for a := 0; a < na; a++ {
		for k := 0; k < no; k++ {
			switch {
			case k < 4:
				b[a*no+k] = 0
			case k == 4:
				b[a*no+k] = float32(obj)
			default:
				b[a*no+k] = float32(cls)
			}
		}
	}
}
