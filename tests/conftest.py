"""Shared fixtures and helpers: every CPU target this machine supports, thread counts, real
data and a real run, and running the command-line tools in a process of their own."""

import importlib
import os
import subprocess
import sys
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
    mnistc.train(
        data_dir=str(real_mnist_dir), train_dir=str(train_dir), download=False, tensorboard=False
    )
    return real_mnist_dir, train_dir


PACKAGE_ROOT = Path(mnistc.__file__).resolve().parent.parent


def tool_command(tool, *args):
    """The command line of `python -m mnistc.<tool> args`."""
    return [sys.executable, "-m", f"mnistc.{tool}", *map(str, args)]


def tool_env(**extra):
    """The environment for a tool's process: this one's, with the mnistc this test
    imported first on the path (so a process started anywhere runs the same code)."""
    path = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PYTHONPATH=path, **extra)


def run_tool(
    tool,
    *args,
    cwd=None,
    env_extra=None,
    timeout=600,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    **options,
):
    """Run `python -m mnistc.<tool> args` to completion; the CompletedProcess (text,
    stdout and stderr captured unless given)."""
    return subprocess.run(
        tool_command(tool, *args),
        stdout=stdout,
        stderr=stderr,
        text=True,
        cwd=cwd,
        env=tool_env(**(env_extra or {})),
        timeout=timeout,
        **options,
    )


def assert_one_line_error(result, tool, *fragments, status=2):
    """The tool failed with `status` and said why on one stderr line, with `fragments`."""
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"mnistc.{tool}: error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def run_tool_measured(tool, *args, cwd=None, env_extra=None, timeout=600, **options):
    """run_tool, and the peak resident memory of the tool's process in bytes: its VmHWM
    at exit (Linux), which, unlike wait4's ru_maxrss, does not start from this process's
    own peak at the fork."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "vmhwm"
        code = (
            f"import atexit\n"
            f"def report():\n"
            f"    for line in open('/proc/self/status'):\n"
            f"        if line.startswith('VmHWM:'):\n"
            f"            open({str(report)!r}, 'w').write(line.split()[1])\n"
            f"atexit.register(report)\n"
            f"import runpy\n"
            f"runpy.run_module('mnistc.{tool}', run_name='__main__', alter_sys=True)"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, *map(str, args)],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=tool_env(**(env_extra or {})),
            timeout=timeout,
            **options,
        )
        peak = int(report.read_text()) * 1024 if report.exists() else None
    return result, peak
