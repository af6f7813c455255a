// The mosaic front level fused around the grouped MLP (DESIGN.md section 3;
// the reference is kpnt/ref/front_level.py; host interface in fused_mlp.cuh,
// front_*).  Instantiated for the KPNT_FRONT lines of kernels/shapes.def:
// taps, kernels per pixel and MLP shape come from the line, so a new front
// variant of this structure (another radius, width or depth) is one line there.
#include "mlp_core.cuh"
#include "mlp_bwd_wgmma.cuh"
#include "mlp_wgmma.cuh"

#include <type_traits>

namespace kpnt {
namespace {

// Pixel rows are (image, y, x) in raster order over (N, H, W) mosaics, fewer
// than 2^31 of them (front_geo checks): decoded with FastDiv, not `/` and `%`.
// Tap t of the site at (y, x) lies at (y, x) + tap_off[pos(y, x)][t]
// (the class's canonical taps, cfa.canonical_offsets, all within
// `radius` of the site: kpnt/ops/_cuda/front_level.py checks); outside the
// image it reads 0 (the reference zero-pads).
struct FGeo {
  int H, W, P, T, radius;
  int64_t HW;
  const int32_t* tap_off;  // (P * P, T, 2)
  RowDecode rows;
  FastDiv div_p;
  __device__ __forceinline__ void at(int64_t p, int64_t& n, int& y, int& x) const { rows.at(p, n, y, x); }
  __device__ __forceinline__ int pos(int y, int x) const {
    return static_cast<int>(div_p.mod(static_cast<uint32_t>(y)) * P + div_p.mod(static_cast<uint32_t>(x)));
  }
  // True if every tap of (y, x) lies inside the image (no bounds checks needed).
  __device__ __forceinline__ bool interior(int y, int x) const {
    return y >= radius && y < H - radius && x >= radius && x < W - radius;
  }
  // The site's canonical tap offsets: taps_of(ps)[t] = (dy, dx) of tap t.
  __device__ __forceinline__ const int2* taps_of(int ps) const {
    return reinterpret_cast<const int2*>(tap_off) + ps * T;
  }
  // A plane's value at the tap whose offset is taps[t], 0 outside the image;
  // centre = the plane's pointer at (y, x).  INSIDE: interior(y, x) holds,
  // so the bounds checks are compiled out (the callers branch once a row,
  // not once a tap).  Callers with a compile-time t pass taps already offset
  // by their lane's column, so the table load takes an immediate offset and
  // each tap costs a table load, one multiply-add, one address and the read.
  template <bool INSIDE>
  __device__ __forceinline__ float read_tap(const float* centre, int y, int x, const int2* taps, int t) const {
    const int2 o = __ldg(taps + t);
    if (!INSIDE) {
      const int yy = y + o.x, xx = x + o.y;
      if (yy < 0 || yy >= H || xx < 0 || xx >= W) return 0.f;
    }
    return __ldg(centre + (o.x * W + o.y));
  }
};

// Inputs of a front pixel from fmap (N, 4, H, W) = [d, asinh(d / sigma),
// noise input, d asinh(d / sigma) / d d]: [0, T) snr of the taps, T noise
// input, T + 1 one, the rest 0.
struct FrontIn {
  const float* fmap;
  FGeo g;
  struct Row {
    const float* img;
    int y, x, ps;
    bool inside;
  };
  __device__ __forceinline__ Row row(int64_t p) const {
    int64_t n;
    Row r;
    g.at(p, n, r.y, r.x);
    r.img = fmap + n * 4 * g.HW;
    r.ps = g.pos(r.y, r.x);
    r.inside = g.interior(r.y, r.x);
    return r;
  }
  // Input j of a row, any j.
  __device__ __forceinline__ float feat(const Row& r, int j) const {
    if (j < g.T) return g.read_tap<false>(r.img + g.HW + (r.y * g.W + r.x), r.y, r.x, g.taps_of(r.ps), j);
    if (j == g.T) return __ldg(r.img + 2 * g.HW + static_cast<int64_t>(r.y) * g.W + r.x);
    return j == g.T + 1 ? 1.f : 0.f;
  }
  // One row's A fragments (load_rows): inputs kb 16 + h8 8 + c + {0, 1}.
  // Blocks of 8 inputs that are all taps (j0 + 8 <= T, a branch uniform
  // over the warp) read them straight, interior rows without bounds checks;
  // the block with the noise input and the constant goes through feat().
  template <int K>
  __device__ __forceinline__ void fill_row(uint32_t (&a)[K / 16][4], int hr, const Row& row, int c) const {
    if (row.inside) fill_taps<true, K>(a, hr, row, c);
    else fill_taps<false, K>(a, hr, row, c);
  }
  template <bool INSIDE, int K>
  __device__ __forceinline__ void fill_taps(uint32_t (&a)[K / 16][4], int hr, const Row& row, int c) const {
    const float* snr = opaque(row.img + g.HW + (row.y * g.W + row.x));
    const int2* taps = g.taps_of(row.ps) + c;
#pragma unroll
    for (int kb = 0; kb < K / 16; ++kb)
#pragma unroll
      for (int h8 = 0; h8 < 2; ++h8) {
        const int j0 = kb * 16 + h8 * 8, j = j0 + c;
        float v0, v1;
        if (j0 + 8 <= g.T) {
          v0 = g.read_tap<INSIDE>(snr, row.y, row.x, taps, j0);
          v1 = g.read_tap<INSIDE>(snr, row.y, row.x, taps, j0 + 1);
        } else {
          v0 = feat(row, j);
          v1 = feat(row, j + 1);
        }
        a[kb][2 * h8 + hr] = pack2(v0, v1);
      }
  }
  template <int K, int R>
  __device__ __forceinline__ void load(uint32_t (&a)[R][K / 16][4], const int64_t (&rlo)[R], const int64_t (&rhi)[R],
                                       int lane) const {
    load_rows<FrontIn, K, R>(*this, a, rlo, rhi, lane);
  }
};

// The NQ = OUT / 4 outputs a thread holds of row `hr` (0: c0/c1, 1: c2/c3).
template <int OUT>
__device__ __forceinline__ void row_outputs(float (&o)[OUT / 4], const float (&acc)[OUT / 8][4], int hr) {
#pragma unroll
  for (int j = 0; j < OUT / 8; ++j) {
    o[2 * j] = acc[j][2 * hr];
    o[2 * j + 1] = acc[j][2 * hr + 1];
  }
}

// Shared by the forward epilogue and the backward head of the front level:
// kernel weights, blend, and the taps' details of one row.
template <int NQ>
struct FrontRow {
  float wq[NQ], dt[NQ], den, sig, applied;  // applied = sum_t w_t d_t (whole row)
  bool den_free;
  __device__ __forceinline__ void eval(const float (&o)[NQ], const float* img, int y, int x, int ps, bool valid,
                                       int c, const FGeo& g, const ColourConsts& k) {
    kernel_weights<NQ>(o, c, 0, g.T, k, wq, den, den_free);
    float bl = 0.f, part = 0.f;
#pragma unroll
    for (int q = 0; q < NQ; ++q) {
      if (out_col(q, c) == g.T) bl = o[q];
      dt[q] = 0.f;
    }
    // No shuffles inside this branch (rows of one warp may take either side).
    if (valid) {
      const float* centre = opaque(img + (y * g.W + x));
      if (g.interior(y, x)) details<true>(centre, y, x, g.taps_of(ps) + c, c, g);
      else details<false>(centre, y, x, g.taps_of(ps) + c, c, g);
    }
#pragma unroll
    for (int q = 0; q < NQ; ++q) part = fmaf(wq[q], dt[q], part);
    sig = sigmoid(quad_sum(bl));
    applied = quad_sum(part);
  }
  // dt[q] = d at tap out_col(q, c) for the thread's columns that are taps
  // (centre: d at the row's site; taps: the site's tap table + c).  Columns
  // q, q + 1 (q even) lie in the block of 8 starting at (q / 2) 8: a block
  // wholly below T reads its two taps straight.
  template <bool INSIDE>
  __device__ __forceinline__ void details(const float* centre, int y, int x, const int2* taps, int c,
                                          const FGeo& g) {
#pragma unroll
    for (int q = 0; q < NQ; q += 2) {
      const int col0 = (q >> 1) * 8;
      if (col0 + 8 <= g.T) {
        dt[q] = g.read_tap<INSIDE>(centre, y, x, taps, col0);
        dt[q + 1] = g.read_tap<INSIDE>(centre, y, x, taps, col0 + 1);
      } else {
        if (col0 + c < g.T) dt[q] = g.read_tap<INSIDE>(centre, y, x, taps, col0);
        if (col0 + c + 1 < g.T) dt[q + 1] = g.read_tap<INSIDE>(centre, y, x, taps, col0 + 1);
      }
    }
  }
};

// Forward epilogue: O_c(p) = U_c(p) + sigmoid(o_T) sum_t w_t d(p + M_p t).
// Calls f(o, p, n, y, x) for each of the 2 R rows whose outputs this
// thread's quad holds (forward epilogues of the front level): o the
// thread's OUT / 4 outputs of the row, p its memory row (-1 past the end,
// then n = y = x = 0), (n, y, x) its photosite.
template <int OUT, int R, class F>
__device__ __forceinline__ void each_front_row(const float (&out)[R][OUT / 8][4], const int64_t (&rlo)[R],
                                               const int64_t (&rhi)[R], const FGeo& g, F&& f) {
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int64_t p = hr ? rhi[r] : rlo[r];
      float o[OUT / 4];
      row_outputs<OUT>(o, out[r], hr);
      int64_t n = 0;
      int y = 0, x = 0;
      if (p >= 0) g.at(p, n, y, x);
      f(o, p, n, y, x);
    }
}

struct FrontOut {
  const float* fmap;
  const float* U;
  float* O;
  FGeo g;
  ColourConsts k;
  template <int OUT, int R>
  __device__ __forceinline__ void store(const float (&out)[R][OUT / 8][4], const int64_t (&rlo)[R],
                                        const int64_t (&rhi)[R], int lane) const {
    constexpr int NQ = OUT / 4;
    const int c = 2 * (lane & 3);
    each_front_row<OUT, R>(out, rlo, rhi, g, [&](const float (&o)[NQ], int64_t p, int64_t n, int y, int x) {
      FrontRow<NQ> fr;
      fr.eval(o, fmap + n * 4 * g.HW, y, x, g.pos(y, x), p >= 0, c, g, k);
      // Every lane of the quad holds the row's sums: lanes 0-2 update one channel each.
      if (p >= 0 && (lane & 3) < 3) {
        const float delta = fr.sig * fr.applied;
        const int64_t i = (n * 3 + (lane & 3)) * g.HW + static_cast<int64_t>(y) * g.W + x;
        O[i] = __ldg(U + i) + delta;
      }
    });
  }
};

// Per-channel kernels (FrontOutRoles, FrontDyRoles): the tap detail of
// every kernel column the thread holds of one row (column r T + t reads tap
// t; 0 outside the image or when !valid; each tap is read once per role that
// holds it, the three roles' columns lie in different lanes), and the row's
// blend sigmoid(o_3T).  All 32 lanes call this together (quad sum).
template <int NQ>
__device__ __forceinline__ float role_details(float (&dt)[NQ], const float (&o)[NQ], const float* img, int y, int x,
                                              int ps, bool valid, int c, const FGeo& g) {
  const int T = g.T;
  const bool inside = g.interior(y, x);
  const float* centre = img + (y * g.W + x);
  const int2* taps = g.taps_of(ps);
  float bl = 0.f;
#pragma unroll
  for (int q = 0; q < NQ; ++q) {
    const int col = out_col(q, c);
    if (col == 3 * T) bl = o[q];
    dt[q] = 0.f;
    if (valid && col < 3 * T) {
      const int t = col - (col >= T ? T : 0) - (col >= 2 * T ? T : 0);
      dt[q] = inside ? g.read_tap<true>(centre, y, x, taps, t) : g.read_tap<false>(centre, y, x, taps, t);
    }
  }
  return sigmoid(quad_sum(bl));
}

// Forward epilogue of per-channel front kernels (ModelConfig.front_kernels
// 'per_channel'; reference: front_level with kernels='per_channel'): columns
// [r T, (r + 1) T) are the kernel of role r, column 3 T the blend logit, and
// O_{roles[r]}(p) = U_{roles[r]}(p) + sigmoid(o_3T) sum_t w_{r,t} d(p + M_p t),
// roles (P * P, 3) the output channel of each role per repeat position
// (kpnt/ref/front_layout.py front_roles: a permutation of the three channels).
struct FrontOutRoles {
  const float* fmap;
  const float* U;
  float* O;
  FGeo g;
  ColourConsts k;
  const int32_t* roles;
  template <int OUT, int R>
  __device__ __forceinline__ void store(const float (&out)[R][OUT / 8][4], const int64_t (&rlo)[R],
                                        const int64_t (&rhi)[R], int lane) const {
    constexpr int NQ = OUT / 4;
    const int c = 2 * (lane & 3);
    const int T = g.T;
    each_front_row<OUT, R>(out, rlo, rhi, g, [&](const float (&o)[NQ], int64_t p, int64_t n, int y, int x) {
      const int ps = g.pos(y, x);
      const float* img = fmap + n * 4 * g.HW;
      float dt[NQ];
      const float sig = role_details<NQ>(dt, o, img, y, x, ps, p >= 0, c, g);
      float delta[3];
#pragma unroll
      for (int role = 0; role < 3; ++role) {
        float wq[NQ], den;
        bool den_free;
        kernel_weights<NQ>(o, c, role * T, T, k, wq, den, den_free);
        float part = 0.f;
#pragma unroll
        for (int q = 0; q < NQ; ++q) part = fmaf(wq[q], dt[q], part);
        delta[role] = sig * quad_sum(part);
      }
      // Lanes 0-2 of the quad update one role's channel each (delta[] by
      // selects: a runtime index would put the array in local memory).
      const int role = lane & 3;
      if (p >= 0 && role < 3) {
        const int64_t i = (n * 3 + __ldg(roles + ps * 3 + role)) * g.HW + static_cast<int64_t>(y) * g.W + x;
        O[i] = __ldg(U + i) + (role == 0 ? delta[0] : role == 1 ? delta[1] : delta[2]);
      }
    });
  }
};

// Backward head: with g = sum_c dL/dO_c(p): dL/dw_t = g sig d_t, then the
// softmax/plain derivative; dL/do_T = g (sum_t w_t d_t) sig (1 - sig).
// Also writes abuf[p][t] = g sig w_t, the apply path's dL/dd at tap t
// (the adjoint kernel gathers it back onto the photosites).
struct FrontDy {
  const float* fmap;
  const float* dO;
  float* abuf;  // (rows, 32)
  FGeo g;
  ColourConsts k;
  static constexpr bool kNeedsOut = true;
  template <int OUT>
  __device__ __forceinline__ void grad(float (&gy)[OUT / 8][4], const float (&out)[OUT / 8][4], int64_t rlo,
                                       int64_t rhi, int lane) const {
    constexpr int NQ = OUT / 4;
    const int c = 2 * (lane & 3);
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int64_t p = hr ? rhi : rlo;
      float o[NQ];
      row_outputs<OUT>(o, out, hr);
      int64_t n = 0;
      int y = 0, x = 0;
      if (p >= 0) g.at(p, n, y, x);
      FrontRow<NQ> fr;
      fr.eval(o, fmap + n * 4 * g.HW, y, x, g.pos(y, x), p >= 0, c, g, k);
      float gs = 0.f;
      if (p >= 0) {
        const int64_t pix = static_cast<int64_t>(y) * g.W + x;
#pragma unroll
        for (int ch = 0; ch < 3; ++ch) gs += __ldg(dO + (n * 3 + ch) * g.HW + pix);
      }
      float gw[NQ], dot = 0.f;
#pragma unroll
      for (int q = 0; q < NQ; ++q) {
        gw[q] = gs * fr.sig * fr.dt[q];
        dot = fmaf(fr.wq[q], gw[q], dot);
      }
      dot = quad_sum(dot);
      float d[NQ];
#pragma unroll
      for (int q = 0; q < NQ; ++q) {
        const int col = out_col(q, c);
        if (col < g.T) {
          if (!k.plain) d[q] = fr.wq[q] * (gw[q] - dot);
          else d[q] = fr.den_free ? (gw[q] - dot) / fr.den : gw[q] / fr.den;
        } else if (col == g.T) {
          d[q] = gs * fr.applied * fr.sig * (1.f - fr.sig);
        } else {
          d[q] = 0.f;
        }
        if (p < 0) d[q] = 0.f;
      }
#pragma unroll
      for (int j = 0; j < OUT / 8; ++j) {
        gy[j][2 * hr] = d[2 * j];
        gy[j][2 * hr + 1] = d[2 * j + 1];
        if (p >= 0) {
          const int col = j * 8 + c;
          const float a0 = col < g.T ? gs * fr.sig * fr.wq[2 * j] : 0.f;
          const float a1 = col + 1 < g.T ? gs * fr.sig * fr.wq[2 * j + 1] : 0.f;
          *reinterpret_cast<float2*>(abuf + p * OUT + col) = make_float2(a0, a1);
        }
      }
    }
  }
};

