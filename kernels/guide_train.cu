// The guide network's elementwise passes while it trains on the fused backend
// (kpnt.ops._cuda.guide_train, the twin of kpnt.ref.guide_backward's torch
// primitives).  Activations are channels-last, so every tensor here is a
// row-major (M, C) matrix: M = N h w packed positions, C channels.
//
// PyTorch spends several passes on what each of these does in one (session 31,
// tools/step_breakdown.py: on the shipped Bayer step the guide's elementwise
// kernels and bias-gradient reductions took 9-10 ms of 15-28):
//   - bias_relu:      y = relu(a + bias[c] (+ z))         the forward epilogue of a
//                     convolution (with z: the projection block's residual add);
//   - relu_grad_sum:  g' = (g (+ p)) * (y > 0) and, per block of rows, the channel
//                     sums of g' (a bias's gradient): ReLU's backward, the
//                     residual stream's gradient add and the bias reduction.
// and, bfloat16 only, a projection block's 1x1 convolution with its passes:
//   - proj_forward:   z' = relu(h P^T + c + z) (session 33): the 1x1's GEMM and the
//                     bias_relu after it, the product never stored; optionally with the
//                     3x3's bias_relu before it too (h_bias, session 35);
//   - proj_backward:  its backward through the 1x1 (session 32).
// Arithmetic in float32, one rounding to the storage type per stored value; the
// channel sums add the stored (rounded) values, in a fixed order (a block's rows
// in its threads, then the threads in order; the caller adds the blocks' rows),
// so a rerun gives the same bits.
#include <cuda_bf16.h>

#include <string>
#include <type_traits>

#include "fused_mlp.cuh"
#include "mlp_core.cuh"
#include "tf32.cuh"

namespace kpnt {
namespace {

using tf32::mma_tf32;
using tf32::tf32_bits;

// Eight consecutive channels of one row: two float4 (float32) or one uint4 (bfloat16).
template <typename T>
struct Vec8;
template <>
struct Vec8<float> {
  static __device__ __forceinline__ void load(const float* p, float (&v)[8]) {
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  }
  // Stores v (already representable: float32 is the storage type) and returns nothing to round.
  static __device__ __forceinline__ void store(float* p, float (&v)[8]) {
    reinterpret_cast<float4*>(p)[0] = make_float4(v[0], v[1], v[2], v[3]);
    reinterpret_cast<float4*>(p)[1] = make_float4(v[4], v[5], v[6], v[7]);
  }
};
template <>
struct Vec8<__nv_bfloat16> {
  static __device__ __forceinline__ void load(const __nv_bfloat16* p, float (&v)[8]) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 f = __bfloat1622float2(h[k]);
      v[2 * k] = f.x, v[2 * k + 1] = f.y;
    }
  }
  // Rounds v to bfloat16 (to nearest even), stores it, and leaves the rounded values in v.
  static __device__ __forceinline__ void store(__nv_bfloat16* p, float (&v)[8]) {
    *reinterpret_cast<uint4*>(p) = pack(v);
  }
  // v rounded to bfloat16 (to nearest even), packed; the rounded values left in v.
  static __device__ __forceinline__ uint4 pack(float (&v)[8]) {
    uint4 u;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
      const float2 f = __bfloat1622float2(h[k]);
      v[2 * k] = f.x, v[2 * k + 1] = f.y;
    }
    return u;
  }
};

// Threads of a block: groups = C / 8 threads cover a row, rows_per_pass = blockDim.x / groups rows a pass.
template <typename T>
__global__ void bias_relu_kernel(const GuideEltArgs a) {
  const int groups = a.C / 8, cg = threadIdx.x % groups;
  const int rows = blockDim.x / groups;
  const T* in = static_cast<const T*>(a.in);
  const T* z = static_cast<const T*>(a.z);
  T* out = static_cast<T*>(a.out);
  float bias[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) bias[j] = a.bias[cg * 8 + j];
  for (int64_t r = int64_t(blockIdx.x) * rows + threadIdx.x / groups; r < a.M; r += int64_t(gridDim.x) * rows) {
    const int64_t at = r * a.C + cg * 8;
    float v[8];
    Vec8<T>::load(in + at, v);
    if (z != nullptr) {
      float w[8];
      Vec8<T>::load(z + at, w);
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = fmaxf(v[j] + bias[j] + w[j], 0.f);
    } else {
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = fmaxf(v[j] + bias[j], 0.f);
    }
    Vec8<T>::store(out + at, v);
  }
}

// v = (g (+ p)) * (y > 0) at element `at` of the (M, C) matrices, in float32 (not yet rounded to T): the ReLU's
// backward with the residual stream's gradient added, the start of both projection backwards (relu_grad_sum keeps
// its own copy of these lines: through the helper its float32 instantiation compiles to other code, and that
// kernel's code is the one its tests and timings ran).
template <typename T>
__device__ __forceinline__ void masked_grad(const T* g, const T* p, const T* y, int64_t at, float (&v)[8]) {
  float m[8];
  Vec8<T>::load(g + at, v);
  Vec8<T>::load(y + at, m);
  if (p != nullptr) {
    float w[8];
    Vec8<T>::load(p + at, w);
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] += w[j];
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) v[j] = m[j] > 0.f ? v[j] : 0.f;
}

