"""Training-step and epoch benchmarks: mnistc against the same SGD step written in
NumPy (and in PyTorch and JAX when installed), measured side by side in one session.

Groups: `step` (one training step, batch fetch included, the small, wide and fast-recipe
nets, 1 and 2 threads) and `epoch` (one pass over the 55000 training examples of the
tutorial's net).
Each step row records its GFLOP/s and percentage of this machine's FMA peak at its
thread count (measured in the same session, bench/conftest.py), from the step's dense
flops (mnistc's first layer skips the multiply-adds of all-zero inputs, so on MNIST it
does fewer and its % can pass 100). Compare rows of one run,
never numbers from different runs. See bench/README.md.
"""

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest

from mnistc import data
from mnistc.model import MLP, PIXEL_SCALE

# XLA sizes its thread pool itself (its thread flags did not keep it to one core here),
# so a 1-thread JAX row needs the whole session pinned to one CPU:
# MNISTC_BENCH_JAX_THREADS=1 does that and runs only the 1-thread rows. By default JAX
# runs at XLA's own choice (all cores, reported as 2 on this 2-core machine).
JAX_THREADS = int(os.environ.get("MNISTC_BENCH_JAX_THREADS", "2"))
if JAX_THREADS == 1 and hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

NETS = {
    "small": ((128, 32), 100),  # the tutorial's 784-128-32-10 at batch 100
    "wide": ((1024, 1024), 256),  # 784-1024-1024-10 at batch 256
    "recipe": ((128, 128), 128),  # the fast recipe's net and batch (the step here is SGD's)
}
THREADS = (1, 2)
LEARNING_RATE = 0.01


@pytest.fixture(scope="module")
def train_set():
    """Real MNIST's training split when the repository has it, else random pixels."""
    repo_data = Path(__file__).resolve().parent.parent / "data" / "mnist"
    found = os.environ.get("MNISTC_DATA_DIR") or (repo_data if repo_data.exists() else None)
    rng = np.random.default_rng(0)
    if found:
        return data.read_data_sets(found, rng=rng, download=False).train
    images = rng.integers(0, 256, (55000, 784), dtype=np.uint8)
    labels = rng.integers(0, 10, 55000, dtype=np.uint8)
    return data.DataSet(images, labels, rng)


