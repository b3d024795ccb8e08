package tiny

import (
	"cmp"
	"slices"
	"strconv"
)

// maxWH is the class offset of the official class-aware NMS (max_wh).
const maxWH = 4096

// IoUThreshold turns a float32 setting such as 0.45 into the float64 the
// official code compares against (the Python float 0.45, not
// float64(float32(0.45))).
func IoUThreshold(f float32) float64 {
	v, err := strconv.ParseFloat(strconv.FormatFloat(float64(f), 'g', -1, 32), 64)
	if err != nil {
		return float64(f)
	}
	return v
}

// nms runs the official non_max_suppression on d.cands (already filtered):
// at most MaxNMS boxes by score go in, boxes are offset by class*4096
// (unless Agnostic) and suppressed greedily when IoU > o.IoU as
// torchvision.ops.nms does, at most MaxDet come out, sorted by score
// descending.
func (d *Decoder) nms(o NMSOptions) []Candidate {
	maxDet := o.MaxDet
	if maxDet <= 0 {
		maxDet = 300
	}
	maxNMS := o.MaxNMS
	if maxNMS <= 0 {
		maxNMS = 30000
	}
	n := len(d.cands)
	d.keep = d.keep[:0]
	if n == 0 {
		return d.keep
	}
	if cap(d.order) < n {
		d.order = make([]int32, n)
		d.off = make([][4]float32, n)
	}
	order := d.order[:n]
	off := d.off[:n]
	for i := range order {
		order[i] = int32(i)
	}
	c := d.cands
	// Equal scores keep the official row order (index tie-break = stable).
	slices.SortFunc(order, func(a, b int32) int {
		if r := cmp.Compare(c[b].Score, c[a].Score); r != 0 {
			return r
		}
		return cmp.Compare(a, b)
	})
	if len(order) > maxNMS {
		order = order[:maxNMS]
	}
	for _, i := range order {
		var o4 float32
		if !o.Agnostic {
			o4 = float32(c[i].Class) * maxWH
		}
		b := &c[i]
		off[i] = [4]float32{b.X1 + o4, b.Y1 + o4, b.X2 + o4, b.Y2 + o4}
	}
	// Offset boxes of different classes are 4096 px apart and YOLOv7 boxes
	// are at most 4*373 px wide, so they never overlap: each box is only
	// compared with the kept boxes of its own class (one list when
	// agnostic).
	for i := range d.kept {
		d.kept[i] = d.kept[i][:0]
	}
	nk := 0
	for _, j := range order {
		list := 0
		if !o.Agnostic {
			list = c[j].Class
		}
		for len(d.kept) <= list {
			d.kept = append(d.kept, nil)
		}
		bj := &off[j]
		aj := (bj[2] - bj[0]) * (bj[3] - bj[1])
		suppressed := false
		for _, i := range d.kept[list] {
			bi := &off[i]
			xx1 := max(bi[0], bj[0])
			yy1 := max(bi[1], bj[1])
			xx2 := min(bi[2], bj[2])
			yy2 := min(bi[3], bj[3])
			w := max(0, xx2-xx1)
			h := max(0, yy2-yy1)
			inter := w * h
			ai := (bi[2] - bi[0]) * (bi[3] - bi[1])
			if float64(inter/(ai+aj-inter)) > o.IoU {
				suppressed = true
				break
			}
		}
		if suppressed {
			continue
		}
		d.kept[list] = append(d.kept[list], j)
		d.keep = append(d.keep, c[j])
		if nk++; nk == maxDet {
			break
		}
	}
	return d.keep
}
