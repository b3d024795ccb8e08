package capture

import (
	"sync"
	"time"

	"gocv.io/x/gocv"
)

// event is what a reader goroutine reports to its supervisor: the result
// of Open (opened), a frame, or the error that ended the reader.
type event struct {
	opened bool
	err    error
	mat    gocv.Mat // a frame, owned by the receiver; valid when !opened && err == nil
	hash   uint64
	time   time.Time
}

// reader owns one Source and everything OpenCV writes into: it opens the
// source, reads frames into fresh Mats and hands them to the supervisor.
// The supervisor never touches the Source or a Mat being read; to give up
// on a reader (stopped, stalled, or an open that takes too long) it closes
// quit. A reader stuck inside OpenCV is thereby abandoned: when the call
// finally returns, the reader sees quit, closes its Mat and Source itself,
// and exits.
type reader struct {
	src    Source
	events chan event
	quit   chan struct{}
	once   sync.Once
}

// startReader runs a reader for src in a new goroutine, tracked by wg.
func startReader(src Source, wg *sync.WaitGroup) *reader {
	r := &reader{src: src, events: make(chan event), quit: make(chan struct{})}
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.run()
	}()
	return r
}

// release tells the reader that nobody listens any more. It does not wait.
func (r *reader) release() { r.once.Do(func() { close(r.quit) }) }

func (r *reader) run() {
	defer r.src.Close()
	err := r.src.Open()
	if !r.send(event{opened: true, err: err}) || err != nil {
		return
	}
	for {
		select {
		case <-r.quit:
			return
		default:
		}
		m := gocv.NewMat()
		if err := r.src.Read(&m); err != nil {
			m.Close()
			r.send(event{err: err})
			return
		}
		ev := event{mat: m, hash: contentHash(&m), time: time.Now()}
		if !r.send(ev) {
			m.Close()
			return
		}
	}
}

// send delivers ev unless the reader has been released.
func (r *reader) send(ev event) bool {
	select {
	case r.events <- ev:
		return true
	case <-r.quit:
		return false
	}
}
