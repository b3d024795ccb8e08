package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/yolo7d/yolo7d/finetune"
	"github.com/yolo7d/yolo7d/tiny"
)

// TestFinetuneAndEvalFlags: bad or missing values exit with status 2 and
// say what is wrong.
func TestFinetuneAndEvalFlags(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"finetune without flags", []string{"finetune"}, "--data DATA.yaml is required"},
		{"finetune without model", []string{"finetune", "--data", "d.yaml"}, "-m BASE is required"},
		{"finetune bad epochs", []string{"finetune", "--data", "d.yaml", "-m", "m.onnx", "--epochs", "0"}, "--epochs 0: want 1..1000"},
		{"finetune epochs not a number", []string{"finetune", "--data", "d.yaml", "-m", "m.onnx", "--epochs", "ten"}, `invalid value "ten" for flag -epochs`},
		{"finetune bad img", []string{"finetune", "--data", "d.yaml", "-m", "m.onnx", "--img", "100"}, "multiple of 32"},
		{"finetune bad batch", []string{"finetune", "--data", "d.yaml", "-m", "m.onnx", "--batch", "0"}, "--batch 0: want 1..256"},
		{"finetune bad freeze", []string{"finetune", "--data", "d.yaml", "-m", "m.onnx", "--freeze", "78"}, "--freeze 78"},
		{"finetune bad threads", []string{"finetune", "--data", "d.yaml", "-m", "m.onnx", "--threads", "-1"}, "--threads -1"},
		{"finetune bad seed", []string{"finetune", "--data", "d.yaml", "-m", "m.onnx", "--seed", "-3"}, "flag -seed"},
		{"finetune bad margin", []string{"finetune", "--data", "d.yaml", "-m", "m.onnx", "--margin", "3"}, "--margin 3"},
		{"finetune aux and no-aux", []string{"finetune", "--data", "d.yaml", "-m", "m.onnx", "--aux", "--no-aux"}, "contradict"},
		{"finetune unknown flag", []string{"finetune", "--data", "d.yaml", "-m", "m.onnx", "--lr", "0.1"}, "flag provided but not defined: -lr"},
		{"finetune extra argument", []string{"finetune", "--data", "d.yaml", "-m", "m.onnx", "x"}, `unexpected argument "x"`},
		{"finetune bad bn", []string{"finetune", "--data", "d.yaml", "-m", "m.onnx", "--bn", "sync"}, `--bn "sync": want frozen or batch`},
		{"finetune bad lr0", []string{"finetune", "--data", "d.yaml", "-m", "m.onnx", "--lr0", "0"}, "--lr0 0: want (0, 1]"},
		{"finetune bad nbs", []string{"finetune", "--data", "d.yaml", "-m", "m.onnx", "--nbs", "-1"}, "--nbs -1"},
		{"finetune bad output", []string{"finetune", "--data", "d.yaml", "-m", "m.onnx", "-o", "m.pt"}, "-o m.pt: want a .safetensors (native) or .onnx"},
		{"finetune bad replay mix", []string{"finetune", "--data", "d.yaml", "-m", "m.onnx", "--replay", "a.yaml", "--replay-mix", "0.95"}, "--replay-mix 0.95"},
		{"finetune replay mix alone", []string{"finetune", "--data", "d.yaml", "-m", "m.onnx", "--replay-mix", "0.3"}, "--replay-mix needs --replay"},
		{"finetune over its base", []string{"finetune", "--data", "d.yaml", "-m", "m.onnx", "-o", "./m.onnx"}, "overwrite the base"},
		{"eval without flags", []string{"eval"}, "-m MODEL is required"},
		{"eval without data", []string{"eval", "-m", "m.onnx"}, "--data DATA.yaml is required"},
		{"eval bad split", []string{"eval", "-m", "m.onnx", "--data", "d.yaml", "--split", "dev"}, `--split "dev"`},
		{"eval bad img", []string{"eval", "-m", "m.onnx", "--data", "d.yaml", "--img", "33"}, "multiple of 32"},
		{"eval bad threads", []string{"eval", "-m", "m.onnx", "--data", "d.yaml", "--threads", "-2"}, "--threads -2"},
		{"eval unknown flag", []string{"eval", "-m", "m.onnx", "--data", "d.yaml", "--conf", "0.1"}, "flag provided but not defined: -conf"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := run(tt.args, &out, &errOut)
			if code != 2 || !strings.Contains(errOut.String(), tt.stderr) || out.Len() != 0 {
				t.Errorf("yolo7d %v: exit %d, stdout %q, stderr %q; want exit 2 and stderr with %q",
					tt.args, code, out.String(), errOut.String(), tt.stderr)
			}
		})
	}
}

