// gemm_kernel_simd.h — the AVX2 and AVX-512 SGEMM kernels (contract in gemm_kernel.h),
// written once over vectors of VW floats. gemm_kernel_avx2.c and gemm_kernel_avx512.c
// each include it once, after the vector operations of their ISA (vec_avx2.h,
// vec_avx512.h), so both targets run this code at their width and give the same bits:
//  - the MR×NR microkernel, NR = 2 vectors (MR × 2 accumulators), A broadcast from
//    memory, B loaded as two vectors per k; one body specialised at compile time for
//    every row count (1..MR), both vector counts and both A layouts, so edge tiles and a
//    transposed A need no other code path; the epilogue is applied in registers;
//  - the row kernels for m == 1: register blocks up to ROW_VECTORS vectors of columns,
//    then whole-row passes; a transposed B through VW×VW register transposes;
//  - the B panel packers (a transposed B through the same transposes) and the A tile
//    packer (MR rows to k-major form, through them too);
//  - peak.c's yardstick: the tile's FMAs without the memory traffic.
// The including file also defines MR (6 or 12), ROW_VECTORS and ROW_MID (the row
// kernel's register blocks, in vectors), B_MASKED_MAX (VW: a B panel of fewer than VW
// columns is read with masked loads, only its nr columns; 0: always NR columns) and the
// names of the seven functions: UKERNEL, PACK_B, PACK_BT, PACK_A, ROW, ROW_T and
// FMA_CHAINS.
#define NR (2 * VW)

#if ROW_MID != 4 && ROW_MID != 8
#error "row_tail dispatches tails of up to 4 or 8 vectors"
#endif
#if MR != 6 && MR != 12
#error "the tile's rows are addressed in threes, and dispatched for 6 or 12 of them"
#endif
#if MR > VW
#error "one k of an A tile must fit one vector"
#endif

// rows_a != 0: A(r, p) = a[r * rs_a + p] (row-major A); else A(r, p) = a[p * cs_a + r].
// The row-major case addresses rows as base + {0, 1, 2} * rs_a from MR / 3 base pointers,
// so the MR streams need MR / 3 + 1 registers, not MR.
ALWAYS_INLINE KERNEL_TARGET void tile(const int rows, const int nv, const int rows_a,
                                      const int masked_b, int64_t k, int nr, float alpha,
                                      const float *a, int64_t rs_a, int64_t cs_a, const float *b,
                                      int64_t rs_b, float beta, float *c, int64_t ldc, int flags,
                                      const mnc_uk_epilogue *ep) {
    vec acc[MR][2];
    const vmask m[2] = {lane_mask(nr, 0), lane_mask(nr, 1)};
    const int full[2] = {nr >= VW, nr >= 2 * VW};
    if (beta != 0.0f) {  // C (e.g. weights updated in place) often comes from L3: ask now
#pragma GCC unroll 12
        for (int r = 0; r < rows; r++) {
            _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + r * ldc + VW * nv - 1), _MM_HINT_T0);
        }
    }
    if (flags & MNC_UK_ACC_IN) {
#pragma GCC unroll 12
        for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
            for (int v = 0; v < nv; v++)
                acc[r][v] = vload_part(c + r * ldc + VW * v, m[v], full[v]);
    } else {
#pragma GCC unroll 12
        for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
            for (int v = 0; v < nv; v++) acc[r][v] = vzero();
    }

    // rows_a: row r of A at step p is base + (r % 3) * rs_a, base one of a0, a3, a6, a9
    // (rows 0-2, 3-5, ...; a6 and a9 unused when MR = 6), each stepping by one float;
    // else it is a + r, a stepping by cs_a.
    const float *a0 = a, *a3 = a + 3 * rs_a, *a6 = a + 6 * rs_a, *a9 = a + 9 * rs_a;
#pragma GCC unroll 2
    for (int64_t p = 0; p < k; p++) {
        vec b0 = masked_b ? vload_mask(b, m[0]) : vloadu(b);
        vec b1 = nv > 1 ? vloadu(b + VW) : b0;
        b += rs_b;
#pragma GCC unroll 12
        for (int r = 0; r < rows; r++) {
            const float *base = r < 3 ? a0 : r < 6 ? a3 : r < 9 ? a6 : a9;
            vec x = vbcast(rows_a ? base + (r % 3) * rs_a : a + r);
            acc[r][0] = vfmadd(x, b0, acc[r][0]);
            if (nv > 1) acc[r][1] = vfmadd(x, b1, acc[r][1]);
        }
        if (rows_a) a0++, a3++, a6++, a9++;
        else a += cs_a;
    }

    vec va = vset1(alpha), vb = vset1(beta);
