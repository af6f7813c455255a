// Can one kernel run a projection-guide block faster than cuDNN + cuBLAS?  A
// standalone probe for issue 14's point 5 (24-MP Bayer inference <= 30 ms),
// written in session 23 without a GPU to run it on: it checks itself against
// a host reference before it times anything.
//
//   nvcc -gencode arch=compute_90a,code=sm_90a -O3 -std=c++17 -I kernels \
//        tools/projblock_probe/projblock_probe.cu kernels/mlp.cu -o probe && ./probe
//
// The shipped Bayer guide's hidden blocks (kpnt/ref/guide.py, ``proj``) are
//   h  = relu(conv3x3(z, W) + b)              (64 -> 64 channels)
//   z' = relu(z + P h + c)                    (P: a 1x1 convolution, 64 x 64)
// At 24 MP they run at 2001 x 3003 positions, f16, channels-last; on the H100
// (session 23, tools/profile_inference.py) cuDNN's 3x3 took 0.978 ms a block
// and cuBLAS's 1x1 with the add and ReLU in its epilogue 0.756 ms: 1.734 ms,
// 26 of the model's 46.6 ms.  The 1x1 is memory-bound (it reads h and z and
// writes z', 2.3 GB); here h never leaves the chip.
//
// The kernels: kpnt's mma.sync block (kernels/guide_block.cuh, two tilings)
// and kpnt's wgmma block (kernels/guide_block_wgmma.cuh, moved there from this
// file in session 25), in two tilings and two schedules.
//
// Prints a table (checks; ms a block at 24-MP Bayer size, TFLOP/s and the
// speed-up on cuDNN's block: argv[2] ms when given, from
// tools/projblock_probe/cudnn_block.py in the same run, else session 23's
// 1.734 ms); exits non-zero if a check fails.  argv[1]: timed launches.
#include "guide_block.cuh"
#include "guide_block_wgmma.cuh"
#include "../wgmma_probe/probe.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

namespace probe {

// The block's constants and the kernels projblock_kernel<TY>, projblock_wgmma_kernel<WGS, DB> and
// projblock_wgmma_pf_kernel<WGS> (the one kpnt launches, WGS = 4) are kpnt's (kernels/guide_block.cuh,
// kernels/guide_block_wgmma.cuh).
using namespace kpnt::gblock;
using kpnt::kPad;
using kpnt::ldsm_x4;

// Session 23, H100 (tools/profile_inference.py): cuDNN's 3x3 + the 1x1 per block, ms; the baseline unless
// argv[2] gives this run's (tools/projblock_probe/cudnn_block.py).
double g_baseline_ms = 1.734;

// Values in [0, 1) from a hash of the index (the timed input; its values do not matter).
__global__ void fill_uniform(__half* z, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    z[i] = __float2half((h >> 8) * (1.f / 16777216.f));
  }
}

// ------------------------------------------------------------------ a second candidate (session 25, probe only)