// Backward head of per-channel kernels (FrontOutRoles): with g_r = dL/dO at
// role r's channel, dL/dw_{r,t} = g_r sig d_t through role r's softmax/plain
// normalisation, dL/do_3T = sum_r g_r (sum_t w_{r,t} d_t) sig (1 - sig), and
// abuf[p][r T + t] = g_r sig w_{r,t} (the adjoint kernel sums the three roles).
struct FrontDyRoles {
  const float* fmap;
  const float* dO;
  float* abuf;  // (rows, OUT)
  FGeo g;
  ColourConsts k;
  const int32_t* roles;
  static constexpr bool kNeedsOut = true;
  template <int OUT>
  __device__ __forceinline__ void grad(float (&gy)[OUT / 8][4], const float (&out)[OUT / 8][4], int64_t rlo,
                                       int64_t rhi, int lane) const {
    constexpr int NQ = OUT / 4;
    const int c = 2 * (lane & 3);
    const int T = g.T;
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      const int64_t p = hr ? rhi : rlo;
      float o[NQ];
      row_outputs<OUT>(o, out, hr);
      int64_t n = 0;
      int y = 0, x = 0;
      if (p >= 0) g.at(p, n, y, x);
      const int ps = g.pos(y, x);
      const float* img = fmap + n * 4 * g.HW;
      float dt[NQ];
      const float sig = role_details<NQ>(dt, o, img, y, x, ps, p >= 0, c, g);
      float d[NQ], av[NQ];
#pragma unroll
      for (int q = 0; q < NQ; ++q) d[q] = av[q] = 0.f;
      float blend = 0.f;
#pragma unroll
      for (int role = 0; role < 3; ++role) {
        float gr = 0.f;
        if (p >= 0) {
          const int64_t pix = static_cast<int64_t>(y) * g.W + x;
          gr = __ldg(dO + (n * 3 + __ldg(roles + ps * 3 + role)) * g.HW + pix);
        }
        float wq[NQ], den;
        bool den_free;
        kernel_weights<NQ>(o, c, role * T, T, k, wq, den, den_free);
        // wq is 0 outside the role's columns, so sum_q wq gw = g_r sig applied_r.
        float part = 0.f;
#pragma unroll
        for (int q = 0; q < NQ; ++q) part = fmaf(wq[q], dt[q], part);
        const float applied = quad_sum(part);
        blend = fmaf(gr, applied, blend);
        const float gs = gr * sig, dot = gs * applied;
#pragma unroll
        for (int q = 0; q < NQ; ++q) {
          if (!in_kernel(out_col(q, c), role * T, T)) continue;
          const float gw = gs * dt[q];
          if (!k.plain) d[q] = wq[q] * (gw - dot);
          else d[q] = den_free ? (gw - dot) / den : gw / den;
          av[q] = gs * wq[q];
        }
      }
#pragma unroll
      for (int q = 0; q < NQ; ++q) {
        if (out_col(q, c) == 3 * T) d[q] = blend * sig * (1.f - sig);
        if (p < 0) d[q] = 0.f;
      }
#pragma unroll
      for (int j = 0; j < OUT / 8; ++j) {
        gy[j][2 * hr] = d[2 * j];
        gy[j][2 * hr + 1] = d[2 * j + 1];
        if (p >= 0) *reinterpret_cast<float2*>(abuf + p * OUT + j * 8 + c) = make_float2(av[2 * j], av[2 * j + 1]);
      }
    }
  }
};

