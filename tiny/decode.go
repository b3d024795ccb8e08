package tiny

import (
	"fmt"
	"math"
)

// Tensor is a raw head output: its shape (1 x NA x H x W x (5+nc) for
// Decode) and its values in C order.
type Tensor struct {
	Shape []int
	Data  []float32
}

// Box decoding and the official non_max_suppression (utils/general.py) on
// the raw head outputs: the post-processing of the network, shared by the
// inference engine and by evaluation during fine-tuning.

// decodeAnchors is the number of anchors per level of YOLOv7-tiny.
const decodeAnchors = 3

// decodeStrides are the strides of p3, p4, p5.
var decodeStrides = [3]int{8, 16, 32}

// decodeAnchorWH are IDetect.anchor_grid: (w, h) in pixels per level and anchor.
var decodeAnchorWH = [3][decodeAnchors][2]float32{
	{{10, 13}, {16, 30}, {33, 23}},
	{{30, 61}, {62, 45}, {59, 119}},
	{{116, 90}, {156, 198}, {373, 326}},
}

// Candidate is a detection in network-input pixels (x1y1x2y2), before it is
// mapped back to the frame.
type Candidate struct {
	X1, Y1, X2, Y2 float32
	Score          float32 // obj * cls
	Class          int
}

// NMSOptions are the arguments of the official
// utils.general.non_max_suppression.
type NMSOptions struct {
	Conf       float32 // conf_thres: keep obj > Conf and obj*cls > Conf
	IoU        float64 // iou_thres: suppress when IoU > IoU (compared in float64, as torchvision does)
	MultiLabel bool    // every class with score > Conf instead of the best one
	MaxDet     int     // max_det, 300 when 0
	MaxNMS     int     // max_nms: most boxes into NMS, 30000 when 0
	Agnostic   bool    // class-agnostic NMS
	Classes    []int   // keep only these class ids before NMS (official classes argument); empty = all
}

// DefaultNMSOptions returns the official defaults of detect.py: conf 0.25,
// IoU 0.45, best class only, 300 detections, 30000 boxes into NMS.
func DefaultNMSOptions() NMSOptions {
	return NMSOptions{Conf: 0.25, IoU: 0.45, MaxDet: 300, MaxNMS: 30000}
}

// outLevel is one raw head output mapped to its stride.
type outLevel struct {
	t      *Tensor
	h, w   int
	stride int
	idx    int // 0 = p3
}

// Decoder decodes the raw head outputs and runs NMS. It keeps its buffers
// between calls; it is not safe for concurrent use.
type Decoder struct {
	cands []Candidate
	allow []bool // class filter of the current call, indexed by class id
	order []int32
	keep  []Candidate
	kept  [][]int32 // kept boxes per class
	off   [][4]float32
	nc    int
}

// NumClasses is the number of classes seen by the last Decode.
func (d *Decoder) NumClasses() int { return d.nc }

// mapLevels checks the raw outputs (each 1x3xHxWx(5+nc)) and orders them by
// H descending, which is p3, p4, p5 whatever their order or names.
func mapLevels(outs []*Tensor) ([3]outLevel, int, error) {
	var lv [3]outLevel
	if len(outs) != 3 {
		return lv, 0, fmt.Errorf("decode: want 3 raw outputs (p3, p4, p5), got %d", len(outs))
	}
	k := -1
	for i, t := range outs {
		if t == nil || len(t.Shape) != 5 || t.Shape[0] != 1 || t.Shape[1] != decodeAnchors || t.Shape[4] < 6 {
			var sh []int
			if t != nil {
				sh = t.Shape
			}
			return lv, 0, fmt.Errorf("decode: output %d has shape %v, want 1x3xHxWx(5+nc)", i, sh)
		}
		if k >= 0 && t.Shape[4] != k {
			return lv, 0, fmt.Errorf("decode: outputs disagree on 5+nc: %d vs %d", k, t.Shape[4])
		}
		k = t.Shape[4]
		if n := decodeAnchors * t.Shape[2] * t.Shape[3] * k; len(t.Data) != n || t.Shape[2] <= 0 || t.Shape[3] <= 0 {
			return lv, 0, fmt.Errorf("decode: output %d has %d values for shape %v", i, len(t.Data), t.Shape)
		}
		lv[i] = outLevel{t: t, h: t.Shape[2], w: t.Shape[3]}
	}
	for i := 1; i < len(lv); i++ { // by H descending, without allocating
		for j := i; j > 0 && lv[j].h > lv[j-1].h; j-- {
			lv[j], lv[j-1] = lv[j-1], lv[j]
		}
	}
	for i := range lv {
		lv[i].idx = i
		lv[i].stride = decodeStrides[i]
		if lv[i].h*lv[i].stride != lv[0].h*8 || lv[i].w*lv[i].stride != lv[0].w*8 {
			return lv, 0, fmt.Errorf("decode: output grids %dx%d, %dx%d, %dx%d are not strides 8/16/32 of one input",
				lv[0].h, lv[0].w, lv[1].h, lv[1].w, lv[2].h, lv[2].w)
		}
	}
	return lv, k - 5, nil
}

