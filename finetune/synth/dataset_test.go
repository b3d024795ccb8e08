package synth

import (
	"bytes"
	"image"
	_ "image/jpeg"
	_ "image/png"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// readTree returns every regular file under dir by its slash path relative
// to dir.
func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = b
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// parseLabelFile parses YOLO label lines.
func parseLabelFile(t *testing.T, name string, data []byte) []Label {
	t.Helper()
	var ls []Label
	for i, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if line == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 5 {
			t.Fatalf("%s:%d: %q: want 5 fields", name, i+1, line)
		}
		cls, err := strconv.Atoi(f[0])
		if err != nil {
			t.Fatalf("%s:%d: class %q: %v", name, i+1, f[0], err)
		}
		var v [4]float32
		for k := range v {
			if dot := strings.IndexByte(f[k+1], '.'); dot < 0 || len(f[k+1])-dot-1 != 6 {
				t.Errorf("%s:%d: %q does not have 6 decimals", name, i+1, f[k+1])
			}
			x, err := strconv.ParseFloat(f[k+1], 32)
			if err != nil {
				t.Fatalf("%s:%d: %q: %v", name, i+1, f[k+1], err)
			}
			v[k] = float32(x)
		}
		ls = append(ls, Label{Class: cls, X: v[0], Y: v[1], W: v[2], H: v[3]})
	}
	return ls
}

func TestWriteDatasetLayout(t *testing.T) {
	cfg := DefaultConfig(64)
	for _, tc := range []struct {
		name string
		jpeg bool
		ext  string
	}{
		{"png", false, ".png"},
		{"jpeg", true, ".jpg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "shapes")
			o := DatasetOptions{Config: cfg, Train: 5, Val: 3, Seed: 9, JPEG: tc.jpeg}
			if err := WriteDataset(dir, o); err != nil {
				t.Fatal(err)
			}
			files := readTree(t, dir)
			var want []string
			for _, sp := range []struct {
				name string
				n    int
			}{{"train", 5}, {"val", 3}} {
				for i := range sp.n {
					n := "00000" + strconv.Itoa(i)
					want = append(want, "images/"+sp.name+"/"+n+tc.ext, "labels/"+sp.name+"/"+n+".txt")
				}
			}
			want = append(want, "data.yaml")
			var got []string
			for k := range files {
				got = append(got, k)
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("files %v\nwant %v", got, want)
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 1 {
				t.Errorf("the parent folder holds %d entries (temporary folder left behind?)", len(ents))
			}

			// The train labels are the scenes of New(cfg, seed), in order.
			g, _ := New(cfg, o.Seed)
			for i := range 5 {
				s := g.Scene()
				name := "labels/train/00000" + strconv.Itoa(i) + ".txt"
				ls := parseLabelFile(t, name, files[name])
				if len(ls) != len(s.Labels) {
					t.Fatalf("%s: %d labels, want %d", name, len(ls), len(s.Labels))
				}
				for j := range ls {
					a, b := ls[j], s.Labels[j]
					if a.Class != b.Class || math.Abs(float64(a.X-b.X)) > 1e-6 || math.Abs(float64(a.Y-b.Y)) > 1e-6 ||
						math.Abs(float64(a.W-b.W)) > 1e-6 || math.Abs(float64(a.H-b.H)) > 1e-6 {
						t.Errorf("%s line %d: %+v, want %+v", name, j+1, a, b)
					}
				}
				img, format, err := image.Decode(bytes.NewReader(files["images/train/00000"+strconv.Itoa(i)+tc.ext]))
				if err != nil {
					t.Fatalf("image %d: %v", i, err)
				}
				if img.Bounds().Dx() != 64 || img.Bounds().Dy() != 64 {
					t.Errorf("image %d: %v, want 64x64", i, img.Bounds())
				}
				if !tc.jpeg {
					// PNG is lossless: the pixels are the scene's.
					if format != "png" {
						t.Fatalf("image %d: format %s", i, format)
					}
					r, gr, bl, _ := img.At(10, 20).RGBA()
					p := s.Image.RGBAAt(10, 20)
					if uint8(r>>8) != p.R || uint8(gr>>8) != p.G || uint8(bl>>8) != p.B {
						t.Errorf("image %d: pixel (10,20) is not the scene's", i)
					}
				} else if format != "jpeg" {
					t.Fatalf("image %d: format %s", i, format)
				}
			}

			var y struct {
				Train, Val string
				NC         int
				Names      []string
			}
			if err := yaml.Unmarshal(files["data.yaml"], &y); err != nil {
				t.Fatalf("data.yaml: %v", err)
			}
			if y.Train != "images/train" || y.Val != "images/val" || y.NC != 3 || !slices.Equal(y.Names, ClassNames()) {
				t.Errorf("data.yaml says %+v", y)
			}
		})
	}
}

