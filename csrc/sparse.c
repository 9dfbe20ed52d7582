// sparse.c — the first layer's GEMMs on an input that is mostly zeros (mlp.c uses them on
// the AVX-512 target; the contract is in internal.h).
//
// A handwritten digit is mostly background: 81% of MNIST's pixels are 0, and in most of
// the reduction steps of a 6-row register tile all six A values are 0 (all six images,
// or all six pixels, blank there). Such a step is fma(0, w, acc) on every
// accumulator, which leaves acc as it was for any finite w, so these kernels skip it. The
// steps they take are the dense kernel's, in the same increasing order from 0 on the same
// accumulators, so every element has the dense GEMM's bits (for finite weights, up to the
// sign of a zero).
//
// The tile is 6×64 (24 accumulators; per step four B vectors and six A broadcasts), the
// dense AVX-512 kernel's loop reading its steps from a list of those the tile's rows need.
#include "internal.h"

int64_t mnc_sparse_dw_tiles(int64_t d) { return (d + MNC_SPARSE_ROWS - 1) / MNC_SPARSE_ROWS; }

#if defined(__x86_64__) || defined(_M_X64)
#include "target_avx512.h"

// The tile: up to MR rows × NV vectors of columns, 24 accumulators. Fewer rows than the
// dense kernel's 12: a step is skipped only where all the tile's rows are 0, which on
// MNIST is 56% of the forward steps with 6 rows (50% with 12) and 66% of the weight
// gradient's (51%).
#define MR MNC_SPARSE_ROWS
#define NV 4

// Vector v < nv of the columns from column j of a W or C in internal.h's layout: the
// offset of its row 0, and which of its lanes are columns < n.
ALWAYS_INLINE KERNEL_TARGET void column_vectors(int64_t panel, int64_t j, int64_t n, int nv,
                                                int64_t *at, vmask *mk) {
#pragma GCC unroll 12
    for (int v = 0; v < nv; v++) {
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
#pragma GCC unroll 12
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

// acc[r][v] over the listed steps, B(p, :) = b + p * ldb (vector v at + bv[v], lanes mk[v];
// full: every lane, so plain loads without a test of the mask), and
// A(r, p) = a[r * rs + p] (by_rows: the tile's rows of a row-major A, as the forward pass
// reads X) or a[p * rs + r] (the weight gradient's Xᵀ: the rows contiguous at each step).
// As the dense kernel, row r of a row-major A is addressed from one of four bases plus
// (r % 3) rows, so that no address is reloaded per step.
ALWAYS_INLINE KERNEL_TARGET void tile(vec acc[MR][NV], const int rows, const int nv, const int full,
                                      const int by_rows, const int32_t *steps, int64_t n_steps,
                                      const float *a, int64_t rs, const float *b, int64_t ldb,
                                      const int64_t *bv, const vmask *mk) {
#pragma GCC unroll 12
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 12
        for (int v = 0; v < nv; v++) acc[r][v] = vzero();
#pragma GCC unroll 2
    for (int64_t i = 0; i < n_steps; i++) {
        const int64_t p = steps[i];
        const float *bp = b + p * ldb;
        vec bw[NV];
#pragma GCC unroll 12
        for (int v = 0; v < nv; v++)
            bw[v] = full ? vloadu(bp + bv[v]) : load_lanes(bp + bv[v], mk[v]);
        const float *a0 = by_rows ? a + p : a + p * rs, *a3 = a0 + 3 * rs, *a6 = a0 + 6 * rs;
        const float *a9 = a0 + 9 * rs;
#pragma GCC unroll 12
        for (int r = 0; r < rows; r++) {
            const float *base = r < 3 ? a0 : r < 6 ? a3 : r < 9 ? a6 : a9;
            vec x = vbcast(by_rows ? base + (r % 3) * rs : a0 + r);
#pragma GCC unroll 12
            for (int v = 0; v < nv; v++) acc[r][v] = vfmadd(x, bw[v], acc[r][v]);
        }
    }
}

// The vectors of the column block at j: NV, or what is left of n.
ALWAYS_INLINE int block_vectors(int64_t j, int64_t n) {
    int64_t nv = (n - j + VW - 1) / VW;
    return nv < NV ? (int)nv : NV;
}

// Calls BLOCK(nv) with nv = block_vectors(j, n) as a constant (1 <= nv <= NV), so that
// each vector count has its accumulators in registers.
#define WITH_VECTORS(j, n, BLOCK)  \
    switch (block_vectors(j, n)) { \
        case 1: BLOCK(1); break;   \
        case 2: BLOCK(2); break;   \
        case 3: BLOCK(3); break;   \
        default: BLOCK(4); break;  \
    }

// Rows [0, rows) of Z's columns [j, j + 16 nv) for one row tile: Z = epilogue(1·acc).
ALWAYS_INLINE KERNEL_TARGET void forward_block(float *z, int64_t ldz, const int rows, const int nv,
                                               const int32_t *steps, int64_t n_steps,
                                               const float *x, int64_t d, const float *w,
                                               int64_t ldw, int64_t panel, int64_t j, int64_t n,
                                               const float *bias, int relu) {
    int64_t wv[NV];
    vmask mk[NV];
    column_vectors(panel, j, n, nv, wv, mk);
    vec acc[MR][NV];
    if (mk[nv - 1] == (vmask)0xffff)  // every column there: no lane test in the loop
        tile(acc, rows, nv, 1, 1, steps, n_steps, x, d, w, ldw, wv, mk);
    else tile(acc, rows, nv, 0, 1, steps, n_steps, x, d, w, ldw, wv, mk);
#pragma GCC unroll 12
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 12
        for (int v = 0; v < nv; v++) {  // gemm_kernel.h's epilogue, as the dense kernel
            vec out = acc[r][v];
            if (bias != NULL) out = vadd(out, load_lanes(bias + j + VW * v, mk[v]));
            if (relu) out = vmax(vzero(), out);  // NaN and -0 pass
            store_lanes(z + r * ldz + j + VW * v, mk[v], out);
        }
}

ALWAYS_INLINE KERNEL_TARGET void forward_rows(float *z, int64_t ldz, const int rows,
                                              const int32_t *steps, int64_t n_steps, const float *x,
                                              int64_t d, const float *w, int64_t ldw, int64_t panel,
                                              int64_t n, const float *bias, int relu) {
    for (int64_t j = 0; j < n; j += NV * VW) {
#define FORWARD_BLOCK(NVC) \
    forward_block(z, ldz, rows, NVC, steps, n_steps, x, d, w, ldw, panel, j, n, bias, relu)
        WITH_VECTORS(j, n, FORWARD_BLOCK)
#undef FORWARD_BLOCK
    }
}

// case r: BODY(r) for each row count r <= MR.
#define ROW_CASES(BODY)     \
    case 1: BODY(1); break; \
    case 2: BODY(2); break; \
    case 3: BODY(3); break; \
    case 4: BODY(4); break; \
    case 5: BODY(5); break; \
    case 6: BODY(6); break;

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
#define FORWARD_CASE(R) \
    forward_rows(z + i0 * ldz, ldz, R, steps, n_steps, xi, d, w, ldw, panel, n, bias, relu)
            ROW_CASES(FORWARD_CASE)
#undef FORWARD_CASE
        }
    }
}

