package finetune

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/yolo7d/yolo7d/tiny"
)

// Run fine-tunes the base model on a dataset (see RunConfig): it unfolds
// the deploy model into the training form (or reads the training form of
// an official .pt checkpoint), trains with the official loss, SGD and EMA,
// checkpoints every epoch into WorkDir, folds the EMA weights back into a
// deploy model, checks the folding on real inputs, evaluates the candidate
// and the base on the val split (and the replay split), writes the
// candidate to Out atomically and says whether it passes the promotion
// gate. progress (may be nil) is called from Run's goroutine. Cancelling
// ctx stops the run after the current batch; the last epoch checkpoint
// stays for Resume.
func Run(ctx context.Context, cfg RunConfig, progress func(Progress)) (*Result, error) {
	if progress == nil {
		progress = func(Progress) {}
	}
	res, err := run(ctx, cfg, progress)
	if err != nil {
		st := StateFailed
		if ctx.Err() != nil {
			st = StateCancelled
		}
		progress(Progress{State: st})
		return nil, fmt.Errorf("finetune: %w", err)
	}
	return res, nil
}

// checkRunConfig fills defaults and rejects unusable settings.
func checkRunConfig(cfg *RunConfig) error {
	if cfg.Data == "" || cfg.Base == "" || cfg.Out == "" {
		return errors.New("data, base and out are required")
	}
	if _, err := outFormat(cfg.Out); err != nil {
		return err
	}
	if cfg.Epochs == 0 {
		cfg.Epochs = DefaultEpochs
	}
	if cfg.Batch == 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Hyp == (Hyp{}) {
		cfg.Hyp = DefaultHyp()
	}
	switch {
	case cfg.Epochs < 1 || cfg.Epochs > 10000:
		return fmt.Errorf("epochs %d outside 1..10000", cfg.Epochs)
	case cfg.Batch < 1 || cfg.Batch > 1024:
		return fmt.Errorf("batch %d outside 1..1024", cfg.Batch)
	case cfg.ImgSize != 0 && (cfg.ImgSize < 32 || cfg.ImgSize > 2048 || cfg.ImgSize%32 != 0):
		return fmt.Errorf("image size %d: want a multiple of 32 in 32..2048", cfg.ImgSize)
	case cfg.Warmup < -1 || cfg.NominalBatch < 0:
		return fmt.Errorf("warmup %d and nominal batch %d: want warmup >= -1 and nominal batch >= 0", cfg.Warmup, cfg.NominalBatch)
	case cfg.Freeze < 0:
		return fmt.Errorf("freeze %d is negative", cfg.Freeze)
	case math.IsNaN(cfg.Margin) || math.IsNaN(cfg.MaxReplayDrop):
		return errors.New("margin and max replay drop must be numbers")
	case !(cfg.ReplayMix >= 0 && cfg.ReplayMix < 0.9):
		return fmt.Errorf("replay mix %g: want a fraction in [0, 0.9)", cfg.ReplayMix)
	case cfg.ReplayMix > 0 && cfg.Replay == "":
		return fmt.Errorf("replay mix %g needs a replay dataset", cfg.ReplayMix)
	}
	return nil
}

// baseModel is the model a run starts from.
type baseModel struct {
	train  *tiny.TrainModel
	deploy *tiny.Model
	size   int // input size recorded in the file (0: none)
}

// loadBase reads the base model: an official .pt keeps its BatchNorm and
// RepConv branches (TrainModelFromPT); a deploy model (native, ONNX) is
// unfolded (UnfoldDeploy).
func loadBase(path string) (*baseModel, error) {
	head := make([]byte, 4)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("base model: %w", err)
	}
	_, _ = io.ReadFull(f, head)
	f.Close()
	if bytes.Equal(head, []byte("PK\x03\x04")) {
		ck, err := tiny.ReadPT(path)
		if err != nil {
			return nil, fmt.Errorf("base model: %w", err)
		}
		tm, err := tiny.TrainModelFromPT(ck)
		if err != nil {
			return nil, fmt.Errorf("base model %s: %w", path, err)
		}
		dm, err := tm.Deploy()
		if err != nil {
			return nil, fmt.Errorf("base model %s: %w", path, err)
		}
		return &baseModel{train: tm, deploy: dm}, nil
	}
	var size int
	var dm *tiny.Model
	if ok, _ := tiny.IsSafetensorsFile(path); ok {
		var meta tiny.ModelMeta
		if dm, meta, err = tiny.ReadModelFile(path); err != nil {
			return nil, fmt.Errorf("base model: %w", err)
		}
		size = meta.InputSize
	} else {
		om, err := tiny.ReadONNXFile(path)
		if err != nil {
			return nil, fmt.Errorf("base model: %w", err)
		}
		if dm, err = tiny.ModelFromONNX(om); err != nil {
			return nil, fmt.Errorf("base model %s: %w", path, err)
		}
		size = onnxInputSize(om)
	}
	return &baseModel{train: tiny.UnfoldDeploy(dm), deploy: dm, size: size}, nil
}

