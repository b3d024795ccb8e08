// Y7_VEC compiles a function for AVX-512, AVX2 and plain x86-64, picked at
// load time (GCC function multi-versioning), so its loops vectorise to the
// width of the CPU they run on rather than the x86-64 baseline (SSE2).
#ifndef Y7_VEC_H
#define Y7_VEC_H
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define Y7_VEC __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define Y7_VEC
#endif
#endif
