/*
 * cudnn_stub.c: a CPU stand-in for libcudnn.so.9, for the tests of package
 * infer/cudnn on machines without a GPU (build.sh builds it).
 *
 * It exports the cuDNN functions of ../../api.h with the semantics cuDNN
 * documents, computed in double on plain host memory (the "device"
 * pointers of cudart_stub.c are malloc()ed). Only what api.h uses: 2-d
 * convolutions and max pooling on 4-d NCHW tensors of any strides, FLOAT
 * and HALF (IEEE binary16) data, element-wise ops on up to 8 dimensions.
 *
 * Every operation first gathers its inputs into dense arrays of double,
 * computes, then scatters y = alpha*result + beta*y through y's strides
 * (y is not read when beta == 0): so outputs may alias inputs (in-place
 * ops, dx = dy) and tensors may be channel slices of wider buffers.
 *
 * Test hooks: y7stub_count/y7stub_reset count the calls, and Y7STUB_FAIL
 * makes a chosen call fail (see stub_fail).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../api.h"

/* cudnnStatus_t, cuDNN 9 numbering */
#define ST_OK 0
#define ST_BAD_PARAM 2000
#define ST_NOT_SUPPORTED 3000
#define ST_ALLOC_FAILED 4003 /* CUDNN_STATUS_ALLOC_FAILED in cuDNN 9 */

#define MAXDIM 8
#define WORKSPACE 4096 /* bytes every algorithm asks for */
#define VERSION 90600  /* 9.6.0 */

/* ---- call counters and failure injection ---------------------------- */

/* F_<name>: the index of every exported cuDNN function. */
#define FN_ENUM_CUDNN(name) F_##name,
#define FN_ENUM_CUDART(name)
#define FN_ENUM_CUDA(name)
#define FN_ENUM(lib, name, type) FN_ENUM_##lib(name)
enum {
	Y7_REQUIRED_SYMBOLS(FN_ENUM)
	F_cudnnOpsVersionCheck,
	F_cudnnCnnVersionCheck,
	F_COUNT
};

#define FN_NAME_CUDNN(name) #name,
#define FN_NAME_CUDART(name)
#define FN_NAME_CUDA(name)
#define FN_NAME(lib, name, type) FN_NAME_##lib(name)
static const char *const fn_names[F_COUNT] = {
	Y7_REQUIRED_SYMBOLS(FN_NAME)
	"cudnnOpsVersionCheck",
	"cudnnCnnVersionCheck",
};

static long fn_calls[F_COUNT]; /* calls since load or y7stub_reset */

/*
 * stub_fail returns the status that Y7STUB_FAIL injects into call number
 * `call` (1-based) of function `name`, or 0. Y7STUB_FAIL is a comma-separated
 * list of name[:code][@n]: the function of that exact name returns code
 * (default def) on its n-th call since load or y7stub_reset (default:
 * every call). The variable is read at each call.
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

/* enter counts a call of function f; it returns the status to fail it with, or 0. */
static int enter(int f)
{
	long n = __atomic_add_fetch(&fn_calls[f], 1, __ATOMIC_RELAXED);
	return stub_fail(fn_names[f], n, ST_NOT_SUPPORTED);
}

#define ENTER(name) do { int rc_ = enter(F_##name); if (rc_) return rc_; } while (0)

/*
 * y7stub_count returns how many times the named function was called since
 * load or y7stub_reset, -1 for a name it does not know. cuDNN functions are
 * counted here; cuda* and cu* names are passed to the counters of
 * cudart_stub.c and cuda_stub.c when those are loaded (RTLD_GLOBAL).
 */
int y7stub_count(const char *name)
{
	int (*other)(const char *);
	int i;

	if (!name) return -1;
	if (strncmp(name, "cudnn", 5) == 0) {
		for (i = 0; i < F_COUNT; i++)
			if (strcmp(name, fn_names[i]) == 0)
				return (int)__atomic_load_n(&fn_calls[i], __ATOMIC_RELAXED);
		return -1;
	}
	other = (int (*)(const char *))dlsym(RTLD_DEFAULT,
		strncmp(name, "cuda", 4) == 0 ? "y7stub_cudart_count" : "y7stub_cuda_count");
	return other ? other(name) : -1;
}

/* y7stub_reset zeroes the call counters (also cudart's and cuda's when loaded). */
void y7stub_reset(void)
{
	static const char *const others[] = {"y7stub_cudart_reset", "y7stub_cuda_reset"};
	int i;

	for (i = 0; i < F_COUNT; i++)
		__atomic_store_n(&fn_calls[i], 0, __ATOMIC_RELAXED);
	for (i = 0; i < 2; i++) {
		void (*reset)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, others[i]);
		if (reset) reset();
	}
}

/* ---- descriptors ---------------------------------------------------- */

/* Every descriptor starts with its kind and whether it was set. */
enum { K_HANDLE = 0x59370001, K_TENSOR, K_FILTER, K_CONV, K_ACT, K_POOL, K_OPTENSOR };

typedef struct {
	int kind, set;
	void *stream;
} stubhandle;

/* A tensor, or a filter (kind K_FILTER: KCRS, dense). */
typedef struct {
	int kind, set;
	int dtype, nb;
	int dim[MAXDIM];
	long stride[MAXDIM];
} tensor;

typedef struct {
	int kind, set;
	int pad[2], stride[2], dil[2];
	int mode, ctype, math, groups;
} convdesc;

typedef struct {
	int kind, set;
	int mode, nan;
	double coef;
} actdesc;

typedef struct {
	int kind, set;
	int mode, nan;
	int win[2], pad[2], stride[2];
} pooldesc;

typedef struct {
	int kind, set;
	int op, ctype, nan;
} opdesc;

/* of returns d if it is a descriptor of that kind, else NULL. */
static void *of(void *d, int kind)
{
	const int *h = d;
	return h && h[0] == kind ? d : NULL;
}

/* ready returns d if it is a descriptor of that kind that was set, else NULL. */
static void *ready(void *d, int kind)
{
	const int *h = d;
	return h && h[0] == kind && h[1] ? d : NULL;
}

/* create allocates a zeroed descriptor of that kind. */
static int create(void **d, size_t size, int kind)
{
	int *h;

	if (!d) return ST_BAD_PARAM;
	if (!(h = calloc(1, size))) return ST_ALLOC_FAILED;
	h[0] = kind;
	*d = h;
	return ST_OK;
}

/* destroy frees a descriptor of that kind (NULL is fine). */
static int destroy(void *d, int kind)
{
	if (!d) return ST_OK;
	if (!of(d, kind)) return ST_BAD_PARAM;
	free(d);
	return ST_OK;
}

/* ---- elements ------------------------------------------------------- */

/* half_to_float widens an IEEE binary16. */
static float half_to_float(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
	float f;

	if (exp == 0) { /* zero or subnormal: man * 2^-24 */
		f = ldexpf((float)man, -24);
		return sign ? -f : f;
	}
	if (exp == 31)
		bits = sign | 0x7f800000 | (man << 13);
	else
		bits = sign | ((exp + 112) << 23) | (man << 13);
	memcpy(&f, &bits, sizeof f);
	return f;
}

/* float_to_half rounds to the nearest binary16, ties to even; beyond the
 * largest half (65504) it gives infinity, NaN stays a quiet NaN. */
static uint16_t float_to_half(float f)
{
	uint32_t x, sign, m, shift, rem, halfway;

	memcpy(&x, &f, sizeof x);
	sign = (x >> 16) & 0x8000;
	x &= 0x7fffffff;
	if (x >= 0x7f800000) /* infinity, NaN */
		return (uint16_t)(sign | 0x7c00 | (x > 0x7f800000 ? 0x200 : 0));
	if (x >= 0x477ff000) /* >= 65520 rounds to infinity */
		return (uint16_t)(sign | 0x7c00);
	if (x >= 0x38800000) { /* normal: >= 2^-14; round at bit 13, carries may bump the exponent */
		m = x + 0xfff + ((x >> 13) & 1);
		return (uint16_t)(sign | ((m - 0x38000000) >> 13));
	}
	/* subnormal or zero: m = round(|f| / 2^-24) */
	shift = 126 - (x >> 23);
	if (shift > 24)
		return (uint16_t)sign;
	x = (x & 0x7fffff) | 0x800000;
	m = x >> shift;
	rem = x & ((1u << shift) - 1);
	halfway = 1u << (shift - 1);
	if (rem > halfway || (rem == halfway && (m & 1)))
		m++;
	return (uint16_t)(sign | m);
}

static double load(const tensor *t, const void *p, long off)
{
	if (t->dtype == Y7_CUDNN_DATA_HALF)
		return half_to_float(((const uint16_t *)p)[off]);
	return ((const float *)p)[off];
}

static void store(const tensor *t, void *p, long off, double v)
{
	if (t->dtype == Y7_CUDNN_DATA_HALF)
		((uint16_t *)p)[off] = float_to_half((float)v);
	else
		((float *)p)[off] = (float)v;
}

