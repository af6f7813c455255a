// kpnt.ref.up_block.up_block as one kernel, and its adjoint (the op behind
// kpnt.ops._cuda.up_block; the adjoint is its backward in training).  The reference runs each axis as two gathers,
// two multiplies, a subtraction and an add over full-resolution tensors;
// twice a 24-MP forward (U and S) that is ~20 passes over 288 MB each.  Here
// every output value is read from the small colour base and written once.
//
// Bitwise the reference's result: the same index and weight tables (built by
// kpnt.ref.up_block._up_block_axis and passed in), the same operations in the
// same order, each rounded on its own (__fmul_rn / __fadd_rn / __fsub_rn: no
// fused multiply-add, which eager PyTorch never forms across its kernels).
#include "fused_mlp.cuh"
#include "mlp_core.cuh"

namespace kpnt {
namespace {

// One output value a thread, x fastest (coalesced stores; the reads hit a
// colour base 1/b^2 the size, mostly from cache).
__global__ void up_block_kernel(const UpBlockArgs a) {
  const int64_t total = a.N * 3 * a.H * a.W;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t X = i % a.W, Y = (i / a.W) % a.H, nc = i / (a.W * a.H), c = nc % 3;
    const int64_t r0 = a.row_i0[c * a.H + Y], r1 = a.row_i1[c * a.H + Y];
    const int64_t c0 = a.col_i0[c * a.W + X], c1 = a.col_i1[c * a.W + X];
    const float fy = a.row_f[c * a.H + Y], fx = a.col_f[c * a.W + X];
    const float* o = a.o + nc * a.h * a.w;
    // Rows first (the reference's _interp over dim 2): v * (1 - f) + v' * f.
    const float gy = __fsub_rn(1.f, fy), gx = __fsub_rn(1.f, fx);
    const float left = __fadd_rn(__fmul_rn(__ldg(o + r0 * a.w + c0), gy), __fmul_rn(__ldg(o + r1 * a.w + c0), fy));
    const float right = __fadd_rn(__fmul_rn(__ldg(o + r0 * a.w + c1), gy), __fmul_rn(__ldg(o + r1 * a.w + c1), fy));
    // Then columns (dim 3).
    a.out[i] = __fadd_rn(__fmul_rn(left, gx), __fmul_rn(right, fx));
  }
}

// The same values by columns (session 27, written after the last GPU call, not
// yet run; kpnt launches up_block_kernel until it is measured): a thread owns
// one output column X of one channel (blockIdx.z), reads its column entries
// once and walks rows blockIdx.y, blockIdx.y + gridDim.y, ... of every image,
// so no output pays an index division or the column tables' reads; a row's
// entries are the same for the whole block (broadcast loads).  The flat
// kernel took 0.54 ms a 24-MP call on an H100 (session 27) for ~290 MB of
// stores, ~5x what the stores alone need.
__global__ void up_block_columns_kernel(const UpBlockArgs a) {
  const int64_t c = blockIdx.z, X = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (X >= a.W) return;  // no barriers below
  const int64_t c0 = a.col_i0[c * a.W + X], c1 = a.col_i1[c * a.W + X];
  const float fx = a.col_f[c * a.W + X], gx = __fsub_rn(1.f, fx);
  for (int64_t n = 0; n < a.N; ++n) {
    const float* o = a.o + (n * 3 + c) * a.h * a.w;
    float* out = a.out + (n * 3 + c) * a.H * a.W + X;
    for (int64_t Y = blockIdx.y; Y < a.H; Y += gridDim.y) {
      const int64_t r0 = a.row_i0[c * a.H + Y], r1 = a.row_i1[c * a.H + Y];
      const float fy = a.row_f[c * a.H + Y], gy = __fsub_rn(1.f, fy);
      const float left = __fadd_rn(__fmul_rn(__ldg(o + r0 * a.w + c0), gy), __fmul_rn(__ldg(o + r1 * a.w + c0), fy));
      const float right = __fadd_rn(__fmul_rn(__ldg(o + r0 * a.w + c1), gy), __fmul_rn(__ldg(o + r1 * a.w + c1), fy));
      out[Y * a.W] = __fadd_rn(__fmul_rn(left, gx), __fmul_rn(right, fx));
    }
  }
}

// The weight with which fine sample Y (of an axis's table row t: i0, i1, f) reads coarse sample i: (1 - f) where
// i0 is i, f where i1 is i, both where both are (the clamped border).
__device__ __forceinline__ float up_block_weight(const int64_t* i0, const int64_t* i1, const float* f, int64_t Y,
                                                 int64_t i) {
  float w = 0.f;
  if (i0[Y] == i) w = __fsub_rn(1.f, f[Y]);
  if (i1[Y] == i) w = __fadd_rn(w, f[Y]);
  return w;
}

// The adjoint of up_block (its backward, for training: session 33): a.o is the fine gradient (N, 3, H, W), a.out
// the coarse one (N, 3, h, w).  Fine sample Y of an axis reads coarse samples floor((Y - centroid) / b) and the
// next, clamped, so coarse sample i is read only by Y in [b (i - 1), b (i + 2)): one coarse value a thread sums
// that window's rows, each over its columns, with the tables' weights (float32, a fixed order; the reference's
// backward scatters instead).
__global__ void up_block_adjoint_kernel(const UpBlockArgs a) {
  const int64_t b = a.H / a.h, total = a.N * 3 * a.h * a.w;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t j = t % a.w, i = (t / a.w) % a.h, nc = t / (a.w * a.h), c = nc % 3;
    const float* g = a.o + nc * a.H * a.W;
    const int64_t* ri0 = a.row_i0 + c * a.H;
    const int64_t* ri1 = a.row_i1 + c * a.H;
    const float* rf = a.row_f + c * a.H;
    const int64_t* ci0 = a.col_i0 + c * a.W;
    const int64_t* ci1 = a.col_i1 + c * a.W;
    const float* cf = a.col_f + c * a.W;
    const int64_t Y0 = max(int64_t(0), b * (i - 1)), Y1 = min(a.H, b * (i + 2));
    const int64_t X0 = max(int64_t(0), b * (j - 1)), X1 = min(a.W, b * (j + 2));
    float out = 0.f;
    for (int64_t Y = Y0; Y < Y1; ++Y) {
      const float wy = up_block_weight(ri0, ri1, rf, Y, i);
      if (wy == 0.f) continue;
      float s = 0.f;
      for (int64_t X = X0; X < X1; ++X) {
        const float wx = up_block_weight(ci0, ci1, cf, X, j);
        if (wx != 0.f) s = __fadd_rn(s, __fmul_rn(wx, __ldg(g + Y * a.W + X)));
      }
      out = __fadd_rn(out, __fmul_rn(wy, s));
    }
    a.out[t] = out;
  }
}

}  // namespace

