// gemm_kernel_generic.c — the portable SGEMM microkernel: a 4×8 register tile in plain C,
// unrolled the way a vector kernel is (an accumulator row per A row, NR columns the
// compiler turns into vectors of the baseline ISA). It is the fallback on every CPU and
// the readable model of the AVX kernels; the contract is in gemm_kernel.h.
//
// With hardware FMA (FP_FAST_FMAF, e.g. aarch64) it rounds exactly like the AVX kernels.
// Without it (baseline x86-64), fmaf would be a slow library call, so the product and the
// sum are rounded separately and results may differ from the FMA targets in the last bits.
#include <math.h>

#include "gemm_kernel.h"

#define MR MNC_GENERIC_MR
#define NR MNC_GENERIC_NR

#ifdef FP_FAST_FMAF
#define MUL_ADD(x, y, z) fmaf((x), (y), (z))
#else
#define MUL_ADD(x, y, z) ((x) * (y) + (z))
#endif

#if defined(__GNUC__)
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE static __forceinline
#endif

// rows_a != 0: A(r, p) = a[r * rs_a + p] (row-major A); else A(r, p) = a[p * cs_a + r].
ALWAYS_INLINE void tile(const int rows, const int rows_a, int64_t k, int nr, float alpha,
                        const float *a, int64_t rs_a, int64_t cs_a, const float *b,
                        int64_t rs_b, float beta, float *c, int64_t ldc) {
    float acc[MR][NR];
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < NR; j++) acc[r][j] = 0.0f;
    for (int64_t p = 0; p < k; p++) {
        const float *bp = b + p * rs_b;
        for (int r = 0; r < rows; r++) {
            float x = rows_a ? a[r * rs_a + p] : a[p * cs_a + r];
            for (int j = 0; j < NR; j++) acc[r][j] = MUL_ADD(x, bp[j], acc[r][j]);
        }
    }
    for (int r = 0; r < rows; r++) {
        float *cr = c + r * ldc;
        for (int j = 0; j < nr; j++)
            cr[j] = beta == 0.0f ? alpha * acc[r][j] : MUL_ADD(alpha, acc[r][j], beta * cr[j]);
    }
}

#define ROWS_CASE(R)                                                                  \
    case R:                                                                           \
        if (rows_a) tile(R, 1, k, nr, alpha, a, rs_a, cs_a, b, rs_b, beta, c, ldc);   \
        else tile(R, 0, k, nr, alpha, a, rs_a, cs_a, b, rs_b, beta, c, ldc);          \
        break;

void mnc_gemm_ukernel_generic(int64_t k, int mr, int nr, float alpha,
                              const float *a, int64_t rs_a, int64_t cs_a,
                              const float *b, int64_t rs_b,
                              float beta, float *c, int64_t ldc) {
    int rows_a = cs_a == 1;
    switch (mr) {
        ROWS_CASE(1) ROWS_CASE(2) ROWS_CASE(3) ROWS_CASE(4)
        default: break;
    }
}
