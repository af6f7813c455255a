// The guide's projection block as one kernel (the op behind
// kpnt.ops._cuda.guide_block): launcher of kernels/guide_block.cuh.
#include "fused_mlp.cuh"
#include "guide_block.cuh"

namespace kpnt {
namespace {

static_assert(gblock::C == kGuideBlockWidth, "kernels/fused_mlp.cuh and kernels/guide_block.cuh disagree on the width");

template <int TY>
void launch_proj_block(const GuideBlockArgs& a) {
  using T = gblock::Tile<TY>;
  auto kernel = gblock::projblock_kernel<TY>;
  prepare_smem(kernel, T::SMEM, "guide block");
  const int64_t tiles = int64_t(a.N) * ((a.H + TY - 1) / TY) * ((a.W + gblock::TX - 1) / gblock::TX);
  // Persistent blocks: as many as fit on the GPU, never more than the tiles.
  const int grid = persistent_blocks(kernel, T::THREADS, T::SMEM, tiles, 1, 1);
  kernel<<<grid, T::THREADS, T::SMEM, a.stream>>>(
      static_cast<const __half*>(a.z), static_cast<__half*>(a.out), static_cast<const __half*>(a.w3), a.b3,
      static_cast<const __half*>(a.p), a.c1, a.N, a.H, a.W);
  check_cuda(cudaGetLastError(), "guide block launch");
}

}  // namespace

const char* guide_proj_block(const GuideBlockArgs& a) {
  return guarded([&] {
    // Tile counts are computed in int: keep every extent clear of INT_MAX.
    constexpr int kMaxExtent = (1 << 30);
    if (a.N < 0 || a.H < 0 || a.W < 0 || a.N > kMaxExtent || a.H > kMaxExtent || a.W > kMaxExtent)
      throw std::invalid_argument("guide block: sizes must lie in [0, 2^30]");
    if (int64_t(a.N) * a.H * a.W == 0) return;
    if (a.tile_rows == 8)
      launch_proj_block<8>(a);
    else if (a.tile_rows == 16)
      launch_proj_block<16>(a);
    else
      throw std::invalid_argument("guide block: tile_rows must be 8 or 16, got " + std::to_string(a.tile_rows));
  });
}

}  // namespace kpnt
