"""SGEMM speed: mnistc against NumPy (its OpenBLAS) in the same session, on every GEMM of
the training step of the small (784-128-32-10) and wide (784-1024-1024-10) nets at batch
1, 100 and 256, plus 1024³. Each shape runs for mnistc and NumPy at 1 and 2 threads;
GFLOP/s, its percentage of this machine's FMA peak at that thread count (measured in the
same session, bench/conftest.py), the CPU target and NumPy's BLAS core go in extra_info,
and bench/conftest.py prints the figures and mnistc/NumPy ratios at the end.

    python -m pytest bench/test_bench_gemm.py -q -p no:cacheprovider
    python -m pytest bench/test_bench_gemm.py -k "small and b100"   # a subset
    MNISTC_BENCH_TIME=0.2 python -m pytest bench/test_bench_gemm.py   # 10x longer timing

NumPy's threads are set with threadpoolctl; without it the 2-thread NumPy runs are
skipped and the 1-thread ones run at NumPy's default. OpenBLAS picks its kernels from
OPENBLAS_CORETYPE when set, so `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` in front of
the command benchmarks its own choice for this CPU."""

import os
import time

import numpy as np
import pytest

from mnistc import _kernels

try:
    import threadpoolctl
except ImportError:  # optional: only the NumPy side needs it
    threadpoolctl = None

pytestmark = pytest.mark.benchmark(group="gemm")


def blas_core():
    if threadpoolctl is None:
        return "unknown (threadpoolctl not installed)"
    infos = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    return (
        ", ".join(
            f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')}" for i in infos
        )
        or "unknown"
    )


def net_gemms(name, sizes, batch):
    """(id, m, n, k, trans_a, trans_b) of one training step, as mlp.c calls them."""
    out = []
    for layer in range(len(sizes) - 1):
        k, n = sizes[layer], sizes[layer + 1]
        out.append((f"{name}-b{batch}-fwd{layer + 1}", batch, n, k, False, False))
        if layer > 0:
            out.append((f"{name}-b{batch}-dx{layer + 1}", batch, k, n, False, True))
        out.append((f"{name}-b{batch}-dw{layer + 1}", k, n, batch, True, False))
    return out


SMALL, WIDE, RECIPE = (784, 128, 32, 10), (784, 1024, 1024, 10), (784, 128, 128, 10)
SHAPES = [s for b in (1, 100, 256) for s in net_gemms("small", SMALL, b)]
SHAPES += [s for b in (1, 100, 256) for s in net_gemms("wide", WIDE, b)]
SHAPES += net_gemms("recipe", RECIPE, 128)  # the fast recipe's net at its batch
SHAPES += [("square-1024", 1024, 1024, 1024, False, False)]


# Seconds of timing per benchmark; raise it (e.g. MNISTC_BENCH_TIME=0.2) on a busy machine.
BENCH_TIME = float(os.environ.get("MNISTC_BENCH_TIME", "0.02"))


def rounds_for(flops):
    """(rounds, iterations) for about BENCH_TIME of timing in rounds of at least ~0.1 ms,
    from a rough time estimate (2 µs per call + 100 GFLOP/s)."""
    seconds = 2e-6 + flops / 1e11
    iterations = max(1, int(1e-4 / seconds))
    rounds = max(5, min(int(2500 * BENCH_TIME), int(BENCH_TIME / (seconds * iterations))))
    return rounds, iterations


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


def operands(rng, shape):
    name, m, n, k, trans_a, trans_b = shape
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    return a, b, np.zeros((m, n), np.float32)


def measure(benchmark, run, shape, impl, threads, peak, **info):
    name, m, n, k, trans_a, trans_b = shape
    flops = 2.0 * m * n * k
    benchmark.extra_info.update(
        gemm_shape=name,
        mnk=f"{m}x{n}x{k}",
        impl=impl,
        threads=threads,
        trans=("T" if trans_a else "N") + ("T" if trans_b else "N"),
        **info,
    )
    rounds, iterations = rounds_for(flops)
    benchmark.pedantic(run, rounds=rounds, iterations=iterations, warmup_rounds=1)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # the best round, as the peak is the best window
        gflops = flops / stats.stats.min / 1e9
        benchmark.extra_info.update(
            gflops=round(gflops, 1), pct_of_peak=round(100.0 * gflops / peak[threads], 1)
        )


# Shape by shape, mnistc then NumPy, so that both see the same machine; switching library
# first waits for the other one's idle threads (OpenMP and OpenBLAS spin for a while
# after a call) to go to sleep, so neither is timed against the other's spinning.
CASES = [
    (shape, impl, threads) for shape in SHAPES for impl in ("mnistc", "numpy") for threads in (1, 2)
]
_last_impl = [None]


@pytest.mark.parametrize("shape,impl,threads", CASES, ids=[f"{s[0]}-{i}-{t}t" for s, i, t in CASES])
def test_gemm(benchmark, rng, fma_peak, shape, impl, threads):
    if impl == "numpy" and threadpoolctl is None and threads != 1:
        pytest.skip("threadpoolctl is needed to set NumPy's thread count")
    if _last_impl[0] not in (None, impl):
        time.sleep(0.02)
    _last_impl[0] = impl
    a, b, c = operands(rng, shape)
    trans_a, trans_b = shape[4], shape[5]
    if impl == "mnistc":

        def run():
            _kernels.sgemm(a, b, c, trans_a=trans_a, trans_b=trans_b, n_threads=threads)

        measure(benchmark, run, shape, "mnistc", threads, fma_peak, isa=_kernels.isa_active())
        return
    op_a, op_b = (a.T if trans_a else a), (b.T if trans_b else b)

    def run():
        np.matmul(op_a, op_b, out=c)

    if threadpoolctl is None:
        measure(benchmark, run, shape, "numpy", threads, fma_peak, blas=blas_core())
        return
    with threadpoolctl.threadpool_limits(limits=threads, user_api="blas"):
        measure(benchmark, run, shape, "numpy", threads, fma_peak, blas=blas_core())
