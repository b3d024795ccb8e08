package tiny

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
)

// TrainConv is one Conv block in the training form: a convolution without
// bias, BatchNorm (eps BNEps) and the model's activation. For the layers
// feeding the detect head (74-76 in yolov7-tiny) Point is the RepConv 1x1
// branch (1x1 conv + BN, no identity since In != Out): the block computes
// act(BN(conv3x3(x)) + PointBN(conv1x1(x))).
type TrainConv struct {
	ConvShape
	Weight []float32 // Out x In x K x K, C order
	BN     BatchNorm // Out values each
	Point  *TrainPoint
}

// TrainPoint is the 1x1 branch of a RepConv: Weight Out x In x 1 x 1 and
// its BatchNorm.
type TrainPoint struct {
	Weight []float32
	BN     BatchNorm
}

// TrainHead is one detect conv of the training form: a 1x1 conv with bias
// to NA*(5+nc) channels. For the lead head (IDetect) IA (In values) is
// added to the input and IM (Out values) multiplies the output; the aux
// convs of IAuxDetect (m2) have no implicits (IA, IM nil).
type TrainHead struct {
	ConvShape
	Weight []float32 // Out x In x 1 x 1
	Bias   []float32 // Out
	IA, IM []float32 // In and Out values, or nil
}

// TrainModel is the training form of a network (yolov7-tiny-aux.yaml for
// the unscaled spec): every Conv block with its BatchNorm, RepConv lead
// convs, IDetect with implicits and the auxiliary head (3x3 Conv blocks on
// the top-down neck outputs, then IAuxDetect's plain 1x1 convs). Deploy
// folds it into a Model; UnfoldDeploy goes the other way.
type TrainModel struct {
	Spec  Spec
	Act   Act
	NC    int
	Names []string
	Convs []TrainConv // one per Conv block, in ConvShapes order
	Heads []TrainHead // lead detect convs, one per level
	// AuxSrc are the layers the aux convs read (57, 47, 37 in yolov7-tiny).
	AuxSrc   [3]int
	AuxConvs []TrainConv // 3x3 s1, widths 160/320/640 scaled by Spec.Width
	AuxHeads []TrainHead // IAuxDetect m2: 1x1 with bias, no implicits
}

// identityBN returns a BatchNorm of c channels that maps x to x + beta up
// to rounding: gamma 1, mean 0, var 1 - eps.
func identityBN(c int, beta []float32) BatchNorm {
	bn := BatchNorm{Weight: make([]float32, c), Bias: make([]float32, c), Mean: make([]float32, c), Var: make([]float32, c), Eps: BNEps}
	for i := range bn.Weight {
		bn.Weight[i], bn.Var[i] = 1, 1-BNEps
	}
	copy(bn.Bias, beta)
	return bn
}

// ones returns n ones.
func ones(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = 1
	}
	return v
}

// isRepConv reports whether Conv layer l feeds the detect layer.
func (s *Spec) isRepConv(l int) bool {
	det := s.Layers[len(s.Layers)-1]
	for _, f := range det.From {
		if f == l || (f < 0 && len(s.Layers)-1+f == l) {
			return true
		}
	}
	return false
}

