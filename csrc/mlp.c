// mlp.c — a whole training step (and an evaluation pass) of the multi-layer perceptron
// in one call, so Python crosses into C once per step. It only sequences the kernels of
// gemm.c, nn.c and optim.c; the arithmetic and its rounding rules live there (mnistc.h).
#include <stdlib.h>

#include "internal.h"

// Forward pass of rows [0, m) already gathered into buf->input; logits end up in
// buf->activations[n_layers - 1].
static void forward(const mnc_mlp *net, const mnc_mlp_buffers *buf, int64_t m,
                    int n_threads) {
    const float *x = buf->input;
    for (int l = 0; l < net->n_layers; l++) {
        int64_t k = net->sizes[l], n = net->sizes[l + 1];
        // Bias and ReLU ride in the GEMM's epilogue: no second pass over the activations.
        mnc_epilogue ep = {net->biases[l], l + 1 < net->n_layers, NULL, 0};
        mnc_sgemm_f32(0, 0, m, n, k, 1.0f, x, k, net->weights[l], n, 0.0f,
                      buf->activations[l], n, &ep, n_threads);
        x = buf->activations[l];
    }
}

int mnc_mlp_train_step(const mnc_mlp *net, const mnc_mlp_buffers *buf,
                       const uint8_t *images, const uint8_t *labels, const int32_t *idx,
                       int64_t m, int64_t image_size, float scale, float label_smoothing,
                       const mnc_mlp_optimizer *opt, double lr, int64_t step, double *loss,
                       int n_threads) {
    int last = net->n_layers - 1;
    int64_t classes = net->sizes[net->n_layers];
    mnc_gather_scale_u8(buf->input, buf->labels, images, labels, idx, m, image_size, scale,
                        n_threads);
    for (int64_t b = 0; b < m; b++)
        if (buf->labels[b] < 0 || buf->labels[b] >= classes) return (int)(-1 - b);
    forward(net, buf, m, n_threads);
    mnc_softmax_xent_f32(buf->grads[last], buf->row_loss, loss, buf->activations[last],
                         buf->labels, m, classes, 1.0f / (float)m, label_smoothing, n_threads);
    for (int l = last; l >= 0; l--) {
        int64_t k = net->sizes[l], n = net->sizes[l + 1];
        const float *layer_input = l > 0 ? buf->activations[l - 1] : buf->input;
        if (l > 0) {
            // dZ_{l-1} = (dZ_l W_lᵀ) ⊙ [H_{l-1} > 0], from the weights before their update.
            mnc_epilogue ep = {NULL, 0, buf->activations[l - 1], k};
            mnc_sgemm_f32(0, 1, m, k, n, 1.0f, buf->grads[l], n, net->weights[l], n, 0.0f,
                          buf->grads[l - 1], k, &ep, n_threads);
        }
        if (opt == NULL) {
            // W_l -= lr * H_{l-1}ᵀ dZ_l: the batch is the GEMM's reduction, so the update
            // is the GEMM's beta = 1 and dW is never stored.
            mnc_sgemm_f32(1, 0, k, n, m, -(float)lr, layer_input, k, buf->grads[l], n, 1.0f,
                          net->weights[l], n, NULL, n_threads);
            mnc_colsum_axpy_f32(net->biases[l], buf->grads[l], m, n, -(float)lr, 1.0f,
                                n_threads);
        } else {
            float *dw = opt->grads + (net->weights[l] - opt->params);
            float *db = opt->grads + (net->biases[l] - opt->params);
            mnc_sgemm_f32(1, 0, k, n, m, 1.0f, layer_input, k, buf->grads[l], n, 0.0f, dw, n,
                          NULL, n_threads);
            mnc_colsum_axpy_f32(db, buf->grads[l], m, n, 1.0f, 0.0f, n_threads);
        }
    }
    if (opt != NULL)
        mnc_optimizer_update_f32(&opt->settings, opt->params, opt->state0, opt->state1, NULL,
                                 opt->grads, opt->n, lr, step, 0.0, n_threads);
    return 0;
}

