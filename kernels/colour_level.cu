// One colour level of the KPN fused around the MLP (DESIGN.md section 2;
// the reference is kpnt/ref/colour_level.py; host interface in
// fused_mlp.cuh, colour_*).  Instantiated for the KPNT_COLOUR lines of
// kernels/shapes.def.
#include "mlp_core.cuh"
#include "mlp_bwd_wgmma.cuh"
#include "mlp_wgmma.cuh"

namespace kpnt {
namespace {


// Mirror index, edge not repeated, folding as often as needed
// (kpnt/ref/pad.py fold_indices with lo = 0, hi = n - 1).
__device__ __forceinline__ int fold(int i, int n) {
  if (i >= 0 && i < n) return i;
  if (n == 1) return 0;
  const int period = 2 * (n - 1);
  int r = i % period;
  if (r < 0) r += period;
  return r <= n - 1 ? r : period - r;
}

// Pixel rows are (image, y, x) in raster order over (N, h, w) images, fewer
// than 2^31 of them (colour_geo checks): decoded with FastDiv.
struct Geo {
  int h, w;
  int64_t hw;
  RowDecode rows;
  __device__ __forceinline__ void at(int64_t p, int64_t& n, int& y, int& x) const { rows.at(p, n, y, x); }
  // Offset of tap t of (y, x) inside one channel plane (mirrored at the borders).
  __device__ __forceinline__ int tap(int y, int x, int t) const {
    return fold(y + colour_tap_dy(t), h) * w + fold(x + colour_tap_dx(t), w);
  }
  // True if every tap of (y, x) lies inside the image: fold() is then the
  // identity and tap t is `lin(t)` from the site (callers branch once a row).
  __device__ __forceinline__ bool interior(int y, int x) const {
    return y >= kColourRadius && y < h - kColourRadius && x >= kColourRadius && x < w - kColourRadius;
  }
  // Offset of tap t from its site inside a plane, for interior sites.  It
  // depends on the lane's column and w only, so the compiler may keep it out
  // of the tile loop.
  __device__ __forceinline__ int lin(int t) const { return colour_tap_dy(t) * w + colour_tap_dx(t); }
};

struct MapIn {
  const float* fmap;
  Geo g;
  struct Row {
    const float* img;
    int y, x;
  };
  __device__ __forceinline__ Row row(int64_t p) const {
    int64_t n;
    Row r;
    g.at(p, n, r.y, r.x);
    r.img = fmap + n * 3 * g.hw;
    return r;
  }
  // Input j of any row: [0, 15) lum of tap j, [15, 30) chroma of tap j - 15, 30 noise input, 31 one.
  __device__ __forceinline__ float feat(const Row& r, int j) const {
    if (j < kColourTaps) return __ldg(r.img + g.tap(r.y, r.x, j));
    if (j < 2 * kColourTaps) return __ldg(r.img + g.hw + g.tap(r.y, r.x, j - kColourTaps));
    if (j == 2 * kColourTaps) return __ldg(r.img + 2 * g.hw + static_cast<int64_t>(r.y) * g.w + r.x);
    return 1.f;
  }
  // Input j of an interior row from the planes' pointers at its site.
  __device__ __forceinline__ float feat_inside(const float* lum, const float* chroma, int j) const {
    if (j < kColourTaps) return __ldg(lum + g.lin(j));
    if (j < 2 * kColourTaps) return __ldg(chroma + g.lin(j - kColourTaps));
    if (j == 2 * kColourTaps) return __ldg(chroma + g.hw);
    return 1.f;
  }
  // One row's A fragments (load_rows): inputs kb 16 + h8 8 + c + {0, 1};
  // interior rows read their taps without mirroring.
  template <int K>
  __device__ __forceinline__ void fill_row(uint32_t (&a)[K / 16][4], int hr, const Row& row, int c) const {
    if (g.interior(row.y, row.x)) {
      const float* lum = opaque(row.img + (row.y * g.w + row.x));
      const float* chroma = opaque(lum + g.hw);
#pragma unroll
      for (int kb = 0; kb < K / 16; ++kb)
#pragma unroll
        for (int h8 = 0; h8 < 2; ++h8) {
          const int j = kb * 16 + h8 * 8 + c;
          a[kb][2 * h8 + hr] = pack2(feat_inside(lum, chroma, j), feat_inside(lum, chroma, j + 1));
        }
    } else {
#pragma unroll
      for (int kb = 0; kb < K / 16; ++kb)
#pragma unroll
        for (int h8 = 0; h8 < 2; ++h8) {
          const int j = kb * 16 + h8 * 8 + c;
          a[kb][2 * h8 + hr] = pack2(feat(row, j), feat(row, j + 1));
        }
    }
  }
  template <int K, int R>
  __device__ __forceinline__ void load(uint32_t (&a)[R][K / 16][4], const int64_t (&rlo)[R], const int64_t (&rhi)[R],
                                       int lane) const {
    static_assert(K == kColourFeatures, "the colour level has 32 MLP inputs");
    load_rows<MapIn, K, R>(*this, a, rlo, rhi, lane);
  }
};

// Column of the q-th output a thread holds in accumulator layout (per row):
// c, c + 1, 8 + c, 9 + c with c = 2 * (lane % 4).

struct ApplyOut {
  const float* D;
  float* I;
  float* alpha;
  Geo g;
  ColourConsts k;
  __device__ __forceinline__ void row(const float (&o)[4], int64_t p, int c, int lane) const {
    float wq[4], den;
    bool den_free;
    kernel_weights<4>(o, c, 0, kColourTaps, k, wq, den, den_free);
    float acc[3] = {0.f, 0.f, 0.f};
    int64_t n = 0;
    int y = 0, x = 0;
    if (p >= 0) {
      g.at(p, n, y, x);
      const float* img = D + n * 3 * g.hw;
      if (g.interior(y, x)) {
        const float* centre = opaque(img + (y * g.w + x));
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int t = out_col(q, c);
          if (t < kColourTaps) {
            const float* at = centre + g.lin(t);
#pragma unroll
            for (int ch = 0; ch < 3; ++ch) acc[ch] = fmaf(wq[q], __ldg(at + ch * g.hw), acc[ch]);
          }
        }
      } else {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int t = out_col(q, c);
          if (t < kColourTaps) {
            const int off = g.tap(y, x, t);
#pragma unroll
            for (int ch = 0; ch < 3; ++ch) acc[ch] = fmaf(wq[q], __ldg(img + ch * g.hw + off), acc[ch]);
          }
        }
      }
    }
#pragma unroll
    for (int ch = 0; ch < 3; ++ch) acc[ch] = quad_sum(acc[ch]);
    if (p < 0) return;
    const int64_t pix = static_cast<int64_t>(y) * g.w + x;
    // Every lane of the quad holds the sums: lanes 0-2 write one channel each
    // (one store instruction a row for the warp instead of three).
    const int ch = lane & 3;
    if (ch < 3) I[(n * 3 + ch) * g.hw + pix] = ch == 0 ? acc[0] : ch == 1 ? acc[1] : acc[2];
    else alpha[n * g.hw + pix] = sigmoid(o[3]);  // lane 3 holds column 15: the blend logit
  }
  template <int OUT, int R>
  __device__ __forceinline__ void store(const float (&out)[R][OUT / 8][4], const int64_t (&rlo)[R],
                                        const int64_t (&rhi)[R], int lane) const {
    static_assert(OUT == kColourTaps + 1, "the colour level has 16 MLP outputs");
    const int c = 2 * (lane & 3);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float lo[4] = {out[r][0][0], out[r][0][1], out[r][1][0], out[r][1][1]};
      const float hi[4] = {out[r][0][2], out[r][0][3], out[r][1][2], out[r][1][3]};
      row(lo, rlo[r], c, lane);
      row(hi, rhi[r], c, lane);
    }
  }
};

