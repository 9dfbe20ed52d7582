// gemm.c — mnistc's SGEMM framework in the GotoBLAS/BLIS structure: the loops over column
// blocks (NC) and reduction blocks (KC), packing of the panels that need it, the split
// of output tiles over threads, handing each tile's epilogue to its last microkernel
// call, and the choice of microkernel per CPU target. The arithmetic is the
// microkernels' (gemm_kernel_<isa>.c, contract in gemm_kernel.h); the rounding contract
// is mnistc.h's. No BLAS, no ISA code here.
//
// The model's operands live in L2, so packing is done only where it pays (BLIS "sup"):
//  - A is read in place: MR row streams (NN/NT) or MR contiguous floats per k (TN/TT).
//    An A tile whose rows would crowd a few L1 sets (transposed: a multiple of 512 B
//    apart; untransposed, on AVX2 and AVX-512: 4 KiB), or, transposed, whose rows are
//    too far apart for the stride prefetcher and too many to stay in L1 beside a B panel
//    or reused by many panels, and that is reused across >= PACK_A_MIN_PANELS panels is
//    first copied to k-major form.
//  - B is read in place when untransposed, one KC block of it fits DIRECT_B_BYTES and its
//    rows are less than DIRECT_B_MAX_LDB floats apart (the small model's weights and
//    gradients), or only one row tile uses it. A transposed B (NT/TT) or another one is
//    packed NC columns at a time into NR-wide panels; a partial last panel (n % NR) is
//    packed, zero-padded, unless the kernel reads it in place with masked loads
//    (AVX-512, up to 16 columns: the 10-class layer's). A B in column panels
//    (mnc_gemm_panels: the first layer's weights) is read in place, panel by panel.
// A KC block with beta == 0 deeper than SPLIT_KB is cut into sub-blocks whose partial
// chains wait in C (MNC_UK_ACC_IN/OUT, exact), so that an A tile (MR x sub-block) stays
// in L1 and a packed B block (sub-block x NC, NC sized by PACK_B_BYTES) in L2.
// Loop order per column block and KC block: row tiles outside, panels inside, so the
// A tile stays in L1 while B streams from L2. Threads split a block's row tiles or its
// panels (split_panels); the split never changes how a tile is computed.
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

// A thread gets at least MNC_GEMM_MIN_FLOPS_PER_THREAD flops (2·m·n·k) per call. Starting
// a team costs one to two microseconds while its workers spin and tens of microseconds once
// they sleep (after a millisecond or two idle), so below it a second thread saves less
// than it costs: 1 MFLOP is ~10 us on one core. The small model's 0.06-0.8 MFLOP GEMMs
// stay on one thread; its >= 2 MFLOP ones get two. (Inside a region that already runs,
// mlp.c asks for much less.)

// The row path (m == 1) runs at the speed B streams from memory, a tenth or less of the
// tile kernels' rate, so a part needs fewer flops; a fifth keeps 0.2 MFLOP calls (batch-1
// 784x128) on one thread.
#define ROW_FLOPS_DIVISOR 5

// An untransposed B is read in place while one KC block of it fits in this many bytes (it
// then stays in L2 across all row tiles, next to the streaming A and C, e.g. the 401 KB
// of the model's W1); a larger B reused by several row tiles is packed NC columns at a
// time, so the kernel streams contiguous panels instead of one 4 KiB page per row.
#define DIRECT_B_BYTES (512 << 10)

// ... but not when its rows are this many floats (1 KiB) or more apart: a panel's rows
// then sit on a new 4 KiB page every few k, which the hardware prefetchers do not follow,
// so packing pays even for a B read by a handful of row tiles. Closer rows (the small
// model's 128 floats) are read in place as fast as packed.
#define DIRECT_B_MAX_LDB 256

// A transposed A tile (MR floats from each of kc rows lda apart) is copied to k-major form
// when its rows would crowd a few L1 sets, i.e. lda is a multiple of PACK_A_LDA (rows a
// multiple of 512 B apart use at most 8 of the 64 sets of a 48 KiB 12-way L1; 4 KiB
// apart, one set), and a thread reuses it for at least PACK_A_MIN_PANELS B panels, which
// repays the copy. Otherwise the tile is read in place.
#define PACK_A_LDA 128
#define PACK_A_MIN_PANELS 4

