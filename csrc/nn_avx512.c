// nn_avx512.c — the AVX-512 versions of three nn.c kernels, called by nn.c after
// mnc_isa_active() said so (declared in internal.h):
//  - one row of the batch gather: uint8 -> float32 times the scale, 16 at a time;
//  - a block of column sums, 256 columns in 16 zmm registers, rows added in order;
//  - the fused softmax cross-entropy on up to 16 rows at once, one row per lane. The
//    scalar code in nn.c is latency-bound on short rows (10 logits: ~40 cycles per
//    logit); here each lane runs exactly the scalar operations in the same order
//    (nn_math.h, no FMA contraction), so the bits are the scalar code's (tested).
#include "internal.h"
#include "nn_math.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#if defined(__GNUC__)  // GCC, Clang: the ISA is enabled per function, never per file
#define KERNEL_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else  // MSVC: intrinsics need no target option
#define KERNEL_TARGET
#define ALWAYS_INLINE static __forceinline
#endif

ALWAYS_INLINE KERNEL_TARGET __mmask16 first_lanes(int64_t count) {
    return count >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << count) - 1u);
}

KERNEL_TARGET void mnc_scale_u8_avx512(float *dst, const uint8_t *src, int64_t d,
                                       float scale) {
    __m512 vs = _mm512_set1_ps(scale);
    int64_t j = 0;
    for (; j + 16 <= d; j += 16) {
        __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(src + j)));
        _mm512_storeu_ps(dst + j, _mm512_mul_ps(_mm512_cvtepi32_ps(x), vs));
    }
    if (j < d) {
        __mmask16 m = first_lanes(d - j);
        __m512i x = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, src + j));
        _mm512_mask_storeu_ps(dst + j, m, _mm512_mul_ps(_mm512_cvtepi32_ps(x), vs));
    }
}

KERNEL_TARGET void mnc_colsum_block_avx512(float *sum, const float *x, int64_t m,
                                           int64_t ld, int64_t width) {
    __m512 acc[16];
    __mmask16 mask[16];
#pragma GCC unroll 16
    for (int v = 0; v < 16; v++) {
        acc[v] = _mm512_setzero_ps();
        mask[v] = first_lanes(width - 16 * v > 0 ? width - 16 * v : 0);
    }
    for (int64_t i = 0; i < m; i++) {
        const float *xi = x + i * ld;
#pragma GCC unroll 16
        for (int v = 0; v < 16; v++)
            acc[v] = _mm512_add_ps(acc[v], _mm512_maskz_loadu_ps(mask[v], xi + 16 * v));
    }
#pragma GCC unroll 16
    for (int v = 0; v < 16; v++) _mm512_mask_storeu_ps(sum + 16 * v, mask[v], acc[v]);
}

ALWAYS_INLINE KERNEL_TARGET __m512 mul(__m512 x, __m512 y) { return _mm512_mul_ps(x, y); }
ALWAYS_INLINE KERNEL_TARGET __m512 add(__m512 x, __m512 y) { return _mm512_add_ps(x, y); }
ALWAYS_INLINE KERNEL_TARGET __m512 sub(__m512 x, __m512 y) { return _mm512_sub_ps(x, y); }
ALWAYS_INLINE KERNEL_TARGET __m512 num(float x) { return _mm512_set1_ps(x); }

// nn_exp_nonpositive, lane by lane.
ALWAYS_INLINE KERNEL_TARGET __m512 exp_nonpositive(__m512 x) {
    __m512 n = sub(add(mul(x, num(NN_LOG2E)), num(NN_ROUND_MAGIC)), num(NN_ROUND_MAGIC));
    __m512 r = sub(x, mul(n, num(NN_LN2_HI)));
    r = sub(r, mul(n, num(NN_LN2_LO)));
    __m512 p;
    NN_EXP_POLY(p, r, mul, add, num);
    p = add(add(mul(mul(p, r), r), r), num(1.0f));
    __m512i e = _mm512_cvttps_epi32(n);
    __mmask16 tiny = _mm512_cmplt_epi32_mask(e, _mm512_set1_epi32(-126));
    p = _mm512_mask_mul_ps(p, tiny, p, num(0x1p-24f));
    e = _mm512_mask_add_epi32(e, tiny, e, _mm512_set1_epi32(24));
    __m512 scale = _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_add_epi32(e, _mm512_set1_epi32(127)), 23));
    __m512 y = mul(p, scale);
    // Outside the range: NaN stays NaN, the rest underflows to 0 (as the scalar branch).
    __mmask16 in_range = _mm512_cmp_ps_mask(x, num(NN_EXP_MIN), _CMP_GE_OQ);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    y = _mm512_mask_mov_ps(y, (__mmask16)~in_range, _mm512_setzero_ps());
    return _mm512_mask_mov_ps(y, nan, x);
}

