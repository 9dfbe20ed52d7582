"""Plain float64 NumPy references for every kernel, independent of the code under
test, and the tolerances they are compared with (one place for all of them)."""

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)


def gemm(
    a,
    b,
    c=None,
    trans_a=False,
    trans_b=False,
    alpha=1.0,
    beta=0.0,
    bias=None,
    relu=False,
    relu_mask=None,
):
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


def gemm_tolerance(a, b, c=None, trans_a=False, trans_b=False, alpha=1.0, beta=0.0, bias=None):
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
            f"max rel err {rel.max():.3g}"
        )


def smoothed_targets(labels, n, label_smoothing):
    """float64 [m, n]: (1 - eps) * onehot + eps / n, torch's label_smoothing targets."""
    labels = np.asarray(labels)
    q = np.full((labels.shape[0], n), label_smoothing / n)
    q[np.arange(labels.shape[0]), labels] += 1.0 - label_smoothing
    return q


def softmax_xent(logits, labels, grad_scale=None, label_smoothing=0.0):
    """(mean_loss, row_loss, dlogits) in float64, via a stable log-sum-exp, against the
    targets smoothed_targets(labels, n, eps), eps = label_smoothing as the float32 the
    kernel is given."""
    label_smoothing = float(np.float32(label_smoothing))
    z = np.asarray(logits, np.float64)
    m, n = z.shape
    zmax = z.max(axis=1, keepdims=True)
    e = np.exp(z - zmax)
    s = e.sum(axis=1, keepdims=True)
    q = smoothed_targets(labels, n, label_smoothing)
    finite = np.where(q > 0, z, 0.0)  # a zero target times a -inf logit adds nothing
    row_loss = (zmax + np.log(s))[:, 0] - (q * finite).sum(axis=1)
    p = e / s
    scale = 1.0 / m if grad_scale is None else grad_scale
    return row_loss.mean(), row_loss, scale * (p - q)


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


def mlp_loss(params, x, labels, label_smoothing=0.0):
    """Mean sparse softmax cross-entropy of the MLP, float64."""
    return softmax_xent(mlp_forward(params, x), labels, label_smoothing=label_smoothing)[0]


# ----------------------------------------------------------------------------------
# Added for test_nn_kernels.py and test_mlp_kernel.py: the nn-kernel tolerances and a
# float64 backprop / trainer (its optimizers below).


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


def softmax_xent_tolerance(logits, labels, grad_scale=None, label_smoothing=0.0):
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
    With label smoothing eps the target term is ((zmax - (1 - eps) z_y) - (eps / n) Z), Z
    the float32 sum of the row: Z is within (n - 1) u sum|z_j|, and the product, the two
    subtractions and eps / n, 1 - eps add a rounding each of their results (at most
    u (|z_y| + (eps / n) sum|z| + |zmax| + |target|)); the gradient's g * eps / n adds two
    roundings of itself and its subtraction one of the result (within EPS32 |dz|, above),
    and the label's g (1 - eps) two roundings of itself: 2 EPS32 |g| q_j in all.
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
    if label_smoothing:
        spread_abs = label_smoothing / n * np.abs(z).sum(axis=1)
        row_tol = row_tol + 2.0 * EPS32 * (
            n * spread_abs + np.abs(zmax[:, 0]) + np.abs(z_y) + np.abs(lse)
        )
    _, _, dz = softmax_xent(z, labels, grad_scale, label_smoothing)
    p = np.exp(z - zmax - log_s[:, None])
    dz_tol = 2.0 * (abs(g) * p * EPS32 * (n + 3 + np.abs(z - zmax)) + EPS32 * np.abs(dz))
    if label_smoothing:
        dz_tol = dz_tol + 2.0 * 2.0 * EPS32 * abs(g) * smoothed_targets(labels, n, label_smoothing)
    dz_tol = dz_tol + 2.0 * (1.0 + abs(g)) * float(np.finfo(np.float32).smallest_subnormal)
    return row_tol, dz_tol


