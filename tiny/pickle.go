package tiny

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
)

// A minimal unpickler for what torch.save writes (pickle protocol 2, plus
// the few protocol 3-5 opcodes newer writers may use). It builds a tree of
// plain values and never executes anything: a class or function named by
// GLOBAL is only recorded (PyGlobal), and calling it (REDUCE, NEWOBJ) makes
// a PyObject holding the name and the arguments. The exceptions are the few
// callables whose meaning is data: collections.OrderedDict (a PyDict),
// torch._utils._rebuild_tensor_v2 and _rebuild_parameter (a PyTensor), and
// persistent ids ('storage', <torch XStorage>, key, location, numel) (a
// PyStorage).
//
// Values: nil (None), bool, int64, float64, string, []byte, PyTuple,
// *PyList, *PyDict, PyGlobal, *PyObject, *PyStorage, *PyTensor.

// Unpickler limits. Every allocation is bounded by the input size or by
// one of these.
const (
	maxPickleBytes  = 1 << 28 // data.pkl size
	maxPickleMemo   = 1 << 22 // memo entries
	maxPickleStack  = 1 << 22 // values on the stack
	maxPickleMarks  = 1 << 12 // nesting depth of MARK
	maxPickleLine   = 256     // GLOBAL module / name line
	maxTensorDims   = 8
	maxPickleLong1  = 8 // LONG1 bytes (int64)
	maxStorageElems = 1 << 28
)

// PyTuple is a Python tuple.
type PyTuple []any

// PyList is a Python list (a pointer, since the memo shares it).
type PyList struct{ Items []any }

// PyDict is a Python dict or OrderedDict, in insertion order.
type PyDict struct {
	Keys, Values []any
	index        map[string]int // position of each string key
}

// Len is the number of entries.
func (d *PyDict) Len() int { return len(d.Keys) }

// Get returns the value of the string key k.
func (d *PyDict) Get(k string) (any, bool) {
	i, ok := d.index[k]
	if !ok {
		return nil, false
	}
	return d.Values[i], true
}

// set inserts or replaces key k (only str, int and bool keys are accepted;
// a repeated non-string key is appended again, which is harmless here).
func (d *PyDict) set(k, v any) error {
	switch k.(type) {
	case string, int64, bool, nil, float64:
	default:
		return fmt.Errorf("dict key of type %T", k)
	}
	if s, ok := k.(string); ok {
		if d.index == nil {
			d.index = make(map[string]int)
		}
		if i, ok := d.index[s]; ok {
			d.Values[i] = v
			return nil
		}
		d.index[s] = len(d.Keys)
	}
	d.Keys = append(d.Keys, k)
	d.Values = append(d.Values, v)
	return nil
}

// PyGlobal is a class or function named by a GLOBAL opcode.
type PyGlobal struct{ Module, Name string }

// String returns "module.name".
func (g PyGlobal) String() string { return g.Module + "." + g.Name }

// PyObject is an instance of a class the unpickler does not know: the
// class, the constructor arguments (REDUCE, NEWOBJ) and the state set by
// BUILD (for a torch module, a *PyDict of its attributes).
type PyObject struct {
	Class PyGlobal
	Args  PyTuple
	State any
}

// StateDict returns the object's state as a dict, or nil.
func (o *PyObject) StateDict() *PyDict {
	d, _ := o.State.(*PyDict)
	return d
}

// Unpickle decodes a pickle (protocol 0-5 framing, the opcode subset torch
// writes) into a value tree without executing anything. Truncated,
// malformed or oversized input is an error, never a panic.
func Unpickle(b []byte) (any, error) {
	if len(b) > maxPickleBytes {
		return nil, fmt.Errorf("tiny: unpickle: %d bytes, limit %d", len(b), maxPickleBytes)
	}
	u := unpickler{b: b, memo: make(map[uint32]any)}
	v, err := u.run()
	if err != nil {
		return nil, fmt.Errorf("tiny: unpickle: at byte %d: %w", u.pos, err)
	}
	return v, nil
}

