package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/yolo7d/yolo7d/agent"
	"github.com/yolo7d/yolo7d/finetune"
	"github.com/yolo7d/yolo7d/infer"
	"github.com/yolo7d/yolo7d/tiny"
)

// The finetune and eval commands: fine-tune a model on a dataset, and
// evaluate a model on a dataset's split.

const finetuneUsage = `usage: yolo7d finetune --data DATA.yaml -m BASE [-o OUT] [--epochs N] [--img N] [--batch N]
                        [--freeze N] [--aux|--no-aux] [--margin X] [--resume] [--workdir DIR]
                        [--threads N] [--seed N] [--strict] [--bn frozen|batch] [--lr0 X] [--nbs N]
                        [--device cpu|cudnn|auto] [--gpu-lib-dir DIR]
                        [--replay DATA.yaml [--replay-mix X] [--max-replay-drop X]]
`

// evalFunc is the signature of finetune.EvalDataset.
type evalFunc func(ctx context.Context, model *tiny.Model, dataYAML, split string, img, threads int) (finetune.Metrics, error)

// cliTools are the heavy functions behind finetune and eval: the trainer
// and the evaluator. Tests substitute fakes; the build's real ones come
// from finetune_default.go.
type cliTools struct {
	tune finetune.Tuner
	eval evalFunc
}

// toolbox carries the optional defaults() method of finetune_default.go.
type toolbox struct{}

// defaultTools returns the build's trainer and evaluator (nil when this
// build has none).
func defaultTools() cliTools {
	if d, ok := any(toolbox{}).(interface{ defaults() cliTools }); ok {
		return d.defaults()
	}
	return cliTools{}
}

// usageError prints a usage problem and the usage to stderr and returns
// flag.ErrHelp (exit status 2).
func usageError(stderr io.Writer, usage, format string, args ...any) error {
	fmt.Fprintf(stderr, "yolo7d: "+format+"\n", args...)
	fmt.Fprint(stderr, usage)
	return flag.ErrHelp
}

// parseFinetuneFlags turns the command line of finetune into a RunConfig.
// Bad or missing values are a usage error (flag.ErrHelp, exit status 2).
func parseFinetuneFlags(args []string, stderr io.Writer) (finetune.RunConfig, error) {
	rc, _, err := parseFinetuneArgs(args, stderr)
	return rc, err
}

// trainOn names the training device of the command line and where the
// GPU libraries are.
type trainOn struct {
	device string // cpu | cudnn | auto
	gpu    infer.Options
}

