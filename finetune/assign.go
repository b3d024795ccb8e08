package finetune

import "math"

// Target is one ground-truth box: image index in the batch, class, centre
// and size normalised (x, w by width; y, h by height).
type Target struct {
	Image, Class int
	X, Y, W, H   float32
}

// Match is one positive of the assignment: the prediction cell (image,
// anchor, grid row GJ, grid column GI) of a level and the ground truth it
// learns. Target is an index into the targets slice given to Compute.
type Match struct {
	Image, Anchor, GJ, GI, Target int
}

// Assignment holds the positives of one Compute call, per level, in the
// official order: images in order and, inside an image, the candidate
// columns in order. Lead comes from build_targets (find_3_positive), Aux
// from build_targets2 (find_5_positive) and is nil for ComputeLossOTA.
// Duplicates are kept, as the official code keeps them.
type Assignment struct {
	Lead, Aux [][]Match
}

// otaCand is one positive candidate of find_3_positive/find_5_positive.
type otaCand struct {
	level, image, anchor, gj, gi, target int32
}

// Candidate neighbour biases of the two finders.
const (
	otaLeadBias float32 = 0.5 // find_3_positive
	otaAuxBias  float32 = 1.0 // find_5_positive
)

// Constants of the SimOTA cost.
const (
	otaIoUWeight = 3.0
	otaIoUEps    = 1e-8
)

// otaMod1 is torch.remainder(x, 1) for float32: fmod, then shifted into
// [0, 1) for negative values.
func otaMod1(x float32) float32 {
	m := float32(math.Mod(float64(x), 1)) // fmod is exact
	if m != 0 && m < 0 {
		m = float32(m + 1)
	}
	return m
}

// otaCell truncates the non-negative grid coordinate v to a cell (the
// official .long()) and clamps it to [0, n−1]. Negative and huge values
// are clamped before the conversion, so garbage cannot overflow.
func otaCell(v float32, n int) int32 {
	if !(v > 0) {
		return 0
	}
	if v >= float32(n-1) {
		return int32(n - 1)
	}
	return int32(v)
}

// findPositive appends to out the positive candidates of level lvl (grid
// ny × nx) for all targets, as the official find_3_positive (g = 0.5) or
// find_5_positive (g = 1.0) produces them: in float32 grid arithmetic,
// after the anchor-ratio filter, ordered by offset (centre, left, up,
// right, down), then anchor, then target, duplicates kept.
func (l *Loss) findPositive(lvl, ny, nx int, targets []Target, g float32, out []otaCand) []otaCand {
	anchors := l.anchors[lvl]
	fnx, fny := float32(nx), float32(ny)
	at := l.anchorT
	for o := 0; o < 5; o++ {
		for a := 0; a < l.na; a++ {
			aw, ah := anchors[a][0], anchors[a][1]
			for ti := range targets {
				t := &targets[ti]
				// Anchor filter: max(r, 1/r) over w and h < anchor_t.
				gw := float32(t.W * fnx)
				gh := float32(t.H * fny)
				rw := float32(gw / aw)
				rh := float32(gh / ah)
				m := rw
				if v := float32(1 / rw); v > m {
					m = v
				}
				if rh > m {
					m = rh
				}
				if v := float32(1 / rh); v > m {
					m = v
				}
				if !(m < at) {
					continue
				}
				gx := float32(t.X * fnx)
				gy := float32(t.Y * fny)
				var ox, oy float32
				switch o {
				case 1: // left
					if !(otaMod1(gx) < g && gx > 1) {
						continue
					}
					ox = g
				case 2: // up
					if !(otaMod1(gy) < g && gy > 1) {
						continue
					}
					oy = g
				case 3: // right
					gxi := float32(fnx - gx)
					if !(otaMod1(gxi) < g && gxi > 1) {
						continue
					}
					ox = -g
				case 4: // down
					gyi := float32(fny - gy)
					if !(otaMod1(gyi) < g && gyi > 1) {
						continue
					}
					oy = -g
				}
				out = append(out, otaCand{
					level:  int32(lvl),
					image:  int32(t.Image),
					anchor: int32(a),
					gj:     otaCell(float32(gy-oy), ny),
					gi:     otaCell(float32(gx-ox), nx),
					target: int32(ti),
				})
			}
		}
	}
	return out
}

