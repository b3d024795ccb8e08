package tiny

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
)

// MaxONNXBytes is the largest ONNX file ReadONNX accepts (no external data).
const MaxONNXBytes = 1 << 31

// maxTensorElems bounds the element count a tensor's dims may announce; the
// data itself must also be present in the file, so nothing is allocated
// beyond what the input holds.
const maxTensorElems = 1 << 30

// ONNXTensor is a TensorProto: an initializer or a Constant value. Float32
// data (DTypeFloat) is decoded into Float, int64 data (DTypeInt64) into
// Int64; other types keep their raw bytes in Raw. ParseONNXStructure keeps
// only Name, DataType, Dims and External.
type ONNXTensor struct {
	Name     string
	DataType int
	Dims     []int64
	Float    []float32
	Int64    []int64
	Raw      []byte
	External bool // has external_data entries (ParseONNXStructure only: ParseONNX rejects such tensors)
}

// NumElems is the product of the tensor's dims (1 for a scalar).
func (t *ONNXTensor) NumElems() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// ONNXAttr is an AttributeProto. Only the value field matching Type (one
// of AttrFloat, AttrInt, ...; 0 when the file omits it) is set.
type ONNXAttr struct {
	Name   string
	Type   int
	F      float32
	I      int64
	S      string
	T      *ONNXTensor
	Floats []float32
	Ints   []int64
}

// ONNXNode is a NodeProto.
type ONNXNode struct {
	Name    string
	OpType  string
	Domain  string
	Inputs  []string
	Outputs []string
	Attrs   []ONNXAttr
}

// Attr returns the node's attribute called name.
func (n *ONNXNode) Attr(name string) (*ONNXAttr, bool) {
	for i := range n.Attrs {
		if n.Attrs[i].Name == name {
			return &n.Attrs[i], true
		}
	}
	return nil, false
}

// ONNXValueInfo is a graph input or output: a name, an element type and a
// shape (a symbolic or missing dimension reads as -1). Dims is nil when the
// value has no shape (unknown rank) and empty, not nil, for a scalar.
type ONNXValueInfo struct {
	Name     string
	ElemType int
	Dims     []int64
}

// ONNXOpsetID is one OperatorSetIdProto of a model's opset_import.
type ONNXOpsetID struct {
	Domain  string
	Version int64
}

// ONNXModel is what ReadONNX extracts from a ModelProto: header, the main
// graph's nodes in file order, its initializers, inputs and outputs.
type ONNXModel struct {
	IRVersion       int64
	ProducerName    string
	ProducerVersion string
	Opset           int64 // version of the default ("" or "ai.onnx") domain; 0 if not imported
	OpsetImports    []ONNXOpsetID
	GraphName       string
	Nodes           []ONNXNode
	Initializers    []ONNXTensor
	Inputs          []ONNXValueInfo
	Outputs         []ONNXValueInfo
	// Metadata holds the model's metadata_props (yolo7d exports record the
	// spec name, activation, classes and input size there).
	Metadata map[string]string
}

// DefaultOpset returns the opset version the model imports for the default
// ("" or "ai.onnx") domain, and false if it imports none.
func (m *ONNXModel) DefaultOpset() (int64, bool) {
	v, ok := int64(0), false
	for _, o := range m.OpsetImports {
		if o.Domain == "" || o.Domain == "ai.onnx" {
			v, ok = o.Version, true
		}
	}
	return v, ok
}

// Initializer returns the initializer called name.
func (m *ONNXModel) Initializer(name string) (*ONNXTensor, bool) {
	for i := range m.Initializers {
		if m.Initializers[i].Name == name {
			return &m.Initializers[i], true
		}
	}
	return nil, false
}

// ReadONNXFile reads and parses the ONNX file at path.
func ReadONNXFile(path string) (*ONNXModel, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("tiny: read onnx: %w", err)
	}
	defer f.Close()
	m, err := ReadONNX(f)
	if err != nil {
		return nil, fmt.Errorf("%w (file %s)", err, path)
	}
	return m, nil
}

