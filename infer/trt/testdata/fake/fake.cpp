// fake.cpp: a fake TensorRT, ONNX parser and CUDA runtime implementing the
// headers in include/, so that trt_shim.cpp and trt.go run on any machine
// (fake_test.go builds it as libnvinfer.so, with libnvonnxparser.so and
// libcudart.so as links to it). Device memory is host memory.
//
// A fake ONNX file is the text "fake-onnx S NC [grid]": input 1x3xSxS,
// raw outputs 1x3x(S/8)x(S/8)x(5+NC) ... listed in the engine in the
// order p4, input, p5, p3 (so the shim must sort them); "grid" makes one
// decoded 1xNx(5+NC) output instead. Running the engine writes
// out_L[j] = input[j % len(input)] + 10*L (L = 0, 1, 2 for p3, p4, p5) and
// fails when input[0] is NaN. A plan is the text
// "FAKEPLAN <lib version> S NC GRID <builder flags> <workspace>".

#include <NvInfer.h>
#include <NvOnnxParser.h>
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

using namespace nvinfer1;
using Severity = ILogger::Severity;

extern "C" int32_t getInferLibVersion() noexcept { return NV_TENSORRT_MAJOR >= 10 ? 100300 : 8502; }

namespace {

struct FakeTensor : ITensor {
    Dims dims{};
};

struct FakeNetwork : INetworkDefinition {
    int s = 0, nc = 0, grid = 0;
    bool parsed = false;
    FakeTensor input;
};

struct FakeConfig : IBuilderConfig {
    uint32_t flags = 1u << static_cast<int>(BuilderFlag::kTF32); // TF32 is on by default
    size_t workspace = 0;
    IInt8Calibrator *calib = nullptr;
};

struct FakeHostMemory : IHostMemory {
    std::string buf;
};

struct FakeBuilder : IBuilder {
    ILogger *log = nullptr;
};

struct IO {
    std::string name;
    bool input;
    std::vector<int64_t> dims;
    int level;
};

struct FakeEngine : ICudaEngine {
    ILogger *log = nullptr;
    std::vector<IO> io;
};

struct FakeContext : IExecutionContext {
    const FakeEngine *eng = nullptr;
    std::map<std::string, void *> addr;
};

struct FakeRuntime : IRuntime {
    ILogger *log = nullptr;
};

struct FakeParserError : nvonnxparser::IParserError {
    std::string d;
    const char *desc() const override { return d.c_str(); }
    int node() const override { return 7; }
};

struct FakeParser : nvonnxparser::IParser {
    FakeNetwork *net = nullptr;
    ILogger *log = nullptr;
    std::vector<FakeParserError> errors;
    bool parseFromFile(const char *path, int) noexcept override {
        FILE *f = std::fopen(path, "r");
        char mode[16] = "";
        int n = f ? std::fscanf(f, "fake-onnx %d %d %15s", &net->s, &net->nc, mode) : 0;
        if (f) std::fclose(f);
        if (n < 2) {
            errors.push_back(FakeParserError{});
            errors.back().d = "not a fake ONNX model";
            log->log(Severity::kERROR, "fake parser: failed to parse onnx file");
            return false;
        }
        net->grid = std::strcmp(mode, "grid") == 0;
        net->parsed = true;
        net->input.dims.nbDims = 4;
        net->input.dims.d[0] = 1;
        net->input.dims.d[1] = 3;
        net->input.dims.d[2] = net->s;
        net->input.dims.d[3] = net->s;
        return true;
    }
    int getNbErrors() const noexcept override { return static_cast<int>(errors.size()); }
    const nvonnxparser::IParserError *getError(int i) const noexcept override { return &errors[static_cast<size_t>(i)]; }
#if NV_TENSORRT_MAJOR < 10
    void destroy() override { delete this; }
#endif
};

} // namespace

extern "C" void *createInferBuilder_INTERNAL(void *logger, int32_t) noexcept {
    auto *b = new FakeBuilder;
    b->log = static_cast<ILogger *>(logger);
    return static_cast<IBuilder *>(b);
}

extern "C" void *createInferRuntime_INTERNAL(void *logger, int32_t) noexcept {
    auto *r = new FakeRuntime;
    r->log = static_cast<ILogger *>(logger);
    return static_cast<IRuntime *>(r);
}

extern "C" void *createNvOnnxParser_INTERNAL(void *network, void *logger, int) noexcept {
    auto *p = new FakeParser;
    p->net = static_cast<FakeNetwork *>(static_cast<INetworkDefinition *>(network));
    p->log = static_cast<ILogger *>(logger);
    return static_cast<nvonnxparser::IParser *>(p);
}

