/*
 * shim.h: the table of entry points resolved by dlsym (y7_api) and the
 * trampolines through which Go calls them (Go cannot call C function
 * pointers). One trampoline per symbol of api.h, nothing else.
 */
#ifndef Y7_CUDNN_SHIM_H
#define Y7_CUDNN_SHIM_H

#include "api.h"

typedef struct y7_api {
#define Y7_FIELD(lib, name, type) type name;
	Y7_REQUIRED_SYMBOLS(Y7_FIELD)
	Y7_OPTIONAL_SYMBOLS(Y7_FIELD)
#undef Y7_FIELD
} y7_api;

/* api.c */
void *y7_dlopen(const char *path, char *err, int errlen);
void y7_dlclose(void *handle);
const char *y7_resolve(y7_api *a, void *cudart, void *cudnn, void *cuda);
int y7_has(const y7_api *a, const char *name);

/* CUDA runtime */
static inline int y7_cudaGetDeviceCount(const y7_api *a, int *n) { return a->cudaGetDeviceCount(n); }
static inline int y7_cudaSetDevice(const y7_api *a, int d) { return a->cudaSetDevice(d); }
static inline int y7_cudaRuntimeGetVersion(const y7_api *a, int *v) { return a->cudaRuntimeGetVersion(v); }
static inline int y7_cudaDriverGetVersion(const y7_api *a, int *v) { return a->cudaDriverGetVersion(v); }
static inline int y7_cudaDeviceGetAttribute(const y7_api *a, int *v, int attr, int d) { return a->cudaDeviceGetAttribute(v, attr, d); }
static inline int y7_cudaMemGetInfo(const y7_api *a, size_t *f, size_t *t) { return a->cudaMemGetInfo(f, t); }
static inline int y7_cudaMalloc(const y7_api *a, void **p, size_t n) { return a->cudaMalloc(p, n); }
static inline int y7_cudaMallocManaged(const y7_api *a, void **p, size_t n, unsigned f) { return a->cudaMallocManaged(p, n, f); }
static inline int y7_cudaHostAlloc(const y7_api *a, void **p, size_t n, unsigned f) { return a->cudaHostAlloc(p, n, f); }
static inline int y7_cudaHostGetDevicePointer(const y7_api *a, void **d, void *h, unsigned f) { return a->cudaHostGetDevicePointer(d, h, f); }
static inline int y7_cudaFree(const y7_api *a, void *p) { return a->cudaFree(p); }
static inline int y7_cudaFreeHost(const y7_api *a, void *p) { return a->cudaFreeHost(p); }
static inline int y7_cudaMemcpyAsync(const y7_api *a, void *dst, const void *src, size_t n, int kind, void *s) { return a->cudaMemcpyAsync(dst, src, n, kind, s); }
static inline int y7_cudaMemsetAsync(const y7_api *a, void *dst, int v, size_t n, void *s) { return a->cudaMemsetAsync(dst, v, n, s); }
static inline int y7_cudaStreamCreateWithFlags(const y7_api *a, void **s, unsigned f) { return a->cudaStreamCreateWithFlags(s, f); }
static inline int y7_cudaStreamDestroy(const y7_api *a, void *s) { return a->cudaStreamDestroy(s); }
static inline int y7_cudaStreamSynchronize(const y7_api *a, void *s) { return a->cudaStreamSynchronize(s); }
static inline const char *y7_cudaGetErrorString(const y7_api *a, int e) { return a->cudaGetErrorString(e); }

/* CUDA driver (optional) */
static inline int y7_cuDeviceName(const y7_api *a, int ordinal, char *name, int len) {
	int dev = 0, rc;
	if (!a->cuInit || !a->cuDeviceGet || !a->cuDeviceGetName) return -1;
	if ((rc = a->cuInit(0)) != 0) return rc;
	if ((rc = a->cuDeviceGet(&dev, ordinal)) != 0) return rc;
	return a->cuDeviceGetName(name, len, dev);
}

