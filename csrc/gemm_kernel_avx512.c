// gemm_kernel_avx512.c — the AVX-512 SGEMM kernels (contract in gemm_kernel.h):
//  - the 12×32 microkernel (12 rows × 2 zmm = 24 accumulators), A broadcast from memory,
//    B loaded as two zmm per k; one body specialised at compile time for every row count
//    (1..12), both vector counts and both A layouts, so edge tiles and a transposed A
//    need no other code path; the epilogue is applied in registers before the store;
//  - the row kernels for m == 1: register blocks up to 384 columns, then whole-row
//    passes; a transposed B through 16×16 register transposes;
//  - the B panel packers (a transposed B through 16×16 register transposes) and the A
//    tile packer (16×16 register transposes too).
// Only these functions use AVX-512; gemm.c calls them after mnc_isa_active() said so.
#include "gemm_kernel.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>

#define MR MNC_AVX512_MR
#if defined(__GNUC__)  // GCC, Clang: the ISA is enabled per function, never per file
#define KERNEL_TARGET __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma")))
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else  // MSVC: intrinsics need no target option
#define KERNEL_TARGET
#define ALWAYS_INLINE static __forceinline
#endif

#define ROW_VECTORS 24  // zmm accumulators of the row kernel's register blocks
#define ROW_CHUNK 1024  // columns per pass of the row kernel (their chains: 4 KiB of L1)
#define ROW_GROUP 4     // rows of B per step of the row kernel: 4 sequential streams

// Columns [16 v, 16 v + 16) of the tile that are inside nr, as a lane mask.
ALWAYS_INLINE KERNEL_TARGET __mmask16 lane_mask(int nr, int v) {
    int left = nr - 16 * v;
    return left >= 16 ? (__mmask16)0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1u);
}

