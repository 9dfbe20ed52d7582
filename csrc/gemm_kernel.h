// gemm_kernel.h — the SGEMM microkernel contract, private to gemm.c and the
// gemm_kernel_<isa>.c files. Written once here (BLIS style): the framework in gemm.c owns
// the loops, packing, threads and epilogue; a microkernel only multiplies one register
// tile. Not part of the public API (see mnistc.h for the SGEMM rounding contract).
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
//  - A(r, p) = a[r * rs_a + p * cs_a] with rs_a == 1 or cs_a == 1 (both when mr == 1 or
//    k <= 1). cs_a == 1 reads mr row streams of a row-major A (NN/NT, unpacked);
//    rs_a == 1 reads mr contiguous floats per p (a transposed A, TN/TT, unpacked).
//    Rows r >= mr are never read, so A needs no padding and no packing.
//  - B(p, j) = b[p * rs_b + j]: every row of the panel has NR readable floats, 64-byte
//    alignment not required. Columns nr..NR-1 are computed and discarded, so a partial
//    or transposed panel is packed by gemm.c into an NR-wide, zero-padded buffer; a full
//    panel of an untransposed B is read in place (rs_b = ldb).
//  - Edge tiles (mr < MR or nr < NR) go through the same kernel: it is specialised per
//    row count and vector count at compile time and masks the last columns on load and
//    store of C (or goes through an aligned temporary tile) — never another summation
//    order.
//
// The per-target table (mnc_gemm_targets in gemm.c) holds MR, NR, the cache block sizes
// and the kernel pointer; KC is MNC_GEMM_KC for every target (part of the contract).
#ifndef MNISTC_GEMM_KERNEL_H
#define MNISTC_GEMM_KERNEL_H

#include <stdint.h>

#include "mnistc.h"

typedef void mnc_gemm_ukernel(int64_t k, int mr, int nr, float alpha,
                              const float *a, int64_t rs_a, int64_t cs_a,
                              const float *b, int64_t rs_b,
                              float beta, float *c, int64_t ldc);

// Register tiles of each target (floats). NR is a multiple of the vector width.
#define MNC_GENERIC_MR 4
#define MNC_GENERIC_NR 8
#define MNC_AVX2_MR 6
#define MNC_AVX2_NR 16
#define MNC_AVX512_MR 12
#define MNC_AVX512_NR 32
#define MNC_GEMM_MAX_NR 32  // the widest NR: sizes gemm.c's temporaries

void mnc_gemm_ukernel_generic(int64_t k, int mr, int nr, float alpha,
                              const float *a, int64_t rs_a, int64_t cs_a,
                              const float *b, int64_t rs_b,
                              float beta, float *c, int64_t ldc);

#if defined(__x86_64__) || defined(_M_X64)
#define MNC_GEMM_X86 1
void mnc_gemm_ukernel_avx2(int64_t k, int mr, int nr, float alpha,
                           const float *a, int64_t rs_a, int64_t cs_a,
                           const float *b, int64_t rs_b,
                           float beta, float *c, int64_t ldc);
void mnc_gemm_ukernel_avx512(int64_t k, int mr, int nr, float alpha,
                             const float *a, int64_t rs_a, int64_t cs_a,
                             const float *b, int64_t rs_b,
                             float beta, float *c, int64_t ldc);
#endif

#endif  // MNISTC_GEMM_KERNEL_H
