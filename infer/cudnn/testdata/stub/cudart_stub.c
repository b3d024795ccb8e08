/*
 * cudart_stub.c: a CPU stand-in for the CUDA runtime (libcudart.so.12),
 * for the tests of package infer/cudnn on machines without a GPU
 * (build.sh builds it).
 *
 * "Device" memory is zeroed host memory (256-byte aligned), copies are
 * memcpy, streams are dummies: everything runs at once. The device the
 * stub pretends to be is an sm_90 with 132 SMs, 80 GiB of which 64 free.
 *
 * Environment: Y7STUB_DEVICES (the device count, default 1),
 * Y7STUB_INTEGRATED (cudaDevAttrIntegrated, default 0),
 * Y7STUB_RUNTIME_VERSION and Y7STUB_DRIVER_VERSION (default 12060 and
 * 12080), Y7STUB_FAIL (failure injection, see stub_fail).
 */
#include <stdlib.h>
#include <string.h>

#include "../../api.h"

/* cudaError_t */
#define E_OK 0
#define E_INVALID_VALUE 1
#define E_MEMORY_ALLOCATION 2
#define E_INVALID_MEMCPY_DIRECTION 21
#define E_NO_DEVICE 100
#define E_INVALID_DEVICE 101
#define E_INVALID_RESOURCE_HANDLE 400

#define GIB ((size_t)1 << 30)
#define FREE_BYTES (64 * GIB)
#define TOTAL_BYTES (80 * GIB)

/* ---- call counters and failure injection ---------------------------- */

/* F_<name>: the index of every exported CUDA runtime function. */
#define FN_ENUM_CUDART(name) F_##name,
#define FN_ENUM_CUDNN(name)
#define FN_ENUM_CUDA(name)
#define FN_ENUM(lib, name, type) FN_ENUM_##lib(name)
enum { Y7_REQUIRED_SYMBOLS(FN_ENUM) F_COUNT };

#define FN_NAME_CUDART(name) #name,
#define FN_NAME_CUDNN(name)
#define FN_NAME_CUDA(name)
#define FN_NAME(lib, name, type) FN_NAME_##lib(name)
static const char *const fn_names[F_COUNT] = { Y7_REQUIRED_SYMBOLS(FN_NAME) };

static long fn_calls[F_COUNT]; /* calls since load or y7stub_cudart_reset */

/*
 * stub_fail returns the error that Y7STUB_FAIL injects into call number
 * `call` (1-based) of function `name`, or 0. Y7STUB_FAIL is a comma-separated
 * list of name[:code][@n]: the function of that exact name returns code
 * (default def) on its n-th call (default: every call). Read at each call.
 */
static int stub_fail(const char *name, long call, int def)
{
	const char *p = getenv("Y7STUB_FAIL");
	size_t len = strlen(name);

	while (p && *p) {
		size_t n = strcspn(p, ":@,");
		const char *q = p + n;
		char *end;
		int code = def;
		long at = 0;

		if (*q == ':') {
			code = (int)strtol(q + 1, &end, 10);
			q = end;
		}
		if (*q == '@') {
			at = strtol(q + 1, &end, 10);
			q = end;
		}
		if (n == len && strncmp(p, name, n) == 0 && (at == 0 || at == call))
			return code;
		p = strchr(q, ',');
		if (p) p++;
	}
	return 0;
}

/* enter counts a call of function f; it returns the error to fail it with, or 0. */
static int enter(int f)
{
	long n = __atomic_add_fetch(&fn_calls[f], 1, __ATOMIC_RELAXED);
	return stub_fail(fn_names[f], n, E_MEMORY_ALLOCATION);
}

#define ENTER(name) do { int rc_ = enter(F_##name); if (rc_) return rc_; } while (0)

/* y7stub_cudart_count returns how many times the named function was called
 * since load or y7stub_cudart_reset, -1 for a name it does not know. */
int y7stub_cudart_count(const char *name)
{
	int i;

	for (i = 0; name && i < F_COUNT; i++)
		if (strcmp(name, fn_names[i]) == 0)
			return (int)__atomic_load_n(&fn_calls[i], __ATOMIC_RELAXED);
	return -1;
}

/* y7stub_cudart_reset zeroes the call counters. */
void y7stub_cudart_reset(void)
{
	int i;

	for (i = 0; i < F_COUNT; i++)
		__atomic_store_n(&fn_calls[i], 0, __ATOMIC_RELAXED);
}

/* env_int reads an integer environment variable, def when unset or empty. */
static int env_int(const char *name, int def)
{
	const char *v = getenv(name);
	return v && *v ? atoi(v) : def;
}

