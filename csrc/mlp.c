// mlp.c — a whole training step (and an evaluation pass) of the multi-layer perceptron
// in one call, so Python crosses into C once per step. It only sequences the kernels of
// gemm.c, nn.c and optim.c; the arithmetic and its rounding rules live there (mnistc.h).
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"

static int in_panels(const mnc_mlp *net, int l) { return l == 0 && net->first_in_panels; }

// Columns [j0, j1) of layer l as its GEMMs take them, [cuts[0], cuts[1]) then
// [cuts[1], cuts[2]) (either may be empty): for a layer in panels its full panels, with B
// (or C) in panels, then a partial last panel as a plain row-major matrix of its own;
// else all of them in the first.
static void column_cuts(const mnc_mlp *net, int l, int64_t j0, int64_t j1, int64_t cuts[3]) {
    cuts[0] = j0, cuts[2] = j1;
    cuts[1] = in_panels(net, l) ? j0 + (j1 - j0) / MNC_PANEL * MNC_PANEL : j1;
}

// The GEMMs' B and C layouts for columns [j0, j1) of layer l: its weights' columns start
// at *w_offset, with rows *ld apart, in panels when *panel is nonzero.
static void weight_columns(const mnc_mlp *net, int l, int64_t j0, int64_t j1, int64_t *w_offset,
                           int64_t *ld, int64_t *panel) {
    int64_t k = net->sizes[l], n = net->sizes[l + 1];
    if (!in_panels(net, l)) {
        *w_offset = j0, *ld = n, *panel = 0;
        return;
    }
    int full = (j1 - j0) % MNC_PANEL == 0;
    *w_offset = j0 * k, *ld = full ? MNC_PANEL : j1 - j0, *panel = full ? k * MNC_PANEL : 0;
}

// Where layer l's weight gradient goes, and its GEMM's alpha and beta: with plain SGD
// (opt NULL) into W_l itself, W_l -= lr·(it) (alpha = −lr, beta = 1); else into
// opt->grads at W_l's offset (alpha = 1, beta = 0).
static float *dw_output(const mnc_mlp *net, int l, const mnc_mlp_optimizer *opt, float lr,
                        float *alpha, float *beta) {
    if (opt == NULL) {
        *alpha = -lr, *beta = 1.0f;
        return net->weights[l];
    }
    *alpha = 1.0f, *beta = 0.0f;
    return opt->grads + (net->weights[l] - opt->params);
}

// Int32s of scratch for layer 0's zero-skipping kernels on m rows (internal.h), or 0
// where the target has none and layer 0 goes through the dense GEMMs.
static int64_t skip_scratch(const mnc_mlp *net, int64_t m) {
#ifdef MNC_NN_X86
    int64_t d = net->sizes[0];
    if (mnc_isa_active() == MNC_ISA_AVX512) return ((d > m ? d : m) + 16 + 15) / 16 * 16;
#endif
    (void)net, (void)m;
    return 0;
}

// The zero-skipping kernels' scratch `steps` when they pay for rows [0, m) gathered at x
// (every walker, looking at the same rows, finds the same), else NULL: the dense GEMMs.
static int32_t *skip_steps(int32_t *steps, const float *x, int64_t m, int64_t d) {
#ifdef MNC_NN_X86
    if (steps != NULL && mnc_sparse_pays_avx512(x, m, d, steps)) return steps;
#endif
    (void)steps, (void)x, (void)m, (void)d;
    return NULL;
}

// Layer 0's forward (dw = 0, with steps: scratch) or weight gradient (dw = 1, with the
// lists of steps of all of x's tiles) of columns [j0, j1) by the zero-skipping kernels,
// for rows [0, m) gathered at x: the dense GEMMs' bits. The weight
// gradient goes, as plan_dw's, into W_0 (alpha = −lr, beta = 1: plain SGD) or into its
// gradient (opt).
static void skip_layer(const mnc_mlp *net, const mnc_mlp_buffers *buf, const float *x,
                       int32_t *steps, const int32_t *lists, int64_t m, int dw,
                       const mnc_mlp_optimizer *opt, float lr, int64_t j0, int64_t j1) {
#ifdef MNC_NN_X86
    int64_t k = net->sizes[0], n = net->sizes[1];
    int64_t cuts[3];
    column_cuts(net, 0, j0, j1, cuts);
    for (int part = 0; part < 2; part++) {
        int64_t c0 = cuts[part], c1 = cuts[part + 1], offset, ld, panel;
        if (c0 == c1) continue;
        weight_columns(net, 0, c0, c1, &offset, &ld, &panel);
        if (!dw) {
            mnc_sparse_forward_avx512(buf->activations[0] + c0, n, x, m, k,
                                      net->weights[0] + offset, ld, panel, c1 - c0,
                                      net->biases[0] + c0, net->n_layers > 1, steps);
        } else {
            float alpha, beta, *c = dw_output(net, 0, opt, lr, &alpha, &beta);
            mnc_sparse_dw_avx512(c + offset, ld, panel, x, m, k, buf->grads[0] + c0, n, c1 - c0,
                                 alpha, beta, lists);
        }
    }
#else
    (void)net, (void)buf, (void)x, (void)steps, (void)lists, (void)m, (void)dw, (void)opt, (void)lr,
        (void)j0, (void)j1;
#endif
}

