package finetune

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
)

// LoaderOptions configures a Loader. The zero value of a field means its
// default where one is given.
type LoaderOptions struct {
	ImgSize   int  // network input side in pixels, a multiple of 32 (required)
	BatchSize int  // images per batch (required)
	Augment   bool // training augmentation (mosaic, affine, HSV, flip); else letterbox only
	Shuffle   bool // a new order of the images every epoch, drawn from Seed
	DropLast  bool // drop a last, incomplete batch
	Hyp       Hyp  // augmentation hyper-parameters (used with Augment)
	Seed      uint64
	// Workers is how many goroutines decode and augment batches ahead of
	// the consumer (default 2). The batches do not depend on it.
	Workers int
	// Prefetch bounds how many batches are built ahead of the consumer
	// (default Workers).
	Prefetch int
	// Cache keeps decoded images, resized to fit ImgSize (nil: no cache).
	// Loaders may share one; entries are keyed by path and size.
	Cache *ImageCache
	// ValUpscale enlarges images smaller than ImgSize when not augmenting.
	// The official test.py does (its load_image resizes every image to
	// the size); the default letterboxes small images unscaled.
	ValUpscale bool
}

// ImageMeta describes one image of a batch.
type ImageMeta struct {
	Index        int    // index in Dataset.Samples (the first image of a mosaic)
	Path         string // image file
	OrigW, OrigH int    // original size in pixels
	// Letterbox maps network-input pixels back to original pixels
	// (LetterboxInfo.ToOriginal). It is exact for unaugmented images; for an
	// augmented one it is the placement before the random affine, and zero
	// for a mosaic.
	Letterbox LetterboxInfo
	Augmented bool
	Mosaic    bool
	Flipped   bool
}

// Batch is one batch of network inputs and targets.
type Batch struct {
	Epoch, Index int // epoch and batch number within it
	Size         int // image side S
	// Images holds N×3×S×S float32 RGB values in [0, 1], NCHW.
	Images []float32
	// Targets are the objects of all images, normalised to the S×S input,
	// with Target.Image the image's position in the batch.
	Targets []Target
	Meta    []ImageMeta // one per image
}

// N returns the number of images in the batch.
func (b *Batch) N() int { return len(b.Meta) }

// Loader assembles batches from a Dataset. A batch is a pure function of
// (options, seed, epoch, batch number): the image order is drawn from
// (seed, epoch) and every image's augmentation from (seed, epoch, dataset
// index), so a resumed run reproduces the same batches whatever the number
// of workers. A Loader is safe for concurrent use.
type Loader struct {
	ds   *Dataset
	opts LoaderOptions
	lut  [256]float32   // uint8 → float32 value/255
	free chan []float32 // image buffers given back by Release
}

// NewLoader checks the options and returns a loader over ds.
func NewLoader(ds *Dataset, opts LoaderOptions) (*Loader, error) {
	switch {
	case ds == nil || len(ds.Samples) == 0:
		return nil, errors.New("loader: empty dataset")
	case opts.ImgSize < 32 || opts.ImgSize%32 != 0 || opts.ImgSize > 4096:
		return nil, fmt.Errorf("loader: image size %d, want a multiple of 32 from 32 to 4096", opts.ImgSize)
	case opts.BatchSize < 1 || opts.BatchSize > 4096:
		return nil, fmt.Errorf("loader: batch size %d, want 1 to 4096", opts.BatchSize)
	case opts.Workers < 0 || opts.Workers > 64:
		return nil, fmt.Errorf("loader: %d workers, want 0 (default) to 64", opts.Workers)
	case opts.Prefetch < 0:
		return nil, fmt.Errorf("loader: prefetch %d, want >= 0", opts.Prefetch)
	}
	if opts.Augment {
		if err := checkAugmentHyp(opts.Hyp); err != nil {
			return nil, fmt.Errorf("loader: %w", err)
		}
	}
	if opts.Workers == 0 {
		opts.Workers = 2
	}
	if opts.Prefetch == 0 {
		opts.Prefetch = opts.Workers
	}
	l := &Loader{ds: ds, opts: opts, free: make(chan []float32, opts.Prefetch+1)}
	for i := range l.lut {
		l.lut[i] = float32(i) / 255
	}
	return l, nil
}

// NumBatches returns the number of batches per epoch.
func (l *Loader) NumBatches() int {
	n, b := len(l.ds.Samples), l.opts.BatchSize
	if l.opts.DropLast {
		return n / b
	}
	return (n + b - 1) / b
}

