// mlp.c — a whole SGD step (and an evaluation pass) of the multi-layer perceptron in
// one call, so Python crosses into C once per step. It only sequences the kernels of
// gemm.c and nn.c; the arithmetic and its rounding rules live there (see mnistc.h).
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
                       int64_t m, int64_t image_size, float scale, float lr, double *loss,
                       int n_threads) {
    int last = net->n_layers - 1;
    int64_t classes = net->sizes[net->n_layers];
    mnc_gather_scale_u8(buf->input, buf->labels, images, labels, idx, m, image_size, scale,
                        n_threads);
    for (int64_t b = 0; b < m; b++)
        if (buf->labels[b] < 0 || buf->labels[b] >= classes) return (int)(-1 - b);
    forward(net, buf, m, n_threads);
    mnc_softmax_xent_f32(buf->grads[last], buf->row_loss, loss, buf->activations[last],
                         buf->labels, m, classes, 1.0f / (float)m, n_threads);
    for (int l = last; l >= 0; l--) {
        int64_t k = net->sizes[l], n = net->sizes[l + 1];
        const float *layer_input = l > 0 ? buf->activations[l - 1] : buf->input;
        if (l > 0) {
            // dZ_{l-1} = (dZ_l W_lᵀ) ⊙ [H_{l-1} > 0], from the weights before their update.
            mnc_epilogue ep = {NULL, 0, buf->activations[l - 1], k};
            mnc_sgemm_f32(0, 1, m, k, n, 1.0f, buf->grads[l], n, net->weights[l], n, 0.0f,
                          buf->grads[l - 1], k, &ep, n_threads);
        }
        // W_l -= lr * H_{l-1}ᵀ dZ_l: the batch is the GEMM's reduction, so the update is
        // the GEMM's beta = 1 and dW is never stored.
        mnc_sgemm_f32(1, 0, k, n, m, -lr, layer_input, k, buf->grads[l], n, 1.0f,
                      net->weights[l], n, NULL, n_threads);
        mnc_colsum_axpy_f32(net->biases[l], buf->grads[l], m, n, -lr, 1.0f, n_threads);
    }
    return 0;
}

int mnc_mlp_evaluate(const mnc_mlp *net, const mnc_mlp_buffers *buf, const uint8_t *images,
                     const uint8_t *labels, int64_t m, int64_t image_size, float scale,
                     int64_t k, int64_t *n_correct, float *logits_out, int n_threads) {
    int64_t classes = net->sizes[net->n_layers];
    const float *logits = buf->activations[net->n_layers - 1];
    int64_t hits = 0;
    for (int64_t start = 0; start < m; start += buf->batch) {
        int64_t rows = m - start < buf->batch ? m - start : buf->batch;
        mnc_gather_scale_u8(buf->input, NULL, images + start * image_size, NULL, NULL, rows,
                            image_size, scale, n_threads);
        forward(net, buf, rows, n_threads);
        if (labels != NULL) {
            for (int64_t b = 0; b < rows; b++) buf->labels[b] = labels[start + b];
            int64_t chunk_hits = 0;
            int status = mnc_in_top_k_f32(NULL, &chunk_hits, logits, buf->labels, rows,
                                          classes, k, n_threads);
            if (status != 0) return (int)(-1 - (start + (-1 - status)));
            hits += chunk_hits;
        }
        if (logits_out != NULL)
            for (int64_t i = 0; i < rows * classes; i++)
                logits_out[start * classes + i] = logits[i];
    }
    *n_correct = hits;
    return 0;
}
