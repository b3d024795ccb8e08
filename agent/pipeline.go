package agent

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/yolo7d/yolo7d/capture"
	"github.com/yolo7d/yolo7d/infer"
	"github.com/yolo7d/yolo7d/publish"
)

// pipeline is one camera's path: capture -> detect -> publish. It owns two
// goroutines: the camera's capture loop and the detect loop.
type pipeline struct {
	cfg     capture.Config
	cam     *capture.Camera
	a       *Agent
	log     *slog.Logger
	cancel  context.CancelFunc
	done    chan struct{}
	snapReq chan chan snapshotResult
	capture atomic.Pointer[captureJob] // the running capture command, if any

	detectStart atomic.Int64 // unix nanos of the Detect call in flight, 0 when idle
	detected    atomic.Uint64
	errors      atomic.Uint64

	mu       sync.Mutex
	latency  [256]float64 // ms, ring
	nLatency int
	lastSnap time.Time
	rate     rateMeter
}

type snapshotResult struct {
	bytes int
	frame uint64
	err   error
}

func newPipeline(a *Agent, cfg capture.Config) (*pipeline, error) {
	p := &pipeline{
		cfg:     cfg,
		a:       a,
		log:     a.log.With("camera", cfg.Name),
		done:    make(chan struct{}),
		snapReq: make(chan chan snapshotResult, 4),
	}
	cam, err := capture.NewCamera(cfg, capture.Options{
		Logger:  p.log,
		OnState: p.publishState,
	})
	if err != nil {
		return nil, err
	}
	p.cam = cam
	return p, nil
}

// start runs the pipeline until stop is called or ctx ends.
func (p *pipeline) start(ctx context.Context) {
	ctx, p.cancel = context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := p.cam.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			p.log.Error("camera stopped", "err", err)
		}
	}()
	go func() {
		defer wg.Done()
		p.detectLoop(ctx)
	}()
	go func() {
		wg.Wait()
		close(p.done)
	}()
}

// stop ends the pipeline and waits for its goroutines.
func (p *pipeline) stop() {
	if p.cancel != nil {
		p.cancel()
	}
	<-p.done
}

func (p *pipeline) detectLoop(ctx context.Context) {
	var minGap time.Duration
	if p.cfg.MaxFPS > 0 {
		minGap = time.Duration(float64(time.Second) / p.cfg.MaxFPS)
	}
	defer func() {
		if job := p.capture.Swap(nil); job != nil {
			job.cancel(errors.New("the camera stopped before the capture finished"))
		}
	}()
	var last time.Time
	for {
		// Rate limit before taking a frame, so the frame taken is the newest.
		if wait := minGap - time.Since(last); minGap > 0 && wait > 0 && len(p.snapReq) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		f, err := p.cam.Next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				p.log.Error("camera ended", "err", err)
			}
			return
		}
		last = time.Now()
		p.process(ctx, f)
		f.Mat.Close()
	}
}

func (p *pipeline) process(ctx context.Context, f capture.Frame) {
	p.detectStart.Store(time.Now().UnixNano())
	res, info, err := p.a.engine.Detect(ctx, f.Mat)
	p.detectStart.Store(0)
	if err != nil {
		p.errors.Add(1)
		if ctx.Err() == nil {
			p.log.Warn("detect failed", "frame", f.Seq, "err", err)
		}
		return
	}
	p.detected.Add(1)
	p.mu.Lock()
	p.latency[p.nLatency%len(p.latency)] = res.InferMS
	p.nLatency++
	p.rate.add(time.Now())
	p.mu.Unlock()

	if err := p.a.pub.PublishDetections(detectionsPayload(p.a.deviceID, p.cfg.Name, f, res, info)); err != nil {
		p.log.Warn("publish detections", "err", err)
	}

	if job := p.capture.Load(); job != nil && job.offer(f.Mat, f.Seq, res) {
		p.capture.CompareAndSwap(job, nil)
	}

	var reply chan snapshotResult
	select {
	case reply = <-p.snapReq:
	default:
	}
	snapCfg := p.a.cfg.Snapshots
	auto := snapCfg.OnDetection && len(res.Detections) > 0 && time.Since(p.lastSnap) >= snapCfg.MinInterval
	if reply == nil && !auto {
		return
	}
	jpeg, err := infer.Annotate(f.Mat, res.Detections, snapCfg.Quality)
	if err == nil {
		p.lastSnap = time.Now()
		p.a.pub.PublishSnapshot(p.cfg.Name, f.Seq, jpeg)
	}
	if reply != nil {
		reply <- snapshotResult{bytes: len(jpeg), frame: f.Seq, err: err}
	}
}

// snapshot asks the detect loop to publish an annotated snapshot of the next
// frame and waits for it.
func (p *pipeline) snapshot(ctx context.Context) (snapshotResult, error) {
	reply := make(chan snapshotResult, 1)
	select {
	case p.snapReq <- reply:
	default:
		return snapshotResult{}, errors.New("too many snapshot requests in flight")
	}
	select {
	case r := <-reply:
		return r, r.err
	case <-ctx.Done():
		return snapshotResult{}, ctx.Err()
	}
}

func (p *pipeline) publishState(s capture.Stats) {
	p.a.pub.PublishState(&publish.StatePayload{
		Device:     p.a.deviceID,
		Camera:     p.cfg.Name,
		State:      string(s.State),
		FPS:        s.FPS,
		Frames:     s.Frames,
		Dropped:    s.Dropped,
		Reconnects: s.Reconnects,
		LastError:  s.LastError,
	})
}

// wedged reports whether a Detect call has been running for longer than d.
func (p *pipeline) wedged(d time.Duration) bool {
	start := p.detectStart.Load()
	return start != 0 && time.Since(time.Unix(0, start)) > d
}

// cameraStats is this pipeline's part of the stats payload.
func (p *pipeline) cameraStats() publish.CameraStats {
	cs := p.cam.Stats()
	p.mu.Lock()
	n := min(p.nLatency, len(p.latency))
	lat := append([]float64(nil), p.latency[:n]...)
	detectFPS := p.rate.perSecond(time.Now())
	p.mu.Unlock()
	sort.Float64s(lat)
	return publish.CameraStats{
		State:      string(cs.State),
		FPS:        cs.FPS,
		DetectFPS:  detectFPS,
		Dropped:    cs.Dropped,
		Reconnects: cs.Reconnects,
		LatencyMS: publish.Percentiles{
			P50: percentile(lat, 0.50),
			P90: percentile(lat, 0.90),
			P99: percentile(lat, 0.99),
		},
		Detected:     p.detected.Load(),
		DetectErrors: p.errors.Load(),
	}
}

// percentile of sorted values (nearest rank); 0 when empty.
func percentile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

// rateMeter counts events in the last 10 seconds.
type rateMeter struct {
	times [64]time.Time
	n     int
}

func (r *rateMeter) add(t time.Time) {
	r.times[r.n%len(r.times)] = t
	r.n++
}

func (r *rateMeter) perSecond(now time.Time) float64 {
	const window = 10 * time.Second
	count := 0
	oldest := now
	for i := 0; i < min(r.n, len(r.times)); i++ {
		t := r.times[i]
		if now.Sub(t) <= window {
			count++
			if t.Before(oldest) {
				oldest = t
			}
		}
	}
	if count < 2 {
		return float64(count) / window.Seconds()
	}
	span := now.Sub(oldest).Seconds()
	if span <= 0 {
		return 0
	}
	return float64(count-1) / span
}
