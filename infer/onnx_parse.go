package infer

import (
	"errors"
	"fmt"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// ONNXGraph is the part of an ONNX ModelProto the model checker needs. Raw
// tensor data is never copied.
type ONNXGraph struct {
	IRVersion    int64
	Opset        int64 // version of the default ("" / "ai.onnx") domain
	Producer     string
	Nodes        []ONNXNode
	Initializers []ONNXInitializer
	Inputs       []ONNXValue
	Outputs      []ONNXValue
}

// ONNXNode is one NodeProto.
type ONNXNode struct {
	Name    string
	OpType  string
	Domain  string
	Inputs  []string
	Outputs []string
	Attrs   []ONNXAttr
}

// ONNXAttr is one AttributeProto; only scalar and int-list values are kept.
type ONNXAttr struct {
	Name string
	Type int64 // AttributeProto.AttributeType
	I    int64
	F    float32
	S    string
	Ints []int64
}

// ONNXInitializer is the header of one initializer TensorProto.
type ONNXInitializer struct {
	Name     string
	Dims     []int64
	DataType int64 // TensorProto.DataType, 1 = FLOAT
}

// ONNXValue is a graph input or output: name, element type and dims (-1 for
// a symbolic or missing dimension; Dims is nil when the shape is unknown).
type ONNXValue struct {
	Name     string
	ElemType int64
	Dims     []int64
}

// ParseONNX parses a serialized ONNX ModelProto. Malformed or truncated
// input is an error, never a panic; every length is checked against the
// bytes actually present before anything is allocated for it.
func ParseONNX(b []byte) (*ONNXGraph, error) {
	g := &ONNXGraph{Opset: -1}
	haveGraph := false
	err := walkProto(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.VarintType:
			g.IRVersion = int64(x)
		case num == 2 && typ == protowire.BytesType:
			g.Producer = string(v)
		case num == 8 && typ == protowire.BytesType:
			var domain string
			var version int64
			if err := walkProto(v, func(n protowire.Number, t protowire.Type, v []byte, x uint64) error {
				switch {
				case n == 1 && t == protowire.BytesType:
					domain = string(v)
				case n == 2 && t == protowire.VarintType:
					version = int64(x)
				}
				return nil
			}); err != nil {
				return fmt.Errorf("opset_import: %w", err)
			}
			if domain == "" || domain == "ai.onnx" {
				g.Opset = version
			}
		case num == 7 && typ == protowire.BytesType:
			if haveGraph {
				return errors.New("more than one graph")
			}
			haveGraph = true
			if err := parseONNXGraph(v, g); err != nil {
				return fmt.Errorf("graph: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("onnx: %w", err)
	}
	if !haveGraph {
		return nil, errors.New("onnx: no graph (not an ONNX model?)")
	}
	return g, nil
}

// walkProto calls fn for each field of a message. For bytes fields v is
// the payload, for varint and fixed fields x is the value.
func walkProto(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("bad tag: %w", protowire.ParseError(n))
		}
		b = b[n:]
		var (
			v []byte
			x uint64
		)
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var u uint32
			u, n = protowire.ConsumeFixed32(b)
			x = uint64(u)
		case protowire.Fixed64Type:
			x, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
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

func parseONNXGraph(b []byte, g *ONNXGraph) error {
	return walkProto(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1:
			n, err := parseONNXNode(v)
			if err != nil {
				return fmt.Errorf("node %d: %w", len(g.Nodes), err)
			}
			g.Nodes = append(g.Nodes, n)
		case 5:
			t, err := parseONNXInitializer(v)
			if err != nil {
				return fmt.Errorf("initializer %d: %w", len(g.Initializers), err)
			}
			g.Initializers = append(g.Initializers, t)
		case 11, 12:
			vi, err := parseONNXValue(v)
			if err != nil {
				return fmt.Errorf("input/output: %w", err)
			}
			if num == 11 {
				g.Inputs = append(g.Inputs, vi)
			} else {
				g.Outputs = append(g.Outputs, vi)
			}
		}
		return nil
	})
}

func parseONNXNode(b []byte) (ONNXNode, error) {
	var n ONNXNode
	err := walkProto(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1:
			n.Inputs = append(n.Inputs, string(v))
		case 2:
			n.Outputs = append(n.Outputs, string(v))
		case 3:
			n.Name = string(v)
		case 4:
			n.OpType = string(v)
		case 7:
			n.Domain = string(v)
		case 5:
			a, err := parseONNXAttr(v)
			if err != nil {
				return fmt.Errorf("attribute: %w", err)
			}
			n.Attrs = append(n.Attrs, a)
		}
		return nil
	})
	return n, err
}

func parseONNXAttr(b []byte) (ONNXAttr, error) {
	var a ONNXAttr
	err := walkProto(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			a.Name = string(v)
		case num == 20 && typ == protowire.VarintType:
			a.Type = int64(x)
		case num == 2 && typ == protowire.Fixed32Type:
			a.F = math.Float32frombits(uint32(x))
		case num == 3 && typ == protowire.VarintType:
			a.I = int64(x)
		case num == 4 && typ == protowire.BytesType:
			a.S = string(v)
		case num == 8:
			var err error
			a.Ints, err = appendVarints(a.Ints, typ, v, x)
			return err
		}
		return nil
	})
	return a, err
}

func parseONNXInitializer(b []byte) (ONNXInitializer, error) {
	var t ONNXInitializer
	err := walkProto(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 1:
			var err error
			t.Dims, err = appendVarints(t.Dims, typ, v, x)
			return err
		case num == 2 && typ == protowire.VarintType:
			t.DataType = int64(x)
		case num == 8 && typ == protowire.BytesType:
			t.Name = string(v)
		}
		return nil
	})
	return t, err
}

// parseONNXValue parses a ValueInfoProto with a TypeProto.Tensor type.
func parseONNXValue(b []byte) (ONNXValue, error) {
	var vi ONNXValue
	err := walkProto(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		if typ != protowire.BytesType {
			return nil
		}
		switch num {
		case 1:
			vi.Name = string(v)
		case 2: // TypeProto
			return walkProto(v, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
				if num != 1 || typ != protowire.BytesType { // tensor_type only
					return nil
				}
				return walkProto(v, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
					switch {
					case num == 1 && typ == protowire.VarintType:
						vi.ElemType = int64(x)
					case num == 2 && typ == protowire.BytesType: // TensorShapeProto
						vi.Dims = []int64{}
						return walkProto(v, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
							if num != 1 || typ != protowire.BytesType {
								return nil
							}
							d := int64(-1)
							err := walkProto(v, func(num protowire.Number, typ protowire.Type, _ []byte, x uint64) error {
								if num == 1 && typ == protowire.VarintType {
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
			})
		}
		return nil
	})
	return vi, err
}

// appendVarints decodes an int64 repeated field, packed or not. A packed
// run holds at most len(v) values, so the allocation is bounded by the
// bytes present.
func appendVarints(dst []int64, typ protowire.Type, v []byte, x uint64) ([]int64, error) {
	switch typ {
	case protowire.VarintType:
		return append(dst, int64(x)), nil
	case protowire.BytesType:
		for len(v) > 0 {
			u, n := protowire.ConsumeVarint(v)
			if n < 0 {
				return nil, fmt.Errorf("packed ints: %w", protowire.ParseError(n))
			}
			dst = append(dst, int64(u))
			v = v[n:]
		}
		return dst, nil
	}
	return dst, fmt.Errorf("ints field with wire type %d", typ)
}