// ReadONNX reads a whole ONNX ModelProto from r (at most MaxONNXBytes) and
// parses it with ParseONNX.
func ReadONNX(r io.Reader) (*ONNXModel, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxONNXBytes+1))
	if err != nil {
		return nil, fmt.Errorf("tiny: read onnx: %w", err)
	}
	if len(b) > MaxONNXBytes {
		return nil, fmt.Errorf("tiny: read onnx: file larger than %d bytes", MaxONNXBytes)
	}
	return ParseONNX(b)
}

// ParseONNX parses an ONNX ModelProto. Truncated or garbled input is an
// error, never a panic; no allocation exceeds a small multiple of len(b).
// Float data of the returned tensors is copied out of b.
func ParseONNX(b []byte) (*ONNXModel, error) {
	return onnxParser{data: true}.model(b)
}

// ParseONNXStructure parses an ONNX ModelProto like ParseONNX but keeps
// only the header of each tensor (initializers and tensor attributes): name,
// data type, dims and whether its data is external. Tensor data is neither
// decoded nor copied nor checked against the dims, so this is the cheap way
// to inspect a model's graph; everything else is parsed and checked as by
// ParseONNX.
func ParseONNXStructure(b []byte) (*ONNXModel, error) {
	return onnxParser{data: false}.model(b)
}

// maxONNXMetadata bounds the number of metadata_props entries kept.
const maxONNXMetadata = 1024

// onnxParser holds the parse mode: data says whether tensor data is decoded
// and checked (ParseONNX) or skipped (ParseONNXStructure).
type onnxParser struct {
	data bool
}

func (p onnxParser) model(b []byte) (*ONNXModel, error) {
	m := &ONNXModel{}
	sawGraph := false
	err := walkFields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == fModelIRVersion && typ == protowire.VarintType:
			m.IRVersion = int64(x)
		case num == fModelProducerName && typ == protowire.BytesType:
			m.ProducerName = string(v)
		case num == fModelProducerVersion && typ == protowire.BytesType:
			m.ProducerVersion = string(v)
		case num == fModelOpsetImport && typ == protowire.BytesType:
			domain, version, err := parseOpset(v)
			if err != nil {
				return fmt.Errorf("opset_import %d: %w", len(m.OpsetImports), err)
			}
			m.OpsetImports = append(m.OpsetImports, ONNXOpsetID{Domain: domain, Version: version})
			if domain == "" || domain == "ai.onnx" {
				m.Opset = version
			}
		case num == fModelMetadataProps && typ == protowire.BytesType:
			var key, value string
			err := walkFields(v, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
				switch {
				case num == 1 && typ == protowire.BytesType:
					key = string(v)
				case num == 2 && typ == protowire.BytesType:
					value = string(v)
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("metadata_props: %w", err)
			}
			if len(m.Metadata) >= maxONNXMetadata {
				return fmt.Errorf("more than %d metadata_props", maxONNXMetadata)
			}
			if m.Metadata == nil {
				m.Metadata = make(map[string]string)
			}
			m.Metadata[key] = value
		case num == fModelGraph && typ == protowire.BytesType:
			if sawGraph {
				return errors.New("more than one graph")
			}
			sawGraph = true
			if err := p.graph(v, m); err != nil {
				return fmt.Errorf("graph: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tiny: parse onnx: %w", err)
	}
	if !sawGraph {
		return nil, errors.New("tiny: parse onnx: no graph (not an ONNX model?)")
	}
	return m, nil
}

// walkFields calls fn for every field of the message b: v holds the bytes of
// a length-delimited field, x the value of a varint or fixed field. Groups
// are skipped.
func walkFields(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("bad tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var x32 uint32
			x32, n = protowire.ConsumeFixed32(b)
			x = uint64(x32)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		if n < 0 {
			return fmt.Errorf("field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}

func parseOpset(b []byte) (domain string, version int64, err error) {
	err = walkFields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == fOpsetDomain && typ == protowire.BytesType:
			domain = string(v)
		case num == fOpsetVersion && typ == protowire.VarintType:
			version = int64(x)
		}
		return nil
	})
	return domain, version, err
}

func (p onnxParser) graph(b []byte, m *ONNXModel) error {
	return walkFields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case fGraphName:
			m.GraphName = string(v)
		case fGraphNode:
			n, err := p.node(v)
			if err != nil {
				return fmt.Errorf("node %d: %w", len(m.Nodes), err)
			}
			m.Nodes = append(m.Nodes, n)
		case fGraphInitializer:
			t, err := p.tensor(v)
			if err != nil {
				return fmt.Errorf("initializer %d: %w", len(m.Initializers), err)
			}
			m.Initializers = append(m.Initializers, *t)
		case fGraphInput, fGraphOutput:
			vi, err := parseValueInfo(v)
			if err != nil {
				return fmt.Errorf("graph input/output: %w", err)
			}
			if num == fGraphInput {
				m.Inputs = append(m.Inputs, vi)
			} else {
				m.Outputs = append(m.Outputs, vi)
			}
		}
		return nil
	})
}

