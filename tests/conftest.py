"""Shared fixtures: every CPU target this machine supports, thread counts, real data."""
import os
from pathlib import Path

import pytest

from mnistc import _kernels

REPO = Path(__file__).resolve().parent.parent


def supported_isas():
    """The CPU targets this machine runs, most portable first (the extension's order)."""
    best = _kernels.ISA_NAMES.index(_kernels.isa_supported())
    return _kernels.ISA_NAMES[: best + 1]


@pytest.fixture(params=supported_isas())
def isa(request):
    """Run the test once per CPU target the machine supports, then restore the default."""
    previous = _kernels.isa_active()
    _kernels.set_isa(request.param)
    assert _kernels.isa_active() == request.param
    yield request.param
    _kernels.set_isa(previous)


@pytest.fixture(params=[1, 2, 3])
def n_threads(request):
    """Thread counts to run kernels at (3 oversubscribes a 2-core machine on purpose)."""
    return request.param


def mnist_dir():
    """The real MNIST directory, or None: $MNISTC_DATA_DIR, else the repository's copy."""
    candidates = [os.environ.get("MNISTC_DATA_DIR"), REPO / "data" / "mnist"]
    for c in candidates:
        if c and Path(c, "train-images-idx3-ubyte.gz").exists() or (
                c and Path(c, "train-images-idx3-ubyte").exists()):
            return Path(c)
    return None


@pytest.fixture(scope="session")
def real_mnist_dir():
    """Real-data tests skip where the files are absent, except in CI, where they fail."""
    found = mnist_dir()
    if found is None:
        message = "real MNIST not found (set MNISTC_DATA_DIR or put the files in data/mnist)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found