// The block as the transposed product: M = the 64 output channels (W, the A
// operand, from shared memory), N = 128 positions of one image row (the halo,
// the B operand, from shared memory), so a warp group issues the 3x3's 36 k16
// steps as one batch with no ldmatrix between taps (kpnt's kernel loads A for
// each tap into registers and waits on each tap).  A tap's B is the halo row
// dy shifted by dx positions: the halo is stored [8 channel chunks][4 rows][130
// positions][16 B], so 8 neighbouring positions of a row are one core matrix
// wherever the row starts.  Tiles of 2 rows x 128 positions, a warp group a
// row; h goes to shared memory as the 1x1's B, and that buffer then stages the
// output for coalesced stores.  186 KB: one block an SM, the halo not
// prefetched (docs/KERNELS.md, session 25, for why a row ring would be next).
namespace tr {
constexpr int R = 2;                          // image rows a tile, one warp group each
constexpr int NX = 128;                       // positions a row (the wgmma's N)
constexpr int HXT = NX + 2, HYT = R + 2;      // the halo
constexpr int CHUNK = HYT * HXT * 16 + 16;    // bytes of one channel chunk of the halo (+16: banks)
constexpr int HALO = 8 * CHUNK;
constexpr int SROW = 144;                     // output staging row (128 bytes + 16: banks)
constexpr int STAGE = NX * SROW;              // per warp group: h ([chunk][128][16 B], 16 KB), then the output
constexpr int THREADS = 128 * R;
constexpr int W_BYTES = C * K3 * 2, P_BYTES = C * C * 2;
constexpr size_t SMEM = size_t(W_BYTES) + P_BYTES + HALO + size_t(R) * STAGE + sizeof(float) * 2 * C;
static_assert(NX * 16 * 8 <= STAGE, "h must fit the staging buffer");

// d = A B (A: 64 x 16 behind da, B: 128 x 16 behind db, both K-major in the
// no-swizzle core-matrix layout), or d += A B.
__device__ __forceinline__ void mma_first(float (&d)[16][4], uint64_t da, uint64_t db) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, 0, 1, 1, 0, 0;\n"
        : "=f"(d[0][0]), "=f"(d[0][1]), "=f"(d[0][2]), "=f"(d[0][3]), "=f"(d[1][0]), "=f"(d[1][1]), "=f"(d[1][2]), "=f"(d[1][3]), "=f"(d[2][0]), "=f"(d[2][1]), "=f"(d[2][2]), "=f"(d[2][3]), "=f"(d[3][0]), "=f"(d[3][1]), "=f"(d[3][2]), "=f"(d[3][3]), "=f"(d[4][0]), "=f"(d[4][1]), "=f"(d[4][2]), "=f"(d[4][3]), "=f"(d[5][0]), "=f"(d[5][1]), "=f"(d[5][2]), "=f"(d[5][3]), "=f"(d[6][0]), "=f"(d[6][1]), "=f"(d[6][2]), "=f"(d[6][3]), "=f"(d[7][0]), "=f"(d[7][1]), "=f"(d[7][2]), "=f"(d[7][3]), "=f"(d[8][0]), "=f"(d[8][1]), "=f"(d[8][2]), "=f"(d[8][3]), "=f"(d[9][0]), "=f"(d[9][1]), "=f"(d[9][2]), "=f"(d[9][3]), "=f"(d[10][0]), "=f"(d[10][1]), "=f"(d[10][2]), "=f"(d[10][3]), "=f"(d[11][0]), "=f"(d[11][1]), "=f"(d[11][2]), "=f"(d[11][3]), "=f"(d[12][0]), "=f"(d[12][1]), "=f"(d[12][2]), "=f"(d[12][3]), "=f"(d[13][0]), "=f"(d[13][1]), "=f"(d[13][2]), "=f"(d[13][3]), "=f"(d[14][0]), "=f"(d[14][1]), "=f"(d[14][2]), "=f"(d[14][3]), "=f"(d[15][0]), "=f"(d[15][1]), "=f"(d[15][2]), "=f"(d[15][3])
        : "l"(da), "l"(db));
}
__device__ __forceinline__ void mma_acc(float (&d)[16][4], uint64_t da, uint64_t db) {
    asm volatile(
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, 1, 1, 1, 0, 0;\n"
        : "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]), "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]), "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3]), "+f"(d[8][0]), "+f"(d[8][1]), "+f"(d[8][2]), "+f"(d[8][3]), "+f"(d[9][0]), "+f"(d[9][1]), "+f"(d[9][2]), "+f"(d[9][3]), "+f"(d[10][0]), "+f"(d[10][1]), "+f"(d[10][2]), "+f"(d[10][3]), "+f"(d[11][0]), "+f"(d[11][1]), "+f"(d[11][2]), "+f"(d[11][3]), "+f"(d[12][0]), "+f"(d[12][1]), "+f"(d[12][2]), "+f"(d[12][3]), "+f"(d[13][0]), "+f"(d[13][1]), "+f"(d[13][2]), "+f"(d[13][3]), "+f"(d[14][0]), "+f"(d[14][1]), "+f"(d[14][2]), "+f"(d[14][3]), "+f"(d[15][0]), "+f"(d[15][1]), "+f"(d[15][2]), "+f"(d[15][3])
        : "l"(da), "l"(db));
}