// Rows [0, rows) (pixels) of C's columns [j, j + 16 nv) for one tile of pixels:
// C = alpha·acc, or fma(alpha, acc, beta·C).
ALWAYS_INLINE KERNEL_TARGET void dw_block(float *c, int64_t ldc, int64_t panel, const int rows,
                                          const int nv, const int32_t *steps, int64_t n_steps,
                                          const float *x, int64_t d, const float *dz, int64_t ldz,
                                          int64_t j, int64_t n, float alpha, float beta) {
    int64_t cv[NV], dv[NV];
    vmask mk[NV];
    column_vectors(panel, j, n, nv, cv, mk);
#pragma GCC unroll 12
    for (int v = 0; v < nv; v++) dv[v] = j + VW * v;
    vec acc[MR][NV];
    if (mk[nv - 1] == (vmask)0xffff)
        tile(acc, rows, nv, 1, 0, steps, n_steps, x, d, dz, ldz, dv, mk);
    else tile(acc, rows, nv, 0, 0, steps, n_steps, x, d, dz, ldz, dv, mk);
    const vec va = vset1(alpha), vb = vset1(beta);
#pragma GCC unroll 12
    for (int r = 0; r < rows; r++)
#pragma GCC unroll 12
        for (int v = 0; v < nv; v++) {  // the dense kernel's alpha and beta, the same ops
            float *cr = c + r * ldc + cv[v];
            vec out = beta == 0.0f ? vmul(va, acc[r][v])
                                   : vfmadd(va, acc[r][v], vmul(vb, load_lanes(cr, mk[v])));
            store_lanes(cr, mk[v], out);
        }
}

ALWAYS_INLINE KERNEL_TARGET void dw_rows(float *c, int64_t ldc, int64_t panel, const int rows,
                                         const int32_t *steps, int64_t n_steps, const float *x,
                                         int64_t d, const float *dz, int64_t ldz, int64_t n,
                                         float alpha, float beta) {
    for (int64_t j = 0; j < n; j += NV * VW) {
#define DW_BLOCK(NVC) \
    dw_block(c, ldc, panel, rows, NVC, steps, n_steps, x, d, dz, ldz, j, n, alpha, beta)
        WITH_VECTORS(j, n, DW_BLOCK)
#undef DW_BLOCK
    }
}

