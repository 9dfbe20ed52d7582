"""Build script: declares the one extension and probes for OpenMP. Metadata lives in
pyproject.toml. Every C file is compiled for the baseline ISA; the AVX2/AVX-512
microkernels carry their own target attributes and are chosen at run time.

Environment switches (all optional):
  MNISTC_FAIL_NO_OPENMP=1  make a missing OpenMP a build error instead of a warning
  MNISTC_NO_OPENMP=1       build single-threaded on purpose, without probing (the macOS
                           wheels: a vendored libomp breaks the deployment target and
                           clashes with other packages' copies; see pyproject.toml)
  MNISTC_SANITIZE=1        build with -fsanitize=address,undefined (tests/CI only)
"""

import os
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = textwrap.dedent("""\
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d\\n", n > 0);
        return 0;
    }
    """)


def openmp_flags(compiler):
    """(compile_args, link_args) that make OpenMP work, or None: compile, link and run."""
    if compiler.compiler_type == "msvc":
        return ["/openmp"], []
    candidates = [["-fopenmp"], ["-Xpreprocessor", "-fopenmp"]]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "probe.c")
        src.write_text(OPENMP_PROBE)
        for flags in candidates:
            links = [["-fopenmp"], ["-lomp"]] if flags[0] == "-Xpreprocessor" else [flags]
            for link in links:
                try:
                    objs = compiler.compile([str(src)], output_dir=tmp, extra_postargs=flags)
                    exe = str(Path(tmp, "probe"))
                    compiler.link_executable(objs, exe, extra_postargs=link)
                    if subprocess.run([exe], capture_output=True, text=True).stdout.strip() == "1":
                        return flags, link
                except Exception:  # any failure just means "not this flag set"
                    continue
    return None


class BuildExt(build_ext):
    def build_extensions(self):
        msvc = self.compiler.compiler_type == "msvc"
        cflags = (
            ["/O2", "/fp:precise"]
            if msvc
            else [
                "-O3",
                "-std=c11",
                "-ffp-contract=off",
                "-fno-math-errno",
                "-Wall",
                "-Wno-unused-function",
                "-Wno-unreachable-code",
            ]
        )
        ldflags = []
        if os.environ.get("MNISTC_SANITIZE") == "1" and not msvc:
            san = [
                "-fsanitize=address,undefined",
                "-fno-omit-frame-pointer",
                "-fno-sanitize-recover=all",
            ]
            cflags += san + ["-O1", "-g"]
            ldflags += san
        no_openmp = os.environ.get("MNISTC_NO_OPENMP") == "1"
        if no_openmp and os.environ.get("MNISTC_FAIL_NO_OPENMP") == "1":
            sys.exit("error: mnistc: MNISTC_NO_OPENMP=1 and MNISTC_FAIL_NO_OPENMP=1 contradict")
        omp = None if no_openmp else openmp_flags(self.compiler)
        if no_openmp:
            print(
                "mnistc: MNISTC_NO_OPENMP=1: building a single-threaded extension", file=sys.stderr
            )
        elif omp is None:
            msg = (
                "mnistc: OpenMP not found; building a single-threaded extension "
                "(every kernel will run on one thread)"
            )
            if os.environ.get("MNISTC_FAIL_NO_OPENMP") == "1":
                sys.exit("error: " + msg)
            print("WARNING: " + msg, file=sys.stderr)
        else:
            cflags += omp[0]
            ldflags += omp[1]
        for ext in self.extensions:
            ext.extra_compile_args = cflags
            ext.extra_link_args = ldflags
        self.write_build_config(cflags, ldflags, omp is not None)
        super().build_extensions()

    def write_build_config(self, cflags, ldflags, openmp):
        """Record how the extension was built, for mnistc.show_config()."""
        command = " ".join(getattr(self.compiler, "compiler_so", []) or [])
        text = (
            "# Written by setup.py at build time; do not edit.\n"
            f"compiler = {self.compiler.compiler_type!r}\n"
            f"compiler_command = {command[:200]!r}\n"
            f"cflags = {cflags!r}\n"
            f"ldflags = {ldflags!r}\n"
            f"openmp = {openmp!r}\n"
            f"python = {sysconfig.get_python_version()!r}\n"
        )
        target = Path(self.build_lib, "mnistc", "_build_config.py")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        self._build_config_text = text

    def run(self):
        super().run()
        # setuptools builds into build_lib and copies extensions back for --inplace and
        # editable installs; the recorded config must follow them.
        text = getattr(self, "_build_config_text", None)
        if self.inplace and text is not None:
            Path("mnistc", "_build_config.py").write_text(text)


sources = ["mnistc/_kernels.pyx"] + sorted(str(p) for p in Path("csrc").glob("*.c"))
# The headers are dependencies: without them an in-tree `pip install .` or `build_ext`
# after a header-only edit finds the old .so "up to date" and ships it.
headers = sorted(str(p) for p in Path("csrc").glob("*.h"))
# NumPy's C API (the wrappers' argument checks) at the 1.23 level, the oldest NumPy the
# package supports at run time; NumPy >= 2 headers build wheels that run on 1.x and 2.x.
extension = Extension(
    "mnistc._kernels",
    sources=sources,
    depends=headers,
    include_dirs=["csrc", numpy.get_include()],
    define_macros=[
        ("NPY_NO_DEPRECATED_API", "NPY_1_23_API_VERSION"),
        ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION"),
    ],
)

setup(
    ext_modules=cythonize([extension], language_level=3),
    cmdclass={"build_ext": BuildExt},
)
