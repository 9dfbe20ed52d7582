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

// How many shuffled rows ahead the gather asks for the next rows (see the loop): enough
// lead for a row to arrive from DRAM while the rows before it are converted. The distance
// is not critical; 2 to 8 rows do alike.
enum { GATHER_PREFETCH_ROWS = 4 };

// Ask for every cache line of bytes [p, p + n), into L2: a few rows ahead are some 50
// lines in flight, more than L1 has miss buffers for (asked into L1, the later requests
// wait for free ones), and L2 serves the conversion nearly as fast.
static inline void prefetch_bytes(const uint8_t *p, int64_t n) {
    for (int64_t j = 0; j < n; j += 64) MNC_PREFETCH_L2(p + j);
    if (n > 0) MNC_PREFETCH_L2(p + n - 1);
}

// A kernel with `team` threads (a variable of that name) runs CALL on [lo, hi) = [0, total)
// when team is 1, with no parallel construct at all (even a disabled one costs about half
// a microsecond), else on the mnc_split parts of [0, total) in units of `unit`.
// clang-format off
#define SPLIT_LOOP(total, unit, CALL)                                          \
    do {                                                                       \
        if (team == 1) {                                                       \
            const int64_t lo = 0, hi = (total);                                \
            CALL;                                                              \
        } else {                                                               \
            _Pragma("omp parallel for num_threads(team) schedule(static, 1)")  \
            for (int part_ = 0; part_ < team; part_++) {                       \
                const int64_t lo = mnc_split((total), (unit), part_, team);    \
                const int64_t hi = mnc_split((total), (unit), part_ + 1, team);\
                CALL;                                                          \
            }                                                                  \
        }                                                                      \
    } while (0)
// clang-format on

static void bias_relu_rows(float *y, const float *x, const float *bias, int64_t n, int64_t i0,
                           int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
        const float *xi = x + i * n;
        float *yi = y + i * n;
        for (int64_t j = 0; j < n; j++) {
            float v = xi[j] + bias[j];
            yi[j] = v < 0.0f ? 0.0f : v;
        }
    }
}

void mnc_bias_relu_f32(float *y, const float *x, const float *bias, int64_t m, int64_t n,
                       int n_threads) {
    int team = mnc_team_size(n_threads, m * n, MNC_NN_MIN_ELEMENTS_PER_THREAD);
    SPLIT_LOOP(m, 1, bias_relu_rows(y, x, bias, n, lo, hi));
}

// Elements [lo, hi).
static void relu_backward_range(float *dx, const float *dy, const float *y, int64_t lo,
                                int64_t hi) {
    for (int64_t at = lo; at < hi; at++) {
        // dy is read whatever y says: a load under the condition may not be hoisted, so
        // the compiler would branch per element (mispredicted half the time) instead of
        // selecting.
        float g = dy[at];
        dx[at] = y[at] > 0.0f ? g : 0.0f;
    }
}

void mnc_relu_backward_f32(float *dx, const float *dy, const float *y, int64_t m, int64_t n,
                           int n_threads) {
    int team = mnc_team_size(n_threads, m * n, MNC_NN_MIN_ELEMENTS_PER_THREAD);
    SPLIT_LOOP(m * n, 16, relu_backward_range(dx, dy, y, lo, hi));
}

void mnc_colsum_block(float *sum, const float *x, int64_t m, int64_t ld, int64_t width) {
#ifdef MNC_NN_X86
    const mnc_isa isa = mnc_isa_active();
    if (isa == MNC_ISA_AVX512) {
        mnc_colsum_block_avx512(sum, x, m, ld, width);
        return;
    }
    if (isa == MNC_ISA_AVX2) {
        mnc_colsum_block_avx2(sum, x, m, ld, width);
        return;
    }
#endif
    for (int64_t j = 0; j < width; j++) sum[j] = 0.0f;
    for (int64_t i = 0; i < m; i++) {
        const float *xi = x + i * ld;
        for (int64_t j = 0; j < width; j++) sum[j] += xi[j];
    }
}

