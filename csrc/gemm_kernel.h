// gemm_kernel.h — the SGEMM microkernel contract, private to gemm.c and the
// gemm_kernel_<isa>.c files. Written once here (BLIS style): the framework in gemm.c owns
// the loops, packing and threads; a microkernel multiplies one register tile and, on its
// last call for that tile, applies the epilogue before storing. Not part of the public
// API (see mnistc.h for the SGEMM rounding contract).
//
// A microkernel call computes one tile of at most MR rows × NR columns over one KC block
// of the reduction (k <= MNC_GEMM_KC, k may be 0):
//
//   acc[r][j] = 0; for p = 0..k-1: acc[r][j] = fma(A(r, p), B(p, j), acc[r][j])
//   beta == 0:  C[r][j] = alpha * acc[r][j]                 (C is not read)
//   beta != 0:  C[r][j] = fma(alpha, acc[r][j], beta * C[r][j])
//
// for r < mr, j < nr; nothing outside that corner of C is read or written. That is the
// whole rounding story: every element is its own FMA chain in increasing p, so the tile
// shape, the edge handling and the thread that runs a tile never change a bit. (The
// generic kernel without hardware FMA rounds the product and the sum separately.)
//
// Operand formats:
//  - A(r, p) = a[r * rs_a + p * cs_a] with cs_a == 1 or rs_a == 1 (either when mr == 1).
//    cs_a == 1 reads mr row streams of a row-major A (NN/NT, in place); rs_a == 1 reads
//    mr contiguous floats per p: a transposed A in place (TN/TT, cs_a = lda) or its
//    k-major copy (cs_a = MR). Rows r >= mr are never read, so A is never padded.
//  - B(p, j) = b[p * rs_b + j]: every row of the panel has NR readable floats, 64-byte
//    alignment not required. Columns nr..NR-1 are computed and discarded, so a partial
//    or transposed panel is packed by gemm.c into an NR-wide, zero-padded buffer; a full
//    panel of an untransposed B is read in place (rs_b = ldb). Except: a kernel built
//    with B_MASKED_MAX = VW (AVX-512) reads only the nr columns of a panel with nr < VW,
//    by masked loads, and gemm.c reads such a last panel of an untransposed B in place
//    too (gemm_target.b_masked_max): the 10-class layer's products pack nothing.
//  - Edge tiles (mr < MR or nr < NR) go through the same kernel: it is specialised per
//    row count (and vector count) at compile time and touches only the mr × nr corner of
//    C (AVX-512 lane masks, AVX2 vmaskmov, the generic kernel a bounded loop) — never
//    another summation order.
//
// A KC block may be cut into consecutive sub-blocks whose partial chains wait in C
// between calls (flags, only ever with beta == 0 for the block): the float32 accumulator
// is stored and reloaded exactly, so the chain, and every bit, is the one above.
//  - MNC_UK_ACC_IN:  acc[r][j] starts from C[r][j] (a partial chain) instead of 0;
//  - MNC_UK_ACC_OUT: C[r][j] = acc[r][j] (the partial chain), no alpha/beta.
// flags == 0 is the plain call above.
//
// The last call for a tile may carry an epilogue (ep != NULL, never with ACC_OUT): each
// value v = C[r][j] computed above goes through, in this order and before it is stored,
//   v = v + bias[j]            (bias != NULL; one float add)
//   v = v < 0 ? 0 : v          (relu; NaN and -0 pass unchanged)
//   v = mask[r * ld_mask + j] <= 0 ? 0 : v   (mask != NULL; a NaN mask keeps v)
// with bias and mask already offset to the tile's corner. These are mnc_epilogue's
// steps (mnistc.h), the same bits as a separate pass, without re-reading the tile.
//
// A target may also supply packers for n columns of B, i.e. ceil(n / NR) consecutive
// panels panel_stride floats apart (NULL: gemm.c's portable loops). With op(B)(p, j) =
// b[p * ldb + j] (pack_b) or b[j * ldb + p] (pack_bt, a transpose), for panel q:
//
//   dst[q * panel_stride + p * NR + j] = op(B)(p, q * NR + j)  for p < kc, q * NR + j < n
//                                        0                     for n <= q * NR + j
//
// A target may also supply a row kernel for m == 1 with an untransposed B (a batch of
// one: a matrix-vector product; NULL: the tile kernel). Same chain, same rounding:
//
//   acc[j] = 0; for p = 0..k-1: acc[j] = fma(a[p * inc_a], b[p * ldb + j], acc[j])
//   c[j] = alpha * acc[j]  (beta == 0)  or  fma(alpha, acc[j], beta * c[j])   for j < n
//
// It reads B by whole rows (in passes of up to 1024 columns when B is wider than the
// kernel's register block), so B streams contiguously instead of one 4 KiB page per p as
// a 32-column panel of a wide B would.
//
// And a row kernel for m == 1 with a transposed B (NT: op(B)(p, j) = b[j * ldb + p], a
// batch of one through the input gradient), the same chain and rounding, which
// transposes B in registers as it goes instead of packing it: each element of B is used
// once, so a packed copy would cost as much as the product.
//
// And a packer for an untransposed A tile (NULL: such tiles are read in place), to the
// k-major form the kernel reads with cs_a = MR:
//
//   dst[p * MR + r] = a[r * lda + p]   for r < mr, p < kc   (rows mr..MR-1: unspecified;
//                                                          nothing past dst[kc * MR])
//
// gemm.c uses it when the tile's rows are a multiple of 4 KiB apart (see gemm.c).
//
// The per-target table (targets[] in gemm.c) holds MR, NR, the cache block sizes, the
// kernel and the packers; KC is MNC_GEMM_KC for every target (part of the contract).
#ifndef MNISTC_GEMM_KERNEL_H
#define MNISTC_GEMM_KERNEL_H

