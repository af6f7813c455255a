// Python bindings of kpnt's fused CUDA kernels (one module for all of kernels/).
//
// Tensor checks live here (the launchers in the .cu files take raw pointers):
// each names the argument, what was expected and what came.  kpnt/ops/_cuda/
// checks the same things first; these back them up.
#include <torch/extension.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>

#include <array>
#include <atomic>
#include <optional>
#include <type_traits>
#include <utility>
#include <stdexcept>
#include <string>
#include <vector>

#include "fused_mlp.cuh"

namespace {

// No exception may leave these functions (see fused_mlp.cuh: on the GPU
// machines one that reached pybind11 crashed the interpreter).  Every
// function returns its result, or an error as the tuple ("ValueError" |
// "RuntimeError", message), which kpnt/ops/_cuda/extension.py raises in Python.
// Checks throw std::invalid_argument inside the try block of `guarded`.
struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Messages are built with std::string only, and only on failure: on the GPU
// machine, code using std::ostringstream inside the extension crashed
// (kernels/fused_mlp.cuh).
inline std::string str(const std::string& s) { return s; }
inline std::string str(const char* s) { return s; }
inline std::string str(const c10::Device& d) { return d.str(); }
inline std::string str(at::ScalarType t) { return c10::toString(t); }
inline std::string str(at::IntArrayRef sizes) {
  std::string s = "(";
  for (size_t i = 0; i < sizes.size(); ++i) s += (i ? ", " : "") + std::to_string(sizes[i]);
  return s + (sizes.size() == 1 ? ",)" : ")");
}
template <class T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>
std::string str(T v) {
  return std::to_string(v);
}
template <class... T>
std::string cat(const T&... parts) {
  std::string s;
  ((s += str(parts)), ...);
  return s;
}

#define KPNT_REQUIRE(cond, ...)                                         \
  do {                                                                  \
    if (!(cond)) throw ValueError("fused_mlp: " + cat(__VA_ARGS__));    \
  } while (0)

std::string shape(const torch::Tensor& t) { return str(t.sizes()); }

template <class F>
py::object guarded(F&& f) {
  try {
    return f();
  } catch (const std::invalid_argument& e) {
    return py::make_tuple(py::str("ValueError"), py::str(e.what()));
  } catch (const c10::Error& e) {
    return py::make_tuple(py::str("RuntimeError"), py::str(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return py::make_tuple(py::str("RuntimeError"), py::str(e.what()));
  }
}

// Launcher result -> exception inside `guarded`.
void check_launch(const char* err) {
  if (err == nullptr) return;
  const std::string msg(err);
  const auto bar = msg.find('|');
  const std::string kind = msg.substr(0, bar), text = msg.substr(bar + 1);
  if (kind == "ValueError") throw ValueError(text);
  throw std::runtime_error(text);
}

kpnt::MlpDims dims_from(const std::vector<int64_t>& d) {
  KPNT_REQUIRE(d.size() == 4, "dims must be [in, hidden, out, n_hidden], got ", d.size(), " values");
  return kpnt::MlpDims{static_cast<int>(d[0]), static_cast<int>(d[1]), static_cast<int>(d[2]),
                       static_cast<int>(d[3])};
}

void check_cuda_tensor(const torch::Tensor& t, const char* name, at::ScalarType dtype, const torch::Tensor& like) {
  KPNT_REQUIRE(t.is_cuda(), name, " must be a CUDA tensor, got device ", t.device());
  KPNT_REQUIRE(t.device() == like.device(), name, " is on ", t.device(), ", x on ", like.device());
  KPNT_REQUIRE(t.scalar_type() == dtype, name, " must be ", dtype, ", got ", t.scalar_type());
  KPNT_REQUIRE(t.is_contiguous(), name, " must be contiguous");
}

// The kernels read float16 weights.  kpnt/ops/weights.py packs and converts
// them once per model forward and passes float16; a float32 buffer (direct
// calls) is converted here, into `w16`, which must outlive the launch.
void half_weights(const torch::Tensor& w, const torch::Tensor& like, torch::Tensor& w16) {
  KPNT_REQUIRE(w.is_cuda() && w.device() == like.device(), "weights must be on ", like.device(), ", got ",
               w.device());
  KPNT_REQUIRE(w.scalar_type() == at::kHalf || w.scalar_type() == at::kFloat,
               "weights must be float16 or float32, got ", w.scalar_type());
  w16 = w.scalar_type() == at::kHalf ? w.contiguous() : w.to(at::kHalf).contiguous();
}

// The kernels read rows of x and dL/dy 8 bytes at a time, and the wgmma
// backward stages them with 16-byte cp.async: a view at an offset that breaks
// that alignment is copied to fresh (aligned) memory; the caller's tensor is
// never written.
torch::Tensor aligned16(const torch::Tensor& t) {
  return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 != 0 ? t.clone() : t;
}

// Validates everything and fills the launcher arguments.  `w16` keeps the f16
// copy of the weights alive for the duration of the launch.
kpnt::MlpArgs make_args(const torch::Tensor& x, const torch::Tensor& w, const std::optional<torch::Tensor>& perm,
                        const std::optional<torch::Tensor>& offsets, const std::vector<int64_t>& dims, double slope,
                        torch::Tensor& w16) {
  const kpnt::MlpDims d = dims_from(dims);
  KPNT_REQUIRE(kpnt::mlp_is_supported(d), cat("no kernel for (in=", d.in, ", hidden=", d.hidden, ", out=", d.out,
                                         ", n_hidden=", d.n_hidden, "); compiled configurations: ",
                                         kpnt::mlp_supported_configs()));
  check_cuda_tensor(x, "x", at::kFloat, x);
  KPNT_REQUIRE(x.dim() == 2 && x.size(1) == d.in, "x must be (P, ", d.in, "), got ", shape(x));
  KPNT_REQUIRE(x.size(0) < (int64_t(1) << 31), "at most 2^31 - 1 pixels per call, got ", x.size(0));
  half_weights(w, x, w16);
  const int64_t nw = kpnt::mlp_n_weights(d);
  KPNT_REQUIRE((w.dim() == 1 && w.size(0) == nw) || (w.dim() == 2 && w.size(1) == nw && w.size(0) >= 1), "packed weights must be (", nw, ",) or (G, ", nw, "), got ", shape(w));
  const int groups = w.dim() == 2 ? static_cast<int>(w.size(0)) : 1;
  KPNT_REQUIRE(perm.has_value() == offsets.has_value(), "perm and offsets come together");
  KPNT_REQUIRE(groups == 1 || perm.has_value(), groups, " weight sets need perm and offsets");
  if (perm.has_value()) {
    check_cuda_tensor(*perm, "perm", at::kInt, x);
    check_cuda_tensor(*offsets, "offsets", at::kInt, x);
    KPNT_REQUIRE(perm->dim() == 1 && perm->size(0) == x.size(0), "perm must be (", x.size(0), ",), got ", shape(*perm));
    KPNT_REQUIRE(offsets->dim() == 1 && offsets->size(0) == groups + 1, "offsets must be (", groups + 1, ",), got ", shape(*offsets));
  }
  KPNT_REQUIRE(slope >= 0.0, "the leaky ReLU slope must be >= 0 (the backward reads the sign of the activation), "
                            "got ", slope);
  kpnt::MlpArgs a;
  a.dims = d;
  a.P = x.size(0);
  a.groups = groups;
  a.x = x.data_ptr<float>();
  a.w = w16.data_ptr();
  a.perm = perm.has_value() ? perm->data_ptr<int32_t>() : nullptr;
  a.offsets = offsets.has_value() ? offsets->data_ptr<int32_t>() : nullptr;
  a.slope = static_cast<float>(slope);
  a.stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  return a;
}

// Device workspace of a backward (the split backward of wide MLPs keeps
// activations and dZ there; mlp_bwd_workspace_bytes), kept alive by the
// returned tensor; *ptr is nullptr when the shape needs none.
torch::Tensor backward_workspace(const kpnt::MlpDims& d, int64_t P, int groups, const torch::Tensor& like,
                                 void** ptr) {
  int64_t bytes = 0;
  check_launch(kpnt::mlp_bwd_workspace_bytes(d, P, groups, &bytes));
  torch::Tensor ws = torch::empty({bytes}, like.options().dtype(at::kByte));
  *ptr = bytes > 0 ? ws.data_ptr() : nullptr;
  return ws;
}

// Whether GPU `device` runs this build's sm_90a code (the wgmma kernels: the guide block, the MLP forward and backward):
// asked of the GPU once per device (a one-thread kernel on the current stream, read back: a sync, so not while
// capturing a graph: asked then, it refuses with an error), then remembered for the module's life.
bool wgmma_built_on(const c10::Device& device) {
  static std::array<std::atomic<int>, 64> known{};  // per device index: 0 not asked, 1 no, 2 yes
  const int idx = device.index();
  const bool cached = idx >= 0 && idx < static_cast<int>(known.size());
  if (cached && known[idx].load() != 0) return known[idx].load() == 2;
  const c10::cuda::CUDAGuard guard(device);
  KPNT_REQUIRE(c10::cuda::currentStreamCaptureStatusMayInitCtx() == c10::cuda::CaptureStatus::None,
               "the fused kernels ask the GPU once whether it runs their wgmma code, which cannot happen while a CUDA "
               "graph is being captured: run one step (or call kpnt.ops._cuda.guide_block.wgmma_built) before "
               "capturing");
  torch::Tensor flag = torch::zeros({1}, torch::dtype(torch::kInt32).device(device));
  check_launch(kpnt::guide_block_wgmma_query(flag.data_ptr<int>(), c10::cuda::getCurrentCUDAStream(idx).stream()));
  const bool built = flag.item<int>() == 1;
  if (cached) known[idx].store(built ? 2 : 1);
  return built;
}

// The refusal of a backward on the wgmma kernel where the GPU does not run it (the shape's is the kernels').
constexpr const char* kWgmmaBackwardNeeds = "the wgmma backward needs a Hopper GPU and kernels built for 9.0a (CUDA 12 or later)";

// Why a forward of hidden width `hidden` cannot run on the wgmma kernel on
// `device`, or "" where it can (the MLP op and the colour level ask the same).
std::string wgmma_forward_refusal(int hidden, const c10::Device& device) {
  if (hidden != 64 && hidden != 128) return cat("the wgmma forward is compiled for hidden widths 64 and 128, got ", hidden);
  if (!wgmma_built_on(device)) return "the wgmma forward needs a Hopper GPU and kernels built for 9.0a (CUDA 12 or later)";
  return "";
}

namespace {

// y of mlp_forward, or (y, work) of mlp_forward_store (`store`).
py::object mlp_forward_impl(const torch::Tensor& x_in, const torch::Tensor& w,
                            const std::optional<torch::Tensor>& perm, const std::optional<torch::Tensor>& offsets,
                            const std::vector<int64_t>& dims, double slope, bool wgmma, bool store) {
  return guarded([&]() -> py::object {
    const c10::cuda::CUDAGuard guard(x_in.device());
    const torch::Tensor x = aligned16(x_in);
    torch::Tensor w16;
    kpnt::MlpArgs a = make_args(x, w, perm, offsets, dims, slope, w16);
    const std::string refusal = wgmma ? wgmma_forward_refusal(a.dims.hidden, x.device()) : "";
    KPNT_REQUIRE(refusal.empty(), refusal);
    a.wgmma = wgmma;
    torch::Tensor work;
    if (store) {
      work = backward_workspace(a.dims, a.P, a.groups, x, &a.workspace);
      KPNT_REQUIRE(work.numel() > 0, "only MLPs of hidden width 128 (the split backward) store their forward's "
                                     "activations, got hidden ", a.dims.hidden);
    }
    torch::Tensor y = torch::empty({x.size(0), a.dims.out}, x.options());
    check_launch(kpnt::mlp_forward(a, y.data_ptr<float>()));
    return store ? py::object(py::make_tuple(y, work)) : py::object(py::cast(y));
  });
}

}  // namespace

// y (P, out), or an error tuple.
py::object mlp_forward(const torch::Tensor& x, const torch::Tensor& w, const std::optional<torch::Tensor>& perm,
                       const std::optional<torch::Tensor>& offsets, const std::vector<int64_t>& dims,
                       double slope, bool wgmma) {
  return mlp_forward_impl(x, w, perm, offsets, dims, slope, wgmma, false);
}

// (y, work), or an error tuple: the training forward of a split-backward
// shape (hidden width 128), which also stores every layer's activations and
// their sign bits in `work` (uint8, mlp_bwd_workspace_bytes) for
// mlp_backward_stored.
py::object mlp_forward_store(const torch::Tensor& x, const torch::Tensor& w, const std::optional<torch::Tensor>& perm,
                             const std::optional<torch::Tensor>& offsets, const std::vector<int64_t>& dims,
                             double slope, bool wgmma) {
  return mlp_forward_impl(x, w, perm, offsets, dims, slope, wgmma, true);
}

namespace {

// (dx, dw) of mlp_backward and mlp_backward_stored: `stored` is the storing
// forward's workspace, or nullptr to recompute the forward.
py::object mlp_backward_impl(const torch::Tensor& x_in, const torch::Tensor& w,
                             const std::optional<torch::Tensor>& perm, const std::optional<torch::Tensor>& offsets,
                             const torch::Tensor& dy_in, const torch::Tensor* stored, const std::vector<int64_t>& dims,
                             double slope, bool need_dx, bool wgmma) {
  return guarded([&]() -> py::object {
    const c10::cuda::CUDAGuard guard(x_in.device());
    const torch::Tensor x = aligned16(x_in), dy = aligned16(dy_in);
    torch::Tensor w16;
    kpnt::MlpArgs a = make_args(x, w, perm, offsets, dims, slope, w16);
    KPNT_REQUIRE(!wgmma || wgmma_built_on(x.device()), kWgmmaBackwardNeeds);
    a.wgmma_bwd = wgmma;
    torch::Tensor work;
    if (stored == nullptr) {
      work = backward_workspace(a.dims, a.P, a.groups, x, &a.workspace);
    } else {
      int64_t bytes = 0;
      check_launch(kpnt::mlp_bwd_workspace_bytes(a.dims, a.P, a.groups, &bytes));
      KPNT_REQUIRE(bytes > 0, "a stored forward serves only MLPs of hidden width 128, got hidden ", a.dims.hidden);
      KPNT_REQUIRE(stored->is_cuda() && stored->device() == x.device() && stored->scalar_type() == at::kByte &&
                       stored->dim() == 1 && stored->numel() == bytes && stored->is_contiguous(),
                   "the stored forward's workspace must be a contiguous uint8 (", bytes, ",) tensor on ", x.device(),
                   " (what mlp_forward_store returned for these rows), got ", stored->scalar_type(), " ",
                   shape(*stored), " on ", stored->device());
      work = *stored;
      a.workspace = work.data_ptr();
      a.stored = true;
    }
    check_cuda_tensor(dy, "grad_output", at::kFloat, x);
    KPNT_REQUIRE(dy.dim() == 2 && dy.size(0) == x.size(0) && dy.size(1) == a.dims.out, "grad_output must be (", x.size(0), ", ", a.dims.out, "), got ", shape(dy));
    torch::Tensor dx = need_dx ? torch::empty_like(x) : torch::empty({0}, x.options());
    const int64_t nw = kpnt::mlp_n_weights(a.dims);
    int bx = 0;
    check_launch(kpnt::mlp_bwd_blocks(a, &bx));
    torch::Tensor partial = torch::empty({a.groups, bx, nw}, x.options());
    check_launch(
        kpnt::mlp_backward(a, dy.data_ptr<float>(), need_dx ? dx.data_ptr<float>() : nullptr, partial.data_ptr<float>()));
    torch::Tensor dw = partial.sum(1);
    if (w.dim() == 1) dw = dw.view({nw});
    return py::make_tuple(dx, dw);
  });
}

}  // namespace

// (dx, dw), or an error tuple: dx is (P, in), or empty when need_dx is false;
// dw has the shape of w (float32).  The forward is recomputed from x.
py::object mlp_backward(const torch::Tensor& x, const torch::Tensor& w, const std::optional<torch::Tensor>& perm,
                        const std::optional<torch::Tensor>& offsets, const torch::Tensor& dy,
                        const std::vector<int64_t>& dims, double slope, bool need_dx, bool wgmma) {
  return mlp_backward_impl(x, w, perm, offsets, dy, nullptr, dims, slope, need_dx, wgmma);
}

// Bytes of mlp_forward_store's `work` for P rows in `groups` weight sets (0:
// the shape keeps its backward in shared memory and stores nothing).
int64_t mlp_workspace_bytes(const std::vector<int64_t>& dims, int64_t P, int64_t groups) {
  int64_t bytes = 0;
  check_launch(kpnt::mlp_bwd_workspace_bytes(dims_from(dims), P, static_cast<int>(groups), &bytes));
  return bytes;
}

// As mlp_backward, from the activations mlp_forward_store left in `work`
// (the same x, weights, perm and offsets).
py::object mlp_backward_stored(const torch::Tensor& x, const torch::Tensor& w, const std::optional<torch::Tensor>& perm,
                               const std::optional<torch::Tensor>& offsets, const torch::Tensor& dy,
                               const torch::Tensor& work, const std::vector<int64_t>& dims, double slope,
                               bool need_dx, bool wgmma) {
  return mlp_backward_impl(x, w, perm, offsets, dy, &work, dims, slope, need_dx, wgmma);
}

// ---- colour level (kernels/fused_mlp.cuh, colour_*)

#define KPNT_REQUIRE_C(cond, ...)                                           \
  do {                                                                      \
    if (!(cond)) throw ValueError("colour_level: " + cat(__VA_ARGS__));     \
  } while (0)

// consts = [chroma_eps, noise_log_centre, noise_log_scale, plain_eps].
kpnt::ColourArgs make_colour_args(const torch::Tensor& D, const torch::Tensor& w, const std::vector<int64_t>& dims,
                                  double slope, bool plain, bool noise_input, const std::vector<double>& consts,
                                  torch::Tensor& w16) {
  const kpnt::MlpDims d = dims_from(dims);
  KPNT_REQUIRE(kpnt::mlp_is_supported(d), cat("no kernel for (in=", d.in, ", hidden=", d.hidden, ", out=", d.out,
                                         ", n_hidden=", d.n_hidden, "); compiled configurations: ",
                                         kpnt::mlp_supported_configs()));
  check_cuda_tensor(D, "D", at::kFloat, D);
  KPNT_REQUIRE_C(D.dim() == 4 && D.size(1) == 3, "D must be (N, 3, h, w), got ", shape(D));
  KPNT_REQUIRE_C(D.size(2) >= 1 && D.size(3) >= 1, "D must not be empty, got ", shape(D));
  KPNT_REQUIRE_C(D.numel() < (int64_t(1) << 31), "at most 2^31 - 1 values per call, got ", D.numel());
  half_weights(w, D, w16);
  const int64_t nw = kpnt::mlp_n_weights(d);
  KPNT_REQUIRE_C(w.dim() == 1 && w.size(0) == nw, "packed weights must be (", nw, ",), got ", shape(w));
  KPNT_REQUIRE_C(consts.size() == 4, "consts must be [chroma_eps, noise_centre, noise_scale, plain_eps], got ",
                 consts.size(), " values");
  KPNT_REQUIRE_C(slope >= 0.0, "the leaky ReLU slope must be >= 0, got ", slope);
  kpnt::ColourArgs a;
  a.dims = d;
  a.N = D.size(0);
  a.h = static_cast<int>(D.size(2));
  a.w = static_cast<int>(D.size(3));
  a.D = D.data_ptr<float>();
  a.w16 = w16.data_ptr();
  a.slope = static_cast<float>(slope);
  a.plain = plain;
  a.plain_eps = static_cast<float>(consts[3]);
  a.fc = kpnt::ColourFeatureConsts{static_cast<float>(consts[0]), static_cast<float>(consts[1]),
                                   static_cast<float>(consts[2]), noise_input ? 1 : 0};
  a.stream = c10::cuda::getCurrentCUDAStream(D.device().index()).stream();
  return a;
}

// (I, alpha, fmap), or an error tuple.
py::object colour_forward(const torch::Tensor& D, const torch::Tensor& var, const torch::Tensor& w,
                          const std::vector<int64_t>& dims, double slope, bool plain, bool noise_input,
                          const std::vector<double>& consts, bool wgmma) {
  return guarded([&]() -> py::object {
    const c10::cuda::CUDAGuard guard(D.device());
    torch::Tensor w16;
    kpnt::ColourArgs a = make_colour_args(D, w, dims, slope, plain, noise_input, consts, w16);
    const std::string refusal = wgmma ? wgmma_forward_refusal(a.dims.hidden, D.device()) : "";
    KPNT_REQUIRE_C(refusal.empty(), refusal);
    a.wgmma = wgmma;
    check_cuda_tensor(var, "var", at::kFloat, D);
    KPNT_REQUIRE_C(var.sizes() == D.sizes(), "var must be ", shape(D), " like D, got ", shape(var));
    torch::Tensor fmap = torch::empty_like(D);
    torch::Tensor I = torch::empty_like(D);
    torch::Tensor alpha = torch::empty({D.size(0), 1, D.size(2), D.size(3)}, D.options());
    check_launch(kpnt::colour_forward(a, var.data_ptr<float>(), fmap.data_ptr<float>(), I.data_ptr<float>(),
                                      alpha.data_ptr<float>()));
    return py::make_tuple(I, alpha, fmap);
  });
}

// dw (n_weights,) float32, or an error tuple.
py::object colour_backward(const torch::Tensor& D, const torch::Tensor& fmap, const torch::Tensor& w,
                           const torch::Tensor& dI, const torch::Tensor& dalpha, const std::vector<int64_t>& dims,
                           double slope, bool plain, const std::vector<double>& consts, bool wgmma) {
  return guarded([&]() -> py::object {
    const c10::cuda::CUDAGuard guard(D.device());
    torch::Tensor w16;
    kpnt::ColourArgs a = make_colour_args(D, w, dims, slope, plain, true, consts, w16);
    KPNT_REQUIRE(!wgmma || wgmma_built_on(D.device()), kWgmmaBackwardNeeds);
    a.wgmma_bwd = wgmma;
    const torch::Tensor work = backward_workspace(a.dims, a.N * a.h * a.w, 1, D, &a.workspace);
    check_cuda_tensor(fmap, "fmap", at::kFloat, D);
    check_cuda_tensor(dI, "grad of I", at::kFloat, D);
    check_cuda_tensor(dalpha, "grad of alpha", at::kFloat, D);
    KPNT_REQUIRE_C(fmap.sizes() == D.sizes(), "fmap must be ", shape(D), ", got ", shape(fmap));
    KPNT_REQUIRE_C(dI.sizes() == D.sizes(), "grad of I must be ", shape(D), ", got ", shape(dI));
    KPNT_REQUIRE_C(dalpha.dim() == 4 && dalpha.size(0) == D.size(0) && dalpha.size(1) == 1 &&
                       dalpha.size(2) == D.size(2) && dalpha.size(3) == D.size(3),
                   "grad of alpha must be (N, 1, h, w) for D ", shape(D), ", got ", shape(dalpha));
    int bx = 0;
    check_launch(kpnt::colour_bwd_blocks(a, &bx));
    const int64_t nw = kpnt::mlp_n_weights(a.dims);
    torch::Tensor partial = torch::empty({bx, nw}, D.options());
    check_launch(kpnt::colour_backward(a, fmap.data_ptr<float>(), dI.data_ptr<float>(), dalpha.data_ptr<float>(),
                                       partial.data_ptr<float>()));
    return py::cast(partial.sum(0));
  });
}

#define KPNT_REQUIRE_G(cond, ...)                                           \
  do {                                                                      \
    if (!(cond)) throw ValueError("guide block: " + cat(__VA_ARGS__));      \
  } while (0)

// wgmma_built_on for Python (kpnt.ops._cuda.guide_block.wgmma_built).
py::object guide_block_wgmma_built(int64_t device) {
  return guarded([&]() -> py::object {
    KPNT_REQUIRE_G(device >= 0 && device < static_cast<int64_t>(c10::cuda::device_count()), "no CUDA device ", device);
    return py::bool_(wgmma_built_on(c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device))));
  });
}

// The block's kernels by name (kpnt.ops._cuda.guide_block KERNELS).
kpnt::GuideBlockKernel guide_block_kernel(const std::string& name) {
  if (name == "wgmma") return kpnt::GuideBlockKernel::kWgmma;
  if (name == "mma8") return kpnt::GuideBlockKernel::kMma8;
  if (name == "mma16") return kpnt::GuideBlockKernel::kMma16;
  throw ValueError("guide block: kernel must be 'wgmma', 'mma8' or 'mma16', got '" + name + "'");
}

// One projection block of the guide (kernels/guide_block.cu): z' (N, 64, H, W)
// float16 channels-last, or an error tuple.  w3 (64, 64, 3, 3), p (64, 64, 1, 1)
// float16 as torch's convolutions take them; b3 and c1 (64,) any float dtype.
py::object guide_proj_block(const torch::Tensor& z, const torch::Tensor& w3, const torch::Tensor& b3,
                            const torch::Tensor& p, const torch::Tensor& c1, const std::string& kernel) {
  return guarded([&]() -> py::object {
    constexpr int64_t C = kpnt::kGuideBlockWidth;
    KPNT_REQUIRE_G(z.is_cuda(), "z must be a CUDA tensor, got device ", z.device());
    const c10::cuda::CUDAGuard guard(z.device());
    KPNT_REQUIRE_G(z.scalar_type() == at::kHalf, "z must be float16, got ", z.scalar_type());
    KPNT_REQUIRE_G(z.dim() == 4 && z.size(1) == C, "z must be (N, ", C, ", H, W), got ", shape(z));
    KPNT_REQUIRE_G(z.is_contiguous(at::MemoryFormat::ChannelsLast), "z must be channels-last");
    for (int d : {0, 2, 3})
      KPNT_REQUIRE_G(z.size(d) <= (int64_t(1) << 30), "z must have at most 2^30 images, rows and columns, got ", shape(z));
    // The kernel reads z with 16-byte loads: a view at an odd offset would fault (fresh tensors are aligned).
    KPNT_REQUIRE_G(reinterpret_cast<uintptr_t>(z.data_ptr()) % 16 == 0,
                   "z's data must be 16-byte aligned (pass a fresh tensor, not a view at an offset)");
    for (const auto& [t, name] : {std::pair{&w3, "w3"}, std::pair{&p, "p"}}) {
      KPNT_REQUIRE_G(t->is_cuda() && t->device() == z.device(), "", name, " must be on ", z.device());
      KPNT_REQUIRE_G(t->scalar_type() == at::kHalf, "", name, " must be float16, got ", t->scalar_type());
    }
    KPNT_REQUIRE_G(w3.sizes() == at::IntArrayRef({C, C, 3, 3}), "w3 must be (", C, ", ", C,
                 ", 3, 3), got ", shape(w3));
    KPNT_REQUIRE_G(p.sizes() == at::IntArrayRef({C, C, 1, 1}) || p.sizes() == at::IntArrayRef({C, C}),
                 "p must be (", C, ", ", C, ", 1, 1), got ", shape(p));
    for (const auto& [t, name] : {std::pair{&b3, "b3"}, std::pair{&c1, "c1"}}) {
      KPNT_REQUIRE_G(t->is_cuda() && t->device() == z.device(), "", name, " must be on ", z.device());
      KPNT_REQUIRE_G(t->dim() == 1 && t->size(0) == C, "", name, " must be (", C, ",), got ", shape(*t));
      KPNT_REQUIRE_G(at::isFloatingType(t->scalar_type()), "", name, " must be a float tensor, got ", t->scalar_type());
    }
    // The kernel's layouts: W [out][tap = 3 dy + dx][in], P [out][in], biases float32.
    // Fresh copies (clone, never the caller's memory): aligned for the kernel's 16-byte loads.
    const torch::Tensor w_k = w3.permute({0, 2, 3, 1}).clone(at::MemoryFormat::Contiguous);
    const torch::Tensor p_k = p.reshape({C, C}).clone(at::MemoryFormat::Contiguous);
    const torch::Tensor b_k = b3.to(at::kFloat).contiguous(), c_k = c1.to(at::kFloat).contiguous();
    torch::Tensor out = torch::empty_like(z, at::MemoryFormat::ChannelsLast);
    kpnt::GuideBlockArgs a;
    a.z = z.data_ptr();
    a.out = out.data_ptr();
    a.w3 = w_k.data_ptr();
    a.b3 = b_k.data_ptr<float>();
    a.p = p_k.data_ptr();
    a.c1 = c_k.data_ptr<float>();
    a.N = static_cast<int>(z.size(0));
    a.H = static_cast<int>(z.size(2));
    a.W = static_cast<int>(z.size(3));
    a.kernel = guide_block_kernel(kernel);
    KPNT_REQUIRE_G(a.kernel != kpnt::GuideBlockKernel::kWgmma || wgmma_built_on(z.device()),
                   "the wgmma kernel needs a Hopper GPU and kernels built for 9.0a (CUDA 12 or later); use the "
                   "'mma8' kernel or cuDNN");
    a.stream = c10::cuda::getCurrentCUDAStream(z.device().index()).stream();
    check_launch(kpnt::guide_proj_block(a));
    return py::cast(out);
  });
}

// ---- up_block (kernels/up_block.cu)

#define KPNT_REQUIRE_U(cond, ...)                                           \
  do {                                                                      \
    if (!(cond)) throw ValueError("up_block: " + cat(__VA_ARGS__));         \
  } while (0)

// kpnt.ref.up_block.up_block's forward from the colour base o (N, 3, h, w) float32 and the reference's tables
// (rows: (3, H) int64 i0, i1 and float32 f; columns: (3, W)): (N, 3, H, W) float32, or an error tuple.
// kernel: "flat" or "columns" (kernels/up_block.cu; the same values).
// The tables' checks and UpBlockArgs of up_block and its adjoint: `t` the tensor read, H and W the fine size.
kpnt::UpBlockArgs up_block_args(const torch::Tensor& t, const char* name, const torch::Tensor& row_i0,
                                const torch::Tensor& row_i1, const torch::Tensor& row_f, const torch::Tensor& col_i0,
                                const torch::Tensor& col_i1, const torch::Tensor& col_f) {
  KPNT_REQUIRE_U(t.is_cuda(), "", name, " must be a CUDA tensor, got device ", t.device());
  KPNT_REQUIRE_U(t.scalar_type() == at::kFloat, "", name, " must be float32, got ", t.scalar_type());
  KPNT_REQUIRE_U(t.dim() == 4 && t.size(1) == 3 && t.size(2) >= 1 && t.size(3) >= 1,
                 "", name, " must be (N, 3, h, w), got ", shape(t));
  KPNT_REQUIRE_U(t.is_contiguous(), "", name, " must be contiguous");
  const int64_t H = row_i0.dim() == 2 ? row_i0.size(1) : -1, W = col_i0.dim() == 2 ? col_i0.size(1) : -1;
  for (const auto& [p, pname, n, dtype] :
       {std::tuple{&row_i0, "row_i0", H, at::kLong}, std::tuple{&row_i1, "row_i1", H, at::kLong},
        std::tuple{&row_f, "row_f", H, at::kFloat}, std::tuple{&col_i0, "col_i0", W, at::kLong},
        std::tuple{&col_i1, "col_i1", W, at::kLong}, std::tuple{&col_f, "col_f", W, at::kFloat}}) {
    KPNT_REQUIRE_U(p->is_cuda() && p->device() == t.device(), "", pname, " must be on ", t.device());
    KPNT_REQUIRE_U(p->scalar_type() == dtype && p->is_contiguous(), "", pname, " must be contiguous ",
                   dtype == at::kLong ? "int64" : "float32", ", got ", p->scalar_type());
    KPNT_REQUIRE_U(p->dim() == 2 && p->size(0) == 3 && p->size(1) == n && n >= 1, "", pname,
                   " must be (3, ", n, "), got ", shape(*p));
  }
  kpnt::UpBlockArgs a;
  a.row_i0 = row_i0.data_ptr<int64_t>();
  a.row_i1 = row_i1.data_ptr<int64_t>();
  a.row_f = row_f.data_ptr<float>();
  a.col_i0 = col_i0.data_ptr<int64_t>();
  a.col_i1 = col_i1.data_ptr<int64_t>();
  a.col_f = col_f.data_ptr<float>();
  a.N = t.size(0);
  a.H = H;
  a.W = W;
  a.stream = c10::cuda::getCurrentCUDAStream(t.device().index()).stream();
  return a;
}

py::object up_block(const torch::Tensor& o, const torch::Tensor& row_i0, const torch::Tensor& row_i1,
                    const torch::Tensor& row_f, const torch::Tensor& col_i0, const torch::Tensor& col_i1,
                    const torch::Tensor& col_f, const std::string& kernel) {
  return guarded([&]() -> py::object {
    KPNT_REQUIRE_U(kernel == "flat" || kernel == "columns", "kernel must be 'flat' or 'columns', got '", kernel, "'");
    KPNT_REQUIRE_U(o.is_cuda(), "o must be a CUDA tensor, got device ", o.device());
    const c10::cuda::CUDAGuard guard(o.device());
    kpnt::UpBlockArgs a = up_block_args(o, "o", row_i0, row_i1, row_f, col_i0, col_i1, col_f);
    torch::Tensor out = torch::empty({o.size(0), 3, a.H, a.W}, o.options());
    a.o = o.data_ptr<float>();
    a.out = out.data_ptr<float>();
    a.h = o.size(2);
    a.w = o.size(3);
    a.kernel = kernel == "columns" ? kpnt::UpBlockKernel::kColumns : kpnt::UpBlockKernel::kFlat;
    check_launch(kpnt::up_block_forward(a));
    return py::cast(out);
  });
}

// The adjoint of up_block (its backward): the coarse gradient (N, 3, h, w) of the fine gradient g (N, 3, H, W) through
// the same tables; or an error tuple.
py::object up_block_adjoint(const torch::Tensor& g, const torch::Tensor& row_i0, const torch::Tensor& row_i1,
                            const torch::Tensor& row_f, const torch::Tensor& col_i0, const torch::Tensor& col_i1,
                            const torch::Tensor& col_f, int64_t h, int64_t w) {
  return guarded([&]() -> py::object {
    KPNT_REQUIRE_U(g.is_cuda(), "g must be a CUDA tensor, got device ", g.device());
    const c10::cuda::CUDAGuard guard(g.device());
    kpnt::UpBlockArgs a = up_block_args(g, "g", row_i0, row_i1, row_f, col_i0, col_i1, col_f);
    KPNT_REQUIRE_U(g.size(2) == a.H && g.size(3) == a.W, "g must be (N, 3, ", a.H, ", ", a.W, ") as the tables, got ",
                   shape(g));
    KPNT_REQUIRE_U(h >= 1 && w >= 1 && a.H % h == 0 && a.W % w == 0 && a.H / h == a.W / w, "the coarse size (", h,
                   ", ", w, ") must divide the fine size (", a.H, ", ", a.W, ") by one block");
    torch::Tensor out = torch::empty({g.size(0), 3, h, w}, g.options());
    a.o = g.data_ptr<float>();
    a.out = out.data_ptr<float>();
    a.h = h;
    a.w = w;
    check_launch(kpnt::up_block_adjoint(a));
    return py::cast(out);
  });
}

// ---- guide finish (kernels/guide_finish.cu)

#define KPNT_REQUIRE_GF(cond, ...)                                          \
  do {                                                                      \
    if (!(cond)) throw ValueError("guide finish: " + cat(__VA_ARGS__));     \
  } while (0)

// kpnt.ref.guide.finish's result U + crop(pixel_shuffle(float(r) * s, Q)) (N, 3, H, W) float32, or an error tuple.
// r (N, 3 Q^2, h, w) float16 or float32, any strides; s (N, 1, h, w) float32, any strides; U contiguous float32.
py::object guide_finish(const torch::Tensor& U, const torch::Tensor& r, const torch::Tensor& s, int64_t Q,
                        int64_t top, int64_t left) {
  return guarded([&]() -> py::object {
    KPNT_REQUIRE_GF(U.is_cuda(), "U must be a CUDA tensor, got device ", U.device());
    const c10::cuda::CUDAGuard guard(U.device());
    KPNT_REQUIRE_GF(U.scalar_type() == at::kFloat && U.dim() == 4 && U.size(1) == 3 && U.is_contiguous(),
                    "U must be contiguous float32 (N, 3, H, W), got ", U.scalar_type(), " ", shape(U));
    KPNT_REQUIRE_GF(Q >= 1 && Q <= 64, "Q must be in [1, 64], got ", Q);
    const int64_t N = U.size(0), H = U.size(2), W = U.size(3);
    KPNT_REQUIRE_GF(r.is_cuda() && r.device() == U.device() && s.is_cuda() && s.device() == U.device(),
                    "r and s must be on ", U.device());
    KPNT_REQUIRE_GF(r.scalar_type() == at::kHalf || r.scalar_type() == at::kFloat, "r must be float16 or float32, got ",
                    r.scalar_type());
    KPNT_REQUIRE_GF(r.dim() == 4 && r.size(0) == N && r.size(1) == 3 * Q * Q, "r must be (", N, ", ", 3 * Q * Q,
                    ", h, w), got ", shape(r));
    const int64_t h = r.size(2), w = r.size(3);
    KPNT_REQUIRE_GF(s.scalar_type() == at::kFloat && s.dim() == 4 && s.size(0) == N && s.size(1) == 1 &&
                        s.size(2) == h && s.size(3) == w,
                    "s must be float32 (", N, ", 1, ", h, ", ", w, "), got ", s.scalar_type(), " ", shape(s));
    KPNT_REQUIRE_GF(top >= 0 && left >= 0 && top + H <= h * Q && left + W <= w * Q, "the crop (", top, ", ", left,
                    ") + ", H, " x ", W, " leaves the shuffled image (", h * Q, " x ", w * Q, ")");
    KPNT_REQUIRE_GF(3 * N <= 65535 && h * Q < (int64_t(1) << 31) && w * Q < (int64_t(1) << 31),
                    "at most 21845 images and 2^31 rows or columns, got ", shape(U));
    torch::Tensor out = torch::empty_like(U);
    kpnt::GuideFinishArgs a;
    a.U = U.data_ptr<float>();
    a.r = r.data_ptr();
    a.r_half = r.scalar_type() == at::kHalf;
    a.s = s.data_ptr<float>();
    for (int d = 0; d < 4; ++d) {
      a.r_stride[d] = r.stride(d);
      a.s_stride[d] = s.stride(d);
    }
    a.out = out.data_ptr<float>();
    a.N = static_cast<int>(N);
    a.H = static_cast<int>(H);
    a.W = static_cast<int>(W);
    a.Q = static_cast<int>(Q);
    a.top = static_cast<int>(top);
    a.left = static_cast<int>(left);
    a.stream = c10::cuda::getCurrentCUDAStream(U.device().index()).stream();
    check_launch(kpnt::guide_finish(a));
    return py::cast(out);
  });
}

// ---- guide training's elementwise passes (kernels/guide_train.cu)

#define KPNT_REQUIRE_GT(cond, ...)                                          \
  do {                                                                      \
    if (!(cond)) throw ValueError("guide train: " + cat(__VA_ARGS__));      \
  } while (0)

// Checks `t` is a CUDA (N, C, h, w) channels-last float32 / bfloat16 tensor like `like` (16-byte aligned).
void check_guide_activation(const torch::Tensor& t, const char* name, const torch::Tensor& like) {
  KPNT_REQUIRE_GT(t.is_cuda() && t.device() == like.device(), name, " must be on ", like.device(), ", got ", t.device());
  KPNT_REQUIRE_GT(t.scalar_type() == like.scalar_type() && t.sizes() == like.sizes(), name, " must be ",
                  like.scalar_type(), " ", shape(like), ", got ", t.scalar_type(), " ", shape(t));
  KPNT_REQUIRE_GT(t.is_contiguous(at::MemoryFormat::ChannelsLast), name, " must be channels-last contiguous");
  KPNT_REQUIRE_GT(reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0, name, " must be 16-byte aligned");
}

kpnt::GuideEltArgs guide_elt_args(const torch::Tensor& in, const std::optional<torch::Tensor>& z) {
  KPNT_REQUIRE_GT(in.is_cuda(), "tensors must be on a CUDA device, got ", in.device());
  KPNT_REQUIRE_GT(in.scalar_type() == at::kFloat || in.scalar_type() == at::kBFloat16,
                  "activations must be float32 or bfloat16, got ", in.scalar_type());
  KPNT_REQUIRE_GT(in.dim() == 4, "activations must be (N, C, h, w), got ", shape(in));
  KPNT_REQUIRE_GT(in.size(1) % 8 == 0 && in.size(1) >= 8 && in.size(1) <= 2048,
                  "channels must be a multiple of 8 in 8..2048, got ", in.size(1));
  check_guide_activation(in, "the input", in);
  if (z) check_guide_activation(*z, "the second operand", in);
  kpnt::GuideEltArgs a;
  a.bf16 = in.scalar_type() == at::kBFloat16;
  a.in = in.data_ptr();
  a.z = z ? z->data_ptr() : nullptr;
  a.C = static_cast<int>(in.size(1));
  a.M = in.numel() / a.C;
  const int groups = a.C / 8, rows = std::max(1, 256 / groups);
  int sms = 0;
  KPNT_REQUIRE_GT(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, in.device().index()) == cudaSuccess,
                  "cannot read the multiprocessor count of ", in.device());
  // Four blocks an SM keep the memory system busy; more only add partial rows to sum.
  a.blocks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((a.M + rows - 1) / rows, 4 * int64_t(sms))));
  a.stream = c10::cuda::getCurrentCUDAStream(in.device().index()).stream();
  return a;
}

