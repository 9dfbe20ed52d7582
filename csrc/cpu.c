// cpu.c — which CPU target the kernels run on, and how many threads they may use.
// Detects AVX2+FMA and AVX-512 from CPUID *and* the OS's saved-state mask (XGETBV), so
// a kernel never runs an instruction the OS cannot context-switch. The choice is made
// once; MNISTC_ISA=generic|avx2|avx512 caps it (tests run every target this way), and
// this file is the one place that reads it. Compiled for the baseline ISA: nothing here
// may use AVX.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mnistc.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#define MNC_X86 1
#if defined(_MSC_VER)
#include <intrin.h>
static void cpuid(int leaf, int sub, unsigned r[4]) {
    int v[4];
    __cpuidex(v, leaf, sub);
    for (int i = 0; i < 4; i++) r[i] = (unsigned)v[i];
}
static unsigned long long xgetbv0(void) { return _xgetbv(0); }
#else
#include <cpuid.h>
static void cpuid(int leaf, int sub, unsigned r[4]) {
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}
static unsigned long long xgetbv0(void) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif
#endif

static mnc_isa detect(void) {
#ifdef MNC_X86
    unsigned r[4];
    cpuid(0, 0, r);
    unsigned max_leaf = r[0];
    if (max_leaf < 7) return MNC_ISA_GENERIC;
    cpuid(1, 0, r);
    int osxsave = (r[2] >> 27) & 1, fma = (r[2] >> 12) & 1, avx = (r[2] >> 28) & 1;
    if (!osxsave || !avx) return MNC_ISA_GENERIC;
    unsigned long long xcr0 = xgetbv0();
    int ymm_state = (xcr0 & 0x6) == 0x6;    // SSE + AVX state
    int zmm_state = (xcr0 & 0xe6) == 0xe6;  // + opmask, ZMM_Hi256, Hi16_ZMM
    cpuid(7, 0, r);
    int avx2 = (r[1] >> 5) & 1;
    int avx512f = (r[1] >> 16) & 1, avx512dq = (r[1] >> 17) & 1;
    int avx512bw = (r[1] >> 30) & 1, avx512vl = (r[1] >> 31) & 1;
    if (!ymm_state || !avx2 || !fma) return MNC_ISA_GENERIC;
    if (zmm_state && avx512f && avx512dq && avx512bw && avx512vl) return MNC_ISA_AVX512;
    return MNC_ISA_AVX2;
#else
    return MNC_ISA_GENERIC;
#endif
}

static const char *const isa_names[MNC_ISA_COUNT] = {
    [MNC_ISA_GENERIC] = "generic", [MNC_ISA_AVX2] = "avx2", [MNC_ISA_AVX512] = "avx512"};

int mnc_isa_from_name(const char *name) {
    for (int i = 0; i < MNC_ISA_COUNT; i++)
        if (strcmp(name, isa_names[i]) == 0) return i;
    return -1;
}

const char *mnc_isa_name(mnc_isa isa) {
    return (int)isa >= 0 && (int)isa < MNC_ISA_COUNT ? isa_names[isa] : "generic";
}

static int supported = -1;
static int active = -1;

mnc_isa mnc_isa_supported(void) {
    if (supported < 0) supported = (int)detect();
    return (mnc_isa)supported;
}

// MNISTC_ISA, read once: the cap it sets (unset or empty: none), and a copy of a value that
// names no target, which caps nothing here and makes the bindings refuse every kernel.
static int env_read;
static mnc_isa env_cap = MNC_ISA_AVX512;
static char env_invalid[128];

static void read_env(void) {
    if (env_read) return;
    const char *v = getenv("MNISTC_ISA");
    if (v != NULL && *v != '\0') {
        int isa = mnc_isa_from_name(v);
        if (isa >= 0) env_cap = (mnc_isa)isa;
        else snprintf(env_invalid, sizeof env_invalid, "%s", v);
    }
    env_read = 1;
}

const char *mnc_isa_env_invalid(void) {
    read_env();
    return env_invalid[0] != '\0' ? env_invalid : NULL;
}

mnc_isa mnc_isa_active(void) {
    if (active < 0) {
        read_env();
        mnc_isa_set(env_cap);
    }
    return (mnc_isa)active;
}

mnc_isa mnc_isa_set(mnc_isa isa) {
    mnc_isa best = mnc_isa_supported();
    active = (int)(isa < best ? isa : best);
    return (mnc_isa)active;
}

int mnc_openmp_enabled(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int mnc_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
