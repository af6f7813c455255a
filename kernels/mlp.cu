// The plain fused MLP op (kpnt/ops/_cuda/mlp.py): row-major x (P, in) ->
// y (P, out), with optional weight groups, for every shape of
// kernels/shapes.def; plus the shape table the Python capability check reads.
#include "mlp_core.cuh"
#include "mlp_bwd_wgmma.cuh"
#include "mlp_wgmma.cuh"

namespace kpnt {
namespace {

// Calls f(Cfg<...>{}) for the line of kernels/shapes.def whose MLP is `d`
// (colour and front lines alike: the plain op runs every listed shape).
template <class F>
bool dispatch_mlp(const MlpDims& d, F&& f) {
#define KPNT_SHAPE(i, h, o, n, train)                                          \
  if (d.in == i && d.hidden == h && d.out == o && d.n_hidden == n) {           \
    f(Cfg<i, h, o, n, (train) != 0>{});                                        \
    return true;                                                               \
  }
#define KPNT_COLOUR(taps, i, h, o, n, train) KPNT_SHAPE(i, h, o, n, train)
#define KPNT_FRONT(radius, kernels, i, h, o, n, train) KPNT_SHAPE(i, h, o, n, train)
#include "shapes.def"
#undef KPNT_FRONT
#undef KPNT_COLOUR
#undef KPNT_SHAPE
  return false;
}

}  // namespace

int64_t mlp_n_weights(const MlpDims& d) {
  return static_cast<int64_t>(d.hidden) * d.in + static_cast<int64_t>(d.n_hidden - 1) * d.hidden * d.hidden +
         static_cast<int64_t>(d.out) * d.hidden;
}

const char* mlp_supported_configs() {
  // A string literal assembled by the preprocessor: no std::string crosses
  // into the bindings' translation unit, and no iostreams are used (both
  // crashed on the GPU machine, see fused_mlp.cuh).
#define KPNT_COLOUR(taps, i, h, o, n, train) \
  ", colour (taps=" #taps ", in=" #i ", hidden=" #h ", out=" #o ", n_hidden=" #n ", train=" #train ")"
#define KPNT_FRONT(radius, kernels, i, h, o, n, train)                                                             \
  ", front (radius=" #radius ", kernels=" #kernels ", in=" #i ", hidden=" #h ", out=" #o ", n_hidden=" #n \
  ", train=" #train ")"
  static const char names[] =
#include "shapes.def"
      "";
#undef KPNT_FRONT
#undef KPNT_COLOUR
  return names + 2;  // drop the leading ", "
}

const FusedShape* fused_shapes(int* count) {
  static const FusedShape rows[] = {
#define KPNT_COLOUR(taps, i, h, o, n, train) {0, taps, 0, i, h, o, n, train},
#define KPNT_FRONT(radius, kernels, i, h, o, n, train) {1, radius, kernels, i, h, o, n, train},
#include "shapes.def"
#undef KPNT_FRONT
#undef KPNT_COLOUR
  };
  *count = static_cast<int>(sizeof rows / sizeof rows[0]);
  return rows;
}

bool mlp_is_supported(const MlpDims& d) {
  return dispatch_mlp(d, [](auto) {});
}

int mlp_bwd_tile_rows() { return kBwdT; }

const char* mlp_forward(const MlpArgs& a, float* y) {
  return guarded([&] {
    if (!dispatch_mlp(a.dims, [&](auto cfg) {
          using C = decltype(cfg);
          if (a.workspace == nullptr) launch_forward_any<C>(a, RowsIn{a.x}, RowsOut{y});
          else if constexpr (C::BWD) launch_forward_store_any<C>(a, y);
          else forward_only(a.dims);
        }))
      not_compiled("fused_mlp", a.dims);
  });
}

const char* mlp_bwd_blocks(const MlpArgs& a, int* blocks) {
  return guarded([&] {
    if (!dispatch_mlp(a.dims, [&](auto cfg) {
          using C = decltype(cfg);
          if constexpr (C::BWD) *blocks = backward_blocks_any<C, RowsIn, RowsDy>(a);
          else forward_only(a.dims);
        }))
      not_compiled("fused_mlp", a.dims);
  });
}

const char* mlp_bwd_workspace_bytes(const MlpDims& d, int64_t P, int groups, int64_t* bytes) {
  return guarded([&] {
    if (!dispatch_mlp(d, [&](auto cfg) { *bytes = backward_workspace_bytes<decltype(cfg)>(P, groups); }))
      not_compiled("fused_mlp", d);
  });
}

const char* mlp_backward(const MlpArgs& a, const float* dy, float* dx, float* dw_partial) {
  return guarded([&] {
    if (!dispatch_mlp(a.dims, [&](auto cfg) {
          using C = decltype(cfg);
          if constexpr (C::BWD) launch_backward_any<C>(a, RowsIn{a.x}, RowsDy{dy}, dx, dw_partial);
          else forward_only(a.dims);
        }))
      not_compiled("fused_mlp", a.dims);
  });
}

}  // namespace kpnt
