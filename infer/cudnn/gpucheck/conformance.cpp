// conformance.cpp: checks ../api.h (infer/cudnn's own declarations of the
// CUDA runtime, CUDA driver and cuDNN API, written without NVIDIA's headers)
// against NVIDIA's real headers. Built on the GPU machine by run.sh:
//
//   g++ -std=c++17 -Wall -Wextra -Werror -Wno-error=deprecated-declarations
//       -isystem <cudnn include> -isystem <cuda include> -I <dir of api.h>
//       conformance.cpp -ldl -o conformance
//
// What it checks:
//   1. constants: every Y7_ #define of api.h equals the real enum value or
//      #define (CUDNN_BN_MIN_EPSILON: ours >= the real minimum);
//   2. layout: y7_cudnnAlgoPerf has the size, field offsets and field sizes
//      of cudnnConvolutionFwdAlgoPerf_t, ...BwdDataAlgoPerf_t and
//      ...BwdFilterAlgoPerf_t;
//   3. signatures: for every symbol of Y7_REQUIRED_SYMBOLS and
//      Y7_OPTIONAL_SYMBOLS, the real function's type matches api.h's typedef
//      structurally: same parameter count, same return size and kind, and
//      per parameter the same size, both pointers or both not, both
//      floating or both not (float, double and long double told apart);
//      and the name is not a macro in the real headers (a macro means the
//      headers call a versioned entry point, e.g. foo_v2, while dlsym("foo")
//      gets the old one). Optional symbols that these headers do not declare
//      (cuDNN 8's *InferVersionCheck under cuDNN 9 and the reverse; the
//      driver API without cuda.h) are reported "absent in these headers";
//   4. at run time, when the libraries can be opened (the directories of
//      YOLO7D_GPU_LIBS first, then the loader's search): every symbol
//      resolves by dlsym, and the library versions match the headers'.
//
// Failures of 1-3 are compile errors (static_assert) whose message names the
// symbol, constant or field; a signature mismatch also instantiates
// y7::first_mismatch<tag, N>, whose tag names the symbol and N says where:
// -2 return type, -3 parameter count, -4 variadic, N >= 0 the first
// differing parameter (0-based). Compiled with -DY7_CONFORMANCE_REPORT the
// same checks run at run time instead and every mismatch is listed with
// its details (run.sh does this when the strict build fails). The program
// prints one line per check group and "CONFORMANCE OK" at the end, exit
// status 0; any failure: "CONFORMANCE FAILED", exit status 1.

#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include <dlfcn.h>

#include <cuda_runtime_api.h>
#include <cudnn.h>

#if defined(__has_include)
#if __has_include(<cuda.h>)
#include <cuda.h>
#define Y7_HAVE_CUDA_H 1
#endif
#endif
#ifndef Y7_HAVE_CUDA_H
#define Y7_HAVE_CUDA_H 0
#endif

#include "api.h"

#ifndef CUDNN_MAJOR
#error "cudnn.h did not define CUDNN_MAJOR (cudnn_version.h missing?)"
#endif

#define Y7_STR(x) #x
#define Y7_XSTR(x) Y7_STR(x)