/* devices is the number of devices the stub pretends to have. */
static int devices(void)
{
	int n = env_int("Y7STUB_DEVICES", 1);
	return n < 0 ? 0 : n;
}

/* ---- devices and versions ------------------------------------------- */

/* cudaGetDeviceCount: Y7STUB_DEVICES; cudaErrorNoDevice when 0. */
int cudaGetDeviceCount(int *count)
{
	ENTER(cudaGetDeviceCount);
	if (!count) return E_INVALID_VALUE;
	*count = devices();
	return *count ? E_OK : E_NO_DEVICE;
}

/* cudaSetDevice accepts 0..count-1. */
int cudaSetDevice(int device)
{
	ENTER(cudaSetDevice);
	return device >= 0 && device < devices() ? E_OK : E_INVALID_DEVICE;
}

/* cudaRuntimeGetVersion: 12060 (12.6) unless Y7STUB_RUNTIME_VERSION says otherwise. */
int cudaRuntimeGetVersion(int *version)
{
	ENTER(cudaRuntimeGetVersion);
	if (!version) return E_INVALID_VALUE;
	*version = env_int("Y7STUB_RUNTIME_VERSION", 12060);
	return E_OK;
}

/* cudaDriverGetVersion: 12080 (12.8) unless Y7STUB_DRIVER_VERSION says otherwise (0: no driver). */
int cudaDriverGetVersion(int *version)
{
	ENTER(cudaDriverGetVersion);
	if (!version) return E_INVALID_VALUE;
	*version = env_int("Y7STUB_DRIVER_VERSION", 12080);
	return E_OK;
}

/* cudaDeviceGetAttribute: compute capability 9.0, 132 SMs, integrated per
 * Y7STUB_INTEGRATED, concurrent managed access; any other attribute 0. */
int cudaDeviceGetAttribute(int *value, int attr, int device)
{
	ENTER(cudaDeviceGetAttribute);
	if (!value) return E_INVALID_VALUE;
	if (device < 0 || device >= devices()) return E_INVALID_DEVICE;
	switch (attr) {
	case Y7_cudaDevAttrComputeCapabilityMajor: *value = 9; break;
	case Y7_cudaDevAttrComputeCapabilityMinor: *value = 0; break;
	case Y7_cudaDevAttrIntegrated: *value = env_int("Y7STUB_INTEGRATED", 0); break;
	case Y7_cudaDevAttrConcurrentManagedAccess: *value = 1; break;
	case Y7_cudaDevAttrMultiProcessorCount: *value = 132; break;
	default: *value = 0;
	}
	return E_OK;
}

/* cudaMemGetInfo: 64 GiB free of 80. */
int cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
	ENTER(cudaMemGetInfo);
	if (!free_bytes || !total_bytes) return E_INVALID_VALUE;
	*free_bytes = FREE_BYTES;
	*total_bytes = TOTAL_BYTES;
	return E_OK;
}

/* ---- memory --------------------------------------------------------- */

/* alloc returns zeroed, 256-byte aligned memory; size 0 gives NULL; more
 * than the free memory fails with cudaErrorMemoryAllocation. */
static int alloc(void **ptr, size_t size)
{
	void *p;

	if (!ptr) return E_INVALID_VALUE;
	*ptr = NULL;
	if (size == 0) return E_OK;
	if (size > FREE_BYTES || posix_memalign(&p, 256, size) != 0) return E_MEMORY_ALLOCATION;
	memset(p, 0, size);
	*ptr = p;
	return E_OK;
}

/* cudaMalloc: device memory. */
int cudaMalloc(void **ptr, size_t size)
{
	ENTER(cudaMalloc);
	return alloc(ptr, size);
}

/* cudaMallocManaged: managed memory; flags cudaMemAttachGlobal (1) or
 * cudaMemAttachHost (2); size 0 is cudaErrorInvalidValue, as documented. */
int cudaMallocManaged(void **ptr, size_t size, unsigned int flags)
{
	ENTER(cudaMallocManaged);
	if (size == 0 || (flags != Y7_cudaMemAttachGlobal && flags != 2)) return E_INVALID_VALUE;
	return alloc(ptr, size);
}

/* cudaHostAlloc: pinned host memory; flags a mix of portable (1), mapped (2), write-combined (4). */
int cudaHostAlloc(void **ptr, size_t size, unsigned int flags)
{
	ENTER(cudaHostAlloc);
	if (flags & ~7u) return E_INVALID_VALUE;
	return alloc(ptr, size);
}

