// gemm.c — mnistc's SGEMM framework in the GotoBLAS/BLIS structure: the loops over column
// blocks (NC) and reduction blocks (KC), packing of the B panels that need it, the split
// of output tiles over threads, the epilogue, and the choice of microkernel per CPU
// target. The arithmetic is the microkernels' (gemm_kernel_<isa>.c, contract in
// gemm_kernel.h); the rounding contract is mnistc.h's. No BLAS, no ISA code here.
//
// Our GEMMs are small and their operands live in L2, so packing is avoided where it does
// not pay (BLIS "sup"): A is always read in place (row streams for NN, contiguous runs
// of a transposed A for TN), full panels of an untransposed B are read in place, and
// only transposed B (NT/TT) and the partial last panel (n % NR) are packed, into an
// NR-wide, zero-padded copy.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_kernel.h"
#include "internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(_MSC_VER) && !defined(__clang__)
#define THREAD_LOCAL __declspec(thread)
#else
#define THREAD_LOCAL _Thread_local
#endif

#define KC MNC_GEMM_KC

// A thread gets at least this many flops (2·m·n·k): below it a second thread costs more
// in wake-up and barrier than it saves. Measured with bench/test_bench_gemm.py.
#define MIN_FLOPS_PER_THREAD 4000000

// An untransposed B is read in place while one KC block of it fits in this many bytes (it
// then stays in L2 across all row tiles); a larger B is packed NC columns at a time, so
// the kernel streams contiguous panels instead of one 4 KiB page per row.
#define DIRECT_B_BYTES (1 << 20)

// Per-target block sizes and microkernel, filled from gemm_kernel.h. KC is MNC_GEMM_KC on
// every target (it is part of the rounding contract); NC bounds the packed B block
// (KC × NC floats per column block) so that it stays in L2.
typedef struct gemm_target {
    int mr, nr;
    int64_t nc;
    mnc_gemm_ukernel *kernel;
} gemm_target;

static const gemm_target targets[3] = {
    {MNC_GENERIC_MR, MNC_GENERIC_NR, 256, mnc_gemm_ukernel_generic},
#ifdef MNC_GEMM_X86
    {MNC_AVX2_MR, MNC_AVX2_NR, 256, mnc_gemm_ukernel_avx2},
    {MNC_AVX512_MR, MNC_AVX512_NR, 256, mnc_gemm_ukernel_avx512},
#endif
};

static const gemm_target *target_for(mnc_isa isa) {
    int i = (int)isa;
    if (i < 0 || i > 2 || targets[i].kernel == NULL) i = 0;
    return &targets[i];
}

// One call's arguments, and how its tiles are laid out.
typedef struct gemm_call {
    const gemm_target *t;
    int trans_a, trans_b;
    int64_t m, n, k;
    float alpha, beta;
    const float *a, *b;
    int64_t lda, ldb;
    float *c;
    int64_t ldc;
    const mnc_epilogue *ep;
    int pack_all;      // pack every B panel (transposed B), else only a partial last one
    int64_t nc;        // columns per column block
    int pack_a;        // copy each transposed A tile to k-major form
    int64_t slot;      // floats of packing buffer per (virtual) thread: B panels, A tile
    int64_t slot_b;    // the B panels' part of it
    int team;
} gemm_call;

static int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }
static int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

// dst[p * NR + j] = op(B)(p0 + p, j0 + j) for p < kc, j < nr, and 0 for nr <= j < NR.
static void pack_b_panel(float *dst, int nr_tile, const gemm_call *g, int64_t p0,
                         int64_t kc, int64_t j0, int nr) {
    if (!g->trans_b) {
        for (int64_t p = 0; p < kc; p++) {
            const float *src = g->b + (p0 + p) * g->ldb + j0;
            float *d = dst + p * nr_tile;
            for (int j = 0; j < nr; j++) d[j] = src[j];
            for (int j = nr; j < nr_tile; j++) d[j] = 0.0f;
        }
        return;
    }
    // op(B)(p, j) = B[j, p]: a transpose, done 16 k at a time so that the 16 × NR piece
    // of the panel being written stays in L1 while the nr source rows are read in runs.
    for (int64_t p1 = 0; p1 < kc; p1 += 16) {
        int64_t p2 = min64(p1 + 16, kc);
        for (int j = 0; j < nr; j++) {
            const float *src = g->b + (j0 + j) * g->ldb + p0;
            for (int64_t p = p1; p < p2; p++) dst[p * nr_tile + j] = src[p];
        }
        for (int64_t p = p1; p < p2; p++)
            for (int j = nr; j < nr_tile; j++) dst[p * nr_tile + j] = 0.0f;
    }
}

