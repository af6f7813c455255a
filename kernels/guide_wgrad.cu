// The weight gradient of a float32 guide's 3x3 convolutions on TF32 tensor cores (kpnt.ops._cuda.guide_train,
// session 38): dW[co][ky][kx][ci] = sum over positions p of gh[p][co] z[p + (ky - 1, kx - 1)][ci], with z zero
// outside the image, gh and z channels-last float32 (N, H, W, C), C -> C channels.
//
// Why: cuDNN's TF32 weight gradient runs at 87 TFLOP/s at the shipped Bayer guide's shape (4 x 64 x 256 x 256)
// and 100 at the X-Trans one (4 x 128 x 86 x 86) on an H100, against 160-200 for its forward and data gradient
// and 280 for the bfloat16 weight gradient (tools/conv_algos.py, docs/bench/convs_s38a_h100.txt): 2.95 ms of the
// graphed float32 Bayer step's 14.
//
// How: a GEMM of M = C_out, N = 9 C_in, K = positions.  A block owns an M x N tile of dW (a 64-channel slice of
// co times TY rows of taps: all three for C = 64, one for C = 128, so a thread's share stays in registers) and
// walks down strips of TX positions: at each image row it needs one row of gh (TX positions) and TY + 1 rows of z
// (TX + 2 positions: the taps' dx), kept as a ring in shared memory so a row of z is loaded once per strip
// (cp.async, the next row in flight while this one multiplies).  The strips are as wide as W allows at most TX
// (rounded up to 8), and each block takes an equal run of the (image, strip, row) lines: the shipped Bayer step's
// grid is 258 wide (the model pads the mosaic by its margin), which in strips of 64 left a fifth strip of 2
// positions costing a full one, and 16-row units gave blocks 2 or 3 of them (session 42: in the step the kernel
// ran 26 % more mma than alone at 256 x 256 and took 1.42x as long, ncu on an H100).  Values are rounded to TF32
// (to nearest, as the projection kernels' twins) once, in shared memory, when they arrive.  Products on mma.sync
// m16n8k8 (sm_80+), float32 accumulation; each block writes its partial dW once, and the caller sums the blocks'
// rows (one reduction, a fixed order: a rerun gives the same bits).
//
// Two forms: wgrad_tf32_kernel on mma.sync (any sm_80+ GPU), and wgrad_wgmma_kernel on Hopper's warp-group MMA
// (session 43: 0.128 ms against 0.163 at the Bayer step's 4 x 64 x 258 x 258 on an H100); GuideWgradArgs::wgmma
// picks, kpnt.ops._cuda.guide_train routes.
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>

#include "fused_mlp.cuh"
#include "mlp_core.cuh"
#include "tf32.cuh"
#include "wgmma.cuh"

