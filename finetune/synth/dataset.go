package synth

import (
	"bufio"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// DefaultDatasetSize is the image side of a dataset whose options leave
// Config zero.
const DefaultDatasetSize = 256

// maxDatasetImages bounds the images of one split: file names have six
// digits.
const maxDatasetImages = 1_000_000

// DatasetOptions sets what WriteDataset writes.
type DatasetOptions struct {
	// Config sets the scenes; the zero Config means
	// DefaultConfig(DefaultDatasetSize).
	Config Config
	// Train and Val are the number of images of each split (at least one
	// image in all).
	Train, Val int
	// Seed selects the scenes: the same seed and options write the same
	// bytes. The val split draws from its own stream, so its images do
	// not depend on Train.
	Seed uint64
	// JPEG writes .jpg images (quality 90) instead of .png.
	JPEG bool
	// Overwrite lets WriteDataset replace the images/, labels/ and
	// data.yaml of a folder that is not empty (other entries are kept).
	// Without it a non-empty folder is an error.
	Overwrite bool
}

// config returns the scenes' configuration, with the zero Config meaning
// the default.
func (o DatasetOptions) config() Config {
	if o.Config == (Config{}) {
		return DefaultConfig(DefaultDatasetSize)
	}
	return o.Config
}

// Validate reports the first unusable option.
func (o DatasetOptions) Validate() error {
	switch {
	case o.Train < 0 || o.Val < 0:
		return fmt.Errorf("synth: dataset of %d train and %d val images (want >= 0)", o.Train, o.Val)
	case o.Train+o.Val == 0:
		return errors.New("synth: dataset of no images (want train + val >= 1)")
	case o.Train > maxDatasetImages || o.Val > maxDatasetImages:
		return fmt.Errorf("synth: dataset of %d train and %d val images (at most %d per split)", o.Train, o.Val, maxDatasetImages)
	}
	return o.config().Validate()
}

// datasetEntries are the entries of a dataset folder that WriteDataset
// owns, in the order it installs them (data.yaml last: a folder with a
// data.yaml is complete).
var datasetEntries = [...]string{"images", "labels", "data.yaml"}

// WriteDataset writes a synthetic detection dataset in the YOLO layout the
// official YOLOv7 and Ultralytics tools (and finetune.LoadDataYAML) read:
//
//	dir/images/{train,val}/NNNNNN.png  (or .jpg: JPEG quality 90)
//	dir/labels/{train,val}/NNNNNN.txt  one "cls cx cy w h" line per object,
//	                                   normalised, 6 decimals
//	dir/data.yaml                      train: images/train, val: images/val,
//	                                   nc: 3, names: [circle, square, triangle]
//
// The content is a pure function of the options. dir is created when
// missing; an existing dir must be empty unless o.Overwrite. The dataset
// is written into a temporary folder next to dir and then moved into dir
// entry by entry, data.yaml last, so an interrupted run never leaves a
// data.yaml beside partial splits.
func WriteDataset(dir string, o DatasetOptions) (err error) {
	if err := o.Validate(); err != nil {
		return err
	}
	if dir == "" {
		return errors.New("synth: dataset folder not given")
	}
	if err := checkDatasetDir(dir, o.Overwrite); err != nil {
		return err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("synth: dataset folder %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("synth: dataset folder: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(abs), "."+filepath.Base(abs)+".tmp-*")
	if err != nil {
		return fmt.Errorf("synth: dataset folder %s: %w", dir, err)
	}
	defer func() {
		if rerr := os.RemoveAll(tmp); rerr != nil && err == nil {
			err = fmt.Errorf("synth: remove temporary folder: %w", rerr)
		}
	}()
	cfg := o.config()
	for _, sp := range []struct {
		name string
		n    int
		seed uint64
	}{{"train", o.Train, o.Seed}, {"val", o.Val, splitSeed(o.Seed, 1)}} {
		if err := writeSplit(tmp, sp.name, sp.n, cfg, sp.seed, o.JPEG); err != nil {
			return fmt.Errorf("synth: %s split: %w", sp.name, err)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, "data.yaml"), []byte(dataYAML(cfg, o)), 0o644); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	for _, e := range datasetEntries {
		dst := filepath.Join(abs, e)
		if err := os.RemoveAll(dst); err != nil {
			return fmt.Errorf("synth: replace %s: %w", dst, err)
		}
		if err := os.Rename(filepath.Join(tmp, e), dst); err != nil {
			return fmt.Errorf("synth: install %s: %w", dst, err)
		}
	}
	return nil
}

// checkDatasetDir fails when dir is not a folder, or is a non-empty one
// and overwrite is false.
func checkDatasetDir(dir string, overwrite bool) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("synth: dataset folder: %w", err)
	case !st.IsDir():
		return fmt.Errorf("synth: dataset folder %s exists and is not a folder", dir)
	}
	if overwrite {
		return nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("synth: dataset folder: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(3)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("synth: dataset folder %s: %w", dir, err)
	}
	if len(names) > 0 {
		return fmt.Errorf("synth: dataset folder %s is not empty (holds %s): choose an empty or new folder, or overwrite it", dir, strings.Join(names, ", "))
	}
	return nil
}

// splitSeed derives an independent seed for stream k from seed (the
// SplitMix64 finaliser), so the splits of one seed do not share scenes
// with each other or with nearby seeds.
func splitSeed(seed, k uint64) uint64 {
	z := seed + k*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// dataYAML returns the dataset's data.yaml.
func dataYAML(cfg Config, o DatasetOptions) string {
	format := "png"
	if o.JPEG {
		format = "jpg"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Synthetic shapes written by yolo7d (finetune/synth): seed %d, %d train and %d val %dx%d %s images.\n",
		o.Seed, o.Train, o.Val, cfg.Width, cfg.Height, format)
	b.WriteString("# Paths are relative to this file's folder.\n")
	b.WriteString("train: images/train\nval: images/val\n")
	fmt.Fprintf(&b, "nc: %d\nnames: [%s]\n", len(classNames), strings.Join(classNames[:], ", "))
	return b.String()
}

// writeSplit draws n scenes from seed and writes them under
// root/images/split and root/labels/split. Scenes are drawn in order on
// one goroutine and encoded on all cores.
func writeSplit(root, split string, n int, cfg Config, seed uint64, jpg bool) error {
	imgDir := filepath.Join(root, "images", split)
	lblDir := filepath.Join(root, "labels", split)
	for _, d := range []string{imgDir, lblDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	g, err := New(cfg, seed)
	if err != nil {
		return err
	}
	ext := ".png"
	if jpg {
		ext = ".jpg"
	}
	type job struct {
		i int
		s Scene
	}
	jobs := make(chan job)
	done := make(chan struct{})
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	fail := func(err error) {
		once.Do(func() { firstErr = err; close(done) })
	}
	for range max(1, min(runtime.GOMAXPROCS(0), n)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				name := fmt.Sprintf("%06d", j.i)
				if err := writeImage(filepath.Join(imgDir, name+ext), j.s.Image, jpg); err != nil {
					fail(err)
					continue
				}
				if err := os.WriteFile(filepath.Join(lblDir, name+".txt"), []byte(FormatLabels(j.s.Labels)), 0o644); err != nil {
					fail(err)
				}
			}
		}()
	}
produce:
	for i := range n {
		s := g.Scene()
		select {
		case jobs <- job{i, s}:
		case <-done:
			break produce
		}
	}
	close(jobs)
	wg.Wait()
	return firstErr
}

// writeImage encodes img as PNG, or JPEG quality 90, into path.
func writeImage(path string, img image.Image, jpg bool) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 64<<10)
	if jpg {
		err = jpeg.Encode(w, img, &jpeg.Options{Quality: 90})
	} else {
		err = png.Encode(w, img)
	}
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// FormatLabels returns labels in the YOLO text form: one
// "class cx cy w h" line per label, coordinates with 6 decimals.
func FormatLabels(labels []Label) string {
	var b strings.Builder
	for _, l := range labels {
		fmt.Fprintf(&b, "%d %.6f %.6f %.6f %.6f\n", l.Class, l.X, l.Y, l.W, l.H)
	}
	return b.String()
}
