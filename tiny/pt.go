package tiny

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
)

// PT (torch.save zip) limits.
const (
	// MaxPTBytes is the largest .pt file ReadPT accepts.
	MaxPTBytes = 1 << 31
	// maxPTStorageBytes bounds the decompressed storage data read from one
	// checkpoint. The tensor elements materialised from the storages may
	// not exceed twice the storage elements read plus ptElemsSlack, so a
	// small file cannot expand into a huge allocation by viewing one
	// storage many times.
	maxPTStorageBytes = 1 << 30
	ptElemsSlack      = 1 << 16
	maxModuleDepth    = 32
)

// Checkpoint is what ReadPT extracts from an official YOLOv7 checkpoint (a
// whole pickled models.yolo.Model, as train.py and strip_optimizer save
// it): the state_dict in model order with every tensor converted to
// float32, the modules with their scalar attributes, the class names and
// count, and the activation.
type Checkpoint struct {
	Tensors []PTTensor // state_dict order: "model.0.conv.weight", ..., "model.77.im.2.implicit"
	Modules []PTModule // every module depth-first, the root ("") first
	Names   []string   // class names (nil if the checkpoint has none)
	NC      int        // number of classes
	// Act is the activation of the Conv blocks: ActReLU for nn.ReLU,
	// ActLeaky for nn.LeakyReLU(0.1); "" when they are anything else or
	// mixed (ActClass then names them).
	Act      Act
	ActClass string
}

// PTTensor is one state_dict entry. Data holds the elements in C order as
// float32: float16 and bfloat16 convert exactly, integer tensors (such as
// BatchNorm's num_batches_tracked) are exact up to 2^24.
type PTTensor struct {
	Name  string
	DType string // storage dtype: "float16", "float32", "int64", ...
	Shape []int
	Data  []float32
}

// PTModule is one torch module of the checkpoint: its state_dict prefix
// (without the trailing dot), its class ("torch.nn.modules.batchnorm.BatchNorm2d")
// and its numeric scalar attributes (eps, momentum, negative_slope, nc, ...).
type PTModule struct {
	Name  string
	Class string
	Attrs map[string]float64
}

// Tensor returns the state_dict entry called name.
func (c *Checkpoint) Tensor(name string) (*PTTensor, bool) {
	for i := range c.Tensors {
		if c.Tensors[i].Name == name {
			return &c.Tensors[i], true
		}
	}
	return nil, false
}

// Module returns the module whose prefix is name ("model.0.bn").
func (c *Checkpoint) Module(name string) (*PTModule, bool) {
	for i := range c.Modules {
		if c.Modules[i].Name == name {
			return &c.Modules[i], true
		}
	}
	return nil, false
}

// ReadPT reads a torch.save checkpoint (see ReadPTBytes).
func ReadPT(path string) (*Checkpoint, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tiny: read pt: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxPTBytes+1))
	if err != nil {
		return nil, fmt.Errorf("tiny: read pt %s: %w", path, err)
	}
	ck, err := ReadPTBytes(b)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return ck, nil
}

// ReadPTBytes parses a torch.save zip archive holding an official YOLOv7
// checkpoint: <stem>/data.pkl (the pickled dict with "model" and maybe
// "ema") and <stem>/data/<key> (the raw little-endian storages). The top
// folder is whatever the writer chose (the file stem), so it is found, not
// assumed. Nothing in the pickle is executed; truncated, malformed or
// hostile input is an error, never a panic or an unbounded allocation.
func ReadPTBytes(b []byte) (*Checkpoint, error) {
	if len(b) > MaxPTBytes {
		return nil, fmt.Errorf("tiny: read pt: larger than %d bytes", MaxPTBytes)
	}
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return nil, fmt.Errorf("tiny: read pt: not a torch zip archive (legacy torch.save formats are not supported): %w", err)
	}
	var pkl *zip.File
	for _, f := range zr.File {
		dir, base := splitTop(f.Name)
		if base == "data.pkl" && dir != "" {
			if pkl != nil {
				return nil, fmt.Errorf("tiny: read pt: two data.pkl (%s and %s)", pkl.Name, f.Name)
			}
			pkl = f
		}
	}
	if pkl == nil {
		return nil, fmt.Errorf("tiny: read pt: no <folder>/data.pkl in the archive")
	}
	prefix := strings.TrimSuffix(pkl.Name, "data.pkl")
	files := make(map[string]*zip.File)
	for _, f := range zr.File {
		if key, ok := strings.CutPrefix(f.Name, prefix+"data/"); ok {
			files[key] = f
		}
	}
	raw, err := readZipFile(pkl, maxPickleBytes)
	if err != nil {
		return nil, fmt.Errorf("tiny: read pt: %s: %w", pkl.Name, err)
	}
	root, err := Unpickle(raw)
	if err != nil {
		return nil, fmt.Errorf("tiny: read pt: %s: %w", pkl.Name, err)
	}
	w := ptWalker{files: files, storages: make(map[string][]float32), onPath: make(map[*PyObject]bool)}
	return w.checkpoint(root)
}