namespace y7 {

// ---- run-time bookkeeping ------------------------------------------------

static int failures = 0;
static std::vector<std::string> notes;

#ifdef Y7_CONFORMANCE_REPORT
#define Y7_ASSERT(cond, msg)                                  \
	do {                                                      \
		if (!(cond)) {                                        \
			std::printf("  FAIL %s\n", msg);                  \
			y7::failures++;                                   \
		}                                                     \
	} while (0)
#else
#define Y7_ASSERT(cond, msg) static_assert(cond, msg)
#endif

constexpr bool streq(const char *a, const char *b) {
	while (*a && *a == *b) {
		a++;
		b++;
	}
	return *a == *b;
}

// ---- structural description of a type ------------------------------------

enum Kind { K_INT = 0, K_PTR, K_FLOAT, K_DOUBLE, K_LDOUBLE, K_OTHER, K_VOID };

struct TypeInfo {
	int kind;
	std::size_t size;
};

static const char *kind_name(int k) {
	switch (k) {
	case K_INT:
		return "integer/enum";
	case K_PTR:
		return "pointer";
	case K_FLOAT:
		return "float";
	case K_DOUBLE:
		return "double";
	case K_LDOUBLE:
		return "long double";
	case K_OTHER:
		return "struct/other";
	case K_VOID:
		return "void";
	}
	return "?";
}

template <class T> constexpr TypeInfo info() {
	using U = std::remove_cv_t<T>;
	if constexpr (std::is_void_v<U>) {
		return TypeInfo{K_VOID, 0};
	} else if constexpr (std::is_pointer_v<U> || std::is_member_pointer_v<U> || std::is_null_pointer_v<U>) {
		return TypeInfo{K_PTR, sizeof(U)};
	} else if constexpr (std::is_same_v<U, float>) {
		return TypeInfo{K_FLOAT, sizeof(U)};
	} else if constexpr (std::is_same_v<U, double>) {
		return TypeInfo{K_DOUBLE, sizeof(U)};
	} else if constexpr (std::is_same_v<U, long double>) {
		return TypeInfo{K_LDOUBLE, sizeof(U)};
	} else if constexpr (std::is_integral_v<U> || std::is_enum_v<U>) {
		return TypeInfo{K_INT, sizeof(U)};
	} else {
		return TypeInfo{K_OTHER, sizeof(U)};
	}
}

constexpr bool same(TypeInfo a, TypeInfo b) { return a.kind == b.kind && a.size == b.size; }

// sig<F> decomposes a pointer-to-function type.
template <class F> struct sig; // not a function pointer: compile error here

template <class R, class... A> struct sig<R (*)(A...)> {
	static constexpr int n = sizeof...(A);
	static constexpr bool variadic = false;
	static constexpr TypeInfo ret = info<R>();
	static constexpr TypeInfo args[sizeof...(A) + 1] = {info<A>()..., TypeInfo{K_VOID, 0}};
};
template <class R, class... A> struct sig<R (*)(A..., ...)> : sig<R (*)(A...)> {
	static constexpr bool variadic = true;
};
template <class R, class... A> struct sig<R (*)(A...) noexcept> : sig<R (*)(A...)> {};
template <class R, class... A> struct sig<R (*)(A..., ...) noexcept> : sig<R (*)(A..., ...)> {};

// mismatch: -1 same shape; -2 return; -3 parameter count; -4 variadic;
// i >= 0: parameter i differs.
template <class Real, class Ours> constexpr int mismatch() {
	using R = sig<Real>;
	using O = sig<Ours>;
	if (R::variadic != O::variadic)
		return -4;
	if (R::n != O::n)
		return -3;
	if (!same(R::ret, O::ret))
		return -2;
	for (int i = 0; i < R::n; i++)
		if (!same(R::args[i], O::args[i]))
			return i;
	return -1;
}

// first_mismatch<Tag, N>: instantiated for every checked symbol; a failed
// assertion in it shows the symbol (Tag) and N in the compiler's
// "In instantiation of" line.
template <class Tag, int N> struct first_mismatch {
#ifndef Y7_CONFORMANCE_REPORT
	static_assert(N == -1, "signature mismatch: see first_mismatch<y7_sym_NAME, N>: N = -2 return type, -3 parameter "
	                       "count, -4 variadic, N >= 0 the first differing parameter (0-based)");
#endif
	static constexpr int value = N;
};

// describe prints real vs ours for a mismatching symbol (report mode).
template <class Real, class Ours> void describe(const char *name) {
	using R = sig<Real>;
	using O = sig<Ours>;
	std::printf("       %s: real %d parameters%s, ours %d%s\n", name, R::n, R::variadic ? " + ..." : "", O::n,
	            O::variadic ? " + ..." : "");
	std::printf("       return: real %s %zu bytes, ours %s %zu bytes\n", kind_name(R::ret.kind), R::ret.size,
	            kind_name(O::ret.kind), O::ret.size);
	int n = R::n > O::n ? R::n : O::n;
	for (int i = 0; i < n; i++) {
		TypeInfo r = i < R::n ? R::args[i] : TypeInfo{K_VOID, 0};
		TypeInfo o = i < O::n ? O::args[i] : TypeInfo{K_VOID, 0};
		std::printf("       param %2d: real %-12s %zu, ours %-12s %zu%s\n", i, i < R::n ? kind_name(r.kind) : "-",
		            r.size, i < O::n ? kind_name(o.kind) : "-", o.size, same(r, o) ? "" : "   <-- differs");
	}
}

static int sig_checked = 0, sig_absent = 0, sig_bad = 0;

} // namespace y7

