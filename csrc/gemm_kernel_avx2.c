// gemm_kernel_avx2.c — the AVX2+FMA SGEMM kernels (contract in gemm_kernel.h): the
// width-generic kernels of gemm_kernel_simd.h on ymm vectors (vec_avx2.h: a 6×16 tile
// of 12 accumulators, BLIS's Haswell shape; row blocks up to 96 columns; 8×8
// transposes), the same FMA chain per element as the AVX-512 target, so both give
// identical bits. Only these functions use AVX2; gemm.c calls them after
// mnc_isa_active() said so.
#include "gemm_kernel.h"

#if defined(__x86_64__) || defined(_M_X64)
#if defined(__GNUC__)  // GCC, Clang: the ISA is enabled per function, never per file
#define KERNEL_TARGET __attribute__((target("avx2,fma")))
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else  // MSVC: intrinsics need no target option
#define KERNEL_TARGET
#define ALWAYS_INLINE static __forceinline
#endif
#include "vec_avx2.h"

#define MR MNC_AVX2_MR
#define B_MASKED_MAX 0  // partial B panels are packed: vmaskmov needs a spare register
#define ROW_VECTORS 12  // the row kernel's register blocks: 12 and 4 ymm of columns
#define ROW_MID 4
#define UKERNEL mnc_gemm_ukernel_avx2
#define PACK_B mnc_gemm_pack_b_avx2
#define PACK_BT mnc_gemm_pack_bt_avx2
#define PACK_A mnc_gemm_pack_a_avx2
#define ROW mnc_gemm_row_avx2
#define ROW_T mnc_gemm_row_t_avx2
#define FMA_CHAINS mnc_fma_chains_avx2
#include "gemm_kernel_simd.h"

#endif  // x86-64
