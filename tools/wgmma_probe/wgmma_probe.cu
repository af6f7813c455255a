// Does Hopper's warp-group MMA (wgmma) pay for kpnt's small MLPs?  A
// standalone probe for issue 14 ("a faster MLP core on sm_90: wgmma where it
// pays"), written in session 22 without a GPU: it checks its own layouts
// before it times anything, so a wrong guess shows as a failed check, not as
// a wrong number.
//
//   nvcc -gencode arch=compute_90a,code=sm_90a -O3 -std=c++17 -I kernels tools/wgmma_probe/wgmma_probe.cu \
//        kernels/mlp.cu -o probe && ./probe
//
// 1. Layout check: one wgmma.m64n64k16 (A from registers in the mma.sync
//    fragment layout, B = a 64 x 16 K-major matrix in shared memory in the
//    no-swizzle "core matrix" layout) against a host product, for both
//    readings of the descriptor's two byte offsets (PTX: LBO = between core
//    matrices along K, SBO = along N; some code reads them the other way).
// 2. The width-64 MLPs of kpnt (colour 32 -> 6 x 64 -> 16, front 32 -> 4 x 64
//    -> 32) as a persistent wgmma kernel: one warp group a block, 64 rows a
//    tile, each layer's accumulators handed to the next layer as A fragments
//    in registers (the same hand-over as kernels/mlp_core.cuh, whose wgmma
//    fragment layouts are the mma.sync ones per warp), weights in shared
//    memory read by the tensor cores through descriptors (no ldmatrix).
//    Checked against a host float64 MLP that rounds like the kernels, and
//    timed beside the production mma.sync kernel (kernels/mlp_core.cuh,
//    launch_forward) on the same data in the same run.
//
// Prints one table; exits non-zero if a check fails.
#include "mlp_core.cuh"
#include "mlp_wgmma.cuh"
#include "probe.h"
#include "wgmma.cuh"

#include <cuda_fp16.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

namespace probe {

using kpnt::Cfg;
using namespace wg;

// ------------------------------------------------------------------ 1. layout check

// out (64, 64) = A (64, 16) B^T, B (64, 16) row-major in global, copied into
// the core-matrix layout; one warp group.
__global__ void layout_kernel(const float* __restrict__ A, const float* __restrict__ B, float* __restrict__ out,
                              bool swap) {
  __shared__ __align__(128) unsigned char sb[64 * 16 * 2];
  const int t = threadIdx.x, warp = t >> 5, lane = t & 31;
  for (int i = t; i < 64 * 16; i += 128) {
    const int n = i / 16, k = i % 16;
    *reinterpret_cast<__half*>(sb + core_off(n, k, 16)) = __float2half_rn(B[i]);
  }
  fence_async_smem();
  __syncthreads();
  const int g = lane >> 2, c = 2 * (lane & 3);
  const int r0 = 16 * warp + g, r1 = r0 + 8;
  uint32_t a[4];
  a[0] = kpnt::pack2(A[r0 * 16 + c], A[r0 * 16 + c + 1]);
  a[1] = kpnt::pack2(A[r1 * 16 + c], A[r1 * 16 + c + 1]);
  a[2] = kpnt::pack2(A[r0 * 16 + c + 8], A[r0 * 16 + c + 9]);
  a[3] = kpnt::pack2(A[r1 * 16 + c + 8], A[r1 * 16 + c + 9]);
  float d[8][4];
  wg_fence();
  Wgmma<64>::first(d, a, make_desc(sb, 128, 2 * 128, swap));
  wg_commit();
  wg_wait0();
  fence_operands<8>(d);
  uint32_t (&a1)[1][4] = *reinterpret_cast<uint32_t (*)[1][4]>(&a);
  fence_operands<1>(a1);
  for (int j = 0; j < 8; ++j) {
    out[r0 * 64 + 8 * j + c] = d[j][0];
    out[r0 * 64 + 8 * j + c + 1] = d[j][1];
    out[r1 * 64 + 8 * j + c] = d[j][2];
    out[r1 * 64 + 8 * j + c + 1] = d[j][3];
  }
}

// ------------------------------------------------------------------ 2. the MLP

// y (P, OUT) = MLP(x (P, IN)) through kpnt's wgmma forward (kernels/mlp_wgmma.cuh: its weight store and
// per-row-block MLP, wg_mlp_rows), here with the descriptor's offsets read either way (SWAP) and without
// kpnt's weight groups and row permutation.  WGS warp groups a block share the weights, each on its own
// 64-row tile (more warps a multiprocessor to cover the wgmma waits than one-warp-group blocks, whose count
// the weights' shared memory caps).
template <class C, bool SWAP, int WGS>
__global__ void __launch_bounds__(128 * WGS) wgmma_mlp_kernel(const float* __restrict__ x, float* __restrict__ y,
                                                        const __half* __restrict__ w, int64_t P, float slope) {
  extern __shared__ __align__(128) unsigned char ws[];
  kpnt::load_weights_core<C>(ws, w);
  fence_async_smem();
  __syncthreads();
  const int warp = (threadIdx.x >> 5) & 3, group = threadIdx.x >> 7, lane = threadIdx.x & 31;
  constexpr int TILE = 64 * WGS;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * TILE; base < P;
       base += static_cast<int64_t>(gridDim.x) * TILE) {
    const int64_t l = base + 64 * group + 16 * warp + (lane >> 2);
    const int64_t rlo[1] = {l < P ? l : -1}, rhi[1] = {l + 8 < P ? l + 8 : -1};
    kpnt::wg_mlp_rows<C, kpnt::RowsIn, kpnt::RowsOut, SWAP>(kpnt::RowsIn{x}, kpnt::RowsOut{y}, ws, rlo, rhi, lane,
                                                             slope);
  }
}