namespace kpnt {
namespace {

using tf32::mma_tf32;
using tf32::tf32_bits;

// The kernel's shape for C channels: TY rows of taps a block, strips of at most TX positions.
template <int C_, int TY_, int TX_>
struct WgradCfg {
  static constexpr int C = C_, TY = TY_, TX = TX_;
  static constexpr int kThreads = 256, kWarps = kThreads / 32;
  static constexpr int kCoSlices = C / 64;            // a block's M: 64 output channels
  static constexpr int kRoles = kCoSlices * (3 / TY);  // blocks a run of lines is shared by
  static constexpr int kN = TY * 3 * C;                // a block's N: (tap, input channel)
  static constexpr int kNT = kN / (kWarps * 8);        // n8 tiles a warp
  static constexpr int kZC = C;                        // channels of z a block keeps: all
  static constexpr int kSz = C + 8;                    // z row stride (floats): fragment reads conflict-free
  static constexpr int kSg = 64 + 8;                   // gh row stride
  static constexpr int kSlots = TY + 1;                // the ring of z rows
  static constexpr int kZRow = (TX + 2) * kSz;
  static constexpr int kGRow = TX * kSg;
  static constexpr size_t kSmem = size_t(kSlots * kZRow + 2 * kGRow) * sizeof(float);
  static_assert(C % 64 == 0 && 3 % TY == 0 && TX % 8 == 0, "unsupported wgrad shape");
  static_assert(kN % (kWarps * 8) == 0, "a warp's columns must be whole n8 tiles");
};

// The shapes compiled: the shipped Bayer guide (64 channels) and the X-Trans one (128).  X-Trans's strips are 88
// positions (its packed grid is 86 wide): strips of 32 gave a row 96 mma a warp between three barriers and ran at 67
// TFLOP/s against cuDNN's 118 (H100, docs/bench/convs_s39a_h100.txt); the 64-channel shape's 288 ran at 125.
using Wgrad64 = WgradCfg<64, 3, 64>;
using Wgrad128 = WgradCfg<128, 1, 88>;

// The Hopper form (wgrad_wgmma_kernel, below): three warp groups, one a row of taps, strips of at most 64 positions,
// a ring of five z rows (three read, one being rounded, one arriving) and two copies of gh's row as B in core
// matrices (kBRow bytes each: the row being multiplied and the next).  A block takes 64 input channels (kZC) and
// 64 output channels: C = 128 (X-Trans) gives four roles, (output slice, input slice), on the same lines.  One step
// of 8 positions a commit group: two took the same time (0.1282 / 0.1284 ms at 4 x 64 x 258 x 258, H100,
// docs/bench/wgrad_wgmma_convs{1,2}_s43_h100.txt) and spilled 4 bytes at the 168 registers 384 threads allow.
template <int C_>
struct WgradWgmma {
  static constexpr int C = C_, TX = 64;
  static constexpr int kThreads = 384, kCoSlices = C / 64, kRoles = kCoSlices * (C / 64);
  static constexpr int kZC = 64, kSz = kZC + 8, kSg = 64 + 8, kSlots = 5;
  static constexpr int kZRow = (TX + 2) * kSz;
  static constexpr int kGRow = TX * kSg;
  static constexpr int kBRow = TX * 64 * 4;
  static constexpr size_t kSmem = 2 * size_t(kBRow) + size_t(kSlots * kZRow + 2 * kGRow) * sizeof(float);
  static_assert(C % 64 == 0, "unsupported wgrad shape");
};
using WgradWgmma64 = WgradWgmma<64>;
using WgradWgmma128 = WgradWgmma<128>;

__host__ __device__ constexpr int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Strips across a row of W positions, and their width: as few strips as TX allows, of equal width rounded up to
// whole n8 tiles (the last one narrower), so that no strip is mostly past the image's edge.
template <class K>
__host__ __device__ int strips_of(int W) {
  return ceil_div(W, K::TX);
}
template <class K>
__host__ __device__ int strip_width(int W) {
  return 8 * ceil_div(ceil_div(W, strips_of<K>(W)), 8);
}

// The ring slot of z row r (r may be -1).
template <class K>
__device__ __forceinline__ int slot_of(int r) {
  return ((r % K::kSlots) + K::kSlots) % K::kSlots;
}

// The helpers below share their items among a team of threads: the one taking items first, first + step, ... (the
// whole block by default; the warp-specialized kernel's producer group, or a part of the block's passes).

// z row r of image n, positions x0 - 1 .. x0 + sw, channels ci0 .. ci0 + K::kZC - 1, into its slot (zeros outside
// the image).
template <class K>
__device__ __forceinline__ void load_z_row(float* sZ, const GuideWgradArgs& a, int n, int r, int x0, int sw,
                                           int ci0 = 0, int first = threadIdx.x, int step = K::kThreads) {
  float* dst = sZ + slot_of<K>(r) * K::kZRow;
  constexpr int kChunks = K::kZC / 4;  // 16-byte pieces a position
  const bool row_in = r >= 0 && r < a.H;
  const float* src_row = a.z + (int64_t(n) * a.H + (row_in ? r : 0)) * a.W * K::C + ci0;
  for (int i = first; i < (sw + 2) * kChunks; i += step) {
    const int p = i / kChunks, c = i % kChunks, x = x0 - 1 + p;
    const bool inside = row_in && x >= 0 && x < a.W;
    cp_async16_zfill(dst + p * K::kSz + 4 * c, inside ? src_row + int64_t(x) * K::C + 4 * c : a.z, inside);
  }
}

// gh row y of image n, positions x0 .. x0 + sw - 1, channels of the block's co slice, into buffer `buf`.
template <class K>
__device__ __forceinline__ void load_gh_row(float* sG, const GuideWgradArgs& a, int n, int y, int x0, int sw,
                                            int co0, int first = threadIdx.x, int step = K::kThreads) {
  float* dst = sG + (y & 1) * K::kGRow;
  const float* src_row = a.gh + (int64_t(n) * a.H + y) * a.W * K::C + co0;
  for (int i = first; i < sw * 16; i += step) {
    const int p = i / 16, c = i % 16, x = x0 + p;
    const bool inside = x < a.W;
    cp_async16_zfill(dst + p * K::kSg + 4 * c, inside ? src_row + int64_t(x) * K::C + 4 * c : a.gh, inside);
  }
}

// Rounds `count` floats of a row (stride `stride`, `width` used) to TF32 in place.
template <class K>
__device__ __forceinline__ void round_rows(float* rows, int count, int stride, int width, int first = threadIdx.x,
                                           int step = K::kThreads) {
  const int quads = width / 4;
  for (int i = first; i < count * quads; i += step) {
    float4* q = reinterpret_cast<float4*>(rows + (i / quads) * stride + 4 * (i % quads));
    float4 v = *q;
    v.x = __uint_as_float(tf32_bits(v.x));
    v.y = __uint_as_float(tf32_bits(v.y));
    v.z = __uint_as_float(tf32_bits(v.z));
    v.w = __uint_as_float(tf32_bits(v.w));
    *q = v;
  }
}

// gh row y (buffer y & 1 of sG, rounded to TF32 here) as the wgmma forms' B, in buffer y & 1 of sB: element (co, p)
// of a 64 x TX K-major matrix in 8 x 4 core matrices, (co / 8, p / 4) at ((co / 8) (TX / 4) + p / 4) x 128 bytes.  An
// item is one channel's 4 positions of a core matrix: four reads down gh's row (a warp's lanes: 32 channels,
// conflict-free) and one 16-byte store (8 lanes fill a core matrix).
template <class K>
__device__ __forceinline__ void gh_row_as_b(float* sB, const float* sG, int y, int sw, int first, int step) {
  float4* b = reinterpret_cast<float4*>(sB + (y & 1) * (K::kBRow / 4));
  const float* src = sG + (y & 1) * K::kGRow;
  for (int i = first; i < (sw / 4) * 64; i += step) {
    const int co = i % 64, pq = i / 64;
    const float* c = src + 4 * pq * K::kSg + co;
    b[((co >> 3) * (K::TX / 4) + pq) * 8 + (co & 7)] =
        make_float4(__uint_as_float(tf32_bits(c[0])), __uint_as_float(tf32_bits(c[K::kSg])),
                    __uint_as_float(tf32_bits(c[2 * K::kSg])), __uint_as_float(tf32_bits(c[3 * K::kSg])));
  }
}

// The rows of one strip that a block's run of lines [r, r1) starts with (image n, strip x0, rows y0 .. y1 - 1, tiles
// n8 tiles of positions inside the image); r moves on to the run's next strip.
struct StripRows {
  int n, x0, y0, y1, tiles;
};
__device__ __forceinline__ StripRows next_strip(int64_t& r, int64_t r1, const GuideWgradArgs& a, int strips,
                                                int sw) {
  const int64_t strip = r / a.H, end = min(r1, (strip + 1) * a.H);
  StripRows s;
  s.n = int(strip / strips);
  s.x0 = int(strip % strips) * sw;
  s.y0 = int(r % a.H);
  s.y1 = s.y0 + int(end - r);
  s.tiles = ceil_div(min(sw, a.W - s.x0), 8);
  r = end;
  return s;
}

template <class K>
__global__ void __launch_bounds__(K::kThreads, 1) wgrad_tf32_kernel(const GuideWgradArgs a) {
  extern __shared__ __align__(128) float smem[];
  float* sZ = smem;
  float* sG = smem + K::kSlots * K::kZRow;
  const int role = blockIdx.y, co0 = (role % K::kCoSlices) * 64, dy0 = (role / K::kCoSlices) * K::TY;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int strips = strips_of<K>(a.W), sw = strip_width<K>(a.W);
  // The block's run [r0, r1) of the lines (image n, strip s, row y), y fastest.
  const int64_t lines = int64_t(a.N) * strips * a.H;
  const int64_t r0 = int64_t(blockIdx.x) * lines / gridDim.x, r1 = int64_t(blockIdx.x + 1) * lines / gridDim.x;

  // This warp's n8 tiles: their tap (row dy - dy0, column dx) and first input channel.
  int tap_dy[K::kNT], tap_col[K::kNT];  // tap_col = dx * kSz + ci0 + g + t * kSz: the fragment's offset in a row
#pragma unroll
  for (int j = 0; j < K::kNT; ++j) {
    const int col = (warp * K::kNT + j) * 8, tap = col / K::C, ci0 = col % K::C;
    tap_dy[j] = tap / 3;
    tap_col[j] = (tap % 3 + t) * K::kSz + ci0 + g;
  }
  float acc[4][K::kNT][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < K::kNT; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

  // One pass a strip the run touches: its rows y0 .. y1 - 1, the z ring primed at y0.
  for (int64_t r = r0; r < r1;) {
    const auto [n, x0, y0, y1, tiles] = next_strip(r, r1, a, strips, sw);
    for (int j = 0; j < K::TY; ++j) load_z_row<K>(sZ, a, n, y0 + dy0 - 1 + j, x0, sw);
    load_gh_row<K>(sG, a, n, y0, x0, sw, co0);
    cp_async_commit();
    for (int y = y0; y < y1; ++y) {
      if (y + 1 < y1) {  // the next row's new z row and its gh row, in flight while this row multiplies
        load_z_row<K>(sZ, a, n, y + dy0 + K::TY - 1, x0, sw);
        load_gh_row<K>(sG, a, n, y + 1, x0, sw, co0);
      }
      cp_async_commit();  // a group every row, empty or not: uniform counting
      cp_async_wait1();
      __syncthreads();
      // Round what arrived for this row: gh row y, and the z rows not seen before (all TY at a pass's start).
      const int first = y == y0 ? 0 : K::TY - 1;
      for (int j = first; j < K::TY; ++j)
        round_rows<K>(sZ + slot_of<K>(y + dy0 - 1 + j) * K::kZRow, sw + 2, K::kSz, K::C);
      round_rows<K>(sG + (y & 1) * K::kGRow, sw, K::kSg, 64);
      __syncthreads();

      const float* gb = sG + (y & 1) * K::kGRow + t * K::kSg + g;
      int zb[K::kNT];
#pragma unroll
      for (int j = 0; j < K::kNT; ++j) zb[j] = slot_of<K>(y + dy0 - 1 + tap_dy[j]) * K::kZRow + tap_col[j];
#pragma unroll 2
      for (int kk = 0; kk < tiles; ++kk) {  // past the image's edge gh is 0: whole tiles only
        uint32_t af[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float* p = gb + kk * 8 * K::kSg + 16 * i;
          af[i][0] = __float_as_uint(p[0]);
          af[i][1] = __float_as_uint(p[8]);
          af[i][2] = __float_as_uint(p[4 * K::kSg]);
          af[i][3] = __float_as_uint(p[4 * K::kSg + 8]);
        }
#pragma unroll
        for (int j = 0; j < K::kNT; ++j) {
          const float* q = sZ + zb[j] + kk * 8 * K::kSz;
          const uint32_t b0 = __float_as_uint(q[0]), b1 = __float_as_uint(q[4 * K::kSz]);
#pragma unroll
          for (int i = 0; i < 4; ++i) mma_tf32(acc[i][j], af[i][0], af[i][1], af[i][2], af[i][3], b0, b1);
        }
      }
      __syncthreads();  // the next row's loads overwrite what this row read
    }
  }

  // The block's partial dW, [co][ky][kx][ci] of row blockIdx.x: accumulator (row g (+ 8), columns 2t, 2t + 1).
  float* out = a.partial + int64_t(blockIdx.x) * K::C * 9 * K::C;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < K::kNT; ++j) {
      const int col = (warp * K::kNT + j) * 8 + 2 * t, tap = col / K::C, ci = col % K::C;
      const int ky = dy0 + tap / 3, kx = tap % 3;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int co = co0 + 16 * i + g + 8 * h;
        *reinterpret_cast<float2*>(out + ((int64_t(co) * 3 + ky) * 3 + kx) * K::C + ci) =
            make_float2(acc[i][j][2 * h], acc[i][j][2 * h + 1]);
      }
    }
}

// ---- the wgmma forms' multiplying warps (warp group ky of a block: tap row ky)

// A warp group's accumulators: one m64n64 a tap of its row (kx), 96 floats a thread.
using TapAcc = float[3][8][4];

__device__ __forceinline__ void zero(TapAcc& acc) {
#pragma unroll
  for (int kx = 0; kx < 3; ++kx)
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[kx][j][0] = acc[kx][j][1] = acc[kx][j][2] = acc[kx][j][3] = 0.f;
}

// Step kk (8 positions) of a row, issued as one commit group: A, z at positions 8 kk + k + kx (k = t and t + 4) from
// the row's ring slot `zrow` (already offset by this thread's channel), into `af` (rounded to TF32 here when
// kRoundA, else already rounded in the slot), then the three m64n64k8 on B at byte `b_off` of the field `b_field`.
// The caller waits (step_end) before it loads `af` again: ptxas serializes the MMAs when registers they read are
// loaded while a group is in flight.
template <class K, bool kRoundA = false>
__device__ __forceinline__ void step_begin(TapAcc& acc, uint32_t (&af)[3][4], const float* zrow, int kk, int t,
                                           uint32_t b_field, uint32_t b_off) {
#pragma unroll
  for (int kx = 0; kx < 3; ++kx) {
    const float* p = zrow + (8 * kk + t + kx) * K::kSz;
    const float2 lo = *reinterpret_cast<const float2*>(p), hi = *reinterpret_cast<const float2*>(p + 4 * K::kSz);
    const float v[4] = {lo.x, lo.y, hi.x, hi.y};
#pragma unroll
    for (int e = 0; e < 4; ++e) af[kx][e] = kRoundA ? tf32_bits(v[e]) : __float_as_uint(v[e]);
  }
  wg::wg_fence();
  const uint64_t desc = wg::desc_at(b_field, b_off + kk * 256, 128, (K::TX / 4) * 128, false);
#pragma unroll
  for (int kx = 0; kx < 3; ++kx) wg::wgmma_tf32_n64_acc(acc[kx], af[kx], desc);
  wg::wg_commit();
}
__device__ __forceinline__ void step_end(uint32_t (&af)[3][4]) {
  wg::wg_wait0();
  wg::fence_operands(af);
}

// The block's share of partial dW, [co][ky][kx][ci] of row blockIdx.x: accumulator (row g: channel ci0 + ci, row
// g + 8: the next; column 8 j + 2 t + e: output channel co0 + that).
template <class K>
__device__ __forceinline__ void store_partial(const GuideWgradArgs& a, const TapAcc& acc, int co0, int ci0, int ky,
                                              int ci, int t) {
  float* out = a.partial + int64_t(blockIdx.x) * K::C * 9 * K::C + ci0;
#pragma unroll
  for (int kx = 0; kx < 3; ++kx)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int co = co0 + 8 * j + 2 * t + e;
        *reinterpret_cast<float2*>(out + ((int64_t(co) * 3 + ky) * 3 + kx) * K::C + ci) =
            make_float2(acc[kx][j][e], acc[kx][j][2 + e]);
      }
}

