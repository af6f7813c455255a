// The graphed training step's update (kpnt.ops._cuda.train_update, used by
// kpnt.train.graph_step.GraphedStep): the finite check, the global
// gradient-norm clip and Adam, with the masked commit built in.
//
// PyTorch's path in the captured step is a concatenation of every gradient
// for the finite test, clip_grad_norm_ (per-tensor norms, their norm, a
// multiply of every gradient), a backup of every parameter and Adam state
// (one concatenation), the fused Adam, and the commit (a second
// concatenation, a where, a split copy back).  Its multi-tensor kernels give
// a launch at most 36 tensors and a block 65536 elements, so on the shipped
// X-Trans model (2.6 M parameters in 86 tensors) a launch ran ~35 blocks on
// a 132-SM GPU: ~0.5 ms of the graphed step went there (session 35's
// breakdown).  Here:
//   stats:    per block of 4096 gradient elements, the sum of squares and a
//             non-finite flag (tables of up to kUpdateTableSize tensors);
//   finalize: one block adds the blocks' rows in a fixed order (float64) and
//             writes [clip coefficient, applied]: applied = 1 when the loss
//             and every gradient are finite;
//   adam:     when applied, Adam (PyTorch's formula, weight decay L2-style)
//             on the clipped gradients, in place; otherwise nothing is
//             written, which is the masked commit without a backup;
//   advance:  when applied, every tensor's step count + 1 (after adam, which
//             read the old count: no block may see another's increment).
// Every reduction has a fixed order, so a rerun gives the same bits.
#include <cmath>

#include "fused_mlp.cuh"
#include "mlp_core.cuh"

namespace kpnt {
namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = 16;
constexpr int kChunk = kThreads * kPerThread;  // elements a block

// The tensor a block works on (the last i with chunk_start[i] <= block) and its chunk index there.
__device__ __forceinline__ int tensor_of(const UpdateTable& tab, int block, int* chunk) {
  int lo = 0, hi = tab.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (tab.chunk_start[mid] <= block) lo = mid;
    else hi = mid - 1;
  }
  *chunk = block - tab.chunk_start[lo];
  return lo;
}

// Sum over the block of one float and one int per thread, in a fixed order; thread 0 gets the totals.
__device__ __forceinline__ void block_sum(float& s, int& bad) {
  __shared__ float ss[kThreads / 32];
  __shared__ int sb[kThreads / 32];
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    s += __shfl_down_sync(0xffffffffu, s, o);
    bad |= __shfl_down_sync(0xffffffffu, bad, o);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) ss[warp] = s, sb[warp] = bad;
  __syncthreads();
  if (threadIdx.x == 0) {
    s = 0.f, bad = 0;
    for (int w = 0; w < kThreads / 32; ++w) s += ss[w], bad |= sb[w];
  }
}

__global__ void __launch_bounds__(kThreads) stats_kernel(const __grid_constant__ UpdateTable tab, float* partial) {
  int chunk;
  const UpdateTensor& t = tab.t[tensor_of(tab, blockIdx.x, &chunk)];
  const int64_t begin = int64_t(chunk) * kChunk, end = min(t.n, begin + kChunk);
  float s = 0.f;
  int bad = 0;
#pragma unroll 4
  for (int64_t k = begin + threadIdx.x; k < end; k += kThreads) {
    const float g = t.g[k];
    s = fmaf(g, g, s);
    bad |= !isfinite(g);
  }
  block_sum(s, bad);
  if (threadIdx.x == 0) {
    partial[2 * blockIdx.x] = s;
    partial[2 * blockIdx.x + 1] = bad ? 1.f : 0.f;
  }
}

