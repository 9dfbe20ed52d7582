// internal.h — helpers shared by the kernel files; not part of the public API.
#ifndef MNISTC_INTERNAL_H
#define MNISTC_INTERNAL_H

#include <stdint.h>

#include "mnistc.h"

#ifdef _OPENMP
#include <omp.h>
#endif

// This thread's number in the innermost parallel region (0 outside one).
static inline int mnc_thread_num(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// How many threads to use for `work` units when each thread should get at least
// `min_work`: 1 for small problems (starting a team costs about a microsecond while its
// workers spin, tens once they sleep), never more than n_threads (<= 0:
// mnc_max_threads()). Only the *count* of threads depends on this; which rows/tiles a
// result comes from never does.
static inline int mnc_team_size(int n_threads, int64_t work, int64_t min_work) {
    int t = n_threads > 0 ? n_threads : mnc_max_threads();
    int64_t useful = min_work > 0 ? work / min_work : t;
    if (useful < 1) useful = 1;
    return (int)(useful < t ? useful : t);
}

// Tests only (tests/test_gemm.py, through ctypes): caps gemm.c's packing buffer at
// `floats` (SIZE_MAX: no cap) and frees the calling thread's, so that a GEMM needing more
// takes the path of a failed allocation; returns how many calls took that path since the
// previous call. Not thread-safe.
size_t mnc_gemm_test_pack_limit(size_t floats);

// nn.c's SIMD helpers (nn_simd.h in nn_avx512.c and nn_avx2.c); call each only when
// mnc_isa_active() is its ISA. Each gives the portable loop's bits.
#if defined(__x86_64__) || defined(_M_X64)
#define MNC_NN_X86 1
// dst[j] = (float)src[j] * scale for j < d (one row of the batch gather; exact convert,
// one float32 multiply: the same bits as the portable loop).
void mnc_scale_u8_avx512(float *dst, const uint8_t *src, int64_t d, float scale);
// sum[j] = x[0][j] + x[1][j] + ... + x[m-1][j] in that order, for j < width <= 256;
// row i of x starts at x + i * ld.
void mnc_colsum_block_avx512(float *sum, const float *x, int64_t m, int64_t ld, int64_t width);
void mnc_colsum_block_avx2(float *sum, const float *x, int64_t m, int64_t ld, int64_t width);
// nn.c's softmax_xent_row on rows [0, rows) (rows <= 16 or 8, n < 2^26), the same bits.
void mnc_softmax_xent_rows_avx512(float *dz, float *row_loss, const float *z, const int32_t *labels,
                                  int64_t rows, int64_t n, float grad_scale, float smoothing);
void mnc_softmax_xent_rows_avx2(float *dz, float *row_loss, const float *z, const int32_t *labels,
                                int64_t rows, int64_t n, float grad_scale, float smoothing);
#endif

#endif  // MNISTC_INTERNAL_H