// Forward pass of rows [0, m) already gathered into buf->input, layer 0 by the
// zero-skipping kernel when steps (its scratch) is not NULL; logits end up in
// buf->activations[n_layers - 1].
static void forward(const mnc_mlp *net, const mnc_mlp_buffers *buf, int32_t *steps, int64_t m,
                    int n_threads) {
    const float *x = buf->input;
    for (int l = 0; l < net->n_layers; l++) {
        if (l == 0 && steps != NULL) {
            skip_layer(net, buf, x, steps, NULL, m, 0, NULL, 0.0f, 0, net->sizes[1]);
            x = buf->activations[0];
            continue;
        }
        int64_t k = net->sizes[l], n = net->sizes[l + 1];
        int64_t cuts[3];
        column_cuts(net, l, 0, n, cuts);
        for (int part = 0; part < 2; part++) {
            int64_t j0 = cuts[part], j1 = cuts[part + 1], offset, ld, panel;
            if (j0 == j1) continue;
            weight_columns(net, l, j0, j1, &offset, &ld, &panel);
            // Bias and ReLU ride in the GEMM's epilogue: no second pass over the activations.
            mnc_epilogue ep = {net->biases[l] + j0, l + 1 < net->n_layers, NULL, 0};
            mnc_gemm_panels panels = {panel, 0};
            mnc_gemm_plan g;
            if (mnc_gemm_plan_init(&g, 0, 0, m, j1 - j0, k, 1.0f, x, k, net->weights[l] + offset,
                                   ld, 0.0f, buf->activations[l] + j0, n, &ep, &panels, n_threads,
                                   MNC_GEMM_MIN_FLOPS_PER_THREAD) == 0)
                mnc_gemm_execute(&g);
        }
        x = buf->activations[l];
    }
}

// ---------------------------------------------------------------------------------
// The training step. Every thread of one parallel region (or one thread, without a
// region) walks the same list of phases, doing its parts of each kernel and meeting the
// others at a barrier where a phase needs what the one before it wrote:
//   gather | forward 0 | ... | forward L-1 | softmax |
//   dx L-1, db L-1 | dw L-1, dx L-2, db L-2 | ... | dw 1, db 0, dw 0 [| update]
// dW_l runs a phase after dX_l because with plain SGD it updates W_l in place, which dX_l
// must read first. A kernel's parts are the splits of gemm.c and nn.c, which never change
// how an element is computed, so the step's bits do not depend on the thread count.
// Phases of small kernels run on walker 0 alone (solo_work says when), with no barrier
// between two such phases.
//
// A layer in panels (mnistc.h) has its forward and dW GEMMs split here instead, by whole
// panels, the same ones on the same walker, so each walker reads and writes only its own
// contiguous panels. gemm.c's own splits of a row-major W_l would give a walker all of it
// in the forward GEMM (by batch rows) or pieces of every row; either way half of the
// lines the previous dW wrote on one core are next read, or written, on the other, and
// each such line stalls the kernel while it crosses between the cores' caches (the
// hardware prefetchers also fetch the neighbours' lines of a shared page).

// Work per part inside the region: a part costs a barrier (a fraction of a microsecond
// while the team spins), not a team start, so far less than the kernels ask of a thread
// on their own.
enum { REGION_MIN_FLOPS = 200000, REGION_MIN_ELEMENTS = 8192 };

// ... except that a phase whose kernels would each get one thread on their own (alone,
// see solo_work) runs whole on walker 0, and a run of such phases without barriers
// between them: the small layers' operands are a few KB written by the phase before,
// and split over two cores each part spends longer fetching the other core's lines than
// computing, while one walker finds them in its own cache.