// fmap (N, 4, H, W) of the front level (kpnt/ref/front_level.py front_detail):
// d = x - U_c(q), sigma = sqrt(max(a_c S_c + b_c, floor)), snr = asinh(d / sigma),
// noise input, and d snr / d d = 1 / (sigma sqrt(1 + (d / sigma)^2)).
__global__ void front_maps_kernel(const float* __restrict__ xm, const float* __restrict__ U,
                                  const float* __restrict__ S, const float* __restrict__ noise,
                                  const int32_t* __restrict__ colour, FGeo g, float* __restrict__ fmap,
                                  int64_t total, float var_floor, ColourFeatureConsts fc) {
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < total;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t n;
    int y, x;
    g.at(q, n, y, x);
    const int col = __ldg(colour + g.pos(y, x));
    const int64_t pix = static_cast<int64_t>(y) * g.W + x;
    const float a = __ldg(noise + n * 6 + col), b = __ldg(noise + n * 6 + 3 + col);
    const float sg = sqrtf(fmaxf(a * __ldg(S + (n * 3 + col) * g.HW + pix) + b, var_floor));
    const float d = __ldg(xm + n * g.HW + pix) - __ldg(U + (n * 3 + col) * g.HW + pix);
    const float z = d / sg;
    float* img = fmap + n * 4 * g.HW + pix;
    img[0] = d;
    img[g.HW] = asinhf(z);
    img[2 * g.HW] = fc.noise_input ? (logf(sg) - fc.noise_centre) / fc.noise_scale : 0.f;
    img[3 * g.HW] = 1.f / (sg * sqrtf(1.f + z * z));
  }
}