// sigmoidF32 is the float32 sigmoid, computed in float64 and rounded once
// (within one ulp of torch's; the golden tests match to 1.2e-7).
func sigmoidF32(x float32) float32 {
	return float32(1 / (1 + math.Exp(-float64(x))))
}

// logitBelow returns a logit bound under which sigmoidF32(x) > q is certainly
// false, with room for float32 rounding of the sigmoid. -Inf when q <= 0.
func logitBelow(q float64) float32 {
	if q <= 0 {
		return float32(math.Inf(-1))
	}
	if q >= 1 {
		return float32(math.Inf(1))
	}
	l := math.Log(q/(1-q)) - 1e-3 - 1e-6/(q*(1-q))
	return float32(l)
}

// Decode decodes the raw outputs into candidates (official decode: sigmoid,
// xy = (2s - 0.5 + grid)*stride, wh = (2s)^2*anchor), filters them as
// non_max_suppression does (obj > conf, then score = obj*cls > conf, best
// class or multi-label), and runs class-aware NMS. The result is sorted by
// score descending and stays valid until the next call.
func (d *Decoder) Decode(outs []*Tensor, o NMSOptions) ([]Candidate, error) {
	lv, nc, err := mapLevels(outs)
	if err != nil {
		return nil, err
	}
	d.nc = nc
	d.cands = d.cands[:0]
	multi := o.MultiLabel && nc > 1
	objMin := logitBelow(float64(o.Conf))
	d.allow = d.allow[:0]
	if len(o.Classes) > 0 {
		if cap(d.allow) < nc {
			d.allow = make([]bool, nc)
		}
		d.allow = d.allow[:nc]
		clear(d.allow)
		for _, c := range o.Classes {
			if c >= 0 && c < nc {
				d.allow[c] = true
			}
		}
	}
	for _, l := range lv {
		d.decodeLevel(l, nc, multi, objMin, o.Conf)
	}
	return d.nms(o), nil
}

// decodeLevel appends the candidates of one level in the official row order
// (anchor, y, x; classes ascending within a row).
func (d *Decoder) decodeLevel(l outLevel, nc int, multi bool, objMin, conf float32) {
	k := nc + 5
	data := l.t.Data
	stride := float32(l.stride)
	for a := 0; a < decodeAnchors; a++ {
		aw := decodeAnchorWH[l.idx][a][0]
		ah := decodeAnchorWH[l.idx][a][1]
		for y := 0; y < l.h; y++ {
			base := ((a*l.h + y) * l.w) * k
			for x := 0; x < l.w; x++ {
				row := data[base+x*k : base+(x+1)*k : base+(x+1)*k]
				if row[4] <= objMin {
					continue
				}
				obj := sigmoidF32(row[4])
				if !(obj > conf) {
					continue
				}
				var c Candidate
				filled := false
				box := func() {
					if filled {
						return
					}
					filled = true
					sx, sy := sigmoidF32(row[0]), sigmoidF32(row[1])
					sw, sh := sigmoidF32(row[2])*2, sigmoidF32(row[3])*2
					cx := (sx*2 - 0.5 + float32(x)) * stride
					cy := (sy*2 - 0.5 + float32(y)) * stride
					w := sw * sw * aw
					h := sh * sh * ah
					c.X1, c.Y1 = cx-w/2, cy-h/2
					c.X2, c.Y2 = cx+w/2, cy+h/2
				}
				cls := row[5:]
				switch {
				case nc == 1:
					// One-class models: score = obj (cls_conf is meaningless).
					if d.allowed(0) {
						box()
						c.Score, c.Class = obj, 0
						d.cands = append(d.cands, c)
					}
				case multi:
					lmin := logitBelow(float64(conf) / float64(obj))
					for j, v := range cls {
						if v <= lmin {
							continue
						}
						if s := sigmoidF32(v) * obj; s > conf && d.allowed(j) {
							box()
							c.Score, c.Class = s, j
							d.cands = append(d.cands, c)
						}
					}
				default:
					// obj*sigmoid is monotonic in the logit, so the best
					// class is the largest logit (first one on ties).
					best := 0
					for j, v := range cls {
						if v > cls[best] {
							best = j
						}
					}
					if s := sigmoidF32(cls[best]) * obj; s > conf && d.allowed(best) {
						box()
						c.Score, c.Class = s, best
						d.cands = append(d.cands, c)
					}
				}
			}
		}
	}
}

// allowed reports whether class c passes the class filter.
func (d *Decoder) allowed(c int) bool { return len(d.allow) == 0 || d.allow[c] }

// OutputClasses checks raw head outputs as Decode does (three levels, each
// 1 x 3 x H x W x (5+nc), grids of strides 8/16/32 of one input) and
// returns nc.
func OutputClasses(outs []*Tensor) (int, error) {
	_, nc, err := mapLevels(outs)
	return nc, err
}