typedef struct step_ctx {
    const mnc_mlp *net;
    const mnc_mlp_buffers *buf;
    const uint8_t *images, *labels;
    const int32_t *idx;
    int64_t m, image_size;
    float scale, lr, label_smoothing;
    const mnc_mlp_optimizer *opt;  // NULL: fused SGD
    mnc_optim_step os;
    int threads;  // the walkers
    // threads × slot floats of scratch, or NULL; a walker's slot holds pack_slot floats of
    // GEMM packing buffer, then, with several walkers, its own copy of the gathered batch
    // then, when the target has them, skip int32s of the zero-skipping kernels' scratch;
    // after the slots, lists_floats for the weight gradient's lists of steps (shared)
    float *pack;
    int64_t pack_slot, slot, skip, lists_floats;
    const float *input;  // the gathered batch this walker reads (set by step_walk)
    int32_t *steps;      // this walker's scratch for the zero-skipping kernels, or NULL
    int32_t *lists;      // the lists of steps of dW_0 (build_lists), for every walker
} step_ctx;

static const float *layer_input(const step_ctx *s, int l) {
    return l > 0 ? s->buf->activations[l - 1] : s->input;
}

// The GEMMs of the step. Forward: bias and ReLU ride in the epilogue. For a layer in
// panels, output columns [j0, j1) on one walker (full panels, or a partial last one);
// else all of them on the team.
static int plan_forward(mnc_gemm_plan *g, const step_ctx *s, int l, int64_t j0, int64_t j1) {
    const mnc_mlp *net = s->net;
    int64_t k = net->sizes[l], n = net->sizes[l + 1], offset, ld, panel;
    weight_columns(net, l, j0, j1, &offset, &ld, &panel);
    mnc_epilogue ep = {net->biases[l] + j0, l + 1 < net->n_layers, NULL, 0};
    mnc_gemm_panels panels = {panel, 0};
    return mnc_gemm_plan_init(g, 0, 0, s->m, j1 - j0, k, 1.0f, layer_input(s, l), k,
                              net->weights[l] + offset, ld, 0.0f, s->buf->activations[l] + j0, n,
                              &ep, &panels, in_panels(net, l) ? 1 : s->threads, REGION_MIN_FLOPS);
}

// dZ_{l-1} = (dZ_l W_lᵀ) ⊙ [H_{l-1} > 0], from the weights before their update (l > 0,
// never in panels).
static int plan_dx(mnc_gemm_plan *g, const step_ctx *s, int l) {
    const mnc_mlp *net = s->net;
    int64_t k = net->sizes[l], n = net->sizes[l + 1];
    mnc_epilogue ep = {NULL, 0, s->buf->activations[l - 1], k};
    return mnc_gemm_plan_init(g, 0, 1, s->m, k, n, 1.0f, s->buf->grads[l], n, net->weights[l], n,
                              0.0f, s->buf->grads[l - 1], k, &ep, NULL, s->threads,
                              REGION_MIN_FLOPS);
}

// The weight gradient H_{l-1}ᵀ dZ_l (the batch is the reduction) of output columns
// [j0, j1), as plan_forward's: with plain SGD the update W_l -= lr·(it) as the GEMM's
// beta = 1, so dW is never stored; else into opt->grads at W_l's offset (a gradient in
// the same panels as its weights).
static int plan_dw(mnc_gemm_plan *g, const step_ctx *s, int l, int64_t j0, int64_t j1) {
    const mnc_mlp *net = s->net;
    int64_t k = net->sizes[l], n = net->sizes[l + 1], offset, ld, panel;
    float alpha, beta, *c = dw_output(net, l, s->opt, s->lr, &alpha, &beta);
    weight_columns(net, l, j0, j1, &offset, &ld, &panel);
    mnc_gemm_panels panels = {0, panel};
    return mnc_gemm_plan_init(g, 1, 0, k, j1 - j0, s->m, alpha, layer_input(s, l), k,
                              s->buf->grads[l] + j0, n, beta, c + offset, ld, NULL, &panels,
                              in_panels(net, l) ? 1 : s->threads, REGION_MIN_FLOPS);
}

// The parts of a kernel of `work` (at least min_work per part) over `total` rows or
// columns, split in units of `unit`.
static int parts_for(const step_ctx *s, int64_t work, int64_t min_work, int64_t total,
                     int64_t unit) {
    int parts = mnc_team_size(s->threads, work, min_work);
    int64_t units = (total + unit - 1) / unit;
    return units < parts ? (int)(units > 0 ? units : 1) : parts;
}

// The parts of a paneled layer's forward and dW GEMMs: whole panels; part p runs on
// walker p.
static int panel_parts(const step_ctx *s, int l) {
    int64_t k = s->net->sizes[l], n = s->net->sizes[l + 1];
    double flops = 2.0 * (double)s->m * (double)n * (double)k;
    return parts_for(s, flops > 9e18 ? INT64_MAX : (int64_t)flops, REGION_MIN_FLOPS, n, MNC_PANEL);
}

