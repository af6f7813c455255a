// Division of non-negative 32-bit ints by a divisor fixed at launch, as a
// multiply-high, an add and a shift (Granlund & Montgomery, "Division by
// invariant integers using multiplication", 1994; the form CUTLASS's
// FastDivmod uses).  The front and colour levels turn every pixel row into
// (image, y, x) and every (y, x) into its CFA repeat position: with plain
// `/` and `%` that was a 64-bit division subroutine and four 32-bit
// divisions per row, more instructions than the row's share of the MLP
// (docs/KERNELS.md, "Session 22").
//
// Exact for every dividend in [0, 2^31) and divisor in [1, 2^31]: with
// l = ceil(log2 d) and m = floor(2^32 (2^l - d) / d) + 1 < 2^32,
// n / d = (umulhi(n, m) + n) >> l, and umulhi(n, m) < n keeps the sum below
// 2^32.  Plain C++ too (no CUDA headers needed), so tests/test_fastdiv.py
// compiles this file with the host compiler and checks it against `/`.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define KPNT_FD __host__ __device__ __forceinline__
#else
#define KPNT_FD inline
#endif

namespace kpnt {

struct FastDiv {
  uint32_t d = 1;      // the divisor
  uint32_t mult = 1;   // m above (1 for powers of two: umulhi(n, 1) = 0)
  uint32_t shift = 0;  // l above

  FastDiv() = default;
  // d in [1, 2^31]; the host launchers check their sizes before building one.
  explicit FastDiv(uint32_t divisor) : d(divisor) {
    uint32_t l = 0;
    while ((uint64_t{1} << l) < divisor) ++l;
    shift = l;
    mult = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << l) - divisor)) / divisor + 1);
  }

  KPNT_FD static uint32_t umulhi(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__)
    return __umulhi(a, b);
#else
    return static_cast<uint32_t>((static_cast<uint64_t>(a) * b) >> 32);
#endif
  }
  // n / d for n in [0, 2^31).
  KPNT_FD uint32_t div(uint32_t n) const { return (umulhi(n, mult) + n) >> shift; }
  // n % d for n in [0, 2^31).
  KPNT_FD uint32_t mod(uint32_t n) const { return n - div(n) * d; }
};

// The largest row count (N H W) a fused level takes in one launch: rows and
// the (image, y, x) they decode to are 32-bit inside the kernels.
constexpr int64_t kMaxFusedRows = (int64_t{1} << 31) - 1;

}  // namespace kpnt
