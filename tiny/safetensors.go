package tiny

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
)

// The native model file is a safetensors file
// (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length N, N bytes of JSON header
//
//	{"__metadata__": {string: string},
//	 TENSOR: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, ...}
//
// (padded with spaces so the data starts on an 8-byte boundary), then the
// tensors' raw little-endian bytes, back to back in header order. yolo7d
// stores the deploy-form weights under the ONNX initializer names
// (model.N.conv.weight/bias, model.77.m.K.weight/bias) and describes the
// model in the metadata (see WriteModelFile).

// Limits that keep a hostile file from driving large allocations.
const (
	stMaxHeader = 16 << 20 // header bytes
	stMaxDims   = 8        // dimensions per tensor
	stMaxFile   = 4 << 30  // bytes ReadSafetensorsFile accepts
	stAlign     = 8        // data section alignment the writer uses
)

// SafetensorsFormat is the "format" metadata value of a yolo7d model file,
// SafetensorsFormatVersion its "format_version".
const (
	SafetensorsFormat        = "yolo7d"
	SafetensorsFormatVersion = "1"
)

// STensor is one float32 tensor of a safetensors file.
type STensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// Safetensors is a parsed safetensors file: its tensors in header order and
// its string metadata.
type Safetensors struct {
	Tensors  []STensor
	Metadata map[string]string
}

// Tensor returns the tensor called name.
func (s *Safetensors) Tensor(name string) (*STensor, bool) {
	for i := range s.Tensors {
		if s.Tensors[i].Name == name {
			return &s.Tensors[i], true
		}
	}
	return nil, false
}

// stEntry is a tensor's header entry.
type stEntry struct {
	DType       string    `json:"dtype"`
	Shape       []int64   `json:"shape"`
	DataOffsets [2]uint64 `json:"data_offsets"`
}

// ReadSafetensorsFile reads and parses the safetensors file at path
// (ParseSafetensors). Errors name the file.
func ReadSafetensorsFile(path string) (*Safetensors, error) {
	b, err := readBounded(path, stMaxFile)
	if err != nil {
		return nil, fmt.Errorf("tiny: read safetensors: %w", err)
	}
	st, err := ParseSafetensors(b)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return st, nil
}

// readBounded reads a whole file of at most limit bytes.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed", path, fi.Size(), limit)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// ParseSafetensors parses a safetensors file held in b. Only F32 tensors
// are accepted; the data offsets must tile the data section exactly (no
// gaps, no overlaps, nothing after the last tensor) and every shape must
// match its byte count. When the metadata holds content_sha256 it must be
// the SHA-256 of the tensors' bytes in header order.
func ParseSafetensors(b []byte) (*Safetensors, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("tiny: safetensors: %d bytes, shorter than the 8-byte header length", len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	if n < 2 || n > stMaxHeader {
		return nil, fmt.Errorf("tiny: safetensors: header length %d outside 2..%d", n, stMaxHeader)
	}
	if n > uint64(len(b)-8) {
		return nil, fmt.Errorf("tiny: safetensors: header length %d but only %d bytes follow (truncated)", n, len(b)-8)
	}
	header, data := b[8:8+n], b[8+n:]
	names, entries, meta, err := parseSTHeader(header)
	if err != nil {
		return nil, err
	}
	order := make([]int, len(entries))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(i, j int) int {
		return cmpU64(entries[i].DataOffsets[0], entries[j].DataOffsets[0])
	})
	var next uint64
	for _, i := range order {
		e := &entries[i]
		begin, end := e.DataOffsets[0], e.DataOffsets[1]
		if begin != next {
			if begin < next {
				return nil, fmt.Errorf("tiny: safetensors: tensor %q at [%d,%d) overlaps the previous tensor (ends at %d)", names[i], begin, end, next)
			}
			return nil, fmt.Errorf("tiny: safetensors: gap in the data before tensor %q ([%d,%d), previous ends at %d)", names[i], begin, end, next)
		}
		if end < begin || end > uint64(len(data)) {
			return nil, fmt.Errorf("tiny: safetensors: tensor %q data_offsets [%d,%d) outside the %d data bytes", names[i], begin, end, len(data))
		}
		next = end
	}
	if next != uint64(len(data)) {
		return nil, fmt.Errorf("tiny: safetensors: %d data bytes after the last tensor", uint64(len(data))-next)
	}
	st := &Safetensors{Metadata: meta, Tensors: make([]STensor, len(entries))}
	h := sha256.New()
	for i, e := range entries {
		raw := data[e.DataOffsets[0]:e.DataOffsets[1]]
		h.Write(raw)
		shape := make([]int, len(e.Shape))
		for k, d := range e.Shape {
			shape[k] = int(d)
		}
		f := make([]float32, len(raw)/4)
		for k := range f {
			f[k] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*k:]))
		}
		st.Tensors[i] = STensor{Name: names[i], Shape: shape, Data: f}
	}
	if want, ok := meta["content_sha256"]; ok {
		if got := hex.EncodeToString(h.Sum(nil)); got != strings.ToLower(want) {
			return nil, fmt.Errorf("tiny: safetensors: content sha256 %s, metadata says %s (corrupt file)", got, want)
		}
	}
	return st, nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// parseSTHeader decodes the JSON header, keeping the tensors in header