// ------------------------------------------------------------------ host

float h16(float v) { return __half2float(__float2half_rn(v)); }

// Host MLP rounding like the kernels: f16 inputs and weights, float64 sums,
// each activation rounded to f16 then, if negative, f16(h hi + f16(h lo))
// with the slope as the f16 pair hi + lo (kernels/mlp_core.cuh lrelu_frags).
template <class C>
void host_mlp(const std::vector<float>& x, const std::vector<__half>& w, int64_t row, float slope, double* out) {
  const float hi = h16(slope), lo = h16(slope - hi);
  std::vector<double> h(C::IN), z;
  for (int k = 0; k < C::IN; ++k) h[k] = h16(x[row * C::IN + k]);
  for (int m = 0; m < C::NMAT; ++m) {
    const int N = C::rows(m), K = C::cols(m);
    z.assign(N, 0.0);
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k) z[n] += h[k] * static_cast<double>(__half2float(w[C::woff(m) + n * K + k]));
    if (m == C::NMAT - 1) break;
    h.assign(N, 0.0);
    for (int n = 0; n < N; ++n) {
      const float r = h16(static_cast<float>(z[n]));
      h[n] = r > 0.f ? r : h16(static_cast<float>(double(r) * hi + h16(r * lo)));
    }
  }
  for (int n = 0; n < C::OUT; ++n) out[n] = z[n];
}

struct Timing {
  float ms;
  double gpix;
};

template <class F>
Timing time_it(F&& launch, int64_t P, int reps) {
  const float med = median_ms(launch, reps);
  return Timing{med, P / (med * 1e-3) / 1e9};
}

