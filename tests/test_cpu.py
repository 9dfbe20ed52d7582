"""The CPU target (csrc/cpu.c through mnistc._kernels): the names, set_isa, and MNISTC_ISA,
which only C reads: a value that names no target is an error from every function that
runs a kernel or reports the target."""

import math
import os
import subprocess
import sys
import textwrap

import pytest

from mnistc import _kernels

from conftest import REPO, supported_isas


def test_isa_names_run_from_most_portable_to_fastest():
    assert _kernels.ISA_NAMES == ("generic", "avx2", "avx512")
    assert _kernels.isa_supported() in _kernels.ISA_NAMES
    assert supported_isas()[0] == "generic"


def test_set_isa_caps_at_the_supported_target_and_restores():
    previous = _kernels.isa_active()
    try:
        for name in _kernels.ISA_NAMES:
            got = _kernels.set_isa(name)
            want = name if name in supported_isas() else supported_isas()[-1]
            assert got == want == _kernels.isa_active()
    finally:
        _kernels.set_isa(previous)


@pytest.mark.parametrize("name", ["sse9", "AVX2", "", " avx2", None, 2])
def test_set_isa_rejects_unknown_names(name):
    with pytest.raises(ValueError, match="unknown CPU target.*generic, avx2, avx512"):
        _kernels.set_isa(name)


def run_python(code, isa_env):
    env = dict(os.environ)
    env.pop("MNISTC_ISA", None)
    if isa_env is not None:
        env["MNISTC_ISA"] = isa_env
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# Each entry point, called with valid arguments; with a bad MNISTC_ISA each must raise.
ENTRY_POINTS = textwrap.dedent("""
    import numpy as np
    from mnistc import _kernels as K
    x = np.ones((3, 4), np.float32)
    images = np.zeros((5, 4), np.uint8)
    labels = np.zeros(5, np.uint8)
    idx = np.arange(3, dtype=np.int32)
    calls = {
        "isa_active": lambda: K.isa_active(),
        "set_isa": lambda: K.set_isa("generic"),
        "sgemm": lambda: K.sgemm(x, x.T.copy()),
        "bias_relu": lambda: K.bias_relu(x, x[0]),
        "relu_backward": lambda: K.relu_backward(x, x),
        "colsum_axpy": lambda: K.colsum_axpy(x),
        "softmax_xent": lambda: K.softmax_xent(x, idx),
        "in_top_k": lambda: K.in_top_k(x, idx),
        "gather_scale": lambda: K.gather_scale(images, labels, idx),
        "train_step": lambda: K.MLPKernel([x.T.copy()], [x[:, 0].copy()], 3).train_step(
            images, labels, idx, 0.1),
    }
    for name, call in calls.items():
        try:
            call()
            print(name, "ran")
        except ValueError as e:
            print(name, "ValueError:", e)
""")


def test_unknown_isa_in_the_environment_stops_every_entry_point():
    result = run_python(ENTRY_POINTS, "sse9")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 10, result.stdout
    for line in lines:
        assert line.endswith("ValueError: MNISTC_ISA='sse9' is not one of generic, avx2, avx512"), (
            line
        )
    # What the hardware supports is still reported: that depends on no setting.
    result = run_python("from mnistc import _kernels as K; print(K.isa_supported())", "sse9")
    assert result.stdout.strip() == _kernels.isa_supported(), result.stderr


@pytest.mark.parametrize("value", ["", None])
def test_unset_or_empty_isa_caps_nothing(value):
    result = run_python(ENTRY_POINTS + "print(K.isa_active())", value)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(line.endswith(" ran") for line in lines[:-1]), result.stdout
    assert lines[-1] == "generic"  # the last call, set_isa("generic"), stays in force
    result = run_python("from mnistc import _kernels as K; print(K.isa_active())", value)
    assert result.stdout.strip() == _kernels.isa_supported()


@pytest.mark.parametrize("name", _kernels.ISA_NAMES)
def test_a_target_name_in_the_environment_caps_the_target(name):
    result = run_python("from mnistc import _kernels as K; print(K.isa_active())", name)
    assert result.returncode == 0, result.stderr
    want = name if name in supported_isas() else supported_isas()[-1]
    assert result.stdout.strip() == want


# ---------------------------------------------------------------------------------
# The yardstick (csrc/peak.c): the multiply-add peak bench/ states speeds against


@pytest.mark.parametrize("n_threads", [1, 2, None])
def test_fma_peak_is_a_positive_finite_rate(isa, n_threads):
    gflops = _kernels.fma_peak(0.01, n_threads=n_threads)
    assert isinstance(gflops, float) and math.isfinite(gflops) and gflops > 0.0


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"seconds": 0}, ValueError, "seconds"),
        ({"seconds": -1.0}, ValueError, "seconds"),
        ({"seconds": float("nan")}, ValueError, "seconds"),
        ({"seconds": float("inf")}, ValueError, "seconds"),
        ({"seconds": 10.5}, ValueError, "seconds"),
        ({"seconds": "0.1"}, TypeError, "seconds"),
        ({"seconds": None}, TypeError, "seconds"),
        ({"n_threads": -1}, ValueError, "n_threads"),
        ({"n_threads": "2"}, TypeError, "n_threads"),
    ],
)
def test_fma_peak_rejects_bad_arguments(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        _kernels.fma_peak(**kwargs)
