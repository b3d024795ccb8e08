package finetune

import (
	"math"
	"strings"
	"testing"
)

func TestParseLabels(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		nc     int
		want   []BoxLabel
		issues []string // "line: message prefix"
	}{
		{name: "empty", in: "", nc: 2},
		{name: "box", in: "1 0.5 0.25 0.2 0.1\n", nc: 2, want: []BoxLabel{{1, 0.5, 0.25, 0.2, 0.1}}},
		{name: "crlf, tabs and no final newline", in: "0\t0.5 0.5 0.5 0.5\r\n1 0.1 0.1 0.1 0.1", nc: 2,
			want: []BoxLabel{{0, 0.5, 0.5, 0.5, 0.5}, {1, 0.1, 0.1, 0.1, 0.1}}},
		{name: "float class", in: "1.0 0.5 0.5 0.5 0.5\n1.5 0.5 0.5 0.5 0.5\n", nc: 2,
			want: []BoxLabel{{1, 0.5, 0.5, 0.5, 0.5}}, issues: []string{"2: class \"1.5\" is not an integer"}},
		{name: "segment to box", in: "0 0.1 0.2 0.5 0.2 0.3 0.6 0.2 0.4\n", nc: 1,
			want: []BoxLabel{{0, 0.3, 0.4, 0.4, 0.4}}},
		// Five columns are a box, not a 2-point segment.
		{name: "five columns", in: "0 0.1 0.2 0.5 0.2\n", nc: 1, want: []BoxLabel{{0, 0.1, 0.2, 0.5, 0.2}}},
		{name: "column counts", in: "0 0.1\n0 0.1 0.2 0.3 0.4 0.5\n0 0.1 0.2 0.3 0.4 0.5 0.6 0.7\n", nc: 1,
			issues: []string{"1: 2 columns", "2: 6 columns", "3: 8 columns"}},
		{name: "bad numbers", in: "0 0.5 0.5 inf 0.1\n0 0.5 0.5 0.1 1e400\nzero 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1 0x\n", nc: 1,
			issues: []string{"1: column 4: \"inf\" is not finite", "2: column 5: \"1e400\" is not finite", "3: class \"zero\" is not a number", "4: column 5: \"0x\" is not a number"}},
		{name: "ranges", in: "0 -0.1 0.5 0.1 0.1\n0 0.5 0.5 1.01 0.1\n3 0.5 0.5 0.1 0.1\n0 0.5 0.5 0 0.1\n0 1 1 1 1\n", nc: 3,
			want:   []BoxLabel{{0, 1, 1, 1, 1}},
			issues: []string{"1: column 2: -0.1 outside [0, 1]", "2: column 4: 1.01 outside", "3: class 3 outside [0, 3)", "4: empty box"}},
		{name: "duplicates", in: "0 0.5 0.5 0.1 0.1\n0 0.50 0.5 0.1 0.1\n0 0.5 0.5 0.1 0.2\n", nc: 1,
			want: []BoxLabel{{0, 0.5, 0.5, 0.1, 0.1}, {0, 0.5, 0.5, 0.1, 0.2}}, issues: []string{"2: duplicate of line 1"}},
		{name: "any class when nc unknown", in: "41 0.5 0.5 0.1 0.1\n", nc: 0, want: []BoxLabel{{41, 0.5, 0.5, 0.1, 0.1}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, issues := ParseLabels("l.txt", []byte(tc.in), tc.nc)
			if len(got) != len(tc.want) {
				t.Fatalf("labels %+v, want %+v", got, tc.want)
			}
			for i := range got {
				g, w := got[i], tc.want[i]
				if g.Class != w.Class || absDiff(g.X, w.X) > 1e-6 || absDiff(g.Y, w.Y) > 1e-6 || absDiff(g.W, w.W) > 1e-6 || absDiff(g.H, w.H) > 1e-6 {
					t.Errorf("label %d = %+v, want %+v", i, g, w)
				}
			}
			if len(issues) != len(tc.issues) {
				t.Fatalf("issues %v, want %v", issues, tc.issues)
			}
			for i, is := range issues {
				if is.Path != "l.txt" || !strings.HasPrefix(strings.TrimPrefix(is.String(), "l.txt:"), tc.issues[i]) {
					t.Errorf("issue %d = %q, want l.txt:%s...", i, is, tc.issues[i])
				}
			}
		})
	}
}

// checkParsedLabels checks the invariants of ParseLabels' output.
func checkParsedLabels(t *testing.T, data []byte, nc int, labels []BoxLabel, issues []Issue) {
	lines := strings.Count(string(data), "\n") + 1
	for _, l := range labels {
		for _, v := range []float32{l.X, l.Y, l.W, l.H} {
			if math.IsNaN(float64(v)) || v < 0 || v > 1 {
				t.Fatalf("label %+v out of range", l)
			}
		}
		if l.W <= 0 || l.H <= 0 || l.Class < 0 || (nc > 0 && l.Class >= nc) {
			t.Fatalf("label %+v invalid for nc %d", l, nc)
		}
	}
	for _, is := range issues {
		if is.Line < 0 || is.Line > lines || is.Msg == "" {
			t.Fatalf("issue %+v outside the %d lines", is, lines)
		}
	}
}

func FuzzParseLabels(f *testing.F) {
	for _, s := range []string{
		"", "0 0.5 0.5 0.2 0.2\n", "1 0.1 0.2 0.5 0.2 0.3 0.6\n", "0 nan 0 0 0", "x", "\n\n\r\n",
		"0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n", "99999999999999999999 0 0 0 0", "-0 0 0 1e-45 1",
		"0 0.5 0.5 0.2 0.2 0.1 0.1 0.3 0.3 0.4 0.4", "1e308 1 1 1 1", "0 1 1 1 1 1 1\t\v\f",
	} {
		f.Add([]byte(s), 3)
	}
	f.Fuzz(func(t *testing.T, data []byte, nc int) {
		labels, issues := ParseLabels("f.txt", data, nc)
		checkParsedLabels(t, data, nc, labels, issues)
	})
}

func FuzzDataYAML(f *testing.F) {
	for _, s := range []string{
		"train: images/train\nval: images/val\nnc: 2\nnames: [a, b]\n",
		"path: ../d\ntrain: [a, b.txt]\nval: c\nnames: {0: a, 1: b}\n",
		"train: a\nnames:\n  0: x\n  1: y\n",
		"train: &x a\nval: *x\nnc: 1\n",
		"{train: a, val: [b, c], nc: 1, names: [z]}",
		"- a\n", "", "train: a\nval: ~\nnc: 1\n", "names: {-1: a}\ntrain: a\n",
		"a: &a [*a]\n", "train: !!binary aGk=\nnc: 1\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseDataYAML("/fuzz/data.yaml", data)
		if err != nil {
			if !strings.Contains(err.Error(), "/fuzz/data.yaml") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if cfg.NC <= 0 || cfg.NC != len(cfg.Names) || (len(cfg.Train) == 0 && len(cfg.Val) == 0) {
			t.Fatalf("accepted an inconsistent description: %+v", cfg)
		}
	})
}