/* count is the number of elements of t. */
static size_t count(const tensor *t)
{
	size_t n = 1;
	int d;

	for (d = 0; d < t->nb; d++)
		n *= (size_t)t->dim[d];
	return n;
}

/* offset is the memory offset, in elements, of t's i-th element in row-major order. */
static long offset(const tensor *t, size_t i)
{
	long off = 0;
	int d;

	for (d = t->nb - 1; d >= 0; d--) {
		off += (long)(i % (size_t)t->dim[d]) * t->stride[d];
		i /= (size_t)t->dim[d];
	}
	return off;
}

/* gather copies t's elements into a new dense array (NULL when out of memory). */
static double *gather(const tensor *t, const void *p)
{
	size_t i, n = count(t);
	double *v = malloc(n * sizeof *v);

	if (v)
		for (i = 0; i < n; i++)
			v[i] = load(t, p, offset(t, i));
	return v;
}

/* scatter writes t = alpha*v + beta*t from a dense array; t is not read when beta == 0. */
static void scatter(const tensor *t, void *p, const double *v, double alpha, double beta)
{
	size_t i, n = count(t);

	for (i = 0; i < n; i++) {
		long off = offset(t, i);
		double r = alpha * v[i];
		if (beta != 0)
			r += beta * load(t, p, off);
		store(t, p, off, r);
	}
}

/* same_dims reports whether a and b have the same dimensions. */
static int same_dims(const tensor *a, const tensor *b)
{
	return a->nb == b->nb && memcmp(a->dim, b->dim, (size_t)a->nb * sizeof a->dim[0]) == 0;
}

/* broadcasts reports whether b's dimensions equal c's or are 1. */
static int broadcasts(const tensor *b, const tensor *c)
{
	int d;

	if (b->nb != c->nb) return 0;
	for (d = 0; d < c->nb; d++)
		if (b->dim[d] != c->dim[d] && b->dim[d] != 1) return 0;
	return 1;
}

/* bcast_index maps the i-th element of c to the dense index of the element of b broadcast to it. */
static size_t bcast_index(const tensor *b, const tensor *c, size_t i)
{
	size_t j = 0, unit = 1;
	int d;

	for (d = c->nb - 1; d >= 0; d--) {
		size_t k = i % (size_t)c->dim[d];
		i /= (size_t)c->dim[d];
		if (b->dim[d] != 1) j += k * unit;
		unit *= (size_t)b->dim[d];
	}
	return j;
}

/* per_channel reports whether b is 1xCx1x1(x1...) for x's C (the shape of biases and BN parameters). */
static int per_channel(const tensor *b, const tensor *x)
{
	int d;

	if (b->nb != x->nb || x->nb < 2 || b->dim[1] != x->dim[1]) return 0;
	for (d = 0; d < b->nb; d++)
		if (d != 1 && b->dim[d] != 1) return 0;
	return 1;
}

/* channel is the channel (dimension 1) of x's i-th element. */
static int channel(const tensor *x, size_t i)
{
	size_t inner = count(x) / ((size_t)x->dim[0] * (size_t)x->dim[1]);
	return (int)(i / inner % (size_t)x->dim[1]);
}

/* scalar reads an alpha or beta (a host float). */
static double scalar(const void *p)
{
	return *(const float *)p;
}

/* ---- library, handle ------------------------------------------------ */

/* cudnnGetVersion: 9.6.0, or the version in Y7STUB_CUDNN_VERSION; an
 * injected failure code is returned as the version. */
size_t cudnnGetVersion(void)
{
	const char *v = getenv("Y7STUB_CUDNN_VERSION");
	int rc = enter(F_cudnnGetVersion);

	if (rc) return (size_t)rc;
	return v && *v ? (size_t)strtoul(v, NULL, 10) : VERSION;
}

/* cudnnGetErrorString names a status, cuDNN 9 numbering. */
const char *cudnnGetErrorString(int status)
{
	enter(F_cudnnGetErrorString);
	switch (status) {
	case 0: return "CUDNN_STATUS_SUCCESS";
	case 1001: return "CUDNN_STATUS_NOT_INITIALIZED";
	case 1002: return "CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH";
	case 1003: return "CUDNN_STATUS_SERIALIZATION_VERSION_MISMATCH";
	case 1004: return "CUDNN_STATUS_DEPRECATED";
	case 1005: return "CUDNN_STATUS_LICENSE_ERROR";
	case 1006: return "CUDNN_STATUS_RUNTIME_IN_PROGRESS";
	case 1007: return "CUDNN_STATUS_RUNTIME_FP_OVERFLOW";
	case 1008: return "CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED";
	case 2000: return "CUDNN_STATUS_BAD_PARAM";
	case 2001: return "CUDNN_STATUS_INVALID_VALUE";
	case 2002: return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
	case 2003: return "CUDNN_STATUS_BAD_PARAM_MISALIGNED_POINTER";
	case 2004: return "CUDNN_STATUS_BAD_PARAM_NOT_FINALIZED";
	case 2005: return "CUDNN_STATUS_BAD_PARAM_OUT_OF_BOUND";
	case 2006: return "CUDNN_STATUS_BAD_PARAM_SIZE_INSUFFICIENT";
	case 2007: return "CUDNN_STATUS_BAD_PARAM_STREAM_MISMATCH";
	case 2008: return "CUDNN_STATUS_BAD_PARAM_SHAPE_MISMATCH";
	case 2009: return "CUDNN_STATUS_BAD_PARAM_DUPLICATED_ENTRIES";
	case 2010: return "CUDNN_STATUS_BAD_PARAM_ATTRIBUTE_TYPE";
	case 3000: return "CUDNN_STATUS_NOT_SUPPORTED";
	case 3001: return "CUDNN_STATUS_NOT_SUPPORTED_GRAPH_PATTERN";
	case 3002: return "CUDNN_STATUS_NOT_SUPPORTED_SHAPE";
	case 3003: return "CUDNN_STATUS_NOT_SUPPORTED_DATA_TYPE";
	case 3004: return "CUDNN_STATUS_NOT_SUPPORTED_LAYOUT";
	case 3005: return "CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDA_DRIVER";
	case 3006: return "CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDART";
	case 3007: return "CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH";
	case 3008: return "CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING";
	case 3009: return "CUDNN_STATUS_NOT_SUPPORTED_SUBLIBRARY_UNAVAILABLE";
	case 3010: return "CUDNN_STATUS_NOT_SUPPORTED_SHARED_MEMORY_INSUFFICIENT";
	case 3011: return "CUDNN_STATUS_NOT_SUPPORTED_PADDING";
	case 3012: return "CUDNN_STATUS_NOT_SUPPORTED_BAD_LAUNCH_PARAM";
	case 4000: return "CUDNN_STATUS_INTERNAL_ERROR";
	case 4001: return "CUDNN_STATUS_INTERNAL_ERROR_COMPILATION_FAILED";
	case 4002: return "CUDNN_STATUS_INTERNAL_ERROR_UNEXPECTED_VALUE";
	case 4003: return "CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED";
	case 4004: return "CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED";
	case 4005: return "CUDNN_STATUS_INTERNAL_ERROR_BAD_LAUNCH_PARAM";
	case 4006: return "CUDNN_STATUS_INTERNAL_ERROR_TEXTURE_CREATION_FAILED";
	case 5000: return "CUDNN_STATUS_EXECUTION_FAILED";
	case 5001: return "CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER";
	case 5002: return "CUDNN_STATUS_EXECUTION_FAILED_CUBLAS";
	case 5003: return "CUDNN_STATUS_EXECUTION_FAILED_CUDART";
	case 5004: return "CUDNN_STATUS_EXECUTION_FAILED_CURAND";
	}
	return "CUDNN_STATUS_UNKNOWN";
}

/* cudnnOpsVersionCheck: the ops sub-library matches (there is none to mismatch). */
int cudnnOpsVersionCheck(void)
{
	ENTER(cudnnOpsVersionCheck);
	return ST_OK;
}

/* cudnnCnnVersionCheck: the cnn sub-library matches. */
int cudnnCnnVersionCheck(void)
{
	ENTER(cudnnCnnVersionCheck);
	return ST_OK;
}

/* cudnnCreate allocates a handle. */
int cudnnCreate(void **h)
{
	int rc;

	ENTER(cudnnCreate);
	if ((rc = create(h, sizeof(stubhandle), K_HANDLE)) == ST_OK)
		((stubhandle *)*h)->set = 1;
	return rc;
}

/* cudnnDestroy frees a handle. */
int cudnnDestroy(void *h)
{
	ENTER(cudnnDestroy);
	return destroy(h, K_HANDLE);
}

/* cudnnSetStream stores the stream the handle's work goes to (here it runs at once). */
int cudnnSetStream(void *h, void *stream)
{
	stubhandle *hd = ready(h, K_HANDLE);

	ENTER(cudnnSetStream);
	if (!hd) return ST_BAD_PARAM;
	hd->stream = stream;
	return ST_OK;
}

/* ---- descriptor calls ----------------------------------------------- */