// The 128 threads of one warp group (barriers 1 and 2; immediate ids, so ptxas reserves only those).
__device__ __forceinline__ void wg_bar(int group) {
  if (group == 0)
    asm volatile("bar.sync 1, 128;\n" ::: "memory");
  else
    asm volatile("bar.sync 2, 128;\n" ::: "memory");
}

// One warp group's row of a tile once its halo rows are in shared memory: the
// 3x3 (36 k16 steps, one commit group), h = relu(acc + b) staged in sG as the
// 1x1's B ([chunk][position][8 channels]), the 1x1, then z' = relu(P h + c +
// z) staged [position][channel] in the same buffer and stored 16 bytes at a
// time.  The halo: `chunk` bytes a channel chunk; row_off[dy] the byte offset
// (within a chunk) of the halo row the tap row dy reads, centre_off the row
// of the tile's own image row gy.
__device__ __forceinline__ void tile(const unsigned char* sW, const unsigned char* sP, const unsigned char* sH,
                                     int chunk, const int (&row_off)[3], int centre_off, unsigned char* sG,
                                     const float* sb, const float* sc, __half* __restrict__ out, int n, int gy, int x0,
                                     int H, int W, int group) {
  const int warp = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, gt = threadIdx.x & 127;
  const int ch0 = 16 * warp + (lane >> 2);  // accumulator rows (channels) ch0 and ch0 + 8
  const int pos0 = 2 * (lane & 3);          // accumulator columns (positions) 8 j + pos0 (+ 1)

  float acc[16][4];
  wg::wg_fence();
#pragma unroll
  for (int tap = 0; tap < 9; ++tap)
#pragma unroll
    for (int cb = 0; cb < C / 16; ++cb) {
      const uint64_t da = wg::make_desc(sW + 2 * (tap * (C / 16) + cb) * 128, 128, (K3 / 8) * 128, false);
      const uint64_t db = wg::make_desc(sH + 2 * cb * chunk + row_off[tap / 3] + (tap % 3) * 16, chunk, 128, false);
      if (tap == 0 && cb == 0)
        mma_first(acc, da, db);
      else
        mma_acc(acc, da, db);
    }
  wg::wg_commit();
  wg::wg_wait0();
  wg::fence_operands<16>(acc);

#pragma unroll
  for (int j = 0; j < 16; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int ch = ch0 + 8 * (e >> 1), ps = 8 * j + pos0 + (e & 1);
      *reinterpret_cast<__half*>(sG + ((ch >> 3) * NX + ps) * 16 + (ch & 7) * 2) =
          __float2half_rn(fmaxf(acc[j][e] + sb[ch], 0.f));
    }
  wg::fence_async_smem();
  wg_bar(group);

  float acc2[16][4];
  wg::wg_fence();
#pragma unroll
  for (int ks = 0; ks < C / 16; ++ks) {
    const uint64_t da = wg::make_desc(sP + 2 * ks * 128, 128, (C / 8) * 128, false);
    const uint64_t db = wg::make_desc(sG + 2 * ks * NX * 16, NX * 16, 128, false);
    if (ks == 0)
      mma_first(acc2, da, db);
    else
      mma_acc(acc2, da, db);
  }
  wg::wg_commit();
  wg::wg_wait0();
  wg::fence_operands<16>(acc2);
  wg_bar(group);  // every warp's reads of h are done: the buffer now stages the output

#pragma unroll
  for (int j = 0; j < 16; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int ch = ch0 + 8 * (e >> 1), ps = 8 * j + pos0 + (e & 1);
      const float zc =
          __half2float(*reinterpret_cast<const __half*>(sH + (ch >> 3) * chunk + centre_off + (ps + 1) * 16 + (ch & 7) * 2));
      *reinterpret_cast<__half*>(sG + ps * SROW + ch * 2) = __float2half_rn(fmaxf(acc2[j][e] + sc[ch] + zc, 0.f));
    }
  wg_bar(group);
  if (gy < H)
    for (int k = gt; k < NX * 8; k += 128) {
      const int ps = k >> 3, part = k & 7, gx = x0 + ps;
      if (gx < W)
        *reinterpret_cast<uint4*>(out + ((1LL * n * H + gy) * W + gx) * C + part * 8) =
            *reinterpret_cast<const uint4*>(sG + ps * SROW + part * 16);
    }
}
}  // namespace tr