func (p onnxParser) node(b []byte) (ONNXNode, error) {
	var n ONNXNode
	err := walkFields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case fNodeInput:
			n.Inputs = append(n.Inputs, string(v))
		case fNodeOutput:
			n.Outputs = append(n.Outputs, string(v))
		case fNodeName:
			n.Name = string(v)
		case fNodeOpType:
			n.OpType = string(v)
		case fNodeDomain:
			n.Domain = string(v)
		case fNodeAttribute:
			a, err := p.attr(v)
			if err != nil {
				return fmt.Errorf("attribute %d: %w", len(n.Attrs), err)
			}
			n.Attrs = append(n.Attrs, a)
		}
		return nil
	})
	return n, err
}

func (p onnxParser) attr(b []byte) (ONNXAttr, error) {
	var a ONNXAttr
	err := walkFields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		var err error
		switch {
		case num == fAttrName && typ == protowire.BytesType:
			a.Name = string(v)
		case num == fAttrType && typ == protowire.VarintType:
			a.Type = int(int32(x))
		case num == fAttrF && typ == protowire.Fixed32Type:
			a.F = math.Float32frombits(uint32(x))
		case num == fAttrI && typ == protowire.VarintType:
			a.I = int64(x)
		case num == fAttrS && typ == protowire.BytesType:
			a.S = string(v)
		case num == fAttrT && typ == protowire.BytesType:
			a.T, err = p.tensor(v)
		case num == fAttrFloats:
			a.Floats, err = appendFloats(a.Floats, typ, v, x)
		case num == fAttrInts:
			a.Ints, err = appendInt64s(a.Ints, typ, v, x)
		}
		return err
	})
	return a, err
}

func parseValueInfo(b []byte) (ONNXValueInfo, error) {
	var vi ONNXValueInfo
	err := walkFields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case fValueInfoName:
			vi.Name = string(v)
		case fValueInfoType:
			return walkFields(v, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
				if num != fTypeTensor || typ != protowire.BytesType {
					return nil
				}
				return parseTensorType(v, &vi)
			})
		}
		return nil
	})
	return vi, err
}

func parseTensorType(b []byte, vi *ONNXValueInfo) error {
	return walkFields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == fTypeTensorElem && typ == protowire.VarintType:
			vi.ElemType = int(int32(x))
		case num == fTypeTensorShape && typ == protowire.BytesType:
			if vi.Dims == nil {
				vi.Dims = []int64{} // a shape is known, if only of rank 0
			}
			return walkFields(v, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
				if num != fShapeDim || typ != protowire.BytesType {
					return nil
				}
				d := int64(-1)
				err := walkFields(v, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
					if num == fDimValue && typ == protowire.VarintType {
						d = int64(x)
					}
					return nil
				})
				vi.Dims = append(vi.Dims, d)
				return err
			})
		}
		return nil
	})
}

