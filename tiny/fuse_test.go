package tiny

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// goldenFuse returns ../shared/golden/train/fuse/<name>, or skips.
func goldenFuse(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(filepath.Dir(goldenForward(t)), "train", "fuse", name)
	if _, err := os.Stat(filepath.Join(dir, "case.json")); err != nil {
		t.Skipf("golden fuse case absent: %v", err)
	}
	return dir
}

// fuseNPY reads <dir>/<name>.npy.
func fuseNPY(t *testing.T, dir, name string) ([]int, []float32) {
	t.Helper()
	shape, data, err := ReadNPYFile(filepath.Join(dir, name+".npy"))
	if err != nil {
		t.Fatal(err)
	}
	return shape, data
}

func fuseShape4(t *testing.T, s []int) [4]int {
	t.Helper()
	if len(s) != 4 {
		t.Fatalf("shape %v, want 4 dims", s)
	}
	return [4]int{s[0], s[1], s[2], s[3]}
}

func fuseBN(t *testing.T, dir, prefix string) BatchNorm {
	_, w := fuseNPY(t, dir, prefix+"_weight")
	_, b := fuseNPY(t, dir, prefix+"_bias")
	_, m := fuseNPY(t, dir, prefix+"_running_mean")
	_, v := fuseNPY(t, dir, prefix+"_running_var")
	return BatchNorm{Weight: w, Bias: b, Mean: m, Var: v, Eps: BNEps}
}

// fuseRefConv is a direct NCHW convolution (groups 1, square kernel, equal
// stride and padding) in float64: the test's independent forward.
func fuseRefConv(x []float32, n, c, h, w int, k []float32, ks [4]int, bias []float32, stride, pad int) (y []float32, oh, ow int) {
	oh, ow = (h+2*pad-ks[2])/stride+1, (w+2*pad-ks[3])/stride+1
	y = make([]float32, n*ks[0]*oh*ow)
	for b := 0; b < n; b++ {
		for o := 0; o < ks[0]; o++ {
			for i := 0; i < oh; i++ {
				for j := 0; j < ow; j++ {
					s := float64(bias[o])
					for ci := 0; ci < c; ci++ {
						for ki := 0; ki < ks[2]; ki++ {
							for kj := 0; kj < ks[3]; kj++ {
								yi, xj := i*stride-pad+ki, j*stride-pad+kj
								if yi < 0 || yi >= h || xj < 0 || xj >= w {
									continue
								}
								s += float64(k[((o*ks[1]+ci)*ks[2]+ki)*ks[3]+kj]) * float64(x[((b*c+ci)*h+yi)*w+xj])
							}
						}
					}
					y[((b*ks[0]+o)*oh+i)*ow+j] = float32(s)
				}
			}
		}
	}
	return y, oh, ow
}

// fuseCompare fails when |got-want| > tol*max(1,|want|) anywhere and returns
// the largest absolute difference.
func fuseCompare(t *testing.T, what string, got, want []float32, tol float64) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	var worst float64
	at := -1
	for i := range got {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if d > worst {
			worst, at = d, i
		}
		if d > tol*math.Max(1, math.Abs(float64(want[i]))) {
			t.Errorf("%s[%d] = %v, want %v (diff %.3g, tolerance %.3g)", what, i, got[i], want[i], d, tol)
			return worst
		}
	}
	if at < 0 {
		t.Logf("%s: bit-exact", what)
	} else {
		t.Logf("%s: max abs diff %.3g (at %d)", what, worst, at)
	}
	return worst
}

// The fused parameters are computed in float32 in the official operation
// order, so they are expected to match to the last bit or within 1 ulp;
// the forward through the fused conv is compared with the unfused torch
// output with the MANIFEST's fused-vs-unfused bound (1.7e-6, here 1e-5).
const (
	fuseParamTol   = 2e-7
	fuseForwardTol = 1e-5
)

