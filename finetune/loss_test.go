package finetune

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/yolo7d/yolo7d/tiny"
	"github.com/yolo7d/yolo7d/tiny/tinytest"
)

// ltAnchors are the yolov7-tiny anchors in pixels.
var ltAnchors = [][][2]float32{
	{{10, 13}, {16, 30}, {33, 23}},
	{{30, 61}, {62, 45}, {59, 119}},
	{{116, 90}, {156, 198}, {373, 326}},
}

// ltGoldenCases are the loss cases of golden/train/loss.
var ltGoldenCases = []string{
	"s01_ota_nc3_128x128_b2",
	"s02_ota_nc80_128x128_b2",
	"s03_ota_nc3_h192w256_b3",
	"s04_ota_nc1_160x160_b2",
	"s05_aux_nc3_160x160_b2",
	"s06_aux_nc80_128x128_b3",
	"s07_aux_nc3_h192w256_b2",
	"s08_ota_nc3_128x128_b2_ls01",
}

// ltResult is one reference result of a case (official or a variant).
type ltResult struct {
	Total     float64   `json:"total_loss"`
	LossItems []float64 `json:"loss_items"`
}

// ltCaseJSON is the part of case.json the tests read.
type ltCaseJSON struct {
	LossClass  string      `json:"loss_class"`
	NC         int         `json:"nc"`
	Batch      int         `json:"batch"`
	ImageShape []int       `json:"image_shape_BCHW"`
	Strides    []float64   `json:"strides"`
	Anchors    [][]float32 `json:"anchors_pixels"`
	Hyp        struct {
		Box            float64 `json:"box"`
		Obj            float64 `json:"obj"`
		Cls            float64 `json:"cls"`
		AnchorT        float64 `json:"anchor_t"`
		LabelSmoothing float64 `json:"label_smoothing"`
	} `json:"hyp_gains_used"`
	Outputs struct {
		Total     float64   `json:"total_loss"`
		LossItems []float64 `json:"loss_items"`
	} `json:"outputs"`
	Determinism struct {
		Stable *struct {
			Identical bool      `json:"identical_to_official"`
			Total     float64   `json:"total_loss"`
			LossItems []float64 `json:"loss_items"`
		} `json:"stable_topk_variant"`
	} `json:"determinism"`
	Fixed *struct {
		ltResult
		ltLevelsJSON
	} `json:"nonsquare_fixed_variant"`
}

// ltLevelsJSON holds per-level match lists of assignment.json.
type ltLevelsJSON struct {
	Lead []ltLevelMatches `json:"lead_build_targets"`
	Aux  []ltLevelMatches `json:"aux_build_targets2"`
}

// ltLevelMatches is one level of an assignment dump.
type ltLevelMatches struct {
	Level   int      `json:"level"`
	Matches [][5]int `json:"matches"`
}

// ltAssignmentJSON is the part of assignment.json the tests read.
type ltAssignmentJSON struct {
	ltLevelsJSON
	Stable *ltLevelsJSON `json:"stable_topk_variant"`
}

// ltCase is one loaded loss case.
type ltCase struct {
	name    string
	dir     string
	meta    ltCaseJSON
	asg     ltAssignmentJSON
	cfg     LossConfig
	batch   int
	h, w    int
	targets []Target
	lead    []Level
	aux     []Level
}

// ltReadNPY reads a float32 .npy file of the case.
func ltReadNPY(t *testing.T, path string) ([]int, []float32) {
	t.Helper()
	shape, data, err := tiny.ReadNPYFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return shape, data
}

