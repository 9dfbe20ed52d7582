# tests/test_mlp_kernel.py: the C MLP driver (csrc/mlp.c) through MLPKernel — its SGD
# step against finite differences and a float64 NumPy trainer, bit-identical training at
# any thread count and on AVX2 vs AVX-512, evaluation against reference in_top_k, and the
# argument errors. The single kernels it drives are tested in test_nn_kernels.py and
# test_gemm.py.
import functools

import numpy as np
import pytest

from mnistc import _kernels as K

import reference as ref
from conftest import supported_isas

EPS32 = ref.EPS32
F32 = np.float32
SCALE = 1.0 / 255.0


def rng(*key):
    return np.random.default_rng(list(key))


def init_params(sizes, seed, bias_scale=0.0):
    """TensorFlow Mechanics 101 style: weights from a normal truncated at 2 sigma with
    sigma = 1/sqrt(fan_in); biases zero unless bias_scale."""
    g = rng(1000, seed, *sizes)
    weights, biases = [], []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = g.standard_normal((fan_in, fan_out))
        while (np.abs(w) > 2).any():
            w = np.where(np.abs(w) > 2, g.standard_normal(w.shape), w)
        weights.append((w / np.sqrt(fan_in)).astype(F32))
        biases.append((g.standard_normal(fan_out) * bias_scale).astype(F32))
    return weights, biases


def dataset(rows, width, seed, classes=10, zeros=False):
    """Uniform random uint8 images, or (zeros) mostly-zero ones as digits are: 80% of the
    pixels 0, every 7th pixel 0 in all images, every 13th image blank, and image 5 with
    no zero at all. The first layer's kernels skip the reduction steps at which a whole
    register tile of A is 0 (csrc/sparse.c); these images give them every case."""
    g = rng(2000, seed, rows, width)
    images = g.integers(0, 256, (rows, width), dtype=np.uint8)
    if zeros:
        images[g.random(images.shape) < 0.8] = 0
        images[:, ::7] = 0
        images[::13] = 0
        images[5 % rows] = np.maximum(images[5 % rows], 1)
    return images, g.integers(0, classes, rows, dtype=np.uint8)


def index_batches(rows, batch, steps, seed):
    g = rng(3000, seed, rows, batch)
    return [g.integers(0, rows, batch).astype(np.int32) for _ in range(steps)]


def as_float_input(images):
    """What train_step feeds the net: images.astype(float32) * float32(1/255)."""
    return images.astype(F32) * F32(SCALE)


