// nn.c — the element-wise and row-wise kernels of an MLP step: bias+ReLU, ReLU
// backward, column sums with an update, fused softmax cross-entropy, in_top_k and the
// uint8 batch gather. Plain C11 that compilers vectorise; the gather, the column sums
// and the softmax hand their rows to nn_avx512.c / nn_avx2.c (nn_simd.h) on those
// targets (same bits). Contracts are in mnistc.h.
//
// exp and log are our own (nn_math.h), so the loss and gradients do not depend on the C
// library, and the file must not be built with -ffast-math: the max-subtraction and
// log-sum-exp rely on IEEE semantics.
#include <math.h>
#include <string.h>

#include "internal.h"
#include "nn_math.h"

#ifdef _OPENMP
#include <omp.h>
#endif

// Elements per thread below which a second thread costs more than it saves.
enum { MIN_ELEMENTS_PER_THREAD = 1 << 15 };
// How many shuffled rows ahead the gather asks for the next rows (see the loop): enough
// lead for a row to arrive from DRAM while the rows before it are converted. The distance
// is not critical; 2 to 8 rows do alike.
enum { GATHER_PREFETCH_ROWS = 4 };

#if defined(__GNUC__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)(p))
#endif

// Ask for every cache line of bytes [p, p + n).
static inline void prefetch_bytes(const uint8_t *p, int64_t n) {
    for (int64_t j = 0; j < n; j += 64) PREFETCH(p + j);
    if (n > 0) PREFETCH(p + n - 1);
}

void mnc_bias_relu_f32(float *y, const float *x, const float *bias, int64_t m, int64_t n,
                       int n_threads) {
    int team = mnc_team_size(n_threads, m * n, MIN_ELEMENTS_PER_THREAD);
#pragma omp parallel for num_threads(team) schedule(static) if (team > 1)
    for (int64_t i = 0; i < m; i++) {
        const float *xi = x + i * n;
        float *yi = y + i * n;
        for (int64_t j = 0; j < n; j++) {
            float v = xi[j] + bias[j];
            yi[j] = v < 0.0f ? 0.0f : v;
        }
    }
}

void mnc_relu_backward_f32(float *dx, const float *dy, const float *y, int64_t m, int64_t n,
                           int n_threads) {
    int team = mnc_team_size(n_threads, m * n, MIN_ELEMENTS_PER_THREAD);
#pragma omp parallel for num_threads(team) schedule(static) if (team > 1)
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < n; j++) {
            int64_t at = i * n + j;
            // dy is read whatever y says: a load under the condition may not be hoisted,
            // so the compiler would branch per element (mispredicted half the time)
            // instead of selecting.
            float g = dy[at];
            dx[at] = y[at] > 0.0f ? g : 0.0f;
        }
    }
}

// Column blocks are what threads split, so each column's sum runs down i in order on
// one thread whatever the thread count (and whatever the vector width: AVX-512 keeps a
// block in 16 zmm registers, AVX2 half of it in 16 ymm at a time; nn_simd.h).
enum { COLSUM_BLOCK = 256 };

void mnc_colsum_axpy_f32(float *out, const float *x, int64_t m, int64_t n, float alpha, float beta,
                         int n_threads) {
    int64_t n_blocks = (n + COLSUM_BLOCK - 1) / COLSUM_BLOCK;
    int team = mnc_team_size(n_threads, m * n, MIN_ELEMENTS_PER_THREAD);
#ifdef MNC_NN_X86
    const mnc_isa isa = mnc_isa_active();
#endif
#pragma omp parallel for num_threads(team) schedule(static) if (team > 1)
    for (int64_t blk = 0; blk < n_blocks; blk++) {
        int64_t j0 = blk * COLSUM_BLOCK;
        int64_t width = n - j0 < COLSUM_BLOCK ? n - j0 : COLSUM_BLOCK;
        float sum[COLSUM_BLOCK];
#ifdef MNC_NN_X86
        if (isa == MNC_ISA_AVX512) {
            mnc_colsum_block_avx512(sum, x + j0, m, n, width);
        } else if (isa == MNC_ISA_AVX2) {
            mnc_colsum_block_avx2(sum, x + j0, m, n, width);
        } else
#endif
        {
            memset(sum, 0, sizeof sum);
            for (int64_t i = 0; i < m; i++) {
                const float *xi = x + i * n + j0;
                for (int64_t j = 0; j < width; j++) sum[j] += xi[j];
            }
        }
        for (int64_t j = 0; j < width; j++)
            out[j0 + j] = beta == 0.0f ? alpha * sum[j] : beta * out[j0 + j] + alpha * sum[j];
    }
}