// ltReadJSON decodes a JSON file into v.
func ltReadJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// ltLoadCase reads a loss case of the golden data.
func ltLoadCase(t *testing.T, root, name string) *ltCase {
	t.Helper()
	c := &ltCase{name: name, dir: filepath.Join(root, "loss", name)}
	ltReadJSON(t, filepath.Join(c.dir, "case.json"), &c.meta)
	ltReadJSON(t, filepath.Join(c.dir, "assignment.json"), &c.asg)
	m := &c.meta
	c.batch, c.h, c.w = m.Batch, m.ImageShape[2], m.ImageShape[3]
	anchors := make([][][2]float32, len(m.Anchors))
	for i, a := range m.Anchors {
		for k := 0; k+1 < len(a); k += 2 {
			anchors[i] = append(anchors[i], [2]float32{a[k], a[k+1]})
		}
	}
	strides := make([]int, len(m.Strides))
	for i, s := range m.Strides {
		strides[i] = int(s)
	}
	c.cfg = LossConfig{
		NC:             m.NC,
		Anchors:        anchors,
		Strides:        strides,
		Gains:          Gains{Box: m.Hyp.Box, Obj: m.Hyp.Obj, Cls: m.Hyp.Cls},
		LabelSmoothing: m.Hyp.LabelSmoothing,
		AnchorT:        m.Hyp.AnchorT,
		Aux:            m.LossClass == "ComputeLossAuxOTA",
	}
	shape, tg := ltReadNPY(t, filepath.Join(c.dir, "targets.npy"))
	if len(shape) != 2 || shape[1] != 6 {
		t.Fatalf("targets shape %v", shape)
	}
	for r := 0; r < shape[0]; r++ {
		row := tg[r*6 : r*6+6]
		c.targets = append(c.targets, Target{Image: int(row[0]), Class: int(row[1]), X: row[2], Y: row[3], W: row[4], H: row[5]})
	}
	load := func(prefix string) []Level {
		var lv []Level
		for i := range strides {
			shape, data := ltReadNPY(t, filepath.Join(c.dir, fmt.Sprintf("%s_p%d.npy", prefix, i+3)))
			lv = append(lv, Level{Data: data, NY: shape[2], NX: shape[3]})
		}
		return lv
	}
	c.lead = load("pred_lead")
	if c.cfg.Aux {
		c.aux = load("pred_aux")
	}
	return c
}

// ltNewGrads allocates gradient buffers shaped like levels.
func ltNewGrads(levels []Level) [][]float32 {
	if levels == nil {
		return nil
	}
	g := make([][]float32, len(levels))
	for i, lv := range levels {
		g[i] = make([]float32, len(lv.Data))
	}
	return g
}

// ltRelErr is |a−b|/|b| (absolute when b is 0).
func ltRelErr(a, b float64) float64 {
	if b == 0 {
		return math.Abs(a)
	}
	return math.Abs(a-b) / math.Abs(b)
}

// ltGradErr returns max|g−ref| / max|ref|.
func ltGradErr(g, ref []float32) float64 {
	var maxDiff, maxRef float64
	for i := range ref {
		d := math.Abs(float64(g[i]) - float64(ref[i]))
		if d > maxDiff {
			maxDiff = d
		}
		if r := math.Abs(float64(ref[i])); r > maxRef {
			maxRef = r
		}
	}
	if maxRef == 0 {
		return maxDiff
	}
	return maxDiff / maxRef
}

// Tolerances against the float32 golden results.
const (
	ltLossTol = 1e-5
	ltGradTol = 1e-5
)

// ltCheckVariant runs the case with cfg and compares the items with want,
// the assignment with asg and the gradients with the files prefix+grad_*.
func ltCheckVariant(t *testing.T, c *ltCase, cfg LossConfig, want ltResult, asg *ltLevelsJSON, prefix string) {
	t.Helper()
	l, err := NewLoss(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gl, ga := ltNewGrads(c.lead), ltNewGrads(c.aux)
	it, got, err := l.Compute(c.lead, c.aux, c.batch, c.h, c.w, c.targets, gl, ga)
	if err != nil {
		t.Fatal(err)
	}
	items := []float64{it.Box, it.Obj, it.Cls, it.Total}
	worst := 0.0
	for k, name := range []string{"lbox", "lobj", "lcls", "loss"} {
		e := ltRelErr(items[k], want.LossItems[k])
		worst = math.Max(worst, e)
		if e > ltLossTol {
			t.Errorf("%s = %.9g, want %.9g (rel err %.2g)", name, items[k], want.LossItems[k], e)
		}
	}
	if e := ltRelErr(it.Total*float64(c.batch), want.Total); e > ltLossTol {
		t.Errorf("total×B = %.9g, want %.9g (rel err %.2g)", it.Total*float64(c.batch), want.Total, e)
	} else {
		worst = math.Max(worst, e)
	}
	if asg != nil {
		ltCompareMatches(t, "lead", got.Lead, asg.Lead)
		if cfg.Aux {
			ltCompareMatches(t, "aux", got.Aux, asg.Aux)
		} else if got.Aux != nil {
			t.Errorf("aux assignment %v for the OTA loss", got.Aux)
		}
	}
	worstG := 0.0
	for _, head := range []struct {
		name string
		g    [][]float32
	}{{"lead", gl}, {"aux", ga}} {
		for i, g := range head.g {
			path := filepath.Join(c.dir, fmt.Sprintf("%sgrad_%s_p%d.npy", prefix, head.name, i+3))
			_, ref := ltReadNPY(t, path)
			if len(ref) != len(g) {
				t.Fatalf("%s: %d values, ours %d", path, len(ref), len(g))
			}
			e := ltGradErr(g, ref)
			worstG = math.Max(worstG, e)
			if e > ltGradTol {
				t.Errorf("%s grad p%d: max err %.3g of max|g|", head.name, i+3, e)
			}
		}
	}
	t.Logf("%s%s: worst loss rel err %.2g, worst grad err %.2g (of max|g|)", prefix, c.name, worst, worstG)
}

// ltMatchRows renders matches as sorted rows for a multiset comparison.
func ltMatchRows(ms []Match) []string {
	rows := make([]string, len(ms))
	for i, m := range ms {
		rows[i] = fmt.Sprintf("%d,%d,%d,%d,%d", m.Image, m.Anchor, m.GJ, m.GI, m.Target)
	}
	sort.Strings(rows)
	return rows
}

// ltCompareMatches compares per-level assignments as multisets of rows.
func ltCompareMatches(t *testing.T, head string, got [][]Match, want []ltLevelMatches) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d levels, want %d", head, len(got), len(want))
		return
	}
	for _, lv := range want {
		w := make([]Match, len(lv.Matches))
		for k, r := range lv.Matches {
			w[k] = Match{Image: r[0], Anchor: r[1], GJ: r[2], GI: r[3], Target: r[4]}
		}
		gr, wr := ltMatchRows(got[lv.Level]), ltMatchRows(w)
		if strings.Join(gr, " ") != strings.Join(wr, " ") {
			t.Errorf("%s level %d: matches differ\n got  %v\n want %v", head, lv.Level, gr, wr)
		}
	}
}