// The weight gradient on Hopper's warp-group MMA (session 43).  The same GEMM as wgrad_tf32_kernel, turned: M = (tap,
// input channel), N = the 64 output channels, K = positions.  Warp group ky owns the three taps of tap row ky, an
// m64n64 accumulator each (96 floats a thread); at each step of 8 positions it loads A, z at the taps' positions,
// from the ring (two 8-byte loads a tap: a warp's 16 rows are channels 16 w + 2 (row % 8) + row / 8, so a row and
// its row + 8 are neighbours in memory) and issues three m64n64k8 on B = gh^T, one copy of gh's row in core
// matrices that all three groups read.  mma.sync's form read 34 shared words a warp for 36 m16n8k8; this one reads
// 12 for three m64n64k8 (96 m16n8k8), B streaming to the tensor cores without registers.
//
// The pipeline, one barrier a row: while row y multiplies, the block rounds row y + 1's new z row and writes its B
// (the work between a step's commit and its wait), and rows y + 3 (z) and y + 2 (gh) arrive.  The first form
// (session 43, rounds and B between two barriers of their own) ran at the mma.sync form's speed: ncu found the
// tensor cores idle (GMMA stalls 0.08 an instruction) behind barriers (1.72) and the copies' latencies.
template <class K>
__global__ void __launch_bounds__(K::kThreads, 1) wgrad_wgmma_kernel(const GuideWgradArgs a) {
#if KPNT_WGMMA_BUILT
  extern __shared__ __align__(128) float smem[];  // (one symbol with wgrad_tf32_kernel's, declared alike)
  float* sB = smem;  // two rows of B, kBRow bytes each
  float* sZ = sB + 2 * K::kBRow / 4;
  float* sG = sZ + K::kSlots * K::kZRow;
  const uint32_t b_field = wg::smem_field(sB);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int ky = warp / 4, ci = 16 * (warp % 4) + 2 * g;  // this thread's A rows: channels ci (row g), ci + 1 (g + 8)
  const int co0 = (blockIdx.y % K::kCoSlices) * 64, ci0 = (blockIdx.y / K::kCoSlices) * 64;  // the block's role
  const int strips = strips_of<K>(a.W), sw = strip_width<K>(a.W);
  const int64_t lines = int64_t(a.N) * strips * a.H;
  const int64_t r0 = int64_t(blockIdx.x) * lines / gridDim.x, r1 = int64_t(blockIdx.x + 1) * lines / gridDim.x;

  TapAcc acc;
  zero(acc);
  uint32_t af[3][4];

  for (int64_t r = r0; r < r1;) {
    const StripRows st = next_strip(r, r1, a, strips, sw);
    const int n = st.n, x0 = st.x0, y0 = st.y0, y1 = st.y1, tiles = st.tiles;
    // Row y's preparation in `parts` parts (part k of them): its new z row y + 1 rounded in place, gh row y as B. A
    // part takes every parts-th pass of each loop (no divisions: ncu counted 60 % more instructions with ranges),
    // and a pass is kThreads consecutive items, so a warp's lanes keep their pattern.
    const auto prepare = [&](int y, int k, int parts) {
      const int first = k * K::kThreads + threadIdx.x, step = parts * K::kThreads;
      round_rows<K>(sZ + slot_of<K>(y + 1) * K::kZRow, sw + 2, K::kSz, K::kZC, first, step);
      gh_row_as_b<K>(sB, sG, y, sw, first, step);
    };

    // The strip's start: z rows y0 - 1 .. y0 + 2 and gh rows y0, y0 + 1; rows y0 - 1 .. y0 + 1 rounded, row y0's B.
    __syncthreads();  // the previous strip's last rows are read: the buffers may be refilled
    for (int j = 0; j < 4; ++j) load_z_row<K>(sZ, a, n, y0 - 1 + j, x0, sw, ci0);
    load_gh_row<K>(sG, a, n, y0, x0, sw, co0);
    if (y0 + 1 < y1) load_gh_row<K>(sG, a, n, y0 + 1, x0, sw, co0);
    cp_async_commit();
    cp_async_wait_all();
    __syncthreads();
    round_rows<K>(sZ + slot_of<K>(y0 - 1) * K::kZRow, sw + 2, K::kSz, K::kZC);
    round_rows<K>(sZ + slot_of<K>(y0) * K::kZRow, sw + 2, K::kSz, K::kZC);
    prepare(y0, 0, 1);
    wg::fence_async_smem();

    for (int y = y0; y < y1; ++y) {
      cp_async_wait_all();  // z row y + 2 and gh row y + 1, for row y + 1's preparation below
      __syncthreads();      // ... from every thread; row y's B and rounds are done, row y - 1's products too
      if (y + 2 < y1) {     // row y + 2's: z row y + 3 (into row y - 2's slot) and gh row y + 2 (row y's buffer)
        load_z_row<K>(sZ, a, n, y + 3, x0, sw, ci0);
        load_gh_row<K>(sG, a, n, y + 2, x0, sw, co0);
      }
      cp_async_commit();
      const float* zrow = sZ + slot_of<K>(y + ky - 1) * K::kZRow + ci;
      for (int kk = 0; kk < tiles; ++kk) {  // a part of row y + 1's preparation while each step's products run
        step_begin<K>(acc, af, zrow, kk, t, b_field, (y & 1) * K::kBRow);
        if (y + 1 < y1) prepare(y + 1, kk, tiles);
        step_end(af);
      }
#pragma unroll
      for (int kx = 0; kx < 3; ++kx) wg::fence_operands(acc[kx]);
      wg::fence_async_smem();  // row y + 1's B, seen by the tensor cores after the next barrier
    }
  }
  store_partial<K>(a, acc, co0, ci0, ky, ci, t);
#else
  __trap();  // launched only where wgmma_built_on says the GPU runs this build's sm_90a code
#endif
}

