// gemm_kernel_avx2.c — the AVX2+FMA SGEMM kernels (contract in gemm_kernel.h), the same
// FMA chain per element as the AVX-512 ones, so both targets give identical bits:
//  - the 6×16 microkernel (6 rows × 2 ymm = 12 accumulators, BLIS's haswell shape),
//    specialised at compile time for every row count, both vector counts and both A
//    layouts; the epilogue is applied in registers before the store;
//  - the row kernels for m == 1 (register blocks up to 96 columns, then whole-row
//    passes; a transposed B through 8×8 register transposes);
//  - the B panel packers (a transposed B through 8×8 register transposes).
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

#define ROW_VECTORS 12  // ymm accumulators of the row kernel's register blocks: 96 columns
#define ROW_CHUNK 1024  // columns per pass of the row kernel (their chains: 4 KiB of L1)
#define ROW_GROUP 4     // rows of B per step of the row kernel: 4 sequential streams

// Lanes of columns [8 v, 8 v + 8) inside nr, as a vmaskmov mask (sign bit set = in).
ALWAYS_INLINE KERNEL_TARGET __m256i lane_mask(int nr, int v) {
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - 8 * v), lane);
}

// rows_a != 0: A(r, p) = a[r * rs_a + p] (row-major A); else A(r, p) = a[p * cs_a + r].
ALWAYS_INLINE KERNEL_TARGET void tile(const int rows, const int nv, const int rows_a,
                                      int64_t k, int nr, float alpha, const float *a,
                                      int64_t rs_a, int64_t cs_a, const float *b,
                                      int64_t rs_b, float beta, float *c, int64_t ldc,
                                      int flags, const mnc_uk_epilogue *ep) {
    __m256 acc[MR][2];
    if (flags & MNC_UK_ACC_IN) {
#pragma GCC unroll 6
        for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
            for (int v = 0; v < nv; v++)
                acc[r][v] = nr - 8 * v >= 8 ? _mm256_loadu_ps(c + r * ldc + 8 * v)
                                            : _mm256_maskload_ps(c + r * ldc + 8 * v,
                                                                 lane_mask(nr, v));
    } else {
#pragma GCC unroll 6
        for (int r = 0; r < rows; r++)
#pragma GCC unroll 2
            for (int v = 0; v < nv; v++) acc[r][v] = _mm256_setzero_ps();
    }

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
            if (flags & MNC_UK_ACC_OUT) {
                out = acc[r][v];
            } else if (beta == 0.0f) {
                out = _mm256_mul_ps(va, acc[r][v]);
            } else {
                __m256 old = full ? _mm256_loadu_ps(cr + 8 * v)
                                  : _mm256_maskload_ps(cr + 8 * v, m);
                out = _mm256_fmadd_ps(va, acc[r][v], _mm256_mul_ps(vb, old));
            }
            if (ep != NULL) {  // gemm_kernel.h's epilogue, in registers
                __m256 zero = _mm256_setzero_ps();
                if (ep->bias != NULL)
                    out = _mm256_add_ps(out, full ? _mm256_loadu_ps(ep->bias + 8 * v)
                                                  : _mm256_maskload_ps(ep->bias + 8 * v, m));
                if (ep->relu) out = _mm256_max_ps(zero, out);  // (0 > v ? 0 : v): NaN, -0 pass
                if (ep->mask != NULL) {
                    const float *mrow = ep->mask + r * ep->ld_mask + 8 * v;
                    __m256 y = full ? _mm256_loadu_ps(mrow) : _mm256_maskload_ps(mrow, m);
                    out = _mm256_andnot_ps(_mm256_cmp_ps(y, zero, _CMP_LE_OQ), out);
                }
            }
            if (full) _mm256_storeu_ps(cr + 8 * v, out);
            else _mm256_maskstore_ps(cr + 8 * v, m, out);
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

KERNEL_TARGET void mnc_gemm_ukernel_avx2(int64_t k, int mr, int nr, float alpha,
                                         const float *a, int64_t rs_a, int64_t cs_a,
                                         const float *b, int64_t rs_b,
                                         float beta, float *c, int64_t ldc,
                                         int flags, const mnc_uk_epilogue *ep) {
    int nv = nr > 8 ? 2 : 1;
    int rows_a = cs_a == 1;
    switch (mr) {
        ROWS_CASE(1) ROWS_CASE(2) ROWS_CASE(3) ROWS_CASE(4) ROWS_CASE(5) ROWS_CASE(6)
        default: break;
    }
}

// 8×8 transpose in registers: r[i][j] -> r[j][i].
ALWAYS_INLINE KERNEL_TARGET void transpose8(__m256 r[8]) {
    __m256 t[8], s[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++) {  // s[4i + c], lane L: column 4L + c of rows 4i..4i+3
        s[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        s[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
        s[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        s[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        r[c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x20);
        r[4 + c] = _mm256_permute2f128_ps(s[c], s[4 + c], 0x31);
    }
}

// Transposed B, panel by panel: 8 k × 8 columns at a time are read as 8 runs of 32 bytes
// and transposed in registers; rows past n read nothing and give 0, k past kc is
// neither read nor written.
KERNEL_TARGET void mnc_gemm_pack_bt_avx2(float *dst, int64_t panel_stride, const float *b,
                                         int64_t ldb, int64_t kc, int64_t n) {
    for (int64_t j0 = 0; j0 < n; j0 += MNC_AVX2_NR) {
        float *panel = dst + j0 / MNC_AVX2_NR * panel_stride;
        for (int64_t p0 = 0; p0 < kc; p0 += 8) {
            int kp = kc - p0 < 8 ? (int)(kc - p0) : 8;
            __m256i mp = lane_mask(kp, 0);
#pragma GCC unroll 2
            for (int h = 0; h < 2; h++) {
                __m256 r[8];
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++) {
                    int64_t j = j0 + 8 * h + i;
                    r[i] = j >= n ? _mm256_setzero_ps()
                         : kp == 8 ? _mm256_loadu_ps(b + j * ldb + p0)
                                   : _mm256_maskload_ps(b + j * ldb + p0, mp);
                }
                transpose8(r);
                float *d = panel + p0 * MNC_AVX2_NR + 8 * h;
                for (int c = 0; c < kp; c++) _mm256_storeu_ps(d + c * MNC_AVX2_NR, r[c]);
            }
        }
    }
}

// Untransposed B: each row of kc is copied across the panels (two ymm per panel, the
// last panel masked and zero-padded), so the source is read as contiguous rows.
KERNEL_TARGET void mnc_gemm_pack_b_avx2(float *dst, int64_t panel_stride, const float *b,
                                        int64_t ldb, int64_t kc, int64_t n) {
    int64_t full = n / MNC_AVX2_NR;
    int rest = (int)(n - full * MNC_AVX2_NR);
    __m256i m0 = lane_mask(rest, 0), m1 = lane_mask(rest, 1);
    for (int64_t p = 0; p < kc; p++) {
        const float *src = b + p * ldb;
        float *d = dst + p * MNC_AVX2_NR;
        for (int64_t q = 0; q < full; q++) {
            __m256 v0 = _mm256_loadu_ps(src + q * MNC_AVX2_NR);
            __m256 v1 = _mm256_loadu_ps(src + q * MNC_AVX2_NR + 8);
            _mm256_storeu_ps(d + q * panel_stride, v0);
            _mm256_storeu_ps(d + q * panel_stride + 8, v1);
        }
        if (rest) {
            __m256 v0 = _mm256_maskload_ps(src + full * MNC_AVX2_NR, m0);
            __m256 v1 = _mm256_maskload_ps(src + full * MNC_AVX2_NR + 8, m1);
            _mm256_storeu_ps(d + full * panel_stride, v0);
            _mm256_storeu_ps(d + full * panel_stride + 8, v1);
        }
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

// The row kernel (m == 1, B untransposed), as in the AVX-512 file: register blocks while
// they cover the whole width, else passes of ROW_CHUNK columns whose chains wait in L1
// while B is read ROW_GROUP whole rows at a time.
KERNEL_TARGET void mnc_gemm_row_avx2(int64_t k, int64_t n, float alpha, const float *a,
                                     int64_t inc_a, const float *b, int64_t ldb,
                                     float beta, float *c) {
    if (n <= 8 * ROW_VECTORS) {
        int64_t j = 0;
        for (; j + 8 * ROW_VECTORS <= n; j += 8 * ROW_VECTORS)
            row_block(ROW_VECTORS, 0, 8, k, alpha, a, inc_a, b + j, ldb, beta, c + j);
        for (; j + 32 <= n; j += 32) row_block(4, 0, 8, k, alpha, a, inc_a, b + j, ldb, beta, c + j);
        for (; j + 8 <= n; j += 8) row_block(1, 0, 8, k, alpha, a, inc_a, b + j, ldb, beta, c + j);
        if (j < n) row_block(1, 1, (int)(n - j), k, alpha, a, inc_a, b + j, ldb, beta, c + j);
        return;
    }
    __m256 acc[ROW_CHUNK / 8];
    for (int64_t j0 = 0; j0 < n; j0 += ROW_CHUNK) {
        int w = n - j0 < ROW_CHUNK ? (int)(n - j0) : ROW_CHUNK;
        int full = w / 8, nv = (w + 7) / 8;  // nv > full: a last, partial vector
        __m256i last = lane_mask(w - 8 * full, 0);
        for (int v = 0; v < nv; v++) acc[v] = _mm256_setzero_ps();
        int64_t p = 0;
        for (; p + ROW_GROUP <= k; p += ROW_GROUP) {
            __m256 x[ROW_GROUP];
            const float *bp = b + p * ldb + j0;
#pragma GCC unroll 4
            for (int i = 0; i < ROW_GROUP; i++) x[i] = _mm256_broadcast_ss(a + (p + i) * inc_a);
            for (int v = 0; v < full; v++) {
                __m256 s = acc[v];
#pragma GCC unroll 4
                for (int i = 0; i < ROW_GROUP; i++)
                    s = _mm256_fmadd_ps(x[i], _mm256_loadu_ps(bp + i * ldb + 8 * v), s);
                acc[v] = s;
            }
            if (nv > full) {
                __m256 s = acc[full];
#pragma GCC unroll 4
                for (int i = 0; i < ROW_GROUP; i++)
                    s = _mm256_fmadd_ps(x[i], _mm256_maskload_ps(bp + i * ldb + 8 * full, last), s);
                acc[full] = s;
            }
        }
        for (; p < k; p++) {
            __m256 x = _mm256_broadcast_ss(a + p * inc_a);
            const float *bp = b + p * ldb + j0;
            for (int v = 0; v < full; v++)
                acc[v] = _mm256_fmadd_ps(x, _mm256_loadu_ps(bp + 8 * v), acc[v]);
            if (nv > full)
                acc[full] = _mm256_fmadd_ps(x, _mm256_maskload_ps(bp + 8 * full, last), acc[full]);
        }
        __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
        for (int v = 0; v < nv; v++) {
            float *cv = c + j0 + 8 * v;
            if (v < full) {
                __m256 out = beta == 0.0f ? _mm256_mul_ps(va, acc[v])
                    : _mm256_fmadd_ps(va, acc[v], _mm256_mul_ps(vb, _mm256_loadu_ps(cv)));
                _mm256_storeu_ps(cv, out);
            } else {
                __m256 out = beta == 0.0f ? _mm256_mul_ps(va, acc[v])
                    : _mm256_fmadd_ps(va, acc[v], _mm256_mul_ps(vb, _mm256_maskload_ps(cv, last)));
                _mm256_maskstore_ps(cv, last, out);
            }
        }
    }
}

// The row kernel for a transposed B (m == 1), as in the AVX-512 file: 8 k of 8 rows of B
// read as 8 runs of 32 bytes and transposed in registers, blocks of 8 columns in pairs.
ALWAYS_INLINE KERNEL_TARGET __m256 row_t_block(__m256 acc, int rows, int64_t k,
                                               const float *a, int64_t inc_a,
                                               const float *b, int64_t ldb, int64_t p0) {
    int kp = k - p0 < 8 ? (int)(k - p0) : 8;
    __m256i mp = lane_mask(kp, 0);
    __m256 r[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        r[i] = i >= rows ? _mm256_setzero_ps()
             : kp == 8   ? _mm256_loadu_ps(b + i * ldb + p0)
                         : _mm256_maskload_ps(b + i * ldb + p0, mp);
    transpose8(r);
    if (kp == 8) {
#pragma GCC unroll 8
        for (int q = 0; q < 8; q++)
            acc = _mm256_fmadd_ps(_mm256_broadcast_ss(a + (p0 + q) * inc_a), r[q], acc);
    } else {
        for (int q = 0; q < kp; q++)
            acc = _mm256_fmadd_ps(_mm256_broadcast_ss(a + (p0 + q) * inc_a), r[q], acc);
    }
    return acc;
}

// c[0 .. n) = alpha * acc (beta == 0) or fma(alpha, acc, beta * c), n <= 8 lanes.
ALWAYS_INLINE KERNEL_TARGET void row_t_store(float *c, __m256 acc, int n, float alpha,
                                             float beta) {
    __m256i m = lane_mask(n, 0);
    __m256 va = _mm256_set1_ps(alpha);
    __m256 out = beta == 0.0f ? _mm256_mul_ps(va, acc)
        : _mm256_fmadd_ps(va, acc, _mm256_mul_ps(_mm256_set1_ps(beta), _mm256_maskload_ps(c, m)));
    _mm256_maskstore_ps(c, m, out);
}

KERNEL_TARGET void mnc_gemm_row_t_avx2(int64_t k, int64_t n, float alpha, const float *a,
                                       int64_t inc_a, const float *b, int64_t ldb,
                                       float beta, float *c) {
    for (int64_t j = 0; j < n; j += 16) {
        int n0 = n - j < 8 ? (int)(n - j) : 8;
        int n1 = n - j <= 8 ? 0 : n - j < 16 ? (int)(n - j - 8) : 8;
        const float *b0 = b + j * ldb, *b1 = n1 > 0 ? b0 + 8 * ldb : b0;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        for (int64_t p0 = 0; p0 < k; p0 += 8) {
            acc0 = row_t_block(acc0, n0, k, a, inc_a, b0, ldb, p0);
            if (n1 > 0) acc1 = row_t_block(acc1, n1, k, a, inc_a, b1, ldb, p0);
        }
        row_t_store(c + j, acc0, n0, alpha, beta);
        if (n1 > 0) row_t_store(c + j + 8, acc1, n1, alpha, beta);
    }
}

#endif  // x86-64