// TestLossGolden compares items, assignment and gradients with the
// official ComputeLossOTA/ComputeLossAuxOTA on every golden case (s07 with
// its stable-topk variant, s03/s07 also with the fixed (W,H) OTA cost).
func TestLossGolden(t *testing.T) {
	root := tinytest.GoldenOrSkip(t, "train")
	for _, name := range ltGoldenCases {
		t.Run(name[:3], func(t *testing.T) {
			c := ltLoadCase(t, root, name)
			want := ltResult{Total: c.meta.Outputs.Total, LossItems: c.meta.Outputs.LossItems}
			asg := &c.asg.ltLevelsJSON
			prefix := ""
			if st := c.meta.Determinism.Stable; st != nil && !st.Identical {
				// Our top-k is stable; the official CPU top-k is not.
				want = ltResult{Total: st.Total, LossItems: st.LossItems}
				if c.asg.Stable == nil {
					t.Fatal("stable-topk assignment missing")
				}
				asg = c.asg.Stable
				prefix = "stabletopk_"
			}
			ltCheckVariant(t, c, c.cfg, want, asg, prefix)
			if fx := c.meta.Fixed; fx != nil {
				cfg := c.cfg
				cfg.FixedWH = true
				ltCheckVariant(t, c, cfg, fx.ltResult, &fx.ltLevelsJSON, "fixedwh_")
			}
		})
	}
}

// ltSynthCase builds a small random case: nc classes, batch 2 of 64×96.
func ltSynthCase(rng *rand.Rand, nc int, aux bool, scale float32) (LossConfig, []Level, []Level, []Target, int, int, int) {
	cfg := LossConfig{
		NC:             nc,
		Anchors:        ltAnchors,
		Strides:        []int{8, 16, 32},
		Gains:          Gains{Box: 0.05, Obj: 0.7, Cls: 0.3},
		LabelSmoothing: 0.1,
		Aux:            aux,
	}
	batch, h, w := 2, 64, 96
	mk := func() []Level {
		var lv []Level
		for _, s := range cfg.Strides {
			ny, nx := h/s, w/s
			d := make([]float32, batch*3*ny*nx*(5+nc))
			for i := range d {
				d[i] = float32(rng.NormFloat64()) * scale
			}
			lv = append(lv, Level{Data: d, NY: ny, NX: nx})
		}
		return lv
	}
	lead := mk()
	var auxL []Level
	if aux {
		auxL = mk()
	}
	var tg []Target
	for b := 0; b < batch; b++ {
		for k := 0; k < 4+b; k++ {
			tg = append(tg, Target{
				Image: b, Class: rng.Intn(nc),
				X: float32(0.1 + 0.8*rng.Float64()), Y: float32(0.1 + 0.8*rng.Float64()),
				W: float32(0.1 + 0.4*rng.Float64()), H: float32(0.1 + 0.5*rng.Float64()),
			})
		}
	}
	return cfg, lead, auxL, tg, batch, h, w
}

