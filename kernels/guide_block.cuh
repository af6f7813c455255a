// One projection block of the guide (kpnt/ref/guide.py, ``proj``) in one
// kernel, for inference, on mma.sync: the device code of kernels/guide_block.cu's
// 'mma8' / 'mma16' kernels and of tools/projblock_probe's mma.sync rows, and
// the helpers (halo, biases, epilogue) that the wgmma kernel
// (kernels/guide_block_wgmma.cuh, the one the guide op uses) shares.  On an
// H100 this kernel is no faster than cuDNN's two calls (session 25).
//
//   h  = relu(conv3x3(z, W) + b)              (64 -> 64 channels)
//   z' = relu(z + P h + c)                    (P: a 1x1 convolution, 64 x 64)
//
// z and z' are f16, channels-last (N, H, W, 64).  cuDNN runs this as two
// calls whose h (f16) goes through device memory; at 24 MP (the shipped Bayer
// guide, 2001 x 3003 positions) that made the 1x1 memory-bound (session 23,
// H100: 0.978 ms for the 3x3 and 0.756 ms for the 1x1 a block).
//
// The kernel: an implicit GEMM on mma.sync (sm_80 and later).  A persistent
// block keeps W (64 x 576 f16, 73 KB) and P in shared memory, and per tile of
// TY x 16 positions loads the (TY + 2) x 18 halo of z (zeros outside the
// image: the 3x3's padding) into shared memory; each warp computes two image
// rows (two 16-row A blocks, read from the halo by ldmatrix, one row address
// per position and tap) x 64 channels over K = 9 taps x 64 channels, then adds
// b, applies the ReLU, rounds h to f16 in registers (as cuDNN stores it),
// multiplies by P, adds c and z (from the halo) and stores relu(...) as f16.
#pragma once

#include "mlp_core.cuh"

#include <cuda_fp16.h>