// Order returns the dataset indices of an epoch in batch order.
func (l *Loader) Order(epoch int) []int {
	n := len(l.ds.Samples)
	if !l.opts.Shuffle {
		order := make([]int, n)
		for i := range order {
			order[i] = i
		}
		return order
	}
	rng := rand.New(rand.NewPCG(l.opts.Seed, mix64(uint64(epoch)^0x53485546464c45))) // "SHUFFLE"
	return rng.Perm(n)
}

// sampleRand returns the random stream of one image in one epoch.
func (l *Loader) sampleRand(epoch, index int) *rand.Rand {
	return rand.New(rand.NewPCG(l.opts.Seed^0x6175676d656e74, mix64(uint64(epoch)<<32^uint64(uint32(index))))) // "augment"
}

// mix64 is the splitmix64 finaliser: distinct inputs give well spread,
// distinct seeds.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Batch builds batch i of an epoch synchronously.
func (l *Loader) Batch(ctx context.Context, epoch, i int) (*Batch, error) {
	if i < 0 || i >= l.NumBatches() {
		return nil, fmt.Errorf("loader: batch %d outside 0..%d", i, l.NumBatches()-1)
	}
	return l.build(ctx, epoch, l.Order(epoch), i)
}

// build assembles batch i of the epoch whose image order is order.
func (l *Loader) build(ctx context.Context, epoch int, order []int, i int) (*Batch, error) {
	bs, s := l.opts.BatchSize, l.opts.ImgSize
	idxs := order[i*bs : min((i+1)*bs, len(order))]
	plane := s * s
	b := &Batch{Epoch: epoch, Index: i, Size: s,
		Images: l.imageBuffer(len(idxs) * 3 * plane), Meta: make([]ImageMeta, len(idxs))}
	src := &datasetSource{ds: l.ds, size: s, upscale: l.opts.Augment || l.opts.ValUpscale, eval: !l.opts.Augment, cache: l.opts.Cache}
	for k, idx := range idxs {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		img, labels, meta, err := l.sample(src, epoch, idx)
		if err != nil {
			return nil, fmt.Errorf("epoch %d batch %d: %w", epoch, i, err)
		}
		b.Meta[k] = meta
		for _, lb := range labels {
			b.Targets = append(b.Targets, Target{Image: k, Class: lb.Class, X: lb.X, Y: lb.Y, W: lb.W, H: lb.H})
		}
		out := b.Images[k*3*plane : (k+1)*3*plane]
		r, g, bl := out[:plane], out[plane:2*plane], out[2*plane:]
		for p, q := 0, 0; p < plane; p, q = p+1, q+3 {
			r[p], g[p], bl[p] = l.lut[img.Pix[q]], l.lut[img.Pix[q+1]], l.lut[img.Pix[q+2]]
		}
	}
	return b, nil
}

// imageBuffer returns a buffer of n floats, reusing a released one when it
// fits. Every element is overwritten by build.
func (l *Loader) imageBuffer(n int) []float32 {
	select {
	case buf := <-l.free:
		if cap(buf) >= n {
			return buf[:n]
		}
	default:
	}
	return make([]float32, n)
}

// Release gives a batch's image buffer back for reuse by later batches,
// which saves allocating B×3×S×S floats per batch. The caller must not use
// b.Images afterwards. Calling it is optional.
func (l *Loader) Release(b *Batch) {
	if b == nil || b.Images == nil {
		return
	}
	select {
	case l.free <- b.Images:
	default:
	}
	b.Images = nil
}

// sample returns the S×S image of dataset index idx, its objects
// normalised to it, and its metadata.
func (l *Loader) sample(src *datasetSource, epoch, idx int) (*RGBImage, []BoxLabel, ImageMeta, error) {
	smp := &l.ds.Samples[idx]
	meta := ImageMeta{Index: idx, Path: smp.ImagePath, OrigW: smp.Width, OrigH: smp.Height, Augmented: l.opts.Augment}
	if l.opts.Augment {
		a, err := augmentSample(src, idx, l.opts.ImgSize, l.opts.Hyp, l.sampleRand(epoch, idx))
		if err != nil {
			return nil, nil, meta, err
		}
		meta.Mosaic, meta.Flipped = a.Mosaic, a.Flipped
		meta.Letterbox = a.Letterbox
		return a.Image, a.Labels, meta, nil
	}
	fit, err := src.loadFit(idx)
	if err != nil {
		return nil, nil, meta, err
	}
	img, padW, padH := padToSquare(fit, l.opts.ImgSize)
	meta.Letterbox = LetterboxInfo{
		RatioW: float64(fit.W) / float64(smp.Width), RatioH: float64(fit.H) / float64(smp.Height),
		PadW: padW, PadH: padH, W: fit.W, H: fit.H,
	}
	boxes := toPixBoxes(smp.Labels, fit.W, fit.H, float64(padW), float64(padH))
	return img, toBoxLabels(boxes, img.W, img.H), meta, nil
}

