"""The guide network's input built in one kernel (kernels/guide_start.cu,
inference) against kpnt.ref.guide.start: z (float16 channels-last, as the
network takes it) and s bitwise, for Bayer and X-Trans phases, packing,
residual guides' normalised noise feature, zero noise, negative smooth
values and odd sizes; inside the guide op; one-line errors."""
import importlib

import pytest
import torch

from kpnt.mosaic.cfa import CFA
from kpnt.ops import _cuda
from kpnt.ops._cuda.extension import ext, unwrap
from kpnt.ref.guide import start as ref_start

pytestmark = pytest.mark.cuda

guide_op = importlib.import_module("kpnt.ops.guide")


def inputs(N, H, W, seed, noise_scale=1.0, negative=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, 1, H, W, generator=g) * 0.5
    U = torch.rand(N, 3, H, W, generator=g) * 0.5 - (0.3 if negative else 0.0)
    noise = torch.tensor([[[2e-3, 1e-3, 3e-3], [1e-5, 2e-5, 4e-6]]] * N) * noise_scale
    return x.cuda(), U.cuda(), noise.cuda()


@pytest.mark.parametrize("cfa,pack", [(CFA.bayer("RGGB"), 1), (CFA.bayer("GBRG"), 2), (CFA.xtrans(), 1),
                                      (CFA.xtrans(2, 5), 1)], ids=["bayer", "bayer-pack2", "xtrans", "xtrans-2-5"])
@pytest.mark.parametrize("skip", [False, True])
@pytest.mark.parametrize("N,H,W,noise_scale,negative", [(2, 37, 53, 1.0, False), (1, 12, 12, 0.0, False),
                                                         (1, 301, 90, 1.0, True)], ids=["odd", "zero-noise", "dark"])
def test_fused_start_is_bitwise_the_reference(cfa, pack, skip, N, H, W, noise_scale, negative):
    x, U, noise = inputs(N, H, W, seed=H + W, noise_scale=noise_scale, negative=negative)
    with torch.no_grad():
        z, s, Q, top, left = _cuda.fused_guide_start(x, U, noise, cfa, pack, skip)
        z_ref, s_ref, Q_ref, top_ref, left_ref = ref_start(x, U, noise, cfa, pack, skip)
    assert (Q, top, left) == (Q_ref, top_ref, left_ref)
    assert z.dtype == torch.float16 and z.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(s, s_ref), (s - s_ref).abs().max().item()
    want = z_ref.to(torch.float16).contiguous(memory_format=torch.channels_last)   # what the network is given
    assert torch.equal(z, want), (z.float() - want.float()).abs().max().item()


def test_the_mean_factor_past_exact_thirds():
    """1 x 1001 x 5589 packed positions: PyTorch's mean factor, float(M) /
    float(3 M), is 0.3333333 there, not 1/3 in float (0.33333334), because
    3 M is past float32's exact integers; the binding passes the same."""
    import numpy as np

    M = 1001 * 5589
    assert np.float32(M) / np.float32(3 * M) != np.float32(1) / np.float32(3)
    cfa = CFA.bayer("RGGB")                         # the reference phase: no padding, Q = 2
    x, U, noise = inputs(1, 2 * 1001, 2 * 5589, seed=5)
    with torch.no_grad():
        z, s, *_ = _cuda.fused_guide_start(x, U, noise, cfa, 1, False)
        z_ref, s_ref, *_ = ref_start(x, U, noise, cfa, 1, False)
    assert z.shape[-2:] == (1001, 5589)
    assert torch.equal(s, s_ref)
    assert torch.equal(z, z_ref.to(torch.float16).contiguous(memory_format=torch.channels_last))


def test_one_packed_position_is_the_reference():
    """There PyTorch sums the channel mean in another order: the reference
    runs (z float32, bitwise itself)."""
    x, U, noise = inputs(2, 2, 2, seed=6)
    with torch.no_grad():
        z, s, *_ = _cuda.fused_guide_start(x, U, noise, CFA.bayer("RGGB"), 1, False)
        z_ref, s_ref, *_ = ref_start(x, U, noise, CFA.bayer("RGGB"), 1, False)
    assert z.dtype == torch.float32 and torch.equal(z, z_ref) and torch.equal(s, s_ref)


def test_with_autograd_on_the_reference_runs():
    x, U, noise = inputs(1, 8, 8, seed=1)
    z, s, *_ = _cuda.fused_guide_start(x, U, noise, CFA.bayer(), 1, False)
    assert z.dtype == torch.float32
    U.requires_grad_()
    z, s, *_ = _cuda.fused_guide_start(x, U, noise, CFA.bayer(), 1, False)
    assert z.grad_fn is not None


def test_inside_the_guide_the_cuda_backend_equals_the_reference(monkeypatch):
    """The same guide (blocks on cuDNN on both backends), its input built by
    the fused kernel on 'cuda' and by the reference on 'torch': bitwise."""
    from test_guide_block import guide_through_fused_end

    fused, ref, calls = guide_through_fused_end(monkeypatch, "guide_start", "FUSED_START", _cuda.fused_guide_start)
    assert calls == (1, 0)                          # the fused kernel built its input on 'cuda' only
    assert torch.equal(fused, ref)


def test_bad_arguments_are_one_line_errors():
    x, U, noise = inputs(1, 10, 10, seed=2)
    a = b = torch.zeros(1, device="cuda")
    pattern = torch.zeros(2, 2, dtype=torch.int32, device="cuda")
    consts = [1e-2, 1e-5, -6.0, 3.0]
    with pytest.raises(ValueError, match=r"^guide start: the padded image \(0 \+ 10 \+ 1\)") as err:
        unwrap(ext().guide_start(x, U, a, b, pattern, 4, [0, 1, 0, 2], False, consts))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"^guide start: U must be contiguous float32"):
        unwrap(ext().guide_start(x, U[:, :2], a, b, pattern, 2, [0, 0, 0, 0], False, consts))


@pytest.mark.parametrize("Q", [2, 6, 12])
def test_block_means_gradient_is_avg_pools_bits_on_the_gpu(Q):
    """Training's start (kpnt.ref.guide.block_means) on CUDA: avg_pool2d's
    values and, through its written-out backward, avg_pool2d's gradient bits
    (channels-last float32, as training has it)."""
    from kpnt.ref.guide import block_means

    gen = torch.Generator("cuda").manual_seed(Q)
    t = torch.randn(4, 3, 8 * Q, 9 * Q, device="cuda", generator=gen)
    t = t.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    ours, pooled = block_means(t, Q), torch.nn.functional.avg_pool2d(t, Q)
    assert torch.equal(ours, pooled)
    g = torch.randn(ours.shape, device="cuda", generator=gen)
    (d_ours,), (d_pooled,) = torch.autograd.grad(ours, t, g), torch.autograd.grad(pooled, t, g)
    assert torch.equal(d_ours, d_pooled)
