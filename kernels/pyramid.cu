// kpnt.ref.pyramid's down and up as one kernel each, and up's adjoint (the ops
// behind kpnt.ops._cuda.pyramid: down and up wherever no gradient flows through
// them, up with its adjoint as its backward where one does).  The reference builds each level from index
// selects (the mirror padding), strided views, and a multiply and an add per
// filter tap and axis: some twenty launches a level, each a pass over the
// level.  Here each output value is computed from its inputs directly.
//
// Bitwise the reference's result: the padding's fold tables are the
// reference's (passed in); the 5-tap filter runs rows first, then columns,
// each as ((((t0 b0 + t1 b1) + t2 b2) + t3 b3) + t4 b4) with every product
// and sum rounded on its own, the coefficients exact in float; up averages
// as 0.5 (c + next).  No fused multiply-add, which eager PyTorch never forms
// across its kernels.
#include "fused_mlp.cuh"
#include "mlp_core.cuh"

namespace kpnt {
namespace {

// [1 4 6 4 1] / 16, exact in float.
__constant__ float kB5[5] = {1.f / 16, 4.f / 16, 6.f / 16, 4.f / 16, 1.f / 16};

// One coarse value a thread (x fastest).  Output (i, j) of plane p reads the
// padded rows 2 i .. 2 i + 4 and columns 2 j .. 2 j + 4 through the folds.
__global__ void pyramid_down_kernel(const PyramidArgs a) {
  const int64_t total = a.planes * a.h * a.w;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int j = static_cast<int>(t % a.w), i = static_cast<int>((t / a.w) % a.h);
    const float* x = a.in + (t / (int64_t(a.w) * a.h)) * a.H * a.W;
    float out = 0.f;
#pragma unroll
    for (int kc = 0; kc < 5; ++kc) {
      const int64_t col = a.col_fold[2 * j + kc];
      // The row filter at this padded column (the reference's intermediate).
      float r = __fmul_rn(__ldg(x + a.row_fold[2 * i] * a.W + col), kB5[0]);
#pragma unroll
      for (int kr = 1; kr < 5; ++kr)
        r = __fadd_rn(r, __fmul_rn(__ldg(x + a.row_fold[2 * i + kr] * a.W + col), kB5[kr]));
      out = kc == 0 ? __fmul_rn(r, kB5[0]) : __fadd_rn(out, __fmul_rn(r, kB5[kc]));
    }
    a.out[t] = out;
  }
}

// The coarse level's value at fine position y along an axis of m coarse
// samples: even y copy sample y / 2, odd y average it with the next (the last
// sample repeated past the end).
struct UpTap {
  int i0, i1;
  bool odd;
  __device__ __forceinline__ UpTap(int y, int m) : i0(y >> 1), i1(min((y >> 1) + 1, m - 1)), odd(y & 1) {}
};

__global__ void pyramid_up_kernel(const PyramidArgs a) {
  const int64_t total = a.planes * a.H * a.W;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int X = static_cast<int>(t % a.W), Y = static_cast<int>((t / a.W) % a.H);
    const float* c = a.in + (t / (int64_t(a.W) * a.H)) * a.h * a.w;
    const UpTap ry(Y, a.h), rx(X, a.w);
    // Rows first (the reference's _up_axis over dim 2), at the two coarse columns the column step reads.
    auto row_value = [&](int col) {
      const float v0 = __ldg(c + int64_t(ry.i0) * a.w + col);
      return ry.odd ? __fmul_rn(0.5f, __fadd_rn(v0, __ldg(c + int64_t(ry.i1) * a.w + col))) : v0;
    };
    const float left = row_value(rx.i0);
    a.out[t] = rx.odd ? __fmul_rn(0.5f, __fadd_rn(left, row_value(rx.i1))) : left;
  }
}