// parseFinetuneArgs is parseFinetuneFlags that also returns the training
// device (--device, --gpu-lib-dir).
func parseFinetuneArgs(args []string, stderr io.Writer) (finetune.RunConfig, trainOn, error) {
	var on trainOn
	fs := flag.NewFlagSet("finetune", flag.ContinueOnError)
	fs.StringVar(&on.device, "device", "cpu", "where the training steps run: cpu, cudnn (NVIDIA GPU) or auto")
	fs.StringVar(&on.gpu.GPULibDir, "gpu-lib-dir", "", "extra `dir` searched first for libcudart/libcudnn")
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, finetuneUsage); fs.PrintDefaults() }
	rc := finetune.DefaultRunConfig()
	fs.StringVar(&rc.Data, "data", "", "the dataset's `data.yaml` (YOLO txt layout)")
	fs.StringVar(&rc.Base, "m", "", "the `model` to start from (.safetensors, .onnx or .pt)")
	fs.StringVar(&rc.Out, "o", "", "the fine-tuned deploy model `file`, .safetensors or .onnx (default: BASE-finetuned.onnx for an .onnx BASE, else BASE-finetuned.safetensors)")
	fs.IntVar(&rc.Epochs, "epochs", finetune.DefaultEpochs, "training epochs, 1..1000")
	fs.IntVar(&rc.ImgSize, "img", 0, "input side, a multiple of 32 in 32..1280 (default: the model's)")
	fs.IntVar(&rc.Batch, "batch", finetune.DefaultBatch, "images per batch, 1..256")
	fs.IntVar(&rc.Freeze, "freeze", 0, "keep the weights of the first `N` layers, 0..77")
	aux := fs.Bool("aux", true, "train with the auxiliary head")
	noAux := fs.Bool("no-aux", false, "train without the auxiliary head")
	fs.Float64Var(&rc.Margin, "margin", 0.005, "the candidate passes the gate if its val mAP@0.5:0.95 >= the base's + `X`")
	fs.BoolVar(&rc.Resume, "resume", false, "continue the interrupted run whose checkpoints are in --workdir")
	fs.StringVar(&rc.WorkDir, "workdir", "", "checkpoint `dir` of the run (default: finetune-<OUT name> beside OUT)")
	fs.IntVar(&rc.Threads, "threads", 0, "CPU threads (0 = all cores)")
	fs.Uint64Var(&rc.Seed, "seed", 0, "random seed")
	bn := fs.String("bn", "", "BatchNorm while training: frozen (running statistics) or batch (batch statistics); default: the run's default")
	fs.Float64Var(&rc.Hyp.LR0, "lr0", rc.Hyp.LR0, "peak learning rate (after the warm-up), in (0, 1]")
	fs.IntVar(&rc.NominalBatch, "nbs", rc.NominalBatch, "images per optimiser step (gradients accumulate over batches); 0: the official 64")
	fs.StringVar(&rc.Replay, "replay", "", "`data.yaml` of the base model's domain: its val split is scored before and after (forgetting), see --replay-mix")
	fs.Float64Var(&rc.ReplayMix, "replay-mix", 0, "fraction in [0, 0.9) of the training images drawn from --replay's train split (rehearsal)")
	fs.Float64Var(&rc.MaxReplayDrop, "max-replay-drop", rc.MaxReplayDrop, "largest --replay val mAP@0.5 drop the gate accepts, 0..1")
	fs.BoolVar(&rc.StrictData, "strict", false, "fail on any bad label line or image (default: skip them and list them)")
	if err := fs.Parse(args); err != nil {
		return rc, on, flag.ErrHelp // the flag package has printed the problem
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case fs.NArg() != 0:
		return rc, on, usageError(stderr, finetuneUsage, "finetune: unexpected argument %q", fs.Arg(0))
	case rc.Data == "":
		return rc, on, usageError(stderr, finetuneUsage, "finetune: --data DATA.yaml is required")
	case rc.Base == "":
		return rc, on, usageError(stderr, finetuneUsage, "finetune: -m BASE is required")
	case rc.Epochs < 1 || rc.Epochs > 1000:
		return rc, on, usageError(stderr, finetuneUsage, "finetune: --epochs %d: want 1..1000", rc.Epochs)
	case rc.ImgSize != 0 && checkImg(rc.ImgSize) != nil:
		return rc, on, usageError(stderr, finetuneUsage, "finetune: %v", checkImg(rc.ImgSize))
	case rc.Batch < 1 || rc.Batch > 256:
		return rc, on, usageError(stderr, finetuneUsage, "finetune: --batch %d: want 1..256", rc.Batch)
	case rc.Freeze < 0 || rc.Freeze > 77:
		return rc, on, usageError(stderr, finetuneUsage, "finetune: --freeze %d: want 0..77 (layers of yolov7-tiny)", rc.Freeze)
	case !(rc.Margin >= -1 && rc.Margin <= 1):
		return rc, on, usageError(stderr, finetuneUsage, "finetune: --margin %g: want -1..1", rc.Margin)
	case rc.Threads < 0:
		return rc, on, usageError(stderr, finetuneUsage, "finetune: --threads %d: want 0 (all cores) or more", rc.Threads)
	case *bn != "" && *bn != "frozen" && *bn != "batch":
		return rc, on, usageError(stderr, finetuneUsage, "finetune: --bn %q: want frozen or batch", *bn)
	case !(rc.Hyp.LR0 > 0 && rc.Hyp.LR0 <= 1):
		return rc, on, usageError(stderr, finetuneUsage, "finetune: --lr0 %g: want (0, 1]", rc.Hyp.LR0)
	case rc.NominalBatch < 0 || rc.NominalBatch > 4096:
		return rc, on, usageError(stderr, finetuneUsage, "finetune: --nbs %d: want 0..4096", rc.NominalBatch)
	case !(rc.ReplayMix >= 0 && rc.ReplayMix < 0.9):
		return rc, on, usageError(stderr, finetuneUsage, "finetune: --replay-mix %g: want a fraction in [0, 0.9)", rc.ReplayMix)
	case rc.ReplayMix > 0 && rc.Replay == "":
		return rc, on, usageError(stderr, finetuneUsage, "finetune: --replay-mix needs --replay DATA.yaml")
	case !(rc.MaxReplayDrop >= 0 && rc.MaxReplayDrop <= 1):
		return rc, on, usageError(stderr, finetuneUsage, "finetune: --max-replay-drop %g: want 0..1", rc.MaxReplayDrop)
	case set["aux"] && set["no-aux"]:
		return rc, on, usageError(stderr, finetuneUsage, "finetune: --aux and --no-aux contradict each other")
	}
	rc.Aux = *aux && !*noAux
	switch *bn {
	case "frozen":
		rc.BN = tiny.BNFrozen
	case "batch":
		rc.BN = tiny.BNBatch
	}
	if rc.Out == "" {
		// The candidate keeps the base's format where yolo7d can write
		// it (.onnx stays ONNX); everything else becomes a native model.
		ext := filepath.Ext(rc.Base)
		out := ".safetensors"
		if strings.EqualFold(ext, ".onnx") {
			out = ext
		}
		rc.Out = strings.TrimSuffix(rc.Base, ext) + "-finetuned" + out
	} else if e := strings.ToLower(filepath.Ext(rc.Out)); e != ".safetensors" && e != ".onnx" {
		return rc, on, usageError(stderr, finetuneUsage, "finetune: -o %s: want a .safetensors (native) or .onnx file name", rc.Out)
	}
	if filepath.Clean(rc.Out) == filepath.Clean(rc.Base) {
		return rc, on, usageError(stderr, finetuneUsage, "finetune: -o %s would overwrite the base model", rc.Out)
	}
	if rc.WorkDir == "" {
		name := filepath.Base(rc.Out)
		rc.WorkDir = filepath.Join(filepath.Dir(rc.Out), "finetune-"+strings.TrimSuffix(name, filepath.Ext(name)))
	}
	return rc, on, nil
}

