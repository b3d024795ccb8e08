package finetune

import "fmt"

// Hyp holds the training hyper-parameters of the official hyp.*.yaml files
// that the trainer uses, before train.py's scaling. DefaultHyp is
// data/hyp.scratch.tiny.yaml.
type Hyp struct {
	LR0            float64 `toml:"lr0" json:"lr0"`                         // initial learning rate
	LRF            float64 `toml:"lrf" json:"lrf"`                         // final learning rate as a fraction of LR0
	Momentum       float64 `toml:"momentum" json:"momentum"`               // SGD momentum (Nesterov)
	WeightDecay    float64 `toml:"weight_decay" json:"weight_decay"`       // for 64 images per step
	WarmupEpochs   float64 `toml:"warmup_epochs" json:"warmup_epochs"`     // warm-up length in epochs
	WarmupMomentum float64 `toml:"warmup_momentum" json:"warmup_momentum"` // momentum at the warm-up's start
	WarmupBiasLR   float64 `toml:"warmup_bias_lr" json:"warmup_bias_lr"`   // bias learning rate at the warm-up's start
	Box            float64 `toml:"box" json:"box"`                         // box loss gain
	Cls            float64 `toml:"cls" json:"cls"`                         // class loss gain
	Obj            float64 `toml:"obj" json:"obj"`                         // objectness loss gain
	AnchorT        float64 `toml:"anchor_t" json:"anchor_t"`               // anchor-multiple threshold
	HSVH           float64 `toml:"hsv_h" json:"hsv_h"`                     // hue jitter (fraction)
	HSVS           float64 `toml:"hsv_s" json:"hsv_s"`                     // saturation jitter (fraction)
	HSVV           float64 `toml:"hsv_v" json:"hsv_v"`                     // value jitter (fraction)
	Translate      float64 `toml:"translate" json:"translate"`             // translation (+/- fraction)
	Scale          float64 `toml:"scale" json:"scale"`                     // scale (+/- gain)
	FlipLR         float64 `toml:"fliplr" json:"fliplr"`                   // horizontal flip probability
	Mosaic         float64 `toml:"mosaic" json:"mosaic"`                   // mosaic probability
}

// DefaultHyp returns the official data/hyp.scratch.tiny.yaml values.
func DefaultHyp() Hyp {
	return Hyp{
		LR0: 0.01, LRF: 0.01, Momentum: 0.937, WeightDecay: 0.0005,
		WarmupEpochs: 3, WarmupMomentum: 0.8, WarmupBiasLR: 0.1,
		Box: 0.05, Cls: 0.5, Obj: 1.0, AnchorT: 4.0,
		HSVH: 0.015, HSVS: 0.7, HSVV: 0.4, Translate: 0.1, Scale: 0.5, FlipLR: 0.5, Mosaic: 1.0,
	}
}

// FinetuneHyp returns the hyperparameters a fine-tune uses by default:
// hyp.scratch.tiny with a peak learning rate of 0.001 instead of 0.01 and
// no bias warm-up boost (warmup_bias_lr 0: biases ramp up from 0 like the
// weights instead of starting at 0.1). With frozen BatchNorm statistics
// nothing renormalises the layers: on the golden fine-tune set lr0 0.01
// and 0.002 diverged within three epochs while 0.001 trained (see
// BenchmarkGoldenFinetune); and the official 0.1 bias start moves every
// bias of a trained model by a large step at once.
func FinetuneHyp() Hyp {
	h := DefaultHyp()
	h.LR0 = 0.001
	h.WarmupBiasLR = 0
	return h
}

// Gains are the loss gains after train.py's scaling (what the loss
// multiplies lbox, lobj and lcls by).
type Gains struct {
	Box, Obj, Cls float64
}

// Gains scales the hyp's box/obj/cls gains as train.py does for nc classes,
// nl detection levels and a training image size of imgsz pixels:
// box·3/nl, cls·nc/80·3/nl, obj·(imgsz/640)²·3/nl.
func (h Hyp) Gains(nc, nl, imgsz int) (Gains, error) {
	if nc <= 0 || nl <= 0 || imgsz <= 0 {
		return Gains{}, fmt.Errorf("loss gains: need positive nc, nl and image size, got %d, %d, %d", nc, nl, imgsz)
	}
	n := float64(nl)
	s := float64(imgsz) / 640
	// The same double-precision order as train.py's in-place products.
	return Gains{
		Box: h.Box * (3 / n),
		Cls: h.Cls * (float64(nc) / 80 * 3 / n),
		Obj: h.Obj * (s * s * 3 / n),
	}, nil
}
