// gemm_kernel_avx512.c — the AVX-512 SGEMM microkernel: a 12×32 register tile (12 rows ×
// 2 zmm = 24 accumulators), A broadcast from memory, B loaded as two zmm per k. One
// kernel body, specialised at compile time for every row count (1..12), both vector
// counts and both A layouts, so edge tiles and transposed A cost no extra code paths.
// Only this function uses AVX-512; gemm.c calls it after mnc_isa_active() said so.
// The contract (operands, rounding, edges) is in gemm_kernel.h.
#include "gemm_kernel.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define MR MNC_AVX512_MR
#define KERNEL_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#define ALWAYS_INLINE static inline __attribute__((always_inline))

// Columns [16 v, 16 v + 16) of the tile that are inside nr, as a lane mask.
ALWAYS_INLINE KERNEL_TARGET __mmask16 lane_mask(int nr, int v) {
    int left = nr - 16 * v;
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1u);
}

// rows_a != 0: A(r, p) = a[r * rs_a + p] (row-major A); else A(r, p) = a[p * cs_a + r].
// The row-major case addresses rows as base + {0, 1, 2} * rs_a from four base pointers, so
// the twelve streams need five registers, not twelve.
ALWAYS_INLINE KERNEL_TARGET void tile(const int rows, const int nv, const int rows_a,
                                      int64_t k, int nr, float alpha, const float *a,
                                      int64_t rs_a, int64_t cs_a, const float *b,
                                      int64_t rs_b, float beta, float *c, int64_t ldc) {
    __m512 acc[MR][2];
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < nv; v++) acc[r][v] = _mm512_setzero_ps();

    if (rows_a) {
        const float *a0 = a, *a3 = a + 3 * rs_a, *a6 = a + 6 * rs_a, *a9 = a + 9 * rs_a;
        for (int64_t p = 0; p < k; p++) {
            __m512 b0 = _mm512_loadu_ps(b);
            __m512 b1 = nv > 1 ? _mm512_loadu_ps(b + 16) : b0;
            b += rs_b;
#pragma GCC unroll 12
            for (int r = 0; r < rows; r++) {
                const float *base = r < 3 ? a0 : r < 6 ? a3 : r < 9 ? a6 : a9;
                __m512 x = _mm512_set1_ps(base[(r % 3) * rs_a]);
                acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]);
                if (nv > 1) acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);
            }
            a0++, a3++, a6++, a9++;
        }
    } else {
        for (int64_t p = 0; p < k; p++) {
            __m512 b0 = _mm512_loadu_ps(b);
            __m512 b1 = nv > 1 ? _mm512_loadu_ps(b + 16) : b0;
            b += rs_b;
#pragma GCC unroll 12
            for (int r = 0; r < rows; r++) {
                __m512 x = _mm512_set1_ps(a[r]);
                acc[r][0] = _mm512_fmadd_ps(x, b0, acc[r][0]);
                if (nv > 1) acc[r][1] = _mm512_fmadd_ps(x, b1, acc[r][1]);
            }
            a += cs_a;
        }
    }

    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    __mmask16 m0 = lane_mask(nr, 0), m1 = lane_mask(nr, 1);
    for (int r = 0; r < rows; r++) {
        float *cr = c + r * ldc;
        for (int v = 0; v < nv; v++) {
            __mmask16 m = v ? m1 : m0;
            __m512 out;
            if (beta == 0.0f) {
                out = _mm512_mul_ps(va, acc[r][v]);
            } else {
                __m512 old = _mm512_maskz_loadu_ps(m, cr + 16 * v);
                out = _mm512_fmadd_ps(va, acc[r][v], _mm512_mul_ps(vb, old));
            }
            _mm512_mask_storeu_ps(cr + 16 * v, m, out);
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

KERNEL_TARGET void mnc_gemm_ukernel_avx512(int64_t k, int mr, int nr, float alpha,
                                           const float *a, int64_t rs_a, int64_t cs_a,
                                           const float *b, int64_t rs_b,
                                           float beta, float *c, int64_t ldc) {
    int nv = nr > 16 ? 2 : 1;
    int rows_a = cs_a == 1;
    switch (mr) {
        ROWS_CASE(1) ROWS_CASE(2) ROWS_CASE(3) ROWS_CASE(4) ROWS_CASE(5) ROWS_CASE(6)
        ROWS_CASE(7) ROWS_CASE(8) ROWS_CASE(9) ROWS_CASE(10) ROWS_CASE(11) ROWS_CASE(12)
        default: break;
    }
}

#endif  // x86-64