// order and rejecting duplicate names, non-F32 dtypes and shapes that do
// not match their byte counts.
func parseSTHeader(header []byte) (names []string, entries []stEntry, meta map[string]string, err error) {
	dec := json.NewDecoder(bytes.NewReader(header))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, nil, errors.New("tiny: safetensors: header is not a JSON object")
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("tiny: safetensors: header: %w", err)
		}
		name, _ := tok.(string)
		if seen[name] {
			return nil, nil, nil, fmt.Errorf("tiny: safetensors: header: duplicate key %q", name)
		}
		seen[name] = true
		if name == "__metadata__" {
			if err := dec.Decode(&meta); err != nil {
				return nil, nil, nil, fmt.Errorf("tiny: safetensors: __metadata__ is not a string-to-string object: %w", err)
			}
			continue
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, nil, fmt.Errorf("tiny: safetensors: header: tensor %q: %w", name, err)
		}
		var e stEntry
		d := json.NewDecoder(bytes.NewReader(raw))
		d.DisallowUnknownFields()
		if err := d.Decode(&e); err != nil {
			return nil, nil, nil, fmt.Errorf("tiny: safetensors: tensor %q: bad header entry: %w", name, err)
		}
		if err := checkSTEntry(name, &e); err != nil {
			return nil, nil, nil, err
		}
		names = append(names, name)
		entries = append(entries, e)
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, nil, fmt.Errorf("tiny: safetensors: header: %w", err)
	}
	if rest := bytes.TrimRight(header[dec.InputOffset():], " "); len(rest) > 0 {
		return nil, nil, nil, errors.New("tiny: safetensors: header: bytes after the JSON object")
	}
	if meta == nil {
		meta = map[string]string{}
	}
	return names, entries, meta, nil
}

// checkSTEntry checks a tensor entry's dtype and that its shape covers
// exactly its bytes.
func checkSTEntry(name string, e *stEntry) error {
	if e.DType != "F32" {
		return fmt.Errorf("tiny: safetensors: tensor %q has dtype %q, only F32 is supported", name, e.DType)
	}
	if len(e.Shape) > stMaxDims {
		return fmt.Errorf("tiny: safetensors: tensor %q has %d dimensions (at most %d)", name, len(e.Shape), stMaxDims)
	}
	begin, end := e.DataOffsets[0], e.DataOffsets[1]
	if end < begin {
		return fmt.Errorf("tiny: safetensors: tensor %q data_offsets [%d,%d) end before begin", name, begin, end)
	}
	size := end - begin
	elems := uint64(1)
	for _, d := range e.Shape {
		if d < 0 {
			return fmt.Errorf("tiny: safetensors: tensor %q shape %v has a negative dimension", name, e.Shape)
		}
		if d != 0 && elems > size/uint64(d) {
			return fmt.Errorf("tiny: safetensors: tensor %q shape %v needs more than its %d bytes", name, e.Shape, size)
		}
		elems *= uint64(d)
	}
	if elems*4 != size {
		return fmt.Errorf("tiny: safetensors: tensor %q shape %v is %d float32 values (%d bytes), data_offsets hold %d bytes",
			name, e.Shape, elems, elems*4, size)
	}
	return nil
}