// otaScratch holds the per-image buffers of the SimOTA matcher.
type otaScratch struct {
	gts     []int        // target indices of the image, in order
	cols    []otaCand    // candidate columns of the image
	box     [][4]float64 // predicted xyxy of each column, pixels
	base    []float64    // Σ_c −ln(1−y_c) of each column
	flag    []uint8      // column flags: otaFlagOne, otaFlagZero
	xs      []float64    // ln(y/(1−y)) of each column for each class slot
	slot    []int32      // class → slot, −1 when absent (len NC)
	slotCls []int        // slot → class
	iou     []float64    // n_gt × n_col
	cost    []float64    // n_gt × n_col
	dynK    []int        // per gt
	top     []float64    // top-q IoUs
	sel     []int32      // top-k columns
	count   []int32      // gts that selected each column
	owner   []int32      // gt (local index) that owns each column

	// Per-cell cache, valid during one Compute: both assigners and
	// duplicate columns share a cell's decoded box and class-cost pieces
	// (a cell belongs to one image, so its class slots are that image's).
	cellMap  [][]int32 // per level: cell → index into cellInfo, or −1
	cellInfo []otaCellInfo
	cellXs   []float64  // class-slot logits of the cached cells
	touched  [][2]int32 // (level, cell) entries of cellMap to reset
}

// otaCellInfo is the cached matcher input of one prediction cell.
type otaCellInfo struct {
	box  [4]float64 // predicted xyxy, pixels
	base float64    // Σ_c −ln(1−y_c)
	flag uint8      // otaFlagOne, otaFlagZero
	xs   int32      // offset of the slot logits in cellXs
}

// resetCells empties the per-cell cache and sizes it for the levels.
func (s *otaScratch) resetCells(lead []Level, batch, na int) {
	for _, t := range s.touched {
		s.cellMap[t[0]][t[1]] = -1
	}
	s.touched = s.touched[:0]
	s.cellInfo = s.cellInfo[:0]
	s.cellXs = s.cellXs[:0]
	if len(s.cellMap) != len(lead) {
		s.cellMap = make([][]int32, len(lead))
	}
	for i := range lead {
		n := batch * na * lead[i].NY * lead[i].NX
		if len(s.cellMap[i]) != n {
			m := make([]int32, n)
			for k := range m {
				m[k] = -1
			}
			s.cellMap[i] = m
		}
	}
}

// Column flags: some class has y == 1 (its cost is +Inf, or NaN for the
// gt of that class) or y == 0 (NaN for every gt), as in the official
// BCE-with-logits of ln(y/(1−y)).
const (
	otaFlagOne  = 1
	otaFlagZero = 2
)

// otaTrace records the matcher's intermediate values (tests only).
type otaTrace struct {
	images []otaImageTrace
}

// otaImageTrace is the record of one image of one assigner.
type otaImageTrace struct {
	aux   bool
	image int
	gts   []int
	cands [][6]int // level, image, anchor, gj, gi, target
	iou   []float64
	cost  []float64
	dynK  []int
}

// otaSigmoid32 is the logistic function rounded to float32.
func otaSigmoid32(x float32) float32 {
	return float32(1 / (1 + math.Exp(-float64(x))))
}

// otaGrowF64 returns b resized to n, reallocating only when too small.
func otaGrowF64(b []float64, n int) []float64 {
	if cap(b) < n {
		return make([]float64, n, n+n/4)
	}
	return b[:n]
}

// otaGrowI32 is otaGrowF64 for int32.
func otaGrowI32(b []int32, n int) []int32 {
	if cap(b) < n {
		return make([]int32, n, n+n/4)
	}
	return b[:n]
}

// otaMin is min for finite values (math.Min is slower: NaN and ±0 rules).
func otaMin(a, b float64) float64 {
	if a < b {
		return a
	}
	return b
}

// otaMax is max for finite values.
func otaMax(a, b float64) float64 {
	if a > b {
		return a
	}
	return b
}