// cmdFinetune runs `yolo7d finetune`: progress on stderr, the result as
// JSON on stdout. Cancelling ctx (Ctrl-C) stops the run cleanly; its
// checkpoints stay in the work directory for --resume.
func cmdFinetune(ctx context.Context, args []string, stdout, stderr io.Writer, tools cliTools) error {
	rc, on, err := parseFinetuneArgs(args, stderr)
	if err != nil {
		return err
	}
	if tools.tune == nil {
		return errors.New("finetune: fine-tuning is not available in this build")
	}
	dev, closeDev, note, err := agent.OpenTrainDevice(on.device, on.gpu)
	if err != nil {
		return fmt.Errorf("finetune: %w", err)
	}
	defer closeDev()
	rc.Device = dev
	if on.device != "cpu" {
		fmt.Fprintln(stderr, "finetune: "+note)
	}
	if err := os.MkdirAll(rc.WorkDir, 0o755); err != nil {
		return fmt.Errorf("finetune: work directory: %w", err)
	}
	pr := &progressPrinter{w: stderr, tty: isTerminal(stderr), start: time.Now()}
	res, err := tools.tune(ctx, rc, pr.update)
	pr.finish()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("finetune: interrupted; the checkpoints are in %s (continue with --resume --workdir %s)", rc.WorkDir, rc.WorkDir)
		}
		if strings.HasPrefix(err.Error(), "finetune:") {
			return err
		}
		return fmt.Errorf("finetune: %w", err)
	}
	if res == nil {
		return errors.New("finetune: the trainer returned no result")
	}
	if res.DataIssueCount > 0 {
		fmt.Fprintf(stderr, "finetune: %d dataset problems were skipped (--strict makes them fatal):\n", res.DataIssueCount)
		for _, is := range res.DataIssues {
			fmt.Fprintf(stderr, "  %s\n", is)
		}
		if more := res.DataIssueCount - len(res.DataIssues); more > 0 {
			fmt.Fprintf(stderr, "  ... and %d more\n", more)
		}
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	var names []string
	if dc, err := finetune.LoadDataYAML(rc.Data); err == nil {
		names = dc.Names
	}
	return enc.Encode(newFinetuneReport(res, names))
}

// finetuneReport is the JSON printed by finetune: the Result with the
// metrics in the shape eval prints.
type finetuneReport struct {
	Candidate   string       `json:"candidate"`
	Base        metricsJSON  `json:"base"`
	Tuned       metricsJSON  `json:"tuned"`
	ReplayBase  *metricsJSON `json:"replay_base,omitempty"`
	ReplayTuned *metricsJSON `json:"replay_tuned,omitempty"`
	Promote     bool         `json:"promote"`
	Reason      string       `json:"reason"`
	Epochs      int          `json:"epochs"`
	EpochS      float64      `json:"epoch_s"`
	// DataIssues are the skipped dataset problems (the first 20),
	// DataIssueCount all of them.
	DataIssues     []string `json:"data_issues,omitempty"`
	DataIssueCount int      `json:"data_issue_count"`
}