// A projection block's 1x1 weights P as its kernels take them: contiguous (C, C, 1, 1) in the activations' dtype.
void check_projection(const torch::Tensor& P, const torch::Tensor& like) {
  const int64_t C = like.size(1);
  KPNT_REQUIRE_GT(P.is_cuda() && P.device() == like.device() && P.scalar_type() == like.scalar_type() &&
                      P.dim() == 4 && P.size(0) == C && P.size(1) == C && P.size(2) == 1 && P.size(3) == 1 &&
                      P.is_contiguous(),
                  "P must be contiguous ", like.scalar_type(), " (", C, ", ", C, ", 1, 1) on ", like.device(),
                  " as the activations, got ", P.scalar_type(), " ", shape(P), " on ", P.device());
}

// A guide bias as the kernels take it: contiguous float32 (C,) on the activations' device.
void check_guide_bias(const torch::Tensor& bias, const torch::Tensor& like, const char* name) {
  const int64_t C = like.size(1);
  KPNT_REQUIRE_GT(bias.is_cuda() && bias.device() == like.device() && bias.scalar_type() == at::kFloat &&
                      bias.dim() == 1 && bias.size(0) == C && bias.is_contiguous(),
                  name, " must be contiguous float32 (", C, ",) on ", like.device(), ", got ", bias.scalar_type(),
                  " ", shape(bias), " on ", bias.device());
}

