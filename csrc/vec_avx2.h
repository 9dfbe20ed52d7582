// vec_avx2.h — the vector operations of the width-generic kernels (gemm_kernel_simd.h,
// nn_simd.h) on AVX2: 8 floats per ymm. A lane mask is a vector whose sign bits select
// lanes (vmaskmov's form, also a compare's result); a partial access is vmaskmov and a
// full one a plain load or store, since vmaskmov stores are slow on AMD. vec_avx512.h is
// the same list on AVX-512. The including file defines KERNEL_TARGET (its functions'
// target attribute) and ALWAYS_INLINE first; only functions compiled for AVX2 may use
// these (and vfmadd only those compiled for FMA too).
#ifndef MNISTC_VEC_AVX2_H
#define MNISTC_VEC_AVX2_H

#include <immintrin.h>
#include <stdint.h>

#define VW 8  // floats per vector

typedef __m256 vec;
typedef __m256i veci;   // VW int32 lanes
typedef __m256i vmask;  // a lane mask: lane i is in when its sign bit is set

// Floats.
#define vzero _mm256_setzero_ps
#define vset1 _mm256_set1_ps
#define vbcast _mm256_broadcast_ss  // one float from memory in every lane
#define vloadu _mm256_loadu_ps
#define vstoreu _mm256_storeu_ps
#define vfmadd _mm256_fmadd_ps
#define vmul _mm256_mul_ps
#define vadd _mm256_add_ps
#define vsub _mm256_sub_ps
#define vdiv _mm256_div_ps
#define vmax _mm256_max_ps
#define vcmp(a, b, predicate) _mm256_castps_si256(_mm256_cmp_ps((a), (b), (predicate)))
#define vselect(m, a, b) _mm256_blendv_ps((b), (a), _mm256_castsi256_ps(m))  // m ? a : b

// Lanes in m only; a masked load gives 0 elsewhere. The _part forms are told whether m
// is full, and then make a plain access.
#define vload_mask _mm256_maskload_ps
#define vstore_mask _mm256_maskstore_ps
#define vload_part(p, m, full) ((full) ? _mm256_loadu_ps(p) : _mm256_maskload_ps((p), (m)))
#define VSTORE_MASK_FAST 0  // vmaskmov stores are slow on AMD

ALWAYS_INLINE KERNEL_TARGET void vstore_part(float *p, vmask m, int full, vec v) {
    if (full) _mm256_storeu_ps(p, v);
    else _mm256_maskstore_ps(p, m, v);
}

// Lanes of columns [VW v, VW v + VW) that are < n (n within int32).
ALWAYS_INLINE KERNEL_TARGET vmask lane_mask(int64_t n, int v) {
    vmask lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - VW * v)), lane);
}

// 0 in the lanes where y <= 0 (a NaN y keeps v).
ALWAYS_INLINE KERNEL_TARGET vec vzero_where_le0(vec v, vec y) {
    return _mm256_andnot_ps(_mm256_cmp_ps(y, vzero(), _CMP_LE_OQ), v);
}

// Integers, and their bits as floats.
#define iset1 _mm256_set1_epi32
#define iadd _mm256_add_epi32
#define isub _mm256_sub_epi32
#define iand _mm256_and_si256
#define ior _mm256_or_si256
#define isrli _mm256_srli_epi32
#define islli _mm256_slli_epi32
#define imullo _mm256_mullo_epi32
#define ilt(a, b) _mm256_cmpgt_epi32((b), (a))
#define iadd_where(x, m, y) _mm256_add_epi32((x), _mm256_and_si256((m), (y)))  // x + (m ? y : 0)
#define iload_mask(p, m) _mm256_maskload_epi32((const int *)(p), (m))
#define iota() _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
#define vcvtt_i _mm256_cvttps_epi32  // float -> int32, truncated
#define vcvt_f _mm256_cvtepi32_ps    // int32 -> float
#define vbits_i _mm256_castps_si256
#define vbits_f _mm256_castsi256_ps

// base[idx[i]] for the lanes in m (0 elsewhere), and the way back, which AVX2 has no
// instruction for: lane by lane (the lanes in m are the first ones).
#define vgather(base, idx, m) \
    _mm256_mask_i32gather_ps(vzero(), (base), (idx), _mm256_castsi256_ps(m), 4)

ALWAYS_INLINE KERNEL_TARGET void vscatter(float *base, veci idx, vmask m, vec v) {
    float lanes[VW];
    int32_t at[VW];
    _mm256_storeu_ps(lanes, v);
    _mm256_storeu_si256((__m256i *)at, idx);
    int live = _mm256_movemask_ps(_mm256_castsi256_ps(m));
    for (int i = 0; live >> i & 1; i++) base[at[i]] = lanes[i];
}

// 8×8 transpose in registers: r[i][j] -> r[j][i].
ALWAYS_INLINE KERNEL_TARGET void transpose_vw(vec r[8]) {
    vec t[8], s[8];
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

#endif  // MNISTC_VEC_AVX2_H
