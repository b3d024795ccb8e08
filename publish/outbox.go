package publish

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// The outbox keeps every QoS 1 message on disk from the moment it is
// enqueued until the broker acknowledges it, so it survives a broker outage,
// an agent restart and a SIGKILL.
//
// Layout of the directory (StateDir/mqtt/outbox):
//
//	<first index, 20 digits>.seg  append-only segment files of records (record.go)
//	cursor                        the lowest record index still wanted, with a CRC
//
// Records are appended to the newest segment with one write(2) each, so a
// record is in the kernel when PublishJSON returns and survives the death of
// the process. Segments are fsynced by Sync, which the publisher calls every
// syncInterval and on Close: a power loss can lose at most the records
// enqueued in the last interval; a record torn by it fails its CRC. The
// cursor is replaced atomically (temporary file and rename) without fsync: a
// stale cursor only makes acknowledged records be sent again, never lost.
// Segments whose records are all below the saved cursor are deleted.
//
// On open, segments are read back; damaged or truncated records are logged
// and skipped (reading resumes at the next intact record) and the records at
// or above the cursor are sent again. New records always go to a new
// segment, never after possibly torn bytes.
//
// The live records are bounded by maxBytes; appending beyond it drops the
// oldest live records (counted by the caller). Only a small index entry per
// live record is kept in memory: payloads are read back from the segment
// files (the page cache, usually) when sent.
type outbox struct {
	dir      string
	maxBytes int64
	segSize  int64
	log      *slog.Logger

	mu          sync.Mutex
	closed      bool
	segs        []*segment // oldest first; the last one is active
	entries     []entry    // entries[head:] are live, ascending index
	head        int
	unacked     int   // live entries not acknowledged
	bytes       int64 // size on disk of the unacknowledged live entries
	nextIndex   uint64
	sendIdx     uint64 // the next record to send has the smallest index >= sendIdx
	savedCursor uint64
	broken      bool // the active segment had a failed write
	buf         []byte
}

// segment is one segment file.
type segment struct {
	first uint64 // from the file name
	last  uint64 // index of the last record in it (valid when n > 0)
	n     int
	path  string
	f     *os.File
	size  int64
	dirty bool // written since the last fsync
}

// entry locates one live record.
type entry struct {
	index uint64
	seg   *segment
	off   int64
	size  int64
	acked bool
}

// errOutboxClosed is returned by outbox methods after close.
var errOutboxClosed = errors.New("outbox closed")

const (
	segmentExt = ".seg"
	cursorFile = "cursor"
)

// openOutbox opens (creating if needed) the outbox in dir and recovers its
// records. Damage in the files is logged, not returned: only I/O errors that
// leave the outbox unusable are.
func openOutbox(dir string, maxBytes int64, log *slog.Logger) (*outbox, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("outbox: %w", err)
	}
	o := &outbox{
		dir:      dir,
		maxBytes: maxBytes,
		segSize:  min(max(maxBytes/8, 4<<10), 8<<20),
		log:      log,
	}
	if err := o.recover(); err != nil {
		o.closeFiles()
		return nil, err
	}
	if err := o.rotate(); err != nil {
		o.closeFiles()
		return nil, err
	}
	return o, nil
}

// recover reads the cursor and the segments.
func (o *outbox) recover() error {
	cursor := o.readCursor()
	o.savedCursor = cursor
	o.nextIndex = cursor
	names, err := os.ReadDir(o.dir)
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	var segs []*segment
	for _, de := range names {
		name := de.Name()
		if strings.HasSuffix(name, ".tmp") {
			os.Remove(filepath.Join(o.dir, name))
			continue
		}
		first, ok := strings.CutSuffix(name, segmentExt)
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(first, 10, 64)
		if err != nil {
			o.log.Warn("outbox: ignoring file with a bad segment name", "file", name)
			continue
		}
		segs = append(segs, &segment{first: n, path: filepath.Join(o.dir, name)})
	}
	sort.Slice(segs, func(i, j int) bool { return segs[i].first < segs[j].first })

	var last uint64
	var seen bool
	for _, s := range segs {
		data, err := os.ReadFile(s.path)
		if err != nil {
			o.log.Error("outbox: cannot read segment, its records are lost", "file", s.path, "err", err)
			continue
		}
		s.size = int64(len(data))
		var stale int
		bad := scanRecords(data, func(off int, r outRecord, size int) {
			if seen && r.index <= last {
				stale++
				return
			}
			seen, last = true, r.index
			if r.index < cursor {
				return
			}
			s.n++
			s.last = r.index
			o.entries = append(o.entries, entry{index: r.index, seg: s, off: int64(off), size: int64(size)})
			o.unacked++
			o.bytes += int64(size)
		})
		for _, d := range bad {
			o.log.Warn("outbox: skipping damaged or truncated records (power loss mid-write?)",
				"file", s.path, "from", d.from, "to", d.to, "bytes", d.to-d.from)
		}
		if stale > 0 {
			o.log.Warn("outbox: skipping records out of index order", "file", s.path, "records", stale)
		}
		if s.n == 0 {
			if err := os.Remove(s.path); err != nil {
				o.log.Warn("outbox: cannot remove spent segment", "file", s.path, "err", err)
			}
			continue
		}
		f, err := os.OpenFile(s.path, os.O_RDONLY, 0)
		if err != nil {
			return fmt.Errorf("outbox: %w", err)
		}
		s.f = f
		o.segs = append(o.segs, s)
	}
	if seen && last >= o.nextIndex {
		o.nextIndex = last + 1
	}
	if len(o.entries) > 0 {
		o.log.Info("outbox: recovered unacknowledged QoS 1 messages", "records", len(o.entries), "bytes", o.bytes)
	}
	// Respect the bound after recovery too (maxBytes may have shrunk).
	o.dropOver(0)
	return nil
}

