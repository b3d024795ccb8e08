package tiny

import (
	"fmt"
	"math"
	"strings"
)

// Re-parameterisation: the training form's BatchNorm, RepConv and
// ImplicitA/ImplicitM folded into plain convolutions (the deploy form).
// Weights are Out x In x Kh x Kw in C order. The arithmetic follows the
// official code in float32, operation for operation, so the results match
// utils.torch_utils.fuse_conv_and_bn, RepConv.fuse_repvgg_block and
// IDetect.fuse to the last bit or close to it.

// BatchNorm is an eval-mode BatchNorm2d over C channels:
// y = (x - Mean) / sqrt(Var + Eps) * Weight + Bias.
type BatchNorm struct {
	Weight, Bias, Mean, Var []float32 // gamma, beta, running mean, running variance
	Eps                     float32
}

// BNEps is the BatchNorm eps of YOLOv7 models (set by the official
// initialize_weights; PyTorch's default is 1e-5).
const BNEps = 1e-3

// check verifies that every vector has c values and that the eps is sane.
func (bn BatchNorm) check(c int) error {
	if len(bn.Weight) != c || len(bn.Bias) != c || len(bn.Mean) != c || len(bn.Var) != c {
		return fmt.Errorf("batchnorm has %d/%d/%d/%d weight/bias/mean/var values, want %d",
			len(bn.Weight), len(bn.Bias), len(bn.Mean), len(bn.Var), c)
	}
	if !(bn.Eps >= 0) || math.IsInf(float64(bn.Eps), 0) {
		return fmt.Errorf("batchnorm eps %v", bn.Eps)
	}
	return nil
}

// scale returns t = gamma / sqrt(var + eps) and b = beta - gamma*mean /
// sqrt(var + eps), in fuse_conv_and_bn's float32 order.
func (bn BatchNorm) scale() (t, b []float32) {
	t, b = make([]float32, len(bn.Weight)), make([]float32, len(bn.Weight))
	for o := range t {
		std := float32(math.Sqrt(float64(bn.Var[o] + bn.Eps))) // sqrt of a float32 rounds like torch's
		t[o] = bn.Weight[o] / std
		b[o] = bn.Bias[o] - float32(bn.Weight[o]*bn.Mean[o])/std // float32(): no FMA
	}
	return t, b
}

// checkWeight verifies a weight slice against its shape [out, in, kh, kw].
func checkWeight(w []float32, shape [4]int) error {
	n := 1
	for _, d := range shape {
		if d <= 0 {
			return fmt.Errorf("weight shape %v", shape)
		}
		n *= d
	}
	if len(w) != n {
		return fmt.Errorf("weight of shape %v has %d values, want %d", shape, len(w), n)
	}
	return nil
}

// FuseConvBN folds BatchNorm (gamma, beta, mean, variance, eps) into the
// bias-free convolution w of shape [out, in, kh, kw], as the official
// fuse_conv_and_bn: t = gamma/sqrt(var+eps); W' = t*W (per output channel);
// b' = beta - gamma*mean/sqrt(var+eps). w is not modified.
func FuseConvBN(w []float32, shape [4]int, gamma, beta, mean, variance []float32, eps float32) (w2, b2 []float32, err error) {
	bn := BatchNorm{Weight: gamma, Bias: beta, Mean: mean, Var: variance, Eps: eps}
	if err := checkWeight(w, shape); err != nil {
		return nil, nil, fmt.Errorf("tiny: fuse conv+bn: %w", err)
	}
	if err := bn.check(shape[0]); err != nil {
		return nil, nil, fmt.Errorf("tiny: fuse conv+bn: %w", err)
	}
	t, b2 := bn.scale()
	w2 = make([]float32, len(w))
	per := len(w) / shape[0]
	for o, s := range t {
		for i := o * per; i < (o+1)*per; i++ {
			w2[i] = w[i] * s
		}
	}
	return w2, b2, nil
}

// RepConv is the training form of a re-parameterisable 3x3 convolution
// (models.common.RepConv, groups 1): a 3x3 conv + BN (Dense, shape
// [out, in, 3, 3]), a 1x1 conv + BN (Point, shape [out, in, 1, 1]) and, when
// in == out and the stride is 1, an identity branch that is a BN alone.
type RepConv struct {
	Out, In  int
	Dense    []float32
	DenseBN  BatchNorm
	Point    []float32
	PointBN  BatchNorm
	Identity *BatchNorm // nil: no identity branch
}