// One row of the fused softmax cross-entropy (mnistc.h gives its exact rounding); returns
// the row's loss. Each exp is computed once: dz holds exp(z - zmax) until the second pass
// scales it. dz may alias z, so z[j] is read before dz[j] is written and z[label] is kept
// aside.
static float softmax_xent_row(float *dz, const float *z, int32_t label, int64_t n,
                              float grad_scale, float smoothing) {
    float zmax = z[0], zsum = z[0];
    for (int64_t j = 1; j < n; j++) {
        zmax = z[j] > zmax ? z[j] : zmax;
        zsum += z[j];
    }
    float z_label = z[label], spread = smoothing / (float)n;
    float sum = 0.0f;
    if (dz != NULL) {
        for (int64_t j = 0; j < n; j++) {
            float e = nn_exp_nonpositive(z[j] - zmax);
            dz[j] = e;
            sum += e;
        }
    } else {
        for (int64_t j = 0; j < n; j++) sum += nn_exp_nonpositive(z[j] - zmax);
    }
    // (zmax - z_label) first: with large logits, adding zmax to the small log term
    // first would round it away.
    float target = smoothing == 0.0f ? zmax - z_label
                                     : (zmax - (1.0f - smoothing) * z_label) - spread * zsum;
    float loss = target + nn_log_ge1(sum);
    if (dz != NULL) {
        float inv = grad_scale / sum, off = grad_scale * spread;
        for (int64_t j = 0; j < n; j++) dz[j] = dz[j] * inv - off;
        dz[label] -= grad_scale * (1.0f - smoothing);
    }
    return loss;
}

int mnc_softmax_xent_f32(float *dlogits, float *row_loss, double *mean_loss, const float *logits,
                         const int32_t *labels, int64_t m, int64_t n, float grad_scale,
                         float label_smoothing, int n_threads) {
    for (int64_t i = 0; i < m; i++)
        if (labels[i] < 0 || labels[i] >= n) return (int)(-1 - i);
    int team = mnc_team_size(n_threads, m * n, MIN_ELEMENTS_PER_THREAD);
#ifdef MNC_NN_X86
    mnc_isa isa = mnc_isa_active();
    int64_t lanes = isa == MNC_ISA_AVX512 ? 16 : isa == MNC_ISA_AVX2 ? 8 : 0;
    if (lanes > 0 && n < (1 << 26)) {  // a row per SIMD lane
        int64_t blocks = (m + lanes - 1) / lanes;
#pragma omp parallel for num_threads(team) schedule(static) if (team > 1)
        for (int64_t blk = 0; blk < blocks; blk++) {
            int64_t i = blk * lanes, rows = m - i < lanes ? m - i : lanes;
            float *dz = dlogits ? dlogits + i * n : NULL;
            if (lanes == 16)
                mnc_softmax_xent_rows_avx512(dz, row_loss + i, logits + i * n, labels + i, rows, n,
                                             grad_scale, label_smoothing);
            else
                mnc_softmax_xent_rows_avx2(dz, row_loss + i, logits + i * n, labels + i, rows, n,
                                           grad_scale, label_smoothing);
        }
    } else
#endif
    {
#pragma omp parallel for num_threads(team) schedule(static) if (team > 1)
        for (int64_t i = 0; i < m; i++)
            row_loss[i] = softmax_xent_row(dlogits ? dlogits + i * n : NULL, logits + i * n,
                                           labels[i], n, grad_scale, label_smoothing);
    }
    // The mean in one fixed order, whatever the thread count.
    double total = 0.0;
    for (int64_t i = 0; i < m; i++) total += row_loss[i];
    *mean_loss = total / (double)m;
    return 0;
}

int mnc_in_top_k_f32(uint8_t *correct, int64_t *n_correct, const float *logits,
                     const int32_t *labels, int64_t m, int64_t n, int64_t k, int n_threads) {
    for (int64_t i = 0; i < m; i++)
        if (labels[i] < 0 || labels[i] >= n) return (int)(-1 - i);
    int64_t hits = 0;
    int team = mnc_team_size(n_threads, m * n, MIN_ELEMENTS_PER_THREAD);
#pragma omp parallel for num_threads(team) schedule(static) if (team > 1) reduction(+ : hits)
    for (int64_t i = 0; i < m; i++) {
        const float *z = logits + i * n;
        float target = z[labels[i]];
        int64_t greater = 0;
        for (int64_t j = 0; j < n; j++) greater += z[j] > target;
        int hit = isfinite(target) && greater < k;
        if (correct != NULL) correct[i] = (uint8_t)hit;
        hits += hit;  // an integer sum: the order cannot change it
    }
    *n_correct = hits;
    return 0;
}

void mnc_gather_scale_u8(float *x, int32_t *y, const uint8_t *images, const uint8_t *labels,
                         const int32_t *idx, int64_t m, int64_t d, float scale, int n_threads) {
    int team = mnc_team_size(n_threads, m * d, MIN_ELEMENTS_PER_THREAD);
#ifdef MNC_NN_X86
    const int avx512 = mnc_isa_active() == MNC_ISA_AVX512;
#else
    const int avx512 = 0;
#endif
#pragma omp parallel for num_threads(team) schedule(static) if (team > 1)
    for (int64_t b = 0; b < m; b++) {
        int64_t row = idx ? idx[b] : b;
        const uint8_t *src = images + row * d;
        // Shuffled rows are scattered over a data set far larger than the caches, and
        // the hardware prefetcher cannot guess the next one: fetch it a few rows ahead.
        if (idx != NULL && b + GATHER_PREFETCH_ROWS < m) {
            prefetch_bytes(images + (int64_t)idx[b + GATHER_PREFETCH_ROWS] * d, d);
        }
        float *dst = x + b * d;
#ifdef MNC_NN_X86
        if (avx512) {  // the same convert and multiply, 16 at a time
            mnc_scale_u8_avx512(dst, src, d, scale);
            if (y != NULL) y[b] = labels[row];
            continue;
        }
#endif
        (void)avx512;
        for (int64_t j = 0; j < d; j++) dst[j] = (float)src[j] * scale;
        if (y != NULL) y[b] = labels[row];
    }
}