// TestParseFinetuneFlags: values reach the RunConfig, and the defaults.
func TestParseFinetuneFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want func(finetune.RunConfig) bool
	}{
		{"defaults", []string{"--data", "d.yaml", "-m", "dir/base.safetensors"}, func(rc finetune.RunConfig) bool {
			return rc.Data == "d.yaml" && rc.Base == "dir/base.safetensors" && rc.Out == "dir/base-finetuned.safetensors" &&
				rc.WorkDir == filepath.Join("dir", "finetune-base-finetuned") && rc.Epochs == finetune.DefaultEpochs &&
				rc.Batch == finetune.DefaultBatch && rc.Aux && !rc.Resume && rc.ImgSize == 0 && rc.Threads == 0 && rc.Margin == 0.005 &&
				rc.BN == finetune.DefaultRunConfig().BN && rc.Hyp == finetune.DefaultRunConfig().Hyp && !rc.StrictData &&
				rc.NominalBatch == finetune.DefaultRunConfig().NominalBatch
		}},
		{"a .pt base becomes a native model", []string{"--data", "d.yaml", "-m", "yolov7-tiny.pt"}, func(rc finetune.RunConfig) bool {
			return rc.Out == "yolov7-tiny-finetuned.safetensors"
		}},
		{"an .onnx base stays ONNX", []string{"--data", "d.yaml", "-m", "b.onnx"}, func(rc finetune.RunConfig) bool {
			return rc.Out == "b-finetuned.onnx"
		}},
		{"training settings", []string{"--data", "d.yaml", "-m", "b.onnx", "--bn", "batch", "--lr0", "0.01", "--nbs", "16", "--strict"},
			func(rc finetune.RunConfig) bool {
				return rc.BN == tiny.BNBatch && rc.Hyp.LR0 == 0.01 && rc.NominalBatch == 16 && rc.StrictData
			}},
		{"replay", []string{"--data", "d.yaml", "-m", "b.onnx", "--replay", "a/data.yaml", "--replay-mix", "0.25", "--max-replay-drop", "0.05"},
			func(rc finetune.RunConfig) bool {
				return rc.Replay == "a/data.yaml" && rc.ReplayMix == 0.25 && rc.MaxReplayDrop == 0.05
			}},
		{"everything", []string{"--data", "d.yaml", "-m", "b.onnx", "-o", "o/t.onnx", "--epochs", "5", "--img", "320", "--batch", "4",
			"--freeze", "50", "--no-aux", "--resume", "--workdir", "w", "--threads", "3", "--seed", "42", "--margin", "0"},
			func(rc finetune.RunConfig) bool {
				return rc.Out == "o/t.onnx" && rc.Epochs == 5 && rc.ImgSize == 320 && rc.Batch == 4 && rc.Freeze == 50 && !rc.Aux &&
					rc.Resume && rc.WorkDir == "w" && rc.Threads == 3 && rc.Seed == 42 && rc.Margin == 0
			}},
		{"aux=false", []string{"--data", "d.yaml", "-m", "b.onnx", "--aux=false"}, func(rc finetune.RunConfig) bool { return !rc.Aux }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var errOut bytes.Buffer
			rc, err := parseFinetuneFlags(tt.args, &errOut)
			if err != nil {
				t.Fatalf("%v: %s", err, errOut.String())
			}
			if !tt.want(rc) {
				t.Errorf("RunConfig = %+v", rc)
			}
		})
	}
}