// relu(a + bias (+ z)) written into `a` (the forward epilogue of a guide convolution); None, or an error tuple.
py::object guide_bias_relu_(const torch::Tensor& a, const torch::Tensor& bias, const std::optional<torch::Tensor>& z) {
  return guarded([&]() -> py::object {
    const c10::cuda::CUDAGuard guard(a.device());
    kpnt::GuideEltArgs args = guide_elt_args(a, z);
    check_guide_bias(bias, a, "bias");
    args.op = kpnt::GuideEltOp::kBiasRelu;
    args.bias = bias.data_ptr<float>();
    args.out = a.data_ptr();
    check_launch(kpnt::guide_elementwise(args));
    return py::none();
  });
}

// ((g (+ p)) * (y > 0), its channel sums float32 (C,)): ReLU's backward with the residual stream's gradient added
// and the bias's gradient; or an error tuple.
py::object guide_relu_grad_sum(const torch::Tensor& g, const std::optional<torch::Tensor>& p, const torch::Tensor& y) {
  return guarded([&]() -> py::object {
    const c10::cuda::CUDAGuard guard(g.device());
    kpnt::GuideEltArgs args = guide_elt_args(g, p);
    check_guide_activation(y, "the ReLU's output", g);
    torch::Tensor out = torch::empty_like(g, at::MemoryFormat::ChannelsLast);
    torch::Tensor partial = torch::empty({args.blocks, args.C}, g.options().dtype(at::kFloat));
    args.op = kpnt::GuideEltOp::kReluGradSum;
    args.y = y.data_ptr();
    args.out = out.data_ptr();
    args.partial = partial.data_ptr<float>();
    check_launch(kpnt::guide_elementwise(args));
    return py::make_tuple(out, partial.sum(0));
  });
}

