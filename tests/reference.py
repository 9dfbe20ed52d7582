"""Plain float64 NumPy references for every kernel, independent of the code under
test, and the tolerances they are compared with (one place for all of them)."""
import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def gemm(a, b, c=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0,
         bias=None, relu=False, relu_mask=None):
    """float64 C := epilogue(alpha op(A) op(B) + beta C), the mnistc.h contract."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    out = alpha * (a @ b)
    if beta != 0.0:
        out = out + beta * np.asarray(c, np.float64)
    if bias is not None:
        out = out + np.asarray(bias, np.float64)
    if relu:
        out = np.maximum(out, 0.0)
    if relu_mask is not None:
        out = np.where(np.asarray(relu_mask) > 0, out, 0.0)
    return out


def gemm_tolerance(a, b, c=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0,
                   bias=None):
    """Element bound for a float32 GEMM: c * k * eps32 * (|alpha| |A||B| + |beta C| + |bias|),
    the classic forward error bound of a length-k dot product, with c = 2 (the epilogue
    adds a couple of roundings)."""
    a = np.abs(np.asarray(a, np.float64))
    b = np.abs(np.asarray(b, np.float64))
    a = a.T if trans_a else a
    b = b.T if trans_b else b
    k = a.shape[1]
    scale = abs(alpha) * (a @ b)
    if beta != 0.0:
        scale = scale + abs(beta) * np.abs(np.asarray(c, np.float64))
    if bias is not None:
        scale = scale + np.abs(np.asarray(bias, np.float64))
    return 2.0 * (k + 2) * EPS32 * scale + np.finfo(np.float32).tiny


def assert_close(actual, expected, bound, what=""):
    """Elementwise |actual - expected| <= bound, reporting the worst errors on failure."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    err = np.abs(actual - expected)
    bad = ~(err <= bound)
    if bad.any():
        worst = np.unravel_index(np.argmax(np.where(bad, err, -1)), err.shape)
        rel = err / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)
        raise AssertionError(
            f"{what}: {bad.sum()} of {err.size} elements out of tolerance; worst at {worst}: "
            f"got {actual[worst]!r}, want {expected[worst]!r}, |err| {err[worst]:.3g} > "
            f"bound {np.broadcast_to(bound, err.shape)[worst]:.3g}; max abs err {err.max():.3g}, "
            f"max rel err {rel.max():.3g}")


def softmax_xent(logits, labels, grad_scale=None):
    """(mean_loss, row_loss, dlogits) in float64, via a stable log-sum-exp."""
    z = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    m = z.shape[0]
    zmax = z.max(axis=1, keepdims=True)
    e = np.exp(z - zmax)
    s = e.sum(axis=1, keepdims=True)
    row_loss = (zmax + np.log(s))[:, 0] - z[np.arange(m), labels]
    p = e / s
    onehot = np.zeros_like(p)
    onehot[np.arange(m), labels] = 1.0
    scale = 1.0 / m if grad_scale is None else grad_scale
    return row_loss.mean(), row_loss, scale * (p - onehot)


def in_top_k(logits, labels, k):
    """TensorFlow's rule: hit when fewer than k logits exceed the target's, which is finite."""
    z = np.asarray(logits, np.float64)
    target = z[np.arange(z.shape[0]), labels]
    greater = (z > target[:, None]).sum(axis=1)
    return (greater < k) & np.isfinite(target)


def mlp_forward(params, x):
    """Logits of the MLP in float64; params = [(W, b), ...], ReLU between layers."""
    h = np.asarray(x, np.float64)
    for i, (w, b) in enumerate(params):
        h = h @ np.asarray(w, np.float64) + np.asarray(b, np.float64)
        if i + 1 < len(params):
            h = np.maximum(h, 0.0)
    return h


def mlp_loss(params, x, labels):
    """Mean sparse softmax cross-entropy of the MLP, float64."""
    return softmax_xent(mlp_forward(params, x), labels)[0]


# ----------------------------------------------------------------------------------
# Added for test_nn_kernels.py and test_mlp_kernel.py: the nn-kernel tolerances and a
# float64 backprop / SGD trainer.

def colsum_tolerance(x, out=None, alpha=1.0, beta=0.0):
    """Bound on |out_new - (beta out + alpha sum_i x[i, j])| for a float32 column sum run
    down i: the m - 1 float32 additions add at most (m - 1) u sum_i |x_ij| (u = eps32 / 2),
    below m eps32 sum|x|; then alpha * sum, beta * out and their sum add a rounding each."""
    x = np.abs(np.asarray(x, np.float64))
    m = x.shape[0]
    col = x.sum(axis=0)
    tol = abs(alpha) * (m + 1) * EPS32 * col
    if beta != 0.0:
        tol = tol + 2.0 * EPS32 * abs(beta) * np.abs(np.asarray(out, np.float64))
    return tol + np.finfo(np.float32).tiny


