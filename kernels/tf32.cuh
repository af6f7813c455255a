// TF32 tensor-core helpers shared by the float32 guide's training kernels (kernels/guide_train.cu,
// kernels/guide_wgrad.cu): rounding to TF32 and the m16n8k8 mma.sync (sm_80 and later).
#pragma once

#include <cstdint>

namespace kpnt {
namespace tf32 {

// x rounded to TF32 (10 mantissa bits, to nearest, ties away: cvt.rna), as a float32 bit pattern.
__device__ __forceinline__ uint32_t tf32_bits(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}

// c += a (16x8, row) * b (8x8, col); TF32 in, float32 accumulate.
__device__ __forceinline__ void mma_tf32(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

}  // namespace tf32
}  // namespace kpnt
