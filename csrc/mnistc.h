// mnistc.h — the whole C API of mnistc's kernels: one declaration and one contract per
// kernel. This header is the contract; the .c files implement it and the Cython layer
// (mnistc/_kernels.pyx) checks arguments before calling in. It is not a general BLAS.
//
// Conventions, said once for every kernel:
//  - float32, row-major. An array argument's shape is in the comment beside it; "ld" is
//    the distance in elements between consecutive rows (ld >= the row length).
//  - Outputs come first, then inputs, then sizes, then n_threads.
//  - Backward kernels OVERWRITE their outputs; nothing accumulates unless the contract
//    says so (the GEMM with beta != 0, mnc_colsum_axpy_f32).
//  - Kernels do not allocate on their hot path and never call back into Python.
//  - n_threads <= 0 means "mnc_max_threads()". Work is split over output rows/tiles and
//    never over a reduction, with block sizes that do not depend on n_threads, so every
//    result is bit-identical for any thread count. Small problems run on one thread.
//  - Arguments are assumed valid (checked by the caller); kernels that take labels
//    return an error code instead of reading out of bounds.
#ifndef MNISTC_H
#define MNISTC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------------
// CPU targets and threads (cpu.c)

typedef enum mnc_isa {
    MNC_ISA_GENERIC = 0,  // portable C the compiler vectorises for the baseline ISA
    MNC_ISA_AVX2 = 1,     // AVX2 + FMA
    MNC_ISA_AVX512 = 2,   // AVX-512 F/BW/DQ/VL (with OS support for zmm state)
} mnc_isa;
#define MNC_ISA_COUNT 3

// The best target this CPU and OS support (CPUID + XGETBV), independent of overrides.
mnc_isa mnc_isa_supported(void);
// The target in use. Chosen once, on first use, as the best supported target capped by
// the MNISTC_ISA environment variable: a target's name (unset or empty: no cap).
// MNISTC_ISA is read once, here and nowhere else. A value that names no target caps
// nothing and is reported by mnc_isa_env_invalid; the Python bindings then refuse to run
// any kernel or report the target (ValueError naming the value and the valid names).
mnc_isa mnc_isa_active(void);
// The value of MNISTC_ISA when it names no target (a copy, at most 127 bytes), else NULL.
const char *mnc_isa_env_invalid(void);
// Caps the target in use at `isa` (the effective target is min(isa, supported)).
// Returns the target now in use. Not thread-safe against running kernels.
mnc_isa mnc_isa_set(mnc_isa isa);
// "generic", "avx2" or "avx512": the names MNISTC_ISA takes, in the order of mnc_isa.
const char *mnc_isa_name(mnc_isa isa);
// The target whose name is `name`, or -1 when there is none.
int mnc_isa_from_name(const char *name);
// 1 when built with OpenMP, else 0 (every kernel then runs on one thread).
int mnc_openmp_enabled(void);
// The thread count used for n_threads <= 0: omp_get_max_threads() (1 without OpenMP).
int mnc_max_threads(void);

// The yardstick (peak.c): this machine's FP32 multiply-add peak in GFLOP/s on the
// active target's widest vectors (2 flops per lane per FMA; the generic target: a
// multiply and an add on 4-float vectors), n_threads threads (<= 0: mnc_max_threads())
// running independent chains with no memory traffic, together, in windows of ~0.5 ms for
// at least `seconds` (> 0): the best window's rate. bench/ states speeds as a fraction of
// it, measured in the same run.
double mnc_fma_peak_gflops(int n_threads, double seconds);

