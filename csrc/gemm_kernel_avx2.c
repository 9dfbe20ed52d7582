// gemm_kernel_avx2.c — the AVX2+FMA SGEMM kernels (contract in gemm_kernel.h), the same
// FMA chain per element as the AVX-512 ones, so both targets give identical bits:
//  - the 6×16 microkernel (6 rows × 2 ymm = 12 accumulators, BLIS's haswell shape),
//    specialised at compile time for every row count, both vector counts and both A
//    layouts;
//  - the row kernel for m == 1 (12 ymm = 96 columns per block);
//  - the transposed-B panel packer (hardware gathers).
// Only these functions use AVX2; gemm.c calls them after mnc_isa_active() said so.
#include "gemm_kernel.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define MR MNC_AVX2_MR
#if defined(__GNUC__)  // GCC, Clang: the ISA is enabled per function, never per file
#define KERNEL_TARGET __attribute__((target("avx2,fma")))
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else  // MSVC: intrinsics need no target option
#define KERNEL_TARGET
#define ALWAYS_INLINE static __forceinline
#endif

#define ROW_VECTORS 12  // ymm accumulators of the row kernel: 96 columns per block

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
#pragma GCC unroll 6
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) acc[r][v] = _mm256_setzero_ps();

    if (rows_a) {
        const float *a0 = a, *a3 = a + 3 * rs_a;
#pragma GCC unroll 2
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
#pragma GCC unroll 2
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
#pragma GCC unroll 6
    for (int r = 0; r < rows; r++) {
        float *cr = c + r * ldc;
#pragma GCC unroll 2
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

// Transposed B panel: one 8-lane gather per k and ymm; lanes past nr gather nothing and
// stay 0.
KERNEL_TARGET void mnc_gemm_pack_bt_avx2(float *dst, const float *b, int64_t ldb,
                                         int64_t kc, int nr) {
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i row0 = _mm256_mullo_epi32(lane, _mm256_set1_epi32((int)ldb));
    __m256i row1 = _mm256_add_epi32(row0, _mm256_set1_epi32((int)(8 * ldb)));
    __m256 m0 = _mm256_castsi256_ps(lane_mask(nr, 0));
    __m256 m1 = _mm256_castsi256_ps(lane_mask(nr, 1));
    __m256 zero = _mm256_setzero_ps();
    for (int64_t p = 0; p < kc; p++) {
        __m256 v0 = _mm256_mask_i32gather_ps(zero, b + p, row0, m0, 4);
        __m256 v1 = _mm256_mask_i32gather_ps(zero, b + p, row1, m1, 4);
        _mm256_storeu_ps(dst + p * MNC_AVX2_NR, v0);
        _mm256_storeu_ps(dst + p * MNC_AVX2_NR + 8, v1);
    }
}

// One row of C over `nv` ymm of columns, the last one partial (vmaskmov) when `partial`:
// nv independent chains per k, B read as one contiguous run per row.
ALWAYS_INLINE KERNEL_TARGET void row_block(const int nv, const int partial, int last,
                                           int64_t k, float alpha, const float *a,
                                           int64_t inc_a, const float *b, int64_t ldb,
                                           float beta, float *c) {
    __m256 acc[ROW_VECTORS];
#pragma GCC unroll 12
    for (int v = 0; v < nv; v++) acc[v] = _mm256_setzero_ps();
    __m256i m = lane_mask(last, 0);
    for (int64_t p = 0; p < k; p++) {
        __m256 x = _mm256_broadcast_ss(a + p * inc_a);
        const float *bp = b + p * ldb;
#pragma GCC unroll 12
        for (int v = 0; v < nv; v++) {
            __m256 y = partial && v + 1 == nv ? _mm256_maskload_ps(bp + 8 * v, m)
                                              : _mm256_loadu_ps(bp + 8 * v);
            acc[v] = _mm256_fmadd_ps(x, y, acc[v]);
        }
    }
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
#pragma GCC unroll 12
    for (int v = 0; v < nv; v++) {
        int masked = partial && v + 1 == nv;
        __m256 out;
        if (beta == 0.0f) {
            out = _mm256_mul_ps(va, acc[v]);
        } else {
            __m256 old = masked ? _mm256_maskload_ps(c + 8 * v, m) : _mm256_loadu_ps(c + 8 * v);
            out = _mm256_fmadd_ps(va, acc[v], _mm256_mul_ps(vb, old));
        }
        if (masked) _mm256_maskstore_ps(c + 8 * v, m, out);
        else _mm256_storeu_ps(c + 8 * v, out);
    }
}

KERNEL_TARGET void mnc_gemm_row_avx2(int64_t k, int64_t n, float alpha, const float *a,
                                     int64_t inc_a, const float *b, int64_t ldb,
                                     float beta, float *c) {
    int64_t j = 0;
    for (; j + 8 * ROW_VECTORS <= n; j += 8 * ROW_VECTORS)
        row_block(ROW_VECTORS, 0, 8, k, alpha, a, inc_a, b + j, ldb, beta, c + j);
    for (; j + 32 <= n; j += 32) row_block(4, 0, 8, k, alpha, a, inc_a, b + j, ldb, beta, c + j);
    for (; j + 8 <= n; j += 8) row_block(1, 0, 8, k, alpha, a, inc_a, b + j, ldb, beta, c + j);
    if (j < n) row_block(1, 1, (int)(n - j), k, alpha, a, inc_a, b + j, ldb, beta, c + j);
}

#endif  // x86-64
