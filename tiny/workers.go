package tiny

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// A persistent worker pool for the CPU device's parallel-for loops. The
// goroutines are started once, in NewCPU, and each op hands them a task: a
// pointer to one of the device's preallocated task structs (conv tiles,
// pool planes, ...), so a steady-state Forward allocates nothing: no
// goroutine, no closure, no job value per op.

// task is one parallel-for body: run(worker, i) handles item i on worker
// worker (0 <= worker < Threads), so it can use a per-worker part of a
// scratch buffer.
type task interface {
	run(worker, i int)
}

// workerPool runs one parallel-for at a time on its caller plus
// len(start) helper goroutines. Ops follow each other within microseconds
// during a forward, so a helper that has finished its share spins for a
// while (spinWait) watching for the next loop before it parks on its
// channel: waking a parked goroutine costs tens of microseconds (an OS
// thread wake-up), which, over the ~80 loops of a forward on small maps,
// is a measurable share of the frame, and makes it jitter.
type workerPool struct {
	start   []chan struct{} // one per helper: a token wakes it when parked
	parked  []atomic.Int32  // 1 while helper w is parked (or about to be)
	gen     atomic.Uint64   // loop counter: a new value publishes t and n
	pending atomic.Int32    // helpers still in the current loop
	closed  atomic.Bool
	t       task // the current loop's body; nil between loops
	n       int  // the current loop's item count
	next    atomic.Int64
	once    sync.Once
	alive   atomic.Int32 // helper goroutines running (for tests)
}

// spinWait is how long an idle helper, or a caller waiting for its
// helpers, spins before it parks or yields.
const spinWait = 100 * time.Microsecond

// newWorkerPool starts helpers goroutines.
func newWorkerPool(helpers int) *workerPool {
	p := &workerPool{start: make([]chan struct{}, helpers), parked: make([]atomic.Int32, helpers)}
	p.alive.Add(int32(helpers))
	for w := range p.start {
		ch := make(chan struct{}, 1)
		p.start[w] = ch
		go p.loop(w)
	}
	return p
}

// loop is helper goroutine w (worker w+1): it runs its share of every
// loop, until the pool is closed.
func (p *workerPool) loop(w int) {
	defer p.alive.Add(-1)
	var seen uint64
	for {
		seen = p.await(w, seen)
		if p.closed.Load() {
			return
		}
		p.work(w + 1)
		p.pending.Add(-1)
	}
}

// await returns the generation of the next loop after seen, spinning for
// spinWait and then parking on helper w's channel.
func (p *workerPool) await(w int, seen uint64) uint64 {
	t0 := time.Now()
	for i := 1; ; i++ {
		if g := p.gen.Load(); g != seen || p.closed.Load() {
			return g
		}
		if i%128 == 0 && time.Since(t0) > spinWait {
			break
		}
	}
	p.parked[w].Store(1)
	if g := p.gen.Load(); g != seen || p.closed.Load() {
		if p.parked[w].CompareAndSwap(1, 0) {
			return g // nobody saw us parked
		}
		// run saw us parked and sends a token: take it
	}
	<-p.start[w]
	return p.gen.Load()
}

// work takes items of the current loop until none are left.
func (p *workerPool) work(w int) {
	t, n := p.t, p.n
	for {
		i := int(p.next.Add(1)) - 1
		if i >= n {
			return
		}
		t.run(w, i)
	}
}

// run calls t.run(worker, i) for every i in [0, n) on the caller and the
// helpers, and returns when all items are done. helpers <= 0 runs the loop
// on the caller alone. The caller must not run two loops on one pool at
// once (CPU.mu).
func (p *workerPool) run(helpers, n int, t task) {
	if helpers <= 0 || n <= 1 || len(p.start) == 0 {
		for i := 0; i < n; i++ {
			t.run(0, i)
		}
		return
	}
	p.t, p.n = t, n
	p.next.Store(0)
	p.pending.Store(int32(len(p.start)))
	p.gen.Add(1) // publishes t, n, next and pending
	for w := range p.start {
		if p.parked[w].CompareAndSwap(1, 0) {
			p.start[w] <- struct{}{}
		}
	}
	p.work(0)
	t0 := time.Now()
	for i := 1; p.pending.Load() > 0; i++ {
		if i%128 == 0 && time.Since(t0) > spinWait {
			runtime.Gosched() // a helper descheduled: let it run
		}
	}
	p.t = nil // drop the reference to the device's task structs
}

// close stops the helper goroutines; safe to call more than once. No loop
// may run on the pool afterwards.
func (p *workerPool) close() {
	p.once.Do(func() {
		p.closed.Store(true)
		for _, ch := range p.start {
			close(ch)
		}
	})
}