template <typename T>
__global__ void relu_grad_sum_kernel(const GuideEltArgs a) {
  extern __shared__ float red[];  // (blockDim.x, 8)
  const int groups = a.C / 8, cg = threadIdx.x % groups;
  const int rows = blockDim.x / groups;
  const T* g = static_cast<const T*>(a.in);
  const T* p = static_cast<const T*>(a.z);
  const T* y = static_cast<const T*>(a.y);
  T* out = static_cast<T*>(a.out);
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  for (int64_t r = int64_t(blockIdx.x) * rows + threadIdx.x / groups; r < a.M; r += int64_t(gridDim.x) * rows) {
    const int64_t at = r * a.C + cg * 8;
    float v[8], m[8];
    Vec8<T>::load(g + at, v);
    Vec8<T>::load(y + at, m);
    if (p != nullptr) {
      float w[8];
      Vec8<T>::load(p + at, w);
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] += w[j];
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) v[j] = m[j] > 0.f ? v[j] : 0.f;
    Vec8<T>::store(out + at, v);
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[j] += v[j];
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) red[threadIdx.x * 8 + j] = acc[j];
  __syncthreads();
  if (threadIdx.x < groups) {  // thread cg adds the rows of its channel group, in order
    float s[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int t = threadIdx.x; t < rows * groups; t += groups)
#pragma unroll
      for (int j = 0; j < 8; ++j) s[j] += red[t * 8 + j];
#pragma unroll
    for (int j = 0; j < 8; ++j) a.partial[int64_t(blockIdx.x) * a.C + cg * 8 + j] = s[j];
  }
}

// c += a (16x16, row) * b (16x8, col); bfloat16 in, float32 accumulate.
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Eight bfloat16 as 8 floats and back (the stored values exactly).
__device__ __forceinline__ void unpack8(const uint4& u, float (&v)[8]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float2 f = __bfloat1622float2(h[k]);
    v[2 * k] = f.x, v[2 * k + 1] = f.y;
  }
}

// c at the columns of this lane's accumulators: acc[n][0..3] of the m16n8 products hold columns n 8 + 2 (lane & 3)
// and the next one (rows g and g + 8), in both projection forwards.
template <int C>
__device__ __forceinline__ void accumulator_bias(float (&bias)[C / 8][2], const float* c, int lane) {
#pragma unroll
  for (int n = 0; n < C / 8; ++n) {
    const int col = n * 8 + 2 * (lane & 3);
    bias[n][0] = c[col], bias[n][1] = c[col + 1];
  }
}

// The forward prologue's bias (GuideProjFwdArgs::h_bias) for the thread's channel group `cg`.
__device__ __forceinline__ void prologue_bias(float (&h_bias)[8], const float* b, int cg) {
#pragma unroll
  for (int j = 0; j < 8; ++j) h_bias[j] = b[cg * 8 + j];
}

