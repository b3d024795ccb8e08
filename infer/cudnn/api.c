// api.c: loading the libraries and resolving the symbols of api.h.
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "shim.h"

// y7_dlopen opens a library by absolute path or soname with RTLD_NOW |
// RTLD_GLOBAL (so that cuDNN's own dlopen of its sub-libraries and of
// cuBLASLt finds the copies loaded here); on failure it copies dlerror()
// into err and returns NULL.
void *y7_dlopen(const char *path, char *err, int errlen) {
	void *h = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
	if (!h && errlen > 0) {
		const char *e = dlerror();
		snprintf(err, (size_t)errlen, "%s", e ? e : "dlopen failed");
	}
	return h;
}

void y7_dlclose(void *handle) {
	if (handle) dlclose(handle);
}

// y7_resolve fills a with the symbols of api.h: it returns the name of the
// first required symbol that is missing (a zeroed table stays unusable),
// or NULL when every required one was found. Optional symbols stay NULL
// when absent. A NULL library handle resolves nothing from it.
const char *y7_resolve(y7_api *a, void *cudart, void *cudnn, void *cuda) {
	void *lib_CUDART = cudart, *lib_CUDNN = cudnn, *lib_CUDA = cuda;
	memset(a, 0, sizeof *a);
#define Y7_REQ(lib, name, type) \
	a->name = lib_##lib ? (type)dlsym(lib_##lib, #name) : NULL; \
	if (!a->name) return #name;
#define Y7_OPT(lib, name, type) a->name = lib_##lib ? (type)dlsym(lib_##lib, #name) : NULL;
	Y7_REQUIRED_SYMBOLS(Y7_REQ)
	Y7_OPTIONAL_SYMBOLS(Y7_OPT)
#undef Y7_REQ
#undef Y7_OPT
	return NULL;
}

// y7_has reports whether the named symbol was resolved.
int y7_has(const y7_api *a, const char *name) {
#define Y7_HAS(lib, sym, type) if (strcmp(name, #sym) == 0) return a->sym != NULL;
	Y7_REQUIRED_SYMBOLS(Y7_HAS)
	Y7_OPTIONAL_SYMBOLS(Y7_HAS)
#undef Y7_HAS
	return 0;
}