func TestWriteDatasetIsDeterministic(t *testing.T) {
	cfg := DefaultConfig(48)
	write := func(o DatasetOptions) map[string][]byte {
		dir := filepath.Join(t.TempDir(), "d")
		if err := WriteDataset(dir, o); err != nil {
			t.Fatal(err)
		}
		return readTree(t, dir)
	}
	base := DatasetOptions{Config: cfg, Train: 4, Val: 2, Seed: 3}
	a := write(base)
	for _, tc := range []struct {
		name string
		o    DatasetOptions
		same func(path string) bool // which files must equal a's
	}{
		{"same options", base, func(string) bool { return true }},
		{"other seed", DatasetOptions{Config: cfg, Train: 4, Val: 2, Seed: 4}, func(string) bool { return false }},
		{"more train images", DatasetOptions{Config: cfg, Train: 6, Val: 2, Seed: 3}, func(p string) bool {
			return strings.Contains(p, "/val/") || strings.Contains(p, "/train/")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := write(tc.o)
			for p, data := range a {
				if p == "data.yaml" {
					continue
				}
				eq := bytes.Equal(data, b[p])
				if tc.same(p) && !eq {
					t.Errorf("%s differs", p)
				}
				if !tc.same(p) && eq && strings.HasPrefix(p, "images/") {
					t.Errorf("%s is the same", p)
				}
			}
		})
	}
	// The splits do not share images.
	if bytes.Equal(a["images/train/000000.png"], a["images/val/000000.png"]) {
		t.Error("train and val start with the same image")
	}
}

func TestWriteDatasetTarget(t *testing.T) {
	o := DatasetOptions{Config: DefaultConfig(32), Train: 2, Val: 1, Seed: 1}
	for _, tc := range []struct {
		name      string
		prepare   func(dir string) // makes dir's prior state
		overwrite bool
		wantErr   string // "" = success
		kept      string // a file that must survive
	}{
		{name: "new nested folder", prepare: func(string) {}},
		{name: "empty folder", prepare: func(d string) { os.MkdirAll(d, 0o755) }},
		{name: "non-empty folder", prepare: func(d string) {
			os.MkdirAll(d, 0o755)
			os.WriteFile(filepath.Join(d, "notes.txt"), []byte("x"), 0o644)
		}, wantErr: "not empty"},
		{name: "non-empty folder, overwrite", prepare: func(d string) {
			os.MkdirAll(filepath.Join(d, "images", "train"), 0o755)
			os.WriteFile(filepath.Join(d, "images", "train", "999999.png"), []byte("stale"), 0o644)
			os.WriteFile(filepath.Join(d, "notes.txt"), []byte("x"), 0o644)
		}, overwrite: true, kept: "notes.txt"},
		{name: "a file", prepare: func(d string) {
			os.MkdirAll(filepath.Dir(d), 0o755)
			os.WriteFile(d, []byte("x"), 0o644)
		}, overwrite: true, wantErr: "not a folder"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "a", "b")
			tc.prepare(dir)
			o := o
			o.Overwrite = tc.overwrite
			err := WriteDataset(dir, o)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			files := readTree(t, dir)
			n := 0
			for p := range files {
				if strings.HasPrefix(p, "images/") {
					n++
				}
			}
			if n != 3 {
				t.Errorf("%d images, want 3 (stale ones removed)", n)
			}
			if _, ok := files["data.yaml"]; !ok {
				t.Error("no data.yaml")
			}
			if tc.kept != "" {
				if _, ok := files[tc.kept]; !ok {
					t.Errorf("%s was removed", tc.kept)
				}
			}
		})
	}
}

func TestDatasetOptionsErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    DatasetOptions
	}{
		{"negative train", DatasetOptions{Train: -1, Val: 2}},
		{"no images", DatasetOptions{}},
		{"too many images", DatasetOptions{Train: maxDatasetImages + 1}},
		{"bad config", DatasetOptions{Train: 1, Config: Config{Width: 8, Height: 8}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "d")
			if err := WriteDataset(dir, tc.o); err == nil {
				t.Fatal("no error")
			}
			if _, err := os.Stat(dir); err == nil {
				t.Error("the folder was created despite the error")
			}
		})
	}
}

func TestFormatLabels(t *testing.T) {
	got := FormatLabels([]Label{{Class: 2, X: 0.5, Y: 0.25, W: 0.125, H: 1}, {Class: 0, X: 1.0 / 3, Y: 0.1, W: 0.2, H: 0.3}})
	want := "2 0.500000 0.250000 0.125000 1.000000\n0 0.333333 0.100000 0.200000 0.300000\n"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if FormatLabels(nil) != "" {
		t.Error("no labels: want an empty file")
	}
}