def mlp_gradients(params, x, labels, label_smoothing=0.0):
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
    loss, _, dz = softmax_xent(h, labels, label_smoothing=label_smoothing)
    grads = [None] * len(layers)
    for i in range(len(layers) - 1, -1, -1):
        w, _ = layers[i]
        grads[i] = (inputs[i].T @ dz, dz.sum(axis=0))
        if i > 0:
            dz = (dz @ w.T) * (inputs[i] > 0)
    return loss, grads


def train(params, images, labels, batches, lr, kind="sgd", scale=1.0 / 255.0, **hyperparameters):
    """float64 training from params (copied) by optimizer `kind` (optimizer_update below:
    mnistc.h's formulas with their float32-rounded scalars, the arithmetic in float64),
    one step per index array in `batches`; the inputs are scaled in float32 as mnistc does
    (images.astype(float32) * scale). Returns (params, losses) where losses[t] is step t's
    mean loss before its update."""
    params = [(np.array(w, np.float64), np.array(b, np.float64)) for w, b in params]
    arrays = [a for pair in params for a in pair]
    block = np.concatenate([a.ravel() for a in arrays])
    offsets = np.cumsum([0] + [a.size for a in arrays])

    def layers(flat):
        pieces = [flat[o:e].reshape(a.shape) for o, e, a in zip(offsets, offsets[1:], arrays)]
        return list(zip(pieces[0::2], pieces[1::2]))

    state = tuple(np.zeros_like(block) for _ in range(OPTIMIZER_STATE_COUNT[kind]))
    losses = []
    for t, idx in enumerate(batches, start=1):
        x = images[idx].astype(np.float32) * np.float32(scale)
        loss, grads = mlp_gradients(layers(block), x, labels[idx])
        losses.append(loss)
        g = np.concatenate([a.ravel() for pair in grads for a in pair])
        scalars = {
            k: np.float64(v) if isinstance(v, np.floating) else v
            for k, v in optimizer_scalars(kind, lr, t, **hyperparameters).items()
        }
        block, state = optimizer_update(kind, block, g, state, scalars)
    return layers(block), np.array(losses)


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


# ----------------------------------------------------------------------------------
# Added for test_optim.py: the optimizers' update (mnistc.h's formulas, torch.optim's),
# written once over the number type. With float32 arrays it is an exact emulation of the
# contract (NumPy rounds each float32 operation correctly, with no FMA); with float64
# arrays, the float64 reference; with Bounded values, that reference plus a bound on the
# float32 computation's error.

OPTIMIZER_STATE_COUNT = {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2, "adamw": 2}


def optimizer_scalars(
    kind, lr, step, momentum=0.0, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0
):
    """The scalars of update number `step`, as mnistc.h defines them: computed in double
    from the Python floats, then rounded to float32 once (torch's scalar handling)."""
    f = np.float32
    s = {
        "l2": weight_decay != 0 and kind != "adamw",
        "first": step == 1,
        "lr": f(lr),
        "weight_decay": f(weight_decay),
        "momentum": f(momentum),
    }
    if kind in ("adam", "adamw"):
        w1 = f(1.0 - beta1)
        s.update(
            w1=w1,
            w1_rest=f(1) - w1,
            beta2=f(beta2),
            c2=f(1.0 - beta2),
            step_size=f(lr / (1.0 - beta1 ** float(step))),
            bc2_sqrt=f((1.0 - beta2 ** float(step)) ** 0.5),
            eps=f(eps),
            decay=f(1.0 - lr * weight_decay) if kind == "adamw" else f(1),
        )
    return s


def lerp(a, b, w, rest):
    """torch's lerp(a, b, w): a + w (b - a) when |w| < 0.5, else b - (1 - w) (b - a);
    rest = 1 - w, as the caller computed it."""
    if isinstance(a, Bounded) or isinstance(b, Bounded):
        return Bounded.of(a).lerp(b, w, rest)
    t = b - a
    return a + w * t if abs(float(w)) < 0.5 else b - rest * t


