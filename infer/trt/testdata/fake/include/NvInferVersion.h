#pragma once
/* Fake NvInferVersion.h: 8.5.2.2 (JetPack 5) or 10.3.0.26 (JetPack 6.1+). */
#ifndef FAKE_TRT_MAJOR
#error define FAKE_TRT_MAJOR
#endif
#if FAKE_TRT_MAJOR >= 10
#define NV_TENSORRT_MAJOR 10
#define NV_TENSORRT_MINOR 3
#define NV_TENSORRT_PATCH 0
#define NV_TENSORRT_BUILD 26
#else
#define NV_TENSORRT_MAJOR 8
#define NV_TENSORRT_MINOR 5
#define NV_TENSORRT_PATCH 2
#define NV_TENSORRT_BUILD 2
#endif
