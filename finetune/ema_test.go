package finetune

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/yolo7d/yolo7d/tiny"
	"github.com/yolo7d/yolo7d/tiny/tinytest"
)

// emaULP is the distance in float32 ulps between a and b (same sign).
func emaULP(a, b float32) int64 {
	ia, ib := int64(math.Float32bits(a)), int64(math.Float32bits(b))
	if (ia < 0x80000000) != (ib < 0x80000000) {
		if a == b { // ±0
			return 0
		}
		return math.MaxInt32
	}
	if ia > ib {
		return ia - ib
	}
	return ib - ia
}

func TestEMAGolden(t *testing.T) {
	root := filepath.Join(tinytest.GoldenOrSkip(t, "train"), "ema")
	for _, id := range []string{"ema_from0", "ema_from2000"} {
		t.Run(id, func(t *testing.T) {
			dir := filepath.Join(root, id)
			var c struct {
				UpdatesInitial int       `json:"updates_initial"`
				Updates        []int     `json:"updates_after_each_step"`
				Decays         []float64 `json:"decay_used_each_step"`
				Keys           []string  `json:"state_keys"`
			}
			js, err := os.ReadFile(filepath.Join(dir, "case.json"))
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(js, &c); err != nil {
				t.Fatalf("case.json: %v", err)
			}
			const steps = 5
			var model [steps][]tiny.StateEntry
			var want [steps + 1][]tiny.StateEntry
			for _, k := range c.Keys {
				if strings.HasSuffix(k, "num_batches_tracked") {
					continue // int64, not averaged
				}
				ms, md, err := tiny.ReadNPYFile(filepath.Join(dir, "model_"+k+".npy"))
				if err != nil {
					t.Fatal(err)
				}
				es, ed, err := tiny.ReadNPYFile(filepath.Join(dir, "ema_"+k+".npy"))
				if err != nil {
					t.Fatal(err)
				}
				if ms[0] != steps || es[0] != steps+1 {
					t.Fatalf("%s: shapes %v, %v", k, ms, es)
				}
				n := len(md) / steps
				for s := 0; s < steps; s++ {
					model[s] = append(model[s], tiny.StateEntry{Name: k, Data: md[s*n : (s+1)*n]})
				}
				for s := 0; s <= steps; s++ {
					want[s] = append(want[s], tiny.StateEntry{Name: k, Data: ed[s*n : (s+1)*n]})
				}
			}
			e := NewEMA(want[0], c.UpdatesInitial)
			if &e.Shadow[0].Data[0] == &want[0][0].Data[0] {
				t.Fatal("NewEMA did not copy")
			}
			var maxULP int64
			maxAbs := 0.0
			for s := 0; s < steps; s++ {
				if err := e.Update(model[s]); err != nil {
					t.Fatal(err)
				}
				if e.Updates != c.Updates[s] {
					t.Errorf("step %d: updates %d, official %d", s, e.Updates, c.Updates[s])
				}
				if d := e.Decay(); d != c.Decays[s] {
					t.Errorf("step %d: decay %.17g, official %.17g", s, d, c.Decays[s])
				}
				for i, w := range want[s+1] {
					for k, v := range w.Data {
						g := e.Shadow[i].Data[k]
						u := emaULP(g, v)
						maxULP = max(maxULP, u)
						maxAbs = math.Max(maxAbs, math.Abs(float64(g)-float64(v)))
						if u > 1 {
							t.Errorf("step %d %s[%d]: %.9g, official %.9g (%d ulp)", s, w.Name, k, g, v, u)
						}
					}
				}
			}
			t.Logf("%s: %d updates, max error %d ulp (%.3g absolute)", id, steps, maxULP, maxAbs)
		})
	}
}

func TestEMADecay(t *testing.T) {
	// Python 3.11 / glibc values (repr).
	tests := []struct {
		u    int
		want float64
	}{
		{0, 0},
		{1, 0.000499825033328626},
		{2000, 0.6320573467726748},
		{2001, 0.6322412221266193},
		{2002, 0.6324250055658672},
		{2003, 0.6326086971363649}, // math.Exp is one ulp off here
		{2004, 0.6327922968840348},
		{2005, 0.6329758048547769},
		{1 << 30, 0.9999},
	}
	for _, tc := range tests {
		if got := EMADecay(tc.u); got != tc.want {
			t.Errorf("EMADecay(%d) = %.17g, want %.17g", tc.u, got, tc.want)
		}
	}
}

func TestEMAExpRN(t *testing.T) {
	// Against math.Exp (error < 1 ulp): at most one ulp apart, and exactly
	// representable cases exact.
	for i := 0; i <= 200000; i += 7 {
		x := -float64(i) / 2000
		got, ref := expRN(x), math.Exp(x)
		if got != ref && math.Nextafter(got, ref) != ref {
			t.Fatalf("expRN(%v) = %.17g, math.Exp %.17g", x, got, ref)
		}
	}
	if expRN(0) != 1 || expRN(-1000) != 0 || expRN(1) != math.E {
		t.Errorf("expRN edge values: %v %v %v", expRN(0), expRN(-1000), expRN(1))
	}
}

func TestEMAUpdateErrors(t *testing.T) {
	base := []tiny.StateEntry{{Name: "a", Data: []float32{1, 2}}, {Name: "b", Data: []float32{3}}}
	tests := []struct {
		name  string
		state []tiny.StateEntry
	}{
		{"count", base[:1]},
		{"name", []tiny.StateEntry{{Name: "a", Data: []float32{1, 2}}, {Name: "c", Data: []float32{3}}}},
		{"length", []tiny.StateEntry{{Name: "a", Data: []float32{1}}, {Name: "b", Data: []float32{3}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := NewEMA(base, 7)
			if err := e.Update(tc.state); err == nil {
				t.Fatal("no error")
			}
			if e.Updates != 7 || e.Shadow[0].Data[0] != 1 {
				t.Errorf("a failed update changed the EMA: %+v", e)
			}
		})
	}
	// A good update moves towards the model by 1 − d.
	e := NewEMA(base, 0)
	m := []tiny.StateEntry{{Name: "a", Data: []float32{11, 2}}, {Name: "b", Data: []float32{3}}}
	if err := e.Update(m); err != nil {
		t.Fatal(err)
	}
	d := EMADecay(1)
	want := float32(float32(1)*float32(d)) + float32(11*float32(1-d))
	if e.Shadow[0].Data[0] != want || e.Shadow[0].Data[1] != 2 || base[0].Data[0] != 1 {
		t.Errorf("after one update: %v (want %v), base %v", e.Shadow, want, base)
	}
}