static int64_t panel_start(const step_ctx *s, int l, int part, int parts) {
    return mnc_split(s->net->sizes[l + 1], MNC_PANEL, part, parts);
}

// The first part of a kernel this thread runs: part p runs on thread (p + rotate) % T,
// so that the one-part kernels of a phase land on different threads.
static int first_part(int tid, int threads, int rotate) {
    return ((tid - rotate) % threads + threads) % threads;
}

// Parts first, first + stride, ... of plan g on walker tid, with its packing buffer.
static void run_parts(const step_ctx *s, const mnc_gemm_plan *g, int tid, int first, int stride) {
    if (s->pack == NULL && g->slot > 0) {  // no buffer for the region: one walker, alone
        mnc_gemm_execute(g);
        return;
    }
    float *buf = s->pack != NULL ? s->pack + tid * s->slot : NULL;
    for (int p = first; p < g->team; p += stride) mnc_gemm_run(g, buf, p);
}

static void run_gemm(const step_ctx *s, const mnc_gemm_plan *g, int tid, int rotate) {
    run_parts(s, g, tid, first_part(tid, s->threads, rotate), s->threads);
}

// Layer l's forward (dw = 0) or weight-gradient (dw = 1) GEMM: on the team as gemm.c
// splits it, or for a layer in panels this walker's panels: one GEMM for the full ones
// (each A tile reused across them), one for a partial last panel.
static void run_layer(const step_ctx *s, int l, int dw, int tid, int rotate) {
    mnc_gemm_plan g;
    int64_t n = s->net->sizes[l + 1];
    if (l == 0 && s->steps != NULL) {  // split as a layer in panels, whatever its layout
        int parts = panel_parts(s, 0);
        if (tid < parts)
            skip_layer(s->net, s->buf, s->input, s->steps, s->lists, s->m, dw, s->opt, s->lr,
                       panel_start(s, 0, tid, parts), panel_start(s, 0, tid + 1, parts));
        return;
    }
    if (!in_panels(s->net, l)) {
        if ((dw ? plan_dw(&g, s, l, 0, n) : plan_forward(&g, s, l, 0, n)) == 0)
            run_gemm(s, &g, tid, rotate);
        return;
    }
    int parts = panel_parts(s, l);
    if (tid >= parts) return;
    int64_t cuts[3];
    column_cuts(s->net, l, panel_start(s, l, tid, parts), panel_start(s, l, tid + 1, parts), cuts);
    for (int c = 0; c < 2; c++)
        if (cuts[c] < cuts[c + 1] && (dw ? plan_dw(&g, s, l, cuts[c], cuts[c + 1])
                                         : plan_forward(&g, s, l, cuts[c], cuts[c + 1])) == 0)
            run_parts(s, &g, tid, 0, 1);  // a one-part plan, this walker's
}

// Columns [j0, j1) of layer l's bias from dZ_l's column sums: with plain SGD b -= lr·sum,
// else the sums into opt->grads at b's offset.
static void bias_columns(const step_ctx *s, int l, int64_t j0, int64_t j1) {
    int64_t n = s->net->sizes[l + 1];
    float *b = s->net->biases[l];
    if (s->opt == NULL) mnc_colsum_axpy_columns(b, s->buf->grads[l], s->m, n, -s->lr, 1.0f, j0, j1);
    else
        mnc_colsum_axpy_columns(s->opt->grads + (b - s->opt->params), s->buf->grads[l], s->m, n,
                                1.0f, 0.0f, j0, j1);
}

static void run_bias(const step_ctx *s, int l, int tid, int rotate) {
    int64_t n = s->net->sizes[l + 1];
    int parts = parts_for(s, s->m * n, REGION_MIN_ELEMENTS, n, 16);
    for (int p = first_part(tid, s->threads, rotate); p < parts; p += s->threads)
        bias_columns(s, l, mnc_split(n, 16, p, parts), mnc_split(n, 16, p + 1, parts));
}

static void sync(const step_ctx *s) {
    if (s->threads > 1) {
#pragma omp barrier
    }
}

// Whether a kernel of this much work would get one thread of two on its own, by the
// rule gemm.c and nn.c apply outside a region.
static int solo_work(int64_t work, int64_t min_work) {
    return mnc_team_size(2, work, min_work) == 1;
}

