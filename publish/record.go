package publish

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
)

// An outbox record on disk, all integers little endian:
//
//	magic  uint32  recMagic
//	length uint32  length of the body
//	crc    uint32  CRC-32C (Castagnoli) of the body
//	body:
//	  index  uint64  record index, strictly increasing over the outbox's life
//	  qos    uint8   1 or 2
//	  flags  uint8   bit 0: retain
//	  tlen   uint16  length of the topic
//	  topic  [tlen]byte
//	  payload (the rest of the body)
//
// The magic has no printable bytes, so it is not found inside JSON payloads
// while resynchronising after a damaged record.
const (
	recMagic      = 0xE57D0BB7
	recHeaderSize = 12
	recFixedBody  = 8 + 1 + 1 + 2
	// maxRecordBody bounds a record's body: the MQTT limit on a packet is
	// 256 MiB. A larger length field is treated as damage.
	maxRecordBody = 256 << 20
	// maxIndex bounds record indexes (and the cursor): a larger one is
	// damage, never reached in practice, and keeps index+1 from overflowing.
	maxIndex = 1 << 62
)

var (
	crcTable = crc32.MakeTable(crc32.Castagnoli)

	errTruncated = errors.New("truncated record")
	errCorrupt   = errors.New("corrupt record")
)

// outRecord is one QoS 1 (or 2) message of the outbox.
type outRecord struct {
	index   uint64
	qos     byte
	retain  bool
	topic   string
	payload []byte
}

// recordSize returns the size on disk of a record with this topic and
// payload.
func recordSize(topic string, payload []byte) int64 {
	return int64(recHeaderSize + recFixedBody + len(topic) + len(payload))
}

// appendRecord appends the encoding of r to buf.
func appendRecord(buf []byte, r outRecord) []byte {
	bodyLen := recFixedBody + len(r.topic) + len(r.payload)
	start := len(buf)
	buf = binary.LittleEndian.AppendUint32(buf, recMagic)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(bodyLen))
	buf = binary.LittleEndian.AppendUint32(buf, 0) // crc, below
	body := len(buf)
	buf = binary.LittleEndian.AppendUint64(buf, r.index)
	var flags byte
	if r.retain {
		flags = 1
	}
	buf = append(buf, r.qos, flags)
	buf = binary.LittleEndian.AppendUint16(buf, uint16(len(r.topic)))
	buf = append(buf, r.topic...)
	buf = append(buf, r.payload...)
	binary.LittleEndian.PutUint32(buf[start+8:], crc32.Checksum(buf[body:], crcTable))
	return buf
}

// decodeRecord decodes the record at the start of data and returns it with
// its size on disk. The payload aliases data. It returns errTruncated when
// data ends inside the record and errCorrupt when the record is damaged.
func decodeRecord(data []byte) (outRecord, int, error) {
	if len(data) < recHeaderSize {
		return outRecord{}, 0, errTruncated
	}
	if binary.LittleEndian.Uint32(data) != recMagic {
		return outRecord{}, 0, errCorrupt
	}
	n := binary.LittleEndian.Uint32(data[4:])
	if n < recFixedBody || n > maxRecordBody {
		return outRecord{}, 0, errCorrupt
	}
	if uint64(len(data)) < recHeaderSize+uint64(n) {
		return outRecord{}, 0, errTruncated
	}
	body := data[recHeaderSize : recHeaderSize+int(n)]
	if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(data[8:]) {
		return outRecord{}, 0, errCorrupt
	}
	r := outRecord{
		index:  binary.LittleEndian.Uint64(body),
		qos:    body[8],
		retain: body[9]&1 != 0,
	}
	tlen := int(binary.LittleEndian.Uint16(body[10:]))
	if r.index >= maxIndex || (r.qos != 1 && r.qos != 2) || body[9] > 1 || tlen == 0 || recFixedBody+tlen > len(body) {
		return outRecord{}, 0, errCorrupt
	}
	r.topic = string(body[recFixedBody : recFixedBody+tlen])
	r.payload = body[recFixedBody+tlen:]
	return r, recHeaderSize + int(n), nil
}

// damage is a byte range of a segment that held no readable record.
type damage struct {
	from, to int
}

// scanRecords calls fn for every intact record in data, in order, with its
// offset and size. After a damaged or truncated record it resynchronises at
// the next offset where an intact record starts, so records after the damage
// are kept. It returns the damaged ranges.
func scanRecords(data []byte, fn func(off int, r outRecord, size int)) []damage {
	var bad []damage
	var magic [4]byte
	binary.LittleEndian.PutUint32(magic[:], recMagic)
	off := 0
	for off < len(data) {
		r, n, err := decodeRecord(data[off:])
		if err == nil {
			fn(off, r, n)
			off += n
			continue
		}
		next := -1
		for j := off + 1; j < len(data); {
			k := bytes.Index(data[j:], magic[:])
			if k < 0 {
				break
			}
			j += k
			if _, _, err := decodeRecord(data[j:]); err == nil {
				next = j
				break
			}
			j++
		}
		if next < 0 {
			bad = append(bad, damage{off, len(data)})
			break
		}
		bad = append(bad, damage{off, next})
		off = next
	}
	return bad
}

// writeFileAtomic replaces path with data through a temporary file and a
// rename, so readers see the old or the new content, never a mix, even if
// the process is killed. With durable set, the file and its directory are
// fsynced too, so the new content also survives a power loss.
func writeFileAtomic(path string, data []byte, durable bool) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	if durable {
		return syncDir(filepath.Dir(path))
	}
	return nil
}

// syncDir fsyncs a directory, making renames and creations in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// crc32Checksum is the CRC-32C of b.
func crc32Checksum(b []byte) uint32 { return crc32.Checksum(b, crcTable) }
