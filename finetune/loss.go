package finetune

import (
	"errors"
	"fmt"
	"math"
)

// Level is one head output: B × NA × NY × NX × NO float32 raw logits in C
// order, NO = 5+nc, channels [tx, ty, tw, th, obj, cls_0 … cls_nc−1] (what
// IDetect/IAuxDetect return in training mode).
type Level struct {
	Data   []float32
	NY, NX int
}

// LossConfig configures the official YOLOv7 training loss.
type LossConfig struct {
	// NC is the number of classes.
	NC int
	// Anchors holds, per level, the NA anchor (w, h) pairs in input pixels
	// (yolov7-tiny: 10,13 16,30 33,23 / 30,61 62,45 59,119 / 116,90 156,198
	// 373,326). Every level has the same NA.
	Anchors [][][2]float32
	// Strides holds the stride of each level in pixels (8, 16, 32).
	Strides []int
	// Gains are the loss gains, already scaled (Hyp.Gains).
	Gains Gains
	// LabelSmoothing is ε of --label-smoothing: class targets cp = 1 − ε/2,
	// cn = ε/2.
	LabelSmoothing float64
	// AnchorT is the anchor-ratio threshold; 0 means the official 4.
	AnchorT float64
	// Aux selects ComputeLossAuxOTA (lead and aux heads, top-20 dynamic k
	// for both assigners, aux terms ×0.25); false is ComputeLossOTA
	// (lead only, top-10).
	Aux bool
	// FixedWH scales the gt boxes of the OTA cost by (W, H, W, H) instead of
	// the official H for all four coordinates (which is wrong for
	// non-square inputs). It does not change square batches.
	FixedWH bool
}

// LossItems are the official loss_items, before the ×B: the gained box,
// objectness and class terms and their sum. The back-propagated value is
// Total×B.
type LossItems struct {
	Box, Obj, Cls, Total float64
}

// Loss evaluates the official YOLOv7 OTA loss (ComputeLossOTA or
// ComputeLossAuxOTA) and its analytic gradient. It holds scratch buffers
// that are reused between calls; it is not safe for concurrent use.
type Loss struct {
	cfg     LossConfig
	nl, na  int
	no      int
	anchorT float32
	anchors [][][2]float32 // per level, anchors in grid units (float32 px/stride)
	balance []float64

	cands   [][]otaCand // per level, candidates of the running assigner
	ota     otaScratch
	leadM   [][]Match // per level, lead positives
	auxM    [][]Match // per level, aux positives
	tobj    []float64 // objectness targets of one level
	posGrad []float64 // 4 per positive: d/d(tx, ty, tw, th)
	trace   *otaTrace // tests: records the matcher's intermediates
}

// Objectness balance of the official loss: {3: [4, 1, 0.4]}, else the
// 5-level default.
var (
	lossBalance3 = [...]float64{4.0, 1.0, 0.4}
	lossBalance5 = [...]float64{4.0, 1.0, 0.25, 0.06, 0.02}
)

// lossAuxWeight is the weight of the aux head's terms in ComputeLossAuxOTA.
const lossAuxWeight = 0.25

