package tiny

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// NPY limits. A header longer than maxNPYHeader or an array with more than
// MaxNPYElems elements is refused before anything is allocated for it.
const (
	maxNPYHeader = 1 << 16
	// MaxNPYElems is the largest element count ReadNPY accepts (1 GiB of
	// float32).
	MaxNPYElems = 1 << 28
	npyChunk    = 1 << 16 // elements decoded per read
)

var npyMagic = []byte("\x93NUMPY")

// ReadNPYFile reads a little-endian float32 C-order .npy file. Besides the
// checks of ReadNPY, the element count must match the file size exactly.
func ReadNPYFile(path string) (shape []int, data []float32, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("npy %s: %w", path, err)
	}
	br := bufio.NewReaderSize(f, 1<<16)
	shape, n, hdr, err := readNPYHeader(br)
	if err != nil {
		return nil, nil, fmt.Errorf("npy %s: %w", path, err)
	}
	if want := int64(hdr) + 4*int64(n); st.Mode().IsRegular() && st.Size() != want {
		return nil, nil, fmt.Errorf("npy %s: header says %d elements (%d bytes with header), file has %d bytes", path, n, want, st.Size())
	}
	data, err = readNPYData(br, n)
	if err != nil {
		return nil, nil, fmt.Errorf("npy %s: %w", path, err)
	}
	return shape, data, nil
}

// ReadNPY reads a NumPy .npy stream (format 1.0, 2.0 or 3.0) holding a
// little-endian float32 array in C order. It returns the shape (empty for a
// 0-d array) and the elements. Truncated or malformed headers, other dtypes,
// Fortran order, and arrays larger than MaxNPYElems are errors; memory grows
// only as data actually arrives, so a lying header cannot force a large
// allocation.
func ReadNPY(r io.Reader) (shape []int, data []float32, err error) {
	shape, n, _, err := readNPYHeader(r)
	if err != nil {
		return nil, nil, fmt.Errorf("npy: %w", err)
	}
	data, err = readNPYData(r, n)
	if err != nil {
		return nil, nil, fmt.Errorf("npy: %w", err)
	}
	return shape, data, nil
}

// readNPYHeader parses the preamble and header dict. It returns the shape,
// the element count and the total header size in bytes.
func readNPYHeader(r io.Reader) (shape []int, n int, size int, err error) {
	var pre [8]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		return nil, 0, 0, fmt.Errorf("reading magic: %w", noEOF(err))
	}
	if string(pre[:6]) != string(npyMagic) {
		return nil, 0, 0, errors.New("not a .npy file (bad magic)")
	}
	var hlen int
	switch major := pre[6]; major {
	case 1:
		var b [2]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, 0, 0, fmt.Errorf("reading header length: %w", noEOF(err))
		}
		hlen = int(binary.LittleEndian.Uint16(b[:]))
		size = 10 + hlen
	case 2, 3:
		var b [4]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, 0, 0, fmt.Errorf("reading header length: %w", noEOF(err))
		}
		l := binary.LittleEndian.Uint32(b[:])
		if l > maxNPYHeader {
			return nil, 0, 0, fmt.Errorf("header length %d exceeds limit %d", l, maxNPYHeader)
		}
		hlen = int(l)
		size = 12 + hlen
	default:
		return nil, 0, 0, fmt.Errorf("unsupported format version %d.%d", major, pre[7])
	}
	hdr := make([]byte, hlen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, 0, 0, fmt.Errorf("reading %d-byte header: %w", hlen, noEOF(err))
	}
	shape, err = parseNPYDict(string(hdr))
	if err != nil {
		return nil, 0, 0, err
	}
	n = 1
	for _, d := range shape {
		if d != 0 && n > MaxNPYElems/d {
			return nil, 0, 0, fmt.Errorf("shape %v has more than %d elements", shape, MaxNPYElems)
		}
		n *= d
	}
	return shape, n, size, nil
}

// readNPYData reads n little-endian float32 values, growing the result as
// data arrives.
func readNPYData(r io.Reader, n int) ([]float32, error) {
	data := make([]float32, 0, min(n, npyChunk))
	buf := make([]byte, 4*min(n, npyChunk))
	for len(data) < n {
		k := min(n-len(data), npyChunk)
		b := buf[:4*k]
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, fmt.Errorf("data truncated: header says %d elements, got fewer than %d: %w", n, len(data)+k, noEOF(err))
		}
		for i := 0; i < k; i++ {
			data = append(data, math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
		}
	}
	return data, nil
}