// The wgmma form with its warps specialized (written in session 43, run and on since session 44): session 43's ncu
// and PTX put the wgmma form at ~5.8 k cycles a row against ~2.0 k of tensor work, bound by the latency of the
// copies' and preparation's integer chains that every warp runs between its products.  Here warp groups 0-2 (tap
// rows, as in wgrad_wgmma_kernel) only multiply, and warp group 3 only copies z and gh and writes B, up to two rows
// ahead.  The multipliers round z (A) to TF32 in their registers as they load it: with the producer rounding each z
// row in place it was the bottleneck (session 44's ncu: barrier stalls 5.2 an instruction), and moving those ~1/4 of
// its instructions took the kernel from 0.120 to 0.111 ms at 4 x 64 x 258 x 258 (H100; the same bits).  Rows hand
// over through named barriers: kFull + (y & 1) (row y's B and z rows are ready: the producer arrives, the
// multipliers wait) and kEmpty + (y & 1) (the multipliers are done with row y: they arrive, the producer waits before
// it refills row y's buffers).  tools/wgrad_ws_protocol.py models the protocol.  compute-sanitizer's racecheck
// reports hazards on this handoff: it does so too on tools/gpu_calls/racecheck_arrive_probe.cu's bar.arrive form of
// it, whose values are all right, and not on its bar.sync form (docs/bench/racecheck_probe_s44_h100.txt).
template <int C_>
struct WgradWgmmaWS : WgradWgmma<C_> {
  static constexpr int kThreads = 512, kProducer = 384;  // threads; the producer group's first thread
  static constexpr int kProducerRegs = 80, kMultiplierRegs = 144;  // setmaxnreg: 128 x 80 + 384 x 144 = 65536
  static_assert(128 * kProducerRegs + 384 * kMultiplierRegs <= 65536, "more registers than an SM has");
};