// It is also copied when its rows are more than PACK_A_FAR_BYTES apart, beyond the reach
// of the L1 stride prefetcher (every k is then a demand miss), and either its lines (one
// per k) with one B panel (kc x NR floats) would fill more than PACK_A_L1_BYTES, half the
// L1 (the B panels streaming through then evict the A lines before the next panel reads
// them), or a column block has at least PACK_A_FAR_PANELS panels (the misses of the first
// panel's pass then weigh less as one contiguous copy than in the kernel). The input
// layer's weight gradient, A = the batch at 3136 B per row, is copied from depth 128 on
// AVX-512 and 256 on AVX2, or from 512 columns on AVX-512 and 256 on AVX2.
#define PACK_A_FAR_BYTES 2048
#define PACK_A_L1_BYTES (24 << 10)
#define PACK_A_FAR_PANELS 16

// An untransposed A tile (MR rows lda apart, read as MR streams) is copied the same way
// when its rows are a multiple of 4 KiB apart, where the MR lines the kernel reads at
// each k all fall in one L1 set: AVX-512's 12 rows fill a 12-way set and AVX2's 6 most
// of an 8-way one (AMD's 32 KiB L1), so the lines of B passing through evict them. Rows
// 2 KiB apart (two sets) leave room. The packer transposes in registers; a scalar copy
// would cost about what the copy saves.
#define PACK_A_ROWS_LDA 1024

// The deepest sub-block of a KC block (see the top) and the size of a packed B block.
#define SPLIT_KB 256
#define PACK_B_BYTES (1 << 20)

// The most packed B a part copies again when a team splits rows to keep off C's shared
// lines (mnc_gemm_plan_init).
#define ROWS_FIRST_MAX_B_BYTES (256 << 10)

// Per-target block sizes and microkernel, filled from gemm_kernel.h. KC is MNC_GEMM_KC on
// every target (it is part of the rounding contract); NC bounds the packed B block
// (KC × NC floats per column block) so that it stays in L2.
typedef struct gemm_target {
    int mr, nr;
    int64_t nc;
    mnc_gemm_ukernel *kernel;
    mnc_gemm_pack_b *pack_b;   // NULL: the portable copy in pack_b_panel
    mnc_gemm_pack_b *pack_bt;  // NULL: the portable transpose in pack_b_panel
    mnc_gemm_row *row;         // NULL: m == 1 goes through the tile kernel
    mnc_gemm_row *row_t;       // the same for m == 1 with a transposed B
    mnc_gemm_pack_a *pack_a;   // NULL: an untransposed A is always read in place
    int b_masked_max;          // a last B panel this narrow is read in place (gemm_kernel.h)
} gemm_target;

static const gemm_target targets[3] = {
    [MNC_ISA_GENERIC] = {.mr = MNC_GENERIC_MR,
                         .nr = MNC_GENERIC_NR,
                         .nc = 256,
                         .kernel = mnc_gemm_ukernel_generic},
#ifdef MNC_GEMM_X86
    [MNC_ISA_AVX2] = {.mr = MNC_AVX2_MR,
                      .nr = MNC_AVX2_NR,
                      .nc = 256,
                      .kernel = mnc_gemm_ukernel_avx2,
                      .pack_b = mnc_gemm_pack_b_avx2,
                      .pack_bt = mnc_gemm_pack_bt_avx2,
                      .row = mnc_gemm_row_avx2,
                      .row_t = mnc_gemm_row_t_avx2,
                      .pack_a = mnc_gemm_pack_a_avx2},
    [MNC_ISA_AVX512] = {.mr = MNC_AVX512_MR,
                        .nr = MNC_AVX512_NR,
                        .nc = 256,
                        .kernel = mnc_gemm_ukernel_avx512,
                        .pack_b = mnc_gemm_pack_b_avx512,
                        .pack_bt = mnc_gemm_pack_bt_avx512,
                        .row = mnc_gemm_row_avx512,
                        .row_t = mnc_gemm_row_t_avx512,
                        .pack_a = mnc_gemm_pack_a_avx512,
                        .b_masked_max = MNC_AVX512_NR / 2},
#endif
};

