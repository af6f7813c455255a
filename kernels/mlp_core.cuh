// Fully fused tensor-core MLP core (forward, and backward with recomputation):
// the templates, MMA helpers, row policies and launchers that every op's
// translation unit (kernels/mlp.cu, colour_level.cu, front_level.cu) shares.
// Device code and host launch helpers live in an anonymous namespace, so each
// unit instantiates only the shapes it dispatches (kernels/shapes.def).
//
// Technique (after tiny-cuda-nn's FullyFusedMLP, written anew for mma.sync):
// the whole network is evaluated inside one kernel; weights sit in shared
// memory, activations never touch device memory.  The building block is the
// PTX instruction mma.sync.m16n8k16 (f16 inputs, f32 accumulation).  Because
// its accumulator layout (thread t holds rows t/4 and t/4+8, columns
// 2*(t%4)+{0,1} of each 16x8 tile) is exactly the layout of its A operand
// when two neighbouring 16x8 tiles are read as one 16x16 tile, a warp that
// owns *all* output columns of its rows can feed a layer's result straight
// into the next layer from registers: only the weights (B operand) are read
// from shared memory, with ldmatrix.  See docs/KERNELS.md for the numbers.
//
// Forward: 4 warps per block, 32 rows per warp (two 16-row blocks share each
// weight fragment, halving shared-memory traffic per mma), persistent grid.
//
// Backward: 8 warps per block, 16 rows per warp, tile of 128 pixels.  Each
// tile recomputes the forward pass (storing the f16 post-activations of every
// layer in shared memory: cheaper than a round trip through device memory),
// then walks back through the layers.  Per matrix m:
//   dW_m += dZ_{m+1}^T A_m     (sum over the 128 pixels of the tile, one
//                               tensor-core product per 16x8 tile of dW_m;
//                               each warp owns a fixed set of dW tiles and
//                               accumulates it in registers over all tiles
//                               the persistent block visits)
//   dA_m  = dZ_{m+1} W_m       (per warp, from registers, like the forward)
//   dZ_m  = dA_m * lrelu'(A_m) (sign of the stored post-activation: slope > 0
//                               keeps the sign of the pre-activation; the
//                               slope the forward applied, HalfSlope)
// Each block writes its partial dW once at the end; the caller sums them.
// Shapes whose weights and tile activations exceed shared memory (width 128)
// take the split backward instead: the same walk with activations and dZ
// through a device workspace, and dW as a separate tensor-core pass (see
// "backward, split" below).
//
// f16 range: gradients of a mean loss over millions of pixels are ~1e-7 and
// would underflow f16.  Each tile therefore scales dL/dy by a power of two
// that brings its largest magnitude into [0.5, 1) (exact, the backward is
#pragma once

#include "fastdiv.cuh"
#include "fused_mlp.cuh"
#include "wgmma.cuh"

#include <cuda_fp16.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>

namespace kpnt {
namespace {

// Halves of padding per shared-memory row: every row stride becomes an odd
// multiple of 16 bytes, so the 8 row addresses of an ldmatrix hit 8 distinct
// 16-byte bank groups (no conflicts), and 4-byte accesses in accumulator
// layout (8 rows x 4 lanes) also spread over all 32 banks.
constexpr int kPad = 8;

template <int IN_, int H_, int OUT_, int NH_, bool BWD_ = true>
struct Cfg {
  static constexpr int IN = IN_, H = H_, OUT = OUT_, NH = NH_, NMAT = NH_ + 1;
  // Whether the backward kernels are compiled for this shape (forward-only
  // configurations serve inference: see kernels/shapes.def).
  static constexpr bool BWD = BWD_;
  static_assert(IN % 16 == 0 && H % 16 == 0 && OUT % 16 == 0, "widths must be multiples of 16");
  static_assert(NH >= 1, "at least one hidden layer");
  // Matrix m maps A_m (cols(m) wide) to Z_{m+1} (rows(m) wide).
  __host__ __device__ static constexpr int rows(int m) { return m == NH ? OUT : H; }
  __host__ __device__ static constexpr int cols(int m) { return m == 0 ? IN : H; }
  // Offset of matrix m in the packed (unpadded) weight buffer.
  __host__ __device__ static constexpr int woff(int m) {
    int o = 0;
    for (int j = 0; j < m; ++j) o += rows(j) * cols(j);
    return o;
  }
  // Offset of matrix m in shared memory (rows padded by kPad).
  __host__ __device__ static constexpr int wsoff(int m) {
    int o = 0;
    for (int j = 0; j < m; ++j) o += rows(j) * (cols(j) + kPad);
    return o;
  }
  static constexpr int NW = woff(NMAT);
  static constexpr int NWS = wsoff(NMAT);
};

// ---------------------------------------------------------------- device helpers

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ldmatrix: lanes 8q..8q+7 give the row addresses of 8x8 matrix q.  The
// "memory" clobber keeps the loads on the right side of __syncthreads().
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const __half* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const __half* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}
__device__ __forceinline__ void ldsm_x2_t(uint32_t& r0, uint32_t& r1, const __half* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r0), "=r"(r1)
               : "r"(smem_addr(p))
               : "memory");
}

// c += a (16x16, row) * b (16x8, col); f16 in, f32 accumulate.
__device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

// Memory row of logical row r, or -1 past the end of the group.
__device__ __forceinline__ int64_t mem_row(int64_t r, int64_t end, const int32_t* __restrict__ perm) {
  if (r >= end) return -1;
  return perm ? static_cast<int64_t>(__ldg(perm + r)) : r;
}

// Copy one packed f16 weight set into padded shared memory, 16 bytes a thread.
template <class C>
__device__ void load_weights(__half* ws, const __half* __restrict__ w) {
  for (int c = threadIdx.x; c < C::NW / 8; c += blockDim.x) {
    const int e = c * 8;
    int m = 0;
#pragma unroll
    for (int j = 1; j < C::NMAT; ++j)
      if (e >= C::woff(j)) m = j;
    const int local = e - C::woff(m);
    const int r = local / C::cols(m), col = local % C::cols(m);
    const uint4 v = __ldg(reinterpret_cast<const uint4*>(w + e));
    *reinterpret_cast<uint4*>(ws + C::wsoff(m) + r * (C::cols(m) + kPad) + col) = v;
  }
}

// Two consecutive f32 of a row, as packed f16 (0 for rows past the end).
__device__ __forceinline__ uint32_t ld_pair_h(const float* __restrict__ p, int64_t row, int stride, int col) {
  if (row < 0) return 0u;
  const float2 v = __ldg(reinterpret_cast<const float2*>(p + row * stride + col));
  return pack2(v.x, v.y);
}

// A fragments (16 rows x K) of R row blocks straight from global f32 input.
template <int K, int R>
__device__ __forceinline__ void load_a_global(uint32_t (&a)[R][K / 16][4], const float* __restrict__ x,
                                              const int64_t (&rlo)[R], const int64_t (&rhi)[R], int lane) {
  const int c = 2 * (lane & 3);
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int kb = 0; kb < K / 16; ++kb) {
      a[r][kb][0] = ld_pair_h(x, rlo[r], K, kb * 16 + c);
      a[r][kb][1] = ld_pair_h(x, rhi[r], K, kb * 16 + c);
      a[r][kb][2] = ld_pair_h(x, rlo[r], K, kb * 16 + 8 + c);
      a[r][kb][3] = ld_pair_h(x, rhi[r], K, kb * 16 + 8 + c);
    }
}

// acc (R x 16 rows, N) = a (R x 16 rows, K) * W^T, W stored [N][K + kPad].
template <int K, int N, int R>
__device__ __forceinline__ void gemm_nk(float (&acc)[R][N / 8][4], const uint32_t (&a)[R][K / 16][4],
                                        const __half* w, int lane) {
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int j = 0; j < N / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[r][j][e] = 0.f;
  const int q = lane >> 3, i = lane & 7;
#pragma unroll
  for (int kb = 0; kb < K / 16; ++kb)
#pragma unroll
    for (int nb = 0; nb < N / 16; ++nb) {
      uint32_t b[4];  // b[0..1]: n-tile 2nb, b[2..3]: n-tile 2nb+1
      ldsm_x4(b, w + (nb * 16 + i + 8 * (q >> 1)) * (K + kPad) + kb * 16 + 8 * (q & 1));
#pragma unroll
      for (int r = 0; r < R; ++r) {
        mma(acc[r][2 * nb], a[r][kb], b[0], b[1]);
        mma(acc[r][2 * nb + 1], a[r][kb], b[2], b[3]);
      }
    }
}

// acc (16 rows, N) = a (16 rows, K) * W, W stored [K][N + kPad] (backward).
template <int K, int N>
__device__ __forceinline__ void gemm_kn(float (&acc)[N / 8][4], const uint32_t (&a)[K / 16][4], const __half* w,
                                        int lane) {
#pragma unroll
  for (int j = 0; j < N / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[j][e] = 0.f;
  const int q = lane >> 3, i = lane & 7;
#pragma unroll
  for (int kb = 0; kb < K / 16; ++kb)
#pragma unroll
    for (int nb = 0; nb < N / 16; ++nb) {
      uint32_t b[4];
      ldsm_x4_t(b, w + (kb * 16 + i + 8 * (q & 1)) * (N + kPad) + nb * 16 + 8 * (q >> 1));
      mma(acc[2 * nb], a[kb], b[0], b[1]);
      mma(acc[2 * nb + 1], a[kb], b[2], b[3]);
    }
}

// Accumulators of N columns -> A fragments of K = N (the register hand-over).
template <int N>
__device__ __forceinline__ void to_frags(uint32_t (&a)[N / 16][4], const float (&acc)[N / 8][4]) {
#pragma unroll
  for (int kb = 0; kb < N / 16; ++kb) {
    a[kb][0] = pack2(acc[2 * kb][0], acc[2 * kb][1]);
    a[kb][1] = pack2(acc[2 * kb][2], acc[2 * kb][3]);
    a[kb][2] = pack2(acc[2 * kb + 1][0], acc[2 * kb + 1][1]);
    a[kb][3] = pack2(acc[2 * kb + 1][2], acc[2 * kb + 1][3]);
  }
}

// The leaky-ReLU slope as an unevaluated f16 sum hi + lo (hi = f16(slope),
// lo = f16(slope - hi)): r hi + f16(r lo), one HFMA2 after one HMUL2, is
// r slope rounded once to within a few 1e-3 of an f16 ulp, where r f16(slope)
// alone would scale every negative activation by 1.0002 for slope 0.01 (f16
// holds 0.0100021), a bias that compounds over the layers (session 23: the
// forward drifted past the float64 checks).
struct HalfSlope {
  __half2 hi, lo;
};
__device__ __forceinline__ HalfSlope half_slope(float slope) {
  const __half hi = __float2half_rn(slope);
  return {__half2half2(hi), __float2half2_rn(slope - __half2float(hi))};
}
// The slope the kernels apply, hi + lo, in float (the split backward's factor).
__device__ __forceinline__ float applied_slope(float slope) {
  const HalfSlope s = half_slope(slope);
  return __low2float(s.hi) + __low2float(s.lo);
}

// Accumulators -> A fragments of the next layer through the leaky ReLU,
// applied after the f16 rounding as max(a, a hi + f16(a lo)) on packed pairs
// (0 < slope < 1, HalfSlope): per two values HMUL2, HFMA2 and HMNMX2, where
// the float32 form took a compare and a predicated multiply per value (the
// activation was 12 % of the front level's forward instructions;
// docs/KERNELS.md, "Session 22").  Rounding first changes a negative
// activation by at most an f16 rounding of it; the sign, which the backward
// reads as lrelu', is the same.
template <int N>
__device__ __forceinline__ void lrelu_frags(uint32_t (&a)[N / 16][4], const float (&acc)[N / 8][4], float slope) {
  to_frags<N>(a, acc);
  const HalfSlope s = half_slope(slope);
#pragma unroll
  for (int kb = 0; kb < N / 16; ++kb)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      __half2 h = *reinterpret_cast<const __half2*>(&a[kb][e]);
      h = __hmax2(h, __hfma2(h, s.hi, __hmul2(h, s.lo)));
      a[kb][e] = *reinterpret_cast<const uint32_t*>(&h);
    }
}

