// gemm_kernel_avx512.c — the AVX-512 SGEMM kernels (contract in gemm_kernel.h): the
// width-generic kernels of gemm_kernel_simd.h on zmm vectors (vec_avx512.h: a 12×32
// tile of 24 accumulators, row blocks up to 384 columns, 16×16 transposes). Only these
// functions use AVX-512; gemm.c calls them after mnc_isa_active() said so.
#include "gemm_kernel.h"

#if defined(__x86_64__) || defined(_M_X64)
#include "target_avx512.h"

#define MR MNC_AVX512_MR
#define B_MASKED_MAX VW  // panels of fewer than VW columns: masked loads, read in place
#define ROW_VECTORS 24   // the row kernel's register blocks: 24 and 8 zmm of columns
#define ROW_MID 8
#define UKERNEL mnc_gemm_ukernel_avx512
#define PACK_B mnc_gemm_pack_b_avx512
#define PACK_BT mnc_gemm_pack_bt_avx512
#define PACK_A mnc_gemm_pack_a_avx512
#define ROW mnc_gemm_row_avx512
#define ROW_T mnc_gemm_row_t_avx512
#define FMA_CHAINS mnc_fma_chains_avx512
#include "gemm_kernel_simd.h"

#endif  // x86-64