#include <stdint.h>

#include "mnistc.h"

typedef struct mnc_uk_epilogue {
    const float *bias;  // [nr] at the tile's first column, or NULL
    int relu;
    const float *mask;  // mask(r, j) = mask[r * ld_mask + j] at the tile's corner, or NULL
    int64_t ld_mask;
} mnc_uk_epilogue;

typedef void mnc_gemm_ukernel(int64_t k, int mr, int nr, float alpha, const float *a, int64_t rs_a,
                              int64_t cs_a, const float *b, int64_t rs_b, float beta, float *c,
                              int64_t ldc, int flags, const mnc_uk_epilogue *ep);

typedef void mnc_gemm_pack_b(float *dst, int64_t panel_stride, const float *b, int64_t ldb,
                             int64_t kc, int64_t n);

typedef void mnc_gemm_pack_a(float *dst, const float *a, int64_t lda, int64_t kc, int mr);

typedef void mnc_gemm_row(int64_t k, int64_t n, float alpha, const float *a, int64_t inc_a,
                          const float *b, int64_t ldb, float beta, float *c);

#define MNC_UK_ACC_IN 1
#define MNC_UK_ACC_OUT 2

// Register tiles of each target (floats). NR is a multiple of the vector width.
#define MNC_GENERIC_MR 4
#define MNC_GENERIC_NR 8
#define MNC_AVX2_MR 6
#define MNC_AVX2_NR 16
#define MNC_AVX512_MR 12
#define MNC_AVX512_NR 32

// peak.c's yardstick on each target (in the kernel files, built as the kernels are):
// `iters` rounds of independent multiply-add chains on the target's widest vectors, no
// memory traffic; returns the flops done and stores the chains' sum in sink (<= 16 floats).
double mnc_fma_chains_generic(int64_t iters, float *sink);

void mnc_gemm_ukernel_generic(int64_t k, int mr, int nr, float alpha, const float *a, int64_t rs_a,
                              int64_t cs_a, const float *b, int64_t rs_b, float beta, float *c,
                              int64_t ldc, int flags, const mnc_uk_epilogue *ep);

#if defined(__x86_64__) || defined(_M_X64)
#define MNC_GEMM_X86 1
double mnc_fma_chains_avx2(int64_t iters, float *sink);
double mnc_fma_chains_avx512(int64_t iters, float *sink);
void mnc_gemm_pack_b_avx2(float *dst, int64_t panel_stride, const float *b, int64_t ldb, int64_t kc,
                          int64_t n);
void mnc_gemm_pack_bt_avx2(float *dst, int64_t panel_stride, const float *b, int64_t ldb,
                           int64_t kc, int64_t n);
void mnc_gemm_pack_a_avx2(float *dst, const float *a, int64_t lda, int64_t kc, int mr);
void mnc_gemm_row_avx2(int64_t k, int64_t n, float alpha, const float *a, int64_t inc_a,
                       const float *b, int64_t ldb, float beta, float *c);
void mnc_gemm_row_avx512(int64_t k, int64_t n, float alpha, const float *a, int64_t inc_a,
                         const float *b, int64_t ldb, float beta, float *c);
void mnc_gemm_row_t_avx2(int64_t k, int64_t n, float alpha, const float *a, int64_t inc_a,
                         const float *b, int64_t ldb, float beta, float *c);
void mnc_gemm_row_t_avx512(int64_t k, int64_t n, float alpha, const float *a, int64_t inc_a,
                           const float *b, int64_t ldb, float beta, float *c);
void mnc_gemm_pack_b_avx512(float *dst, int64_t panel_stride, const float *b, int64_t ldb,
                            int64_t kc, int64_t n);
void mnc_gemm_pack_bt_avx512(float *dst, int64_t panel_stride, const float *b, int64_t ldb,
                             int64_t kc, int64_t n);
void mnc_gemm_pack_a_avx512(float *dst, const float *a, int64_t lda, int64_t kc, int mr);
void mnc_gemm_ukernel_avx2(int64_t k, int mr, int nr, float alpha, const float *a, int64_t rs_a,
                           int64_t cs_a, const float *b, int64_t rs_b, float beta, float *c,
                           int64_t ldc, int flags, const mnc_uk_epilogue *ep);
void mnc_gemm_ukernel_avx512(int64_t k, int mr, int nr, float alpha, const float *a, int64_t rs_a,
                             int64_t cs_a, const float *b, int64_t rs_b, float beta, float *c,
                             int64_t ldc, int flags, const mnc_uk_epilogue *ep);
#endif

#endif  // MNISTC_GEMM_KERNEL_H