// (gm, gh, d c, d b, d P): the projection block's backward through its 1x1 convolution (GuideProjBwdArgs), bfloat16
// activations and P (C, C, 1, 1), or float32 ones (products on TF32), with C in {32, 64, 128}; sums and dP float32
// ((C,), (C,), (C, C, 1, 1)); or an error tuple.  With `partial_out` (float32 contiguous (guide_proj_partial_rows,
// 2 C + C^2)) the blocks' partial sums go there unreduced and only (gm, gh) come back: a caller with several blocks
// to backpropagate reduces them all in one launch.
py::object guide_proj_backward(const torch::Tensor& g, const std::optional<torch::Tensor>& p, const torch::Tensor& y,
                               const torch::Tensor& h, const torch::Tensor& P,
                               const std::optional<torch::Tensor>& partial_out) {
  return guarded([&]() -> py::object {
    const c10::cuda::CUDAGuard guard(g.device());
    kpnt::GuideEltArgs base = guide_elt_args(g, p);  // checks g and p: float32 or bfloat16
    check_guide_activation(y, "the ReLU's output", g);
    check_guide_activation(h, "the block's hidden activation", g);
    const int64_t C = g.size(1);
    check_projection(P, g);
    kpnt::GuideProjBwdArgs a;
    a.C = static_cast<int>(C);
    a.M = base.M;
    check_launch(kpnt::guide_proj_backward_blocks(a.C, a.M, !base.bf16, &a.blocks));
    torch::Tensor gm = torch::empty_like(g, at::MemoryFormat::ChannelsLast);
    torch::Tensor gh = torch::empty_like(g, at::MemoryFormat::ChannelsLast);
    torch::Tensor partial;
    if (partial_out) {
      partial = *partial_out;
      KPNT_REQUIRE_GT(partial.is_cuda() && partial.device() == g.device() && partial.scalar_type() == at::kFloat &&
                          partial.dim() == 2 && partial.size(0) == a.blocks && partial.size(1) == 2 * C + C * C &&
                          partial.is_contiguous(),
                      "partial_out must be contiguous float32 (", a.blocks, ", ", 2 * C + C * C, ") on ", g.device(),
                      " (guide_proj_partial_rows), got ", partial.scalar_type(), " ", shape(partial), " on ",
                      partial.device());
    } else {
      partial = torch::empty({a.blocks, 2 * C + C * C}, g.options().dtype(at::kFloat));
    }
    a.g = g.data_ptr();
    a.p = base.z;
    a.y = y.data_ptr();
    a.h = h.data_ptr();
    a.P = P.data_ptr();
    a.gm = gm.data_ptr();
    a.gh = gh.data_ptr();
    a.partial = partial.data_ptr<float>();
    a.stream = base.stream;
    check_launch(kpnt::guide_proj_backward(a, !base.bf16));
    if (partial_out) return py::make_tuple(gm, gh);
    const torch::Tensor sums = partial.sum(0);
    return py::make_tuple(gm, gh, sums.narrow(0, 0, C), sums.narrow(0, C, C),
                          sums.narrow(0, 2 * C, C * C).view({C, C, 1, 1}));
  });
}

