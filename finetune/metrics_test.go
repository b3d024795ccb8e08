package finetune

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/yolo7d/yolo7d/tiny"
	"github.com/yolo7d/yolo7d/tiny/tinytest"
)

// metricsNPYRaw reads a little-endian C-order .npy file of any fixed-size
// dtype and returns its descr, shape and raw data (test-only: tiny.ReadNPY
// reads float32 only).
func metricsNPYRaw(t *testing.T, path string) (descr string, shape []int, raw []byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if len(b) < 10 || string(b[:6]) != "\x93NUMPY" {
		t.Fatalf("%s: not a .npy file", path)
	}
	var hlen, off int
	if b[6] == 1 {
		hlen, off = int(binary.LittleEndian.Uint16(b[8:10])), 10
	} else {
		hlen, off = int(binary.LittleEndian.Uint32(b[8:12])), 12
	}
	h := string(b[off : off+hlen])
	if strings.Contains(h, "'fortran_order': True") {
		t.Fatalf("%s: Fortran order", path)
	}
	i := strings.Index(h, "'descr': '")
	if i < 0 {
		t.Fatalf("%s: no descr in %q", path, h)
	}
	descr = h[i+10:]
	descr = descr[:strings.IndexByte(descr, '\'')]
	i = strings.Index(h, "'shape': (")
	if i < 0 {
		t.Fatalf("%s: no shape in %q", path, h)
	}
	s := h[i+10:]
	s = s[:strings.IndexByte(s, ')')]
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("%s: shape %q: %v", path, s, err)
		}
		shape = append(shape, n)
	}
	return descr, shape, b[off+hlen:]
}

// metricsNPYUint8 reads a uint8 .npy file.
func metricsNPYUint8(t *testing.T, path string) ([]int, []uint8) {
	t.Helper()
	descr, shape, raw := metricsNPYRaw(t, path)
	if descr != "|u1" {
		t.Fatalf("%s: dtype %s, want |u1", path, descr)
	}
	return shape, raw
}

// metricsNPYF32 reads a float32 .npy file and checks its shape.
func metricsNPYF32(t *testing.T, path string, want ...int) []float32 {
	t.Helper()
	shape, data, err := tiny.ReadNPYFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(shape) != fmt.Sprint(want) {
		t.Fatalf("%s: shape %v, want %v", path, shape, want)
	}
	return data
}

type mapCaseClass struct {
	NGT      int     `json:"n_gt"`
	P        float64 `json:"P"`
	R        float64 `json:"R"`
	F1       float64 `json:"F1"`
	AP50     float64 `json:"AP50"`
	AP5095   float64 `json:"AP50_95"`
	AP50v5   float64 `json:"AP50_v5metric"`
	AP5095v5 float64 `json:"AP50_95_v5metric"`
}

type mapCase struct {
	ImageHW []int `json:"image_size_HW"`
	NImages int   `json:"n_images"`
	Outputs struct {
		PerClass map[string]mapCaseClass `json:"per_class"`
		MeanP    float64                 `json:"mean_P"`
		MeanR    float64                 `json:"mean_R"`
		MAP50    float64                 `json:"mAP50"`
		MAP5095  float64                 `json:"mAP50_95"`
		V5       struct {
			MeanP   float64 `json:"mean_P"`
			MeanR   float64 `json:"mean_R"`
			MAP50   float64 `json:"mAP50"`
			MAP5095 float64 `json:"mAP50_95"`
		} `json:"v5_metric_true"`
		Fitness float64 `json:"fitness_0p1_map50_0p9_map"`
	} `json:"outputs"`
	IoU []float64 `json:"iou_thresholds_float32"`
}

// mapGolden is the map/ golden case, loaded.
type mapGolden struct {
	c       mapCase
	preds   []float32 // (n,7) [image, x1, y1, x2, y2, conf, class]
	tgts    []float32 // (m,6) [image, class, cx, cy, w, h]
	gtBoxes []float32 // (m,6) [image, class, x1, y1, x2, y2]
	correct [][NumIoUThresholds]bool
	conf    []float32
	pcls    []int
	tcls    []int
}