/* cudnnCreateTensorDescriptor allocates an unset tensor descriptor. */
int cudnnCreateTensorDescriptor(void **d)
{
	ENTER(cudnnCreateTensorDescriptor);
	return create(d, sizeof(tensor), K_TENSOR);
}

/* cudnnDestroyTensorDescriptor frees it. */
int cudnnDestroyTensorDescriptor(void *d)
{
	ENTER(cudnnDestroyTensorDescriptor);
	return destroy(d, K_TENSOR);
}

/* set_tensor checks and stores a tensor's type, dimensions and strides. */
static int set_tensor(tensor *t, int dtype, int nb, const int *dim, const int *stride)
{
	double elems = 1;
	int d;

	if (!t || nb < 1 || nb > MAXDIM || !dim || !stride) return ST_BAD_PARAM;
	if (dtype != Y7_CUDNN_DATA_FLOAT && dtype != Y7_CUDNN_DATA_HALF) return ST_BAD_PARAM;
	for (d = 0; d < nb; d++) {
		if (dim[d] <= 0 || stride[d] <= 0) return ST_BAD_PARAM;
		elems *= dim[d];
	}
	if (elems > 2147483647.0) return ST_NOT_SUPPORTED; /* cuDNN's 2 Gi-element limit */
	t->dtype = dtype;
	t->nb = nb;
	for (d = 0; d < nb; d++) {
		t->dim[d] = dim[d];
		t->stride[d] = stride[d];
	}
	t->set = 1;
	return ST_OK;
}

/* cudnnSetTensor4dDescriptorEx: n, c, h, w with explicit strides. */
int cudnnSetTensor4dDescriptorEx(void *d, int dataType, int n, int c, int h, int w,
	int nStride, int cStride, int hStride, int wStride)
{
	int dim[4] = {n, c, h, w}, stride[4] = {nStride, cStride, hStride, wStride};

	ENTER(cudnnSetTensor4dDescriptorEx);
	return set_tensor(of(d, K_TENSOR), dataType, 4, dim, stride);
}

/* cudnnSetTensorNdDescriptor: nbDims dimensions and strides (like cuDNN,
 * fewer than 4 are not supported). */
int cudnnSetTensorNdDescriptor(void *d, int dataType, int nbDims, const int *dimA, const int *strideA)
{
	ENTER(cudnnSetTensorNdDescriptor);
	if (nbDims >= 1 && nbDims < 4) return ST_NOT_SUPPORTED;
	return set_tensor(of(d, K_TENSOR), dataType, nbDims, dimA, strideA);
}

/* cudnnCreateFilterDescriptor allocates an unset filter descriptor. */
int cudnnCreateFilterDescriptor(void **d)
{
	ENTER(cudnnCreateFilterDescriptor);
	return create(d, sizeof(tensor), K_FILTER);
}

/* cudnnDestroyFilterDescriptor frees it. */
int cudnnDestroyFilterDescriptor(void *d)
{
	ENTER(cudnnDestroyFilterDescriptor);
	return destroy(d, K_FILTER);
}

/* cudnnSetFilter4dDescriptor: a dense KCRS filter (format NCHW; NHWC is not supported). */
int cudnnSetFilter4dDescriptor(void *d, int dataType, int format, int k, int c, int h, int w)
{
	int dim[4] = {k, c, h, w}, stride[4] = {c * h * w, h * w, w, 1};

	ENTER(cudnnSetFilter4dDescriptor);
	if (format == 1) return ST_NOT_SUPPORTED;
	if (format != Y7_CUDNN_TENSOR_NCHW) return ST_BAD_PARAM;
	if (k <= 0 || c <= 0 || h <= 0 || w <= 0) return ST_BAD_PARAM;
	return set_tensor(of(d, K_FILTER), dataType, 4, dim, stride);
}

/* cudnnCreateConvolutionDescriptor allocates an unset convolution: 1 group, default math. */
int cudnnCreateConvolutionDescriptor(void **d)
{
	int rc;

	ENTER(cudnnCreateConvolutionDescriptor);
	if ((rc = create(d, sizeof(convdesc), K_CONV)) == ST_OK)
		((convdesc *)*d)->groups = 1;
	return rc;
}

/* cudnnDestroyConvolutionDescriptor frees it. */
int cudnnDestroyConvolutionDescriptor(void *d)
{
	ENTER(cudnnDestroyConvolutionDescriptor);
	return destroy(d, K_CONV);
}

/* cudnnSetConvolution2dDescriptor: padding, stride, dilation, mode and compute type. */
int cudnnSetConvolution2dDescriptor(void *d, int padH, int padW, int u, int v,
	int dilationH, int dilationW, int mode, int computeType)
{
	convdesc *cd = of(d, K_CONV);

	ENTER(cudnnSetConvolution2dDescriptor);
	if (!cd || padH < 0 || padW < 0 || u <= 0 || v <= 0 || dilationH <= 0 || dilationW <= 0)
		return ST_BAD_PARAM;
	if (mode != 0 && mode != Y7_CUDNN_CROSS_CORRELATION) return ST_BAD_PARAM;
	if (computeType < 0 || computeType > 2) return ST_BAD_PARAM; /* FLOAT, DOUBLE, HALF */
	cd->pad[0] = padH, cd->pad[1] = padW;
	cd->stride[0] = u, cd->stride[1] = v;
	cd->dil[0] = dilationH, cd->dil[1] = dilationW;
	cd->mode = mode;
	cd->ctype = computeType;
	cd->set = 1;
	return ST_OK;
}

/* cudnnSetConvolutionMathType stores the math type (ignored: all math is double here). */
int cudnnSetConvolutionMathType(void *d, int mathType)
{
	convdesc *cd = of(d, K_CONV);

	ENTER(cudnnSetConvolutionMathType);
	if (!cd || mathType < 0 || mathType > 3) return ST_BAD_PARAM;
	cd->math = mathType;
	return ST_OK;
}

/* cudnnSetConvolutionGroupCount stores the number of groups. */
int cudnnSetConvolutionGroupCount(void *d, int groupCount)
{
	convdesc *cd = of(d, K_CONV);

	ENTER(cudnnSetConvolutionGroupCount);
	if (!cd || groupCount < 1) return ST_BAD_PARAM;
	cd->groups = groupCount;
	return ST_OK;
}

/* cudnnCreateActivationDescriptor allocates an unset activation. */
int cudnnCreateActivationDescriptor(void **d)
{
	ENTER(cudnnCreateActivationDescriptor);
	return create(d, sizeof(actdesc), K_ACT);
}

/* cudnnDestroyActivationDescriptor frees it. */
int cudnnDestroyActivationDescriptor(void *d)
{
	ENTER(cudnnDestroyActivationDescriptor);
	return destroy(d, K_ACT);
}

/* cudnnSetActivationDescriptor: RELU or IDENTITY (sigmoid, tanh, clipped
 * relu, elu and swish exist in cuDNN but not here). */
int cudnnSetActivationDescriptor(void *d, int mode, int reluNanOpt, double coef)
{
	actdesc *ad = of(d, K_ACT);

	ENTER(cudnnSetActivationDescriptor);
	if (!ad || mode < 0 || mode > 6 || (reluNanOpt != 0 && reluNanOpt != 1)) return ST_BAD_PARAM;
	if (mode != Y7_CUDNN_ACTIVATION_RELU && mode != Y7_CUDNN_ACTIVATION_IDENTITY) return ST_NOT_SUPPORTED;
	ad->mode = mode;
	ad->nan = reluNanOpt;
	ad->coef = coef;
	ad->set = 1;
	return ST_OK;
}

/* cudnnCreatePoolingDescriptor allocates an unset pooling. */
int cudnnCreatePoolingDescriptor(void **d)
{
	ENTER(cudnnCreatePoolingDescriptor);
	return create(d, sizeof(pooldesc), K_POOL);
}

/* cudnnDestroyPoolingDescriptor frees it. */
int cudnnDestroyPoolingDescriptor(void *d)
{
	ENTER(cudnnDestroyPoolingDescriptor);
	return destroy(d, K_POOL);
}

/* cudnnSetPooling2dDescriptor: max pooling (average pooling is not supported here). */
int cudnnSetPooling2dDescriptor(void *d, int mode, int maxpoolingNanOpt,
	int windowHeight, int windowWidth, int verticalPadding, int horizontalPadding,
	int verticalStride, int horizontalStride)
{
	pooldesc *pd = of(d, K_POOL);

	ENTER(cudnnSetPooling2dDescriptor);
	if (!pd || mode < 0 || mode > 3 || (maxpoolingNanOpt != 0 && maxpoolingNanOpt != 1)) return ST_BAD_PARAM;
	if (windowHeight <= 0 || windowWidth <= 0 || verticalPadding < 0 || horizontalPadding < 0 ||
		verticalStride <= 0 || horizontalStride <= 0)
		return ST_BAD_PARAM;
	if (mode != Y7_CUDNN_POOLING_MAX && mode != Y7_CUDNN_POOLING_MAX_DETERMINISTIC) return ST_NOT_SUPPORTED;
	pd->mode = mode;
	pd->nan = maxpoolingNanOpt;
	pd->win[0] = windowHeight, pd->win[1] = windowWidth;
	pd->pad[0] = verticalPadding, pd->pad[1] = horizontalPadding;
	pd->stride[0] = verticalStride, pd->stride[1] = horizontalStride;
	pd->set = 1;
	return ST_OK;
}