static const gemm_target *target_for(mnc_isa isa) {
    int i = (int)isa;
    if (i < 0 || i > 2 || targets[i].kernel == NULL) i = 0;
    return &targets[i];
}

static int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }

// Where column j of a matrix starts: j, or in column panels (mnc_gemm_panels) its panel's
// start plus its place in the panel.
static int64_t column(int64_t j, int64_t panel) {
    return panel == 0 ? j : j / MNC_PANEL * panel + j % MNC_PANEL;
}
static int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }

// dst[p * NR + j] = op(B)(p0 + p, j0 + j) for p < kc, j < nr, and 0 for nr <= j < NR.
static void pack_b_panel(float *dst, int nr_tile, const mnc_gemm_plan *g, int64_t p0, int64_t kc,
                         int64_t j0, int nr) {
    if (!g->trans_b) {
        for (int64_t p = 0; p < kc; p++) {
            const float *src = g->b + (p0 + p) * g->ldb + j0;
            float *d = dst + p * nr_tile;
            for (int j = 0; j < nr; j++) d[j] = src[j];
            for (int j = nr; j < nr_tile; j++) d[j] = 0.0f;
        }
        return;
    }
    const float *src = g->b + j0 * g->ldb + p0;
    // The portable transpose, 16 k at a time so that the 16 × NR piece of the panel being
    // written stays in L1 while the nr source rows are read in short runs.
    for (int64_t p1 = 0; p1 < kc; p1 += 16) {
        int64_t p2 = min64(p1 + 16, kc);
        for (int j = 0; j < nr; j++)
            for (int64_t p = p1; p < p2; p++) dst[p * nr_tile + j] = src[j * g->ldb + p];
        for (int64_t p = p1; p < p2; p++)
            for (int j = nr; j < nr_tile; j++) dst[p * nr_tile + j] = 0.0f;
    }
}

// Columns [j0, j1) of op(B) rows [p0, p0 + kc) as consecutive panels kc * NR floats apart,
// through the target's packer when it has one.
static void pack_b_panels(float *dst, const mnc_gemm_plan *g, int64_t p0, int64_t kc, int64_t j0,
                          int64_t j1) {
    const int nr_tile = g->t->nr;
    mnc_gemm_pack_b *pack = g->trans_b ? g->t->pack_bt : g->t->pack_b;
    if (pack != NULL) {
        const float *src = g->trans_b ? g->b + j0 * g->ldb + p0 : g->b + p0 * g->ldb + j0;
        pack(dst, kc * nr_tile, src, g->ldb, kc, j1 - j0);
        return;
    }
    for (int64_t j = j0; j < j1; j += nr_tile)
        pack_b_panel(dst + (j - j0) / nr_tile * kc * nr_tile, nr_tile, g, p0, kc, j,
                     (int)min64(nr_tile, j1 - j));
}

// An A tile copied to the kernel's k-major form: dst[p * MR + r] = op(A)(i0 + r, p0 + p).
// Transposed, it is a copy of mr contiguous floats per k, and it turns kc rows that may be
// 4 KiB apart (L1 set conflicts, a TLB entry each) into one contiguous stream;
// untransposed, the target's packer transposes mr rows.
static void pack_a_tile(float *dst, int mr_tile, const mnc_gemm_plan *g, int64_t p0, int64_t kc,
                        int64_t i0, int mr) {
    const int64_t lda = g->lda;
    if (!g->trans_a) {
        g->t->pack_a(dst, g->a + i0 * lda + p0, lda, kc, mr);
        return;
    }
    const float *src = g->a + p0 * lda + i0;
    // A constant length lets the compiler copy a row in a few vector moves.
#define COPY_ROWS(len) \
    for (int64_t p = 0; p < kc; p++) memcpy(dst + p * mr_tile, src + p * lda, (len) * sizeof(float))
    if (mr == MNC_AVX512_MR) COPY_ROWS(MNC_AVX512_MR);
    else if (mr == MNC_AVX2_MR) COPY_ROWS(MNC_AVX2_MR);
    else if (mr == MNC_GENERIC_MR) COPY_ROWS(MNC_GENERIC_MR);
    else COPY_ROWS(mr);
#undef COPY_ROWS
}