// The rows of the partial sums guide_proj_backward writes for activations like `g` (its blocks); or an error tuple.
py::object guide_proj_partial_rows(const torch::Tensor& g) {
  return guarded([&]() -> py::object {
    const c10::cuda::CUDAGuard guard(g.device());
    const kpnt::GuideEltArgs base = guide_elt_args(g, std::nullopt);
    int blocks = 0;
    check_launch(kpnt::guide_proj_backward_blocks(base.C, base.M, !base.bf16, &blocks));
    return py::int_(blocks);
  });
}

// relu(h P^T + c + z): the projection block's 1x1 convolution with its bias, residual add and ReLU
// (GuideProjFwdArgs), bfloat16 activations and P (C, C, 1, 1) with C in {32, 64, 128}, or float32 ones (the product
// on TF32) with C in {32, 64, 128}; c float32 (C,); or an error tuple.  With h_bias (float32 (C,)) `h` is the 3x3
// convolution's raw output, made relu(h + h_bias) in place first (bias_relu's arithmetic) and multiplied as that.
py::object guide_proj_forward(const torch::Tensor& h, const torch::Tensor& P, const torch::Tensor& bias,
                              const torch::Tensor& z, const std::optional<torch::Tensor>& h_bias) {
  return guarded([&]() -> py::object {
    const c10::cuda::CUDAGuard guard(h.device());
    kpnt::GuideEltArgs base = guide_elt_args(h, z);  // checks h and z: float32 or bfloat16
    const int64_t C = h.size(1);
    check_projection(P, h);
    check_guide_bias(bias, h, "bias");
    if (h_bias) check_guide_bias(*h_bias, h, "h_bias");
    torch::Tensor out = torch::empty_like(h, at::MemoryFormat::ChannelsLast);
    kpnt::GuideProjFwdArgs a;
    a.h = h.data_ptr();
    a.z = z.data_ptr();
    a.P = P.data_ptr();
    a.bias = bias.data_ptr<float>();
    a.out = out.data_ptr();
    a.M = base.M;
    a.C = static_cast<int>(C);
    a.stream = base.stream;
    if (h_bias) {
      a.h_bias = h_bias->data_ptr<float>();
      a.h_out = h.data_ptr();
    }
    check_launch(kpnt::guide_proj_forward(a, !base.bf16));
    return py::cast(out);
  });
}

// dW (C, 3, 3, C) float32 [co][ky][kx][ci] of a float32 guide's 3x3 convolution (C -> C, padding 1) on TF32, from
// its output's gradient gh and its input z (channels-last float32 (N, C, h, w), C 64 or 128); or an error tuple.
// `wgmma`: Hopper's warp-group MMA form (a GPU that runs the build's sm_90a code), else mma.sync's.
// `specialized` (with wgmma): its warp-specialized form (written in session 43, on since session 44).
py::object guide_wgrad(const torch::Tensor& gh, const torch::Tensor& z, bool wgmma, bool specialized) {
  return guarded([&]() -> py::object {
    KPNT_REQUIRE_GT(gh.is_cuda() && gh.scalar_type() == at::kFloat && gh.dim() == 4,
                    "gh must be a float32 (N, C, h, w) CUDA tensor, got ", gh.scalar_type(), " ", shape(gh));
    KPNT_REQUIRE_GT(gh.size(1) == 64 || gh.size(1) == 128, "the weight gradient kernel takes 64 or 128 channels, got ",
                    gh.size(1));
    check_guide_activation(gh, "gh", gh);
    check_guide_activation(z, "z", gh);
    KPNT_REQUIRE_GT(!specialized || wgmma, "the weight gradient kernel's specialized form is a wgmma form: pass wgmma too");
    KPNT_REQUIRE_GT(!wgmma || wgmma_built_on(gh.device()),
                    "the weight gradient kernel's wgmma form needs a Hopper GPU and kernels built for 9.0a");
    const c10::cuda::CUDAGuard guard(gh.device());
    KPNT_REQUIRE_GT(gh.size(0) < (1 << 20) && gh.size(2) < (1 << 20) && gh.size(3) < (1 << 20) &&
                        gh.size(0) * gh.size(2) * gh.size(3) < (int64_t(1) << 31),
                    "gh is too large for the weight gradient kernel: ", shape(gh));
    kpnt::GuideWgradArgs a;
    a.N = static_cast<int>(gh.size(0));
    a.C = static_cast<int>(gh.size(1));
    a.H = static_cast<int>(gh.size(2));
    a.W = static_cast<int>(gh.size(3));
    a.wgmma = wgmma;
    a.specialized = specialized;
    check_launch(kpnt::guide_wgrad_groups(a.C, a.N, a.H, a.W, a.wgmma, &a.groups));
    torch::Tensor partial = torch::empty({a.groups, a.C, 3, 3, a.C}, gh.options().memory_format(at::MemoryFormat::Contiguous));
    a.gh = gh.data_ptr<float>();
    a.z = z.data_ptr<float>();
    a.partial = partial.data_ptr<float>();
    a.stream = c10::cuda::getCurrentCUDAStream(gh.device().index()).stream();
    check_launch(kpnt::guide_wgrad(a));
    return py::cast(partial.sum(0));
  });
}

// ---- guide start (kernels/guide_start.cu)

#define KPNT_REQUIRE_GS(cond, ...)                                          \
  do {                                                                      \
    if (!(cond)) throw ValueError("guide start: " + cat(__VA_ARGS__));      \
  } while (0)

// kpnt.ref.guide.start's (z, s): z (N, Q^2 + 4, h, w) float16 channels-last, s (N, 1, h, w) float32, or an error
// tuple.  x (N, 1, H, W), U (N, 3, H, W) float32 contiguous; a, b (N,) float32 (the noise's means over the colours,
// as the reference computes them); pattern (P, P) int32; pad = (top, bottom, left, right); consts =
// [brightness floor, sigma floor, feature centre, feature scale].
py::object guide_start(const torch::Tensor& x, const torch::Tensor& U, const torch::Tensor& a, const torch::Tensor& b,
                       const torch::Tensor& pattern, int64_t Q, const std::vector<int64_t>& pad, bool skip,
                       const std::vector<double>& consts) {
  return guarded([&]() -> py::object {
    KPNT_REQUIRE_GS(x.is_cuda(), "x must be a CUDA tensor, got device ", x.device());
    const c10::cuda::CUDAGuard guard(x.device());
    KPNT_REQUIRE_GS(x.scalar_type() == at::kFloat && x.dim() == 4 && x.size(1) == 1 && x.is_contiguous(),
                    "x must be contiguous float32 (N, 1, H, W), got ", x.scalar_type(), " ", shape(x));
    const int64_t N = x.size(0), H = x.size(2), W = x.size(3);
    KPNT_REQUIRE_GS(U.is_cuda() && U.device() == x.device() && U.scalar_type() == at::kFloat && U.is_contiguous() &&
                        U.dim() == 4 && U.size(0) == N && U.size(1) == 3 && U.size(2) == H && U.size(3) == W,
                    "U must be contiguous float32 (", N, ", 3, ", H, ", ", W, ") on ", x.device(), ", got ", shape(U));
    for (const auto& [t, name] : {std::pair{&a, "a"}, std::pair{&b, "b"}})
      KPNT_REQUIRE_GS(t->is_cuda() && t->device() == x.device() && t->scalar_type() == at::kFloat && t->dim() == 1 &&
                          t->size(0) == N && t->is_contiguous(),
                      "", name, " must be contiguous float32 (", N, ",) on ", x.device(), ", got ", shape(*t));
    KPNT_REQUIRE_GS(pattern.is_cuda() && pattern.device() == x.device() && pattern.scalar_type() == at::kInt &&
                        pattern.dim() == 2 && pattern.size(0) == pattern.size(1) && pattern.is_contiguous(),
                    "pattern must be a contiguous int32 (P, P) on ", x.device(), ", got ", shape(pattern));
    KPNT_REQUIRE_GS(pad.size() == 4 && consts.size() == 4, "pad must be (top, bottom, left, right) and consts 4 numbers");
    const int64_t top = pad[0], bottom = pad[1], left = pad[2], right = pad[3];
    KPNT_REQUIRE_GS(Q >= 1 && Q <= 64 && top >= 0 && bottom >= 0 && left >= 0 && right >= 0 &&
                        (top + H + bottom) % Q == 0 && (left + W + right) % Q == 0,
                    "the padded image (", top, " + ", H, " + ", bottom, ") x (", left, " + ", W, " + ", right,
                    ") must be a multiple of Q = ", Q);
    KPNT_REQUIRE_GS(top + H + bottom < (int64_t(1) << 31) && left + W + right < (int64_t(1) << 31) && N < (int64_t(1) << 31),
                    "sizes must be below 2^31, got ", shape(x));
    const int64_t h = (top + H + bottom) / Q, w = (left + W + right) / Q, C = Q * Q + 4;
    torch::Tensor z = torch::empty({N, C, h, w}, x.options().dtype(at::kHalf).memory_format(at::MemoryFormat::ChannelsLast));
    torch::Tensor s = torch::empty({N, 1, h, w}, x.options());
    kpnt::GuideStartArgs g;
    g.x = x.data_ptr<float>();
    g.U = U.data_ptr<float>();
    g.a = a.data_ptr<float>();
    g.b = b.data_ptr<float>();
    g.pattern = pattern.data_ptr<int32_t>();
    g.z = z.data_ptr();
    g.s = s.data_ptr<float>();
    g.N = static_cast<int>(N);
    g.H = static_cast<int>(H);
    g.W = static_cast<int>(W);
    g.h = static_cast<int>(h);
    g.w = static_cast<int>(w);
    g.Q = static_cast<int>(Q);
    g.P = static_cast<int>(pattern.size(0));
    g.top = static_cast<int>(top);
    g.left = static_cast<int>(left);
    g.skip = skip;
    // PyTorch's mean factor (ReduceMomentKernel: outputs / inputs in float) and its division by a Python number
    // (a multiplication by the float reciprocal).
    const int64_t outputs = N * h * w;
    g.mean_factor = static_cast<float>(outputs) / static_cast<float>(3 * outputs);
    g.brightness_floor = static_cast<float>(consts[0]);
    g.sigma_floor = static_cast<float>(consts[1]);
    g.feature_centre = static_cast<float>(consts[2]);
    g.inv_feature_scale = 1.0f / static_cast<float>(consts[3]);
    g.stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
    check_launch(kpnt::guide_start(g));
    return py::make_tuple(z, s);
  });
}

