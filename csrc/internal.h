// internal.h — helpers shared by the kernel files; not part of the public API.
#ifndef MNISTC_INTERNAL_H
#define MNISTC_INTERNAL_H

#include <stdint.h>

#include "mnistc.h"

#ifdef _OPENMP
#include <omp.h>
#endif

// This thread's number in the innermost parallel region (0 outside one).
static inline int mnc_thread_num(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// How many threads to use for `work` units when each thread should get at least
// `min_work`: 1 for small problems (a parallel region costs ~0.5 µs hot and ~50 µs
// cold), never more than n_threads (<= 0: mnc_max_threads()). Only the *count* of
// threads depends on this; which rows/tiles a result comes from never does.
static inline int mnc_team_size(int n_threads, int64_t work, int64_t min_work) {
    int t = n_threads > 0 ? n_threads : mnc_max_threads();
    int64_t useful = min_work > 0 ? work / min_work : t;
    if (useful < 1) useful = 1;
    return (int)(useful < t ? useful : t);
}

#endif  // MNISTC_INTERNAL_H