// Internal linkage like mlp_core.cuh's helpers it calls (each including
// translation unit gets its own copy; no one-definition-rule clash).
namespace kpnt {
namespace {
namespace gblock {

constexpr int C = 64;              // channels in and out
constexpr int K3 = 9 * C;          // the 3x3's reduction: tap-major, then input channel
constexpr int kW3 = K3 + kPad;     // W's shared-memory row (1168 bytes: an odd multiple of 16)
constexpr int kRow = C + kPad;     // a halo position's / P's shared-memory row (144 bytes)
constexpr int TX = 16;             // tile width: one 16-row A block per image row

// The (HY) x (TX + 2) halo of z around the tile at (y0, x0) of image n into
// shared memory [position][kRow], zeros outside the image (the 3x3's padding),
// by the block's THREADS threads (a compile-time stride: the loop unrolls).
template <int HY, int THREADS>
__device__ __forceinline__ void load_halo(__half* sZ, const __half* __restrict__ z, int n, int y0, int x0, int H,
                                          int W) {
  constexpr int HX = TX + 2;
  for (int k = threadIdx.x; k < HY * HX * 8; k += THREADS) {
    const int pos = k >> 3, part = k & 7, gy = y0 - 1 + pos / HX, gx = x0 - 1 + pos % HX;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (gy >= 0 && gy < H && gx >= 0 && gx < W)
      v = __ldg(reinterpret_cast<const uint4*>(z + ((1LL * n * H + gy) * W + gx) * C + part * 8));
    *reinterpret_cast<uint4*>(sZ + pos * kRow + part * 8) = v;
  }
}

// The 3x3's bias b3 and the 1x1's c1 into shared memory.
__device__ __forceinline__ void load_biases(float* sb, float* sc, const float* __restrict__ b3,
                                            const float* __restrict__ c1) {
  for (int i = threadIdx.x; i < C; i += blockDim.x) {
    sb[i] = b3[i];
    sc[i] = c1[i];
  }
}

// h = relu(acc + b) of one 16-row block as the f16 A fragments of the 1x1
// (kernels/mlp_core.cuh to_frags' register order).
__device__ __forceinline__ void bias_relu_frags(uint32_t (&hf)[C / 16][4], const float (&acc)[C / 8][4],
                                                const float* sb, int c2) {
#pragma unroll
  for (int kb = 0; kb < C / 16; ++kb)
#pragma unroll
    for (int nt = 0; nt < 2; ++nt) {  // the two n8 tiles of k block kb
      const int j = 2 * kb + nt, col = 8 * j + c2;
      hf[kb][2 * nt] = pack2(fmaxf(acc[j][0] + sb[col], 0.f), fmaxf(acc[j][1] + sb[col + 1], 0.f));
      hf[kb][2 * nt + 1] = pack2(fmaxf(acc[j][2] + sb[col], 0.f), fmaxf(acc[j][3] + sb[col + 1], 0.f));
    }
}

// z' = relu(z + P h + c) of one 16-row block (image row ly of the tile; acc2 =
// P h in the accumulator layout), z from the halo's centre, stored as f16.
__device__ __forceinline__ void store_row(__half* __restrict__ out, const float (&acc2)[C / 8][4], const __half* sZ,
                                          const float* sc, int n, int ly, int y0, int x0, int H, int W, int lane) {
  constexpr int HX = TX + 2;
  const int lr = lane >> 2, c2 = 2 * (lane & 3), gy = y0 + ly;
  if (gy >= H) return;
#pragma unroll
  for (int hi = 0; hi < 2; ++hi) {
    const int px = lr + 8 * hi, gx = x0 + px;
    if (gx >= W) continue;
    const __half* zc = sZ + ((ly + 1) * HX + px + 1) * kRow;
    __half* o = out + ((1LL * n * H + gy) * W + gx) * C;
#pragma unroll
    for (int j = 0; j < C / 8; ++j) {
      const int col = 8 * j + c2;
      const float2 zz = __half22float2(*reinterpret_cast<const __half2*>(zc + col));
      const float v0 = fmaxf(acc2[j][2 * hi] + sc[col] + zz.x, 0.f);
      const float v1 = fmaxf(acc2[j][2 * hi + 1] + sc[col + 1] + zz.y, 0.f);
      *reinterpret_cast<uint32_t*>(o + col) = pack2(v0, v1);
    }
  }
}

template <int TY>
struct Tile {
  static constexpr int WARPS = TY / 2, THREADS = 32 * WARPS;
  static constexpr int HY = TY + 2, HX = TX + 2;
  static constexpr size_t SMEM =
      sizeof(__half) * (size_t(C) * kW3 + size_t(C) * kRow + size_t(HY) * HX * kRow) + sizeof(float) * 2 * C;
};

// One projection block, z (N, H, W, 64) f16 -> out (same), W3 [64][9][64]
// (out, tap = 3 dy + dx, in), P [64][64] (out, in).
template <int TY>
__global__ void __launch_bounds__(Tile<TY>::THREADS)
    projblock_kernel(const __half* __restrict__ z, __half* __restrict__ out, const __half* __restrict__ w3,
                     const float* __restrict__ b3, const __half* __restrict__ p, const float* __restrict__ c1,
                     int N, int H, int W) {
  using T = Tile<TY>;
  extern __shared__ __align__(128) unsigned char smem[];
  __half* sW = reinterpret_cast<__half*>(smem);
  __half* sP = sW + C * kW3;
  __half* sZ = sP + C * kRow;
  float* sb = reinterpret_cast<float*>(sZ + T::HY * T::HX * kRow);
  float* sc = sb + C;
  for (int e = threadIdx.x * 8; e < C * K3; e += T::THREADS * 8)
    *reinterpret_cast<uint4*>(sW + (e / K3) * kW3 + e % K3) = __ldg(reinterpret_cast<const uint4*>(w3 + e));
  for (int e = threadIdx.x * 8; e < C * C; e += T::THREADS * 8)
    *reinterpret_cast<uint4*>(sP + (e / C) * kRow + e % C) = __ldg(reinterpret_cast<const uint4*>(p + e));
  load_biases(sb, sc, b3, c1);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int q = lane >> 3, i8 = lane & 7, c2 = 2 * (lane & 3);
  const int tiles_y = (H + TY - 1) / TY, tiles_x = (W + TX - 1) / TX;
  const long long tiles = 1LL * N * tiles_y * tiles_x;
  for (long long t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int tx = static_cast<int>(t % tiles_x), ty = static_cast<int>((t / tiles_x) % tiles_y);
    const int n = static_cast<int>(t / (1LL * tiles_x * tiles_y));
    const int y0 = ty * TY, x0 = tx * TX;
    __syncthreads();  // the weights are in; the previous tile's halo is read
    load_halo<T::HY, T::THREADS>(sZ, z, n, y0, x0, H, W);
    __syncthreads();

    // The 3x3: acc[r] holds image row 2 warp + r of the tile, 16 positions x 64 channels.
    float acc[2][C / 8][4];
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int j = 0; j < C / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[r][j][e] = 0.f;
#pragma unroll 1
    for (int tap = 0; tap < 9; ++tap) {
      const int dy = tap / 3, dx = tap % 3;
#pragma unroll
      for (int cb = 0; cb < C / 16; ++cb) {
        uint32_t a[2][4];
#pragma unroll
        for (int r = 0; r < 2; ++r)  // matrix q: positions 8 (q & 1) + i8, channels 8 (q >> 1)
          ldsm_x4(a[r], sZ + ((2 * warp + r + dy) * T::HX + 8 * (q & 1) + i8 + dx) * kRow + cb * 16 + 8 * (q >> 1));
        const int kb = tap * (C / 16) + cb;
#pragma unroll
        for (int nb = 0; nb < C / 16; ++nb) {
          uint32_t b[4];
          ldsm_x4(b, sW + (nb * 16 + i8 + 8 * (q >> 1)) * kW3 + kb * 16 + 8 * (q & 1));
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            mma(acc[r][2 * nb], a[r], b[0], b[1]);
            mma(acc[r][2 * nb + 1], a[r], b[2], b[3]);
          }
        }
      }
    }

    // h = relu(acc + b) as f16 A fragments, then P h, then z' = relu(z + P h + c).
    uint32_t hf[2][C / 16][4];
#pragma unroll
    for (int r = 0; r < 2; ++r) bias_relu_frags(hf[r], acc[r], sb, c2);
    float acc2[2][C / 8][4];
    gemm_nk<C, C, 2>(acc2, hf, sP, lane);
#pragma unroll
    for (int r = 0; r < 2; ++r) store_row(out, acc2[r], sZ, sc, n, 2 * warp + r, y0, x0, H, W, lane);
  }
}

}  // namespace gblock
}  // namespace
}  // namespace kpnt