/* cudaHostGetDevicePointer: the device address of mapped memory is its host address; flags must be 0. */
int cudaHostGetDevicePointer(void **dptr, void *hptr, unsigned int flags)
{
	ENTER(cudaHostGetDevicePointer);
	if (!dptr || !hptr || flags != 0) return E_INVALID_VALUE;
	*dptr = hptr;
	return E_OK;
}

/* cudaFree frees cudaMalloc or cudaMallocManaged memory (NULL is fine). */
int cudaFree(void *ptr)
{
	ENTER(cudaFree);
	free(ptr);
	return E_OK;
}

/* cudaFreeHost frees cudaHostAlloc memory (NULL is fine). */
int cudaFreeHost(void *ptr)
{
	ENTER(cudaFreeHost);
	free(ptr);
	return E_OK;
}

/* cudaMemcpyAsync copies at once, whatever the kind (0..4). */
int cudaMemcpyAsync(void *dst, const void *src, size_t count, int kind, void *stream)
{
	(void)stream;
	ENTER(cudaMemcpyAsync);
	if (kind < 0 || kind > Y7_cudaMemcpyDefault) return E_INVALID_MEMCPY_DIRECTION;
	if (count == 0) return E_OK;
	if (!dst || !src) return E_INVALID_VALUE;
	memcpy(dst, src, count);
	return E_OK;
}

/* cudaMemsetAsync sets bytes at once. */
int cudaMemsetAsync(void *dst, int value, size_t count, void *stream)
{
	(void)stream;
	ENTER(cudaMemsetAsync);
	if (count == 0) return E_OK;
	if (!dst) return E_INVALID_VALUE;
	memset(dst, value, count);
	return E_OK;
}

/* ---- streams -------------------------------------------------------- */

#define STREAM_MAGIC 0x59375354

/* A stream is a distinct heap object that only says it is one. */
typedef struct {
	int magic;
} stream;

/* stream_ok reports whether s is the default stream (NULL) or one of ours. */
static int stream_ok(const void *s)
{
	return !s || ((const stream *)s)->magic == STREAM_MAGIC;
}

/* cudaStreamCreateWithFlags: flags 0 (default) or cudaStreamNonBlocking. */
int cudaStreamCreateWithFlags(void **s, unsigned int flags)
{
	stream *st;

	ENTER(cudaStreamCreateWithFlags);
	if (!s || flags > Y7_cudaStreamNonBlocking) return E_INVALID_VALUE;
	if (!(st = malloc(sizeof *st))) return E_MEMORY_ALLOCATION;
	st->magic = STREAM_MAGIC;
	*s = st;
	return E_OK;
}

/* cudaStreamDestroy frees a stream (NULL is fine). */
int cudaStreamDestroy(void *s)
{
	ENTER(cudaStreamDestroy);
	if (!stream_ok(s)) return E_INVALID_RESOURCE_HANDLE;
	if (s) ((stream *)s)->magic = 0;
	free(s);
	return E_OK;
}

/* cudaStreamSynchronize: the work is done already. */
int cudaStreamSynchronize(void *s)
{
	ENTER(cudaStreamSynchronize);
	return stream_ok(s) ? E_OK : E_INVALID_RESOURCE_HANDLE;
}

/* cudaGetErrorString names an error (counted, never fails). */
const char *cudaGetErrorString(int err)
{
	enter(F_cudaGetErrorString);
	switch (err) {
	case E_OK: return "no error";
	case E_INVALID_VALUE: return "cudaErrorInvalidValue";
	case E_MEMORY_ALLOCATION: return "cudaErrorMemoryAllocation";
	case 3: return "cudaErrorInitializationError";
	case E_INVALID_MEMCPY_DIRECTION: return "cudaErrorInvalidMemcpyDirection";
	case 35: return "cudaErrorInsufficientDriver";
	case E_NO_DEVICE: return "cudaErrorNoDevice";
	case E_INVALID_DEVICE: return "cudaErrorInvalidDevice";
	case E_INVALID_RESOURCE_HANDLE: return "cudaErrorInvalidResourceHandle";
	}
	return "unknown error";
}

/* ---- prototype checks ------------------------------------------------- */

/* Each runtime function must have its api.h type: a mismatch does not compile. */
#define CHECK_CUDART(name, type) static const type check_##name __attribute__((unused)) = name;
#define CHECK_CUDNN(name, type)
#define CHECK_CUDA(name, type)
#define CHECK(lib, name, type) CHECK_##lib(name, type)
Y7_REQUIRED_SYMBOLS(CHECK)
