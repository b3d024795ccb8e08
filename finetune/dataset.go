package finetune

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// Sample is one image of a dataset and its objects.
type Sample struct {
	ImagePath string
	LabelPath string // may not exist: then the image is a background image
	Width     int    // original size in pixels, from the image header
	Height    int
	Labels    []BoxLabel // nil for a background image
}

// DatasetStats counts what opening a split found.
type DatasetStats struct {
	Images        int // images kept
	Backgrounds   int // kept images without objects (no label file, or an empty one)
	Objects       int // objects kept
	SkippedImages int // images dropped: unreadable, undecodable, unsupported, too small, unreadable label file
	SkippedRows   int // label lines dropped: invalid or duplicate
	Duplicates    int // of which duplicates
}

// Dataset is one split of a YOLO dataset, checked and ready for a Loader.
type Dataset struct {
	Split   string
	Names   []string // class names, indexed by class id
	Samples []Sample // sorted by image path, as the official loader sorts them
	Issues  []Issue  // every problem found, in image order
	Stats   DatasetStats
}

// SplitOptions sets how OpenSplit treats problems.
type SplitOptions struct {
	// Strict makes any issue fatal: OpenSplit then fails with an error that
	// lists the first issues. Otherwise bad label lines and bad images are
	// skipped and counted.
	Strict bool
	// VerifyImages decodes every image completely when opening, which finds
	// truncated files up front; otherwise only the header is read (a
	// truncated image then fails when the loader reads it).
	VerifyImages bool
	// Workers reads image headers and label files in parallel (default 4).
	Workers int
}

// imageFormats are the official img_formats; only JPEG and PNG decode here,
// the others are listed so that they are reported rather than silently
// ignored.
var imageFormats = map[string]bool{
	".jpg": true, ".jpeg": true, ".png": true,
	".bmp": false, ".tif": false, ".tiff": false, ".dng": false, ".webp": false, ".mpo": false,
}

// maxListedIssues is how many issues a strict failure lists.
const maxListedIssues = 10

// minImageSide is the official smallest accepted image side (cache_labels
// asserts both sides > 9 pixels).
const minImageSide = 10

// OpenSplit lists the images of the split ("train", "val" or "test") of a
// data.yaml description, pairs each with its label file (see LabelPath),
// parses and checks the labels against cfg.NC and reads every image's
// header. An image without a label file is a background image, as in the
// official loader. Missing split sources are errors; problems inside the
// data are Issues (fatal only with opts.Strict).
func OpenSplit(cfg *DataConfig, split string, opts SplitOptions) (*Dataset, error) {
	if cfg == nil {
		return nil, errors.New("open split: nil dataset description")
	}
	sources, err := cfg.splitSources(split)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.File, err)
	}
	if len(sources) == 0 {
		return nil, fmt.Errorf("%s: %s: split not given", cfg.File, split)
	}
	var images []string
	var issues []Issue
	for _, src := range sources {
		imgs, iss, err := listImages(src)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", cfg.File, split, err)
		}
		images = append(images, imgs...)
		issues = append(issues, iss...)
	}
	sort.Strings(images)
	ds := openImages(images, cfg.NC, opts)
	ds.Split, ds.Names = split, append([]string(nil), cfg.Names...)
	ds.Issues = append(issues, ds.Issues...)
	ds.Stats.SkippedImages += len(issues)
	if opts.Strict && len(ds.Issues) > 0 {
		return nil, issuesError(fmt.Sprintf("%s: %s split", cfg.File, split), ds.Issues)
	}
	if len(ds.Samples) == 0 {
		return nil, fmt.Errorf("%s: %s: no usable images in %s (%d issues)", cfg.File, split, strings.Join(sources, ", "), len(ds.Issues))
	}
	return ds, nil
}

// issuesError lists the first issues in one error.
func issuesError(what string, issues []Issue) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d issues (strict):", what, len(issues))
	for i, is := range issues {
		if i == maxListedIssues {
			fmt.Fprintf(&b, "\n\t... and %d more", len(issues)-maxListedIssues)
			break
		}
		b.WriteString("\n\t")
		b.WriteString(is.String())
	}
	return errors.New(b.String())
}

