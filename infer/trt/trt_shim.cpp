//go:build tensorrt && cgo

// trt_shim.cpp: TensorRT behind the plain-C surface of trt_shim.h.
//
// Only APIs present in both TensorRT 8.5 (JetPack 5) and 10.x (JetPack
// 6.1+) are used: the named-tensor API (getNbIOTensors, getTensorShape,
// setTensorAddress, enqueueV3; new in 8.5), buildSerializedNetwork,
// setMemoryPoolLimit, and delete instead of destroy(). Dims is Dims32 in 8.5
// and Dims64 in 10, so extents are read through auto and widened to int64.
// TensorRT's calls are noexcept; our own code may throw (std::bad_alloc,
// std::runtime_error), and every extern "C" function catches everything.

#include "trt_shim.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
#include <NvInfer.h>
#include <NvOnnxParser.h>
#pragma GCC diagnostic pop
#include <cuda_runtime_api.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

using Severity = nvinfer1::ILogger::Severity;

// put copies s into the caller's buffer, truncated and NUL-terminated.
void put(char *dst, int len, const char *s) noexcept {
    if (dst == nullptr || len <= 0) return;
    size_t n = s ? std::strlen(s) : 0;
    n = std::min(n, static_cast<size_t>(len - 1));
    if (n) std::memcpy(dst, s, n);
    dst[n] = '\0';
}

// Logger keeps TensorRT's warnings and errors (INFO and VERBOSE are
// dropped). The builder may log from its worker threads.
class Logger final : public nvinfer1::ILogger {
public:
    void log(Severity severity, const char *msg) noexcept override {
        if (severity > Severity::kWARNING || msg == nullptr) return;
        try {
            std::lock_guard<std::mutex> lock(mu_);
            const bool error = severity <= Severity::kERROR; // kINTERNAL_ERROR or kERROR
            append(text_, error ? "error: " : "warning: ", msg);
            if (error) {
                if (errors_.size() >= kCap) errors_.erase(0, errors_.size() / 2); // keep the latest errors
                append(errors_, "", msg);
            }
        } catch (...) {
        }
    }
    // note adds a line of our own ("info: ...").
    void note(const std::string &msg) {
        std::lock_guard<std::mutex> lock(mu_);
        append(text_, "info: ", msg.c_str());
    }
    // take returns and clears the messages, one per line.
    std::string take() {
        std::lock_guard<std::mutex> lock(mu_);
        std::string s;
        s.swap(text_);
        return s;
    }
    // takeErrors returns and clears the errors, joined by "; ".
    std::string takeErrors() {
        std::lock_guard<std::mutex> lock(mu_);
        std::string s;
        s.swap(errors_);
        while (!s.empty() && s.back() == '\n') s.pop_back();
        for (size_t i = 0; (i = s.find('\n', i)) != std::string::npos;) s.replace(i, 1, "; ");
        return s;
    }

private:
    static constexpr size_t kCap = 32 << 10; // text_ keeps the first messages: they name the cause
    static void append(std::string &s, const char *prefix, const char *msg) {
        if (s.size() >= kCap) return;
        s += prefix;
        s += msg;
        if (s.empty() || s.back() != '\n') s += '\n';
    }
    std::mutex mu_;
    std::string text_, errors_;
};

[[noreturn]] void fail(const std::string &what, Logger &log) {
    std::string errs = log.takeErrors();
    throw std::runtime_error(errs.empty() ? what : what + ": " + errs);
}

void ck(cudaError_t rc, const char *what) {
    if (rc != cudaSuccess)
        throw std::runtime_error(std::string(what) + ": " + cudaGetErrorName(rc) + " (" + cudaGetErrorString(rc) + ")");
}

// guard runs f, turning any exception into -1 and a message in err.
template <typename F>
int guard(char *err, int errlen, F &&f) noexcept {
    try {
        f();
        return 0;
    } catch (const std::exception &x) {
        put(err, errlen, x.what());
    } catch (...) {
        put(err, errlen, "unknown C++ exception");
    }
    return -1;
}