#pragma GCC unroll 12
    for (int r = 0; r < rows; r++) {
        float *cr = c + r * ldc;
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) {
            vec out;
            if (flags & MNC_UK_ACC_OUT) {
                out = acc[r][v];
            } else if (beta == 0.0f) {
                out = vmul(va, acc[r][v]);
            } else {
                vec old = vload_part(cr + VW * v, m[v], full[v]);
                out = vfmadd(va, acc[r][v], vmul(vb, old));
            }
            if (ep != NULL) {  // gemm_kernel.h's epilogue, in registers
                if (ep->bias != NULL) out = vadd(out, vload_part(ep->bias + VW * v, m[v], full[v]));
                if (ep->relu) out = vmax(vzero(), out);  // (0 > v ? 0 : v): NaN, -0 pass
                if (ep->mask != NULL) {
                    const float *mrow = ep->mask + r * ep->ld_mask + VW * v;
                    out = vzero_where_le0(out, vload_part(mrow, m[v], full[v]));
                }
            }
            vstore_part(cr + VW * v, m[v], full[v], out);
        }
    }
}

// Per row count: both A layouts, two vectors of columns or one; with one, B is read
// with the lane mask of nr when the target reads partial panels in place (B_MASKED_MAX).
#define TILE(R, RA, NV, MB) \
    tile(R, NV, RA, MB, k, nr, alpha, a, rs_a, cs_a, b, rs_b, beta, c, ldc, flags, ep)
#define ROWS_CASE(R)                                                \
    case R:                                                         \
        if (rows_a) {                                               \
            if (nv == 2) TILE(R, 1, 2, 0);                          \
            else if (B_MASKED_MAX > 0 && nr < VW) TILE(R, 1, 1, 1); \
            else TILE(R, 1, 1, 0);                                  \
        } else {                                                    \
            if (nv == 2) TILE(R, 0, 2, 0);                          \
            else if (B_MASKED_MAX > 0 && nr < VW) TILE(R, 0, 1, 1); \
            else TILE(R, 0, 1, 0);                                  \
        }                                                           \
        break;

KERNEL_TARGET void UKERNEL(int64_t k, int mr, int nr, float alpha, const float *a, int64_t rs_a,
                           int64_t cs_a, const float *b, int64_t rs_b, float beta, float *c,
                           int64_t ldc, int flags, const mnc_uk_epilogue *ep) {
    int nv = nr > VW ? 2 : 1;
    int rows_a = cs_a == 1;
    switch (mr) {
        ROWS_CASE(1)
        ROWS_CASE(2)
        ROWS_CASE(3)
        ROWS_CASE(4)
        ROWS_CASE(5)
        ROWS_CASE(6)
#if MR > 6
        ROWS_CASE(7)
        ROWS_CASE(8)
        ROWS_CASE(9)
        ROWS_CASE(10)
        ROWS_CASE(11)
        ROWS_CASE(12)
#endif
        default: break;
    }
}
#undef ROWS_CASE
#undef TILE

// Rows [0, rows) of a VW × kp block (row i at src + i * ld, kp <= VW) read as runs of up to
// 4 VW bytes and transposed: r[q] then holds element q of every row, rows past `rows`
// (which read nothing) giving 0. The first step of every transposing kernel here.
ALWAYS_INLINE KERNEL_TARGET void load_transposed(vec r[VW], const float *src, int64_t ld,
                                                 int64_t rows, int kp) {
    const vmask mp = lane_mask(kp, 0);
#pragma GCC unroll 16
    for (int i = 0; i < VW; i++) r[i] = i < rows ? vload_part(src + i * ld, mp, kp == VW) : vzero();
    transpose_vw(r);
}

// Transposed B, panel by panel: VW k × VW columns at a time are read as VW runs (one per
// source row) and transposed in registers; rows past n read nothing and give 0, k past
// kc is neither read nor written.
KERNEL_TARGET void PACK_BT(float *dst, int64_t panel_stride, const float *b, int64_t ldb,
                           int64_t kc, int64_t n) {
    for (int64_t j0 = 0; j0 < n; j0 += NR) {
        float *panel = dst + j0 / NR * panel_stride;
        for (int64_t p0 = 0; p0 < kc; p0 += VW) {
            int kp = kc - p0 < VW ? (int)(kc - p0) : VW;
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                int64_t j = j0 + VW * h;
                vec r[VW];
                load_transposed(r, b + j * ldb + p0, ldb, n - j, kp);
                float *d = panel + p0 * NR + VW * h;
                if (kp == VW) {
#pragma GCC unroll 16
                    for (int q = 0; q < VW; q++) vstoreu(d + q * NR, r[q]);
                } else {
                    for (int q = 0; q < kp; q++) vstoreu(d + q * NR, r[q]);
                }
            }
        }
    }
}