// metricsJSON are a model's scores on a split, as printed.
type metricsJSON struct {
	Precision float64         `json:"precision"`
	Recall    float64         `json:"recall"`
	MAP50     float64         `json:"map50"`
	MAP50_95  float64         `json:"map50_95"`
	PerClass  []evalClassLine `json:"per_class"`
}

func newMetricsJSON(m finetune.Metrics, names []string) metricsJSON {
	out := metricsJSON{Precision: m.P, Recall: m.R, MAP50: m.MAP50, MAP50_95: m.MAP50_95, PerClass: []evalClassLine{}}
	for _, c := range m.PerClass {
		name := fmt.Sprintf("class%d", c.Class)
		if c.Class >= 0 && c.Class < len(names) {
			name = names[c.Class]
		}
		out.PerClass = append(out.PerClass, evalClassLine{Class: c.Class, Name: name, Targets: c.NGT,
			P: c.P, R: c.R, MAP50: c.AP50, MAP50_95: c.AP50_95})
	}
	return out
}

func newFinetuneReport(res *finetune.Result, names []string) finetuneReport {
	r := finetuneReport{Candidate: res.Candidate, Base: newMetricsJSON(res.Base, names), Tuned: newMetricsJSON(res.Tuned, names),
		Promote: res.Promote, Reason: res.Reason, Epochs: res.Epochs, EpochS: res.EpochDuration.Seconds(),
		DataIssues: res.DataIssues, DataIssueCount: res.DataIssueCount}
	if res.ReplayBase != nil {
		m := newMetricsJSON(*res.ReplayBase, nil)
		r.ReplayBase = &m
	}
	if res.ReplayTuned != nil {
		m := newMetricsJSON(*res.ReplayTuned, nil)
		r.ReplayTuned = &m
	}
	return r
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progressPrinter shows a run's progress: one line rewritten with \r on a
// terminal, else one log line per finished epoch and per state change.
type progressPrinter struct {
	w       io.Writer
	tty     bool
	start   time.Time
	state   string
	epoch   int
	lineLen int
	last    time.Time
}

func (p *progressPrinter) update(pr finetune.Progress) {
	changed := pr.State != p.state
	p.state = pr.State
	if pr.Validated {
		// Each epoch ends with a line of its own, with the val mAP; on a
		// terminal it replaces the running line and stays.
		line := fmt.Sprintf("%s %s", time.Since(p.start).Round(time.Second), progressLine(pr))
		if p.tty {
			fmt.Fprintf(p.w, "\r%s%s\n", line, strings.Repeat(" ", max(p.lineLen-len(line), 0)))
			p.lineLen = 0
			return
		}
		fmt.Fprintln(p.w, line)
		return
	}
	if p.tty {
		if !changed && time.Since(p.last) < 100*time.Millisecond {
			return
		}
		p.last = time.Now()
		line := progressLine(pr)
		pad := max(p.lineLen-len(line), 0)
		p.lineLen = len(line)
		fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
		return
	}
	if changed && pr.State != finetune.StateTraining {
		fmt.Fprintf(p.w, "%s %s\n", time.Since(p.start).Round(time.Second), progressLine(pr))
	}
}

// finish ends the terminal line.
func (p *progressPrinter) finish() {
	if p.tty && p.lineLen > 0 {
		fmt.Fprintln(p.w)
	}
}

// progressLine describes one progress report.
func progressLine(pr finetune.Progress) string {
	switch pr.State {
	case finetune.StateTraining:
		s := fmt.Sprintf("epoch %d/%d batch %d/%d loss %.4f (box %.4f obj %.4f cls %.4f)",
			pr.Epoch, pr.Epochs, pr.Batch, pr.Batches, pr.Loss.Total, pr.Loss.Box, pr.Loss.Obj, pr.Loss.Cls)
		if pr.Validated {
			s += fmt.Sprintf(" val mAP@0.5 %.4f mAP@0.5:0.95 %.4f", pr.ValMAP50, pr.ValMAP50_95)
		}
		if pr.ETA > 0 {
			s += " eta " + pr.ETA.Round(time.Second).String()
		}
		return s
	case finetune.StateEvaluating:
		return fmt.Sprintf("evaluating (epoch %d/%d) val mAP@0.5 %.4f mAP@0.5:0.95 %.4f", pr.Epoch, pr.Epochs, pr.ValMAP50, pr.ValMAP50_95)
	default:
		return pr.State
	}
}