// Backward head (the seed's dapply + the softmax/sigmoid derivatives):
// dL/dw_t = sum_c dL/dI_c(p) D_c(p + t); softmax: dL/do_t = w_t (g_t - sum w g);
// plain: (g_t - sum w g) / den (g_t / den where den was clamped);
// blend: dL/do_15 = dL/da a (1 - a).
struct ApplyDy {
  const float* D;
  const float* dI;
  const float* dalpha;
  Geo g;
  ColourConsts k;
  static constexpr bool kNeedsOut = true;
  __device__ __forceinline__ void row(float (&d)[4], const float (&o)[4], int64_t p, int c) const {
    float wq[4], den;
    bool den_free;
    kernel_weights<4>(o, c, 0, kColourTaps, k, wq, den, den_free);
    float gq[4] = {0.f, 0.f, 0.f, 0.f};
    float da = 0.f;
    if (p >= 0) {
      int64_t n;
      int y, x;
      g.at(p, n, y, x);
      const float* img = D + n * 3 * g.hw;
      const int64_t pix = static_cast<int64_t>(y) * g.w + x;
      float di[3];
#pragma unroll
      for (int ch = 0; ch < 3; ++ch) di[ch] = __ldg(dI + (n * 3 + ch) * g.hw + pix);
      da = __ldg(dalpha + n * g.hw + pix);
      const bool inside = g.interior(y, x);
      const float* centre = opaque(img + (y * g.w + x));
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int t = out_col(q, c);
        if (t < kColourTaps) {
          // Interior sites: the tap's offset from the site (no mirroring).
          const float* at = inside ? centre + g.lin(t) : img + g.tap(y, x, t);
#pragma unroll
          for (int ch = 0; ch < 3; ++ch) gq[q] = fmaf(di[ch], __ldg(at + ch * g.hw), gq[q]);
        }
      }
    }
    float dot = 0.f;
#pragma unroll
    for (int q = 0; q < 4; ++q) dot = fmaf(wq[q], gq[q], dot);
    dot = quad_sum(dot);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      if (out_col(q, c) < kColourTaps) {
        if (!k.plain) d[q] = wq[q] * (gq[q] - dot);
        else d[q] = den_free ? (gq[q] - dot) / den : gq[q] / den;
      } else {
        const float av = sigmoid(o[q]);
        d[q] = da * av * (1.f - av);
      }
      if (p < 0) d[q] = 0.f;
    }
  }
  template <int OUT>
  __device__ __forceinline__ void grad(float (&gy)[OUT / 8][4], const float (&out)[OUT / 8][4], int64_t rlo,
                                       int64_t rhi, int lane) const {
    static_assert(OUT == kColourTaps + 1, "the colour level has 16 MLP outputs");
    const int c = 2 * (lane & 3);
    const float lo[4] = {out[0][0], out[0][1], out[1][0], out[1][1]};
    const float hi[4] = {out[0][2], out[0][3], out[1][2], out[1][3]};
    float dlo[4], dhi[4];
    row(dlo, lo, rlo, c);
    row(dhi, hi, rhi, c);
    gy[0][0] = dlo[0];
    gy[0][1] = dlo[1];
    gy[1][0] = dlo[2];
    gy[1][1] = dlo[3];
    gy[0][2] = dhi[0];
    gy[0][3] = dhi[1];
    gy[1][2] = dhi[2];
    gy[1][3] = dhi[3];
  }
};