// rows_a != 0: A(r, p) = a[r * rs_a + p] (row-major A); else A(r, p) = a[p * cs_a + r].
// The row-major case addresses rows as base + {0, 1, 2} * rs_a from four base pointers, so
// the twelve streams need five registers, not twelve.
ALWAYS_INLINE KERNEL_TARGET void tile(const int rows, const int nv, const int rows_a,
                                      int64_t k, int nr, float alpha, const float *a,
                                      int64_t rs_a, int64_t cs_a, const float *b,
                                      int64_t rs_b, float beta, float *c, int64_t ldc,
                                      int flags, const mnc_uk_epilogue *ep) {
    __m512 acc[MR][2];
    __mmask16 m0 = lane_mask(nr, 0), m1 = lane_mask(nr, 1);
    if (beta != 0.0f) {  // C (e.g. weights updated in place) often comes from L3: ask now
#pragma GCC unroll 12
        for (int r = 0; r < rows; r++) {
            _mm_prefetch((const char *)(c + r * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + r * ldc + 16 * nv - 1), _MM_HINT_T0);
        }
    }
    if (flags & MNC_UK_ACC_IN) {
#pragma GCC unroll 12
        for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
            for (int v = 0; v < nv; v++)
                acc[r][v] = _mm512_maskz_loadu_ps(v ? m1 : m0, c + r * ldc + 16 * v);
    } else {
#pragma GCC unroll 12
        for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
            for (int v = 0; v < nv; v++) acc[r][v] = _mm512_setzero_ps();
    }

    if (rows_a) {
        const float *a0 = a, *a3 = a + 3 * rs_a, *a6 = a + 6 * rs_a, *a9 = a + 9 * rs_a;
#pragma GCC unroll 2
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
#pragma GCC unroll 2
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
#pragma GCC unroll 12
    for (int r = 0; r < rows; r++) {
        float *cr = c + r * ldc;
#pragma GCC unroll 2
        for (int v = 0; v < nv; v++) {
            __mmask16 m = v ? m1 : m0;
            __m512 out;
            if (flags & MNC_UK_ACC_OUT) {
                out = acc[r][v];
            } else if (beta == 0.0f) {
                out = _mm512_mul_ps(va, acc[r][v]);
            } else {
                __m512 old = _mm512_maskz_loadu_ps(m, cr + 16 * v);
                out = _mm512_fmadd_ps(va, acc[r][v], _mm512_mul_ps(vb, old));
            }
            if (ep != NULL) {  // gemm_kernel.h's epilogue, in registers
                __m512 zero = _mm512_setzero_ps();
                if (ep->bias != NULL)
                    out = _mm512_add_ps(out, _mm512_maskz_loadu_ps(m, ep->bias + 16 * v));
                if (ep->relu) out = _mm512_max_ps(zero, out);  // (0 > v ? 0 : v): NaN, -0 pass
                if (ep->mask != NULL) {
                    __m512 y = _mm512_maskz_loadu_ps(m, ep->mask + r * ep->ld_mask + 16 * v);
                    out = _mm512_mask_mov_ps(out, _mm512_cmp_ps_mask(y, zero, _CMP_LE_OQ), zero);
                }
            }
            _mm512_mask_storeu_ps(cr + 16 * v, m, out);
        }
    }
}

#define ROWS_CASE(R)                                                                  \
    case R:                                                                           \
        if (rows_a) {                                                                 \
            if (nv == 2) tile(R, 2, 1, k, nr, alpha, a, rs_a, cs_a, b, rs_b, beta, c, ldc, flags, ep); \
            else tile(R, 1, 1, k, nr, alpha, a, rs_a, cs_a, b, rs_b, beta, c, ldc, flags, ep);   \
        } else {                                                                      \
            if (nv == 2) tile(R, 2, 0, k, nr, alpha, a, rs_a, cs_a, b, rs_b, beta, c, ldc, flags, ep); \
            else tile(R, 1, 0, k, nr, alpha, a, rs_a, cs_a, b, rs_b, beta, c, ldc, flags, ep);   \
        }                                                                             \
        break;

KERNEL_TARGET void mnc_gemm_ukernel_avx512(int64_t k, int mr, int nr, float alpha,
                                           const float *a, int64_t rs_a, int64_t cs_a,
                                           const float *b, int64_t rs_b,
                                           float beta, float *c, int64_t ldc,
                                           int flags, const mnc_uk_epilogue *ep) {
    int nv = nr > 16 ? 2 : 1;
    int rows_a = cs_a == 1;
    switch (mr) {
        ROWS_CASE(1) ROWS_CASE(2) ROWS_CASE(3) ROWS_CASE(4) ROWS_CASE(5) ROWS_CASE(6)
        ROWS_CASE(7) ROWS_CASE(8) ROWS_CASE(9) ROWS_CASE(10) ROWS_CASE(11) ROWS_CASE(12)
        default: break;
    }
}

// 16×16 transpose in registers: r[i][j] -> r[j][i]. Four rounds of 16 shuffles (BLIS
// and the Intel manuals use the same network): pairs of rows, pairs of pairs (64-bit),
// then 128-bit lanes twice.
ALWAYS_INLINE KERNEL_TARGET void transpose16(__m512 r[16]) {
    __m512 t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {  // r[4i + c], lane L: column 4L + c of rows 4i..4i+3
        __m512d lo = _mm512_castps_pd(t[4 * i]), hi = _mm512_castps_pd(t[4 * i + 1]);
        __m512d lo2 = _mm512_castps_pd(t[4 * i + 2]), hi2 = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, lo2));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, lo2));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi, hi2));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi, hi2));
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        t[c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);           // lanes 0, 2
        t[4 + c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);       // lanes 1, 3
        t[8 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
        t[12 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {  // column 4L + c is lane L of the four pieces
        r[c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88);
        r[8 + c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0xdd);
        r[4 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0xdd);
    }
}

// Rows [0, rows) of a 16 × kp block (row i at src + i * ld, lanes past kp masked) read as
// runs of up to 64 bytes and transposed: r[q] then holds element q of every row, rows past
// `rows` (which read nothing) giving 0. The first step of every transposing kernel here.
ALWAYS_INLINE KERNEL_TARGET void load_transposed16(__m512 r[16], const float *src, int64_t ld,
                                                   int64_t rows, __mmask16 mp) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++)
        r[i] = i < rows ? _mm512_maskz_loadu_ps(mp, src + i * ld) : _mm512_setzero_ps();
    transpose16(r);
}