// Fuse returns the single 3x3 convolution equivalent to the three branches,
// as RepConv.fuse_repvgg_block: each branch BN-folded, the 1x1 kernel
// padded to the centre of a 3x3, the identity as a 3x3 kernel with 1 at
// [o, o, 1, 1]; K = (K3 + K1) + Kid, b = (b3 + b1) + bid.
func (r RepConv) Fuse() (w, b []float32, err error) {
	if r.Out <= 0 || r.In <= 0 {
		return nil, nil, fmt.Errorf("tiny: fuse repconv: %d -> %d channels", r.In, r.Out)
	}
	w, b, err = FuseConvBN(r.Dense, [4]int{r.Out, r.In, 3, 3}, r.DenseBN.Weight, r.DenseBN.Bias, r.DenseBN.Mean, r.DenseBN.Var, r.DenseBN.Eps)
	if err != nil {
		return nil, nil, fmt.Errorf("tiny: fuse repconv: 3x3 branch: %w", err)
	}
	w1, b1, err := FuseConvBN(r.Point, [4]int{r.Out, r.In, 1, 1}, r.PointBN.Weight, r.PointBN.Bias, r.PointBN.Mean, r.PointBN.Var, r.PointBN.Eps)
	if err != nil {
		return nil, nil, fmt.Errorf("tiny: fuse repconv: 1x1 branch: %w", err)
	}
	var tid, bid []float32
	if r.Identity != nil {
		if r.In != r.Out {
			return nil, nil, fmt.Errorf("tiny: fuse repconv: identity branch with %d -> %d channels", r.In, r.Out)
		}
		if err := r.Identity.check(r.Out); err != nil {
			return nil, nil, fmt.Errorf("tiny: fuse repconv: identity branch: %w", err)
		}
		tid, bid = r.Identity.scale()
	}
	for o := 0; o < r.Out; o++ {
		for i := 0; i < r.In; i++ {
			centre := (o*r.In+i)*9 + 4
			v := w[centre] + w1[o*r.In+i]
			if tid != nil {
				// The identity kernel's BN fold: 1*t on the diagonal,
				// 0*t = 0 elsewhere (added as torch does).
				id := float32(0)
				if i == o {
					id = tid[o]
				}
				v += id
			}
			w[centre] = v
		}
		b[o] += b1[o]
		if bid != nil {
			b[o] += bid[o]
		}
	}
	return w, b, nil
}

// FuseImplicit folds IDetect's ImplicitA (ia, in values, added to the conv
// input) and ImplicitM (im, out values, multiplying the output) into the
// 1x1 detect convolution (w of shape [out, in, 1, 1], bias b), as
// IDetect.fuse: b' = (b + W.ia) * im, W' = W * im. It is Conv.FoldImplicit
// on copies; w and b are not modified.
func FuseImplicit(w []float32, shape [4]int, b, ia, im []float32) (w2, b2 []float32, err error) {
	if err := checkWeight(w, shape); err != nil {
		return nil, nil, fmt.Errorf("tiny: fuse implicit: %w", err)
	}
	if len(b) != shape[0] {
		return nil, nil, fmt.Errorf("tiny: fuse implicit: %d biases for %d outputs", len(b), shape[0])
	}
	c := Conv{
		ConvShape: ConvShape{Name: "implicit", Level: -1, Out: shape[0], In: shape[1], K: shape[2], S: 1},
		Weight:    append([]float32(nil), w...),
		Bias:      append([]float32(nil), b...),
	}
	if shape[2] != shape[3] {
		c.K = 0 // FoldImplicit rejects it with the shapes in the message
	}
	if err := c.FoldImplicit(ia, im); err != nil {
		return nil, nil, err
	}
	return c.Weight, c.Bias, nil
}

// ModelFromPT builds the deploy-form YOLOv7-Tiny model from a checkpoint:
// each Conv block's BatchNorm folded into its conv (FuseConvBN, eps read
// from the BatchNorm module, BNEps if it has none), RepConv blocks (the
// training form of layers 74-76, if present) folded to one 3x3
// (RepConv.Fuse), ImplicitA/ImplicitM folded into the detect convs
// (Conv.FoldImplicit). Already fused checkpoints (conv with bias and no bn,
// detect convs without implicits) are taken as they are. Class names and
// the activation come from the checkpoint.
func ModelFromPT(ck *Checkpoint) (*Model, error) {
	switch {
	case ck.Act == "" && ck.ActClass == "":
		return nil, fmt.Errorf("tiny: model from pt: no activation modules (want ReLU or LeakyReLU(0.1))")
	case ck.Act == "":
		return nil, fmt.Errorf("tiny: model from pt: activation %s, want ReLU or LeakyReLU(0.1)", ck.ActClass)
	}
	m, err := NewModel(YOLOv7Tiny(), ck.Act, ck.NC)
	if err != nil {
		return nil, fmt.Errorf("tiny: model from pt: %w", err)
	}
	if ck.Names != nil {
		m.Names = append([]string(nil), ck.Names...)
	}
	for i := range m.Convs {
		c := &m.Convs[i]
		if c.Level >= 0 {
			err = ck.detectConv(c)
		} else {
			err = ck.blockConv(c)
		}
		if err != nil {
			return nil, fmt.Errorf("tiny: model from pt: %s: %w", c.ConvShape.Name, err)
		}
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("tiny: model from pt: %w", err)
	}
	return m, nil
}

// shaped returns the tensor called name, checked against shape.
func (c *Checkpoint) shaped(name string, shape ...int) ([]float32, error) {
	t, ok := c.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("no tensor %s", name)
	}
	n := 1
	for _, d := range shape {
		n *= d
	}
	if fmt.Sprint(t.Shape) != fmt.Sprint(shape) && !(len(t.Data) == n && len(shape) == 1) {
		return nil, fmt.Errorf("%s has shape %v, want %v", name, t.Shape, shape)
	}
	return t.Data, nil
}