// splitTop splits "stem/data.pkl" into "stem" and "data.pkl" (only one
// level deep).
func splitTop(name string) (dir, base string) {
	i := strings.IndexByte(name, '/')
	if i < 0 || strings.Contains(name[i+1:], "/") {
		return "", name
	}
	return name[:i], name[i+1:]
}

// readZipFile reads one archive member of at most limit bytes; memory grows
// only as data actually decompresses.
func readZipFile(f *zip.File, limit int64) ([]byte, error) {
	if f.UncompressedSize64 > uint64(limit) {
		return nil, fmt.Errorf("%d bytes (limit %d)", f.UncompressedSize64, limit)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("more than %d bytes", limit)
	}
	return b, nil
}

// ptWalker turns the unpickled module tree into a Checkpoint.
type ptWalker struct {
	files     map[string]*zip.File
	storages  map[string][]float32 // decoded storages by key
	readBytes int64
	readElems int64              // storage elements read
	elems     int64              // tensor elements materialised so far
	onPath    map[*PyObject]bool // modules being walked (cycle check)
	ck        Checkpoint
}

func (w *ptWalker) checkpoint(root any) (*Checkpoint, error) {
	top, ok := root.(*PyDict)
	if !ok {
		return nil, fmt.Errorf("tiny: read pt: the pickle holds a %T, want a checkpoint dict", root)
	}
	var model *PyObject
	for _, k := range []string{"ema", "model"} { // as the official attempt_load
		if v, _ := top.Get(k); v != nil {
			if model, ok = v.(*PyObject); !ok {
				return nil, fmt.Errorf("tiny: read pt: checkpoint[%q] is a %T, want a module", k, v)
			}
			break
		}
	}
	if model == nil {
		return nil, fmt.Errorf("tiny: read pt: the checkpoint has no \"model\" (a state_dict-only file is not supported)")
	}
	if err := w.module(model, "", 0); err != nil {
		return nil, fmt.Errorf("tiny: read pt: %w", err)
	}
	ck := &w.ck
	st := model.StateDict()
	if v, _ := st.Get("names"); v != nil {
		names, err := stringList(v)
		if err != nil {
			return nil, fmt.Errorf("tiny: read pt: model.names: %w", err)
		}
		ck.Names = names
	}
	switch v, _ := st.Get("nc"); n := v.(type) {
	case int64:
		if n <= 0 || n > 1<<16 {
			return nil, fmt.Errorf("tiny: read pt: model.nc = %d", n)
		}
		ck.NC = int(n)
	case nil:
		ck.NC = len(ck.Names)
	default:
		return nil, fmt.Errorf("tiny: read pt: model.nc is a %T", v)
	}
	if ck.Names != nil && len(ck.Names) != ck.NC {
		return nil, fmt.Errorf("tiny: read pt: %d class names for nc = %d", len(ck.Names), ck.NC)
	}
	ck.Act, ck.ActClass = activation(ck.Modules)
	return ck, nil
}

// stringList converts a list or tuple of str.
func stringList(v any) ([]string, error) {
	var items []any
	switch l := v.(type) {
	case *PyList:
		items = l.Items
	case PyTuple:
		items = l
	default:
		return nil, fmt.Errorf("a %T, want a list of strings", v)
	}
	out := make([]string, len(items))
	for i, it := range items {
		s, ok := it.(string)
		if !ok {
			return nil, fmt.Errorf("item %d is a %T, want a string", i, it)
		}
		out[i] = s
	}
	return out, nil
}

