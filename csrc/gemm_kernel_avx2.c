// gemm_kernel_avx2.c — the AVX2+FMA SGEMM microkernel: a 6×16 register tile (6 rows ×
// 2 ymm = 12 accumulators, BLIS's haswell shape), A broadcast from memory, B loaded as
// two ymm per k. The same FMA chain per element as the AVX-512 kernel, so both give
// identical bits. One kernel body, specialised at compile time for every row count,
// both vector counts and both A layouts. Only this function uses AVX2; gemm.c calls it
// after mnc_isa_active() said so. The contract is in gemm_kernel.h.
#include "gemm_kernel.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define MR MNC_AVX2_MR
#define KERNEL_TARGET __attribute__((target("avx2,fma")))
#define ALWAYS_INLINE static inline __attribute__((always_inline))

// Lanes of columns [8 v, 8 v + 8) inside nr, as a vmaskmov mask (sign bit set = in).
ALWAYS_INLINE KERNEL_TARGET __m256i lane_mask(int nr, int v) {
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - 8 * v), lane);
}

// rows_a != 0: A(r, p) = a[r * rs_a + p] (row-major A); else A(r, p) = a[p * cs_a + r].
ALWAYS_INLINE KERNEL_TARGET void tile(const int rows, const int nv, const int rows_a,
                                      int64_t k, int nr, float alpha, const float *a,
                                      int64_t rs_a, int64_t cs_a, const float *b,
                                      int64_t rs_b, float beta, float *c, int64_t ldc) {
    __m256 acc[MR][2];
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < nv; v++) acc[r][v] = _mm256_setzero_ps();

    if (rows_a) {
        const float *a0 = a, *a3 = a + 3 * rs_a;
        for (int64_t p = 0; p < k; p++) {
            __m256 b0 = _mm256_loadu_ps(b);
            __m256 b1 = nv > 1 ? _mm256_loadu_ps(b + 8) : b0;
            b += rs_b;
#pragma GCC unroll 6
            for (int r = 0; r < rows; r++) {
                const float *base = r < 3 ? a0 : a3;
                __m256 x = _mm256_broadcast_ss(base + (r % 3) * rs_a);
                acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
                if (nv > 1) acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
            }
            a0++, a3++;
        }
    } else {
        for (int64_t p = 0; p < k; p++) {
            __m256 b0 = _mm256_loadu_ps(b);
            __m256 b1 = nv > 1 ? _mm256_loadu_ps(b + 8) : b0;
            b += rs_b;
#pragma GCC unroll 6
            for (int r = 0; r < rows; r++) {
                __m256 x = _mm256_broadcast_ss(a + r);
                acc[r][0] = _mm256_fmadd_ps(x, b0, acc[r][0]);
                if (nv > 1) acc[r][1] = _mm256_fmadd_ps(x, b1, acc[r][1]);
            }
            a += cs_a;
        }
    }

    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    for (int r = 0; r < rows; r++) {
        float *cr = c + r * ldc;
        for (int v = 0; v < nv; v++) {
            int full = nr - 8 * v >= 8;
            __m256i m = lane_mask(nr, v);
            __m256 out;
            if (beta == 0.0f) {
                out = _mm256_mul_ps(va, acc[r][v]);
            } else {
                __m256 old = full ? _mm256_loadu_ps(cr + 8 * v)
                                  : _mm256_maskload_ps(cr + 8 * v, m);
                out = _mm256_fmadd_ps(va, acc[r][v], _mm256_mul_ps(vb, old));
            }
            if (full) _mm256_storeu_ps(cr + 8 * v, out);
            else _mm256_maskstore_ps(cr + 8 * v, m, out);
        }
    }
}

#define ROWS_CASE(R)                                                                  \
    case R:                                                                           \
        if (rows_a) {                                                                 \
            if (nv == 2) tile(R, 2, 1, k, nr, alpha, a, rs_a, cs_a, b, rs_b, beta, c, ldc); \
            else tile(R, 1, 1, k, nr, alpha, a, rs_a, cs_a, b, rs_b, beta, c, ldc);   \
        } else {                                                                      \
            if (nv == 2) tile(R, 2, 0, k, nr, alpha, a, rs_a, cs_a, b, rs_b, beta, c, ldc); \
            else tile(R, 1, 0, k, nr, alpha, a, rs_a, cs_a, b, rs_b, beta, c, ldc);   \
        }                                                                             \
        break;

KERNEL_TARGET void mnc_gemm_ukernel_avx2(int64_t k, int mr, int nr, float alpha,
                                         const float *a, int64_t rs_a, int64_t cs_a,
                                         const float *b, int64_t rs_b,
                                         float beta, float *c, int64_t ldc) {
    int nv = nr > 8 ? 2 : 1;
    int rows_a = cs_a == 1;
    switch (mr) {
        ROWS_CASE(1) ROWS_CASE(2) ROWS_CASE(3) ROWS_CASE(4) ROWS_CASE(5) ROWS_CASE(6)
        default: break;
    }
}

#endif  // x86-64