namespace ws {
constexpr int kFull = 1, kEmpty = 3, kProducers = 5;  // named barrier ids (kFull, kFull + 1, kEmpty, kEmpty + 1)
__device__ __forceinline__ void bar_sync(int id, int count) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void bar_arrive(int id, int count) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
}  // namespace ws

template <class K>
__global__ void __launch_bounds__(K::kThreads, 1) wgrad_wgmma_ws_kernel(const GuideWgradArgs a) {
#if KPNT_WGMMA_BUILT
  extern __shared__ __align__(128) float smem[];
  float* sB = smem;
  float* sZ = sB + 2 * K::kBRow / 4;
  float* sG = sZ + K::kSlots * K::kZRow;
  const int warp = threadIdx.x / 32;
  const int co0 = (blockIdx.y % K::kCoSlices) * 64, ci0 = (blockIdx.y / K::kCoSlices) * 64;
  const int strips = strips_of<K>(a.W), sw = strip_width<K>(a.W);
  const int64_t lines = int64_t(a.N) * strips * a.H;
  const int64_t r0 = int64_t(blockIdx.x) * lines / gridDim.x, r1 = int64_t(blockIdx.x + 1) * lines / gridDim.x;
  constexpr int kTeam = K::kThreads - K::kProducer;  // the producer group's threads

  if (threadIdx.x >= K::kProducer) {  // ---- the producer group
    // 512 threads launch with 128 registers each; the producer gives 48 of its to the multipliers, whose three
    // accumulators alone are 96 (at 128 ptxas spilled 224 bytes and serialized the MMAs; a producer of 56 spilled).
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(K::kProducerRegs));
    const int pt = threadIdx.x - K::kProducer;
    for (int64_t r = r0; r < r1;) {
      const StripRows st = next_strip(r, r1, a, strips, sw);
      const int n = st.n, x0 = st.x0, y0 = st.y0, y1 = st.y1;
      for (int j = -1; j < 2; ++j) load_z_row<K>(sZ, a, n, y0 + j, x0, sw, ci0, pt, kTeam);
      load_gh_row<K>(sG, a, n, y0, x0, sw, co0, pt, kTeam);
      cp_async_commit();
      for (int y = y0; y < y1; ++y) {
        // The multipliers are done with row y - 2 (its B buffer and the slot row y + 2 goes to are free), and every
        // producer thread with its own part of row y - 1 (the gh buffer row y + 1 goes to is free).
        if (y - 2 >= y0) ws::bar_sync(ws::kEmpty + (y & 1), K::kThreads);
        ws::bar_sync(ws::kProducers, kTeam);
        if (y + 1 < y1) {  // row y + 1's: z row y + 2, gh row y + 1
          load_z_row<K>(sZ, a, n, y + 2, x0, sw, ci0, pt, kTeam);
          load_gh_row<K>(sG, a, n, y + 1, x0, sw, co0, pt, kTeam);
        }
        cp_async_commit();
        cp_async_wait1();  // row y's: z row y + 1 and gh row y (this thread's copies)
        ws::bar_sync(ws::kProducers, kTeam);  // ... and every producer thread's
        gh_row_as_b<K>(sB, sG, y, sw, pt, kTeam);
        wg::fence_async_smem();
        ws::bar_arrive(ws::kFull + (y & 1), K::kThreads);
      }
      // The multipliers' last two rows: done before the next strip refills the buffers.
      for (int y = max(y0, y1 - 2); y < y1; ++y) ws::bar_sync(ws::kEmpty + (y & 1), K::kThreads);
    }
    cp_async_wait_all();  // no copy outlives the block
    return;
  }

  // ---- the multipliers: warp group ky, as in wgrad_wgmma_kernel
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(K::kMultiplierRegs));
  const uint32_t b_field = wg::smem_field(sB);
  const int lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int ky = warp / 4, ci = 16 * (warp % 4) + 2 * g;
  TapAcc acc;
  zero(acc);
  uint32_t af[3][4];
  for (int64_t r = r0; r < r1;) {
    const StripRows st = next_strip(r, r1, a, strips, sw);
    for (int y = st.y0; y < st.y1; ++y) {
      ws::bar_sync(ws::kFull + (y & 1), K::kThreads);
      const float* zrow = sZ + slot_of<K>(y + ky - 1) * K::kZRow + ci;
      for (int kk = 0; kk < st.tiles; ++kk) {
        step_begin<K, true>(acc, af, zrow, kk, t, b_field, (y & 1) * K::kBRow);
        step_end(af);
      }
#pragma unroll
      for (int kx = 0; kx < 3; ++kx) wg::fence_operands(acc[kx]);
      ws::bar_arrive(ws::kEmpty + (y & 1), K::kThreads);
    }
  }
  store_partial<K>(a, acc, co0, ci0, ky, ci, t);