void mnc_colsum_axpy_columns(float *out, const float *x, int64_t m, int64_t n, float alpha,
                             float beta, int64_t j0, int64_t j1) {
    for (; j0 < j1; j0 += MNC_COLSUM_BLOCK) {
        int64_t width = j1 - j0 < MNC_COLSUM_BLOCK ? j1 - j0 : MNC_COLSUM_BLOCK;
        float sum[MNC_COLSUM_BLOCK];
        mnc_colsum_block(sum, x + j0, m, n, width);
        for (int64_t j = 0; j < width; j++)
            out[j0 + j] = beta == 0.0f ? alpha * sum[j] : beta * out[j0 + j] + alpha * sum[j];
    }
}

// Threads take ranges of whole vectors of columns, so each column's sum runs down i in
// order on one thread whatever the thread count (and whatever the vector width: AVX-512
// keeps a block in 16 zmm registers, AVX2 half of it in 16 ymm at a time; nn_simd.h).
void mnc_colsum_axpy_f32(float *out, const float *x, int64_t m, int64_t n, float alpha, float beta,
                         int n_threads) {
    int team = mnc_team_size(n_threads, m * n, MNC_NN_MIN_ELEMENTS_PER_THREAD);
    if (team > (n + 15) / 16) team = (int)((n + 15) / 16);
    SPLIT_LOOP(n, 16, mnc_colsum_axpy_columns(out, x, m, n, alpha, beta, lo, hi));
}
// One row of the fused softmax cross-entropy (mnistc.h gives its exact rounding); returns
// the row's loss. Each exp is computed once: dz holds exp(z - zmax) until the second pass
// scales it. dz may alias z, so z[j] is read before dz[j] is written and z[label] is kept
// aside.
static float softmax_xent_row(float *dz, const float *z, int32_t label, int64_t n, float grad_scale,
                              float smoothing) {
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
    float target =
        smoothing == 0.0f ? zmax - z_label : (zmax - (1.0f - smoothing) * z_label) - spread * zsum;
    float loss = target + nn_log_ge1(sum);
    if (dz != NULL) {
        float inv = grad_scale / sum, off = grad_scale * spread;
        for (int64_t j = 0; j < n; j++) dz[j] = dz[j] * inv - off;
        dz[label] -= grad_scale * (1.0f - smoothing);
    }
    return loss;
}

void mnc_softmax_xent_rows(float *dlogits, float *row_loss, const float *logits,
                           const int32_t *labels, int64_t n, float grad_scale,
                           float label_smoothing, int64_t i0, int64_t i1) {
#ifdef MNC_NN_X86
    const mnc_isa isa = mnc_isa_active();
    const int64_t lanes = isa == MNC_ISA_AVX512 ? 16 : isa == MNC_ISA_AVX2 ? 8 : 0;
    if (lanes > 0 && n < (1 << 26)) {  // a row per SIMD lane
        for (int64_t i = i0; i < i1; i += lanes) {
            int64_t rows = i1 - i < lanes ? i1 - i : lanes;
            float *dz = dlogits ? dlogits + i * n : NULL;
            if (lanes == 16)
                mnc_softmax_xent_rows_avx512(dz, row_loss + i, logits + i * n, labels + i, rows, n,
                                             grad_scale, label_smoothing);
            else
                mnc_softmax_xent_rows_avx2(dz, row_loss + i, logits + i * n, labels + i, rows, n,
                                           grad_scale, label_smoothing);
        }
        return;
    }
#endif
    for (int64_t i = i0; i < i1; i++)
        row_loss[i] = softmax_xent_row(dlogits ? dlogits + i * n : NULL, logits + i * n, labels[i],
                                       n, grad_scale, label_smoothing);
}