// dL/dU (N, 3, H, W) = dL/dO - onehot(c(q)) dL/dd(q), with dL/dd(q) gathered
// from every (pixel p, tap t) that reads q (inv: per repeat position of q,
// (dy, dx, t) with p = q - (dy, dx); t < 0 pads): the apply path abuf[p][t]
// plus the feature path dx[p][t] times d snr / d d at q.  abuf rows are
// MLP-output wide (a_stride) and hold a_roles kernels' entries per tap (at
// r T + t; per-channel kernels: 3), dx rows MLP-input wide (b_stride).
__global__ void front_adjoint_kernel(FGeo g, const int32_t* __restrict__ colour, const int32_t* __restrict__ inv,
                                     int inv_len, int a_stride, int a_roles, int b_stride, const float* __restrict__ fmap,
                                     const float* __restrict__ abuf, const float* __restrict__ bbuf,
                                     const float* __restrict__ dO, float* __restrict__ dU, int64_t total) {
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < total;
       q += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t n;
    int y, x;
    g.at(q, n, y, x);
    const int ps = g.pos(y, x);
    float sa = 0.f, sb = 0.f;
    for (int e = 0; e < inv_len; ++e) {
      const int32_t* ent = inv + (static_cast<int64_t>(ps) * inv_len + e) * 3;
      const int t = __ldg(ent + 2);
      if (t < 0) continue;
      const int py = y - __ldg(ent), px = x - __ldg(ent + 1);
      if (py < 0 || py >= g.H || px < 0 || px >= g.W) continue;
      const int64_t prow = n * g.HW + static_cast<int64_t>(py) * g.W + px;
      for (int r = 0; r < a_roles; ++r) sa += __ldg(abuf + prow * a_stride + r * g.T + t);
      sb += __ldg(bbuf + prow * b_stride + t);
    }
    const int64_t pix = static_cast<int64_t>(y) * g.W + x;
    const float dd = sa + sb * __ldg(fmap + (n * 4 + 3) * g.HW + pix);
    const int col = __ldg(colour + ps);
#pragma unroll
    for (int ch = 0; ch < 3; ++ch) {
      const int64_t i = (n * 3 + ch) * g.HW + pix;
      dU[i] = __ldg(dO + i) - (ch == col ? dd : 0.f);
    }
  }
}