// readExactly reads a file that must hold exactly n bytes; "" on success.
std::string readExactly(const std::string &path, void *dst, size_t n) {
    FILE *f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) return std::strerror(errno);
    const size_t got = std::fread(dst, 1, n, f);
    const bool more = std::fgetc(f) != EOF;
    std::fclose(f);
    if (got != n || more) return "not exactly " + std::to_string(n) + " bytes (the network input as float32)";
    return "";
}

bool readAll(const std::string &path, std::vector<char> &out) {
    FILE *f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) return false;
    char buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out.insert(out.end(), buf, buf + n);
    const bool ok = !std::ferror(f);
    std::fclose(f);
    return ok;
}

// writeAtomic writes to path.tmp<pid> and renames it over path.
bool writeAtomic(const std::string &path, const void *p, size_t n) {
    const std::string tmp = path + ".tmp" + std::to_string(static_cast<long>(getpid()));
    FILE *f = std::fopen(tmp.c_str(), "wb");
    if (f == nullptr) return false;
    bool ok = std::fwrite(p, 1, n, f) == n;
    ok = std::fflush(f) == 0 && ok;
    ok = fsync(fileno(f)) == 0 && ok;
    ok = std::fclose(f) == 0 && ok;
    if (ok && std::rename(tmp.c_str(), path.c_str()) == 0) return true;
    std::remove(tmp.c_str());
    return false;
}

// IInt8EntropyCalibrator2 (and setInt8Calibrator, BuilderFlag::kINT8) are
// deprecated from TensorRT 10.1, which prefers explicit Q/DQ quantization,
// and gone in 11; they still work in 10.x and are the only INT8 path of
// 8.5, so the warnings are silenced here and around their use.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
class Calibrator final : public nvinfer1::IInt8EntropyCalibrator2 {
public:
    Calibrator(std::vector<std::string> files, size_t count, std::string cache, Logger &log)
        : files_(std::move(files)), count_(count), cache_(std::move(cache)), log_(log) {}
    ~Calibrator() override {
        if (dev_ != nullptr) cudaFree(dev_);
    }
    Calibrator(const Calibrator &) = delete;
    Calibrator &operator=(const Calibrator &) = delete;

    // check stats every file before the (long) build starts.
    void check() const {
        for (const std::string &f : files_) {
            struct stat st;
            if (stat(f.c_str(), &st) != 0) throw std::runtime_error("calibration tensor " + f + ": " + std::strerror(errno));
            if (static_cast<size_t>(st.st_size) != count_ * sizeof(float))
                throw std::runtime_error("calibration tensor " + f + " has " + std::to_string(st.st_size) +
                                         " bytes, the network input needs " + std::to_string(count_ * sizeof(float)));
        }
    }
    const std::string &error() const { return error_; }

    int32_t getBatchSize() const noexcept override { return 1; } // explicit batch: the batch is in the dims

    bool getBatch(void *bindings[], const char *names[], int32_t nbBindings) noexcept override {
        (void)names;
        try {
            if (next_ >= files_.size() || !error_.empty()) return false;
            if (nbBindings != 1) {
                error_ = "the network has " + std::to_string(nbBindings) + " inputs, want 1";
                return false;
            }
            const std::string &path = files_[next_++];
            host_.resize(count_);
            std::string why = readExactly(path, host_.data(), count_ * sizeof(float));
            if (!why.empty()) {
                error_ = "calibration tensor " + path + ": " + why;
                return false;
            }
            if (dev_ == nullptr) ck(cudaMalloc(&dev_, count_ * sizeof(float)), "cudaMalloc calibration buffer");
            ck(cudaMemcpy(dev_, host_.data(), count_ * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy calibration tensor");
            bindings[0] = dev_;
            return true;
        } catch (const std::exception &x) {
            error_ = x.what();
        } catch (...) {
            error_ = "unknown C++ exception";
        }
        return false;
    }

    const void *readCalibrationCache(std::size_t &length) noexcept override {
        length = 0;
        try {
            blob_.clear();
            if (cache_.empty() || !readAll(cache_, blob_) || blob_.empty()) return nullptr;
            log_.note("using the INT8 calibration cache " + cache_);
            length = blob_.size();
            return blob_.data();
        } catch (...) {
            return nullptr;
        }
    }

    void writeCalibrationCache(const void *ptr, std::size_t length) noexcept override {
        try {
            if (!cache_.empty() && !writeAtomic(cache_, ptr, length))
                log_.log(Severity::kWARNING, ("cannot write the INT8 calibration cache " + cache_).c_str());
            else if (!cache_.empty())
                log_.note("wrote the INT8 calibration cache " + cache_);
        } catch (...) {
        }
    }

private:
    std::vector<std::string> files_;
    size_t count_;
    std::string cache_;
    Logger &log_;
    size_t next_ = 0;
    void *dev_ = nullptr;
    std::vector<float> host_;
    std::vector<char> blob_;
    std::string error_;
};
#pragma GCC diagnostic pop

// Tensor is one I/O tensor of a loaded engine with its buffers.
struct Tensor {
    std::string name;
    std::vector<int64_t> dims;
    size_t count = 0;     // elements
    void *dev = nullptr;   // cudaMalloc
    float *host = nullptr; // cudaMallocHost (pinned)
};

} // namespace

struct y7trt_engine {
    Logger logger; // first: destroyed last, after the runtime that logs to it
    std::unique_ptr<nvinfer1::IRuntime> runtime;
    std::unique_ptr<nvinfer1::ICudaEngine> engine;
    std::unique_ptr<nvinfer1::IExecutionContext> context;
    cudaStream_t stream = nullptr;
    Tensor input;
    std::vector<Tensor> outputs;
    std::vector<float *> hostOutputs;