// acc = this warp's 16 rows of the (rows, C) tile sA times P, or times P^T (kTransposed), P the [out][in] (C, C)
// weights in shared memory (rows of LD), on the tensor cores (mma.sync m16n8k16, bfloat16 in, float32 accumulation);
// acc[n] holds columns 8 n .. 8 n + 7 in the mma's accumulator layout.  ldmatrix row addresses: lane l gives row
// (l & 7) of 8x8 matrix l >> 3; for A matrix j is rows + 8 (j & 1), columns + 8 (j >> 1).  B = P (k = out, n = in)
// is read with .trans, matrix j at k + 8 (j & 1), n + 8 (j >> 1); B = P^T (k = in, n = out) without, matrix j at
// n + 8 (j >> 1), k + 8 (j & 1).
// The lane's ldmatrix row terms: lr = lane & 7, lb0 = (lane >> 3) & 1, lb1 = lane >> 4.
template <int C, int LD, bool kTransposed>
__device__ __forceinline__ void warp_rows_times_P(float (&acc)[C / 8][4], const __nv_bfloat16* sA,
                                                  const __nv_bfloat16* sP, int warp, int lr, int lb0, int lb1) {
#pragma unroll
  for (int n = 0; n < C / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
#pragma unroll
  for (int k = 0; k < C / 16; ++k) {
    uint32_t af[4];
    ldsm_x4(af, reinterpret_cast<const __half*>(sA + (warp * 16 + lr + 8 * lb0) * LD + k * 16 + 8 * lb1));
#pragma unroll
    for (int n = 0; n < C / 16; ++n) {
      uint32_t bf[4];
      if (kTransposed)
        ldsm_x4(bf, reinterpret_cast<const __half*>(sP + (n * 16 + lr + 8 * lb1) * LD + k * 16 + 8 * lb0));
      else
        ldsm_x4_t(bf, reinterpret_cast<const __half*>(sP + (k * 16 + lr + 8 * lb0) * LD + n * 16 + 8 * lb1));
      mma_bf16(acc[2 * n], af, bf[0], bf[1]);
      mma_bf16(acc[2 * n + 1], af, bf[2], bf[3]);
    }
  }
}

// The projection block's 1x1 convolution with its epilogue (GuideProjFwdArgs): z' = relu(h P^T + c + z).  A block
// is C / 16 warps (2 C threads) walking tiles of 16 rows a warp (C rows), persistent over the grid:
//   1. h and z to shared memory, coalesced (C / 8 threads a row; rows past M: zeros, never stored);
//   2. each warp its 16 rows: h P^T on the tensor cores (mma.sync m16n8k16, float32 accumulation), then (+ c) + z
//      and the ReLU in float32, rounded once to bfloat16, over z's place in shared memory;
//   3. z' coalesced to device memory.
// One rounding where the unfused path rounds the product, then the epilogue's result.  Shared memory: P, h, z,
// rows of C + 8 bfloat16 (as the backward's).
template <int C, bool kPrologue>
__global__ void __launch_bounds__(2 * C) proj_forward_kernel(const GuideProjFwdArgs a) {
  constexpr int W = C / 16, T = 32 * W, TM = 16 * W, LD = C + 8;
  constexpr int G = C / 8, RP = T / G;  // channel groups of 8; rows a pass
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sP = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [C][LD], P[o][i]: B^T, read without .trans
  __nv_bfloat16* sH = sP + C * LD;                                   // [TM][LD], h
  __nv_bfloat16* sZ = sH + TM * LD;                                  // [TM][LD], z, then z'
  const __nv_bfloat16* h = static_cast<const __nv_bfloat16*>(a.h);
  const __nv_bfloat16* z = static_cast<const __nv_bfloat16*>(a.z);
  const __nv_bfloat16* P = static_cast<const __nv_bfloat16*>(a.P);
  __nv_bfloat16* out = static_cast<__nv_bfloat16*>(a.out);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int cg = tid % G, r0 = tid / G;
  const int lr = lane & 7, lb0 = (lane >> 3) & 1, lb1 = lane >> 4;  // ldmatrix rows, as in the backward

  for (int i = tid; i < C * G; i += T)
    *reinterpret_cast<uint4*>(sP + (i / G) * LD + (i % G) * 8) = reinterpret_cast<const uint4*>(P)[i];
  float bias[C / 8][2];
  accumulator_bias<C>(bias, a.bias, lane);
  float h_bias[8];  // kPrologue: GuideProjFwdArgs::h_bias of the thread's channels
  if constexpr (kPrologue) prologue_bias(h_bias, a.h_bias, cg);

  const int64_t tiles = (a.M + TM - 1) / TM;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t base = t * TM;
    for (int r = r0; r < TM; r += RP) {
      const int64_t row = base + r;
      uint4 uh = make_uint4(0, 0, 0, 0), uz = make_uint4(0, 0, 0, 0);
      if (row < a.M) {
        const int64_t at = row * C + cg * 8;
        if constexpr (kPrologue) {  // h = relu(h + h_bias), stored as bias_relu stores it
          float v[8];
          Vec8<__nv_bfloat16>::load(h + at, v);
#pragma unroll
          for (int j = 0; j < 8; ++j) v[j] = fmaxf(v[j] + h_bias[j], 0.f);
          uh = Vec8<__nv_bfloat16>::pack(v);
          *reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(a.h_out) + at) = uh;
        } else {
          uh = *reinterpret_cast<const uint4*>(h + at);
        }
        uz = *reinterpret_cast<const uint4*>(z + at);
      }
      *reinterpret_cast<uint4*>(sH + r * LD + cg * 8) = uh;
      *reinterpret_cast<uint4*>(sZ + r * LD + cg * 8) = uz;
    }
    __syncthreads();
    {
      float acc[C / 8][4];
      warp_rows_times_P<C, LD, true>(acc, sH, sP, warp, lr, lb0, lb1);  // h P^T
      const int ra = warp * 16 + (lane >> 2);
#pragma unroll
      for (int n = 0; n < C / 8; ++n) {
        const int col = n * 8 + 2 * (lane & 3);
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          __nv_bfloat162* at = reinterpret_cast<__nv_bfloat162*>(sZ + (ra + 8 * half) * LD + col);
          const float2 zv = __bfloat1622float2(*at);
          *at = __floats2bfloat162_rn(fmaxf(acc[n][2 * half] + bias[n][0] + zv.x, 0.f),
                                      fmaxf(acc[n][2 * half + 1] + bias[n][1] + zv.y, 0.f));
        }
      }
    }
    __syncthreads();
    for (int r = r0; r < TM; r += RP) {
      const int64_t row = base + r;
      if (row < a.M)
        *reinterpret_cast<uint4*>(out + row * C + cg * 8) = *reinterpret_cast<const uint4*>(sZ + r * LD + cg * 8);
    }
    __syncthreads();  // the next tile overwrites sH, sZ
  }
}

template <int C>
constexpr size_t proj_forward_smem() {
  return sizeof(__nv_bfloat16) * size_t(3 * C) * (C + 8);
}

