package tiny

import (
	"fmt"
)

// ActNone is "no activation": the detect convs, and Device.Conv callers
// that want the plain biased convolution.
const ActNone Act = "none"

// NCHW is a view of a float32 tensor in NCHW order: element (n, c, y, x) is
// Data[n*Stride + (c*H+y)*W + x]. A dense tensor has Stride = C*H*W; a
// channel slice of a larger tensor (the part of a concat buffer one producer
// writes) has the larger tensor's C*H*W as Stride and Data starting at its
// first channel. Stride 0 means dense.
type NCHW struct {
	Data       []float32
	N, C, H, W int
	Stride     int
}

// BatchStride is the distance between images: Stride, or C*H*W when Stride
// is 0.
func (t NCHW) BatchStride() int {
	if t.Stride == 0 {
		return t.C * t.H * t.W
	}
	return t.Stride
}

// Plane is the number of values of one channel, H*W.
func (t NCHW) Plane() int { return t.H * t.W }

// Image returns image n: its C*H*W values, channel after channel.
func (t NCHW) Image(n int) []float32 {
	o := n * t.BatchStride()
	return t.Data[o : o+t.C*t.H*t.W]
}

// Channels returns the view of channels [c0, c0+c) of t.
func (t NCHW) Channels(c0, c int) NCHW {
	bs := t.BatchStride()
	o := c0 * t.Plane()
	return NCHW{Data: t.Data[o:], N: t.N, C: c, H: t.H, W: t.W, Stride: bs}
}

// check reports whether the view's shape is positive and Data holds it.
func (t NCHW) check(name string) error {
	if t.N <= 0 || t.C <= 0 || t.H <= 0 || t.W <= 0 {
		return fmt.Errorf("%s: bad shape %dx%dx%dx%d", name, t.N, t.C, t.H, t.W)
	}
	bs := t.BatchStride()
	if bs < t.C*t.H*t.W {
		return fmt.Errorf("%s: batch stride %d below C*H*W = %d", name, bs, t.C*t.H*t.W)
	}
	if need := (t.N-1)*bs + t.C*t.H*t.W; len(t.Data) < need {
		return fmt.Errorf("%s: %dx%dx%dx%d (batch stride %d) needs %d values, has %d", name, t.N, t.C, t.H, t.W, bs, need, len(t.Data))
	}
	return nil
}

// ConvArgs are a convolution's parameters: Weight is Out x In x K x K in C
// order (Out = y.C, In = x.C), Bias has Out values, stride S, padding Pad
// on every side (zeros), then Act (ActReLU, ActLeaky or ActNone).
type ConvArgs struct {
	Weight []float32
	Bias   []float32
	K, S   int
	Pad    int
	Act    Act

	// Winograd, when set, holds the filters transformed for the CPU's
	// Winograd F(2x2,3x3) path (CPU.PrepareConv); the CPU then runs this
	// 3x3 stride-1 conv through it. Other devices ignore it.
	Winograd []float32
	// Packed, when set, holds the filters packed for the CPU's own GEMM
	// (CPU.PrepareConv, cpu_gemm.go); the CPU then runs the conv through
	// it. Other devices ignore it.
	Packed []float32
}

// ConvPreparer is implemented by devices that precompute something per
// convolution of an inference plan (the CPU: Winograd filters for its 3x3
// stride-1 convs, packed filters for the others). PrepareConv returns c with it filled in, for the plan to
// pass to ConvScratch and Conv in place of c; c itself is not modified.
type ConvPreparer interface {
	PrepareConv(y, x NCHW, c ConvArgs) (ConvArgs, error)
}

// HeadPreparer is implemented by devices that precompute something per
// detect conv of an inference plan (the CPU: the filters transposed for
// its own GEMM). PrepareHead returns c with it filled in, for the plan to
// pass to Head in place of c; c itself is not modified.
type HeadPreparer interface {
	PrepareHead(x NCHW, c ConvArgs, na int) (ConvArgs, error)
}

// PoolArgs are a max-pool's parameters: a KxK window, stride S, padding Pad
// on every side (padding never wins: it acts as -Inf, as in PyTorch).
type PoolArgs struct {
	K, S, Pad int
}

// convOut is the output side of a window op: (in + 2*pad - k)/s + 1.
func convOut(in, k, s, pad int) int { return (in+2*pad-k)/s + 1 }