// Transposed B, panel by panel: 16 k × 16 columns at a time are read as 16 runs of 64
// bytes (one per source row) and transposed in registers; rows past n read nothing and
// give 0, k past kc is neither read nor written.
KERNEL_TARGET void mnc_gemm_pack_bt_avx512(float *dst, int64_t panel_stride, const float *b,
                                           int64_t ldb, int64_t kc, int64_t n) {
    for (int64_t j0 = 0; j0 < n; j0 += MNC_AVX512_NR) {
        float *panel = dst + j0 / MNC_AVX512_NR * panel_stride;
        for (int64_t p0 = 0; p0 < kc; p0 += 16) {
            int kp = kc - p0 < 16 ? (int)(kc - p0) : 16;
            __mmask16 mp = lane_mask(kp, 0);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                int64_t j = j0 + 16 * h;
                __m512 r[16];
                load_transposed16(r, b + j * ldb + p0, ldb, n - j, mp);
                float *d = panel + p0 * MNC_AVX512_NR + 16 * h;
                if (kp == 16) {
#pragma GCC unroll 16
                    for (int c = 0; c < 16; c++) _mm512_storeu_ps(d + c * MNC_AVX512_NR, r[c]);
                } else {
                    for (int c = 0; c < kp; c++) _mm512_storeu_ps(d + c * MNC_AVX512_NR, r[c]);
                }
            }
        }
    }
}

// An untransposed A tile in k-major form (gemm_kernel.h): 16 k at a time, read as mr
// runs of 64 bytes and transposed in registers; the lanes of rows mr..MR-1 store 0.
#if MNC_AVX512_MR > 16
#error "one k of an A tile must fit one zmm"
#endif
KERNEL_TARGET void mnc_gemm_pack_a_avx512(float *dst, const float *a, int64_t lda,
                                          int64_t kc, int mr) {
    const __mmask16 one_k = lane_mask(MR, 0);
    for (int64_t p0 = 0; p0 < kc; p0 += 16) {
        int kp = kc - p0 < 16 ? (int)(kc - p0) : 16;
        __mmask16 mp = lane_mask(kp, 0);
        __m512 r[16];
        load_transposed16(r, a + p0, lda, mr, mp);
        float *d = dst + p0 * MR;
        if (kp == 16) {
#pragma GCC unroll 16
            for (int c = 0; c < 16; c++) _mm512_mask_storeu_ps(d + c * MR, one_k, r[c]);
        } else {
            for (int c = 0; c < kp; c++) _mm512_mask_storeu_ps(d + c * MR, one_k, r[c]);
        }
    }
}

// Untransposed B: each row of kc is copied across the panels (two zmm per panel, the
// last panel masked and zero-padded), so the source is read as contiguous rows.
KERNEL_TARGET void mnc_gemm_pack_b_avx512(float *dst, int64_t panel_stride, const float *b,
                                          int64_t ldb, int64_t kc, int64_t n) {
    int64_t full = n / MNC_AVX512_NR;
    int rest = (int)(n - full * MNC_AVX512_NR);
    __mmask16 m0 = lane_mask(rest, 0), m1 = lane_mask(rest, 1);
    for (int64_t p = 0; p < kc; p++) {
        const float *src = b + p * ldb;
        float *d = dst + p * MNC_AVX512_NR;
        for (int64_t q = 0; q < full; q++) {
            __m512 v0 = _mm512_loadu_ps(src + q * MNC_AVX512_NR);
            __m512 v1 = _mm512_loadu_ps(src + q * MNC_AVX512_NR + 16);
            _mm512_storeu_ps(d + q * panel_stride, v0);
            _mm512_storeu_ps(d + q * panel_stride + 16, v1);
        }
        if (rest) {
            __m512 v0 = _mm512_maskz_loadu_ps(m0, src + full * MNC_AVX512_NR);
            __m512 v1 = _mm512_maskz_loadu_ps(m1, src + full * MNC_AVX512_NR + 16);
            _mm512_storeu_ps(d + full * panel_stride, v0);
            _mm512_storeu_ps(d + full * panel_stride + 16, v1);
        }
    }
}