// The projection block's backward through its 1x1 convolution (GuideProjBwdArgs).  A block is C / 16 warps and
// (2 C threads) walks tiles of 16 rows a warp (C rows), persistent over the grid:
//   1. gm = (g (+ p)) * (y > 0) rounded to bfloat16, coalesced (C / 8 threads a row): to device memory, to
//      shared memory, into the thread's channel sums; h copied to shared memory (rows past M: zeros);
//   2. each warp its 16 rows: dh = gm P on the tensor cores (mma.sync m16n8k16, float32 accumulation), gh = dh
//      where h > 0, rounded once to bfloat16, to shared memory;
//   3. gh coalesced to device memory and into the channel sums;
//   4. each warp its 16 rows of dP (o = 16 warp ..): dP += gm^T h over the tile's rows, kept in registers over
//      all tiles.
// At the end the block's channel sums (threads of a channel group in order) and its dP go to its partial row.
// Shared memory: P, gm, h, gh, rows of C + 8 bfloat16 (16-byte aligned, and the 8 rows an ldmatrix reads fall
// in different banks).
template <int C>
__global__ void __launch_bounds__(2 * C) proj_backward_kernel(const GuideProjBwdArgs a) {
  constexpr int W = C / 16, T = 32 * W, TM = 16 * W, LD = C + 8;
  constexpr int G = C / 8, RP = T / G;  // channel groups of 8; rows a pass
  constexpr int S = 2 * C + C * C;      // a partial row
  extern __shared__ __align__(16) unsigned char smem_raw[];
  __nv_bfloat16* sP = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [C][LD], P[o][i]
  __nv_bfloat16* sG = sP + C * LD;                                   // [TM][LD], gm
  __nv_bfloat16* sH = sG + TM * LD;                                  // [TM][LD], h
  __nv_bfloat16* sD = sH + TM * LD;                                  // [TM][LD], gh
  const __nv_bfloat16* g = static_cast<const __nv_bfloat16*>(a.g);
  const __nv_bfloat16* p = static_cast<const __nv_bfloat16*>(a.p);
  const __nv_bfloat16* y = static_cast<const __nv_bfloat16*>(a.y);
  const __nv_bfloat16* h = static_cast<const __nv_bfloat16*>(a.h);
  const __nv_bfloat16* P = static_cast<const __nv_bfloat16*>(a.P);
  __nv_bfloat16* gm_out = static_cast<__nv_bfloat16*>(a.gm);
  __nv_bfloat16* gh_out = static_cast<__nv_bfloat16*>(a.gh);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int cg = tid % G, r0 = tid / G;
  // ldmatrix row addresses: lane l gives row (l & 7) of 8x8 matrix l >> 3.  For A (row-major 16x16) matrix j is
  // rows + 8 (j & 1), columns + 8 (j >> 1); for B and transposed A read with .trans, the stored rows are + 8 (j & 1)
  // for B (k) and + 8 (j >> 1) for A^T (k), the stored columns the other bit.
  const int lr = lane & 7, lb0 = (lane >> 3) & 1, lb1 = lane >> 4;

  for (int i = tid; i < C * G; i += T)
    *reinterpret_cast<uint4*>(sP + (i / G) * LD + (i % G) * 8) = reinterpret_cast<const uint4*>(P)[i];

  float dc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, db[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  float dP[C / 8][4];
#pragma unroll
  for (int n = 0; n < C / 8; ++n) dP[n][0] = dP[n][1] = dP[n][2] = dP[n][3] = 0.f;

  const int64_t tiles = (a.M + TM - 1) / TM;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t base = t * TM;
    // 1. gm and h
    for (int r = r0; r < TM; r += RP) {
      const int64_t row = base + r;
      uint4 ug = make_uint4(0, 0, 0, 0), uh = make_uint4(0, 0, 0, 0);
      if (row < a.M) {
        const int64_t at = row * C + cg * 8;
        float v[8];
        masked_grad(g, p, y, at, v);
        ug = Vec8<__nv_bfloat16>::pack(v);  // leaves the rounded values in v
        *reinterpret_cast<uint4*>(gm_out + at) = ug;
#pragma unroll
        for (int j = 0; j < 8; ++j) dc[j] += v[j];
        uh = *reinterpret_cast<const uint4*>(h + at);
      }
      *reinterpret_cast<uint4*>(sG + r * LD + cg * 8) = ug;
      *reinterpret_cast<uint4*>(sH + r * LD + cg * 8) = uh;
    }
    __syncthreads();
    // 2. dh = gm P, gh = dh * (h > 0)
    {
      float acc[C / 8][4];
      warp_rows_times_P<C, LD, false>(acc, sG, sP, warp, lr, lb0, lb1);  // gm P
      const int ra = warp * 16 + (lane >> 2);
#pragma unroll
      for (int n = 0; n < C / 8; ++n) {
        const int col = n * 8 + 2 * (lane & 3);
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int row = ra + 8 * half;
          const float2 hv = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(sH + row * LD + col));
          *reinterpret_cast<__nv_bfloat162*>(sD + row * LD + col) = __floats2bfloat162_rn(
              hv.x > 0.f ? acc[n][2 * half] : 0.f, hv.y > 0.f ? acc[n][2 * half + 1] : 0.f);
        }
      }
    }
    __syncthreads();
    // 3. gh out
    for (int r = r0; r < TM; r += RP) {
      const int64_t row = base + r;
      if (row < a.M) {
        const uint4 u = *reinterpret_cast<const uint4*>(sD + r * LD + cg * 8);
        *reinterpret_cast<uint4*>(gh_out + row * C + cg * 8) = u;
        float v[8];
        unpack8(u, v);
#pragma unroll
        for (int j = 0; j < 8; ++j) db[j] += v[j];
      }
    }
    // 4. dP += gm^T h (A = gm^T and B = h, both read transposed)
