package capture

import (
	"hash/fnv"
	"time"

	"gocv.io/x/gocv"
)

// hashGrid is the number of sample rows and columns contentHash reads.
const hashGrid = 32

// contentHash returns a cheap fingerprint of m's content: FNV-1a over its
// size, type and a hashGrid x hashGrid grid of sampled pixels (all
// channels). A frozen stream repeats byte-identical images, so exact
// sampled bytes suffice; sensor noise in a live but static scene keeps the
// hash changing, which is what we want.
func contentHash(m *gocv.Mat) uint64 {
	h := fnv.New64a()
	rows, cols, ch := m.Rows(), m.Cols(), m.Channels()
	var hdr [16]byte
	putU32(hdr[0:], uint32(rows))
	putU32(hdr[4:], uint32(cols))
	putU32(hdr[8:], uint32(ch))
	putU32(hdr[12:], uint32(m.Type()))
	h.Write(hdr[:])
	if rows == 0 || cols == 0 {
		return h.Sum64()
	}
	data, err := m.DataPtrUint8()
	if err != nil {
		b := m.ToBytes() // not continuous: copy once
		h.Write(b)
		return h.Sum64()
	}
	pix := len(data) / (rows * cols) // bytes per pixel
	buf := make([]byte, 0, hashGrid*hashGrid*pix)
	for i := range hashGrid {
		r := (2*i + 1) * rows / (2 * hashGrid)
		for j := range hashGrid {
			c := (2*j + 1) * cols / (2 * hashGrid)
			off := (r*cols + c) * pix
			buf = append(buf, data[off:off+pix]...)
		}
	}
	h.Write(buf)
	return h.Sum64()
}

func putU32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

// frozenDetector tracks how long a stream has repeated the same content.
// It lives across reconnects, so a stream that is still frozen after a
// reopen stays frozen.
type frozenDetector struct {
	timeout    time.Duration // <= 0 disables
	last       uint64
	seen       bool
	lastChange time.Time
}

// observe records a frame's hash at time t and reports whether the content
// has not changed for the timeout.
func (f *frozenDetector) observe(hash uint64, t time.Time) bool {
	if !f.seen || hash != f.last {
		f.seen, f.last, f.lastChange = true, hash, t
		return false
	}
	return f.timeout > 0 && t.Sub(f.lastChange) >= f.timeout
}

// since returns when the content last changed.
func (f *frozenDetector) since() time.Time { return f.lastChange }