// newTrainShell allocates a training-form model with zero weights, BN
// identity transforms, zero 1x1 RepConv branches (BN gamma 0), implicits
// ia 0 / im 1, and the aux head shapes.
func newTrainShell(spec Spec, act Act, nc int) (*TrainModel, error) {
	shapes, err := spec.ConvShapes(3, nc)
	if err != nil {
		return nil, fmt.Errorf("tiny: train model: %w", err)
	}
	src, err := spec.AuxSources()
	if err != nil {
		return nil, fmt.Errorf("tiny: train model: %w", err)
	}
	ls, err := spec.Resolve(3, nc)
	if err != nil {
		return nil, fmt.Errorf("tiny: train model: %w", err)
	}
	tm := &TrainModel{Spec: spec, Act: act, NC: nc, AuxSrc: src}
	for _, s := range shapes {
		if s.Level >= 0 {
			tm.Heads = append(tm.Heads, TrainHead{ConvShape: s, Weight: make([]float32, s.WeightLen()),
				Bias: make([]float32, s.Out), IA: make([]float32, s.In), IM: ones(s.Out)})
			continue
		}
		c := TrainConv{ConvShape: s, Weight: make([]float32, s.WeightLen()), BN: identityBN(s.Out, nil)}
		if spec.isRepConv(s.Layer) {
			pbn := identityBN(s.Out, nil)
			clear(pbn.Weight)
			c.Point = &TrainPoint{Weight: make([]float32, s.Out*s.In), BN: pbn}
		}
		tm.Convs = append(tm.Convs, c)
	}
	n := len(spec.Layers)
	na, no := spec.NumAnchors(), 5+nc
	auxWidths := [3]int{160, 320, 640} // unscaled: 1.25x the lead widths
	for k, l := range src {
		w := max(8, int(math.Ceil(float64(auxWidths[k])*spec.Width/8-1e-9))*8)
		s := ConvShape{Name: fmt.Sprintf("model.%d.conv", n-1+k), Layer: n - 1 + k, Level: -1,
			Out: w, In: ls[l].OutC, K: 3, S: 1, Pad: 1}
		tm.AuxConvs = append(tm.AuxConvs, TrainConv{ConvShape: s, Weight: make([]float32, s.WeightLen()), BN: identityBN(w, nil)})
		h := ConvShape{Name: fmt.Sprintf("model.%d.m2.%d", n+2, k), Layer: n + 2, Level: k, Out: na * no, In: w, K: 1, S: 1}
		tm.AuxHeads = append(tm.AuxHeads, TrainHead{ConvShape: h, Weight: make([]float32, h.WeightLen()), Bias: make([]float32, h.Out)})
	}
	return tm, nil
}

// randFilters fills w (out filters of fan values) with Gaussian filters of
// squared norm norm² each, from the PCG stream (seed, stream).
func randFilters(w []float32, out int, norm float64, seed, stream uint64) {
	rng := rand.New(rand.NewPCG(seed, stream))
	fan := len(w) / out
	for o := 0; o < out; o++ {
		f := w[o*fan : (o+1)*fan]
		var ss float64
		for j := range f {
			v := rng.NormFloat64()
			f[j] = float32(v)
			ss += v * v
		}
		for j := range f {
			f[j] = float32(float64(f[j]) * norm / math.Sqrt(ss))
		}
	}
}

// NewTrainModel returns a seeded training-form model for a 3-channel
// input: the Conv block and lead detect weights as NewRandom's (same seed),
// BatchNorm at its initial state (gamma 1, beta 0, mean 0, var 1, eps
// 1e-3), RepConv 1x1 branches and aux convs with He-scaled Gaussian
// weights, the implicits as the official init (ia ~ N(0, 0.02), im ~
// N(1, 0.02)) and the aux detect biases as the lead's.
func NewTrainModel(spec Spec, act Act, nc int, seed uint64) (*TrainModel, error) {
	dm, err := NewRandom(Config{Act: act, NC: nc, Seed: seed, Spec: &spec})
	if err != nil {
		return nil, fmt.Errorf("tiny: new train model: %w", err)
	}
	tm := UnfoldDeploy(dm)
	gain := 2.0
	if tm.Act == ActLeaky {
		gain = 2 / (1 + LeakySlope*LeakySlope)
	}
	stream := uint64(1 << 32)
	for i := range tm.Convs {
		c := &tm.Convs[i]
		c.BN = identityBN(c.Out, nil)
		for o := range c.BN.Var {
			c.BN.Var[o] = 1
		}
		if c.Point != nil {
			randFilters(c.Point.Weight, c.Out, math.Sqrt(gain), seed, stream)
			stream++
			c.Point.BN = cloneBN(c.BN)
		}
	}
	for i := range tm.Heads {
		h := &tm.Heads[i]
		rng := rand.New(rand.NewPCG(seed, stream))
		stream++
		for j := range h.IA {
			h.IA[j] = float32(0.02 * rng.NormFloat64())
		}
		for j := range h.IM {
			h.IM[j] = float32(1 + 0.02*rng.NormFloat64())
		}
	}
	for k := range tm.AuxConvs {
		randFilters(tm.AuxConvs[k].Weight, tm.AuxConvs[k].Out, math.Sqrt(gain), seed, stream)
		stream++
		h := &tm.AuxHeads[k]
		randFilters(h.Weight, h.Out, detectLogitStd, seed, stream)
		stream++
		initDetectBias(h.Bias, spec.NumAnchors(), nc, spec.Strides[k])
	}
	return tm, nil
}