#pragma unroll
    for (int k = 0; k < TM / 16; ++k) {
      uint32_t af[4];
      ldsm_x4_t(af, reinterpret_cast<const __half*>(sG + (k * 16 + lr + 8 * lb1) * LD + warp * 16 + 8 * lb0));
#pragma unroll
      for (int n = 0; n < C / 16; ++n) {
        uint32_t bf[4];
        ldsm_x4_t(bf, reinterpret_cast<const __half*>(sH + (k * 16 + lr + 8 * lb0) * LD + n * 16 + 8 * lb1));
        mma_bf16(dP[2 * n], af, bf[0], bf[1]);
        mma_bf16(dP[2 * n + 1], af, bf[2], bf[3]);
      }
    }
    __syncthreads();  // the next tile overwrites sG, sH, sD
  }

  float* part = a.partial + int64_t(blockIdx.x) * S;
  {
    const int ra = warp * 16 + (lane >> 2);
#pragma unroll
    for (int n = 0; n < C / 8; ++n) {
      const int col = n * 8 + 2 * (lane & 3);
      *reinterpret_cast<float2*>(part + 2 * C + ra * C + col) = make_float2(dP[n][0], dP[n][1]);
      *reinterpret_cast<float2*>(part + 2 * C + (ra + 8) * C + col) = make_float2(dP[n][2], dP[n][3]);
    }
  }
  float* red = reinterpret_cast<float*>(sG);  // (2 T, 8): the threads' gm sums, then their gh sums
#pragma unroll
  for (int j = 0; j < 8; ++j) red[tid * 8 + j] = dc[j], red[(T + tid) * 8 + j] = db[j];
  __syncthreads();
  if (tid < G) {  // thread cg adds its channel group's threads, in order
    float s[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, d[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int u = tid; u < T; u += G)
#pragma unroll
      for (int j = 0; j < 8; ++j) s[j] += red[u * 8 + j], d[j] += red[(T + u) * 8 + j];
#pragma unroll
    for (int j = 0; j < 8; ++j) part[cg * 8 + j] = s[j], part[C + cg * 8 + j] = d[j];
  }
}

template <int C>
constexpr size_t proj_backward_smem() {
  return sizeof(__nv_bfloat16) * size_t(C + 3 * 16 * (C / 16)) * (C + 8);
}

// ---- The float32 twins (TF32 tensor cores; session 33, run in session 34; width 128 written in session 34, run and
// on since session 35) ----
// A float32 guide's 1x1 convolutions run on cuDNN as TF32 (torch.backends.cudnn.allow_tf32, on by default); these
// kernels do the same products the same way (inputs rounded to TF32, to nearest, float32 accumulation) with the
// passes around them, as the bfloat16 kernels above do.  Shared memory holds float32 rows of LD = C + 4 floats, so
// the fragments' (row g, column t) reads of the two products through P fall in 32 different banks (the dP
// product's transposed reads conflict two-way).  Widths 32, 64 and 128 (at 128 the backward's tiles have half
// the rows, tf32_backward_splits; the forward's three 128-row tiles take 203 KB of shared memory).

// acc = 16 rows of sA (from row r0) times N columns of B (from column n0), over K, where B[k][n] = sB[n LD + k]
// (sB = P gives h P^T, sB = P^T gives gm P); sA and sB hold TF32-rounded values.  Fragments (g = lane / 4,
// t = lane % 4): A (g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4); B (k t, n g), (k t + 4, n g); acc[n] in the
// bfloat16 kernels' accumulator layout.
template <int K, int N, int LD>
__device__ __forceinline__ void warp_tile_times_tf32(float (&acc)[N / 8][4], const float* sA, const float* sB,
                                                     int r0, int n0, int lane) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int n = 0; n < N / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;
#pragma unroll
  for (int k = 0; k < K / 8; ++k) {
    const float* a = sA + (r0 + g) * LD + k * 8 + t;
    const uint32_t a0 = __float_as_uint(a[0]), a1 = __float_as_uint(a[8 * LD]);
    const uint32_t a2 = __float_as_uint(a[4]), a3 = __float_as_uint(a[8 * LD + 4]);
#pragma unroll
    for (int n = 0; n < N / 8; ++n) {
      const float* b = sB + (n0 + n * 8 + g) * LD + k * 8 + t;
      mma_tf32(acc[n], a0, a1, a2, a3, __float_as_uint(b[0]), __float_as_uint(b[4]));
    }
  }
}

// acc = this warp's 16 rows of sA times all C columns of B (warp_tile_times_tf32's whole-width case).
template <int C, int LD>
__device__ __forceinline__ void warp_rows_times_tf32(float (&acc)[C / 8][4], const float* sA, const float* sB,
                                                     int warp, int lane) {
  warp_tile_times_tf32<C, C, LD>(acc, sA, sB, warp * 16, 0, lane);
}

// Eight floats rounded to TF32 into shared memory.
__device__ __forceinline__ void store_tf32(float* dst, const float (&v)[8]) {
  float r[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) r[j] = __uint_as_float(tf32_bits(v[j]));
  Vec8<float>::store(dst, r);
}