def thread_limit(n):
    """Limit NumPy's BLAS to n threads (threadpoolctl), or skip the NumPy variant."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        if n == 1:
            return contextlib.nullcontext()
        pytest.skip("threadpoolctl is needed to run NumPy at a chosen thread count")
    return threadpool_limits(limits=n)


def blas_description():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return (
        ", ".join(
            f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}" for i in blas
        )
        or "none"
    )


class NumpyMLP:
    """The same network and SGD step in plain NumPy float32, buffers preallocated, as a
    careful NumPy user would write it."""

    def __init__(self, model):
        params = model.params
        self.w = [params[f"{n}/weights"].copy() for n in model.names]
        self.b = [params[f"{n}/biases"].copy() for n in model.names]
        batch = model.batch_size
        self.h = [np.empty((batch, w.shape[1]), np.float32) for w in self.w]
        self.dz = [np.empty((batch, w.shape[1]), np.float32) for w in self.w]
        self.dw = [np.empty_like(w) for w in self.w]
        self.x = np.empty((batch, self.w[0].shape[0]), np.float32)

    def step(self, images, labels, idx, lr):
        x = self.x
        np.multiply(images[idx], np.float32(PIXEL_SCALE), out=x, casting="unsafe")
        y = labels[idx]
        inputs = [x]
        for i, (w, b, h) in enumerate(zip(self.w, self.b, self.h)):
            np.matmul(inputs[-1], w, out=h)
            h += b
            if i + 1 < len(self.w):
                np.maximum(h, 0, out=h)
            inputs.append(h)
        logits = self.h[-1]
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=1, keepdims=True)
        m = len(idx)
        loss = float(np.mean(np.log(s[:, 0]) - z[np.arange(m), y]))
        dz = self.dz[-1]
        np.divide(e, s * m, out=dz)
        dz[np.arange(m), y] -= 1.0 / m
        for i in range(len(self.w) - 1, -1, -1):
            if i > 0:
                np.matmul(self.dz[i], self.w[i].T, out=self.dz[i - 1])
                self.dz[i - 1] *= self.h[i - 1] > 0
            np.matmul(inputs[i].T, self.dz[i], out=self.dw[i])
            self.w[i] -= lr * self.dw[i]
            self.b[i] -= lr * self.dz[i].sum(axis=0)
        return loss


def torch_step_fn(model, threads):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(threads)
    layers, params = [], model.params
    for i, name in enumerate(model.names):
        w = params[f"{name}/weights"]
        linear = torch.nn.Linear(*w.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w.T.copy()))
            linear.bias.zero_()
        layers.append(linear)
        if i + 1 < len(model.names):
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(net.parameters(), lr=LEARNING_RATE)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step(images, labels, idx):
        x = torch.from_numpy(images[idx]).float().mul_(PIXEL_SCALE)
        y = torch.from_numpy(labels[idx].astype(np.int64))
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def jax_step_fn(model, threads):
    if threads != JAX_THREADS:
        pytest.skip(
            f"JAX runs at {JAX_THREADS} thread(s) in this session (set MNISTC_BENCH_JAX_THREADS)"
        )
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    tensors = model.params
    params = [
        (jnp.asarray(tensors[f"{n}/weights"]), jnp.asarray(tensors[f"{n}/biases"]))
        for n in model.names
    ]

    def loss_fn(params, x, y):
        h = x
        for i, (w, b) in enumerate(params):
            h = h @ w + b
            if i + 1 < len(params):
                h = jax.nn.relu(h)
        picked = jnp.take_along_axis(h, y[:, None], axis=1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(h, axis=1) - picked)

    @jax.jit
    def update(params, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        return [
            (w - LEARNING_RATE * gw, b - LEARNING_RATE * gb)
            for (w, b), (gw, gb) in zip(params, grads)
        ], loss

    state = {"params": params}

    def step(images, labels, idx):
        x = images[idx].astype(np.float32) * np.float32(PIXEL_SCALE)
        state["params"], loss = update(state["params"], x, labels[idx].astype(np.int32))
        return float(loss)  # waits for the result

    return step


def step_flops(net):
    """The flops of one step's GEMMs (2mnk each): forward, weight gradients, and input
    gradients of every layer but the first; the element-wise work is not counted."""
    hidden, batch = NETS[net]
    sizes = (784,) + hidden + (10,)
    layers = list(zip(sizes, sizes[1:]))
    return 2 * batch * (2 * sum(a * b for a, b in layers) + sum(a * b for a, b in layers[1:]))


def make_model(net):
    hidden, batch = NETS[net]
    model = MLP(hidden, batch, input_size=784, num_classes=10)
    model.initialize(np.random.default_rng(1))
    return model, batch


@pytest.mark.benchmark(group="step")
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("impl", ["mnistc", "numpy", "torch", "jax"])
@pytest.mark.parametrize("net", list(NETS))
def test_step(benchmark, train_set, fma_peak, net, impl, threads):
    if JAX_THREADS == 1 and threads > 1:
        pytest.skip("this session is pinned to one CPU (MNISTC_BENCH_JAX_THREADS=1)")
    model, batch = make_model(net)
    images, labels = train_set.images, train_set.labels
    next_idx = train_set.next_batch_indices
    if impl == "mnistc":

        def run():
            return model.train_step(images, labels, next_idx(batch), LEARNING_RATE, threads)

        context = contextlib.nullcontext()
    elif impl == "numpy":
        reference = NumpyMLP(model)

        def run():
            return reference.step(images, labels, next_idx(batch), LEARNING_RATE)

        context = thread_limit(threads)
        benchmark.extra_info["blas"] = blas_description()
    else:
        framework_step = (torch_step_fn if impl == "torch" else jax_step_fn)(model, threads)

        def run():
            return framework_step(images, labels, next_idx(batch))

        context = contextlib.nullcontext()
    with context:
        for _ in range(20):  # warm caches and thread pools
            run()
        loss = benchmark.pedantic(
            run, rounds=20 if net == "wide" else 200, iterations=5, warmup_rounds=2
        )
    assert np.isfinite(loss)
    flops = step_flops(net)
    benchmark.extra_info.update(
        net=net, impl=impl, threads=threads, batch=batch, mflop_per_step=flops / 1e6
    )
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # the best round, as the peak is the best window
        gflops = flops / stats.stats.min / 1e9
        benchmark.extra_info.update(
            gflops=round(gflops, 1), pct_of_peak=round(100.0 * gflops / fma_peak[threads], 1)
        )


@pytest.mark.benchmark(group="epoch")
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("impl", ["mnistc", "numpy"])
def test_epoch(benchmark, train_set, impl, threads):
    model, batch = make_model("small")
    images, labels = train_set.images, train_set.labels
    steps = train_set.num_examples // batch
    if impl == "mnistc":

        def epoch():
            for _ in range(steps):
                model.train_step(
                    images, labels, train_set.next_batch_indices(batch), LEARNING_RATE, threads
                )

        context = contextlib.nullcontext()
    else:
        reference = NumpyMLP(model)

        def epoch():
            for _ in range(steps):
                reference.step(images, labels, train_set.next_batch_indices(batch), LEARNING_RATE)

        context = thread_limit(threads)
    with context:
        benchmark.pedantic(epoch, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(impl=impl, threads=threads, steps=steps)