// An untransposed A tile in k-major form (gemm_kernel.h: dst[p * MR + r]): VW k at a
// time, read as mr runs and transposed in registers; rows mr..MR-1 give 0. One k is the
// first MR lanes of a vector. Where masked stores are slow (VSTORE_MASK_FAST 0: AVX2 on
// AMD) each is stored whole, its last VW - MR lanes landing on the next k's place before
// that k's store overwrites them, and only the tile's last k with the mask, so nothing
// lands past the tile.
KERNEL_TARGET void PACK_A(float *dst, const float *a, int64_t lda, int64_t kc, int mr) {
    const vmask one_k = lane_mask(MR, 0);
    for (int64_t p0 = 0; p0 < kc; p0 += VW) {
        int kp = kc - p0 < VW ? (int)(kc - p0) : VW;
        vec r[VW];
        load_transposed(r, a + p0, lda, mr, kp);
        float *d = dst + p0 * MR;
        const int64_t last = kc - 1 - p0;  // the tile's last k, when in this block
#pragma GCC unroll 16
        for (int q = 0; q < kp; q++) {
            if (VSTORE_MASK_FAST || q == last) vstore_mask(d + q * MR, one_k, r[q]);
            else vstoreu(d + q * MR, r[q]);
        }
    }
}

// Untransposed B: each row of kc is copied across the panels (two vectors per panel, the
// last panel masked and zero-padded), so the source is read as contiguous rows.
KERNEL_TARGET void PACK_B(float *dst, int64_t panel_stride, const float *b, int64_t ldb, int64_t kc,
                          int64_t n) {
    int64_t full = n / NR;
    int rest = (int)(n - full * NR);
    vmask m0 = lane_mask(rest, 0), m1 = lane_mask(rest, 1);
    for (int64_t p = 0; p < kc; p++) {
        const float *src = b + p * ldb;
        float *d = dst + p * NR;
        for (int64_t q = 0; q < full; q++) {
            vec v0 = vloadu(src + q * NR);
            vec v1 = vloadu(src + q * NR + VW);
            vstoreu(d + q * panel_stride, v0);
            vstoreu(d + q * panel_stride + VW, v1);
        }
        if (rest) {
            vec v0 = vload_mask(src + full * NR, m0);
            vec v1 = vload_mask(src + full * NR + VW, m1);
            vstoreu(d + full * panel_stride, v0);
            vstoreu(d + full * panel_stride + VW, v1);
        }
    }
}

// c = alpha * acc (beta == 0) or fma(alpha, acc, beta * c), in the lanes of m.
ALWAYS_INLINE KERNEL_TARGET void store_scaled(float *c, vmask m, int full, vec acc, float alpha,
                                              float beta) {
    vec va = vset1(alpha);
    vec out =
        beta == 0.0f ? vmul(va, acc) : vfmadd(va, acc, vmul(vset1(beta), vload_part(c, m, full)));
    vstore_part(c, m, full, out);
}

// One row of C over `nv` vectors of columns, the last one partial (`last` lanes) when
// `partial`: nv independent chains per k, B read as one contiguous run per row.
ALWAYS_INLINE KERNEL_TARGET void row_block(const int nv, const int partial, int last, int64_t k,
                                           float alpha, const float *a, int64_t inc_a,
                                           const float *b, int64_t ldb, float beta, float *c) {
    vec acc[ROW_VECTORS];
#pragma GCC unroll 24
    for (int v = 0; v < nv; v++) acc[v] = vzero();
    const vmask m = lane_mask(last, 0);
    for (int64_t p = 0; p < k; p++) {
        vec x = vbcast(a + p * inc_a);
        const float *bp = b + p * ldb;
#pragma GCC unroll 24
        for (int v = 0; v < nv; v++) {
            vec y = partial && v + 1 == nv ? vload_mask(bp + VW * v, m) : vloadu(bp + VW * v);
            acc[v] = vfmadd(x, y, acc[v]);
        }
    }
#pragma GCC unroll 24
    for (int v = 0; v < nv; v++) {
        int masked = partial && v + 1 == nv;
        store_scaled(c + VW * v, masked ? m : lane_mask(VW, 0), !masked, acc[v], alpha, beta);
    }
}

