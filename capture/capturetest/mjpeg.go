// Package capturetest provides test doubles for package capture: a fake
// MJPEG-over-HTTP IP camera whose faults (down, stalled, frozen) are under
// the test's control, and helpers that make test videos with ffmpeg.
//
// It is meant for tests of capture and of the agent's end-to-end pipeline:
//
//	srv, err := capturetest.NewMJPEGServer(capturetest.MJPEGOptions{FPS: 30})
//	...
//	defer srv.Close()
//	cfg := capture.Config{Name: "cam", URI: srv.URL(), StallTimeout: 2 * time.Second}
//	srv.SetMode(capturetest.Down)   // the camera disappears
//	srv.SetMode(capturetest.Serving) // and comes back on the same port
package capturetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"gocv.io/x/gocv"
)

// Mode is the behaviour of an MJPEGServer.
type Mode int

// Server modes.
const (
	// Serving streams a new JPEG per frame, each with different content.
	Serving Mode = iota
	// Down closes the listener and cuts every connection; connecting is
	// refused until the mode changes.
	Down
	// Stalled keeps sockets open (and accepts new ones) but sends nothing.
	Stalled
	// Frozen keeps streaming at the frame rate but repeats one JPEG.
	Frozen
)

func (m Mode) String() string {
	switch m {
	case Serving:
		return "serving"
	case Down:
		return "down"
	case Stalled:
		return "stalled"
	case Frozen:
		return "frozen"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// MJPEGOptions configure an MJPEGServer. Zero values take the defaults.
type MJPEGOptions struct {
	Width, Height int     // image size; default 320x240
	FPS           float64 // frames per second; default 25
	Path          string  // URL path; default "/cam.mjpg"
}

// boundary separates the parts of the multipart/x-mixed-replace stream.
const boundary = "frame"

// MJPEGServer is a fake IP camera serving multipart/x-mixed-replace MJPEG
// on a loopback port. Its methods are safe for concurrent use.
type MJPEGServer struct {
	opts MJPEGOptions
	addr string

	mu     sync.Mutex
	mode   Mode
	srv    *http.Server // nil while down or closed
	closed bool
	last   []byte // the last JPEG sent, repeated when frozen

	frame atomic.Uint64 // content counter
	sent  atomic.Uint64
}

// NewMJPEGServer starts a fake camera on a free loopback port, serving.
func NewMJPEGServer(opts MJPEGOptions) (*MJPEGServer, error) {
	if opts.Width <= 0 {
		opts.Width = 320
	}
	if opts.Height <= 0 {
		opts.Height = 240
	}
	if opts.FPS <= 0 {
		opts.FPS = 25
	}
	if opts.Path == "" {
		opts.Path = "/cam.mjpg"
	}
	s := &MJPEGServer{opts: opts}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fake MJPEG camera: %w", err)
	}
	s.addr = ln.Addr().String()
	s.serve(ln)
	return s, nil
}

// URL returns the stream's URL, e.g. http://127.0.0.1:40123/cam.mjpg.
func (s *MJPEGServer) URL() string { return "http://" + s.addr + s.opts.Path }

// Sent returns how many JPEG parts have been written to clients.
func (s *MJPEGServer) Sent() uint64 { return s.sent.Load() }

// Mode returns the current mode.
func (s *MJPEGServer) Mode() Mode {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mode
}

// SetMode switches the server's behaviour. Leaving Down listens again on
// the same port.
func (s *MJPEGServer) SetMode(m Mode) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("fake MJPEG camera: closed")
	}
	switch {
	case m == Down && s.srv != nil:
		s.srv.Close() // closes the listener and every connection
		s.srv = nil
	case m != Down && s.srv == nil:
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			return fmt.Errorf("fake MJPEG camera: listen again: %w", err)
		}
		s.serveLocked(ln)
	}
	s.mode = m
	return nil
}

// Close shuts the server down for good.
func (s *MJPEGServer) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.srv != nil {
		err := s.srv.Close()
		s.srv = nil
		return err
	}
	return nil
}

func (s *MJPEGServer) serve(ln net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.serveLocked(ln)
}

func (s *MJPEGServer) serveLocked(ln net.Listener) {
	mux := http.NewServeMux()
	mux.HandleFunc(s.opts.Path, s.handle)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	s.srv = srv
	go srv.Serve(ln)
}

func (s *MJPEGServer) handle(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	tick := time.NewTicker(time.Duration(float64(time.Second) / s.opts.FPS))
	defer tick.Stop()
	rc := http.NewResponseController(w)
	headerSent := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		jpeg, ok := s.nextJPEG()
		if !ok {
			continue // stalled
		}
		if !headerSent {
			w.Header().Set("Content-Type", "multipart/x-mixed-replace; boundary="+boundary)
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
			headerSent = true
		}
		if err := writePart(ctx, w, jpeg); err != nil {
			return
		}
		if err := rc.Flush(); err != nil {
			return
		}
		s.sent.Add(1)
	}
}

func writePart(ctx context.Context, w http.ResponseWriter, jpeg []byte) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n", boundary, len(jpeg))
	b.Write(jpeg)
	b.WriteString("\r\n")
	if ctx.Err() != nil {
		return ctx.Err()
	}
	_, err := w.Write(b.Bytes())
	return err
}

// nextJPEG returns the JPEG to send for this tick, or false when stalled.
func (s *MJPEGServer) nextJPEG() ([]byte, bool) {
	s.mu.Lock()
	mode, last := s.mode, s.last
	s.mu.Unlock()
	switch mode {
	case Stalled, Down:
		return nil, false
	case Frozen:
		if last != nil {
			return last, true
		}
	}
	jpeg, err := MakeJPEG(s.opts.Width, s.opts.Height, s.frame.Add(1))
	if err != nil {
		return nil, false
	}
	s.mu.Lock()
	s.last = jpeg
	s.mu.Unlock()
	return jpeg, true
}

// MakeJPEG encodes a width x height test image whose content depends on n:
// a background shade, a moving block and the number itself.
func MakeJPEG(width, height int, n uint64) ([]byte, error) {
	img := MakeImage(width, height, n)
	defer img.Close()
	buf, err := gocv.IMEncode(gocv.JPEGFileExt, img)
	if err != nil {
		return nil, fmt.Errorf("encode test JPEG: %w", err)
	}
	defer buf.Close()
	return bytes.Clone(buf.GetBytes()), nil
}

// MakeImage returns a BGR test image whose content depends on n. The
// caller closes it.
func MakeImage(width, height int, n uint64) gocv.Mat {
	shade := float64(40 + n%160)
	img := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(shade, 255-shade, 128, 0), height, width, gocv.MatTypeCV8UC3)
	side := max(min(width, height)/4, 4)
	x := int(n*7) % max(width-side, 1)
	y := int(n*3) % max(height-side, 1)
	gocv.Rectangle(&img, image.Rect(x, y, x+side, y+side), color.RGBA{R: 255, G: 255, B: 255}, -1)
	gocv.PutText(&img, fmt.Sprint(n), image.Pt(8, height-10), gocv.FontHersheySimplex, 1, color.RGBA{R: 0, G: 0, B: 0}, 2)
	return img
}
