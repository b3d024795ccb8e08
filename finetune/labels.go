package finetune

import (
	"bytes"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
)

// BoxLabel is one object of a label file: its class and its box as centre
// and size normalised by the image (X and W by the width, Y and H by the
// height).
type BoxLabel struct {
	Class      int
	X, Y, W, H float32
}

// Issue is one problem found while reading a dataset: the file (a label
// file or an image), the 1-based line in it (0 when the problem is the
// whole file) and what is wrong.
type Issue struct {
	Path string
	Line int
	Msg  string
}

// String formats the issue as "file:line: what" (or "file: what").
func (i Issue) String() string {
	if i.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", i.Path, i.Line, i.Msg)
	}
	return fmt.Sprintf("%s: %s", i.Path, i.Msg)
}

// maxLabelFileBytes bounds a label file's size (a label file is a few
// hundred bytes; anything near this is not a label file).
const maxLabelFileBytes = 16 << 20

// ParseLabels parses a YOLO label file's content for a dataset of nc
// classes (nc <= 0: any non-negative class is accepted) and returns its
// valid objects and the problems it found, each tagged with path and line.
//
// A line is either a box, `cls cx cy w h`, all normalised to [0, 1], or a
// polygon segment, `cls x1 y1 x2 y2 x3 y3 ...` with at least 3 points,
// which is converted to its enclosing box (min and max of the points), as
// the official code (segments2boxes) does. Unlike the official code, the
// form is decided per line (officially one line of more than 8 columns
// turns every line of the file into a segment).
//
// Each invalid line is skipped and reported: wrong column count,
// non-numbers, NaN or Inf, coordinates outside [0, 1] (the official
// tolerance: negative values and coordinates above 1 are errors), a class
// that is not an integer in [0, nc), a box of zero width or height.
// Duplicate lines are dropped with an issue. Blank lines are ignored.
// It never panics, whatever the input.
func ParseLabels(path string, data []byte, nc int) ([]BoxLabel, []Issue) {
	var (
		labels []BoxLabel
		issues []Issue
		seen   map[BoxLabel]int
	)
	issue := func(line int, format string, args ...any) {
		issues = append(issues, Issue{Path: path, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	if len(data) > maxLabelFileBytes {
		issue(0, "label file of %d bytes is larger than %d", len(data), maxLabelFileBytes)
		return nil, issues
	}
	lineNo := 0
	for len(data) > 0 {
		var line []byte
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			line, data = data, nil
		}
		lineNo++
		fields := strings.Fields(string(line))
		if len(fields) == 0 {
			continue
		}
		lb, msg := parseLabelFields(fields, nc)
		if msg != "" {
			issue(lineNo, "%s", msg)
			continue
		}
		if seen == nil {
			seen = map[BoxLabel]int{}
		}
		if first, dup := seen[lb]; dup {
			issue(lineNo, "duplicate of line %d, dropped", first)
			continue
		}
		seen[lb] = lineNo
		labels = append(labels, lb)
	}
	return labels, issues
}

// parseLabelFields parses one non-blank line; it returns a message instead
// of the label when the line is invalid.
func parseLabelFields(f []string, nc int) (BoxLabel, string) {
	n := len(f)
	if n != 5 && (n < 7 || n%2 == 0) {
		return BoxLabel{}, fmt.Sprintf("%d columns, want 5 (cls cx cy w h) or an odd number >= 7 (cls and a polygon of >= 3 points)", n)
	}
	cls, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return BoxLabel{}, fmt.Sprintf("class %q is not a number", labelTrunc(f[0], 20))
	}
	switch {
	case math.IsNaN(cls) || math.IsInf(cls, 0) || cls != math.Trunc(cls):
		return BoxLabel{}, fmt.Sprintf("class %q is not an integer", labelTrunc(f[0], 20))
	case cls < 0:
		return BoxLabel{}, fmt.Sprintf("negative class %v", cls)
	case nc > 0 && cls >= float64(nc):
		return BoxLabel{}, fmt.Sprintf("class %v outside [0, %d)", cls, nc)
	case cls > math.MaxInt32:
		return BoxLabel{}, fmt.Sprintf("class %v too large", cls)
	}
	vals := make([]float64, n-1)
	for i, s := range f[1:] {
		v, err := strconv.ParseFloat(s, 32)
		if err != nil && !labelRangeErr(err) {
			return BoxLabel{}, fmt.Sprintf("column %d: %q is not a number", i+2, labelTrunc(s, 20))
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return BoxLabel{}, fmt.Sprintf("column %d: %q is not finite", i+2, labelTrunc(s, 20))
		}
		if v < 0 || v > 1 {
			return BoxLabel{}, fmt.Sprintf("column %d: %s outside [0, 1] (coordinates must be normalised)", i+2, labelTrunc(s, 20))
		}
		vals[i] = v
	}
	lb := BoxLabel{Class: int(cls)}
	if n == 5 {
		lb.X, lb.Y, lb.W, lb.H = float32(vals[0]), float32(vals[1]), float32(vals[2]), float32(vals[3])
	} else {
		x1, y1, x2, y2 := math.Inf(1), math.Inf(1), math.Inf(-1), math.Inf(-1)
		for i := 0; i+1 < len(vals); i += 2 {
			x1, x2 = min(x1, vals[i]), max(x2, vals[i])
			y1, y2 = min(y1, vals[i+1]), max(y2, vals[i+1])
		}
		lb.X, lb.Y = float32((x1+x2)/2), float32((y1+y2)/2)
		lb.W, lb.H = float32(x2-x1), float32(y2-y1)
	}
	if lb.W <= 0 || lb.H <= 0 {
		return BoxLabel{}, fmt.Sprintf("empty box (width %v, height %v)", lb.W, lb.H)
	}
	return lb, ""
}

// labelRangeErr reports a strconv range error (the value is still returned as
// ±Inf or 0, which the caller's range checks then judge).
func labelRangeErr(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

// labelTrunc shortens s to at most n bytes for messages.
func labelTrunc(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// LabelPath returns the label file of an image, as the official
// img2label_paths: the last /images/ path element becomes /labels/ and the
// extension becomes .txt. An image outside any images/ folder has its
// label file beside it.
func LabelPath(imagePath string) string {
	sep := string(filepath.Separator)
	sa, sb := sep+"images"+sep, sep+"labels"+sep
	p := imagePath
	if i := strings.LastIndex(p, sa); i >= 0 {
		p = p[:i] + sb + p[i+len(sa):]
	} else if strings.HasPrefix(p, "images"+sep) {
		p = "labels" + sep + p[len("images"+sep):]
	}
	ext := filepath.Ext(p)
	return p[:len(p)-len(ext)] + ".txt"
}