// dZ = dA lrelu'(Z) on f16 fragments: register (kb, r) of a holds columns
// 16 kb + 8 (r / 2) + c, + 1 of row lr + 8 (r % 2); the factor is 1 where the
// stored activation (at(row, col): the address of its pair of columns) is positive, else the slope hi + lo
// the forward applied (lrelu_frags), so this is the derivative of the
// function the kernels compute.  Both parts of the factor are chosen with one
// LOP3 each on the compare mask (1 and 0, or hi and lo) and applied as
// dA f_hi + f16(dA f_lo), where the float32 form took four instructions a value.
// lrelu_grad_frags_z takes the activations as fragments (zf, a's layout, as
// ldmatrix gives them); lrelu_grad_frags_at reads them through at.
template <int N>
__device__ __forceinline__ void lrelu_grad_frags_z(uint32_t (&a)[N / 16][4], const uint32_t (&zf)[N / 16][4],
                                                   float slope) {
  const __half2 zero = __float2half2_rn(0.f), one = __float2half2_rn(1.f);
  const HalfSlope s = half_slope(slope);
  const uint32_t one_bits = *reinterpret_cast<const uint32_t*>(&one);
  const uint32_t hi_bits = *reinterpret_cast<const uint32_t*>(&s.hi), lo_bits = *reinterpret_cast<const uint32_t*>(&s.lo);
#pragma unroll
  for (int kb = 0; kb < N / 16; ++kb)
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const __half2 z = *reinterpret_cast<const __half2*>(&zf[kb][r]);
      const uint32_t pos = __hgt2_mask(z, zero);  // 0xFFFF in each half whose activation is > 0
      const uint32_t f_hi = (pos & one_bits) | (~pos & hi_bits), f_lo = ~pos & lo_bits;
      __half2 v = *reinterpret_cast<const __half2*>(&a[kb][r]);
      v = __hfma2(v, *reinterpret_cast<const __half2*>(&f_hi),
                  __hmul2(v, *reinterpret_cast<const __half2*>(&f_lo)));
      a[kb][r] = *reinterpret_cast<const uint32_t*>(&v);
    }
}

template <int N, class At>
__device__ __forceinline__ void lrelu_grad_frags_at(uint32_t (&a)[N / 16][4], const At& at, int lr, int c,
                                                    float slope) {
  uint32_t z[N / 16][4];
#pragma unroll
  for (int kb = 0; kb < N / 16; ++kb)
#pragma unroll
    for (int r = 0; r < 4; ++r)
      z[kb][r] = *reinterpret_cast<const uint32_t*>(at(lr + 8 * (r & 1), 16 * kb + 8 * (r >> 1) + c));
  lrelu_grad_frags_z<N>(a, z, slope);
}

// The same with the activations stored row-major, act [row][N + kPad].
template <int N>
__device__ __forceinline__ void lrelu_grad_frags(uint32_t (&a)[N / 16][4], const __half* act, int lr, int c,
                                                 float slope) {
  lrelu_grad_frags_at<N>(
      a, [act](int row, int col) { return reinterpret_cast<const __half2*>(act + row * (N + kPad) + col); }, lr, c,
      slope);
}

// Store A fragments (16 rows x K) at rows lr, lr + 8 through `at(row, col)`,
// the address of a pair of columns.
template <int K, class At>
__device__ __forceinline__ void store_frags_at(const At& at, const uint32_t (&a)[K / 16][4], int lr, int lane) {
  const int c = 2 * (lane & 3);
#pragma unroll
  for (int kb = 0; kb < K / 16; ++kb) {
    *at(lr, kb * 16 + c) = a[kb][0];
    *at(lr + 8, kb * 16 + c) = a[kb][1];
    *at(lr, kb * 16 + 8 + c) = a[kb][2];
    *at(lr + 8, kb * 16 + 8 + c) = a[kb][3];
  }
}

// Store A fragments (16 rows x K) to shared memory [row][K + kPad] at rows lr, lr + 8.
template <int K>
__device__ __forceinline__ void store_frags(__half* s, const uint32_t (&a)[K / 16][4], int lr, int lane) {
  store_frags_at<K>([s](int row, int col) { return reinterpret_cast<uint32_t*>(s + row * (K + kPad) + col); }, a,
                    lr, lane);
}

// ---------------------------------------------------------------- input / output policies
//
// The kernels get their A_0 fragments from an input policy (`load`), hand the
// output accumulators to an output policy (`store`, forward) and get dL/dy
// from a gradient policy (`grad`, backward).  RowsIn/RowsOut/RowsDy are the
// plain MLP op on row-major tensors; MapIn/ApplyOut/ApplyDy are the colour
// level (kernels/fused_mlp.cuh, colour_*), whose features are gathered from
// per-pixel maps inside the kernel and whose outputs are turned into the
// filtered details right there.

struct RowsIn {
  const float* x;
  template <int K, int R>
  __device__ __forceinline__ void load(uint32_t (&a)[R][K / 16][4], const int64_t (&rlo)[R], const int64_t (&rhi)[R],
                                       int lane) const {
    load_a_global<K, R>(a, x, rlo, rhi, lane);
  }
};

struct RowsOut {
  float* y;
  template <int OUT, int R>
  __device__ __forceinline__ void store(const float (&out)[R][OUT / 8][4], const int64_t (&rlo)[R],
                                        const int64_t (&rhi)[R], int lane) const {
    const int c = 2 * (lane & 3);
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int j = 0; j < OUT / 8; ++j) {
        if (rlo[r] >= 0)
          *reinterpret_cast<float2*>(y + rlo[r] * OUT + j * 8 + c) = make_float2(out[r][j][0], out[r][j][1]);
        if (rhi[r] >= 0)
          *reinterpret_cast<float2*>(y + rhi[r] * OUT + j * 8 + c) = make_float2(out[r][j][2], out[r][j][3]);
      }
  }
};

struct RowsDy {
  const float* dy;
  static constexpr bool kNeedsOut = false;  // dL/dy is given: no output layer in the recomputation
  template <int OUT>
  __device__ __forceinline__ void grad(float (&gy)[OUT / 8][4], const float (&)[OUT / 8][4], int64_t rlo, int64_t rhi,
                                       int lane) const {
    const int c = 2 * (lane & 3);
#pragma unroll
    for (int j = 0; j < OUT / 8; ++j) {
      float2 lo = make_float2(0.f, 0.f), hi = make_float2(0.f, 0.f);
      if (rlo >= 0) lo = __ldg(reinterpret_cast<const float2*>(dy + rlo * OUT + j * 8 + c));
      if (rhi >= 0) hi = __ldg(reinterpret_cast<const float2*>(dy + rhi * OUT + j * 8 + c));
      gy[j][0] = lo.x;
      gy[j][1] = lo.y;
      gy[j][2] = hi.x;
      gy[j][3] = hi.y;
    }
  }
};

// A fragments of R row blocks from a gathering input policy `Src`: for each
// of the thread's 2 R rows, src.row(p) decodes memory row p once and
// src.fill_row<K>(a[r], hr, row, c) writes the row's inputs kb 16 + h8 8 + c
// + {0, 1} to a[r][kb][2 h8 + hr] (rows past the end are zeros).
template <class Src, int K, int R>
__device__ __forceinline__ void load_rows(const Src& src, uint32_t (&a)[R][K / 16][4], const int64_t (&rlo)[R],
                                          const int64_t (&rhi)[R], int lane) {
  const int c = 2 * (lane & 3);
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int64_t p = hr ? rhi[r] : rlo[r];
      if (p < 0) {
#pragma unroll
        for (int kb = 0; kb < K / 16; ++kb) a[r][kb][hr] = a[r][kb][2 + hr] = 0u;
        continue;
      }
      src.template fill_row<K>(a[r], hr, src.row(p), c);
    }
}

// (image, y, x) of pixel row p of images h x w in raster order, by FastDiv
// (p < 2^31: the launchers call check_fused_rows).
struct RowDecode {
  FastDiv div_hw, div_w;
  uint32_t hw = 1, w = 1;
  RowDecode() = default;
  RowDecode(int64_t plane, int width)
      : div_hw(static_cast<uint32_t>(std::max<int64_t>(plane, 1))),
        div_w(static_cast<uint32_t>(std::max(width, 1))),
        hw(static_cast<uint32_t>(plane)),
        w(static_cast<uint32_t>(width)) {}
  __device__ __forceinline__ void at(int64_t p, int64_t& n, int& y, int& x) const {
    const uint32_t pu = static_cast<uint32_t>(p);
    const uint32_t nu = div_hw.div(pu);
    const uint32_t r = pu - nu * hw;
    const uint32_t yu = div_w.div(r);
    n = nu;
    y = static_cast<int>(yu);
    x = static_cast<int>(r - yu * w);
  }
};