#else
  __trap();  // launched only where wgmma_built_on says the GPU runs this build's sm_90a code
#endif
}

// Blocks along the lines (a grid row; the grid's K::kRoles rows share them): a wave, or one a line if fewer.
template <class K>
int groups_of(int N, int H, int W) {
  const int64_t lines = int64_t(N) * strips_of<K>(W) * H;
  return int(std::max<int64_t>(1, std::min<int64_t>(lines, std::max(1, multiprocessors() / K::kRoles))));
}

// f(K64{}) or f(K128{}) by the channel count: the configurations one form of the kernel is compiled for.
template <class K64, class K128, class F>
void dispatch_width(int C, F&& f) {
  if (C == 64) return f(K64{});
  if (C == 128) return f(K128{});
  throw std::invalid_argument("guide wgrad: C must be 64 or 128");
}

// One launch of `kernel` (configuration K) on a.groups x K::kRoles blocks.
template <class K>
void launch(void (*kernel)(GuideWgradArgs), const GuideWgradArgs& a) {
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(K::kSmem)),
             "guide wgrad: shared memory attribute");
  kernel<<<dim3(a.groups, K::kRoles), K::kThreads, K::kSmem, a.stream>>>(a);
  check_cuda(cudaGetLastError(), "guide wgrad launch");
}