int mnc_softmax_xent_f32(float *dlogits, float *row_loss, double *mean_loss, const float *logits,
                         const int32_t *labels, int64_t m, int64_t n, float grad_scale,
                         float label_smoothing, int n_threads) {
    for (int64_t i = 0; i < m; i++)
        if (labels[i] < 0 || labels[i] >= n) return (int)(-1 - i);
    int team = mnc_team_size(n_threads, m * n, MNC_NN_MIN_ELEMENTS_PER_THREAD);
    // Parts of whole 16-row blocks: full SIMD blocks on either target.
    SPLIT_LOOP(m, 16,
               mnc_softmax_xent_rows(dlogits, row_loss, logits, labels, n, grad_scale,
                                     label_smoothing, lo, hi));
    *mean_loss = mnc_mean_loss(row_loss, m);
    return 0;
}

double mnc_mean_loss(const float *row_loss, int64_t m) {
    // The mean in one fixed order, whatever the thread count.
    double total = 0.0;
    for (int64_t i = 0; i < m; i++) total += row_loss[i];
    return total / (double)m;
}

static int64_t in_top_k_rows(uint8_t *correct, const float *logits, const int32_t *labels,
                             int64_t n, int64_t k, int64_t i0, int64_t i1) {
    int64_t hits = 0;
    for (int64_t i = i0; i < i1; i++) {
        const float *z = logits + i * n;
        float target = z[labels[i]];
        int64_t greater = 0;
        for (int64_t j = 0; j < n; j++) greater += z[j] > target;
        int hit = isfinite(target) && greater < k;
        if (correct != NULL) correct[i] = (uint8_t)hit;
        hits += hit;  // an integer sum: the order cannot change it
    }
    return hits;
}

int mnc_in_top_k_f32(uint8_t *correct, int64_t *n_correct, const float *logits,
                     const int32_t *labels, int64_t m, int64_t n, int64_t k, int n_threads) {
    for (int64_t i = 0; i < m; i++)
        if (labels[i] < 0 || labels[i] >= n) return (int)(-1 - i);
    int64_t hits = 0;
    int team = mnc_team_size(n_threads, m * n, MNC_NN_MIN_ELEMENTS_PER_THREAD);
    if (team == 1) {
        hits = in_top_k_rows(correct, logits, labels, n, k, 0, m);
    } else {
#pragma omp parallel for num_threads(team) schedule(static, 1) reduction(+ : hits)
        for (int part = 0; part < team; part++)
            hits += in_top_k_rows(correct, logits, labels, n, k, mnc_split(m, 64, part, team),
                                  mnc_split(m, 64, part + 1, team));
    }
    *n_correct = hits;
    return 0;
}

void mnc_gather_scale_rows(float *x, int32_t *y, const uint8_t *images, const uint8_t *labels,
                           const int32_t *idx, int64_t d, float scale, int64_t b0, int64_t b1) {
#ifdef MNC_NN_X86
    const int avx512 = mnc_isa_active() == MNC_ISA_AVX512;
#endif
    for (int64_t b = b0; b < b1; b++) {
        int64_t row = idx ? idx[b] : b;
        const uint8_t *src = images + row * d;
        // Shuffled rows are scattered over a data set far larger than the caches, and
        // the hardware prefetcher cannot guess the next one: fetch it a few rows ahead.
        if (idx != NULL && b + GATHER_PREFETCH_ROWS < b1)
            prefetch_bytes(images + (int64_t)idx[b + GATHER_PREFETCH_ROWS] * d, d);
        float *dst = x + b * d;
#ifdef MNC_NN_X86
        if (avx512) {  // the same convert and multiply, 16 at a time
            mnc_scale_u8_avx512(dst, src, d, scale);
            if (y != NULL) y[b] = labels[row];
            continue;
        }
#endif
        for (int64_t j = 0; j < d; j++) dst[j] = (float)src[j] * scale;
        if (y != NULL) y[b] = labels[row];
    }
}

void mnc_gather_scale_u8(float *x, int32_t *y, const uint8_t *images, const uint8_t *labels,
                         const int32_t *idx, int64_t m, int64_t d, float scale, int n_threads) {
    int team = mnc_team_size(n_threads, m * d, MNC_NN_MIN_ELEMENTS_PER_THREAD);
    SPLIT_LOOP(m, 1, mnc_gather_scale_rows(x, y, images, labels, idx, d, scale, lo, hi));
}