// NewLoss validates cfg and returns a Loss for it.
func NewLoss(cfg LossConfig) (*Loss, error) {
	if cfg.NC < 1 {
		return nil, fmt.Errorf("loss config: NC must be at least 1, got %d", cfg.NC)
	}
	nl := len(cfg.Anchors)
	if nl == 0 {
		return nil, errors.New("loss config: no anchor levels")
	}
	if len(cfg.Strides) != nl {
		return nil, fmt.Errorf("loss config: %d anchor levels but %d strides", nl, len(cfg.Strides))
	}
	if nl > len(lossBalance5) {
		return nil, fmt.Errorf("loss config: %d levels, at most %d supported", nl, len(lossBalance5))
	}
	na := len(cfg.Anchors[0])
	if na == 0 {
		return nil, errors.New("loss config: level 0 has no anchors")
	}
	l := &Loss{cfg: cfg, nl: nl, na: na, no: 5 + cfg.NC}
	l.anchors = make([][][2]float32, nl)
	for i, lv := range cfg.Anchors {
		if len(lv) != na {
			return nil, fmt.Errorf("loss config: level %d has %d anchors, level 0 has %d", i, len(lv), na)
		}
		s := cfg.Strides[i]
		if s <= 0 {
			return nil, fmt.Errorf("loss config: stride %d of level %d is not positive", s, i)
		}
		l.anchors[i] = make([][2]float32, na)
		for a, wh := range lv {
			for k := 0; k < 2; k++ {
				v := wh[k]
				if !(v > 0) || math.IsInf(float64(v), 0) {
					return nil, fmt.Errorf("loss config: anchor %d of level %d is %v, want positive finite sizes", a, i, wh)
				}
				l.anchors[i][a][k] = v / float32(s)
			}
		}
	}
	for _, g := range []struct {
		name string
		v    float64
	}{{"box", cfg.Gains.Box}, {"obj", cfg.Gains.Obj}, {"cls", cfg.Gains.Cls}} {
		if !(g.v >= 0) || math.IsInf(g.v, 0) {
			return nil, fmt.Errorf("loss config: %s gain %v is not a finite non-negative number", g.name, g.v)
		}
	}
	if !(cfg.LabelSmoothing >= 0 && cfg.LabelSmoothing <= 1) {
		return nil, fmt.Errorf("loss config: label smoothing %v outside [0, 1]", cfg.LabelSmoothing)
	}
	at := cfg.AnchorT
	if at == 0 {
		at = 4
	}
	if !(at > 1) || math.IsInf(at, 0) {
		return nil, fmt.Errorf("loss config: anchor_t %v must be a finite number above 1", cfg.AnchorT)
	}
	l.anchorT = float32(at)
	if nl == len(lossBalance3) {
		l.balance = lossBalance3[:]
	} else {
		l.balance = lossBalance5[:nl]
	}
	l.cands = make([][]otaCand, nl)
	l.ota.slot = make([]int32, cfg.NC)
	for i := range l.ota.slot {
		l.ota.slot[i] = -1
	}
	return l, nil
}

// Config returns the configuration the loss was built with.
func (l *Loss) Config() LossConfig { return l.cfg }

// Compute evaluates the loss of one batch: lead (and aux when cfg.Aux)
// levels for batch B of imgH × imgW input images. Level i must have
// NY = imgH/stride_i and NX = imgW/stride_i. It overwrites
// gradLead/gradAux (same shapes as the levels; a nil slice or a nil entry
// = not wanted) with d(Total×B)/d(prediction) and returns the items and the
// assignment (a fresh value owned by the caller). Invalid input is reported
// as an error before anything is written: bad shapes, targets outside the
// batch or the classes, non-finite target boxes, and non-finite predictions
// among those the loss reads (the objectness of every cell, every channel
// of the candidate cells of the assigners and of the aux positives).
func (l *Loss) Compute(lead, aux []Level, batch, imgH, imgW int, targets []Target, gradLead, gradAux [][]float32) (LossItems, *Assignment, error) {
	if err := l.check(lead, aux, batch, imgH, imgW, targets, gradLead, gradAux); err != nil {
		return LossItems{}, nil, fmt.Errorf("yolov7 loss: %w", err)
	}
	q := 10
	if l.cfg.Aux {
		q = 20
	}
	l.ota.resetCells(lead, batch, l.na)
	var err error
	l.leadM, err = l.assign(lead, batch, imgH, imgW, targets, otaLeadBias, q, false, l.leadM)
	if err != nil {
		return LossItems{}, nil, fmt.Errorf("yolov7 loss: %w", err)
	}
	if l.cfg.Aux {
		l.auxM, err = l.assign(lead, batch, imgH, imgW, targets, otaAuxBias, q, true, l.auxM)
		if err != nil {
			return LossItems{}, nil, fmt.Errorf("yolov7 loss: %w", err)
		}
		// The aux positives read every channel of their aux cells.
		for i := 0; i < l.nl; i++ {
			if err := l.checkCells("aux", i, &aux[i], l.auxM[i]); err != nil {
				return LossItems{}, nil, fmt.Errorf("yolov7 loss: %w", err)
			}
		}
	}

	var box, obj, cls float64
	for i := 0; i < l.nl; i++ {
		var g []float32
		if gradLead != nil {
			g = gradLead[i]
		}
		b, o, c := l.levelLoss(i, &lead[i], l.leadM[i], targets, 1, g, batch)
		box, obj, cls = box+b, obj+o, cls+c
		if l.cfg.Aux {
			g = nil
			if gradAux != nil {
				g = gradAux[i]
			}
			b, o, c = l.levelLoss(i, &aux[i], l.auxM[i], targets, lossAuxWeight, g, batch)
			box, obj, cls = box+b, obj+o, cls+c
		}
	}
	it := LossItems{Box: box * l.cfg.Gains.Box, Obj: obj * l.cfg.Gains.Obj, Cls: cls * l.cfg.Gains.Cls}
	it.Total = it.Box + it.Obj + it.Cls

	asg := &Assignment{Lead: copyLossMatches(l.leadM)}
	if l.cfg.Aux {
		asg.Aux = copyLossMatches(l.auxM)
	}
	return it, asg, nil
}