func loadMapGolden(t *testing.T) *mapGolden {
	t.Helper()
	dir := filepath.Join(tinytest.GoldenOrSkip(t, "train"), "map")
	g := &mapGolden{}
	js, err := os.ReadFile(filepath.Join(dir, "map_case.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(js, &g.c); err != nil {
		t.Fatalf("map_case.json: %v", err)
	}
	g.preds = metricsNPYF32(t, filepath.Join(dir, "predictions.npy"), 61, 7)
	g.tgts = metricsNPYF32(t, filepath.Join(dir, "targets_cxcywh_px.npy"), 44, 6)
	g.gtBoxes = metricsNPYF32(t, filepath.Join(dir, "gt_boxes.npy"), 44, 6)
	shape, raw := metricsNPYUint8(t, filepath.Join(dir, "correct.npy"))
	if fmt.Sprint(shape) != "[61 10]" {
		t.Fatalf("correct.npy shape %v", shape)
	}
	g.correct = make([][NumIoUThresholds]bool, 61)
	for i := range g.correct {
		for k := 0; k < NumIoUThresholds; k++ {
			g.correct[i][k] = raw[i*NumIoUThresholds+k] != 0
		}
	}
	g.conf = metricsNPYF32(t, filepath.Join(dir, "correct_conf.npy"), 61)
	for _, v := range metricsNPYF32(t, filepath.Join(dir, "correct_pred_cls.npy"), 61) {
		g.pcls = append(g.pcls, int(v))
	}
	for _, v := range metricsNPYF32(t, filepath.Join(dir, "stats_target_cls.npy"), 44) {
		g.tcls = append(g.tcls, int(v))
	}
	return g
}

// images splits the golden data into per-image detections and ground truths
// the way test.py sees them: labels via xywh2xyxy (float32) and both clipped
// by scale_coords. rows[i] are the predictions.npy rows of image i.
func (g *mapGolden) images() (dets [][]Detection, gts [][]GroundTruth, rows [][]int) {
	n := g.c.NImages
	h, w := float32(g.c.ImageHW[0]), float32(g.c.ImageHW[1])
	dets, gts, rows = make([][]Detection, n), make([][]GroundTruth, n), make([][]int, n)
	for r := 0; r < len(g.preds)/7; r++ {
		p := g.preds[7*r:]
		im := int(p[0])
		dets[im] = append(dets[im], Detection{
			Box:  ClipBox(Box{p[1], p[2], p[3], p[4]}, w, h),
			Conf: p[5], Class: int(p[6]),
		})
		rows[im] = append(rows[im], r)
	}
	for r := 0; r < len(g.tgts)/6; r++ {
		l := g.tgts[6*r:]
		im := int(l[0])
		cx, cy, bw, bh := l[2], l[3], l[4], l[5]
		b := Box{cx - bw/2, cy - bh/2, cx + bw/2, cy + bh/2}
		gts[im] = append(gts[im], GroundTruth{Box: ClipBox(b, w, h), Class: int(l[1])})
	}
	return dets, gts, rows
}

func TestMatchIoUThresholdsGolden(t *testing.T) {
	g := loadMapGolden(t)
	iouv := IoUThresholds()
	if len(g.c.IoU) != len(iouv) {
		t.Fatalf("json has %d thresholds", len(g.c.IoU))
	}
	for k, v := range g.c.IoU {
		if float64(iouv[k]) != v {
			t.Errorf("iouv[%d] = %.17g, torch %.17g", k, iouv[k], v)
		}
	}
}

func TestMatchImageGolden(t *testing.T) {
	g := loadMapGolden(t)
	dets, gts, rows := g.images()
	got := make([][NumIoUThresholds]bool, len(g.correct))
	seen := 0
	for im := range dets {
		c := MatchImage(dets[im], gts[im])
		for k, r := range rows[im] {
			got[r] = c[k]
			seen++
		}
	}
	if seen != len(g.correct) {
		t.Fatalf("matched %d predictions, want %d", seen, len(g.correct))
	}
	bad := 0
	for r := range got {
		if got[r] != g.correct[r] {
			bad++
			t.Errorf("prediction row %d: got %v, official %v", r, got[r], g.correct[r])
		}
	}
	t.Logf("correct.npy: %d/%d rows identical", len(got)-bad, len(got))

	// gt_boxes.npy (the xyxy form) must give the same flags.
	h, w := float32(g.c.ImageHW[0]), float32(g.c.ImageHW[1])
	gts2 := make([][]GroundTruth, len(gts))
	for r := 0; r < len(g.gtBoxes)/6; r++ {
		l := g.gtBoxes[6*r:]
		gts2[int(l[0])] = append(gts2[int(l[0])], GroundTruth{Box: ClipBox(Box{l[2], l[3], l[4], l[5]}, w, h), Class: int(l[1])})
	}
	for im := range dets {
		c := MatchImage(dets[im], gts2[im])
		for k, r := range rows[im] {
			if c[k] != g.correct[r] {
				t.Errorf("gt_boxes.npy: prediction row %d: got %v, official %v", r, c[k], g.correct[r])
			}
		}
	}

	// The stats block: conf and class columns are the predictions' own.
	for r := range g.conf {
		if g.conf[r] != g.preds[7*r+5] || g.pcls[r] != int(g.preds[7*r+6]) {
			t.Fatalf("row %d: stats conf/class differ from predictions.npy", r)
		}
	}
}

func checkMetricsGolden(t *testing.T, g *mapGolden, m Metrics, v5 bool) float64 {
	t.Helper()
	const tol = 1e-6
	maxErr := 0.0
	check := func(what string, got, want float64) {
		t.Helper()
		e := math.Abs(got - want)
		maxErr = math.Max(maxErr, e)
		if !(e <= tol) {
			t.Errorf("v5=%v %s = %.17g, official %.17g", v5, what, got, want)
		}
	}
	if len(m.PerClass) != len(g.c.Outputs.PerClass) {
		t.Fatalf("v5=%v: %d classes, official %d", v5, len(m.PerClass), len(g.c.Outputs.PerClass))
	}
	for _, cm := range m.PerClass {
		want, ok := g.c.Outputs.PerClass[strconv.Itoa(cm.Class)]
		if !ok {
			t.Fatalf("class %d not in the official results", cm.Class)
		}
		if cm.NGT != want.NGT {
			t.Errorf("class %d: n_gt %d, official %d", cm.Class, cm.NGT, want.NGT)
		}
		name := fmt.Sprintf("class %d ", cm.Class)
		check(name+"P", cm.P, want.P)
		check(name+"R", cm.R, want.R)
		check(name+"F1", cm.F1, want.F1)
		if v5 {
			check(name+"AP50", cm.AP50, want.AP50v5)
			check(name+"AP50_95", cm.AP50_95, want.AP5095v5)
		} else {
			check(name+"AP50", cm.AP50, want.AP50)
			check(name+"AP50_95", cm.AP50_95, want.AP5095)
		}
	}
	o := g.c.Outputs
	if v5 {
		check("mP", m.P, o.V5.MeanP)
		check("mR", m.R, o.V5.MeanR)
		check("mAP50", m.MAP50, o.V5.MAP50)
		check("mAP50_95", m.MAP50_95, o.V5.MAP5095)
	} else {
		check("mP", m.P, o.MeanP)
		check("mR", m.R, o.MeanR)
		check("mAP50", m.MAP50, o.MAP50)
		check("mAP50_95", m.MAP50_95, o.MAP5095)
		check("fitness", m.Fitness, o.Fitness)
	}
	return maxErr
}

func TestAPPerClassGolden(t *testing.T) {
	g := loadMapGolden(t)
	for _, v5 := range []bool{false, true} {
		m := APPerClass(g.correct, g.conf, g.pcls, g.tcls, v5)
		t.Logf("v5_metric=%v: max |error| %.3g (mP %.9f mR %.9f mAP50 %.9f mAP %.9f)",
			v5, checkMetricsGolden(t, g, m, v5), m.P, m.R, m.MAP50, m.MAP50_95)
	}
}

func TestEvaluatorGolden(t *testing.T) {
	g := loadMapGolden(t)
	dets, gts, _ := g.images()
	var e Evaluator
	for im := range dets {
		e.Add(dets[im], gts[im])
	}
	if e.Images() != g.c.NImages {
		t.Fatalf("Images() = %d", e.Images())
	}
	for _, v5 := range []bool{false, true} {
		m := e.Metrics(v5)
		t.Logf("Evaluator v5_metric=%v: max |error| %.3g", v5, checkMetricsGolden(t, g, m, v5))
	}
	e.Reset()
	if m := e.Metrics(false); e.Images() != 0 || len(m.PerClass) != 0 || m.MAP50 != 0 {
		t.Errorf("after Reset: %d images, %+v", e.Images(), m)
	}
}

func TestMatchImageCases(t *testing.T) {
	box := func(x1, y1, x2, y2 float32) Box { return Box{x1, y1, x2, y2} }
	all := [NumIoUThresholds]bool{true, true, true, true, true, true, true, true, true, true}
	none := [NumIoUThresholds]bool{}
	upTo := func(n int) (c [NumIoUThresholds]bool) {
		for k := 0; k < n; k++ {
			c[k] = true
		}
		return c
	}
	tests := []struct {
		name string
		dets []Detection
		gts  []GroundTruth
		want [][NumIoUThresholds]bool
	}{
		{"no detections", nil, []GroundTruth{{box(0, 0, 10, 10), 0}}, [][NumIoUThresholds]bool{}},
		{"no ground truth", []Detection{{box(0, 0, 10, 10), 0.9, 0}}, nil, [][NumIoUThresholds]bool{none}},
		{"exact match", []Detection{{box(0, 0, 10, 10), 0.9, 0}}, []GroundTruth{{box(0, 0, 10, 10), 0}}, [][NumIoUThresholds]bool{all}},
		{"wrong class", []Detection{{box(0, 0, 10, 10), 0.9, 1}}, []GroundTruth{{box(0, 0, 10, 10), 0}}, [][NumIoUThresholds]bool{none}},
		// inter 50, union 100: IoU exactly 0.5 is not > 0.5
		{"IoU exactly 0.5", []Detection{{box(0, 0, 10, 10), 0.9, 0}}, []GroundTruth{{box(0, 0, 10, 5), 0}}, [][NumIoUThresholds]bool{none}},
		// inter 80, union 100: 0.8 (float32 0.8 is not > float32 iouv 0.8)
		{"IoU 0.8", []Detection{{box(0, 0, 10, 10), 0.9, 0}}, []GroundTruth{{box(0, 0, 10, 8), 0}}, [][NumIoUThresholds]bool{upTo(6)}},
		{"duplicate is FP", []Detection{{box(0, 0, 10, 10), 0.9, 0}, {box(0, 0, 10, 10), 0.8, 0}},
			[]GroundTruth{{box(0, 0, 10, 10), 0}}, [][NumIoUThresholds]bool{all, none}},
		// The second detection's best gt (IoU 1) is taken; its IoU 0.8 with
		// the other gt is not used (no fallback).
		{"no fallback", []Detection{{box(0, 0, 10, 10), 0.9, 0}, {box(0, 0, 10, 10), 0.8, 0}},
			[]GroundTruth{{box(0, 0, 10, 10), 0}, {box(0, 0, 10, 8), 0}}, [][NumIoUThresholds]bool{all, none}},
		{"order decides", []Detection{{box(0, 0, 10, 8), 0.9, 0}, {box(0, 0, 10, 10), 0.8, 0}},
			[]GroundTruth{{box(0, 0, 10, 10), 0}}, [][NumIoUThresholds]bool{upTo(6), none}},
		{"two classes", []Detection{{box(0, 0, 10, 10), 0.9, 1}, {box(20, 20, 30, 30), 0.8, 0}},
			[]GroundTruth{{box(20, 20, 30, 30), 0}, {box(0, 0, 10, 10), 1}}, [][NumIoUThresholds]bool{all, all}},
		{"zero-area boxes (NaN IoU)", []Detection{{box(5, 5, 5, 5), 0.9, 0}}, []GroundTruth{{box(5, 5, 5, 5), 0}}, [][NumIoUThresholds]bool{none}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := MatchImage(tc.dets, tc.gts)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMatchClipBox(t *testing.T) {
	got := ClipBox(Box{-5, -1, 700, 300}, 640, 480)
	if want := (Box{0, 0, 640, 300}); got != want {
		t.Errorf("ClipBox = %+v, want %+v", got, want)
	}
}

func TestAPPerClassCases(t *testing.T) {
	tp := [NumIoUThresholds]bool{true, true, true, true, true, true, true, true, true, true}
	fp := [NumIoUThresholds]bool{}
	// One class, 2 gts, predictions TP, FP, TP (conf descending):
	// recall 0.5, 0.5, 1; precision 1, 0.5, 2/3; mrec [0, .5, .5, 1, 1.01]
	// and the envelope mpre [1, 1, 2/3, 2/3, 0]. np.interp on the 101-point
	// grid: x < 0.5 -> 1; x = 0.5 -> 2/3 (the largest j with mrec[j] <= x);
	// x in (0.5, 1] -> 2/3. trapz: 49 intervals of 1·0.01, one of
	// (1+2/3)/2·0.01 and 50 of 2/3·0.01.
	ap3 := 0.01*49 + 0.01*(1+2.0/3)/2 + 0.01*50*2.0/3
	tests := []struct {
		name     string
		correct  [][NumIoUThresholds]bool
		conf     []float32
		pcls     []int
		tcls     []int
		v5       bool
		classes  int
		wantAP50 []float64
		wantMAP  float64
	}{
		{"no predictions", nil, nil, nil, []int{0, 0, 1}, false, 2, []float64{0, 0}, 0},
		{"no ground truth", [][NumIoUThresholds]bool{fp}, []float32{0.9}, []int{0}, nil, false, 0, nil, 0},
		{"class without gt ignored", [][NumIoUThresholds]bool{tp, fp}, []float32{0.9, 0.95}, []int{0, 3}, []int{0}, false, 1,
			// one TP, recall 1 → mrec [0,1,1.01], mpre [1,1,0]: all 101 points 1
			[]float64{1}, 1},
		// v5: mrec [0, 1, 1], mpre [1, 1, 0]: x = 1 takes the last knot
		// (0), so the last interval is (1+0)/2·0.01: AP 0.995, not 1.
		{"single TP v5", [][NumIoUThresholds]bool{tp}, []float32{0.9}, []int{0}, []int{0}, true, 1, []float64{0.995}, 0.995},
		{"TP FP TP", [][NumIoUThresholds]bool{fp, tp, tp}, []float32{0.8, 0.9, 0.7}, []int{0, 0, 0}, []int{0, 0}, false, 1,
			[]float64{ap3}, ap3},
		{"half recall", [][NumIoUThresholds]bool{tp}, []float32{0.9}, []int{0}, []int{0, 0}, false, 1,
			// mrec [0, .5, .51], mpre [1, 1, 0]: x<0.5 → 1, x=0.5 → 1, x=0.51 → 0 (last knot)
			// trapz: 50 intervals of 1·0.01, then (1+0)/2·0.01.
			[]float64{0.5 + 0.005}, 0.505},
		{"half recall v5", [][NumIoUThresholds]bool{tp}, []float32{0.9}, []int{0}, []int{0, 0}, true, 1,
			// mrec [0, .5, 1], mpre [1, 1, 0]: linear from 1 at .5 to 0 at 1 → 0.5 + 0.25
			[]float64{0.75}, 0.75},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := APPerClass(tc.correct, tc.conf, tc.pcls, tc.tcls, tc.v5)
			if len(m.PerClass) != tc.classes {
				t.Fatalf("%d classes, want %d", len(m.PerClass), tc.classes)
			}
			for ci, want := range tc.wantAP50 {
				if got := m.PerClass[ci].AP50; math.Abs(got-want) > 1e-12 {
					t.Errorf("class %d AP50 = %.17g, want %.17g", m.PerClass[ci].Class, got, want)
				}
			}
			if math.Abs(m.MAP50_95-tc.wantMAP) > 1e-12 {
				t.Errorf("mAP50_95 = %.17g, want %.17g", m.MAP50_95, tc.wantMAP)
			}
			if want := 0.1*m.MAP50 + 0.9*m.MAP50_95; math.Abs(m.Fitness-want) > 1e-15 {
				t.Errorf("fitness %v, want %v", m.Fitness, want)
			}
		})
	}
}

func TestAPPerClassPRAtMaxF1(t *testing.T) {
	// One class, one gt, one TP at conf 0.5: the 1000-point grid has P = 1
	// (left value) above 0.5 with R = 0, and P = R = 1 at and below it, so
	// the max-F1 index is the first grid point, conf 0: P = R = F1 ≈ 1.
	m := APPerClass([][NumIoUThresholds]bool{{true}}, []float32{0.5}, []int{0}, []int{0}, false)
	c := m.PerClass[0]
	if c.P != 1 || c.R != 1 || math.Abs(c.F1-1) > 1e-15 {
		t.Errorf("P %v R %v F1 %v, want 1", c.P, c.R, c.F1)
	}
	// AP at 0.55+ is 0: only the 0.5 flag is set.
	if c.AP[1] != 0 || c.AP50 != 1 || math.Abs(c.AP50_95-0.1) > 1e-15 {
		t.Errorf("AP %v", c.AP)
	}
}

func TestAPNumpyHelpers(t *testing.T) {
	xp := []float64{0, 0.5, 0.5, 1}
	fp := []float64{1, 0.8, 0.6, 0}
	tests := []struct{ x, want float64 }{
		{-1, -7}, {2, 9}, {0, 1}, {0.25, 0.9}, {0.5, 0.6}, {0.75, 0.3}, {1, 0},
	}
	for _, tc := range tests {
		if got := npInterp(tc.x, xp, fp, -7, 9); math.Abs(got-tc.want) > 1e-15 {
			t.Errorf("npInterp(%v) = %v, want %v", tc.x, got, tc.want)
		}
	}
	x := npLinspace(0, 1, 101)
	if x[0] != 0 || x[100] != 1 || x[50] != 0.5 || x[3] != 3*0.01 {
		t.Errorf("linspace: %v %v %v %v", x[0], x[3], x[50], x[100])
	}
	a := make([]float64, 300)
	for i := range a {
		a[i] = float64(i)
	}
	if s := npPairwiseSum(a); s != 299*300/2 {
		t.Errorf("pairwiseSum = %v", s)
	}
	if s := npTrapz([]float64{1, 1, 1}, []float64{0, 0.5, 1}); s != 1 {
		t.Errorf("trapz = %v", s)
	}
}

func TestAPPerClassGoldenPermuted(t *testing.T) {
	// ap_per_class sorts by confidence: the row order of its input (all
	// confidences distinct) must not matter.
	g := loadMapGolden(t)
	n := len(g.conf)
	c2, conf2, p2 := make([][NumIoUThresholds]bool, n), make([]float32, n), make([]int, n)
	for i := 0; i < n; i++ {
		j := (i*37 + 11) % n // 37 is coprime with 61
		c2[j], conf2[j], p2[j] = g.correct[i], g.conf[i], g.pcls[i]
	}
	a := APPerClass(g.correct, g.conf, g.pcls, g.tcls, false)
	b := APPerClass(c2, conf2, p2, g.tcls, false)
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("permuted input changed the result:\n%+v\n%+v", a, b)
	}
}

func TestEvaluatorEmptyImages(t *testing.T) {
	var e Evaluator
	e.Add(nil, []GroundTruth{{Box{0, 0, 10, 10}, 2}})                                      // a miss
	e.Add([]Detection{{Box{0, 0, 10, 10}, 0.9, 2}}, nil)                                   // an FP
	e.Add([]Detection{{Box{0, 0, 10, 10}, 0.8, 2}}, []GroundTruth{{Box{0, 0, 10, 10}, 2}}) // a TP
	m := e.Metrics(false)
	if len(m.PerClass) != 1 || m.PerClass[0].NGT != 2 {
		t.Fatalf("%+v", m)
	}
	// FP then TP over 2 gts: recall 0, 0.5; precision 0, 0.5; envelope
	// mpre [1, .5, .5, 0] over mrec [0, 0, .5, .51]: 0.5 for x <= 0.5,
	// then (0.5+0)/2 over the interval to 0.51.
	if want := 0.5*0.5 + 0.01*0.25; math.Abs(m.MAP50-want) > 1e-12 {
		t.Errorf("mAP50 %.17g, want %.17g", m.MAP50, want)
	}
}
