// nn_avx512.c — the AVX-512 versions of three nn.c kernels, called by nn.c after
// mnc_isa_active() said so (declared in internal.h): the column sums and the softmax
// cross-entropy of nn_simd.h on zmm vectors (vec_avx512.h), and one row of the batch
// gather (uint8 -> float32 times the scale, 16 at a time), which only this target has.
#include "internal.h"
#include "nn_math.h"

#if defined(__x86_64__) || defined(_M_X64)
#if defined(__GNUC__)  // GCC, Clang: the ISA is enabled per function, never per file
#define KERNEL_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else  // MSVC: intrinsics need no target option
#define KERNEL_TARGET
#define ALWAYS_INLINE static __forceinline
#endif
#include "vec_avx512.h"

#define COLSUM_BLOCK mnc_colsum_block_avx512
#define SOFTMAX_XENT_ROWS mnc_softmax_xent_rows_avx512
#include "nn_simd.h"

// dst[j] = (float)src[j] * scale: an exact convert and one float32 multiply, as nn.c's
// loop does.
KERNEL_TARGET void mnc_scale_u8_avx512(float *dst, const uint8_t *src, int64_t d, float scale) {
    vec vs = vset1(scale);
    int64_t j = 0;
    for (; j + VW <= d; j += VW) {
        veci x = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(src + j)));
        vstoreu(dst + j, vmul(vcvt_f(x), vs));
    }
    if (j < d) {
        vmask m = lane_mask(d - j, 0);
        veci x = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, src + j));
        vstore_mask(dst + j, m, vmul(vcvt_f(x), vs));
    }
}

#endif  // x86-64