// Whether layer l's GEMMs (forward, dx and dw have the same flops) are small enough for
// a walker alone, and so whether forward phase l, the softmax, and backward phase l
// (dw l+1, dx l, db l) run on walker 0 alone.
static int solo_layer(const step_ctx *s, int l) {
    const int64_t *sizes = s->net->sizes;
    double flops = 2.0 * (double)s->m * (double)sizes[l] * (double)sizes[l + 1];
    return !in_panels(s->net, l) &&
           solo_work(flops > 9e18 ? INT64_MAX : (int64_t)flops, MNC_GEMM_MIN_FLOPS_PER_THREAD);
}

static int solo_softmax(const step_ctx *s) {
    return solo_work(s->m * s->net->sizes[s->net->n_layers], MNC_NN_MIN_ELEMENTS_PER_THREAD);
}

static int solo_backward(const step_ctx *s, int l) {
    int last = s->net->n_layers - 1;
    return (l + 1 > last || solo_layer(s, l + 1)) && (l <= 0 || solo_layer(s, l)) &&
           (l < 0 || solo_work(s->m * s->net->sizes[l + 1], MNC_NN_MIN_ELEMENTS_PER_THREAD));
}

// Whether backward phase l, and every phase after it up to the next barrier, run on
// walker 0 alone. Phase 0 (dw 1, db 0) writes nothing that phase -1 (dw 0) reads, so no
// barrier separates them: the one dw 0 needs (for dZ_0) ends the phase before phase 0,
// and each walker goes on to its panels of dW_0 as soon as its part of phase 0 is done
// (with phase 0 on walker 0 alone, the other walkers start at once).
static int solo_from(const step_ctx *s, int l) {
    return solo_backward(s, l) && (l != 0 || solo_backward(s, -1));
}

// The end of a phase: a barrier, unless this phase and the next run on walker 0 alone.
static void end_phase(const step_ctx *s, int solo, int next_solo) {
    if (!(solo && next_solo)) sync(s);
}

// Part `part` of `parts` of the optimizer's update of block elements [lo, hi).
static void update_slice(const step_ctx *s, int64_t lo, int64_t hi, int part, int parts) {
    const mnc_mlp_optimizer *o = s->opt;
    if (lo < hi)
        mnc_optim_update_part(&s->os, o->params + lo, o->state0 ? o->state0 + lo : NULL,
                              o->state1 ? o->state1 + lo : NULL, NULL, o->grads + lo, hi - lo, part,
                              parts);
}

// Walker tid's share of the optimizer's update. The weights of a first layer in panels
// go by its panels, each to the walker whose dW_0 wrote their gradients and whose
// forward 0 reads them next step (the lines stay in one core's cache); the rest of the
// block (the other layers, the biases) is shared out evenly.
static void run_update(const step_ctx *s, int tid) {
    const mnc_mlp *net = s->net;
    const int64_t n = s->opt->n;
    int64_t w0 = 0, w1 = 0;  // the first layer's weights in the block, when they go by panels
    if (in_panels(net, 0) && s->threads > 1) {
        int64_t k = net->sizes[0];
        int parts = panel_parts(s, 0);
        w0 = net->weights[0] - s->opt->params, w1 = w0 + k * net->sizes[1];
        if (tid < parts)
            update_slice(s, w0 + panel_start(s, 0, tid, parts) * k,
                         w0 + panel_start(s, 0, tid + 1, parts) * k, 0, 1);
    }
    int parts = parts_for(s, n - (w1 - w0), REGION_MIN_ELEMENTS, n - (w1 - w0), 16);
    for (int p = tid; p < parts; p += s->threads) {
        update_slice(s, 0, w0, p, parts);
        update_slice(s, w1, n, p, parts);
    }
}

// Walker tid's share of dW_0's lists of steps, after forward 0 (they depend on the batch
// alone, and each walker's panels of dW_0 read all of them). All on the last walker when
// the phases after forward 0 run on walker 0 alone (the last walker idles through them);
// all on walker 0 when dW_0 does (one walker, or a layer 0 small enough to be solo);
// else a share each. Where the lists cross walkers a barrier comes between this and
// dW_0 (the one ending backward phase 1, or the softmax's in a one-layer net).
static void build_lists(const step_ctx *s, int tid) {
#ifdef MNC_NN_X86
    int64_t d = s->net->sizes[0], tiles = mnc_sparse_dw_tiles(d);
    int builders = s->threads, first = 0;
    if (s->threads == 1 || solo_backward(s, -1)) builders = 1;
    else if (s->net->n_layers > 1 && solo_layer(s, 1)) builders = 1, first = s->threads - 1;
    if (tid < first || tid >= first + builders) return;
    int part = tid - first;
    mnc_sparse_dw_lists_avx512(s->lists, s->input, s->m, d, mnc_split(tiles, 1, part, builders),
                               mnc_split(tiles, 1, part + 1, builders));
#else
    (void)s, (void)tid;
#endif
}