// copyLossMatches copies per-level match lists into one fresh backing array.
func copyLossMatches(src [][]Match) [][]Match {
	n := 0
	for _, m := range src {
		n += len(m)
	}
	all := make([]Match, 0, n)
	out := make([][]Match, len(src))
	for i, m := range src {
		s := len(all)
		all = append(all, m...)
		out[i] = all[s:len(all):len(all)]
	}
	return out
}

// lossBCEParts splits BCE-with-logits of logit x against target t as
// max(x, 0) − t·x + ln(1 + e) with e = exp(−|x|) ∈ (0, 1], and returns the
// linear part, 1 + e and σ(x). Summing the linear parts and multiplying the
// 1 + e factors (lossLogProd) costs one log per sum instead of one per term.
func lossBCEParts(x, t float64) (lin, onePlusE, sig float64) {
	e := math.Exp(-math.Abs(x))
	if x >= 0 {
		sig = 1 / (1 + e)
	} else {
		sig = e / (1 + e)
	}
	return math.Max(x, 0) - t*x, 1 + e, sig
}

// lossLogProd accumulates Σ ln(f) over factors f in [1, 2] as the log of a
// running product, renormalised before it can overflow.
type lossLogProd struct {
	p   float64
	exp int
	n   int
}

// newLossLogProd returns an empty product (log 0).
func newLossLogProd() lossLogProd { return lossLogProd{p: 1} }

// mul multiplies the factor f ∈ [1, 2] in.
func (a *lossLogProd) mul(f float64) {
	a.p *= f
	a.n++
	if a.n == 512 { // 2^512 is far from overflow
		var e int
		a.p, e = math.Frexp(a.p)
		a.exp += e
		a.n = 0
	}
}

// log returns Σ ln(f).
func (a *lossLogProd) log() float64 {
	return math.Log(a.p) + float64(a.exp)*math.Ln2
}

