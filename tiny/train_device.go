package tiny

import "fmt"

// Training on a Device: the backward of every op of the training form and
// BatchNorm with batch statistics. Conventions shared by every method:
//
//   - Gradients of parameters (dW, dB, dGamma, dBeta) are ACCUMULATED (+=):
//     the caller zeroes them once per optimiser step (TrainPlan.ZeroGrad).
//   - Gradients of inputs (dx) are accumulated too where an input can have
//     several consumers (ConvBackward, MaxPoolBackward, Upsample2xBackward);
//     BNBackward overwrites its dx, which may alias dy (the conv output's
//     gradient is local to its block).
//   - Tensors are NCHW views (channel slices of concat buffers allowed), as
//     for the inference ops; shapes are checked once at entry.

// BNMode selects how a training-form BatchNorm normalises.
type BNMode int

const (
	// BNFrozen normalises with the running statistics (PyTorch's eval mode)
	// and leaves them unchanged; gamma and beta still learn. The default for
	// the small batches of an on-device fine-tune.
	BNFrozen BNMode = iota
	// BNBatch normalises with the batch's statistics over N, H and W
	// (PyTorch's train mode, biased variance) and updates the running
	// statistics: mean = (1-m)*mean + m*batchMean and var = (1-m)*var +
	// m*batchVar*M/(M-1) (unbiased, M = N*H*W), m = Momentum.
	BNBatch
)

// String names the mode as in configuration files.
func (m BNMode) String() string {
	switch m {
	case BNFrozen:
		return "frozen"
	case BNBatch:
		return "batch"
	}
	return fmt.Sprintf("BNMode(%d)", int(m))
}

// BNMomentum is the BatchNorm momentum of YOLOv7 models (set by the
// official initialize_weights).
const BNMomentum = 0.03

// BNArgs are a training-form BatchNorm's parameters and state for
// BNForward and BNBackward. Weight/Bias are gamma/beta; RunMean/RunVar the
// running statistics (updated by BNForward in BNBatch mode). SaveMean and
// SaveInvStd (C values each) are written by BNForward with the statistics
// it normalised with (batch or running: mean and 1/sqrt(var+Eps)) and read
// by BNBackward. Add (optional, the input's shape) is a residual added
// after the normalisation and before Act: y = act(BN(x) + Add), which is
// how a RepConv sums its branches; y may alias Add.
type BNArgs struct {
	Weight, Bias         []float32
	RunMean, RunVar      []float32
	Eps, Momentum        float32
	Mode                 BNMode
	SaveMean, SaveInvStd []float32
	Add                  NCHW
	Act                  Act
}

// TrainDevice is a Device that can train: the backward of each op, and
// BatchNorm in both modes. infer/cudnn implements it on the GPU, CPU on
// the host.
type TrainDevice interface {
	Device

	// ConvBackwardScratch is the number of float32 values of scratch that
	// ConvBackward needs for these shapes.
	ConvBackwardScratch(dy, x NCHW, c ConvArgs) int

	// ConvBackward is the backward of the plain convolution (c.Act must be
	// ActNone; the activation's backward is ActBackward): given
	// dy = dL/d(conv output), N x Out x Ho x Wo, and the conv's input x,
	// it adds dL/dx to dx when dx.Data is non-nil, dL/dW to dW (Out x In x
	// K x K) and, when dB is non-nil, the sum of dy per channel to dB.
	ConvBackward(dx, dy, x NCHW, c ConvArgs, dW, dB, scratch []float32) error

	// ActBackward multiplies dy in place by the activation's derivative,
	// read from y = the activation's output: relu 1 where y > 0 else 0,
	// leaky 1 where y > 0 else LeakySlope, none 1.
	ActBackward(dy, y NCHW, act Act) error

	// BNForward computes y = act((x - mean)*invstd*gamma + beta + Add) with
	// the mode's statistics (see BNArgs, BNMode); x is kept by the caller
	// for BNBackward.
	BNForward(y, x NCHW, a BNArgs) error

	// BNBackward is BNForward's backward before the activation and the
	// residual: given dy = dL/d(BN output) (the caller has applied
	// ActBackward), it writes dL/dx to dx (which may alias dy) and adds
	// dL/dgamma to dGamma and dL/dbeta to dBeta. In BNBatch mode the
	// gradient flows through the batch statistics; in BNFrozen mode the
	// statistics are constants.
	BNBackward(dx, dy, x NCHW, a BNArgs, dGamma, dBeta []float32) error

	// MaxPoolBackward adds to dx the gradient of MaxPool: each dy value
	// goes to the input position that won its window (the first maximum in
	// row-major window order, as PyTorch's CPU kernel), x the pool's input.
	MaxPoolBackward(dx, dy, x NCHW, p PoolArgs) error

	// Upsample2xBackward adds to dx (N x C x H x W) the sum of each 2x2
	// block of dy (N x C x 2H x 2W).
	Upsample2xBackward(dx, dy NCHW) error
}

// ParamGroup is the official optimiser group of a parameter (train.py).
type ParamGroup int

const (
	// GroupNoDecay (pg0): BatchNorm weights and the ImplicitA/ImplicitM
	// vectors; no weight decay.
	GroupNoDecay ParamGroup = iota
	// GroupDecay (pg1): every other ".weight" (conv weights); weight decay.
	GroupDecay
	// GroupBias (pg2): every ".bias" (conv and BatchNorm biases); no decay,
	// its own warm-up learning rate.
	GroupBias
)

// Param is one trainable tensor of a TrainModel: Value aliases the model's
// slice (an optimiser step updates the model in place), Grad the plan's
// gradient of it, Name the official state_dict key.
type Param struct {
	Name  string
	Value []float32
	Grad  []float32
	Group ParamGroup
}

// StateEntry is one floating-point entry of a model's state (parameters
// and BatchNorm running statistics), what ModelEMA averages.
type StateEntry struct {
	Name string
	Data []float32
}