__global__ void __launch_bounds__(tr::THREADS)
    projblock_wgmma_tr_kernel(const __half* __restrict__ z, __half* __restrict__ out, const __half* __restrict__ w3,
                              const float* __restrict__ b3, const __half* __restrict__ p,
                              const float* __restrict__ c1, int N, int H, int W) {
  using namespace tr;
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* sW = smem;            // the 3x3's A: [64 out][576], core matrices
  unsigned char* sP = sW + W_BYTES;    // the 1x1's A: [64 out][64]
  unsigned char* sH = sP + P_BYTES;    // the halo
  unsigned char* sS = sH + HALO;       // R staging buffers
  float* sb = reinterpret_cast<float*>(sS + R * STAGE);
  float* sc = sb + C;
  store_weights_core<THREADS>(sW, sP, w3, p);
  load_biases(sb, sc, b3, c1);
  const int group = threadIdx.x >> 7;
  const int row_off[3] = {group * HXT * 16, (group + 1) * HXT * 16, (group + 2) * HXT * 16};
  const int tiles_y = (H + R - 1) / R, tiles_x = (W + NX - 1) / NX;
  const long long tiles = 1LL * N * tiles_y * tiles_x;
  for (long long t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int tx = static_cast<int>(t % tiles_x), ty = static_cast<int>((t / tiles_x) % tiles_y);
    const int n = static_cast<int>(t / (1LL * tiles_x * tiles_y));
    const int y0 = ty * R, x0 = tx * NX;
    __syncthreads();  // the previous tile's halo and staging are read
    for (int k = threadIdx.x; k < HYT * HXT * 8; k += THREADS) {
      const int pos = k >> 3, part = k & 7, gy = y0 - 1 + pos / HXT, gx = x0 - 1 + pos % HXT;
      const bool inside = gy >= 0 && gy < H && gx >= 0 && gx < W;
      const __half* src = inside ? z + ((1LL * n * H + gy) * W + gx) * C + part * 8 : z;
      cp_async16_zfill(sH + part * CHUNK + pos * 16, src, inside ? 16 : 0);
    }
    asm volatile("cp.async.commit_group;\n" ::: "memory");
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
    wg::fence_async_smem();  // the halo (and, the first time, the weights) are read through descriptors
    __syncthreads();
    tile(sW, sP, sH, CHUNK, row_off, row_off[1], sS + group * STAGE, sb, sc, out, n, y0 + group, x0, H, W, group);
  }
}