// ---- pyramid (kernels/pyramid.cu)

#define KPNT_REQUIRE_P(cond, ...)                                           \
  do {                                                                      \
    if (!(cond)) throw ValueError("pyramid: " + cat(__VA_ARGS__));          \
  } while (0)

// The level x (N, C, H, W) float32 on a GPU, contiguous.
void check_level(const torch::Tensor& x) {
  KPNT_REQUIRE_P(x.is_cuda() && x.scalar_type() == at::kFloat && x.dim() == 4 && x.is_contiguous(),
                 "the level must be a contiguous float32 (N, C, H, W) CUDA tensor, got ", x.scalar_type(), " ",
                 shape(x));
  KPNT_REQUIRE_P(x.size(2) >= 1 && x.size(3) >= 1 && x.size(2) < (int64_t(1) << 30) && x.size(3) < (int64_t(1) << 30),
                 "the level's sides must lie in [1, 2^30), got ", shape(x));
}

// PyramidArgs reading `in` and writing `out` (both contiguous float32), the fine level (H, W), the coarse one
// (ceil(H / 2), ceil(W / 2)), N C planes, on the current stream of `in`'s device.
kpnt::PyramidArgs pyramid_args(const torch::Tensor& in, const torch::Tensor& out, int64_t H, int64_t W) {
  kpnt::PyramidArgs a;
  a.in = in.data_ptr<float>();
  a.out = out.data_ptr<float>();
  a.planes = in.size(0) * in.size(1);
  a.H = static_cast<int>(H);
  a.W = static_cast<int>(W);
  a.h = static_cast<int>((H + 1) / 2);
  a.w = static_cast<int>((W + 1) / 2);
  a.stream = c10::cuda::getCurrentCUDAStream(in.device().index()).stream();
  return a;
}

// kpnt.ref.pyramid.down(x): (N, C, ceil(H / 2), ceil(W / 2)), or an error tuple; row_fold (H + 4,) and
// col_fold (W + 4,) int64 must be kpnt.ref.pad.fold_indices(n, 2, 2) on x's device (entries in [0, n): the
// kernel reads through them unchecked; kpnt.ops._cuda.pyramid passes the reference's own).
py::object pyramid_down(const torch::Tensor& x, const torch::Tensor& row_fold, const torch::Tensor& col_fold) {
  return guarded([&]() -> py::object {
    check_level(x);
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t H = x.size(2), W = x.size(3);
    for (const auto& [t, name, n] : {std::tuple{&row_fold, "row_fold", H + 4}, std::tuple{&col_fold, "col_fold", W + 4}})
      KPNT_REQUIRE_P(t->is_cuda() && t->device() == x.device() && t->scalar_type() == at::kLong && t->dim() == 1 &&
                         t->size(0) == n && t->is_contiguous(),
                     "", name, " must be a contiguous int64 (", n, ",) on ", x.device(), ", got ", shape(*t));
    torch::Tensor out = torch::empty({x.size(0), x.size(1), (H + 1) / 2, (W + 1) / 2}, x.options());
    kpnt::PyramidArgs a = pyramid_args(x, out, H, W);
    a.row_fold = row_fold.data_ptr<int64_t>();
    a.col_fold = col_fold.data_ptr<int64_t>();
    check_launch(kpnt::pyramid_down(a));
    return py::cast(out);
  });
}

// kpnt.ref.pyramid.up(c, (H, W)): (N, C, H, W), or an error tuple.
py::object pyramid_up(const torch::Tensor& c, int64_t H, int64_t W) {
  return guarded([&]() -> py::object {
    check_level(c);
    const c10::cuda::CUDAGuard guard(c.device());
    KPNT_REQUIRE_P(H >= 1 && W >= 1 && c.size(2) == (H + 1) / 2 && c.size(3) == (W + 1) / 2, "the coarse level ",
                   shape(c), " does not match the fine size (", H, ", ", W, ")");
    torch::Tensor out = torch::empty({c.size(0), c.size(1), H, W}, c.options());
    kpnt::PyramidArgs a = pyramid_args(c, out, H, W);  // c is (ceil(H / 2), ceil(W / 2)): checked above
    check_launch(kpnt::pyramid_up(a));
    return py::cast(out);
  });
}

// The adjoint of kpnt.ref.pyramid.up (its backward): the coarse gradient (N, C, ceil(H / 2), ceil(W / 2)) of the
// fine gradient g (N, C, H, W); or an error tuple.
py::object pyramid_up_adjoint(const torch::Tensor& g) {
  return guarded([&]() -> py::object {
    check_level(g);
    const c10::cuda::CUDAGuard guard(g.device());
    const int64_t H = g.size(2), W = g.size(3);
    torch::Tensor out = torch::empty({g.size(0), g.size(1), (H + 1) / 2, (W + 1) / 2}, g.options());
    kpnt::PyramidArgs a = pyramid_args(g, out, H, W);
    check_launch(kpnt::pyramid_up_adjoint(a));
    return py::cast(out);
  });
}

// The diamond as the kernels see it, [(dy, dx), ...] (checked against kpnt.ref.taps.DIAMOND).
py::object colour_taps() {
  py::list taps;
  for (int t = 0; t < kpnt::kColourTaps; ++t) taps.append(py::make_tuple(kpnt::colour_tap_dy(t), kpnt::colour_tap_dx(t)));
  return taps;
}

// The compiled lines of kernels/shapes.def as data:
// [(op, key0, key1, in, hidden, out, n_hidden, train), ...], op "colour" or
// "front" (kpnt/ops/capability.py from_extension).
py::object shape_table() {
  int n = 0;
  const kpnt::FusedShape* rows = kpnt::fused_shapes(&n);
  py::list out;
  for (int i = 0; i < n; ++i) {
    const kpnt::FusedShape& r = rows[i];
    out.append(py::make_tuple(py::str(r.op == 0 ? "colour" : "front"), r.key0, r.key1, r.in, r.hidden, r.out,
                              r.n_hidden, r.train));
  }
  return out;
}

// ---- the graphed training step's update (kernels/train_update.cu)

#define KPNT_REQUIRE_TU(cond, ...)                                          \
  do {                                                                      \
    if (!(cond)) throw ValueError("train update: " + cat(__VA_ARGS__));     \
  } while (0)

// A float32 scalar (0-d or one element) CUDA tensor on `device`.
void check_update_scalar(const torch::Tensor& t, const char* name, const c10::Device& device) {
  KPNT_REQUIRE_TU(t.is_cuda() && t.device() == device && t.scalar_type() == at::kFloat && t.numel() == 1,
                  name, " must be a float32 scalar on ", device, ", got ", t.scalar_type(), " ", shape(t), " on ",
                  t.device());
}

// A contiguous float32 CUDA tensor of n elements on `device` (n = -1: any).
void check_update_tensor(const torch::Tensor& t, const char* name, size_t i, const c10::Device& device, int64_t n) {
  KPNT_REQUIRE_TU(t.is_cuda() && t.device() == device && t.scalar_type() == at::kFloat && t.is_contiguous() &&
                      (n < 0 || t.numel() == n),
                  name, " ", i, " must be a contiguous float32 tensor", (n < 0 ? "" : " of the parameter's size"),
                  " on ", device, ", got ", t.scalar_type(), " ", shape(t), " on ", t.device());
}

// The tables (kUpdateTableSize tensors each) of parameters, gradients, moments and step counts, index-aligned lists;
// only the gradients when `grads_only` (the other lists are then empty).
std::vector<kpnt::UpdateTable> update_tables(const std::vector<torch::Tensor>& params,
                                             const std::vector<torch::Tensor>& grads,
                                             const std::vector<torch::Tensor>& exp_avgs,
                                             const std::vector<torch::Tensor>& exp_avg_sqs,
                                             const std::vector<torch::Tensor>& steps, bool grads_only,
                                             const c10::Device& device) {
  const size_t n = grads.size();
  KPNT_REQUIRE_TU(grads_only || (params.size() == n && exp_avgs.size() == n && exp_avg_sqs.size() == n &&
                                 steps.size() == n),
                  "params, grads, exp_avgs, exp_avg_sqs and steps must be lists of one length, got ", params.size(),
                  ", ", n, ", ", exp_avgs.size(), ", ", exp_avg_sqs.size(), ", ", steps.size());
  std::vector<kpnt::UpdateTable> tables;
  for (size_t i = 0; i < n; ++i) {
    if (i % kpnt::kUpdateTableSize == 0) tables.emplace_back();
    kpnt::UpdateTable& tab = tables.back();
    kpnt::UpdateTensor& t = tab.t[tab.count];
    check_update_tensor(grads[i], "gradient", i, device, -1);
    t.n = grads[i].numel();
    t.g = grads[i].data_ptr<float>();
    if (!grads_only) {
      check_update_tensor(params[i], "parameter", i, device, t.n);
      check_update_tensor(exp_avgs[i], "exp_avg", i, device, t.n);
      check_update_tensor(exp_avg_sqs[i], "exp_avg_sq", i, device, t.n);
      check_update_scalar(steps[i], "a step count", device);
      t.p = params[i].data_ptr<float>();
      t.m = exp_avgs[i].data_ptr<float>();
      t.v = exp_avg_sqs[i].data_ptr<float>();
      t.step = steps[i].data_ptr<float>();
    }
    const int64_t blocks = int64_t(tab.chunk_start[tab.count]) + kpnt::update_chunks(t.n);
    KPNT_REQUIRE_TU(blocks < (int64_t(1) << 31), "too many elements in one table (", blocks, " blocks)");
    tab.chunk_start[++tab.count] = static_cast<int>(blocks);
  }
  return tables;
}