// readCursor returns the saved cursor, or 0 (send everything found) when it
// is missing or damaged.
func (o *outbox) readCursor() uint64 {
	b, err := os.ReadFile(filepath.Join(o.dir, cursorFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil || len(b) != 12 || crc32Checksum(b[:8]) != binary.LittleEndian.Uint32(b[8:]) ||
		binary.LittleEndian.Uint64(b) >= maxIndex {
		o.log.Warn("outbox: cursor file damaged; resending every recovered record", "err", err)
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

// rotate starts a new active segment. Called with o.mu held (or before the
// outbox is shared).
func (o *outbox) rotate() error {
	if a := o.active(); a != nil {
		if a.n == 0 {
			// Nothing in it: reuse it rather than make a second file with
			// the same first index.
			if err := a.f.Truncate(0); err != nil {
				return fmt.Errorf("outbox: %w", err)
			}
			a.size, o.broken = 0, false
			return nil
		}
		if a.dirty {
			if err := a.f.Sync(); err != nil {
				o.log.Warn("outbox: fsync", "file", a.path, "err", err)
			}
			a.dirty = false
		}
	}
	s := &segment{first: o.nextIndex, path: filepath.Join(o.dir, fmt.Sprintf("%020d%s", o.nextIndex, segmentExt))}
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("outbox: new segment: %w", err)
	}
	s.f = f
	o.segs = append(o.segs, s)
	o.broken = false
	if err := syncDir(o.dir); err != nil {
		o.log.Warn("outbox: fsync directory", "dir", o.dir, "err", err)
	}
	return nil
}

func (o *outbox) active() *segment {
	if len(o.segs) == 0 {
		return nil
	}
	return o.segs[len(o.segs)-1]
}

// append stores one record and returns how many older records it dropped to
// stay within maxBytes.
func (o *outbox) append(topic string, qos byte, retain bool, payload []byte) (dropped int, err error) {
	size := recordSize(topic, payload)
	if size > o.maxBytes || size-recHeaderSize > maxRecordBody {
		return 0, fmt.Errorf("outbox: message of %d bytes exceeds the outbox bound of %d bytes", size, o.maxBytes)
	}
	if len(topic) == 0 || len(topic) > 65535 {
		return 0, fmt.Errorf("outbox: bad topic length %d", len(topic))
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return 0, errOutboxClosed
	}
	dropped = o.dropOver(size)
	a := o.active()
	if o.broken || (a.n > 0 && a.size+size > o.segSize) {
		if err := o.rotate(); err != nil {
			return dropped, err
		}
		a = o.active()
	}
	o.buf = appendRecord(o.buf[:0], outRecord{index: o.nextIndex, qos: qos, retain: retain, topic: topic, payload: payload})
	if n, err := a.f.WriteAt(o.buf, a.size); err != nil {
		if n > 0 {
			_ = a.f.Truncate(a.size)
		}
		o.broken = true
		return dropped, fmt.Errorf("outbox: write %s: %w", a.path, err)
	}
	o.entries = append(o.entries, entry{index: o.nextIndex, seg: a, off: a.size, size: size})
	a.size += size
	a.n++
	a.last = o.nextIndex
	a.dirty = true
	o.nextIndex++
	o.unacked++
	o.bytes += size
	return dropped, nil
}

// dropOver drops the oldest live records until extra more bytes fit within
// maxBytes, and returns how many unacknowledged records it dropped.
func (o *outbox) dropOver(extra int64) int {
	n := 0
	for o.bytes+extra > o.maxBytes && o.head < len(o.entries) {
		if !o.entries[o.head].acked {
			n++
		}
		o.popFront()
	}
	return n
}

// popFront removes the oldest live entry.
func (o *outbox) popFront() {
	e := &o.entries[o.head]
	if !e.acked {
		o.unacked--
		o.bytes -= e.size
	}
	*e = entry{}
	o.head++
	if o.head == len(o.entries) {
		o.entries, o.head = o.entries[:0], 0
	} else if o.head >= 1024 && o.head*2 >= len(o.entries) {
		n := copy(o.entries, o.entries[o.head:])
		clear(o.entries[n:])
		o.entries, o.head = o.entries[:n], 0
	}
}

// find returns the position in o.entries of the live entry with index i.
func (o *outbox) find(i uint64) (int, bool) {
	live := o.entries[o.head:]
	k := sort.Search(len(live), func(k int) bool { return live[k].index >= i })
	if k < len(live) && live[k].index == i {
		return o.head + k, true
	}
	return o.head + k, false
}

// next returns the next record to send (in index order, skipping
// acknowledged ones) and moves past it. ok is false when none is left.
func (o *outbox) next() (r outRecord, ok bool, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return outRecord{}, false, errOutboxClosed
	}
	for {
		k, _ := o.find(o.sendIdx)
		for k < len(o.entries) && o.entries[k].acked {
			k++
		}
		if k == len(o.entries) {
			return outRecord{}, false, nil
		}
		e := o.entries[k]
		o.sendIdx = e.index + 1
		buf := make([]byte, e.size)
		if _, err := e.seg.f.ReadAt(buf, e.off); err != nil {
			o.log.Error("outbox: cannot read back record, dropping it", "file", e.seg.path, "offset", e.off, "err", err)
			o.markAcked(k)
			continue
		}
		r, _, err := decodeRecord(buf)
		if err != nil || r.index != e.index {
			o.log.Error("outbox: record changed on disk, dropping it", "file", e.seg.path, "offset", e.off, "err", err)
			o.markAcked(k)
			continue
		}
		return r, true, nil
	}
}

// hasUnsent reports whether next would return a record.
func (o *outbox) hasUnsent() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, _ := o.find(o.sendIdx); k < len(o.entries); k++ {
		if !o.entries[k].acked {
			return true
		}
	}
	return false
}

// ack marks the record with this index acknowledged by the broker. It
// reports false when the record is no longer live (dropped, or acknowledged
// already).
func (o *outbox) ack(index uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	k, ok := o.find(index)
	if !ok || o.entries[k].acked {
		return false
	}
	o.markAcked(k)
	return true
}

func (o *outbox) markAcked(k int) {
	e := &o.entries[k]
	e.acked = true
	o.unacked--
	o.bytes -= e.size
	for o.head < len(o.entries) && o.entries[o.head].acked {
		o.popFront()
	}
}

// rewind makes next start again from the oldest unacknowledged record (the
// in-flight ones were lost with the connection, or timed out).
func (o *outbox) rewind() {
	o.mu.Lock()
	o.sendIdx = 0
	o.mu.Unlock()
}

// counts returns the number and the size on disk of the unacknowledged
// records.
func (o *outbox) counts() (records int, bytes int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.unacked, o.bytes
}

// cursorLocked is the lowest index still wanted.
func (o *outbox) cursorLocked() uint64 {
	if o.head < len(o.entries) {
		return o.entries[o.head].index
	}
	return o.nextIndex
}

// sync fsyncs the active segment if it was written, saves the cursor if it
// moved, and deletes the segments below it.
func (o *outbox) sync() error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return errOutboxClosed
	}
	var f *os.File
	if a := o.active(); a != nil && a.dirty {
		f, a.dirty = a.f, false
	}
	cursor := o.cursorLocked()
	o.mu.Unlock()

	var err error
	if f != nil {
		// Outside the lock: an fsync can take long on an SD card, and
		// appends may continue meanwhile (the active segment is never
		// closed while the outbox is open).
		if serr := f.Sync(); serr != nil {
			err = fmt.Errorf("outbox: fsync: %w", serr)
		}
	}
	if cerr := o.saveCursor(cursor); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// saveCursor writes the cursor if it moved and deletes spent segments.