namespace nvinfer1 {

void *IHostMemory::data() const noexcept { return const_cast<char *>(static_cast<const FakeHostMemory *>(this)->buf.data()); }
std::size_t IHostMemory::size() const noexcept { return static_cast<const FakeHostMemory *>(this)->buf.size(); }
Dims ITensor::getDimensions() const noexcept { return static_cast<const FakeTensor *>(this)->dims; }

int32_t INetworkDefinition::getNbInputs() const noexcept { return static_cast<const FakeNetwork *>(this)->parsed ? 1 : 0; }
ITensor *INetworkDefinition::getInput(int32_t) const noexcept {
    return const_cast<FakeTensor *>(&static_cast<const FakeNetwork *>(this)->input);
}

void IBuilderConfig::setMemoryPoolLimit(MemoryPoolType, std::size_t n) noexcept { static_cast<FakeConfig *>(this)->workspace = n; }
void IBuilderConfig::setFlag(BuilderFlag f) noexcept { static_cast<FakeConfig *>(this)->flags |= 1u << static_cast<int>(f); }
void IBuilderConfig::clearFlag(BuilderFlag f) noexcept { static_cast<FakeConfig *>(this)->flags &= ~(1u << static_cast<int>(f)); }
void IBuilderConfig::setInt8Calibrator(IInt8Calibrator *c) noexcept { static_cast<FakeConfig *>(this)->calib = c; }

INetworkDefinition *IBuilder::createNetworkV2(NetworkDefinitionCreationFlags flags) noexcept {
    const uint32_t want = NV_TENSORRT_MAJOR >= 10 ? 0u : 1u; // kEXPLICIT_BATCH before 10
    if (flags != want) {
        static_cast<FakeBuilder *>(this)->log->log(Severity::kERROR, "fake: wrong network creation flags");
        return nullptr;
    }
    return new FakeNetwork;
}
IBuilderConfig *IBuilder::createBuilderConfig() noexcept { return new FakeConfig; }

IHostMemory *IBuilder::buildSerializedNetwork(INetworkDefinition &network, IBuilderConfig &config) noexcept {
    ILogger *log = static_cast<FakeBuilder *>(this)->log;
    auto &net = static_cast<FakeNetwork &>(network);
    auto &cfg = static_cast<FakeConfig &>(config);
    log->log(Severity::kINFO, "fake: an info message the shim drops");
    log->log(Severity::kWARNING, "fake: building");
    if (cfg.flags & (1u << static_cast<int>(BuilderFlag::kINT8))) {
        if (cfg.calib == nullptr) {
            log->log(Severity::kERROR, "fake: int8 without a calibrator");
            return nullptr;
        }
        size_t len = 0;
        if (cfg.calib->readCalibrationCache(len) == nullptr || len == 0) {
            int batches = 0;
            void *bindings[1] = {nullptr};
            const char *names[1] = {"images"};
            while (cfg.calib->getBatch(bindings, names, 1)) {
                if (bindings[0] == nullptr || std::isnan(static_cast<float *>(bindings[0])[0])) return nullptr;
                batches++;
            }
            if (batches == 0) {
                log->log(Severity::kERROR, "fake: calibration got no batches");
                return nullptr;
            }
            const std::string table = "fake calibration of " + std::to_string(batches) + " batches\n";
            cfg.calib->writeCalibrationCache(table.data(), table.size());
        }
    }
    auto *m = new FakeHostMemory;
    m->buf = "FAKEPLAN " + std::to_string(getInferLibVersion()) + " " + std::to_string(net.s) + " " + std::to_string(net.nc) +
             " " + std::to_string(net.grid) + " " + std::to_string(cfg.flags) + " " + std::to_string(cfg.workspace) + "\n";
    return m;
}

ICudaEngine *IRuntime::deserializeCudaEngine(void const *blob, std::size_t size) noexcept {
    ILogger *log = static_cast<FakeRuntime *>(this)->log;
    const std::string plan(static_cast<const char *>(blob), size);
    int version = 0, s = 0, nc = 0, grid = 0;
    if (std::sscanf(plan.c_str(), "FAKEPLAN %d %d %d %d", &version, &s, &nc, &grid) != 4) {
        log->log(Severity::kERROR, "fake: the plan's magic tag does not match");
        return nullptr;
    }
    if (version != getInferLibVersion()) {
        log->log(Severity::kERROR, "fake: Version tag does not match");
        return nullptr;
    }
    auto *e = new FakeEngine;
    e->log = log;
    const int64_t k = 5 + nc;
    if (grid) {
        const int64_t n = 3 * ((s / 8) * (s / 8) + (s / 16) * (s / 16) + (s / 32) * (s / 32));
        e->io = {{"images", true, {1, 3, s, s}, -1}, {"output", false, {1, n, k}, 0}};
        return e;
    }
    e->io = {{"out_p4", false, {1, 3, s / 16, s / 16, k}, 1},
             {"images", true, {1, 3, s, s}, -1},
             {"out_p5", false, {1, 3, s / 32, s / 32, k}, 2},
             {"out_p3", false, {1, 3, s / 8, s / 8, k}, 0}};
    return e;
}

static const IO *findIO(const FakeEngine *e, const char *name) {
    for (const IO &t : e->io)
        if (t.name == name) return &t;
    return nullptr;
}

int32_t ICudaEngine::getNbIOTensors() const noexcept { return static_cast<int32_t>(static_cast<const FakeEngine *>(this)->io.size()); }
char const *ICudaEngine::getIOTensorName(int32_t i) const noexcept {
    return static_cast<const FakeEngine *>(this)->io[static_cast<size_t>(i)].name.c_str();
}
Dims ICudaEngine::getTensorShape(char const *name) const noexcept {
    Dims d{};
    const IO *t = findIO(static_cast<const FakeEngine *>(this), name);
    d.nbDims = static_cast<int32_t>(t->dims.size());
    for (size_t i = 0; i < t->dims.size(); i++) d.d[i] = static_cast<decltype(d.d[0] + 0)>(t->dims[i]);
    return d;
}
DataType ICudaEngine::getTensorDataType(char const *) const noexcept { return DataType::kFLOAT; }
TensorIOMode ICudaEngine::getTensorIOMode(char const *name) const noexcept {
    const IO *t = findIO(static_cast<const FakeEngine *>(this), name);
    return t == nullptr ? TensorIOMode::kNONE : t->input ? TensorIOMode::kINPUT : TensorIOMode::kOUTPUT;
}
#if NV_TENSORRT_MAJOR >= 10
IExecutionContext *ICudaEngine::createExecutionContext(ExecutionContextAllocationStrategy) noexcept {
#else
IExecutionContext *ICudaEngine::createExecutionContext() noexcept {
#endif
    auto *c = new FakeContext;
    c->eng = static_cast<const FakeEngine *>(this);
    return c;
}

bool IExecutionContext::setTensorAddress(char const *name, void *data) noexcept {
    auto *c = static_cast<FakeContext *>(this);
    if (findIO(c->eng, name) == nullptr) return false;
    c->addr[name] = data;
    return true;
}

bool IExecutionContext::enqueueV3(cudaStream_t) noexcept {
    auto *c = static_cast<FakeContext *>(this);
    const IO *in = findIO(c->eng, "images");
    if (c->addr.size() != c->eng->io.size()) {
        c->eng->log->log(Severity::kERROR, "fake: not every tensor address is set");
        return false;
    }
    const float *x = static_cast<const float *>(c->addr["images"]);
    size_t n = 1;
    for (int64_t v : in->dims) n *= static_cast<size_t>(v);
    if (std::isnan(x[0])) {
        c->eng->log->log(Severity::kERROR, "fake: NaN input");
        return false;
    }
    for (const IO &t : c->eng->io) {
        if (t.input) continue;
        size_t m = 1;
        for (int64_t v : t.dims) m *= static_cast<size_t>(v);
        float *y = static_cast<float *>(c->addr[t.name]);
        for (size_t j = 0; j < m; j++) y[j] = x[j % n] + 10.0f * static_cast<float>(t.level);
    }
    return true;
}

} // namespace nvinfer1

// The CUDA runtime: host memory, synchronous copies, one fake device.
extern "C" {
cudaError_t cudaGetDevice(int *device) { *device = 0; return cudaSuccess; }
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *prop, int) {
    std::memset(prop, 0, sizeof *prop);
    std::strcpy(prop->name, "Fake Orin");
    prop->major = 8;
    prop->minor = 7;
    return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t n) { return (*p = std::calloc(1, n)) ? cudaSuccess : cudaErrorMemoryAllocation; }
cudaError_t cudaMallocHost(void **p, size_t n) { return cudaMalloc(p, n); }
cudaError_t cudaFree(void *p) { std::free(p); return cudaSuccess; }
cudaError_t cudaFreeHost(void *p) { std::free(p); return cudaSuccess; }
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, enum cudaMemcpyKind) { std::memmove(dst, src, n); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, enum cudaMemcpyKind k, cudaStream_t) { return cudaMemcpy(dst, src, n, k); }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned int) { *s = reinterpret_cast<cudaStream_t>(new char); return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t s) { delete reinterpret_cast<char *>(s); return cudaSuccess; }
const char *cudaGetErrorName(cudaError_t e) { return e == cudaSuccess ? "cudaSuccess" : "cudaErrorMemoryAllocation"; }
const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "out of memory"; }
}
