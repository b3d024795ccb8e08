package tiny

import (
	"math"
	"testing"
)

// TestCPUAffineMatchesFormula checks y = act(x*scale + shift + add) per
// channel on a channel-slice view, in place, for every activation, and
// that bad shapes are rejected.
func TestCPUAffineMatchesFormula(t *testing.T) {
	const n, c, h, w = 2, 3, 4, 5
	big := NCHW{Data: make([]float32, n*(c+2)*h*w), N: n, C: c + 2, H: h, W: w}
	for i := range big.Data {
		big.Data[i] = float32(math.Sin(float64(i)))
	}
	add := NCHW{Data: make([]float32, n*c*h*w), N: n, C: c, H: h, W: w}
	for i := range add.Data {
		add.Data[i] = float32(i%7) / 7
	}
	scale, shift := []float32{2, -1, 0.5}, []float32{0.1, -0.2, 0.3}
	for _, act := range []Act{ActNone, ActReLU, ActLeaky} {
		x := big.Channels(1, c)
		orig := append([]float32(nil), big.Data...)
		if err := NewCPU(2).Affine(x, x, AffineArgs{Scale: scale, Shift: shift, Add: add, Act: act}); err != nil {
			t.Fatal(err)
		}
		for b := 0; b < n; b++ {
			for ch := 0; ch < c+2; ch++ {
				for p := 0; p < h*w; p++ {
					i := (b*(c+2)+ch)*h*w + p
					want := orig[i]
					if ch >= 1 && ch <= c {
						v := float32(orig[i]*scale[ch-1]) + shift[ch-1] + add.Data[(b*c+ch-1)*h*w+p]
						if v < 0 && act == ActReLU {
							v = 0
						} else if v < 0 && act == ActLeaky {
							v *= LeakySlope
						}
						want = v
					}
					if big.Data[i] != want {
						t.Fatalf("%s: image %d channel %d pos %d: %v, want %v", act, b, ch, p, big.Data[i], want)
					}
				}
			}
		}
		copy(big.Data, orig)
	}
	x := big.Channels(0, c)
	if err := NewCPU(1).Affine(x, x, AffineArgs{Scale: scale[:2], Shift: shift, Act: ActNone}); err == nil {
		t.Fatal("2 scales for 3 channels accepted")
	}
	if err := NewCPU(1).Affine(big, x, AffineArgs{Scale: scale, Shift: shift, Act: ActNone}); err == nil {
		t.Fatal("output of another channel count accepted")
	}
}
