// Command yolo7d is the yolo7d edge detection agent and its tools.
//
//	yolo7d run [--config FILE]              run the agent in the foreground
//	yolo7d install [--config FILE] [...]    install the systemd service
//	yolo7d uninstall | start | stop | restart | status
//	yolo7d config check FILE                validate a configuration, print the effective one
//	yolo7d model init -o FILE [...]         write a seeded random (scaled) YOLOv7-tiny, native or ONNX
//	yolo7d import SRC -o MODEL              convert an official .pt or ONNX export
//	yolo7d export MODEL -o OUT.onnx         write a model as deploy ONNX
//	yolo7d forward -m MODEL --input X.npy   raw head outputs as .npy
//	yolo7d bench [-m MODEL] [...]           forward latency per size and backend
//	yolo7d detect -m MODEL IMAGE...         detect objects in images, print JSON
//	yolo7d finetune --data D.yaml -m BASE   fine-tune a model on a dataset
//	yolo7d eval -m MODEL --data D.yaml      P, R, mAP of a model on a dataset split
//	yolo7d capture URI -o DIR               camera frames into a dataset folder, to label
//	yolo7d synth dataset|video ...          synthetic training data and demo video
//	yolo7d version
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/yolo7d/yolo7d/agent"
)

// version is set at link time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `yolo7d — YOLOv7-tiny edge detection agent

usage:
  yolo7d run [--config FILE]                 run the agent in the foreground
  yolo7d install [--config FILE] [--user NAME] [--unit-dir DIR] [--no-systemctl] [--exec PATH]
  yolo7d uninstall | start | stop | restart | status
  yolo7d config check FILE                   validate FILE, print the effective configuration
  yolo7d model init -o FILE.safetensors|FILE.onnx [--act relu|leaky] [--nc N | --names a,b,c]
                  [--depth X] [--width X] [--img N] [--seed N]   a seeded random (scaled) yolov7-tiny
  yolo7d import SRC -o MODEL [--img N]       official .pt or ONNX (raw/--grid) -> native .safetensors or deploy .onnx
  yolo7d export MODEL -o OUT.onnx [--img N]  any model -> deploy ONNX (for opencv)
  yolo7d forward -m MODEL --input X.npy --out-dir DIR   CPU forward, writes p3/p4/p5.npy (raw logits)
  yolo7d bench [-m MODEL] [--sizes 640,416,320] [--backends cpu,opencv] [--runs N] [--json]
  yolo7d detect -m MODEL [--conf X] [--iou X] [--annotate DIR] IMAGE...
  yolo7d finetune --data DATA.yaml -m BASE [-o OUT] [--epochs N] [--img N] [--batch N] [--freeze N]
                  [--aux|--no-aux] [--margin X] [--resume] [--workdir DIR] [--threads N] [--seed N]
                  [--strict] [--bn frozen|batch] [--lr0 X] [--nbs N]
                  [--replay DATA.yaml [--replay-mix X] [--max-replay-drop X]]
                                             fine-tune BASE; progress on stderr, result JSON on stdout
  yolo7d eval -m MODEL --data DATA.yaml [--split val] [--img N] [--threads N] [--json]
                                             P, R, mAP@0.5, mAP@0.5:0.95 and a per-class table
  yolo7d capture URI -o DIR [--count N] [--interval D] [--split train|val] [-m MODEL]
                                             save camera frames into a dataset folder (pre-labelled by MODEL)
  yolo7d synth dataset DIR [--train N] [--val N] [--img N] [--seed N] [--jpeg]
                                             synthetic shapes dataset (YOLO layout + data.yaml)
  yolo7d synth video OUT.mp4 [--width N] [--height N] [--fps X] [--seconds X] [--seed N]
                                             synthetic moving scene (needs ffmpeg)
  yolo7d version
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		err = cmdRun(rest, stderr)
	case "install":
		err = cmdInstall(rest, stdout, stderr)
	case "uninstall":
		err = agent.Uninstall("")
	case "start", "stop", "restart":
		err = agent.Control(cmd)
	case "status":
		var st string
		if st, err = agent.Status(); err == nil {
			fmt.Fprintln(stdout, st)
		}
	case "config":
		err = cmdConfig(rest, stdout, stderr)
	case "model":
		err = cmdModel(rest, stdout, stderr)
	case "detect":
		err = cmdDetect(rest, stdout, stderr)
	case "import":
		err = cmdImport(rest, stdout, stderr)
	case "export":
		err = cmdExport(rest, stdout, stderr)
	case "forward":
		err = cmdForward(rest, stdout, stderr)
	case "bench":
		err = cmdBench(rest, stdout, stderr)
	case "synth":
		err = cmdSynth(rest, stdout, stderr)
	case "finetune", "eval", "capture":
		// Ctrl-C (or SIGTERM) cancels the run cleanly through its context.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		switch cmd {
		case "finetune":
			err = cmdFinetune(ctx, rest, stdout, stderr, defaultTools())
		case "eval":
			err = cmdEval(ctx, rest, stdout, stderr, defaultTools())
		default:
			err = cmdCapture(ctx, rest, stdout, stderr)
		}
		stop()
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "yolo7d", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "yolo7d: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if errors.Is(err, flag.ErrHelp) {
		return 2
	}
	if err != nil {
		fmt.Fprintf(stderr, "yolo7d: %v\n", err)
		return 1
	}
	return 0
}

