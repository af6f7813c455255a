// The MLP backward on Hopper's warp-group MMA (issue 14, point 3: the width-64
// forward + backward): the twin of mlp_bwd_kernel (kernels/mlp_core.cuh) for
// hidden width 64, with the same policies, tile (128 pixels), per-tile dL/dy
// scaling, recomputed forward and per-block partial weight gradients, so the
// caller cannot tell the two apart but by speed and f32 summation order.
//
// Why: the mma.sync backward reads every operand that is not in registers
// through ldmatrix, 16 rows a warp: the weights once per warp for the
// recomputed forward and again for dA = dZ W, and both operands of
// dW = dZ^T A (ldmatrix.trans), about 8 multiply-adds per shared-memory byte.
// A warp group's wgmma reads an operand once for 64 rows.
//
// Layout.  Two warp groups, 64 rows each; warp w holds rows 16 w .. 16 w + 15
// of the tile in the mma.sync fragment layout, which is wgmma's A and
// accumulator layout per warp, so the policies see what mlp_bwd_kernel's see.
// Shared memory holds, in the no-swizzle core-matrix layout (kernels/wgmma.cuh):
//  - the weights as the wgmma forward stores them (load_weights_core);
//  - A_0 .. A_NH and two dZ buffers of the tile, pixel row by pixel row
//    (core_off(pixel, channel, width)).
// Products per matrix m (rows(m) x cols(m)), walking back:
//  - forward: Z = A W^T, A from registers, W K-major (wg_layer, the forward's);
//  - dA = dZ W: dZ from registers, W read N-major (WgmmaRT, imm-trans-b);
//  - dW = dZ^T A over the tile's 128 pixels (K): both operands MN-major from
//    shared memory (WgmmaSS).  M must be 64: where rows(m) is not (the output
//    matrix, OUT rows) the groups compute dW^T = A^T dZ instead.  The two
//    groups split the product's N columns, each summing over all 128 pixels.
//
// sm_90a code only (KPNT_WGMMA_BUILT): elsewhere the kernel body is a trap
// and the binding refuses to ask for it.
#pragma once

#include "mlp_dw_wgmma.cuh"
#include "mlp_wgmma.cuh"

#include <string>
#include <type_traits>

