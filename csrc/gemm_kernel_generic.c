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

// One named accumulator row per A row and a fully unrolled column loop: GCC's SLP
// vectoriser turns each row into NR/4 SSE registers. Its loop vectoriser would instead go
// after the k loop and produce slow, spilling code, so it is off for these functions.
#if defined(__GNUC__) && !defined(__clang__)
#define KERNEL_OPTIONS __attribute__((optimize("no-tree-loop-vectorize")))
#define ALWAYS_INLINE static inline __attribute__((always_inline)) KERNEL_OPTIONS
#define UNROLL_NR _Pragma("GCC unroll 8")
#elif defined(__GNUC__)
#define KERNEL_OPTIONS
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#define UNROLL_NR _Pragma("GCC unroll 8")
#else
#define KERNEL_OPTIONS
#define ALWAYS_INLINE static __forceinline
#define UNROLL_NR
#endif

// A(r, p): rows_a != 0 reads a row-major A (a[r * rs_a + p]), else a[p * cs_a + r].
#define A_AT(r) (rows_a ? a[(r) * rs_a + p] : a[p * cs_a + (r)])

ALWAYS_INLINE void tile(const int rows, const int rows_a, int64_t k, int nr, float alpha,
                        const float *a, int64_t rs_a, int64_t cs_a, const float *b, int64_t rs_b,
                        float beta, float *c, int64_t ldc, int flags, const mnc_uk_epilogue *ep) {
    float acc0[NR] = {0}, acc1[NR] = {0}, acc2[NR] = {0}, acc3[NR] = {0};
    if (flags & MNC_UK_ACC_IN) {
        float *in[MR] = {acc0, acc1, acc2, acc3};
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < nr; j++) in[r][j] = c[r * ldc + j];
    }
    for (int64_t p = 0; p < k; p++) {
        const float *bp = b + p * rs_b;
        float x0 = A_AT(0);
        float x1 = rows > 1 ? A_AT(1) : 0.0f;
        float x2 = rows > 2 ? A_AT(2) : 0.0f;
        float x3 = rows > 3 ? A_AT(3) : 0.0f;
        UNROLL_NR
        for (int j = 0; j < NR; j++) {
            acc0[j] = MUL_ADD(x0, bp[j], acc0[j]);
            if (rows > 1) acc1[j] = MUL_ADD(x1, bp[j], acc1[j]);
            if (rows > 2) acc2[j] = MUL_ADD(x2, bp[j], acc2[j]);
            if (rows > 3) acc3[j] = MUL_ADD(x3, bp[j], acc3[j]);
        }
    }
    const float *acc[MR] = {acc0, acc1, acc2, acc3};
    for (int r = 0; r < rows; r++) {
        float *cr = c + r * ldc;
        for (int j = 0; j < nr; j++) {
            float v = (flags & MNC_UK_ACC_OUT) ? acc[r][j]
                      : beta == 0.0f           ? alpha * acc[r][j]
                                               : MUL_ADD(alpha, acc[r][j], beta * cr[j]);
            if (ep != NULL) {
                if (ep->bias != NULL) v += ep->bias[j];
                if (ep->relu) v = v < 0.0f ? 0.0f : v;
                if (ep->mask != NULL) v = ep->mask[r * ep->ld_mask + j] <= 0.0f ? 0.0f : v;
            }
            cr[j] = v;
        }
    }
}

#define ROWS_CASE(R)                                                                           \
    case R:                                                                                    \
        if (rows_a) tile(R, 1, k, nr, alpha, a, rs_a, cs_a, b, rs_b, beta, c, ldc, flags, ep); \
        else tile(R, 0, k, nr, alpha, a, rs_a, cs_a, b, rs_b, beta, c, ldc, flags, ep);        \
        break;

KERNEL_OPTIONS void mnc_gemm_ukernel_generic(int64_t k, int mr, int nr, float alpha, const float *a,
                                             int64_t rs_a, int64_t cs_a, const float *b,
                                             int64_t rs_b, float beta, float *c, int64_t ldc,
                                             int flags, const mnc_uk_epilogue *ep) {
    int rows_a = cs_a == 1;
    switch (mr) {
        ROWS_CASE(1)
        ROWS_CASE(2)
        ROWS_CASE(3)
        ROWS_CASE(4)
        default: break;
    }
}

// The yardstick (peak.c) on this target: `iters` rounds of 12 independent chains of a
// multiply and an add on 4 floats, the baseline's vectors (SSE, NEON), with no memory
// traffic: 12 registers, which with the two constants fit the 16 of baseline x86-64.
// GCC and Clang get the vectors from their vector extension (left to themselves, they
// spill these chains); other compilers run them as scalars. Returns the flops done; the
// chains' sum goes to *sink. Chain i starts at i (equal chains would be merged by the
// compiler) and converges to 1, never denormal.
#if defined(__GNUC__)
typedef float lanes4 __attribute__((vector_size(16)));
#define LANES4(v) {(v), (v), (v), (v)}
#else
typedef float lanes4;
#define LANES4(v) (v)
#endif
double mnc_fma_chains_generic(int64_t iters, float *sink) {
    enum { CHAINS = 12 };
    lanes4 acc[CHAINS];
    for (int i = 0; i < CHAINS; i++) acc[i] = (lanes4)LANES4((float)i);
    const lanes4 x = LANES4(1.0f - 0x1p-20f), y = LANES4(0x1p-20f);
    for (int64_t it = 0; it < iters; it++) {
#if defined(__GNUC__)
#pragma GCC unroll 12
#endif
        for (int i = 0; i < CHAINS; i++) acc[i] = acc[i] * x + y;
    }
    float s = 0.0f;
    for (int i = 0; i < CHAINS; i++)
        for (int j = 0; j < (int)(sizeof(lanes4) / sizeof(float)); j++) s += ((float *)&acc[i])[j];
    *sink = s;
    return 2.0 * CHAINS * (double)(sizeof(lanes4) / sizeof(float)) * (double)iters;
}
