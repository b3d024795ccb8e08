package finetune

import (
	"context"
	"errors"
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