// noEOF turns io.EOF into io.ErrUnexpectedEOF: inside a .npy any EOF means
// truncation.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseNPYDict parses the Python dict literal of a .npy header, e.g.
// {'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }.
func parseNPYDict(h string) ([]int, error) {
	s := strings.TrimRight(h, " \n\x00")
	if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") {
		return nil, fmt.Errorf("header %q is not a dict", npyClip(h))
	}
	s = strings.TrimSpace(s[1 : len(s)-1])
	var (
		shape                           []int
		haveDescr, haveOrder, haveShape bool
	)
	for s != "" {
		key, rest, err := npyString(s)
		if err != nil {
			return nil, fmt.Errorf("header %q: key: %w", npyClip(h), err)
		}
		rest = strings.TrimSpace(rest)
		if !strings.HasPrefix(rest, ":") {
			return nil, fmt.Errorf("header %q: missing ':' after %q", npyClip(h), key)
		}
		rest = strings.TrimSpace(rest[1:])
		switch key {
		case "descr":
			var d string
			d, rest, err = npyString(rest)
			if err != nil {
				return nil, fmt.Errorf("header %q: descr: %w", npyClip(h), err)
			}
			if d != "<f4" {
				return nil, fmt.Errorf("dtype %q not supported (want little-endian float32 '<f4')", d)
			}
			haveDescr = true
		case "fortran_order":
			switch {
			case strings.HasPrefix(rest, "False"):
				rest = rest[5:]
			case strings.HasPrefix(rest, "True"):
				return nil, errors.New("fortran_order True not supported (want C order)")
			default:
				return nil, fmt.Errorf("header %q: fortran_order is not a bool", npyClip(h))
			}
			haveOrder = true
		case "shape":
			shape, rest, err = npyShape(rest)
			if err != nil {
				return nil, fmt.Errorf("header %q: shape: %w", npyClip(h), err)
			}
			haveShape = true
		default:
			return nil, fmt.Errorf("header %q: unknown key %q", npyClip(h), key)
		}
		rest = strings.TrimSpace(rest)
		if strings.HasPrefix(rest, ",") {
			rest = strings.TrimSpace(rest[1:])
		} else if rest != "" {
			return nil, fmt.Errorf("header %q: expected ',' after %q", npyClip(h), key)
		}
		s = rest
	}
	if !haveDescr || !haveOrder || !haveShape {
		return nil, fmt.Errorf("header %q: needs descr, fortran_order and shape", npyClip(h))
	}
	return shape, nil
}

// npyString parses a quoted Python string (no escapes) at the start of s.
func npyString(s string) (string, string, error) {
	if s == "" || (s[0] != '\'' && s[0] != '"') {
		return "", "", errors.New("expected a quoted string")
	}
	end := strings.IndexByte(s[1:], s[0])
	if end < 0 {
		return "", "", errors.New("unterminated string")
	}
	return s[1 : 1+end], s[2+end:], nil
}

// npyShape parses a tuple of non-negative integers at the start of s.
func npyShape(s string) ([]int, string, error) {
	if !strings.HasPrefix(s, "(") {
		return nil, "", errors.New("expected '('")
	}
	end := strings.IndexByte(s, ')')
	if end < 0 {
		return nil, "", errors.New("unterminated tuple")
	}
	shape := []int{}
	for _, f := range strings.Split(s[1:end], ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		f = strings.TrimSuffix(f, "L") // Python 2 longs
		d, err := strconv.Atoi(f)
		if err != nil || d < 0 || d > MaxNPYElems {
			return nil, "", fmt.Errorf("bad dimension %q", f)
		}
		if len(shape) >= 32 {
			return nil, "", errors.New("more than 32 dimensions")
		}
		shape = append(shape, d)
	}
	return shape, s[end+1:], nil
}

func npyClip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// WriteNPY writes data as a little-endian float32 C-order .npy (format
// 1.0) with the given shape; the product of shape must equal len(data).
func WriteNPY(w io.Writer, shape []int, data []float32) error {
	n := 1
	dims := make([]string, len(shape))
	for i, d := range shape {
		if d < 0 {
			return fmt.Errorf("npy: negative dimension %d in shape %v", d, shape)
		}
		n *= d
		dims[i] = strconv.Itoa(d)
	}
	if n != len(data) {
		return fmt.Errorf("npy: shape %v holds %d elements, data has %d", shape, n, len(data))
	}
	t := strings.Join(dims, ", ")
	if len(shape) == 1 {
		t += ","
	}
	hdr := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", t)
	// Pad with spaces so that magic+version+len+header+'\n' is a multiple of 64.
	total := 10 + len(hdr) + 1
	hdr += strings.Repeat(" ", (64-total%64)%64) + "\n"
	if len(hdr) > math.MaxUint16 {
		return fmt.Errorf("npy: header too long for format 1.0 (%d bytes)", len(hdr))
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	bw.Write(npyMagic)
	bw.Write([]byte{1, 0, byte(len(hdr)), byte(len(hdr) >> 8)})
	bw.WriteString(hdr)
	var b [4]byte
	for _, v := range data {
		binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
		bw.Write(b[:])
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("npy: write: %w", err)
	}
	return nil
}