void check_sizes(int N, int H, int W) {
  if (N < 1 || H < 1 || W < 1) throw std::invalid_argument("guide wgrad: N, H and W must be positive");
}

}  // namespace

const char* guide_wgrad_groups(int C, int N, int H, int W, bool wgmma, int* groups) {
  return guarded([&] {
    check_sizes(N, H, W);
    if (wgmma)  // (the warp-specialized form takes the same blocks: its roles are the wgmma form's)
      dispatch_width<WgradWgmma64, WgradWgmma128>(C, [&](auto k) { *groups = groups_of<decltype(k)>(N, H, W); });
    else
      dispatch_width<Wgrad64, Wgrad128>(C, [&](auto k) { *groups = groups_of<decltype(k)>(N, H, W); });
  });
}

const char* guide_wgrad(const GuideWgradArgs& a) {
  return guarded([&] {
    check_sizes(a.N, a.H, a.W);
    auto run = [&](auto k, auto kernel) {
      using K = decltype(k);
      if (a.groups != groups_of<K>(a.N, a.H, a.W))
        throw std::invalid_argument("guide wgrad: groups must be guide_wgrad_groups' count");
      launch<K>(kernel, a);
    };
    if (a.wgmma && a.specialized)
      dispatch_width<WgradWgmmaWS<64>, WgradWgmmaWS<128>>(a.C,
                                                          [&](auto k) { run(k, wgrad_wgmma_ws_kernel<decltype(k)>); });
    else if (a.wgmma)
      dispatch_width<WgradWgmma64, WgradWgmma128>(a.C, [&](auto k) { run(k, wgrad_wgmma_kernel<decltype(k)>); });
    else
      dispatch_width<Wgrad64, Wgrad128>(a.C, [&](auto k) { run(k, wgrad_tf32_kernel<decltype(k)>); });
  });
}

}  // namespace kpnt