// The same pointer, through an opaque move: the compiler then keeps it in one
// register pair and adds each tap's 32-bit offset with one wide multiply-add,
// where it otherwise re-derived the address per tap from the 64-bit row
// index (four instructions; ptxas output of the level kernels, session 22).
__device__ __forceinline__ const float* opaque(const float* p) {
  asm("mov.b64 %0, %0;" : "+l"(p));
  return p;
}

// Features of one pixel (kpnt/ref/features.py) from the per-pixel maps
// fmap (N, 3, h, w) = [asinh lum, asinh chroma, noise input]:
// [0, 15) lum of tap j, [15, 30) chroma of tap j - 15, 30 noise input, 31 one.

// ---- kernel application, shared by the level epilogues (colour and front)

__device__ __forceinline__ int out_col(int q, int c) { return (q >> 1) * 8 + c + (q & 1); }

__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}
__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

struct ColourConsts {
  int plain;        // 0: softmax, 1: plain normalisation
  float plain_eps;  // smallest |denominator| of the plain mode (kpnt/ref/apply.py PLAIN_EPS)
};

// True if output column `col` is one of the T taps of the kernel whose
// logits are columns [lo, lo + T).
__device__ __forceinline__ bool in_kernel(int col, int lo, int T) { return col >= lo && col < lo + T; }

// Normalised kernel weights of one row from the thread's NQ logits (the
// quad holds the row's outputs; columns [lo, lo + T) are the kernel's taps,
// wq is 0 for every other column; all 32 lanes must call this together).
// `den_free` (plain mode) tells whether the denominator is the sum itself
// (else it was clamped to +-plain_eps and carries no gradient).
template <int NQ>
__device__ __forceinline__ void kernel_weights(const float (&o)[NQ], int c, int lo, int T, const ColourConsts& k,
                                               float (&wq)[NQ], float& den, bool& den_free) {
  if (!k.plain) {
    float m = -INFINITY;
#pragma unroll
    for (int q = 0; q < NQ; ++q)
      if (in_kernel(out_col(q, c), lo, T)) m = fmaxf(m, o[q]);
    m = quad_max(m);
    float s = 0.f;
#pragma unroll
    for (int q = 0; q < NQ; ++q) {
      wq[q] = in_kernel(out_col(q, c), lo, T) ? expf(o[q] - m) : 0.f;
      s += wq[q];
    }
    s = quad_sum(s);
    const float inv = 1.f / s;
#pragma unroll
    for (int q = 0; q < NQ; ++q) wq[q] *= inv;
    den = s;
    den_free = true;
  } else {
    float s = 0.f;
#pragma unroll
    for (int q = 0; q < NQ; ++q)
      if (in_kernel(out_col(q, c), lo, T)) s += o[q];
    s = quad_sum(s);
    den_free = !(fabsf(s) < k.plain_eps);
    den = den_free ? s : (s >= 0.f ? k.plain_eps : -k.plain_eps);
    // One division a row, not one a column (IEEE division is a ~10-instruction sequence).
    const float inv = 1.f / den;
#pragma unroll
    for (int q = 0; q < NQ; ++q) wq[q] = in_kernel(out_col(q, c), lo, T) ? o[q] * inv : 0.f;
  }
}

__device__ __forceinline__ float sigmoid(float v) { return 1.f / (1.f + expf(-v)); }


// ---------------------------------------------------------------- forward

// Launch shape of the forward kernel per configuration.
//  - Width 64: 4 warps x 2 row blocks of 16 (two row blocks share each weight
//    fragment read from shared memory).  No minimum-blocks hint: ptxas takes
//    136 registers (3 blocks, 12 warps per SM, no spills).  Forcing 4 blocks
//    (128 registers) spilled 20 bytes and was not faster (docs/KERNELS.md, v2).
//  - Width 128: the weights alone take 136-188 KB of shared memory, so one
//    block runs per SM, and two row blocks would need 2 x (64 accumulators +
//    32 fragments) registers a thread, more than fit without spilling: 8
//    warps x 1 row block, so 8 warps per SM hide the mma/ldmatrix latency.
template <class C>
struct Fwd {
  static constexpr int WARPS = C::H >= 128 ? 8 : 4;
  static constexpr int R = C::H >= 128 ? 1 : 2;  // 16-row blocks per warp
  static constexpr int T = WARPS * R * 16;        // rows per block tile
};

template <class C, class In, class Out>
__global__ void __launch_bounds__(Fwd<C>::WARPS * 32)
    mlp_fwd_kernel(const In in, const Out sink, const __half* __restrict__ w, const int32_t* __restrict__ perm,
                   const int32_t* __restrict__ offsets, int64_t P, float slope) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __half* ws = reinterpret_cast<__half*>(smem_raw);
  const int g = blockIdx.y;
  load_weights<C>(ws, w + static_cast<int64_t>(g) * C::NW);
  __syncthreads();

  const int64_t begin = offsets ? offsets[g] : 0;
  const int64_t end = offsets ? offsets[g + 1] : P;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  constexpr int R = Fwd<C>::R, TILE = Fwd<C>::T;

  for (int64_t base = begin + static_cast<int64_t>(blockIdx.x) * TILE; base < end;
       base += static_cast<int64_t>(gridDim.x) * TILE) {
    int64_t rlo[R], rhi[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int64_t l = base + warp * R * 16 + r * 16 + (lane >> 2);
      rlo[r] = mem_row(l, end, perm);
      rhi[r] = mem_row(l + 8, end, perm);
    }
    uint32_t ax[R][C::IN / 16][4];
    in.template load<C::IN, R>(ax, rlo, rhi, lane);

    float acc[R][C::H / 8][4];
    uint32_t ah[R][C::H / 16][4];
    gemm_nk<C::IN, C::H, R>(acc, ax, ws + C::wsoff(0), lane);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      lrelu_frags<C::H>(ah[r], acc[r], slope);
    }
#pragma unroll
    for (int m = 1; m < C::NH; ++m) {
      gemm_nk<C::H, C::H, R>(acc, ah, ws + C::wsoff(m), lane);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        lrelu_frags<C::H>(ah[r], acc[r], slope);
      }
    }
    float out[R][C::OUT / 8][4];
    gemm_nk<C::H, C::OUT, R>(out, ah, ws + C::wsoff(C::NH), lane);
    sink.template store<C::OUT, R>(out, rlo, rhi, lane);
  }
}

// ---------------------------------------------------------------- backward

constexpr int kBwdWarps = 8;
constexpr int kBwdT = kBwdWarps * 16;  // pixels per tile = K of the dW products

// Shared memory of the in-block backward below (weights, every layer's
// activations for one tile, two dZ buffers, reduction slots), and the opt-in
// limit of sm_90 / sm_80 (227 KB).  Shapes over the limit (width 128) take the
// split backward further down instead.
constexpr size_t kSmemOptin = 227 * 1024;

template <class C>
constexpr size_t inner_bwd_smem() {
  return sizeof(__half) * (static_cast<size_t>(C::NWS) + static_cast<size_t>(kBwdT) * (C::IN + kPad) +
                           static_cast<size_t>(kBwdT) * C::NH * (C::H + kPad) +
                           2 * static_cast<size_t>(kBwdT) * ((C::H > C::OUT ? C::H : C::OUT) + kPad)) +
         sizeof(float) * kBwdWarps;
}

// True if shape C trains with the split backward (activations and dZ through
// device memory, weight gradients by a separate tensor-core pass).
template <class C>
constexpr bool split_bwd() {
  return inner_bwd_smem<C>() > kSmemOptin;
}

template <class C>
struct Bwd {
  // dW tiles (16x8) of matrix m owned by each warp, and their offset in the
  // warp's register array.
  __host__ __device__ static constexpr int tpw(int m) { return (C::rows(m) / 16) * (C::cols(m) / 8) / kBwdWarps; }
  __host__ __device__ static constexpr int dwoff(int m) {
    int o = 0;
    for (int j = 0; j < m; ++j) o += tpw(j);
    return o;
  }
  static constexpr int NDW = dwoff(C::NMAT);
  // A warp's tiles must share one 16-row block of dW (one A fragment per k-step).
  __host__ __device__ static constexpr bool tiling_ok() {
    for (int m = 0; m < C::NMAT; ++m) {
      const int tiles = (C::rows(m) / 16) * (C::cols(m) / 8);
      if (tiles % kBwdWarps != 0 || tpw(m) == 0 || (C::cols(m) / 8) % tpw(m) != 0) return false;
    }
    return true;
  }
  static_assert(tiling_ok(), "weight-gradient tiles do not divide evenly over the backward warps");

  // Shared memory (halves): weights | activations A_0..A_NH | 2 dZ buffers | f32 reduction slots.
  __host__ __device__ static constexpr int act_stride(int l) { return (l == 0 ? C::IN : C::H) + kPad; }
  __host__ __device__ static constexpr int act_off(int l) {
    int o = 0;
    for (int j = 0; j < l; ++j) o += kBwdT * act_stride(j);
    return o;
  }
  static constexpr int ACT_HALVES = act_off(C::NH + 1);
  static constexpr int DZ_HALVES = kBwdT * ((C::H > C::OUT ? C::H : C::OUT) + kPad);
  static constexpr size_t SMEM_BYTES =
      sizeof(__half) * (static_cast<size_t>(C::NWS) + ACT_HALVES + 2 * DZ_HALVES) + sizeof(float) * kBwdWarps;
  static_assert(SMEM_BYTES == inner_bwd_smem<C>(), "inner_bwd_smem must describe this layout");
};