/* cudnnCreateOpTensorDescriptor allocates an unset op-tensor. */
int cudnnCreateOpTensorDescriptor(void **d)
{
	ENTER(cudnnCreateOpTensorDescriptor);
	return create(d, sizeof(opdesc), K_OPTENSOR);
}

/* cudnnDestroyOpTensorDescriptor frees it. */
int cudnnDestroyOpTensorDescriptor(void *d)
{
	ENTER(cudnnDestroyOpTensorDescriptor);
	return destroy(d, K_OPTENSOR);
}

/* cudnnSetOpTensorDescriptor: ADD or MUL (MIN, MAX, SQRT, NOT exist in cuDNN but not here). */
int cudnnSetOpTensorDescriptor(void *d, int op, int compType, int nanOpt)
{
	opdesc *od = of(d, K_OPTENSOR);

	ENTER(cudnnSetOpTensorDescriptor);
	if (!od || op < 0 || op > 7 || compType < 0 || compType > 2 || (nanOpt != 0 && nanOpt != 1))
		return ST_BAD_PARAM;
	if (op != Y7_CUDNN_OP_TENSOR_ADD && op != Y7_CUDNN_OP_TENSOR_MUL) return ST_NOT_SUPPORTED;
	od->op = op;
	od->ctype = compType;
	od->nan = nanOpt;
	od->set = 1;
	return ST_OK;
}

/* ---- convolutions --------------------------------------------------- */

/* The sizes of one convolution: x is n,c,h,w; the filter k,cg,r,s; y n,k,p,q. */
typedef struct {
	int n, c, h, w, k, cg, r, s, p, q, groups;
} convshape;

/*
 * conv_shape checks the tensor x, the filter w, the convolution and the
 * tensor y against each other (y must have the convolution's output
 * dimensions) and fills sh. x, w and y must share one data type, and FLOAT
 * data needs FLOAT compute, as in cuDNN.
 */
static int conv_shape(const tensor *x, const tensor *w, const convdesc *cd, const tensor *y, convshape *sh)
{
	int eh, ew;

	if (!x || !w || !cd || !y || x->nb != 4 || y->nb != 4) return ST_BAD_PARAM;
	sh->n = x->dim[0], sh->c = x->dim[1], sh->h = x->dim[2], sh->w = x->dim[3];
	sh->k = w->dim[0], sh->cg = w->dim[1], sh->r = w->dim[2], sh->s = w->dim[3];
	sh->groups = cd->groups;
	if (sh->cg * sh->groups != sh->c || sh->k % sh->groups != 0) return ST_BAD_PARAM;
	eh = sh->h + 2 * cd->pad[0] - cd->dil[0] * (sh->r - 1) - 1;
	ew = sh->w + 2 * cd->pad[1] - cd->dil[1] * (sh->s - 1) - 1;
	if (eh < 0 || ew < 0) return ST_BAD_PARAM;
	sh->p = eh / cd->stride[0] + 1;
	sh->q = ew / cd->stride[1] + 1;
	if (y->dim[0] != sh->n || y->dim[1] != sh->k || y->dim[2] != sh->p || y->dim[3] != sh->q)
		return ST_BAD_PARAM;
	if (x->dtype != w->dtype || x->dtype != y->dtype) return ST_NOT_SUPPORTED;
	if (x->dtype == Y7_CUDNN_DATA_FLOAT && cd->ctype != Y7_CUDNN_DATA_FLOAT) return ST_NOT_SUPPORTED;
	return ST_OK;
}

/* check_algo checks an algorithm number and the workspace, then scribbles
 * on the workspace as a real algorithm would. */
static int check_algo(int algo, int algos, void *ws, size_t wsSize)
{
	if (algo < 0 || algo >= algos || !ws || wsSize < WORKSPACE) return ST_BAD_PARAM;
	memset(ws, 0x7f, WORKSPACE);
	return ST_OK;
}

/* fill_perf writes min(requested, 2) results: algorithm 1 (IMPLICIT_PRECOMP_GEMM
 * for forward), then 0. */
static int fill_perf(int requested, int *returned, y7_cudnnAlgoPerf *perf)
{
	int i, n = requested < 2 ? requested : 2;

	if (requested < 1 || !returned || !perf) return ST_BAD_PARAM;
	for (i = 0; i < n; i++) {
		memset(&perf[i], 0, sizeof perf[i]);
		perf[i].algo = 1 - i;
		perf[i].status = ST_OK;
		perf[i].time = 0.1f;
		perf[i].memory = 0;
		perf[i].determinism = 1;
		perf[i].mathType = Y7_CUDNN_DEFAULT_MATH;
	}
	*returned = n;
	return ST_OK;
}

enum { CONV_FWD, CONV_BWD_DATA, CONV_BWD_FILTER };

/*
 * conv_loop is the one loop nest of the three convolution passes, over
 * dense x (n,c,h,w), w (k,cg,r,s) and y (n,k,p,q): forward y = sum x*w,
 * backward data x += y*w, backward filter w += y*x. Padding reads zeros;
 * mode 0 (true convolution) flips the filter.
 */
/*
 * conv_forward_fast is conv_loop's forward for cross-correlation, ordered
 * so that the innermost loop walks a row of the output (the golden test
 * runs the whole network through the stub: this keeps it to seconds).
 * The sums are the same products in another order.
 */
static void conv_forward_fast(const convshape *sh, const convdesc *cd, const double *x, const double *w, double *y)
{
	int kg = sh->k / sh->groups;
	int n, k, c, r, s, p, q;
	long plane = (long)sh->p * sh->q;

	for (n = 0; n < sh->n; n++)
	for (k = 0; k < sh->k; k++) {
		double *yp = y + ((long)n * sh->k + k) * plane;
		for (long i = 0; i < plane; i++) yp[i] = 0;
		for (c = 0; c < sh->cg; c++) {
			int xc = k / kg * sh->cg + c;
			const double *xp = x + ((long)n * sh->c + xc) * sh->h * sh->w;
			for (r = 0; r < sh->r; r++)
			for (s = 0; s < sh->s; s++) {
				double wv = w[(((long)k * sh->cg + c) * sh->r + r) * sh->s + s];
				int q0 = 0, q1 = sh->q;
				/* the q range whose input column is inside the image */
				while (q0 < q1 && q0 * cd->stride[1] - cd->pad[1] + s * cd->dil[1] < 0) q0++;
				while (q1 > q0 && (q1 - 1) * cd->stride[1] - cd->pad[1] + s * cd->dil[1] >= sh->w) q1--;
				for (p = 0; p < sh->p; p++) {
					int ih = p * cd->stride[0] - cd->pad[0] + r * cd->dil[0];
					const double *xr;
					double *yr = yp + (long)p * sh->q;
					if (ih < 0 || ih >= sh->h) continue;
					xr = xp + (long)ih * sh->w - cd->pad[1] + s * cd->dil[1];
					if (cd->stride[1] == 1)
						for (q = q0; q < q1; q++) yr[q] += wv * xr[q];
					else
						for (q = q0; q < q1; q++) yr[q] += wv * xr[q * cd->stride[1]];
				}
			}
		}
	}
}

static void conv_loop(const convshape *sh, const convdesc *cd, int pass, double *x, double *w, double *y)
{
	int kg = sh->k / sh->groups;
	int n, k, p, q, c, r, s;

	if (pass == CONV_FWD && cd->mode == 1) {
		conv_forward_fast(sh, cd, x, w, y);
		return;
	}

	for (n = 0; n < sh->n; n++)
	for (k = 0; k < sh->k; k++)
	for (p = 0; p < sh->p; p++)
	for (q = 0; q < sh->q; q++) {
		long yi = (((long)n * sh->k + k) * sh->p + p) * sh->q + q;
		double acc = 0;
		for (c = 0; c < sh->cg; c++) {
			int xc = k / kg * sh->cg + c;
			for (r = 0; r < sh->r; r++) {
				int ih = p * cd->stride[0] - cd->pad[0] + r * cd->dil[0];
				int rr = cd->mode == 0 ? sh->r - 1 - r : r;
				if (ih < 0 || ih >= sh->h) continue;
				for (s = 0; s < sh->s; s++) {
					int iw = q * cd->stride[1] - cd->pad[1] + s * cd->dil[1];
					int ss = cd->mode == 0 ? sh->s - 1 - s : s;
					long xi, wi;
					if (iw < 0 || iw >= sh->w) continue;
					xi = (((long)n * sh->c + xc) * sh->h + ih) * sh->w + iw;
					wi = (((long)k * sh->cg + c) * sh->r + rr) * sh->s + ss;
					switch (pass) {
					case CONV_FWD: acc += x[xi] * w[wi]; break;
					case CONV_BWD_DATA: x[xi] += y[yi] * w[wi]; break;
					case CONV_BWD_FILTER: w[wi] += y[yi] * x[xi]; break;
					}
				}
			}
		}
		if (pass == CONV_FWD)
			y[yi] = acc;
	}
}

