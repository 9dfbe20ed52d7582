// nn_avx2.c — the AVX2 versions of two nn.c kernels, the AVX-512 ones (nn_avx512.c) at
// half the width, called by nn.c after mnc_isa_active() said AVX2 (declared in
// internal.h):
//  - a block of column sums, 128 columns in 16 ymm registers, rows added in order;
//  - the fused softmax cross-entropy on up to 8 rows at once, one row per lane, with
//    exactly the scalar operations in the same order (nn_math.h, no FMA contraction),
//    so the bits are the scalar code's (tested). AVX2 has gathers but no scatters: each
//    column of results is stored lane by lane.
#include "internal.h"
#include "nn_math.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#if defined(__GNUC__)
#define KERNEL_TARGET __attribute__((target("avx2")))
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define KERNEL_TARGET
#define ALWAYS_INLINE static __forceinline
#endif

// Lanes [0, count) of 8 as a vmaskmov / gather mask (sign bit set = in).
ALWAYS_INLINE KERNEL_TARGET __m256i first_lanes(int64_t count) {
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count > 8 ? 8 : (int)count), lane);
}

KERNEL_TARGET void mnc_colsum_block_avx2(float *sum, const float *x, int64_t m, int64_t ld,
                                         int64_t width) {
    for (int64_t c0 = 0; c0 < width; c0 += 128) {
        __m256 acc[16];
        __m256i mask[16];
#pragma GCC unroll 16
        for (int v = 0; v < 16; v++) {
            acc[v] = _mm256_setzero_ps();
            int64_t left = width - c0 - 8 * v;
            mask[v] = first_lanes(left > 0 ? left : 0);
        }
        for (int64_t i = 0; i < m; i++) {
            const float *xi = x + i * ld + c0;
#pragma GCC unroll 16
            for (int v = 0; v < 16; v++)
                acc[v] = _mm256_add_ps(acc[v], _mm256_maskload_ps(xi + 8 * v, mask[v]));
        }
#pragma GCC unroll 16
        for (int v = 0; v < 16; v++) _mm256_maskstore_ps(sum + c0 + 8 * v, mask[v], acc[v]);
    }
}

ALWAYS_INLINE KERNEL_TARGET __m256 mul(__m256 x, __m256 y) { return _mm256_mul_ps(x, y); }
ALWAYS_INLINE KERNEL_TARGET __m256 add(__m256 x, __m256 y) { return _mm256_add_ps(x, y); }
ALWAYS_INLINE KERNEL_TARGET __m256 sub(__m256 x, __m256 y) { return _mm256_sub_ps(x, y); }
ALWAYS_INLINE KERNEL_TARGET __m256 num(float x) { return _mm256_set1_ps(x); }
ALWAYS_INLINE KERNEL_TARGET __m256i inum(int x) { return _mm256_set1_epi32(x); }

// nn_exp_nonpositive, lane by lane.
ALWAYS_INLINE KERNEL_TARGET __m256 exp_nonpositive(__m256 x) {
    __m256 n = sub(add(mul(x, num(NN_LOG2E)), num(NN_ROUND_MAGIC)), num(NN_ROUND_MAGIC));
    __m256 r = sub(x, mul(n, num(NN_LN2_HI)));
    r = sub(r, mul(n, num(NN_LN2_LO)));
    __m256 p;
    NN_EXP_POLY(p, r, mul, add, num);
    p = add(add(mul(mul(p, r), r), r), num(1.0f));
    __m256i e = _mm256_cvttps_epi32(n);
    __m256i tiny = _mm256_cmpgt_epi32(inum(-126), e);
    p = _mm256_blendv_ps(p, mul(p, num(0x1p-24f)), _mm256_castsi256_ps(tiny));
    e = _mm256_add_epi32(e, _mm256_and_si256(tiny, inum(24)));
    __m256 y = mul(p, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, inum(127)), 23)));
    // Outside the range: NaN stays NaN, the rest underflows to 0 (as the scalar branch).
    __m256 in_range = _mm256_cmp_ps(x, num(NN_EXP_MIN), _CMP_GE_OQ);
    y = _mm256_and_ps(y, in_range);
    return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