// ---- 1. constants --------------------------------------------------------

// Every "#define Y7_<name> <value>" of api.h, with the real constant it
// stands for. build.sh and run.sh check that this list covers them all.
#define Y7_CONSTANTS(X)                                                                  \
	X(Y7_cudaSuccess, cudaSuccess)                                                       \
	X(Y7_cudaMemcpyHostToDevice, cudaMemcpyHostToDevice)                                 \
	X(Y7_cudaMemcpyDeviceToHost, cudaMemcpyDeviceToHost)                                 \
	X(Y7_cudaMemcpyDeviceToDevice, cudaMemcpyDeviceToDevice)                             \
	X(Y7_cudaMemcpyDefault, cudaMemcpyDefault)                                           \
	X(Y7_cudaMemAttachGlobal, cudaMemAttachGlobal)                                       \
	X(Y7_cudaHostAllocMapped, cudaHostAllocMapped)                                       \
	X(Y7_cudaStreamNonBlocking, cudaStreamNonBlocking)                                   \
	X(Y7_cudaDevAttrMultiProcessorCount, cudaDevAttrMultiProcessorCount)                 \
	X(Y7_cudaDevAttrIntegrated, cudaDevAttrIntegrated)                                   \
	X(Y7_cudaDevAttrComputeCapabilityMajor, cudaDevAttrComputeCapabilityMajor)           \
	X(Y7_cudaDevAttrComputeCapabilityMinor, cudaDevAttrComputeCapabilityMinor)           \
	X(Y7_cudaDevAttrConcurrentManagedAccess, cudaDevAttrConcurrentManagedAccess)         \
	X(Y7_CUDNN_STATUS_SUCCESS, CUDNN_STATUS_SUCCESS)                                     \
	X(Y7_CUDNN_DATA_FLOAT, CUDNN_DATA_FLOAT)                                             \
	X(Y7_CUDNN_DATA_HALF, CUDNN_DATA_HALF)                                               \
	X(Y7_CUDNN_TENSOR_NCHW, CUDNN_TENSOR_NCHW)                                           \
	X(Y7_CUDNN_CROSS_CORRELATION, CUDNN_CROSS_CORRELATION)                               \
	X(Y7_CUDNN_DEFAULT_MATH, CUDNN_DEFAULT_MATH)                                         \
	X(Y7_CUDNN_TENSOR_OP_MATH, CUDNN_TENSOR_OP_MATH)                                     \
	X(Y7_CUDNN_ACTIVATION_RELU, CUDNN_ACTIVATION_RELU)                                   \
	X(Y7_CUDNN_ACTIVATION_IDENTITY, CUDNN_ACTIVATION_IDENTITY)                           \
	X(Y7_CUDNN_NOT_PROPAGATE_NAN, CUDNN_NOT_PROPAGATE_NAN)                               \
	X(Y7_CUDNN_PROPAGATE_NAN, CUDNN_PROPAGATE_NAN)                                       \
	X(Y7_CUDNN_POOLING_MAX, CUDNN_POOLING_MAX)                                           \
	X(Y7_CUDNN_POOLING_MAX_DETERMINISTIC, CUDNN_POOLING_MAX_DETERMINISTIC)               \
	X(Y7_CUDNN_BATCHNORM_SPATIAL, CUDNN_BATCHNORM_SPATIAL)                               \
	X(Y7_CUDNN_OP_TENSOR_ADD, CUDNN_OP_TENSOR_ADD)                                       \
	X(Y7_CUDNN_OP_TENSOR_MUL, CUDNN_OP_TENSOR_MUL)                                       \
	X(Y7_CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM) \
	X(Y7_CUDNN_CONVOLUTION_FWD_ALGO_COUNT, CUDNN_CONVOLUTION_FWD_ALGO_COUNT)             \
	X(Y7_CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT)   \
	X(Y7_CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT)