// nn_log_ge1, lane by lane.
ALWAYS_INLINE KERNEL_TARGET __m512 log_ge1(__m512 x) {
    __m512i bits = _mm512_castps_si512(x);
    __m512i e = _mm512_sub_epi32(
        _mm512_and_si512(_mm512_srli_epi32(bits, 23), _mm512_set1_epi32(0xff)),
        _mm512_set1_epi32(126));
    bits = _mm512_or_si512(_mm512_and_si512(bits, _mm512_set1_epi32(0x807fffff)),
                           _mm512_set1_epi32(126 << 23));
    __m512 m = _mm512_castsi512_ps(bits);
    __mmask16 low = _mm512_cmp_ps_mask(m, num(NN_SQRT_HALF), _CMP_LT_OQ);
    e = _mm512_mask_sub_epi32(e, low, e, _mm512_set1_epi32(1));
    m = _mm512_mask_mov_ps(sub(m, num(1.0f)), low, sub(add(m, m), num(1.0f)));
    __m512 z = mul(m, m);
    __m512 y;
    NN_LOG_POLY(y, m, mul, add, num);
    y = mul(mul(y, m), z);
    __m512 fe = _mm512_cvtepi32_ps(e);
    y = add(y, mul(fe, num(NN_LN2_LO)));
    y = add(y, mul(num(-0.5f), z));
    __m512 out = add(add(m, y), mul(fe, num(NN_LN2_HI)));
    // NaN and +inf propagate (the scalar early return).
    __mmask16 finite = _mm512_cmp_ps_mask(x, num(NN_FLOAT_MAX), _CMP_LE_OQ);
    return _mm512_mask_mov_ps(x, finite, out);
}

// softmax_xent_row (nn.c) for rows [0, rows) of z and dz, rows <= 16, row i in lane i.
// Column j of the block is a gather; dz may alias z: column j is read before it is
// written, and z[label] is read before any write, as in the scalar code.
KERNEL_TARGET void mnc_softmax_xent_rows_avx512(float *dz, float *row_loss, const float *z,
                                                const int32_t *labels, int64_t rows,
                                                int64_t n, float grad_scale) {
    __mmask16 live = first_lanes(rows);
    __m512i row_start = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32((int)n));
    __m512i at_label = _mm512_add_epi32(row_start, _mm512_maskz_loadu_epi32(live, labels));
    __m512 zero = _mm512_setzero_ps();
#define COLUMN(base, j) _mm512_mask_i32gather_ps(zero, live, row_start, (base) + (j), 4)

    __m512 zmax = COLUMN(z, 0);
    for (int64_t j = 1; j < n; j++) {
        __m512 zj = COLUMN(z, j);
        zmax = _mm512_mask_mov_ps(zmax, _mm512_cmp_ps_mask(zj, zmax, _CMP_GT_OQ), zj);
    }
    __m512 z_label = _mm512_mask_i32gather_ps(zero, live, at_label, z, 4);
    __m512 sum = zero;
    for (int64_t j = 0; j < n; j++) {
        __m512 e = exp_nonpositive(sub(COLUMN(z, j), zmax));
        if (dz != NULL) _mm512_mask_i32scatter_ps(dz + j, live, row_start, e, 4);
        sum = add(sum, e);
    }
    _mm512_mask_storeu_ps(row_loss, live, add(sub(zmax, z_label), log_ge1(sum)));
    if (dz != NULL) {
        __m512 inv = _mm512_div_ps(num(grad_scale), sum);
        for (int64_t j = 0; j < n; j++)
            _mm512_mask_i32scatter_ps(dz + j, live, row_start, mul(COLUMN(dz, j), inv), 4);
        __m512 g = _mm512_mask_i32gather_ps(zero, live, at_label, dz, 4);
        _mm512_mask_i32scatter_ps(dz, live, at_label, sub(g, num(grad_scale)), 4);
    }
#undef COLUMN
}

#endif