// datasetSource serves a Dataset's images, resized to fit, through the
// optional cache. eval shrinks by area instead of bilinearly.
type datasetSource struct {
	ds      *Dataset
	size    int
	upscale bool
	eval    bool
	cache   *ImageCache
}

func (d *datasetSource) count() int { return len(d.ds.Samples) }

func (d *datasetSource) labelsOf(i int) []BoxLabel { return d.ds.Samples[i].Labels }

func (d *datasetSource) origSize(i int) (int, int) {
	return d.ds.Samples[i].Width, d.ds.Samples[i].Height
}

func (d *datasetSource) loadFit(i int) (*RGBImage, error) {
	smp := &d.ds.Samples[i]
	key := smp.ImagePath + "\x00" + strconv.Itoa(d.size) + "\x00" + strconv.FormatBool(d.upscale) + strconv.FormatBool(d.eval)
	if m, ok := d.cache.Get(key); ok {
		return m, nil
	}
	m, err := LoadImage(smp.ImagePath)
	if err != nil {
		return nil, err
	}
	if m.W != smp.Width || m.H != smp.Height {
		return nil, fmt.Errorf("%s: decoded %dx%d pixels, header said %dx%d", smp.ImagePath, m.W, m.H, smp.Width, smp.Height)
	}
	if d.eval {
		m = resizeToFitEval(m, d.size, d.upscale)
	} else {
		m = ResizeToFit(m, d.size, d.upscale)
	}
	d.cache.Put(key, m)
	return m, nil
}

// EpochIter yields the batches of one epoch in order while a bounded pool
// of goroutines builds the next ones. Call Close when done (also after an
// early stop).
type EpochIter struct {
	ctx     context.Context
	cancel  context.CancelFunc
	results []chan batchResult
	tokens  chan struct{}
	next    int
	wg      sync.WaitGroup
}

type batchResult struct {
	b   *Batch
	err error
}

// Epoch starts building the batches of epoch in the background. Cancelling
// ctx stops the workers; Next then returns the context's error.
func (l *Loader) Epoch(ctx context.Context, epoch int) *EpochIter {
	ctx, cancel := context.WithCancel(ctx)
	n := l.NumBatches()
	order := l.Order(epoch)
	it := &EpochIter{ctx: ctx, cancel: cancel, results: make([]chan batchResult, n),
		tokens: make(chan struct{}, l.opts.Prefetch)}
	for i := range it.results {
		it.results[i] = make(chan batchResult, 1)
	}
	jobs := make(chan int)
	it.wg.Add(1)
	go func() { // dispatcher: at most Prefetch batches ahead of Next
		defer it.wg.Done()
		defer close(jobs)
		for i := range n {
			select {
			case it.tokens <- struct{}{}:
			case <-ctx.Done():
				return
			}
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	for range min(l.opts.Workers, max(n, 1)) {
		it.wg.Add(1)
		go func() {
			defer it.wg.Done()
			for i := range jobs {
				b, err := l.build(ctx, epoch, order, i)
				it.results[i] <- batchResult{b, err}
			}
		}()
	}
	return it
}

// Next returns the next batch, or io.EOF after the last one. A batch that
// failed (an unreadable image) returns its error and the iteration can go
// on with the next one.
func (it *EpochIter) Next() (*Batch, error) {
	if it.next >= len(it.results) {
		return nil, io.EOF
	}
	if err := it.ctx.Err(); err != nil {
		return nil, err
	}
	select {
	case r := <-it.results[it.next]:
		it.next++
		<-it.tokens
		return r.b, r.err
	case <-it.ctx.Done():
		return nil, it.ctx.Err()
	}
}

// Close stops the workers and waits for them.
func (it *EpochIter) Close() {
	it.cancel()
	it.wg.Wait()
}