// UnfoldDeploy returns the training form whose forward equals m's: each
// Conv block's weight is the deploy weight and its BN an identity
// transform with beta = the deploy bias; each RepConv's 3x3 branch holds
// the deploy weights and its 1x1 branch is zero (weight 0, BN gamma 0);
// detect convs keep their folded weight and bias with ia = 0, im = 1; the
// aux head is freshly initialised (seed 0 streams), as the start of a
// fine-tune. The weights are copied.
func UnfoldDeploy(m *Model) *TrainModel {
	tm, err := newTrainShell(m.Spec, m.Act, m.NC)
	if err != nil { // m passed Validate when it was built; a broken m is a bug
		panic(fmt.Sprintf("tiny: unfold deploy: %v", err))
	}
	tm.Names = append([]string(nil), m.Names...)
	ci, hi := 0, 0
	for _, c := range m.Convs {
		if c.Level >= 0 {
			h := &tm.Heads[hi]
			copy(h.Weight, c.Weight)
			copy(h.Bias, c.Bias)
			hi++
			continue
		}
		t := &tm.Convs[ci]
		copy(t.Weight, c.Weight)
		copy(t.BN.Bias, c.Bias)
		ci++
	}
	gain := 2.0
	if tm.Act == ActLeaky {
		gain = 2 / (1 + LeakySlope*LeakySlope)
	}
	for k := range tm.AuxConvs {
		randFilters(tm.AuxConvs[k].Weight, tm.AuxConvs[k].Out, math.Sqrt(gain), 0, uint64(2<<32+2*k))
		h := &tm.AuxHeads[k]
		randFilters(h.Weight, h.Out, detectLogitStd, 0, uint64(2<<32+2*k+1))
		initDetectBias(h.Bias, m.Spec.NumAnchors(), m.NC, m.Spec.Strides[k])
	}
	return tm
}