// Y7_CUDNN_BN_MIN_EPSILON is checked apart (check_constants): cuDNN 8 and 9
// define CUDNN_BN_MIN_EPSILON as 0.0, the smallest epsilon cuDNN accepts;
// api.h's value is the smallest we pass, which must not be below it.

static void check_constants() {
	int before = y7::failures;
	int n = 0;
#define Y7_CHECK_CONST(ours, real)                                                       \
	Y7_ASSERT((long long)(ours) == (long long)(real), #ours " != " #real " in the real headers"); \
	if ((long long)(ours) != (long long)(real))                                          \
		std::printf("       %s = %lld, real %s = %lld\n", #ours, (long long)(ours), #real, (long long)(real)); \
	n++;
	Y7_CONSTANTS(Y7_CHECK_CONST)
#undef Y7_CHECK_CONST
	Y7_ASSERT(Y7_CUDNN_BN_MIN_EPSILON >= CUDNN_BN_MIN_EPSILON,
	          "Y7_CUDNN_BN_MIN_EPSILON < CUDNN_BN_MIN_EPSILON: cuDNN would reject our epsilon");
	n++;
	std::printf("constants: %d checked (CUDNN_BN_MIN_EPSILON: ours %g, real %g, ours must be >= real), %s\n", n,
	            (double)Y7_CUDNN_BN_MIN_EPSILON, (double)CUDNN_BN_MIN_EPSILON,
	            y7::failures == before ? "OK" : "FAILED");
}

// ---- 2. layout of the algorithm-perf structs ------------------------------

template <class P> static void check_perf_layout(const char *real_name) {
	int before = y7::failures;
	using O = y7_cudnnAlgoPerf;
	static_assert(std::is_standard_layout_v<P> && std::is_standard_layout_v<O>, "perf structs must be standard layout");
#define Y7_FIELD(f)                                                                                   \
	Y7_ASSERT(offsetof(P, f) == offsetof(O, f), "y7_cudnnAlgoPerf." #f ": offset differs from the real struct's"); \
	Y7_ASSERT(sizeof(P::f) == sizeof(O::f), "y7_cudnnAlgoPerf." #f ": size differs from the real struct's");        \
	Y7_ASSERT(y7::info<std::remove_extent_t<decltype(P::f)>>().kind ==                                \
	              y7::info<std::remove_extent_t<decltype(O::f)>>().kind,                              \
	          "y7_cudnnAlgoPerf." #f ": kind (integer/float/pointer) differs from the real struct's"); \
	if (offsetof(P, f) != offsetof(O, f) || sizeof(P::f) != sizeof(O::f))                             \
		std::printf("       %s.%s: real offset %zu size %zu, ours offset %zu size %zu\n", real_name, #f, \
		            offsetof(P, f), sizeof(P::f), offsetof(O, f), sizeof(O::f));
	Y7_FIELD(algo)
	Y7_FIELD(status)
	Y7_FIELD(time)
	Y7_FIELD(memory)
	Y7_FIELD(determinism)
	Y7_FIELD(mathType)
	Y7_FIELD(reserved)
#undef Y7_FIELD
	Y7_ASSERT(sizeof(P) == sizeof(O), "sizeof(y7_cudnnAlgoPerf) differs from the real perf struct's");
	Y7_ASSERT(alignof(P) == alignof(O), "alignof(y7_cudnnAlgoPerf) differs from the real perf struct's");
	std::printf("layout: y7_cudnnAlgoPerf vs %s: size %zu/%zu, 7 fields, %s\n", real_name, sizeof(O), sizeof(P),
	            y7::failures == before ? "OK" : "FAILED");
}

// ---- 3. signatures ---------------------------------------------------------

// Y7_CHECK_SIG(lib, name, type): the real ::name against api.h's type.
#define Y7_CHECK_SIG(lib, name, type)                                                                        \
	{                                                                                                        \
		struct y7_sym_##name {};                                                                             \
		constexpr int m = y7::mismatch<decltype(&::name), type>();                                            \
		Y7_ASSERT(m == -1, #name ": the real prototype differs from api.h's " #type                           \
		                         " (parameter count, return, or a parameter's size/pointer/floating kind)");   \
		(void)y7::first_mismatch<y7_sym_##name, m>::value;                                                    \
		Y7_ASSERT(y7::streq(#name, Y7_XSTR(name)),                                                            \
		          #name " is a macro in the real headers (a versioned entry point): dlsym(\"" #name           \
		          "\") gets another function");                                                              \
		if (m != -1) {                                                                                       \
			y7::describe<decltype(&::name), type>(#name);                                                     \
			y7::sig_bad++;                                                                                   \
		}                                                                                                    \
		if (!y7::streq(#name, Y7_XSTR(name)))                                                                 \
			std::printf("       %s expands to %s\n", #name, Y7_XSTR(name));                                  \
		y7::sig_checked++;                                                                                   \
	}

// Y7_ABSENT(lib, name, type): an optional symbol these headers do not have.
#define Y7_ABSENT(lib, name, type)                                                                           \
	{                                                                                                        \
		y7::notes.push_back(#name);                                                                          \
		y7::sig_absent++;                                                                                    \
	}

// Which optional symbols these headers declare. A symbol added to
// Y7_OPTIONAL_SYMBOLS needs a line here: without one the build fails on
// "Y7_OPT_<name> was not declared", naming it.
#define Y7_OPT(lib, name, type) Y7_OPT_##name(lib, name, type)
#if Y7_HAVE_CUDA_H
#define Y7_OPT_cuInit Y7_CHECK_SIG
#define Y7_OPT_cuDeviceGet Y7_CHECK_SIG
#define Y7_OPT_cuDeviceGetName Y7_CHECK_SIG
#else
#define Y7_OPT_cuInit Y7_ABSENT
#define Y7_OPT_cuDeviceGet Y7_ABSENT
#define Y7_OPT_cuDeviceGetName Y7_ABSENT
#endif
#if CUDNN_MAJOR >= 9
#define Y7_OPT_cudnnOpsVersionCheck Y7_CHECK_SIG
#define Y7_OPT_cudnnCnnVersionCheck Y7_CHECK_SIG
#define Y7_OPT_cudnnOpsInferVersionCheck Y7_ABSENT
#define Y7_OPT_cudnnCnnInferVersionCheck Y7_ABSENT
#else
#define Y7_OPT_cudnnOpsVersionCheck Y7_ABSENT
#define Y7_OPT_cudnnCnnVersionCheck Y7_ABSENT
#define Y7_OPT_cudnnOpsInferVersionCheck Y7_CHECK_SIG
#define Y7_OPT_cudnnCnnInferVersionCheck Y7_CHECK_SIG
#endif

static void check_required() {
	int c0 = y7::sig_checked, b0 = y7::sig_bad, f0 = y7::failures;
	Y7_REQUIRED_SYMBOLS(Y7_CHECK_SIG)
	std::printf("signatures (Y7_REQUIRED_SYMBOLS): %d checked, %d mismatched, %s\n", y7::sig_checked - c0,
	            y7::sig_bad - b0, y7::failures == f0 ? "OK" : "FAILED");
}

static void check_optional() {
	int c0 = y7::sig_checked, b0 = y7::sig_bad, f0 = y7::failures;
	std::size_t n0 = y7::notes.size();
	Y7_OPTIONAL_SYMBOLS(Y7_OPT)
	std::string absent;
	for (std::size_t i = n0; i < y7::notes.size(); i++)
		absent += (absent.empty() ? "" : ", ") + y7::notes[i];
	std::printf("signatures (Y7_OPTIONAL_SYMBOLS): %d checked, %d mismatched, %zu absent in these headers%s%s%s, %s\n",
	            y7::sig_checked - c0, y7::sig_bad - b0, y7::notes.size() - n0, absent.empty() ? "" : " (",
	            absent.c_str(), absent.empty() ? "" : ")", y7::failures == f0 ? "OK" : "FAILED");
}

// ---- 4. the libraries (run time, informative unless a symbol is missing) ---

struct LibSpec {
	const char *lib;
	const char *sonames[4];
};

static const LibSpec lib_specs[] = {
	{"CUDA", {"libcuda.so.1", nullptr}},
	{"CUDART", {"libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", nullptr}},
	{"CUDNN", {"libcudnn.so.9", "libcudnn.so.8", nullptr}},
};

static void *open_lib(const char *lib, std::string &where) {
	std::vector<std::string> dirs;
	if (const char *env = std::getenv("YOLO7D_GPU_LIBS")) {
		std::string s(env);
		std::size_t p = 0;
		while (p <= s.size()) {
			std::size_t q = s.find(':', p);
			if (q == std::string::npos)
				q = s.size();
			if (q > p)
				dirs.push_back(s.substr(p, q - p));
			p = q + 1;
		}
	}
	for (const LibSpec &spec : lib_specs) {
		if (std::strcmp(spec.lib, lib) != 0)
			continue;
		for (const char *const *so = spec.sonames; *so; so++) {
			for (const std::string &d : dirs) {
				std::string path = d + "/" + *so;
				if (void *h = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL)) {
					where = path;
					return h;
				}
			}
			if (void *h = dlopen(*so, RTLD_NOW | RTLD_GLOBAL)) {
				where = std::string(*so) + " (loader search)";
				return h;
			}
		}
	}
	return nullptr;
}

static void check_libraries() {
	void *h_cuda, *h_cudart, *h_cudnn;
	std::string w_cuda, w_cudart, w_cudnn;
	// Load order as infer/cudnn: driver, runtime, then cuDNN.
	h_cuda = open_lib("CUDA", w_cuda);
	h_cudart = open_lib("CUDART", w_cudart);
	h_cudnn = open_lib("CUDNN", w_cudnn);
	std::printf("libraries: libcuda %s, libcudart %s, libcudnn %s\n", h_cuda ? w_cuda.c_str() : "NOT FOUND",
	            h_cudart ? w_cudart.c_str() : "NOT FOUND", h_cudnn ? w_cudnn.c_str() : "NOT FOUND");
	if (!h_cudart || !h_cudnn) {
		std::printf("libraries: not checked (runtime or cuDNN not found: %s)\n", dlerror());
		return;
	}
	auto handle = [&](const char *lib) -> void * {
		if (std::strcmp(lib, "CUDA") == 0)
			return h_cuda;
		if (std::strcmp(lib, "CUDART") == 0)
			return h_cudart;
		return h_cudnn;
	};
	int req = 0, req_missing = 0, opt = 0, opt_found = 0;
	std::string missing, optional_missing;
#define Y7_DLSYM_REQ(lib, name, type)                                               \
	req++;                                                                          \
	if (!handle(#lib) || !dlsym(handle(#lib), #name)) {                            \
		req_missing++;                                                              \
		missing += std::string(missing.empty() ? "" : ", ") + #name;                \
	}
#define Y7_DLSYM_OPT(lib, name, type)                                               \
	opt++;                                                                          \
	if (handle(#lib) && dlsym(handle(#lib), #name))                                \
		opt_found++;                                                                \
	else                                                                            \
		optional_missing += std::string(optional_missing.empty() ? "" : ", ") + #name;
	Y7_REQUIRED_SYMBOLS(Y7_DLSYM_REQ)
	Y7_OPTIONAL_SYMBOLS(Y7_DLSYM_OPT)
#undef Y7_DLSYM_REQ
#undef Y7_DLSYM_OPT
	std::printf("libraries: required symbols %d/%d resolve%s%s; optional %d/%d%s%s%s\n", req - req_missing, req,
	            missing.empty() ? "" : ", MISSING: ", missing.c_str(), opt_found, opt,
	            optional_missing.empty() ? "" : " (absent: ", optional_missing.c_str(),
	            optional_missing.empty() ? "" : ")");
	if (req_missing)
		y7::failures++;
	using get_version_t = std::size_t (*)(void);
	using int_version_t = int (*)(int *);
	if (auto f = (get_version_t)dlsym(h_cudnn, "cudnnGetVersion")) {
		std::size_t v = f();
		std::size_t major = v >= 90000 ? v / 10000 : v / 1000;
		std::printf("versions: libcudnn %zu (headers %d.%d.%d)%s\n", v, CUDNN_MAJOR, CUDNN_MINOR, CUDNN_PATCHLEVEL,
		            major == (std::size_t)CUDNN_MAJOR ? "" : "  <-- major version differs from the headers");
	}
	if (auto f = (int_version_t)dlsym(h_cudart, "cudaRuntimeGetVersion")) {
		int v = 0;
		f(&v);
		std::printf("versions: libcudart %d (headers CUDART_VERSION %d)%s\n", v, (int)CUDART_VERSION,
		            v / 1000 == CUDART_VERSION / 1000 ? "" : "  <-- major version differs from the headers");
	}
	if (auto f = (int_version_t)dlsym(h_cudart, "cudaDriverGetVersion")) {
		int v = 0;
		f(&v);
		std::printf("versions: driver supports CUDA %d\n", v);
	}
}

int main() {
	std::printf("headers: cuDNN %d.%d.%d, CUDART_VERSION %d, cuda.h %s\n", CUDNN_MAJOR, CUDNN_MINOR, CUDNN_PATCHLEVEL,
	            (int)CUDART_VERSION,
#if Y7_HAVE_CUDA_H
	            "present (CUDA_VERSION " Y7_XSTR(CUDA_VERSION) ")"
#else
	            "absent (driver-API symbols not checked)"
#endif
	);
#ifdef Y7_CONFORMANCE_REPORT
	std::printf("mode: report (checks at run time)\n");
#else
	std::printf("mode: strict (every check below already passed as a static_assert)\n");
#endif
	check_constants();
	check_perf_layout<cudnnConvolutionFwdAlgoPerf_t>("cudnnConvolutionFwdAlgoPerf_t");
	check_perf_layout<cudnnConvolutionBwdDataAlgoPerf_t>("cudnnConvolutionBwdDataAlgoPerf_t");
	check_perf_layout<cudnnConvolutionBwdFilterAlgoPerf_t>("cudnnConvolutionBwdFilterAlgoPerf_t");
	check_required();
	check_optional();
	check_libraries();
	if (y7::failures) {
		std::printf("CONFORMANCE FAILED (%d checks)\n", y7::failures);
		return 1;
	}
	std::printf("CONFORMANCE OK\n");
	return 0;
}