// onnxInputSize is the side of an ONNX model's fixed square input
// (1x3xSxS), or 0 when the input is dynamic or not square.
func onnxInputSize(om *tiny.ONNXModel) int {
	if len(om.Inputs) != 1 || len(om.Inputs[0].Dims) != 4 {
		return 0
	}
	d := om.Inputs[0].Dims
	if d[2] != d[3] || d[2] < 32 || d[2] > 1280 || d[2]%32 != 0 {
		return 0
	}
	return int(d[2])
}

// warmupFor sizes the warm-up to the run: the official 3 epochs, but at
// most a tenth of the run's batches (the official minimum of 1000 batches
// would span the whole of a small fine-tune, see schedule.go).
func warmupFor(h Hyp, epochs, batches int) int {
	w := int(math.Round(h.WarmupEpochs * float64(batches)))
	return max(1, min(w, epochs*batches/10))
}

func run(ctx context.Context, cfg RunConfig, progress func(Progress)) (*Result, error) {
	if err := checkRunConfig(&cfg); err != nil {
		return nil, err
	}
	progress(Progress{State: StateLoading, Epochs: cfg.Epochs})
	base, err := loadBase(cfg.Base)
	if err != nil {
		return nil, err
	}
	size := cfg.ImgSize
	if size == 0 {
		size = base.size
	}
	if size == 0 {
		size = 320
	}
	data, err := LoadDataYAML(cfg.Data)
	if err != nil {
		return nil, err
	}
	if data.NC != base.deploy.NC {
		return nil, fmt.Errorf("%s has %d classes but the base model %s has %d", cfg.Data, data.NC, cfg.Base, base.deploy.NC)
	}
	splitOpts := SplitOptions{Strict: cfg.StrictData, VerifyImages: true}
	train, err := OpenSplit(data, "train", splitOpts)
	if err != nil {
		return nil, err
	}
	val, err := OpenSplit(data, "val", splitOpts)
	if err != nil {
		return nil, err
	}
	var issues []Issue
	issues = append(append(issues, train.Issues...), val.Issues...)
	if len(train.Samples) == 0 || len(val.Samples) == 0 {
		return nil, fmt.Errorf("%s: %d train and %d val images; both splits need images", cfg.Data, len(train.Samples), len(val.Samples))
	}
	var replay *Dataset
	if cfg.Replay != "" {
		rc, err := LoadDataYAML(cfg.Replay)
		if err != nil {
			return nil, fmt.Errorf("replay: %w", err)
		}
		if rc.NC != data.NC {
			return nil, fmt.Errorf("replay %s has %d classes, the dataset %d", cfg.Replay, rc.NC, data.NC)
		}
		if replay, err = OpenSplit(rc, "val", SplitOptions{}); err != nil {
			return nil, fmt.Errorf("replay: %w", err)
		}
		if cfg.ReplayMix > 0 {
			old, err := OpenSplit(rc, "train", SplitOptions{})
			if err != nil {
				return nil, fmt.Errorf("replay: %w", err)
			}
			train = mixReplay(train, old, cfg.ReplayMix, cfg.Seed)
		}
	}
	names := base.deploy.Names
	if len(names) == 0 {
		names = data.Names
	}
	tm := base.train
	tm.Names = append([]string(nil), names...)

	batch := min(cfg.Batch, len(train.Samples))
	loader, err := NewLoader(train, LoaderOptions{ImgSize: size, BatchSize: batch, Augment: true, Shuffle: true,
		DropLast: true, Hyp: cfg.Hyp, Seed: cfg.Seed})
	if err != nil {
		return nil, err
	}
	nb := loader.NumBatches()
	cpu := tiny.NewCPU(cfg.Threads) // evaluation, and training without cfg.Device
	defer cpu.Close()
	var dev tiny.TrainDevice = cpu
	if cfg.Device != nil {
		dev = cfg.Device
	}
	warmup := cfg.Warmup
	switch {
	case warmup == 0:
		warmup = warmupFor(cfg.Hyp, cfg.Epochs, nb)
	case warmup < 0:
		warmup = 0 // the Schedule's official length
	}
	tcfg := TrainConfig{Hyp: cfg.Hyp, Batch: batch, Size: size, Epochs: cfg.Epochs, BatchesPerEpoch: nb,
		BN: cfg.BN, Aux: cfg.Aux, Freeze: cfg.Freeze, WarmupIters: warmup, NominalBatch: cfg.NominalBatch}
	tr, err := NewTrainer(tm, dev, tcfg)
	if err != nil {
		return nil, err
	}
	ck := checkpointPath(cfg)
	start := 0
	if !cfg.Resume {
		if err := calibrateAux(ctx, tr, train, cfg, size, batch); err != nil {
			return nil, err
		}
	}
	if cfg.Resume {
		if start, err = tr.loadCheckpoint(ck, cfg); err != nil {
			return nil, fmt.Errorf("resume: %w", err)
		}
	}
	var epochTimes []time.Duration
	p := Progress{State: StateTraining, Epochs: cfg.Epochs, Batches: nb}
	for epoch := start; epoch < cfg.Epochs; epoch++ {
		t0 := time.Now()
		if err := trainEpoch(ctx, tr, loader, epoch, &p, progress, epochTimes); err != nil {
			return nil, err
		}
		tr.NextEpoch()
		epochTimes = append(epochTimes, time.Since(t0))
		if err := tr.saveCheckpoint(ck, cfg, epoch+1); err != nil {
			return nil, err
		}
		cand, err := tr.candidate()
		if err != nil {
			return nil, err
		}
		met, err := evalSplit(ctx, cand, cpu, val, size, DefaultEvalOptions())
		if err != nil {
			return nil, fmt.Errorf("epoch %d: validation: %w", epoch+1, err)
		}
		p.State, p.Epoch, p.ValMAP50, p.ValMAP50_95, p.EpochDuration = StateTraining, epoch+1, met.MAP50, met.MAP50_95, epochTimes[len(epochTimes)-1]
		p.ETA = time.Duration(cfg.Epochs-epoch-1) * p.EpochDuration
		p.Validated = true
		progress(p)
		p.Validated = false
	}
	res, err := finish(ctx, cfg, tr, base, cpu, val, replay, size, epochTimes, p, progress)
	if err != nil {
		return nil, err
	}
	res.DataIssueCount = len(issues)
	for _, is := range issues[:min(len(issues), MaxReportedIssues)] {
		res.DataIssues = append(res.DataIssues, is.String())
	}
	return res, nil
}