// dW_m (M x N) += inv_s * dZ^T A over the tile's kBwdT pixels, for the tiles
// this warp owns.  dz: [pixel][M + kPad], act: [pixel][N + kPad].
template <int M, int N, int TPW, int OFF, int NDW>
__device__ __forceinline__ void dw_update(float (&dw)[NDW][4], const __half* dz, const __half* act, float inv_s,
                                          int warp, int lane) {
  constexpr int NT = N / 8;
  const int idx0 = warp * TPW;
  const int mt = idx0 / NT, nt0 = idx0 % NT;
  const int q = lane >> 3, i = lane & 7;
  float t[TPW][4];
#pragma unroll
  for (int j = 0; j < TPW; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) t[j][e] = 0.f;
#pragma unroll
  for (int ks = 0; ks < kBwdT / 16; ++ks) {
    uint32_t a[4];  // dZ^T block: rows = outputs mt*16.., k = pixels ks*16..
    ldsm_x4_t(a, dz + (ks * 16 + 8 * (q >> 1) + i) * (M + kPad) + mt * 16 + 8 * (q & 1));
#pragma unroll
    for (int p = 0; p < TPW / 2; ++p) {
      uint32_t b[4];
      ldsm_x4_t(b, act + (ks * 16 + i + 8 * (q & 1)) * (N + kPad) + (nt0 + 2 * p) * 8 + 8 * (q >> 1));
      mma(t[2 * p], a, b[0], b[1]);
      mma(t[2 * p + 1], a, b[2], b[3]);
    }
    if constexpr (TPW % 2 == 1) {
      uint32_t b0, b1;
      ldsm_x2_t(b0, b1, act + (ks * 16 + i + 8 * (q & 1)) * (N + kPad) + (nt0 + TPW - 1) * 8);
      mma(t[TPW - 1], a, b0, b1);
    }
  }
#pragma unroll
  for (int j = 0; j < TPW; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dw[OFF + j][e] = fmaf(t[j][e], inv_s, dw[OFF + j][e]);
}

// The tile's power-of-two scaling of dL/dy (tile_dy below; the wgmma
// backward's twin in kernels/mlp_bwd_wgmma.cuh): every thread of the block
// calls it with its rows' dL/dy; returns 1 / s.
template <int OUT>
__device__ __forceinline__ float scale_tile_dy(float (&gy)[OUT / 8][4], float* red, int warp, int lane) {
  float mx = 0.f;
#pragma unroll
  for (int j = 0; j < OUT / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) mx = fmaxf(mx, fabsf(gy[j][e]));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
  if (lane == 0) red[warp] = mx;
  __syncthreads();
  mx = red[0];
#pragma unroll
  for (int wi = 1; wi < kBwdWarps; ++wi) mx = fmaxf(mx, red[wi]);
  int shift = 0;
  float inv_s = 1.f;
  if (mx > 0.f && isfinite(mx)) {
    frexpf(mx, &shift);  // mx = f * 2^shift, f in [0.5, 1)
    inv_s = ldexpf(1.f, shift);
  }
  // ldexpf scales each value without forming 2^-shift, which is past float's
  // range when the whole tile's dL/dy is subnormal (saturated softmax
  // kernels: every logit's gradient ~1e-40): that scale was inf, and
  // 0 * inf = NaN in the weight gradients (session 11, the default
  // architecture's training-parity run).  inv_s = 2^shift >= 2^-148 stays
  // representable.
#pragma unroll
  for (int j = 0; j < OUT / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) gy[j][e] = ldexpf(gy[j][e], -shift);
  return inv_s;
}

// dL/dy of the warp's 16 rows in accumulator layout (given by the gradient
// policy, or formed by it from the outputs recomputed through W_NH), scaled
// by the tile's power of two s that brings the largest magnitude of all
// kBwdT rows into [0.5, 1); returns 1 / s.  Every thread of the block calls
// it (one __syncthreads; `red` holds one float per warp).
template <class C, class Dy>
__device__ __forceinline__ float tile_dy(float (&gy)[C::OUT / 8][4], const Dy& dys,
                                         const uint32_t (&ah)[1][C::H / 16][4], const __half* ws, int64_t rlo,
                                         int64_t rhi, float* red, int warp, int lane) {
  float yo[C::OUT / 8][4];
  if constexpr (Dy::kNeedsOut) {
    float o1[1][C::OUT / 8][4];
    gemm_nk<C::H, C::OUT, 1>(o1, ah, ws + C::wsoff(C::NH), lane);
#pragma unroll
    for (int j = 0; j < C::OUT / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) yo[j][e] = o1[0][j][e];
  }
  dys.template grad<C::OUT>(gy, yo, rlo, rhi, lane);
  return scale_tile_dy<C::OUT>(gy, red, warp, lane);
}

// dL/dx of the thread's two rows (accumulator layout, K columns, tile-scaled)
// to dx (P, K) row-major, unscaled by inv_s; rows past the end (-1) skipped.
template <int K>
__device__ __forceinline__ void store_dx(float* dx, const float (&d)[K / 8][4], int64_t rlo, int64_t rhi, float inv_s,
                                         int c) {
#pragma unroll
  for (int j = 0; j < K / 8; ++j) {
    if (rlo >= 0) *reinterpret_cast<float2*>(dx + rlo * K + j * 8 + c) = make_float2(d[j][0] * inv_s, d[j][1] * inv_s);
    if (rhi >= 0) *reinterpret_cast<float2*>(dx + rhi * K + j * 8 + c) = make_float2(d[j][2] * inv_s, d[j][3] * inv_s);
  }
}

// Per-tile context of the backward walk.
struct BwdCtx {
  const __half* ws;
  const __half* act;
  float inv_s, slope;
  int warp, lane, lr;
  int64_t rlo, rhi;
  float* dx;  // nullptr: no input gradient
};

// One step of the backward walk: matrix m, with dZ_{m+1} in registers (dzf)
// and in shared memory (dz_cur, stride rows(m) + kPad).
template <class C, int m>
__device__ __forceinline__ void bwd_step(float (&dw)[Bwd<C>::NDW][4], const uint32_t (&dzf)[C::rows(m) / 16][4],
                                         __half* dz_cur, __half* dz_next, const BwdCtx& k) {
  using B = Bwd<C>;
  constexpr int M = C::rows(m), N = C::cols(m);
  dw_update<M, N, B::tpw(m), B::dwoff(m), B::NDW>(dw, dz_cur, k.act + B::act_off(m), k.inv_s, k.warp, k.lane);
  const int c = 2 * (k.lane & 3);
  if constexpr (m > 0) {
    float da[N / 8][4];
    gemm_kn<M, N>(da, dzf, k.ws + C::wsoff(m), k.lane);
    uint32_t nf[N / 16][4];
    to_frags<N>(nf, da);
    lrelu_grad_frags<N>(nf, k.act + B::act_off(m), k.lr, c, k.slope);
    store_frags<N>(dz_next, nf, k.lr, k.lane);
    __syncthreads();
    bwd_step<C, m - 1>(dw, nf, dz_next, dz_cur, k);
  } else {
    if (k.dx != nullptr) {
      float dxa[C::IN / 8][4];
      gemm_kn<M, C::IN>(dxa, dzf, k.ws + C::wsoff(0), k.lane);
      store_dx<C::IN>(k.dx, dxa, k.rlo, k.rhi, k.inv_s, c);
    }
  }
}

// Write this warp's dW tiles of matrices m..NH to the block's partial buffer.
template <class C, int m>
__device__ __forceinline__ void store_dw(const float (&dw)[Bwd<C>::NDW][4], float* out, int warp, int lane) {
  if constexpr (m <= C::NH) {
    using B = Bwd<C>;
    constexpr int N = C::cols(m), NT = N / 8, TPW = B::tpw(m);
    float* o = out + C::woff(m);
#pragma unroll
    for (int j = 0; j < TPW; ++j) {
      const int idx = warp * TPW + j;
      const int row = (idx / NT) * 16 + (lane >> 2), col = (idx % NT) * 8 + 2 * (lane & 3);
      const float* t = dw[B::dwoff(m) + j];
      *reinterpret_cast<float2*>(o + row * N + col) = make_float2(t[0], t[1]);
      *reinterpret_cast<float2*>(o + (row + 8) * N + col) = make_float2(t[2], t[3]);
    }
    store_dw<C, m + 1>(dw, out, warp, lane);
  }
}

template <class C, class In, class Dy>
__global__ void __launch_bounds__(kBwdWarps * 32, 1)
    mlp_bwd_kernel(const In in, const Dy dys, const __half* __restrict__ w, const int32_t* __restrict__ perm,
                   const int32_t* __restrict__ offsets, int64_t P, float* __restrict__ dx,
                   float* __restrict__ dw_partial, float slope) {
  using B = Bwd<C>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __half* ws = reinterpret_cast<__half*>(smem_raw);
  __half* act = ws + C::NWS;
  __half* dz0 = act + B::ACT_HALVES;
  __half* dz1 = dz0 + B::DZ_HALVES;
  float* red = reinterpret_cast<float*>(dz1 + B::DZ_HALVES);

  const int g = blockIdx.y;
  load_weights<C>(ws, w + static_cast<int64_t>(g) * C::NW);

  const int64_t begin = offsets ? offsets[g] : 0;
  const int64_t end = offsets ? offsets[g + 1] : P;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int lr = warp * 16 + (lane >> 2);  // block-local row of c0/c1 (c2/c3: lr + 8)

  float dw[B::NDW][4];
#pragma unroll
  for (int j = 0; j < B::NDW; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dw[j][e] = 0.f;

  for (int64_t base = begin + static_cast<int64_t>(blockIdx.x) * kBwdT; base < end;
       base += static_cast<int64_t>(gridDim.x) * kBwdT) {
    // The previous tile's dW products read every warp's rows of act/dz (and
    // the first pass waits for the weights).
    __syncthreads();
    const int64_t l = base + lr;
    int64_t rlo[1] = {mem_row(l, end, perm)}, rhi[1] = {mem_row(l + 8, end, perm)};

    // Forward recomputation, storing A_0..A_NH (f16, exactly what the forward kernel used).
    uint32_t ax[1][C::IN / 16][4];
    in.template load<C::IN, 1>(ax, rlo, rhi, lane);
    store_frags<C::IN>(act + B::act_off(0), ax[0], lr, lane);
    float acc[1][C::H / 8][4];
    uint32_t ah[1][C::H / 16][4];
    gemm_nk<C::IN, C::H, 1>(acc, ax, ws + C::wsoff(0), lane);
    lrelu_frags<C::H>(ah[0], acc[0], slope);
    store_frags<C::H>(act + B::act_off(1), ah[0], lr, lane);
#pragma unroll
    for (int m = 1; m < C::NH; ++m) {
      gemm_nk<C::H, C::H, 1>(acc, ah, ws + C::wsoff(m), lane);
      lrelu_frags<C::H>(ah[0], acc[0], slope);
      store_frags<C::H>(act + B::act_off(m + 1), ah[0], lr, lane);
    }

    float gy[C::OUT / 8][4];
    const float inv_s = tile_dy<C>(gy, dys, ah, ws, rlo[0], rhi[0], red, warp, lane);
    uint32_t dzf[C::OUT / 16][4];
    to_frags<C::OUT>(dzf, gy);
    store_frags<C::OUT>(dz0, dzf, lr, lane);
    __syncthreads();

    const BwdCtx k{ws, act, inv_s, slope, warp, lane, lr, rlo[0], rhi[0], dx};
    bwd_step<C, C::NH>(dw, dzf, dz0, dz1, k);
  }

  store_dw<C, 0>(dw, dw_partial + (static_cast<int64_t>(g) * gridDim.x + blockIdx.x) * C::NW, warp, lane);
}

// ---------------------------------------------------------------- backward, split (wide MLPs)
//
// At width 128 the weights alone take 188 KB of shared memory, so a tile's
// activations no longer fit beside them (the in-block backward above needs
// 400 KB).  The split backward runs in two kernels:
//
//  1. mlp_bwd_split_kernel (the data pass): weights in shared memory, 8 warps
//     x 16 rows, each warp independent of the others after the tile's dL/dy
//     scale.  It recomputes the forward pass in registers, writes every A_m
//     (f16) to a workspace in device memory and keeps only the signs of the
//     hidden activations (bits in shared memory), forms dL/dy, then walks
//     back dA = dZ W (registers, like the forward) writing every dZ_{m+1}
//     (f16, tile-scaled) to the workspace, and dL/dx if asked.
//     With a storing forward (the plain op's training forward,
//     mlp_fwd_store_kernel or its wgmma twin), the forward wrote every A_m
//     and the sign bits, and the data pass (STORED) only walks back.
//  2. mlp_dw_kernel: dW_m = sum over tiles of inv_s(tile) dZ_{m+1}^T A_m, one
//     tensor-core product per 128-pixel tile exactly like the in-block
//     backward's (same f16 operands, same f32 accumulation, same per-tile
//     unscaling), each block owning one (matrix, 64-column chunk) and a
//     strided set of tiles; per-block partial sums, summed by the caller.
//     On Hopper its twin mlp_dw_wgmma_kernel (kernels/mlp_dw_wgmma.cuh).
//
// Workspace layout: tiles in wgmma's no-swizzle core-matrix layout.  Tiles
// are numbered across groups (group g's tile t is tile_base(g) + t); a
// K-wide matrix (A_m, or dZ_{m+1}) of tile T is one contiguous block of
// kBwdT x K halves at T kBwdT K, element (row p, column k) at byte
// wg::core_off(p, k, K) (kernels/wgmma.cuh): 8 x 8 core matrices of 128 bytes, ordered by 8-row
// block, then 8-column block.  A warp's fragment register (kb, r) of its 16
// rows is exactly one core matrix, lane l's 4 bytes at 4 l, so each warp
// store instruction writes one whole 128-byte line.  (Session 28's
// fragment-native runs, 512 contiguous bytes an instruction, made the dW
// pass spread every run into row-major shared memory for ldmatrix.trans:
// L1 90 % busy, 6.8 ms of the 14 at 4 M rows, ncu on the H100.)  In this
// layout the dW pass copies a tile's matrices into shared memory as they
// are, 16 bytes a copy, where ldmatrix reads them (each core-matrix row is
// 16 contiguous bytes) and wgmma reads them through MN-major descriptors.
// Rows past a group's end hold zeros (zero inputs and zero dL/dy give zero
// activations and dZ: no biases), so the dW pass needs no bounds.  Then one
// f32 inv_s per tile.

template <class C>
struct Split {
  // R: row capacity of the workspace (tiles() * kBwdT).
  __host__ __device__ static constexpr int64_t act_off(int m, int64_t R) {
    int64_t o = 0;
    for (int j = 0; j < m; ++j) o += R * C::cols(j);
    return o;
  }
  __host__ __device__ static constexpr int64_t dz_off(int m, int64_t R) {
    int64_t o = act_off(C::NMAT, R);
    for (int j = 0; j < m; ++j) o += R * C::rows(j);
    return o;
  }
  // Every group's tiles fit: sum of ceil(rows_g / kBwdT) <= ceil(P / kBwdT) + groups.
  static int64_t tiles(int64_t P, int groups) { return (P + kBwdT - 1) / kBwdT + groups; }
  static int64_t scale_off_bytes(int64_t P, int groups) {
    return ((dz_off(C::NMAT, tiles(P, groups) * kBwdT) * 2 + 255) / 256) * 256;
  }
  // The hidden activations' sign bits, for the data pass that does not
  // recompute the forward (the forward stored A_m: mlp_fwd_store_kernel):
  // per tile, word w of hidden layer l of thread x at (l MASK_WORDS + w) 256 + x.
  static int64_t mask_off_bytes(int64_t P, int groups) {
    return ((scale_off_bytes(P, groups) + static_cast<int64_t>(sizeof(float)) * tiles(P, groups) + 255) / 256) * 256;
  }
  static int64_t bytes(int64_t P, int groups) {
    return mask_off_bytes(P, groups) + static_cast<int64_t>(sizeof(uint32_t)) * TILE_MASK_WORDS * tiles(P, groups);
  }

  // dW pass: matrix m is split into chunks of at most 64 columns, one block
  // column of the grid each; a warp owns TPW 16x8 tiles of its chunk.
  __host__ __device__ static constexpr int chunk(int m) { return C::cols(m) > 64 ? 64 : C::cols(m); }
  __host__ __device__ static constexpr int nchunks(int m) { return C::cols(m) / chunk(m); }
  __host__ __device__ static constexpr int pair_begin(int m) {
    int o = 0;
    for (int j = 0; j < m; ++j) o += nchunks(j);
    return o;
  }
  static constexpr int NPAIRS = pair_begin(C::NMAT);
  __host__ __device__ static constexpr int tpw(int m) { return (C::rows(m) / 16) * (chunk(m) / 8) / kBwdWarps; }
  __host__ __device__ static constexpr bool tiling_ok() {
    for (int m = 0; m < C::NMAT; ++m)
      if (C::cols(m) % chunk(m) != 0 || ((C::rows(m) / 16) * (chunk(m) / 8)) % kBwdWarps != 0) return false;
    return true;
  }
  static_assert(tiling_ok(), "split backward: weight-gradient tiles do not divide evenly over the warps");
  // Bytes of one tile's dZ_{m+1} and A_m chunk, as stored (the dW pass's stage).
  __host__ __device__ static constexpr size_t dw_stage(int m) {
    return sizeof(__half) * kBwdT * (C::rows(m) + chunk(m));
  }
  __host__ __device__ static constexpr size_t dw_smem() {  // two stages: the next tile lands while this one computes
    size_t b = 0;
    for (int m = 0; m < C::NMAT; ++m) b = dw_stage(m) > b ? dw_stage(m) : b;
    return 2 * b;
  }
  static constexpr int MASK_WORDS = (C::H / 4 + 15) / 16;  // sign-bit words of one hidden layer, per lane
  static constexpr int TILE_MASK_WORDS = C::NH * MASK_WORDS * kBwdWarps * 32;  // a tile's, every thread's
  // Data pass: weights, reduction slots, every thread's sign bits.
  __host__ __device__ static constexpr size_t data_smem() {
    return sizeof(__half) * C::NWS + sizeof(float) * kBwdWarps +
           sizeof(uint32_t) * static_cast<size_t>(C::NH) * MASK_WORDS * kBwdWarps * 32;
  }
};

// Store A fragments (16 rows x K) of the workspace's 16-row block `rb` (warp
// rb % 8 of tile rb / 8) in the core-matrix layout above: register (kb, r)
// is the core matrix of 8-row block 2 (rb % 8) + r % 2 and 8-column block
// 2 kb + r / 2, lane l's 4 bytes at 4 l.
template <int K>
__device__ __forceinline__ void store_frags_ws(__half* base, const uint32_t (&a)[K / 16][4], int64_t rb, int lane) {
  uint32_t* p = reinterpret_cast<uint32_t*>(base + rb * 16 * K) + lane;  // the block's 16 rows are contiguous
#pragma unroll
  for (int kb = 0; kb < K / 16; ++kb)
#pragma unroll
    for (int r = 0; r < 4; ++r) p[((r & 1) * (K / 8) + 2 * kb + (r >> 1)) * 32] = a[kb][r];
}

// First tile of group g in the workspace: the tiles of the groups before it.
__device__ __forceinline__ int64_t tile_base(const int32_t* __restrict__ offsets, int g) {
  int64_t b = 0;
  for (int h = 0; h < g; ++h) b += (static_cast<int64_t>(offsets[h + 1]) - offsets[h] + kBwdT - 1) / kBwdT;
  return b;
}

// Sign bits of a layer's f16 activations (A fragments, 16 rows x K): the
// half `h` of a[kb][reg] is > 0 (what the in-block backward reads from its
// stored activations; NaN counts as not > 0) iff bit (k & 15) + 16 h of word
// k >> 4 is set, k = 4 kb + reg.  One HSET2 and a shift-or per register.
// The words go to shared memory at msk[w * stride] (one column per thread:
// no bank conflicts); kept in registers they pushed the data pass into spills.
template <int K, int W>
__device__ __forceinline__ void positive_mask(uint32_t* msk, int stride, const uint32_t (&a)[K / 16][4]) {
  static_assert(W * 16 >= K / 4, "mask words too few");
  const __half2 zero = __float2half2_rn(0.f);
  uint32_t bits[W];
#pragma unroll
  for (int w = 0; w < W; ++w) bits[w] = 0u;
#pragma unroll
  for (int kb = 0; kb < K / 16; ++kb)
#pragma unroll
    for (int reg = 0; reg < 4; ++reg) {
      const int k = kb * 4 + reg;
      const uint32_t m = __hgt2_mask(*reinterpret_cast<const __half2*>(&a[kb][reg]), zero);
      bits[k >> 4] |= (m & 0x00010001u) << (k & 15);
    }
#pragma unroll
  for (int w = 0; w < W; ++w) msk[w * stride] = bits[w];
}

struct SplitCtx {
  const __half* ws;
  const uint32_t* msk;  // this thread's sign bits: word w of hidden layer l at msk[(l * MASK_WORDS + w) * blockDim]
  __half* work;
  int64_t R;  // workspace row capacity
  float inv_s, slope;
  int lane;
  int64_t rlo, rhi;  // memory rows (dx)
  int64_t rb;        // the warp's 16-row block in the workspace
  float* dx;
};

// Matrix m of the walk back: dZ_{m+1} (fragments) to the workspace, then
// dA_m = dZ_{m+1} W_m masked by lrelu'(A_m) becomes dZ_m.
template <class C, int m>
__device__ __forceinline__ void split_step(const uint32_t (&dzf)[C::rows(m) / 16][4], const SplitCtx& k) {
  constexpr int M = C::rows(m), N = C::cols(m);
  store_frags_ws<M>(k.work + Split<C>::dz_off(m, k.R), dzf, k.rb, k.lane);
  const int c = 2 * (k.lane & 3);
  if constexpr (m > 0) {
    float da[N / 8][4];
    gemm_kn<M, N>(da, dzf, k.ws + C::wsoff(m), k.lane);
    constexpr int W = Split<C>::MASK_WORDS;
    uint32_t bits[W];
#pragma unroll
    for (int w = 0; w < W; ++w) bits[w] = k.msk[((m - 1) * W + w) * kBwdWarps * 32];
#pragma unroll
    for (int j = 0; j < N / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int kk = (j >> 1) * 4 + (((j & 1) << 1) | (e >> 1));  // register of da[j][e] after to_frags
        const uint32_t bit = 1u << ((kk & 15) + 16 * (e & 1));
        if ((bits[kk >> 4] & bit) == 0u) da[j][e] *= k.slope;  // k.slope: the slope the forward applied
      }
    uint32_t nf[N / 16][4];
    to_frags<N>(nf, da);
    split_step<C, m - 1>(nf, k);
  } else {
    if (k.dx != nullptr) {
      float dxa[C::IN / 8][4];
      gemm_kn<M, C::IN>(dxa, dzf, k.ws + C::wsoff(0), k.lane);
      store_dx<C::IN>(k.dx, dxa, k.rlo, k.rhi, k.inv_s, c);
    }
  }
}

// Hidden layer m's activations A_{m+1} (the warp's 16 rows, fragments) and
// their sign bits into the split backward's workspace: the words at msk
// (this thread's, kBwdWarps x 32 apart: a shared-memory column in the
// recomputing data pass, the tile's global slots in a storing forward).
template <class C>
__device__ __forceinline__ void store_layer_ws(int m, const uint32_t (&ah)[C::H / 16][4], uint32_t* msk,
                                               __half* work, int64_t R, int64_t rb, int lane) {
  constexpr int W = Split<C>::MASK_WORDS, MS = kBwdWarps * 32;
  positive_mask<C::H, W>(msk + m * W * MS, MS, ah);
  store_frags_ws<C::H>(work + Split<C>::act_off(m + 1, R), ah, rb, lane);
}

// The forward of the warp's 16 rows through the hidden layers on mma.sync,
// storing A_0 .. A_NH and the sign bits as the split backward reads them
// (the recomputing data pass and mlp_fwd_store_kernel); ah ends as A_NH.
template <class C>
__device__ __forceinline__ void hidden_layers_ws(uint32_t (&ax)[1][C::IN / 16][4], uint32_t (&ah)[1][C::H / 16][4],
                                                 const __half* ws, uint32_t* msk, __half* work, int64_t R,
                                                 int64_t rb, int lane, float slope) {
  store_frags_ws<C::IN>(work + Split<C>::act_off(0, R), ax[0], rb, lane);
  float acc[1][C::H / 8][4];
  gemm_nk<C::IN, C::H, 1>(acc, ax, ws + C::wsoff(0), lane);
  lrelu_frags<C::H>(ah[0], acc[0], slope);
  store_layer_ws<C>(0, ah[0], msk, work, R, rb, lane);
#pragma unroll
  for (int m = 1; m < C::NH; ++m) {
    gemm_nk<C::H, C::H, 1>(acc, ah, ws + C::wsoff(m), lane);
    lrelu_frags<C::H>(ah[0], acc[0], slope);
    store_layer_ws<C>(m, ah[0], msk, work, R, rb, lane);
  }
}

// STORED: the forward stored A_0 .. A_NH and the sign bits
// (mlp_fwd_store_kernel or its wgmma twin), so the pass neither reads x nor
// recomputes: it forms dL/dy and walks back, with the sign bits from `masks`.  Only
// for gradient policies that do not need the output (the bare op's).
template <class C, class In, class Dy, bool STORED>
__global__ void __launch_bounds__(kBwdWarps * 32, 1)
    mlp_bwd_split_kernel(const In in, const Dy dys, const __half* __restrict__ w, const int32_t* __restrict__ perm,
                         const int32_t* __restrict__ offsets, int64_t P, float* __restrict__ dx,
                         __half* __restrict__ work, float* __restrict__ scales, const uint32_t* __restrict__ masks,
                         int64_t R, float slope) {
  static_assert(!STORED || !Dy::kNeedsOut, "the stored data pass has no output layer to feed dL/dy");
  using S = Split<C>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __half* ws = reinterpret_cast<__half*>(smem_raw);
  float* red = reinterpret_cast<float*>(ws + C::NWS);
  uint32_t* msk = reinterpret_cast<uint32_t*>(red + kBwdWarps) + threadIdx.x;
  constexpr int W = S::MASK_WORDS, MS = kBwdWarps * 32;

  const int g = blockIdx.y;
  load_weights<C>(ws, w + static_cast<int64_t>(g) * C::NW);

  const int64_t begin = offsets ? offsets[g] : 0;
  const int64_t end = offsets ? offsets[g + 1] : P;
  const int64_t tb = offsets ? tile_base(offsets, g) : 0;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int lr = warp * 16 + (lane >> 2);

  // STORED: dL/dy and this thread's sign bits of every layer for the next
  // tile are loaded into registers while this tile walks back (one tile
  // ahead), then the bits are parked in the thread's shared-memory column
  // (read back by this thread only).  Read from device memory step by step,
  // each layer's bits waited out a memory latency behind the step's stores.
  uint32_t bits[STORED ? C::NH * W : 1];
  float gy_next[C::OUT / 8][4];
  auto prefetch = [&](int64_t t) {
    if constexpr (STORED) {
      const int64_t l = begin + t * kBwdT + lr;
      dys.template grad<C::OUT>(gy_next, gy_next, mem_row(l, end, perm), mem_row(l + 8, end, perm), lane);
      const uint32_t* src = masks + (tb + t) * S::TILE_MASK_WORDS + threadIdx.x;
#pragma unroll
      for (int i = 0; i < C::NH * W; ++i) bits[i] = __ldcs(src + i * MS);
    }
  };
  if (begin + static_cast<int64_t>(blockIdx.x) * kBwdT < end) prefetch(blockIdx.x);

  for (int64_t t = blockIdx.x; begin + t * kBwdT < end; t += gridDim.x) {
    __syncthreads();  // the weights (first tile); red of the previous tile
    const int64_t l = begin + t * kBwdT + lr;
    int64_t rlo[1] = {mem_row(l, end, perm)}, rhi[1] = {mem_row(l + 8, end, perm)};
    const int64_t rb = (tb + t) * kBwdWarps + warp;

    float gy[C::OUT / 8][4];
    float inv_s;
    if constexpr (STORED) {
#pragma unroll
      for (int i = 0; i < C::NH * W; ++i) msk[i * MS] = bits[i];
#pragma unroll
      for (int j = 0; j < C::OUT / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) gy[j][e] = gy_next[j][e];
      if (begin + (t + gridDim.x) * kBwdT < end) prefetch(t + gridDim.x);
      inv_s = scale_tile_dy<C::OUT>(gy, red, warp, lane);
    } else {
      uint32_t ax[1][C::IN / 16][4];
      in.template load<C::IN, 1>(ax, rlo, rhi, lane);
      uint32_t ah[1][C::H / 16][4];
      hidden_layers_ws<C>(ax, ah, ws, msk, work, R, rb, lane, slope);
      inv_s = tile_dy<C>(gy, dys, ah, ws, rlo[0], rhi[0], red, warp, lane);
    }
    if (threadIdx.x == 0) scales[tb + t] = inv_s;
    uint32_t dzf[C::OUT / 16][4];
    to_frags<C::OUT>(dzf, gy);
    const SplitCtx k{ws, msk, work, R, inv_s, applied_slope(slope), lane, rlo[0], rhi[0], rb, dx};
    split_step<C, C::NH>(dzf, k);
  }
}

// The forward of a split-backward shape for training (the plain op's): y as
// mlp_fwd_kernel computes it (8 warps x 16 rows, the data pass's tile), and
// every A_m and the hidden activations' sign bits into the workspace, so that
// the backward's data pass need not recompute them (mlp_bwd_split_kernel<..,
// true>).  It writes what the recomputing data pass would have written, in
// the same layout, from the same f16 values.
template <class C, class In, class Out>
__global__ void __launch_bounds__(kBwdWarps * 32, 1)
    mlp_fwd_store_kernel(const In in, const Out sink, const __half* __restrict__ w, const int32_t* __restrict__ perm,
                         const int32_t* __restrict__ offsets, int64_t P, __half* __restrict__ work,
                         uint32_t* __restrict__ masks, int64_t R, float slope) {
  static_assert(Fwd<C>::T == kBwdT && Fwd<C>::R == 1, "the stored forward's tile is the data pass's");
  using S = Split<C>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __half* ws = reinterpret_cast<__half*>(smem_raw);
  const int g = blockIdx.y;
  load_weights<C>(ws, w + static_cast<int64_t>(g) * C::NW);
  __syncthreads();

  const int64_t begin = offsets ? offsets[g] : 0;
  const int64_t end = offsets ? offsets[g + 1] : P;
  const int64_t tb = offsets ? tile_base(offsets, g) : 0;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int64_t t = blockIdx.x; begin + t * kBwdT < end; t += gridDim.x) {
    const int64_t l = begin + t * kBwdT + warp * 16 + (lane >> 2);
    int64_t rlo[1] = {mem_row(l, end, perm)}, rhi[1] = {mem_row(l + 8, end, perm)};
    const int64_t rb = (tb + t) * kBwdWarps + warp;
    uint32_t* msk = masks + (tb + t) * S::TILE_MASK_WORDS + threadIdx.x;

    uint32_t ax[1][C::IN / 16][4];
    in.template load<C::IN, 1>(ax, rlo, rhi, lane);
    uint32_t ah[1][C::H / 16][4];
    hidden_layers_ws<C>(ax, ah, ws, msk, work, R, rb, lane, slope);
    float out[1][C::OUT / 8][4];
    gemm_nk<C::H, C::OUT, 1>(out, ah, ws + C::wsoff(C::NH), lane);
    sink.template store<C::OUT, 1>(out, rlo, rhi, lane);
  }
}

// 16-byte asynchronous copy global -> shared.
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(smem_addr(dst)), "l"(src) : "memory");
}
// The same, zeros in place of the source's bytes unless `inside` (src is then not read).
__device__ __forceinline__ void cp_async16_zfill(void* dst, const void* src, bool inside) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "r"(inside ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
// Waits for every commit group but the newest (which stays in flight).
__device__ __forceinline__ void cp_async_wait1() { asm volatile("cp.async.wait_group 1;\n" ::: "memory"); }

// One (matrix m, column chunk) of the weight gradient over the tiles
// blockIdx.x, + gridDim.x, ... of group g; writes the block's partial sum.
// A tile's dZ_{m+1} and A_m chunk are copied into shared memory as stored
// (the core-matrix layout), the next tile's into the other stage while the
// tensor cores work on this one; ldmatrix.trans reads the core matrices'
// 16-byte rows where they are.
template <class C, int m>
__device__ __forceinline__ void dw_chunk(int chunk, const __half* __restrict__ work, const float* __restrict__ scales,
                                         int64_t R, int64_t tb, int64_t begin, int64_t end,
                                         float* __restrict__ out, __half* smem) {
  using S = Split<C>;
  constexpr int M = C::rows(m), N = C::cols(m), NC = S::chunk(m), NT = NC / 8, TPW = S::tpw(m);
  constexpr int DZ_BYTES = 2 * kBwdT * M, A_BYTES = 2 * kBwdT * NC;
  constexpr int STAGE = static_cast<int>(S::dw_smem() / 2);  // the largest matrix's stage: both start 16-byte aligned
  unsigned char* stages = reinterpret_cast<unsigned char*>(smem);
  const unsigned char* dz_src = reinterpret_cast<const unsigned char*>(work + S::dz_off(m, R));
  const unsigned char* a_src = reinterpret_cast<const unsigned char*>(work + S::act_off(m, R));
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int q = lane >> 3, i = lane & 7;

  // Tile t into stage st: its dZ block whole, and from each 8-row block of
  // A_m the chunk's NC / 8 core matrices (NC x 16 contiguous bytes).
  auto issue = [&](int64_t t, int st) {
    unsigned char* dst = stages + st * STAGE;
    const unsigned char* dz = dz_src + (tb + t) * DZ_BYTES;
    for (int v = threadIdx.x; v < DZ_BYTES / 16; v += blockDim.x) cp_async16(dst + 16 * v, dz + 16 * v);
    const unsigned char* a = a_src + (tb + t) * (2 * kBwdT * N) + chunk * NC * 16;
    for (int v = threadIdx.x; v < A_BYTES / 16; v += blockDim.x) {
      const int pb = v / NC, r = v % NC;  // 8-row block, 16-byte piece within its chunk
      cp_async16(dst + DZ_BYTES + 16 * v, a + pb * N * 16 + 16 * r);
    }
  };

  float dw[TPW][4];
#pragma unroll
  for (int j = 0; j < TPW; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dw[j][e] = 0.f;

  int64_t t = blockIdx.x;
  if (begin + t * kBwdT < end) issue(t, 0);
  cp_async_commit();
  for (int st = 0; begin + t * kBwdT < end; t += gridDim.x, st ^= 1) {
    // The next tile into the other stage (read by the previous tile: the barrier at the loop's end).
    if (begin + (t + gridDim.x) * kBwdT < end) issue(t + gridDim.x, st ^ 1);
    cp_async_commit();  // a group every tile, empty or not: uniform counting
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");  // this tile's copies, this thread's part
    __syncthreads();                                         // ... and every other thread's
    // ldmatrix row addresses: lane (q, i) reads row i of core matrix q of each 16 x 16 (dZ^T) or 16 x 8 (A)
    // block, at a lane offset plus one constant a block (wg::core_off written out, so that it folds).
    const unsigned char* sdz = stages + st * STAGE + ((q >> 1) * (M / 8) + (q & 1)) * 128 + i * 16;
    const unsigned char* sa = stages + st * STAGE + DZ_BYTES + (q & 1) * (NC / 8) * 128 + i * 16;
    const float inv_s = scales[tb + t];
    float acc[TPW][4];
#pragma unroll
    for (int j = 0; j < TPW; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[j][e] = 0.f;
#pragma unroll
    for (int ks = 0; ks < kBwdT / 16; ++ks) {
      uint32_t a[4];
      int cur = -1;
#pragma unroll
      for (int j = 0; j < TPW; ++j) {
        const int idx = warp * TPW + j, mt = idx / NT, nt = idx % NT;
        if (mt != cur) {  // dZ^T block: rows = outputs mt*16.., k = pixels ks*16..
          ldsm_x4_t(a, reinterpret_cast<const __half*>(sdz + (2 * ks * (M / 8) + 2 * mt) * 128));
          cur = mt;
        }
        uint32_t b0, b1;
        ldsm_x2_t(b0, b1, reinterpret_cast<const __half*>(sa + (2 * ks * (NC / 8) + nt) * 128));
        mma(acc[j], a, b0, b1);
      }
    }
#pragma unroll
    for (int j = 0; j < TPW; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) dw[j][e] = fmaf(acc[j][e], inv_s, dw[j][e]);
    __syncthreads();  // this stage is read: the tile after next may overwrite it
  }
  cp_async_wait_all();  // no copy outlives the block

  float* o = out + C::woff(m) + chunk * NC;
#pragma unroll
  for (int j = 0; j < TPW; ++j) {
    const int idx = warp * TPW + j, mt = idx / NT, nt = idx % NT;
    const int row = mt * 16 + (lane >> 2), col = nt * 8 + 2 * (lane & 3);
    *reinterpret_cast<float2*>(o + row * N + col) = make_float2(dw[j][0], dw[j][1]);
    *reinterpret_cast<float2*>(o + (row + 8) * N + col) = make_float2(dw[j][2], dw[j][3]);
  }
}

template <class C, int m>
__device__ __forceinline__ void dw_dispatch(int pair, const __half* work, const float* scales, int64_t R, int64_t tb,
                                            int64_t begin, int64_t end, float* out, __half* smem) {
  if constexpr (m < C::NMAT) {
    if (pair < Split<C>::pair_begin(m + 1))
      dw_chunk<C, m>(pair - Split<C>::pair_begin(m), work, scales, R, tb, begin, end, out, smem);
    else
      dw_dispatch<C, m + 1>(pair, work, scales, R, tb, begin, end, out, smem);
  }
}

// grid (blocks, Split<C>::NPAIRS, groups); dw_partial (groups, blocks, NW).
template <class C>
__global__ void __launch_bounds__(kBwdWarps * 32, 2)
    mlp_dw_kernel(const __half* __restrict__ work, const float* __restrict__ scales,
                  const int32_t* __restrict__ offsets, int64_t P, int64_t R, float* __restrict__ dw_partial) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int g = blockIdx.z;
  const int64_t begin = offsets ? offsets[g] : 0;
  const int64_t end = offsets ? offsets[g + 1] : P;
  const int64_t tb = offsets ? tile_base(offsets, g) : 0;
  float* out = dw_partial + (static_cast<int64_t>(g) * gridDim.x + blockIdx.x) * C::NW;
  dw_dispatch<C, 0>(blockIdx.y, work, scales, R, tb, begin, end, out, reinterpret_cast<__half*>(smem_raw));
}

// ---------------------------------------------------------------- host side

void check_cuda(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    throw std::runtime_error(std::string("fused_mlp: ") + what + ": " + cudaGetErrorString(e));
  }
}

int current_device() {
  int dev = 0;
  check_cuda(cudaGetDevice(&dev), "cudaGetDevice");
  return dev;
}

// The launchers' bookkeeping (the device's limits, each kernel's shared-memory
// opt-in and occupancy), asked of the driver once per device and kernel, not
// on every launch: a small call's GPU work is ~0.6 ms (4 M rows of the colour
// MLP) and its host time was up to ~1 ms on a slow host (docs/KERNELS.md,
// session 25).  Entries are never removed, so references into the maps stay
// valid after the lock is released.
struct DeviceLimits {
  int sms = 0, smem_optin = 0;
};
const DeviceLimits& device_limits() {
  static std::mutex mu;
  static std::map<int, DeviceLimits> cache;
  const int dev = current_device();
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(dev);
  if (it == cache.end()) {
    DeviceLimits d;
    check_cuda(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
    check_cuda(cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev),
               "cudaDeviceGetAttribute");
    it = cache.emplace(dev, d).first;
  }
  return it->second;
}

int multiprocessors() { return device_limits().sms; }

// Shared memory beyond 48 KB must be opted into per kernel (and device); say
// clearly when this GPU has less than the configuration needs.
template <class K>
void prepare_smem(K kernel, size_t bytes, const char* which) {
  const int optin = device_limits().smem_optin;
  if (bytes > static_cast<size_t>(optin)) {
    char msg[256];
    std::snprintf(msg, sizeof msg,
                  "fused_mlp %s: needs %zu bytes of shared memory per block, this GPU allows %d "
                  "(the kernels are tuned for sm_90, 227 KB)",
                  which, bytes, optin);
    throw std::runtime_error(msg);
  }
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, size_t> opted;  // (kernel, device) -> bytes opted into
  const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), current_device());
  std::lock_guard<std::mutex> lock(mu);
  auto it = opted.find(key);
  if (it != opted.end() && it->second >= bytes) return;
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
             "cudaFuncSetAttribute");
  opted[key] = bytes;
}