// The transposed block with a ring of halo rows (session 25, probe only): each
// block takes a contiguous run of tiles ordered down the 128-wide column
// strips, so consecutive tiles share two of their four halo rows; the ring
// holds six rows, and the next tile's two new rows stream in (cp.async) while
// this tile computes.  Otherwise projblock_wgmma_tr_kernel.  214 KB.
namespace trr {
using tr::NX;
using tr::HXT;
using tr::R;
using tr::STAGE;
using tr::THREADS;
constexpr int SLOTS = 6;                          // the tile's 4 rows and the next tile's 2
constexpr int CHUNK = SLOTS * HXT * 16 + 16;      // bytes of one channel chunk of the ring (+16: banks)
constexpr int RING = 8 * CHUNK;
constexpr size_t SMEM = size_t(tr::W_BYTES) + tr::P_BYTES + RING + size_t(R) * STAGE + sizeof(float) * 2 * C;

__device__ __forceinline__ int slot(int gy) { return (gy + 1 + SLOTS * 1024) % SLOTS; }  // gy >= -1

// Image rows gy0 .. gy0 + rows - 1 of image n, positions x0 - 1 .. x0 + 128, into their slots (zeros outside).
__device__ __forceinline__ void load_rows(unsigned char* sH, const __half* __restrict__ z, int n, int gy0, int rows,
                                          int x0, int H, int W) {
  for (int k = threadIdx.x; k < rows * HXT * 8; k += THREADS) {
    const int pos = k >> 3, part = k & 7, gy = gy0 + pos / HXT, gx = x0 - 1 + pos % HXT;
    const bool inside = gy >= 0 && gy < H && gx >= 0 && gx < W;
    const __half* src = inside ? z + ((1LL * n * H + gy) * W + gx) * C + part * 8 : z;
    cp_async16_zfill(sH + part * CHUNK + (slot(gy) * HXT + pos % HXT) * 16, src, inside ? 16 : 0);
  }
}
}  // namespace trr

