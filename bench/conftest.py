"""Benchmark session helpers: this machine's FMA peak, measured once per session
(`fma_peak`), and a closing table of every step and GEMM row, in time and as a
percentage of that peak, with mnistc/NumPy ratios for the GEMMs.

Machines change between sessions (Zen 4 runs AVX-512 at the AVX2 rate, Zen 5 and the
Xeons at twice it), so targets are fractions of the peak measured in the same run."""

import pytest

from mnistc import _kernels

PEAK_THREADS = (1, 2)
# Each run is the best ~0.5 ms window of 0.2 s. A rate is the best of 3 runs, and of up to
# 10 when the 2-thread one stays below 1.8x the 1-thread one: all threads must run at once
# in a window, which other processes on the host can prevent for a while.
PEAK_SECONDS, PEAK_RUNS, PEAK_MAX_RUNS = 0.2, 3, 10

# {target: {threads: GFLOP/s}}, filled by the first benchmark that asks.
PEAKS = {}


def peak_targets(active):
    """The active target, and AVX2 under AVX-512 (to see whether AVX-512 runs at twice
    the AVX2 rate on this machine or at the same one)."""
    return ("avx2", "avx512") if active == "avx512" else (active,)


def measure_peaks():
    active = _kernels.isa_active()
    try:
        for isa in peak_targets(active):
            _kernels.set_isa(isa)
            peak = {
                t: max(_kernels.fma_peak(PEAK_SECONDS, t) for _ in range(PEAK_RUNS))
                for t in PEAK_THREADS
            }
            for _ in range(PEAK_MAX_RUNS - PEAK_RUNS):
                if peak[2] >= 1.8 * peak[1]:
                    break
                peak[2] = max(peak[2], _kernels.fma_peak(PEAK_SECONDS, 2))
            PEAKS[isa] = peak
    finally:
        _kernels.set_isa(active)
    return PEAKS[active]


@pytest.fixture(scope="session")
def fma_peak():
    """The active target's FP32 multiply-add peak in GFLOP/s, {threads: GFLOP/s} for 1 and
    2 threads, measured once per session."""
    return PEAKS.get(_kernels.isa_active()) or measure_peaks()


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    benches = [b for b in getattr(session, "benchmarks", None) or [] if b.stats is not None]
    write = terminalreporter.write_line
    if PEAKS:
        write("")
        write(
            "FMA peak (GFLOP/s): "
            + "; ".join(
                f"{isa} " + ", ".join(f"{t} thread{'s' * (t > 1)} {g:.1f}" for t, g in p.items())
                for isa, p in PEAKS.items()
            )
        )
        if any(p[2] < 1.2 * p[1] for p in PEAKS.values()):
            write(
                "  (a 2-thread peak below 1.2x the 1-thread one: the second core was busy "
                "while it was measured, or the two share a core; read 2-thread percentages "
                "with care)"
            )
    steps = sorted(
        (b for b in benches if "mflop_per_step" in b.extra_info),
        key=lambda b: (b.extra_info["net"], b.extra_info["threads"], b.extra_info["impl"]),
    )
    if steps:
        write("")
        write("step                    best us  median us  GFLOP/s  % of peak")
        for b in steps:
            i = b.extra_info
            write(
                f"{i['net']:6s} {i['impl']:7s} {i['threads']}t  {b.stats.min * 1e6:9.0f}  "
                f"{b.stats.median * 1e6:9.0f}  {i['gflops']:7.1f}  {i['pct_of_peak']:8.1f}%"
            )
    for b in benches:
        i = b.extra_info
        if i.get("tutorial_run"):
            write("")
            write(
                f"tutorial run ({i['threads']} threads), whole processes, best / median: "
                f"mnistc {b.stats.min:.2f} / {b.stats.median:.2f} s, NumPy "
                f"{i['numpy_best']:.2f} / {i['numpy_median']:.2f} s: NumPy's multiple "
                f"{i['numpy_median'] / b.stats.median:.2f}"
            )
    rows = {}
    for b in benches:
        i = b.extra_info
        if "gemm_shape" in i:
            key = (i["gemm_shape"], i["mnk"], i["trans"])
            rows.setdefault(key, {})[(i["impl"], i["threads"])] = i
    if rows:
        write("")
        write(
            "GEMM, best round: GFLOP/s mnistc / NumPy, mnistc's multiple and % of peak, "
            "at 1 thread | 2 threads"
        )
        for (name, mnk, trans), r in sorted(rows.items()):
            cells = []
            for t in (1, 2):
                mine, theirs = r.get(("mnistc", t), {}), r.get(("numpy", t), {})
                g, h = mine.get("gflops"), theirs.get("gflops")
                ratio = f"x{g / h:4.2f}" if g and h else "  -  "
                pct = f"{mine['pct_of_peak']:5.1f}%" if "pct_of_peak" in mine else "   -  "
                cells.append(f"{g or 0:6.1f} / {h or 0:6.1f} {ratio} {pct}")
            write(f"{name:18s} {mnk:>15s} {trans}  " + " | ".join(cells))
