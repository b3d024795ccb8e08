/*
 * trt_shim.h: the extern "C" surface of trt_shim.cpp, the only code that
 * touches TensorRT's C++ API. Plain C types only; Go calls these through
 * cgo (trt.go). Every function catches every C++ exception; those that
 * can fail return 0 on success and -1 on failure with a message in err.
 *
 * The plan cache (file names, key, atomic writes) lives in Go: this layer
 * builds a serialized plan from an ONNX file and loads an engine from one.
 */
#ifndef Y7TRT_SHIM_H
#define Y7TRT_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define Y7TRT_MAX_DIMS 8 /* nvinfer1::Dims::MAX_DIMS in 8.5 and 10.x */

/* Precision of y7trt_build. */
#define Y7TRT_FP32 0
#define Y7TRT_FP16 1
#define Y7TRT_INT8 2 /* INT8 with FP16 fallback, entropy calibration */

typedef struct y7trt_engine y7trt_engine;

/* getInferLibVersion() of the loaded libnvinfer: 8.x is M*1000+m*100+p
 * (8502), 10.x is M*10000+m*100+p (100300). */
int y7trt_version(void);

/* The NvInferVersion.h this shim was compiled against (8.5.2.2). */
void y7trt_header_version(int *major, int *minor, int *patch, int *build);

/* The current CUDA device: name (NUL-terminated) and compute capability. */
int y7trt_device(char *name, int namelen, int *major, int *minor, char *err, int errlen);

/* y7trt_build parses onnx_path and builds a serialized plan with the given
 * precision and workspace limit (0: TensorRT's default). INT8 reads
 * calib_files (n_calib raw float32 tensors shaped like the network input,
 * batch 1) through an IInt8EntropyCalibrator2, and reads and writes the
 * calibration cache calib_cache (NULL or "": none). On success *plan is a
 * malloc'd copy of the plan (free it with y7trt_free) of *plan_size bytes.
 * TensorRT's warnings and errors are appended to log (NUL-terminated,
 * truncated to loglen). */
int y7trt_build(const char *onnx_path, int precision, const char *const *calib_files, int n_calib,
                const char *calib_cache, size_t workspace_bytes, void **plan, size_t *plan_size,
                char *log, int loglen, char *err, int errlen);

void y7trt_free(void *p);

/* y7trt_load deserializes a plan, checks its I/O (one float32 input,
 * static float32 outputs), creates the execution context, the stream, and
 * device and pinned host buffers for every I/O tensor. Outputs are ordered
 * by element count, largest first (p3, p4, p5). NULL on failure, with
 * TensorRT's own messages (e.g. "Version tag does not match") in err;
 * *deserialized says whether the failure came after deserialization (a
 * rebuilt plan would fail the same way). */
y7trt_engine *y7trt_load(const void *plan, size_t plan_size, int *deserialized, char *err, int errlen);

/* The input's dims (rank in *rank, at most Y7TRT_MAX_DIMS) and the number
 * of outputs. */
int y7trt_input(const y7trt_engine *e, int64_t *dims, int *rank, int *n_outputs);

/* Output i's dims and tensor name. */
int y7trt_output(const y7trt_engine *e, int i, int64_t *dims, int *rank, char *name, int namelen);

/* The engine's pinned host buffers (cudaMallocHost): the input, and an
 * array of y7trt_input's n_outputs output pointers. Valid until close. */
float *y7trt_host_input(y7trt_engine *e);
float *const *y7trt_host_outputs(y7trt_engine *e);

/* y7trt_infer copies input (host memory, the input's element count) to the
 * device, runs enqueueV3 on the engine's stream, copies every output i to
 * outputs[i] (host memory, output i's element count) and synchronizes.
 * Pinned buffers (y7trt_host_*) make the copies asynchronous DMA. */
int y7trt_infer(y7trt_engine *e, const float *input, float *const *outputs, char *err, int errlen);

/* Moves the warnings TensorRT logged since the engine was loaded (or since
 * the last call) into buf; returns their length before truncation. */
int y7trt_take_log(y7trt_engine *e, char *buf, int len);

void y7trt_close(y7trt_engine *e);

#ifdef __cplusplus
}
#endif

#endif