// A transposed A tile copied to the kernel's k-major form: dst[p * MR + r] = op(A)(i0 + r,
// p0 + p) = A[p0 + p, i0 + r]. It is only a copy of mr contiguous floats per k, and it
// turns kc rows that may be 4 KiB apart (L1 set conflicts, a TLB entry each) into one
// contiguous stream.
static void pack_a_transposed(float *dst, int mr_tile, const gemm_call *g, int64_t p0,
                              int64_t kc, int64_t i0, int mr) {
    const float *src = g->a + p0 * g->lda + i0;
    const int64_t lda = g->lda;
    // A constant length lets the compiler copy a row in a few vector moves.
#define COPY_ROWS(len)                                                                  \
    for (int64_t p = 0; p < kc; p++) memcpy(dst + p * mr_tile, src + p * lda, (len) * sizeof(float))
    if (mr == MNC_AVX512_MR) COPY_ROWS(MNC_AVX512_MR);
    else if (mr == MNC_AVX2_MR) COPY_ROWS(MNC_AVX2_MR);
    else if (mr == MNC_GENERIC_MR) COPY_ROWS(MNC_GENERIC_MR);
    else COPY_ROWS(mr);
#undef COPY_ROWS
}

// The epilogue on the finished tile C[i0 .. i0+mr, j0 .. j0+nr), still hot in L1.
static void epilogue_tile(const mnc_epilogue *ep, float *c, int64_t ldc, int64_t i0,
                          int64_t j0, int mr, int nr) {
    for (int r = 0; r < mr; r++) {
        float *row = c + (i0 + r) * ldc + j0;
        if (ep->bias != NULL)
            for (int j = 0; j < nr; j++) row[j] += ep->bias[j0 + j];
        if (ep->relu)
            for (int j = 0; j < nr; j++) row[j] = row[j] < 0.0f ? 0.0f : row[j];
        if (ep->relu_mask != NULL) {
            const float *mask = ep->relu_mask + (i0 + r) * ep->ld_mask + j0;
            for (int j = 0; j < nr; j++) row[j] = mask[j] <= 0.0f ? 0.0f : row[j];
        }
    }
}

// The tiles of virtual thread `part` of g->team: in every column block, a contiguous range
// of B panels (all row tiles), or of row tiles when there are fewer panels than threads.
// Which tiles a thread gets never changes how a tile is computed.
static void gemm_part(const gemm_call *g, float *buf, int part) {
    const gemm_target *t = g->t;
    const int mr_tile = t->mr, nr_tile = t->nr;
    const int64_t row_tiles = ceil_div(g->m, mr_tile);
    for (int64_t jc = 0; jc < g->n; jc += g->nc) {
        int64_t panels = ceil_div(min64(g->nc, g->n - jc), nr_tile);
        int64_t q0 = 0, q1 = panels, i0 = 0, i1 = row_tiles;
        if (panels >= g->team) {
            q0 = panels * part / g->team, q1 = panels * (part + 1) / g->team;
        } else {
            i0 = row_tiles * part / g->team, i1 = row_tiles * (part + 1) / g->team;
        }
        if (q0 == q1 || i0 == i1) continue;
        int64_t pc = 0;
        do {
            int64_t kc = min64(KC, g->k - pc);
            float beta = pc == 0 ? g->beta : 1.0f;
            int last = pc + kc >= g->k;
            for (int64_t q = q0; q < q1; q++) {
                int64_t j = jc + q * nr_tile;
                int nr = (int)min64(nr_tile, g->n - j);
                if (g->pack_all)
                    pack_b_panel(buf + (q - q0) * kc * nr_tile, nr_tile, g, pc, kc, j, nr);
                else if (nr < nr_tile)
                    pack_b_panel(buf, nr_tile, g, pc, kc, j, nr);
            }
            for (int64_t it = i0; it < i1; it++) {
                int64_t i = it * mr_tile;
                int mr = (int)min64(mr_tile, g->m - i);
                const float *a = g->trans_a ? g->a + pc * g->lda + i : g->a + i * g->lda + pc;
                int64_t rs_a = g->trans_a ? 1 : g->lda, cs_a = g->trans_a ? g->lda : 1;
                if (g->pack_a && (q1 - q0) >= (getenv("PA") ? atoi(getenv("PA")) : 1)) {
                    pack_a_transposed(buf + g->slot_b, mr_tile, g, pc, kc, i, mr);
                    a = buf + g->slot_b, cs_a = mr_tile;
                }
                for (int64_t q = q0; q < q1; q++) {
                    int64_t j = jc + q * nr_tile;
                    int nr = (int)min64(nr_tile, g->n - j);
                    const float *b = buf + (g->pack_all ? (q - q0) * kc * nr_tile : 0);
                    int64_t rs_b = nr_tile;
                    if (!g->pack_all && nr == nr_tile) b = g->b + pc * g->ldb + j, rs_b = g->ldb;
                    float *c = g->c + i * g->ldc + j;
                    t->kernel(kc, mr, nr, g->alpha, a, rs_a, cs_a, b, rs_b, beta, c, g->ldc);
                    if (last && g->ep != NULL) epilogue_tile(g->ep, g->c, g->ldc, i, j, mr, nr);
                }
            }
            pc += kc;
        } while (pc < g->k);
    }
}