// Device runs the heavy operations of inference on NCHW float32 tensors
// (views, see NCHW). Every method checks its shapes once, at entry, and
// returns an error instead of writing out of bounds; outputs must not
// overlap inputs. A Device may keep no state between calls except what
// it was built with, so one Device serves many Plans; a method call is not
// safe to run concurrently with another on the same scratch buffer.
type Device interface {
	// Alloc returns n zeroed float32 values usable by this device's
	// methods (plain memory for the CPU; host-mapped memory for a GPU).
	Alloc(n int) ([]float32, error)

	// ConvScratch is the number of float32 values of scratch that Conv
	// needs for these shapes (0 if none).
	ConvScratch(y, x NCHW, c ConvArgs) int

	// Conv computes y = act(conv(x, Weight) + Bias):
	// x is N x In x H x W, y is N x Out x Ho x Wo with
	// Ho = (H + 2*Pad - K)/S + 1 and Wo likewise; scratch has at least
	// ConvScratch values.
	Conv(y, x NCHW, c ConvArgs, scratch []float32) error

	// PoolScratch is the number of float32 values of scratch that MaxPool
	// needs for these shapes (0 if none).
	PoolScratch(y, x NCHW, p PoolArgs) int

	// MaxPool computes y = maxpool(x): x is N x C x H x W, y is
	// N x C x Ho x Wo with Ho = (H + 2*Pad - K)/S + 1 and Wo likewise.
	MaxPool(y, x NCHW, p PoolArgs, scratch []float32) error

	// Upsample2x is nearest-neighbour upsampling by 2: x is N x C x H x W,
	// y is N x C x 2H x 2W, y(n, c, i, j) = x(n, c, i/2, j/2).
	Upsample2x(y, x NCHW) error

	// Head is a detect conv written in the raw head layout: the 1x1
	// stride-1 conv (bias, no activation, c.K = 1, c.Act = ActNone) of x,
	// N x In x H x W, with Weight NA*NO x In, stored in dst, dense
	// N x NA x H x W x NO: dst(n, a, i, j, k) is output channel a*NO+k at
	// (i, j).
	Head(dst []float32, x NCHW, c ConvArgs, na int) error

	// Affine is inference-mode BatchNorm as a per-channel affine map:
	// y(n, c, i, j) = act(x(n, c, i, j)*Scale[c] + Shift[c] + r(n, c, i, j))
	// with r = a.Add when a.Add.Data is non-nil (a residual, e.g. the
	// other RepConv branch), else 0. x, y and a.Add are N x C x H x W;
	// Scale and Shift have C values; y may be x or a.Add (in place).
	Affine(y, x NCHW, a AffineArgs) error
}

// AffineArgs are an Affine op's parameters: per-channel Scale and Shift
// (BatchNorm with running statistics: Scale = gamma/sqrt(var+eps), Shift =
// beta - mean*Scale), an optional residual Add and the activation Act
// (ActReLU, ActLeaky or ActNone).
type AffineArgs struct {
	Scale, Shift []float32
	Add          NCHW
	Act          Act
}

// checkAffine checks an Affine op's shapes once, at the boundary.
func checkAffine(y, x NCHW, a AffineArgs) error {
	if err := x.check("affine input"); err != nil {
		return err
	}
	if err := y.check("affine output"); err != nil {
		return err
	}
	if y.N != x.N || y.C != x.C || y.H != x.H || y.W != x.W {
		return fmt.Errorf("affine: output %dx%dx%dx%d, want the input's %dx%dx%dx%d", y.N, y.C, y.H, y.W, x.N, x.C, x.H, x.W)
	}
	if len(a.Scale) != x.C || len(a.Shift) != x.C {
		return fmt.Errorf("affine: %d scales and %d shifts for %d channels", len(a.Scale), len(a.Shift), x.C)
	}
	if a.Act != ActReLU && a.Act != ActLeaky && a.Act != ActNone {
		return fmt.Errorf("affine: unknown activation %q", a.Act)
	}
	if a.Add.Data != nil {
		if err := a.Add.check("affine residual"); err != nil {
			return err
		}
		if a.Add.N != x.N || a.Add.C != x.C || a.Add.H != x.H || a.Add.W != x.W {
			return fmt.Errorf("affine: residual %dx%dx%dx%d, want %dx%dx%dx%d", a.Add.N, a.Add.C, a.Add.H, a.Add.W, x.N, x.C, x.H, x.W)
		}
	}
	return nil
}

