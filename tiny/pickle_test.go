package tiny

import (
	"encoding/binary"
	"encoding/hex"
	"math"
	"strings"
	"testing"
)

// pickleW writes pickle opcodes (protocol 2), for building test inputs.
type pickleW []byte

func (p pickleW) op(b ...byte) pickleW { return append(p, b...) }
func (p pickleW) str(s string) pickleW {
	p = append(p, 'X')
	p = binary.LittleEndian.AppendUint32(p, uint32(len(s)))
	return append(p, s...)
}
func (p pickleW) int(v int64) pickleW {
	p = append(p, 'J')
	return binary.LittleEndian.AppendUint32(p, uint32(int32(v)))
}
func (p pickleW) float(v float64) pickleW {
	p = append(p, 'G')
	return binary.BigEndian.AppendUint64(p, math.Float64bits(v))
}
func (p pickleW) global(mod, name string) pickleW {
	return append(append(p, 'c'), mod+"\n"+name+"\n"...)
}
func (p pickleW) put(i uint32) pickleW {
	p = append(p, 'r')
	return binary.LittleEndian.AppendUint32(p, i)
}
func (p pickleW) get(i uint32) pickleW {
	p = append(p, 'j')
	return binary.LittleEndian.AppendUint32(p, i)
}

// cpythonPickle is pickle.dumps(v, protocol=2) by CPython 3.11 of
// l = [7]; v = {'a': [1, -2, 3.5, None, True, False], 'b': (1, 2),
// 'c': (1, 2, 3), 'd': 2**40, 'e': -2**63, 'f': 'xyz', 'g': (), 'h': 'é',
// 'k': 65535, 'l': -129, 'm': l, 'n': l, 'o': {1: 'one'}}.
const cpythonPickle = "80027d71002858010000006171015d7102284b014afeffffff47400c0000000000004e88896558010000006271034b014b0286710458010000006371054b014b024b0387710658010000006471078a0600000000000158010000006571088a0800000000000000805801000000667109580300000078797a710a580100000067710b29580100000068710c5802000000c3a9710d58010000006b710e4dffff58010000006c710f4a7fffffff58010000006d71105d71114b076158010000006e7112681158010000006f71137d71144b0158030000006f6e65711573752e"

func TestUnpickleMatchesCPython(t *testing.T) {
	b, _ := hex.DecodeString(cpythonPickle)
	v, err := Unpickle(b)
	if err != nil {
		t.Fatal(err)
	}
	d, ok := v.(*PyDict)
	if !ok || d.Len() != 13 {
		t.Fatalf("got %T %v, want a 13-entry dict", v, v)
	}
	get := func(k string) any {
		x, ok := d.Get(k)
		if !ok {
			t.Fatalf("key %q missing", k)
		}
		return x
	}
	a := get("a").(*PyList).Items
	if len(a) != 6 || a[0] != int64(1) || a[1] != int64(-2) || a[2] != 3.5 || a[3] != nil || a[4] != true || a[5] != false {
		t.Errorf("a = %v", a)
	}
	if b := get("b").(PyTuple); len(b) != 2 || b[1] != int64(2) {
		t.Errorf("b = %v", b)
	}
	if c := get("c").(PyTuple); len(c) != 3 || c[2] != int64(3) {
		t.Errorf("c = %v", c)
	}
	for k, want := range map[string]any{"d": int64(1 << 40), "e": int64(math.MinInt64), "f": "xyz", "h": "é", "k": int64(65535), "l": int64(-129)} {
		if got := get(k); got != want {
			t.Errorf("%s = %v (%T), want %v", k, got, got, want)
		}
	}
	if g := get("g").(PyTuple); len(g) != 0 {
		t.Errorf("g = %v", g)
	}
	if get("m").(*PyList) != get("n").(*PyList) {
		t.Error("m and n are not the same (memoised) list")
	}
	if o := get("o").(*PyDict); o.Len() != 1 || o.Keys[0] != int64(1) || o.Values[0] != "one" {
		t.Errorf("o = %+v", o)
	}
}

// tensorPickle is a torch-style tensor: _rebuild_parameter(
// _rebuild_tensor_v2(persistent storage, offset, size, stride, False,
// OrderedDict()), False, OrderedDict()).
func tensorPickle(p pickleW, class, key string, numel int64, offset int64, size, stride []int64) pickleW {
	p = p.global("torch._utils", "_rebuild_parameter")
	p = p.global("torch._utils", "_rebuild_tensor_v2").op('(')
	p = p.op('(').str("storage").global("torch", class).str(key).str("cpu").int(numel).op('t', 'Q')
	p = p.int(offset).op('(')
	for _, s := range size {
		p = p.int(s)
	}
	p = p.op('t', '(')
	for _, s := range stride {
		p = p.int(s)
	}
	p = p.op('t', 0x89).global("collections", "OrderedDict").op(')', 'R', 't', 'R')
	return p.op(0x89).global("collections", "OrderedDict").op(')', 'R', 0x87, 'R')
}

