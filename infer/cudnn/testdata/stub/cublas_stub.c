/*
 * cublas_stub.c: stand-ins for cuBLASLt and cuBLAS, which Load opens before
 * cuDNN (cuDNN 9 dlopens cuBLASLt by soname). Nothing in the package calls
 * them; each only has to load. build.sh builds this file twice: with
 * -DY7STUB_CUBLASLT as libcublasLt.so.12, without as libcublas.so.12.
 */
#include <stddef.h>

#ifdef Y7STUB_CUBLASLT

/* cublasLtGetVersion: 12.6.0. */
size_t cublasLtGetVersion(void)
{
	return 120600;
}

#else

/* cublasGetVersion_v2: 12.6.0 (CUBLAS_STATUS_INVALID_VALUE, 7, without a destination). */
int cublasGetVersion_v2(void *handle, int *version)
{
	(void)handle;
	if (!version) return 7;
	*version = 120600;
	return 0;
}

#endif