__global__ void __launch_bounds__(tr::THREADS)
    projblock_wgmma_trr_kernel(const __half* __restrict__ z, __half* __restrict__ out, const __half* __restrict__ w3,
                               const float* __restrict__ b3, const __half* __restrict__ p,
                               const float* __restrict__ c1, int N, int H, int W) {
  using namespace trr;
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* sW = smem;
  unsigned char* sP = sW + tr::W_BYTES;
  unsigned char* sH = sP + tr::P_BYTES;  // the ring: [chunk][slot][130][16 B]
  unsigned char* sS = sH + RING;
  float* sb = reinterpret_cast<float*>(sS + R * STAGE);
  float* sc = sb + C;
  store_weights_core<THREADS>(sW, sP, w3, p);
  load_biases(sb, sc, b3, c1);
  const int group = threadIdx.x >> 7;
  // Tiles ordered (image, column strip, row of tiles), rows fastest; this block's contiguous share.
  const int tiles_y = (H + R - 1) / R, tiles_x = (W + NX - 1) / NX;
  const long long tiles = 1LL * N * tiles_y * tiles_x;
  const long long t_begin = tiles * blockIdx.x / gridDim.x, t_end = tiles * (blockIdx.x + 1) / gridDim.x;
  for (long long t = t_begin; t < t_end; ++t) {
    const int ty = static_cast<int>(t % tiles_y), tx = static_cast<int>((t / tiles_y) % tiles_x);
    const int n = static_cast<int>(t / (1LL * tiles_y * tiles_x));
    const int y0 = ty * R, x0 = tx * NX;
    // This tile's rows y0 - 1 .. y0 + 2: all four at the start of a run, else the last two came with the
    // previous tile's prefetch.  Then the next tile's two new rows, if it continues down the strip.  Two
    // commit groups a tile, empty or not, so waiting for all but the newest means this tile's rows are in.
    if (t == t_begin || ty == 0) load_rows(sH, z, n, y0 - 1, 4, x0, H, W);
    asm volatile("cp.async.commit_group;\n" ::: "memory");
    if (t + 1 < t_end && ty + 1 < tiles_y) load_rows(sH, z, n, y0 + 3, 2, x0, H, W);
    asm volatile("cp.async.commit_group;\n" ::: "memory");
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
    wg::fence_async_smem();
    __syncthreads();
    const int row_off[3] = {slot(y0 - 1 + group) * HXT * 16, slot(y0 + group) * HXT * 16,
                            slot(y0 + 1 + group) * HXT * 16};
    tr::tile(sW, sP, sH, CHUNK, row_off, row_off[1], sS + group * STAGE, sb, sc, out, n, y0 + group, x0, H, W, group);
    __syncthreads();  // the ring's oldest rows and the staging are read: the next tile may overwrite them
  }
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

// ------------------------------------------------------------------ host

struct Block {
  std::vector<__half> w3, p;  // [64][9][64], [64][64]
  std::vector<float> b3, c1;
};

Block random_block(std::mt19937& g) {
  Block k;
  std::normal_distribution<float> nd(0.f, 1.f);
  k.w3.resize(size_t(C) * K3);
  k.p.resize(size_t(C) * C);
  for (auto& v : k.w3) v = __float2half(nd(g) * std::sqrt(2.f / K3));
  for (auto& v : k.p) v = __float2half(nd(g) * std::sqrt(1.f / C));
  for (int i = 0; i < C; ++i) {
    k.b3.push_back(0.05f * nd(g));
    k.c1.push_back(0.05f * nd(g));
  }
  return k;
}

// The block in double, rounding h to f16 where the kernel does.
std::vector<double> host_block(const std::vector<__half>& z, const Block& k, int N, int H, int W) {
  std::vector<double> out(z.size());
  std::vector<double> h(C);
  for (int n = 0; n < N; ++n)
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) {
        for (int o = 0; o < C; ++o) {
          double s = k.b3[o];
          for (int tap = 0; tap < 9; ++tap) {
            const int yy = y + tap / 3 - 1, xx = x + tap % 3 - 1;
            if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
            const __half* zp = &z[((size_t(n) * H + yy) * W + xx) * C];
            const __half* wp = &k.w3[(size_t(o) * 9 + tap) * C];
            for (int ci = 0; ci < C; ++ci) s += double(__half2float(wp[ci])) * __half2float(zp[ci]);
          }
          h[o] = __half2float(__float2half(float(std::max(s, 0.0))));
        }
        const __half* zc = &z[((size_t(n) * H + y) * W + x) * C];
        for (int o = 0; o < C; ++o) {
          double s = k.c1[o] + __half2float(zc[o]);
          for (int ci = 0; ci < C; ++ci) s += double(__half2float(k.p[size_t(o) * C + ci])) * h[ci];
          out[((size_t(n) * H + y) * W + x) * C + o] = std::max(s, 0.0);
        }
      }
  return out;
}

struct Dev {
  __half *w3, *p;
  float *b3, *c1;
};

Dev upload(const Block& k) {
  Dev d;
  CK(cudaMalloc(&d.w3, k.w3.size() * 2));
  CK(cudaMalloc(&d.p, k.p.size() * 2));
  CK(cudaMalloc(&d.b3, C * 4));
  CK(cudaMalloc(&d.c1, C * 4));
  CK(cudaMemcpy(d.w3, k.w3.data(), k.w3.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d.p, k.p.data(), k.p.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d.b3, k.b3.data(), C * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d.c1, k.c1.data(), C * 4, cudaMemcpyHostToDevice));
  return d;
}

// The kernels under test, one launcher each: the mma.sync block of TY image
// rows, the wgmma block of WGS warp groups.
using Kernel = void (*)(const __half*, __half*, const __half*, const float*, const __half*, const float*, int, int, int);

struct Variant {
  const char* name;
  Kernel kernel;
  int threads;
  size_t smem;
};