func (p onnxParser) tensor(b []byte) (*ONNXTensor, error) {
	t := &ONNXTensor{}
	var raw []byte
	hasRaw, external := false, false
	err := walkFields(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		var err error
		switch {
		case !p.data && (num == fTensorRawData || num == fTensorFloatData || num == fTensorInt64Data):
			// Structure only: the data is skipped.
		case num == fTensorDims:
			t.Dims, err = appendInt64s(t.Dims, typ, v, x)
		case num == fTensorDataType && typ == protowire.VarintType:
			t.DataType = int(int32(x))
		case num == fTensorName && typ == protowire.BytesType:
			t.Name = string(v)
		case num == fTensorRawData && typ == protowire.BytesType:
			raw, hasRaw = v, true
		case num == fTensorFloatData:
			t.Float, err = appendFloats(t.Float, typ, v, x)
		case num == fTensorInt64Data:
			t.Int64, err = appendInt64s(t.Int64, typ, v, x)
		case num == fTensorExternal:
			external = true
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if external && p.data {
		return nil, fmt.Errorf("tensor %q: external data is not supported", t.Name)
	}
	t.External = external
	n := int64(1)
	for _, d := range t.Dims {
		if d < 0 || d > maxTensorElems {
			return nil, fmt.Errorf("tensor %q: bad dim %d", t.Name, d)
		}
		n *= d
		if n > maxTensorElems {
			return nil, fmt.Errorf("tensor %q: dims %v too large", t.Name, t.Dims)
		}
	}
	if !p.data {
		return t, nil
	}
	switch t.DataType {
	case DTypeFloat:
		if hasRaw {
			if int64(len(raw)) != 4*n || len(t.Float) > 0 {
				return nil, fmt.Errorf("tensor %q: %d raw bytes for %d float32", t.Name, len(raw), n)
			}
			t.Float = make([]float32, n)
			for i := range t.Float {
				t.Float[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
			}
		} else if int64(len(t.Float)) != n {
			return nil, fmt.Errorf("tensor %q: %d float32 values for dims %v", t.Name, len(t.Float), t.Dims)
		}
	case DTypeInt64:
		if hasRaw {
			if int64(len(raw)) != 8*n || len(t.Int64) > 0 {
				return nil, fmt.Errorf("tensor %q: %d raw bytes for %d int64", t.Name, len(raw), n)
			}
			t.Int64 = make([]int64, n)
			for i := range t.Int64 {
				t.Int64[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
			}
		} else if int64(len(t.Int64)) != n {
			return nil, fmt.Errorf("tensor %q: %d int64 values for dims %v", t.Name, len(t.Int64), t.Dims)
		}
	default:
		t.Raw = append([]byte(nil), raw...)
	}
	return t, nil
}

// appendFloats appends a repeated float field, packed or not.
func appendFloats(dst []float32, typ protowire.Type, v []byte, x uint64) ([]float32, error) {
	switch typ {
	case protowire.Fixed32Type:
		return append(dst, math.Float32frombits(uint32(x))), nil
	case protowire.BytesType:
		if len(v)%4 != 0 {
			return dst, fmt.Errorf("packed floats: %d bytes", len(v))
		}
		for i := 0; i < len(v); i += 4 {
			dst = append(dst, math.Float32frombits(binary.LittleEndian.Uint32(v[i:])))
		}
		return dst, nil
	}
	return dst, fmt.Errorf("floats: wire type %d", typ)
}

// appendInt64s appends a repeated int64 field, packed or not.
func appendInt64s(dst []int64, typ protowire.Type, v []byte, x uint64) ([]int64, error) {
	switch typ {
	case protowire.VarintType:
		return append(dst, int64(x)), nil
	case protowire.BytesType:
		for len(v) > 0 {
			y, n := protowire.ConsumeVarint(v)
			if n < 0 {
				return dst, fmt.Errorf("packed int64s: %w", protowire.ParseError(n))
			}
			dst = append(dst, int64(y))
			v = v[n:]
		}
		return dst, nil
	}
	return dst, fmt.Errorf("int64s: wire type %d", typ)
}
