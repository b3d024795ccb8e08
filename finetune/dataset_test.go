package finetune

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fixtureColors are the pure colours of the fixture objects: object class
// c is drawn in fixtureColors[c].
var fixtureColors = [][3]uint8{
	{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {255, 255, 0},
	{0, 255, 255}, {255, 0, 255}, {255, 255, 255}, {255, 128, 0},
}

// fixtureRect is one filled rectangle of a fixture image, in pixels.
type fixtureRect struct {
	cls            int
	x1, y1, x2, y2 int
}

// drawFixture returns a w×h black image with the rectangles filled in
// their class colours.
func drawFixture(w, h int, rects ...fixtureRect) *image.RGBA {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 3; i < len(m.Pix); i += 4 {
		m.Pix[i] = 255
	}
	for _, r := range rects {
		c := fixtureColors[r.cls]
		for y := r.y1; y < r.y2; y++ {
			for x := r.x1; x < r.x2; x++ {
				m.SetRGBA(x, y, color.RGBA{c[0], c[1], c[2], 255})
			}
		}
	}
	return m
}

// labelLine is the YOLO label line of a rectangle on a w×h image.
func labelLine(r fixtureRect, w, h int) string {
	cx := float64(r.x1+r.x2) / 2 / float64(w)
	cy := float64(r.y1+r.y2) / 2 / float64(h)
	return fmt.Sprintf("%d %.6f %.6f %.6f %.6f\n", r.cls, cx, cy, float64(r.x2-r.x1)/float64(w), float64(r.y2-r.y1)/float64(h))
}

// writeFile writes data to path, creating its folders.
func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// encodePNG encodes an image as PNG.
func encodePNG(t testing.TB, m image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, m); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// encodeJPEG encodes an image as JPEG of quality 95.
func encodeJPEG(t testing.TB, m image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, m, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// fixtureImage is one image of a fixture dataset: its size, objects, and
// whether a label file is written.
type fixtureImage struct {
	name    string
	w, h    int
	rects   []fixtureRect
	noLabel bool
}

// standardFixture is 8 PNG images of different shapes, image i holding
// one rectangle of class i covering about 40% of each side.
func standardFixture() []fixtureImage {
	sizes := [][2]int{{64, 48}, {48, 64}, {64, 64}, {96, 60}, {60, 96}, {80, 80}, {128, 96}, {40, 64}}
	var out []fixtureImage
	for i, s := range sizes {
		w, h := s[0], s[1]
		x1, y1 := w/5+i%3, h/4+i%2
		r := fixtureRect{cls: i, x1: x1, y1: y1, x2: x1 + 2*w/5, y2: y1 + 2*h/5}
		out = append(out, fixtureImage{name: fmt.Sprintf("img%02d.png", i), w: w, h: h, rects: []fixtureRect{r}})
	}
	return out
}

// writeSplit writes images under dir/images/<split>/ and labels under
// dir/labels/<split>/.
func writeSplit(t testing.TB, dir, split string, imgs []fixtureImage) {
	t.Helper()
	for _, im := range imgs {
		m := drawFixture(im.w, im.h, im.rects...)
		var data []byte
		if strings.HasSuffix(im.name, ".jpg") {
			data = encodeJPEG(t, m)
		} else {
			data = encodePNG(t, m)
		}
		writeFile(t, filepath.Join(dir, "images", split, im.name), data)
		if im.noLabel {
			continue
		}
		var lb strings.Builder
		for _, r := range im.rects {
			lb.WriteString(labelLine(r, im.w, im.h))
		}
		base := strings.TrimSuffix(im.name, filepath.Ext(im.name))
		writeFile(t, filepath.Join(dir, "labels", split, base+".txt"), []byte(lb.String()))
	}
}

// openFixture writes the standard fixture as a train split with nc = 8 and
// opens it.
func openFixture(t testing.TB) *Dataset {
	t.Helper()
	dir := t.TempDir()
	writeSplit(t, dir, "train", standardFixture())
	writeFile(t, filepath.Join(dir, "data.yaml"), []byte("train: images/train\nval: images/train\nnc: 8\nnames: [a, b, c, d, e, f, g, h]\n"))
	cfg, err := LoadDataYAML(filepath.Join(dir, "data.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ds, err := OpenSplit(cfg, "train", SplitOptions{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

func TestDataYAMLForms(t *testing.T) {
	two := []fixtureImage{
		{name: "a.png", w: 32, h: 24, rects: []fixtureRect{{0, 2, 2, 10, 10}}},
		{name: "b.jpg", w: 24, h: 32, rects: []fixtureRect{{1, 4, 4, 20, 12}}},
	}
	tests := []struct {
		name      string
		yaml      string
		setup     func(t *testing.T, dir string)
		split     string
		wantN     int
		wantNames []string
	}{
		{
			name:      "folder and names list",
			yaml:      "train: images/train\nval: images/val\nnc: 2\nnames: [cat, dog]\n",
			split:     "train",
			wantN:     2,
			wantNames: []string{"cat", "dog"},
		},
		{
			name:      "names map without nc",
			yaml:      "train: images/train\nval: images/val\nnames:\n  1: dog\n  0: cat\n",
			split:     "val",
			wantN:     1,
			wantNames: []string{"cat", "dog"},
		},
		{
			name: "list file with ./ and bare relative lines",
			yaml: "train: lists/train.txt\nval: images/val\nnc: 2\nnames: [cat, dog]\n",
			setup: func(t *testing.T, dir string) {
				writeFile(t, filepath.Join(dir, "lists", "train.txt"), []byte("../images/train/a.png\n\n# a comment\n./../images/val/c.png\n"))
			},
			split:     "train",
			wantN:     2,
			wantNames: []string{"cat", "dog"},
		},
		{
			name:      "list of folders",
			yaml:      "train: [images/train, images/val]\nval: images/val\nnc: 2\nnames: [cat, dog]\n",
			split:     "train",
			wantN:     3,
			wantNames: []string{"cat", "dog"},
		},
		{
			name: "path root relative to the yaml",
			yaml: "path: ../data\ntrain: images/train\nval: images/val\ntest: images/val\nnc: 2\nnames: {0: cat, 1: dog}\n",
			setup: func(t *testing.T, dir string) {
				if err := os.MkdirAll(filepath.Join(dir, "conf"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(filepath.Join(dir, "data.yaml"), filepath.Join(dir, "conf", "data.yaml")); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(filepath.Join(dir, "images"), filepath.Join(dir, "data", "images")); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(filepath.Join(dir, "labels"), filepath.Join(dir, "data", "labels")); err != nil {
					t.Fatal(err)
				}
			},
			split:     "test",
			wantN:     1,
			wantNames: []string{"cat", "dog"},
		},
		{
			name:      "nc without names",
			yaml:      "train: images/train\nval: images/val\nnc: 3\n",
			split:     "train",
			wantN:     2,
			wantNames: []string{"class0", "class1", "class2"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeSplit(t, dir, "train", two)
			writeSplit(t, dir, "val", []fixtureImage{{name: "c.png", w: 20, h: 20, rects: []fixtureRect{{1, 5, 5, 15, 15}}}})
			writeFile(t, filepath.Join(dir, "data.yaml"), []byte(tc.yaml))
			if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
				t.Fatal(err)
			}
			yml := filepath.Join(dir, "data.yaml")
			if tc.setup != nil {
				tc.setup(t, dir)
				if _, err := os.Stat(yml); err != nil {
					yml = filepath.Join(dir, "conf", "data.yaml")
				}
			}
			cfg, err := LoadDataYAML(yml)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(cfg.Names, tc.wantNames) || cfg.NC != len(tc.wantNames) {
				t.Errorf("names %q nc %d, want %q", cfg.Names, cfg.NC, tc.wantNames)
			}
			ds, err := OpenSplit(cfg, tc.split, SplitOptions{Strict: true})
			if err != nil {
				t.Fatal(err)
			}
			if len(ds.Samples) != tc.wantN {
				t.Fatalf("%d samples, want %d: %+v", len(ds.Samples), tc.wantN, ds.Samples)
			}
			for _, s := range ds.Samples {
				if len(s.Labels) != 1 || s.Width == 0 || s.Height == 0 {
					t.Errorf("sample %s: %d labels, size %dx%d", s.ImagePath, len(s.Labels), s.Width, s.Height)
				}
			}
		})
	}
}

func TestDataYAMLErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error
	}{
		{"empty", "", []string{"data.yaml", "empty document"}},
		{"not a mapping", "- a\n- b\n", []string{"data.yaml:1", "mapping"}},
		{"syntax", "train: [a\nval: b\n", []string{"data.yaml", "yaml"}},
		{"no splits", "nc: 1\nnames: [a]\n", []string{"neither train nor val"}},
		{"nc mismatch", "train: a\nval: b\nnc: 3\nnames: [a, b]\n", []string{"data.yaml:4", "names", "2 names but nc is 3"}},
		{"nc not a number", "train: a\nval: b\nnc: many\nnames: [a]\n", []string{"data.yaml:3", "nc", "not an integer"}},
		{"nc zero", "train: a\nval: b\nnc: 0\n", []string{"data.yaml:3", "nc"}},
		{"names map gap", "train: a\nval: b\nnames:\n  0: a\n  2: c\n", []string{"data.yaml:5", "names", "class id 2"}},
		{"names map bad key", "train: a\nval: b\nnames: {x: a}\n", []string{"data.yaml:3", "names", "not a class id"}},
		{"names scalar", "train: a\nval: b\nnames: abc\n", []string{"data.yaml:3", "names", "list or a map"}},
		{"names missing", "train: a\nval: b\n", []string{"names", "missing"}},
		{"train mapping", "train: {a: b}\nval: b\nnc: 1\n", []string{"data.yaml:1", "train", "path or a list"}},
		{"val empty list", "train: a\nval: []\nnc: 1\n", []string{"data.yaml:2", "val", "empty list"}},
		{"duplicate key", "train: a\ntrain: b\nnc: 1\n", []string{"data.yaml:2", "train", "defined twice"}},
		{"path list", "path: [a]\ntrain: a\nnc: 1\n", []string{"data.yaml:1", "path"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseDataYAML("/x/data.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestDataOpenSplitErrors(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "data.yaml"), []byte("train: images/train\nval: nowhere\nnc: 1\nnames: [a]\n"))
	writeSplit(t, dir, "train", []fixtureImage{{name: "a.png", w: 20, h: 20}})
	cfg, err := LoadDataYAML(filepath.Join(dir, "data.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ split, want string }{
		{"val", "nowhere"},
		{"test", "test: split not given"},
		{"holdout", "unknown split"},
	} {
		_, err := OpenSplit(cfg, tc.split, SplitOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "data.yaml") {
			t.Errorf("split %s: error %v, want one naming data.yaml and %q", tc.split, err, tc.want)
		}
	}
	if _, err := LoadDataYAML(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: error %v", err)
	}
}

// issueStrings formats issues relative to dir.
func issueStrings(dir string, issues []Issue) []string {
	var out []string
	for _, is := range issues {
		rel, err := filepath.Rel(dir, is.Path)
		if err != nil {
			rel = is.Path
		}
		is.Path = filepath.ToSlash(rel)
		out = append(out, is.String())
	}
	return out
}

func TestDatasetLabelIssuesSkipVsStrict(t *testing.T) {
	dir := t.TempDir()
	imgs := []fixtureImage{
		{name: "bad.png", w: 32, h: 32, noLabel: true},
		{name: "bg.png", w: 32, h: 32, noLabel: true},
		{name: "good.png", w: 32, h: 32, rects: []fixtureRect{{0, 4, 4, 12, 12}}},
	}
	writeSplit(t, dir, "train", imgs)
	writeFile(t, filepath.Join(dir, "labels", "train", "bad.txt"), []byte(
		"0 0.5 0.5 0.2 0.2\n"+ // 1 ok
			"1 0.5 0.5 0.2\n"+ // 2 columns
			"0 0.5 x 0.2 0.2\n"+ // 3 not a number
			"0 0.5 nan 0.2 0.2\n"+ // 4 NaN
			"0 1.5 0.5 0.2 0.2\n"+ // 5 outside [0, 1]
			"2 0.5 0.5 0.2 0.2\n"+ // 6 class >= nc
			"0 0.5 0.5 0.2 0.2\n"+ // 7 duplicate of 1
			"\n"+ // 8 blank
			"1 0.1 0.1 0.3 0.1 0.2 0.4\n"+ // 9 segment, ok
			"-1 0.5 0.5 0.2 0.2\n")) // 10 negative class
	writeFile(t, filepath.Join(dir, "images", "train", "broken.jpg"), []byte("not a jpeg at all"))
	writeFile(t, filepath.Join(dir, "images", "train", "old.bmp"), []byte("BM"))
	writeFile(t, filepath.Join(dir, "images", "train", "tiny.png"), encodePNG(t, drawFixture(5, 40)))
	writeFile(t, filepath.Join(dir, "data.yaml"), []byte("train: images/train\nval: images/train\nnames: [a, b]\n"))
	cfg, err := LoadDataYAML(filepath.Join(dir, "data.yaml"))
	if err != nil {
		t.Fatal(err)
	}

	ds, err := OpenSplit(cfg, "train", SplitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := issueStrings(dir, ds.Issues)
	want := []string{
		"images/train/old.bmp: unsupported image format .bmp (only JPEG and PNG)",
		"labels/train/bad.txt:2: 4 columns",
		"labels/train/bad.txt:3: column 3: \"x\" is not a number",
		"labels/train/bad.txt:4: column 3: \"nan\" is not finite",
		"labels/train/bad.txt:5: column 2: 1.5 outside [0, 1]",
		"labels/train/bad.txt:6: class 2 outside [0, 2)",
		"labels/train/bad.txt:7: duplicate of line 1, dropped",
		"labels/train/bad.txt:10: negative class -1",
		"images/train/broken.jpg: unreadable image",
		"images/train/tiny.png: image of 5x40 pixels, smaller than 10x10",
	}
	if len(got) != len(want) {
		t.Fatalf("%d issues, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("issue %d = %q, want prefix %q", i, got[i], want[i])
		}
	}
	wantStats := DatasetStats{Images: 3, Backgrounds: 1, Objects: 3, SkippedImages: 3, SkippedRows: 7, Duplicates: 1}
	if ds.Stats != wantStats {
		t.Errorf("stats %+v, want %+v", ds.Stats, wantStats)
	}
	bad := ds.Samples[0]
	if filepath.Base(bad.ImagePath) != "bad.png" || len(bad.Labels) != 2 {
		t.Fatalf("first sample %s with %d labels, want bad.png with 2", bad.ImagePath, len(bad.Labels))
	}
	seg := bad.Labels[1]
	if d := absDiff(seg.X, 0.2) + absDiff(seg.Y, 0.25) + absDiff(seg.W, 0.2) + absDiff(seg.H, 0.3); seg.Class != 1 || d > 1e-6 {
		t.Errorf("segment label %+v, want class 1 box 0.2 0.25 0.2 0.3", seg)
	}

	_, err = OpenSplit(cfg, "train", SplitOptions{Strict: true})
	if err == nil {
		t.Fatal("strict: no error")
	}
	for _, w := range []string{"10 issues (strict)", "bad.txt:2: 4 columns", "old.bmp: unsupported"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("strict error %q does not contain %q", err, w)
		}
	}
}

func TestDatasetMissingImageInList(t *testing.T) {
	dir := t.TempDir()
	writeSplit(t, dir, "val", []fixtureImage{{name: "a.png", w: 16, h: 16, rects: []fixtureRect{{0, 2, 2, 8, 8}}}})
	writeFile(t, filepath.Join(dir, "val.txt"), []byte("images/val/a.png\nimages/val/gone.png\n"))
	writeFile(t, filepath.Join(dir, "data.yaml"), []byte("val: val.txt\nnames: [a]\n"))
	cfg, err := LoadDataYAML(filepath.Join(dir, "data.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ds, err := OpenSplit(cfg, "val", SplitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := issueStrings(dir, ds.Issues); len(got) != 1 || got[0] != "images/val/gone.png: missing image" || len(ds.Samples) != 1 {
		t.Errorf("issues %q, %d samples; want the missing image reported and 1 sample", got, len(ds.Samples))
	}
	if _, err := OpenSplit(cfg, "val", SplitOptions{Strict: true}); err == nil || !strings.Contains(err.Error(), "gone.png: missing image") {
		t.Errorf("strict: %v", err)
	}
}

func absDiff(a, b float32) float32 {
	if a > b {
		return a - b
	}
	return b - a
}

func TestDatasetBackgroundImages(t *testing.T) {
	dir := t.TempDir()
	writeSplit(t, dir, "train", []fixtureImage{
		{name: "a.png", w: 32, h: 32, noLabel: true},
		{name: "b.png", w: 32, h: 32},
		{name: "c.png", w: 32, h: 32, rects: []fixtureRect{{0, 1, 1, 9, 9}}},
	})
	writeFile(t, filepath.Join(dir, "data.yaml"), []byte("train: images/train\nnames: [a]\n"))
	cfg, err := LoadDataYAML(filepath.Join(dir, "data.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	ds, err := OpenSplit(cfg, "train", SplitOptions{Strict: true, VerifyImages: true})
	if err != nil {
		t.Fatal(err)
	}
	want := DatasetStats{Images: 3, Backgrounds: 2, Objects: 1}
	if ds.Stats != want || len(ds.Issues) != 0 {
		t.Errorf("stats %+v issues %v, want %+v and none", ds.Stats, ds.Issues, want)
	}
	l, err := NewLoader(ds, LoaderOptions{ImgSize: 32, BatchSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Batch(context.Background(), 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Targets) != 1 || b.Targets[0].Image != 2 {
		t.Errorf("targets %+v, want one on image 2", b.Targets)
	}
}

func TestLabelPath(t *testing.T) {
	sep := string(filepath.Separator)
	j := func(s string) string { return strings.ReplaceAll(s, "/", sep) }
	for _, tc := range []struct{ in, want string }{
		{"/d/images/train/a.jpg", "/d/labels/train/a.txt"},
		{"/d/images/x/images/b.PNG", "/d/images/x/labels/b.txt"},
		{"/d/imgs/c.jpeg", "/d/imgs/c.txt"},
		{"images/d.v2.jpg", "labels/d.v2.txt"},
	} {
		if got := LabelPath(j(tc.in)); got != j(tc.want) {
			t.Errorf("LabelPath(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// batchesOf runs one epoch through an EpochIter.
func batchesOf(t *testing.T, l *Loader, epoch int) []*Batch {
	t.Helper()
	it := l.Epoch(context.Background(), epoch)
	defer it.Close()
	var out []*Batch
	for {
		b, err := it.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
}

func TestLoaderDeterministicAcrossWorkers(t *testing.T) {
	ds := openFixture(t)
	opts := LoaderOptions{ImgSize: 64, BatchSize: 3, Augment: true, Shuffle: true, Hyp: DefaultHyp(), Seed: 7}
	var runs [][]*Batch
	var random *Batch
	for _, workers := range []int{1, 2, 3} {
		o := opts
		o.Workers = workers
		o.Cache = NewImageCache(1 << 20)
		l, err := NewLoader(ds, o)
		if err != nil {
			t.Fatal(err)
		}
		if l.NumBatches() != 3 {
			t.Fatalf("%d batches, want 3", l.NumBatches())
		}
		runs = append(runs, append(batchesOf(t, l, 0), batchesOf(t, l, 1)...))
		// Released buffers are reused and fully overwritten.
		for range 2 {
			b, err := l.Batch(context.Background(), 0, 1)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(b, runs[len(runs)-1][1]) {
				t.Fatal("a batch built into a released buffer differs")
			}
			for k := range b.Images {
				b.Images[k] = -1
			}
			l.Release(b)
		}
		if workers == 2 {
			// Random access (a resumed run) gives the same batch.
			b, err := l.Batch(context.Background(), 1, 2)
			if err != nil {
				t.Fatal(err)
			}
			random = b
		}
	}
	for w := 1; w < 3; w++ {
		for i := range runs[0] {
			if !reflect.DeepEqual(runs[0][i], runs[w][i]) {
				t.Fatalf("batch %d differs between 1 and %d workers", i, w+1)
			}
		}
	}
	if !reflect.DeepEqual(runs[0][5], random) {
		t.Error("Loader.Batch(1, 2) differs from the iterated batch")
	}
	if reflect.DeepEqual(runs[0][0].Images, runs[0][3].Images) {
		t.Error("epochs 0 and 1 gave the same first batch")
	}
	b := runs[0][0]
	if b.N() != 3 || len(b.Images) != 3*3*64*64 || len(b.Meta) != 3 {
		t.Fatalf("batch shape: %d images, %d floats", b.N(), len(b.Images))
	}
	for _, v := range b.Images {
		if v < 0 || v > 1 {
			t.Fatalf("pixel value %v outside [0, 1]", v)
		}
	}
	seen := map[int]bool{}
	for _, bb := range runs[0][:3] {
		for _, m := range bb.Meta {
			seen[m.Index] = true
		}
	}
	if len(seen) != 8 {
		t.Errorf("epoch 0 covered %d of 8 images", len(seen))
	}
}

func TestLoaderValidationMapsBackToOriginal(t *testing.T) {
	ds := openFixture(t)
	for _, up := range []bool{false, true} {
		l, err := NewLoader(ds, LoaderOptions{ImgSize: 96, BatchSize: 8, ValUpscale: up})
		if err != nil {
			t.Fatal(err)
		}
		b, err := l.Batch(context.Background(), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(b.Targets) != 8 {
			t.Fatalf("%d targets, want 8", len(b.Targets))
		}
		for _, tg := range b.Targets {
			m := b.Meta[tg.Image]
			smp := ds.Samples[m.Index]
			s := float64(b.Size)
			x1, y1 := m.Letterbox.ToOriginal((float64(tg.X)-float64(tg.W)/2)*s, (float64(tg.Y)-float64(tg.H)/2)*s)
			x2, y2 := m.Letterbox.ToOriginal((float64(tg.X)+float64(tg.W)/2)*s, (float64(tg.Y)+float64(tg.H)/2)*s)
			lb := smp.Labels[0]
			w, h := float64(smp.Width), float64(smp.Height)
			want := [4]float64{(float64(lb.X) - float64(lb.W)/2) * w, (float64(lb.Y) - float64(lb.H)/2) * h,
				(float64(lb.X) + float64(lb.W)/2) * w, (float64(lb.Y) + float64(lb.H)/2) * h}
			got := [4]float64{x1, y1, x2, y2}
			for k := range got {
				if d := got[k] - want[k]; d > 1e-3 || d < -1e-3 {
					t.Errorf("upscale %v, %s: box %v maps back to %v, want %v", up, smp.ImagePath, tg, got, want)
					break
				}
			}
			if !up && (m.Letterbox.RatioW > 1 || m.Letterbox.RatioH > 1) {
				t.Errorf("%s enlarged without ValUpscale: %+v", smp.ImagePath, m.Letterbox)
			}
			if up && max(m.Letterbox.W, m.Letterbox.H) != 96 {
				t.Errorf("%s not fitted to 96 with ValUpscale: %+v", smp.ImagePath, m.Letterbox)
			}
		}
	}
}

func TestLoaderCancel(t *testing.T) {
	ds := openFixture(t)
	l, err := NewLoader(ds, LoaderOptions{ImgSize: 64, BatchSize: 1, Augment: true, Hyp: DefaultHyp(), Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	it := l.Epoch(ctx, 0)
	if _, err := it.Next(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := it.Next(); !errors.Is(err, context.Canceled) {
		t.Errorf("after cancel: %v, want context.Canceled", err)
	}
	it.Close()
}

func TestLoaderOptionsErrors(t *testing.T) {
	ds := openFixture(t)
	bad := DefaultHyp()
	bad.Scale = 1.5
	for _, o := range []LoaderOptions{
		{ImgSize: 50, BatchSize: 1},
		{ImgSize: 64, BatchSize: 0},
		{ImgSize: 64, BatchSize: 1, Augment: true, Hyp: bad},
		{ImgSize: 64, BatchSize: 1, Workers: -1},
	} {
		if _, err := NewLoader(ds, o); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
	if _, err := NewLoader(&Dataset{}, LoaderOptions{ImgSize: 64, BatchSize: 1}); err == nil {
		t.Error("empty dataset accepted")
	}
}

func TestLoaderUnreadableImageIsAnError(t *testing.T) {
	ds := openFixture(t)
	if err := os.WriteFile(ds.Samples[2].ImagePath, []byte("gone"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := NewLoader(ds, LoaderOptions{ImgSize: 64, BatchSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	it := l.Epoch(context.Background(), 0)
	defer it.Close()
	if _, err := it.Next(); err == nil || !strings.Contains(err.Error(), "img02.png") {
		t.Errorf("batch 0: error %v, want one naming img02.png", err)
	}
	if _, err := it.Next(); err != nil {
		t.Errorf("batch 1: %v", err)
	}
}
