package capture

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"gocv.io/x/gocv"
)

// Source is one opened camera stream. A Camera calls its methods from a
// single goroutine: Open once, Read repeatedly, then Close (also after a
// failed Open). Read and Open may block inside OpenCV; the Camera abandons
// a call that takes too long, and Close is then called by the goroutine
// that made the call once it returns.
type Source interface {
	// Open connects to the camera.
	Open() error
	// Read decodes the next frame into dst. It returns io.EOF when the
	// source has ended for good (a file without looping); any other error
	// makes the Camera reconnect.
	Read(dst *gocv.Mat) error
	// Close releases the source. It is safe to call more than once.
	Close() error
	// String names the source for logs and errors, without credentials.
	String() string
}

// OpenSource returns the Source for u as configured by cfg. It does no I/O:
// the Source connects in Open. It is the default of Options.OpenSource.
func OpenSource(u URI, cfg Config) (Source, error) {
	switch u.Kind {
	case KindFile:
		return newFileSource(u.Path, cfg), nil
	case KindRTSP, KindHTTP:
		return newNetSource(u, cfg), nil
	case KindGStreamer:
		return newGstSource("gst://"+u.Target, EnsureAppsink(u.Target)), nil
	case KindCSI:
		p := CSIPipeline(u.Device, cfg.Width, cfg.Height, cfg.CaptureFPS)
		return newGstSource(fmt.Sprintf("csi://%d", u.Device), p), nil
	case KindV4L2:
		return newV4L2Source(u.Device, cfg), nil
	default:
		return nil, fmt.Errorf("capture: unsupported source kind %q", u.Kind)
	}
}

// errReadFailed is what OpenCV tells us when VideoCapture.Read returns
// false: nothing more specific is available through gocv.
var errReadFailed = errors.New("no frame (stream ended, failed or timed out)")

// capture wraps a gocv.VideoCapture for the Source implementations.
type capture struct {
	vc *gocv.VideoCapture
}

// set installs vc, closing it and returning an error if it did not open.
func (c *capture) set(vc *gocv.VideoCapture, err error) error {
	if err != nil || vc == nil || !vc.IsOpened() {
		if vc != nil {
			vc.Close()
		}
		if err == nil {
			err = errors.New("not opened")
		}
		return err
	}
	c.vc = vc
	return nil
}

func (c *capture) read(dst *gocv.Mat) error {
	if c.vc == nil {
		return errors.New("read before open")
	}
	if !c.vc.Read(dst) || dst.Empty() {
		return errReadFailed
	}
	return nil
}

func (c *capture) close() error {
	if c.vc == nil {
		return nil
	}
	err := c.vc.Close()
	c.vc = nil
	return err
}

// redact returns raw with any password in its userinfo replaced by
// "xxxxx", and raw unchanged when it has none.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if at := strings.LastIndex(raw, "@"); at >= 0 && strings.Contains(raw[:at], ":") {
			if scheme, _, ok := strings.Cut(raw[:at], "://"); ok {
				return scheme + "://xxxxx" + raw[at:] // unparsable: hide all userinfo
			}
		}
		return raw
	}
	if _, has := u.User.Password(); !has {
		return raw
	}
	return u.Redacted()
}
