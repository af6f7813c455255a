// The guide's projection block as one kernel (the op behind
// kpnt.ops._cuda.guide_block): launchers of kernels/guide_block.cuh (mma.sync)
// and kernels/guide_block_wgmma.cuh (wgmma, sm_90a builds).
#include "fused_mlp.cuh"
#include "guide_block.cuh"
#include "guide_block_wgmma.cuh"

namespace kpnt {
namespace {

static_assert(gblock::C == kGuideBlockWidth, "kernels/fused_mlp.cuh and kernels/guide_block.cuh disagree on the width");

// Writes 1 where the GPU runs this build's sm_90a code, else 0 (each cubin of
// the build compiles its own constant).
__global__ void wgmma_built_kernel(int* built) { *built = KPNT_WGMMA_BUILT; }

// One launch of a persistent block kernel: as many blocks as fit on the GPU,
// never more than the tiles of `tile_rows` x 16 positions (over tiles_at_once:
// the tiles one block works on side by side, the pf2 kernel's two halves).
template <typename Kernel>
void launch(Kernel kernel, int threads, size_t smem, int tile_rows, const GuideBlockArgs& a, int tiles_at_once = 1) {
  prepare_smem(kernel, smem, "guide block");
  const int64_t tiles = int64_t(a.N) * ((a.H + tile_rows - 1) / tile_rows) * ((a.W + gblock::TX - 1) / gblock::TX);
  const int grid = persistent_blocks(kernel, threads, smem, tiles, tiles_at_once, 1);
  kernel<<<grid, threads, smem, a.stream>>>(static_cast<const __half*>(a.z), static_cast<__half*>(a.out),
                                            static_cast<const __half*>(a.w3), a.b3, static_cast<const __half*>(a.p),
                                            a.c1, a.N, a.H, a.W);
  check_cuda(cudaGetLastError(), "guide block launch");
}

template <int TY>
void launch_mma(const GuideBlockArgs& a) {
  using T = gblock::Tile<TY>;
  launch(gblock::projblock_kernel<TY>, T::THREADS, T::SMEM, TY, a);
}

}  // namespace

const char* guide_block_wgmma_query(int* flag, cudaStream_t stream) {
  return guarded([&] {
    wgmma_built_kernel<<<1, 1, 0, stream>>>(flag);
    check_cuda(cudaGetLastError(), "guide block: build query launch");
  });
}

const char* guide_proj_block(const GuideBlockArgs& a) {
  return guarded([&] {
    // Tile counts are computed in int: keep every extent clear of INT_MAX.
    constexpr int kMaxExtent = (1 << 30);
    if (a.N < 0 || a.H < 0 || a.W < 0 || a.N > kMaxExtent || a.H > kMaxExtent || a.W > kMaxExtent)
      throw std::invalid_argument("guide block: sizes must lie in [0, 2^30]");
    if (int64_t(a.N) * a.H * a.W == 0) return;
    switch (a.kernel) {
      case GuideBlockKernel::kWgmma: {  // the caller asked guide_block_wgmma_query first (a trap elsewhere)
        using T = gblock::Pf2Tile;  // two prefetching 8 x 16 halves a block (session 27: 1.18 ms a block, H100)
        launch(gblock::projblock_wgmma_pf2_kernel, T::THREADS, T::SMEM, T::TY, a, T::HALVES);
        break;
      }
      case GuideBlockKernel::kMma8: launch_mma<8>(a); break;
      case GuideBlockKernel::kMma16: launch_mma<16>(a); break;
      default: throw std::invalid_argument("guide block: unknown kernel " + std::to_string(int(a.kernel)));
    }
  });
}

}  // namespace kpnt
