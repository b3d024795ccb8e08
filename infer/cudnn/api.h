/*
 * api.h: every C prototype, type and enum value of the CUDA runtime, the
 * CUDA driver and cuDNN that infer/cudnn uses, declared here and nowhere
 * else. Nothing here comes from NVIDIA's headers: the package builds
 * without them, and the libraries are dlopen()ed at run time.
 *
 * Conventions (see ../shared/research/gpu.md, section 6):
 *   - handles and descriptors are void*, enums int, size_t and double exact;
 *   - cudnnStatus_t was renumbered between cuDNN 8 and 9: only 0 (success)
 *     is compared, messages come from cudnnGetErrorString;
 *   - the enum values and the algorithm-perf layout below are identical in
 *     the cuDNN 8.x and 9.x headers; gpucheck/conformance.cpp asserts each
 *     of them against the real headers on a machine that has them.
 */
#ifndef Y7_CUDNN_API_H
#define Y7_CUDNN_API_H

#include <stddef.h>

/* ---- CUDA runtime (libcudart) ---------------------------------------- */

#define Y7_cudaSuccess 0
#define Y7_cudaMemcpyHostToDevice 1
#define Y7_cudaMemcpyDeviceToHost 2
#define Y7_cudaMemcpyDeviceToDevice 3
#define Y7_cudaMemcpyDefault 4
#define Y7_cudaMemAttachGlobal 1
#define Y7_cudaHostAllocMapped 2
#define Y7_cudaStreamNonBlocking 1
#define Y7_cudaDevAttrMultiProcessorCount 16
#define Y7_cudaDevAttrIntegrated 18
#define Y7_cudaDevAttrComputeCapabilityMajor 75
#define Y7_cudaDevAttrComputeCapabilityMinor 76
#define Y7_cudaDevAttrConcurrentManagedAccess 89

typedef int (*y7_cudaGetDeviceCount_t)(int *count);
typedef int (*y7_cudaSetDevice_t)(int device);
typedef int (*y7_cudaRuntimeGetVersion_t)(int *version);
typedef int (*y7_cudaDriverGetVersion_t)(int *version);
typedef int (*y7_cudaDeviceGetAttribute_t)(int *value, int attr, int device);
typedef int (*y7_cudaMemGetInfo_t)(size_t *free_bytes, size_t *total_bytes);
typedef int (*y7_cudaMalloc_t)(void **ptr, size_t size);
typedef int (*y7_cudaMallocManaged_t)(void **ptr, size_t size, unsigned int flags);
typedef int (*y7_cudaHostAlloc_t)(void **ptr, size_t size, unsigned int flags);
typedef int (*y7_cudaHostGetDevicePointer_t)(void **dptr, void *hptr, unsigned int flags);
typedef int (*y7_cudaFree_t)(void *ptr);
typedef int (*y7_cudaFreeHost_t)(void *ptr);
typedef int (*y7_cudaMemcpyAsync_t)(void *dst, const void *src, size_t count, int kind, void *stream);
typedef int (*y7_cudaMemsetAsync_t)(void *dst, int value, size_t count, void *stream);
typedef int (*y7_cudaStreamCreateWithFlags_t)(void **stream, unsigned int flags);
typedef int (*y7_cudaStreamDestroy_t)(void *stream);
typedef int (*y7_cudaStreamSynchronize_t)(void *stream);
typedef const char *(*y7_cudaGetErrorString_t)(int err);

/* ---- CUDA driver (libcuda), only for the device's name --------------- */

typedef int (*y7_cuInit_t)(unsigned int flags);
typedef int (*y7_cuDeviceGet_t)(int *device, int ordinal);
typedef int (*y7_cuDeviceGetName_t)(char *name, int len, int device);

/* ---- cuDNN (libcudnn) ------------------------------------------------ */

#define Y7_CUDNN_STATUS_SUCCESS 0

