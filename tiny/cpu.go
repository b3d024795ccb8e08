package tiny

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
)

// CPU is the Device of the host processor. Convolutions are OpenBLAS SGEMM
// (conv.go): a kxk conv through im2col, a 1x1 stride-1 conv straight on its
// input, then bias and activation in one pass over the GEMM's output while
// it is still in cache. Max-pool (pool.go), upsample (this file) are plain
// Go. Every op is spread over Threads
// goroutines, and OpenBLAS itself runs single-threaded inside each of them.
type CPU struct {
	threads int
	// tileCols is the target number of output positions of one conv tile
	// (im2col block and GEMM call) when a conv is split over positions.
	tileCols int
}

// DefaultTileCols is the target tile width (output positions) of a conv
// split over positions. Measured at 640 on 2 cores (best of 8 forwards):
// 256 and 512 columns give 74-75 ms, 1024-4096 give 80-95 ms; a narrow
// tile keeps the im2col block (In*K*K x 256, 0.3-2.4 MiB here) and the
// output tile in L2 between im2col, SGEMM and the bias pass.
const DefaultTileCols = 256

// NewCPU returns the CPU device running each op on threads goroutines
// (threads <= 0: GOMAXPROCS). It sets OpenBLAS's own thread count to 1 for
// the whole process: the device parallelises above OpenBLAS, which keeps
// im2col, bias and activation parallel too and avoids OpenBLAS's thread
// hand-offs on every small GEMM.
func NewCPU(threads int) *CPU {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	setBLASThreads(1)
	return &CPU{threads: threads, tileCols: DefaultTileCols}
}

// Threads is the number of goroutines each op runs on.
func (d *CPU) Threads() int { return d.threads }

// Alloc returns n zeroed float32 values.
func (d *CPU) Alloc(n int) ([]float32, error) {
	if n < 0 {
		return nil, fmt.Errorf("cpu alloc: negative size %d", n)
	}
	return make([]float32, n), nil
}

// parallel calls fn(worker, i) for every i in [0, n) on up to d.threads
// goroutines; worker (0 <= worker < d.threads) names the goroutine, so fn
// can use a per-worker part of a scratch buffer. Items are handed out one
// at a time, so uneven items balance.
func (d *CPU) parallel(n int, fn func(worker, i int)) {
	t := min(d.threads, n)
	if t <= 1 {
		for i := 0; i < n; i++ {
			fn(0, i)
		}
		return
	}
	var next atomic.Int64
	work := func(w int) {
		for {
			i := int(next.Add(1)) - 1
			if i >= n {
				return
			}
			fn(w, i)
		}
	}
	var wg sync.WaitGroup
	wg.Add(t - 1)
	for w := 1; w < t; w++ {
		go func() {
			defer wg.Done()
			work(w)
		}()
	}
	work(0)
	wg.Wait()
}

// Upsample2x implements Device: each of the N*C planes on one goroutine.
func (d *CPU) Upsample2x(y, x NCHW) error {
	if err := checkUpsample(y, x); err != nil {
		return err
	}
	h, w := x.H, x.W
	d.parallel(x.N*x.C, func(_, i int) {
		n, c := i/x.C, i%x.C
		src := x.Image(n)[c*h*w : (c+1)*h*w]
		dst := y.Image(n)[c*4*h*w : (c+1)*4*h*w]
		for r := 0; r < h; r++ {
			in := src[r*w : (r+1)*w]
			out := dst[2*r*2*w : (2*r+1)*2*w]
			for j, v := range in {
				out[2*j] = v
				out[2*j+1] = v
			}
			copy(dst[(2*r+1)*2*w:(2*r+2)*2*w], out)
		}
	})
	return nil
}
