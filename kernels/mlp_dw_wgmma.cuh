// The split backward's weight-gradient pass on Hopper's warp-group MMA (issue
// 14, point 3: the width-128 forward + backward): the twin of mlp_dw_kernel
// (kernels/mlp_core.cuh), with the same workspace, per-tile unscaling and
// per-block partial sums, so the caller cannot tell the two apart but by
// speed and f32 summation order.
//
// Why: at 4 M rows the mma.sync dW pass took 6.8 of the colour MLP's 14 ms
// (H100, session 29), its L1 90 % busy: ldmatrix.trans for both operands of
// every 16 x 8 x 16 product, and each (matrix, 64-column chunk) block read
// its matrix's dZ again.  Here a block owns a whole matrix: each tile's dZ
// and A are read from device memory once, and a warp group's wgmma reads
// its 64 rows of the product from shared memory without ldmatrix.
//
// Products.  dW_m = sum over tiles of inv_s(tile) dZ_{m+1}^T A_m (K = the
// tile's 128 pixels), both operands MN-major from shared memory
// (wg::WgmmaSS, desc_mn), in the workspace's core-matrix layout as copied:
//  - rows(m) == 128 ("normal"): D = dZ^T A, M = dW's rows, warp group g
//    taking rows 64 g .. 64 g + 63, N = cols(m);
//  - else cols(m) == 128 (the output matrix): D = dW^T = A^T dZ, M = dW's
//    columns split the same way, N = rows(m).
// N is issued in pieces of 64, 32, 16 and 8 columns (WgmmaSS's shapes).  A
// tile's product starts from zero (scale-d 0) and is added to the running sum
// times the tile's inv_s, as the mma.sync pass does.
//
// sm_90a code only (KPNT_WGMMA_BUILT): elsewhere the kernel body is a trap
// and the binding refuses to ask for it.
#pragma once

#include "mlp_core.cuh"
#include "wgmma.cuh"