template <int TY>
Variant mma_variant() {
  static char name[64];
  std::snprintf(name, sizeof name, "mma.sync, %d x 16 tile, %d warps", TY, Tile<TY>::WARPS);
  return {name, projblock_kernel<TY>, Tile<TY>::THREADS, Tile<TY>::SMEM};
}
template <int WGS, bool DB>
Variant wgmma_variant() {
  static char name[64];
  std::snprintf(name, sizeof name, "wgmma%s, %d x 16 tile, %d warp groups", DB ? " 2-buffer" : "", WgTile<WGS>::TY, WGS);
  return {name, projblock_wgmma_kernel<WGS, DB>, WgTile<WGS>::THREADS, WgTile<WGS>::SMEM};
}

template <int WGS>
Variant wgmma_pf_variant() {
  static char name[64];
  std::snprintf(name, sizeof name, "wgmma prefetch, %d x 16 tile, %d warp groups", PfTile<WGS>::TY, WGS);
  return {name, projblock_wgmma_pf_kernel<WGS>, PfTile<WGS>::THREADS, PfTile<WGS>::SMEM};
}

Variant wgmma_trr_variant() {
  return {"wgmma transposed, row ring, 2 x 128 tile", projblock_wgmma_trr_kernel, tr::THREADS, trr::SMEM};
}
Variant wgmma_tr_variant() {
  return {"wgmma transposed, 2 x 128 tile, 2 warp groups", projblock_wgmma_tr_kernel, tr::THREADS, tr::SMEM};
}

int blocks_per_sm(const Variant& v) {
  int b = 0;
  if (cudaFuncSetAttribute(v.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(v.smem)) != cudaSuccess) {
    (void)cudaGetLastError();  // more shared memory than this GPU gives a block: 0 blocks, reported by check()
    return 0;
  }
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&b, v.kernel, v.threads, v.smem));
  return b;
}

void launch(const Variant& v, const __half* z, __half* out, const Dev& d, int N, int H, int W, int grid) {
  v.kernel<<<grid, v.threads, v.smem>>>(z, out, d.w3, d.b3, d.p, d.c1, N, H, W);
}

// One launch on the check image with `grid` blocks: relative RMS error and
// the worst element against the host block, NaN-poisoned output first.
bool check_grid(const Variant& v, const Block& k, const Dev& d, int grid) {
  // Partial tiles at both edges, two images, and more than one tile across for every kernel (the transposed
  // candidate's tiles are 128 positions wide).
  const int N = 2, H = 37, W = 133;
  std::mt19937 g(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<__half> z(size_t(N) * H * W * C);
  for (auto& x : z) x = __float2half(std::max(nd(g), 0.f));  // a block's input is a ReLU's output
  __half *dz, *dout;
  CK(cudaMalloc(&dz, z.size() * 2));
  CK(cudaMalloc(&dout, z.size() * 2));
  CK(cudaMemcpy(dz, z.data(), z.size() * 2, cudaMemcpyHostToDevice));
  CK(cudaMemset(dout, 0xFF, z.size() * 2));  // NaN: outputs left unwritten show
  launch(v, dz, dout, d, N, H, W, grid);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());
  std::vector<__half> got(z.size());
  CK(cudaMemcpy(got.data(), dout, z.size() * 2, cudaMemcpyDeviceToHost));
  static const std::vector<double> want = host_block(z, k, N, H, W);  // the same z for every call
  double num = 0, den = 0, worst = 0;
  bool finite = true;
  for (size_t i = 0; i < z.size(); ++i) {
    const double x = __half2float(got[i]);
    finite = finite && std::isfinite(x);
    num += (x - want[i]) * (x - want[i]);
    den += want[i] * want[i];
    worst = std::max(worst, std::fabs(x - want[i]) / std::max(1.0, std::fabs(want[i])));
  }
  const double rel = std::sqrt(num / std::max(den, 1e-300));
  // RMS over the image, and no element off by more than a few f16 roundings (a border error would hide in the RMS).
  const bool ok = finite && rel < 2e-3 && worst < 4e-3;
  std::printf("| %-44s | %dx%dx%d, %2d blocks | rel. error %.2e, worst %.2e | %s |\n", v.name, N, H, W, grid, rel, worst,
              finite ? (ok ? "ok" : "FAIL") : "FAIL (unwritten)");
  CK(cudaFree(dz));
  CK(cudaFree(dout));
  return ok;
}

