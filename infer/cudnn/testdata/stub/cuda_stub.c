/*
 * cuda_stub.c: a stand-in for the CUDA driver (libcuda.so.1), for the
 * tests of package infer/cudnn: only the three calls that name the device.
 * Y7STUB_DEVICES (default 1) is the device count, Y7STUB_FAIL injects
 * failures (see stub_fail; the default code is 999, CUDA_ERROR_UNKNOWN).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../api.h"

/* CUresult */
#define E_OK 0
#define E_INVALID_VALUE 1
#define E_INVALID_DEVICE 101
#define E_UNKNOWN 999

/* ---- call counters and failure injection ---------------------------- */

/* F_<name>: the index of every exported driver function. */
#define FN_ENUM_CUDA(name) F_##name,
#define FN_ENUM_CUDART(name)
#define FN_ENUM_CUDNN(name)
#define FN_ENUM(lib, name, type) FN_ENUM_##lib(name)
enum { Y7_OPTIONAL_SYMBOLS(FN_ENUM) F_COUNT };

#define FN_NAME_CUDA(name) #name,
#define FN_NAME_CUDART(name)
#define FN_NAME_CUDNN(name)
#define FN_NAME(lib, name, type) FN_NAME_##lib(name)
static const char *const fn_names[F_COUNT] = { Y7_OPTIONAL_SYMBOLS(FN_NAME) };

static long fn_calls[F_COUNT]; /* calls since load or y7stub_cuda_reset */

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
	return stub_fail(fn_names[f], n, E_UNKNOWN);
}

#define ENTER(name) do { int rc_ = enter(F_##name); if (rc_) return rc_; } while (0)

/* y7stub_cuda_count returns how many times the named function was called
 * since load or y7stub_cuda_reset, -1 for a name it does not know. */
int y7stub_cuda_count(const char *name)
{
	int i;

	for (i = 0; name && i < F_COUNT; i++)
		if (strcmp(name, fn_names[i]) == 0)
			return (int)__atomic_load_n(&fn_calls[i], __ATOMIC_RELAXED);
	return -1;
}

/* y7stub_cuda_reset zeroes the call counters. */
void y7stub_cuda_reset(void)
{
	int i;

	for (i = 0; i < F_COUNT; i++)
		__atomic_store_n(&fn_calls[i], 0, __ATOMIC_RELAXED);
}

/* devices is the number of devices the stub pretends to have. */
static int devices(void)
{
	const char *v = getenv("Y7STUB_DEVICES");
	int n = v && *v ? atoi(v) : 1;
	return n < 0 ? 0 : n;
}

/* ---- driver calls --------------------------------------------------- */

/* cuInit: flags must be 0. */
int cuInit(unsigned int flags)
{
	ENTER(cuInit);
	return flags == 0 ? E_OK : E_INVALID_VALUE;
}

/* cuDeviceGet: the device handle is the ordinal. */
int cuDeviceGet(int *device, int ordinal)
{
	ENTER(cuDeviceGet);
	if (!device) return E_INVALID_VALUE;
	if (ordinal < 0 || ordinal >= devices()) return E_INVALID_DEVICE;
	*device = ordinal;
	return E_OK;
}

/* cuDeviceGetName writes "yolo7d stub GPU" (truncated to len). */
int cuDeviceGetName(char *name, int len, int device)
{
	ENTER(cuDeviceGetName);
	if (!name || len <= 0) return E_INVALID_VALUE;
	if (device < 0 || device >= devices()) return E_INVALID_DEVICE;
	snprintf(name, (size_t)len, "%s", "yolo7d stub GPU");
	return E_OK;
}

/* ---- prototype checks ------------------------------------------------- */

/* Each driver function must have its api.h type: a mismatch does not compile. */
#define CHECK_CUDA(name, type) static const type check_##name __attribute__((unused)) = name;
#define CHECK_CUDART(name, type)
#define CHECK_CUDNN(name, type)
#define CHECK(lib, name, type) CHECK_##lib(name, type)
Y7_OPTIONAL_SYMBOLS(CHECK)
