package tiny

import (
	"encoding/binary"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// pb is a protobuf message being encoded: fields are appended in the order
// they are written. Sub-messages are encoded first and appended as bytes.
type pb []byte

func (b pb) varint(num protowire.Number, v uint64) pb {
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func (b pb) int64(num protowire.Number, v int64) pb { return b.varint(num, uint64(v)) }

func (b pb) bytes(num protowire.Number, v []byte) pb {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func (b pb) str(num protowire.Number, s string) pb {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func (b pb) msg(num protowire.Number, m pb) pb { return b.bytes(num, m) }

func (b pb) float32(num protowire.Number, v float32) pb {
	b = protowire.AppendTag(b, num, protowire.Fixed32Type)
	return protowire.AppendFixed32(b, math.Float32bits(v))
}

// packedInt64s writes a packed repeated int64 field (nothing when empty).
func (b pb) packedInt64s(num protowire.Number, vs []int64) pb {
	if len(vs) == 0 {
		return b
	}
	var p []byte
	for _, v := range vs {
		p = protowire.AppendVarint(p, uint64(v))
	}
	return b.bytes(num, p)
}

// onnxFloatTensor encodes a float32 TensorProto with little-endian raw_data,
// as torch.onnx.export writes initializers.
func onnxFloatTensor(name string, dims []int64, data []float32) pb {
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	var t pb
	t = t.packedInt64s(fTensorDims, dims)
	t = t.varint(fTensorDataType, DTypeFloat)
	if name != "" {
		t = t.str(fTensorName, name)
	}
	return t.bytes(fTensorRawData, raw)
}

// onnxInt64Tensor encodes an int64 TensorProto with raw_data.
func onnxInt64Tensor(name string, dims []int64, data []int64) pb {
	raw := make([]byte, 8*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint64(raw[8*i:], uint64(v))
	}
	var t pb
	t = t.packedInt64s(fTensorDims, dims)
	t = t.varint(fTensorDataType, DTypeInt64)
	if name != "" {
		t = t.str(fTensorName, name)
	}
	return t.bytes(fTensorRawData, raw)
}

// Attribute encoders (AttributeProto).

func attrInt(name string, v int64) pb {
	return pb(nil).str(fAttrName, name).int64(fAttrI, v).varint(fAttrType, AttrInt)
}

func attrInts(name string, vs ...int64) pb {
	b := pb(nil).str(fAttrName, name)
	for _, v := range vs { // torch writes ints unpacked
		b = b.int64(fAttrInts, v)
	}
	return b.varint(fAttrType, AttrInts)
}

func attrFloat(name string, v float32) pb {
	return pb(nil).str(fAttrName, name).float32(fAttrF, v).varint(fAttrType, AttrFloat)
}

func attrString(name, v string) pb {
	return pb(nil).str(fAttrName, name).str(fAttrS, v).varint(fAttrType, AttrString)
}

func attrTensor(name string, t pb) pb {
	return pb(nil).str(fAttrName, name).msg(fAttrT, t).varint(fAttrType, AttrTensor)
}

// onnxNode encodes a NodeProto.
func onnxNode(op, name string, inputs, outputs []string, attrs ...pb) pb {
	var b pb
	for _, s := range inputs {
		b = b.str(fNodeInput, s)
	}
	for _, s := range outputs {
		b = b.str(fNodeOutput, s)
	}
	b = b.str(fNodeName, name).str(fNodeOpType, op)
	for _, a := range attrs {
		b = b.msg(fNodeAttribute, a)
	}
	return b
}

// onnxValueInfo encodes a ValueInfoProto of a tensor with fixed dims.
func onnxValueInfo(name string, elemType int, dims []int64) pb {
	var shape pb
	for _, d := range dims {
		shape = shape.msg(fShapeDim, pb(nil).int64(fDimValue, d))
	}
	tt := pb(nil).varint(fTypeTensorElem, uint64(elemType)).msg(fTypeTensorShape, shape)
	typ := pb(nil).msg(fTypeTensor, tt)
	return pb(nil).str(fValueInfoName, name).msg(fValueInfoType, typ)
}