func TestFuseConvBNMatchesOfficial(t *testing.T) {
	dir := goldenFuse(t, "conv_bn_k3_s2")
	ws, w := fuseNPY(t, dir, "conv_weight")
	bn := fuseBN(t, dir, "bn")
	w2, b2, err := FuseConvBN(w, fuseShape4(t, ws), bn.Weight, bn.Bias, bn.Mean, bn.Var, bn.Eps)
	if err != nil {
		t.Fatal(err)
	}
	_, fw := fuseNPY(t, dir, "fused_weight")
	_, fb := fuseNPY(t, dir, "fused_bias")
	fuseCompare(t, "fused weight", w2, fw, fuseParamTol)
	fuseCompare(t, "fused bias", b2, fb, fuseParamTol)
	xs, x := fuseNPY(t, dir, "x")
	y, _, _ := fuseRefConv(x, xs[0], xs[1], xs[2], xs[3], w2, fuseShape4(t, ws), b2, 2, 1)
	_, yu := fuseNPY(t, dir, "y_unfused_preact")
	fuseCompare(t, "conv(x) with fused parameters vs unfused torch", y, yu, fuseForwardTol)
}

func TestFuseRepConvMatchesOfficial(t *testing.T) {
	for _, tc := range []struct {
		name     string
		identity bool
	}{
		{"repconv_c4_c6_noidentity", false},
		{"repconv_c6_c6_identity", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := goldenFuse(t, tc.name)
			ds, dense := fuseNPY(t, dir, "dense_conv_weight")
			_, point := fuseNPY(t, dir, "conv1x1_weight")
			s := fuseShape4(t, ds)
			r := RepConv{Out: s[0], In: s[1], Dense: dense, DenseBN: fuseBN(t, dir, "dense_bn"), Point: point, PointBN: fuseBN(t, dir, "conv1x1_bn")}
			if tc.identity {
				id := fuseBN(t, dir, "identity_bn")
				r.Identity = &id
			}
			w, b, err := r.Fuse()
			if err != nil {
				t.Fatal(err)
			}
			_, fw := fuseNPY(t, dir, "fused_weight")
			_, fb := fuseNPY(t, dir, "fused_bias")
			fuseCompare(t, "fused weight", w, fw, fuseParamTol)
			fuseCompare(t, "fused bias", b, fb, fuseParamTol)
			xs, x := fuseNPY(t, dir, "x")
			y, _, _ := fuseRefConv(x, xs[0], xs[1], xs[2], xs[3], w, s, b, 1, 1)
			_, yu := fuseNPY(t, dir, "y_unfused_preact")
			fuseCompare(t, "conv(x) with fused parameters vs unfused torch", y, yu, fuseForwardTol)
		})
	}
}

func TestFuseImplicitMatchesIDetectFuse(t *testing.T) {
	dir := goldenFuse(t, "idetect_implicit_fold_nc3")
	const na, no = 3, 8
	for l := 0; l < 3; l++ {
		ws, w := fuseNPY(t, dir, fmt.Sprintf("conv_weight_%d", l))
		_, b := fuseNPY(t, dir, fmt.Sprintf("conv_bias_%d", l))
		_, ia := fuseNPY(t, dir, fmt.Sprintf("implicitA_%d", l))
		_, im := fuseNPY(t, dir, fmt.Sprintf("implicitM_%d", l))
		s := fuseShape4(t, ws)
		w2, b2, err := FuseImplicit(w, s, b, ia, im)
		if err != nil {
			t.Fatal(err)
		}
		_, fw := fuseNPY(t, dir, fmt.Sprintf("fused_weight_%d", l))
		_, fb := fuseNPY(t, dir, fmt.Sprintf("fused_bias_%d", l))
		fuseCompare(t, fmt.Sprintf("level %d fused weight", l), w2, fw, fuseParamTol)
		// The official sums W.ia in float32, FoldImplicit in float64.
		fuseCompare(t, fmt.Sprintf("level %d fused bias", l), b2, fb, 1e-6)
		// Forward: 1x1 conv, viewed (B, NA, NO, H, W) and permuted to
		// (B, NA, H, W, NO) like IDetect's training output.
		xs, x := fuseNPY(t, dir, fmt.Sprintf("x_%d", l))
		y, h, wd := fuseRefConv(x, xs[0], xs[1], xs[2], xs[3], w2, s, b2, 1, 0)
		perm := make([]float32, len(y))
		for bi := 0; bi < xs[0]; bi++ {
			for a := 0; a < na; a++ {
				for k := 0; k < no; k++ {
					for i := 0; i < h*wd; i++ {
						perm[((bi*na+a)*h*wd+i)*no+k] = y[((bi*na+a)*no+k)*h*wd+i]
					}
				}
			}
		}
		_, yu := fuseNPY(t, dir, fmt.Sprintf("y_unfused_%d", l))
		fuseCompare(t, fmt.Sprintf("level %d output vs unfused torch", l), perm, yu, fuseForwardTol)
	}
}

