// The guide's projection block (kernels/guide_block.cuh) on Hopper's
// warp-group MMA: the device code of kernels/guide_block.cu's "wgmma" kernel
// (projblock_wgmma_pf2_kernel, two halves a block, each prefetching its halo)
// and of tools/projblock_probe's wgmma rows, which chose it (session 27, H100:
// 1.18 ms a block at 24-MP Bayer size against cuDNN's 1.87, one halo-
// prefetching 16 x 16 block's 1.29, the simple schedule's 1.38 and the
// mma.sync kernel's 1.83, one run).
//
// wgmma exists only in sm_90a code (the arch-specific Hopper target): in any
// other build the kernel body is a trap, and guide_block_wgmma_query()
// (kernels/guide_block.cu) says which code the GPU runs.
#pragma once

#include "guide_block.cuh"
#include "wgmma.cuh"

namespace kpnt {
namespace {
namespace gblock {

// The same block on wgmma (sm_90a): WGS warp groups a block, each on 4 image
// rows x 16 positions (its four warps' A blocks, loaded by ldmatrix exactly as
// projblock_kernel's: wgmma takes A from registers in the mma.sync layout), W and P in
// shared memory in the core-matrix layout read through descriptors
// (kernels/wgmma.cuh, checked on an H100 by tools/wgmma_probe).  One commit group a tap
// (four k16 steps), waited on before the next tap's A is loaded: the simple
// schedule; the other warp groups of the multiprocessor cover the waits.
// projblock_wgmma_kernel (the halo loaded between two barriers) is the probe's
// baseline; kpnt launches projblock_wgmma_pf2_kernel below.
template <int WGS>
struct WgTile {
  static constexpr int TY = 4 * WGS, THREADS = 128 * WGS, HY = TY + 2, HX = TX + 2;
  static constexpr int W_BYTES = C * K3 * 2, P_BYTES = C * C * 2;
  static constexpr size_t SMEM = size_t(W_BYTES) + P_BYTES + sizeof(__half) * size_t(HY) * HX * kRow + sizeof(float) * 2 * C;
};

// W ([64][576]) and P ([64][64]) into shared memory in the core-matrix layout
// the descriptors read (8 consecutive k of one row are one contiguous 16-byte
// row of a core matrix), by the block's THREADS threads.
template <int THREADS>
__device__ __forceinline__ void store_weights_core(unsigned char* sW, unsigned char* sP, const __half* __restrict__ w3,
                                                   const __half* __restrict__ p) {
  for (int e = threadIdx.x * 8; e < C * K3; e += THREADS * 8)
    *reinterpret_cast<uint4*>(sW + wg::core_off(e / K3, e % K3, K3)) = __ldg(reinterpret_cast<const uint4*>(w3 + e));
  for (int e = threadIdx.x * 8; e < C * C; e += THREADS * 8)
    *reinterpret_cast<uint4*>(sP + wg::core_off(e / C, e % C, C)) = __ldg(reinterpret_cast<const uint4*>(p + e));
}

// One warp's share of a tile once its halo sZ (rows of TX + 2 positions) is in
// shared memory: the 3x3 of image row ly of the tile (16 positions), bias and
// ReLU, the 1x1, and z' stored.  DB: the next tap's A loads while this tap's
// wgmmas run (two A buffers), else each tap is waited on before the next.
template <bool DB>
__device__ __forceinline__ void wgmma_tile(const unsigned char* sW, const unsigned char* sP, const __half* sZ,
                                           const float* sb, const float* sc, __half* __restrict__ out, int n, int ly,
                                           int y0, int x0, int H, int W, int lane) {
  constexpr int HX = TX + 2;
  const int q = lane >> 3, i8 = lane & 7, c2 = 2 * (lane & 3);
  // A of one tap: the warp's 16 positions x 64 channels at offset (dy, dx).
  auto load_tap = [&](uint32_t (&a)[C / 16][4], int tap) {
#pragma unroll
    for (int cb = 0; cb < C / 16; ++cb)
      ldsm_x4(a[cb], sZ + ((ly + tap / 3) * HX + 8 * (q & 1) + i8 + tap % 3) * kRow + cb * 16 + 8 * (q >> 1));
  };
  // The four k16 steps of one tap into acc (one commit group).
  auto issue_tap = [&](float (&acc)[C / 8][4], const uint32_t (&a)[C / 16][4], int tap) {
    wg::wg_fence();  // a (and acc, the first time) were just written by ordinary instructions
#pragma unroll
    for (int cb = 0; cb < C / 16; ++cb) {
      const uint64_t desc = wg::make_desc(sW + 2 * (tap * (C / 16) + cb) * 128, 128, (K3 / 8) * 128, false);
      if (tap == 0 && cb == 0)
        wg::Wgmma<C>::first(acc, a[cb], desc);
      else
        wg::Wgmma<C>::acc(acc, a[cb], desc);
    }
    wg::wg_commit();
  };
  float acc[C / 8][4];
  if constexpr (!DB) {  // wait for each tap before loading the next
#pragma unroll
    for (int tap = 0; tap < 9; ++tap) {
      uint32_t a[C / 16][4];
      load_tap(a, tap);
      issue_tap(acc, a, tap);
      wg::wg_wait0();
      wg::fence_operands<C / 8>(acc);
      wg::fence_operands<C / 16>(a);
    }
  } else {  // two A buffers: the next tap's ldmatrix overlaps this tap's wgmmas
    uint32_t a[2][C / 16][4];
    load_tap(a[0], 0);
#pragma unroll
    for (int tap = 0; tap < 9; ++tap) {
      issue_tap(acc, a[tap & 1], tap);
      if (tap + 1 < 9) {
        wg::wg_wait1();                                // tap - 1's group is done: its buffer is free
        wg::fence_operands<C / 16>(a[(tap + 1) & 1]);  // ... and its registers were live up to here
        load_tap(a[(tap + 1) & 1], tap + 1);
      }
    }
    wg::wg_wait0();
    wg::fence_operands<C / 8>(acc);
    wg::fence_operands<C / 16>(a[0]);
    wg::fence_operands<C / 16>(a[1]);
  }

  uint32_t hf[C / 16][4];
  bias_relu_frags(hf, acc, sb, c2);
  float acc2[C / 8][4];
  wg::wg_fence();
#pragma unroll
  for (int ks = 0; ks < C / 16; ++ks) {
    const uint64_t desc = wg::make_desc(sP + 2 * ks * 128, 128, (C / 8) * 128, false);
    if (ks == 0)
      wg::Wgmma<C>::first(acc2, hf[ks], desc);
    else
      wg::Wgmma<C>::acc(acc2, hf[ks], desc);
  }
  wg::wg_commit();
  wg::wg_wait0();
  wg::fence_operands<C / 8>(acc2);
  wg::fence_operands<C / 16>(hf);

  store_row(out, acc2, sZ, sc, n, ly, y0, x0, H, W, lane);
}

template <int WGS, bool DB>
__global__ void __launch_bounds__(WgTile<WGS>::THREADS)
    projblock_wgmma_kernel(const __half* __restrict__ z, __half* __restrict__ out, const __half* __restrict__ w3,
                           const float* __restrict__ b3, const __half* __restrict__ p, const float* __restrict__ c1,
                           int N, int H, int W) {
#if KPNT_WGMMA_BUILT
  using T = WgTile<WGS>;
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* sW = smem;
  unsigned char* sP = smem + T::W_BYTES;
  __half* sZ = reinterpret_cast<__half*>(sP + T::P_BYTES);
  float* sb = reinterpret_cast<float*>(sZ + T::HY * T::HX * kRow);
  float* sc = sb + C;
  store_weights_core<T::THREADS>(sW, sP, w3, p);
  load_biases(sb, sc, b3, c1);
  wg::fence_async_smem();
  const int warp = (threadIdx.x >> 5) & 3, group = threadIdx.x >> 7, lane = threadIdx.x & 31;
  const int ly = 4 * group + warp;  // this warp's image row of the tile
  const int tiles_y = (H + T::TY - 1) / T::TY, tiles_x = (W + TX - 1) / TX;
  const long long tiles = 1LL * N * tiles_y * tiles_x;
  for (long long t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int tx = static_cast<int>(t % tiles_x), ty = static_cast<int>((t / tiles_x) % tiles_y);
    const int n = static_cast<int>(t / (1LL * tiles_x * tiles_y));
    const int y0 = ty * T::TY, x0 = tx * TX;
    __syncthreads();  // the weights are in; the previous tile's halo is read
    load_halo<T::HY, T::THREADS>(sZ, z, n, y0, x0, H, W);
    __syncthreads();
    wgmma_tile<DB>(sW, sP, sZ, sb, sc, out, n, ly, y0, x0, H, W, lane);
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // not sm_90a code: the launcher never starts it here
#endif
}

// The block kpnt launched in session 26 (H100: 1.29 ms a block at 24-MP Bayer
// size against cuDNN's 1.78 and projblock_wgmma_kernel's 1.37 in the same
// run, tools/projblock_probe), a probe row now: the wgmma block with the halo
// double-buffered.
// The next tile's halo streams into the other buffer (cp.async, zero-filled
// outside the image) while this tile computes; projblock_wgmma_kernel loads
// each halo through registers between two barriers, so its tensor cores wait
// for every tile's loads, covered only by the multiprocessor's other block.
// Two halos cost one block an SM (WGS = 4: 176 KB).  The compute per tile is
// wgmma_tile<false>, the simple schedule.
template <int WGS>
struct PfTile {
  static constexpr int TY = WgTile<WGS>::TY, THREADS = WgTile<WGS>::THREADS, HY = TY + 2, HX = TX + 2;
  static constexpr int W_BYTES = WgTile<WGS>::W_BYTES, P_BYTES = WgTile<WGS>::P_BYTES;
  static constexpr int HALO = HY * HX * kRow;  // halves a halo buffer
  static constexpr size_t SMEM = size_t(W_BYTES) + P_BYTES + sizeof(__half) * 2 * size_t(HALO) + sizeof(float) * 2 * C;
};

// Tile t's (HY) x (HX) halo of z into sZ, asynchronously (load_halo's layout),
// by THREADS threads of which this is number tid.
template <int HY, int THREADS>
__device__ __forceinline__ void load_halo_async(__half* sZ, const __half* __restrict__ z, long long t, int tiles_x,
                                                int tiles_y, int TYr, int H, int W, int tid) {
  constexpr int HX = TX + 2;
  const int tx = static_cast<int>(t % tiles_x), ty = static_cast<int>((t / tiles_x) % tiles_y);
  const int n = static_cast<int>(t / (1LL * tiles_x * tiles_y));
  const int y0 = ty * TYr, x0 = tx * TX;
  for (int k = tid; k < HY * HX * 8; k += THREADS) {
    const int pos = k >> 3, part = k & 7, gy = y0 - 1 + pos / HX, gx = x0 - 1 + pos % HX;
    const bool inside = gy >= 0 && gy < H && gx >= 0 && gx < W;
    const __half* src = inside ? z + ((1LL * n * H + gy) * W + gx) * C + part * 8 : z;  // z: any valid address
    wg::cp_async16_zfill(sZ + pos * kRow + part * 8, src, inside ? 16 : 0);
  }
}

template <int WGS>
__global__ void __launch_bounds__(PfTile<WGS>::THREADS)
    projblock_wgmma_pf_kernel(const __half* __restrict__ z, __half* __restrict__ out, const __half* __restrict__ w3,
                              const float* __restrict__ b3, const __half* __restrict__ p,
                              const float* __restrict__ c1, int N, int H, int W) {
#if KPNT_WGMMA_BUILT
  using T = PfTile<WGS>;
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* sW = smem;
  unsigned char* sP = smem + T::W_BYTES;
  __half* sZbuf = reinterpret_cast<__half*>(sP + T::P_BYTES);  // two halos, T::HALO halves apart
  float* sb = reinterpret_cast<float*>(sZbuf + 2 * T::HALO);
  float* sc = sb + C;
  const int tiles_y = (H + T::TY - 1) / T::TY, tiles_x = (W + TX - 1) / TX;
  const long long tiles = 1LL * N * tiles_y * tiles_x;
  // The first tile's halo streams in while the weights are stored.
  if (blockIdx.x < tiles)
    load_halo_async<T::HY, T::THREADS>(sZbuf, z, blockIdx.x, tiles_x, tiles_y, T::TY, H, W, threadIdx.x);
  asm volatile("cp.async.commit_group;\n" ::: "memory");
  store_weights_core<T::THREADS>(sW, sP, w3, p);
  load_biases(sb, sc, b3, c1);
  wg::fence_async_smem();
  const int warp = (threadIdx.x >> 5) & 3, group = threadIdx.x >> 7, lane = threadIdx.x & 31;
  const int ly = 4 * group + warp;  // this warp's image row of the tile
  int buf = 0;
  for (long long t = blockIdx.x; t < tiles; t += gridDim.x, buf ^= 1) {
    const int tx = static_cast<int>(t % tiles_x), ty = static_cast<int>((t / tiles_x) % tiles_y);
    const int n = static_cast<int>(t / (1LL * tiles_x * tiles_y));
    // The next tile's halo into the other buffer (read by the previous tile, done: the barrier at the loop's end).
    if (t + gridDim.x < tiles)
      load_halo_async<T::HY, T::THREADS>(sZbuf + (buf ^ 1) * T::HALO, z, t + gridDim.x, tiles_x, tiles_y, T::TY, H, W,
                                         threadIdx.x);
    asm volatile("cp.async.commit_group;\n" ::: "memory");  // a group every tile, empty or not: uniform counting
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");  // all but the newest group: this tile's halo is in
    __syncthreads();                                         // ... every thread's part of it (and the weights)
    wgmma_tile<false>(sW, sP, sZbuf + buf * T::HALO, sb, sc, out, n, ly, ty * T::TY, tx * TX, H, W, lane);
    __syncthreads();  // this halo is read: the next tile but one may overwrite it
  }
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");  // no copy outlives the block
#elif defined(__CUDA_ARCH__)
  __trap();  // not sm_90a code: the launcher never starts it here
#endif
}

// The block kpnt launches (session 27, H100, tools/projblock_probe: 1.184 ms
// a block at 24-MP Bayer size against projblock_wgmma_pf_kernel<4>'s 1.288,
// the simple 8 x 16 schedule's 1.378 and cuDNN's 1.872 in the same run): two
// independent halves in one block that share the weights.  The simple wgmma
// block runs best at 8 x 16 with two blocks an SM (one computes while the
// other waits for its halo), and the prefetch pays only at 16 x 16 with one
// block (two halos of an 8 x 16 block leave room for one block).  Here each
// half (2 warp groups, 256 threads) walks its own 8 x 16 tiles with its own
// two halo buffers (cp.async prefetch) and its own named barrier, so the
// halves drift apart like two blocks while the weights (82 KB) are stored
// once: 182 KB, one block of 16 warps an SM.  The compute per tile is
// wgmma_tile<false>.
struct Pf2Tile {
  static constexpr int TY = 8, HALF = 256, THREADS = 2 * HALF, HY = TY + 2, HX = TX + 2;
  static constexpr int HALVES = 2;  // tiles a block works on at once
  static constexpr int W_BYTES = WgTile<2>::W_BYTES, P_BYTES = WgTile<2>::P_BYTES;
  static constexpr int HALO = HY * HX * kRow;  // halves (f16) of one halo buffer
  static constexpr size_t SMEM = size_t(W_BYTES) + P_BYTES + sizeof(__half) * 4 * size_t(HALO) + sizeof(float) * 2 * C;
};

// A barrier of the 256 threads of one half (named barriers 1 and 2; 0 is
// __syncthreads').  bar.sync takes an immediate id, hence the branch.
__device__ __forceinline__ void half_barrier(int half) {
  if (half == 0)
    asm volatile("bar.sync 1, 256;\n" ::: "memory");
  else
    asm volatile("bar.sync 2, 256;\n" ::: "memory");
}

__global__ void __launch_bounds__(Pf2Tile::THREADS)
    projblock_wgmma_pf2_kernel(const __half* __restrict__ z, __half* __restrict__ out, const __half* __restrict__ w3,
                               const float* __restrict__ b3, const __half* __restrict__ p,
                               const float* __restrict__ c1, int N, int H, int W) {
#if KPNT_WGMMA_BUILT
  using T = Pf2Tile;
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* sW = smem;
  unsigned char* sP = smem + T::W_BYTES;
  __half* sZbuf = reinterpret_cast<__half*>(sP + T::P_BYTES);  // four halos: two a half
  float* sb = reinterpret_cast<float*>(sZbuf + 4 * T::HALO);
  float* sc = sb + C;
  const int tiles_y = (H + T::TY - 1) / T::TY, tiles_x = (W + TX - 1) / TX;
  const long long tiles = 1LL * N * tiles_y * tiles_x;
  const int half = threadIdx.x / T::HALF, htid = threadIdx.x % T::HALF;
  __half* sZ = sZbuf + half * 2 * T::HALO;
  // Half h of block b takes tiles 2 b + h, then every 2 gridDim.x-th.
  const long long first = 2LL * blockIdx.x + half, stride = 2LL * gridDim.x;
  if (first < tiles) load_halo_async<T::HY, T::HALF>(sZ, z, first, tiles_x, tiles_y, T::TY, H, W, htid);
  asm volatile("cp.async.commit_group;\n" ::: "memory");
  store_weights_core<T::THREADS>(sW, sP, w3, p);
  load_biases(sb, sc, b3, c1);
  wg::fence_async_smem();
  __syncthreads();  // the weights, by all 512 threads, before either half computes
  const int warp = (threadIdx.x >> 5) & 3, group = (threadIdx.x >> 7) & 1, lane = threadIdx.x & 31;
  const int ly = 4 * group + warp;  // this warp's image row of its half's tile
  int buf = 0;
  for (long long t = first; t < tiles; t += stride, buf ^= 1) {
    const int tx = static_cast<int>(t % tiles_x), ty = static_cast<int>((t / tiles_x) % tiles_y);
    const int n = static_cast<int>(t / (1LL * tiles_x * tiles_y));
    if (t + stride < tiles)  // the half's next halo into its other buffer (read by its previous tile, done)
      load_halo_async<T::HY, T::HALF>(sZ + (buf ^ 1) * T::HALO, z, t + stride, tiles_x, tiles_y, T::TY, H, W, htid);
    asm volatile("cp.async.commit_group;\n" ::: "memory");
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");  // this tile's halo: this thread's part
    half_barrier(half);                                      // ... and the half's
    wgmma_tile<false>(sW, sP, sZ + buf * T::HALO, sb, sc, out, n, ly, ty * T::TY, tx * TX, H, W, lane);
    half_barrier(half);  // this halo is read: the half's tile after next may overwrite it
  }
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");  // no copy outlives the block
#elif defined(__CUDA_ARCH__)
  __trap();  // not sm_90a code: the launcher never starts it here
#endif
}

}  // namespace gblock
}  // namespace
}  // namespace kpnt
