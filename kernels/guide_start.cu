// kpnt.ref.guide.start as one kernel (GPU inference; the op behind
// kpnt.ops._cuda.guide_start): the guide network's input z, float16
// channels-last, and the brightness s, from the mosaic x and the smooth
// estimate U.  The reference gathers, pads and unshuffles the details, pads U
// and pools it, then divides, concatenates and converts: some ten passes at
// full or packed resolution.  Here one thread a packed position reads its
// Q x Q window of x and U once and writes its Q^2 + 4 inputs and s.
//
// The reference's arithmetic, in its order, each operation rounded on its
// own: the pooled sum row by row and divided by Q^2 (avg_pool2d's CUDA
// kernel), the channel mean as (c0 + c1) + c2 times the mean factor the host
// passes (PyTorch's reduction), the divisions as divisions, a division by a
// Python number as a multiplication by its reciprocal (PyTorch's CUDA
// division by a scalar), clamps that keep NaN, float16 by round-to-nearest.
// The noise feature's logf is the CUDA maths library's, as torch.log's: the
// two agree bit for bit where the nvcc that builds kpnt ships the same logf
// as the CUDA that built PyTorch (the GPU machine's: both 13.0).  An image of
// one packed position is left to the reference (kpnt/ops/_cuda/guide_start.py).
#include "fused_mlp.cuh"
#include "mlp_core.cuh"

#include <cuda_fp16.h>

namespace kpnt {
namespace {

__device__ __forceinline__ float clamp_min0(float v) { return v != v ? v : fmaxf(v, 0.f); }

__global__ void guide_start_kernel(const GuideStartArgs a) {
  const int64_t total = int64_t(a.N) * a.h * a.w;
  const int C = a.Q * a.Q + 4;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int ww = static_cast<int>(i % a.w), hh = static_cast<int>((i / a.w) % a.h);
    const int n = static_cast<int>(i / (int64_t(a.w) * a.h));
    const float* x = a.x + int64_t(n) * a.H * a.W;
    const float* U = a.U + int64_t(n) * 3 * a.H * a.W;
    const int64_t plane = int64_t(a.H) * a.W;
    // The pooled window of the edge-padded U, row by row (avg_pool2d's order).
    float sum[3] = {0.f, 0.f, 0.f};
    for (int dy = 0; dy < a.Q; ++dy) {
      const int y = min(max(hh * a.Q + dy - a.top, 0), a.H - 1);
      for (int dx = 0; dx < a.Q; ++dx) {
        const int xx = min(max(ww * a.Q + dx - a.left, 0), a.W - 1);
#pragma unroll
        for (int c = 0; c < 3; ++c) sum[c] = __fadd_rn(sum[c], __ldg(U + c * plane + int64_t(y) * a.W + xx));
      }
    }
    const float pool = static_cast<float>(a.Q * a.Q);
    float smooth[3];
#pragma unroll
    for (int c = 0; c < 3; ++c) smooth[c] = __fdiv_rn(sum[c], pool);
    const float mean = __fmul_rn(__fadd_rn(__fadd_rn(smooth[0], smooth[1]), smooth[2]), a.mean_factor);
    const float s = __fadd_rn(clamp_min0(mean), a.brightness_floor);
    const float var = clamp_min0(__fadd_rn(__fmul_rn(a.a[n], s), a.b[n]));
    float nf = logf(__fadd_rn(__fdiv_rn(__fsqrt_rn(var), s), a.sigma_floor));
    if (a.skip) nf = __fmul_rn(__fsub_rn(nf, a.feature_centre), a.inv_feature_scale);
    __half* z = static_cast<__half*>(a.z) + i * C;  // channels-last: a position's C inputs are contiguous
    // The packed details: d = x - U[colour], 0 in the zero padding.
    for (int dy = 0; dy < a.Q; ++dy) {
      const int y = hh * a.Q + dy - a.top;
      for (int dx = 0; dx < a.Q; ++dx) {
        const int xx = ww * a.Q + dx - a.left;
        float d = 0.f;
        if (y >= 0 && y < a.H && xx >= 0 && xx < a.W) {
          const int colour = a.pattern[(y % a.P) * a.P + xx % a.P];
          d = __fsub_rn(__ldg(x + int64_t(y) * a.W + xx), __ldg(U + colour * plane + int64_t(y) * a.W + xx));
        }
        z[dy * a.Q + dx] = __float2half_rn(__fdiv_rn(d, s));
      }
    }
#pragma unroll
    for (int c = 0; c < 3; ++c) z[a.Q * a.Q + c] = __float2half_rn(__fdiv_rn(smooth[c], s));
    z[a.Q * a.Q + 3] = __float2half_rn(nf);
    a.s[i] = s;
  }
}

}  // namespace

const char* guide_start(const GuideStartArgs& a) {
  return guarded([&] {
    if (a.N < 0 || a.H < 1 || a.W < 1 || a.Q < 1 || a.P < 1) throw std::invalid_argument("guide start: bad sizes");
    const int64_t total = int64_t(a.N) * a.h * a.w;
    if (total == 0) return;
    constexpr int threads = 128;
    const int64_t resident = int64_t(multiprocessors()) * 16;  // 2048 threads an SM: 16 blocks of 128
    const int blocks = static_cast<int>(std::min<int64_t>((total + threads - 1) / threads, resident));
    guide_start_kernel<<<blocks, threads, 0, a.stream>>>(a);
    check_cuda(cudaGetLastError(), "guide start launch");
  });
}

}  // namespace kpnt