// The packing buffer of the calling thread, shared out to its team: 64-byte aligned,
// grown when a call needs more, never freed (at most team × KC × NC floats).
static THREAD_LOCAL void *pack_raw;
static THREAD_LOCAL float *pack_mem;
static THREAD_LOCAL size_t pack_cap;

static float *pack_buffer(size_t floats) {
    if (floats <= pack_cap) return pack_mem;
    void *raw = malloc(floats * sizeof(float) + 64);
    if (raw == NULL) return NULL;
    free(pack_raw);
    pack_raw = raw;
    pack_mem = (float *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    pack_cap = floats;
    return pack_mem;
}

// The same arithmetic one element at a time, for when the packing buffer cannot be had.
static void gemm_unbuffered(const gemm_call *g, int hardware_fma) {
    for (int64_t i = 0; i < g->m; i++) {
        for (int64_t j = 0; j < g->n; j++) {
            float *c = g->c + i * g->ldc + j;
            int64_t pc = 0;
            do {
                int64_t kc = min64(KC, g->k - pc);
                float beta = pc == 0 ? g->beta : 1.0f, acc = 0.0f;
                for (int64_t p = pc; p < pc + kc; p++) {
                    float x = g->trans_a ? g->a[p * g->lda + i] : g->a[i * g->lda + p];
                    float y = g->trans_b ? g->b[j * g->ldb + p] : g->b[p * g->ldb + j];
                    acc = hardware_fma ? fmaf(x, y, acc) : x * y + acc;
                }
                if (beta == 0.0f) *c = g->alpha * acc;
                else *c = hardware_fma ? fmaf(g->alpha, acc, beta * *c) : g->alpha * acc + beta * *c;
                pc += kc;
            } while (pc < g->k);
        }
    }
    if (g->ep != NULL)
        for (int64_t i = 0; i < g->m; i++) epilogue_tile(g->ep, g->c, g->ldc, i, 0, 1, (int)g->n);
}

void mnc_sgemm_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                   float alpha, const float *a, int64_t lda, const float *b,
                   int64_t ldb, float beta, float *c, int64_t ldc,
                   const mnc_epilogue *ep, int n_threads) {
    if (m <= 0 || n <= 0) return;
    if (k < 0) k = 0;
    mnc_isa isa = mnc_isa_active();
    gemm_call g = {target_for(isa), trans_a != 0, trans_b != 0, m, n, k, alpha, beta,
                   a, b, lda, ldb, c, ldc, ep, 0, n, 0, 0, 0, 1};
    if (ep != NULL && ep->bias == NULL && !ep->relu && ep->relu_mask == NULL) g.ep = NULL;
    const int64_t mr = g.t->mr, nr = g.t->nr;
    g.pack_all = g.trans_b || (double)min64(KC, k) * (double)n * 4.0 > DIRECT_B_BYTES;
    if (g.pack_all) g.nc = min64(g.t->nc, n);

    double flops = 2.0 * (double)m * (double)n * (double)k;
    int64_t panels = ceil_div(g.nc, nr), row_tiles = ceil_div(m, mr);
    int64_t tiles = panels > row_tiles ? panels : row_tiles;
    int64_t work = flops > 9e18 ? INT64_MAX : (int64_t)flops;
    g.team = mnc_team_size(n_threads, work, MIN_FLOPS_PER_THREAD);
    if (g.team > tiles) g.team = (int)tiles;

    int64_t kc = min64(KC, k);
    int64_t slot_panels = 0;
    if (g.pack_all) slot_panels = panels >= g.team ? ceil_div(panels, g.team) : panels;
    else if (n % nr != 0) slot_panels = 1;
    g.pack_a = g.trans_a;
    g.slot_b = kc * nr * slot_panels;
    g.slot = g.slot_b + (g.pack_a ? kc * mr : 0);
    float *buf = NULL;
    if (g.slot > 0) {
        buf = pack_buffer((size_t)(g.slot * g.team));
        if (buf == NULL) {
#ifdef FP_FAST_FMAF
            gemm_unbuffered(&g, 1);
#else
            gemm_unbuffered(&g, isa != MNC_ISA_GENERIC);
#endif
            return;
        }
    }

    const gemm_call *gp = &g;
#pragma omp parallel num_threads(g.team) if (g.team > 1)
    {
        int tid = 0, got = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        got = omp_get_num_threads();
#endif
        // If the runtime gave fewer threads than asked, each runs several parts in turn.
        for (int part = tid; part < gp->team; part += got)
            gemm_part(gp, buf == NULL ? NULL : buf + part * gp->slot, part);
    }
}