/* cudnnGetConvolutionForwardAlgorithm_v7 ranks algorithms 1, 0. */
int cudnnGetConvolutionForwardAlgorithm_v7(void *handle, void *xDesc, void *wDesc,
	void *convDesc, void *yDesc, int requestedAlgoCount, int *returnedAlgoCount, y7_cudnnAlgoPerf *perf)
{
	convshape sh;
	int rc;

	ENTER(cudnnGetConvolutionForwardAlgorithm_v7);
	if (!ready(handle, K_HANDLE)) return ST_BAD_PARAM;
	if ((rc = conv_shape(ready(xDesc, K_TENSOR), ready(wDesc, K_FILTER), ready(convDesc, K_CONV),
		ready(yDesc, K_TENSOR), &sh)))
		return rc;
	return fill_perf(requestedAlgoCount, returnedAlgoCount, perf);
}

/* cudnnGetConvolutionForwardWorkspaceSize: 4096 bytes for every algorithm. */
int cudnnGetConvolutionForwardWorkspaceSize(void *handle, void *xDesc, void *wDesc,
	void *convDesc, void *yDesc, int algo, size_t *size)
{
	convshape sh;
	int rc;

	ENTER(cudnnGetConvolutionForwardWorkspaceSize);
	if (!ready(handle, K_HANDLE) || !size || algo < 0 || algo >= Y7_CUDNN_CONVOLUTION_FWD_ALGO_COUNT)
		return ST_BAD_PARAM;
	if ((rc = conv_shape(ready(xDesc, K_TENSOR), ready(wDesc, K_FILTER), ready(convDesc, K_CONV),
		ready(yDesc, K_TENSOR), &sh)))
		return rc;
	*size = WORKSPACE;
	return ST_OK;
}

/* cudnnConvolutionForward: y = alpha*conv(x, w) + beta*y. */
int cudnnConvolutionForward(void *handle, const void *alpha, void *xDesc, const void *x,
	void *wDesc, const void *w, void *convDesc, int algo, void *workSpace, size_t workSpaceSize,
	const void *beta, void *yDesc, void *y)
{
	tensor *xd = ready(xDesc, K_TENSOR), *wd = ready(wDesc, K_FILTER), *yd = ready(yDesc, K_TENSOR);
	convdesc *cd = ready(convDesc, K_CONV);
	double *xv, *wv, *yv;
	convshape sh;
	int rc;

	ENTER(cudnnConvolutionForward);
	if (!ready(handle, K_HANDLE) || !alpha || !beta || !x || !w || !y) return ST_BAD_PARAM;
	if ((rc = conv_shape(xd, wd, cd, yd, &sh))) return rc;
	if ((rc = check_algo(algo, Y7_CUDNN_CONVOLUTION_FWD_ALGO_COUNT, workSpace, workSpaceSize))) return rc;
	xv = gather(xd, x), wv = gather(wd, w), yv = calloc(count(yd), sizeof *yv);
	if (xv && wv && yv) {
		conv_loop(&sh, cd, CONV_FWD, xv, wv, yv);
		scatter(yd, y, yv, scalar(alpha), scalar(beta));
	} else
		rc = ST_ALLOC_FAILED;
	free(xv), free(wv), free(yv);
	return rc;
}

/* act applies a RELU or IDENTITY activation. */
static double act(const actdesc *ad, double v)
{
	if (ad->mode == Y7_CUDNN_ACTIVATION_IDENTITY || v > 0) return v;
	return isnan(v) && ad->nan == Y7_CUDNN_PROPAGATE_NAN ? v : 0;
}

/*
 * cudnnConvolutionBiasActivationForward: y = act(alpha1*conv(x, w) +
 * alpha2*z + bias), bias 1xKx1x1, z of y's shape (not read when alpha2 is
 * 0; it may be y). IDENTITY needs algorithm 1 (IMPLICIT_PRECOMP_GEMM), as
 * in cuDNN.
 */
int cudnnConvolutionBiasActivationForward(void *handle, const void *alpha1, void *xDesc,
	const void *x, void *wDesc, const void *w, void *convDesc, int algo, void *workSpace,
	size_t workSpaceSize, const void *alpha2, void *zDesc, const void *z, void *biasDesc,
	const void *bias, void *activationDesc, void *yDesc, void *y)
{
	tensor *xd = ready(xDesc, K_TENSOR), *wd = ready(wDesc, K_FILTER), *yd = ready(yDesc, K_TENSOR);
	tensor *zd = ready(zDesc, K_TENSOR), *bd = ready(biasDesc, K_TENSOR);
	convdesc *cd = ready(convDesc, K_CONV);
	actdesc *ad = ready(activationDesc, K_ACT);
	double *xv, *wv, *bv, *zv = NULL, *yv, a1, a2;
	convshape sh;
	size_t i, n;
	int rc;

	ENTER(cudnnConvolutionBiasActivationForward);
	if (!ready(handle, K_HANDLE) || !alpha1 || !alpha2 || !x || !w || !bias || !y || !ad || !bd)
		return ST_BAD_PARAM;
	if ((rc = conv_shape(xd, wd, cd, yd, &sh))) return rc;
	if ((rc = check_algo(algo, Y7_CUDNN_CONVOLUTION_FWD_ALGO_COUNT, workSpace, workSpaceSize))) return rc;
	if (ad->mode == Y7_CUDNN_ACTIVATION_IDENTITY && algo != Y7_CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM)
		return ST_NOT_SUPPORTED;
	a1 = scalar(alpha1), a2 = scalar(alpha2);
	if ((zDesc && !zd) || (zd && !same_dims(zd, yd)) || (a2 != 0 && (!zd || !z))) return ST_BAD_PARAM;
	if (!per_channel(bd, yd)) return ST_BAD_PARAM;
	n = count(yd);
	xv = gather(xd, x), wv = gather(wd, w), bv = gather(bd, bias), yv = calloc(n, sizeof *yv);
	if (a2 != 0)
		zv = gather(zd, z);
	if (xv && wv && bv && yv && (a2 == 0 || zv)) {
		conv_loop(&sh, cd, CONV_FWD, xv, wv, yv);
		for (i = 0; i < n; i++)
			yv[i] = act(ad, a1 * yv[i] + (a2 != 0 ? a2 * zv[i] : 0) + bv[channel(yd, i)]);
		scatter(yd, y, yv, 1, 0);
	} else
		rc = ST_ALLOC_FAILED;
	free(xv), free(wv), free(bv), free(zv), free(yv);
	return rc;
}

/* cudnnGetConvolutionBackwardDataAlgorithm_v7 ranks algorithms 1, 0. */
int cudnnGetConvolutionBackwardDataAlgorithm_v7(void *handle, void *wDesc, void *dyDesc,
	void *convDesc, void *dxDesc, int requestedAlgoCount, int *returnedAlgoCount, y7_cudnnAlgoPerf *perf)
{
	convshape sh;
	int rc;

	ENTER(cudnnGetConvolutionBackwardDataAlgorithm_v7);
	if (!ready(handle, K_HANDLE)) return ST_BAD_PARAM;
	if ((rc = conv_shape(ready(dxDesc, K_TENSOR), ready(wDesc, K_FILTER), ready(convDesc, K_CONV),
		ready(dyDesc, K_TENSOR), &sh)))
		return rc;
	return fill_perf(requestedAlgoCount, returnedAlgoCount, perf);
}

/* cudnnGetConvolutionBackwardDataWorkspaceSize: 4096 bytes for every algorithm. */
int cudnnGetConvolutionBackwardDataWorkspaceSize(void *handle, void *wDesc, void *dyDesc,
	void *convDesc, void *dxDesc, int algo, size_t *size)
{
	convshape sh;
	int rc;

	ENTER(cudnnGetConvolutionBackwardDataWorkspaceSize);
	if (!ready(handle, K_HANDLE) || !size || algo < 0 || algo >= Y7_CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT)
		return ST_BAD_PARAM;
	if ((rc = conv_shape(ready(dxDesc, K_TENSOR), ready(wDesc, K_FILTER), ready(convDesc, K_CONV),
		ready(dyDesc, K_TENSOR), &sh)))
		return rc;
	*size = WORKSPACE;
	return ST_OK;
}