/* cudnnDataType_t */
#define Y7_CUDNN_DATA_FLOAT 0
#define Y7_CUDNN_DATA_HALF 2
/* cudnnTensorFormat_t */
#define Y7_CUDNN_TENSOR_NCHW 0
/* cudnnConvolutionMode_t */
#define Y7_CUDNN_CROSS_CORRELATION 1
/* cudnnMathType_t */
#define Y7_CUDNN_DEFAULT_MATH 0
#define Y7_CUDNN_TENSOR_OP_MATH 1
/* cudnnActivationMode_t */
#define Y7_CUDNN_ACTIVATION_RELU 1
#define Y7_CUDNN_ACTIVATION_IDENTITY 5
/* cudnnNanPropagation_t */
#define Y7_CUDNN_NOT_PROPAGATE_NAN 0
#define Y7_CUDNN_PROPAGATE_NAN 1
/* cudnnPoolingMode_t */
#define Y7_CUDNN_POOLING_MAX 0
#define Y7_CUDNN_POOLING_MAX_DETERMINISTIC 3
/* cudnnBatchNormMode_t */
#define Y7_CUDNN_BATCHNORM_SPATIAL 1
/* cudnnOpTensorOp_t */
#define Y7_CUDNN_OP_TENSOR_ADD 0
#define Y7_CUDNN_OP_TENSOR_MUL 1
/* cudnnConvolutionFwdAlgo_t */
#define Y7_CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM 1
/* cudnnConvolutionFwdPreference / counts of the _v7 queries */
#define Y7_CUDNN_CONVOLUTION_FWD_ALGO_COUNT 8
#define Y7_CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT 6
#define Y7_CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT 7
/* CUDNN_BN_MIN_EPSILON */
#define Y7_CUDNN_BN_MIN_EPSILON 1e-5

/*
 * cudnnConvolution{Fwd,BwdData,BwdFilter}AlgoPerf_t: the three structs have
 * this one layout in cuDNN 8 and 9 (the enums are ints).
 */
typedef struct {
	int algo;
	int status;
	float time;
	size_t memory;
	int determinism;
	int mathType;
	int reserved[3];
} y7_cudnnAlgoPerf;

typedef size_t (*y7_cudnnGetVersion_t)(void);
typedef const char *(*y7_cudnnGetErrorString_t)(int status);
typedef int (*y7_cudnnVersionCheck_t)(void);
typedef int (*y7_cudnnCreate_t)(void **handle);
typedef int (*y7_cudnnDestroy_t)(void *handle);
typedef int (*y7_cudnnSetStream_t)(void *handle, void *stream);

typedef int (*y7_cudnnCreateDescriptor_t)(void **desc);
typedef int (*y7_cudnnDestroyDescriptor_t)(void *desc);
typedef int (*y7_cudnnSetTensor4dDescriptorEx_t)(void *desc, int dataType, int n, int c, int h, int w,
	int nStride, int cStride, int hStride, int wStride);
typedef int (*y7_cudnnSetTensorNdDescriptor_t)(void *desc, int dataType, int nbDims, const int *dimA,
	const int *strideA);
typedef int (*y7_cudnnSetFilter4dDescriptor_t)(void *desc, int dataType, int format, int k, int c, int h, int w);
typedef int (*y7_cudnnSetConvolution2dDescriptor_t)(void *desc, int padH, int padW, int u, int v,
	int dilationH, int dilationW, int mode, int computeType);
typedef int (*y7_cudnnSetConvolutionMathType_t)(void *desc, int mathType);
typedef int (*y7_cudnnSetConvolutionGroupCount_t)(void *desc, int groupCount);
typedef int (*y7_cudnnSetActivationDescriptor_t)(void *desc, int mode, int reluNanOpt, double coef);
typedef int (*y7_cudnnSetPooling2dDescriptor_t)(void *desc, int mode, int maxpoolingNanOpt,
	int windowHeight, int windowWidth, int verticalPadding, int horizontalPadding,
	int verticalStride, int horizontalStride);
typedef int (*y7_cudnnSetOpTensorDescriptor_t)(void *desc, int op, int compType, int nanOpt);

typedef int (*y7_cudnnGetConvolutionForwardAlgorithm_v7_t)(void *handle, void *xDesc, void *wDesc,
	void *convDesc, void *yDesc, int requestedAlgoCount, int *returnedAlgoCount, y7_cudnnAlgoPerf *perf);
typedef int (*y7_cudnnGetConvolutionForwardWorkspaceSize_t)(void *handle, void *xDesc, void *wDesc,
	void *convDesc, void *yDesc, int algo, size_t *size);
typedef int (*y7_cudnnConvolutionForward_t)(void *handle, const void *alpha, void *xDesc, const void *x,
	void *wDesc, const void *w, void *convDesc, int algo, void *workSpace, size_t workSpaceSize,
	const void *beta, void *yDesc, void *y);