// proj_forward_kernel's float32 twin: z' = relu(h P^T + c + z), the product on TF32.
template <int C, bool kPrologue>
__global__ void __launch_bounds__(2 * C) proj_forward_tf32_kernel(const GuideProjFwdArgs a) {
  constexpr int W = C / 16, T = 32 * W, TM = 16 * W, LD = C + 4;
  constexpr int G = C / 8, RP = T / G;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* sP = reinterpret_cast<float*>(smem_raw);  // [C][LD], P[o][i] in TF32
  float* sH = sP + C * LD;                          // [TM][LD], h in TF32
  float* sZ = sH + TM * LD;                         // [TM][LD], z, then z'
  const float* h = static_cast<const float*>(a.h);
  const float* z = static_cast<const float*>(a.z);
  const float* P = static_cast<const float*>(a.P);
  float* out = static_cast<float*>(a.out);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int cg = tid % G, r0 = tid / G;

  for (int i = tid; i < C * G; i += T) {
    float v[8];
    Vec8<float>::load(P + i * 8, v);
    store_tf32(sP + (i / G) * LD + (i % G) * 8, v);
  }
  float bias[C / 8][2];
  accumulator_bias<C>(bias, a.bias, lane);
  float h_bias[8];  // kPrologue: GuideProjFwdArgs::h_bias of the thread's channels
  if constexpr (kPrologue) prologue_bias(h_bias, a.h_bias, cg);
  const int64_t tiles = (a.M + TM - 1) / TM;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t base = t * TM;
    for (int r = r0; r < TM; r += RP) {
      const int64_t row = base + r;
      float vh[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, vz[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      if (row < a.M) {
        Vec8<float>::load(h + row * C + cg * 8, vh);
        if constexpr (kPrologue) {  // h = relu(h + h_bias), stored as bias_relu stores it
#pragma unroll
          for (int j = 0; j < 8; ++j) vh[j] = fmaxf(vh[j] + h_bias[j], 0.f);
          Vec8<float>::store(static_cast<float*>(a.h_out) + row * C + cg * 8, vh);
        }
        Vec8<float>::load(z + row * C + cg * 8, vz);
      }
      store_tf32(sH + r * LD + cg * 8, vh);
      Vec8<float>::store(sZ + r * LD + cg * 8, vz);
    }
    __syncthreads();
    {
      float acc[C / 8][4];
      warp_rows_times_tf32<C, LD>(acc, sH, sP, warp, lane);  // h P^T
      const int ra = warp * 16 + (lane >> 2);
#pragma unroll
      for (int n = 0; n < C / 8; ++n) {
        const int col = n * 8 + 2 * (lane & 3);
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          float2* at = reinterpret_cast<float2*>(sZ + (ra + 8 * half) * LD + col);
          const float2 zv = *at;
          *at = make_float2(fmaxf(acc[n][2 * half] + bias[n][0] + zv.x, 0.f),
                            fmaxf(acc[n][2 * half + 1] + bias[n][1] + zv.y, 0.f));
        }
      }
    }
    __syncthreads();
    for (int r = r0; r < TM; r += RP) {
      const int64_t row = base + r;
      if (row < a.M) {
        float v[8];
        Vec8<float>::load(sZ + r * LD + cg * 8, v);
        Vec8<float>::store(out + row * C + cg * 8, v);
      }
    }
    __syncthreads();  // the next tile overwrites sH, sZ
  }
}

// Column halves of the float32 backward's dh = gm P: at width 128 its four float32 tiles of 16 W rows would not fit
// in shared memory, so a tile has half the rows and each warp computes half the columns of 16 of them.
template <int C>
__host__ __device__ constexpr int tf32_backward_splits() {
  return C > 64 ? 2 : 1;
}
// Rows of a tile of the float32 projection backward.
template <int C>
__host__ __device__ constexpr int proj_backward_tf32_rows() {
  return C / tf32_backward_splits<C>();
}

