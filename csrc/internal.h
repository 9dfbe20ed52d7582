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

// Ask for the cache line holding p into L2 (a hint: never faults, whatever p is).
#if defined(__GNUC__)
#define MNC_PREFETCH_L2(p) __builtin_prefetch((p), 0, 2)
#else
#define MNC_PREFETCH_L2(p) ((void)(p))
#endif

// The number of threads in the innermost parallel region (1 outside one).
static inline int mnc_num_threads(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
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

// ---------------------------------------------------------------------------------
// Splitting work inside a parallel region: part `part` of `parts` of [0, n) starts here,
// on a multiple of `unit` (the last part ends at n). Which part an element falls in
// never changes how it is computed.
static inline int64_t mnc_split(int64_t n, int64_t unit, int part, int parts) {
    if (part >= parts) return n;
    int64_t units = (n + unit - 1) / unit, at = units * part / parts * unit;
    return at < n ? at : n;
}

// ---------------------------------------------------------------------------------
// The optimizers' update in parts (optim.c), for the training step's region: the float32
// scalars of one update (mnistc.h's "Scalars"), computed once, and a slice of the block,
// the same operations as mnc_optimizer_update_f32 on every element, so the same bits.
typedef struct mnc_lerp_weight {
    int small;
    float w, rest;
} mnc_lerp_weight;

typedef struct mnc_optim_step {
    mnc_optimizer_kind kind;
    int l2;     // g' = g + λ·p
    int first;  // step 1: the momentum buffer starts as g'
    float lr, weight_decay, momentum;
    mnc_lerp_weight m;  // Adam: w1 = 1 − β1
    float beta2, c2, step_size, bc2_sqrt, eps, decay;
    mnc_lerp_weight ema;  // 1 − ema_decay
} mnc_optim_step;

mnc_optim_step mnc_optim_prepare(const mnc_optimizer *opt, double lr, int64_t step,
                                 double ema_decay);
// Part `part` of `parts` of mnc_optimizer_update_f32's block, slices starting on cache
// lines of params (so no two parts write one line).
void mnc_optim_update_part(const mnc_optim_step *s, float *params, float *state0, float *state1,
                           float *ema, const float *grads, int64_t n, int part, int parts);

// ---------------------------------------------------------------------------------
// gemm.c as a plan and its parts, for a driver that runs several kernels in one parallel
// region (mlp.c); mnc_sgemm_f32 is mnc_gemm_plan_init followed by mnc_gemm_execute.

struct gemm_target;

// One GEMM's arguments and how its tiles are laid out and split (filled by
// mnc_gemm_plan_init, read by gemm.c).
typedef struct mnc_gemm_plan {
    const struct gemm_target *t;
    int trans_a, trans_b;
    int64_t m, n, k;
    float alpha, beta;
    const float *a, *b;
    int64_t lda, ldb;
    float *c;
    int64_t ldc;
    int has_ep;
    mnc_epilogue ep;
    int b_packed;    // every B panel is packed (see gemm.c), else only a partial last one
    int64_t nc;      // columns per column block
    int pack_a;      // copy each A tile to k-major form
    int64_t kb;      // deepest sub-block of a KC block with beta == 0 (0: no sub-blocks)
    int64_t slot;    // floats of packing buffer per part: B panels, A tile
    int64_t slot_b;  // the B panels' part of it
    int row_path;    // m == 1: the target's row kernel (row_t for a transposed B)
    int team;        // parts (1 <= team <= n_threads)
    int rows_first;  // parts split the rows whenever there are enough (gemm.c: C's lines)
    // B's and C's column panels (mnc_gemm_panels), or 0.
    int64_t b_panel, c_panel;
} mnc_gemm_plan;

// An untransposed B and/or a C stored in column panels (mnistc.h's MNC_PANEL): column j
// of the matrix is (j / MNC_PANEL) * panel + j % MNC_PANEL floats from its start, the
// rows of a panel MNC_PANEL apart (the plan's ldb / ldc). 0: the matrix is plain. With
// panels n is a multiple of MNC_PANEL; a B in panels is never packed (each panel is
// already what the kernel reads), a C in panels takes no epilogue, and m == 1 goes
// through the tile kernel.
typedef struct mnc_gemm_panels {
    int64_t b, c;
} mnc_gemm_panels;

// Plans C := epilogue(alpha op(A) op(B) + beta C) (mnc_sgemm_f32's contract) in at most
// n_threads parts, each of at least min_flops (2mnk; the row path a tenth of it). ep and
// layout (B's and C's panels) may be NULL; they are copied. Returns 0, or -1 when there
// is nothing to do (m or n is 0).
int mnc_gemm_plan_init(mnc_gemm_plan *g, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                       float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                       float beta, float *c, int64_t ldc, const mnc_epilogue *ep,
                       const mnc_gemm_panels *layout, int n_threads, int64_t min_flops);
// Part `part` (< g->team) of a plan, with g->slot floats of packing buffer at buf (64-byte
// aligned; NULL allowed when g->slot == 0).
void mnc_gemm_run(const mnc_gemm_plan *g, float *buf, int part);
// A whole plan on its own: its own packing buffer and parallel region (mnc_sgemm_f32).
void mnc_gemm_execute(const mnc_gemm_plan *g);
// The calling thread's packing buffer, grown to at least `floats` (64-byte aligned), or
// NULL when that cannot be had (see mnc_gemm_test_pack_limit).
float *mnc_gemm_buffer(size_t floats);
// The flops per thread below which mnc_sgemm_f32 keeps a GEMM on one thread.
#define MNC_GEMM_MIN_FLOPS_PER_THREAD 1000000
// The elements per thread below which nn.c's element-wise kernels keep to one thread: a
// second thread costs more than it saves.
#define MNC_NN_MIN_ELEMENTS_PER_THREAD (1 << 15)

// Tests only (tests/test_gemm.py, through ctypes): caps gemm.c's packing buffer at
// `floats` (SIZE_MAX: no cap) and frees the calling thread's, so that a GEMM needing more
// takes the path of a failed allocation; returns how many calls took that path since the
// previous call. Not thread-safe.
size_t mnc_gemm_test_pack_limit(size_t floats);

// nn.c's kernels on part of their work, for mlp.c's region (the public kernels are these
// on mnc_split parts). Each element is computed as the whole kernel computes it.
// mnc_gather_scale_u8 on batch rows [b0, b1).
void mnc_gather_scale_rows(float *x, int32_t *y, const uint8_t *images, const uint8_t *labels,
                           const int32_t *idx, int64_t d, float scale, int64_t b0, int64_t b1);
// mnc_softmax_xent_f32 on rows [i0, i1), labels already checked, without the mean.
void mnc_softmax_xent_rows(float *dlogits, float *row_loss, const float *logits,
                           const int32_t *labels, int64_t n, float grad_scale,
                           float label_smoothing, int64_t i0, int64_t i1);
// mnc_softmax_xent_f32's mean of the row losses.
double mnc_mean_loss(const float *row_loss, int64_t m);
// sum[j] = x[0][j] + ... + x[m-1][j] in that order, j < width <= MNC_COLSUM_BLOCK (row i
// of x at x + i * ld), on the target in use.
#define MNC_COLSUM_BLOCK 256
void mnc_colsum_block(float *sum, const float *x, int64_t m, int64_t ld, int64_t width);
// mnc_colsum_axpy_f32 on columns [j0, j1).
void mnc_colsum_axpy_columns(float *out, const float *x, int64_t m, int64_t n, float alpha,
                             float beta, int64_t j0, int64_t j1);

// nn.c's SIMD helpers (nn_simd.h in nn_avx512.c and nn_avx2.c); call each only when
// mnc_isa_active() is its ISA. Each gives the portable loop's bits.
#if defined(__x86_64__) || defined(_M_X64)
#define MNC_NN_X86 1
// dst[j] = (float)src[j] * scale for j < d (one row of the batch gather; exact convert,
// one float32 multiply: the same bits as the portable loop).
void mnc_scale_u8_avx512(float *dst, const uint8_t *src, int64_t d, float scale);
// mnc_colsum_block.
void mnc_colsum_block_avx512(float *sum, const float *x, int64_t m, int64_t ld, int64_t width);
void mnc_colsum_block_avx2(float *sum, const float *x, int64_t m, int64_t ld, int64_t width);
// nn.c's softmax_xent_row on rows [0, rows) (rows <= 16 or 8, n < 2^26), the same bits.
void mnc_softmax_xent_rows_avx512(float *dz, float *row_loss, const float *z, const int32_t *labels,
                                  int64_t rows, int64_t n, float grad_scale, float smoothing);
void mnc_softmax_xent_rows_avx2(float *dz, float *row_loss, const float *z, const int32_t *labels,
                                int64_t rows, int64_t n, float grad_scale, float smoothing);
#endif

// ---------------------------------------------------------------------------------
// The first layer's GEMMs for inputs that are mostly zeros (sparse.c, for mlp.c; AVX-512
// only, W_0 in panels or row-major): 6-row register tiles, each skipping the reduction
// steps at which all its A values are 0. fma(0, w, acc) = acc for any finite w,
// so the steps taken are the dense kernel's chains, and the results the dense GEMMs' bits
// (for finite weights, up to the sign of a zero). steps: scratch for max(m, d) + 16
// int32.
#define MNC_SPARSE_ROWS 6  // the register tile's rows
// The weight gradient's tiles of MNC_SPARSE_ROWS pixels: their lists of steps take
// mnc_sparse_dw_tiles(d) · (m + 1) int32s.
int64_t mnc_sparse_dw_tiles(int64_t d);
#ifdef MNC_NN_X86
// Whether the kernels pay for X [m, d] (row-major): its first row tile skips at least a
// sixteenth of its steps (else the dense GEMMs are faster: no step to skip, and the step
// lists cost more than they save).
int mnc_sparse_pays_avx512(const float *x, int64_t m, int64_t d, int32_t *steps);
// Z = epilogue(X W) for X [m, d] (row-major, ld d), Z's rows [0, m) and columns [0, n) of a
// W in mnistc.h's panels (panel != 0: column j at (j / MNC_PANEL) panel + j % MNC_PANEL,
// rows ldw apart) or row-major (panel == 0, rows ldw apart): the dense GEMM with beta =
// 0, alpha = 1 and the epilogue's bias and ReLU (bias NULL: none).
void mnc_sparse_forward_avx512(float *z, int64_t ldz, const float *x, int64_t m, int64_t d,
                               const float *w, int64_t ldw, int64_t panel, int64_t n,
                               const float *bias, int relu, int32_t *steps);
// The weight gradient's lists of steps for tiles [t0, t1) of X [m, d]: tile t's (the
// batch rows with a nonzero among its pixels, in increasing order) at lists + t (m + 1),
// their count first. The lists depend on X alone, so one walker may build them for all.
void mnc_sparse_dw_lists_avx512(int32_t *lists, const float *x, int64_t m, int64_t d, int64_t t0,
                                int64_t t1);
// C = alpha Xᵀ dZ + beta C (mnistc.h's alpha and beta rules) for X [m, d] and dZ [m, n]
// (rows ldz apart), C's rows [0, d) and columns [0, n), C laid out as
// mnc_sparse_forward_avx512's W, from the lists of all of X's tiles.
void mnc_sparse_dw_avx512(float *c, int64_t ldc, int64_t panel, const float *x, int64_t m,
                          int64_t d, const float *dz, int64_t ldz, int64_t n, float alpha,
                          float beta, const int32_t *lists);
#endif

#endif  // MNISTC_INTERNAL_H