// One row of C over `nv` zmm of columns (the last one masked to `last` lanes): nv
// independent chains per k, B read as one contiguous run of 64 nv bytes per row.
ALWAYS_INLINE KERNEL_TARGET void row_block(const int nv, int last, int64_t k, float alpha,
                                           const float *a, int64_t inc_a, const float *b,
                                           int64_t ldb, float beta, float *c) {
    __m512 acc[ROW_VECTORS];
#pragma GCC unroll 24
    for (int v = 0; v < nv; v++) acc[v] = _mm512_setzero_ps();
    __mmask16 m = lane_mask(last, 0);
    for (int64_t p = 0; p < k; p++) {
        __m512 x = _mm512_set1_ps(a[p * inc_a]);
        const float *bp = b + p * ldb;
#pragma GCC unroll 24
        for (int v = 0; v < nv; v++) {
            __m512 y = v + 1 < nv ? _mm512_loadu_ps(bp + 16 * v)
                                  : _mm512_maskz_loadu_ps(m, bp + 16 * v);
            acc[v] = _mm512_fmadd_ps(x, y, acc[v]);
        }
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
#pragma GCC unroll 24
    for (int v = 0; v < nv; v++) {
        __mmask16 mv = v + 1 < nv ? (__mmask16)0xffff : m;
        __m512 out = beta == 0.0f
            ? _mm512_mul_ps(va, acc[v])
            : _mm512_fmadd_ps(va, acc[v], _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(mv, c + 16 * v)));
        _mm512_mask_storeu_ps(c + 16 * v, mv, out);
    }
}

// The row kernel (m == 1, B untransposed). Up to ROW_VECTORS zmm of columns, the chains
// stay in registers and each row of B is one contiguous run (row_block). A wider B goes
// in passes of up to ROW_CHUNK columns whose chains wait in an L1 array while B is read
// ROW_GROUP whole rows at a time: a few long sequential streams, the prefetchers' best
// case (register blocks across a wide B read 1.5 KiB per 4 KiB row and were 10-27%
// slower on 1024-wide B, where batch 1 runs at the speed B arrives). Either way each
// column takes its FMAs in increasing p, from an accumulator kept exactly: same bits.
KERNEL_TARGET void mnc_gemm_row_avx512(int64_t k, int64_t n, float alpha, const float *a,
                                       int64_t inc_a, const float *b, int64_t ldb,
                                       float beta, float *c) {
    if (n <= 16 * ROW_VECTORS) {
        int64_t j = 0;
        for (; j + 16 * ROW_VECTORS <= n; j += 16 * ROW_VECTORS)
            row_block(ROW_VECTORS, 16, k, alpha, a, inc_a, b + j, ldb, beta, c + j);
        for (; j + 128 <= n; j += 128) row_block(8, 16, k, alpha, a, inc_a, b + j, ldb, beta, c + j);
        for (; j < n; j += 16) {
            int last = n - j < 16 ? (int)(n - j) : 16;
            row_block(1, last, k, alpha, a, inc_a, b + j, ldb, beta, c + j);
        }
        return;
    }
    __m512 acc[ROW_CHUNK / 16];
    for (int64_t j0 = 0; j0 < n; j0 += ROW_CHUNK) {
        int w = n - j0 < ROW_CHUNK ? (int)(n - j0) : ROW_CHUNK;
        int nv = (w + 15) / 16;
        __mmask16 last = lane_mask(w - 16 * (nv - 1), 0);
        for (int v = 0; v < nv; v++) acc[v] = _mm512_setzero_ps();
        int64_t p = 0;
        for (; p + ROW_GROUP <= k; p += ROW_GROUP) {
            __m512 x[ROW_GROUP];
            const float *bp = b + p * ldb + j0;
#pragma GCC unroll 4
            for (int i = 0; i < ROW_GROUP; i++) x[i] = _mm512_set1_ps(a[(p + i) * inc_a]);
            for (int v = 0; v + 1 < nv; v++) {
                __m512 s = acc[v];
#pragma GCC unroll 4
                for (int i = 0; i < ROW_GROUP; i++)
                    s = _mm512_fmadd_ps(x[i], _mm512_loadu_ps(bp + i * ldb + 16 * v), s);
                acc[v] = s;
            }
            __m512 s = acc[nv - 1];
#pragma GCC unroll 4
            for (int i = 0; i < ROW_GROUP; i++)
                s = _mm512_fmadd_ps(x[i], _mm512_maskz_loadu_ps(last, bp + i * ldb + 16 * (nv - 1)), s);
            acc[nv - 1] = s;
        }
        for (; p < k; p++) {
            __m512 x = _mm512_set1_ps(a[p * inc_a]);
            const float *bp = b + p * ldb + j0;
            for (int v = 0; v < nv; v++) {
                __mmask16 m = v + 1 < nv ? (__mmask16)0xffff : last;
                acc[v] = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(m, bp + 16 * v), acc[v]);
            }
        }
        __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
        for (int v = 0; v < nv; v++) {
            __mmask16 m = v + 1 < nv ? (__mmask16)0xffff : last;
            float *cv = c + j0 + 16 * v;
            __m512 out = beta == 0.0f
                ? _mm512_mul_ps(va, acc[v])
                : _mm512_fmadd_ps(va, acc[v], _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m, cv)));
            _mm512_mask_storeu_ps(cv, m, out);
        }
    }
}