// batchNorm reads the BatchNorm2d module called name over n channels.
func (c *Checkpoint) batchNorm(name string, n int) (BatchNorm, error) {
	bn := BatchNorm{Eps: BNEps}
	if m, ok := c.Module(name); ok {
		if e, ok := m.Attrs["eps"]; ok {
			bn.Eps = float32(e)
		}
	}
	var err error
	for _, p := range []struct {
		dst  *[]float32
		name string
	}{{&bn.Weight, "weight"}, {&bn.Bias, "bias"}, {&bn.Mean, "running_mean"}, {&bn.Var, "running_var"}} {
		if *p.dst, err = c.shaped(name+"."+p.name, n); err != nil {
			return bn, err
		}
	}
	return bn, nil
}

// blockConv fills a Conv block (model.<i>.conv + model.<i>.bn, or a RepConv).
func (c *Checkpoint) blockConv(cv *Conv) error {
	base := strings.TrimSuffix(cv.ConvShape.Name, ".conv")
	shape := [4]int{cv.Out, cv.In, cv.K, cv.K}
	if _, ok := c.Tensor(base + ".rbr_dense.0.weight"); ok {
		return c.repConv(cv, base)
	}
	if _, ok := c.Tensor(base + ".rbr_reparam.weight"); ok {
		base += ".rbr_reparam"
	} else {
		base += ".conv"
	}
	w, err := c.shaped(base+".weight", shape[:]...)
	if err != nil {
		return err
	}
	bnName := strings.TrimSuffix(cv.ConvShape.Name, ".conv") + ".bn"
	if _, ok := c.Tensor(bnName + ".weight"); !ok { // fused: the conv has a bias
		b, err := c.shaped(base+".bias", cv.Out)
		if err != nil {
			return fmt.Errorf("no BatchNorm and %w", err)
		}
		copy(cv.Weight, w)
		copy(cv.Bias, b)
		return nil
	}
	bn, err := c.batchNorm(bnName, cv.Out)
	if err != nil {
		return err
	}
	w2, b2, err := FuseConvBN(w, shape, bn.Weight, bn.Bias, bn.Mean, bn.Var, bn.Eps)
	if err != nil {
		return err
	}
	copy(cv.Weight, w2)
	copy(cv.Bias, b2)
	return nil
}

// repConv fuses the training-form RepConv at base (rbr_dense.0/1,
// rbr_1x1.0/1, rbr_identity).
func (c *Checkpoint) repConv(cv *Conv, base string) error {
	if cv.K != 3 {
		return fmt.Errorf("RepConv weights for a %dx%d conv", cv.K, cv.K)
	}
	r := RepConv{Out: cv.Out, In: cv.In}
	var err error
	if r.Dense, err = c.shaped(base+".rbr_dense.0.weight", cv.Out, cv.In, 3, 3); err != nil {
		return err
	}
	if r.DenseBN, err = c.batchNorm(base+".rbr_dense.1", cv.Out); err != nil {
		return err
	}
	if r.Point, err = c.shaped(base+".rbr_1x1.0.weight", cv.Out, cv.In, 1, 1); err != nil {
		return err
	}
	if r.PointBN, err = c.batchNorm(base+".rbr_1x1.1", cv.Out); err != nil {
		return err
	}
	if _, ok := c.Tensor(base + ".rbr_identity.weight"); ok {
		id, err := c.batchNorm(base+".rbr_identity", cv.Out)
		if err != nil {
			return err
		}
		r.Identity = &id
	}
	w, b, err := r.Fuse()
	if err != nil {
		return err
	}
	copy(cv.Weight, w)
	copy(cv.Bias, b)
	return nil
}

// detectConv fills detect conv model.<l>.m.<k> and folds model.<l>.ia.<k>
// and model.<l>.im.<k> into it when present.
func (c *Checkpoint) detectConv(cv *Conv) error {
	w, err := c.shaped(cv.ConvShape.Name+".weight", cv.Out, cv.In, 1, 1)
	if err != nil {
		return err
	}
	b, err := c.shaped(cv.ConvShape.Name+".bias", cv.Out)
	if err != nil {
		return err
	}
	copy(cv.Weight, w)
	copy(cv.Bias, b)
	ia, im := make([]float32, cv.In), make([]float32, cv.Out)
	for i := range im {
		im[i] = 1
	}
	if name := fmt.Sprintf("model.%d.ia.%d.implicit", cv.Layer, cv.Level); c.has(name) {
		if ia, err = c.shaped(name, 1, cv.In, 1, 1); err != nil {
			return err
		}
	}
	if name := fmt.Sprintf("model.%d.im.%d.implicit", cv.Layer, cv.Level); c.has(name) {
		if im, err = c.shaped(name, 1, cv.Out, 1, 1); err != nil {
			return err
		}
	}
	return cv.FoldImplicit(ia, im)
}

func (c *Checkpoint) has(name string) bool {
	_, ok := c.Tensor(name)
	return ok
}