// checkConv checks the shapes of a convolution once, at the boundary.
func checkConv(y, x NCHW, c ConvArgs) error {
	if err := x.check("conv input"); err != nil {
		return err
	}
	if err := y.check("conv output"); err != nil {
		return err
	}
	if c.K <= 0 || c.S <= 0 || c.Pad < 0 || c.Pad >= c.K {
		return fmt.Errorf("conv: bad kernel %d stride %d pad %d (pad must be below k)", c.K, c.S, c.Pad)
	}
	if c.Act != ActReLU && c.Act != ActLeaky && c.Act != ActNone {
		return fmt.Errorf("conv: unknown activation %q", c.Act)
	}
	if x.H+2*c.Pad < c.K || x.W+2*c.Pad < c.K {
		return fmt.Errorf("conv: kernel %d larger than the padded %dx%d input", c.K, x.H, x.W)
	}
	ho, wo := convOut(x.H, c.K, c.S, c.Pad), convOut(x.W, c.K, c.S, c.Pad)
	if y.N != x.N || y.H != ho || y.W != wo {
		return fmt.Errorf("conv: output %dx%dx%dx%d, want %dx%dx%dx%d for input %dx%dx%dx%d k%d s%d p%d",
			y.N, y.C, y.H, y.W, x.N, y.C, ho, wo, x.N, x.C, x.H, x.W, c.K, c.S, c.Pad)
	}
	if len(c.Weight) != y.C*x.C*c.K*c.K || len(c.Bias) != y.C {
		return fmt.Errorf("conv: %d weights and %d biases, want %d (%dx%dx%dx%d) and %d",
			len(c.Weight), len(c.Bias), y.C*x.C*c.K*c.K, y.C, x.C, c.K, c.K, y.C)
	}
	return nil
}

// checkPool checks the shapes of a max-pool once, at the boundary.
func checkPool(y, x NCHW, p PoolArgs) error {
	if err := x.check("maxpool input"); err != nil {
		return err
	}
	if err := y.check("maxpool output"); err != nil {
		return err
	}
	if p.K <= 0 || p.S <= 0 || p.Pad < 0 || p.Pad > p.K/2 {
		return fmt.Errorf("maxpool: bad window %d stride %d pad %d (pad must be at most k/2)", p.K, p.S, p.Pad)
	}
	if x.H+2*p.Pad < p.K || x.W+2*p.Pad < p.K {
		return fmt.Errorf("maxpool: window %d larger than the padded %dx%d input", p.K, x.H, x.W)
	}
	ho, wo := convOut(x.H, p.K, p.S, p.Pad), convOut(x.W, p.K, p.S, p.Pad)
	if y.N != x.N || y.C != x.C || y.H != ho || y.W != wo {
		return fmt.Errorf("maxpool: output %dx%dx%dx%d, want %dx%dx%dx%d", y.N, y.C, y.H, y.W, x.N, x.C, ho, wo)
	}
	return nil
}

// checkUpsample checks the shapes of Upsample2x.
func checkUpsample(y, x NCHW) error {
	if err := x.check("upsample input"); err != nil {
		return err
	}
	if err := y.check("upsample output"); err != nil {
		return err
	}
	if y.N != x.N || y.C != x.C || y.H != 2*x.H || y.W != 2*x.W {
		return fmt.Errorf("upsample: output %dx%dx%dx%d, want %dx%dx%dx%d", y.N, y.C, y.H, y.W, x.N, x.C, 2*x.H, 2*x.W)
	}
	return nil
}

// checkHead checks the shapes of Head.
func checkHead(dst []float32, x NCHW, c ConvArgs, na int) error {
	if err := x.check("head input"); err != nil {
		return err
	}
	if c.K != 1 || c.S != 1 || c.Pad != 0 || c.Act != ActNone {
		return fmt.Errorf("head: want a 1x1 stride-1 unpadded conv without activation, got k%d s%d p%d %q", c.K, c.S, c.Pad, c.Act)
	}
	out := len(c.Bias)
	if na <= 0 || out == 0 || out%na != 0 {
		return fmt.Errorf("head: %d output channels do not split into %d anchors", out, na)
	}
	if len(c.Weight) != out*x.C {
		return fmt.Errorf("head: %d weights, want %d x %d", len(c.Weight), out, x.C)
	}
	if n := x.N * out * x.H * x.W; len(dst) != n {
		return fmt.Errorf("head: output has %d values, want %dx%dx%dx%dx%d = %d", len(dst), x.N, na, x.H, x.W, out/na, n)
	}
	return nil
}
