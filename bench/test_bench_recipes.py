"""time-to-accuracy: whole training processes, start to exit, side by side.

`python -m mnistc.train --recipe fast` against the same recipe in PyTorch
(bench/torch_recipe.py, whose defaults are that recipe: same net, optimizer, schedule,
label smoothing, batch size and epochs, the same evaluations), alternating A B A B in
one test so that a burst of load on the shared host lands on both, at 2 threads (the
tutorial's run against NumPy's is test_bench_tutorial.py). The row records the median
whole-process time, the peak resident memory of the process (VmHWM at exit) and the test
precision it printed, and PyTorch's multiple. With --benchmark-disable (CI) each runs once,
as a test.

    pytest bench/test_bench_recipes.py                  # 5 alternating rounds
    MNISTC_BENCH_ROUNDS=9 pytest bench/test_bench_recipes.py
"""

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
ROUNDS = int(os.environ.get("MNISTC_BENCH_ROUNDS", "5"))
THREADS = 2
# mnistc prints the tutorial's "Test Data Eval:" block, torch_recipe.py "test Precision @ 1: P".
TEST_PRECISION = re.compile(r"(?:Test Data Eval:\n.*?|test )Precision @ 1: (\d\.\d{4})")


def mnist_dir():
    for candidate in (os.environ.get("MNISTC_DATA_DIR"), REPO / "data" / "mnist"):
        if candidate and Path(candidate, "train-images-idx3-ubyte.gz").exists():
            return Path(candidate)
    pytest.skip("real MNIST not found (set MNISTC_DATA_DIR)")


def whole_process(argv):
    """(seconds, peak resident bytes, stdout) of `python argv...` from start to exit. The
    peak is the process's own VmHWM read at exit (the rusage of a child forked from this
    large process would start from this process's size)."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch, "vmhwm")
        wrapper = (
            "import atexit, runpy, sys\n"
            "def report():\n"
            "    for line in open('/proc/self/status'):\n"
            "        if line.startswith('VmHWM:'):\n"
            f"            open({str(report)!r}, 'w').write(line.split()[1])\n"
            "atexit.register(report)\n"
            "target = sys.argv[1]\n"
            "sys.argv = sys.argv[1:]\n"
            "if target.endswith('.py'):\n"
            "    runpy.run_path(target, run_name='__main__')\n"
            "else:\n"
            "    runpy.run_module(target, run_name='__main__', alter_sys=True)\n"
        )
        env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", wrapper, *argv],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=900,
        )
        seconds = time.perf_counter() - start
        assert done.returncode == 0, done.stderr[-2000:]
        peak = int(report.read_text()) * 1024 if report.exists() else None
    return seconds, peak, done.stdout


def printed_test_precision(stdout):
    found = TEST_PRECISION.findall(stdout)
    assert found, stdout[-2000:]
    return float(found[-1])


def mnistc_fast(train_dir, data_dir):
    return [
        "mnistc.train",
        "--recipe",
        "fast",
        "--threads",
        str(THREADS),
        "--data-dir",
        str(data_dir),
        "--train-dir",
        str(train_dir),
        "--overwrite",
    ]


def torch_fast(data_dir):
    return [
        str(BENCH / "torch_recipe.py"),
        "--threads",
        str(THREADS),
        "--data-dir",
        str(data_dir),
        "--eval",
        "validation,test",
    ]


def record(benchmark, name, runs):
    seconds = [r[0] for r in runs]
    benchmark.extra_info.update(
        {
            f"{name}_median_s": statistics.median(seconds),
            f"{name}_runs_s": seconds,
            f"{name}_peak_rss_mb": max(r[1] or 0 for r in runs) / 2**20,
            f"{name}_test_precision": [printed_test_precision(r[2]) for r in runs],
        }
    )


@pytest.mark.benchmark(group="time-to-accuracy")
def test_fast_recipe_against_pytorch(benchmark, tmp_path):
    """mnistc's fast recipe and PyTorch's, alternating; the benchmark row is mnistc's."""
    data_dir = mnist_dir()
    try:
        import torch  # noqa: F401
    except ImportError:
        torch = None
    rounds = ROUNDS if benchmark.enabled else 1
    ours, theirs = [], []

    def one_round():
        ours.append(whole_process(mnistc_fast(tmp_path / "run", data_dir)))
        if torch is not None:
            theirs.append(whole_process(torch_fast(data_dir)))
        return ours[-1][0]

    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    record(benchmark, "mnistc", ours)
    assert min(benchmark.extra_info["mnistc_test_precision"]) >= 0.98
    if theirs:
        record(benchmark, "pytorch", theirs)
        benchmark.extra_info["pytorch_over_mnistc"] = statistics.median(
            t[0] for t in theirs
        ) / statistics.median(o[0] for o in ours)
