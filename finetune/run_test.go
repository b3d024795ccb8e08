package finetune

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/yolo7d/yolo7d/finetune/synth"
	"github.com/yolo7d/yolo7d/tiny"
)

// runFixture writes a small synthetic dataset and a random scaled base
// model, and returns a RunConfig for them.
func runFixture(t *testing.T) RunConfig {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := synth.WriteDataset(data, synth.DatasetOptions{Config: synth.DefaultConfig(96), Train: 16, Val: 8, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	spec, err := tiny.YOLOv7TinyScaled(0.5, 0.25)
	if err != nil {
		t.Fatal(err)
	}
	m, err := tiny.NewRandom(tiny.Config{Act: tiny.ActReLU, NC: 3, Names: synth.ClassNames(), Seed: 1, Spec: &spec})
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(dir, "base.safetensors")
	if err := tiny.WriteModelFile(base, m, tiny.ModelMeta{InputSize: 96}); err != nil {
		t.Fatal(err)
	}
	return RunConfig{Data: filepath.Join(data, "data.yaml"), Base: base, Out: filepath.Join(dir, "out.safetensors"),
		WorkDir: filepath.Join(dir, "work"), Epochs: 2, Batch: 8, Aux: true, Threads: 2, Seed: 1}
}

func TestRunTrainsEvaluatesAndWrites(t *testing.T) {
	cfg := runFixture(t)
	if err := os.MkdirAll(cfg.WorkDir, 0o755); err != nil {
		t.Fatal(err)
	}
	var states []string
	var last Progress
	res, err := Run(context.Background(), cfg, func(p Progress) {
		if len(states) == 0 || states[len(states)-1] != p.State {
			states = append(states, p.State)
		}
		last = p
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{StateLoading, StateTraining, StateEvaluating, StateDone}
	if strings.Join(states, ",") != strings.Join(want, ",") {
		t.Errorf("states %v, want %v", states, want)
	}
	if last.Epoch != 2 || last.State != StateDone {
		t.Errorf("last progress %+v", last)
	}
	m, meta, err := tiny.ReadModelFile(cfg.Out)
	if err != nil {
		t.Fatalf("candidate: %v", err)
	}
	if m.NC != 3 || len(m.Names) != 3 || m.Names[0] != "circle" || meta.InputSize != 96 {
		t.Errorf("candidate: nc %d names %v size %d", m.NC, m.Names, meta.InputSize)
	}
	if len(meta.Metrics) == 0 || res.Epochs != 2 || res.EpochDuration <= 0 || res.Reason == "" {
		t.Errorf("result %+v, metrics %s", res, meta.Metrics)
	}
	if _, err := os.Stat(filepath.Join(cfg.WorkDir, "last.ckpt")); err != nil {
		t.Errorf("no checkpoint: %v", err)
	}
	// The gate follows the numbers.
	if res.Promote != (res.Tuned.MAP50_95 >= res.Base.MAP50_95+cfg.Margin) {
		t.Errorf("promote %v with tuned %.4f, base %.4f", res.Promote, res.Tuned.MAP50_95, res.Base.MAP50_95)
	}
}

func TestRunCancelThenResume(t *testing.T) {
	cfg := runFixture(t)
	cfg.Epochs = 3
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var cancelled bool
	_, err := Run(ctx, cfg, func(p Progress) {
		if p.State == StateTraining && p.Epoch == 2 && p.Batch == 1 {
			cancel()
		}
		cancelled = cancelled || p.State == StateCancelled
	})
	if !errors.Is(err, context.Canceled) || !cancelled {
		t.Fatalf("cancelled run: err %v, cancelled state %v", err, cancelled)
	}
	if _, err := os.Stat(cfg.Out); !os.IsNotExist(err) {
		t.Fatalf("a cancelled run wrote the candidate (%v)", err)
	}
	cfg.Resume = true
	first := 0
	res, err := Run(context.Background(), cfg, func(p Progress) {
		if p.State == StateTraining && first == 0 {
			first = p.Epoch
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if first != 2 {
		t.Errorf("resumed run started at epoch %d, want 2 (epoch 1 was checkpointed)", first)
	}
	if res.Epochs != 3 {
		t.Errorf("result epochs %d", res.Epochs)
	}
	// The resumed run is the uninterrupted run: same weights, bit for bit.
	straight := cfg
	straight.Resume = false
	straight.Out = filepath.Join(filepath.Dir(cfg.Out), "straight.safetensors")
	straight.WorkDir = filepath.Join(filepath.Dir(cfg.Out), "work2")
	if _, err := Run(context.Background(), straight, nil); err != nil {
		t.Fatal(err)
	}
	a, _, err := tiny.ReadModelFile(cfg.Out)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := tiny.ReadModelFile(straight.Out)
	if err != nil {
		t.Fatal(err)
	}
	for i := range a.Convs {
		if !slices.Equal(a.Convs[i].Weight, b.Convs[i].Weight) || !slices.Equal(a.Convs[i].Bias, b.Convs[i].Bias) {
			t.Fatalf("%s: the resumed run's weights differ from the uninterrupted run's", a.Convs[i].ConvShape.Name)
		}
	}
	// A resume with other settings is refused.
	cfg.Batch = 4
	if _, err := Run(context.Background(), cfg, nil); err == nil || !strings.Contains(err.Error(), "batch") {
		t.Errorf("resume with another batch size: %v", err)
	}
}

func TestRunRejectsBadInput(t *testing.T) {
	good := runFixture(t)
	dir := t.TempDir()
	nc4 := filepath.Join(dir, "nc4.yaml")
	yaml := "train: " + filepath.Join(filepath.Dir(good.Data), "images", "train") + "\nval: " +
		filepath.Join(filepath.Dir(good.Data), "images", "val") + "\nnc: 4\nnames: [a, b, c, d]\n"
	if err := os.WriteFile(nc4, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		edit func(*RunConfig)
		want string
	}{
		{"missing data", func(c *RunConfig) { c.Data = filepath.Join(dir, "none.yaml") }, "none.yaml"},
		{"missing base", func(c *RunConfig) { c.Base = filepath.Join(dir, "none.safetensors") }, "none.safetensors"},
		{"class count", func(c *RunConfig) { c.Data = nc4 }, "4 classes"},
		{"absurd epochs", func(c *RunConfig) { c.Epochs = 1000000 }, "epochs"},
		{"bad size", func(c *RunConfig) { c.ImgSize = 100 }, "multiple of 32"},
		{"resume without checkpoint", func(c *RunConfig) { c.Resume = true }, "no checkpoint"},
		{"output format", func(c *RunConfig) { c.Out = filepath.Join(dir, "out.pt") }, "want a .safetensors (native) or .onnx"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := good
			c.edit(&cfg)
			_, err := Run(context.Background(), cfg, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one mentioning %q", err, c.want)
			}
			if _, err := os.Stat(cfg.Out); !os.IsNotExist(err) {
				t.Errorf("a failed run wrote %s", cfg.Out)
			}
		})
	}
}

// TestRunReportsBadLabels: bad label lines are skipped and reported with
// file and line (or fatal with StrictData, nothing written); an .onnx
// output is an ONNX export of the candidate with the training input size.
func TestRunReportsBadLabels(t *testing.T) {
	cfg := runFixture(t)
	cfg.Epochs = 1
	labels, err := filepath.Glob(filepath.Join(filepath.Dir(cfg.Data), "labels", "train", "*.txt"))
	if err != nil || len(labels) == 0 {
		t.Fatalf("no label files: %v", err)
	}
	bad := labels[0]
	text, err := os.ReadFile(bad)
	if err != nil {
		t.Fatal(err)
	}
	n := strings.Count(string(text), "\n")
	if err := os.WriteFile(bad, append(text, "7 0.5 0.5 0.1 0.1\n0 0.5 0.5\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	wantAt := []string{fmt.Sprintf("%s:%d:", bad, n+1), fmt.Sprintf("%s:%d:", bad, n+2)}

	strict := cfg
	strict.StrictData = true
	if _, err := Run(context.Background(), strict, nil); err == nil || !strings.Contains(err.Error(), wantAt[0]) {
		t.Fatalf("strict run: error %v, want one naming %s", err, wantAt[0])
	}
	if _, err := os.Stat(strict.Out); !os.IsNotExist(err) {
		t.Fatalf("a strict run that failed wrote %s", strict.Out)
	}

	cfg.Out = strings.TrimSuffix(cfg.Out, ".safetensors") + ".onnx"
	res, err := Run(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.DataIssueCount != 2 || len(res.DataIssues) != 2 ||
		!strings.HasPrefix(res.DataIssues[0], wantAt[0]) || !strings.HasPrefix(res.DataIssues[1], wantAt[1]) {
		t.Errorf("data issues %d %q, want two at %v", res.DataIssueCount, res.DataIssues, wantAt)
	}
	om, err := tiny.ReadONNXFile(cfg.Out)
	if err != nil {
		t.Fatalf("the .onnx candidate: %v", err)
	}
	if got := onnxInputSize(om); got != 96 {
		t.Errorf("the .onnx candidate has input size %d, want 96", got)
	}
}

// TestMixReplay: the mixed training set keeps every new image and adds
// old ones to about the requested fraction, the same ones for the same
// seed (a resumed run trains on the same set), capped by what old has.
func TestMixReplay(t *testing.T) {
	mk := func(prefix string, n int) *Dataset {
		d := &Dataset{Split: "train"}
		for i := range n {
			d.Samples = append(d.Samples, Sample{ImagePath: fmt.Sprintf("%s/%03d.jpg", prefix, i)})
		}
		return d
	}
	train, old := mk("new", 160), mk("old", 400)
	for _, c := range []struct {
		mix     float64
		wantOld int
	}{{0.2, 40}, {1.0 / 3, 80}, {0.5, 160}, {0.8, 400}} {
		a := mixReplay(train, old, c.mix, 7)
		b := mixReplay(train, old, c.mix, 7)
		if len(a.Samples) != 160+c.wantOld {
			t.Errorf("mix %.2f: %d images, want %d", c.mix, len(a.Samples), 160+c.wantOld)
		}
		if !slices.EqualFunc(a.Samples[:160], train.Samples, func(x, y Sample) bool { return x.ImagePath == y.ImagePath }) {
			t.Errorf("mix %.2f: the new images are not all kept, in order", c.mix)
		}
		seen := map[string]bool{}
		for i, s := range a.Samples[160:] {
			if !strings.HasPrefix(s.ImagePath, "old/") || seen[s.ImagePath] {
				t.Fatalf("mix %.2f: added image %d is %s (old and distinct expected)", c.mix, i, s.ImagePath)
			}
			seen[s.ImagePath] = true
		}
		if !slices.EqualFunc(a.Samples, b.Samples, func(x, y Sample) bool { return x.ImagePath == y.ImagePath }) {
			t.Errorf("mix %.2f: two draws with one seed differ", c.mix)
		}
	}
	if len(train.Samples) != 160 {
		t.Error("mixReplay changed its input")
	}
	c := mixReplay(train, old, 0.2, 8)
	if slices.EqualFunc(c.Samples, mixReplay(train, old, 0.2, 7).Samples, func(x, y Sample) bool { return x.ImagePath == y.ImagePath }) {
		t.Error("seeds 7 and 8 draw the same replay images")
	}
}