// TestLossGradFiniteDiff checks the analytic gradient of Total×B against
// central differences (float64 evaluation) on every prediction that has a
// non-zero gradient and a sample of the others. The assignment is frozen
// (it is piecewise constant), so the check is of the differentiable part.
func TestLossGradFiniteDiff(t *testing.T) {
	for _, aux := range []bool{false, true} {
		t.Run(fmt.Sprintf("aux=%v", aux), func(t *testing.T) {
			rng := rand.New(rand.NewSource(3))
			cfg, lead, auxL, tg, batch, h, w := ltSynthCase(rng, 4, aux, 1.5)
			l, err := NewLoss(cfg)
			if err != nil {
				t.Fatal(err)
			}
			gl, ga := ltNewGrads(lead), ltNewGrads(auxL)
			_, asg, err := l.Compute(lead, auxL, batch, h, w, tg, gl, ga)
			if err != nil {
				t.Fatal(err)
			}
			npos := 0
			for _, m := range asg.Lead {
				npos += len(m)
			}
			if npos == 0 {
				t.Fatal("no positives in the synthetic case")
			}
			// Total×B as a float64 function of one perturbed element.
			eval := func(lv []Level, i, k int, x float64) float64 {
				f := &ltFDLevel{data: lv[i].Data, k: k, x: x}
				return l.fdTotal(lead, auxL, asg, batch, tg, f, lv, i)
			}
			worst := 0.0
			checked := 0
			for _, head := range []struct {
				lv []Level
				g  [][]float32
			}{{lead, gl}, {auxL, ga}} {
				for i, lv := range head.lv {
					maxG := 0.0
					for _, v := range head.g[i] {
						maxG = math.Max(maxG, math.Abs(float64(v)))
					}
					for k := range lv.Data {
						if head.g[i][k] == 0 && rng.Intn(50) != 0 {
							continue
						}
						x0 := float64(lv.Data[k])
						const hstep = 1e-5
						fd := (eval(head.lv, i, k, x0+hstep) - eval(head.lv, i, k, x0-hstep)) / (2 * hstep)
						e := math.Abs(fd-float64(head.g[i][k])) / (maxG + 1e-12)
						worst = math.Max(worst, e)
						checked++
						if e > 1e-5 {
							t.Errorf("level %d element %d (%s): analytic %.9g, finite difference %.9g", i, k, l.where(k, lv.NY, lv.NX), head.g[i][k], fd)
						}
					}
				}
			}
			t.Logf("%d elements checked, worst error %.2g of max|g|", checked, worst)
		})
	}
}

// ltFDLevel overrides one element of a level's data in the float64 evaluator.
type ltFDLevel struct {
	data []float32
	k    int
	x    float64
}

