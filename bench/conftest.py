"""Benchmark session helpers: a closing table of mnistc/NumPy speed ratios for the
benchmarks that record a `gemm_shape` (bench/test_bench_gemm.py)."""


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    rows = {}
    for bench in getattr(session, "benchmarks", None) or []:
        info = bench.extra_info or {}
        if "gemm_shape" in info and bench.stats is not None:
            key = (info["gemm_shape"], info["mnk"], info["trans"])
            rows.setdefault(key, {})[(info["impl"], info["threads"])] = info.get("gflops")
    if not rows:
        return
    write = terminalreporter.write_line
    write("")
    write("GEMM GFLOP/s (best round)   mnistc 1t / NumPy 1t   mnistc 2t / NumPy 2t")
    for (name, mnk, trans), r in sorted(rows.items()):
        cells = []
        for t in (1, 2):
            mine, theirs = r.get(("mnistc", t)), r.get(("numpy", t))
            ratio = f"x{mine / theirs:4.2f}" if mine and theirs else "  -  "
            cells.append(f"{mine or 0:6.1f} / {theirs or 0:6.1f} {ratio}")
        write(f"{name:18s} {mnk:>15s} {trans}  " + "   ".join(cells))