/* cuDNN */
static inline size_t y7_cudnnGetVersion(const y7_api *a) { return a->cudnnGetVersion(); }
static inline const char *y7_cudnnGetErrorString(const y7_api *a, int s) { return a->cudnnGetErrorString(s); }
static inline int y7_cudnnVersionCheck(const y7_api *a, int which) {
	/* which: 0 ops, 1 cnn; the cuDNN 9 name first, then cuDNN 8's. -1: absent. */
	y7_cudnnVersionCheck_t f = which == 0 ? a->cudnnOpsVersionCheck : a->cudnnCnnVersionCheck;
	if (!f) f = which == 0 ? a->cudnnOpsInferVersionCheck : a->cudnnCnnInferVersionCheck;
	return f ? f() : -1;
}
static inline int y7_cudnnCreate(const y7_api *a, void **h) { return a->cudnnCreate(h); }
static inline int y7_cudnnDestroy(const y7_api *a, void *h) { return a->cudnnDestroy(h); }
static inline int y7_cudnnSetStream(const y7_api *a, void *h, void *s) { return a->cudnnSetStream(h, s); }

/* descriptors: kind 0 tensor, 1 filter, 2 convolution, 3 activation, 4 pooling, 5 op-tensor */
static inline int y7_cudnnCreateDesc(const y7_api *a, int kind, void **d) {
	switch (kind) {
	case 0: return a->cudnnCreateTensorDescriptor(d);
	case 1: return a->cudnnCreateFilterDescriptor(d);
	case 2: return a->cudnnCreateConvolutionDescriptor(d);
	case 3: return a->cudnnCreateActivationDescriptor(d);
	case 4: return a->cudnnCreatePoolingDescriptor(d);
	case 5: return a->cudnnCreateOpTensorDescriptor(d);
	}
	return -1;
}
static inline int y7_cudnnDestroyDesc(const y7_api *a, int kind, void *d) {
	switch (kind) {
	case 0: return a->cudnnDestroyTensorDescriptor(d);
	case 1: return a->cudnnDestroyFilterDescriptor(d);
	case 2: return a->cudnnDestroyConvolutionDescriptor(d);
	case 3: return a->cudnnDestroyActivationDescriptor(d);
	case 4: return a->cudnnDestroyPoolingDescriptor(d);
	case 5: return a->cudnnDestroyOpTensorDescriptor(d);
	}
	return -1;
}
static inline int y7_cudnnSetTensor4dDescriptorEx(const y7_api *a, void *d, int dt, int n, int c, int h, int w, int ns, int cs, int hs, int ws) { return a->cudnnSetTensor4dDescriptorEx(d, dt, n, c, h, w, ns, cs, hs, ws); }
static inline int y7_cudnnSetTensorNdDescriptor(const y7_api *a, void *d, int dt, int nb, const int *dims, const int *strides) { return a->cudnnSetTensorNdDescriptor(d, dt, nb, dims, strides); }
/* a 5-d tensor (the head's transpose), dims and strides by value */
static inline int y7_cudnnSetTensor5d(const y7_api *a, void *d, int dt, int d0, int d1, int d2, int d3, int d4, int s0, int s1, int s2, int s3, int s4) {
	int dims[5] = {d0, d1, d2, d3, d4}, strides[5] = {s0, s1, s2, s3, s4};
	return a->cudnnSetTensorNdDescriptor(d, dt, 5, dims, strides);
}
static inline int y7_cudnnSetFilter4dDescriptor(const y7_api *a, void *d, int dt, int f, int k, int c, int h, int w) { return a->cudnnSetFilter4dDescriptor(d, dt, f, k, c, h, w); }
static inline int y7_cudnnSetConvolution2dDescriptor(const y7_api *a, void *d, int ph, int pw, int u, int v, int dh, int dw, int mode, int ct) { return a->cudnnSetConvolution2dDescriptor(d, ph, pw, u, v, dh, dw, mode, ct); }
static inline int y7_cudnnSetConvolutionMathType(const y7_api *a, void *d, int m) { return a->cudnnSetConvolutionMathType(d, m); }
static inline int y7_cudnnSetConvolutionGroupCount(const y7_api *a, void *d, int g) { return a->cudnnSetConvolutionGroupCount(d, g); }
static inline int y7_cudnnSetActivationDescriptor(const y7_api *a, void *d, int mode, int nan, double coef) { return a->cudnnSetActivationDescriptor(d, mode, nan, coef); }
static inline int y7_cudnnSetPooling2dDescriptor(const y7_api *a, void *d, int mode, int nan, int wh, int ww, int ph, int pw, int sh, int sw) { return a->cudnnSetPooling2dDescriptor(d, mode, nan, wh, ww, ph, pw, sh, sw); }
static inline int y7_cudnnSetOpTensorDescriptor(const y7_api *a, void *d, int op, int ct, int nan) { return a->cudnnSetOpTensorDescriptor(d, op, ct, nan); }