// A grid of more blocks than tiles (each block one tile at most) and one of
// 3 (each block round the persistent loop many times, reusing its halo).
bool check(const Variant& v, const Block& k, const Dev& d, int sms) {
  if (blocks_per_sm(v) < 1) {  // also sets the shared-memory limit
    std::printf("| %-44s | does not fit on this GPU | | FAIL |\n", v.name);
    return false;
  }
  const bool wide = check_grid(v, k, d, std::min(2 * sms, 64));
  return check_grid(v, k, d, 3) && wide;
}

void timeit(const Variant& v, const __half* z, __half* out, const Dev& d, int N, int H, int W, int sms, int reps) {
  const int per_sm = blocks_per_sm(v);
  const int grid = per_sm * sms;
  const double med = median_ms([&] { launch(v, z, out, d, N, H, W, grid); }, reps);
  const double pos = double(N) * H * W;
  const double tflop = pos * C * (K3 + C) * 2.0 / (med * 1e-3) / 1e12;
  std::printf("| %-44s | %d blocks/SM | %.3f ms | %.0f TFLOP/s | %.2fx |\n", v.name, per_sm, med, tflop,
              g_baseline_ms / med);
}

}  // namespace probe

int main(int argc, char** argv) {
  using namespace probe;
  const int reps = std::max(1, argc > 1 ? std::atoi(argv[1]) : 20);
  const bool measured = argc > 2 && std::atof(argv[2]) > 0;
  if (measured) g_baseline_ms = std::atof(argv[2]);
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  const int sms = prop.multiProcessorCount;
  std::printf("projection-block probe: %s, sm_%d%d, %d SMs, median of %d\n\n", prop.name, prop.major, prop.minor, sms,
              reps);
  std::mt19937 g(1);
  const Block k = random_block(g);
  const Dev d = upload(k);
  const Variant variants[] = {mma_variant<8>(),            mma_variant<16>(),          wgmma_variant<2, false>(),
                              wgmma_variant<4, false>(),   wgmma_variant<2, true>(),   wgmma_variant<4, true>(),
                              wgmma_pf_variant<2>(),       wgmma_pf_variant<4>(),      wgmma_tr_variant(),
                              wgmma_trr_variant()};
  constexpr int NV = sizeof variants / sizeof variants[0];
  std::printf("| kernel | size | result | |\n| --- | --- | --- | --- |\n");
  bool passed[NV], ok = true;
  for (int i = 0; i < NV; ++i) ok = (passed[i] = check(variants[i], k, d, sms)) && ok;
  // 24-MP Bayer: the guide packs 2 x 2, so 2001 x 3003 positions.
  const int N = 1, H = 2001, W = 3003;
  const size_t n = size_t(N) * H * W * C;
  __half *dz, *dout;
  CK(cudaMalloc(&dz, n * 2));
  CK(cudaMalloc(&dout, n * 2));
  fill_uniform<<<4 * sms, 256>>>(dz, n);
  CK(cudaGetLastError());
  std::printf("\n| kernel (1 x 2001 x 3003 x 64, a block) | occupancy | ms | rate | speed-up on cuDNN's %.3f ms (%s) |\n"
              "| --- | --- | ---: | ---: | ---: |\n", g_baseline_ms, measured ? "this run" : "session 23's profile");
  for (int i = 0; i < NV; ++i)
    if (passed[i]) timeit(variants[i], dz, dout, d, N, H, W, sms, reps);  // a kernel that fails its check is not timed
  std::printf(ok ? "\nall checks passed\n" : "\na check failed (its kernel not timed)\n");
  return ok ? 0 : 1;
}
