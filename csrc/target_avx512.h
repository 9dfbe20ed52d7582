// target_avx512.h — what a file of AVX-512 kernels with FMA (gemm_kernel_avx512.c,
// sparse.c) defines before its functions: the per-function target attribute, the
// always-inline helper attribute, and vec_avx512.h's vector operations. Include it only
// on x86-64, and call its functions only after mnc_isa_active() said AVX-512.
#ifndef MNISTC_TARGET_AVX512_H
#define MNISTC_TARGET_AVX512_H

#if defined(__GNUC__)  // GCC, Clang: the ISA is enabled per function, never per file
#define KERNEL_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else  // MSVC: intrinsics need no target option
#define KERNEL_TARGET
#define ALWAYS_INLINE static __forceinline
#endif
#include "vec_avx512.h"

#endif  // MNISTC_TARGET_AVX512_H
