package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/yolo7d/yolo7d/finetune"
)

const evalUsage = "usage: yolo7d eval -m MODEL --data DATA.yaml [--split val] [--img N] [--threads N] [--json]\n"

// evalOptions are the flags of eval.
type evalOptions struct {
	model, data, split string
	img, threads       int
	json               bool
}

// parseEvalFlags parses the command line of eval; bad or missing values
// are a usage error (flag.ErrHelp, exit status 2).
func parseEvalFlags(args []string, stderr io.Writer) (evalOptions, error) {
	fs := flag.NewFlagSet("eval", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, evalUsage); fs.PrintDefaults() }
	var o evalOptions
	fs.StringVar(&o.model, "m", "", "the `model` (.safetensors, .onnx or .pt)")
	fs.StringVar(&o.data, "data", "", "the dataset's `data.yaml`")
	fs.StringVar(&o.split, "split", "val", "the split: train, val or test")
	fs.IntVar(&o.img, "img", 0, "input side, a multiple of 32 in 32..1280 (default: the model's, else 640)")
	fs.IntVar(&o.threads, "threads", 0, "CPU threads (0 = all cores)")
	fs.BoolVar(&o.json, "json", false, "print one JSON object")
	if err := fs.Parse(args); err != nil {
		return o, flag.ErrHelp
	}
	switch {
	case fs.NArg() != 0:
		return o, usageError(stderr, evalUsage, "eval: unexpected argument %q", fs.Arg(0))
	case o.model == "":
		return o, usageError(stderr, evalUsage, "eval: -m MODEL is required")
	case o.data == "":
		return o, usageError(stderr, evalUsage, "eval: --data DATA.yaml is required")
	case o.split != "train" && o.split != "val" && o.split != "test":
		return o, usageError(stderr, evalUsage, "eval: --split %q: want train, val or test", o.split)
	case o.img != 0 && checkImg(o.img) != nil:
		return o, usageError(stderr, evalUsage, "eval: %v", checkImg(o.img))
	case o.threads < 0:
		return o, usageError(stderr, evalUsage, "eval: --threads %d: want 0 (all cores) or more", o.threads)
	}
	return o, nil
}

// evalReport is the JSON output of eval.
type evalReport struct {
	Model     string          `json:"model"`
	Data      string          `json:"data"`
	Split     string          `json:"split"`
	Img       int             `json:"img"`
	Precision float64         `json:"precision"`
	Recall    float64         `json:"recall"`
	MAP50     float64         `json:"map50"`
	MAP50_95  float64         `json:"map50_95"`
	PerClass  []evalClassLine `json:"per_class"`
}

type evalClassLine struct {
	Class    int     `json:"class"`
	Name     string  `json:"name"`
	Targets  int     `json:"targets"`
	P        float64 `json:"p"`
	R        float64 `json:"r"`
	MAP50    float64 `json:"map50"`
	MAP50_95 float64 `json:"map50_95"`
}

// cmdEval runs `yolo7d eval`: P, R, mAP@0.5, mAP@0.5:0.95 and a per-class
// table (or one JSON object) of a model on a dataset split.
func cmdEval(ctx context.Context, args []string, stdout, stderr io.Writer, tools cliTools) error {
	o, err := parseEvalFlags(args, stderr)
	if err != nil {
		return err
	}
	if tools.eval == nil {
		return errors.New("eval: evaluation is not available in this build")
	}
	dc, err := finetune.LoadDataYAML(o.data)
	if err != nil {
		return fmt.Errorf("eval: %w", err)
	}
	m, declared, err := loadModel(o.model)
	if err != nil {
		return fmt.Errorf("eval: model %s: %w", o.model, err)
	}
	img := o.img
	if img == 0 {
		img = declared
	}
	if img == 0 {
		img = 640
	}
	met, err := tools.eval(ctx, m, o.data, o.split, img, o.threads)
	if err != nil {
		if ctx.Err() != nil {
			return errors.New("eval: interrupted")
		}
		return fmt.Errorf("eval: %w", err)
	}
	mj := newMetricsJSON(met, dc.Names)
	rep := evalReport{Model: o.model, Data: o.data, Split: o.split, Img: img,
		Precision: mj.Precision, Recall: mj.Recall, MAP50: mj.MAP50, MAP50_95: mj.MAP50_95, PerClass: mj.PerClass}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return writeEvalTable(stdout, rep)
}

// writeEvalTable prints the report as text: a summary and a per-class
// table in the layout of the official test.py.
func writeEvalTable(w io.Writer, r evalReport) error {
	fmt.Fprintf(w, "model %s\ndata  %s (split %s, img %d)\n\n", r.Model, r.Data, r.Split, r.Img)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "class\ttargets\tP\tR\tmAP@.5\tmAP@.5:.95\t")
	targets := 0
	for _, c := range r.PerClass {
		targets += c.Targets
	}
	fmt.Fprintf(tw, "all\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t\n", targets, r.Precision, r.Recall, r.MAP50, r.MAP50_95)
	for _, c := range r.PerClass {
		fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.3f\t%.3f\t%.3f\t\n", c.Name, c.Targets, c.P, c.R, c.MAP50, c.MAP50_95)
	}
	return tw.Flush()
}