func TestUnpickleTorchObjects(t *testing.T) {
	p := pickleW{0x80, 2}.global("models.common", "Conv").op(')', 0x81, '}', '(')
	p = p.str("eps").float(0.001).str("w")
	p = tensorPickle(p, "HalfStorage", "7", 12, 2, []int64{2, 5}, []int64{5, 1})
	p = p.op('u', 'b', '.')
	v, err := Unpickle(p)
	if err != nil {
		t.Fatal(err)
	}
	o, ok := v.(*PyObject)
	if !ok || o.Class.String() != "models.common.Conv" {
		t.Fatalf("got %T %+v", v, v)
	}
	st := o.StateDict()
	if e, _ := st.Get("eps"); e != 0.001 {
		t.Errorf("eps = %v", e)
	}
	w, _ := st.Get("w")
	ten, ok := w.(*PyTensor)
	if !ok || ten.Storage.DType != "float16" || ten.Storage.Key != "7" || ten.Storage.Numel != 12 ||
		ten.Offset != 2 || len(ten.Shape) != 2 || ten.Shape[1] != 5 || ten.Stride[0] != 5 {
		t.Errorf("tensor %+v (storage %+v)", w, ten.Storage)
	}
}

func TestUnpickleRejectsHostileInput(t *testing.T) {
	valid, _ := hex.DecodeString(cpythonPickle)
	for n := 0; n < len(valid); n++ {
		if _, err := Unpickle(valid[:n]); err == nil {
			t.Errorf("truncated to %d of %d bytes: accepted", n, len(valid))
		}
	}
	deep := pickleW{0x80, 2}
	for i := 0; i < maxPickleMarks+2; i++ {
		deep = deep.op('(')
	}
	tests := []struct {
		name string
		b    pickleW
		want string
	}{
		{"empty", nil, "truncated"},
		{"unknown opcode", pickleW{0x80, 2, 'i'}, "unsupported opcode"},
		{"protocol 6", pickleW{0x80, 6}, "protocol"},
		{"unset memo", pickleW{0x80, 2}.get(9).op('.'), "memo key 9"},
		{"huge string", pickleW{0x80, 2, 'X', 0xff, 0xff, 0xff, 0x7f}, "string of"},
		{"long1 too long", pickleW{0x80, 2, 0x8a, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9}, "LONG1"},
		{"global without newline", append(pickleW{0x80, 2, 'c'}, strings.Repeat("a", 300)...), "newline"},
		{"append to a dict", pickleW{0x80, 2, '}', 'K', 1, 'a', '.'}, "APPEND to"},
		{"setitems on a list", pickleW{0x80, 2, ']', '(', 'K', 1, 'K', 2, 'u', '.'}, "SETITEM on"},
		{"odd setitems", pickleW{0x80, 2, '}', '(', 'K', 1, 'u', '.'}, "odd number"},
		{"unhashable key", pickleW{0x80, 2, '}', ']', 'K', 1, 's', '.'}, "dict key"},
		{"pop empty", pickleW{0x80, 2, '0'}, "empty stack"},
		{"tuple past mark", pickleW{0x80, 2, 'K', 1, '(', 0x86}, "above the MARK"},
		{"two values at stop", pickleW{0x80, 2, 'K', 1, 'K', 2, '.'}, "STOP with 2"},
		{"call of a non-class", pickleW{0x80, 2, 'K', 1, ')', 'R', '.'}, "call of a"},
		{"build on an int", pickleW{0x80, 2, 'K', 1, '}', 'b', '.'}, "BUILD on"},
		{"marks too deep", deep, "MARKs nested"},
		{"foreign persistent id", pickleW{0x80, 2}.str("x").op('Q', '.'), "persistent id"},
		{"unknown storage", pickleW{0x80, 2, '('}.str("storage").global("torch", "EvilStorage").str("0").str("cpu").int(1).op('t', 'Q', '.'), "storage class"},
		{"view past the storage", tensorPickle(pickleW{0x80, 2}, "FloatStorage", "0", 9, 0, []int64{2, 5}, []int64{5, 1}).op('.'), "reads element 9"},
		{"negative stride", tensorPickle(pickleW{0x80, 2}, "FloatStorage", "0", 9, 0, []int64{2}, []int64{-1}).op('.'), "stride"},
		{"tensor too large", tensorPickle(pickleW{0x80, 2}, "FloatStorage", "0", 1, 0, []int64{1 << 20, 1 << 20}, []int64{0, 0}).op('.'), "elements"},
	}
	for _, tc := range tests {
		_, err := Unpickle(tc.b)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func FuzzUnpickle(f *testing.F) {
	valid, _ := hex.DecodeString(cpythonPickle)
	f.Add(valid)
	f.Add([]byte(tensorPickle(pickleW{0x80, 2}, "HalfStorage", "0", 4, 0, []int64{2, 2}, []int64{2, 1}).op('.')))
	f.Fuzz(func(t *testing.T, b []byte) {
		Unpickle(b) // must not panic or run away
	})
}