// Resident blocks of `kernel` a multiprocessor at this launch shape (at least 1,
// else a clear error).  Call after prepare_smem.
template <class K>
int occupancy(K kernel, int threads, size_t smem, const char* which) {
  static std::mutex mu;
  static std::map<std::tuple<const void*, int, int, size_t>, int> cache;
  const auto key = std::make_tuple(reinterpret_cast<const void*>(kernel), current_device(), threads, smem);
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(key);
  if (it == cache.end()) {
    int occ = 0;
    check_cuda(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kernel, threads, smem), "occupancy query");
    if (occ < 1) throw std::runtime_error(std::string("fused_mlp: ") + which + " kernel does not fit on one multiprocessor");
    it = cache.emplace(key, occ).first;
  }
  return it->second;
}

// Blocks per group for a persistent launch: enough to fill the GPU (`spread`
// times that: groups of unequal size then share the GPU as their blocks
// finish, instead of the largest group's blocks running on alone), never
// more than the tiles of the whole batch (an upper bound for every group).
template <class K>
int persistent_blocks(K kernel, int threads, size_t smem, int64_t P, int tile, int groups, int spread = 1) {
  const int64_t resident = static_cast<int64_t>(multiprocessors()) * occupancy(kernel, threads, smem, "persistent");
  const int64_t want = (std::max(1, spread) * resident + groups - 1) / groups;
  const int64_t tiles = std::max<int64_t>(1, (P + tile - 1) / tile);
  return static_cast<int>(std::max<int64_t>(1, std::min(want, tiles)));
}

