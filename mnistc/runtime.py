"""The process-wide settings the kernels run under: the CPU target and the thread count.

The C layer owns both rules (MNISTC_ISA caps the target, and an unknown value makes every
kernel wrapper raise; n_threads <= 0 means OpenMP's default); this module asks it once up
front, so a command line fails before it reads anything, and refuses what the C layer
cannot report cleanly by itself —
an OMP_NUM_THREADS that is not a number (libgomp would warn and carry on), a thread count
far beyond the machine (libgomp would fail to create threads mid-run) — and names the
count a run actually uses.
"""

import os
import platform
import sys

from . import _kernels
from ._version import __version__

MAX_THREADS_PER_CPU = 8


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _omp_num_threads():
    """OMP_NUM_THREADS's first entry as an int, or None when unset; ValueError if bad."""
    raw = os.environ.get("OMP_NUM_THREADS", "").strip()
    if not raw:
        return None
    first = raw.split(",")[0].strip()
    if not first.isdigit() or int(first) < 1:
        raise ValueError(f"OMP_NUM_THREADS={raw!r} is not a positive whole number")
    return int(first)


def check_environment():
    """ValueError naming the variable when MNISTC_ISA or OMP_NUM_THREADS is unusable."""
    _kernels.isa_active()  # the C layer parses MNISTC_ISA; a bad value raises here
    _omp_num_threads()


def resolve_threads(requested=None, warn=True):
    """The thread count a run uses: `requested` (a positive int) or else OpenMP's default
    ($OMP_NUM_THREADS, else every CPU), capped at MAX_THREADS_PER_CPU per CPU with a
    warning on stderr (oversubscription that far only costs time and memory, and libgomp
    fails outright when it cannot create the threads)."""
    check_environment()
    count = requested if requested else _kernels.max_threads()
    limit = MAX_THREADS_PER_CPU * cpu_count()
    if count > limit:
        if warn:
            print(f"warning: {count} threads requested on {cpu_count()} CPUs; using {limit}",
                  file=sys.stderr, flush=True)
        count = limit
    return count


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