// unpickler is the pickle machine. Its helpers record the first error in
// err and return zero values after it, so run checks once per opcode.
type unpickler struct {
	b     []byte
	pos   int
	stack []any
	marks []int // stack lengths at each MARK
	memo  map[uint32]any
	err   error
}

func (u *unpickler) fail(format string, args ...any) {
	if u.err == nil {
		u.err = fmt.Errorf(format, args...)
	}
}

func (u *unpickler) take(n int) []byte {
	if u.err != nil {
		return nil
	}
	if n < 0 || n > len(u.b)-u.pos {
		u.fail("truncated: need %d bytes, %d left", n, len(u.b)-u.pos)
		return nil
	}
	s := u.b[u.pos : u.pos+n]
	u.pos += n
	return s
}

func (u *unpickler) u8() int {
	if s := u.take(1); s != nil {
		return int(s[0])
	}
	return 0
}

func (u *unpickler) u32() uint32 {
	if s := u.take(4); s != nil {
		return binary.LittleEndian.Uint32(s)
	}
	return 0
}

// line reads a newline-terminated GLOBAL argument.
func (u *unpickler) line() string {
	rest := u.b[u.pos:]
	if len(rest) > maxPickleLine+1 {
		rest = rest[:maxPickleLine+1]
	}
	i := bytes.IndexByte(rest, '\n')
	if i < 0 {
		u.fail("GLOBAL line without newline in %d bytes", maxPickleLine)
		return ""
	}
	u.pos += i + 1
	return string(rest[:i])
}

func (u *unpickler) push(v any) {
	if u.err == nil && len(u.stack) >= maxPickleStack {
		u.fail("stack deeper than %d", maxPickleStack)
	}
	if u.err == nil {
		u.stack = append(u.stack, v)
	}
}

// avail is the number of values above the last MARK.
func (u *unpickler) avail() int {
	if len(u.marks) > 0 {
		return len(u.stack) - u.marks[len(u.marks)-1]
	}
	return len(u.stack)
}