// fdTotal evaluates Total×B in float64 for a fixed assignment, with the
// element f.k of level fl[i] replaced by f.x. It mirrors levelLoss without
// gradients (an independent straight-line evaluation).
func (l *Loss) fdTotal(lead, aux []Level, asg *Assignment, batch int, targets []Target, f *ltFDLevel, fl []Level, fi int) float64 {
	val := func(lv []Level, i, k int) float64 {
		if &lv[0] == &fl[0] && i == fi && k == f.k {
			return f.x
		}
		return float64(lv[i].Data[k])
	}
	var box, obj, cls float64
	head := func(lv []Level, ms [][]Match, w float64) {
		for i := range lv {
			ny, nx := lv[i].NY, lv[i].NX
			ncell := batch * l.na * ny * nx
			tobj := make([]float64, ncell)
			n := len(ms[i])
			var lb, lc float64
			for _, m := range ms[i] {
				cell := ((m.Image*l.na+m.Anchor)*ny+m.GJ)*nx + m.GI
				p := func(c int) float64 { return val(lv, i, cell*l.no+c) }
				p0 := func(c int) float64 { return float64(lv[i].Data[cell*l.no+c]) }
				anc := l.anchors[i][m.Anchor]
				decode := func(p func(int) float64) [4]float64 {
					return [4]float64{
						2*lossSigmoid(p(0)) - 0.5, 2*lossSigmoid(p(1)) - 0.5,
						math.Pow(2*lossSigmoid(p(2)), 2) * float64(anc[0]), math.Pow(2*lossSigmoid(p(3)), 2) * float64(anc[1]),
					}
				}
				t := targets[m.Target]
				tb := [4]float64{
					float64(float32(float32(t.X*float32(nx)) - float32(m.GI))),
					float64(float32(float32(t.Y*float32(ny)) - float32(m.GJ))),
					float64(float32(t.W * float32(nx))), float64(float32(t.H * float32(ny))),
				}
				// α and the objectness target are detached: take them at
				// the unperturbed point.
				v0, alpha := ltCIoURef(decode(p0), tb, -1)
				v, _ := ltCIoURef(decode(p), tb, alpha)
				lb += 1 - v
				tobj[cell] = math.Max(v0, 0)
				if l.cfg.NC > 1 {
					cp, cn := 1-l.cfg.LabelSmoothing/2, l.cfg.LabelSmoothing/2
					for c := 0; c < l.cfg.NC; c++ {
						tg := cn
						if c == t.Class {
							tg = cp
						}
						x := p(5 + c)
						lc += math.Log1p(math.Exp(-math.Abs(x))) + math.Max(x, 0) - tg*x
					}
				}
			}
			if n > 0 {
				box += w * lb / float64(n)
				cls += w * lc / float64(n*l.cfg.NC)
			}
			var lo float64
			for c := 0; c < ncell; c++ {
				x := val(lv, i, c*l.no+4)
				lo += math.Log1p(math.Exp(-math.Abs(x))) + math.Max(x, 0) - tobj[c]*x
			}
			obj += w * l.balance[i] * lo / float64(ncell)
		}
	}
	head(lead, asg.Lead, 1)
	if l.cfg.Aux {
		head(aux, asg.Aux, lossAuxWeight)
	}
	g := l.cfg.Gains
	return (box*g.Box + obj*g.Obj + cls*g.Cls) * float64(batch)
}

// TestLossCIoUGrad checks the CIoU forward against an independent
// implementation and its backward against central differences with α held
// constant, including boxes that do not overlap and nested boxes.
func TestLossCIoUGrad(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	for trial := 0; trial < 2000; trial++ {
		p := [4]float64{rng.Float64() * 4, rng.Float64() * 4, 0.05 + rng.Float64()*6, 0.05 + rng.Float64()*6}
		tb := [4]float64{rng.Float64() * 4, rng.Float64() * 4, 0.05 + rng.Float64()*6, 0.05 + rng.Float64()*6}
		v, g := ciou(p, tb, 1)
		ref, alpha := ltCIoURef(p, tb, -1)
		if math.Abs(v-ref) > 1e-12 {
			t.Fatalf("trial %d: ciou %.15g, reference %.15g", trial, v, ref)
		}
		ga := [4]float64{g.X, g.Y, g.W, g.H}
		for k := 0; k < 4; k++ {
			const h = 1e-6
			pp, pm := p, p
			pp[k] += h
			pm[k] -= h
			vp, _ := ltCIoURef(pp, tb, alpha)
			vm, _ := ltCIoURef(pm, tb, alpha)
			fd := (vp - vm) / (2 * h)
			if math.Abs(fd-ga[k]) > 1e-6*(1+math.Abs(fd)) {
				t.Fatalf("trial %d p %v t %v: d/d[%d] analytic %.9g, fd %.9g", trial, p, tb, k, ga[k], fd)
			}
		}
	}
}

// ltCIoURef is an independent straight-line CIoU of the official bbox_iou;
// alpha < 0 computes α, else the given α is used (to hold it constant).
func ltCIoURef(p, t [4]float64, alpha float64) (float64, float64) {
	const eps = 1e-7
	b1x1, b1x2 := p[0]-p[2]/2, p[0]+p[2]/2
	b1y1, b1y2 := p[1]-p[3]/2, p[1]+p[3]/2
	b2x1, b2x2 := t[0]-t[2]/2, t[0]+t[2]/2
	b2y1, b2y2 := t[1]-t[3]/2, t[1]+t[3]/2
	inter := math.Max(math.Min(b1x2, b2x2)-math.Max(b1x1, b2x1), 0) *
		math.Max(math.Min(b1y2, b2y2)-math.Max(b1y1, b2y1), 0)
	w1, h1 := b1x2-b1x1, b1y2-b1y1+eps
	w2, h2 := b2x2-b2x1, b2y2-b2y1+eps
	union := w1*h1 + w2*h2 - inter + eps
	iou := inter / union
	cw := math.Max(b1x2, b2x2) - math.Min(b1x1, b2x1)
	ch := math.Max(b1y2, b2y2) - math.Min(b1y1, b2y1)
	c2 := cw*cw + ch*ch + eps
	rho2 := (math.Pow(b2x1+b2x2-b1x1-b1x2, 2) + math.Pow(b2y1+b2y2-b1y1-b1y2, 2)) / 4
	v := (4 / (math.Pi * math.Pi)) * math.Pow(math.Atan(w2/(h2+eps))-math.Atan(w1/(h1+eps)), 2)
	if alpha < 0 {
		alpha = v / (v - iou + (1 + eps))
	}
	return iou - (rho2/c2 + v*alpha), alpha
}