namespace kpnt {
namespace {

template <class C>
struct WgBwd {
  static_assert(kBwdWarps == 8 && kBwdT == 128, "two warp groups of 64 rows: the mma.sync backward's tile");
  // dW of matrix m as dZ^T A (M = rows(m)) or, where rows(m) != 64, as its
  // transpose A^T dZ (M = cols(m)); N of that product, and each group's half.
  __host__ __device__ static constexpr bool normal(int m) { return C::rows(m) == 64; }
  __host__ __device__ static constexpr int nprod(int m) { return normal(m) ? C::cols(m) : C::rows(m); }
  __host__ __device__ static constexpr int half(int m) { return nprod(m) / 2; }
  // Whether shape C has this kernel: hidden width 64, every product's M 64 and
  // each group's N one of WgmmaSS's (8, 16, 32), dA's N one of WgmmaRT's.
  __host__ __device__ static constexpr bool shape_ok() {
    bool ok = C::H == 64;
    for (int m = 0; ok && m < C::NMAT; ++m) {
      const int h = half(m), r = C::rows(m), c = C::cols(m);
      ok = (normal(m) || c == 64) && (h == 8 || h == 16 || h == 32) && (c == 16 || c == 32 || c == 64) &&
           (r == 16 || r == 32 || r == 64);
    }
    return ok;
  }
  // Register groups of 4 floats of matrix m's share of dW in each thread.
  __host__ __device__ static constexpr int dwoff(int m) {
    int o = 0;
    for (int j = 0; j < m; ++j) o += half(j) / 8;
    return o;
  }
  static constexpr int NDW = dwoff(C::NMAT);
  // Shared memory, bytes: weights | A_0 .. A_NH | dZ x 2 | reduction slots.
  __host__ __device__ static constexpr int width(int l) { return l == 0 ? C::IN : C::H; }
  __host__ __device__ static constexpr int act_off(int l) {
    int o = 2 * C::NW;
    for (int j = 0; j < l; ++j) o += 2 * kBwdT * width(j);
    return o;
  }
  static constexpr int DZ_BYTES = 2 * kBwdT * (C::H > C::OUT ? C::H : C::OUT);
  static constexpr int DZ0 = act_off(C::NH + 1), DZ1 = DZ0 + DZ_BYTES, RED = DZ1 + DZ_BYTES;
  static constexpr size_t SMEM = static_cast<size_t>(RED) + sizeof(float) * kBwdWarps;
};

// A tile's rows of a row-major f32 matrix (K wide) staged in shared memory:
// the bare op's x and dL/dy (RowsIn, RowsDy), whose next tile streams in
// (cp.async, no registers) while this tile walks back, where the policies
// would load them when the tile starts and wait.  Rows are K + 8 floats apart
// (whole 16-byte chunks; for K = 32 neighbouring rows start 8 banks apart).
template <int K>
struct StagedRows {
  static constexpr int STRIDE = K + 8;
  static constexpr int BYTES = 4 * kBwdT * STRIDE;
  // Copies of tile rows base .. base + kBwdT - 1 (memory rows mem_row: rows
  // past the group's end are zeros, as the policies give).  A whole tile of
  // unpermuted rows (the plain op's, all but its last tile) is one contiguous
  // block, copied without mem_row's checks and lookups: they had made this
  // issue about a tenth of the width-64 backward's stall samples (ncu, session 30).
  static __device__ __forceinline__ void issue(float* s, const float* __restrict__ src, int64_t base, int64_t end,
                                               const int32_t* __restrict__ perm) {
    constexpr int CH = K / 4;  // 16-byte chunks a row
    constexpr int THREADS = kBwdWarps * 32;
    static_assert(kBwdT * CH % THREADS == 0, "whole chunks a thread");
    if (perm == nullptr && base + kBwdT <= end) {
      const float* tile = src + base * K;
#pragma unroll
      for (int j = 0; j < kBwdT * CH / THREADS; ++j) {
        const int i = static_cast<int>(threadIdx.x) + j * THREADS, row = i / CH, ch = i % CH;
        wg::cp_async16_zfill(s + row * STRIDE + ch * 4, tile + 4 * i, 16);
      }
      return;
    }
    for (int i = threadIdx.x; i < kBwdT * CH; i += blockDim.x) {
      const int row = i / CH, ch = i % CH;
      const int64_t m = mem_row(base + row, end, perm);
      wg::cp_async16_zfill(s + row * STRIDE + ch * 4, m >= 0 ? src + m * K + ch * 4 : src, m >= 0 ? 16 : 0);
    }
  }
  // A fragments (16 rows x K) of tile rows lr, lr + 8: load_a_global's layout, from the staged rows.
  static __device__ __forceinline__ void a_frags(uint32_t (&a)[K / 16][4], const float* s, int lr, int c) {
#pragma unroll
    for (int kb = 0; kb < K / 16; ++kb)
#pragma unroll
      for (int r = 0; r < 4; ++r) {  // rows lr, lr + 8; columns 16 kb + c, 16 kb + 8 + c
        const float2 v = pair(s, lr + 8 * (r & 1), 16 * kb + 8 * (r >> 1) + c);
        a[kb][r] = pack2(v.x, v.y);
      }
  }
  // dL/dy of tile rows lr, lr + 8 in accumulator layout: RowsDy::grad's, from the staged rows.
  static __device__ __forceinline__ void acc_rows(float (&g)[K / 8][4], const float* s, int lr, int c) {
#pragma unroll
    for (int j = 0; j < K / 8; ++j) {
      const float2 lo = pair(s, lr, 8 * j + c), hi = pair(s, lr + 8, 8 * j + c);
      g[j][0] = lo.x;
      g[j][1] = lo.y;
      g[j][2] = hi.x;
      g[j][3] = hi.y;
    }
  }
  static __device__ __forceinline__ float2 pair(const float* s, int row, int col) {
    return *reinterpret_cast<const float2*>(s + row * STRIDE + col);
  }
};

// Whether the backward stages the policies' rows (StagedRows): the bare op's.
template <class In, class Dy>
constexpr bool kStagedRows = std::is_same<In, RowsIn>::value && std::is_same<Dy, RowsDy>::value;

// Byte offset of the staging buffers (x's, then dL/dy's): after WgBwd's layout, 128-byte aligned.
template <class C>
__host__ __device__ constexpr size_t wg_stage_off() {
  return (WgBwd<C>::SMEM + 127) / 128 * 128;
}

// Static shared memory of mlp_bwd_wgmma_kernel's shared-groups form (ptxas reports 128 bytes for its two ints).
constexpr size_t kBwdStaticSmem = 128;

// Dynamic shared memory of the backward with these policies.
template <class C, class In, class Dy>
constexpr size_t wg_bwd_smem() {
  return kStagedRows<In, Dy> ? wg_stage_off<C>() + StagedRows<C::IN>::BYTES + StagedRows<C::OUT>::BYTES
                             : WgBwd<C>::SMEM;
}

// Whether the wgmma backward runs shape C with these policies: the shape has
// the kernel (WgBwd::shape_ok) and its shared memory fits (kSmemOptin).
template <class C, class In, class Dy>
constexpr bool wg_bwd_ok() {
  // kBwdStaticSmem: the kernel's own __shared__ ints (s_blocks, s_row), which count against the same limit.
  return WgBwd<C>::shape_ok() && wg_bwd_smem<C, In, Dy>() + kBwdStaticSmem <= kSmemOptin;
}

// A fragments (16 rows x K, tile rows lr and lr + 8) into a tile buffer of
// width K: one stmatrix a 16-column block (wg::stmatrix_core).
template <int K>
__device__ __forceinline__ void store_core(unsigned char* s, const uint32_t (&a)[K / 16][4], int lr, int lane) {
  wg::stmatrix_core<K>(s, a, lr - (lane >> 2), lane);
}

// Recomputed hidden layers m .. NH - 1, storing each A_{m+1}.
template <class C, int m>
__device__ __forceinline__ void wg_recompute(uint32_t (&ah)[C::H / 16][4], unsigned char* smem, float slope, int lr,
                                             int lane) {
  if constexpr (m < C::NH) {
    float acc[C::H / 8][4];
    wg_layer<C, m>(acc, ah, smem);
    lrelu_frags<C::H>(ah, acc, slope);
    store_core<C::H>(smem + WgBwd<C>::act_off(m + 1), ah, lr, lane);
    wg_recompute<C, m + 1>(ah, smem, slope, lr, lane);
  }
}

struct WgBwdCtx {
  unsigned char* smem;
  uint32_t field;  // wg::smem_field(smem): descriptors are field + offsets
  float inv_s, slope;
  int group, lane, lr;  // group: warp-uniform (broadcast), so its descriptor offsets stay in uniform registers
  int64_t rlo, rhi;
  float* dx;  // nullptr: no input gradient
};

// One step of the walk back: matrix m, with dZ_{m+1} in registers (dzf) and
// in the tile buffer at byte offset `cur` (width rows(m)).  The first step
// (m = NH) calls after_dw() once its dW is issued: work with no tensor-core
// part (the next tile's staging) fills the wait for the products there.
template <class C, int m, class Hook>
__device__ __forceinline__ void wg_bwd_step(float (&dw)[WgBwd<C>::NDW][4], uint32_t (&dzf)[C::rows(m) / 16][4],
                                            int cur, int next, const WgBwdCtx& k, const Hook& after_dw) {
  using B = WgBwd<C>;
  constexpr int M = C::rows(m), N = C::cols(m), HN = B::half(m), BW = B::nprod(m);
  const unsigned char* act = k.smem + B::act_off(m);
  // Byte offsets of the product's A (M-major, 64 wide) and of B (N-major, BW
  // wide), whose half for this group lies (HN / 8) x 128 bytes a group on.
  const int a_off = B::normal(m) ? cur : B::act_off(m), b_off = B::normal(m) ? B::act_off(m) : cur;
  const uint32_t b_field = k.field + k.group * ((HN / 8) * 128 / 16);
  float t[HN / 8][4];
  float da[N / 8][4];  // dA_m = dZ_{m+1} W_m (m = 0: dL/dx, if asked)
  const bool want_da = m > 0 || k.dx != nullptr;
  // A_m's fragments (dZ_m's leaky-ReLU factors) first, so that the loads land
  // while dA is issued, before the proxy fence below: this warp's own rows,
  // stored by the recomputed forward, behind a barrier since.
  uint32_t zf[N / 16][4];
  if constexpr (m > 0) wg::ldmatrix_core<N>(zf, act, k.lr - (k.lane >> 2), k.lane);
  // Two commit groups: dA first (the walk needs it next), then dW, which runs
  // on while this thread turns dA into dZ_m and stores it.  dA's operands are
  // this thread's registers and the weights, so it is issued before the
  // step's barrier and runs while the groups meet there.
  wg::wg_fence();
  if (want_da) {
#pragma unroll
    for (int ks = 0; ks < M / 16; ++ks) {  // 16 of W_m's rows a step
      const uint64_t d = wg::desc_mn_at(k.field, WgFwd<C>::base(m) + ks * 2 * (N / 8) * 128, N);
      if (ks == 0) wg::WgmmaRT<N>::first(da, dzf[0], d);
      else wg::WgmmaRT<N>::acc(da, dzf[ks], d);
    }
  }
  wg::wg_commit();
  // Both groups have stored dZ_{m+1}, whose rows dW_m below reads, and waited
  // on their dW_{m+1}, the last reads of the buffer dZ_m goes to.  For m = NH:
  // dZ_{NH+1} and A_0 .. A_NH.  The proxy fence (those stores, seen by the
  // tensor cores' reads) comes only here, so that the stores' latency passes
  // under the previous step's dW wait and this step's dA issue; right after
  // the stores it had stalled each step (ncu, session 30).
  wg::fence_async_smem();
  __syncthreads();
#pragma unroll
  for (int ks = 0; ks < kBwdT / 16; ++ks) {  // 16 pixels (two core rows) a step
    const uint64_t ad = wg::desc_mn_at(k.field, a_off + ks * 2 * (64 / 8) * 128, 64);
    const uint64_t bd = wg::desc_mn_at(b_field, b_off + ks * 2 * (BW / 8) * 128, BW);
    if (ks == 0) wg::WgmmaSS<HN>::first(t, ad, bd);
    else wg::WgmmaSS<HN>::acc(t, ad, bd);
  }
  wg::wg_commit();
  if constexpr (m == C::NH) after_dw();
  wg::wg_wait1();  // dA is done; dW may still run
  wg::fence_operands<N / 8>(da);
  wg::fence_operands<M / 16>(dzf);

  const int c = 2 * (k.lane & 3);
  uint32_t nf[N / 16][4];
  if constexpr (m > 0) {
    to_frags<N>(nf, da);
    lrelu_grad_frags_z<N>(nf, zf, k.slope);
    store_core<N>(k.smem + next, nf, k.lr, k.lane);  // fenced at the next step's barrier
  } else if (k.dx != nullptr) {
    store_dx<C::IN>(k.dx, da, k.rlo, k.rhi, k.inv_s, c);
  }
  wg::wg_wait0();
  wg::fence_operands<HN / 8>(t);
#pragma unroll
  for (int j = 0; j < HN / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dw[B::dwoff(m) + j][e] = fmaf(t[j][e], k.inv_s, dw[B::dwoff(m) + j][e]);
  if constexpr (m > 0) wg_bwd_step<C, m - 1>(dw, nf, next, cur, k, after_dw);
}

// This thread's share of dW (matrices m .. NH) into the block's partial
// buffer, row-major (rows(m), cols(m)) at woff(m) as mlp_bwd_kernel writes it.
// Accumulator (j, e): product row 16 (warp % 4) + lane / 4 + 8 (e / 2), column
// group HN + 8 j + 2 (lane % 4) + e % 2; a transposed product's row is dW's column.
template <class C, int m>
__device__ __forceinline__ void store_dw_wg(const float (&dw)[WgBwd<C>::NDW][4], float* out, int group, int wq,
                                            int lane) {
  if constexpr (m <= C::NH) {
    using B = WgBwd<C>;
    constexpr int HN = B::half(m);
    float* o = out + C::woff(m);
#pragma unroll
    for (int j = 0; j < HN / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = 16 * wq + (lane >> 2) + 8 * (e >> 1), col = group * HN + 8 * j + 2 * (lane & 3) + (e & 1);
        if constexpr (B::normal(m)) o[r * C::cols(m) + col] = dw[B::dwoff(m) + j][e];
        else o[col * C::cols(m) + r] = dw[B::dwoff(m) + j][e];
      }
    store_dw_wg<C, m + 1>(dw, out, group, wq, lane);
  }
}

// A block's group, its index among the group's blocks and their count, when
// the grid is one row of B >= G blocks that the G groups share in proportion
// to their rows (offsets; the kernel's kShared form, MlpArgs::spread 0):
// group g gets blocks [c(g), c(g + 1)), c(g) = floor((B - G) r(g) / r(G)) + g
// with r(g) the rows before group g, so every group at least one.  Why:
// X-Trans's front classes hold 4 : 1 : 4 of the rows, and with equal blocks a
// class the small class's SMs idled (session 42, ncu: SM active cycles 62 %
// below the mean on some, 24 % above on others; spreading more blocks a class
// in more waves left a tail of large blocks).
struct BlockOfGroup {
  int g, j, n;
};
__device__ __forceinline__ BlockOfGroup block_of_group(const int32_t* __restrict__ offsets, int shared_groups) {
  const int G = shared_groups, spare = static_cast<int>(gridDim.x) - G, b = blockIdx.x;
  const int64_t first = offsets[0], rows = offsets[G] - first;
  // c(g); with no rows at all the spare blocks go to the last group (they find no tile).
  const auto c = [&](int g) -> int {
    if (rows <= 0) return g == G ? spare + G : g;
    return static_cast<int>(static_cast<int64_t>(spare) * (offsets[g] - first) / rows) + g;
  };
  int g = 0;
  while (g + 1 < G && c(g + 1) <= b) ++g;
  const int lo = c(g);
  return {g, b - lo, c(g + 1) - lo};
}

// kShared: the grid is one row the `shared_groups` groups share (block_of_group); else (blocks a group, groups),
// and the code is what it was before the shared form existed (session 42: the default path unchanged).
template <class C, class In, class Dy, bool kShared = false>
__global__ void __launch_bounds__(kBwdWarps * 32, 1)
    mlp_bwd_wgmma_kernel(const In in, const Dy dys, const __half* __restrict__ w, const int32_t* __restrict__ perm,
                         const int32_t* __restrict__ offsets, int64_t P, float* __restrict__ dx,
                         float* __restrict__ dw_partial, float slope, int shared_groups) {
#if KPNT_WGMMA_BUILT
  using B = WgBwd<C>;
  extern __shared__ __align__(128) unsigned char smem[];
  float* red = reinterpret_cast<float*>(smem + B::RED);
  BlockOfGroup bg{static_cast<int>(blockIdx.y), static_cast<int>(blockIdx.x), static_cast<int>(gridDim.x)};
  if constexpr (kShared) bg = block_of_group(offsets, shared_groups);
  const int g = bg.g;
  load_weights_core<C>(smem, w + static_cast<int64_t>(g) * C::NW);
  wg::fence_async_smem();  // the weights' ordinary stores, seen by the tensor cores' reads

  const int64_t begin = offsets ? offsets[g] : 0;
  const int64_t end = offsets ? offsets[g + 1] : P;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int lr = warp * 16 + (lane >> 2);  // tile row of c0/c1 (c2/c3: lr + 8)

  float dw[B::NDW][4];
#pragma unroll
  for (int j = 0; j < B::NDW; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dw[j][e] = 0.f;

  constexpr bool STAGED = kStagedRows<In, Dy>;
  using SX = StagedRows<C::IN>;
  using SY = StagedRows<C::OUT>;
  float* xs = reinterpret_cast<float*>(smem + wg_stage_off<C>());  // STAGED only
  float* ys = xs + kBwdT * SX::STRIDE;
  // kShared: the group's block count and this block's dw_partial row through shared memory, read where used:
  // held in registers across the tile loop they made the front's backward (255 registers) spill; gridDim.x,
  // blockIdx.x and blockIdx.y, which the unshared form reads, cost none.
  __shared__ int s_shared[2];  // blocks of the group, dw_partial row
  if constexpr (kShared) {
    if (threadIdx.x == 0) {  // read after the loop's first barrier, or after the closing one
      s_shared[0] = bg.n;
      s_shared[1] = g * static_cast<int>(gridDim.x) + bg.j;
    }
  }
  const auto stride = [&]() -> int64_t {
    if constexpr (kShared) return static_cast<int64_t>(*static_cast<volatile int*>(&s_shared[0])) * kBwdT;
    else return static_cast<int64_t>(gridDim.x) * kBwdT;
  };
  int64_t first_tile;
  if constexpr (kShared) first_tile = begin + static_cast<int64_t>(bg.j) * kBwdT;
  else first_tile = begin + static_cast<int64_t>(blockIdx.x) * kBwdT;
  if constexpr (STAGED) {
    const int64_t first = first_tile;
    if (first < end) {
      SX::issue(xs, in.x, first, end, perm);
      SY::issue(ys, dys.dy, first, end, perm);
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  }

  // The loop's bounds are the block's: every warp of a group issues its wgmmas together.
  for (int64_t base = first_tile; base < end; base += stride()) {
    if constexpr (STAGED) asm volatile("cp.async.wait_group 0;\n" ::: "memory");  // this tile's rows are in
    // The previous tile's reads of the tile buffers are over (each group
    // waited on its own wgmmas); the first pass waits for the weights.
    __syncthreads();
    const int64_t l = base + lr;
    const int64_t rlo[1] = {mem_row(l, end, perm)}, rhi[1] = {mem_row(l + 8, end, perm)};
    const int c = 2 * (lane & 3);

    // Forward recomputation, storing A_0 .. A_NH (f16, what the forward used).
    uint32_t ax[1][C::IN / 16][4];
    if constexpr (STAGED) {
      SX::a_frags(ax[0], xs, lr, c);
    } else {
      in.template load<C::IN, 1>(ax, rlo, rhi, lane);
    }
    store_core<C::IN>(smem + B::act_off(0), ax[0], lr, lane);
    uint32_t ah[C::H / 16][4];
    {
      float acc[C::H / 8][4];
      wg_layer<C, 0>(acc, ax[0], smem);
      lrelu_frags<C::H>(ah, acc, slope);
    }
    store_core<C::H>(smem + B::act_off(1), ah, lr, lane);
    wg_recompute<C, 1>(ah, smem, slope, lr, lane);

    float gy[C::OUT / 8][4];
    if constexpr (STAGED) {
      SY::acc_rows(gy, ys, lr, c);
    } else {
      float yo[C::OUT / 8][4];
      if constexpr (Dy::kNeedsOut) wg_layer<C, C::NH>(yo, ah, smem);
      dys.template grad<C::OUT>(gy, yo, rlo[0], rhi[0], lane);
    }
    const float inv_s = scale_tile_dy<C::OUT>(gy, red, warp, lane);  // a barrier: every thread has read xs, ys
    // The next tile's rows into xs, ys, issued inside the walk's first step (after_dw).
    const auto stage_next = [&] {
      if constexpr (STAGED) {
        if (base + stride() < end) {
          SX::issue(xs, in.x, base + stride(), end, perm);
          SY::issue(ys, dys.dy, base + stride(), end, perm);
        }
        asm volatile("cp.async.commit_group;\n" ::: "memory");
      }
    };
    uint32_t dzf[C::OUT / 16][4];
    to_frags<C::OUT>(dzf, gy);
    store_core<C::OUT>(smem + B::DZ0, dzf, lr, lane);
    // These stores and A_0 .. A_NH: fenced and made visible at the walk's first barrier.

    const WgBwdCtx k{smem, wg::smem_field(smem), inv_s, slope, __shfl_sync(0xffffffffu, warp >> 2, 0), lane, lr,
                     rlo[0], rhi[0], dx};
    wg_bwd_step<C, C::NH>(dw, dzf, B::DZ0, B::DZ1, k, stage_next);
  }

  // Row (g, j) of dw_partial (groups, gridDim.x, NW); with shared groups the
  // rows j >= bg.n of a group are the caller's zeros.
  int64_t row;
  if constexpr (kShared) {
    __syncthreads();  // s_shared written (a block with no tile passed no barrier)
    row = *static_cast<volatile int*>(&s_shared[1]);
  } else {
    row = static_cast<int64_t>(g) * gridDim.x + blockIdx.x;
  }
  store_dw_wg<C, 0>(dw, dw_partial + row * C::NW, warp >> 2, warp & 3, lane);
#elif defined(__CUDA_ARCH__)
  __trap();  // not sm_90a code: the binding never launches it here
#endif
}

// Whether the in-block wgmma backward runs its shared-groups form (MlpArgs::spread 0): only for callers compiled
// with it (kMayShare: the front level's), with a row partition to share.
template <bool kMayShare>
bool shares_blocks(const MlpArgs& a) {
  return kMayShare && a.spread == 0 && a.offsets != nullptr;
}

// Blocks per group of the backward that a.wgmma_bwd picks (dw_partial's middle dimension).
template <class C, class In, class Dy, bool kMayShare = false>
int backward_blocks_any(const MlpArgs& a) {
  if (a.wgmma_bwd) {
    if constexpr (wg_bwd_ok<C, In, Dy>()) {
      constexpr size_t smem = wg_bwd_smem<C, In, Dy>();
      if constexpr (kMayShare) {
        if (shares_blocks<kMayShare>(a)) {  // one row the groups share (block_of_group): a wave, a block a group
          auto kernel = mlp_bwd_wgmma_kernel<C, In, Dy, true>;
          prepare_smem(kernel, smem, "backward (wgmma)");
          return std::max(a.groups, persistent_blocks(kernel, kBwdWarps * 32, smem, a.P, kBwdT, 1, 1));
        }
      }
      auto kernel = mlp_bwd_wgmma_kernel<C, In, Dy>;
      prepare_smem(kernel, smem, "backward (wgmma)");
      return persistent_blocks(kernel, kBwdWarps * 32, smem, a.P, kBwdT, a.groups, a.spread);
    } else if constexpr (WgDw<C>::shape_ok()) {
      return dw_wgmma_blocks<C>(a);
    }
  }
  return backward_blocks_with<C, In, Dy>(a);
}

// The backward of shape C on the kernels the caller chose: where a.wgmma_bwd
// is set (the binding checked that the GPU runs sm_90a code), the in-block
// wgmma backward (hidden width 64) or the split backward with its dW pass on
// wgmma (width 128); else mma.sync (in-block or split).
template <class C, bool kMayShare = false, class In, class Dy>
void launch_backward_any(const MlpArgs& a, const In& in, const Dy& dy, float* dx, float* dw_partial) {
  if (!a.wgmma_bwd) return launch_backward_with<C>(a, in, dy, dx, dw_partial);
  if constexpr (wg_bwd_ok<C, In, Dy>()) {
    const int bx = backward_blocks_any<C, In, Dy, kMayShare>(a);
    const bool shared = shares_blocks<kMayShare>(a);
    auto kernel = mlp_bwd_wgmma_kernel<C, In, Dy>;
    if constexpr (kMayShare) {
      if (shared) kernel = mlp_bwd_wgmma_kernel<C, In, Dy, true>;
    }
    kernel<<<dim3(bx, shared ? 1 : a.groups), kBwdWarps * 32, wg_bwd_smem<C, In, Dy>(), a.stream>>>(
        in, dy, static_cast<const __half*>(a.w), a.perm, a.offsets, a.P, dx, dw_partial, a.slope,
        shared ? a.groups : 0);
    check_cuda(cudaGetLastError(), "backward (wgmma) launch");
  } else if constexpr (WgDw<C>::shape_ok()) {
    launch_split_backward_wgmma<C>(a, in, dy, dx, dw_partial);
  } else {
    throw std::invalid_argument("fused_mlp: the wgmma backward is compiled for hidden width 64 with 16, 32 or 64 "
                                "inputs and outputs within " + std::to_string(kSmemOptin) + " bytes of shared memory, "
                                "and for hidden width 128 with inputs and outputs a multiple of 8; this MLP is " +
                                std::to_string(C::IN) + " -> " + std::to_string(C::NH) + " x " +
                                std::to_string(C::H) + " -> " + std::to_string(C::OUT) +
                                " (switch kpnt.ops._cuda.mlp.WGMMA_BACKWARD off)");
  }
}

}  // namespace
}  // namespace kpnt