template <class C, class In, class Out>
void launch_forward_with(const MlpArgs& a, const In& in, const Out& out) {
  if (a.P == 0) return;
  const size_t smem = sizeof(__half) * C::NWS;
  auto kernel = mlp_fwd_kernel<C, In, Out>;
  prepare_smem(kernel, smem, "forward");
  constexpr int threads = Fwd<C>::WARPS * 32;
  const int bx = persistent_blocks(kernel, threads, smem, a.P, Fwd<C>::T, a.groups);
  kernel<<<dim3(bx, a.groups), threads, smem, a.stream>>>(in, out, static_cast<const __half*>(a.w), a.perm,
                                                                  a.offsets, a.P, a.slope);
  check_cuda(cudaGetLastError(), "forward launch");
}

template <class C>
void launch_forward(const MlpArgs& a, float* y) {
  launch_forward_with<C>(a, RowsIn{a.x}, RowsOut{y});
}

// Blocks per group of the backward's weight-gradient launch (the middle
// dimension of dw_partial): the in-block backward's persistent grid, or the
// split backward's dW pass (per (matrix, chunk) column of its grid).
template <class C, class In, class Dy>
int backward_blocks_with(const MlpArgs& a) {
  if constexpr (split_bwd<C>()) {
    using S = Split<C>;
    auto kernel = mlp_dw_kernel<C>;
    prepare_smem(kernel, S::dw_smem(), "backward (weight gradients)");
    const int64_t resident =
        static_cast<int64_t>(multiprocessors()) * occupancy(kernel, kBwdWarps * 32, S::dw_smem(), "weight-gradient");
    const int64_t cols = static_cast<int64_t>(S::NPAIRS) * a.groups;
    const int64_t want = (resident + cols - 1) / cols;
    return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(want, S::tiles(a.P, 1))));
  } else {
    const size_t smem = Bwd<C>::SMEM_BYTES;
    auto kernel = mlp_bwd_kernel<C, In, Dy>;
    prepare_smem(kernel, smem, "backward");
    return persistent_blocks(kernel, kBwdWarps * 32, smem, a.P, kBwdT, a.groups, a.spread);
  }
}

