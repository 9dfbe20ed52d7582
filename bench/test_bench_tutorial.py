"""The tutorial's whole run as a user starts it: `python -m mnistc.train --threads 2` against
the same run in plain NumPy (bench/numpy_tutorial.py), each a fresh process, alternately.

Group `tutorial`: one round is a NumPy process then an mnistc one, so a burst of host load
lands on both; pytest-benchmark times the mnistc processes, the NumPy ones are timed in
between and their best and median go in extra_info with NumPy's multiple of mnistc's time.
Both print the same evaluations (test Precision @ 1 = 0.9013), which is checked. Needs
the real MNIST files (data/mnist or $MNISTC_DATA_DIR). See bench/README.md.

    python -m pytest bench/test_bench_tutorial.py
"""

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
THREADS = 2
ROUNDS = int(os.environ.get("MNISTC_BENCH_TUTORIAL_ROUNDS", "5"))
TEST_LINE = "Num examples: 10000  Num correct: 9013  Precision @ 1: 0.9013"


@pytest.fixture(scope="module")
def data_dir():
    found = os.environ.get("MNISTC_DATA_DIR") or REPO / "data" / "mnist"
    if not Path(found, "train-images-idx3-ubyte.gz").exists():
        pytest.skip("the tutorial run needs the real MNIST files (data/mnist)")
    return str(found)


def run(command):
    """Seconds the process took, start to exit; its output must end on the tutorial's
    final test evaluation."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith(TEST_LINE), done.stdout[-500:]
    return seconds


@pytest.mark.benchmark(group="tutorial")
def test_tutorial_run(benchmark, data_dir, tmp_path):
    rounds = iter(range(10**6))
    numpy_seconds = []

    def numpy_then_fresh_dir():
        r = next(rounds)
        numpy_seconds.append(
            run(
                [
                    sys.executable,
                    "bench/numpy_tutorial.py",
                    "--threads",
                    str(THREADS),
                    "--data-dir",
                    data_dir,
                    "--train-dir",
                    str(tmp_path / f"numpy{r}"),
                ]
            )
        )
        return (
            [
                sys.executable,
                "-m",
                "mnistc.train",
                "--threads",
                str(THREADS),
                "--data-dir",
                data_dir,
                "--train-dir",
                str(tmp_path / f"mnistc{r}"),
            ],
        ), {}

    benchmark.pedantic(
        run, setup=numpy_then_fresh_dir, rounds=ROUNDS, iterations=1, warmup_rounds=1
    )
    timed = numpy_seconds[1:] or numpy_seconds  # the first ran beside the warm-up round
    benchmark.extra_info.update(
        tutorial_run=True,
        threads=THREADS,
        numpy_best=min(timed),
        numpy_median=statistics.median(timed),
    )
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["numpy_multiple"] = round(
            statistics.median(timed) / stats.stats.median, 2
        )