// otaCostLess orders (cost, column) pairs as the stable top-k does: NaN is
// larger than everything, equal costs go by column index.
func otaCostLess(a float64, ia int32, b float64, ib int32) bool {
	an, bn := a != a, b != b
	if an || bn {
		if an && bn {
			return ia < ib
		}
		return bn
	}
	if a != b {
		return a < b
	}
	return ia < ib
}

// assign runs find_3/5_positive with bias g over every level and SimOTA
// (dynamic k from the top q IoUs) per image on the lead predictions, and
// returns the positives per level in out (reused).
func (l *Loss) assign(lead []Level, batch, imgH, imgW int, targets []Target, g float32, q int, aux bool, out [][]Match) ([][]Match, error) {
	if len(out) != l.nl {
		out = make([][]Match, l.nl)
	}
	for i := range out {
		out[i] = out[i][:0]
	}
	for i := 0; i < l.nl; i++ {
		l.cands[i] = l.findPositive(i, lead[i].NY, lead[i].NX, targets, g, l.cands[i][:0])
	}
	var err error
	for b := 0; b < batch; b++ {
		out, err = l.simOTA(lead, b, imgH, imgW, targets, q, aux, out)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// simOTA matches the candidates of image b (see research §3) and appends
// the positives to out. A non-finite prediction of a candidate cell is an
// error.
func (l *Loss) simOTA(lead []Level, b, imgH, imgW int, targets []Target, q int, aux bool, out [][]Match) ([][]Match, error) {
	s := &l.ota
	s.gts = s.gts[:0]
	for ti := range targets {
		if targets[ti].Image == b {
			s.gts = append(s.gts, ti)
		}
	}
	ngt := len(s.gts)
	if ngt == 0 {
		return out, nil
	}
	s.cols = s.cols[:0]
	for i := 0; i < l.nl; i++ {
		for _, c := range l.cands[i] {
			if int(c.image) == b {
				s.cols = append(s.cols, c)
			}
		}
	}
	ncol := len(s.cols)
	if ncol == 0 {
		return out, nil
	}

	// Every channel of a candidate cell is read.
	no := l.no
	for _, c := range s.cols {
		lv := &lead[c.level]
		cell := ((b*l.na+int(c.anchor))*lv.NY+int(c.gj))*lv.NX + int(c.gi)
		if s.cellMap[c.level][cell] >= 0 {
			continue // checked when cached
		}
		for k := cell * no; k < (cell+1)*no; k++ {
			if !lossFinite32(lv.Data[k]) {
				return out, l.nonFinite("lead", int(c.level), lv, k)
			}
		}
	}

	// Class slots: the distinct classes of the image's gts (reset below).
	s.slotCls = s.slotCls[:0]
	for _, ti := range s.gts {
		c := targets[ti].Class
		if s.slot[c] < 0 {
			s.slot[c] = int32(len(s.slotCls))
			s.slotCls = append(s.slotCls, c)
		}
	}
	nslot := len(s.slotCls)

	// Per column: predicted box (pixels) and the class-cost pieces.
	if cap(s.box) < ncol {
		s.box = make([][4]float64, ncol, ncol+ncol/4)
	}
	s.box = s.box[:ncol]
	s.base = otaGrowF64(s.base, ncol)
	if cap(s.flag) < ncol {
		s.flag = make([]uint8, ncol, ncol+ncol/4)
	}
	s.flag = s.flag[:ncol]
	s.xs = otaGrowF64(s.xs, ncol*nslot)
	nc := l.cfg.NC
	for j, c := range s.cols {
		lv := &lead[c.level]
		cell := ((b*l.na+int(c.anchor))*lv.NY+int(c.gj))*lv.NX + int(c.gi)
		if ci := s.cellMap[c.level][cell]; ci >= 0 {
			e := &s.cellInfo[ci]
			s.box[j], s.base[j], s.flag[j] = e.box, e.base, e.flag
			copy(s.xs[j*nslot:j*nslot+nslot], s.cellXs[e.xs:int(e.xs)+nslot])
			continue
		}
		stride := float64(l.cfg.Strides[c.level])
		p := lv.Data[cell*no : cell*no+no]
		anc := l.anchors[c.level][c.anchor]
		sx := float64(otaSigmoid32(p[0]))
		sy := float64(otaSigmoid32(p[1]))
		sw := float64(otaSigmoid32(p[2]))
		sh := float64(otaSigmoid32(p[3]))
		px := (sx*2 - 0.5 + float64(c.gi)) * stride
		py := (sy*2 - 0.5 + float64(c.gj)) * stride
		pw := (sw * 2) * (sw * 2) * float64(anc[0]) * stride
		ph := (sh * 2) * (sh * 2) * float64(anc[1]) * stride
		s.box[j] = [4]float64{px - pw/2, py - ph/2, px + pw/2, py + ph/2}

		// y_c = sqrt(σ(cls_c)·σ(obj)) in float32; Σ_c −ln(1−y_c) as the
		// log of a product, renormalised to stay in range.
		so := otaSigmoid32(p[4])
		prod, exp := 1.0, 0
		var flag uint8
		for k := 0; k < nc; k++ {
			y := float32(math.Sqrt(float64(float32(otaSigmoid32(p[5+k]) * so))))
			if y >= 1 {
				flag |= otaFlagOne
			} else if y <= 0 {
				flag |= otaFlagZero
			}
			prod *= 1 - float64(y)
			if k&7 == 7 {
				var e int
				prod, e = math.Frexp(prod)
				exp += e
			}
			if sl := s.slot[k]; sl >= 0 {
				x := math.Inf(1) // y = 1: NaN cost for this class's gts
				if y < 1 {
					yd := float64(y)
					x = math.Log(yd / (1 - yd))
				}
				s.xs[j*nslot+int(sl)] = x
			}
		}
		s.flag[j] = flag
		if flag == 0 {
			s.base[j] = -(math.Log(prod) + float64(exp)*math.Ln2)
		}
		s.cellMap[c.level][cell] = int32(len(s.cellInfo))
		s.touched = append(s.touched, [2]int32{c.level, int32(cell)})
		s.cellInfo = append(s.cellInfo, otaCellInfo{box: s.box[j], base: s.base[j], flag: flag, xs: int32(len(s.cellXs))})
		s.cellXs = append(s.cellXs, s.xs[j*nslot:j*nslot+nslot]...)
	}

	// Pairwise IoU (plain, no eps) of the gt boxes with the columns.
	s.iou = otaGrowF64(s.iou, ngt*ncol)
	s.cost = otaGrowF64(s.cost, ngt*ncol)
	sxScale, syScale := float64(imgH), float64(imgH) // official quirk: all × H
	if l.cfg.FixedWH {
		sxScale = float64(imgW)
	}
	zeroIoUCost := -math.Log(otaIoUEps)
	for gi, ti := range s.gts {
		t := &targets[ti]
		tx, ty := float64(t.X)*sxScale, float64(t.Y)*syScale
		tw, th := float64(t.W)*sxScale, float64(t.H)*syScale
		gx1, gy1, gx2, gy2 := tx-tw/2, ty-th/2, tx+tw/2, ty+th/2
		area1 := (gx2 - gx1) * (gy2 - gy1)
		sl := int(s.slot[t.Class])
		row := s.iou[gi*ncol : gi*ncol+ncol]
		crow := s.cost[gi*ncol : gi*ncol+ncol]
		for j := 0; j < ncol; j++ {
			pb := &s.box[j]
			iw := otaMin(gx2, pb[2]) - otaMax(gx1, pb[0])
			ih := otaMin(gy2, pb[3]) - otaMax(gy1, pb[1])
			var iou float64
			if iw > 0 && ih > 0 {
				inter := iw * ih
				area2 := (pb[2] - pb[0]) * (pb[3] - pb[1])
				iou = inter / (area1 + area2 - inter)
			}
			row[j] = iou
			// Class cost: Σ_{c≠g} −ln(1−y_c) − ln(y_g) = base − ln(y_g/(1−y_g)).
			var cls float64
			x := s.xs[j*nslot+sl]
			switch {
			case s.flag[j]&otaFlagZero != 0, math.IsInf(x, 1):
				cls = math.NaN()
			case s.flag[j]&otaFlagOne != 0:
				cls = math.Inf(1)
			default:
				cls = s.base[j] - x
			}
			iouCost := zeroIoUCost
			if iou != 0 {
				iouCost = -math.Log(iou + otaIoUEps)
			}
			crow[j] = cls + otaIoUWeight*iouCost
		}
	}
	for _, c := range s.slotCls {
		s.slot[c] = -1
	}

	// Dynamic k: max(1, int(Σ top-q IoU)).
	if q > ncol {
		q = ncol
	}
	if cap(s.dynK) < ngt {
		s.dynK = make([]int, ngt)
	}
	s.dynK = s.dynK[:ngt]
	s.top = otaGrowF64(s.top, q)
	for gi := 0; gi < ngt; gi++ {
		row := s.iou[gi*ncol : gi*ncol+ncol]
		n := 0
		for j := 0; j < ncol; j++ {
			v := row[j]
			if n == q && !(v > s.top[q-1]) {
				continue
			}
			k := n
			if n < q {
				n++
			} else {
				k = q - 1
			}
			for k > 0 && v > s.top[k-1] {
				s.top[k] = s.top[k-1]
				k--
			}
			s.top[k] = v
		}
		sum := 0.0
		for k := 0; k < n; k++ {
			sum += s.top[k]
		}
		dk := int(sum)
		if dk < 1 {
			dk = 1
		}
		s.dynK[gi] = dk
	}

	// Top-k smallest cost per gt (stable: cost, then column), then each
	// column claimed by several gts goes to the gt of minimal cost.
	s.count = otaGrowI32(s.count, ncol)
	s.owner = otaGrowI32(s.owner, ncol)
	for j := 0; j < ncol; j++ {
		s.count[j] = 0
		s.owner[j] = -1
	}
	for gi := 0; gi < ngt; gi++ {
		crow := s.cost[gi*ncol : gi*ncol+ncol]
		k := s.dynK[gi]
		s.sel = otaGrowI32(s.sel, k)
		n := 0
		for j := 0; j < ncol; j++ {
			v := crow[j]
			if n == k && !otaCostLess(v, int32(j), crow[s.sel[k-1]], s.sel[k-1]) {
				continue
			}
			p := n
			if n < k {
				n++
			} else {
				p = k - 1
			}
			for p > 0 && otaCostLess(v, int32(j), crow[s.sel[p-1]], s.sel[p-1]) {
				s.sel[p] = s.sel[p-1]
				p--
			}
			s.sel[p] = int32(j)
		}
		for _, j := range s.sel[:n] {
			s.count[j]++
			s.owner[j] = int32(gi)
		}
	}
	for j := 0; j < ncol; j++ {
		if s.count[j] <= 1 {
			continue
		}
		// torch.min over all gts: the first NaN, else the first minimum.
		best := 0
		bv := s.cost[j]
		for gi := 1; gi < ngt && bv == bv; gi++ {
			v := s.cost[gi*ncol+j]
			if v != v || v < bv {
				best, bv = gi, v
			}
		}
		s.owner[j] = int32(best)
	}
	for j, c := range s.cols {
		if s.count[j] == 0 {
			continue
		}
		out[c.level] = append(out[c.level], Match{
			Image:  b,
			Anchor: int(c.anchor),
			GJ:     int(c.gj),
			GI:     int(c.gi),
			Target: s.gts[s.owner[j]],
		})
	}

	if l.trace != nil {
		tr := otaImageTrace{aux: aux, image: b, gts: append([]int(nil), s.gts...)}
		for _, c := range s.cols {
			tr.cands = append(tr.cands, [6]int{int(c.level), int(c.image), int(c.anchor), int(c.gj), int(c.gi), int(c.target)})
		}
		tr.iou = append([]float64(nil), s.iou[:ngt*ncol]...)
		tr.cost = append([]float64(nil), s.cost[:ngt*ncol]...)
		tr.dynK = append([]int(nil), s.dynK...)
		l.trace.images = append(l.trace.images, tr)
	}
	return out, nil
}