// lossSigmoid is the logistic function in float64.
func lossSigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// levelLoss adds one level's terms for the prediction lv with positives ms
// and weight w (1 for the lead, 0.25 for the aux head): it returns w times
// the un-gained box mean, balance × objectness mean and class mean, and
// writes d(Total×B)/d(lv) into grad when grad is not nil.
func (l *Loss) levelLoss(i int, lv *Level, ms []Match, targets []Target, w float64, grad []float32, batch int) (lbox, lobj, lcls float64) {
	na, no, nc := l.na, l.no, l.cfg.NC
	ny, nx := lv.NY, lv.NX
	fnx, fny := float32(nx), float32(ny)
	ncells := batch * na * ny * nx
	bsz := float64(batch)
	n := len(ms)

	l.tobj = otaGrowF64(l.tobj, ncells)
	tobj := l.tobj
	clear(tobj)

	// Box: CIoU of every positive, in list order; tobj last write wins.
	l.posGrad = otaGrowF64(l.posGrad, 4*n)
	var sBox float64
	if n > 0 {
		sBox = bsz * l.cfg.Gains.Box * w / float64(n)
	}
	for k, m := range ms {
		cell := ((m.Image*na+m.Anchor)*ny+m.GJ)*nx + m.GI
		p := lv.Data[cell*no : cell*no+5]
		anc := l.anchors[i][m.Anchor]
		sx := lossSigmoid(float64(p[0]))
		sy := lossSigmoid(float64(p[1]))
		sw := lossSigmoid(float64(p[2]))
		sh := lossSigmoid(float64(p[3]))
		aw, ah := float64(anc[0]), float64(anc[1])
		pbox := [4]float64{sx*2 - 0.5, sy*2 - 0.5, (sw * 2) * (sw * 2) * aw, (sh * 2) * (sh * 2) * ah}
		t := &targets[m.Target]
		tbox := [4]float64{
			float64(float32(float32(t.X*fnx) - float32(m.GI))),
			float64(float32(float32(t.Y*fny) - float32(m.GJ))),
			float64(float32(t.W * fnx)),
			float64(float32(t.H * fny)),
		}
		v, g := ciou(pbox, tbox, -sBox)
		lbox += 1 - v
		if v > 0 {
			tobj[cell] = v
		} else {
			tobj[cell] = 0
		}
		pg := l.posGrad[4*k : 4*k+4]
		pg[0] = g.X * 2 * sx * (1 - sx)
		pg[1] = g.Y * 2 * sy * (1 - sy)
		pg[2] = g.W * 8 * sw * sw * (1 - sw) * aw
		pg[3] = g.H * 8 * sh * sh * (1 - sh) * ah
	}
	if n > 0 {
		lbox /= float64(n)
	}

	// Objectness over every cell.
	bal := l.balance[i]
	sObj := bsz * l.cfg.Gains.Obj * w * bal / float64(ncells)
	if grad != nil {
		clear(grad)
	}
	lp := newLossLogProd()
	for c := 0; c < ncells; c++ {
		x := float64(lv.Data[c*no+4])
		t := tobj[c]
		v, f, s := lossBCEParts(x, t)
		lobj += v
		lp.mul(f)
		if grad != nil {
			grad[c*no+4] = float32(sObj * (s - t))
		}
	}
	lobj = (lobj + lp.log()) / float64(ncells) * bal

	if n == 0 {
		return 0, lobj * w, 0
	}
	// Class BCE over the n·nc entries (only if nc > 1), and the box grads.
	cp, cn := 1-0.5*l.cfg.LabelSmoothing, 0.5*l.cfg.LabelSmoothing
	sCls := bsz * l.cfg.Gains.Cls * w / float64(n*nc)
	lp = newLossLogProd()
	for k, m := range ms {
		cell := ((m.Image*na+m.Anchor)*ny+m.GJ)*nx + m.GI
		if nc > 1 {
			p := lv.Data[cell*no+5 : cell*no+no]
			tc := targets[m.Target].Class
			for c := 0; c < nc; c++ {
				tg := cn
				if c == tc {
					tg = cp
				}
				v, f, s := lossBCEParts(float64(p[c]), tg)
				lcls += v
				lp.mul(f)
				if grad != nil {
					grad[cell*no+5+c] += float32(sCls * (s - tg))
				}
			}
		}
		if grad != nil {
			pg := l.posGrad[4*k : 4*k+4]
			g := grad[cell*no : cell*no+4]
			g[0] += float32(pg[0])
			g[1] += float32(pg[1])
			g[2] += float32(pg[2])
			g[3] += float32(pg[3])
		}
	}
	if nc > 1 {
		lcls = (lcls + lp.log()) / float64(n*nc)
	}
	return lbox * w, lobj * w, lcls * w
}