def softmax_xent_tolerance(logits, labels, grad_scale=None):
    """(row_tol, dlogits_tol): bounds on the errors of mnistc's float32 fused softmax
    cross-entropy against softmax_xent() above.

    The kernel computes loss = (zmax + log s) - z_y, s = sum_j exp(z_j - zmax), all in
    float32. With u = eps32 / 2 and n the row length:
      - each exp is within 1 ulp (<= eps32 relative); its argument d_j = z_j - zmax is
        itself rounded, which moves exp(d_j) by u |d_j| exp(d_j) <= u / e, so by at most
        n u / e over the row; the n - 1 additions add (n - 1) u s. As s >= 1, s is within
        eps32 (1 + 0.7 n) relative, hence log s within that much absolutely;
      - log is within 1 ulp (eps32 log s);
      - the two final roundings add u (|lse| + |loss|) <= eps32 (|lse| + |z_y|).
    So |row error| <= eps32 (|lse| + |z_y| + log s + n + 1); we allow twice that.
    dlogits[i, j] = p_j * g (- g on the label), p_j = exp(d_j) * (g / s): relative error
    eps32 (n + 3) + u |d_j| in p_j, plus one rounding of the label's subtraction; twice
    that. Where exp or the result is subnormal the relative bound fails: there each is
    within one subnormal ulp (2^-149), so add 2^-149 (1 + |g|), doubled.
    """
    z = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    m, n = z.shape
    g = 1.0 / m if grad_scale is None else grad_scale
    zmax = z.max(axis=1, keepdims=True)
    log_s = np.log(np.exp(z - zmax).sum(axis=1))
    lse = zmax[:, 0] + log_s
    z_y = z[np.arange(m), labels]
    row_tol = 2.0 * EPS32 * (np.abs(lse) + np.abs(z_y) + log_s + n + 1)
    _, _, dz = softmax_xent(z, labels, grad_scale)
    p = np.exp(z - zmax - log_s[:, None])
    dz_tol = 2.0 * (abs(g) * p * EPS32 * (n + 3 + np.abs(z - zmax)) + EPS32 * np.abs(dz))
    dz_tol = dz_tol + 2.0 * (1.0 + abs(g)) * float(np.finfo(np.float32).smallest_subnormal)
    return row_tol, dz_tol


def mlp_gradients(params, x, labels):
    """(mean loss, [(dW, db), ...]) of the MLP by backprop, all in float64."""
    x = np.asarray(x, np.float64)
    layers = [(np.asarray(w, np.float64), np.asarray(b, np.float64)) for w, b in params]
    inputs = []
    h = x
    for i, (w, b) in enumerate(layers):
        inputs.append(h)
        h = h @ w + b
        if i + 1 < len(layers):
            h = np.maximum(h, 0.0)
    loss, _, dz = softmax_xent(h, labels)
    grads = [None] * len(layers)
    for i in range(len(layers) - 1, -1, -1):
        w, _ = layers[i]
        grads[i] = (inputs[i].T @ dz, dz.sum(axis=0))
        if i > 0:
            dz = (dz @ w.T) * (inputs[i] > 0)
    return loss, grads


def sgd_train(params, images, labels, batches, lr, scale=1.0 / 255.0):
    """Plain SGD in float64 from params (copied), one step per index array in `batches`;
    the inputs are scaled in float32 as mnistc does (images.astype(float32) * scale).
    Returns (params, losses) where losses[t] is step t's mean loss before its update."""
    params = [(np.array(w, np.float64), np.array(b, np.float64)) for w, b in params]
    losses = []
    for idx in batches:
        x = images[idx].astype(np.float32) * np.float32(scale)
        loss, grads = mlp_gradients(params, x, labels[idx])
        losses.append(loss)
        params = [(w - lr * dw, b - lr * db) for (w, b), (dw, db) in zip(params, grads)]
    return params, np.array(losses)


def mlp_forward_tolerance(params, x, probabilistic=False):
    """Elementwise bound on a float32 MLP forward pass's errors (logits), layer by layer:
    each layer adds its GEMM bound (gemm_tolerance, with the bias) to the previous
    layer's error carried through |W| (ReLU is 1-Lipschitz).

    probabilistic=True replaces the worst case c k eps32 |H||W| by sqrt(k + 2) eps32 |H||W|
    (Higham & Mary 2019: rounding errors of a length-k sum grow like sqrt(k) u with high
    probability): an estimate of the float32 noise, still far above what is observed, for
    deciding which logits are too close to call."""
    h = np.asarray(x, np.float64)
    err = np.zeros_like(h)
    for i, (w, b) in enumerate(params):
        w = np.asarray(w, np.float64)
        b = np.asarray(b, np.float64)
        if probabilistic:
            layer = np.sqrt(w.shape[0] + 2) * EPS32 * (np.abs(h) @ np.abs(w) + np.abs(b))
        else:
            layer = gemm_tolerance(h, w, bias=b)
        err = layer + err @ np.abs(w)
        h = h @ w + b
        if i + 1 < len(params):
            h = np.maximum(h, 0.0)
    return err
