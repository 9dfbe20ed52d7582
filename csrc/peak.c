// peak.c — the yardstick of bench/: this machine's FP32 multiply-add peak on the active
// target's widest vectors, measured in the same process as the benchmarks, so that their
// speeds can be stated as a fraction of it whatever machine the session ran on. The
// chains themselves are in the kernel files (mnc_fma_chains_<isa>, gemm_kernel.h), built
// with the kernels' target attributes; this file times them.
//
// The team runs windows of about WINDOW_FLOPS per thread, all threads together between
// two barriers, for `seconds`, and the best window counts: on a shared machine most
// windows lose time to other processes, and the best one is the rate of the cores
// themselves (as a benchmark's fastest round is its own speed).
#include <time.h>

#include "gemm_kernel.h"
#include "internal.h"

enum { WINDOW_FLOPS = 1 << 26 };  // ~0.5 ms at 128 GFLOP/s

static double seconds_now(void) {
#ifdef _OPENMP
    return omp_get_wtime();
#else
    struct timespec t;
    timespec_get(&t, TIME_UTC);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
#endif
}

static double chains(mnc_isa isa, int64_t iters, float *sink) {
#ifdef MNC_GEMM_X86
    if (isa == MNC_ISA_AVX512) return mnc_fma_chains_avx512(iters, sink);
    if (isa == MNC_ISA_AVX2) return mnc_fma_chains_avx2(iters, sink);
#endif
    return mnc_fma_chains_generic(iters, sink);
}

double mnc_fma_peak_gflops(int n_threads, double seconds) {
    const mnc_isa isa = mnc_isa_active();
    float sink[16];
    const int64_t iters = (int64_t)(WINDOW_FLOPS / chains(isa, 1, sink));
    const int team = n_threads > 0 ? n_threads : mnc_max_threads();
    double best = 0.0, start = seconds_now();
    int done = 0;
#pragma omp parallel num_threads(team) firstprivate(sink)
    {
        int got = 1;
#ifdef _OPENMP
        got = omp_get_num_threads();
#endif
        while (!done) {
            double t0 = seconds_now(), flops = 0.0;
#pragma omp barrier
            flops = chains(isa, iters, sink);
#pragma omp barrier
#pragma omp master
            {
                double t1 = seconds_now(), rate = got * flops / (t1 - t0);
                if (rate > best) best = rate;
                done = t1 - start >= seconds;
            }
#pragma omp barrier
        }
        volatile float keep = sink[0];  // the chains' result is used
        (void)keep;
    }
    (void)team;
    return best / 1e9;
}