int layout_check(bool swap, double* err) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<float> A(64 * 16), B(64 * 16), out(64 * 64);
  for (auto& v : A) v = h16(u(rng));
  for (auto& v : B) v = h16(u(rng));
  float *dA, *dB, *dO;
  CK(cudaMalloc(&dA, A.size() * 4));
  CK(cudaMalloc(&dB, B.size() * 4));
  CK(cudaMalloc(&dO, out.size() * 4));
  CK(cudaMemcpy(dA, A.data(), A.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dB, B.data(), B.size() * 4, cudaMemcpyHostToDevice));
  layout_kernel<<<1, 128>>>(dA, dB, dO, swap);
  CK(cudaGetLastError());
  CK(cudaMemcpy(out.data(), dO, out.size() * 4, cudaMemcpyDeviceToHost));
  double worst = 0.0;
  for (int r = 0; r < 64; ++r)
    for (int n = 0; n < 64; ++n) {
      double ref = 0.0;
      for (int k = 0; k < 16; ++k) ref += static_cast<double>(A[r * 16 + k]) * B[n * 16 + k];
      worst = std::max(worst, std::fabs(ref - out[r * 64 + n]));
    }
  cudaFree(dA);
  cudaFree(dB);
  cudaFree(dO);
  *err = worst;
  return worst < 1e-3 ? 0 : 1;
}

template <class C>
int mlp_case(const char* name, int64_t P, int reps) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(P) * C::IN);
  for (auto& v : x) v = nd(rng);
  std::vector<__half> w(C::NW);
  for (int m = 0; m < C::NMAT; ++m) {
    const float sd = std::sqrt(2.f / C::cols(m)) * (m == C::NMAT - 1 ? 0.3f : 1.f);
    for (int i = C::woff(m); i < C::woff(m) + C::rows(m) * C::cols(m); ++i) w[i] = __float2half_rn(nd(rng) * sd);
  }
  float *dx, *dy;
  __half* dw;
  CK(cudaMalloc(&dx, x.size() * 4));
  CK(cudaMalloc(&dy, static_cast<size_t>(P) * C::OUT * 4));
  CK(cudaMalloc(&dw, w.size() * 2));
  CK(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(dw, w.data(), w.size() * 2, cudaMemcpyHostToDevice));
  const float slope = 0.01f;

  // Rows checked against the host: the first 512, the last 64, 1024 random.
  std::vector<int64_t> rows;
  for (int64_t r = 0; r < 512; ++r) rows.push_back(r);
  for (int64_t r = P - 64; r < P; ++r) rows.push_back(r);
  std::uniform_int_distribution<int64_t> pick(0, P - 1);
  for (int i = 0; i < 1024; ++i) rows.push_back(pick(rng));
  std::vector<double> ref(rows.size() * C::OUT);
  double scale = 0.0;
  for (size_t i = 0; i < rows.size(); ++i) {
    host_mlp<C>(x, w, rows[i], slope, &ref[i * C::OUT]);
    for (int n = 0; n < C::OUT; ++n) scale = std::max(scale, std::fabs(ref[i * C::OUT + n]));
  }
  auto check = [&](double* worst) {
    std::vector<float> y(static_cast<size_t>(P) * C::OUT);
    CK(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost));
    double e = 0.0;
    bool finite = true;
    for (size_t i = 0; i < rows.size(); ++i)
      for (int n = 0; n < C::OUT; ++n) {
        const float v = y[rows[i] * C::OUT + n];
        finite = finite && std::isfinite(v);
        e = std::max(e, std::fabs(v - ref[i * C::OUT + n]));
      }
    *worst = finite ? e / scale : INFINITY;
    return finite && *worst < 5e-3;
  };

  // The production mma.sync forward (kernels/mlp_core.cuh) on the same data.
  kpnt::MlpArgs args{};
  args.dims = kpnt::MlpDims{C::IN, C::H, C::OUT, C::NH};
  args.P = P;
  args.groups = 1;
  args.x = dx;
  args.w = dw;
  args.slope = slope;
  args.stream = 0;
  // One table row: `launch` on NaN-filled output, checked against the host, then timed.
  auto row = [&](const char* label, auto&& launch) {
    CK(cudaMemset(dy, 0xff, static_cast<size_t>(P) * C::OUT * 4));
    launch();
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    double e = 0.0;
    const bool ok = check(&e);
    const Timing t = time_it(launch, P, reps);
    std::printf("| %-26s | %-40s | %-5s | %9.2e | %8.3f | %6.2f |\n", name, label, ok ? "ok" : "FAIL", e, t.ms, t.gpix);
    return ok;
  };
  const bool ok_mma = row("mma.sync (kernels/mlp_core.cuh)", [&] { kpnt::launch_forward<C>(args, dy); });
  // kpnt's wgmma forward through its own launcher (kernels/mlp_wgmma.cuh, what kpnt.ops._cuda.mlp runs with
  // WGMMA_FORWARD on).
  kpnt::MlpArgs wargs = args;
  wargs.wgmma = true;
  const bool ok_kw = row("wgmma (kernels/mlp_wgmma.cuh)",
                         [&] { kpnt::launch_forward_any<C>(wargs, kpnt::RowsIn{dx}, kpnt::RowsOut{dy}); });

  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  const int smem = static_cast<int>(kpnt::WgFwd<C>::SMEM);
  int wgmma_ok = 0;  // one reading of the descriptor's offsets can be right: the other failing is expected
  for (int variant = 0; variant < 4; ++variant) {
    const bool swap = variant & 1;
    const int wgs = variant < 2 ? 1 : 2;
    auto kernel = variant == 0   ? wgmma_mlp_kernel<C, false, 1>
                  : variant == 1 ? wgmma_mlp_kernel<C, true, 1>
                  : variant == 2 ? wgmma_mlp_kernel<C, false, 2>
                                 : wgmma_mlp_kernel<C, true, 2>;
    CK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    int per_sm = 0;
    CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, 128 * wgs, smem));
    const int64_t tiles = (P + 64 * wgs - 1) / (64 * wgs);
    const int blocks = static_cast<int>(std::min<int64_t>(tiles, static_cast<int64_t>(sms) * std::max(per_sm, 1)));
    char label[96];
    std::snprintf(label, sizeof label, "wgmma, %s, %d WG x %d blocks/SM", swap ? "offsets swapped" : "offsets as PTX",
                  wgs, per_sm);
    wgmma_ok += row(label, [&] { kernel<<<blocks, 128 * wgs, smem>>>(dx, dy, dw, P, slope); });
  }
  cudaFree(dx);
  cudaFree(dy);
  cudaFree(dw);
  return (ok_mma ? 0 : 1) + (ok_kw ? 0 : 1) + (wgmma_ok > 0 ? 0 : 1);
}

}  // namespace probe