const char* up_block_adjoint(const UpBlockArgs& a) {
  return guarded([&] {
    if (a.N < 0 || a.h < 1 || a.w < 1 || a.H < a.h || a.W < a.w || a.H % a.h != 0 || a.W % a.w != 0 ||
        a.H / a.h != a.W / a.w)
      throw std::invalid_argument("up_block adjoint: the fine size must be the coarse one times the block");
    const int64_t total = a.N * 3 * a.h * a.w;
    if (total == 0) return;
    constexpr int threads = 256;
    const int64_t one_wave = int64_t(multiprocessors()) * 8;
    const int blocks = static_cast<int>(std::min<int64_t>((total + threads - 1) / threads, one_wave));
    up_block_adjoint_kernel<<<blocks, threads, 0, a.stream>>>(a);
    check_cuda(cudaGetLastError(), "up_block adjoint launch");
  });
}

const char* up_block_forward(const UpBlockArgs& a) {
  return guarded([&] {
    if (a.N < 0 || a.h < 1 || a.w < 1 || a.H < 1 || a.W < 1)
      throw std::invalid_argument("up_block: sizes must be positive");
    const int64_t total = a.N * 3 * a.H * a.W;
    if (total == 0) return;
    constexpr int threads = 256;
    const int64_t resident = int64_t(multiprocessors()) * 16;  // the flat kernel's grid (measured with it)
    if (a.kernel == UpBlockKernel::kColumns) {
      // One wave: 2048 threads an SM on sm_80 and sm_90 are 8 blocks of 256.
      const int64_t bx = (a.W + threads - 1) / threads, one_wave = int64_t(multiprocessors()) * 8;
      const int64_t by = std::min<int64_t>({a.H, 65535, std::max<int64_t>(1, one_wave / (3 * bx))});
      up_block_columns_kernel<<<dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by), 3), threads, 0,
                                a.stream>>>(a);
    } else {
      const int blocks = static_cast<int>(std::min<int64_t>((total + threads - 1) / threads, resident));
      up_block_kernel<<<blocks, threads, 0, a.stream>>>(a);
    }
    check_cuda(cudaGetLastError(), "up_block launch");
  });
}

}  // namespace kpnt