// Forward pass and in_top_k count of chunk c of rows [0, m): rows [c * batch, ...), at
// most buf->batch of them; copies the logits to logits_out when it is not NULL.
static int64_t evaluate_chunk(const mnc_mlp *net, const mnc_mlp_buffers *buf,
                              const uint8_t *images, const uint8_t *labels, int64_t m,
                              int64_t c, int64_t image_size, float scale, int64_t k,
                              float *logits_out, int n_threads) {
    int64_t start = c * buf->batch, rows = m - start < buf->batch ? m - start : buf->batch;
    int64_t classes = net->sizes[net->n_layers];
    const float *logits = buf->activations[net->n_layers - 1];
    mnc_gather_scale_u8(buf->input, NULL, images + start * image_size, NULL, NULL, rows,
                        image_size, scale, n_threads);
    forward(net, buf, rows, n_threads);
    int64_t hits = 0;
    if (labels != NULL) {
        for (int64_t b = 0; b < rows; b++) buf->labels[b] = labels[start + b];
        mnc_in_top_k_f32(NULL, &hits, logits, buf->labels, rows, classes, k, n_threads);
    }
    if (logits_out != NULL)
        for (int64_t i = 0; i < rows * classes; i++)
            logits_out[start * classes + i] = logits[i];
    return hits;
}

// A forward-only copy of buf's scratch (input, labels, activations) in one allocation,
// for a second thread; NULL if memory is short. Release with free().
static mnc_mlp_buffers *forward_scratch(const mnc_mlp *net, int64_t batch) {
    int64_t floats = batch * net->sizes[0];
    for (int l = 1; l <= net->n_layers; l++) floats += batch * net->sizes[l];
    size_t bytes = sizeof(mnc_mlp_buffers) + (size_t)net->n_layers * sizeof(float *)
                   + (size_t)batch * sizeof(int32_t) + (size_t)floats * sizeof(float);
    char *block = malloc(bytes);
    if (block == NULL) return NULL;
    mnc_mlp_buffers *scratch = (mnc_mlp_buffers *)block;
    float **activations = (float **)(scratch + 1);
    int32_t *labels = (int32_t *)(activations + net->n_layers);
    float *x = (float *)(labels + batch);
    *scratch = (mnc_mlp_buffers){batch, x, labels, activations, NULL, NULL};
    x += batch * net->sizes[0];
    for (int l = 0; l < net->n_layers; l++) {
        activations[l] = x;
        x += batch * net->sizes[l + 1];
    }
    return scratch;
}

int mnc_mlp_evaluate(const mnc_mlp *net, const mnc_mlp_buffers *buf, const uint8_t *images,
                     const uint8_t *labels, int64_t m, int64_t image_size, float scale,
                     int64_t k, int64_t *n_correct, float *logits_out, int n_threads) {
    int64_t classes = net->sizes[net->n_layers];
    if (labels != NULL)
        for (int64_t i = 0; i < m; i++)
            if (labels[i] >= classes) return (int)(-1 - i);
    int64_t chunks = (m + buf->batch - 1) / buf->batch;
    // Threads take whole chunks, each a complete forward pass on its own scratch: one
    // parallel region for the pass instead of several per chunk, and no thread idles
    // through the small layers. A row's logits are the same whichever chunk or thread
    // computes them (mnistc.h's rounding rules), so the counts cannot change.
    // (If memory is short, fewer threads do the same work.)
    int team = mnc_team_size(n_threads, chunks, 2);
    const mnc_mlp_buffers **scratch = team > 1 ? malloc(team * sizeof *scratch) : NULL;
    if (scratch == NULL) team = 1;
    for (int t = 1; t < team; t++)
        if ((scratch[t] = forward_scratch(net, buf->batch)) == NULL) team = t;
    int64_t hits = 0;
    if (team <= 1) {  // few chunks: the kernels share out the work within each one
        for (int64_t c = 0; c < chunks; c++)
            hits += evaluate_chunk(net, buf, images, labels, m, c, image_size, scale, k,
                                   logits_out, n_threads);
    } else {
        scratch[0] = buf;
#pragma omp parallel for num_threads(team) schedule(dynamic) reduction(+ : hits)
        for (int64_t c = 0; c < chunks; c++)
            hits += evaluate_chunk(net, scratch[mnc_thread_num()], images, labels, m, c,
                                   image_size, scale, k, logits_out, 1);
    }
    for (int t = 1; t < team; t++) free((void *)scratch[t]);
    free(scratch);
    *n_correct = hits;
    return 0;
}