// TestLossNoTargets checks a batch without targets: lbox = lcls = 0, lobj
// is the BCE against zeros, and the gradient is only on obj.
func TestLossNoTargets(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	cfg, lead, auxL, _, batch, h, w := ltSynthCase(rng, 3, true, 1)
	l, err := NewLoss(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gl, ga := ltNewGrads(lead), ltNewGrads(auxL)
	for i := range gl {
		for k := range gl[i] {
			gl[i][k] = 7 // must be overwritten
		}
	}
	it, asg, err := l.Compute(lead, auxL, batch, h, w, nil, gl, ga)
	if err != nil {
		t.Fatal(err)
	}
	if it.Box != 0 || it.Cls != 0 || !(it.Obj > 0) || it.Total != it.Obj {
		t.Fatalf("items %+v", it)
	}
	for i := range asg.Lead {
		if len(asg.Lead[i]) != 0 || len(asg.Aux[i]) != 0 {
			t.Fatalf("positives without targets: %v", asg)
		}
	}
	// lobj = Σ_i balance_i·(mean softplus(lead obj) + 0.25·mean softplus(aux obj)).
	want := 0.0
	for i := range lead {
		for _, hd := range []struct {
			lv Level
			w  float64
		}{{lead[i], 1}, {auxL[i], 0.25}} {
			s := 0.0
			n := len(hd.lv.Data) / l.no
			for c := 0; c < n; c++ {
				x := float64(hd.lv.Data[c*l.no+4])
				s += math.Log1p(math.Exp(-math.Abs(x))) + math.Max(x, 0)
			}
			want += hd.w * l.balance[i] * s / float64(n)
		}
	}
	want *= cfg.Gains.Obj
	if ltRelErr(it.Obj, want) > 1e-12 {
		t.Fatalf("lobj %.12g, want %.12g", it.Obj, want)
	}
	for i := range gl {
		for k, v := range gl[i] {
			if (k%l.no == 4) != (v != 0) {
				t.Fatalf("lead grad level %d element %d = %v", i, k, v)
			}
		}
	}
}

// TestLossErrors checks that bad input is an error naming the problem.
func TestLossErrors(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	cfg, lead, auxL, tg, batch, h, w := ltSynthCase(rng, 3, true, 1)
	l, err := NewLoss(cfg)
	if err != nil {
		t.Fatal(err)
	}
	nan := float32(math.NaN())
	withNaN := func(lv []Level, i, k int) []Level {
		out := make([]Level, len(lv))
		copy(out, lv)
		d := append([]float32(nil), lv[i].Data...)
		d[k] = nan
		out[i].Data = d
		return out
	}
	// A class channel of a lead and of an aux positive cell.
	_, asg, err := l.Compute(lead, auxL, batch, h, w, tg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	type pos struct {
		lvl, k int
		where  string
	}
	pick := func(ms [][]Match) pos {
		for i := len(ms) - 1; i >= 0; i-- {
			if len(ms[i]) == 0 {
				continue
			}
			m := ms[i][0]
			lv := lead[i]
			k := (((m.Image*l.na+m.Anchor)*lv.NY+m.GJ)*lv.NX+m.GI)*l.no + 6
			return pos{i, k, fmt.Sprintf("%d: non-finite prediction NaN at %s", i, l.where(k, lv.NY, lv.NX))}
		}
		t.Fatal("no positives")
		return pos{}
	}
	leadPos, auxPos := pick(asg.Lead), pick(asg.Aux)
	// A NaN the loss never reads (a class channel far from every target)
	// is not an error.
	if _, _, err := l.Compute(lead, auxL, batch, h, w, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Compute(withNaN(lead, 0, 6), auxL, batch, h, w, nil, nil, nil); err != nil {
		t.Fatalf("unread NaN: %v", err)
	}
	short := make([]Level, len(lead))
	copy(short, lead)
	short[1].Data = short[1].Data[:len(short[1].Data)-1]
	badT := func(f func(*Target)) []Target {
		c := append([]Target(nil), tg...)
		f(&c[2])
		return c
	}
	cases := []struct {
		name      string
		lead, aux []Level
		batch     int
		h, w      int
		tg        []Target
		gl, ga    [][]float32
		want      string
	}{
		{"batch 0", lead, auxL, 0, h, w, tg, nil, nil, "batch size"},
		{"no levels", nil, auxL, batch, h, w, tg, nil, nil, "lead levels"},
		{"no aux", lead, nil, batch, h, w, tg, nil, nil, "aux levels"},
		{"size", lead, auxL, batch, h + 32, w, tg, nil, nil, "grid is"},
		{"stride", lead, auxL, batch, h + 4, w, tg, nil, nil, "multiple of stride"},
		{"short data", short, auxL, batch, h, w, tg, nil, nil, "lead level 1 has"},
		{"nan lead obj", withNaN(lead, 2, 20), auxL, batch, h, w, tg, nil, nil, "lead level 2: non-finite prediction NaN at image 0, anchor 0, cell (gj 0, gi 2), channel 4"},
		{"nan aux obj", lead, withNaN(auxL, 0, 4), batch, h, w, tg, nil, nil, "aux level 0: non-finite prediction NaN at image 0, anchor 0, cell (gj 0, gi 0), channel 4"},
		{"nan lead candidate", withNaN(lead, leadPos.lvl, leadPos.k), auxL, batch, h, w, tg, nil, nil, "lead level " + leadPos.where},
		{"nan aux positive", lead, withNaN(auxL, auxPos.lvl, auxPos.k), batch, h, w, tg, nil, nil, "aux level " + auxPos.where},
		{"image", lead, auxL, batch, h, w, badT(func(t *Target) { t.Image = 2 }), nil, nil, "target 2: image index 2"},
		{"image neg", lead, auxL, batch, h, w, badT(func(t *Target) { t.Image = -1 }), nil, nil, "target 2: image index -1"},
		{"class", lead, auxL, batch, h, w, badT(func(t *Target) { t.Class = 3 }), nil, nil, "target 2: class 3"},
		{"target nan", lead, auxL, batch, h, w, badT(func(t *Target) { t.W = nan }), nil, nil, "target 2: non-finite"},
		{"target inf", lead, auxL, batch, h, w, badT(func(t *Target) { t.X = float32(math.Inf(1)) }), nil, nil, "target 2: non-finite"},
		{"target neg", lead, auxL, batch, h, w, badT(func(t *Target) { t.H = -0.1 }), nil, nil, "target 2: negative size"},
		{"grad levels", lead, auxL, batch, h, w, tg, ltNewGrads(lead)[:2], nil, "lead gradient levels"},
		{"grad size", lead, auxL, batch, h, w, tg, nil, [][]float32{nil, make([]float32, 3), nil}, "aux gradient level 1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := l.Compute(c.lead, c.aux, c.batch, c.h, c.w, c.tg, c.gl, c.ga)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	// Aux data for an OTA loss.
	cfg.Aux = false
	l2, err := NewLoss(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := l2.Compute(lead, auxL, batch, h, w, tg, nil, nil); err == nil || !strings.Contains(err.Error(), "Aux false") {
		t.Fatalf("aux levels with Aux false: %v", err)
	}

	// Bad configs.
	good := LossConfig{NC: 3, Anchors: ltAnchors, Strides: []int{8, 16, 32}, Gains: Gains{Box: 0.05, Obj: 1, Cls: 0.5}}
	cfgCases := []struct {
		name string
		edit func(*LossConfig)
		want string
	}{
		{"nc", func(c *LossConfig) { c.NC = 0 }, "NC"},
		{"levels", func(c *LossConfig) { c.Anchors = nil }, "no anchor levels"},
		{"strides", func(c *LossConfig) { c.Strides = []int{8, 16} }, "strides"},
		{"stride 0", func(c *LossConfig) { c.Strides = []int{8, 0, 32} }, "stride 0 of level 1"},
		{"na", func(c *LossConfig) { c.Anchors = [][][2]float32{ltAnchors[0], ltAnchors[1][:2], ltAnchors[2]} }, "level 1 has 2 anchors"},
		{"anchor", func(c *LossConfig) {
			c.Anchors = [][][2]float32{ltAnchors[0], {{30, 61}, {0, 45}, {59, 119}}, ltAnchors[2]}
		}, "anchor 1 of level 1"},
		{"gain", func(c *LossConfig) { c.Gains.Obj = math.NaN() }, "obj gain"},
		{"smoothing", func(c *LossConfig) { c.LabelSmoothing = 1.5 }, "label smoothing"},
		{"anchor_t", func(c *LossConfig) { c.AnchorT = 0.5 }, "anchor_t"},
	}
	for _, c := range cfgCases {
		t.Run("config "+c.name, func(t *testing.T) {
			cfg := good
			c.edit(&cfg)
			if _, err := NewLoss(cfg); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// TestLossGarbage feeds random ±50 logits and odd targets (zero sizes,
// boxes outside the image, huge boxes) and checks nothing panics and the
// loss stays finite.
func TestLossGarbage(t *testing.T) {
	rng := rand.New(rand.NewSource(9))
	for trial := 0; trial < 40; trial++ {
		aux := trial%2 == 1
		nc := 1 + rng.Intn(6)
		cfg, lead, auxL, _, batch, h, w := ltSynthCase(rng, nc, aux, 1)
		for _, lv := range append(append([]Level(nil), lead...), auxL...) {
			for k := range lv.Data {
				lv.Data[k] = float32(rng.Float64()*100 - 50)
			}
		}
		var tg []Target
		for k := rng.Intn(30); k > 0; k-- {
			tg = append(tg, Target{
				Image: rng.Intn(batch), Class: rng.Intn(nc),
				X: float32(rng.Float64()*3 - 1), Y: float32(rng.Float64()*3 - 1),
				W: float32(rng.Float64() * 3 * float64(rng.Intn(2))), H: float32(rng.Float64() * 3),
			})
		}
		l, err := NewLoss(cfg)
		if err != nil {
			t.Fatal(err)
		}
		gl, ga := ltNewGrads(lead), ltNewGrads(auxL)
		it, _, err := l.Compute(lead, auxL, batch, h, w, tg, gl, ga)
		if err != nil {
			t.Fatal(err)
		}
		if math.IsNaN(it.Total) || math.IsInf(it.Total, 0) {
			t.Fatalf("trial %d: items %+v", trial, it)
		}
		for _, g := range append(gl, ga...) {
			for _, v := range g {
				if v != v || math.IsInf(float64(v), 0) {
					t.Fatalf("trial %d: non-finite gradient", trial)
				}
			}
		}
	}
}

// BenchmarkLossAux measures one AuxOTA step at batch 8 of 320×320 with 10
// targets per image, for nc = 3 and nc = 80.
func BenchmarkLossAux(b *testing.B) {
	for _, nc := range []int{3, 80} {
		b.Run(fmt.Sprintf("nc%d", nc), func(b *testing.B) { ltBench(b, nc) })
	}
}

// ltBench runs the AuxOTA benchmark for nc classes.
func ltBench(b *testing.B, nc int) {
	rng := rand.New(rand.NewSource(5))
	batch, h, w := 8, 320, 320
	cfg := LossConfig{NC: nc, Anchors: ltAnchors, Strides: []int{8, 16, 32}, Gains: Gains{Box: 0.05, Obj: 0.25, Cls: 0.5}, Aux: true}
	mk := func() []Level {
		var lv []Level
		for _, s := range cfg.Strides {
			ny, nx := h/s, w/s
			d := make([]float32, batch*3*ny*nx*(5+nc))
			for i := range d {
				d[i] = float32(rng.NormFloat64())
			}
			lv = append(lv, Level{Data: d, NY: ny, NX: nx})
		}
		return lv
	}
	lead, auxL := mk(), mk()
	var tg []Target
	for im := 0; im < batch; im++ {
		for k := 0; k < 10; k++ {
			tg = append(tg, Target{Image: im, Class: rng.Intn(nc), X: float32(rng.Float64()), Y: float32(rng.Float64()),
				W: float32(0.03 + 0.4*rng.Float64()), H: float32(0.03 + 0.4*rng.Float64())})
		}
	}
	l, err := NewLoss(cfg)
	if err != nil {
		b.Fatal(err)
	}
	gl, ga := ltNewGrads(lead), ltNewGrads(auxL)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := l.Compute(lead, auxL, batch, h, w, tg, gl, ga); err != nil {
			b.Fatal(err)
		}
	}
}