def optimizer_update(kind, p, g, state, scalars, sqrt=np.sqrt):
    """(p, state) after one update by mnistc.h's formulas; `state` as the C kernel's
    (momentum: (b,), adam/adamw: (m, v)). The scalars (optimizer_scalars) should be of
    the arrays' number type; sqrt is the type's square root."""
    s = scalars
    if kind in ("adam", "adamw"):
        m, v = state
        p = p * s["decay"]
        if s["l2"]:
            g = g + s["weight_decay"] * p
        m = lerp(m, g, s["w1"], s["w1_rest"])
        v = s["beta2"] * v + (s["c2"] * g) * g
        p = p - (s["step_size"] * m) / (sqrt(v) / s["bc2_sqrt"] + s["eps"])
        return p, (m, v)
    if s["l2"]:
        g = g + s["weight_decay"] * p
    if kind == "sgd":
        return p - s["lr"] * g, ()
    (b,) = state
    b = g if s["first"] else s["momentum"] * b + g
    return p - s["lr"] * (g + s["momentum"] * b if kind == "nesterov" else b), (b,)


def ema_update(e, p, decay):
    """torch.optim.swa_utils' EMA step, e = lerp(e, p, 1 - decay) (scalars in float32)."""
    w = np.float32(1.0 - decay)
    return lerp(e, p, w, np.float32(1) - w)


U32 = EPS32 / 2  # the unit roundoff of float32
TINY32 = float(np.finfo(np.float32).smallest_subnormal)


class Bounded:
    """A float64 array `value` and a bound `err` on how far a float32 computation of the
    same expression, each operation rounded to nearest, can be from it: each operation
    propagates its operands' errors exactly (no first-order truncation) and adds its own
    rounding, u (|result| + err) plus a subnormal ulp for underflow. Constants and the
    inputs are exact (the kernel gets the same float32 values)."""

    __array_ufunc__ = None  # NumPy scalars defer to the reflected operators below

    def __init__(self, value, err=None):
        self.value = np.asarray(value, np.float64)
        self.err = np.zeros_like(self.value) if err is None else err

    @staticmethod
    def of(x):
        return x if isinstance(x, Bounded) else Bounded(np.float64(x))

    @staticmethod
    def rounded(value, err):
        return Bounded(value, err + U32 * (np.abs(value) + err) + TINY32)

    def __add__(self, other):
        other = Bounded.of(other)
        return Bounded.rounded(self.value + other.value, self.err + other.err)

    __radd__ = __add__

    def __sub__(self, other):
        other = Bounded.of(other)
        return Bounded.rounded(self.value - other.value, self.err + other.err)

    def __rsub__(self, other):
        return Bounded.of(other) - self

    def __mul__(self, other):
        other = Bounded.of(other)
        a, b = self.value, other.value
        err = np.abs(a) * other.err + np.abs(b) * self.err + self.err * other.err
        return Bounded.rounded(a * b, err)

    __rmul__ = __mul__

    def __truediv__(self, other):
        other = Bounded.of(other)
        a, b = self.value, other.value
        room = np.abs(b) - other.err
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.where(room > 0, (self.err + np.abs(a / b) * other.err) / room, np.inf)
        return Bounded.rounded(a / b, err)

    def lerp(self, other, w, rest):
        """lerp(self, other, w) as lerp() computes it. Its operands' errors are carried by
        the exact partial derivatives, (1 - w) and w: through the three operations one
        at a time, self's error would count 1 + w times and grow geometrically over a
        moving average's steps."""
        other = Bounded.of(other)
        a, b, w, rest = self.value, other.value, float(w), float(rest)
        small = abs(w) < 0.5
        t = b - a
        t_err = U32 * (np.abs(t) + self.err + other.err) + TINY32  # the rounding of b - a
        k = w if small else rest  # the result is (1 - k) a + k b, or k a + (1 - k) b
        if small:
            err = abs(1.0 - k) * self.err + abs(k) * other.err
        else:
            err = abs(k) * self.err + abs(1.0 - k) * other.err
        prod = k * t
        err = err + abs(k) * t_err
        err = err + U32 * (np.abs(prod) + err) + TINY32  # the rounding of the product
        return Bounded.rounded(a + prod if small else b - prod, err)

    def sqrt(self):
        a, e = self.value, self.err
        root = np.sqrt(a)
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.where(e > 0, e / (root + np.sqrt(np.maximum(a - e, 0.0))), 0.0)
        return Bounded.rounded(root, np.minimum(err, np.sqrt(e)))


def bounded_sqrt(x):
    return x.sqrt()