// The row kernel for a transposed B (m == 1, op(B)(p, j) = b[j * ldb + p]): column j of
// op(B) is row j of B, so 16 k of 16 rows are read as 16 runs of 64 bytes and transposed
// in registers; vector q then holds op(B)(p0 + q, j .. j + 15) and each column's chain
// takes its FMAs in increasing p, as in every kernel. Blocks of 16 columns go in pairs:
// two independent chains, so that one FMA's latency is not all the other waits on.
// Rows past n read nothing (0), k past `k` is neither read nor multiplied.
ALWAYS_INLINE KERNEL_TARGET __m512 row_t_block(__m512 acc, int rows, int64_t k,
                                               const float *a, int64_t inc_a,
                                               const float *b, int64_t ldb, int64_t p0) {
    int kp = k - p0 < 16 ? (int)(k - p0) : 16;
    __mmask16 mp = lane_mask(kp, 0);
    __m512 r[16];
    load_transposed16(r, b + p0, ldb, rows, mp);
    if (kp == 16) {
#pragma GCC unroll 16
        for (int q = 0; q < 16; q++)
            acc = _mm512_fmadd_ps(_mm512_set1_ps(a[(p0 + q) * inc_a]), r[q], acc);
    } else {
        for (int q = 0; q < kp; q++)
            acc = _mm512_fmadd_ps(_mm512_set1_ps(a[(p0 + q) * inc_a]), r[q], acc);
    }
    return acc;
}

// c[0 .. n) = alpha * acc (beta == 0) or fma(alpha, acc, beta * c), n <= 16 lanes.
ALWAYS_INLINE KERNEL_TARGET void row_t_store(float *c, __m512 acc, int n, float alpha,
                                             float beta) {
    __mmask16 m = lane_mask(n, 0);
    __m512 va = _mm512_set1_ps(alpha);
    __m512 out = beta == 0.0f ? _mm512_mul_ps(va, acc)
        : _mm512_fmadd_ps(va, acc, _mm512_mul_ps(_mm512_set1_ps(beta), _mm512_maskz_loadu_ps(m, c)));
    _mm512_mask_storeu_ps(c, m, out);
}

KERNEL_TARGET void mnc_gemm_row_t_avx512(int64_t k, int64_t n, float alpha, const float *a,
                                         int64_t inc_a, const float *b, int64_t ldb,
                                         float beta, float *c) {
    for (int64_t j = 0; j < n; j += 32) {
        int n0 = n - j < 16 ? (int)(n - j) : 16;
        int n1 = n - j <= 16 ? 0 : n - j < 32 ? (int)(n - j - 16) : 16;
        const float *b0 = b + j * ldb, *b1 = n1 > 0 ? b0 + 16 * ldb : b0;
        __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
        for (int64_t p0 = 0; p0 < k; p0 += 16) {
            acc0 = row_t_block(acc0, n0, k, a, inc_a, b0, ldb, p0);
            if (n1 > 0) acc1 = row_t_block(acc1, n1, k, a, inc_a, b1, ldb, p0);
        }
        row_t_store(c + j, acc0, n0, alpha, beta);
        if (n1 > 0) row_t_store(c + j + 16, acc1, n1, alpha, beta);
    }
}

#endif  // x86-64
