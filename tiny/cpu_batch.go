package tiny

import (
	"errors"
	"sync"
	"unsafe"
)

// Batches on the CPU (Batcher). A batch is a copy of the device whose q
// names a C queue (pool.h): its C-pool ops (the packed and Winograd convs,
// max-pool, upsample, the detect head) append their loop and a copy of its
// arguments there instead of running; Sync and End run the queue in one
// cgo call. Ops with Go loop bodies (the OpenBLAS paths, Affine) run the
// queue first and then themselves. The copy shares the device's pools and
// mutex, so ops of the device itself, from other goroutines, interleave
// safely with a batch's runs.

// errBatchMemory is a C-pool op's error when its batch's queue could not
// grow.
var errBatchMemory = errors.New("cpu batch: out of memory for the op queue")

// cpuBatches is a CPU's batch state, shared by the device and its batch
// copy.
type cpuBatches struct {
	mu     sync.Mutex // held from StartBatch to End
	q      unsafe.Pointer
	batch  cpuBatch // the open batch (reused: a batch allocates nothing)
	closed bool
}

// close frees the queue (Close; no batch may be open).
func (b *cpuBatches) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.q != nil {
		freeQueue(b.q)
		b.q = nil
	}
	b.closed = true
}

// cpuBatch is an open batch of a CPU: the Device methods of a copy of it
// with q set.
type cpuBatch struct {
	d CPU
}

// StartBatch implements Batcher. On a closed device the batch runs every
// op at once.
func (d *CPU) StartBatch() Batch {
	bs := d.batches
	bs.mu.Lock()
	if bs.q == nil && !bs.closed {
		bs.q = newQueue()
	}
	b := &bs.batch
	b.d = *d
	b.d.q = bs.q
	return b
}

func (b *cpuBatch) Alloc(n int) ([]float32, error)                { return b.d.Alloc(n) }
func (b *cpuBatch) ConvScratch(y, x NCHW, c ConvArgs) int         { return b.d.ConvScratch(y, x, c) }
func (b *cpuBatch) PoolScratch(y, x NCHW, p PoolArgs) int         { return b.d.PoolScratch(y, x, p) }
func (b *cpuBatch) Conv(y, x NCHW, c ConvArgs, s []float32) error { return b.d.Conv(y, x, c, s) }
func (b *cpuBatch) MaxPool(y, x NCHW, p PoolArgs, s []float32) error {
	return b.d.MaxPool(y, x, p, s)
}
func (b *cpuBatch) Upsample2x(y, x NCHW) error { return b.d.Upsample2x(y, x) }
func (b *cpuBatch) Head(dst []float32, x NCHW, c ConvArgs, na int) error {
	return b.d.Head(dst, x, c, na)
}
func (b *cpuBatch) Affine(y, x NCHW, a AffineArgs) error { return b.d.Affine(y, x, a) }

// Sync implements Syncer: the queued ops run, and are done on return.
func (b *cpuBatch) Sync() error {
	b.d.flush()
	return nil
}

// End implements Batch.
func (b *cpuBatch) End() error {
	b.d.flush()
	bs := b.d.batches
	b.d = CPU{}
	bs.mu.Unlock()
	return nil
}

// flush runs d's queued ops (on a batch's copy; nothing otherwise).
func (d *CPU) flush() {
	if d.q == nil {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.runQueue(d.q)
}