// One walker's share of the step (thread tid of shared->threads). Returns what
// mnc_mlp_train_step returns; thread 0 also stores the loss.
static int step_walk(const step_ctx *shared, int tid, double *loss) {
    step_ctx own = *shared;
    const step_ctx *s = &own;
    const mnc_mlp *net = s->net;
    const mnc_mlp_buffers *buf = s->buf;
    const int last = net->n_layers - 1, T = s->threads;
    const int64_t m = s->m, classes = net->sizes[net->n_layers];
    mnc_gemm_plan g;

    // Every walker gathers the whole batch, walker 0 into buf->input and the others into
    // a copy of their own. The first layer's GEMMs give each walker its own columns over
    // every row of the batch: rows gathered on one core would be read from the other's
    // cache, and each step's gather would first have to take back the lines the other
    // core read. Gathering twice as many rows costs a walker no more time than that.
    float *slot = s->pack != NULL ? s->pack + tid * s->slot : NULL;
    float *x = tid == 0 ? buf->input : slot + s->pack_slot;
    own.input = x;
    mnc_gather_scale_rows(x, tid == 0 ? buf->labels : NULL, s->images, s->labels, s->idx,
                          s->image_size, s->scale, 0, m);
    own.steps =
        skip_steps(s->skip > 0 ? (int32_t *)(slot + s->slot - s->skip) : NULL, x, m, s->image_size);
    sync(s);
    for (int64_t b = 0; b < m; b++)  // every walker finds the same
        if (buf->labels[b] < 0 || buf->labels[b] >= classes) return (int)(-1 - b);

    // A phase on walker 0 alone runs with a one-walker context: its kernels in one part.
    step_ctx alone = own;
    alone.threads = 1;
    for (int l = 0; l <= last; l++) {
        int solo = solo_layer(s, l), next = l < last ? solo_layer(s, l + 1) : solo_softmax(s);
        if (!solo || tid == 0) run_layer(solo ? &alone : s, l, 0, tid, 0);
        end_phase(s, solo, next);
        if (l == 0 && s->steps != NULL) build_lists(s, tid);
    }
    int solo = solo_softmax(s);
    int parts = solo ? 1 : parts_for(s, m * classes, REGION_MIN_ELEMENTS, m, 16);
    for (int p = tid; p < parts; p += T)
        mnc_softmax_xent_rows(buf->grads[last], buf->row_loss, buf->activations[last], buf->labels,
                              classes, 1.0f / (float)m, s->label_smoothing,
                              mnc_split(m, 16, p, parts), mnc_split(m, 16, p + 1, parts));
    end_phase(s, solo, solo_from(s, last));
    if (tid == 0) *loss = mnc_mean_loss(buf->row_loss, m);

    for (int l = last; l >= -1; l--) {  // phase l: dw l+1, dx l, db l
        const step_ctx *c = solo_backward(s, l) ? &alone : s;
        int rotate = 0;
        if (c == s || tid == 0) {
            if (l + 1 <= last) run_layer(c, l + 1, 1, tid, rotate++);
            if (l > 0 && plan_dx(&g, c, l) == 0) run_gemm(c, &g, tid, rotate++);
            if (l >= 0) run_bias(c, l, tid, rotate);
        }
        if (l > 0) end_phase(s, c == &alone, solo_from(s, l - 1));
        else if (l < 0 && s->opt != NULL) sync(s);  // else the region's end is the barrier
    }
    if (s->opt != NULL) run_update(s, tid);
    return 0;
}

// The most packing buffer one part of any of the step's GEMMs needs, rounded up to whole
// cache lines.
static int64_t step_pack_slot(const step_ctx *s) {
    int64_t most = 0;
    mnc_gemm_plan g;
    for (int l = 0; l < s->net->n_layers; l++) {
        int64_t n = s->net->sizes[l + 1];
        int parts = in_panels(s->net, l) ? panel_parts(s, l) : 1;
        for (int p = 0; p < parts; p++) {
            int64_t cuts[3], j0 = 0, j1 = n;
            if (in_panels(s->net, l))
                j0 = panel_start(s, l, p, parts), j1 = panel_start(s, l, p + 1, parts);
            column_cuts(s->net, l, j0, j1, cuts);
            for (int c = 0; c < 2; c++) {
                if (cuts[c] == cuts[c + 1]) continue;
                if (plan_forward(&g, s, l, cuts[c], cuts[c + 1]) == 0 && g.slot > most)
                    most = g.slot;
                if (plan_dw(&g, s, l, cuts[c], cuts[c + 1]) == 0 && g.slot > most) most = g.slot;
            }
        }
        if (l > 0 && plan_dx(&g, s, l) == 0 && g.slot > most) most = g.slot;
    }
    return (most + 15) / 16 * 16;
}