// nn_log_ge1, lane by lane.
ALWAYS_INLINE KERNEL_TARGET __m256 log_ge1(__m256 x) {
    __m256i bits = _mm256_castps_si256(x);
    __m256i e = _mm256_sub_epi32(_mm256_and_si256(_mm256_srli_epi32(bits, 23), inum(0xff)),
                                 inum(126));
    bits = _mm256_or_si256(_mm256_and_si256(bits, inum(0x807fffff)), inum(126 << 23));
    __m256 m = _mm256_castsi256_ps(bits);
    __m256 low = _mm256_cmp_ps(m, num(NN_SQRT_HALF), _CMP_LT_OQ);
    e = _mm256_add_epi32(e, _mm256_castps_si256(low));  // all-ones lanes: e - 1
    m = _mm256_blendv_ps(sub(m, num(1.0f)), sub(add(m, m), num(1.0f)), low);
    __m256 z = mul(m, m);
    __m256 y;
    NN_LOG_POLY(y, m, mul, add, num);
    y = mul(mul(y, m), z);
    __m256 fe = _mm256_cvtepi32_ps(e);
    y = add(y, mul(fe, num(NN_LN2_LO)));
    y = add(y, mul(num(-0.5f), z));
    __m256 out = add(add(m, y), mul(fe, num(NN_LN2_HI)));
    // NaN and +inf propagate (the scalar early return).
    return _mm256_blendv_ps(x, out, _mm256_cmp_ps(x, num(NN_FLOAT_MAX), _CMP_LE_OQ));
}

// Stores lane r of v at p[r * stride] for r < rows.
ALWAYS_INLINE KERNEL_TARGET void store_lanes(float *p, int64_t stride, __m256 v,
                                             int64_t rows) {
    float lanes[8];
    _mm256_storeu_ps(lanes, v);
    for (int64_t r = 0; r < rows; r++) p[r * stride] = lanes[r];
}

// softmax_xent_row (nn.c) for rows [0, rows) of z and dz, rows <= 8, row i in lane i.
// dz may alias z: column j is read before it is written, and z[label] before any write.
KERNEL_TARGET void mnc_softmax_xent_rows_avx2(float *dz, float *row_loss, const float *z,
                                              const int32_t *labels, int64_t rows,
                                              int64_t n, float grad_scale) {
    __m256i live_i = first_lanes(rows);
    __m256 live = _mm256_castsi256_ps(live_i);
    __m256i row_start = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                           _mm256_set1_epi32((int)n));
    __m256i at_label = _mm256_add_epi32(row_start,
                                        _mm256_maskload_epi32((const int *)labels, live_i));
    __m256 zero = _mm256_setzero_ps();
#define COLUMN(base, j) _mm256_mask_i32gather_ps(zero, (base) + (j), row_start, live, 4)

    __m256 zmax = COLUMN(z, 0);
    for (int64_t j = 1; j < n; j++) {
        __m256 zj = COLUMN(z, j);
        zmax = _mm256_blendv_ps(zmax, zj, _mm256_cmp_ps(zj, zmax, _CMP_GT_OQ));
    }
    __m256 z_label = _mm256_mask_i32gather_ps(zero, z, at_label, live, 4);
    __m256 sum = zero;
    for (int64_t j = 0; j < n; j++) {
        __m256 e = exp_nonpositive(sub(COLUMN(z, j), zmax));
        if (dz != NULL) store_lanes(dz + j, n, e, rows);
        sum = add(sum, e);
    }
    _mm256_maskstore_ps(row_loss, live_i, add(sub(zmax, z_label), log_ge1(sum)));
    if (dz != NULL) {
        __m256 inv = _mm256_div_ps(num(grad_scale), sum);
        for (int64_t j = 0; j < n; j++) store_lanes(dz + j, n, mul(COLUMN(dz, j), inv), rows);
        for (int64_t r = 0; r < rows; r++) dz[r * n + labels[r]] -= grad_scale;
    }
#undef COLUMN
}

#endif