func TestFuseRejectsBadShapes(t *testing.T) {
	bn := func(c int) BatchNorm {
		v := make([]float32, c)
		return BatchNorm{Weight: v, Bias: v, Mean: v, Var: v, Eps: BNEps}
	}
	w := make([]float32, 2*3*3*3)
	tests := []struct {
		name string
		run  func() error
		want string
	}{
		{"conv+bn weight length", func() error {
			_, _, err := FuseConvBN(w[:5], [4]int{2, 3, 3, 3}, bn(2).Weight, bn(2).Bias, bn(2).Mean, bn(2).Var, BNEps)
			return err
		}, "has 5 values"},
		{"conv+bn channels", func() error {
			b := bn(3)
			_, _, err := FuseConvBN(w, [4]int{2, 3, 3, 3}, b.Weight, b.Bias, b.Mean, b.Var, BNEps)
			return err
		}, "want 2"},
		{"conv+bn negative eps", func() error {
			b := bn(2)
			_, _, err := FuseConvBN(w, [4]int{2, 3, 3, 3}, b.Weight, b.Bias, b.Mean, b.Var, -1)
			return err
		}, "eps"},
		{"repconv identity with in != out", func() error {
			id := bn(2)
			_, _, err := RepConv{Out: 2, In: 3, Dense: w, DenseBN: bn(2), Point: make([]float32, 6), PointBN: bn(2), Identity: &id}.Fuse()
			return err
		}, "identity branch with 3 -> 2"},
		{"repconv 1x1 shape", func() error {
			_, _, err := RepConv{Out: 2, In: 3, Dense: w, DenseBN: bn(2), Point: make([]float32, 5), PointBN: bn(2)}.Fuse()
			return err
		}, "1x1 branch"},
		{"implicit sizes", func() error {
			_, _, err := FuseImplicit(make([]float32, 6), [4]int{2, 3, 1, 1}, make([]float32, 2), make([]float32, 2), make([]float32, 2))
			return err
		}, "ia has 2 values"},
		{"implicit on a 3x3", func() error {
			_, _, err := FuseImplicit(w, [4]int{2, 3, 3, 3}, make([]float32, 2), make([]float32, 3), make([]float32, 2))
			return err
		}, "fold implicit"},
	}
	for _, tc := range tests {
		if err := tc.run(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

// TestFuseLeavesInputsAlone: the fusion functions return new slices.
func TestFuseLeavesInputsAlone(t *testing.T) {
	w := []float32{1, 2, 3, 4}
	g := []float32{2, 3}
	b, m, v := []float32{0, 0}, []float32{0, 0}, []float32{1, 1}
	w2, _, err := FuseConvBN(w, [4]int{2, 2, 1, 1}, g, b, m, v, 0)
	if err != nil {
		t.Fatal(err)
	}
	if w[0] != 1 || w2[0] != 2 || w2[3] != 12 {
		t.Errorf("w %v, fused %v", w, w2)
	}
	w3, b3, err := FuseImplicit(w, [4]int{2, 2, 1, 1}, []float32{1, -1}, []float32{1, 1}, []float32{2, 0.5})
	if err != nil {
		t.Fatal(err)
	}
	// b' = (b + W.ia) * im = (1+3)*2, (-1+7)*0.5; W' = W * im.
	if w[0] != 1 || w3[0] != 2 || w3[3] != 2 || b3[0] != 8 || b3[1] != 3 {
		t.Errorf("w %v, fused %v %v", w, w3, b3)
	}
}