/* cudnnConvolutionBackwardData: dx = alpha*conv_transpose(dy, w) + beta*dx. */
int cudnnConvolutionBackwardData(void *handle, const void *alpha, void *wDesc,
	const void *w, void *dyDesc, const void *dy, void *convDesc, int algo, void *workSpace,
	size_t workSpaceSize, const void *beta, void *dxDesc, void *dx)
{
	tensor *wd = ready(wDesc, K_FILTER), *dyd = ready(dyDesc, K_TENSOR), *dxd = ready(dxDesc, K_TENSOR);
	convdesc *cd = ready(convDesc, K_CONV);
	double *wv, *dyv, *dxv;
	convshape sh;
	int rc;

	ENTER(cudnnConvolutionBackwardData);
	if (!ready(handle, K_HANDLE) || !alpha || !beta || !w || !dy || !dx) return ST_BAD_PARAM;
	if ((rc = conv_shape(dxd, wd, cd, dyd, &sh))) return rc;
	if ((rc = check_algo(algo, Y7_CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, workSpace, workSpaceSize))) return rc;
	wv = gather(wd, w), dyv = gather(dyd, dy), dxv = calloc(count(dxd), sizeof *dxv);
	if (wv && dyv && dxv) {
		conv_loop(&sh, cd, CONV_BWD_DATA, dxv, wv, dyv);
		scatter(dxd, dx, dxv, scalar(alpha), scalar(beta));
	} else
		rc = ST_ALLOC_FAILED;
	free(wv), free(dyv), free(dxv);
	return rc;
}

/* cudnnGetConvolutionBackwardFilterAlgorithm_v7 ranks algorithms 1, 0. */
int cudnnGetConvolutionBackwardFilterAlgorithm_v7(void *handle, void *xDesc, void *dyDesc,
	void *convDesc, void *dwDesc, int requestedAlgoCount, int *returnedAlgoCount, y7_cudnnAlgoPerf *perf)
{
	convshape sh;
	int rc;

	ENTER(cudnnGetConvolutionBackwardFilterAlgorithm_v7);
	if (!ready(handle, K_HANDLE)) return ST_BAD_PARAM;
	if ((rc = conv_shape(ready(xDesc, K_TENSOR), ready(dwDesc, K_FILTER), ready(convDesc, K_CONV),
		ready(dyDesc, K_TENSOR), &sh)))
		return rc;
	return fill_perf(requestedAlgoCount, returnedAlgoCount, perf);
}

/* cudnnGetConvolutionBackwardFilterWorkspaceSize: 4096 bytes for every algorithm. */
int cudnnGetConvolutionBackwardFilterWorkspaceSize(void *handle, void *xDesc,
	void *dyDesc, void *convDesc, void *dwDesc, int algo, size_t *size)
{
	convshape sh;
	int rc;

	ENTER(cudnnGetConvolutionBackwardFilterWorkspaceSize);
	if (!ready(handle, K_HANDLE) || !size || algo < 0 || algo >= Y7_CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT)
		return ST_BAD_PARAM;
	if ((rc = conv_shape(ready(xDesc, K_TENSOR), ready(dwDesc, K_FILTER), ready(convDesc, K_CONV),
		ready(dyDesc, K_TENSOR), &sh)))
		return rc;
	*size = WORKSPACE;
	return ST_OK;
}

/* cudnnConvolutionBackwardFilter: dw = alpha*d(conv)/dw . dy + beta*dw. */
int cudnnConvolutionBackwardFilter(void *handle, const void *alpha, void *xDesc,
	const void *x, void *dyDesc, const void *dy, void *convDesc, int algo, void *workSpace,
	size_t workSpaceSize, const void *beta, void *dwDesc, void *dw)
{
	tensor *xd = ready(xDesc, K_TENSOR), *dyd = ready(dyDesc, K_TENSOR), *dwd = ready(dwDesc, K_FILTER);
	convdesc *cd = ready(convDesc, K_CONV);
	double *xv, *dyv, *dwv;
	convshape sh;
	int rc;

	ENTER(cudnnConvolutionBackwardFilter);
	if (!ready(handle, K_HANDLE) || !alpha || !beta || !x || !dy || !dw) return ST_BAD_PARAM;
	if ((rc = conv_shape(xd, dwd, cd, dyd, &sh))) return rc;
	if ((rc = check_algo(algo, Y7_CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, workSpace, workSpaceSize))) return rc;
	xv = gather(xd, x), dyv = gather(dyd, dy), dwv = calloc(count(dwd), sizeof *dwv);
	if (xv && dyv && dwv) {
		conv_loop(&sh, cd, CONV_BWD_FILTER, xv, dwv, dyv);
		scatter(dwd, dw, dwv, scalar(alpha), scalar(beta));
	} else
		rc = ST_ALLOC_FAILED;
	free(xv), free(dyv), free(dwv);
	return rc;
}

/* cudnnConvolutionBackwardBias: db[c] = alpha*sum over all but c of dy + beta*db[c], db 1xCx1x1. */
int cudnnConvolutionBackwardBias(void *handle, const void *alpha, void *dyDesc,
	const void *dy, const void *beta, void *dbDesc, void *db)
{
	tensor *dyd = ready(dyDesc, K_TENSOR), *dbd = ready(dbDesc, K_TENSOR);
	double *dyv, *dbv;
	size_t i, n;
	int rc = ST_OK;

	ENTER(cudnnConvolutionBackwardBias);
	if (!ready(handle, K_HANDLE) || !alpha || !beta || !dyd || !dbd || !dy || !db) return ST_BAD_PARAM;
	if (!per_channel(dbd, dyd)) return ST_BAD_PARAM;
	n = count(dyd);
	dyv = gather(dyd, dy), dbv = calloc((size_t)dyd->dim[1], sizeof *dbv);
	if (dyv && dbv) {
		for (i = 0; i < n; i++)
			dbv[channel(dyd, i)] += dyv[i];
		scatter(dbd, db, dbv, scalar(alpha), scalar(beta));
	} else
		rc = ST_ALLOC_FAILED;
	free(dyv), free(dbv);
	return rc;
}

/* ---- element-wise ops and pooling ----------------------------------- */

/* cudnnActivationForward: y = alpha*act(x) + beta*y, RELU only (cuDNN
 * documents that IDENTITY does not work here); x may be y. */
int cudnnActivationForward(void *handle, void *activationDesc, const void *alpha,
	void *xDesc, const void *x, const void *beta, void *yDesc, void *y)
{
	actdesc *ad = ready(activationDesc, K_ACT);
	tensor *xd = ready(xDesc, K_TENSOR), *yd = ready(yDesc, K_TENSOR);
	double *v;
	size_t i, n;

	ENTER(cudnnActivationForward);
	if (!ready(handle, K_HANDLE) || !ad || !alpha || !beta || !xd || !yd || !x || !y) return ST_BAD_PARAM;
	if (ad->mode != Y7_CUDNN_ACTIVATION_RELU) return ST_NOT_SUPPORTED;
	if (!same_dims(xd, yd)) return ST_BAD_PARAM;
	if (!(v = gather(xd, x))) return ST_ALLOC_FAILED;
	n = count(xd);
	for (i = 0; i < n; i++)
		v[i] = act(ad, v[i]);
	scatter(yd, y, v, scalar(alpha), scalar(beta));
	free(v);
	return ST_OK;
}

/* cudnnActivationBackward: dx = alpha*dy*f'(x) + beta*dx, RELU only:
 * f'(x) = x > 0 ? 1 : 0 (y is not read); dx may be dy. */
int cudnnActivationBackward(void *handle, void *activationDesc, const void *alpha,
	void *yDesc, const void *y, void *dyDesc, const void *dy, void *xDesc, const void *x,
	const void *beta, void *dxDesc, void *dx)
{
	actdesc *ad = ready(activationDesc, K_ACT);
	tensor *yd = ready(yDesc, K_TENSOR), *dyd = ready(dyDesc, K_TENSOR);
	tensor *xd = ready(xDesc, K_TENSOR), *dxd = ready(dxDesc, K_TENSOR);
	double *dyv, *xv;
	size_t i, n;
	int rc = ST_OK;

	(void)y;
	ENTER(cudnnActivationBackward);
	if (!ready(handle, K_HANDLE) || !ad || !alpha || !beta || !yd || !dyd || !xd || !dxd || !dy || !x || !dx)
		return ST_BAD_PARAM;
	if (ad->mode != Y7_CUDNN_ACTIVATION_RELU) return ST_NOT_SUPPORTED;
	if (!same_dims(yd, xd) || !same_dims(dyd, xd) || !same_dims(dxd, xd)) return ST_BAD_PARAM;
	n = count(xd);
	dyv = gather(dyd, dy), xv = gather(xd, x);
	if (dyv && xv) {
		for (i = 0; i < n; i++)
			dyv[i] = xv[i] > 0 ? dyv[i] : 0;
		scatter(dxd, dx, dyv, scalar(alpha), scalar(beta));
	} else
		rc = ST_ALLOC_FAILED;
	free(dyv), free(xv);
	return rc;
}

