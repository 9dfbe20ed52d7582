// sparse.c — the first layer's GEMMs on an input that is mostly zeros (mlp.c uses them on
// the AVX-512 target; the contract is in internal.h).
//
// A handwritten digit is mostly background: 81% of MNIST's pixels are 0, and in half of
// the reduction steps of a 12-row register tile all twelve A values are 0 (all twelve
// images, or all twelve pixels, blank there). Such a step is fma(0, w, acc) on every
// accumulator, which leaves acc as it was for any finite w, so these kernels skip it. The
// steps they take are the dense kernel's, in the same increasing order from 0 on the same
// accumulators, so every element has the dense GEMM's bits (for finite weights, up to the
// sign of a zero).
//
// The tile is the AVX-512 kernel's 12×32 (24 accumulators; per step two B vectors and
// twelve A broadcasts), reading the steps from a list of those the tile's rows need.
#include "gemm_kernel.h"
#include "internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#if defined(__GNUC__)  // GCC, Clang: the ISA is enabled per function, never per file
#define KERNEL_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else  // MSVC: intrinsics need no target option
#define KERNEL_TARGET
#define ALWAYS_INLINE static __forceinline
#endif
#include "vec_avx512.h"

enum { MR = MNC_AVX512_MR, NV = 2 };  // the tile: MR rows × NV vectors of columns

// Vector v of the 16 NV columns from column j of a W or C in internal.h's layout: the
// offset of its row 0, and which of its lanes are columns < n.
ALWAYS_INLINE KERNEL_TARGET void column_vectors(int64_t panel, int64_t j, int64_t n, int64_t *at,
                                                vmask *mk) {
    for (int v = 0; v < NV; v++) {
        int64_t col = j + VW * v;
        at[v] = panel ? col / MNC_PANEL * panel + col % MNC_PANEL : col;
        mk[v] = lane_mask(n - j, v);
    }
}

// Whole vectors go by plain loads and stores, the tail of the columns by masked ones.
ALWAYS_INLINE KERNEL_TARGET vec load_lanes(const float *p, vmask m) {
    return m == (vmask)0xffff ? vloadu(p) : vload_mask(p, m);
}
ALWAYS_INLINE KERNEL_TARGET void store_lanes(float *p, vmask m, vec v) {
    if (m == (vmask)0xffff) vstoreu(p, v);
    else vstore_mask(p, m, v);
}

// The steps p < k at which any of `rows` rows of A is nonzero, in increasing p, into
// steps (room for k + 16); returns how many. Row r of A at a + r * rs, step p of a row at
// + p: each lane tests one step.
ALWAYS_INLINE KERNEL_TARGET int64_t steps_along_rows(int32_t *steps, const float *a, int64_t rs,
                                                     int rows, int64_t k) {
    int64_t n = 0;
    for (int64_t p0 = 0; p0 < k; p0 += VW) {
        vmask in = lane_mask(k - p0, 0), any = 0;
        for (int r = 0; r < rows; r++)
            any |=
                _mm512_mask_cmp_ps_mask(in, vload_mask(a + r * rs + p0, in), vzero(), _CMP_NEQ_UQ);
        // Compressed in registers and stored whole (steps has room for the lanes past n).
        _mm512_storeu_si512(steps + n,
                            _mm512_maskz_compress_epi32(any, iadd(iota(), iset1((int)p0))));
        n += __builtin_popcount(any);
    }
    return n;
}

// The same for an A whose rows are contiguous at each step (row r of step p at
// a + p * cs + r): each step tests its rows as one vector.
ALWAYS_INLINE KERNEL_TARGET int64_t steps_across_rows(int32_t *steps, const float *a, int64_t cs,
                                                      int rows, int64_t k) {
    const vmask in = lane_mask(rows, 0);
    int64_t n = 0;
    for (int64_t p = 0; p < k; p++) {
        steps[n] = (int32_t)p;
        n += _mm512_mask_cmp_ps_mask(in, vload_mask(a + p * cs, in), vzero(), _CMP_NEQ_UQ) != 0;
    }
    return n;
}

// acc[r][v] over the listed steps, B(p, :) = b + p * ldb (vector v at + bv[v]), and
// A(r, p) = a[r * rs + p] (by_rows: the tile's rows of a row-major A, as the forward pass
// reads X) or a[p * rs + r] (the weight gradient's Xᵀ: the rows contiguous at each step).
// As the dense kernel, row r of a row-major A is addressed from one of four bases plus
// (r % 3) rows, so that no address is reloaded per step.
ALWAYS_INLINE KERNEL_TARGET void tile(vec acc[MR][NV], const int rows, const int by_rows,
                                      const int32_t *steps, int64_t n_steps, const float *a,
                                      int64_t rs, const float *b, int64_t ldb, const int64_t *bv,
                                      const vmask *mk) {
    for (int r = 0; r < rows; r++)
        for (int v = 0; v < NV; v++) acc[r][v] = vzero();
    for (int64_t i = 0; i < n_steps; i++) {
        const int64_t p = steps[i];
        const float *bp = b + p * ldb;
        vec b0 = load_lanes(bp + bv[0], mk[0]), b1 = load_lanes(bp + bv[1], mk[1]);
        const float *a0 = by_rows ? a + p : a + p * rs, *a3 = a0 + 3 * rs, *a6 = a0 + 6 * rs;
        const float *a9 = a0 + 9 * rs;
#pragma GCC unroll 12
        for (int r = 0; r < rows; r++) {
            const float *base = r < 3 ? a0 : r < 6 ? a3 : r < 9 ? a6 : a9;
            vec x = vbcast(by_rows ? base + (r % 3) * rs : a0 + r);
            acc[r][0] = vfmadd(x, b0, acc[r][0]);
            acc[r][1] = vfmadd(x, b1, acc[r][1]);
        }
    }
}