// listImages expands one split source: a folder (searched recursively), a
// .txt list file (one image path a line; relative paths are relative to the
// list file's folder, as the official "./" rule), or a single image.
// Unsupported image formats become issues.
func listImages(src string) ([]string, []Issue, error) {
	st, err := os.Stat(src)
	if err != nil {
		return nil, nil, err
	}
	var paths []string
	switch {
	case st.IsDir():
		err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() {
				if _, ok := imageFormats[strings.ToLower(filepath.Ext(p))]; ok {
					paths = append(paths, p)
				}
			}
			return nil
		})
		if err != nil {
			return nil, nil, fmt.Errorf("list %s: %w", src, err)
		}
	case strings.EqualFold(filepath.Ext(src), ".txt"):
		f, err := os.Open(src)
		if err != nil {
			return nil, nil, err
		}
		defer f.Close()
		dir := filepath.Dir(src)
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if !filepath.IsAbs(line) {
				line = filepath.Join(dir, line)
			}
			paths = append(paths, filepath.Clean(line))
		}
		if err := sc.Err(); err != nil {
			return nil, nil, fmt.Errorf("read list %s: %w", src, err)
		}
	default:
		if _, ok := imageFormats[strings.ToLower(filepath.Ext(src))]; !ok {
			return nil, nil, fmt.Errorf("%s is neither a folder, a .txt list file nor an image", src)
		}
		paths = []string{src}
	}
	var keep []string
	var issues []Issue
	for _, p := range paths {
		ext := strings.ToLower(filepath.Ext(p))
		if supported, known := imageFormats[ext]; known && !supported {
			issues = append(issues, Issue{Path: p, Msg: fmt.Sprintf("unsupported image format %s (only JPEG and PNG)", ext)})
			continue
		} else if !known {
			issues = append(issues, Issue{Path: p, Msg: "not an image file (want .jpg, .jpeg or .png)"})
			continue
		}
		keep = append(keep, p)
	}
	return keep, issues, nil
}

// sampleResult is what checking one image produced.
type sampleResult struct {
	sample     Sample
	ok         bool
	issues     []Issue
	rowIssues  int
	duplicates int
}

// openImages checks every image and its label file, in parallel, and
// assembles the dataset in the given order.
func openImages(images []string, nc int, opts SplitOptions) *Dataset {
	workers := opts.Workers
	if workers <= 0 {
		workers = 4
	}
	res := make([]sampleResult, len(images))
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(workers, max(len(images), 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				res[i] = checkSample(images[i], nc, opts.VerifyImages)
			}
		}()
	}
	for i := range images {
		next <- i
	}
	close(next)
	wg.Wait()
	ds := &Dataset{}
	for _, r := range res {
		ds.Issues = append(ds.Issues, r.issues...)
		ds.Stats.SkippedRows += r.rowIssues
		ds.Stats.Duplicates += r.duplicates
		if !r.ok {
			ds.Stats.SkippedImages++
			continue
		}
		ds.Samples = append(ds.Samples, r.sample)
		ds.Stats.Images++
		ds.Stats.Objects += len(r.sample.Labels)
		if len(r.sample.Labels) == 0 {
			ds.Stats.Backgrounds++
		}
	}
	return ds
}

// checkSample reads one image's header (or all of it with verify) and its
// label file.
func checkSample(img string, nc int, verify bool) sampleResult {
	r := sampleResult{sample: Sample{ImagePath: img, LabelPath: LabelPath(img)}}
	bad := func(path, msg string) sampleResult {
		r.issues = append(r.issues, Issue{Path: path, Msg: msg})
		r.ok = false
		return r
	}
	w, h, _, err := ImageSize(img)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return bad(img, "missing image")
	case err != nil:
		return bad(img, "unreadable image: "+unwrapPath(err, img))
	}
	if verify {
		m, err := LoadImage(img)
		if err != nil {
			return bad(img, "undecodable image: "+unwrapPath(err, img))
		}
		w, h = m.W, m.H
	}
	if w < minImageSide || h < minImageSide {
		return bad(img, fmt.Sprintf("image of %dx%d pixels, smaller than %dx%d", w, h, minImageSide, minImageSide))
	}
	if int64(w)*int64(h) > maxImagePixels {
		return bad(img, fmt.Sprintf("image of %dx%d pixels, larger than %d pixels", w, h, maxImagePixels))
	}
	r.sample.Width, r.sample.Height = w, h
	data, err := readLabelFile(r.sample.LabelPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		// A background image, as in the official loader.
	case err != nil:
		return bad(r.sample.LabelPath, "unreadable label file: "+unwrapPath(err, r.sample.LabelPath))
	default:
		labels, iss := ParseLabels(r.sample.LabelPath, data, nc)
		r.sample.Labels = labels
		r.issues = append(r.issues, iss...)
		for _, is := range iss {
			if is.Line > 0 {
				r.rowIssues++
			}
			if strings.HasPrefix(is.Msg, "duplicate") {
				r.duplicates++
			}
		}
	}
	r.ok = true
	return r
}

// readLabelFile reads a label file, refusing one larger than the parser
// accepts.
func readLabelFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return nil, errors.New("is a folder")
	}
	if st.Size() > maxLabelFileBytes {
		return nil, fmt.Errorf("%d bytes, larger than %d", st.Size(), maxLabelFileBytes)
	}
	return os.ReadFile(path)
}

// unwrapPath drops a leading "path: " from an error message that is
// already reported under that path.
func unwrapPath(err error, path string) string {
	msg := err.Error()
	if pe, ok := err.(*fs.PathError); ok {
		return pe.Op + ": " + pe.Err.Error()
	}
	return strings.TrimPrefix(msg, path+": ")
}
