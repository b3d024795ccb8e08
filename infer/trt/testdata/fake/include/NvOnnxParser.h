/* Fake NvOnnxParser.h: what trt_shim.cpp uses (see NvInfer.h here). */
#pragma once
#include "NvInfer.h"
extern "C" void* createNvOnnxParser_INTERNAL(void* network, void* logger, int version) noexcept;
namespace nvonnxparser {
class IParserError {
public:
    virtual char const* desc() const = 0;
    virtual int node() const = 0;
protected:
    virtual ~IParserError() {}
};
class IParser {
public:
    virtual bool parseFromFile(const char* onnxModelFile, int verbosity) noexcept = 0;
    virtual int getNbErrors() const noexcept = 0;
    virtual IParserError const* getError(int index) const noexcept = 0;
#if NV_TENSORRT_MAJOR < 10
    TRT_DEPRECATED virtual void destroy() = 0;
#endif
    virtual ~IParser() noexcept = default;
};
namespace {
inline IParser* createParser(nvinfer1::INetworkDefinition& network, nvinfer1::ILogger& logger) noexcept { return static_cast<IParser*>(createNvOnnxParser_INTERNAL(&network, &logger, 0)); }
}
}