typedef int (*y7_cudnnConvolutionBiasActivationForward_t)(void *handle, const void *alpha1, void *xDesc,
	const void *x, void *wDesc, const void *w, void *convDesc, int algo, void *workSpace,
	size_t workSpaceSize, const void *alpha2, void *zDesc, const void *z, void *biasDesc,
	const void *bias, void *activationDesc, void *yDesc, void *y);
typedef int (*y7_cudnnGetConvolutionBackwardDataAlgorithm_v7_t)(void *handle, void *wDesc, void *dyDesc,
	void *convDesc, void *dxDesc, int requestedAlgoCount, int *returnedAlgoCount, y7_cudnnAlgoPerf *perf);
typedef int (*y7_cudnnGetConvolutionBackwardDataWorkspaceSize_t)(void *handle, void *wDesc, void *dyDesc,
	void *convDesc, void *dxDesc, int algo, size_t *size);
typedef int (*y7_cudnnConvolutionBackwardData_t)(void *handle, const void *alpha, void *wDesc,
	const void *w, void *dyDesc, const void *dy, void *convDesc, int algo, void *workSpace,
	size_t workSpaceSize, const void *beta, void *dxDesc, void *dx);
typedef int (*y7_cudnnGetConvolutionBackwardFilterAlgorithm_v7_t)(void *handle, void *xDesc, void *dyDesc,
	void *convDesc, void *dwDesc, int requestedAlgoCount, int *returnedAlgoCount, y7_cudnnAlgoPerf *perf);
typedef int (*y7_cudnnGetConvolutionBackwardFilterWorkspaceSize_t)(void *handle, void *xDesc,
	void *dyDesc, void *convDesc, void *dwDesc, int algo, size_t *size);
typedef int (*y7_cudnnConvolutionBackwardFilter_t)(void *handle, const void *alpha, void *xDesc,
	const void *x, void *dyDesc, const void *dy, void *convDesc, int algo, void *workSpace,
	size_t workSpaceSize, const void *beta, void *dwDesc, void *dw);
typedef int (*y7_cudnnConvolutionBackwardBias_t)(void *handle, const void *alpha, void *dyDesc,
	const void *dy, const void *beta, void *dbDesc, void *db);

typedef int (*y7_cudnnActivationForward_t)(void *handle, void *activationDesc, const void *alpha,
	void *xDesc, const void *x, const void *beta, void *yDesc, void *y);
typedef int (*y7_cudnnActivationBackward_t)(void *handle, void *activationDesc, const void *alpha,
	void *yDesc, const void *y, void *dyDesc, const void *dy, void *xDesc, const void *x,
	const void *beta, void *dxDesc, void *dx);
typedef int (*y7_cudnnPoolingForward_t)(void *handle, void *poolingDesc, const void *alpha, void *xDesc,
	const void *x, const void *beta, void *yDesc, void *y);
typedef int (*y7_cudnnPoolingBackward_t)(void *handle, void *poolingDesc, const void *alpha, void *yDesc,
	const void *y, void *dyDesc, const void *dy, void *xDesc, const void *x, const void *beta,
	void *dxDesc, void *dx);
typedef int (*y7_cudnnAddTensor_t)(void *handle, const void *alpha, void *aDesc, const void *A,
	const void *beta, void *cDesc, void *C);
typedef int (*y7_cudnnOpTensor_t)(void *handle, void *opTensorDesc, const void *alpha1, void *aDesc,
	const void *A, const void *alpha2, void *bDesc, const void *B, const void *beta, void *cDesc, void *C);
typedef int (*y7_cudnnTransformTensor_t)(void *handle, const void *alpha, void *xDesc, const void *x,
	const void *beta, void *yDesc, void *y);

typedef int (*y7_cudnnBatchNormalizationForwardTraining_t)(void *handle, int mode, const void *alpha,
	const void *beta, void *xDesc, const void *x, void *yDesc, void *y, void *bnDesc,
	const void *bnScale, const void *bnBias, double exponentialAverageFactor, void *resultRunningMean,
	void *resultRunningVariance, double epsilon, void *resultSaveMean, void *resultSaveInvVariance);