// The adjoint of up (its backward, for training: session 33): the gradient of coarse sample (i, j) from the fine
// gradient g (planes, H, W).  Along an axis of m coarse samples, fine position 2 i copies sample i (weight 1),
// 2 i - 1 averages samples i - 1 and i (0.5), 2 i + 1 averages i and i + 1 (0.5), or, for the last sample, i
// with itself (1); positions past the fine size do not exist.  One coarse value a thread: the up to three fine
// rows, each summed over its up to three columns, then the rows summed, in that order (float32; a fixed order,
// not the reference backward's).
// The weight with which fine position 2 i + d (d in -1, 0, 1) reads coarse sample i of m along an axis of `fine`
// fine samples (0: it does not).
__device__ __forceinline__ float up_weight(int d, int i, int m, int fine) {
  if (d < 0) return i > 0 ? 0.5f : 0.f;
  if (d == 0) return 1.f;
  return 2 * i + 1 < fine ? (i + 1 < m ? 0.5f : 1.f) : 0.f;
}

__global__ void pyramid_up_adjoint_kernel(const PyramidArgs a) {
  const int64_t total = a.planes * a.h * a.w;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int j = static_cast<int>(t % a.w), i = static_cast<int>((t / a.w) % a.h);
    const float* g = a.in + (t / (int64_t(a.w) * a.h)) * a.H * a.W;
    float out = 0.f;
#pragma unroll
    for (int dy = -1; dy <= 1; ++dy) {
      const float wy = up_weight(dy, i, a.h, a.H);
      if (wy == 0.f) continue;
      const float* row = g + int64_t(2 * i + dy) * a.W;
      float s = 0.f;
#pragma unroll
      for (int dx = -1; dx <= 1; ++dx) {
        const float wx = up_weight(dx, j, a.w, a.W);
        if (wx != 0.f) s = __fadd_rn(s, __fmul_rn(wx, __ldg(row + 2 * j + dx)));
      }
      out = __fadd_rn(out, __fmul_rn(wy, s));
    }
    a.out[t] = out;
  }
}

void launch(void (*kernel)(PyramidArgs), int64_t total, const PyramidArgs& a, const char* what) {
  constexpr int threads = 256;
  const int64_t one_wave = int64_t(multiprocessors()) * 8;  // 2048 threads an SM: 8 blocks of 256
  const int blocks = static_cast<int>(std::min<int64_t>((total + threads - 1) / threads, one_wave));
  kernel<<<blocks, threads, 0, a.stream>>>(a);
  check_cuda(cudaGetLastError(), what);
}

}  // namespace

const char* pyramid_down(const PyramidArgs& a) {
  return guarded([&] {
    if (a.planes < 0 || a.H < 1 || a.W < 1 || a.h != (a.H + 1) / 2 || a.w != (a.W + 1) / 2)
      throw std::invalid_argument("pyramid down: bad sizes");
    if (a.planes * a.h * a.w > 0) launch(pyramid_down_kernel, a.planes * a.h * a.w, a, "pyramid down launch");
  });
}

const char* pyramid_up(const PyramidArgs& a) {
  return guarded([&] {
    if (a.planes < 0 || a.H < 1 || a.W < 1 || a.h != (a.H + 1) / 2 || a.w != (a.W + 1) / 2)
      throw std::invalid_argument("pyramid up: bad sizes");
    if (a.planes * a.H * a.W > 0) launch(pyramid_up_kernel, a.planes * a.H * a.W, a, "pyramid up launch");
  });
}

const char* pyramid_up_adjoint(const PyramidArgs& a) {
  return guarded([&] {
    if (a.planes < 0 || a.H < 1 || a.W < 1 || a.h != (a.H + 1) / 2 || a.w != (a.W + 1) / 2)
      throw std::invalid_argument("pyramid up adjoint: bad sizes");
    if (a.planes * a.h * a.w > 0)
      launch(pyramid_up_adjoint_kernel, a.planes * a.h * a.w, a, "pyramid up adjoint launch");
  });
}

}  // namespace kpnt
