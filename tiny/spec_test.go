package tiny

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestYOLOv7TinyLayerCounts(t *testing.T) {
	s := YOLOv7Tiny()
	if len(s.Layers) != 78 {
		t.Fatalf("%d layers, want 77 + IDetect", len(s.Layers))
	}
	count := map[string]int{}
	for _, l := range s.Layers {
		k := l.Kind.String()
		if l.Kind == KindMaxPool && l.S == 1 {
			k = "SP"
		}
		count[k]++
	}
	want := map[string]int{"Conv": 55, "MaxPool": 3, "SP": 3, "Concat": 14, "Upsample": 2, "IDetect": 1}
	for k, n := range want {
		if count[k] != n {
			t.Errorf("%s: %d layers, want %d", k, count[k], n)
		}
	}
}

func TestYOLOv7TinyResolve(t *testing.T) {
	s := YOLOv7Tiny()
	sh, err := s.Resolve(3, 80)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		layer, outC, stride int
	}{
		{0, 32, 2}, {7, 64, 4}, {14, 128, 8}, {21, 256, 16}, {28, 512, 32},
		{34, 1024, 32}, {36, 512, 32}, {39, 128, 16}, {41, 256, 16}, {49, 64, 8},
		{57, 64, 8}, {59, 256, 16}, {67, 512, 32}, {74, 128, 8}, {75, 256, 16}, {76, 512, 32},
		{77, 255, 8},
	}
	for _, tc := range tests {
		if got := sh[tc.layer]; got.OutC != tc.outC || got.Stride != tc.stride {
			t.Errorf("layer %d: %d channels at stride %d, want %d at %d", tc.layer, got.OutC, got.Stride, tc.outC, tc.stride)
		}
	}
	if got := fmt.Sprint(sh[36].From); got != "[35 29]" {
		t.Errorf("layer 36 takes %s, want [35 29]", got)
	}
}

func TestSpecRejectsBadTables(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Spec)
	}{
		{"forward reference", func(s *Spec) { s.Layers[5].From = []int{7} }},
		{"concat of two strides", func(s *Spec) { s.Layers[6].From = []int{-1, 0} }},
		{"no detect", func(s *Spec) { s.Layers = s.Layers[:77] }},
		{"zero channels", func(s *Spec) { s.Layers[3].Out = 0 }},
		{"stride mismatch at detect", func(s *Spec) { s.Strides[0] = 16 }},
		{"pool pad too large", func(s *Spec) { s.Layers[31].Pad = 3 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := YOLOv7Tiny()
			tc.edit(&s)
			if _, err := s.Resolve(3, 80); err == nil {
				t.Fatal("Resolve accepted the table")
			}
		})
	}
}

// TestConvShapesMatchOfficialStateDict compares every conv weight shape, in
// order, with the state_dict of the official model (golden state_dict.tsv).
func TestConvShapesMatchOfficialStateDict(t *testing.T) {
	path := filepath.Join(goldenForward(t), "state_dict.tsv")
	f, err := os.Open(path)
	if err != nil {
		t.Skipf("golden state_dict.tsv absent: %v", err)
	}
	defer f.Close()
	var want [][2]string // name prefix, shape
	var implicit []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		cols := strings.Split(sc.Text(), "\t")
		if len(cols) < 2 {
			continue
		}
		name, shape := cols[0], cols[1]
		switch {
		case strings.HasSuffix(name, ".conv.weight"):
			want = append(want, [2]string{strings.TrimSuffix(name, ".weight"), shape})
		case strings.HasPrefix(name, "model.77.m.") && strings.HasSuffix(name, ".weight"):
			want = append(want, [2]string{strings.TrimSuffix(name, ".weight"), shape})
		case strings.Contains(name, ".implicit"):
			implicit = append(implicit, name+" "+shape)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	s := YOLOv7Tiny()
	got, err := s.ConvShapes(3, 80)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d convs, state_dict has %d", len(got), len(want))
	}
	for i, c := range got {
		shape := fmt.Sprintf("%dx%dx%dx%d", c.Out, c.In, c.K, c.K)
		if c.Name != want[i][0] || shape != want[i][1] {
			t.Errorf("conv %d: %s %s, state_dict has %s %s", i, c.Name, shape, want[i][0], want[i][1])
		}
	}
	// ImplicitA is sized by the detect inputs, ImplicitM by the detect outputs.
	wantImp := []string{
		"model.77.ia.0.implicit 1x128x1x1", "model.77.ia.1.implicit 1x256x1x1", "model.77.ia.2.implicit 1x512x1x1",
		"model.77.im.0.implicit 1x255x1x1", "model.77.im.1.implicit 1x255x1x1", "model.77.im.2.implicit 1x255x1x1",
	}
	if fmt.Sprint(implicit) != fmt.Sprint(wantImp) {
		t.Errorf("implicit entries %v, want %v", implicit, wantImp)
	}
}
