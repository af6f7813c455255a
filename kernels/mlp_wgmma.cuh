// The MLP forward on Hopper's warp-group MMA (issue 14: "a faster MLP core on
// sm_90"): the twin of mlp_fwd_kernel (kernels/mlp_core.cuh) for width-64
// shapes, with the same input and output policies, groups and row order.
// tools/wgmma_probe chose its form (session 23, H100, 4 M rows, checked
// against float64): 2 warp groups a block, each on its own 64-row tile, the
// colour MLP 32 -> 6 x 64 -> 16 at 9.47 Gpix/s against mma.sync's 7.88, the
// front MLP 32 -> 4 x 64 -> 32 at 9.73 against 9.78 (no gain there).
//
// Each warp of a group holds 16 rows in the mma.sync fragment layout, which is
// also wgmma's register layout for A and the accumulators per warp: a layer's
// result becomes the next layer's A in registers (to_frags / lrelu_frags, as
// the mma.sync kernel), and the policies' load / store see R = 1 row block a
// warp.  The weights sit in shared memory in the core-matrix layout
// (kernels/wgmma.cuh) and the tensor cores read them through descriptors: no
// ldmatrix.  One commit group a layer, waited on before the activation: the
// other warp group of the block and the other blocks of the multiprocessor
// cover the waits.
//
// sm_90a code only (KPNT_WGMMA_BUILT, kernels/wgmma.cuh): elsewhere the kernel
// body is a trap and the binding refuses to launch it.
#pragma once

#include "mlp_core.cuh"
#include "wgmma.cuh"