MlpArgs front_mlp_args(const FrontArgs& f) {
  MlpArgs a;
  a.dims = f.dims;
  a.P = f.N * static_cast<int64_t>(f.H) * f.W;
  a.groups = f.groups;
  a.x = nullptr;
  a.w = f.w16;
  a.perm = f.perm;
  a.offsets = f.row_offsets;
  a.slope = f.slope;
  a.stream = f.stream;
  a.workspace = f.workspace;
  a.wgmma = f.wgmma;
  a.wgmma_bwd = f.wgmma_bwd;
  a.spread = f.spread;
  return a;
}

FGeo front_geo(const FrontArgs& f) {
  const int64_t hw = static_cast<int64_t>(f.H) * f.W;
  check_fused_rows("front_level", f.N * hw);
  int side = 1;
  while (side * side < f.taps) ++side;
  if (side * side != f.taps || side % 2 == 0)
    throw std::invalid_argument("front_level: taps must be the (2 radius + 1)^2 square");
  return FGeo{f.H, f.W, f.period, f.taps, (side - 1) / 2, hw, f.tap_off, RowDecode(hw, f.W),
              FastDiv(static_cast<uint32_t>(f.period))};
}

// Calls f(Cfg<...>{}, std::integral_constant<int, kernels>{}) for the
// KPNT_FRONT line of kernels/shapes.def with MLP `d`, `kernels` kernels per
// pixel and `taps` taps ((2 radius + 1)^2).
template <class F>
bool dispatch_front(const MlpDims& d, int kernels, int taps, F&& f) {
#define KPNT_FRONT(radius, k, i, h, o, n, train)                                                              \
  static_assert((k) == 1 || (k) == 3, "kernels/shapes.def: front kernels per pixel are 1 (shared) or 3");     \
  static_assert((2 * (radius) + 1) * (2 * (radius) + 1) + 2 <= (i) &&                                         \
                    (k) * (2 * (radius) + 1) * (2 * (radius) + 1) + 1 <= (o),                                 \
                "kernels/shapes.def: the front MLP needs taps + 2 inputs and kernels x taps + 1 outputs");    \
  if (d.in == i && d.hidden == h && d.out == o && d.n_hidden == n && kernels == (k) &&                        \
      taps == (2 * (radius) + 1) * (2 * (radius) + 1)) {                                                      \
    f(Cfg<i, h, o, n, (train) != 0>{}, std::integral_constant<int, k>{});                                     \
    return true;                                                                                              \
  }
#define KPNT_COLOUR(...)
#include "shapes.def"
#undef KPNT_COLOUR
#undef KPNT_FRONT
  return false;
}