// The last n <= VW * ROW_MID columns of a row in one block (the last vector partial when
// n is not a multiple of VW), so that their chains interleave: in blocks of one vector
// each would wait out the FMA latency of all k steps in turn.
#define ROW_TAIL_CASE(V)                                                           \
    case V:                                                                        \
        if (last < VW) row_block(V, 1, last, k, alpha, a, inc_a, b, ldb, beta, c); \
        else row_block(V, 0, VW, k, alpha, a, inc_a, b, ldb, beta, c);             \
        break;
ALWAYS_INLINE KERNEL_TARGET void row_tail(int64_t n, int64_t k, float alpha, const float *a,
                                          int64_t inc_a, const float *b, int64_t ldb, float beta,
                                          float *c) {
    int nv = (int)((n + VW - 1) / VW), last = (int)(n - (int64_t)(nv - 1) * VW);
    switch (nv) {
        ROW_TAIL_CASE(1)
        ROW_TAIL_CASE(2)
        ROW_TAIL_CASE(3)
        ROW_TAIL_CASE(4)
#if ROW_MID > 4
        ROW_TAIL_CASE(5)
        ROW_TAIL_CASE(6)
        ROW_TAIL_CASE(7)
        ROW_TAIL_CASE(8)
#endif
        default: break;
    }
}
#undef ROW_TAIL_CASE

#define ROW_CHUNK 1024  // columns per pass of the row kernel (their chains: 4 KiB of L1)
#define ROW_GROUP 4     // rows of B per step of the row kernel: 4 sequential streams

// The row kernel (m == 1, B untransposed). Up to ROW_VECTORS vectors of columns, the
// chains stay in registers and each row of B is one contiguous run (row_block). A wider
// B goes in passes of up to ROW_CHUNK columns whose chains wait in an L1 array while B
// is read ROW_GROUP whole rows at a time: a few long sequential streams, the prefetchers'
// best case, where register blocks across a wide B would read a part of every 4 KiB row
// per pass (and at batch 1 the product runs at the speed B arrives). Either way each
// column takes its FMAs in increasing p, from an accumulator kept exactly: same bits.
KERNEL_TARGET void ROW(int64_t k, int64_t n, float alpha, const float *a, int64_t inc_a,
                       const float *b, int64_t ldb, float beta, float *c) {
    if (n <= VW * ROW_VECTORS) {
        int64_t j = 0;
        for (; j + VW * ROW_VECTORS <= n; j += VW * ROW_VECTORS)
            row_block(ROW_VECTORS, 0, VW, k, alpha, a, inc_a, b + j, ldb, beta, c + j);
        for (; j + VW * ROW_MID <= n; j += VW * ROW_MID)
            row_block(ROW_MID, 0, VW, k, alpha, a, inc_a, b + j, ldb, beta, c + j);
        if (j < n) row_tail(n - j, k, alpha, a, inc_a, b + j, ldb, beta, c + j);
        return;
    }
    vec acc[ROW_CHUNK / VW];
    for (int64_t j0 = 0; j0 < n; j0 += ROW_CHUNK) {
        int w = n - j0 < ROW_CHUNK ? (int)(n - j0) : ROW_CHUNK;
        int full = w / VW, nv = (w + VW - 1) / VW;  // nv > full: a last, partial vector
        const vmask last = lane_mask(w - VW * full, 0);
        for (int v = 0; v < nv; v++) acc[v] = vzero();
        int64_t p = 0;
        for (; p + ROW_GROUP <= k; p += ROW_GROUP) {
            vec x[ROW_GROUP];
            const float *bp = b + p * ldb + j0;
#pragma GCC unroll 4
            for (int i = 0; i < ROW_GROUP; i++) x[i] = vbcast(a + (p + i) * inc_a);
            for (int v = 0; v < full; v++) {
                vec s = acc[v];
#pragma GCC unroll 4
                for (int i = 0; i < ROW_GROUP; i++)
                    s = vfmadd(x[i], vloadu(bp + i * ldb + VW * v), s);
                acc[v] = s;
            }
            if (nv > full) {
                vec s = acc[full];
#pragma GCC unroll 4
                for (int i = 0; i < ROW_GROUP; i++)
                    s = vfmadd(x[i], vload_mask(bp + i * ldb + VW * full, last), s);
                acc[full] = s;
            }
        }
        for (; p < k; p++) {
            vec x = vbcast(a + p * inc_a);
            const float *bp = b + p * ldb + j0;
            for (int v = 0; v < full; v++) acc[v] = vfmadd(x, vloadu(bp + VW * v), acc[v]);
            if (nv > full) acc[full] = vfmadd(x, vload_mask(bp + VW * full, last), acc[full]);
        }
        for (int v = 0; v < nv; v++)
            store_scaled(c + j0 + VW * v, v < full ? lane_mask(VW, 0) : last, v < full, acc[v],
                         alpha, beta);
    }
}

