// Python bindings of kpnt's fused CUDA kernels (one module for all of kernels/).
//
// Tensor checks live here (the launchers in the .cu files take raw pointers):
// each names the argument, what was expected and what came.  kpnt/ops/_cuda.py
// checks the same things first with friendlier messages; these back them up.
#include <torch/extension.h>

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <optional>
#include <vector>

#include "fused_mlp.cuh"

namespace {

kpnt::MlpDims dims_from(const std::vector<int64_t>& d) {
  TORCH_CHECK_VALUE(d.size() == 4, "fused_mlp: dims must be [in, hidden, out, n_hidden], got ", d.size(), " values");
  return kpnt::MlpDims{static_cast<int>(d[0]), static_cast<int>(d[1]), static_cast<int>(d[2]),
                       static_cast<int>(d[3])};
}

void check_cuda_tensor(const torch::Tensor& t, const char* name, at::ScalarType dtype, const torch::Tensor& like) {
  TORCH_CHECK_VALUE(t.is_cuda(), "fused_mlp: ", name, " must be a CUDA tensor, got device ", t.device());
  TORCH_CHECK_VALUE(t.device() == like.device(), "fused_mlp: ", name, " is on ", t.device(), ", x on ", like.device());
  TORCH_CHECK_VALUE(t.scalar_type() == dtype, "fused_mlp: ", name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.is_contiguous(), "fused_mlp: ", name, " must be contiguous");
}

// Validates everything and fills the launcher arguments.  `w16` keeps the f16
// copy of the weights alive for the duration of the launch.
kpnt::MlpArgs make_args(const torch::Tensor& x, const torch::Tensor& w, const std::optional<torch::Tensor>& perm,
                        const std::optional<torch::Tensor>& offsets, const std::vector<int64_t>& dims, double slope,
                        torch::Tensor& w16) {
  const kpnt::MlpDims d = dims_from(dims);
  TORCH_CHECK_VALUE(kpnt::mlp_is_supported(d), "fused_mlp: no kernel for (in=", d.in, ", hidden=", d.hidden,
                    ", out=", d.out, ", n_hidden=", d.n_hidden,
                    "); compiled configurations: ", kpnt::mlp_supported_configs());
  check_cuda_tensor(x, "x", at::kFloat, x);
  TORCH_CHECK_VALUE(x.dim() == 2 && x.size(1) == d.in, "fused_mlp: x must be (P, ", d.in, "), got ", x.sizes());
  TORCH_CHECK_VALUE(x.size(0) < (int64_t(1) << 31), "fused_mlp: at most 2^31 - 1 pixels per call, got ", x.size(0));
  check_cuda_tensor(w, "weights", at::kFloat, x);
  const int64_t nw = kpnt::mlp_n_weights(d);
  TORCH_CHECK_VALUE((w.dim() == 1 && w.size(0) == nw) || (w.dim() == 2 && w.size(1) == nw && w.size(0) >= 1),
                    "fused_mlp: packed weights must be (", nw, ",) or (G, ", nw, "), got ", w.sizes());
  const int groups = w.dim() == 2 ? static_cast<int>(w.size(0)) : 1;
  TORCH_CHECK_VALUE(perm.has_value() == offsets.has_value(), "fused_mlp: perm and offsets come together");
  TORCH_CHECK_VALUE(groups == 1 || perm.has_value(), "fused_mlp: ", groups, " weight sets need perm and offsets");
  if (perm.has_value()) {
    check_cuda_tensor(*perm, "perm", at::kInt, x);
    check_cuda_tensor(*offsets, "offsets", at::kInt, x);
    TORCH_CHECK_VALUE(perm->dim() == 1 && perm->size(0) == x.size(0), "fused_mlp: perm must be (", x.size(0),
                      ",), got ", perm->sizes());
    TORCH_CHECK_VALUE(offsets->dim() == 1 && offsets->size(0) == groups + 1, "fused_mlp: offsets must be (",
                      groups + 1, ",), got ", offsets->sizes());
  }
  TORCH_CHECK_VALUE(slope >= 0.0, "fused_mlp: the leaky ReLU slope must be >= 0 (the backward reads the sign of "
                    "the activation), got ", slope);
  w16 = w.to(at::kHalf).contiguous();
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

torch::Tensor mlp_forward(const torch::Tensor& x, const torch::Tensor& w, const std::optional<torch::Tensor>& perm,
                          const std::optional<torch::Tensor>& offsets, const std::vector<int64_t>& dims,
                          double slope) {
  const c10::cuda::CUDAGuard guard(x.device());
  torch::Tensor w16;
  const kpnt::MlpArgs a = make_args(x, w, perm, offsets, dims, slope, w16);
  torch::Tensor y = torch::empty({x.size(0), a.dims.out}, x.options());
  kpnt::mlp_forward(a, y.data_ptr<float>());
  return y;
}

// Returns (dx, dw): dx is (P, in), or empty when need_dx is false; dw has the
// shape of w (float32).
std::vector<torch::Tensor> mlp_backward(const torch::Tensor& x, const torch::Tensor& w,
                                        const std::optional<torch::Tensor>& perm,
                                        const std::optional<torch::Tensor>& offsets, const torch::Tensor& dy,
                                        const std::vector<int64_t>& dims, double slope, bool need_dx) {
  const c10::cuda::CUDAGuard guard(x.device());
  torch::Tensor w16;
  const kpnt::MlpArgs a = make_args(x, w, perm, offsets, dims, slope, w16);
  check_cuda_tensor(dy, "grad_output", at::kFloat, x);
  TORCH_CHECK_VALUE(dy.dim() == 2 && dy.size(0) == x.size(0) && dy.size(1) == a.dims.out,
                    "fused_mlp: grad_output must be (", x.size(0), ", ", a.dims.out, "), got ", dy.sizes());
  torch::Tensor dx = need_dx ? torch::empty_like(x) : torch::empty({0}, x.options());
  const int64_t nw = kpnt::mlp_n_weights(a.dims);
  const int bx = kpnt::mlp_bwd_blocks(a);
  torch::Tensor partial = torch::empty({a.groups, bx, nw}, x.options());
  kpnt::mlp_backward(a, dy.data_ptr<float>(), need_dx ? dx.data_ptr<float>() : nullptr, partial.data_ptr<float>());
  torch::Tensor dw = partial.sum(1);
  if (w.dim() == 1) dw = dw.view({nw});
  return {dx, dw};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "kpnt fused CUDA kernels (built on first use by kpnt._backend)";
  m.def("mlp_forward", &mlp_forward, "fused MLP forward: y (P, out) = MLP(x)", py::arg("x"), py::arg("w"),
        py::arg("perm"), py::arg("offsets"), py::arg("dims"), py::arg("slope"));
  m.def("mlp_backward", &mlp_backward, "fused MLP backward with recomputation: (dx, dw)", py::arg("x"),
        py::arg("w"), py::arg("perm"), py::arg("offsets"), py::arg("dy"), py::arg("dims"), py::arg("slope"),
        py::arg("need_dx"));
  m.def("mlp_supported_configs", &kpnt::mlp_supported_configs, "compiled (in, hidden, out, n_hidden) configurations");
  m.def("mlp_n_weights", [](const std::vector<int64_t>& d) { return kpnt::mlp_n_weights(dims_from(d)); },
        "packed weight count of one set");
  m.def("mlp_bwd_tile_rows", &kpnt::mlp_bwd_tile_rows, "pixels per backward tile");
}
