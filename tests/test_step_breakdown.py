"""tools/step_breakdown.py's grouping of kernel names (the profiling needs a GPU)."""
import sys

from tool_loader import TOOLS, load_tool

sys.path.insert(0, str(TOOLS))
sb = load_tool("step_breakdown")


def test_names_fall_in_their_groups():
    assert sb.group_of("void kpnt::(anonymous namespace)::mlp_bwd_wgmma_kernel<kpnt::Cfg<32, 64>>") == \
        "kpnt MLP backward"
    assert sb.group_of("void kpnt::(anonymous namespace)::mlp_dw_wgmma_kernel<...>") == "kpnt MLP backward"
    assert sb.group_of("kpnt::(anonymous namespace)::front_adjoint_kernel(FGeo, int)") == \
        "kpnt front level (taps, adjoint)"
    assert sb.group_of("sm90_xmma_fprop_implicit_gemm_f32f32_tf32f32_f32_nhwckrsc_nhwc") == \
        "cuDNN / cuBLAS convolutions and GEMMs"
    assert sb.group_of("void at::native::(anonymous namespace)::multi_tensor_apply_kernel<FusedAdam>") == \
        "optimizer (Adam)"
    assert sb.group_of("void at::native::vectorized_elementwise_kernel<4, CUDAFunctor_add<float>>") == sb.OTHER
    for name in ("void kpnt::(anonymous namespace)::wgrad_wgmma_ws_kernel<kpnt::WgradWgmmaWS<64>>(GuideWgradArgs)",
                 "void kpnt::(anonymous namespace)::wgrad_tf32_kernel<kpnt::WgradCfg<64, 3, 64>>(GuideWgradArgs)"):
        assert sb.group_of(name) == "kpnt guide 3x3 weight gradient"
    assert sb.group_of("sm90_xmma_wgrad_implicit_gemm_f32f32_tf32f32_f32_nhwckrsc") == \
        "cuDNN / cuBLAS convolutions and GEMMs"
    assert sb.group_of("kpnt::adam_kernel(kpnt::UpdateTable, float const*)") == "optimizer (Adam)"
    for name in ("void kpnt::(anonymous namespace)::relu_grad_sum_kernel<float>(kpnt::GuideEltArgs)",
                 "void kpnt::(anonymous namespace)::bias_relu_kernel<__nv_bfloat16>(kpnt::GuideEltArgs)"):
        assert sb.group_of(name) == "kpnt guide"


def test_profiler_ranges_are_not_kernels():
    import kbench_common

    assert "Optimizer.step#Adam.step".startswith(kbench_common.ANNOTATIONS)
    assert not "void kpnt::mlp_fwd_kernel".startswith(kbench_common.ANNOTATIONS)


def test_groups_sum_their_kernels_most_time_first():
    rows = sb.grouped([("kpnt::x::mlp_fwd_kernel", 1.0, 2), ("cudnn::conv", 3.0, 5), ("kpnt::y::mlp_fwd_k2", 0.5, 1),
                       ("at::native::fill", 0.25, 4)])
    assert rows == [("cuDNN / cuBLAS convolutions and GEMMs", 3.0, 5), ("kpnt MLP forward", 1.5, 3),
                    (sb.OTHER, 0.25, 4)]