// dW's lists (internal.h) go by groups of LIST_GROUP tiles (96 pixels) and blocks of
// LIST_BLOCK batch rows. First each row's 96 pixels are compared with 0 (six vectors) into
// two words of 48 bits, one bit per pixel; then each tile tests its six bits in 16 rows
// at once and compresses those rows out. So no test waits for the count of the one before
// it, as a test of one row at a time would (its row is stored where that count says).
#define LIST_GROUP 16  // tiles: 16 × 6 pixels, the bits of six vectors
#if MR != 6
#error "a group of dW's tiles is six vectors of pixels, two words of 48 bits"
#endif
#define LIST_BLOCK 64  // rows whose bits wait in L1 for the group's tiles

// Bits of pixels [96 g, 96 g + 48) (lo) and [96 g + 48, 96 g + 96) (hi) of one row, from
// row = its pixel 96 g, with `left` pixels of the row from there (nonzero: NaN counts).
ALWAYS_INLINE KERNEL_TARGET void group_bits(uint64_t *lo, uint64_t *hi, const float *row,
                                            int64_t left) {
    uint64_t k[6];
#pragma GCC unroll 6
    for (int c = 0; c < 6; c++) {
        vmask in = lane_mask(left - VW * c, 0);
        k[c] = _mm512_mask_cmp_ps_mask(in, vload_mask(row + VW * c, in), vzero(), _CMP_NEQ_UQ);
    }
    *lo = k[0] | k[1] << 16 | k[2] << 32;
    *hi = k[3] | k[4] << 16 | k[5] << 32;
}

// Appends to tile list `list` (count at list[0]) the rows p0 + i, i < rows, whose bits
// under `field` are not all 0, from bits[i] (LIST_BLOCK words, 0 past rows), 16 rows at a
// time; a compressed vector is stored whole only where the list has room for it.
ALWAYS_INLINE KERNEL_TARGET void append_rows(int32_t *list, const uint64_t *bits, uint64_t field,
                                             int64_t p0, int rows) {
    const __m512i f = _mm512_set1_epi64((long long)field);
    int64_t n = list[0];
    for (int i = 0; i < rows; i += VW) {
        vmask hit = (vmask)(_mm512_test_epi64_mask(_mm512_loadu_si512(bits + i), f) |
                            _mm512_test_epi64_mask(_mm512_loadu_si512(bits + i + 8), f) << 8);
        veci at = iadd(iota(), iset1((int)(p0 + i)));
        if (i + VW <= rows) {  // n <= p0 + i: the 16 stored ints stay within the m rows
            _mm512_storeu_si512(list + 1 + n, _mm512_maskz_compress_epi32(hit, at));
        } else {
            int32_t rest[VW];
            _mm512_storeu_si512(rest, _mm512_maskz_compress_epi32(hit, at));
            for (int q = 0; q < __builtin_popcount(hit); q++) list[1 + n + q] = rest[q];
        }
        n += __builtin_popcount(hit);
    }
    list[0] = (int32_t)n;
}

KERNEL_TARGET void mnc_sparse_dw_lists_avx512(int32_t *lists, const float *x, int64_t m, int64_t d,
                                              int64_t t0, int64_t t1) {
    uint64_t lo[LIST_BLOCK], hi[LIST_BLOCK];
    for (int64_t t = t0; t < t1; t++) lists[t * (m + 1)] = 0;
    for (int64_t g0 = t0 / LIST_GROUP * LIST_GROUP; g0 < t1; g0 += LIST_GROUP) {
        const int64_t pixel = g0 * MR;
        for (int64_t p0 = 0; p0 < m; p0 += LIST_BLOCK) {
            const int rows = m - p0 < LIST_BLOCK ? (int)(m - p0) : LIST_BLOCK;
            for (int i = 0; i < rows; i++)
                group_bits(lo + i, hi + i, x + (p0 + i) * d + pixel, d - pixel);
            for (int i = rows; i < (rows + VW - 1) / VW * VW; i++) lo[i] = hi[i] = 0;
            for (int b = 0; b < LIST_GROUP; b++) {
                int64_t t = g0 + b;
                if (t < t0 || t >= t1) continue;
                uint64_t field = (uint64_t)((1u << MR) - 1) << (MR * (b % 8));
                append_rows(lists + t * (m + 1), b < 8 ? lo : hi, field, p0, rows);
            }
        }
    }
}

KERNEL_TARGET void mnc_sparse_dw_avx512(float *c, int64_t ldc, int64_t panel, const float *x,
                                        int64_t m, int64_t d, const float *dz, int64_t ldz,
                                        int64_t n, float alpha, float beta, const int32_t *lists) {
    for (int64_t p0 = 0; p0 < d; p0 += MR) {
        const int rows = d - p0 < MR ? (int)(d - p0) : MR;
        const int32_t *list = lists + p0 / MR * (m + 1);
        float *cp = c + p0 * ldc;
        switch (rows) {
#define DW_CASE(R) dw_rows(cp, ldc, panel, R, list + 1, list[0], x + p0, d, dz, ldz, n, alpha, beta)
            ROW_CASES(DW_CASE)
#undef DW_CASE
        }
    }
}

#endif  // x86-64