// Deploy folds the training form into a deploy Model: every BN into its
// conv (FuseConvBN), each RepConv into one 3x3 conv (RepConv.Fuse), the
// implicits into the lead detect convs (FuseImplicit); the aux head is
// dropped. The BatchNorms use their running statistics.
func (tm *TrainModel) Deploy() (*Model, error) {
	m, err := NewModel(tm.Spec, tm.Act, tm.NC)
	if err != nil {
		return nil, fmt.Errorf("tiny: deploy: %w", err)
	}
	if tm.Names != nil {
		m.Names = append([]string(nil), tm.Names...)
	}
	ci, hi := 0, 0
	for i := range m.Convs {
		c := &m.Convs[i]
		shape := [4]int{c.Out, c.In, c.K, c.K}
		var w, b []float32
		if c.Level >= 0 {
			if hi >= len(tm.Heads) {
				return nil, fmt.Errorf("tiny: deploy: %d detect convs, want more", len(tm.Heads))
			}
			h := tm.Heads[hi]
			hi++
			w, b, err = FuseImplicit(h.Weight, shape, h.Bias, h.IA, h.IM)
		} else {
			if ci >= len(tm.Convs) {
				return nil, fmt.Errorf("tiny: deploy: %d conv blocks, want more", len(tm.Convs))
			}
			t := tm.Convs[ci]
			ci++
			if t.Point != nil {
				w, b, err = RepConv{Out: c.Out, In: c.In, Dense: t.Weight, DenseBN: t.BN, Point: t.Point.Weight, PointBN: t.Point.BN}.Fuse()
			} else {
				w, b, err = FuseConvBN(t.Weight, shape, t.BN.Weight, t.BN.Bias, t.BN.Mean, t.BN.Var, t.BN.Eps)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("tiny: deploy: %s: %w", c.ConvShape.Name, err)
		}
		copy(c.Weight, w)
		copy(c.Bias, b)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("tiny: deploy: %w", err)
	}
	return m, nil
}

// TrainModelFromPT builds the training form from an official yolov7-tiny
// checkpoint (model.<l>.conv + model.<l>.bn, or RepConv rbr_dense/rbr_1x1,
// or an already fused conv with bias, which gets an identity BN; detect
// convs model.<l>.m.<k> with ia/im when present). The checkpoint has no
// aux head, so it is freshly initialised as in UnfoldDeploy.
func TrainModelFromPT(ck *Checkpoint) (*TrainModel, error) {
	dm, err := ModelFromPT(ck) // checks the activation and every shape
	if err != nil {
		return nil, fmt.Errorf("tiny: train model from pt: %w", err)
	}
	tm := UnfoldDeploy(dm)
	for i := range tm.Convs {
		t := &tm.Convs[i]
		if err := ck.trainConv(t); err != nil {
			return nil, fmt.Errorf("tiny: train model from pt: %s: %w", t.ConvShape.Name, err)
		}
	}
	for i := range tm.Heads {
		h := &tm.Heads[i]
		w, err := ck.shaped(h.ConvShape.Name+".weight", h.Out, h.In, 1, 1)
		if err != nil {
			return nil, fmt.Errorf("tiny: train model from pt: %w", err)
		}
		b, err := ck.shaped(h.ConvShape.Name+".bias", h.Out)
		if err != nil {
			return nil, fmt.Errorf("tiny: train model from pt: %w", err)
		}
		copy(h.Weight, w)
		copy(h.Bias, b)
		base := strings.TrimSuffix(h.ConvShape.Name, fmt.Sprintf(".m.%d", h.Level))
		if ia, err := ck.shaped(fmt.Sprintf("%s.ia.%d.implicit", base, h.Level), 1, h.In, 1, 1); err == nil {
			copy(h.IA, ia)
		}
		if im, err := ck.shaped(fmt.Sprintf("%s.im.%d.implicit", base, h.Level), 1, h.Out, 1, 1); err == nil {
			copy(h.IM, im)
		}
	}
	return tm, nil
}

// trainConv reads one Conv block's unfused tensors into t. A fused conv
// (bias, no BN) keeps UnfoldDeploy's identity BN with beta = bias.
func (c *Checkpoint) trainConv(t *TrainConv) error {
	base := strings.TrimSuffix(t.ConvShape.Name, ".conv")
	if _, ok := c.Tensor(base + ".rbr_dense.0.weight"); ok {
		if t.Point == nil {
			return fmt.Errorf("RepConv in the checkpoint at a plain Conv layer")
		}
		var err error
		if t.Weight, err = c.shaped(base+".rbr_dense.0.weight", t.Out, t.In, 3, 3); err != nil {
			return err
		}
		if t.BN, err = c.batchNorm(base+".rbr_dense.1", t.Out); err != nil {
			return err
		}
		if t.Point.Weight, err = c.shaped(base+".rbr_1x1.0.weight", t.Out, t.In, 1, 1); err != nil {
			return err
		}
		if t.Point.BN, err = c.batchNorm(base+".rbr_1x1.1", t.Out); err != nil {
			return err
		}
		t.Weight, t.BN = slices.Clone(t.Weight), cloneBN(t.BN)
		t.Point.Weight, t.Point.BN = slices.Clone(t.Point.Weight), cloneBN(t.Point.BN)
		return nil
	}
	if _, ok := c.Tensor(base + ".bn.weight"); !ok {
		return nil // fused: UnfoldDeploy already holds weight and bias
	}
	w, err := c.shaped(base+".conv.weight", t.Out, t.In, t.K, t.K)
	if err != nil {
		return err
	}
	bn, err := c.batchNorm(base+".bn", t.Out)
	if err != nil {
		return err
	}
	copy(t.Weight, w)
	t.BN = cloneBN(bn)
	return nil
}

// cloneBN returns a copy of bn that shares no memory with it.
func cloneBN(bn BatchNorm) BatchNorm {
	return BatchNorm{Weight: slices.Clone(bn.Weight), Bias: slices.Clone(bn.Bias),
		Mean: slices.Clone(bn.Mean), Var: slices.Clone(bn.Var), Eps: bn.Eps}
}