// Rows [0, rows) of Z's columns [0, n) for one row tile: Z = epilogue(1·acc).
ALWAYS_INLINE KERNEL_TARGET void forward_rows(float *z, int64_t ldz, const int rows,
                                              const int32_t *steps, int64_t n_steps, const float *x,
                                              int64_t d, const float *w, int64_t ldw, int64_t panel,
                                              int64_t n, const float *bias, int relu) {
    for (int64_t j = 0; j < n; j += NV * VW) {
        int64_t wv[NV];
        vmask mk[NV];
        column_vectors(panel, j, n, wv, mk);
        vec acc[MR][NV];
        tile(acc, rows, 1, steps, n_steps, x, d, w, ldw, wv, mk);
#pragma GCC unroll 12
        for (int r = 0; r < rows; r++)
            for (int v = 0; v < NV; v++) {  // gemm_kernel.h's epilogue, as the dense kernel
                vec out = acc[r][v];
                if (bias != NULL) out = vadd(out, load_lanes(bias + j + VW * v, mk[v]));
                if (relu) out = vmax(vzero(), out);  // NaN and -0 pass
                if (mk[v]) store_lanes(z + r * ldz + j + VW * v, mk[v], out);
            }
    }
}

KERNEL_TARGET int mnc_sparse_pays_avx512(const float *x, int64_t m, int64_t d, int32_t *steps) {
    int64_t taken = steps_along_rows(steps, x, d, m < MR ? (int)m : MR, d);
    return taken <= d - d / 16;
}

KERNEL_TARGET void mnc_sparse_forward_avx512(float *z, int64_t ldz, const float *x, int64_t m,
                                             int64_t d, const float *w, int64_t ldw, int64_t panel,
                                             int64_t n, const float *bias, int relu,
                                             int32_t *steps) {
    for (int64_t i0 = 0; i0 < m; i0 += MR) {
        const int rows = m - i0 < MR ? (int)(m - i0) : MR;
        const float *xi = x + i0 * d;
        int64_t n_steps = steps_along_rows(steps, xi, d, rows, d);
        switch (rows) {  // one specialisation per row count: the accumulators in registers
#define FORWARD_CASE(R)                                                                          \
    case R:                                                                                      \
        forward_rows(z + i0 * ldz, ldz, R, steps, n_steps, xi, d, w, ldw, panel, n, bias, relu); \
        break;
            FORWARD_CASE(1)
            FORWARD_CASE(2)
            FORWARD_CASE(3) FORWARD_CASE(4) FORWARD_CASE(5) FORWARD_CASE(6) FORWARD_CASE(7)
                FORWARD_CASE(8) FORWARD_CASE(9) FORWARD_CASE(10) FORWARD_CASE(11) FORWARD_CASE(12)
#undef FORWARD_CASE
        }
    }
}

// Rows [0, rows) (pixels) of C's columns [0, n) for one tile of pixels: C = alpha·acc,
// or fma(alpha, acc, beta·C).
ALWAYS_INLINE KERNEL_TARGET void dw_rows(float *c, int64_t ldc, int64_t panel, const int rows,
                                         const int32_t *steps, int64_t n_steps, const float *x,
                                         int64_t d, const float *dz, int64_t ldz, int64_t n,
                                         float alpha, float beta) {
    const vec va = vset1(alpha), vb = vset1(beta);
    for (int64_t j = 0; j < n; j += NV * VW) {
        int64_t cv[NV], dv[NV] = {j, j + VW};
        vmask mk[NV];
        column_vectors(panel, j, n, cv, mk);
        vec acc[MR][NV];
        tile(acc, rows, 0, steps, n_steps, x, d, dz, ldz, dv, mk);
#pragma GCC unroll 12
        for (int r = 0; r < rows; r++)
            for (int v = 0; v < NV; v++) {  // the dense kernel's alpha and beta, the same ops
                if (!mk[v]) continue;
                float *cr = c + r * ldc + cv[v];
                vec out = beta == 0.0f ? vmul(va, acc[r][v])
                                       : vfmadd(va, acc[r][v], vmul(vb, load_lanes(cr, mk[v])));
                store_lanes(cr, mk[v], out);
            }
    }
}

KERNEL_TARGET void mnc_sparse_dw_avx512(float *c, int64_t ldc, int64_t panel, const float *x,
                                        int64_t m, int64_t d, const float *dz, int64_t ldz,
                                        int64_t n, float alpha, float beta, int32_t *steps) {
    for (int64_t p0 = 0; p0 < d; p0 += MR) {
        const int rows = d - p0 < MR ? (int)(d - p0) : MR;
        int64_t n_steps = steps_across_rows(steps, x + p0, d, rows, m);
        float *cp = c + p0 * ldc;
        switch (rows) {
#define DW_CASE(R) \
    case R: dw_rows(cp, ldc, panel, R, steps, n_steps, x + p0, d, dz, ldz, n, alpha, beta); break;
            DW_CASE(1)
            DW_CASE(2)
            DW_CASE(3) DW_CASE(4) DW_CASE(5) DW_CASE(6) DW_CASE(7) DW_CASE(8) DW_CASE(9) DW_CASE(10)
                DW_CASE(11) DW_CASE(12)
#undef DW_CASE
        }
    }
}

#endif  // x86-64