// [clip coefficient, applied] (float32 (2,)): clip_grad_norm_'s coefficient for the gradients' global norm
// (clip <= 0: 1) and 1 when `loss` (a float32 scalar) and every gradient are finite, else 0; or an error tuple.
py::object train_update_check(const std::vector<torch::Tensor>& grads, const torch::Tensor& loss, double clip) {
  return guarded([&]() -> py::object {
    KPNT_REQUIRE_TU(!grads.empty(), "no gradients given");
    const c10::Device device = grads[0].device();
    KPNT_REQUIRE_TU(device.is_cuda(), "gradients must be on a CUDA device, got ", device);
    const c10::cuda::CUDAGuard guard(device);
    check_update_scalar(loss, "the loss", device);
    const std::vector<torch::Tensor> none;
    const std::vector<kpnt::UpdateTable> tables = update_tables(none, grads, none, none, none, true, device);
    int rows = 0;
    for (const auto& tab : tables) rows += tab.chunk_start[tab.count];
    torch::Tensor partial = torch::empty({std::max(rows, 1), 2}, loss.options());
    torch::Tensor state = torch::empty({2}, loss.options());
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
    int row = 0;
    for (const auto& tab : tables) {
      check_launch(kpnt::update_stats(tab, partial.data_ptr<float>() + 2 * row, stream));
      row += tab.chunk_start[tab.count];
    }
    check_launch(kpnt::update_finalize(partial.data_ptr<float>(), rows, loss.data_ptr<float>(),
                                       static_cast<float>(clip), state.data_ptr<float>(), stream));
    return py::cast(state);
  });
}

// Adam on one param group, in place, with the gradients times state[0], when state[1] != 0 (state from
// train_update_check); every step count + 1 then.  lr a float32 scalar on the device.  None, or an error tuple.
py::object train_update_adam(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& grads,
                             const std::vector<torch::Tensor>& exp_avgs, const std::vector<torch::Tensor>& exp_avg_sqs,
                             const std::vector<torch::Tensor>& steps, const torch::Tensor& state,
                             const torch::Tensor& lr, double beta1, double beta2, double eps, double weight_decay) {
  return guarded([&]() -> py::object {
    KPNT_REQUIRE_TU(!grads.empty(), "no gradients given");
    const c10::Device device = grads[0].device();
    KPNT_REQUIRE_TU(device.is_cuda(), "gradients must be on a CUDA device, got ", device);
    const c10::cuda::CUDAGuard guard(device);
    KPNT_REQUIRE_TU(state.is_cuda() && state.device() == device && state.scalar_type() == at::kFloat &&
                        state.numel() == 2 && state.is_contiguous(),
                    "state must be train_update_check's float32 (2,) on ", device, ", got ", state.scalar_type(), " ",
                    shape(state));
    check_update_scalar(lr, "the learning rate", device);
    KPNT_REQUIRE_TU(beta1 >= 0 && beta1 < 1 && beta2 >= 0 && beta2 < 1 && eps >= 0 && weight_decay >= 0,
                    "betas must lie in [0, 1), eps and weight_decay be >= 0, got ", beta1, ", ", beta2, ", ", eps,
                    ", ", weight_decay);
    const std::vector<kpnt::UpdateTable> tables =
        update_tables(params, grads, exp_avgs, exp_avg_sqs, steps, false, device);
    kpnt::UpdateHyper hp;
    hp.beta1 = static_cast<float>(beta1);
    hp.beta2 = static_cast<float>(beta2);
    hp.eps = static_cast<float>(eps);
    hp.weight_decay = static_cast<float>(weight_decay);
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
    for (const auto& tab : tables)
      check_launch(kpnt::update_adam(tab, state.data_ptr<float>(), lr.data_ptr<float>(), hp, stream));
    return py::none();
  });
}

// ---- front level (kernels/fused_mlp.cuh, front_*)

#define KPNT_REQUIRE_F(cond, ...)                                           \
  do {                                                                      \
    if (!(cond)) throw ValueError("front_level: " + cat(__VA_ARGS__));      \
  } while (0)

void check_int_table(const torch::Tensor& t, const char* name, std::vector<int64_t> sizes, const torch::Tensor& like) {
  check_cuda_tensor(t, name, at::kInt, like);
  KPNT_REQUIRE_F(t.sizes() == at::IntArrayRef(sizes), name, " must be ", str(at::IntArrayRef(sizes)), ", got ", shape(t));
}

// tables = (perm, row_offsets, colour, tap_off, inv, roles); ints = [period, taps, kernels];
// consts = [noise_centre, noise_scale, plain_eps, var_floor].
kpnt::FrontArgs make_front_args(const torch::Tensor& x, const torch::Tensor& U, const torch::Tensor& S,
                                const torch::Tensor& noise, const torch::Tensor& w, const std::vector<torch::Tensor>& tables,
                                const std::vector<int64_t>& dims, const std::vector<int64_t>& ints, double slope,
                                bool plain, bool noise_input, const std::vector<double>& consts, torch::Tensor& w16) {
  const kpnt::MlpDims d = dims_from(dims);
  KPNT_REQUIRE(kpnt::mlp_is_supported(d), cat("no kernel for (in=", d.in, ", hidden=", d.hidden, ", out=", d.out,
                                         ", n_hidden=", d.n_hidden, "); compiled configurations: ",
                                         kpnt::mlp_supported_configs()));
  KPNT_REQUIRE_F(ints.size() == 3 && consts.size() == 4 && tables.size() == 6, "internal argument lists malformed");
  const int P = static_cast<int>(ints[0]), T = static_cast<int>(ints[1]), K = static_cast<int>(ints[2]);
  KPNT_REQUIRE_F(K == 1 || K == 3, "front kernels per pixel must be 1 (shared) or 3 (per-channel), got ", K);
  KPNT_REQUIRE_F(P >= 1 && T >= 1 && T + 2 <= d.in && K * T + 1 <= d.out, "period ", P, " and taps ", T,
                 " must satisfy taps + 2 <= MLP inputs (", d.in, ") and kernels x taps + 1 <= MLP outputs (", d.out,
                 ")");
  check_cuda_tensor(x, "x", at::kFloat, x);
  KPNT_REQUIRE_F(x.dim() == 4 && x.size(1) == 1 && x.size(2) >= 1 && x.size(3) >= 1, "x must be (N, 1, H, W), got ",
                 shape(x));
  KPNT_REQUIRE_F(x.numel() * 32 < (int64_t(1) << 40), "mosaic too large: ", shape(x));
  const int64_t N = x.size(0), H = x.size(2), W = x.size(3);
  check_cuda_tensor(U, "U", at::kFloat, x);
  check_cuda_tensor(S, "S", at::kFloat, x);
  KPNT_REQUIRE_F(U.dim() == 4 && U.size(0) == N && U.size(1) == 3 && U.size(2) == H && U.size(3) == W,
                 "U must be (", N, ", 3, ", H, ", ", W, "), got ", shape(U));
  KPNT_REQUIRE_F(S.sizes() == U.sizes(), "S must be ", shape(U), ", got ", shape(S));
  check_cuda_tensor(noise, "noise", at::kFloat, x);
  KPNT_REQUIRE_F(noise.dim() == 3 && noise.size(0) == N && noise.size(1) == 2 && noise.size(2) == 3,
                 "noise must be (", N, ", 2, 3), got ", shape(noise));
  half_weights(w, x, w16);
  const int64_t nw = kpnt::mlp_n_weights(d);
  KPNT_REQUIRE_F(w.dim() == 2 && w.size(1) == nw && w.size(0) >= 1, "packed weights must be (G, ", nw, "), got ",
                 shape(w));
  const int64_t G = w.size(0);
  check_int_table(tables[0], "perm", {N * H * W}, x);
  check_int_table(tables[1], "row_offsets", {G + 1}, x);
  check_int_table(tables[2], "colour", {int64_t(P) * P}, x);
  check_int_table(tables[3], "tap_off", {int64_t(P) * P, T, 2}, x);
  check_cuda_tensor(tables[4], "inv", at::kInt, x);
  KPNT_REQUIRE_F(tables[4].dim() == 3 && tables[4].size(0) == int64_t(P) * P && tables[4].size(2) == 3,
                 "inv must be (", P * P, ", L, 3), got ", shape(tables[4]));
  check_int_table(tables[5], "roles", {int64_t(P) * P, 3}, x);
  KPNT_REQUIRE_F(slope >= 0.0, "the leaky ReLU slope must be >= 0, got ", slope);
  kpnt::FrontArgs a;
  a.dims = d;
  a.N = N;
  a.H = static_cast<int>(H);
  a.W = static_cast<int>(W);
  a.groups = static_cast<int>(G);
  a.x = x.data_ptr<float>();
  a.U = U.data_ptr<float>();
  a.S = S.data_ptr<float>();
  a.noise = noise.data_ptr<float>();
  a.w16 = w16.data_ptr();
  a.perm = tables[0].data_ptr<int32_t>();
  a.row_offsets = tables[1].data_ptr<int32_t>();
  a.period = P;
  a.taps = T;
  a.kernels = K;
  a.roles = tables[5].data_ptr<int32_t>();
  a.colour = tables[2].data_ptr<int32_t>();
  a.tap_off = tables[3].data_ptr<int32_t>();
  a.inv = tables[4].data_ptr<int32_t>();
  a.inv_len = static_cast<int>(tables[4].size(1));
  a.slope = static_cast<float>(slope);
  a.plain = plain;
  a.plain_eps = static_cast<float>(consts[2]);
  a.var_floor = static_cast<float>(consts[3]);
  a.fc = kpnt::ColourFeatureConsts{0.f, static_cast<float>(consts[0]), static_cast<float>(consts[1]),
                                   noise_input ? 1 : 0};
  a.stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
  return a;
}

// (O, fmap), or an error tuple; wgmma: the MLP on the wgmma kernel (hidden width 64, 16 / 32 / 64 outputs).
py::object front_forward(const torch::Tensor& x, const torch::Tensor& U, const torch::Tensor& S,
                         const torch::Tensor& noise, const torch::Tensor& w, const std::vector<torch::Tensor>& tables,
                         const std::vector<int64_t>& dims, const std::vector<int64_t>& ints, double slope, bool plain,
                         bool noise_input, const std::vector<double>& consts, bool wgmma) {
  return guarded([&]() -> py::object {
    const c10::cuda::CUDAGuard guard(x.device());
    torch::Tensor w16;
    kpnt::FrontArgs a = make_front_args(x, U, S, noise, w, tables, dims, ints, slope, plain, noise_input, consts, w16);
    const std::string refusal = wgmma ? wgmma_forward_refusal(a.dims.hidden, x.device()) : "";
    KPNT_REQUIRE_F(refusal.empty(), refusal);
    a.wgmma = wgmma;
    torch::Tensor fmap = torch::empty({a.N, 4, a.H, a.W}, x.options());
    torch::Tensor O = torch::empty_like(U);
    check_launch(kpnt::front_forward(a, fmap.data_ptr<float>(), O.data_ptr<float>()));
    return py::make_tuple(O, fmap);
  });
}