/* pool_shape checks 4-d x and y against the pooling (y must be its output). */
static int pool_shape(const pooldesc *pd, const tensor *x, const tensor *y)
{
	int eh, ew;

	if (!pd || !x || !y || x->nb != 4 || y->nb != 4) return ST_BAD_PARAM;
	eh = x->dim[2] + 2 * pd->pad[0] - pd->win[0];
	ew = x->dim[3] + 2 * pd->pad[1] - pd->win[1];
	if (eh < 0 || ew < 0) return ST_BAD_PARAM;
	if (y->dim[0] != x->dim[0] || y->dim[1] != x->dim[1] ||
		y->dim[2] != eh / pd->stride[0] + 1 || y->dim[3] != ew / pd->stride[1] + 1)
		return ST_BAD_PARAM;
	return ST_OK;
}

/* pool_argmax returns the dense index in x of the first maximum (row-major
 * window order) of output (n,c,p,q)'s window, or -1 when the window is all
 * padding; padding never wins. */
static long pool_argmax(const pooldesc *pd, const tensor *xd, const double *x, int n, int c, int p, int q)
{
	int H = xd->dim[2], W = xd->dim[3], i, j;
	long base = ((long)n * xd->dim[1] + c) * H * W, best = -1;

	for (i = 0; i < pd->win[0]; i++) {
		int ih = p * pd->stride[0] - pd->pad[0] + i;
		if (ih < 0 || ih >= H) continue;
		for (j = 0; j < pd->win[1]; j++) {
			int iw = q * pd->stride[1] - pd->pad[1] + j;
			long at = base + (long)ih * W + iw;
			if (iw < 0 || iw >= W) continue;
			if (best < 0 || x[at] > x[best] || (pd->nan && isnan(x[at]) && !isnan(x[best])))
				best = at;
		}
	}
	return best;
}

/* cudnnPoolingForward: y = alpha*max over the window + beta*y (padding is -infinity). */
int cudnnPoolingForward(void *handle, void *poolingDesc, const void *alpha, void *xDesc,
	const void *x, const void *beta, void *yDesc, void *y)
{
	pooldesc *pd = ready(poolingDesc, K_POOL);
	tensor *xd = ready(xDesc, K_TENSOR), *yd = ready(yDesc, K_TENSOR);
	double *xv, *yv;
	int rc, n, c, p, q;

	ENTER(cudnnPoolingForward);
	if (!ready(handle, K_HANDLE) || !alpha || !beta || !x || !y) return ST_BAD_PARAM;
	if ((rc = pool_shape(pd, xd, yd))) return rc;
	xv = gather(xd, x), yv = malloc(count(yd) * sizeof *yv);
	if (xv && yv) {
		double *o = yv;
		for (n = 0; n < yd->dim[0]; n++)
		for (c = 0; c < yd->dim[1]; c++)
		for (p = 0; p < yd->dim[2]; p++)
		for (q = 0; q < yd->dim[3]; q++) {
			long at = pool_argmax(pd, xd, xv, n, c, p, q);
			*o++ = at < 0 ? -INFINITY : xv[at];
		}
		scatter(yd, y, yv, scalar(alpha), scalar(beta));
	} else
		rc = ST_ALLOC_FAILED;
	free(xv), free(yv);
	return rc;
}

/* cudnnPoolingBackward: dx = alpha*g + beta*dx, g routing each dy to its
 * window's maximum in x (y is not read); overlapping windows add up. */
int cudnnPoolingBackward(void *handle, void *poolingDesc, const void *alpha, void *yDesc,
	const void *y, void *dyDesc, const void *dy, void *xDesc, const void *x, const void *beta,
	void *dxDesc, void *dx)
{
	pooldesc *pd = ready(poolingDesc, K_POOL);
	tensor *yd = ready(yDesc, K_TENSOR), *dyd = ready(dyDesc, K_TENSOR);
	tensor *xd = ready(xDesc, K_TENSOR), *dxd = ready(dxDesc, K_TENSOR);
	double *xv, *dyv, *g;
	int rc, n, c, p, q;

	(void)y;
	ENTER(cudnnPoolingBackward);
	if (!ready(handle, K_HANDLE) || !alpha || !beta || !dy || !x || !dx || !yd || !dyd || !dxd) return ST_BAD_PARAM;
	if ((rc = pool_shape(pd, xd, dyd))) return rc;
	if (!same_dims(yd, dyd) || !same_dims(dxd, xd)) return ST_BAD_PARAM;
	xv = gather(xd, x), dyv = gather(dyd, dy), g = calloc(count(xd), sizeof *g);
	if (xv && dyv && g) {
		const double *d = dyv;
		for (n = 0; n < dyd->dim[0]; n++)
		for (c = 0; c < dyd->dim[1]; c++)
		for (p = 0; p < dyd->dim[2]; p++)
		for (q = 0; q < dyd->dim[3]; q++, d++) {
			long at = pool_argmax(pd, xd, xv, n, c, p, q);
			if (at >= 0) g[at] += *d;
		}
		scatter(dxd, dx, g, scalar(alpha), scalar(beta));
	} else
		rc = ST_ALLOC_FAILED;
	free(xv), free(dyv), free(g);
	return rc;
}

/* cudnnAddTensor: C = alpha*A + beta*C, A's dimensions C's or 1 (broadcast). */
int cudnnAddTensor(void *handle, const void *alpha, void *aDesc, const void *A,
	const void *beta, void *cDesc, void *C)
{
	tensor *ad = ready(aDesc, K_TENSOR), *cd = ready(cDesc, K_TENSOR);
	double *av, *v;
	size_t i, n;
	int rc = ST_OK;

	ENTER(cudnnAddTensor);
	if (!ready(handle, K_HANDLE) || !alpha || !beta || !ad || !cd || !A || !C) return ST_BAD_PARAM;
	if (!broadcasts(ad, cd)) return ST_BAD_PARAM;
	n = count(cd);
	av = gather(ad, A), v = malloc(n * sizeof *v);
	if (av && v) {
		for (i = 0; i < n; i++)
			v[i] = av[bcast_index(ad, cd, i)];
		scatter(cd, C, v, scalar(alpha), scalar(beta));
	} else
		rc = ST_ALLOC_FAILED;
	free(av), free(v);
	return rc;
}

/* cudnnOpTensor: C = op(alpha1*A, alpha2*B) + beta*C, A of C's dimensions,
 * B's C's or 1 (broadcast); C may be A. */
int cudnnOpTensor(void *handle, void *opTensorDesc, const void *alpha1, void *aDesc,
	const void *A, const void *alpha2, void *bDesc, const void *B, const void *beta, void *cDesc, void *C)
{
	opdesc *od = ready(opTensorDesc, K_OPTENSOR);
	tensor *ad = ready(aDesc, K_TENSOR), *bd = ready(bDesc, K_TENSOR), *cd = ready(cDesc, K_TENSOR);
	double *av, *bv, a1, a2;
	size_t i, n;
	int rc = ST_OK;

	ENTER(cudnnOpTensor);
	if (!ready(handle, K_HANDLE) || !od || !alpha1 || !alpha2 || !beta || !ad || !bd || !cd || !A || !B || !C)
		return ST_BAD_PARAM;
	if (!same_dims(ad, cd) || !broadcasts(bd, cd)) return ST_BAD_PARAM;
	a1 = scalar(alpha1), a2 = scalar(alpha2);
	n = count(cd);
	av = gather(ad, A), bv = gather(bd, B);
	if (av && bv) {
		for (i = 0; i < n; i++) {
			double b = a2 * bv[bcast_index(bd, cd, i)];
			av[i] = od->op == Y7_CUDNN_OP_TENSOR_ADD ? a1 * av[i] + b : a1 * av[i] * b;
		}
		scatter(cd, C, av, 1, scalar(beta));
	} else
		rc = ST_ALLOC_FAILED;
	free(av), free(bv);
	return rc;
}

/* cudnnTransformTensor: y = alpha*x + beta*y, same dimensions, any strides and data types. */
int cudnnTransformTensor(void *handle, const void *alpha, void *xDesc, const void *x,
	const void *beta, void *yDesc, void *y)
{
	tensor *xd = ready(xDesc, K_TENSOR), *yd = ready(yDesc, K_TENSOR);
	double *v;

	ENTER(cudnnTransformTensor);
	if (!ready(handle, K_HANDLE) || !alpha || !beta || !xd || !yd || !x || !y) return ST_BAD_PARAM;
	if (!same_dims(xd, yd)) return ST_BAD_PARAM;
	if (!(v = gather(xd, x))) return ST_ALLOC_FAILED;
	scatter(yd, y, v, scalar(alpha), scalar(beta));
	free(v);
	return ST_OK;
}

/* ---- batch normalization -------------------------------------------- */

/* bn_check checks a SPATIAL batch normalization's mode, x (4-d or 5-d),
 * its float 1xCx1x1 parameters and epsilon. */
static int bn_check(int mode, const tensor *x, const tensor *bn, double eps)
{
	if (mode == 0 || mode == 2) return ST_NOT_SUPPORTED; /* PER_ACTIVATION, SPATIAL_PERSISTENT */
	if (mode != Y7_CUDNN_BATCHNORM_SPATIAL || !x || !bn) return ST_BAD_PARAM;
	if ((x->nb != 4 && x->nb != 5) || !per_channel(bn, x) || bn->dtype != Y7_CUDNN_DATA_FLOAT) return ST_BAD_PARAM;
	if (!(eps >= Y7_CUDNN_BN_MIN_EPSILON)) return ST_BAD_PARAM;
	return ST_OK;
}