typedef int (*y7_cudnnBatchNormalizationBackward_t)(void *handle, int mode, const void *alphaDataDiff,
	const void *betaDataDiff, const void *alphaParamDiff, const void *betaParamDiff, void *xDesc,
	const void *x, void *dyDesc, const void *dy, void *dxDesc, void *dx, void *bnDesc,
	const void *bnScale, void *resultBnScaleDiff, void *resultBnBiasDiff, double epsilon,
	const void *savedMean, const void *savedInvVariance);

/*
 * The X-macro lists: one line per symbol, (library, name, type). api.c
 * turns them into the y7_api table, its resolution by dlsym and the
 * trampolines Go calls. Optional symbols (absent in some versions) are in
 * Y7_OPTIONAL_SYMBOLS and stay NULL when missing.
 */
#define Y7_REQUIRED_SYMBOLS(X) \
	X(CUDART, cudaGetDeviceCount, y7_cudaGetDeviceCount_t) \
	X(CUDART, cudaSetDevice, y7_cudaSetDevice_t) \
	X(CUDART, cudaRuntimeGetVersion, y7_cudaRuntimeGetVersion_t) \
	X(CUDART, cudaDriverGetVersion, y7_cudaDriverGetVersion_t) \
	X(CUDART, cudaDeviceGetAttribute, y7_cudaDeviceGetAttribute_t) \
	X(CUDART, cudaMemGetInfo, y7_cudaMemGetInfo_t) \
	X(CUDART, cudaMalloc, y7_cudaMalloc_t) \
	X(CUDART, cudaMallocManaged, y7_cudaMallocManaged_t) \
	X(CUDART, cudaHostAlloc, y7_cudaHostAlloc_t) \
	X(CUDART, cudaHostGetDevicePointer, y7_cudaHostGetDevicePointer_t) \
	X(CUDART, cudaFree, y7_cudaFree_t) \
	X(CUDART, cudaFreeHost, y7_cudaFreeHost_t) \
	X(CUDART, cudaMemcpyAsync, y7_cudaMemcpyAsync_t) \
	X(CUDART, cudaMemsetAsync, y7_cudaMemsetAsync_t) \
	X(CUDART, cudaStreamCreateWithFlags, y7_cudaStreamCreateWithFlags_t) \
	X(CUDART, cudaStreamDestroy, y7_cudaStreamDestroy_t) \
	X(CUDART, cudaStreamSynchronize, y7_cudaStreamSynchronize_t) \
	X(CUDART, cudaGetErrorString, y7_cudaGetErrorString_t) \
	X(CUDNN, cudnnGetVersion, y7_cudnnGetVersion_t) \
	X(CUDNN, cudnnGetErrorString, y7_cudnnGetErrorString_t) \
	X(CUDNN, cudnnCreate, y7_cudnnCreate_t) \
	X(CUDNN, cudnnDestroy, y7_cudnnDestroy_t) \
	X(CUDNN, cudnnSetStream, y7_cudnnSetStream_t) \
	X(CUDNN, cudnnCreateTensorDescriptor, y7_cudnnCreateDescriptor_t) \
	X(CUDNN, cudnnDestroyTensorDescriptor, y7_cudnnDestroyDescriptor_t) \
	X(CUDNN, cudnnSetTensor4dDescriptorEx, y7_cudnnSetTensor4dDescriptorEx_t) \
	X(CUDNN, cudnnSetTensorNdDescriptor, y7_cudnnSetTensorNdDescriptor_t) \
	X(CUDNN, cudnnCreateFilterDescriptor, y7_cudnnCreateDescriptor_t) \
	X(CUDNN, cudnnDestroyFilterDescriptor, y7_cudnnDestroyDescriptor_t) \
	X(CUDNN, cudnnSetFilter4dDescriptor, y7_cudnnSetFilter4dDescriptor_t) \
	X(CUDNN, cudnnCreateConvolutionDescriptor, y7_cudnnCreateDescriptor_t) \
	X(CUDNN, cudnnDestroyConvolutionDescriptor, y7_cudnnDestroyDescriptor_t) \
	X(CUDNN, cudnnSetConvolution2dDescriptor, y7_cudnnSetConvolution2dDescriptor_t) \
	X(CUDNN, cudnnSetConvolutionMathType, y7_cudnnSetConvolutionMathType_t) \
	X(CUDNN, cudnnSetConvolutionGroupCount, y7_cudnnSetConvolutionGroupCount_t) \
	X(CUDNN, cudnnCreateActivationDescriptor, y7_cudnnCreateDescriptor_t) \
	X(CUDNN, cudnnDestroyActivationDescriptor, y7_cudnnDestroyDescriptor_t) \
	X(CUDNN, cudnnSetActivationDescriptor, y7_cudnnSetActivationDescriptor_t) \
	X(CUDNN, cudnnCreatePoolingDescriptor, y7_cudnnCreateDescriptor_t) \
	X(CUDNN, cudnnDestroyPoolingDescriptor, y7_cudnnDestroyDescriptor_t) \
	X(CUDNN, cudnnSetPooling2dDescriptor, y7_cudnnSetPooling2dDescriptor_t) \
	X(CUDNN, cudnnCreateOpTensorDescriptor, y7_cudnnCreateDescriptor_t) \
	X(CUDNN, cudnnDestroyOpTensorDescriptor, y7_cudnnDestroyDescriptor_t) \
	X(CUDNN, cudnnSetOpTensorDescriptor, y7_cudnnSetOpTensorDescriptor_t) \
	X(CUDNN, cudnnGetConvolutionForwardAlgorithm_v7, y7_cudnnGetConvolutionForwardAlgorithm_v7_t) \
	X(CUDNN, cudnnGetConvolutionForwardWorkspaceSize, y7_cudnnGetConvolutionForwardWorkspaceSize_t) \
	X(CUDNN, cudnnConvolutionForward, y7_cudnnConvolutionForward_t) \
	X(CUDNN, cudnnConvolutionBiasActivationForward, y7_cudnnConvolutionBiasActivationForward_t) \
	X(CUDNN, cudnnGetConvolutionBackwardDataAlgorithm_v7, y7_cudnnGetConvolutionBackwardDataAlgorithm_v7_t) \
	X(CUDNN, cudnnGetConvolutionBackwardDataWorkspaceSize, y7_cudnnGetConvolutionBackwardDataWorkspaceSize_t) \
	X(CUDNN, cudnnConvolutionBackwardData, y7_cudnnConvolutionBackwardData_t) \
	X(CUDNN, cudnnGetConvolutionBackwardFilterAlgorithm_v7, y7_cudnnGetConvolutionBackwardFilterAlgorithm_v7_t) \
	X(CUDNN, cudnnGetConvolutionBackwardFilterWorkspaceSize, y7_cudnnGetConvolutionBackwardFilterWorkspaceSize_t) \
	X(CUDNN, cudnnConvolutionBackwardFilter, y7_cudnnConvolutionBackwardFilter_t) \
	X(CUDNN, cudnnConvolutionBackwardBias, y7_cudnnConvolutionBackwardBias_t) \
	X(CUDNN, cudnnActivationForward, y7_cudnnActivationForward_t) \
	X(CUDNN, cudnnActivationBackward, y7_cudnnActivationBackward_t) \
	X(CUDNN, cudnnPoolingForward, y7_cudnnPoolingForward_t) \
	X(CUDNN, cudnnPoolingBackward, y7_cudnnPoolingBackward_t) \
	X(CUDNN, cudnnAddTensor, y7_cudnnAddTensor_t) \
	X(CUDNN, cudnnOpTensor, y7_cudnnOpTensor_t) \
	X(CUDNN, cudnnTransformTensor, y7_cudnnTransformTensor_t) \
	X(CUDNN, cudnnBatchNormalizationForwardTraining, y7_cudnnBatchNormalizationForwardTraining_t) \
	X(CUDNN, cudnnBatchNormalizationBackward, y7_cudnnBatchNormalizationBackward_t)

#define Y7_OPTIONAL_SYMBOLS(X) \
	X(CUDA, cuInit, y7_cuInit_t) \
	X(CUDA, cuDeviceGet, y7_cuDeviceGet_t) \
	X(CUDA, cuDeviceGetName, y7_cuDeviceGetName_t) \
	X(CUDNN, cudnnOpsVersionCheck, y7_cudnnVersionCheck_t) \
	X(CUDNN, cudnnCnnVersionCheck, y7_cudnnVersionCheck_t) \
	X(CUDNN, cudnnOpsInferVersionCheck, y7_cudnnVersionCheck_t) \
	X(CUDNN, cudnnCnnInferVersionCheck, y7_cudnnVersionCheck_t)

#endif
