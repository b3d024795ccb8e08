package tiny

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// CPU is the Device of the host processor. On x86-64 CPUs with AVX-512 the
// inference convs run on the package's own GEMM (cpu_gemm.go, gemm.h:
// filters packed once per plan, bias and activation in registers): 1x1
// convs read their input in place, 3x3 convs through taps (the kernel
// reads each input channel shifted per tap, no im2col; stride 2 from the
// tile's rows split into phases), Winograd F(4x4,3x3) for the 3x3
// stride-1 convs where it measured faster (winograd.go), other convs
// through im2col; the detect head runs on the same kernel. Elsewhere, and
// for convs a plan did not prepare, the convs are OpenBLAS SGEMM
// (conv.go). Those inference ops, max-pool and upsample have C loop
// bodies and run on a C worker pool (pool.h: the caller and Threads-1
// pthreads that spin between loops); a plan's forward queues them and
// runs them in one cgo call (StartBatch, cpu_batch.go). The training ops
// and the OpenBLAS paths run on a pool of Threads-1 goroutines
// (workers.go), with OpenBLAS single-threaded inside each. Ops on one CPU
// run one at a time (concurrent callers wait), and a steady-state op
// allocates nothing.
type CPU struct {
	threads int
	// tileCols is the target number of output positions of one conv tile
	// (im2col block and GEMM call) when a conv is split over positions.
	tileCols int
	// noWinograd keeps PrepareConv from choosing the Winograd path (for
	// side-by-side benchmarks and tests of the im2col path).
	noWinograd bool
	// noPacked keeps PrepareConv from choosing the packed-GEMM path
	// (cpu_gemm.go), so convs go through OpenBLAS (side-by-side
	// benchmarks and tests).
	noPacked bool
	// noWino43 keeps the packed-GEMM path on Winograd F(2x2,3x3) rather
	// than F(4x4,3x3) (side-by-side benchmarks and tests).
	noWino43 bool
	// noTaps keeps the packed-GEMM path's 3x3 convs on im2col rather
	// than taps (conv_tile_taps in gemm.h; side-by-side benchmarks and
	// tests).
	noTaps bool
	// tapsS2MinIn is the fewest input channels for which a 3x3 stride-2
	// conv goes through taps rather than im2col: with fewer (the first
	// layer's 3) splitting the input rows into phases costs more than it
	// saves.
	tapsS2MinIn int
	// tapKC is the input channels of one K block of a conv through taps.
	tapKC int

	// mu serialises ops: the pools serve one parallel-for at a time
	// (shared with the device's batch copy, cpu_batch.go).
	mu   *sync.Mutex
	pool *workerPool
	cp   *cPool // for the loops with C bodies (pool.h)

	// Preallocated parallel-for bodies, one per kind of loop.
	convCols convColsTask
	convCol  im2colTask
	convRows convRowsTask
	wino     winogradTask
	affine   affineTask

	cpuTrain // the training ops' task structs (cpu_backward.go)

	batches *cpuBatches    // StartBatch's state, shared with the batch copy
	q       unsafe.Pointer // on a batch's copy of the device: its C queue
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
	d := &CPU{threads: threads, tileCols: DefaultTileCols, tapKC: defaultTapKC, tapsS2MinIn: 16,
		mu: new(sync.Mutex), batches: new(cpuBatches)}
	if threads > 1 {
		d.pool = newWorkerPool(threads - 1)
		// Stop the workers once the device is unreachable (they hold no
		// reference to it between ops), for callers that never Close.
		runtime.AddCleanup(d, func(p *workerPool) { p.close() }, d.pool)
		// Spinning helpers beyond the cores only take turns with each
		// other (8 threads on 2 cores: 3x slower), so the C pool stops
		// at one thread per core; ops still split for d.threads.
		if d.cp = newCPool(min(threads, runtime.NumCPU()) - 1); d.cp != nil {
			runtime.AddCleanup(d, func(p *cPool) { p.close() }, d.cp)
		}
	}
	return d
}

// Close stops the device's worker goroutines. The device must not be used
// afterwards (its ops would then run on the calling goroutine only). Close
// is safe to call more than once.
func (d *CPU) Close() {
	d.batches.close()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pool != nil {
		d.pool.close()
		d.pool = nil
	}
	d.cp.close()
	d.cp = nil
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

// parallel calls t.run(worker, i) for every i in [0, n) on up to d.threads
// goroutines; worker (0 <= worker < d.threads) names the goroutine, so t
// can use a per-worker part of a scratch buffer. Items are handed out one
// at a time, so uneven items balance. The caller holds d.mu.
func (d *CPU) parallel(n int, t task) {
	if d.pool == nil || n <= 1 {
		for i := 0; i < n; i++ {
			t.run(0, i)
		}
		return
	}
	d.pool.run(d.threads-1, n, t)
}

// Upsample2x implements Device: each of the N*C planes on one goroutine.
func (d *CPU) Upsample2x(y, x NCHW) error {
	if err := checkUpsample(y, x); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.upsamplePlanes(y, x)
}
