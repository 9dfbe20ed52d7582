"""One-thread training steps of mnistc and the frameworks, interleaved in one process.

pytest-benchmark measures one implementation after the other, so on a shared host a
burst of load lands on whichever row is running. This script takes a block of steps
of each implementation in turn, round after round, and prints the medians, the
multiples (another implementation's time over mnistc's) and each median as a percentage
of this machine's one-thread FMA peak, measured first. It uses the same step
functions as test_bench_train.py. Pin it to one CPU so that XLA and the BLAS stay on
one core too; at two threads interleaving is unfair to thread pools that fall asleep
while the others run, so use the pytest-benchmark sessions there.

    env -u OPENBLAS_CORETYPE taskset -c 0 python bench/interleave.py small
    env -u OPENBLAS_CORETYPE taskset -c 0 python bench/interleave.py wide --rounds 30
"""

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ["MNISTC_BENCH_JAX_THREADS"] = "1"  # before test_bench_train reads it
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnistc import _kernels, data  # noqa: E402

import test_bench_train as tb  # noqa: E402  (the bench's own step functions)

IMPLS = ("mnistc", "numpy", "torch", "jax")
STEPS_PER_BLOCK = {"small": 50, "wide": 5}


def step_functions(net, impls, train):
    images, labels = train.images, train.labels
    fns = {}
    for impl in impls:
        model, batch = tb.make_model(net)
        if impl == "mnistc":

            def fn(model=model, batch=batch):
                return model.train_step(
                    images, labels, train.next_batch_indices(batch), tb.LEARNING_RATE, 1
                )
        elif impl == "numpy":
            ref = tb.NumpyMLP(model)

            def fn(ref=ref, batch=batch):
                return ref.step(images, labels, train.next_batch_indices(batch), tb.LEARNING_RATE)
        else:
            framework = tb.torch_step_fn if impl == "torch" else tb.jax_step_fn
            step = framework(model, 1)

            def fn(step=step, batch=batch):
                return step(images, labels, train.next_batch_indices(batch))

        fns[impl] = fn
    return fns


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("net", choices=sorted(STEPS_PER_BLOCK))
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument(
        "--impls", default=",".join(IMPLS), help="comma-separated, from " + ",".join(IMPLS)
    )
    args = p.parse_args()
    impls = [
        i
        for i in args.impls.split(",")
        if i in ("mnistc", "numpy") or importlib.util.find_spec(i) is not None
    ]
    repo_data = Path(__file__).resolve().parent.parent / "data" / "mnist"
    train = data.read_data_sets(
        os.environ.get("MNISTC_DATA_DIR") or repo_data, rng=np.random.default_rng(0), download=False
    ).train
    fns = step_functions(args.net, impls, train)
    per = STEPS_PER_BLOCK[args.net]
    seconds = {impl: [] for impl in fns}
    peak = _kernels.fma_peak(0.3, n_threads=1)
    gflop = tb.step_flops(args.net) / 1e9
    with tb.thread_limit(1):
        for fn in fns.values():
            for _ in range(10):  # warm caches and jit
                fn()
        for _ in range(args.rounds):
            for impl, fn in fns.items():
                start = time.perf_counter()
                for _ in range(per):
                    fn()
                seconds[impl].append((time.perf_counter() - start) / per)
    ours = np.median(seconds["mnistc"])
    print(
        f"{args.net}, 1 thread, {args.rounds} rounds of {per} steps, "
        f"FMA peak {peak:.1f} GFLOP/s ({_kernels.isa_active()}): "
        + ", ".join(
            f"{impl} {np.median(s) * 1e6:.0f} us (x{np.median(s) / ours:.2f}, "
            f"{100 * gflop / np.median(s) / peak:.1f}% of peak)"
            for impl, s in seconds.items()
        )
    )


if __name__ == "__main__":
    main()