// defaultConfig is /etc/yolo7d/config.toml when it exists, else ./config.toml.
func defaultConfig() string {
	const system = "/etc/yolo7d/config.toml"
	if _, err := os.Stat(system); err == nil {
		return system
	}
	return "config.toml"
}

func cmdRun(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := fs.String("config", defaultConfig(), "configuration `file`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return agent.Run(agent.Options{ConfigPath: *cfg, LogOutput: stderr, Version: version})
}

func cmdInstall(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("install", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o agent.InstallOptions
	fs.StringVar(&o.ConfigPath, "config", "/etc/yolo7d/config.toml", "configuration `file` the service uses")
	fs.StringVar(&o.UnitDir, "unit-dir", "", "directory for yolo7d.service (default /etc/systemd/system)")
	fs.StringVar(&o.ExecPath, "exec", "", "path of the yolo7d binary the unit runs (default: this one)")
	fs.StringVar(&o.User, "user", "", "run the service as this `account` (default: a systemd DynamicUser)")
	fs.BoolVar(&o.NoSystemctl, "no-systemctl", false, "only write the unit file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := agent.Install(o); err != nil {
		return err
	}
	dir := o.UnitDir
	if dir == "" {
		dir = "/etc/systemd/system"
	}
	fmt.Fprintf(stdout, "installed %s\n", filepath.Join(dir, agent.ServiceName+".service"))
	return nil
}

func cmdConfig(args []string, stdout, stderr io.Writer) error {
	if len(args) != 2 || args[0] != "check" {
		fmt.Fprint(stderr, "usage: yolo7d config check FILE\n")
		return flag.ErrHelp
	}
	cfg, warnings, err := agent.LoadWithWarnings(args[1])
	if err != nil {
		return err
	}
	for _, w := range warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	out, err := cfg.Effective()
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "# %s is valid; effective configuration:\n", args[1])
	_, err = stdout.Write(out)
	return err
}

func cmdDetect(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("detect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o detectOptions
	fs.StringVar(&o.model, "m", "", "model `file` (.onnx)")
	fs.Float64Var(&o.conf, "conf", 0.25, "confidence threshold")
	fs.Float64Var(&o.iou, "iou", 0.45, "NMS IoU threshold")
	fs.IntVar(&o.img, "img", 640, "network input size")
	fs.StringVar(&o.annotate, "annotate", "", "write annotated JPEGs to `dir`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.model == "" || fs.NArg() == 0 {
		fmt.Fprint(stderr, "usage: yolo7d detect -m MODEL [--conf X] [--iou X] [--annotate DIR] IMAGE...\n")
		return flag.ErrHelp
	}
	results, err := detectImages(context.Background(), o, fs.Args())
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(results)
}

func cmdModel(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "init" {
		fmt.Fprint(stderr, modelInitUsage)
		return flag.ErrHelp
	}
	return cmdModelInit(args[1:], stdout, stderr)
}

// splitSource takes a leading positional argument off args, so flags may
// come after it: yolo7d import SRC -o OUT.
func splitSource(args []string) (string, []string) {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return args[0], args[1:]
	}
	return "", args
}

// convertArgs parses the flags of import and export, which share their
// shape: SRC -o OUT [--img N], SRC before or after the flags.
func convertArgs(name, usage, outHelp string, imgDefault int, imgHelp string, args []string, stderr io.Writer) (src, out string, img int, err error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := fs.String("o", "", outHelp)
	n := fs.Int("img", imgDefault, imgHelp)
	src, args = splitSource(args)
	if err := fs.Parse(args); err != nil {
		return "", "", 0, err
	}
	if src == "" && fs.NArg() == 1 {
		src = fs.Arg(0)
	}
	if src == "" || *o == "" {
		fmt.Fprint(stderr, usage)
		return "", "", 0, flag.ErrHelp
	}
	return src, *o, *n, nil
}

func cmdImport(args []string, stdout, stderr io.Writer) error {
	src, out, img, err := convertArgs("import", "usage: yolo7d import SRC -o MODEL.safetensors|OUT.onnx [--img N]\n",
		"output `file`: .safetensors (native) or .onnx (deploy form, raw outputs)",
		640, "input size of the model (multiple of 32)", args, stderr)
	if err != nil {
		return err
	}
	if err := importModelFile(src, out, img, "yolo7d "+version); err != nil {
		return fmt.Errorf("import %s: %w", src, err)
	}
	fmt.Fprintf(stdout, "wrote %s\n", out)
	return nil
}

func cmdExport(args []string, stdout, stderr io.Writer) error {
	src, out, img, err := convertArgs("export", "usage: yolo7d export MODEL -o OUT.onnx [--img N]\n",
		"output `file` (.onnx)", 0, "input size (multiple of 32; default: the model's, else 640)", args, stderr)
	if err != nil {
		return err
	}
	if err := exportModel(src, out, img); err != nil {
		return fmt.Errorf("export %s: %w", src, err)
	}
	fmt.Fprintf(stdout, "wrote %s\n", out)
	return nil
}

func cmdForward(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("forward", flag.ContinueOnError)
	fs.SetOutput(stderr)
	model := fs.String("m", "", "model `file` (.safetensors, .onnx or .pt)")
	input := fs.String("input", "", "input `file` (.npy, float32 1x3xSxS)")
	outDir := fs.String("out-dir", "", "output `dir` for p3.npy, p4.npy, p5.npy")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *model == "" || *input == "" || *outDir == "" || fs.NArg() != 0 {
		fmt.Fprint(stderr, "usage: yolo7d forward -m MODEL --input X.npy --out-dir DIR\n")
		return flag.ErrHelp
	}
	files, err := forwardNPY(*model, *input, *outDir)
	if err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	for _, f := range files {
		fmt.Fprintf(stdout, "wrote %s\n", f)
	}
	return nil
}

func cmdBench(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o benchOptions
	fs.StringVar(&o.model, "m", "", "model `file` (default: a generated random 80-class model)")
	sizes := fs.String("sizes", "640,416,320", "comma-separated input sizes")
	backends := fs.String("backends", "cpu,opencv", "comma-separated backends: cpu, opencv, cudnn, cudnn-fp16 (NVIDIA GPU)")
	fs.IntVar(&o.runs, "runs", 20, "timed runs per size and backend")
	fs.IntVar(&o.warmup, "warmup", 2, "untimed runs before them")
	fs.IntVar(&o.threads, "threads", 0, "threads (0 = all cores)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fmt.Fprint(stderr, "usage: yolo7d bench [-m MODEL] [--sizes 640,416,320] [--backends cpu,opencv] [--runs N] [--json]\n")
		return flag.ErrHelp
	}
	var err error
	if o.sizes, err = parseSizes(*sizes); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if o.backends, err = parseBackends(*backends); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	rep, err := runBench(context.Background(), o)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return writeBench(stdout, rep, *asJSON)
}
