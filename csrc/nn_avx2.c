// nn_avx2.c — the AVX2 versions of two nn.c kernels, called by nn.c after
// mnc_isa_active() said so (declared in internal.h): the column sums and the softmax
// cross-entropy of nn_simd.h on ymm vectors (vec_avx2.h). Compiled without FMA: the
// softmax must round each multiply and add as the scalar code does.
#include "internal.h"
#include "nn_math.h"

#if defined(__x86_64__) || defined(_M_X64)
#if defined(__GNUC__)  // GCC, Clang: the ISA is enabled per function, never per file
#define KERNEL_TARGET __attribute__((target("avx2")))
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else  // MSVC: intrinsics need no target option
#define KERNEL_TARGET
#define ALWAYS_INLINE static __forceinline
#endif
#include "vec_avx2.h"

#define COLSUM_BLOCK mnc_colsum_block_avx2
#define SOFTMAX_XENT_ROWS mnc_softmax_xent_rows_avx2
#include "nn_simd.h"

#endif  // x86-64