[[noreturn]] void front_not_compiled(const FrontArgs& f) {
  char what[96];
  std::snprintf(what, sizeof what, "front_level (%d taps, %d kernel(s) per pixel)", f.taps, f.kernels);
  not_compiled(what, f.dims);
}

}  // namespace

const char* front_forward(const FrontArgs& f, float* fmap, float* O) {
  return guarded([&] {
    if (!dispatch_front(f.dims, f.kernels, f.taps, [](auto, auto) {})) front_not_compiled(f);
    const int64_t total = f.N * static_cast<int64_t>(f.H) * f.W;
    if (total == 0) return;
    const FGeo g = front_geo(f);
    front_maps_kernel<<<elementwise_blocks(total, 256), 256, 0, f.stream>>>(
        f.x, f.U, f.S, f.noise, f.colour, g, fmap, total, f.var_floor, f.fc);
    check_cuda(cudaGetLastError(), "front maps launch");
    const ColourConsts k{f.plain ? 1 : 0, f.plain_eps};
    dispatch_front(f.dims, f.kernels, f.taps, [&](auto cfg, auto kernels) {
      using C = decltype(cfg);
      if constexpr (decltype(kernels)::value == 1) {
        launch_forward_any<C>(front_mlp_args(f), FrontIn{fmap, g}, FrontOut{fmap, f.U, O, g, k});
      } else {
        launch_forward_any<C>(front_mlp_args(f), FrontIn{fmap, g}, FrontOutRoles{fmap, f.U, O, g, k, f.roles});
      }
    });
  });
}

