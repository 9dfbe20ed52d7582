// gemm.c — PLACEHOLDER SGEMM (correct per mnistc.h, not fast). Being replaced by the
// packed, blocked, dispatched driver; kept only so the package builds meanwhile.
#include <math.h>

#include "mnistc.h"

static float at(const float *x, int64_t ld, int trans, int64_t r, int64_t c) {
    return trans ? x[c * ld + r] : x[r * ld + c];
}

void mnc_sgemm_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                   float alpha, const float *a, int64_t lda, const float *b,
                   int64_t ldb, float beta, float *c, int64_t ldc,
                   const mnc_epilogue *ep, int n_threads) {
    (void)n_threads;
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < n; j++) {
            float acc = 0.0f;
            for (int64_t p = 0; p < k; p++)
                acc = fmaf(at(a, lda, trans_a, i, p), at(b, ldb, trans_b, p, j), acc);
            float v = beta == 0.0f ? alpha * acc : fmaf(alpha, acc, beta * c[i * ldc + j]);
            if (ep) {
                if (ep->bias) v += ep->bias[j];
                if (ep->relu && v < 0.0f) v = 0.0f;  // NaN stays NaN
                if (ep->relu_mask && ep->relu_mask[i * ep->ld_mask + j] <= 0.0f) v = 0.0f;
            }
            c[i * ldc + j] = v;
        }
    }
}