template <class C>
int backward_blocks(const MlpArgs& a) {
  return backward_blocks_with<C, RowsIn, RowsDy>(a);
}

// Bytes of device workspace the backward of shape C needs for P rows
// (0: the in-block backward needs none).
template <class C>
int64_t backward_workspace_bytes(int64_t P, int groups) {
  if constexpr (split_bwd<C>()) return Split<C>::bytes(P, groups);
  else return 0;
}

// The split backward's workspace: dZ and activations (`work`), the tiles'
// inv_s (`scales`), and the row capacity R.
template <class C>
struct SplitBuffers {
  __half* work;
  float* scales;
  uint32_t* masks;  // the sign bits of a stored forward (Split::mask_off_bytes)
  int64_t R;
};

template <class C>
SplitBuffers<C> split_buffers(const MlpArgs& a) {
  using S = Split<C>;
  if (a.workspace == nullptr) throw std::invalid_argument("fused_mlp: the split backward needs a workspace");
  char* base = static_cast<char*>(a.workspace);
  return {static_cast<__half*>(a.workspace), reinterpret_cast<float*>(base + S::scale_off_bytes(a.P, a.groups)),
          reinterpret_cast<uint32_t*>(base + S::mask_off_bytes(a.P, a.groups)), S::tiles(a.P, a.groups) * kBwdT};
}

