package tiny

import (
	"sync"
	"sync/atomic"
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
// len(start) goroutines.
type workerPool struct {
	start []chan struct{} // one per helper goroutine (worker 1..)
	wg    sync.WaitGroup
	t     task // the current loop's body; nil between loops
	n     int  // the current loop's item count
	next  atomic.Int64
	once  sync.Once
	alive atomic.Int32 // helper goroutines running (for tests)
}

// newWorkerPool starts helpers goroutines.
func newWorkerPool(helpers int) *workerPool {
	p := &workerPool{start: make([]chan struct{}, helpers)}
	p.alive.Add(int32(helpers))
	for w := range p.start {
		ch := make(chan struct{}, 1)
		p.start[w] = ch
		go p.loop(w+1, ch)
	}
	return p
}

// loop is one helper goroutine: it runs its share of every loop it is
// woken for, until its channel is closed.
func (p *workerPool) loop(w int, start <-chan struct{}) {
	defer p.alive.Add(-1)
	for range start {
		p.work(w)
		p.wg.Done()
	}
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

// run calls t.run(worker, i) for every i in [0, n) on the caller and up to
// helpers more goroutines, and returns when all items are done. The caller
// must not run two loops on one pool at once (CPU.mu).
func (p *workerPool) run(helpers, n int, t task) {
	helpers = min(helpers, len(p.start), n-1)
	if helpers <= 0 {
		for i := 0; i < n; i++ {
			t.run(0, i)
		}
		return
	}
	p.t, p.n = t, n
	p.next.Store(0)
	p.wg.Add(helpers)
	for w := 0; w < helpers; w++ {
		p.start[w] <- struct{}{}
	}
	p.work(0)
	p.wg.Wait()
	p.t = nil // drop the reference to the device's task structs
}

// close stops the helper goroutines; safe to call more than once.
func (p *workerPool) close() {
	p.once.Do(func() {
		for _, ch := range p.start {
			close(ch)
		}
	})
}
