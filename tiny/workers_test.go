package tiny

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"
)

// TestPlanForwardDoesNotAllocate: after a warm-up Forward, a steady-state
// Forward allocates nothing (the CPU device's worker pool and task structs
// are set up once, in NewCPU).
func TestPlanForwardDoesNotAllocate(t *testing.T) {
	m, err := NewRandom(Config{NC: 3, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	const size = 96
	in := make([]float32, 3*size*size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range in {
		in[i] = r.Float32()
	}
	for _, threads := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("t%d", threads), func(t *testing.T) {
			dev := NewCPU(threads)
			defer dev.Close()
			p, err := m.NewPlan(dev, size)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.Forward(in); err != nil { // warm-up
				t.Fatal(err)
			}
			allocs := testing.AllocsPerRun(5, func() {
				if _, err := p.Forward(in); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("Forward: %v allocations per run, want 0", allocs)
			}
		})
	}
}

// countTask counts its items and checks each worker id.
type countTask struct {
	threads int
	hits    []atomic.Int32
	bad     atomic.Int32
}

func (c *countTask) run(w, i int) {
	if w < 0 || w >= c.threads {
		c.bad.Add(1)
	}
	c.hits[i].Add(1)
}

// TestCPUParallelCoversEveryItemOnce runs loops of many sizes on the pool.
func TestCPUParallelCoversEveryItemOnce(t *testing.T) {
	for _, threads := range []int{1, 2, 4} {
		d := NewCPU(threads)
		for _, n := range []int{0, 1, 2, 3, 7, 100, 1000} {
			c := &countTask{threads: threads, hits: make([]atomic.Int32, n)}
			d.mu.Lock()
			d.parallel(n, c)
			d.mu.Unlock()
			for i := range c.hits {
				if h := c.hits[i].Load(); h != 1 {
					t.Fatalf("t%d n%d: item %d run %d times", threads, n, i, h)
				}
			}
			if c.bad.Load() != 0 {
				t.Fatalf("t%d n%d: worker id out of range", threads, n)
			}
		}
		d.Close()
		d.Close() // idempotent
	}
}

// TestCPUCloseStopsWorkers: NewCPU(8) runs 7 helper goroutines, and Close
// ends them. It counts the pool's own goroutines: the process-wide count
// also moves with other tests' devices being collected.
func TestCPUCloseStopsWorkers(t *testing.T) {
	d := NewCPU(8)
	pool := d.pool
	if pool == nil {
		t.Fatal("NewCPU(8) has no worker pool")
	}
	if n := pool.alive.Load(); n != 7 {
		t.Fatalf("NewCPU(8) runs %d helper goroutines, want 7", n)
	}
	d.Close()
	deadline := time.Now().Add(2 * time.Second)
	for pool.alive.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := pool.alive.Load(); n != 0 {
		t.Errorf("%d helper goroutines still running after Close", n)
	}
}

// TestPlanFusesSiblingConvs: the two input 1x1 convs of every ELAN block
// run as one GEMM (fuseSiblings), and the fused plan still matches the
// reference network (TestPlanMatchesReferenceNetwork).
func TestPlanFusesSiblingConvs(t *testing.T) {
	m, err := NewRandom(Config{NC: 3, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	p, err := m.NewPlan(NewCPU(1), 64)
	if err != nil {
		t.Fatal(err)
	}
	fused := 0
	for i, st := range p.steps {
		if st.skip {
			fused++
			if i == 0 || p.steps[i-1].fusedOut.Data == nil {
				t.Errorf("step %d skipped without a fused predecessor", i)
			}
		}
	}
	t.Logf("%d sibling pairs fused", fused)
	if fused < 7 {
		t.Errorf("%d sibling 1x1 pairs fused, want at least 7 (one per ELAN block)", fused)
	}
}