int main(int argc, char** argv) {
  using namespace probe;
  const int64_t P = argc > 1 ? std::atoll(argv[1]) : (int64_t{1} << 22);
  const int reps = argc > 2 ? std::atoi(argv[2]) : 20;
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("wgmma probe: %s, sm_%d%d, P = %lld rows, median of %d\n\n", prop.name, prop.major, prop.minor,
              static_cast<long long>(P), reps);
  int bad = 0;
  std::printf("| layout check (one m64n64k16) | max |error| | result |\n| --- | ---: | --- |\n");
  int layout_ok = 0;
  for (int swap = 0; swap < 2; ++swap) {
    double e = 0.0;
    const int r = layout_check(swap != 0, &e);
    layout_ok += r == 0;
    std::printf("| %s | %.2e | %s |\n", swap ? "offsets swapped" : "offsets as PTX", e, r == 0 ? "ok" : "wrong");
  }
  bad += layout_ok == 0;
  std::printf("\n| MLP | kernel | check | rel. error | ms | Gpix/s |\n| --- | --- | --- | ---: | ---: | ---: |\n");
  bad += mlp_case<Cfg<32, 64, 16, 6, false>>("colour 32-6x64-16", P, reps);
  bad += mlp_case<Cfg<32, 64, 32, 4, false>>("front 32-4x64-32", P, reps);
  std::printf("\n%s\n", bad ? "SOME CHECKS FAILED" : "all checks passed");
  return bad ? 1 : 0;
}