// The row kernel for a transposed B (m == 1, op(B)(p, j) = b[j * ldb + p]): column j of
// op(B) is row j of B, so VW k of VW rows are read as VW runs and transposed in
// registers; vector q then holds op(B)(p0 + q, j .. j + VW - 1) and each column's chain
// takes its FMAs in increasing p, as in every kernel. Blocks of VW columns go in pairs:
// two independent chains, so that one FMA's latency is not all the other waits on.
// Rows past n read nothing (0), k past `k` is neither read nor multiplied.
ALWAYS_INLINE KERNEL_TARGET vec row_t_block(vec acc, int rows, int kp, const float *a,
                                            int64_t inc_a, const float *b, int64_t ldb,
                                            int64_t p0) {
    vec r[VW];
    load_transposed(r, b + p0, ldb, rows, kp);
    if (kp == VW) {
#pragma GCC unroll 16
        for (int q = 0; q < VW; q++) acc = vfmadd(vbcast(a + (p0 + q) * inc_a), r[q], acc);
    } else {
        for (int q = 0; q < kp; q++) acc = vfmadd(vbcast(a + (p0 + q) * inc_a), r[q], acc);
    }
    return acc;
}

// When k spans at least HEAD_MIN_BLOCKS blocks, the first one is cut short if that starts
// the others on a VW-float boundary of every row (ldb a multiple of VW): a run that
// straddles two cache lines costs two loads, and NumPy's large arrays start 16 bytes into
// a line; the extra block's transposes then cost at most 1/HEAD_MIN_BLOCKS more. Blocks
// only group each chain's consecutive k.
#define HEAD_MIN_BLOCKS 16
KERNEL_TARGET void ROW_T(int64_t k, int64_t n, float alpha, const float *a, int64_t inc_a,
                         const float *b, int64_t ldb, float beta, float *c) {
    int64_t head = 0;
    if (ldb % VW == 0 && k >= HEAD_MIN_BLOCKS * VW)
        head = (VW - (int64_t)((uintptr_t)b / sizeof(float) % VW)) % VW;
    for (int64_t j = 0; j < n; j += 2 * VW) {
        int n0 = n - j < VW ? (int)(n - j) : VW;
        int n1 = n - j <= VW ? 0 : n - j < 2 * VW ? (int)(n - j - VW) : VW;
        const float *b0 = b + j * ldb, *b1 = n1 > 0 ? b0 + VW * ldb : b0;
        vec acc0 = vzero(), acc1 = vzero();
        for (int64_t p0 = 0; p0 < k;) {
            int64_t end = p0 == 0 && head > 0 ? head : p0 + VW;
            int kp = (int)((end < k ? end : k) - p0);
            acc0 = row_t_block(acc0, n0, kp, a, inc_a, b0, ldb, p0);
            if (n1 > 0) acc1 = row_t_block(acc1, n1, kp, a, inc_a, b1, ldb, p0);
            p0 += kp;
        }
        store_scaled(c + j, lane_mask(n0, 0), n0 == VW, acc0, alpha, beta);
        if (n1 > 0) store_scaled(c + j + VW, lane_mask(n1, 0), n1 == VW, acc1, alpha, beta);
    }
}
#undef HEAD_MIN_BLOCKS

// The yardstick (peak.c): `iters` rounds of 2 MR independent FMA chains, as many as the
// tile has accumulators, on whole vectors and with no memory traffic: what the tile's
// FMAs could at best do. Returns the flops done; the chains' sum goes to sink[0, VW).
// Chain i starts at i (equal chains would be merged by the compiler) and converges to 1
// (acc = acc * (1 - 2^-20) + 2^-20), never denormal.
KERNEL_TARGET double FMA_CHAINS(int64_t iters, float *sink) {
    vec acc[2 * MR];
    const vec x = vset1(1.0f - 0x1p-20f), y = vset1(0x1p-20f);
#pragma GCC unroll 24
    for (int i = 0; i < 2 * MR; i++) acc[i] = vset1((float)i);
    for (int64_t it = 0; it < iters; it++) {
#pragma GCC unroll 24
        for (int i = 0; i < 2 * MR; i++) acc[i] = vfmadd(acc[i], x, y);
    }
    vec s = acc[0];
#pragma GCC unroll 24
    for (int i = 1; i < 2 * MR; i++) s = vadd(s, acc[i]);
    vstoreu(sink, s);
    return 2.0 * VW * (2 * MR) * (double)iters;
}
