/* Fake NvInfer.h: only what trt_shim.cpp uses, with the signatures of
 * TensorRT 8.5.2 or 10.3 (FAKE_TRT_MAJOR=8 or 10), including 10's
 * Dims64, v_1_0 calibrator classes and deprecations. Implemented by
 * ../fake.cpp; see fake_test.go. */
#pragma once
#include <cstddef>
#include <cstdint>
#include "NvInferVersion.h"
#include <cuda_runtime_api.h>
#define TRT_DEPRECATED __attribute__((deprecated))
#define TRT_DEPRECATED_ENUM __attribute__((deprecated))
extern "C" int32_t getInferLibVersion() noexcept;
extern "C" void* createInferBuilder_INTERNAL(void* logger, int32_t version) noexcept;
extern "C" void* createInferRuntime_INTERNAL(void* logger, int32_t version) noexcept;
namespace nvinfer1 {
using AsciiChar = char;
class Dims32 { public: static constexpr int32_t MAX_DIMS{8}; int32_t nbDims; int32_t d[MAX_DIMS]; };
class Dims64 { public: static constexpr int32_t MAX_DIMS{8}; int32_t nbDims; int64_t d[MAX_DIMS]; };
#if NV_TENSORRT_MAJOR >= 10
using Dims = Dims64;
#else
using Dims = Dims32;
#endif
enum class DataType : int32_t { kFLOAT = 0, kHALF = 1, kINT8 = 2, kINT32 = 3, kBOOL = 4 };
enum class TensorIOMode : int32_t { kNONE = 0, kINPUT = 1, kOUTPUT = 2 };
class ILogger {
public:
    enum class Severity : int32_t { kINTERNAL_ERROR = 0, kERROR = 1, kWARNING = 2, kINFO = 3, kVERBOSE = 4 };
    virtual void log(Severity severity, AsciiChar const* msg) noexcept = 0;
    ILogger() = default;
    virtual ~ILogger() = default;
protected:
    ILogger(ILogger const&) = default;
    ILogger(ILogger&&) = default;
    ILogger& operator=(ILogger const&) & = default;
    ILogger& operator=(ILogger&&) & = default;
};
class INoCopy {
protected:
    INoCopy() = default;
    virtual ~INoCopy() = default;
    INoCopy(const INoCopy&) = delete;
    INoCopy& operator=(const INoCopy&) = delete;
};
class IHostMemory : public INoCopy {
public:
    virtual ~IHostMemory() noexcept = default;
    void* data() const noexcept;
    std::size_t size() const noexcept;
};
class ITensor : public INoCopy {
public:
    Dims getDimensions() const noexcept;
protected:
    virtual ~ITensor() noexcept = default;
};
class INetworkDefinition : public INoCopy {
public:
    virtual ~INetworkDefinition() noexcept = default;
    int32_t getNbInputs() const noexcept;
    ITensor* getInput(int32_t index) const noexcept;
};
using NetworkDefinitionCreationFlags = uint32_t;
enum class NetworkDefinitionCreationFlag : int32_t {
#if NV_TENSORRT_MAJOR >= 10
    kEXPLICIT_BATCH TRT_DEPRECATED_ENUM = 0,
#else
    kEXPLICIT_BATCH = 0,
#endif
};
enum class MemoryPoolType : int32_t { kWORKSPACE = 0, kDLA_MANAGED_SRAM = 1 };
enum class BuilderFlag : int32_t {
    kFP16 = 0,
#if NV_TENSORRT_MAJOR >= 10
    kINT8 TRT_DEPRECATED_ENUM = 1,
#else
    kINT8 = 1,
#endif
    kTF32 = 7,
};
enum class CalibrationAlgoType : int32_t { kLEGACY_CALIBRATION = 0, kENTROPY_CALIBRATION = 1, kENTROPY_CALIBRATION_2 = 2, kMINMAX_CALIBRATION = 3 };
#if NV_TENSORRT_MAJOR >= 10
struct InterfaceInfo { char const* kind; int32_t major; int32_t minor; };
class IVersionedInterface {
public:
    virtual InterfaceInfo getInterfaceInfo() const noexcept = 0;
    virtual ~IVersionedInterface() noexcept = default;
};
namespace v_1_0 {
class TRT_DEPRECATED IInt8Calibrator : public IVersionedInterface {
public:
    virtual int32_t getBatchSize() const noexcept = 0;
    virtual bool getBatch(void* bindings[], char const* names[], int32_t nbBindings) noexcept = 0;
    virtual void const* readCalibrationCache(std::size_t& length) noexcept = 0;
    virtual void writeCalibrationCache(void const* ptr, std::size_t length) noexcept = 0;
    virtual CalibrationAlgoType getAlgorithm() noexcept = 0;
    ~IInt8Calibrator() noexcept override = default;
};
class TRT_DEPRECATED IInt8EntropyCalibrator2 : public IInt8Calibrator {
public:
    InterfaceInfo getInterfaceInfo() const noexcept override { return InterfaceInfo{"IInt8EntropyCalibrator2", 1, 0}; }
    CalibrationAlgoType getAlgorithm() noexcept override { return CalibrationAlgoType::kENTROPY_CALIBRATION_2; }
    ~IInt8EntropyCalibrator2() noexcept override = default;
};
}
using IInt8Calibrator = v_1_0::IInt8Calibrator;
using IInt8EntropyCalibrator2 = v_1_0::IInt8EntropyCalibrator2;
#else
class IInt8Calibrator {
public:
    virtual int32_t getBatchSize() const noexcept = 0;
    virtual bool getBatch(void* bindings[], char const* names[], int32_t nbBindings) noexcept = 0;
    virtual void const* readCalibrationCache(std::size_t& length) noexcept = 0;
    virtual void writeCalibrationCache(void const* ptr, std::size_t length) noexcept = 0;
    virtual CalibrationAlgoType getAlgorithm() noexcept = 0;
    virtual ~IInt8Calibrator() noexcept = default;
};
class IInt8EntropyCalibrator2 : public IInt8Calibrator {
public:
    CalibrationAlgoType getAlgorithm() noexcept override { return CalibrationAlgoType::kENTROPY_CALIBRATION_2; }
    virtual ~IInt8EntropyCalibrator2() noexcept = default;
};
#endif
class IBuilderConfig : public INoCopy {
public:
    virtual ~IBuilderConfig() noexcept = default;
    void setMemoryPoolLimit(MemoryPoolType pool, std::size_t poolSize) noexcept;
    void setFlag(BuilderFlag builderFlag) noexcept;
    void clearFlag(BuilderFlag builderFlag) noexcept;
#if NV_TENSORRT_MAJOR >= 10
    TRT_DEPRECATED void setInt8Calibrator(IInt8Calibrator* calibrator) noexcept;
#else
    void setInt8Calibrator(IInt8Calibrator* calibrator) noexcept;
#endif
};
class IBuilder : public INoCopy {
public:
    virtual ~IBuilder() noexcept = default;
    INetworkDefinition* createNetworkV2(NetworkDefinitionCreationFlags flags) noexcept;
    IBuilderConfig* createBuilderConfig() noexcept;
    IHostMemory* buildSerializedNetwork(INetworkDefinition& network, IBuilderConfig& config) noexcept;
};
#if NV_TENSORRT_MAJOR >= 10
enum class ExecutionContextAllocationStrategy : int32_t { kSTATIC = 0, kON_PROFILE_CHANGE = 1, kUSER_MANAGED = 2 };
#endif
class IExecutionContext : public INoCopy {
public:
    virtual ~IExecutionContext() noexcept = default;
    bool setTensorAddress(char const* tensorName, void* data) noexcept;
    bool enqueueV3(cudaStream_t stream) noexcept;
};
class ICudaEngine : public INoCopy {
public:
    virtual ~ICudaEngine() noexcept = default;
    int32_t getNbIOTensors() const noexcept;
    char const* getIOTensorName(int32_t index) const noexcept;
    Dims getTensorShape(char const* tensorName) const noexcept;
    DataType getTensorDataType(char const* tensorName) const noexcept;
    TensorIOMode getTensorIOMode(char const* tensorName) const noexcept;
#if NV_TENSORRT_MAJOR >= 10
    IExecutionContext* createExecutionContext(ExecutionContextAllocationStrategy strategy = ExecutionContextAllocationStrategy::kSTATIC) noexcept;
#else
    IExecutionContext* createExecutionContext() noexcept;
#endif
};
class IRuntime : public INoCopy {
public:
    virtual ~IRuntime() noexcept = default;
    ICudaEngine* deserializeCudaEngine(void const* blob, std::size_t size) noexcept;
};
namespace {
inline IBuilder* createInferBuilder(ILogger& logger) noexcept { return static_cast<IBuilder*>(createInferBuilder_INTERNAL(&logger, 0)); }
inline IRuntime* createInferRuntime(ILogger& logger) noexcept { return static_cast<IRuntime*>(createInferRuntime_INTERNAL(&logger, 0)); }
}
}