func (o *outbox) saveCursor(cursor uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed || cursor == o.savedCursor {
		return nil
	}
	var b [12]byte
	binary.LittleEndian.PutUint64(b[:], cursor)
	binary.LittleEndian.PutUint32(b[8:], crc32Checksum(b[:8]))
	if err := writeFileAtomic(filepath.Join(o.dir, cursorFile), b[:], false); err != nil {
		return fmt.Errorf("outbox: save cursor: %w", err)
	}
	o.savedCursor = cursor
	keep := o.segs[:0]
	for i, s := range o.segs {
		if i == len(o.segs)-1 || (s.n > 0 && s.last >= cursor) {
			keep = append(keep, s)
			continue
		}
		s.f.Close()
		if err := os.Remove(s.path); err != nil {
			o.log.Warn("outbox: cannot remove spent segment", "file", s.path, "err", err)
		}
	}
	clear(o.segs[len(keep):])
	o.segs = keep
	return nil
}

// close fsyncs, saves the cursor and closes the files.
func (o *outbox) close() error {
	err := o.sync()
	if errors.Is(err, errOutboxClosed) {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed = true
	o.closeFiles()
	return err
}

func (o *outbox) closeFiles() {
	for _, s := range o.segs {
		if s.f != nil {
			s.f.Close()
		}
	}
}