const char* front_bwd_blocks(const FrontArgs& f, int* blocks) {
  return guarded([&] {
    if (!dispatch_front(f.dims, f.kernels, f.taps, [&](auto cfg, auto kernels) {
          using C = decltype(cfg);
          if constexpr (!C::BWD) forward_only(f.dims);
          else if constexpr (decltype(kernels)::value == 1)
            *blocks = backward_blocks_any<C, FrontIn, FrontDy, true>(front_mlp_args(f));
          else *blocks = backward_blocks_any<C, FrontIn, FrontDyRoles, true>(front_mlp_args(f));  // its policies
        }))
      front_not_compiled(f);
  });
}

const char* front_backward(const FrontArgs& f, const float* fmap, const float* dO, float* abuf, float* bbuf,
                           float* dw_partial, float* dU) {
  return guarded([&] {
    const int64_t total = f.N * static_cast<int64_t>(f.H) * f.W;
    if (total == 0) return;
    const FGeo g = front_geo(f);
    const ColourConsts k{f.plain ? 1 : 0, f.plain_eps};
    if (!dispatch_front(f.dims, f.kernels, f.taps, [&](auto cfg, auto kernels) {
          using C = decltype(cfg);
          if constexpr (!C::BWD) {
            forward_only(f.dims);
          } else if constexpr (decltype(kernels)::value == 1) {
            launch_backward_any<C, true>(front_mlp_args(f), FrontIn{fmap, g}, FrontDy{fmap, dO, abuf, g, k}, bbuf,
                                         dw_partial);  // true: the classes may share the blocks (spread 0)
          } else {
            launch_backward_any<C, true>(front_mlp_args(f), FrontIn{fmap, g},
                                         FrontDyRoles{fmap, dO, abuf, g, k, f.roles}, bbuf, dw_partial);
          }
        }))
      front_not_compiled(f);
    front_adjoint_kernel<<<elementwise_blocks(total, 256), 256, 0, f.stream>>>(
        g, f.colour, f.inv, f.inv_len, f.dims.out, f.kernels, f.dims.in, fmap, abuf, bbuf, dO, dU, total);
    check_cuda(cudaGetLastError(), "front adjoint launch");
  });
}

}  // namespace kpnt