/* bn_stats computes each channel's batch mean and biased variance. */
static void bn_stats(const tensor *xd, const double *x, double *mean, double *var)
{
	size_t i, n = count(xd);
	int c, C = xd->dim[1];
	double m = (double)n / C;

	for (c = 0; c < C; c++)
		mean[c] = var[c] = 0;
	for (i = 0; i < n; i++)
		mean[channel(xd, i)] += x[i];
	for (c = 0; c < C; c++)
		mean[c] /= m;
	for (i = 0; i < n; i++) {
		double d = x[i] - mean[channel(xd, i)];
		var[channel(xd, i)] += d * d;
	}
	for (c = 0; c < C; c++)
		var[c] /= m;
}

/*
 * cudnnBatchNormalizationForwardTraining (SPATIAL): per channel over n,h,w,
 * y = alpha*(scale*(x-mean)/sqrt(var+eps) + bias) + beta*y with the
 * batch's mean and biased var; the running mean and (unbiased) variance
 * are updated with the factor f when given, the mean and 1/sqrt(var+eps)
 * saved when asked.
 */
int cudnnBatchNormalizationForwardTraining(void *handle, int mode, const void *alpha,
	const void *beta, void *xDesc, const void *x, void *yDesc, void *y, void *bnDesc,
	const void *bnScale, const void *bnBias, double exponentialAverageFactor, void *resultRunningMean,
	void *resultRunningVariance, double epsilon, void *resultSaveMean, void *resultSaveInvVariance)
{
	tensor *xd = ready(xDesc, K_TENSOR), *yd = ready(yDesc, K_TENSOR), *bd = ready(bnDesc, K_TENSOR);
	double *xv = NULL, *sv = NULL, *bv = NULL, *mean = NULL, *var = NULL, *inv = NULL, *rm = NULL, *rv = NULL;
	double f = exponentialAverageFactor, m;
	size_t i, n;
	int rc, c, C;

	ENTER(cudnnBatchNormalizationForwardTraining);
	if (!ready(handle, K_HANDLE) || !alpha || !beta || !x || !y || !bnScale || !bnBias || !yd) return ST_BAD_PARAM;
	if ((rc = bn_check(mode, xd, bd, epsilon))) return rc;
	if (!same_dims(xd, yd)) return ST_BAD_PARAM;
	if (!resultRunningMean != !resultRunningVariance || !resultSaveMean != !resultSaveInvVariance)
		return ST_BAD_PARAM;
	n = count(xd), C = xd->dim[1], m = (double)n / C;
	xv = gather(xd, x), sv = gather(bd, bnScale), bv = gather(bd, bnBias);
	mean = malloc(C * sizeof *mean), var = malloc(C * sizeof *var), inv = malloc(C * sizeof *inv);
	if (resultRunningMean)
		rm = gather(bd, resultRunningMean), rv = gather(bd, resultRunningVariance);
	if (!xv || !sv || !bv || !mean || !var || !inv || (resultRunningMean && (!rm || !rv))) {
		rc = ST_ALLOC_FAILED;
		goto out;
	}
	bn_stats(xd, xv, mean, var);
	for (c = 0; c < C; c++)
		inv[c] = 1 / sqrt(var[c] + epsilon);
	for (i = 0; i < n; i++) {
		c = channel(xd, i);
		xv[i] = sv[c] * (xv[i] - mean[c]) * inv[c] + bv[c];
	}
	scatter(yd, y, xv, scalar(alpha), scalar(beta));
	if (resultRunningMean) {
		for (c = 0; c < C; c++) {
			rm[c] = (1 - f) * rm[c] + f * mean[c];
			rv[c] = (1 - f) * rv[c] + f * var[c] * (m > 1 ? m / (m - 1) : 1);
		}
		scatter(bd, resultRunningMean, rm, 1, 0);
		scatter(bd, resultRunningVariance, rv, 1, 0);
	}
	if (resultSaveMean) {
		scatter(bd, resultSaveMean, mean, 1, 0);
		scatter(bd, resultSaveInvVariance, inv, 1, 0);
	}
out:
	free(xv), free(sv), free(bv), free(mean), free(var), free(inv), free(rm), free(rv);
	return rc;
}

/*
 * cudnnBatchNormalizationBackward (SPATIAL): with xhat = (x-mean)*inv
 * (the saved mean and 1/sqrt(var+eps), or the batch's recomputed with eps
 * when none are given) and dxhat = dy*scale, per channel over M = n*h*w:
 * dx = alphaData*inv/M*(M*dxhat - sum(dxhat) - xhat*sum(dxhat*xhat)) + betaData*dx,
 * dScale = alphaParam*sum(dy*xhat) + betaParam*dScale,
 * dBias = alphaParam*sum(dy) + betaParam*dBias. dx may be dy.
 */
int cudnnBatchNormalizationBackward(void *handle, int mode, const void *alphaDataDiff,
	const void *betaDataDiff, const void *alphaParamDiff, const void *betaParamDiff, void *xDesc,
	const void *x, void *dyDesc, const void *dy, void *dxDesc, void *dx, void *bnDesc,
	const void *bnScale, void *resultBnScaleDiff, void *resultBnBiasDiff, double epsilon,
	const void *savedMean, const void *savedInvVariance)
{
	tensor *xd = ready(xDesc, K_TENSOR), *dyd = ready(dyDesc, K_TENSOR), *dxd = ready(dxDesc, K_TENSOR);
	tensor *bd = ready(bnDesc, K_TENSOR);
	double *xv = NULL, *dyv = NULL, *sv = NULL, *mean = NULL, *inv = NULL, *sdy = NULL, *sdyx = NULL;
	double m;
	size_t i, n;
	int rc, c, C;

	ENTER(cudnnBatchNormalizationBackward);
	if (!ready(handle, K_HANDLE) || !alphaDataDiff || !betaDataDiff || !alphaParamDiff || !betaParamDiff ||
		!x || !dy || !dx || !bnScale || !resultBnScaleDiff || !resultBnBiasDiff || !dyd || !dxd)
		return ST_BAD_PARAM;
	if ((rc = bn_check(mode, xd, bd, epsilon))) return rc;
	if (!same_dims(dyd, xd) || !same_dims(dxd, xd) || !savedMean != !savedInvVariance) return ST_BAD_PARAM;
	n = count(xd), C = xd->dim[1], m = (double)n / C;
	xv = gather(xd, x), dyv = gather(dyd, dy), sv = gather(bd, bnScale);
	sdy = calloc(C, sizeof *sdy), sdyx = calloc(C, sizeof *sdyx);
	if (savedMean)
		mean = gather(bd, savedMean), inv = gather(bd, savedInvVariance);
	else
		mean = malloc(C * sizeof *mean), inv = malloc(C * sizeof *inv);
	if (!xv || !dyv || !sv || !mean || !inv || !sdy || !sdyx) {
		rc = ST_ALLOC_FAILED;
		goto out;
	}
	if (!savedMean) { /* the batch's statistics: inv holds the variance first */
		bn_stats(xd, xv, mean, inv);
		for (c = 0; c < C; c++)
			inv[c] = 1 / sqrt(inv[c] + epsilon);
	}
	for (i = 0; i < n; i++) { /* xv becomes xhat */
		c = channel(xd, i);
		xv[i] = (xv[i] - mean[c]) * inv[c];
		sdy[c] += dyv[i];
		sdyx[c] += dyv[i] * xv[i];
	}
	for (i = 0; i < n; i++) { /* dyv becomes dx */
		c = channel(xd, i);
		dyv[i] = inv[c] / m * sv[c] * (m * dyv[i] - sdy[c] - xv[i] * sdyx[c]);
	}
	scatter(dxd, dx, dyv, scalar(alphaDataDiff), scalar(betaDataDiff));
	scatter(bd, resultBnScaleDiff, sdyx, scalar(alphaParamDiff), scalar(betaParamDiff));
	scatter(bd, resultBnBiasDiff, sdy, scalar(alphaParamDiff), scalar(betaParamDiff));
out:
	free(xv), free(dyv), free(sv), free(mean), free(inv), free(sdy), free(sdyx);
	return rc;
}

/* ---- prototype checks ------------------------------------------------- */

/* Each cuDNN function must have its api.h type: a mismatch does not compile. */
#define CHECK_CUDNN(name, type) static const type check_##name __attribute__((unused)) = name;
#define CHECK_CUDART(name, type)
#define CHECK_CUDA(name, type)
#define CHECK(lib, name, type) CHECK_##lib(name, type)
Y7_REQUIRED_SYMBOLS(CHECK)
CHECK_CUDNN(cudnnOpsVersionCheck, y7_cudnnVersionCheck_t)
CHECK_CUDNN(cudnnCnnVersionCheck, y7_cudnnVersionCheck_t)