// activation finds the Conv blocks' activation among the modules.
func activation(mods []PTModule) (Act, string) {
	seen := map[string]bool{}
	var act Act
	for _, m := range mods {
		var a Act
		switch m.Class {
		case "torch.nn.modules.activation.ReLU":
			a = ActReLU
		case "torch.nn.modules.activation.LeakyReLU":
			if s, ok := m.Attrs["negative_slope"]; ok && math.Abs(s-LeakySlope) < 1e-6 {
				a = ActLeaky
			}
		case "torch.nn.modules.activation.SiLU", "torch.nn.modules.activation.Hardswish",
			"torch.nn.modules.activation.Sigmoid", "torch.nn.modules.activation.Mish",
			"torch.nn.modules.activation.ReLU6", "torch.nn.modules.activation.Tanh":
		default:
			continue
		}
		name := m.Class
		if s, ok := m.Attrs["negative_slope"]; ok {
			name = fmt.Sprintf("%s(%g)", m.Class, s)
		}
		seen[name] = true
		if len(seen) == 1 {
			act = a
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(seen) != 1 {
		act = ""
	}
	return act, strings.Join(names, ", ")
}

// module walks one torch module: its parameters, its persistent buffers,
// then its children, as nn.Module.state_dict does.
func (w *ptWalker) module(obj *PyObject, name string, depth int) error {
	if depth > maxModuleDepth {
		return fmt.Errorf("module %q: nested deeper than %d", name, maxModuleDepth)
	}
	if w.onPath[obj] {
		return fmt.Errorf("module %q contains itself", name)
	}
	w.onPath[obj] = true
	defer delete(w.onPath, obj)
	st := obj.StateDict()
	if st == nil {
		return fmt.Errorf("module %q (%s) has no attribute dict", name, obj.Class)
	}
	mod := PTModule{Name: name, Class: obj.Class.String(), Attrs: map[string]float64{}}
	for i, k := range st.Keys {
		ks, _ := k.(string)
		switch v := st.Values[i].(type) {
		case float64:
			mod.Attrs[ks] = v
		case int64:
			mod.Attrs[ks] = float64(v)
		}
	}
	w.ck.Modules = append(w.ck.Modules, mod)
	skip := map[string]bool{}
	if v, _ := st.Get("_non_persistent_buffers_set"); v != nil {
		if o, ok := v.(*PyObject); ok && len(o.Args) == 1 {
			if l, ok := o.Args[0].(*PyList); ok {
				for _, it := range l.Items {
					if s, ok := it.(string); ok {
						skip[s] = true
					}
				}
			}
		}
	}
	for _, field := range []string{"_parameters", "_buffers"} {
		d, err := dictAttr(st, field)
		if err != nil {
			return fmt.Errorf("module %q: %w", name, err)
		}
		for i, k := range d.Keys {
			ks, ok := k.(string)
			if !ok || d.Values[i] == nil || skip[ks] && field == "_buffers" {
				continue
			}
			t, ok := d.Values[i].(*PyTensor)
			if !ok {
				return fmt.Errorf("module %q: %s[%q] is a %T, want a tensor", name, field, ks, d.Values[i])
			}
			if err := w.tensor(join(name, ks), t); err != nil {
				return err
			}
		}
	}
	d, err := dictAttr(st, "_modules")
	if err != nil {
		return fmt.Errorf("module %q: %w", name, err)
	}
	for i, k := range d.Keys {
		ks, ok := k.(string)
		if !ok || d.Values[i] == nil {
			continue
		}
		c, ok := d.Values[i].(*PyObject)
		if !ok {
			return fmt.Errorf("module %q: child %q is a %T", name, ks, d.Values[i])
		}
		if err := w.module(c, join(name, ks), depth+1); err != nil {
			return err
		}
	}
	return nil
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// dictAttr returns the dict attribute called field (an empty one if absent).
func dictAttr(st *PyDict, field string) (*PyDict, error) {
	v, ok := st.Get(field)
	if !ok || v == nil {
		return &PyDict{}, nil
	}
	d, ok := v.(*PyDict)
	if !ok {
		return nil, fmt.Errorf("%s is a %T, want a dict", field, v)
	}
	return d, nil
}

// tensor materialises a tensor view in C order.
func (w *ptWalker) tensor(name string, t *PyTensor) error {
	data, err := w.storage(t.Storage)
	if err != nil {
		return fmt.Errorf("tensor %s: %w", name, err)
	}
	shape := make([]int, len(t.Shape))
	n := 1
	for i, d := range t.Shape {
		shape[i] = int(d)
		n *= int(d) // bounded by rebuildTensor
	}
	if int64(n) > t.Storage.Numel {
		return fmt.Errorf("tensor %s of shape %v views a %d-element storage (broadcast views are not supported)", name, shape, t.Storage.Numel)
	}
	if w.elems += int64(n); w.elems > 2*w.readElems+ptElemsSlack {
		return fmt.Errorf("tensor %s: %d tensor elements from %d storage elements", name, w.elems, w.readElems)
	}
	out := make([]float32, n)
	if n > 0 {
		idx := make([]int64, len(shape))
		for k := range out {
			p := t.Offset
			for i, v := range idx {
				p += v * t.Stride[i]
			}
			out[k] = data[p] // in range: checked by rebuildTensor
			for i := len(idx) - 1; i >= 0; i-- {
				if idx[i]++; idx[i] < t.Shape[i] {
					break
				}
				idx[i] = 0
			}
		}
	}
	w.ck.Tensors = append(w.ck.Tensors, PTTensor{Name: name, DType: t.Storage.DType, Shape: shape, Data: out})
	return nil
}

// storage reads and decodes data/<key>, once per key.
func (w *ptWalker) storage(s *PyStorage) ([]float32, error) {
	if d, ok := w.storages[s.Key]; ok {
		if int64(len(d)) != s.Numel {
			return nil, fmt.Errorf("storage %q used with %d and %d elements", s.Key, len(d), s.Numel)
		}
		return d, nil
	}
	f, ok := w.files[s.Key]
	if !ok {
		return nil, fmt.Errorf("storage data/%s missing from the archive", s.Key)
	}
	size := dtypeSize(s.DType)
	need := s.Numel * int64(size)
	if w.readBytes+need > maxPTStorageBytes {
		return nil, fmt.Errorf("storages larger than %d bytes in all", int64(maxPTStorageBytes))
	}
	raw, err := readZipFile(f, need)
	if err != nil {
		return nil, fmt.Errorf("storage data/%s: %w", s.Key, err)
	}
	if int64(len(raw)) != need {
		return nil, fmt.Errorf("storage data/%s has %d bytes, %d %s elements need %d", s.Key, len(raw), s.Numel, s.DType, need)
	}
	w.readBytes += need
	w.readElems += s.Numel
	d := decodeStorage(raw, s.DType, int(s.Numel))
	w.storages[s.Key] = d
	return d, nil
}

// decodeStorage converts little-endian elements of dtype to float32.
func decodeStorage(raw []byte, dtype string, n int) []float32 {
	out := make([]float32, n)
	le := binary.LittleEndian
	for i := range out {
		switch dtype {
		case "float16":
			out[i] = HalfToFloat32(le.Uint16(raw[2*i:]))
		case "bfloat16":
			out[i] = math.Float32frombits(uint32(le.Uint16(raw[2*i:])) << 16)
		case "float32":
			out[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
		case "float64":
			out[i] = float32(math.Float64frombits(le.Uint64(raw[8*i:])))
		case "int64":
			out[i] = float32(int64(le.Uint64(raw[8*i:])))
		case "int32":
			out[i] = float32(int32(le.Uint32(raw[4*i:])))
		case "int16":
			out[i] = float32(int16(le.Uint16(raw[2*i:])))
		case "int8":
			out[i] = float32(int8(raw[i]))
		case "uint8", "bool":
			out[i] = float32(raw[i])
		}
	}
	return out
}

// PyStorage is a torch storage reference (a persistent id): its element
// type, the key of its data file (data/<Key> in the archive), where it
// lived and its element count.
type PyStorage struct {
	DType    string // "float16", "float32", "float64", "bfloat16", "int64", ...
	Key      string
	Location string
	Numel    int64
}

// storageDTypes lists the torch storage classes: class name, dtype, element
// size in bytes.
func storageDTypes() [][3]string {
	return [][3]string{
		{"HalfStorage", "float16", "2"}, {"FloatStorage", "float32", "4"}, {"DoubleStorage", "float64", "8"},
		{"BFloat16Storage", "bfloat16", "2"}, {"LongStorage", "int64", "8"}, {"IntStorage", "int32", "4"},
		{"ShortStorage", "int16", "2"}, {"CharStorage", "int8", "1"}, {"ByteStorage", "uint8", "1"},
		{"BoolStorage", "bool", "1"},
	}
}

// storageDType returns the dtype of the torch storage class name ("" if
// unknown).
func storageDType(class string) string {
	for _, t := range storageDTypes() {
		if t[0] == class {
			return t[1]
		}
	}
	return ""
}

// dtypeSize is the element size of a storage dtype (0 if unknown).
func dtypeSize(dtype string) int {
	for _, t := range storageDTypes() {
		if t[1] == dtype {
			return int(t[2][0] - '0')
		}
	}
	return 0
}

// PyTensor is a tensor view of a storage (torch._utils._rebuild_tensor_v2).
type PyTensor struct {
	Storage *PyStorage
	Offset  int64   // in elements
	Shape   []int64 // sizes
	Stride  []int64 // in elements
}

// rebuildTensor checks the arguments (storage, offset, size, stride, ...)
// of _rebuild_tensor_v2 and that the view lies inside the storage.
func rebuildTensor(args PyTuple) (*PyTensor, error) {
	if len(args) < 4 {
		return nil, fmt.Errorf("%d arguments, want at least 4", len(args))
	}
	s, ok := args[0].(*PyStorage)
	off, ok2 := args[1].(int64)
	size, ok3 := args[2].(PyTuple)
	stride, ok4 := args[3].(PyTuple)
	if !ok || !ok2 || !ok3 || !ok4 {
		return nil, fmt.Errorf("arguments (%T, %T, %T, %T), want (storage, int, tuple, tuple)", args[0], args[1], args[2], args[3])
	}
	if len(size) != len(stride) || len(size) > maxTensorDims {
		return nil, fmt.Errorf("%d sizes and %d strides (at most %d dims)", len(size), len(stride), maxTensorDims)
	}
	t := &PyTensor{Storage: s, Offset: off, Shape: make([]int64, len(size)), Stride: make([]int64, len(size))}
	if off < 0 {
		return nil, fmt.Errorf("storage offset %d", off)
	}
	n, last := int64(1), off
	for i := range size {
		d, ok := size[i].(int64)
		st, ok2 := stride[i].(int64)
		if !ok || !ok2 || d < 0 || st < 0 || st > maxStorageElems {
			return nil, fmt.Errorf("size %v stride %v", size[i], stride[i])
		}
		if d > maxStorageElems || (d > 0 && n > maxStorageElems/d) {
			return nil, fmt.Errorf("tensor of shape %v: more than %d elements", size, maxStorageElems)
		}
		n *= d
		t.Shape[i], t.Stride[i] = d, st
	}
	if n > 0 {
		for i := range t.Shape {
			last += (t.Shape[i] - 1) * t.Stride[i]
		}
		if last >= s.Numel {
			return nil, fmt.Errorf("tensor of shape %v stride %v offset %d reads element %d of a %d-element storage",
				t.Shape, t.Stride, off, last, s.Numel)
		}
	}
	return t, nil
}

// persistentStorage decodes torch's persistent id
// ('storage', <GLOBAL torch XStorage>, key, location, numel).
func persistentStorage(pid any) (*PyStorage, error) {
	t, ok := pid.(PyTuple)
	if !ok || len(t) != 5 {
		return nil, fmt.Errorf("persistent id %T of %d values, want a 5-tuple", pid, len(t))
	}
	kind, _ := t[0].(string)
	g, ok1 := t[1].(PyGlobal)
	key, ok2 := t[2].(string)
	loc, ok3 := t[3].(string)
	numel, ok4 := t[4].(int64)
	if kind != "storage" || !ok1 || !ok2 || !ok3 || !ok4 {
		return nil, fmt.Errorf("persistent id (%v, %T, %T, %T, %T), want ('storage', class, key, location, numel)", t[0], t[1], t[2], t[3], t[4])
	}
	dtype := storageDType(g.Name)
	if g.Module != "torch" || dtype == "" {
		return nil, fmt.Errorf("storage class %s", g)
	}
	if numel < 0 || numel > maxStorageElems {
		return nil, fmt.Errorf("storage %q of %d elements (limit %d)", key, numel, maxStorageElems)
	}
	return &PyStorage{DType: dtype, Key: key, Location: loc, Numel: numel}, nil
}

// HalfToFloat32 converts an IEEE 754 binary16 value to float32 exactly
// (subnormals, infinities and NaN payloads included).
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	}
	f := float32(man) * (1.0 / (1 << 24)) // zero or subnormal: man * 2^-24
	if sign != 0 {
		f = -f
	}
	return f
}