// The epilogue as a pass over C[i0 .. i0+mr, j0 .. j0+nr), for the row path and the
// unbuffered fallback; tiles get it from the microkernel, in registers.
static void epilogue_tile(const mnc_epilogue *ep, float *c, int64_t ldc, int64_t i0, int64_t j0,
                          int mr, int nr) {
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

// Whether an untransposed B's partial last panel (n % NR columns) is read in place by the
// kernel's masked loads rather than packed, zero-padded, on every call.
static int partial_in_place(const mnc_gemm_plan *g) {
    return g->n % g->t->nr <= g->t->b_masked_max;
}

// Whether a team splits a column block by B panels rather than by row tiles. A packed B
// goes by panels unless rows give the busiest thread a smaller share (no panel is packed
// twice). A B read in place goes by rows unless panels give the busiest thread a share
// at least 10% smaller: each thread then multiplies its own A tiles by every panel of a
// B small enough to sit in every core's L2, and in a training step its rows of the
// batch are the ones it gathered, already in its cache. With rows_first (see
// mnc_gemm_plan_init), rows whenever every thread gets some.
static int split_panels(int64_t panels, int64_t row_tiles, int team, int packed_b, int rows_first) {
    if (panels < team || (rows_first && row_tiles >= team)) return 0;
    if (row_tiles < team) return 1;
    // ceil(x / team) / x compared across the two splits, without division.
    int64_t by_panels = ceil_div(panels, team) * row_tiles;
    int64_t by_rows = ceil_div(row_tiles, team) * panels;
    return packed_b ? by_panels <= by_rows : by_panels * 10 < by_rows * 9;
}

static int64_t panels_per_part(const mnc_gemm_plan *g, int64_t panels, int64_t row_tiles) {
    return split_panels(panels, row_tiles, g->team, g->b_packed, g->rows_first)
               ? ceil_div(panels, g->team)
               : panels;
}

// The tiles of virtual thread `part` of g->team: in every column block, a contiguous range
// of row tiles (all panels) or of B panels (all row tiles), as split_panels says. Which
// tiles a thread gets never changes how a tile is computed.
static void gemm_part(const mnc_gemm_plan *g, float *buf, int part) {
    const gemm_target *t = g->t;
    const int mr_tile = t->mr, nr_tile = t->nr;
    const int64_t row_tiles = ceil_div(g->m, mr_tile);
    float *a_buf = buf + g->slot_b;
    for (int64_t jc = 0; jc < g->n; jc += g->nc) {
        int64_t panels = ceil_div(min64(g->nc, g->n - jc), nr_tile);
        int64_t q0 = 0, q1 = panels, i0 = 0, i1 = row_tiles;
        if (split_panels(panels, row_tiles, g->team, g->b_packed, g->rows_first)) {
            q0 = panels * part / g->team, q1 = panels * (part + 1) / g->team;
        } else {
            i0 = row_tiles * part / g->team, i1 = row_tiles * (part + 1) / g->team;
        }
        if (q0 == q1 || i0 == i1) continue;
        const int reuse_a = q1 - q0 >= PACK_A_MIN_PANELS;
        int64_t pc = 0;
        do {
            int64_t kc = min64(KC, g->k - pc);
            float beta = pc == 0 ? g->beta : 1.0f;
            int last_block = pc + kc >= g->k;
            // The block's sub-blocks: partial chains wait in C (beta == 0 only).
            int64_t subs = beta == 0.0f && g->kb > 0 ? ceil_div(kc, g->kb) : 1;
            int64_t kb_step = subs > 1 ? (ceil_div(kc, subs) + 15) / 16 * 16 : kc;
            for (int64_t ps = 0; ps < kc; ps += kb_step) {
                int64_t p0 = pc + ps, kb = min64(kb_step, kc - ps);
                int flags = (ps > 0 ? MNC_UK_ACC_IN : 0) | (ps + kb < kc ? MNC_UK_ACC_OUT : 0);
                int last = last_block && ps + kb >= kc;
                if (g->b_packed) {
                    pack_b_panels(buf, g, p0, kb, jc + q0 * nr_tile,
                                  min64(g->n, jc + q1 * nr_tile));
                } else if (jc + q1 * nr_tile > g->n && !partial_in_place(g)) {
                    int64_t j = jc + (q1 - 1) * nr_tile;
                    pack_b_panels(buf, g, p0, kb, j, g->n);
                }
                const int packed_a = g->pack_a && reuse_a;
                for (int64_t it = i0; it < i1; it++) {
                    int64_t i = it * mr_tile;
                    int mr = (int)min64(mr_tile, g->m - i);
                    const float *a = g->trans_a ? g->a + p0 * g->lda + i : g->a + i * g->lda + p0;
                    int64_t rs_a = g->trans_a ? 1 : g->lda, cs_a = g->trans_a ? g->lda : 1;
                    if (packed_a) {
                        pack_a_tile(a_buf, mr_tile, g, p0, kb, i, mr);
                        a = a_buf, rs_a = 1, cs_a = mr_tile;
                    }
                    for (int64_t q = q0; q < q1; q++) {
                        int64_t j = jc + q * nr_tile;
                        int nr = (int)min64(nr_tile, g->n - j);
                        const float *b = buf + (g->b_packed ? (q - q0) * kb * nr_tile : 0);
                        int64_t rs_b = nr_tile;
                        if (!g->b_packed && (nr == nr_tile || partial_in_place(g)))
                            b = g->b + p0 * g->ldb + column(j, g->b_panel), rs_b = g->ldb;
                        float *c = g->c + i * g->ldc + column(j, g->c_panel);
                        const mnc_uk_epilogue *tile_ep = NULL;
                        mnc_uk_epilogue here;
                        if (last && g->has_ep) {
                            const mnc_epilogue *ep = &g->ep;
                            here = (mnc_uk_epilogue){
                                .bias = ep->bias != NULL ? ep->bias + j : NULL,
                                .relu = ep->relu,
                                .mask = ep->relu_mask != NULL ? ep->relu_mask + i * ep->ld_mask + j
                                                              : NULL,
                                .ld_mask = ep->ld_mask};
                            tile_ep = &here;
                        }
                        t->kernel(kb, mr, nr, g->alpha, a, rs_a, cs_a, b, rs_b, beta, c, g->ldc,
                                  flags, tile_ep);
                    }
                }
            }
            pc += kc;
        } while (pc < g->k);
    }
}

// The row path (m == 1): part `part` of g->team takes a contiguous range of columns, in
// 16-float units so that no two parts share a cache line of C.
static void gemm_row_part(const mnc_gemm_plan *g, int part) {
    int64_t units = ceil_div(g->n, 16);
    int64_t j0 = units * part / g->team * 16;
    int64_t j1 = min64(units * (part + 1) / g->team * 16, g->n);
    if (j0 >= j1) return;
    int64_t inc_a = g->trans_a ? g->lda : 1, pc = 0;
    mnc_gemm_row *row = g->trans_b ? g->t->row_t : g->t->row;
    do {
        int64_t kc = min64(KC, g->k - pc);
        const float *b = g->trans_b ? g->b + j0 * g->ldb + pc : g->b + pc * g->ldb + j0;
        row(kc, j1 - j0, g->alpha, g->a + pc * inc_a, inc_a, b, g->ldb, pc == 0 ? g->beta : 1.0f,
            g->c + j0);
        pc += kc;
    } while (pc < g->k);
    if (g->has_ep) epilogue_tile(&g->ep, g->c, g->ldc, 0, j0, 1, (int)(j1 - j0));
}

// The packing buffer of the calling thread, shared out to its team: 64-byte aligned,
// grown when a call needs more, never freed (at most team × KC × NC floats).
static THREAD_LOCAL void *pack_raw;
static THREAD_LOCAL float *pack_mem;
static THREAD_LOCAL size_t pack_cap;

// The most floats mnc_gemm_buffer may allocate, and how many calls took gemm_unbuffered;
// only tests look (mnc_gemm_test_pack_limit in internal.h).
static size_t pack_limit = SIZE_MAX;
static size_t unbuffered_calls;

size_t mnc_gemm_test_pack_limit(size_t floats) {
    size_t calls = unbuffered_calls;
    pack_limit = floats, unbuffered_calls = 0;
    free(pack_raw);
    pack_raw = NULL, pack_mem = NULL, pack_cap = 0;
    return calls;
}

float *mnc_gemm_buffer(size_t floats) {
    if (floats <= pack_cap) return pack_mem;
    if (floats > pack_limit) return NULL;
    void *raw = malloc(floats * sizeof(float) + 64);
    if (raw == NULL) return NULL;
    free(pack_raw);
    pack_raw = raw;
    pack_mem = (float *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    pack_cap = floats;
    return pack_mem;
}

// The same arithmetic one element at a time, for when the packing buffer cannot be had:
// the same chains and roundings, so the same bits as the tiled path.
static void gemm_unbuffered(const mnc_gemm_plan *g, int hardware_fma) {
    unbuffered_calls++;
    for (int64_t i = 0; i < g->m; i++) {
        for (int64_t j = 0; j < g->n; j++) {
            float *c = g->c + i * g->ldc + column(j, g->c_panel);
            int64_t pc = 0;
            do {
                int64_t kc = min64(KC, g->k - pc);
                float beta = pc == 0 ? g->beta : 1.0f, acc = 0.0f;
                for (int64_t p = pc; p < pc + kc; p++) {
                    float x = g->trans_a ? g->a[p * g->lda + i] : g->a[i * g->lda + p];
                    float y = g->trans_b ? g->b[j * g->ldb + p]
                                         : g->b[p * g->ldb + column(j, g->b_panel)];
                    acc = hardware_fma ? fmaf(x, y, acc) : x * y + acc;
                }
                if (beta == 0.0f) *c = g->alpha * acc;
                else
                    *c = hardware_fma ? fmaf(g->alpha, acc, beta * *c) : g->alpha * acc + beta * *c;
                pc += kc;
            } while (pc < g->k);
        }
    }
    if (g->has_ep)
        for (int64_t i = 0; i < g->m; i++) epilogue_tile(&g->ep, g->c, g->ldc, i, 0, 1, (int)g->n);
}

int mnc_gemm_plan_init(mnc_gemm_plan *g, int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                       float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                       float beta, float *c, int64_t ldc, const mnc_epilogue *ep,
                       const mnc_gemm_panels *layout, int n_threads, int64_t min_flops) {
    if (m <= 0 || n <= 0) return -1;
    if (k < 0) k = 0;
    *g = (mnc_gemm_plan){.t = target_for(mnc_isa_active()),
                         .trans_a = trans_a != 0,
                         .trans_b = trans_b != 0,
                         .m = m,
                         .n = n,
                         .k = k,
                         .alpha = alpha,
                         .beta = beta,
                         .a = a,
                         .b = b,
                         .lda = lda,
                         .ldb = ldb,
                         .c = c,
                         .ldc = ldc,
                         .nc = n,
                         .team = 1,
                         .b_panel = layout != NULL ? layout->b : 0,
                         .c_panel = layout != NULL ? layout->c : 0};
    if (ep != NULL && (ep->bias != NULL || ep->relu || ep->relu_mask != NULL))
        g->has_ep = 1, g->ep = *ep;
    int in_panels = g->b_panel != 0 || g->c_panel != 0;
    if (m == 1 && !in_panels && (g->trans_b ? g->t->row_t : g->t->row) != NULL) {
        g->row_path = 1;
        g->team = mnc_team_size(n_threads, 2 * n * k, min_flops / ROW_FLOPS_DIVISOR);
        if (g->team > ceil_div(n, 16)) g->team = (int)ceil_div(n, 16);
        return 0;
    }
    const int64_t mr = g->t->mr, nr = g->t->nr;
    g->b_packed =
        g->b_panel == 0 &&
        (g->trans_b || (m > mr && ((double)min64(KC, k) * (double)n * 4.0 > DIRECT_B_BYTES ||
                                   ldb >= DIRECT_B_MAX_LDB)));
    g->kb = k > SPLIT_KB ? SPLIT_KB : 0;
    // The depth of one microkernel call, and of the deepest packed B block (only a first
    // KC block with beta == 0 has sub-blocks).
    int64_t depth = g->kb > 0 && beta == 0.0f ? g->kb : min64(KC, k);
    int64_t pack_depth = k <= KC ? depth : min64(KC, k);
    if (g->b_packed) {
        // As many columns as keep a packed block (pack_depth × nc) within PACK_B_BYTES.
        int64_t nc = PACK_B_BYTES / (pack_depth * 4) / nr * nr;
        g->nc = min64(nc > g->t->nc ? nc : g->t->nc, n);
    }

    double flops = 2.0 * (double)m * (double)n * (double)k;
    int64_t panels = ceil_div(g->nc, nr), row_tiles = ceil_div(m, mr);
    int64_t tiles = panels > row_tiles ? panels : row_tiles;
    int64_t work = flops > 9e18 ? INT64_MAX : (int64_t)flops;
    g->team = mnc_team_size(n_threads, work, min_flops);
    if (g->team > tiles) g->team = (int)tiles;

    // Parts on neighbouring panels of a C whose panel boundaries are not on 64-byte lines
    // (its start, its row stride or the panel's width off a multiple) write a shared line in
    // every row, which crosses between the cores at each tile's store: at 2 threads with C
    // 16 bytes off a line (NumPy guarantees 16), 256x128x32 NT ran 2.9x slower and
    // 128x128x128 NT 12%. Such a C goes by rows, unless each part would then pack more than
    // ROWS_FIRST_MAX_B_BYTES of B again: packing W_1's 4 MiB on both cores cost 4-22% of
    // the wide net's 1024-wide GEMMs, the shared lines 2-3%.
    int c_lines_shared =
        g->c_panel == 0 && ((uintptr_t)c % 64 != 0 || ldc % 16 != 0 || nr % 16 != 0);
    g->rows_first =
        c_lines_shared && (!g->b_packed || pack_depth * g->nc * 4 <= ROWS_FIRST_MAX_B_BYTES);

    int64_t kc = min64(KC, k);
    int64_t slot_panels = 0;
    if (g->b_packed) {  // the most panels one part packs, in a full or the last block
        int64_t last = ceil_div(n - (ceil_div(n, g->nc) - 1) * g->nc, nr);
        slot_panels = panels_per_part(g, panels, row_tiles);
        if (panels_per_part(g, last, row_tiles) > slot_panels)
            slot_panels = panels_per_part(g, last, row_tiles);
    } else if (n % nr != 0 && !partial_in_place(g)) {
        slot_panels = 1;
    }
    int far_a = lda * 4 > PACK_A_FAR_BYTES &&
                (depth * (64 + nr * 4) > PACK_A_L1_BYTES || panels >= PACK_A_FAR_PANELS);
    g->pack_a = g->trans_a ? lda % PACK_A_LDA == 0 || far_a
                           : g->t->pack_a != NULL && lda % PACK_A_ROWS_LDA == 0;
    g->slot_b = kc * nr * slot_panels;
    g->slot = g->slot_b + (g->pack_a ? kc * mr : 0);
    return 0;
}

void mnc_gemm_run(const mnc_gemm_plan *g, float *buf, int part) {
    if (g->row_path) gemm_row_part(g, part);
    else gemm_part(g, buf, part);
}

void mnc_gemm_execute(const mnc_gemm_plan *g) {
    float *buf = NULL;
    if (g->slot > 0 && (buf = mnc_gemm_buffer((size_t)(g->slot * g->team))) == NULL) {
#ifdef FP_FAST_FMAF
        gemm_unbuffered(g, 1);
#else
        gemm_unbuffered(g, g->t != &targets[MNC_ISA_GENERIC]);
#endif
        return;
    }
    if (g->team == 1) {  // no parallel construct at all: even a disabled one has a cost
        mnc_gemm_run(g, buf, 0);
        return;
    }
#pragma omp parallel num_threads(g->team)
    {
        int tid = 0, got = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        got = omp_get_num_threads();
#endif
        // If the runtime gave fewer threads than asked, each runs several parts in turn.
        for (int part = tid; part < g->team; part += got)
            mnc_gemm_run(g, buf == NULL ? NULL : buf + part * g->slot, part);
    }
}

void mnc_sgemm_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                   const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                   int64_t ldc, const mnc_epilogue *ep, int n_threads) {
    mnc_gemm_plan g;
    if (mnc_gemm_plan_init(&g, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, ep,
                           NULL, n_threads, MNC_GEMM_MIN_FLOPS_PER_THREAD) == 0)
        mnc_gemm_execute(&g);
}