// ---------------------------------------------------------------------------------
// SGEMM (gemm.c + gemm_kernel_<isa>.c)
//
//   C := epilogue(alpha * op(A) * op(B) + beta * C)
//
// op(A) is m×k, op(B) is k×n, C is m×n, all row-major with leading dimensions lda, ldb,
// ldc. trans_a != 0 means A is stored k×m (op(A) = Aᵀ), likewise trans_b: transposes are
// handled by how panels are read, never materialised.
//
// Rounding, exactly: each C element is accumulated in float32 by fused multiply-adds in
// increasing k, starting from 0 — acc = fma(a[i,p], b[p,j], acc) for p = 0..k-1. Then
//   beta == 0:  C = alpha * acc            (C is not read, so it may hold NaN/garbage)
//   beta != 0:  C = fma(alpha, acc, beta * C)
// When k > MNC_GEMM_KC the reduction is cut into consecutive blocks of MNC_GEMM_KC
// (the last may be shorter); each block's chain starts from 0 and is folded in as
// above, the first block with the caller's beta and the later ones with beta = 1.
// The same sequence of roundings is used on every thread count and on the AVX2 and
// AVX-512 targets, so those give identical bits. The generic target without hardware
// FMA rounds the product separately and may differ in the last bits (documented).
//
// The epilogue (NULL for none) is applied to each final element, in this order:
//   bias:      C[i,j] += bias[j]                               bias: [n]
//   relu:      C[i,j] = 0 where C[i,j] < 0
//   relu_mask: C[i,j] = 0 where mask[i*ld_mask + j] <= 0       mask: [m, ld_mask]
// (relu_mask is ReLU backward: mask is the layer's ReLU output.) Both let NaN through,
// so a diverging run shows up as a NaN loss instead of being silently clamped.
#define MNC_GEMM_KC 1024  // the same on every target: part of the rounding contract

typedef struct mnc_epilogue {
    const float *bias;       // [n] or NULL
    int relu;                // nonzero: clamp at 0 after the bias
    const float *relu_mask;  // [m, ld_mask] or NULL
    int64_t ld_mask;
} mnc_epilogue;

void mnc_sgemm_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                   const float *a, int64_t lda,        // [m, k] or, with trans_a, [k, m]
                   const float *b, int64_t ldb,        // [k, n] or, with trans_b, [n, k]
                   float beta, float *c, int64_t ldc,  // [m, n]
                   const mnc_epilogue *epilogue, int n_threads);

// ---------------------------------------------------------------------------------
// Neural-network kernels (nn.c)

// y = x + bias, then 0 where negative (NaN stays NaN).  y, x: [m, n] (ld = n); bias: [n]
// y may alias x.
void mnc_bias_relu_f32(float *y, const float *x, const float *bias, int64_t m, int64_t n,
                       int n_threads);

// ReLU backward: dx = dy where y > 0, else 0. dx, dy, y: [m, n] (ld = n).
// dx may alias dy.
void mnc_relu_backward_f32(float *dx, const float *dy, const float *y, int64_t m, int64_t n,
                           int n_threads);

// Column sums, fused with an update: out[j] = beta * out[j] + alpha * sum_i x[i, j].
// Each column is summed in increasing i in float32 (a fixed order). With beta = 0, out
// is not read. x: [m, n] (ld = n); out: [n]. Used for bias gradients (alpha = 1, beta =
// 0) and the fused SGD bias update (alpha = -lr, beta = 1).
void mnc_colsum_axpy_f32(float *out, const float *x, int64_t m, int64_t n, float alpha, float beta,
                         int n_threads);