// check validates the inputs of Compute.
func (l *Loss) check(lead, aux []Level, batch, imgH, imgW int, targets []Target, gradLead, gradAux [][]float32) error {
	if batch < 1 {
		return fmt.Errorf("batch size %d, want at least 1", batch)
	}
	if imgH < 1 || imgW < 1 {
		return fmt.Errorf("image size %dx%d (HxW) is not positive", imgH, imgW)
	}
	if len(lead) != l.nl {
		return fmt.Errorf("%d lead levels, the config has %d", len(lead), l.nl)
	}
	if l.cfg.Aux {
		if len(aux) != l.nl {
			return fmt.Errorf("%d aux levels, the aux loss needs %d", len(aux), l.nl)
		}
	} else if len(aux) != 0 || len(gradAux) != 0 {
		return errors.New("aux levels or aux gradients given but the config has Aux false")
	}
	if gradLead != nil && len(gradLead) != l.nl {
		return fmt.Errorf("%d lead gradient levels, want %d", len(gradLead), l.nl)
	}
	if l.cfg.Aux && gradAux != nil && len(gradAux) != l.nl {
		return fmt.Errorf("%d aux gradient levels, want %d", len(gradAux), l.nl)
	}
	for i := 0; i < l.nl; i++ {
		s := l.cfg.Strides[i]
		if imgH%s != 0 || imgW%s != 0 {
			return fmt.Errorf("image size %dx%d (HxW) is not a multiple of stride %d of level %d", imgH, imgW, s, i)
		}
		ny, nx := imgH/s, imgW/s
		want := batch * l.na * ny * nx * l.no
		heads := []struct {
			name string
			lv   []Level
			g    [][]float32
		}{{"lead", lead, gradLead}, {"aux", aux, gradAux}}
		for h, hd := range heads {
			if h == 1 && !l.cfg.Aux {
				break
			}
			lv := &hd.lv[i]
			if lv.NY != ny || lv.NX != nx {
				return fmt.Errorf("%s level %d grid is %dx%d, want %dx%d for %dx%d images at stride %d", hd.name, i, lv.NY, lv.NX, ny, nx, imgH, imgW, s)
			}
			if len(lv.Data) != want {
				return fmt.Errorf("%s level %d has %d values, want %d (B %d × NA %d × %d × %d × NO %d)", hd.name, i, len(lv.Data), want, batch, l.na, ny, nx, l.no)
			}
			if hd.g != nil && hd.g[i] != nil && len(hd.g[i]) != want {
				return fmt.Errorf("%s gradient level %d has %d values, want %d", hd.name, i, len(hd.g[i]), want)
			}
			// The objectness of every cell is read; the other channels
			// only at candidate cells, which the assigner checks.
			for k := 4; k < len(lv.Data); k += l.no {
				if !lossFinite32(lv.Data[k]) {
					return l.nonFinite(hd.name, i, lv, k)
				}
			}
		}
	}
	for ti := range targets {
		t := &targets[ti]
		if t.Image < 0 || t.Image >= batch {
			return fmt.Errorf("target %d: image index %d outside [0, %d)", ti, t.Image, batch)
		}
		if t.Class < 0 || t.Class >= l.cfg.NC {
			return fmt.Errorf("target %d: class %d outside [0, %d)", ti, t.Class, l.cfg.NC)
		}
		for _, v := range [4]float32{t.X, t.Y, t.W, t.H} {
			if f := float64(v); math.IsNaN(f) || math.IsInf(f, 0) {
				return fmt.Errorf("target %d: non-finite box (%v, %v, %v, %v)", ti, t.X, t.Y, t.W, t.H)
			}
		}
		if t.W < 0 || t.H < 0 {
			return fmt.Errorf("target %d: negative size %vx%v", ti, t.W, t.H)
		}
	}
	return nil
}

// lossFinite32 reports whether v is neither NaN nor ±Inf.
func lossFinite32(v float32) bool {
	return math.Float32bits(v)&0x7f800000 != 0x7f800000
}

// nonFinite is the error for the non-finite element k of a level.
func (l *Loss) nonFinite(head string, i int, lv *Level, k int) error {
	return fmt.Errorf("%s level %d: non-finite prediction %v at %s", head, i, lv.Data[k], l.where(k, lv.NY, lv.NX))
}

// checkCells checks that every channel of the cells of ms is finite.
func (l *Loss) checkCells(head string, i int, lv *Level, ms []Match) error {
	for _, m := range ms {
		cell := ((m.Image*l.na+m.Anchor)*lv.NY+m.GJ)*lv.NX + m.GI
		for k := cell * l.no; k < (cell+1)*l.no; k++ {
			if !lossFinite32(lv.Data[k]) {
				return l.nonFinite(head, i, lv, k)
			}
		}
	}
	return nil
}

// where names the element k of a B × NA × ny × nx × NO level.
func (l *Loss) where(k, ny, nx int) string {
	c := k % l.no
	k /= l.no
	gi := k % nx
	k /= nx
	gj := k % ny
	k /= ny
	a := k % l.na
	b := k / l.na
	return fmt.Sprintf("image %d, anchor %d, cell (gj %d, gi %d), channel %d", b, a, gj, gi, c)
}