// proj_backward_kernel's float32 twin: gm and gh exact float32 (as relu_grad_sum), dh = gm P and dP = gm^T h on
// TF32.  P is staged transposed (sPT[i][o] = P[o][i]) so that gm P reads it as the forward reads P.
template <int C>
__global__ void __launch_bounds__(2 * C) proj_backward_tf32_kernel(const GuideProjBwdArgs a) {
  constexpr int W = C / 16, T = 32 * W, LD = C + 4;
  constexpr int CS = tf32_backward_splits<C>(), TM = proj_backward_tf32_rows<C>(), NW = C / CS;
  constexpr int G = C / 8, RP = T / G;
  constexpr int S = 2 * C + C * C;
  static_assert(TM == 16 * W / CS && 2 * T * 8 <= TM * LD, "tile of the float32 projection backward");
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* sPT = reinterpret_cast<float*>(smem_raw);  // [C][LD], P^T in TF32
  float* sG = sPT + C * LD;                          // [TM][LD], gm in TF32
  float* sH = sG + TM * LD;                          // [TM][LD], h exact (the mask reads it)
  float* sD = sH + TM * LD;                          // [TM][LD], gh
  const float* g = static_cast<const float*>(a.g);
  const float* p = static_cast<const float*>(a.p);
  const float* y = static_cast<const float*>(a.y);
  const float* h = static_cast<const float*>(a.h);
  const float* P = static_cast<const float*>(a.P);
  float* gm_out = static_cast<float*>(a.gm);
  float* gh_out = static_cast<float*>(a.gh);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int cg = tid % G, r0 = tid / G;
  const int lg = lane >> 2, lt = lane & 3;

  for (int i = tid; i < C * C; i += T) sPT[(i % C) * LD + i / C] = __uint_as_float(tf32_bits(P[i]));
  float dc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, db[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  float dP[C / 8][4];
#pragma unroll
  for (int n = 0; n < C / 8; ++n) dP[n][0] = dP[n][1] = dP[n][2] = dP[n][3] = 0.f;

  const int64_t tiles = (a.M + TM - 1) / TM;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t base = t * TM;
    // 1. gm = (g (+ p)) * (y > 0), exact, out and into the sums; its TF32 copy and h to shared memory
    for (int r = r0; r < TM; r += RP) {
      const int64_t row = base + r;
      float v[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, vh[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      if (row < a.M) {
        const int64_t at = row * C + cg * 8;
        masked_grad(g, p, y, at, v);
        Vec8<float>::store(gm_out + at, v);
#pragma unroll
        for (int j = 0; j < 8; ++j) dc[j] += v[j];
        Vec8<float>::load(h + at, vh);
      }
      store_tf32(sG + r * LD + cg * 8, v);
      Vec8<float>::store(sH + r * LD + cg * 8, vh);
    }
    __syncthreads();
    // 2. dh = gm P, gh = dh * (h > 0): warp w computes rows 16 (w / CS) .. + 16, columns NW (w % CS) .. + NW
    {
      float acc[NW / 8][4];
      const int rw = (warp / CS) * 16, cw = (warp % CS) * NW;
      warp_tile_times_tf32<C, NW, LD>(acc, sG, sPT, rw, cw, lane);
      const int ra = rw + lg;
#pragma unroll
      for (int n = 0; n < NW / 8; ++n) {
        const int col = cw + n * 8 + 2 * lt;
#pragma unroll
        for (int half = 0; half < 2; ++half) {
          const int row = ra + 8 * half;
          const float2 hv = *reinterpret_cast<const float2*>(sH + row * LD + col);
          *reinterpret_cast<float2*>(sD + row * LD + col) =
              make_float2(hv.x > 0.f ? acc[n][2 * half] : 0.f, hv.y > 0.f ? acc[n][2 * half + 1] : 0.f);
        }
      }
    }
    __syncthreads();
    // 3. gh out and into the sums
    for (int r = r0; r < TM; r += RP) {
      const int64_t row = base + r;
      if (row < a.M) {
        float v[8];
        Vec8<float>::load(sD + r * LD + cg * 8, v);
        Vec8<float>::store(gh_out + row * C + cg * 8, v);
#pragma unroll
        for (int j = 0; j < 8; ++j) db[j] += v[j];
      }
    }
    // 4. dP += gm^T h: A[o][row] = gm[row][o] (TF32 already), B[row][i] = h[row][i] rounded here
#pragma unroll
    for (int k = 0; k < TM / 8; ++k) {
      const float* ga = sG + (k * 8 + lt) * LD + warp * 16 + lg;
      const uint32_t a0 = __float_as_uint(ga[0]), a1 = __float_as_uint(ga[8]);
      const uint32_t a2 = __float_as_uint(ga[4 * LD]), a3 = __float_as_uint(ga[4 * LD + 8]);
#pragma unroll
      for (int n = 0; n < C / 8; ++n) {
        const float* hb = sH + (k * 8 + lt) * LD + n * 8 + lg;
        mma_tf32(dP[n], a0, a1, a2, a3, tf32_bits(hb[0]), tf32_bits(hb[4 * LD]));
      }
    }
    __syncthreads();  // the next tile overwrites sG, sH, sD
  }

  float* part = a.partial + int64_t(blockIdx.x) * S;
  {
    const int ra = warp * 16 + lg;
#pragma unroll
    for (int n = 0; n < C / 8; ++n) {
      const int col = n * 8 + 2 * lt;
      *reinterpret_cast<float2*>(part + 2 * C + ra * C + col) = make_float2(dP[n][0], dP[n][1]);
      *reinterpret_cast<float2*>(part + 2 * C + (ra + 8) * C + col) = make_float2(dP[n][2], dP[n][3]);
    }
  }
  float* red = sG;  // (2 T, 8): the threads' gm sums, then their gh sums (2 T 8 <= TM LD floats)
#pragma unroll
  for (int j = 0; j < 8; ++j) red[tid * 8 + j] = dc[j], red[(T + tid) * 8 + j] = db[j];
  __syncthreads();
  if (tid < G) {
    float s[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, d[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int u = tid; u < T; u += G)
#pragma unroll
      for (int j = 0; j < 8; ++j) s[j] += red[u * 8 + j], d[j] += red[(T + u) * 8 + j];
#pragma unroll
    for (int j = 0; j < 8; ++j) part[cg * 8 + j] = s[j], part[C + cg * 8 + j] = d[j];
  }
}

template <int C>
constexpr size_t proj_forward_tf32_smem() {
  return sizeof(float) * size_t(3 * C) * (C + 4);
}
template <int C>
constexpr size_t proj_backward_tf32_smem() {
  return sizeof(float) * size_t(C + 3 * proj_backward_tf32_rows<C>()) * (C + 4);
}

// f(std::integral_constant<int, C>) for the projection kernels' widths, under guarded(); `what` names the kernel
// in the error for another width.
template <class F>
const char* dispatch_proj_width(int C, const char* what, F&& f) {
  return guarded([&] {
    switch (C) {
      case 32: return f(std::integral_constant<int, 32>{});
      case 64: return f(std::integral_constant<int, 64>{});
      case 128: return f(std::integral_constant<int, 128>{});
      default: throw std::invalid_argument(std::string(what) + ": C must be 32, 64 or 128");
    }
  });
}

// Threads a block: a whole number of rows, at most 256.
int block_threads(const GuideEltArgs& a) {
  const int groups = a.C / 8;
  return groups * std::max(1, 256 / groups);
}

}  // namespace

const char* guide_elementwise(const GuideEltArgs& a) {
  return guarded([&] {
    if (a.C < 8 || a.C % 8 != 0 || a.C > 2048) throw std::invalid_argument("guide elementwise: C must be a multiple of 8 in 8..2048");
    if (a.M < 0) throw std::invalid_argument("guide elementwise: bad sizes");
    if (a.M == 0) return;
    const int threads = block_threads(a);
    if (a.blocks < 1 || a.blocks > (1 << 20)) throw std::invalid_argument("guide elementwise: blocks must be in 1..2^20");
    const int blocks = a.blocks;
    if (a.op == GuideEltOp::kBiasRelu) {
      if (a.bf16)
        bias_relu_kernel<__nv_bfloat16><<<blocks, threads, 0, a.stream>>>(a);
      else
        bias_relu_kernel<float><<<blocks, threads, 0, a.stream>>>(a);
    } else {
      const size_t smem = size_t(threads) * 8 * sizeof(float);
      if (a.bf16)
        relu_grad_sum_kernel<__nv_bfloat16><<<blocks, threads, smem, a.stream>>>(a);
      else
        relu_grad_sum_kernel<float><<<blocks, threads, smem, a.stream>>>(a);
    }
    check_cuda(cudaGetLastError(), "guide elementwise launch");
  });
}

// f(kernel, shared memory bytes, rows a tile) of a projection kernel pair's width (32 / 64 / 128) and dtype
// (bfloat16, or float32 on TF32), under guarded(), through dispatch_proj_width.
// prologue: the forward kernel with the 3x3's bias_relu in front (GuideProjFwdArgs::h_bias).
template <bool kForward, class F>
const char* dispatch_proj(int C, bool f32, F&& f, bool prologue = false) {
  const char* what = kForward ? "guide projection forward" : "guide projection backward";
  return dispatch_proj_width(C, what, [&](auto width) {
    constexpr int W = decltype(width)::value;
    if constexpr (kForward) {
      if (!f32)
        return prologue ? f(proj_forward_kernel<W, true>, proj_forward_smem<W>(), W)
                        : f(proj_forward_kernel<W, false>, proj_forward_smem<W>(), W);
      return prologue ? f(proj_forward_tf32_kernel<W, true>, proj_forward_tf32_smem<W>(), W)
                      : f(proj_forward_tf32_kernel<W, false>, proj_forward_tf32_smem<W>(), W);
    } else {
      if (!f32) return f(proj_backward_kernel<W>, proj_backward_smem<W>(), W);
      return f(proj_backward_tf32_kernel<W>, proj_backward_tf32_smem<W>(), proj_backward_tf32_rows<W>());
    }
  });
}

const char* guide_proj_backward_blocks(int C, int64_t M, bool f32, int* blocks) {
  return dispatch_proj<false>(C, f32, [&](auto kernel, size_t smem, int rows) {
    if (M < 0) throw std::invalid_argument("guide projection backward: bad sizes");
    prepare_smem(kernel, smem, "guide projection backward");
    *blocks = persistent_blocks(kernel, 2 * C, smem, M, rows, 1);
  });
}

const char* guide_proj_backward(const GuideProjBwdArgs& a, bool f32) {
  return dispatch_proj<false>(a.C, f32, [&](auto kernel, size_t smem, int) {
    if (a.M < 0 || a.blocks < 1) throw std::invalid_argument("guide projection backward: bad sizes");
    prepare_smem(kernel, smem, "guide projection backward");
    kernel<<<a.blocks, 2 * a.C, smem, a.stream>>>(a);
    check_cuda(cudaGetLastError(), "guide projection backward launch");
  });
}

const char* guide_proj_forward(const GuideProjFwdArgs& a, bool f32) {
  return dispatch_proj<true>(a.C, f32, [&](auto kernel, size_t smem, int rows) {
    if (a.M < 0) throw std::invalid_argument("guide projection forward: bad sizes");
    if (a.M == 0) return;
    if ((a.h_bias == nullptr) != (a.h_out == nullptr))
      throw std::invalid_argument("guide projection forward: h_bias and h_out go together");
    prepare_smem(kernel, smem, "guide projection forward");
    const int blocks = persistent_blocks(kernel, 2 * a.C, smem, a.M, rows, 1);
    kernel<<<blocks, 2 * a.C, smem, a.stream>>>(a);
    check_cuda(cudaGetLastError(), "guide projection forward launch");
  }, a.h_bias != nullptr);
}

}  // namespace kpnt