namespace kpnt {
namespace {

template <class C>
struct WgDw {
  static_assert(kBwdWarps == 8 && kBwdT == 128, "two warp groups over the 128-pixel tiles of the split backward");
  __host__ __device__ static constexpr bool normal(int m) { return C::rows(m) == 128; }
  // N of matrix m's product and the width of its A operand (M-major, 128 wide).
  __host__ __device__ static constexpr int nprod(int m) { return normal(m) ? C::cols(m) : C::rows(m); }
  // Whether shape C has this kernel: the split backward, every matrix with
  // 128 rows or 128 columns, and every product's N a multiple of 8 up to 256.
  static constexpr bool shape_ok() {
    bool ok = split_bwd<C>();
    for (int m = 0; ok && m < C::NMAT; ++m)
      ok = (C::rows(m) == 128 || C::cols(m) == 128) && nprod(m) % 8 == 0 && nprod(m) <= 256;
    return ok;
  }
  // One tile's dZ_{m+1} and A_m, as stored; the stages are the largest's size apart.
  __host__ __device__ static constexpr int stage(int m) { return 2 * kBwdT * (C::rows(m) + C::cols(m)); }
  __host__ __device__ static constexpr int max_stage() {
    int b = 0;
    for (int m = 0; m < C::NMAT; ++m) b = stage(m) > b ? stage(m) : b;
    return b;
  }
  static constexpr int STAGE = max_stage();
  static constexpr size_t SMEM = 2 * static_cast<size_t>(STAGE);
};

// d (m64nN, the accumulator layout) = or += A B over the tile's 128 pixels:
// A 64 x 128 M-major behind a_base (am wide), B 128 x N N-major behind b_base
// (bn wide), columns N0 .. N - 1 in the widest pieces WgmmaSS has.
template <int N, int N0 = 0>
__device__ __forceinline__ void ss_pieces(float (&d)[N / 8][4], uint64_t ad, const unsigned char* b, int bn,
                                          bool first) {
  if constexpr (N0 < N) {
    constexpr int P = N - N0 >= 64 ? 64 : N - N0 >= 32 ? 32 : N - N0 >= 16 ? 16 : 8;
    auto& dp = *reinterpret_cast<float(*)[P / 8][4]>(&d[N0 / 8][0]);
    const uint64_t bd = wg::desc_mn(b + (N0 / 8) * 128, bn);
    if (first) wg::WgmmaSS<P>::first(dp, ad, bd);
    else wg::WgmmaSS<P>::acc(dp, ad, bd);
    ss_pieces<N, N0 + P>(d, ad, b, bn, first);
  }
}

template <int N>
__device__ __forceinline__ void ss_tile(float (&d)[N / 8][4], const unsigned char* a, int am, const unsigned char* b,
                                        int bn) {
#pragma unroll
  for (int ks = 0; ks < kBwdT / 16; ++ks)  // 16 pixels (two 8-row blocks) a step
    ss_pieces<N>(d, wg::desc_mn(a + ks * 2 * (am / 8) * 128, am), b + ks * 2 * (bn / 8) * 128, bn, ks == 0);
}

// Matrix m's weight gradient over the tiles blockIdx.x, + gridDim.x, ... of
// group g (tiles tb ..), into the block's partial buffer `out` (row-major at
// woff(m), as mlp_dw_kernel writes it).
template <class C, int m>
__device__ __forceinline__ void dw_matrix_wg(const __half* __restrict__ work, const float* __restrict__ scales,
                                             int64_t R, int64_t tb, int64_t begin, int64_t end,
                                             float* __restrict__ out, unsigned char* smem) {
  using S = Split<C>;
  using D = WgDw<C>;
  constexpr int M = C::rows(m), N = C::cols(m), NP = D::nprod(m);
  constexpr int DZ_BYTES = 2 * kBwdT * M, A_BYTES = 2 * kBwdT * N;
  const unsigned char* dz_src = reinterpret_cast<const unsigned char*>(work + S::dz_off(m, R));
  const unsigned char* a_src = reinterpret_cast<const unsigned char*>(work + S::act_off(m, R));
  const int group = threadIdx.x >> 7, wq = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31;

  auto issue = [&](int64_t t, int st) {  // tile t's dZ and A blocks, each contiguous, into stage st
    unsigned char* dst = smem + st * D::STAGE;
    const unsigned char* dz = dz_src + (tb + t) * DZ_BYTES;
    const unsigned char* a = a_src + (tb + t) * A_BYTES;
    for (int v = threadIdx.x; v < DZ_BYTES / 16; v += blockDim.x) wg::cp_async16_zfill(dst + 16 * v, dz + 16 * v, 16);
    for (int v = threadIdx.x; v < A_BYTES / 16; v += blockDim.x)
      wg::cp_async16_zfill(dst + DZ_BYTES + 16 * v, a + 16 * v, 16);
  };

  float dw[NP / 8][4];
#pragma unroll
  for (int j = 0; j < NP / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dw[j][e] = 0.f;

  int64_t t = blockIdx.x;
  if (begin + t * kBwdT < end) issue(t, 0);
  asm volatile("cp.async.commit_group;\n" ::: "memory");
  for (int st = 0; begin + t * kBwdT < end; t += gridDim.x, st ^= 1) {
    // The next tile into the other stage (read by the previous tile: the barrier at the loop's end).
    if (begin + (t + gridDim.x) * kBwdT < end) issue(t + gridDim.x, st ^ 1);
    asm volatile("cp.async.commit_group;\n" ::: "memory");  // a group every tile, empty or not: uniform counting
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");  // this tile's copies, this thread's part
    wg::fence_async_smem();                                  // cp.async's writes, seen by the tensor cores' reads
    __syncthreads();                                         // ... every thread's
    const float inv_s = scales[tb + t];
    const unsigned char* sdz = smem + st * D::STAGE;
    const unsigned char* sa = sdz + DZ_BYTES;
    float acc[NP / 8][4];
    wg::wg_fence();
    if constexpr (D::normal(m)) ss_tile<NP>(acc, sdz + group * 8 * 128, M, sa, N);  // dZ^T (rows 64 g ..) A
    else ss_tile<NP>(acc, sa + group * 8 * 128, N, sdz, M);                         // A^T (columns 64 g ..) dZ
    wg::wg_commit();
    wg::wg_wait0();
    wg::fence_operands<NP / 8>(acc);
#pragma unroll
    for (int j = 0; j < NP / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) dw[j][e] = fmaf(acc[j][e], inv_s, dw[j][e]);
    __syncthreads();  // this stage is read by both groups: the tile after next may overwrite it
  }
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");  // no copy outlives the block

  // Accumulator (j, e): product row 64 g + 16 wq + lane / 4 + 8 (e / 2), column 8 j + 2 (lane % 4) + e % 2;
  // a transposed product's row is dW's column.
  float* o = out + C::woff(m);
#pragma unroll
  for (int j = 0; j < NP / 8; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int r = 64 * group + 16 * wq + (lane >> 2) + 8 * (e >> 1), col = 8 * j + 2 * (lane & 3) + (e & 1);
      if constexpr (D::normal(m)) o[r * N + col] = dw[j][e];
      else o[col * N + r] = dw[j][e];
    }
}

template <class C, int m>
__device__ __forceinline__ void dw_dispatch_wg(int mat, const __half* work, const float* scales, int64_t R, int64_t tb,
                                               int64_t begin, int64_t end, float* out, unsigned char* smem) {
  if constexpr (m < C::NMAT) {
    if (mat == m) dw_matrix_wg<C, m>(work, scales, R, tb, begin, end, out, smem);
    else dw_dispatch_wg<C, m + 1>(mat, work, scales, R, tb, begin, end, out, smem);
  }
}

// grid (blocks, NMAT, groups); dw_partial (groups, blocks, NW).
template <class C>
__global__ void __launch_bounds__(kBwdWarps * 32, 1)
    mlp_dw_wgmma_kernel(const __half* __restrict__ work, const float* __restrict__ scales,
                        const int32_t* __restrict__ offsets, int64_t P, int64_t R, float* __restrict__ dw_partial) {
#if KPNT_WGMMA_BUILT
  extern __shared__ __align__(128) unsigned char smem[];
  const int g = blockIdx.z;
  const int64_t begin = offsets ? offsets[g] : 0;
  const int64_t end = offsets ? offsets[g + 1] : P;
  const int64_t tb = offsets ? tile_base(offsets, g) : 0;
  float* out = dw_partial + (static_cast<int64_t>(g) * gridDim.x + blockIdx.x) * C::NW;
  dw_dispatch_wg<C, 0>(blockIdx.y, work, scales, R, tb, begin, end, out, smem);
#elif defined(__CUDA_ARCH__)
  __trap();  // not sm_90a code: the binding never launches it here
#endif
}

// Blocks per (matrix, group) of the wgmma dW pass: about four waves of the
// GPU over all matrices, so that the light matrices' blocks (A_0 is 32 wide,
// the output's dZ 16) leave their SMs to the others' later blocks.
template <class C>
int dw_wgmma_blocks(const MlpArgs& a) {
  using D = WgDw<C>;
  auto kernel = mlp_dw_wgmma_kernel<C>;
  prepare_smem(kernel, D::SMEM, "backward (weight gradients, wgmma)");
  const int64_t resident =
      static_cast<int64_t>(multiprocessors()) * occupancy(kernel, kBwdWarps * 32, D::SMEM, "weight-gradient (wgmma)");
  const int64_t cols = static_cast<int64_t>(C::NMAT) * a.groups;
  const int64_t want = (4 * resident + cols - 1) / cols;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(want, Split<C>::tiles(a.P, 1))));
}

// The split backward with its dW pass on wgmma: the data pass (mma.sync, as
// launch_backward_with runs it), then mlp_dw_wgmma_kernel.
template <class C, class In, class Dy>
void launch_split_backward_wgmma(const MlpArgs& a, const In& in, const Dy& dy, float* dx, float* dw_partial) {
  const int bx = dw_wgmma_blocks<C>(a);
  const SplitBuffers<C> b = split_buffers<C>(a);
  launch_split_data<C>(a, in, dy, dx, b);
  mlp_dw_wgmma_kernel<C><<<dim3(bx, C::NMAT, a.groups), kBwdWarps * 32, WgDw<C>::SMEM, a.stream>>>(
      b.work, b.scales, a.offsets, a.P, b.R, dw_partial);
  check_cuda(cudaGetLastError(), "backward weight-gradient (wgmma) launch");
}

}  // namespace
}  // namespace kpnt