// Per-pixel maps of the colour features (kpnt/ref/features.py detail_maps,
// kpnt/ref/noise.py noise_feature): fmap = [asinh lum, asinh chroma, noise].
__global__ void colour_maps_kernel(const float* __restrict__ D, const float* __restrict__ var,
                                   float* __restrict__ fmap, int64_t total, int64_t hw, ColourFeatureConsts fc) {
  const float kSqrt3 = 1.7320508075688772f, kInvSqrt2 = 0.7071067811865476f;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < total;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t n = p / hw, r = p - n * hw;
    const int64_t b = n * 3 * hw + r;
    const float sigma = sqrtf((__ldg(var + b) + __ldg(var + b + hw) + __ldg(var + b + 2 * hw)) / 3.f);
    const float u0 = __ldg(D + b) / sigma, u1 = __ldg(D + b + hw) / sigma, u2 = __ldg(D + b + 2 * hw) / sigma;
    const float mu = (u0 + u1 + u2) / 3.f;
    const float ss = (u0 - mu) * (u0 - mu) + (u1 - mu) * (u1 - mu) + (u2 - mu) * (u2 - mu);
    const float chroma = (sqrtf(ss + fc.chroma_eps * fc.chroma_eps) - fc.chroma_eps) * kInvSqrt2;
    fmap[b] = asinhf(mu * kSqrt3);
    fmap[b + hw] = asinhf(chroma);
    fmap[b + 2 * hw] = fc.noise_input ? (logf(sigma) - fc.noise_centre) / fc.noise_scale : 0.f;
  }
}


// ---- colour level launchers