// (dU, dw (G, n_weights)), or an error tuple.
py::object front_backward(const torch::Tensor& x, const torch::Tensor& U, const torch::Tensor& S,
                          const torch::Tensor& noise, const torch::Tensor& w, const std::vector<torch::Tensor>& tables,
                          const torch::Tensor& fmap, const torch::Tensor& dO, const std::vector<int64_t>& dims,
                          const std::vector<int64_t>& ints, double slope, bool plain, bool noise_input,
                          const std::vector<double>& consts, bool wgmma, int64_t spread) {
  return guarded([&]() -> py::object {
    KPNT_REQUIRE_F(spread >= 0 && spread <= 64, "spread must be in 0..64, got ", spread);
    const c10::cuda::CUDAGuard guard(x.device());
    torch::Tensor w16;
    kpnt::FrontArgs a = make_front_args(x, U, S, noise, w, tables, dims, ints, slope, plain, noise_input, consts, w16);
    KPNT_REQUIRE(!wgmma || wgmma_built_on(x.device()), kWgmmaBackwardNeeds);
    a.wgmma_bwd = wgmma;
    a.spread = static_cast<int>(spread);
    const torch::Tensor work = backward_workspace(a.dims, a.N * a.H * a.W, a.groups, x, &a.workspace);
    check_cuda_tensor(fmap, "fmap", at::kFloat, x);
    KPNT_REQUIRE_F(fmap.dim() == 4 && fmap.size(0) == a.N && fmap.size(1) == 4 && fmap.size(2) == a.H &&
                       fmap.size(3) == a.W, "fmap must be (N, 4, H, W), got ", shape(fmap));
    check_cuda_tensor(dO, "grad of O", at::kFloat, x);
    KPNT_REQUIRE_F(dO.sizes() == U.sizes(), "grad of O must be ", shape(U), ", got ", shape(dO));
    int bx = 0;
    check_launch(kpnt::front_bwd_blocks(a, &bx));
    const int64_t rows = a.N * a.H * a.W, nw = kpnt::mlp_n_weights(a.dims);
    torch::Tensor abuf = torch::empty({rows, a.dims.out}, x.options());  // dL/dd per tap, MLP-output wide
    torch::Tensor bbuf = torch::empty({rows, a.dims.in}, x.options());   // dL/d(MLP inputs)
    // spread 0: the classes share one row of blocks, and a class's rows past its own blocks stay unwritten.
    torch::Tensor partial = spread == 0 ? torch::zeros({a.groups, bx, nw}, x.options())
                                        : torch::empty({a.groups, bx, nw}, x.options());
    torch::Tensor dU = torch::empty_like(U);
    check_launch(kpnt::front_backward(a, fmap.data_ptr<float>(), dO.data_ptr<float>(), abuf.data_ptr<float>(),
                                      bbuf.data_ptr<float>(), partial.data_ptr<float>(), dU.data_ptr<float>()));
    return py::make_tuple(dU, partial.sum(1));
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "kpnt fused CUDA kernels (built on first use by kpnt._backend)";
  m.def("mlp_forward", &mlp_forward, "fused MLP forward: y (P, out) = MLP(x), on the wgmma kernel if asked",
        py::arg("x"), py::arg("w"), py::arg("perm"), py::arg("offsets"), py::arg("dims"), py::arg("slope"),
        py::arg("wgmma") = false);
  m.def("mlp_backward", &mlp_backward, "fused MLP backward with recomputation: (dx, dw), on the wgmma kernel if asked",
        py::arg("x"), py::arg("w"), py::arg("perm"), py::arg("offsets"), py::arg("dy"), py::arg("dims"),
        py::arg("slope"), py::arg("need_dx"), py::arg("wgmma") = false);
  m.def("mlp_forward_store", &mlp_forward_store,
        "fused MLP training forward of a hidden-width-128 MLP: (y, work), the activations stored in work",
        py::arg("x"), py::arg("w"), py::arg("perm"), py::arg("offsets"), py::arg("dims"), py::arg("slope"),
        py::arg("wgmma") = false);
  m.def("mlp_backward_stored", &mlp_backward_stored,
        "fused MLP backward from mlp_forward_store's work (no recomputation): (dx, dw), dW on wgmma if asked",
        py::arg("x"), py::arg("w"), py::arg("perm"), py::arg("offsets"), py::arg("dy"), py::arg("work"),
        py::arg("dims"), py::arg("slope"), py::arg("need_dx"), py::arg("wgmma") = false);
  m.def("mlp_workspace_bytes", &mlp_workspace_bytes, "bytes of mlp_forward_store's work (0: none)",
        py::arg("dims"), py::arg("P"), py::arg("groups"));
  m.def("mlp_supported_configs", &kpnt::mlp_supported_configs, "the compiled lines of kernels/shapes.def, as text");
  m.def("shape_table", &shape_table, "the compiled lines of kernels/shapes.def: (op, key0, key1, in, hidden, out, "
        "n_hidden, train) tuples");
  m.def("mlp_n_weights", [](int64_t in, int64_t hidden, int64_t out, int64_t n_hidden) {
        return kpnt::mlp_n_weights(kpnt::MlpDims{int(in), int(hidden), int(out), int(n_hidden)});
      }, "packed weight count of one set");
  m.def("colour_forward", &colour_forward, "fused colour level forward: (I, alpha, fmap), its MLP on the wgmma "
        "kernel if asked", py::arg("D"), py::arg("var"), py::arg("w"), py::arg("dims"), py::arg("slope"),
        py::arg("plain"), py::arg("noise_input"), py::arg("consts"), py::arg("wgmma") = false);
  m.def("colour_backward", &colour_backward, "fused colour level backward: weight gradient", py::arg("D"),
        py::arg("fmap"), py::arg("w"), py::arg("dI"), py::arg("dalpha"), py::arg("dims"), py::arg("slope"),
        py::arg("plain"), py::arg("consts"), py::arg("wgmma") = false);
  m.def("front_forward", &front_forward, "fused front level forward: (O, fmap), its MLP on the wgmma kernel if "
        "asked", py::arg("x"), py::arg("U"), py::arg("S"), py::arg("noise"), py::arg("w"), py::arg("tables"),
        py::arg("dims"), py::arg("ints"), py::arg("slope"), py::arg("plain"), py::arg("noise_input"),
        py::arg("consts"), py::arg("wgmma") = false);
  m.def("front_backward", &front_backward, "fused front level backward: (dU, dw)", py::arg("x"), py::arg("U"),
        py::arg("S"), py::arg("noise"), py::arg("w"), py::arg("tables"), py::arg("fmap"), py::arg("dO"),
        py::arg("dims"), py::arg("ints"), py::arg("slope"), py::arg("plain"), py::arg("noise_input"),
        py::arg("consts"), py::arg("wgmma") = false, py::arg("spread") = 1);
  m.def("guide_proj_block", &guide_proj_block, "one projection block of the guide: relu(z + P relu(conv3x3(z) + b) + c)",
        py::arg("z"), py::arg("w3"), py::arg("b3"), py::arg("p"), py::arg("c1"), py::arg("kernel"));
  m.def("up_block", &up_block, "the colour base to full resolution at each colour's sample positions "
        "(kpnt.ref.up_block.up_block's forward; the reference's index and weight tables passed in)",
        py::arg("o"), py::arg("row_i0"), py::arg("row_i1"), py::arg("row_f"), py::arg("col_i0"), py::arg("col_i1"),
        py::arg("col_f"), py::arg("kernel") = "flat");
  m.def("up_block_adjoint", &up_block_adjoint, "the adjoint of up_block (its backward): the colour base's gradient "
        "from the full-resolution one through the same tables", py::arg("g"), py::arg("row_i0"), py::arg("row_i1"),
        py::arg("row_f"), py::arg("col_i0"), py::arg("col_i1"), py::arg("col_f"), py::arg("h"), py::arg("w"));
  m.def("pyramid_down", &pyramid_down, "kpnt.ref.pyramid.down in one pass (the mirror padding's fold "
        "tables passed in)", py::arg("x"), py::arg("row_fold"), py::arg("col_fold"));
  m.def("pyramid_up", &pyramid_up, "kpnt.ref.pyramid.up in one pass", py::arg("c"), py::arg("H"), py::arg("W"));
  m.def("pyramid_up_adjoint", &pyramid_up_adjoint, "the adjoint of kpnt.ref.pyramid.up (its backward) in one pass",
        py::arg("g"));
  m.def("guide_start", &guide_start, "the guide network's input (z float16 channels-last, s) in one pass "
        "(kpnt.ref.guide.start, inference)", py::arg("x"), py::arg("U"), py::arg("a"), py::arg("b"),
        py::arg("pattern"), py::arg("Q"), py::arg("pad"), py::arg("skip"), py::arg("consts"));
  m.def("guide_finish", &guide_finish, "the guide's U + crop(pixel_shuffle(float(r) * s, Q)) in one pass "
        "(kpnt.ref.guide.finish, inference)", py::arg("U"), py::arg("r"), py::arg("s"), py::arg("Q"), py::arg("top"),
        py::arg("left"));
  m.def("guide_bias_relu_", &guide_bias_relu_, "a = relu(a + bias (+ z)) in place, channels-last float32 or bfloat16 "
        "(the guide's forward epilogue while training)", py::arg("a"), py::arg("bias"), py::arg("z") = py::none());
  m.def("guide_relu_grad_sum", &guide_relu_grad_sum, "((g (+ p)) * (y > 0), its channel sums): the guide's ReLU "
        "backward and bias gradient while training", py::arg("g"), py::arg("p"), py::arg("y"));
  m.def("guide_proj_backward", &guide_proj_backward, "(gm, gh, d c, d b, d P): the guide's projection block backward "
        "through its 1x1 convolution, bfloat16 (C in {32, 64, 128}) or float32 on TF32 (C in {32, 64, 128})",
        py::arg("g"), py::arg("p"), py::arg("y"), py::arg("h"), py::arg("P"), py::arg("partial_out") = py::none());
  m.def("guide_proj_partial_rows", &guide_proj_partial_rows, "the rows of guide_proj_backward's partial sums "
        "(its blocks) for activations like g", py::arg("g"));
  m.def("guide_proj_forward", &guide_proj_forward, "relu(h P^T + c + z): the guide's projection block's 1x1 "
        "convolution with its epilogue, bfloat16 (C in {32, 64, 128}) or float32 on TF32 (C in {32, 64, 128}); with "
        "h_bias, h is first made relu(h + h_bias) in place", py::arg("h"), py::arg("P"), py::arg("bias"), py::arg("z"),
        py::arg("h_bias") = py::none());
  m.def("train_update_check", &train_update_check, "[clip coefficient, applied]: the graphed step's global "
        "gradient-norm clip coefficient and finite test (kernels/train_update.cu)", py::arg("grads"), py::arg("loss"),
        py::arg("clip"));
  m.def("train_update_adam", &train_update_adam, "Adam on one param group in place, gradients times state[0], "
        "nothing written unless state[1] != 0 (kernels/train_update.cu)", py::arg("params"), py::arg("grads"),
        py::arg("exp_avgs"), py::arg("exp_avg_sqs"), py::arg("steps"), py::arg("state"), py::arg("lr"),
        py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"));
  m.def("guide_wgrad", &guide_wgrad, "dW (C, 3, 3, C) [co][ky][kx][ci] of a float32 guide's 3x3 convolution on TF32 "
        "from its output's gradient and its input, channels-last, C 64 or 128 (kernels/guide_wgrad.cu); wgmma: Hopper's "
        "warp-group MMA form; specialized: its warp-specialized form",
        py::arg("gh"), py::arg("z"), py::arg("wgmma") = false, py::arg("specialized") = false);
  m.def("guide_block_wgmma_built", &guide_block_wgmma_built,
        "whether the GPU `device` runs this build's sm_90a code (the guide block's wgmma kernel)", py::arg("device"));
  m.def("colour_taps", &colour_taps, "the colour level's 15 taps (dy, dx) as compiled");
  m.def("mlp_bwd_tile_rows", &kpnt::mlp_bwd_tile_rows, "pixels per backward tile");
}