// WriteSafetensors writes tensors (in this order) and meta as a safetensors
// file. content_sha256 is added to the metadata (the SHA-256 of the tensor
// bytes in order); a caller's value for it is replaced.
func WriteSafetensors(w io.Writer, tensors []STensor, meta map[string]string) error {
	h := sha256.New()
	var buf [4]byte
	seen := map[string]bool{"__metadata__": true}
	for _, t := range tensors {
		if seen[t.Name] {
			return fmt.Errorf("tiny: write safetensors: duplicate or reserved tensor name %q", t.Name)
		}
		seen[t.Name] = true
		n := 1
		for _, d := range t.Shape {
			n *= d
		}
		if n != len(t.Data) {
			return fmt.Errorf("tiny: write safetensors: tensor %q shape %v holds %d values, has %d", t.Name, t.Shape, n, len(t.Data))
		}
		for _, v := range t.Data {
			binary.LittleEndian.PutUint32(buf[:], math.Float32bits(v))
			h.Write(buf[:])
		}
	}
	md := make(map[string]string, len(meta)+1)
	for k, v := range meta {
		md[k] = v
	}
	md["content_sha256"] = hex.EncodeToString(h.Sum(nil))
	var hdr bytes.Buffer
	mj, err := json.Marshal(md)
	if err != nil {
		return fmt.Errorf("tiny: write safetensors: %w", err)
	}
	hdr.WriteString(`{"__metadata__":`)
	hdr.Write(mj)
	var off uint64
	for _, t := range tensors {
		nj, err := json.Marshal(t.Name)
		if err != nil {
			return fmt.Errorf("tiny: write safetensors: %w", err)
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		sj, err := json.Marshal(shape)
		if err != nil {
			return fmt.Errorf("tiny: write safetensors: %w", err)
		}
		end := off + 4*uint64(len(t.Data))
		fmt.Fprintf(&hdr, `,%s:{"dtype":"F32","shape":%s,"data_offsets":[%d,%d]}`, nj, sj, off, end)
		off = end
	}
	hdr.WriteByte('}')
	for (8+hdr.Len())%stAlign != 0 {
		hdr.WriteByte(' ')
	}
	var lenb [8]byte
	binary.LittleEndian.PutUint64(lenb[:], uint64(hdr.Len()))
	if _, err := w.Write(lenb[:]); err != nil {
		return fmt.Errorf("tiny: write safetensors: %w", err)
	}
	if _, err := w.Write(hdr.Bytes()); err != nil {
		return fmt.Errorf("tiny: write safetensors: %w", err)
	}
	chunk := make([]byte, 0, 64<<10)
	for _, t := range tensors {
		for _, v := range t.Data {
			chunk = binary.LittleEndian.AppendUint32(chunk, math.Float32bits(v))
			if len(chunk) == cap(chunk) {
				if _, err := w.Write(chunk); err != nil {
					return fmt.Errorf("tiny: write safetensors: %w", err)
				}
				chunk = chunk[:0]
			}
		}
	}
	if _, err := w.Write(chunk); err != nil {
		return fmt.Errorf("tiny: write safetensors: %w", err)
	}
	return nil
}

// isSafetensors reports whether head (the first bytes of a file) starts
// like a safetensors file: a plausible header length and a JSON object.
func isSafetensors(head []byte) bool {
	if len(head) < 9 {
		return false
	}
	n := binary.LittleEndian.Uint64(head)
	return n >= 2 && n <= stMaxHeader && head[8] == '{'
}

// IsSafetensorsFile reports whether the file at path starts like a
// safetensors file (a plausible header length, then a JSON object). It
// reads only the first bytes; ReadModelFile does the real checks.
func IsSafetensorsFile(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	head := make([]byte, 9)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("%s: %w", path, err)
	}
	return isSafetensors(head[:n]), nil
}