func (u *unpickler) pop() any {
	if u.err != nil {
		return nil
	}
	if u.avail() < 1 {
		u.fail("pop from an empty stack (or past a MARK)")
		return nil
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	return v
}

func (u *unpickler) top() any {
	if u.err != nil {
		return nil
	}
	if u.avail() < 1 {
		u.fail("empty stack (or a MARK on top)")
		return nil
	}
	return u.stack[len(u.stack)-1]
}

// popN removes and returns the top n values (n <= avail).
func (u *unpickler) popN(n int) []any {
	if u.err != nil {
		return nil
	}
	if u.avail() < n {
		u.fail("%d values wanted, %d above the MARK", n, u.avail())
		return nil
	}
	items := append([]any(nil), u.stack[len(u.stack)-n:]...)
	u.stack = u.stack[:len(u.stack)-n]
	return items
}

// popMark returns the values pushed since the last MARK and removes them
// and the mark.
func (u *unpickler) popMark() []any {
	if u.err != nil {
		return nil
	}
	if len(u.marks) == 0 {
		u.fail("no MARK")
		return nil
	}
	items := u.popN(u.avail())
	u.marks = u.marks[:len(u.marks)-1]
	return items
}

func (u *unpickler) put(i uint32) {
	v := u.top()
	if u.err != nil {
		return
	}
	if _, ok := u.memo[i]; !ok && len(u.memo) >= maxPickleMemo {
		u.fail("memo larger than %d", maxPickleMemo)
		return
	}
	u.memo[i] = v
}

func (u *unpickler) get(i uint32) {
	if u.err != nil {
		return
	}
	v, ok := u.memo[i]
	if !ok {
		u.fail("memo key %d not set", i)
		return
	}
	u.push(v)
}

// bytesOp pushes the next n bytes as a str or (bin) a copied []byte.
func (u *unpickler) bytesOp(n int, bin bool) {
	s := u.take(n)
	switch {
	case u.err != nil:
	case bin:
		u.push(append([]byte(nil), s...))
	default:
		u.push(string(s))
	}
}

func (u *unpickler) run() (any, error) {
	for u.err == nil {
		if len(u.marks) > maxPickleMarks {
			return nil, fmt.Errorf("MARKs nested deeper than %d", maxPickleMarks)
		}
		op := u.u8()
		if u.err != nil {
			break
		}
		switch op {
		case 0x80: // PROTO
			if v := u.u8(); v > 5 {
				u.fail("pickle protocol %d", v)
			}
		case 0x95: // FRAME: a length hint only
			u.take(8)
		case '.': // STOP
			if len(u.stack) != 1 || len(u.marks) != 0 {
				return nil, fmt.Errorf("STOP with %d values and %d marks on the stack, want 1 and 0", len(u.stack), len(u.marks))
			}
			return u.stack[0], nil
		case '(': // MARK
			u.marks = append(u.marks, len(u.stack))
		case '0': // POP
			u.pop()
		case '1': // POP_MARK
			u.popMark()
		case '2': // DUP
			u.push(u.top())
		case 'N':
			u.push(nil)
		case 0x88:
			u.push(true)
		case 0x89:
			u.push(false)
		case 'J': // BININT
			u.push(int64(int32(u.u32())))
		case 'K': // BININT1
			u.push(int64(u.u8()))
		case 'M': // BININT2
			if s := u.take(2); s != nil {
				u.push(int64(binary.LittleEndian.Uint16(s)))
			}
		case 0x8a: // LONG1
			u.long1()
		case 'G': // BINFLOAT (big endian)
			if s := u.take(8); s != nil {
				u.push(math.Float64frombits(binary.BigEndian.Uint64(s)))
			}
		case 'X', 'T', 'B': // BINUNICODE, BINSTRING, BINBYTES: 4-byte length
			n := u.u32()
			if int64(n) > int64(len(u.b)-u.pos) {
				u.fail("string of %d bytes, %d left", n, len(u.b)-u.pos)
				break
			}
			u.bytesOp(int(n), op == 'B')
		case 0x8c, 'U', 'C': // SHORT_BINUNICODE, SHORT_BINSTRING, SHORT_BINBYTES
			u.bytesOp(u.u8(), op == 'C')
		case '}':
			u.push(&PyDict{})
		case ']':
			u.push(&PyList{})
		case ')':
			u.push(PyTuple{})
		case 0x85, 0x86, 0x87: // TUPLE1..3
			if items := u.popN(int(op - 0x84)); u.err == nil {
				u.push(PyTuple(items))
			}
		case 't': // TUPLE
			if items := u.popMark(); u.err == nil {
				u.push(PyTuple(items))
			}
		case 'l': // LIST
			if items := u.popMark(); u.err == nil {
				u.push(&PyList{Items: items})
			}
		case 'd': // DICT
			if items := u.popMark(); u.err == nil {
				d := &PyDict{}
				u.setItems(d, items)
				u.push(d)
			}
		case 'a': // APPEND
			u.appendTo(u.popN(1))
		case 'e': // APPENDS
			u.appendTo(u.popMark())
		case 's': // SETITEM
			u.setItemsTop(u.popN(2))
		case 'u': // SETITEMS
			u.setItemsTop(u.popMark())
		case 'q': // BINPUT
			u.put(uint32(u.u8()))
		case 'r': // LONG_BINPUT
			u.put(u.u32())
		case 0x94: // MEMOIZE
			u.put(uint32(len(u.memo)))
		case 'h': // BINGET
			u.get(uint32(u.u8()))
		case 'j': // LONG_BINGET
			u.get(u.u32())
		case 'c': // GLOBAL
			mod := u.line()
			name := u.line()
			u.push(PyGlobal{Module: mod, Name: name})
		case 0x93: // STACK_GLOBAL
			if it := u.popN(2); u.err == nil {
				mod, ok1 := it[0].(string)
				name, ok2 := it[1].(string)
				if !ok1 || !ok2 {
					u.fail("STACK_GLOBAL of %T and %T", it[0], it[1])
					break
				}
				u.push(PyGlobal{Module: mod, Name: name})
			}
		case 'R', 0x81: // REDUCE, NEWOBJ
			u.call()
		case 'b': // BUILD
			u.build()
		case 'Q': // BINPERSID
			if pid := u.pop(); u.err == nil {
				s, err := persistentStorage(pid)
				if err != nil {
					return nil, err
				}
				u.push(s)
			}
		default:
			return nil, fmt.Errorf("unsupported opcode 0x%02x", op)
		}
	}
	return nil, u.err
}

// long1 decodes LONG1: a little-endian two's complement integer of up to
// 8 bytes.
func (u *unpickler) long1() {
	n := u.u8()
	if n > maxPickleLong1 {
		u.fail("LONG1 of %d bytes (int64 only)", n)
		return
	}
	s := u.take(n)
	if u.err != nil {
		return
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(s[i])
	}
	if n > 0 && n < 8 && s[n-1]&0x80 != 0 { // sign-extend
		v |= ^uint64(0) << (8 * n)
	}
	u.push(int64(v))
}

func (u *unpickler) appendTo(items []any) {
	t := u.top()
	if u.err != nil {
		return
	}
	l, ok := t.(*PyList)
	if !ok {
		u.fail("APPEND to a %T", t)
		return
	}
	l.Items = append(l.Items, items...)
}

func (u *unpickler) setItemsTop(items []any) {
	t := u.top()
	if u.err != nil {
		return
	}
	d, ok := t.(*PyDict)
	if !ok {
		u.fail("SETITEM on a %T", t)
		return
	}
	u.setItems(d, items)
}

// setItems stores alternating keys and values into d.
func (u *unpickler) setItems(d *PyDict, items []any) {
	if len(items)%2 != 0 {
		u.fail("odd number (%d) of dict items", len(items))
		return
	}
	for i := 0; i < len(items) && u.err == nil; i += 2 {
		if err := d.set(items[i], items[i+1]); err != nil {
			u.fail("%w", err)
		}
	}
}

// call handles REDUCE and NEWOBJ: callable, argument tuple.
func (u *unpickler) call() {
	it := u.popN(2)
	if u.err != nil {
		return
	}
	g, ok := it[0].(PyGlobal)
	args, ok2 := it[1].(PyTuple)
	if !ok || !ok2 {
		u.fail("call of a %T with %T arguments", it[0], it[1])
		return
	}
	v, err := reduce(g, args)
	if err != nil {
		u.fail("%s: %w", g, err)
		return
	}
	u.push(v)
}

// build handles BUILD: the state of the object below it.
func (u *unpickler) build() {
	state := u.pop()
	t := u.top()
	if u.err != nil {
		return
	}
	switch o := t.(type) {
	case *PyObject:
		o.State = state
	case *PyTensor: // tensor state (Python attributes): ignored
	default:
		u.fail("BUILD on a %T", t)
	}
}

// reduce gives the value of calling g(args...) for the callables whose
// meaning is data, and a PyObject for every other.
func reduce(g PyGlobal, args PyTuple) (any, error) {
	switch g.String() {
	case "collections.OrderedDict":
		if len(args) != 0 {
			return nil, fmt.Errorf("%d arguments, want none", len(args))
		}
		return &PyDict{}, nil
	case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
		if len(args) < 1 {
			return nil, fmt.Errorf("no arguments")
		}
		t, ok := args[0].(*PyTensor)
		if !ok {
			return nil, fmt.Errorf("argument of type %T, want a tensor", args[0])
		}
		return t, nil
	case "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor":
		return rebuildTensor(args)
	}
	return &PyObject{Class: g, Args: args}, nil
}