// Sparse softmax cross-entropy, forward and backward in one pass, numerically stable
// (log-sum-exp around the row maximum; finite whenever max_j z_j - z_label fits in
// float32, and +inf beyond, never NaN for finite logits), with optional label smoothing
// ε = label_smoothing in [0, 1): the target of row i is q_j = (1 - ε)·[j == labels[i]] +
// ε/n (torch's label_smoothing), so
//   row_loss[i] = logsumexp(z) - Σ_j q_j z_j                 z = logits[i, :]     [m]
//   dlogits[i, j] = grad_scale * (softmax(z)[j] - q_j)                             [m, n]
// With z_max = max_j z_j, s = Σ_j exp(z_j - z_max) and Z = Σ_j z_j (each in increasing j,
// in float32), the rounding is exactly:
//   ε == 0:  row_loss = (z_max - z_label) + log(s)
//   ε > 0:   row_loss = ((z_max - (1 - ε)·z_label) - (ε / n)·Z) + log(s)  (finite while Z is)
//   dlogits[i, j] = exp(z_j - z_max)·(grad_scale / s) - grad_scale·(ε / n), and then
//   dlogits[i, label] -= grad_scale·(1 - ε)          (ε / n, 1 - ε and the products: float32)
// dlogits may be NULL (forward only) and may alias logits. grad_scale is 1/m for the
// gradient of the mean loss. *mean_loss = (sum of row_loss in increasing i, in double)
// / m. exp and log are mnistc's own (nn_math.h), so results do not depend on the C
// library. Returns 0, or -1 - i for the first row i whose label is outside [0, n) (then
// nothing is written).
int mnc_softmax_xent_f32(float *dlogits, float *row_loss, double *mean_loss, const float *logits,
                         const int32_t *labels, int64_t m, int64_t n, float grad_scale,
                         float label_smoothing, int n_threads);

// in_top_k with TensorFlow's tie rule: row i is a hit when fewer than k logits are
// strictly greater than logits[i, labels[i]] and that logit is finite. Ties therefore
// count as hits (all-equal logits: every row is a hit). correct: [m] (0/1) or NULL.
// *n_correct = number of hits. Returns 0, or -1 - i for the first bad label.
int mnc_in_top_k_f32(uint8_t *correct, int64_t *n_correct, const float *logits,
                     const int32_t *labels, int64_t m, int64_t n, int64_t k, int n_threads);

// Gathers a batch from a uint8 data set and scales it: x[b, :] = images[idx[b], :] *
// scale (float32 multiply, as TensorFlow's astype(float32) * (1/255)), y[b] =
// labels[idx[b]]. idx == NULL means rows 0..m-1. x: [m, d]; y: [m] or NULL (skipped);
// images: [*, d]; labels: [*]; idx: [m], each in range (checked by the caller).
void mnc_gather_scale_u8(float *x, int32_t *y, const uint8_t *images, const uint8_t *labels,
                         const int32_t *idx, int64_t m, int64_t d, float scale, int n_threads);

// ---------------------------------------------------------------------------------
// Optimizers (optim.c)
//
// One update of n float32 parameters p from their gradients g and the optimizer's state,
// with torch.optim's formulas (torch 2.x, the single-tensor CPU path of SGD, Adam and
// AdamW; dampening 0, no maximize, no amsgrad), operation for operation, so that runs can
// be compared with PyTorch's. t = step >= 1 is the number of this update (torch's state
// "step" after its increment); η = lr, λ = weight_decay, μ = momentum.
//
// Scalars. The settings and lr are doubles, as torch's Python floats are; every scalar
// below is computed from them in double and then rounded once to float32 (as torch's
// tensor ops round a Python scalar): η, λ, μ, ε, β2 themselves, and
//   w1 = 1 − β1,  c2 = 1 − β2,  s = η / (1 − β1^t),  r = (1 − β2^t)^0.5,  d = 1 − η·λ
// (^ is C's pow, as Python's float **).
//
// Elementwise, in float32, each operation rounded separately (no FMA contraction: the
// build has -ffp-contract=off), in exactly this order:
//   SGD          g' = g + λ·p                              (only when λ != 0)
//                p  = p − η·g'
//   momentum     g' as SGD;  b = g' on step 1, else b = μ·b + g';  p = p − η·b
//   nesterov     g' and b as momentum;  p = p − η·(g' + μ·b)
//   Adam         g' = g + λ·p (only when λ != 0: L2, on the gradient)
//   AdamW        p  = d·p     (decoupled; d = 1 when λ = 0, and p·1 = p exactly)
//   both         m  = m + w1·(g' − m)         when w1 < 0.5  (torch's lerp(m, g', w1))
//                m  = g' − (1 − w1)·(g' − m)  otherwise      (1 − w1 in float32)
//                v  = β2·v + (c2·g')·g'
//                p  = p − (s·m) / (sqrt(v) / r + ε)
// Only IEEE-754 add, subtract, multiply, divide and square root occur, each correctly
// rounded on every target, so the generic, AVX2 and AVX-512 paths give the same bits (and
// so does any split of the block: any thread count). torch's own CPU kernels round
// differently (its add-with-alpha and lerp are FMAs on the vectorised path, and its sqrt
// goes through MKL and is not always correctly rounded), so mnistc agrees with torch to
// float32 rounding, not bit for bit.
//
// Optionally, in the same pass, an exponential moving average of the updated parameters,
// torch.optim.swa_utils' EMA: e = lerp(e, p, 1 − ema_decay) by the same lerp rule as m.

