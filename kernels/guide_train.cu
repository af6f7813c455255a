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
// Arithmetic in float32, one rounding to the storage type per stored value; the
// channel sums add the stored (rounded) values, in a fixed order (a block's rows
// in its threads, then the threads in order; the caller adds the blocks' rows),
// so a rerun gives the same bits.
#include <cuda_bf16.h>

#include "fused_mlp.cuh"
#include "mlp_core.cuh"

namespace kpnt {
namespace {

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
    uint4 u;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
      const float2 f = __bfloat1622float2(h[k]);
      v[2 * k] = f.x, v[2 * k + 1] = f.y;
    }
    *reinterpret_cast<uint4*>(p) = u;
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

}  // namespace kpnt
