"""Optimizer benchmarks: mnistc's fused update against memory speed and against the same
update in NumPy and torch.optim, and the training step with each optimizer.

Groups: `optim-update` (one update of the tutorial's 104938 parameters and of the wide
784-1024-1024-10 net's 1.86M; mnistc, a NumPy version written with in-place ops,
torch.optim's single-tensor CPU path, and `np.add(p, g, out=p)` as the memory-speed
peer: the same 12 bytes per element as SGD) and `optim-step` (the tutorial's training
step, batch 100, with each optimizer: the stored-gradient path against the fused SGD
one). Compare rows of one run; see bench/README.md.
"""

import numpy as np
import pytest

from mnistc import _kernels
from mnistc.model import MLP
from mnistc.optim import Optimizer

SIZES = {"small": 104938, "wide": 1863690}  # 784-128-32-10 and 784-1024-1024-10
THREADS = (1, 2)
# Bytes each update reads and writes per parameter (float32 arrays: SGD p, g -> p;
# momentum p, g, b -> p, b; Adam p, g, m, v -> p, m, v).
TRAFFIC = {"sgd": 12, "momentum": 20, "adam": 28}
HYPER = {"sgd": {}, "momentum": {"momentum": 0.9}, "adam": {}}
LR = 1e-6  # small: the parameters stay put over thousands of rounds


def arrays(n):
    rng = np.random.default_rng(0)
    p = rng.standard_normal(n).astype(np.float32)
    g = (rng.standard_normal(n) * 1e-3).astype(np.float32)
    return p, g, np.zeros(n, np.float32), np.zeros(n, np.float32)


def numpy_update(kind, p, g, m, v):
    """The same update in NumPy float32, in place, scratch preallocated (Adam at step 5)."""
    scratch, denom = np.empty_like(p), np.empty_like(p)
    if kind == "sgd":

        def run():
            np.multiply(g, np.float32(LR), out=scratch)
            np.subtract(p, scratch, out=p)
    elif kind == "momentum":

        def run():
            np.multiply(m, np.float32(0.9), out=m)
            np.add(m, g, out=m)
            np.multiply(m, np.float32(LR), out=scratch)
            np.subtract(p, scratch, out=p)
    else:
        s = _adam_scalars(5)

        def run():
            np.subtract(g, m, out=scratch)
            np.multiply(scratch, s["w1"], out=scratch)
            np.add(m, scratch, out=m)
            np.multiply(v, s["beta2"], out=v)
            np.multiply(g, s["c2"], out=scratch)
            np.multiply(scratch, g, out=scratch)
            np.add(v, scratch, out=v)
            np.sqrt(v, out=denom)
            np.divide(denom, s["r"], out=denom)
            np.add(denom, s["eps"], out=denom)
            np.multiply(m, s["step"], out=scratch)
            np.divide(scratch, denom, out=scratch)
            np.subtract(p, scratch, out=p)

    return run


def _adam_scalars(t, beta1=0.9, beta2=0.999, eps=1e-8):
    f = np.float32
    return {
        "w1": f(1 - beta1),
        "beta2": f(beta2),
        "c2": f(1 - beta2),
        "eps": f(eps),
        "step": f(LR / (1 - beta1**t)),
        "r": f((1 - beta2**t) ** 0.5),
    }


def torch_update(kind, p, g, threads):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(threads)
    param = torch.nn.Parameter(torch.from_numpy(p))
    param.grad = torch.from_numpy(g)
    if kind == "adam":
        opt = torch.optim.Adam([param], lr=LR, foreach=False)
    else:
        opt = torch.optim.SGD(
            [param], lr=LR, momentum=HYPER[kind].get("momentum", 0.0), foreach=False
        )
    opt.step()  # creates the state
    return opt.step


@pytest.mark.benchmark(group="optim-update")
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("impl", ["mnistc", "numpy", "torch", "memory-speed"])
@pytest.mark.parametrize("kind", list(TRAFFIC))
@pytest.mark.parametrize("size", list(SIZES))
def test_update(benchmark, size, kind, impl, threads):
    n = SIZES[size]
    p, g, m, v = arrays(n)
    if impl == "memory-speed":
        if kind != "sgd":
            pytest.skip("one memory-speed row per size and thread count")
        if threads > 1:
            pytest.skip("NumPy's element-wise add runs on one thread")

        def run():
            np.add(p, g, out=p)
    elif impl == "mnistc":
        state = {"sgd": (), "momentum": (m,), "adam": (m, v)}[kind]

        def run():
            _kernels.optimizer_update(
                kind, p, g, state, lr=LR, step=5, n_threads=threads, **HYPER[kind]
            )
    elif impl == "numpy":
        if threads > 1:
            pytest.skip("NumPy's element-wise ops run on one thread")
        run = numpy_update(kind, p, g, m, v)
    else:
        run = torch_update(kind, p, g, threads)
    rounds = 300 if size == "small" else 30
    benchmark.pedantic(run, rounds=rounds, iterations=5, warmup_rounds=5)
    traffic = 12 if impl == "memory-speed" else TRAFFIC[kind]
    benchmark.extra_info.update(
        size=size, n=n, kind=kind, impl=impl, threads=threads, bytes_per_element=traffic
    )
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["gb_per_s_best"] = traffic * n / benchmark.stats.stats.min / 1e9


STEP_OPTIMIZERS = {
    "sgd (fused)": Optimizer("sgd"),
    "sgd + weight decay": Optimizer("sgd", weight_decay=1e-4),
    "momentum": Optimizer("momentum", momentum=0.9),
    "nesterov": Optimizer("nesterov", momentum=0.9),
    "adam": Optimizer("adam"),
    "adamw": Optimizer("adamw"),
}


@pytest.mark.benchmark(group="optim-step")
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("optimizer", list(STEP_OPTIMIZERS))
def test_step_with_optimizer(benchmark, optimizer, threads):
    opt = STEP_OPTIMIZERS[optimizer]
    model = MLP((128, 32), 100, input_size=784, num_classes=10, optimizer=opt)
    model.initialize(np.random.default_rng(1))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (55000, 784), dtype=np.uint8)
    labels = rng.integers(0, 10, 55000, dtype=np.uint8)
    batches = [rng.integers(0, 55000, 100).astype(np.int32) for _ in range(64)]
    at = iter(range(10**9))
    lr = 1e-3 if opt.name.startswith("adam") else 0.01

    def run():
        return model.train_step(images, labels, batches[next(at) % 64], lr, threads)

    for _ in range(20):
        run()
    loss = benchmark.pedantic(run, rounds=200, iterations=5, warmup_rounds=2)
    assert np.isfinite(loss)
    benchmark.extra_info.update(optimizer=optimizer, threads=threads)