typedef enum mnc_optimizer_kind {
    MNC_OPT_SGD = 0,       // state: none
    MNC_OPT_MOMENTUM = 1,  // state0 = the momentum buffer b
    MNC_OPT_NESTEROV = 2,  // state0 = b
    MNC_OPT_ADAM = 3,      // state0 = exp_avg m, state1 = exp_avg_sq v
    MNC_OPT_ADAMW = 4,     // as Adam
} mnc_optimizer_kind;

// The settings, as the caller validated them: 0 <= μ < 1, 0 <= β1, β2 < 1, ε > 0,
// λ >= 0, all finite; lr finite and >= 0; 0 <= ema_decay <= 1.
typedef struct mnc_optimizer {
    mnc_optimizer_kind kind;
    double momentum;      // μ: momentum, nesterov
    double beta1, beta2;  // Adam, AdamW
    double eps;           // ε: Adam, AdamW
    double weight_decay;  // λ
} mnc_optimizer;

// One update of params[0, n) in place from grads[0, n), with the state arrays the kind
// needs (the others may be NULL) and, when ema is not NULL, the EMA ema[0, n) of the
// updated parameters. No two of the arrays may overlap. Threads take contiguous slices
// whose boundaries fall on cache lines of params.
void mnc_optimizer_update_f32(const mnc_optimizer *opt, float *params, float *state0, float *state1,
                              float *ema, const float *grads, int64_t n, double lr, int64_t step,
                              double ema_decay, int n_threads);

// ---------------------------------------------------------------------------------
// The multi-layer perceptron (mlp.c): a whole training step or an evaluation pass in
// one call, driving the kernels above. Layer l (0-based) maps sizes[l] -> sizes[l+1] with
// weights [sizes[l], sizes[l+1]] and biases [sizes[l+1]], ReLU on every layer but the
// last, whose outputs are the logits.
//
// The first layer's weights may be stored in column panels (first_in_panels): columns
// [MNC_PANEL q, MNC_PANEL (q + 1)) of W_0 (the last panel: the rest) as a row-major
// [sizes[0], width] matrix, the panels one after another, sizes[0] * sizes[1] floats in
// all. The same products in the same order, so the same bits; but each panel is a B the
// forward GEMM reads in place (32 columns: the AVX-512 kernel's packed form) and a C of
// its own for the weight gradient, and a team splits the layer by whole panels, so no
// cache line of W_0 is written on one core and read on another (see mlp.c).
#define MNC_PANEL 32
//
// On the AVX-512 target the first layer's two GEMMs (forward and weight gradient) skip
// the reduction steps at which all the inputs of a 6-row register tile are 0 (a pixel
// blank in six images, or six pixels blank in one image: 56% and 66% of the steps on
// MNIST), when the batch's first tile skips at least a sixteenth of its steps. A skipped
// step is fma(0, w, acc) = acc on every accumulator, so the results are mnc_sgemm_f32's
// bits, as the AVX2 target's dense GEMMs give them, for finite weights (a weight that is
// inf or NaN meets the 0 as NaN only where the step is taken) up to the sign of a zero.