// trainEpoch runs one epoch's batches.
func trainEpoch(ctx context.Context, tr *Trainer, loader *Loader, epoch int, p *Progress, progress func(Progress), done []time.Duration) error {
	it := loader.Epoch(ctx, epoch)
	defer it.Close()
	t0 := time.Now()
	for i := 0; ; i++ {
		b, err := it.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("epoch %d batch %d: %w", epoch+1, i+1, err)
		}
		copy(tr.Input(), b.Images)
		items, err := tr.Step(b.Targets)
		loader.Release(b)
		if err != nil {
			return fmt.Errorf("epoch %d batch %d: %w", epoch+1, i+1, err)
		}
		p.Epoch, p.Batch, p.Loss = epoch+1, i+1, items
		perBatch := time.Since(t0) / time.Duration(i+1)
		left := time.Duration(p.Batches-i-1) * perBatch
		epochs := p.Epochs - epoch - 1
		if len(done) > 0 {
			var sum time.Duration
			for _, d := range done {
				sum += d
			}
			left += time.Duration(epochs) * (sum / time.Duration(len(done)))
		} else {
			left += time.Duration(epochs*p.Batches) * perBatch
		}
		p.ETA = left
		progress(*p)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// candidate folds the EMA weights into a deploy model.
func (t *Trainer) candidate() (*tiny.Model, error) {
	em, err := t.EMAModel()
	if err != nil {
		return nil, err
	}
	return em.Deploy()
}

// finish folds, checks, evaluates, gates and writes the candidate.
// last is the final epoch's validated progress report (zero after a
// resume that had no epoch left to train).
func finish(ctx context.Context, cfg RunConfig, tr *Trainer, base *baseModel, dev *tiny.CPU, val, replay *Dataset,
	size int, epochTimes []time.Duration, last Progress, progress func(Progress)) (*Result, error) {
	progress(Progress{State: StateEvaluating, Epoch: cfg.Epochs, Epochs: cfg.Epochs, ValMAP50: last.ValMAP50, ValMAP50_95: last.ValMAP50_95})
	em, err := tr.EMAModel()
	if err != nil {
		return nil, err
	}
	cand, err := em.Deploy()
	if err != nil {
		return nil, err
	}
	if err := checkFolding(ctx, em, cand, dev, val, size); err != nil {
		return nil, err
	}
	res := &Result{Candidate: cfg.Out, Epochs: cfg.Epochs}
	if res.Tuned, err = evalSplit(ctx, cand, dev, val, size, DefaultEvalOptions()); err != nil {
		return nil, fmt.Errorf("evaluate the candidate: %w", err)
	}
	if res.Base, err = evalSplit(ctx, base.deploy, dev, val, size, DefaultEvalOptions()); err != nil {
		return nil, fmt.Errorf("evaluate the base model: %w", err)
	}
	if replay != nil {
		rb, err := evalSplit(ctx, base.deploy, dev, replay, size, DefaultEvalOptions())
		if err != nil {
			return nil, fmt.Errorf("evaluate the base model on the replay split: %w", err)
		}
		rt, err := evalSplit(ctx, cand, dev, replay, size, DefaultEvalOptions())
		if err != nil {
			return nil, fmt.Errorf("evaluate the candidate on the replay split: %w", err)
		}
		res.ReplayBase, res.ReplayTuned = &rb, &rt
	}
	if len(epochTimes) > 0 {
		var sum time.Duration
		for _, d := range epochTimes {
			sum += d
		}
		res.EpochDuration = sum / time.Duration(len(epochTimes))
	}
	res.Promote, res.Reason = gate(cfg, res)
	metrics, err := json.Marshal(map[string]any{"val": res.Tuned.summary(), "base_val": res.Base.summary(),
		"epochs": cfg.Epochs, "data": cfg.Data, "promote": res.Promote, "reason": res.Reason})
	if err != nil {
		return nil, err
	}
	meta := tiny.ModelMeta{InputSize: size, Metrics: metrics, Provenance: tiny.Provenance{
		Source: cfg.Base, Tool: "yolo7d finetune", Time: time.Now().UTC().Format(time.RFC3339)}}
	if sum, err := tiny.FileSHA256(cfg.Base); err == nil {
		meta.Provenance.SourceSHA256 = sum
	}
	if err := writeCandidate(cfg.Out, cand, meta); err != nil {
		return nil, err
	}
	progress(Progress{State: StateDone, Epoch: cfg.Epochs, Epochs: cfg.Epochs, ValMAP50: res.Tuned.MAP50,
		ValMAP50_95: res.Tuned.MAP50_95, EpochDuration: res.EpochDuration})
	return res, nil
}

// summary is the headline numbers of a Metrics, for model metadata.
func (m Metrics) summary() map[string]float64 {
	return map[string]float64{"precision": m.P, "recall": m.R, "map50": m.MAP50, "map50_95": m.MAP50_95}
}

// gate decides promotion: the candidate's val mAP@0.5:0.95 must beat the
// base's by Margin, and with a replay split its mAP@0.5 there may drop by
// at most MaxReplayDrop.
func gate(cfg RunConfig, r *Result) (bool, string) {
	need := r.Base.MAP50_95 + cfg.Margin
	if r.Tuned.MAP50_95 < need {
		return false, fmt.Sprintf("val mAP@0.5:0.95 %.4f is below the base's %.4f + margin %.4f", r.Tuned.MAP50_95, r.Base.MAP50_95, cfg.Margin)
	}
	if r.ReplayBase != nil {
		if drop := r.ReplayBase.MAP50 - r.ReplayTuned.MAP50; drop > cfg.MaxReplayDrop {
			return false, fmt.Sprintf("replay mAP@0.5 fell by %.4f (%.4f -> %.4f), more than %.4f", drop, r.ReplayBase.MAP50, r.ReplayTuned.MAP50, cfg.MaxReplayDrop)
		}
	}
	return true, fmt.Sprintf("val mAP@0.5:0.95 %.4f >= base %.4f + margin %.4f", r.Tuned.MAP50_95, r.Base.MAP50_95, cfg.Margin)
}

// checkFolding compares the training form (eval mode) with its folded
// deploy model on the first val images: the raw outputs must agree to
// 1e-3 of their magnitude, else the fold is wrong and nothing is written.
func checkFolding(ctx context.Context, em *tiny.TrainModel, cand *tiny.Model, dev *tiny.CPU, val *Dataset, size int) error {
	plan, err := cand.NewPlan(dev, size)
	if err != nil {
		return err
	}
	ld, err := NewLoader(val, LoaderOptions{ImgSize: size, BatchSize: 1, ValUpscale: true})
	if err != nil {
		return err
	}
	n := min(2, ld.NumBatches())
	for i := 0; i < n; i++ {
		b, err := ld.Batch(ctx, 0, i)
		if err != nil {
			return err
		}
		want, err := em.Forward(dev, b.Images, size)
		if err != nil {
			return err
		}
		got, err := plan.Forward(b.Images)
		if err != nil {
			return err
		}
		for l := range got {
			var worst, mag float64
			for j, v := range got[l] {
				worst = max(worst, math.Abs(float64(v-want.Lead[l][j])))
				mag = max(mag, math.Abs(float64(want.Lead[l][j])))
			}
			if worst > 1e-3*max(1, mag) {
				return fmt.Errorf("folded model differs from the training form by %.3g (level %d, image %s)", worst, l, b.Meta[0].Path)
			}
		}
	}
	return nil
}

// checkpointPath is the run's checkpoint file.
func checkpointPath(cfg RunConfig) string {
	dir := cfg.WorkDir
	if dir == "" {
		dir = filepath.Dir(cfg.Out)
		base := strings.TrimSuffix(filepath.Base(cfg.Out), filepath.Ext(cfg.Out))
		return filepath.Join(dir, "."+base+".ckpt")
	}
	return filepath.Join(dir, "last.ckpt")
}

// outFormat tells how the candidate is written, by the extension of out:
// ".safetensors" the native model file, ".onnx" the deploy ONNX export.
func outFormat(out string) (string, error) {
	switch ext := strings.ToLower(filepath.Ext(out)); ext {
	case ".safetensors", ".onnx":
		return ext, nil
	default:
		return "", fmt.Errorf("out %s: want a .safetensors (native) or .onnx file name", out)
	}
}

// writeCandidate writes the candidate atomically in the format out's
// extension names (the native file keeps meta; the ONNX export has the
// input size fixed to meta.InputSize).
func writeCandidate(out string, m *tiny.Model, meta tiny.ModelMeta) error {
	format, err := outFormat(out)
	if err != nil {
		return err
	}
	if format == ".onnx" {
		return tiny.WriteONNXFile(out, m, meta.InputSize)
	}
	return tiny.WriteModelFile(out, m, meta)
}

// calibrateAuxBatches is how many batches estimate the fresh aux head's
// BatchNorm statistics.
const calibrateAuxBatches = 8

// calibrateAux estimates the aux head's BatchNorm statistics on
// un-augmented training images (see Trainer.CalibrateAuxBN).
func calibrateAux(ctx context.Context, tr *Trainer, train *Dataset, cfg RunConfig, size, batch int) error {
	if !cfg.Aux || cfg.BN != tiny.BNFrozen {
		return nil
	}
	l, err := NewLoader(train, LoaderOptions{ImgSize: size, BatchSize: batch, Shuffle: true, DropLast: true, Seed: cfg.Seed})
	if err != nil {
		return err
	}
	it := l.Epoch(ctx, 0)
	defer it.Close()
	var batches [][]float32
	for len(batches) < calibrateAuxBatches {
		b, err := it.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("calibrate the aux head: %w", err)
		}
		batches = append(batches, append([]float32(nil), b.Images...))
		l.Release(b)
	}
	return tr.CalibrateAuxBN(batches)
}

// mixReplay returns train with images of old added so that they make
// about the fraction mix of the result: a fixed subset, drawn from seed,
// so a resumed run trains on the same images.
func mixReplay(train, old *Dataset, mix float64, seed uint64) *Dataset {
	n := int(math.Round(mix / (1 - mix) * float64(len(train.Samples))))
	n = min(max(n, 1), len(old.Samples))
	pick := rand.New(rand.NewPCG(seed, 0x7265706c6179)).Perm(len(old.Samples))[:n] // "replay"
	slices.Sort(pick)
	out := *train
	out.Samples = slices.Clone(train.Samples)
	for _, i := range pick {
		out.Samples = append(out.Samples, old.Samples[i])
	}
	return &out
}