__global__ void __launch_bounds__(kThreads) finalize_kernel(const float* partial, int rows, const float* loss,
                                                             float clip, float* state) {
  __shared__ double ss[kThreads];
  __shared__ int sb[kThreads];
  double s = 0.0;
  int bad = 0;
  for (int r = threadIdx.x; r < rows; r += kThreads) {
    s += double(partial[2 * r]);
    bad |= partial[2 * r + 1] != 0.f;
  }
  ss[threadIdx.x] = s, sb[threadIdx.x] = bad;
  __syncthreads();
  if (threadIdx.x != 0) return;
  for (int k = 1; k < kThreads; ++k) s += ss[k], bad |= sb[k];
  // clip_grad_norm_'s coefficient in float32: max_norm / (norm + 1e-6), at most 1 (an infinite norm gives 0).
  const float norm = static_cast<float>(sqrt(s));
  const float coef = clip > 0.f ? fminf(clip / (norm + 1e-6f), 1.f) : 1.f;
  state[0] = coef;
  state[1] = (isfinite(*loss) && !bad) ? 1.f : 0.f;
}

__global__ void __launch_bounds__(kThreads) adam_kernel(const __grid_constant__ UpdateTable tab, const float* state, const float* lr,
                                                         UpdateHyper hp) {
  if (state[1] == 0.f) return;
  int chunk;
  const UpdateTensor& t = tab.t[tensor_of(tab, blockIdx.x, &chunk)];
  const float coef = state[0];
  // torch.optim.Adam's capturable arithmetic in float32: the bias corrections of step s = count + 1.
  const float s = *t.step + 1.f;
  const float bc1 = 1.f - powf(hp.beta1, s), bc2 = 1.f - powf(hp.beta2, s);
  const float step_size = *lr / bc1, bc2_sqrt = sqrtf(bc2);
  const int64_t begin = int64_t(chunk) * kChunk, end = min(t.n, begin + kChunk);
#pragma unroll 4
  for (int64_t k = begin + threadIdx.x; k < end; k += kThreads) {
    float g = t.g[k] * coef;
    float p = t.p[k];
    if (hp.weight_decay != 0.f) g = fmaf(hp.weight_decay, p, g);
    const float m = hp.beta1 * t.m[k] + (1.f - hp.beta1) * g;
    const float v = hp.beta2 * t.v[k] + (1.f - hp.beta2) * g * g;
    const float denom = sqrtf(v) / bc2_sqrt + hp.eps;
    p -= step_size * m / denom;
    t.m[k] = m, t.v[k] = v, t.p[k] = p;
  }
}

__global__ void advance_kernel(const __grid_constant__ UpdateTable tab, const float* state) {
  if (state[1] == 0.f) return;
  for (int i = threadIdx.x; i < tab.count; i += blockDim.x) *tab.t[i].step += 1.f;
}

}  // namespace

int update_chunks(int64_t n) { return static_cast<int>((n + kChunk - 1) / kChunk); }

const char* update_stats(const UpdateTable& tab, float* partial, cudaStream_t stream) {
  return guarded([&] {
    const int blocks = tab.chunk_start[tab.count];
    if (blocks == 0) return;
    stats_kernel<<<blocks, kThreads, 0, stream>>>(tab, partial);
    check_cuda(cudaGetLastError(), "train update: gradient statistics launch");
  });
}

const char* update_finalize(const float* partial, int rows, const float* loss, float clip, float* state,
                            cudaStream_t stream) {
  return guarded([&] {
    finalize_kernel<<<1, kThreads, 0, stream>>>(partial, rows, loss, clip, state);
    check_cuda(cudaGetLastError(), "train update: finalize launch");
  });
}

const char* update_adam(const UpdateTable& tab, const float* state, const float* lr, const UpdateHyper& hp,
                        cudaStream_t stream) {
  return guarded([&] {
    const int blocks = tab.chunk_start[tab.count];
    if (blocks == 0) return;
    adam_kernel<<<blocks, kThreads, 0, stream>>>(tab, state, lr, hp);
    check_cuda(cudaGetLastError(), "train update: Adam launch");
    advance_kernel<<<1, 64, 0, stream>>>(tab, state);
    check_cuda(cudaGetLastError(), "train update: step-count launch");
  });
}

}  // namespace kpnt