def max_rel_diff(a, b):
    """max |a - b| / max |b| over one parameter array."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


# The optimizers the training tests run: name -> (kind, hyperparameters, learning rate).
# "sgd" is the default fused step; the others store their gradients and then update.
OPTIMIZERS = {
    "sgd": ("sgd", {}, 0.1),
    "sgd-wd": ("sgd", {"weight_decay": 1e-3}, 0.1),
    "momentum": ("momentum", {"momentum": 0.9}, 0.01),
    "nesterov-wd": ("nesterov", {"momentum": 0.9, "weight_decay": 1e-4}, 0.01),
    "adam": ("adam", {}, 1e-4),
    "adamw": ("adamw", {"weight_decay": 0.01}, 1e-4),
}


# How the first layer's weights are stored: as their shape says, or in column panels
# (K.to_panels; the model's layout): the arithmetic must not notice.
LAYOUTS = ("row-major", "first-in-panels")


def blocked(weights, biases, layout="row-major"):
    """(block, weights, biases): copies of the parameters as pieces of one float32 block
    in block order (W0, b0, W1, b1, ...), the first layer's weights in column panels (a
    1-D piece) for the "first-in-panels" layout."""
    arrays = [a for pair in zip(weights, biases) for a in pair]
    stored = [K.to_panels(arrays[0]) if layout == "first-in-panels" else arrays[0], *arrays[1:]]
    block = np.concatenate([np.ascontiguousarray(a).ravel() for a in stored]).astype(F32)
    pieces, offset = [], 0
    for a in stored:
        pieces.append(block[offset : offset + a.size].reshape(a.shape))
        offset += a.size
    return block, pieces[0::2], pieces[1::2]


def row_major_block(block, sizes, layout):
    """A block of `layout` rewritten with every weight row-major."""
    if layout == "row-major":
        return block
    k, n = sizes[0], sizes[1]
    return np.concatenate([K.from_panels(block[: k * n], k, n).ravel(), block[k * n :]])


def as_matrix(weights, sizes):
    """The weights of a net as [k, n] matrices, whatever their layout."""
    first = weights[0] if weights[0].ndim == 2 else K.from_panels(weights[0], *sizes[:2])
    return (first, *weights[1:])


def kernel_with(weights, biases, batch, optimizer, layout="row-major"):
    """(net, block, weights, biases, state): an MLPKernel over a block holding copies of
    the parameters in `layout` (LAYOUTS), trained by OPTIMIZERS[optimizer] from zero state."""
    kind, hyper, _ = OPTIMIZERS[optimizer]
    block, w, b = blocked(weights, biases, layout)
    net = K.MLPKernel(w, b, batch)
    state = tuple(np.zeros_like(block) for _ in K.OPTIMIZER_STATE[kind])
    if optimizer != "sgd":
        net.set_optimizer(kind, block, state, **hyper)
    return net, block, w, b, state


@functools.lru_cache(maxsize=None)
def train_c(
    sizes,
    batch,
    steps,
    isa,
    n_threads,
    lr=None,
    seed=0,
    optimizer="sgd",
    layout="row-major",
    zeros=False,
):
    """(weights, biases, losses, state) after `steps` C training steps with
    OPTIMIZERS[optimizer] (lr None: its rate) on parameters in `layout` (LAYOUTS), on
    dataset(..., zeros); cached, treat as read-only."""
    images, labels = dataset(2000, sizes[0], seed, sizes[-1], zeros)
    lr = OPTIMIZERS[optimizer][2] if lr is None else lr
    previous = K.isa_active()
    K.set_isa(isa)
    try:
        net, _, weights, biases, state = kernel_with(
            *init_params(sizes, seed), batch, optimizer, layout
        )
        losses = [
            net.train_step(images, labels, idx, lr, n_threads=n_threads)
            for idx in index_batches(2000, batch, steps, seed)
        ]
    finally:
        K.set_isa(previous)
    return tuple(weights), tuple(biases), np.array(losses), state


def assert_same_training(a, b, what):
    """Two train_c results are the same bits: losses, parameters (compared in row-major
    order, whatever their layout) and, for runs of one layout, the optimizer state."""
    (wa, ba, la, sa), (wb, bb, lb, sb) = a, b
    assert la.tobytes() == lb.tobytes(), f"{what}: losses differ"
    for i, (x, y) in enumerate(zip(wa + ba, wb + bb)):
        if x.ndim != y.ndim:  # one first layer in panels, the other row-major
            x, y = (
                K.from_panels(v, *max(x, y, key=np.ndim).shape) if v.ndim == 1 else v
                for v in (x, y)
            )
        assert x.tobytes() == y.tobytes(), (
            f"{what}: parameter {i} differs, max rel {max_rel_diff(x, y):.3g}"
        )
    same_layout = all(x.shape == y.shape for x, y in zip(wa, wb))
    for i, (x, y) in enumerate(zip(sa, sb) if same_layout else ()):
        assert x.tobytes() == y.tobytes(), f"{what}: optimizer state {i} differs"


# ------------------------------------------------------------------ gradient check


def relu_pattern(params, x):
    """The sign pattern of every hidden pre-activation, and the smallest |pre-activation|."""
    h = np.asarray(x, np.float64)
    pattern, margin = [], np.inf
    for w, b in params[:-1]:
        z = h @ w + b
        pattern.append(z > 0)
        margin = min(margin, np.abs(z).min())
        h = np.maximum(z, 0.0)
    return pattern, margin


def finite_difference_gradients(params, x, labels, h):
    """4th-order central differences of reference.mlp_loss in float64, for every
    parameter; also reports whether any perturbation flipped a ReLU (then the check would
    straddle a kink and be meaningless)."""
    base_pattern, _ = relu_pattern(params, x)
    flipped = False
    grads = []
    for layer in range(len(params)):
        pair = []
        for which in (0, 1):
            target = params[layer][which]
            g = np.zeros_like(target)
            for at in np.ndindex(target.shape):
                values = []
                for step in (2 * h, h, -h, -2 * h):
                    moved = [[w.copy(), b.copy()] for w, b in params]
                    moved[layer][which][at] += step
                    pattern, _ = relu_pattern(moved, x)
                    flipped |= any((p != q).any() for p, q in zip(pattern, base_pattern))
                    values.append(ref.mlp_loss(moved, x, labels))
                f2, f1, fm1, fm2 = values
                g[at] = (-f2 + 8 * f1 - 8 * fm1 + fm2) / (12 * h)
            pair.append(g)
        grads.append(tuple(pair))
    return grads, flipped


@pytest.fixture(scope="module")
def tiny_problem():
    """A 6-5-4-3 net with random weights and biases, batch 7 drawn (with repeats) from 12
    uint8 images, redrawn until no hidden pre-activation is within 1e-3 of the ReLU kink
    and no finite-difference step of h = 1e-3 changes which units are active."""
    sizes, h = (6, 5, 4, 3), 1e-3
    for seed in range(100):
        g = rng(4000, seed)
        weights = [g.standard_normal((a, b)).astype(F32) for a, b in zip(sizes, sizes[1:])]
        biases = [(0.5 * g.standard_normal(b)).astype(F32) for b in sizes[1:]]
        images = g.integers(0, 256, (12, 6), dtype=np.uint8)
        labels = g.integers(0, 3, 12, dtype=np.uint8)
        idx = g.integers(0, 12, 7).astype(np.int32)
        x = as_float_input(images[idx]).astype(np.float64)
        params = [(w.astype(np.float64), b.astype(np.float64)) for w, b in zip(weights, biases)]
        _, margin = relu_pattern(params, x)
        if margin <= 1e-3:
            continue
        fd, flipped = finite_difference_gradients(params, x, labels[idx], h)
        if not flipped:
            return dict(
                weights=weights,
                biases=biases,
                images=images,
                labels=labels,
                idx=idx,
                x=x,
                params=params,
                fd=fd,
            )
    raise AssertionError("no tiny net away from the ReLU kinks in 100 draws")


@pytest.mark.parametrize("shape", [(100, 784), 7, (3, 5), 0])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_aligned_zeros(shape, dtype):
    a = K.aligned_zeros(shape, dtype)
    assert a.shape == np.zeros(shape).shape and a.dtype == dtype and a.flags.c_contiguous
    assert a.flags.writeable and not a.any()
    assert a.ctypes.data % 64 == 0 or a.size == 0


def test_model_memory_starts_on_cache_lines():
    """The parameters, the optimizer's state and gradients and the step's buffers (which
    NumPy would start 16 bytes into a line) begin on 64-byte lines."""
    from mnistc.model import MLP
    from mnistc.optim import Optimizer

    model = MLP((128, 32), 100, input_size=784, num_classes=10, optimizer=Optimizer("adam"))
    arrays = [model._block, *model._optimizer_state.values(), model._kernel.parameter_gradients]
    arrays += [*model._kernel.activations, *model._kernel.gradients]
    assert all(a.ctypes.data % 64 == 0 for a in arrays)


def test_reference_backprop_matches_finite_differences(tiny_problem):
    """The float64 backprop the reference trainer uses is itself right (to ~1e-9: FD
    truncation O(h^4) and cancellation eps64 |L| / h)."""
    p = tiny_problem
    _, grads = ref.mlp_gradients(p["params"], p["x"], p["labels"][p["idx"]])
    for layer, (g, fd) in enumerate(zip(grads, p["fd"])):
        for which in (0, 1):
            ref.assert_close(
                g[which],
                fd[which],
                1e-9 + 1e-7 * np.abs(fd[which]),
                f"reference backprop layer {layer} {'wb'[which]}",
            )


@pytest.mark.parametrize("capacity", [7, 9])
def test_train_step_gradient_check(isa, n_threads, tiny_problem, capacity):
    """With lr = 1 a step moves every parameter by exactly -dL/dtheta (as computed in
    float32). Compared with float64 finite differences, elementwise:
      |dtheta + g_fd| <= 1e-3 |g_fd| + 2 eps32 (|theta| + |g_fd|).
    1e-3 relative is the sklearn-style check (float32 forward/backward errors are ~1e-6
    here); the second term is the float32 rounding of theta - g itself, which dominates
    where |g| << |theta| and is exactly 0 == 0 for units dead on the whole batch.
    capacity 9 > batch 7 checks a partial batch."""
    p = tiny_problem
    weights = [w.copy() for w in p["weights"]]
    biases = [b.copy() for b in p["biases"]]
    net = K.MLPKernel(weights, biases, capacity)
    loss = net.train_step(p["images"], p["labels"], p["idx"], 1.0, SCALE, n_threads=n_threads)
    want_loss = ref.mlp_loss(p["params"], p["x"], p["labels"][p["idx"]])
    row_tol, _ = ref.softmax_xent_tolerance(
        ref.mlp_forward(p["params"], p["x"]), p["labels"][p["idx"]]
    )
    assert abs(loss - want_loss) <= row_tol.mean() + 1e-5 * want_loss
    for layer in range(3):
        for which, (new, old) in enumerate(
            [(weights[layer], p["weights"][layer]), (biases[layer], p["biases"][layer])]
        ):
            step = new.astype(np.float64) - old
            g = p["fd"][layer][which]
            bound = 1e-3 * np.abs(g) + 2 * EPS32 * (np.abs(old) + np.abs(g))
            ref.assert_close(-step, g, bound, f"layer {layer} {'wb'[which]} on {isa}")


def test_train_step_with_label_smoothing_moves_by_the_smoothed_gradient(
    isa, n_threads, tiny_problem
):
    """The same check as above against the float64 backprop of the smoothed loss (itself
    checked against finite differences of the plain loss above, and sharing its code)."""
    p = tiny_problem
    weights = [w.copy() for w in p["weights"]]
    biases = [b.copy() for b in p["biases"]]
    net = K.MLPKernel(weights, biases, 7)
    labels = p["labels"][p["idx"]]
    loss = net.train_step(
        p["images"], p["labels"], p["idx"], 1.0, SCALE, n_threads=n_threads, label_smoothing=0.1
    )
    want_loss, grads = ref.mlp_gradients(p["params"], p["x"], labels, label_smoothing=0.1)
    assert abs(loss - want_loss) <= 1e-5 * want_loss
    assert abs(loss - ref.mlp_loss(p["params"], p["x"], labels)) > 1e-3  # it is another loss
    for layer in range(3):
        for which, (new, old) in enumerate(
            [(weights[layer], p["weights"][layer]), (biases[layer], p["biases"][layer])]
        ):
            step = new.astype(np.float64) - old
            g = grads[layer][which]
            bound = 1e-3 * np.abs(g) + 2 * EPS32 * (np.abs(old) + np.abs(g))
            ref.assert_close(-step, g, bound, f"smoothed layer {layer} {'wb'[which]} on {isa}")


def test_train_step_scratch_is_consistent(tiny_problem):
    """The exposed scratch after a step: logits = a forward pass of the old parameters,
    and the last layer's dZ = softmax_xent's dlogits of those logits (same kernel)."""
    p = tiny_problem
    weights = [w.copy() for w in p["weights"]]
    biases = [b.copy() for b in p["biases"]]
    net = K.MLPKernel(weights, biases, 7)
    net.train_step(p["images"], p["labels"], p["idx"], 0.5)
    logits = net.activations[-1]
    _, _, dz = K.softmax_xent(logits, p["labels"][p["idx"]].astype(np.int32))
    np.testing.assert_array_equal(net.gradients[-1], dz)
    want = ref.mlp_forward(p["params"], p["x"])
    tol = 1e-5 * (1 + np.abs(want))  # 6-5-4-3: a few dozen float32 roundings at most
    ref.assert_close(logits, want, tol, "logits in scratch")


# --------------------------------------------------- a float64 reference trainer

REF_SIZES, REF_BATCH, REF_STEPS = (784, 32, 16, 10), 50, 100


@functools.lru_cache(maxsize=None)
def reference_run(optimizer):
    """(initial weights, biases, float64 trainer's params and losses, its loss over all
    the rows it trained on, before and after)."""
    kind, hyper, lr = OPTIMIZERS[optimizer]
    images, labels = dataset(2000, REF_SIZES[0], 0, REF_SIZES[-1])
    weights, biases = init_params(REF_SIZES, 0)
    batches = index_batches(2000, REF_BATCH, REF_STEPS, 0)
    params, losses = ref.train(
        list(zip(weights, biases)), images, labels, batches, lr, kind, **hyper
    )
    seen = np.concatenate(batches)
    x = as_float_input(images[seen])
    learned = [ref.mlp_loss(p, x, labels[seen]) for p in (list(zip(weights, biases)), params)]
    return weights, biases, params, losses, learned


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_matches_float64_reference_trainer(isa, optimizer):
    """100 steps (batch 50) of 784-32-16-10 on random uint8 data with each optimizer: the
    C trainer's parameters stay within 1e-4 of the float64 trainer's, relative to each
    array's largest entry, and each step's loss within 1e-5 relative. float32 rounding
    (forward/backward sums of up to 784 terms, ~1e-6 relative each) accumulates over
    the steps; we observe <= 9e-7 (parameters) and 3e-8 (losses) for SGD and <= 5e-6
    and 6e-8 for the others, so 1e-4 is generous yet still catches any wrong term (a
    missing 1/m, a transposed gradient or a stale weight moves parameters by ~1e-2
    relative; Adam moves each weight by ~lr = 1e-4, 1.4e-3 of the largest, per step
    whatever its gradient's size, so a wrong moment or bias correction shows at once).
    Larger rates make the runs part: nesterov at lr 0.05 (effectively 0.5) brings a
    pre-activation to 7e-8 at step 16, where the two runs' ReLUs disagree, and 37 units
    disagree by step 20. That is chaos, not rounding, so the rates stay low."""
    w0, b0, want, want_losses, learned = reference_run(optimizer)
    weights, biases, losses, _ = train_c(
        REF_SIZES, REF_BATCH, REF_STEPS, isa, 2, optimizer=optimizer
    )
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5, atol=0)
    assert learned[1] < learned[0] - 0.03  # it does learn the (random) labels it saw
    for layer, (w, b) in enumerate(want):
        for which, (got, expect, start) in enumerate(
            [(weights[layer], w, w0[layer]), (biases[layer], b, b0[layer])]
        ):
            err = max_rel_diff(got, expect)
            assert err <= 1e-4, f"layer {layer} {'wb'[which]} on {isa}: max rel err {err:.3g}"
            # And it moved: the comparison is not of two copies of the initial state.
            assert np.abs(expect - start).max() > 100 * np.abs(got - expect).max()


# --------------------------------------------------- bit-identical training

NARROW = ((784, 128, 32, 10), 100, 20)  # Mechanics 101's net and batch
WIDE = ((784, 512, 256, 10), 256, 5)  # threaded GEMMs; 5 steps keep it quick


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("config", [NARROW, WIDE], ids=["784-128-32-10", "784-512-256-10"])
def test_training_bit_identical_across_threads(isa, n_threads, config, optimizer):
    sizes, batch, steps = config
    assert_same_training(
        train_c(sizes, batch, steps, isa, n_threads, optimizer=optimizer),
        train_c(sizes, batch, steps, isa, 1, optimizer=optimizer),
        f"{optimizer} on {isa} at {n_threads} threads vs 1",
    )


# A first layer 100 wide ends in a panel of 4 columns, 48 wide in one of 16.
PANELED = [NARROW, WIDE, ((784, 100, 10), 50, 12), ((300, 48, 20, 10), 30, 12)]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize(
    "config", PANELED, ids=["784-128-32-10", "784-512-256-10", "784-100-10", "300-48-20-10"]
)
def test_paneled_weights_train_bit_identically(isa, n_threads, config, optimizer):
    """A first layer in column panels changes how its GEMMs are cut and how a team splits
    them, never a product or the order of a sum: the same bits as row-major weights at
    one thread, at any thread count. The optimizer state, in the block's layout, must
    then hold the same values in the same places."""
    sizes, batch, steps = config
    layout = "first-in-panels"
    got = train_c(sizes, batch, steps, isa, n_threads, optimizer=optimizer, layout=layout)
    want = train_c(sizes, batch, steps, isa, 1, optimizer=optimizer)
    assert_same_training(got, want, f"{optimizer}, {layout}, on {isa} at {n_threads} threads")
    for i, (x, y) in enumerate(zip(got[3], want[3])):
        x = row_major_block(x, sizes, layout)
        assert x.tobytes() == y.tobytes(), f"{optimizer}, {layout}: optimizer state {i} differs"


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_paneled_weights_on_small_batches(isa, n_threads, optimizer):
    """Batches of 1 (the GEMMs' row path), 2, 13 and 100 rows: a first layer in panels
    trains to the same bits as row-major weights on one thread."""
    sizes = (784, 128, 32, 10)
    images, labels = dataset(500, sizes[0], 4, sizes[-1])
    runs = []
    for layout, threads in (("row-major", 1), ("first-in-panels", n_threads)):
        net, _, weights, biases, state = kernel_with(*init_params(sizes, 4), 100, optimizer, layout)
        losses = [
            net.train_step(images, labels, idx[:rows], OPTIMIZERS[optimizer][2], n_threads=threads)
            for rows, idx in zip((1, 2, 13, 100, 1), index_batches(500, 100, 5, 4))
        ]
        runs.append((tuple(weights), tuple(biases), np.array(losses), state))
    assert_same_training(runs[1], runs[0], f"{optimizer} on {isa} at {n_threads} threads")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_without_packing_memory_is_bit_identical(optimizer, layout):
    """A threaded step reserves its GEMMs' packing buffer before its parallel region; when
    that cannot be had (gemm.c's test cap), the step runs on one thread and each GEMM takes
    its unbuffered path: the same bits, partial batches included."""
    import ctypes

    limit = ctypes.CDLL(K.__file__).mnc_gemm_test_pack_limit
    limit.argtypes, limit.restype = [ctypes.c_size_t], ctypes.c_size_t
    sizes, batch, steps = NARROW
    images, labels = dataset(2000, sizes[0], 3, sizes[-1])
    runs = []
    for cap in (ctypes.c_size_t(-1).value, 0):
        net, _, weights, biases, state = kernel_with(
            *init_params(sizes, 3), batch, optimizer, layout
        )
        limit(cap)
        try:
            losses = [
                net.train_step(
                    images, labels, idx[: batch - i % 7], OPTIMIZERS[optimizer][2], n_threads=2
                )
                for i, idx in enumerate(index_batches(2000, batch, 4, 3))
            ]
        finally:
            calls = limit(ctypes.c_size_t(-1).value)
        assert (calls > 0) == (cap == 0)
        runs.append((tuple(weights), tuple(biases), np.array(losses), state))
    assert_same_training(runs[1], runs[0], f"{optimizer}: unbuffered vs buffered")


AWKWARD = ((37, 45, 10), 29, 12)  # no multiple of the 12×32 tile, of 16 lanes or a panel


@pytest.mark.skipif("avx512" not in supported_isas(), reason="no AVX-512 on this machine")
@pytest.mark.parametrize("zeros", [False, True], ids=["uniform", "mostly-zero"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize(
    "config", [NARROW, WIDE, AWKWARD], ids=["784-128-32-10", "784-512-256-10", "37-45-10"]
)
def test_avx2_and_avx512_train_identically(config, optimizer, zeros):
    """The GEMM contract promises the same FMA sequence on both targets, and the
    optimizers' update is the same bits on every target. On AVX-512 the first layer skips
    the steps at which a whole tile of its input is 0 (csrc/sparse.c); AVX2 does them."""
    sizes, batch, steps = config
    assert_same_training(
        train_c(sizes, batch, steps, "avx2", 2, optimizer=optimizer, zeros=zeros),
        train_c(sizes, batch, steps, "avx512", 2, optimizer=optimizer, zeros=zeros),
        f"{optimizer}: avx2 vs avx512",
    )


@pytest.mark.skipif("avx512" not in supported_isas(), reason="no AVX-512 on this machine")
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("config", [NARROW, AWKWARD], ids=["784-128-32-10", "37-45-10"])
def test_zero_skipping_first_layer_is_the_dense_one(config, layout, n_threads):
    """Mostly-zero images, both layouts of W_0, 1-3 threads: AVX-512's zero-skipping
    first layer trains to the bits of AVX2's dense GEMMs on one thread, and evaluates
    (in chunks, the last partial) to the same logits, which match float64."""
    sizes, batch, steps = config
    assert_same_training(
        train_c(sizes, batch, steps, "avx2", 1, layout=layout, zeros=True),
        train_c(sizes, batch, steps, "avx512", n_threads, layout=layout, zeros=True),
        f"{layout}, {n_threads} threads: avx2 vs avx512",
    )
    weights, biases = init_params(sizes, 7, bias_scale=0.1)
    images, labels = dataset(250, sizes[0], 7, sizes[-1], zeros=True)
    logits = {}
    for isa in ("avx2", "avx512"):
        previous = K.isa_active()
        K.set_isa(isa)
        try:
            _, w, b = blocked(weights, biases, layout)
            logits[isa] = np.full((250, sizes[-1]), np.nan, F32)
            K.MLPKernel(w, b, batch).evaluate(
                images, labels, logits=logits[isa], n_threads=n_threads
            )
        finally:
            K.set_isa(previous)
    np.testing.assert_array_equal(logits["avx512"], logits["avx2"])
    params = list(zip(weights, biases))
    x = as_float_input(images)
    want = ref.mlp_forward(params, x)
    ref.assert_close(logits["avx512"], want, ref.mlp_forward_tolerance(params, x), "vs float64")


@pytest.mark.skipif(len(supported_isas()) < 2, reason="only the generic target here")
def test_generic_vs_fma_training():
    """Generic may round products separately (no FMA): not bit-identical, but close.
    Measured and printed over 100 steps of the Mechanics 101 net (lr 0.01, batch 100):
    each step's roundings differ by ~eps32 relative and SGD carries them along, so after
    100 steps we allow 1e-5 of each array's scale (100 steps x ~1e-7); observed ~2e-7.
    A real discrepancy (a wrong or missing term) would be orders of magnitude larger."""
    best = supported_isas()[-1]
    sizes, batch, steps = NARROW[0], NARROW[1], 100
    wg, bg, lg, _ = train_c(sizes, batch, steps, "generic", 2, 0.01)
    wf, bf, lf, _ = train_c(sizes, batch, steps, best, 2, 0.01)
    diffs = [max_rel_diff(a, b) for a, b in zip(wg + bg, wf + bf)]
    loss_diff = float(np.abs(lg - lf).max() / np.abs(lf).max())
    print(
        f"\ngeneric vs {best} after {steps} steps: max rel param diff per array "
        f"{['%.3g' % d for d in diffs]}, max rel loss diff {loss_diff:.3g}"
    )
    assert max(diffs) <= 1e-5 and loss_diff <= 1e-5


# ------------------------------------------------------------------------- evaluate


def undecidable_rows(logits, noise, labels, k):
    """Rows whose in_top_k(k) could flip if each logit moved by its noise: the number of
    competitors surely greater is < k but the number possibly greater is >= k."""
    rows = np.arange(len(labels))
    gap = logits - logits[rows, labels][:, None]
    margin = noise + noise[rows, labels][:, None]
    others = np.ones(logits.shape, bool)
    others[rows, labels] = False
    surely = ((gap > margin) & others).sum(axis=1)
    possibly = ((gap >= -margin) & others).sum(axis=1)
    return (surely < k) & (possibly >= k)


@pytest.fixture(scope="module")
def eval_problem():
    """A random 784-128-32-10 net with biases and 250 rows (2.5 batches of 100), drawn
    until no row's in_top_k (k = 1, 3) is within float32 noise of flipping (noise from
    reference.mlp_forward_tolerance(probabilistic=True))."""
    sizes = (784, 128, 32, 10)
    for seed in range(50):
        weights, biases = init_params(sizes, 50 + seed, bias_scale=0.1)
        images, labels = dataset(250, 784, 50 + seed)
        params = list(zip(weights, biases))
        x = as_float_input(images)
        logits = ref.mlp_forward(params, x)
        noise = ref.mlp_forward_tolerance(params, x, probabilistic=True)
        if not any(undecidable_rows(logits, noise, labels, k).any() for k in (1, 3)):
            return dict(
                weights=weights,
                biases=biases,
                images=images,
                labels=labels,
                logits=logits,
                err=ref.mlp_forward_tolerance(params, x),
            )
    raise AssertionError("every draw had a near-tie")


@pytest.mark.parametrize("k", [1, 3])
def test_evaluate_counts_match_reference(isa, n_threads, eval_problem, k):
    p = eval_problem
    live = [w.copy() for w in p["weights"]], [b.copy() for b in p["biases"]]
    net = K.MLPKernel(*live, 100)
    logits = np.full((250, 10), np.nan, F32)
    got = net.evaluate(p["images"], p["labels"], k=k, logits=logits, n_threads=n_threads)
    want = ref.in_top_k(p["logits"], p["labels"], k)
    assert got == want.sum()
    assert 0 < got < 250 or k > 1  # not a degenerate all-or-nothing check
    ref.assert_close(logits, p["logits"], p["err"], "evaluate logits vs float64")
    # Evaluation leaves the live parameters alone.
    assert snapshot(*live) == snapshot(p["weights"], p["biases"])


def test_evaluate_logits_equal_explicit_forward(isa, eval_problem):
    """All 250 rows counted (more than a batch: chunks of evaluate's own scratch, the last
    partial), and the logits are bit-identical to a forward pass built from the single
    kernels and to an evaluation of a batch's worth on the net's own buffers (the GEMM's
    rounding does not depend on how many rows it is given)."""
    p = eval_problem
    net = K.MLPKernel(list(p["weights"]), list(p["biases"]), 100)
    logits = np.empty((250, 10), F32)
    assert net.evaluate(p["images"], None, logits=logits) == 0  # labels=None: no count
    x, _ = K.gather_scale(p["images"], p["labels"], np.arange(250, dtype=np.int32))
    h = x
    for layer, (w, b) in enumerate(zip(p["weights"], p["biases"])):
        h = K.sgemm(h, w, bias=b, relu=layer < 2)
    np.testing.assert_array_equal(logits, h)
    first_batch = np.empty((100, 10), F32)
    assert net.evaluate(p["images"][:100], None, logits=first_batch) == 0
    np.testing.assert_array_equal(first_batch, logits[:100])
    np.testing.assert_array_equal(net.activations[-1], first_batch)  # a batch: on buf
    # Counting every row, none dropped: the per-row hits add up.
    correct = ref.in_top_k(p["logits"], p["labels"], 1)
    assert net.evaluate(p["images"], p["labels"]) == correct.sum()
    assert net.evaluate(p["images"][:200], p["labels"][:200]) == correct[:200].sum()
    assert net.evaluate(p["images"][200:], p["labels"][200:]) == correct[200:].sum()
    assert net.evaluate(p["images"][:1], p["labels"][:1]) == correct[:1].sum()
    assert net.evaluate(p["images"][:0], p["labels"][:0]) == 0


@pytest.mark.parametrize("batch", [7, 33])
def test_evaluate_across_threads_is_bit_identical(isa, n_threads, eval_problem, batch):
    """Many chunks (250 rows in chunks of 7 or 33), so threads take whole chunks on their
    own scratch: the logits are the same bits as one thread's, and every row counts."""
    p = eval_problem
    net = K.MLPKernel(list(p["weights"]), list(p["biases"]), batch)
    one = np.empty((250, 10), F32)
    many = np.full((250, 10), np.nan, F32)
    hits_one = net.evaluate(p["images"], p["labels"], logits=one, n_threads=1)
    hits_many = net.evaluate(p["images"], p["labels"], logits=many, n_threads=n_threads)
    np.testing.assert_array_equal(many, one)
    assert hits_many == hits_one == ref.in_top_k(p["logits"], p["labels"], 1).sum()
    unlabelled = np.full((250, 10), np.nan, F32)  # inference: logits only
    assert net.evaluate(p["images"], None, logits=unlabelled, n_threads=n_threads) == 0
    np.testing.assert_array_equal(unlabelled, one)
    ref.assert_close(many, p["logits"], p["err"], "evaluate logits vs float64")


def test_evaluate_paneled_weights_bit_identical(isa, n_threads, eval_problem):
    """Evaluation with the first layer in panels: the same logits, bit for bit, as with
    row-major weights, and the same count."""
    p = eval_problem
    _, weights, biases = blocked(p["weights"], p["biases"], "first-in-panels")
    assert weights[0].ndim == 1
    want = np.empty((250, 10), F32)
    got = np.full((250, 10), np.nan, F32)
    hits_want = K.MLPKernel(list(p["weights"]), list(p["biases"]), 33).evaluate(
        p["images"], p["labels"], logits=want, n_threads=1
    )
    hits = K.MLPKernel(weights, biases, 33).evaluate(
        p["images"], p["labels"], logits=got, n_threads=n_threads
    )
    np.testing.assert_array_equal(got, want)
    assert hits == hits_want


def test_evaluate_errors(eval_problem):
    p = eval_problem
    net = K.MLPKernel(list(p["weights"]), list(p["biases"]), 100)
    bad = p["labels"].copy()
    bad[150] = 10
    with pytest.raises(ValueError, match=r"labels\[150\] = 10 is outside \[0, 10\)"):
        net.evaluate(p["images"], bad)
    with pytest.raises(ValueError, match="columns"):
        net.evaluate(np.zeros((5, 783), np.uint8))
    with pytest.raises(ValueError, match="k must be"):
        net.evaluate(p["images"], p["labels"], k=0)
    with pytest.raises(ValueError, match="logits"):
        net.evaluate(p["images"], p["labels"], logits=np.empty((249, 10), F32))
    with pytest.raises(TypeError, match="images"):
        net.evaluate(p["images"].astype(F32))


# --------------------------------------------------------------------------- errors


@pytest.fixture
def small_net():
    weights, biases = init_params((20, 8, 10), 7, bias_scale=0.1)
    images, labels = dataset(30, 20, 7)
    return K.MLPKernel(weights, biases, 5), weights, biases, images, labels


def snapshot(weights, biases):
    return [a.tobytes() for a in weights + biases]


def test_train_step_bad_label_leaves_parameters(small_net):
    net, weights, biases, images, labels = small_net
    before = snapshot(weights, biases)
    labels = labels.copy()
    labels[17] = 10
    with pytest.raises(ValueError, match=r"labels\[17\] = 10 is outside \[0, 10\)"):
        net.train_step(images, labels, np.array([3, 17, 4], np.int32), 0.1)
    assert snapshot(weights, biases) == before
    labels[17] = 255
    with pytest.raises(ValueError, match=r"labels\[17\] = 255"):
        net.train_step(images, labels, np.array([17], np.int32), 0.1)
    assert snapshot(weights, biases) == before
    net.train_step(images, labels, np.array([3, 4], np.int32), 0.1)  # still usable
    assert snapshot(weights, biases) != before


@pytest.mark.parametrize(
    "idx, message",
    [
        (np.array([0, 30], np.int32), r"idx\[1\] = 30 is outside \[0, 30\)"),
        (np.array([-1], np.int32), r"idx\[0\] = -1 is outside"),
        (np.arange(6, dtype=np.int32), r"idx must hold 1..5 indices, got 6"),
        (np.zeros(0, np.int32), r"idx must hold 1..5 indices, got 0"),
        (np.zeros((2, 1), np.int32), r"idx must be 1-D"),
    ],
)
def test_train_step_bad_indices(small_net, idx, message):
    net, weights, biases, images, labels = small_net
    before = snapshot(weights, biases)
    with pytest.raises(ValueError, match=message):
        net.train_step(images, labels, idx, 0.1)
    assert snapshot(weights, biases) == before


def test_train_step_bad_arrays(small_net):
    net, weights, biases, images, labels = small_net
    idx = np.array([1, 2], np.int32)
    with pytest.raises(ValueError, match="images have 21 columns, the model expects 20"):
        net.train_step(np.zeros((30, 21), np.uint8), labels, idx, 0.1)
    with pytest.raises(TypeError, match="idx"):
        net.train_step(images, labels, idx.astype(np.int64), 0.1)
    with pytest.raises(TypeError, match="images"):
        net.train_step(images.astype(F32), labels, idx, 0.1)
    with pytest.raises(TypeError, match="labels"):
        net.train_step(images, labels.astype(np.int32), idx, 0.1)
    with pytest.raises(ValueError, match="labels"):
        net.train_step(images, labels[:29], idx, 0.1)


def test_mlpkernel_constructor_checks():
    w, b = init_params((6, 5, 3), 9)
    with pytest.raises(ValueError, match=r"weights\[1\] has 4 rows, expected 5"):
        K.MLPKernel([w[0], np.zeros((4, 3), F32)], b, 4)
    with pytest.raises(ValueError, match=r"biases\[0\]"):
        K.MLPKernel(w, [np.zeros(4, F32), b[1]], 4)
    with pytest.raises(TypeError, match=r"weights\[0\]"):
        K.MLPKernel([w[0].astype(np.float64), w[1]], b, 4)
    # C-contiguous only: every other row is not, and neither is a transpose.
    with pytest.raises(ValueError, match=r"weights\[0\] must be C-contiguous"):
        K.MLPKernel([np.repeat(w[0], 2, axis=0)[::2], w[1]], b, 4)
    with pytest.raises(ValueError, match=r"weights\[0\] must be C-contiguous"):
        K.MLPKernel([np.asfortranarray(w[0]), w[1]], b, 4)
    # A first layer in panels: 1-D, a whole number of rows of biases[0]'s width.
    panels = K.to_panels(w[0])
    assert K.MLPKernel([panels, w[1]], b, 4).layer_sizes == (6, 5, 3)
    with pytest.raises(ValueError, match=r"weights\[0\] in panels has 29 values"):
        K.MLPKernel([panels[:29], w[1]], b, 4)
    with pytest.raises(ValueError, match=r"weights\[1\] must be 2-D"):
        K.MLPKernel([w[0], K.to_panels(w[1])], b, 4)
    with pytest.raises(ValueError, match="batch_size"):
        K.MLPKernel(w, b, 0)
    with pytest.raises(ValueError, match="one bias per weight"):
        K.MLPKernel(w, b[:1], 4)


def test_readonly_data_accepted(small_net):
    """Data sets are often read-only (mnistc.data freezes its arrays, np.load with
    mmap_mode='r'): train_step and evaluate only read them."""
    net, weights, biases, images, labels = small_net
    frozen = [a.copy() for a in (images, labels)]
    for a in frozen:
        a.flags.writeable = False
    idx = np.array([1, 2, 3], np.int32)
    idx.flags.writeable = False
    twin = K.MLPKernel([w.copy() for w in weights], [b.copy() for b in biases], 5)
    loss = twin.train_step(images, labels, idx.copy(), 0.1)
    assert net.train_step(*frozen, idx, 0.1) == loss
    assert net.evaluate(*frozen, k=2) == twin.evaluate(images, labels, k=2)


def test_mlpkernel_readonly_parameters_named():
    """train_step updates the parameters in place, so read-only ones are refused — with a
    ValueError that names the array, like every other argument check."""
    w, b = init_params((6, 5, 3), 9)
    w[1].flags.writeable = False
    with pytest.raises(ValueError, match=r"weights\[1\]"):
        K.MLPKernel(w, b, 4)


# ----------------------------------------------------- optimizers in the training step


def single_kernel_step(block, weights, biases, state, images, labels, idx, t, optimizer):
    """One training step from the single kernels: the gradients of every layer into a
    block of block's layout (GEMM with beta 0, colsum), then optimizer_update on the
    whole block. Returns the gradient block."""
    kind, hyper, lr = OPTIMIZERS[optimizer]
    x, y = K.gather_scale(images, labels, idx)
    h = [x]
    for layer, (w, b) in enumerate(zip(weights, biases)):
        h.append(K.sgemm(h[-1], w, bias=b, relu=layer + 1 < len(weights)))
    m = len(idx)
    _, _, dz = K.softmax_xent(h[-1], y, grad_scale=F32(1) / F32(m))
    grads = []
    for layer in range(len(weights) - 1, -1, -1):
        grads = [K.sgemm(h[layer], dz, trans_a=True), K.colsum_axpy(dz)] + grads
        if layer > 0:
            dz = K.sgemm(dz, weights[layer], trans_b=True, relu_mask=h[layer])
    flat = np.concatenate([g.ravel() for g in grads])
    K.optimizer_update(kind, block, flat, state, lr=lr, step=t, **hyper)
    return flat


@pytest.mark.parametrize("optimizer", [o for o in OPTIMIZERS if o != "sgd"])
def test_stored_gradient_step_is_the_single_kernels(isa, optimizer):
    """The driver's stored-gradient step is, bit for bit, the gradients from the single
    kernels at the parameters' offsets followed by one optimizer_update over the block,
    step after step (the step count advancing): parameters, state and gradient block."""
    sizes, batch = (30, 20, 12, 10), 16
    images, labels = dataset(200, sizes[0], 5)
    weights, biases = init_params(sizes, 5, bias_scale=0.1)
    net, block, _, _, state = kernel_with(weights, biases, batch, optimizer)
    twin_block, twin_w, twin_b = blocked(weights, biases)
    twin_state = tuple(np.zeros_like(twin_block) for _ in state)
    for t, idx in enumerate(index_batches(200, batch, 8, 5), start=1):
        idx = idx[: batch - t % 3]  # partial batches too
        net.train_step(images, labels, idx, OPTIMIZERS[optimizer][2])
        grads = single_kernel_step(
            twin_block, twin_w, twin_b, twin_state, images, labels, idx, t, optimizer
        )
        assert net.optimizer_step == t
        assert net.parameter_gradients.tobytes() == grads.tobytes(), f"gradients at step {t}"
        assert block.tobytes() == twin_block.tobytes(), f"parameters at step {t}"
        for a, c in zip(state, twin_state):
            assert a.tobytes() == c.tobytes(), f"optimizer state at step {t}"


def test_fused_sgd_path_is_unchanged_and_stores_nothing(small_net):
    """Without set_optimizer, or with plain sgd set, the step is the fused SGD one (the
    tutorial's bits): no gradient block, the same parameters either way."""
    net, weights, biases, images, labels = small_net
    assert net.optimizer == "sgd" and net.parameter_gradients is None
    block, w, b = blocked(weights, biases)
    twin = K.MLPKernel(w, b, 5)
    twin.set_optimizer("sgd", block)
    assert twin.parameter_gradients is None
    for idx in index_batches(30, 5, 4, 1):
        assert net.train_step(images, labels, idx, 0.1) == twin.train_step(images, labels, idx, 0.1)
    assert snapshot(weights, biases) == snapshot(w, b)
    assert net.optimizer_step == twin.optimizer_step == 4


def test_train_step_bad_label_leaves_optimizer_state():
    weights, biases = init_params((20, 8, 10), 7, bias_scale=0.1)
    images, labels = dataset(30, 20, 7)
    net, block, _, _, state = kernel_with(weights, biases, 5, "adam")
    net.train_step(images, labels, np.array([1, 2], np.int32), 1e-3)
    before = [block.tobytes()] + [a.tobytes() for a in state]
    labels = labels.copy()
    labels[17] = 10
    with pytest.raises(ValueError, match=r"labels\[17\] = 10 is outside"):
        net.train_step(images, labels, np.array([3, 17], np.int32), 1e-3)
    assert [block.tobytes()] + [a.tobytes() for a in state] == before
    assert net.optimizer_step == 1


def test_train_step_learning_rate_checked(small_net):
    net, weights, biases, images, labels = small_net
    before = snapshot(weights, biases)
    for lr in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr must be finite and >= 0"):
            net.train_step(images, labels, np.array([1], np.int32), lr)
    assert snapshot(weights, biases) == before and net.optimizer_step == 0


def test_set_optimizer_errors():
    weights, biases = init_params((6, 5, 3), 9)
    block, w, b = blocked(weights, biases)
    net = K.MLPKernel(w, b, 4)
    n = block.size
    state = (np.zeros(n, F32), np.zeros(n, F32))

    def fails(error, match, *args, **kwargs):
        with pytest.raises(error, match=match):
            net.set_optimizer(*args, **kwargs)
        assert net.optimizer == "sgd" and net.parameter_gradients is None

    fails(ValueError, "unknown optimizer 'adagrad'", "adagrad", block)
    fails(ValueError, r"beta1 must be in \[0, 1\)", "adam", block, state, beta1=1.0)
    fails(
        TypeError,
        "unknown optimizer setting 'betas'; expected one of momentum, beta1",
        "adam",
        block,
        state,
        betas=(0.9, 0.99),
    )
    fails(TypeError, "block must have dtype float32", "sgd", block.astype(np.float64))
    fails(ValueError, "block must be 1-D", "sgd", block.reshape(1, -1))
    fails(ValueError, r"weights\[0\] is not a view into block", "sgd", np.zeros(n, F32))
    # Views of a block larger than the parameters, with a gap the gradients would not
    # cover, or a spare float at the end.
    bigger = np.zeros(n + 1, F32)
    gap = K.MLPKernel(
        [bigger[:30].reshape(6, 5), bigger[36:51].reshape(5, 3)], [bigger[30:35], bigger[51:54]], 4
    )
    with pytest.raises(
        ValueError,
        match=r"must tile block: weights\[1\] starts at byte "
        r"144, the previous one ends at byte 140",
    ):
        gap.set_optimizer("momentum", bigger, (np.zeros(n + 1, F32),))
    spare = K.MLPKernel(
        [bigger[:30].reshape(6, 5), bigger[35:50].reshape(5, 3)], [bigger[30:35], bigger[50:53]], 4
    )
    with pytest.raises(ValueError, match=r"must tile block: they end at byte 212 of 216"):
        spare.set_optimizer("sgd", bigger, weight_decay=0.1)
    fails(ValueError, r"state must be a tuple of 2 arrays for adam", "adam", block, state[:1])
    fails(
        ValueError,
        r"state\[0\] \(momentum_buffer\) must have shape",
        "momentum",
        block,
        (np.zeros(n - 1, F32),),
    )
    fails(
        ValueError, r"block and state\[0\] \(momentum_buffer\) overlap", "momentum", block, (block,)
    )
    fails(
        ValueError,
        r"state\[0\] \(exp_avg\) and state\[1\] \(exp_avg_sq\) overlap",
        "adamw",
        block,
        (state[0], state[0]),
    )
    frozen = block.copy()
    frozen.flags.writeable = False
    fails(ValueError, "block must be writeable", "sgd", frozen)
    net.set_optimizer("adam", block, state, weight_decay=0.1)
    assert net.optimizer == "adam" and net.parameter_gradients.shape == (n,)
    net.optimizer_step = 41
    assert net.optimizer_step == 41
    with pytest.raises(ValueError, match=r"step must be in \[0, 2\*\*62\), got -1"):
        net.optimizer_step = -1
    with pytest.raises(TypeError, match="step must be an int, not str"):
        net.optimizer_step = "3"
    net.set_optimizer("sgd", block)  # back to the fused step, the count reset
    assert net.parameter_gradients is None and net.optimizer_step == 0
