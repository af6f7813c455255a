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
// The kernels: kpnt's mma.sync block (kernels/guide_block.cuh, two tilings),
// kpnt's wgmma blocks (kernels/guide_block_wgmma.cuh: the simple schedule in
// two tilings and two A schedules; the halo-prefetching one, in two tilings;
// two prefetching halves a block, the one kpnt launches since session 27).
// Session 25's transposed candidates (M = output channels) were
// measured slower in session 26 and removed (commit f0827e2 has them).
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

// The block's constants and the kernels projblock_kernel<TY>, projblock_wgmma_kernel<WGS, DB>,
// projblock_wgmma_pf_kernel<WGS> and projblock_wgmma_pf2_kernel (the one kpnt launches) are kpnt's
// (kernels/guide_block.cuh, kernels/guide_block_wgmma.cuh).
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

Variant wgmma_pf2_variant() {
  return {"wgmma prefetch, two 8 x 16 halves a block", projblock_wgmma_pf2_kernel, Pf2Tile::THREADS, Pf2Tile::SMEM};
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
  // Partial tiles at both edges, three images, more than one tile across for every kernel, and an odd tile count
  // for every tiling (8 x 16: 135 tiles, 16 x 16: 81), so the two halves of the pf2 candidate's blocks get
  // different numbers of tiles.
  const int N = 3, H = 37, W = 133;
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
                              wgmma_pf_variant<2>(),       wgmma_pf_variant<4>(),      wgmma_pf2_variant()};
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
