package tiny

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
)

// TestCPUWinogradMatchesReference runs 3x3 stride-1 convs through the
// Winograd path (forced, whatever PrepareConv would choose) against the
// float64 reference: F(2x2,3x3) with its products through OpenBLAS and
// through the packed GEMM, F(4x4,3x3) (packed GEMM only); odd and even
// sides (edge tiles), both splits (bands, output-channel chunks), batch 2,
// channel-slice views, every activation. Tolerance: the transforms add a
// few roundings per term on values at most 4x (input) and 2.25x (filter)
// the originals for F(2x2), so the error bound is a few times the im2col
// path's (see TestCPUConvMatchesReference): 1e-5*sum|terms| + 2e-6.
// F(4x4)'s coefficients are larger (up to 5 and 8): in a float32
// simulation over 256 channels of ReLU-like inputs its worst error was
// 1.1e-6*sum|terms| (F(2x2): 8e-8), inside the same bound.
func TestCPUWinogradMatchesReference(t *testing.T) {
	tests := []struct {
		n, in, out, h, w int
		act              Act
	}{
		{1, 3, 8, 17, 13, ActReLU},    // odd sides: partial tiles on the right and bottom
		{1, 5, 7, 2, 2, ActLeaky},     // one tile
		{2, 4, 16, 40, 40, ActLeaky},  // batch 2, several bands
		{1, 16, 33, 21, 19, ActNone},  // channel chunks with an edge, odd sides
		{1, 32, 64, 64, 64, ActReLU},  // several bands per goroutine
		{1, 64, 20, 13, 13, ActLeaky}, // the 416 input's 13x13 map
		{1, 128, 48, 20, 20, ActReLU}, // small map: channel split
	}
	paths := []struct {
		blas bool // the products through OpenBLAS, else the packed GEMM
		m    int  // output tile side: F(2x2,3x3) or F(4x4,3x3)
	}{{true, 2}, {false, 2}, {false, 4}}
	for _, threads := range []int{1, 2, 3} {
		for _, path := range paths {
			if !path.blas && !hasPackedGEMM {
				continue // no AVX-512: the packed path is never chosen
			}
			blas, m := path.blas, path.m
			dev := NewCPU(threads)
			dev.noPacked = blas
			for _, tc := range tests {
				name := fmt.Sprintf("t%d/blas=%v/F(%d,3)/%dx%dx%dx%d-o%d-%s", threads, blas, m, tc.n, tc.in, tc.h, tc.w, tc.out, tc.act)
				t.Run(name, func(t *testing.T) {
					r := rand.New(rand.NewPCG(2, uint64(tc.in*1000+tc.out)))
					x := devEmbed(r, tc.n, tc.in, tc.h, tc.w, 3)
					c := ConvArgs{Weight: devRandSlice(r, tc.out*tc.in*9), Bias: devRandSlice(r, tc.out), K: 3, S: 1, Pad: 1, Act: tc.act}
					want, mag, ho, wo := devRefConv(x, c, tc.out)
					y := devEmbed(r, tc.n, tc.out, ho, wo, 2)
					c, err := dev.withWinograd(y, x, c, m)
					if err != nil {
						t.Fatal(err)
					}
					devCheckConv(t, dev, y, x, c, want, mag, 1e-5, 2e-6)
				})
			}
			dev.Close()
		}
	}
}

// TestCPUWinogradChoice: PrepareConv gives Winograd filters to 3x3
// stride-1 pad-1 convs on maps large enough, leaves the others alone, and
// Conv rejects filters of the wrong size.
func TestCPUWinogradChoice(t *testing.T) {
	dev := NewCPU(2)
	defer dev.Close()
	shape := func(c, h int) NCHW { return NCHW{N: 1, C: c, H: h, W: h} }
	tests := []struct {
		name   string
		y, x   NCHW
		k, s   int
		pad    int
		expect bool
	}{
		{"3x3 s1 on 80x80", shape(64, 80), shape(64, 80), 3, 1, 1, true},
		{"3x3 s1 on 10x10 (too few tiles)", shape(256, 10), shape(256, 10), 3, 1, 1, false},
		{"3x3 s2", shape(64, 40), shape(32, 80), 3, 2, 1, false},
		{"1x1", shape(64, 80), shape(64, 80), 1, 1, 0, false},
		{"3x3 no padding", shape(8, 78), shape(8, 80), 3, 1, 0, false},
	}
	for _, tc := range tests {
		c := ConvArgs{Weight: make([]float32, tc.y.C*tc.x.C*tc.k*tc.k), Bias: make([]float32, tc.y.C), K: tc.k, S: tc.s, Pad: tc.pad, Act: ActReLU}
		got, err := dev.PrepareConv(tc.y, tc.x, c)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if (got.Winograd != nil) != tc.expect {
			t.Errorf("%s: Winograd filters %v, want %v", tc.name, got.Winograd != nil, tc.expect)
		}
	}
	x := NCHW{Data: make([]float32, 4*8*8), N: 1, C: 4, H: 8, W: 8}
	y := NCHW{Data: make([]float32, 4*8*8), N: 1, C: 4, H: 8, W: 8}
	c := ConvArgs{Weight: make([]float32, 4*4*9), Bias: make([]float32, 4), K: 3, S: 1, Pad: 1, Winograd: make([]float32, 10)}
	if err := dev.Conv(y, x, c, make([]float32, 1<<16)); err == nil {
		t.Error("Conv accepted 10 Winograd filter values for a 4x4 3x3 conv")
	}
}

// BenchmarkCPUConvs runs the golden relu model at 640, 416 and 320 on 2
// threads through each of the CPU's conv paths, side by side: the default
// (packed GEMM; 3x3 convs through taps, Winograd F(4x4,3x3) where
// winogradPays), taps for every 3x3 conv, the 3x3 convs through im2col
// with and without Winograd (the default before taps), the packed GEMM
// run op by op instead of as one batch, and the OpenBLAS paths (what CPUs
// without AVX-512 run) with and without Winograd:
//
//	go test -run '^$' -bench CPUConvs -count 6 ./tiny | benchstat -col /conv -
func BenchmarkCPUConvs(b *testing.B) {
	m, err := ImportModel(filepath.Join(goldenForward(b), "yolov7-tiny-relu-raw.onnx"))
	if err != nil {
		b.Fatal(err)
	}
	paths := []string{"packed", "packed-taps", "packed-im2col+winograd", "packed-im2col", "packed-unbatched",
		"openblas+winograd", "openblas"}
	for _, size := range []int{640, 416, 320} {
		for _, conv := range paths {
			b.Run(fmt.Sprintf("size=%d/conv=%s", size, conv), func(b *testing.B) {
				if strings.HasPrefix(conv, "packed") && !hasPackedGEMM {
					b.Skip("no AVX-512: the packed GEMM does not run here")
				}
				cpu := NewCPU(2)
				defer cpu.Close()
				cpu.noWinograd = conv == "packed-taps" || conv == "packed-im2col" || conv == "openblas"
				cpu.noTaps = strings.HasPrefix(conv, "packed-im2col")
				cpu.noPacked = strings.HasPrefix(conv, "openblas")
				var dev Device = cpu
				if conv == "packed-unbatched" {
					dev = unbatchedCPU{cpu}
				}
				p, err := m.NewPlan(dev, size)
				if err != nil {
					b.Fatal(err)
				}
				in := make([]float32, 3*size*size)
				for i := range in {
					in[i] = float32(i%255) / 255
				}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := p.Forward(in); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/frame")
			})
		}
	}
}