// fakeTune reports two epochs of progress and returns a result, or waits
// for cancellation when block is set.
func fakeTune(block bool) finetune.Tuner {
	return func(ctx context.Context, rc finetune.RunConfig, progress func(finetune.Progress)) (*finetune.Result, error) {
		progress(finetune.Progress{State: finetune.StateLoading})
		for e := 1; e <= 2; e++ {
			p := finetune.Progress{State: finetune.StateTraining, Epoch: e, Epochs: 2, Batches: 3,
				Loss: finetune.LossItems{Box: 0.1, Obj: 0.2, Cls: 0.3, Total: 0.6}, ETA: time.Second}
			for b := 1; b <= 3; b++ {
				p.Batch = b
				progress(p)
			}
			p.Validated, p.ValMAP50, p.ValMAP50_95 = true, 0.25*float64(e), 0.1*float64(e)
			progress(p)
		}
		if block {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		progress(finetune.Progress{State: finetune.StateEvaluating, Epoch: 2, Epochs: 2, ValMAP50: 0.5, ValMAP50_95: 0.3})
		return &finetune.Result{Candidate: rc.Out, Promote: true, Reason: "better", Epochs: 2,
			Tuned: finetune.Metrics{MAP50: 0.5, MAP50_95: 0.3}}, nil
	}
}

func TestCmdFinetuneProgressAndResult(t *testing.T) {
	t.Chdir(t.TempDir()) // the run makes its work directory next to -o
	var out, errOut bytes.Buffer
	err := cmdFinetune(context.Background(), []string{"--data", "d.yaml", "-m", "b.onnx"}, &out, &errOut, cliTools{tune: fakeTune(false)})
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Candidate string
		Promote   bool
		Reason    string
		Tuned     struct {
			MAP50 float64 `json:"map50"`
		}
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || !res.Promote || res.Candidate != "b-finetuned.onnx" || res.Tuned.MAP50 != 0.5 || res.Reason != "better" {
		t.Fatalf("stdout is not the result: %v %q", err, out.String())
	}
	// Not a terminal: one line per epoch and per state change, no \r.
	log := errOut.String()
	if strings.Contains(log, "\r") || strings.Count(log, "\n") != 4 ||
		!strings.Contains(log, "epoch 1/2 batch 3/3 loss 0.6000 (box 0.1000 obj 0.2000 cls 0.3000) val mAP@0.5 0.2500 mAP@0.5:0.95 0.1000") ||
		!strings.Contains(log, "epoch 2/2 batch 3/3") ||
		!strings.Contains(log, "val mAP@0.5 0.5000") {
		t.Errorf("progress log:\n%s", log)
	}

	// A terminal: one line rewritten with \r, kept at the end of each
	// epoch (two epochs, then the final line).
	var tty bytes.Buffer
	p := &progressPrinter{w: &tty, tty: true, start: time.Now()}
	fakeTune(false)(context.Background(), finetune.RunConfig{}, p.update)
	p.finish()
	if !strings.Contains(tty.String(), "\r") || strings.Count(tty.String(), "\n") != 3 || !strings.Contains(tty.String(), "val mAP@0.5 0.5000 mAP@0.5:0.95 0.2000") {
		t.Errorf("terminal progress %q", tty.String())
	}
}

func TestCmdFinetuneInterruptNamesTheCheckpoints(t *testing.T) {
	t.Chdir(t.TempDir()) // --workdir ck is made here
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	var out, errOut bytes.Buffer
	err := cmdFinetune(ctx, []string{"--data", "d.yaml", "-m", "b.onnx", "--workdir", "ck"}, &out, &errOut, cliTools{tune: fakeTune(true)})
	if err == nil || !strings.Contains(err.Error(), "interrupted") || !strings.Contains(err.Error(), "--resume --workdir ck") {
		t.Fatalf("err = %v", err)
	}
	if out.Len() != 0 {
		t.Errorf("stdout after an interrupt: %q", out.String())
	}
}

func TestCmdFinetuneWithoutTrainer(t *testing.T) {
	err := cmdFinetune(context.Background(), []string{"--data", "d.yaml", "-m", "b.onnx"}, &bytes.Buffer{}, &bytes.Buffer{}, cliTools{})
	if err == nil || !strings.Contains(err.Error(), "not available") {
		t.Fatalf("err = %v", err)
	}
}

func TestCmdEval(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "m.onnx")
	if err := tiny.WriteRandomONNX(model, tiny.Config{Act: "relu", NC: 2, Seed: 1}, 320); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "images"), 0o755)
	data := filepath.Join(dir, "data.yaml")
	os.WriteFile(data, []byte("train: images\nval: images\nnames: [cat, dog]\n"), 0o644)
	var gotImg int
	var gotSplit string
	eval := func(ctx context.Context, m *tiny.Model, dataYAML, split string, img, threads int) (finetune.Metrics, error) {
		gotImg, gotSplit = img, split
		if dataYAML != data || m == nil {
			return finetune.Metrics{}, errors.New("wrong arguments")
		}
		return finetune.Metrics{P: 0.7, R: 0.6, MAP50: 0.65, MAP50_95: 0.4, PerClass: []finetune.ClassMetrics{
			{Class: 0, NGT: 5, P: 0.8, R: 0.7, AP50: 0.7, AP50_95: 0.5},
			{Class: 1, NGT: 3, P: 0.6, R: 0.5, AP50: 0.6, AP50_95: 0.3}}}, nil
	}
	tools := cliTools{eval: eval}

	var out, errOut bytes.Buffer
	if err := cmdEval(context.Background(), []string{"-m", model, "--data", data, "--json"}, &out, &errOut, tools); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Precision, Recall, MAP50, MAP50_95 float64
		PerClass                           []struct {
			Class   int
			Name    string
			Targets int
			MAP50   float64 `json:"map50"`
		} `json:"per_class"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Precision != 0.7 || len(rep.PerClass) != 2 || rep.PerClass[1].Name != "dog" || rep.PerClass[1].Targets != 3 || rep.PerClass[0].MAP50 != 0.7 {
		t.Errorf("JSON report %+v from %s", rep, out.String())
	}
	if gotImg != 320 || gotSplit != "val" {
		t.Errorf("evaluated at img %d split %q, want the model's 320 and val", gotImg, gotSplit)
	}

	out.Reset()
	if err := cmdEval(context.Background(), []string{"-m", model, "--data", data, "--split", "train", "--img", "256"}, &out, &errOut, tools); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{"mAP@.5:.95", "all", "cat", "dog", "0.650", "0.400"} {
		if !strings.Contains(text, want) {
			t.Errorf("table lacks %q:\n%s", want, text)
		}
	}
	if gotImg != 256 || gotSplit != "train" {
		t.Errorf("evaluated at img %d split %q", gotImg, gotSplit)
	}

	if err := cmdEval(context.Background(), []string{"-m", model, "--data", data}, &out, &errOut, cliTools{}); err == nil {
		t.Error("eval without an evaluator succeeded")
	}
	var code bytes.Buffer
	if c := run([]string{"eval", "-m", model, "--data", filepath.Join(dir, "none.yaml")}, &bytes.Buffer{}, &code); c != 1 {
		t.Errorf("eval of a missing dataset: exit %d, %s", c, code.String())
	}
	_ = flag.ErrHelp
}