    ~y7trt_engine() {
        if (stream != nullptr) cudaStreamSynchronize(stream);
        release(input);
        for (Tensor &t : outputs) release(t);
        if (stream != nullptr) cudaStreamDestroy(stream);
        context.reset(); // context, engine, runtime: in this order
        engine.reset();
        runtime.reset();
    }
    static void release(Tensor &t) {
        if (t.dev != nullptr) cudaFree(t.dev);
        if (t.host != nullptr) cudaFreeHost(t.host);
        t.dev = nullptr;
        t.host = nullptr;
    }
    void alloc(Tensor &t) {
        ck(cudaMalloc(&t.dev, t.count * sizeof(float)), "cudaMalloc");
        void *p = nullptr;
        ck(cudaMallocHost(&p, t.count * sizeof(float)), "cudaMallocHost");
        t.host = static_cast<float *>(p);
        if (!context->setTensorAddress(t.name.c_str(), t.dev)) fail("setTensorAddress " + t.name, logger);
    }
    // setup reads the I/O tensors, orders the outputs largest first and
    // allocates everything. Called once, after deserialization.
    void setup() {
        bool haveInput = false;
        const int32_t n = engine->getNbIOTensors();
        for (int32_t i = 0; i < n; i++) {
            const char *name = engine->getIOTensorName(i);
            Tensor t;
            t.name = name;
            auto d = engine->getTensorShape(name); // Dims32 (8.5) or Dims64 (10)
            if (d.nbDims <= 0 || d.nbDims > Y7TRT_MAX_DIMS)
                throw std::runtime_error("tensor " + t.name + " has rank " + std::to_string(d.nbDims));
            t.count = 1;
            for (int32_t k = 0; k < d.nbDims; k++) {
                const int64_t v = static_cast<int64_t>(d.d[k]);
                if (v <= 0)
                    throw std::runtime_error("tensor " + t.name + " has a dynamic or empty dimension (" + std::to_string(v) +
                                             "): export the ONNX with a fixed input size and batch 1");
                t.dims.push_back(v);
                t.count *= static_cast<size_t>(v);
            }
            if (engine->getTensorDataType(name) != nvinfer1::DataType::kFLOAT)
                throw std::runtime_error("tensor " + t.name + " is not float32");
            if (engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT) {
                if (haveInput) throw std::runtime_error("the engine has more than one input (" + input.name + ", " + t.name + ")");
                input = std::move(t);
                haveInput = true;
            } else {
                outputs.push_back(std::move(t));
            }
        }
        if (!haveInput || outputs.empty()) throw std::runtime_error("the engine needs one input and at least one output");
        std::stable_sort(outputs.begin(), outputs.end(), [](const Tensor &a, const Tensor &b) { return a.count > b.count; });

        context.reset(engine->createExecutionContext());
        if (!context) fail("createExecutionContext", logger);
        ck(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate");
        alloc(input); // setTensorAddress once: the addresses never change
        for (Tensor &t : outputs) {
            alloc(t);
            hostOutputs.push_back(t.host);
        }
    }
};

extern "C" {

int y7trt_version(void) { return static_cast<int>(getInferLibVersion()); }

void y7trt_header_version(int *major, int *minor, int *patch, int *build) {
    *major = NV_TENSORRT_MAJOR;
    *minor = NV_TENSORRT_MINOR;
    *patch = NV_TENSORRT_PATCH;
    *build = NV_TENSORRT_BUILD;
}

int y7trt_device(char *name, int namelen, int *major, int *minor, char *err, int errlen) {
    return guard(err, errlen, [&] {
        int dev = 0;
        ck(cudaGetDevice(&dev), "cudaGetDevice");
        cudaDeviceProp prop;
        std::memset(&prop, 0, sizeof prop);
        ck(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
        put(name, namelen, prop.name);
        *major = prop.major;
        *minor = prop.minor;
    });
}

int y7trt_build(const char *onnx_path, int precision, const char *const *calib_files, int n_calib,
                const char *calib_cache, size_t workspace_bytes, void **plan, size_t *plan_size,
                char *log, int loglen, char *err, int errlen) {
    Logger logger; // outlives every TensorRT object below
    const int rc = guard(err, errlen, [&] {
        *plan = nullptr;
        *plan_size = 0;
        if (precision < Y7TRT_FP32 || precision > Y7TRT_INT8) throw std::runtime_error("invalid precision " + std::to_string(precision));
        std::unique_ptr<nvinfer1::IBuilder> builder(nvinfer1::createInferBuilder(logger));
        if (!builder) fail("createInferBuilder", logger);
#if NV_TENSORRT_MAJOR >= 10
        const uint32_t flags = 0; // explicit batch is the only mode
#else
        const uint32_t flags = 1U << static_cast<uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kEXPLICIT_BATCH);
#endif
        std::unique_ptr<nvinfer1::INetworkDefinition> network(builder->createNetworkV2(flags));
        if (!network) fail("createNetworkV2", logger);
        std::unique_ptr<nvonnxparser::IParser> parser(nvonnxparser::createParser(*network, logger));
        if (!parser) fail("createParser", logger);
        if (!parser->parseFromFile(onnx_path, static_cast<int>(Severity::kWARNING))) {
            std::string msg = std::string("parsing ") + onnx_path;
            for (int i = 0; i < parser->getNbErrors(); i++) {
                const nvonnxparser::IParserError *pe = parser->getError(i);
                msg += "; node " + std::to_string(pe->node()) + ": " + pe->desc();
            }
            fail(msg, logger);
        }
        if (network->getNbInputs() != 1)
            throw std::runtime_error("the network has " + std::to_string(network->getNbInputs()) + " inputs, want 1");

        std::unique_ptr<Calibrator> calib; // before config: config points to it
        std::unique_ptr<nvinfer1::IBuilderConfig> config(builder->createBuilderConfig());
        if (!config) fail("createBuilderConfig", logger);
        if (workspace_bytes > 0) config->setMemoryPoolLimit(nvinfer1::MemoryPoolType::kWORKSPACE, workspace_bytes);
        if (precision == Y7TRT_FP32) config->clearFlag(nvinfer1::BuilderFlag::kTF32); // TF32 is on by default (Ampere: Orin)
        if (precision >= Y7TRT_FP16) config->setFlag(nvinfer1::BuilderFlag::kFP16);
        if (precision == Y7TRT_INT8) {
            if (calib_files == nullptr || n_calib <= 0) throw std::runtime_error("int8 needs calibration tensors");
            auto d = network->getInput(0)->getDimensions();
            size_t count = 1;
            for (int32_t k = 0; k < d.nbDims; k++) {
                if (d.d[k] <= 0) throw std::runtime_error("int8 calibration needs a fixed input shape");
                count *= static_cast<size_t>(d.d[k]);
            }
            calib.reset(new Calibrator(std::vector<std::string>(calib_files, calib_files + n_calib), count,
                                       calib_cache ? calib_cache : "", logger));
            calib->check();
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
            config->setFlag(nvinfer1::BuilderFlag::kINT8);
            config->setInt8Calibrator(calib.get());
#pragma GCC diagnostic pop
        }
        std::unique_ptr<nvinfer1::IHostMemory> mem(builder->buildSerializedNetwork(*network, *config));
        if (calib && !calib->error().empty()) throw std::runtime_error("int8 calibration: " + calib->error());
        if (!mem || mem->size() == 0) fail("buildSerializedNetwork", logger);
        void *p = std::malloc(mem->size());
        if (p == nullptr) throw std::bad_alloc();
        std::memcpy(p, mem->data(), mem->size());
        *plan = p;
        *plan_size = mem->size();
    });
    try {
        put(log, loglen, logger.take().c_str());
    } catch (...) {
        put(log, loglen, "");
    }
    return rc;
}

void y7trt_free(void *p) { std::free(p); }

y7trt_engine *y7trt_load(const void *plan, size_t plan_size, int *deserialized, char *err, int errlen) {
    y7trt_engine *out = nullptr;
    *deserialized = 0;
    guard(err, errlen, [&] {
        std::unique_ptr<y7trt_engine> e(new y7trt_engine());
        e->runtime.reset(nvinfer1::createInferRuntime(e->logger));
        if (!e->runtime) fail("createInferRuntime", e->logger);
        e->engine.reset(e->runtime->deserializeCudaEngine(plan, plan_size));
        if (!e->engine) fail("deserializeCudaEngine", e->logger); // e.g. "Version tag does not match"
        *deserialized = 1;
        e->setup();
        out = e.release();
    });
    return out;
}

int y7trt_input(const y7trt_engine *e, int64_t *dims, int *rank, int *n_outputs) {
    if (e == nullptr) return -1;
    *rank = static_cast<int>(e->input.dims.size());
    std::copy(e->input.dims.begin(), e->input.dims.end(), dims);
    *n_outputs = static_cast<int>(e->outputs.size());
    return 0;
}

int y7trt_output(const y7trt_engine *e, int i, int64_t *dims, int *rank, char *name, int namelen) {
    if (e == nullptr || i < 0 || static_cast<size_t>(i) >= e->outputs.size()) return -1;
    const Tensor &t = e->outputs[static_cast<size_t>(i)];
    *rank = static_cast<int>(t.dims.size());
    std::copy(t.dims.begin(), t.dims.end(), dims);
    put(name, namelen, t.name.c_str());
    return 0;
}

float *y7trt_host_input(y7trt_engine *e) { return e ? e->input.host : nullptr; }

float *const *y7trt_host_outputs(y7trt_engine *e) { return e ? e->hostOutputs.data() : nullptr; }

int y7trt_infer(y7trt_engine *e, const float *input, float *const *outputs, char *err, int errlen) {
    const int rc = guard(err, errlen, [&] {
        if (e == nullptr || input == nullptr || outputs == nullptr) throw std::runtime_error("null engine or buffer");
        ck(cudaMemcpyAsync(e->input.dev, input, e->input.count * sizeof(float), cudaMemcpyHostToDevice, e->stream),
           "copying the input to the device");
        if (!e->context->enqueueV3(e->stream)) fail("enqueueV3", e->logger);
        for (size_t i = 0; i < e->outputs.size(); i++) {
            const Tensor &t = e->outputs[i];
            ck(cudaMemcpyAsync(outputs[i], t.dev, t.count * sizeof(float), cudaMemcpyDeviceToHost, e->stream),
               "copying an output to the host");
        }
        ck(cudaStreamSynchronize(e->stream), "running the engine");
    });
    if (rc != 0 && e != nullptr && e->stream != nullptr) cudaStreamSynchronize(e->stream); // no copy may land after we return
    return rc;
}

int y7trt_take_log(y7trt_engine *e, char *buf, int len) {
    if (e == nullptr) return 0;
    try {
        const std::string s = e->logger.take();
        put(buf, len, s.c_str());
        return static_cast<int>(s.size());
    } catch (...) {
        put(buf, len, "");
        return 0;
    }
}

void y7trt_close(y7trt_engine *e) {
    try {
        delete e;
    } catch (...) {
    }
}

} // extern "C"
