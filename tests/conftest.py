"""Shared fixtures: every CPU target this machine supports, thread counts, real data and a
real run."""
import importlib
import os
from pathlib import Path

import pytest

import mnistc
from mnistc import _kernels, datasets

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


def _data_dir(spec, candidates):
    """The first candidate folder holding all four of the data set's files, or None."""
    for c in candidates:
        if c and not datasets.missing_files(spec, Path(c)):
            return Path(c)
    return None


def _found_or_skip(found, message):
    """Real-data tests skip where the files are absent, except in CI, where they fail."""
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def import_or_skip(module, extra, required_in_ci=True):
    """Import an optional package a test needs: skip without it, except in CI, where the
    test extra installs it (where `required_in_ci`) and its absence is a failure."""
    if required_in_ci and os.environ.get("CI") == "true":
        return importlib.import_module(module)
    hint = f'{module} not installed (pip install "mnistc[{extra}]")'
    return pytest.importorskip(module, reason=hint)


def mnist_dir():
    """The real MNIST directory, or None: $MNISTC_DATA_DIR, else the repository's copy."""
    return _data_dir(datasets.MNIST, [os.environ.get("MNISTC_DATA_DIR"), REPO / "data" / "mnist"])


@pytest.fixture(scope="session")
def real_mnist_dir():
    return _found_or_skip(
        mnist_dir(), "real MNIST not found (set MNISTC_DATA_DIR or put the files in data/mnist)"
    )


@pytest.fixture(scope="session")
def fashion_mnist_dir():
    """Fashion-MNIST: $MNISTC_FASHION_DIR, else the shared copy beside the repository."""
    candidates = [os.environ.get("MNISTC_FASHION_DIR"), REPO.parent / "shared/data/fashion-mnist"]
    return _found_or_skip(
        _data_dir(datasets.FASHION_MNIST, candidates),
        "Fashion-MNIST not found (set MNISTC_FASHION_DIR or put the files in "
        f"{REPO.parent / 'shared/data/fashion-mnist'})",
    )


@pytest.fixture(scope="session")
def mnist_run(real_mnist_dir, tmp_path_factory):
    """The tutorial's run (python -m mnistc.train's defaults) on real MNIST, for the tests
    of what is made from a trained model: (data dir, train dir)."""
    train_dir = tmp_path_factory.mktemp("mnist_run")
    mnistc.train(data_dir=str(real_mnist_dir), train_dir=str(train_dir), download=False,
                 tensorboard=False)
    return real_mnist_dir, train_dir