MlpArgs colour_mlp_args(const ColourArgs& c) {
  MlpArgs a;
  a.dims = c.dims;
  a.P = c.N * static_cast<int64_t>(c.h) * c.w;
  a.groups = 1;
  a.x = nullptr;
  a.w = c.w16;
  a.perm = nullptr;
  a.offsets = nullptr;
  a.slope = c.slope;
  a.stream = c.stream;
  a.workspace = c.workspace;
  a.wgmma = c.wgmma;
  a.wgmma_bwd = c.wgmma_bwd;
  return a;
}

Geo colour_geo(const ColourArgs& c) {
  const int64_t hw = static_cast<int64_t>(c.h) * c.w;
  check_fused_rows("colour_level", c.N * hw);
  return Geo{c.h, c.w, hw, RowDecode(hw, c.w)};
}

ColourConsts colour_consts(const ColourArgs& c) { return ColourConsts{c.plain ? 1 : 0, c.plain_eps}; }

void launch_colour_maps(const ColourArgs& c, const float* var, float* fmap) {
  const int64_t hw = static_cast<int64_t>(c.h) * c.w, total = c.N * hw;
  if (total == 0) return;
  const int threads = 256;
  const int64_t want = (total + threads - 1) / threads;
  const int blocks = static_cast<int>(std::min<int64_t>(want, int64_t(multiprocessors()) * 16));
  colour_maps_kernel<<<blocks, threads, 0, c.stream>>>(c.D, var, fmap, total, hw, c.fc);
  check_cuda(cudaGetLastError(), "colour maps launch");
}

// Calls f(Cfg<...>{}) for the KPNT_COLOUR line of kernels/shapes.def whose
// MLP is `d`.  The tap positions are compiled in (colour_tap_dy/dx), so a
// line must name the diamond's 15 taps and its 32 inputs / 16 outputs.
template <class F>
bool dispatch_colour(const MlpDims& d, F&& f) {
#define KPNT_COLOUR(taps, i, h, o, n, train)                                                               \
  static_assert((taps) == kColourTaps, "kernels/shapes.def: the fused colour level has the 15-tap diamond"); \
  static_assert((i) == kColourFeatures && (o) == kColourTaps + 1,                                          \
                "kernels/shapes.def: a colour line has 32 MLP inputs and 16 outputs");                     \
  if (d.in == i && d.hidden == h && d.out == o && d.n_hidden == n) {                                       \
    f(Cfg<i, h, o, n, (train) != 0>{});                                                                    \
    return true;                                                                                           \
  }
#define KPNT_FRONT(...)
#include "shapes.def"
#undef KPNT_FRONT
#undef KPNT_COLOUR
  return false;
}

}  // namespace

const char* colour_forward(const ColourArgs& c, const float* var, float* fmap, float* I, float* alpha) {
  return guarded([&] {
    if (!dispatch_colour(c.dims, [](auto) {})) not_compiled("colour_level", c.dims);
    const Geo g = colour_geo(c);  // checks the row count before anything launches
    launch_colour_maps(c, var, fmap);
    dispatch_colour(c.dims, [&](auto cfg) {
      launch_forward_any<decltype(cfg)>(colour_mlp_args(c), MapIn{fmap, g},
                                        ApplyOut{c.D, I, alpha, g, colour_consts(c)});
    });
  });
}

const char* colour_bwd_blocks(const ColourArgs& c, int* blocks) {
  return guarded([&] {
    if (!dispatch_colour(c.dims, [&](auto cfg) {
          using C = decltype(cfg);
          if constexpr (C::BWD) *blocks = backward_blocks_any<C, MapIn, ApplyDy>(colour_mlp_args(c));
          else forward_only(c.dims);
        }))
      not_compiled("colour_level", c.dims);
  });
}

const char* colour_backward(const ColourArgs& c, const float* fmap, const float* dI, const float* dalpha,
                            float* dw_partial) {
  return guarded([&] {
    const Geo g = colour_geo(c);
    if (!dispatch_colour(c.dims, [&](auto cfg) {
          using C = decltype(cfg);
          if constexpr (C::BWD) {
            launch_backward_any<C>(colour_mlp_args(c), MapIn{fmap, g}, ApplyDy{c.D, dI, dalpha, g, colour_consts(c)},
                                   nullptr, dw_partial);
          } else {
            forward_only(c.dims);
          }
        }))
      not_compiled("colour_level", c.dims);
  });
}

}  // namespace kpnt