int mnc_mlp_train_step(const mnc_mlp *net, const mnc_mlp_buffers *buf, const uint8_t *images,
                       const uint8_t *labels, const int32_t *idx, int64_t m, int64_t image_size,
                       float scale, float label_smoothing, const mnc_mlp_optimizer *opt, double lr,
                       int64_t step, double *loss, int n_threads) {
    step_ctx s = {.net = net,
                  .buf = buf,
                  .images = images,
                  .labels = labels,
                  .idx = idx,
                  .m = m,
                  .image_size = image_size,
                  .scale = scale,
                  .lr = (float)lr,
                  .label_smoothing = label_smoothing,
                  .opt = opt,
                  .input = buf->input};
    if (opt != NULL) s.os = mnc_optim_prepare(&opt->settings, lr, step, 0.0);
    // The step's threads: as many as its GEMMs would use at most on their own.
    double flops = 0.0;
    for (int l = 0; l < net->n_layers; l++)
        flops += 6.0 * (double)m * (double)net->sizes[l] * (double)net->sizes[l + 1];
    s.threads = mnc_team_size(n_threads, flops > 9e18 ? INT64_MAX : (int64_t)flops,
                              MNC_GEMM_MIN_FLOPS_PER_THREAD);
    for (;;) {
        s.pack_slot = step_pack_slot(&s);
        s.skip = skip_scratch(net, m);
        s.lists_floats =
            s.skip > 0 ? (mnc_sparse_dw_tiles(image_size) * (m + 1) + 15) / 16 * 16 : 0;
        s.slot = s.pack_slot + (s.threads > 1 ? (m * image_size + 15) / 16 * 16 : 0) + s.skip;
        s.pack = s.slot > 0 ? mnc_gemm_buffer((size_t)(s.slot * s.threads + s.lists_floats)) : NULL;
        if (s.pack == NULL) s.skip = 0;
        s.lists = s.skip > 0 ? (int32_t *)(s.pack + s.slot * s.threads) : NULL;
        if (s.threads == 1) return step_walk(&s, 0, loss);
        if (s.pack != NULL) {
            int status = 0, short_handed = 0;
            const step_ctx *sp = &s;
#pragma omp parallel num_threads(sp->threads)
            {
                // The walk needs every thread it counts on: with fewer, none starts.
                if (mnc_num_threads() == sp->threads) {
                    int got = step_walk(sp, mnc_thread_num(), loss);
                    if (mnc_thread_num() == 0) status = got;
                } else if (mnc_thread_num() == 0) {
                    short_handed = 1;
                }
            }
            if (!short_handed) return status;
        }
        s.threads = 1;  // short of threads or memory: one walker, whose GEMMs manage alone
    }
}

// A scratch for evaluation: buffers for a chunk of rows and, when the target has the
// zero-skipping kernels, their scratch (else NULL).
typedef struct eval_scratch {
    const mnc_mlp_buffers *buf;
    int32_t *steps;
} eval_scratch;

// Forward pass and in_top_k count of chunk c of rows [0, m): rows [c * chunk, ...), at
// most chunk <= buf->batch of them; copies the logits to logits_out when it is not NULL.
static int64_t evaluate_chunk(const mnc_mlp *net, eval_scratch scratch, int64_t chunk,
                              const uint8_t *images, const uint8_t *labels, int64_t m, int64_t c,
                              int64_t image_size, float scale, int64_t k, float *logits_out,
                              int n_threads) {
    const mnc_mlp_buffers *buf = scratch.buf;
    int64_t start = c * chunk, rows = m - start < chunk ? m - start : chunk;
    int64_t classes = net->sizes[net->n_layers];
    const float *logits = buf->activations[net->n_layers - 1];
    mnc_gather_scale_u8(buf->input, NULL, images + start * image_size, NULL, NULL, rows, image_size,
                        scale, n_threads);
    forward(net, buf, skip_steps(scratch.steps, buf->input, rows, image_size), rows, n_threads);
    int64_t hits = 0;
    if (labels != NULL) {
        for (int64_t b = 0; b < rows; b++) buf->labels[b] = labels[start + b];
        mnc_in_top_k_f32(NULL, &hits, logits, buf->labels, rows, classes, k, n_threads);
    }
    if (logits_out != NULL)
        for (int64_t i = 0; i < rows * classes; i++) logits_out[start * classes + i] = logits[i];
    return hits;
}

