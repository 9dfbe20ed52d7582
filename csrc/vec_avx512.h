// vec_avx512.h — the vector operations of the width-generic kernels (gemm_kernel_simd.h,
// nn_simd.h) on AVX-512: 16 floats per zmm, lane masks in k registers, so a partial load
// or store is one instruction and costs what a full one does. vec_avx2.h is the same list
// on AVX2. The including file defines KERNEL_TARGET (its functions' target attribute)
// and ALWAYS_INLINE first (target_avx512.h does both for the kernels with FMA); only
// functions compiled for AVX-512 may use these.
#ifndef MNISTC_VEC_AVX512_H
#define MNISTC_VEC_AVX512_H

#include <immintrin.h>
#include <stdint.h>

#define VW 16  // floats per vector

typedef __m512 vec;
typedef __m512i veci;     // VW int32 lanes
typedef __mmask16 vmask;  // a lane mask: bit i = lane i

// Floats.
#define vzero _mm512_setzero_ps
#define vset1 _mm512_set1_ps
#define vbcast(p) _mm512_set1_ps(*(p))  // one float from memory in every lane
#define vloadu _mm512_loadu_ps
#define vstoreu _mm512_storeu_ps
#define vfmadd _mm512_fmadd_ps
#define vmul _mm512_mul_ps
#define vadd _mm512_add_ps
#define vsub _mm512_sub_ps
#define vdiv _mm512_div_ps
#define vmax _mm512_max_ps
#define vcmp(a, b, predicate) _mm512_cmp_ps_mask((a), (b), (predicate))
#define vselect(m, a, b) _mm512_mask_mov_ps((b), (m), (a))  // m ? a : b, lane by lane

// Lanes in m only; a masked load gives 0 elsewhere. The _part forms are told whether m
// is full; with k masks that changes nothing.
#define vload_mask(p, m) _mm512_maskz_loadu_ps((m), (p))
#define vstore_mask(p, m, v) _mm512_mask_storeu_ps((p), (m), (v))
#define vload_part(p, m, full) ((void)(full), vload_mask(p, m))
#define vstore_part(p, m, full, v) ((void)(full), vstore_mask(p, m, v))
#define VSTORE_MASK_FAST 1  // a masked store costs what a full one does

// Lanes of columns [VW v, VW v + VW) that are < n.
ALWAYS_INLINE KERNEL_TARGET vmask lane_mask(int64_t n, int v) {
    int64_t left = n - VW * v;
    return left >= VW ? (vmask)0xffff : left <= 0 ? 0 : (vmask)((1u << left) - 1u);
}

// 0 in the lanes where y <= 0 (a NaN y keeps v).
ALWAYS_INLINE KERNEL_TARGET vec vzero_where_le0(vec v, vec y) {
    return _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(y, vzero(), _CMP_LE_OQ), vzero());
}

// Integers, and their bits as floats.
#define iset1 _mm512_set1_epi32
#define iadd _mm512_add_epi32
#define isub _mm512_sub_epi32
#define iand _mm512_and_si512
#define ior _mm512_or_si512
#define isrli _mm512_srli_epi32
#define islli _mm512_slli_epi32
#define imullo _mm512_mullo_epi32
#define ilt(a, b) _mm512_cmplt_epi32_mask((a), (b))
#define iadd_where(x, m, y) _mm512_mask_add_epi32((x), (m), (x), (y))  // x + (m ? y : 0)
#define iload_mask(p, m) _mm512_maskz_loadu_epi32((m), (p))
#define iota() _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
#define vcvtt_i _mm512_cvttps_epi32  // float -> int32, truncated
#define vcvt_f _mm512_cvtepi32_ps    // int32 -> float
#define vbits_i _mm512_castps_si512
#define vbits_f _mm512_castsi512_ps

// base[idx[i]] for the lanes in m (0 elsewhere), and the scatter back.
#define vgather(base, idx, m) _mm512_mask_i32gather_ps(vzero(), (m), (idx), (base), 4)
#define vscatter(base, idx, m, v) _mm512_mask_i32scatter_ps((base), (m), (idx), (v), 4)

// 16×16 transpose in registers: r[i][j] -> r[j][i]. Four rounds of 16 shuffles (BLIS
// and the Intel manuals use the same network): pairs of rows, pairs of pairs (64-bit),
// then 128-bit lanes twice.
ALWAYS_INLINE KERNEL_TARGET void transpose_vw(vec r[16]) {
    vec t[16];
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
        t[c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);      // lanes 0, 2
        t[4 + c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);  // lanes 1, 3
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

#endif  // MNISTC_VEC_AVX512_H