typedef struct mnc_mlp {
    int n_layers;           // >= 1
    const int64_t *sizes;   // [n_layers + 1]: sizes[0] = inputs, sizes[n_layers] = classes
    float *const *weights;  // [n_layers] pointers, weights[l]: [sizes[l], sizes[l+1]]
    float *const *biases;   // [n_layers] pointers, biases[l]: [sizes[l+1]]
    int first_in_panels;    // nonzero: weights[0] holds W_0 in column panels (above)
} mnc_mlp;

// Scratch for a batch of up to `batch` rows (allocated by the caller, once).
typedef struct mnc_mlp_buffers {
    int64_t batch;
    float *input;               // [batch, sizes[0]]
    int32_t *labels;            // [batch]
    float *const *activations;  // [n_layers]: activations[l]: [batch, sizes[l+1]]
                                // (post-ReLU for hidden layers, logits for the last)
    float *const *grads;        // [n_layers]: grads[l]: [batch, sizes[l+1]] = dLoss/dZ_l
    float *row_loss;            // [batch]
} mnc_mlp_buffers;

// The optimizer of a training step that stores its gradients (see mnc_mlp_train_step).
typedef struct mnc_mlp_optimizer {
    mnc_optimizer settings;
    int64_t n;               // parameters in the block
    float *params;           // [n]: the net's weights[l] and biases[l] tile this block
    float *grads;            // [n]: the step's gradients, at the parameters' offsets
    float *state0, *state1;  // [n] or NULL, as mnc_optimizer_update_f32 needs
} mnc_mlp_optimizer;

// One training step on the batch idx[0..m-1] (m <= buf->batch) of a uint8 data set:
// gather + scale, forward, mean sparse softmax cross-entropy (with label_smoothing, see
// mnc_softmax_xent_f32), backward (each layer's
// input gradient from its weights before the update), and the update:
//  - opt == NULL: plain SGD fused into the backward pass: W -= η·XᵀdZ is the weight-
//    gradient GEMM (alpha = −η, beta = 1) and b -= η·colsum(dZ) is mnc_colsum_axpy_f32
//    (alpha = −η, beta = 1), η = (float)lr; no gradient is stored.
//  - otherwise dW = XᵀdZ (GEMM, alpha = 1, beta = 0) and db = colsum(dZ) are written into
//    opt->grads at the offsets of W and b in opt->params, and then the whole block is
//    updated by one mnc_optimizer_update_f32(opt->settings, ..., lr, step).
// *loss = the batch's mean loss before the update. Returns 0, or -1 - b for the first
// batch row whose label is out of range (then the parameters and state are unchanged).
int mnc_mlp_train_step(const mnc_mlp *net, const mnc_mlp_buffers *buf, const uint8_t *images,
                       const uint8_t *labels, const int32_t *idx, int64_t m, int64_t image_size,
                       float scale, float label_smoothing, const mnc_mlp_optimizer *opt, double lr,
                       int64_t step, double *loss, int n_threads);

// Forward pass over rows [0, m) of a uint8 data set, counting in_top_k(k) hits; when
// logits_out is not NULL the logits ([m, classes]) are written there. Returns 0 or
// -1 - row for the first label out of range (checked before any work). The rows go in
// chunks: of buf->batch rows on buf when m <= buf->batch, else of a few hundred on
// scratch malloc'd here (buf->batch rows on buf if that fails); with several threads and
// chunks, threads take whole chunks, each on its own scratch (fewer threads if memory is
// short). A row's logits are the same bits for any chunk size and thread count.
int mnc_mlp_evaluate(const mnc_mlp *net, const mnc_mlp_buffers *buf, const uint8_t *images,
                     const uint8_t *labels, int64_t m, int64_t image_size, float scale, int64_t k,
                     int64_t *n_correct, float *logits_out, int n_threads);

#ifdef __cplusplus
}
#endif
#endif  // MNISTC_H
