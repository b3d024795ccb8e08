package tiny

// The shape checks every Device method runs at entry, exported for Device
// implementations outside this package (infer/cudnn), so that every
// device refuses the same bad calls with the same messages.

// CheckConv checks Device.Conv's arguments.
func CheckConv(y, x NCHW, c ConvArgs) error { return checkConv(y, x, c) }

// CheckPool checks Device.MaxPool's arguments.
func CheckPool(y, x NCHW, p PoolArgs) error { return checkPool(y, x, p) }

// CheckUpsample checks Device.Upsample2x's arguments.
func CheckUpsample(y, x NCHW) error { return checkUpsample(y, x) }

// CheckHead checks Device.Head's arguments.
func CheckHead(dst []float32, x NCHW, c ConvArgs, na int) error { return checkHead(dst, x, c, na) }

// CheckAffine checks Device.Affine's arguments.
func CheckAffine(y, x NCHW, a AffineArgs) error { return checkAffine(y, x, a) }

// CheckConvBackward checks TrainDevice.ConvBackward's arguments.
func CheckConvBackward(dx, dy, x NCHW, c ConvArgs, dW, dB []float32) error {
	return checkConvBackward(dx, dy, x, c, dW, dB)
}

// CheckActBackward checks TrainDevice.ActBackward's arguments.
func CheckActBackward(dy, y NCHW, act Act) error { return checkActBackward(dy, y, act) }

// CheckBNForward checks TrainDevice.BNForward's arguments.
func CheckBNForward(y, x NCHW, a BNArgs) error { return checkBNForward(y, x, a) }

// CheckBNBackward checks TrainDevice.BNBackward's arguments.
func CheckBNBackward(dx, dy, x NCHW, a BNArgs, dGamma, dBeta []float32) error {
	return checkBNBackward(dx, dy, x, a, dGamma, dBeta)
}

// CheckPoolBackward checks TrainDevice.MaxPoolBackward's arguments.
func CheckPoolBackward(dx, dy, x NCHW, p PoolArgs) error { return checkPoolBackward(dx, dy, x, p) }

// CheckUpsampleBackward checks TrainDevice.Upsample2xBackward's arguments.
func CheckUpsampleBackward(dx, dy NCHW) error { return checkUpsampleBackward(dx, dy) }

// Syncer is implemented by devices whose methods may return before their
// work is done (a GPU queue): Sync waits for it, after which the host may
// read and write the memory of Alloc. Plan.Forward calls it before the
// host touches device memory and before returning.
type Syncer interface {
	Sync() error
}

// A Batcher is a Device that can defer a run of ops and execute them
// together (the CPU: one cgo call and one hand-over to its worker threads
// per forward, instead of one per op, which on a machine with as many
// cores as workers let the Go scheduler's threads preempt the workers
// between ops). StartBatch opens a batch; while it is open, another
// StartBatch on the same Batcher waits for its End.
type Batcher interface {
	Device
	StartBatch() Batch
}

// A Batch is an open batch of a Batcher: a Device whose ops may run only
// at its Sync or End, in call order (an op it cannot defer first runs the
// ones before it). Every buffer passed to its ops must stay allocated,
// untouched by the host and, if Go memory, pinned (runtime.Pinner) until
// the next Sync or End. End syncs and closes the batch; the Batch must not
// be used after it.
type Batch interface {
	Device
	Syncer
	End() error
}

// syncDevice waits for dev's queued work when it is a Syncer.
func syncDevice(dev Device) error {
	if s, ok := dev.(Syncer); ok {
		return s.Sync()
	}
	return nil
}