// The split backward's data pass (mlp_bwd_split_kernel), which fills the workspace.
template <class C, class In, class Dy>
void launch_split_data(const MlpArgs& a, const In& in, const Dy& dy, float* dx, const SplitBuffers<C>& b) {
  if (a.P == 0) return;
  const size_t smem = Split<C>::data_smem();
  auto launch = [&](auto data) {
    prepare_smem(data, smem, "backward (data pass)");
    const int dbx = persistent_blocks(data, kBwdWarps * 32, smem, a.P, kBwdT, a.groups);
    data<<<dim3(dbx, a.groups), kBwdWarps * 32, smem, a.stream>>>(
        in, dy, static_cast<const __half*>(a.w), a.perm, a.offsets, a.P, dx, b.work, b.scales, b.masks, b.R, a.slope);
    check_cuda(cudaGetLastError(), "backward data-pass launch");
  };
  if (!a.stored) return launch(mlp_bwd_split_kernel<C, In, Dy, false>);
  if constexpr (!Dy::kNeedsOut) launch(mlp_bwd_split_kernel<C, In, Dy, true>);
  else throw std::invalid_argument("fused_mlp: a stored forward serves only the plain op's backward");
}

// The training forward of the plain op that stores the activations for the
// backward (mlp_fwd_store_kernel; a.workspace of mlp_bwd_workspace_bytes):
// split-backward shapes only.
// Launches a storing forward (mlp_fwd_store_kernel, or its wgmma twin: the
// same arguments) over the data pass's tiles, into a.workspace.
template <class C, class Kernel>
void launch_store_kernel(Kernel kernel, int threads, size_t smem, const MlpArgs& a, float* y, const char* what) {
  const SplitBuffers<C> b = split_buffers<C>(a);
  if (a.P == 0) return;
  prepare_smem(kernel, smem, what);
  const int bx = persistent_blocks(kernel, threads, smem, a.P, kBwdT, a.groups);
  kernel<<<dim3(bx, a.groups), threads, smem, a.stream>>>(RowsIn{a.x}, RowsOut{y}, static_cast<const __half*>(a.w),
                                                          a.perm, a.offsets, a.P, b.work, b.masks, b.R, a.slope);
  check_cuda(cudaGetLastError(), what);
}

template <class C>
void launch_forward_store(const MlpArgs& a, float* y) {
  if constexpr (split_bwd<C>() && Fwd<C>::T == kBwdT && Fwd<C>::R == 1) {
    launch_store_kernel<C>(mlp_fwd_store_kernel<C, RowsIn, RowsOut>, kBwdWarps * 32, sizeof(__half) * C::NWS, a, y,
                           "forward (stored)");
  } else {
    throw std::invalid_argument("fused_mlp: only the split backward's shapes (hidden width 128) store the forward's "
                                "activations; this MLP's hidden width is " + std::to_string(C::H));
  }
}

template <class C, class In, class Dy>
void launch_backward_with(const MlpArgs& a, const In& in, const Dy& dy, float* dx, float* dw_partial) {
  const int bx = backward_blocks_with<C, In, Dy>(a);
  if constexpr (split_bwd<C>()) {
    using S = Split<C>;
    const SplitBuffers<C> b = split_buffers<C>(a);
    launch_split_data<C>(a, in, dy, dx, b);
    mlp_dw_kernel<C><<<dim3(bx, S::NPAIRS, a.groups), kBwdWarps * 32, S::dw_smem(), a.stream>>>(
        b.work, b.scales, a.offsets, a.P, b.R, dw_partial);
    check_cuda(cudaGetLastError(), "backward weight-gradient launch");
  } else {
    const size_t smem = Bwd<C>::SMEM_BYTES;
    auto kernel = mlp_bwd_kernel<C, In, Dy>;
    kernel<<<dim3(bx, a.groups), kBwdWarps * 32, smem, a.stream>>>(in, dy, static_cast<const __half*>(a.w), a.perm,
                                                                    a.offsets, a.P, dx, dw_partial, a.slope);
    check_cuda(cudaGetLastError(), "backward launch");
  }
}

template <class C>
void launch_backward(const MlpArgs& a, const float* dy, float* dx, float* dw_partial) {
  launch_backward_with<C>(a, RowsIn{a.x}, RowsDy{dy}, dx, dw_partial);
}


int elementwise_blocks(int64_t total, int threads) {
  const int64_t want = (total + threads - 1) / threads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(want, int64_t(multiprocessors()) * 16)));
}


// ---------------------------------------------------------------- errors and shape dispatch

[[noreturn]] void forward_only(const MlpDims& d) {
  char msg[256];
  std::snprintf(msg, sizeof msg,
                "fused_mlp: (in=%d, hidden=%d, out=%d, n_hidden=%d) is compiled forward only (inference); train it "
                "on the PyTorch reference (backend 'auto' or 'torch')",
                d.in, d.hidden, d.out, d.n_hidden);
  throw std::invalid_argument(msg);
}

// The fused levels decode rows to (image, y, x) in 32 bits (kernels/fastdiv.cuh).
void check_fused_rows(const char* what, int64_t rows) {
  if (rows <= kMaxFusedRows) return;
  char msg[256];
  std::snprintf(msg, sizeof msg,
                "%s: %lld pixels in one call, more than the fused kernels take (%lld); split the batch or "
                "tile the image",
                what, static_cast<long long>(rows), static_cast<long long>(kMaxFusedRows));
  throw std::invalid_argument(msg);
}

[[noreturn]] void not_compiled(const char* what, const MlpDims& d) {
  char msg[768];
  std::snprintf(msg, sizeof msg,
                "%s: no kernel for (in=%d, hidden=%d, out=%d, n_hidden=%d); compiled: %s (add a line to "
                "kernels/shapes.def)",
                what, d.in, d.hidden, d.out, d.n_hidden, mlp_supported_configs());
  throw std::invalid_argument(msg);
}

// The public entry points catch every exception and return its message:
// no C++ exception leaves a translation unit (see fused_mlp.cuh).
thread_local std::string last_error;

template <class F>
const char* guarded(F&& f) {
  try {
    f();
    return nullptr;
  } catch (const std::invalid_argument& e) {
    last_error = std::string("ValueError|") + e.what();
  } catch (const std::exception& e) {
    last_error = std::string("RuntimeError|") + e.what();
  }
  return last_error.c_str();
}

}  // namespace
}  // namespace kpnt