static inline int y7_cudnnGetConvolutionForwardAlgorithm_v7(const y7_api *a, void *h, void *x, void *w, void *c, void *y, int req, int *ret, y7_cudnnAlgoPerf *p) { return a->cudnnGetConvolutionForwardAlgorithm_v7(h, x, w, c, y, req, ret, p); }
static inline int y7_cudnnGetConvolutionForwardWorkspaceSize(const y7_api *a, void *h, void *x, void *w, void *c, void *y, int algo, size_t *n) { return a->cudnnGetConvolutionForwardWorkspaceSize(h, x, w, c, y, algo, n); }
static inline int y7_cudnnGetConvolutionBackwardDataAlgorithm_v7(const y7_api *a, void *h, void *w, void *dy, void *c, void *dx, int req, int *ret, y7_cudnnAlgoPerf *p) { return a->cudnnGetConvolutionBackwardDataAlgorithm_v7(h, w, dy, c, dx, req, ret, p); }
static inline int y7_cudnnGetConvolutionBackwardDataWorkspaceSize(const y7_api *a, void *h, void *w, void *dy, void *c, void *dx, int algo, size_t *n) { return a->cudnnGetConvolutionBackwardDataWorkspaceSize(h, w, dy, c, dx, algo, n); }
static inline int y7_cudnnGetConvolutionBackwardFilterAlgorithm_v7(const y7_api *a, void *h, void *x, void *dy, void *c, void *dw, int req, int *ret, y7_cudnnAlgoPerf *p) { return a->cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, x, dy, c, dw, req, ret, p); }
static inline int y7_cudnnGetConvolutionBackwardFilterWorkspaceSize(const y7_api *a, void *h, void *x, void *dy, void *c, void *dw, int algo, size_t *n) { return a->cudnnGetConvolutionBackwardFilterWorkspaceSize(h, x, dy, c, dw, algo, n); }