// A forward-only scratch (input, labels, activations, and after the activations the
// zero-skipping kernels' scratch when the target has them) for `batch` rows in one
// allocation, its floats from a 64-byte cache line on (so that no row's vector loads
// start mid-line); NULL if memory is short. Release with free().
static mnc_mlp_buffers *forward_scratch(const mnc_mlp *net, int64_t batch) {
    int64_t floats = batch * net->sizes[0] + skip_scratch(net, batch);
    for (int l = 1; l <= net->n_layers; l++) floats += batch * net->sizes[l];
    size_t bytes = sizeof(mnc_mlp_buffers) + (size_t)net->n_layers * sizeof(float *) +
                   (size_t)batch * sizeof(int32_t) + 64 + (size_t)floats * sizeof(float);
    char *block = malloc(bytes);
    if (block == NULL) return NULL;
    mnc_mlp_buffers *scratch = (mnc_mlp_buffers *)block;
    float **activations = (float **)(scratch + 1);
    int32_t *labels = (int32_t *)(activations + net->n_layers);
    float *x = (float *)(((uintptr_t)(labels + batch) + 63) & ~(uintptr_t)63);
    *scratch = (mnc_mlp_buffers){batch, x, labels, activations, NULL, NULL};
    x += batch * net->sizes[0];
    for (int l = 0; l < net->n_layers; l++) {
        activations[l] = x;
        x += batch * net->sizes[l + 1];
    }
    return scratch;
}

// The rows of an evaluation chunk when there are more rows than buf->batch: a multiple of
// the AVX-512 tile's 12 rows (a 100-row chunk ends in a 4-row tile, which runs at the
// speed its B panels arrive from L2, not at the FMA rate), few enough that a chunk's
// input (940 KB at 784 pixels) stays in L2 beside the weights.
enum { EVAL_CHUNK_ROWS = 240 };

int mnc_mlp_evaluate(const mnc_mlp *net, const mnc_mlp_buffers *buf, const uint8_t *images,
                     const uint8_t *labels, int64_t m, int64_t image_size, float scale, int64_t k,
                     int64_t *n_correct, float *logits_out, int n_threads) {
    int64_t classes = net->sizes[net->n_layers];
    if (labels != NULL)
        for (int64_t i = 0; i < m; i++)
            if (labels[i] >= classes) return (int)(-1 - i);
    // Threads take whole chunks, each a complete forward pass on its own scratch: one
    // parallel region for the pass instead of several per chunk, and no thread idles
    // through the small layers. A row's logits are the same bits whichever chunk or
    // thread computes them (mnistc.h's rounding rules), so the counts cannot change.
    // The scratch is malloc'd here, except buf when the chunks are buf->batch rows; if
    // memory is short, fewer threads (or buf alone, in chunks of buf->batch) do the work.
    int64_t chunk = m > buf->batch && buf->batch < EVAL_CHUNK_ROWS ? EVAL_CHUNK_ROWS : buf->batch;
    int team = mnc_team_size(n_threads, (m + chunk - 1) / chunk, 2), got = 0;
    int64_t skip = skip_scratch(net, chunk), classes_floats = chunk * classes;
    eval_scratch *scratch = malloc((size_t)team * sizeof *scratch);
    if (scratch != NULL)
        for (; got < team; got++) {
            int own = chunk > buf->batch || got > 0;
            mnc_mlp_buffers *b = own ? forward_scratch(net, chunk) : (mnc_mlp_buffers *)buf;
            if (b == NULL) break;
            int32_t *after = (int32_t *)(b->activations[net->n_layers - 1] + classes_floats);
            scratch[got] = (eval_scratch){b, own && skip > 0 ? after : NULL};
        }
    int64_t chunks = (m + chunk - 1) / chunk, hits = 0;
    if (got <= 1) {  // one scratch: the kernels share out the work within each chunk
        eval_scratch one = got == 1 ? scratch[0] : (eval_scratch){buf, NULL};
        if (got == 0) chunk = buf->batch, chunks = (m + chunk - 1) / chunk;
        for (int64_t c = 0; c < chunks; c++)
            hits += evaluate_chunk(net, one, chunk, images, labels, m, c, image_size, scale, k,
                                   logits_out, n_threads);
    } else {
#pragma omp parallel for num_threads(got) schedule(dynamic) reduction(+ : hits)
        for (int64_t c = 0; c < chunks; c++)
            hits += evaluate_chunk(net, scratch[mnc_thread_num()], chunk, images, labels, m, c,
                                   image_size, scale, k, logits_out, 1);
    }
    for (int t = 0; t < got; t++)
        if (scratch[t].buf != buf) free((void *)scratch[t].buf);
    free(scratch);
    *n_correct = hits;
    return 0;
}
