// kpnt.ref.guide.finish as one kernel (GPU inference; the op behind
// kpnt.ops._cuda.guide_finish): U + crop(pixel_shuffle(float(r) * s, Q)).
// The reference converts the network's float16 output to float32, scales it,
// shuffles it to full resolution and adds it to U: four passes over 300-MB
// tensors at 24 MP.  Here each output value reads its network value, its s
// and U once.  Bitwise the reference's result: float16 to float32 is exact,
// then one rounded multiply and one rounded add (no fused multiply-add), as
// eager PyTorch's separate kernels compute them.
#include "fused_mlp.cuh"
#include "mlp_core.cuh"

namespace kpnt {
namespace {

template <typename T>
__device__ __forceinline__ float as_float(T v) { return static_cast<float>(v); }
template <>
__device__ __forceinline__ float as_float<__half>(__half v) { return __half2float(v); }

// A thread a column X of one channel plane (blockIdx.z = n * 3 + c), walking
// rows blockIdx.y, blockIdx.y + gridDim.y, ...: the column's shuffle phase and
// source column are fixed, a row's are the same for the whole block.  Sizes
// fit in int (the binding checks), memory offsets are int64.
template <typename T>
__global__ void guide_finish_kernel(const GuideFinishArgs a) {
  const int X = blockIdx.x * blockDim.x + threadIdx.x;
  if (X >= a.W) return;  // no barriers below
  const T* r = static_cast<const T*>(a.r);
  const int nc = blockIdx.z, n = nc / 3, c = nc - 3 * n;
  const int xx = X + a.left, w_src = xx / a.Q, jx = xx - w_src * a.Q;
  const T* r_col = r + n * a.r_stride[0] + int64_t(c * a.Q * a.Q + jx) * a.r_stride[1] + w_src * a.r_stride[3];
  const float* s_col = a.s + n * a.s_stride[0] + w_src * a.s_stride[3];
  const float* U = a.U + int64_t(nc) * a.H * a.W + X;
  float* out = a.out + int64_t(nc) * a.H * a.W + X;
  for (int Y = blockIdx.y; Y < a.H; Y += gridDim.y) {
    const int yy = Y + a.top, h_src = yy / a.Q, iy = yy - h_src * a.Q;
    const float v = as_float(r_col[int64_t(iy * a.Q) * a.r_stride[1] + h_src * a.r_stride[2]]);
    const float sv = s_col[h_src * a.s_stride[2]];
    out[int64_t(Y) * a.W] = __fadd_rn(__ldg(U + int64_t(Y) * a.W), __fmul_rn(v, sv));
  }
}

}  // namespace

const char* guide_finish(const GuideFinishArgs& a) {
  return guarded([&] {
    if (a.N < 0 || a.H < 0 || a.W < 0 || a.Q < 1) throw std::invalid_argument("guide finish: bad sizes");
    if (int64_t(a.N) * a.H * a.W == 0) return;
    constexpr int threads = 256;
    // One wave: 2048 threads an SM on sm_80 and sm_90 are 8 blocks of 256.
    const int64_t bx = (a.W + threads - 1) / threads, one_wave = int64_t(multiprocessors()) * 8;
    const int64_t by = std::min<int64_t>({int64_t(a.H), 65535, std::max<int64_t>(1, one_wave / (bx * 3 * a.N))});
    const dim3 grid(static_cast<unsigned>(bx), static_cast<unsigned>(by), static_cast<unsigned>(3 * a.N));
    if (a.r_half)
      guide_finish_kernel<__half><<<grid, threads, 0, a.stream>>>(a);
    else
      guide_finish_kernel<float><<<grid, threads, 0, a.stream>>>(a);
    check_cuda(cudaGetLastError(), "guide finish launch");
  });
}

}  // namespace kpnt