static inline int y7_cudnnConvolutionForward(const y7_api *a, void *h, float alpha, void *xd, const void *x, void *wd, const void *w, void *cd, int algo, void *ws, size_t wsn, float beta, void *yd, void *y) {
	return a->cudnnConvolutionForward(h, &alpha, xd, x, wd, w, cd, algo, ws, wsn, &beta, yd, y);
}
static inline int y7_cudnnConvolutionBiasActivationForward(const y7_api *a, void *h, float alpha1, void *xd, const void *x, void *wd, const void *w, void *cd, int algo, void *ws, size_t wsn, float alpha2, void *zd, const void *z, void *bd, const void *b, void *ad, void *yd, void *y) {
	return a->cudnnConvolutionBiasActivationForward(h, &alpha1, xd, x, wd, w, cd, algo, ws, wsn, &alpha2, zd, z, bd, b, ad, yd, y);
}
static inline int y7_cudnnConvolutionBackwardData(const y7_api *a, void *h, float alpha, void *wd, const void *w, void *dyd, const void *dy, void *cd, int algo, void *ws, size_t wsn, float beta, void *dxd, void *dx) {
	return a->cudnnConvolutionBackwardData(h, &alpha, wd, w, dyd, dy, cd, algo, ws, wsn, &beta, dxd, dx);
}
static inline int y7_cudnnConvolutionBackwardFilter(const y7_api *a, void *h, float alpha, void *xd, const void *x, void *dyd, const void *dy, void *cd, int algo, void *ws, size_t wsn, float beta, void *dwd, void *dw) {
	return a->cudnnConvolutionBackwardFilter(h, &alpha, xd, x, dyd, dy, cd, algo, ws, wsn, &beta, dwd, dw);
}
static inline int y7_cudnnConvolutionBackwardBias(const y7_api *a, void *h, float alpha, void *dyd, const void *dy, float beta, void *dbd, void *db) {
	return a->cudnnConvolutionBackwardBias(h, &alpha, dyd, dy, &beta, dbd, db);
}
static inline int y7_cudnnActivationForward(const y7_api *a, void *h, void *ad, float alpha, void *xd, const void *x, float beta, void *yd, void *y) {
	return a->cudnnActivationForward(h, ad, &alpha, xd, x, &beta, yd, y);
}
static inline int y7_cudnnActivationBackward(const y7_api *a, void *h, void *ad, float alpha, void *yd, const void *y, void *dyd, const void *dy, void *xd, const void *x, float beta, void *dxd, void *dx) {
	return a->cudnnActivationBackward(h, ad, &alpha, yd, y, dyd, dy, xd, x, &beta, dxd, dx);
}
static inline int y7_cudnnPoolingForward(const y7_api *a, void *h, void *pd, float alpha, void *xd, const void *x, float beta, void *yd, void *y) {
	return a->cudnnPoolingForward(h, pd, &alpha, xd, x, &beta, yd, y);
}
static inline int y7_cudnnPoolingBackward(const y7_api *a, void *h, void *pd, float alpha, void *yd, const void *y, void *dyd, const void *dy, void *xd, const void *x, float beta, void *dxd, void *dx) {
	return a->cudnnPoolingBackward(h, pd, &alpha, yd, y, dyd, dy, xd, x, &beta, dxd, dx);
}
static inline int y7_cudnnAddTensor(const y7_api *a, void *h, float alpha, void *ad, const void *A, float beta, void *cd, void *C) {
	return a->cudnnAddTensor(h, &alpha, ad, A, &beta, cd, C);
}
static inline int y7_cudnnOpTensor(const y7_api *a, void *h, void *od, float alpha1, void *ad, const void *A, float alpha2, void *bd, const void *B, float beta, void *cd, void *C) {
	return a->cudnnOpTensor(h, od, &alpha1, ad, A, &alpha2, bd, B, &beta, cd, C);
}
static inline int y7_cudnnTransformTensor(const y7_api *a, void *h, float alpha, void *xd, const void *x, float beta, void *yd, void *y) {
	return a->cudnnTransformTensor(h, &alpha, xd, x, &beta, yd, y);
}
static inline int y7_cudnnBatchNormalizationForwardTraining(const y7_api *a, void *h, int mode, void *xd, const void *x, void *yd, void *y, void *bnd, const void *scale, const void *bias, double factor, void *rm, void *rv, double eps, void *sm, void *siv) {
	float alpha = 1, beta = 0;
	return a->cudnnBatchNormalizationForwardTraining(h, mode, &alpha, &beta, xd, x, yd, y, bnd, scale, bias, factor, rm, rv, eps, sm, siv);
}
static inline int y7_cudnnBatchNormalizationBackward(const y7_api *a, void *h, int mode, float betaData, float betaParam, void *xd, const void *x, void *dyd, const void *dy, void *dxd, void *dx, void *bnd, const void *scale, void *dscale, void *dbias, double eps, const void *sm, const void *siv) {
	float one = 1;
	return a->cudnnBatchNormalizationBackward(h, mode, &one, &betaData, &one, &betaParam, xd, x, dyd, dy, dxd, dx, bnd, scale, dscale, dbias, eps, sm, siv);
}

#endif