namespace kpnt {
namespace {

// Three blocks an SM, as the probe measured (its kernel took 74 registers): the colour level's instantiation,
// whose gather and kernel-application policies took 120 registers unbounded (2 blocks), fits 74 without spills
// under this bound (ptxas, session 26), and its memory-latency-bound policies want the warps.
// Width 128: the weights take 136-176 KB of shared memory, one block an SM.
template <class C>
struct WgFwd {
  static constexpr int WGS = 2, THREADS = 128 * WGS, T = 64 * WGS;  // warp groups, threads and rows a block
  static constexpr int MIN_BLOCKS = C::H >= 128 ? 1 : 3;
  // Byte offset of matrix m in shared memory: the packed offset, in bytes (the core-matrix layout has no padding).
  __host__ __device__ static constexpr int base(int m) { return 2 * C::woff(m); }
  static constexpr size_t SMEM = 2 * size_t(C::NW);
};

// One packed weight set (matrix m row-major (rows(m), cols(m)), back to back)
// into the core-matrix layout, 16 bytes a thread: 8 consecutive k of one row
// are one 16-byte row of a core matrix (cols(m) is a multiple of 16).
template <class C>
__device__ __forceinline__ void load_weights_core(unsigned char* ws, const __half* __restrict__ w) {
  for (int e = threadIdx.x * 8; e < C::NW; e += blockDim.x * 8) {
    int m = 0;
#pragma unroll
    for (int j = 1; j < C::NMAT; ++j)
      if (e >= C::woff(j)) m = j;
    const int local = e - C::woff(m), n = local / C::cols(m), k = local % C::cols(m);
    *reinterpret_cast<uint4*>(ws + WgFwd<C>::base(m) + wg::core_off(n, k, C::cols(m))) =
        __ldg(reinterpret_cast<const uint4*>(w + e));
  }
}

// acc (the warp group's 64 rows x rows(m)) = a (cols(m)) W_m^T: cols(m) / 16
// wgmmas in one commit group, waited on.  SWAP reads the descriptor's two
// offsets the other way (tools/wgmma_probe's layout check; kpnt uses false).
template <class C, int m, bool SWAP = false>
__device__ __forceinline__ void wg_layer(float (&acc)[C::rows(m) / 8][4], uint32_t (&a)[C::cols(m) / 16][4],
                                         const unsigned char* ws) {
  constexpr int N = C::rows(m), K = C::cols(m);
  const uint32_t field = wg::smem_field(ws);  // one conversion for all layers: the compiler hoists it
  constexpr int base = WgFwd<C>::base(m);
  wg::wg_fence();
  wg::Wgmma<N>::first(acc, a[0], wg::desc_at(field, base, 128, (K / 8) * 128, SWAP));
#pragma unroll
  for (int ks = 1; ks < K / 16; ++ks)
    wg::Wgmma<N>::acc(acc, a[ks], wg::desc_at(field, base + 2 * ks * 128, 128, (K / 8) * 128, SWAP));
  wg::wg_commit();
  wg::wg_wait0();
  wg::fence_operands<N / 8>(acc);
  wg::fence_operands<K / 16>(a);
}

// What wg_hidden_layers does with each layer's activations besides going on: nothing (inference).
struct NoLayerHook {
  template <class A>
  __device__ __forceinline__ void operator()(int, const A&) const {}
};

// Hidden layers m .. NH - 1 in place on the activations' A fragments;
// hook(layer, A_{layer+1}) after each (the storing forward stores them).
template <class C, int m, bool SWAP = false, class Hook = NoLayerHook>
__device__ __forceinline__ void wg_hidden_layers(uint32_t (&ah)[C::H / 16][4], const unsigned char* ws, float slope,
                                                 const Hook& hook = Hook{}) {
  if constexpr (m < C::NH) {
    float acc[C::H / 8][4];
    wg_layer<C, m, SWAP>(acc, ah, ws);
    lrelu_frags<C::H>(ah, acc, slope);
    hook(m, ah);
    wg_hidden_layers<C, m + 1, SWAP>(ah, ws, slope, hook);
  }
}

// The whole MLP for one 16-row block of each warp: policies as mlp_fwd_kernel's.
template <class C, class In, class Out, bool SWAP = false>
__device__ __forceinline__ void wg_mlp_rows(const In& in, const Out& sink, const unsigned char* ws,
                                            const int64_t (&rlo)[1], const int64_t (&rhi)[1], int lane, float slope) {
  uint32_t ax[1][C::IN / 16][4];
  in.template load<C::IN, 1>(ax, rlo, rhi, lane);
  uint32_t ah[C::H / 16][4];
  {
    float acc[C::H / 8][4];
    wg_layer<C, 0, SWAP>(acc, ax[0], ws);
    lrelu_frags<C::H>(ah, acc, slope);
  }
  wg_hidden_layers<C, 1, SWAP>(ah, ws, slope);
  float out[1][C::OUT / 8][4];
  wg_layer<C, C::NH, SWAP>(out[0], ah, ws);
  sink.template store<C::OUT, 1>(out, rlo, rhi, lane);
}

template <class C, class In, class Out>
__global__ void __launch_bounds__(WgFwd<C>::THREADS, WgFwd<C>::MIN_BLOCKS)
    mlp_fwd_wgmma_kernel(const In in, const Out sink, const __half* __restrict__ w, const int32_t* __restrict__ perm,
                         const int32_t* __restrict__ offsets, int64_t P, float slope) {
#if KPNT_WGMMA_BUILT
  extern __shared__ __align__(128) unsigned char ws[];
  const int g = blockIdx.y;
  load_weights_core<C>(ws, w + static_cast<int64_t>(g) * C::NW);
  wg::fence_async_smem();  // the weights' ordinary stores, seen by the tensor cores' reads
  __syncthreads();

  const int64_t begin = offsets ? offsets[g] : 0;
  const int64_t end = offsets ? offsets[g + 1] : P;
  const int warp = (threadIdx.x >> 5) & 3, group = threadIdx.x >> 7, lane = threadIdx.x & 31;
  constexpr int TILE = WgFwd<C>::T;
  // The loop's bounds are the block's, so every warp of a group issues its wgmmas together.
  for (int64_t base = begin + static_cast<int64_t>(blockIdx.x) * TILE; base < end;
       base += static_cast<int64_t>(gridDim.x) * TILE) {
    const int64_t l = base + 64 * group + 16 * warp + (lane >> 2);
    const int64_t rlo[1] = {mem_row(l, end, perm)}, rhi[1] = {mem_row(l + 8, end, perm)};
    wg_mlp_rows<C>(in, sink, ws, rlo, rhi, lane, slope);
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // not sm_90a code: the binding never launches it here
#endif
}

template <class C, class In, class Out>
void launch_forward_wgmma(const MlpArgs& a, const In& in, const Out& out) {
  using W = WgFwd<C>;
  auto kernel = mlp_fwd_wgmma_kernel<C, In, Out>;
  prepare_smem(kernel, W::SMEM, "forward (wgmma)");
  const int bx = persistent_blocks(kernel, W::THREADS, W::SMEM, a.P, W::T, a.groups);
  kernel<<<dim3(bx, a.groups), W::THREADS, W::SMEM, a.stream>>>(in, out, static_cast<const __half*>(a.w), a.perm,
                                                                  a.offsets, a.P, a.slope);
  check_cuda(cudaGetLastError(), "forward (wgmma) launch");
}

// The forward of shape C on the kernel the caller chose: wgmma where a.wgmma
// is set (64-wide shapes only; the binding checked that the GPU runs sm_90a
// code), else mma.sync.
// Whether shape C has the wgmma forward: each layer's N (its output width) one of kernels/wgmma.cuh's Wgmma.
template <class C>
constexpr bool wg_fwd_ok() {
  constexpr int o = C::OUT;
  return (C::H == 64 && (o == 16 || o == 32 || o == 64)) ||
         (C::H == 128 && (o == 16 || o == 32 || o == 64 || o == 80 || o == 128));
}

template <class C, class In, class Out>
void launch_forward_any(const MlpArgs& a, const In& in, const Out& out) {
  if (!a.wgmma) return launch_forward_with<C>(a, in, out);
  if constexpr (wg_fwd_ok<C>()) {
    if (a.P > 0) launch_forward_wgmma<C>(a, in, out);
  } else {
    throw std::invalid_argument("fused_mlp: the wgmma forward is compiled for hidden width 64 with 16, 32 or 64 "
                                "outputs and hidden width 128 with 16, 32, 64, 80 or 128; this MLP's are " +
                                std::to_string(C::H) + " and " + std::to_string(C::OUT));
  }
}

// The storing training forward (mlp_fwd_store_kernel's twin) on wgmma: y as
// mlp_fwd_wgmma_kernel computes it, and every A_m and the sign bits into the
// split backward's workspace in its layout (warp 4 g + w of the block holds
// tile rows 16 (4 g + w) .., the data pass's warp of the same rows).
template <class C, class In, class Out>
__global__ void __launch_bounds__(WgFwd<C>::THREADS, 1)
    mlp_fwd_store_wgmma_kernel(const In in, const Out sink, const __half* __restrict__ w,
                               const int32_t* __restrict__ perm, const int32_t* __restrict__ offsets, int64_t P,
                               __half* __restrict__ work, uint32_t* __restrict__ masks, int64_t R, float slope) {
#if KPNT_WGMMA_BUILT
  static_assert(WgFwd<C>::T == kBwdT, "the stored forward's tile is the data pass's");
  using S = Split<C>;
  extern __shared__ __align__(128) unsigned char ws[];
  const int g = blockIdx.y;
  load_weights_core<C>(ws, w + static_cast<int64_t>(g) * C::NW);
  wg::fence_async_smem();  // the weights' ordinary stores, seen by the tensor cores' reads
  __syncthreads();

  const int64_t begin = offsets ? offsets[g] : 0;
  const int64_t end = offsets ? offsets[g + 1] : P;
  const int64_t tb = offsets ? tile_base(offsets, g) : 0;
  const int wb = threadIdx.x >> 5, lane = threadIdx.x & 31;  // wb = 4 group + warp: the tile's 16-row block
  // The next tile's inputs are loaded into registers while this tile computes (one tile ahead), where each
  // tile began by waiting for its own.
  uint32_t x_next[1][C::IN / 16][4];
  auto prefetch = [&](int64_t t) {
    const int64_t l = begin + t * kBwdT + 16 * wb + (lane >> 2);
    const int64_t plo[1] = {mem_row(l, end, perm)}, phi[1] = {mem_row(l + 8, end, perm)};
    in.template load<C::IN, 1>(x_next, plo, phi, lane);
  };
  if (begin + static_cast<int64_t>(blockIdx.x) * kBwdT < end) prefetch(blockIdx.x);
  for (int64_t t = blockIdx.x; begin + t * kBwdT < end; t += gridDim.x) {
    const int64_t l = begin + t * kBwdT + 16 * wb + (lane >> 2);
    const int64_t rlo[1] = {mem_row(l, end, perm)}, rhi[1] = {mem_row(l + 8, end, perm)};
    const int64_t rb = (tb + t) * kBwdWarps + wb;
    uint32_t* msk = masks + (tb + t) * S::TILE_MASK_WORDS + threadIdx.x;
    uint32_t ax[1][C::IN / 16][4];
#pragma unroll
    for (int kb = 0; kb < C::IN / 16; ++kb)
#pragma unroll
      for (int e = 0; e < 4; ++e) ax[0][kb][e] = x_next[0][kb][e];
    if (begin + (t + gridDim.x) * kBwdT < end) prefetch(t + gridDim.x);
    store_frags_ws<C::IN>(work + S::act_off(0, R), ax[0], rb, lane);
    uint32_t ah[C::H / 16][4];
    {
      float acc[C::H / 8][4];
      wg_layer<C, 0>(acc, ax[0], ws);
      lrelu_frags<C::H>(ah, acc, slope);
    }
    const auto store = [&](int m, const uint32_t (&a)[C::H / 16][4]) {
      store_layer_ws<C>(m, a, msk, work, R, rb, lane);
    };
    store(0, ah);
    wg_hidden_layers<C, 1>(ah, ws, slope, store);
    float out[1][C::OUT / 8][4];
    wg_layer<C, C::NH>(out[0], ah, ws);
    sink.template store<C::OUT, 1>(out, rlo, rhi, lane);
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // not sm_90a code: the binding never launches it here
#endif
}

// The storing training forward on the kernel the caller chose (a.wgmma: the
// wgmma twin, where the shape has it), into a.workspace.
template <class C>
void launch_forward_store_any(const MlpArgs& a, float* y) {
  if (!a.wgmma) return launch_forward_store<C>(a, y);
  if constexpr (split_bwd<C>() && wg_fwd_ok<C>()) {
    launch_store_kernel<C>(mlp_fwd_store_wgmma_kernel<C, RowsIn, RowsOut>, WgFwd<C>::THREADS, WgFwd<C>::SMEM, a, y,
                           "forward (stored, wgmma)");
  } else {
    throw std::invalid_argument("fused_mlp: the storing forward has a wgmma form for hidden width 128 only, this "
                                "MLP's is " + std::to_string(C::H));
  }
}

}  // namespace
}  // namespace kpnt
