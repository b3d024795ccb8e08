package tiny

import "google.golang.org/protobuf/encoding/protowire"

// Field numbers and enum values of onnx.proto (ONNX 1.12) used by the
// reader and the writer. Only the fields this package touches are listed.

// ModelProto fields.
const (
	fModelIRVersion       protowire.Number = 1
	fModelProducerName    protowire.Number = 2
	fModelProducerVersion protowire.Number = 3
	fModelDomain          protowire.Number = 4
	fModelVersion         protowire.Number = 5
	fModelDocString       protowire.Number = 6
	fModelGraph           protowire.Number = 7
	fModelOpsetImport     protowire.Number = 8
	fModelMetadataProps   protowire.Number = 14
)

// OperatorSetIdProto fields.
const (
	fOpsetDomain  protowire.Number = 1
	fOpsetVersion protowire.Number = 2
)

// GraphProto fields.
const (
	fGraphNode        protowire.Number = 1
	fGraphName        protowire.Number = 2
	fGraphInitializer protowire.Number = 5
	fGraphInput       protowire.Number = 11
	fGraphOutput      protowire.Number = 12
	fGraphValueInfo   protowire.Number = 13
)

// NodeProto fields.
const (
	fNodeInput     protowire.Number = 1
	fNodeOutput    protowire.Number = 2
	fNodeName      protowire.Number = 3
	fNodeOpType    protowire.Number = 4
	fNodeAttribute protowire.Number = 5
	fNodeDomain    protowire.Number = 7
)

// AttributeProto fields.
const (
	fAttrName   protowire.Number = 1
	fAttrF      protowire.Number = 2
	fAttrI      protowire.Number = 3
	fAttrS      protowire.Number = 4
	fAttrT      protowire.Number = 5
	fAttrFloats protowire.Number = 7
	fAttrInts   protowire.Number = 8
	fAttrType   protowire.Number = 20
)

// AttributeProto.AttributeType values.
const (
	AttrFloat  = 1
	AttrInt    = 2
	AttrString = 3
	AttrTensor = 4
	AttrFloats = 6
	AttrInts   = 7
)

// TensorProto fields.
const (
	fTensorDims      protowire.Number = 1
	fTensorDataType  protowire.Number = 2
	fTensorFloatData protowire.Number = 4
	fTensorInt64Data protowire.Number = 7
	fTensorName      protowire.Number = 8
	fTensorRawData   protowire.Number = 9
	fTensorExternal  protowire.Number = 13
)

// TensorProto.DataType values.
const (
	DTypeFloat = 1
	DTypeInt64 = 7
)

// ValueInfoProto, TypeProto, TypeProto.Tensor, TensorShapeProto fields.
const (
	fValueInfoName   protowire.Number = 1
	fValueInfoType   protowire.Number = 2
	fTypeTensor      protowire.Number = 1
	fTypeTensorElem  protowire.Number = 1
	fTypeTensorShape protowire.Number = 2
	fShapeDim        protowire.Number = 1
	fDimValue        protowire.Number = 1
	fDimParam        protowire.Number = 2
)
