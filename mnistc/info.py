"""`python -m mnistc.info`: how this mnistc was built and what it runs on."""
import os
import platform
import sys

from . import __version__, _kernels


def build_config():
    """The compiler and flags recorded by setup.py (empty when unavailable)."""
    try:
        from . import _build_config as b
    except ImportError:
        return {}
    return {"compiler": b.compiler, "cflags": " ".join(b.cflags),
            "ldflags": " ".join(b.ldflags), "openmp": b.openmp}


def config_text():
    build = build_config()
    lines = [
        f"mnistc {__version__}",
        f"python: {sys.version.split()[0]} ({platform.python_implementation()})",
        f"platform: {platform.platform()} {platform.machine()}",
        f"compiler: {build.get('compiler', 'unknown')}",
        f"cflags: {build.get('cflags', 'unknown')}",
        f"ldflags: {build.get('ldflags', 'unknown')}",
        f"openmp: {'yes' if _kernels.openmp_enabled() else 'no (single-threaded build)'}",
        f"threads: {_kernels.max_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})",
        f"cpu target supported: {_kernels.isa_supported()}",
        f"cpu target in use: {_kernels.isa_active()} (MNISTC_ISA={os.environ.get('MNISTC_ISA', 'unset')})",
    ]
    return "\n".join(lines)


def main():
    print(config_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
