"""kernels/guide_wgrad.cu: the float32 guide's 3x3 weight gradient on TF32
against float64 of TF32-rounded operands (shapes with partial strips, both
compiled widths, more lines than blocks), against cuDNN's
TF32 weight gradient, the same bits on a rerun, one-line errors for what it
does not take, and the guide network routing its 3x3s' weight gradients
through it only for float32 with TF32 on."""
import pytest
import torch

from kpnt.ops._cuda import guide_train
from kpnt.ops._cuda.extension import ext, unwrap
from kpnt.testing import rel_error as rel
from test_guide_train import tf32

pytestmark = pytest.mark.cuda


def operands(shape, seed):
    """(gh, z): channels-last float32 CUDA tensors, z ReLU'd as the guide's activations are."""
    g = torch.Generator().manual_seed(seed)
    gh = torch.randn(*shape, generator=g) * 1e-3
    z = torch.randn(*shape, generator=g).relu()
    return tuple(t.cuda().contiguous(memory_format=torch.channels_last) for t in (gh, z))


def float64_wgrad(gh, z):
    """dW (C, C, 3, 3) in float64 (computed on the operands' device, returned on the CPU)."""
    C = gh.shape[1]
    w = torch.zeros(C, C, 3, 3, dtype=torch.float64, device=gh.device)
    return torch.ops.aten.convolution_backward(gh.double(), z.double(), w, None, [1, 1], [1, 1], [1, 1],
                                               False, [0, 0], 1, [False, True, False])[1].cpu()


# Bayer's 64 channels in strips of at most 64 positions, X-Trans's 128 in strips of at most 88, each block a run of
# (image, strip, row) lines: widths that are no multiple of 8 or of either strip, a strip narrower than a tap's
# reach, fewer lines than an H100's blocks, and (last two) the shipped steps' grids, with runs that cross strips and
# images.
CASES = [(2, 64, 37, 70), (1, 64, 16, 64), (3, 64, 5, 3), (2, 128, 23, 41), (1, 128, 8, 32), (4, 128, 86, 86),
         (4, 64, 258, 258)]


def hopper():
    """Whether this GPU runs the build's sm_90a code (the kernel's wgmma form)."""
    from kpnt.ops._cuda.guide_block import wgmma_built
    return wgmma_built(torch.cuda.current_device())


FORMS = {"mma": (False, False), "wgmma": (True, False), "wgmma-ws": (True, True)}   # (wgmma, specialized)


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("shape", CASES, ids=["x".join(map(str, s)) for s in CASES])
def test_wgrad_matches_float64_of_tf32_operands(shape, form):
    C = shape[1]
    if FORMS[form][0] and not hopper():
        pytest.skip("the wgmma forms need a GPU that runs sm_90a code")
    gh, z = operands(shape, seed=sum(shape))
    dw = unwrap(ext().guide_wgrad(gh, z, *FORMS[form]))
    assert dw.shape == (C, 3, 3, C) and dw.dtype == torch.float32 and dw.is_contiguous()
    got = dw.permute(0, 3, 1, 2).double().cpu()
    want = float64_wgrad(tf32(gh), tf32(z))
    assert rel(got, want) < 1e-5, rel(got, want)
    # Every element, against float32 accumulation's bound over the positions it sums.
    bound = 5e-5 * float64_wgrad(gh.abs(), z.abs()) + 1e-12
    assert ((got - want).abs() <= bound).all(), ((got - want).abs() / bound).max()
    assert torch.equal(dw, unwrap(ext().guide_wgrad(gh, z, *FORMS[form])))


@pytest.mark.parametrize("shape", [(4, 64, 258, 258), (4, 128, 86, 86)], ids=["bayer", "xtrans"])
def test_wgrad_forms_agree(shape):
    """The two forms sum the same products in another order: within float32
    summation of each other at the shipped steps' grids."""
    if not hopper():
        pytest.skip("the wgmma form needs a GPU that runs sm_90a code")
    gh, z = operands(shape, seed=43)
    mma, wg, ws = (unwrap(ext().guide_wgrad(gh, z, *FORMS[f])).double() for f in FORMS)
    assert rel(wg, mma) < 1e-5, rel(wg, mma)   # (each is within 1e-5 of float64 above; 128 channels: 2.0e-6)
    assert torch.equal(ws, wg)                 # the specialized form sums in the wgmma form's order


@pytest.mark.parametrize("C", [64, 128])
def test_wgrad_agrees_with_cudnns_tf32(monkeypatch, C):
    """Against cuDNN's TF32 weight gradient (which rounds its operands its own
    way): both within TF32's rounding of float64's."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    gh, z = operands((2, C, 40, 52), seed=C)
    ours = unwrap(ext().guide_wgrad(gh, z)).permute(0, 3, 1, 2).double().cpu()
    w = torch.zeros(C, C, 3, 3, device="cuda").contiguous(memory_format=torch.channels_last)
    cudnn = torch.ops.aten.convolution_backward(gh, z, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                [False, True, False])[1].double().cpu()
    exact = float64_wgrad(gh, z)
    assert rel(ours, exact) < 2e-3 and rel(cudnn, exact) < 2e-3
    assert rel(ours, cudnn) < 3e-3


def test_wgrad_bad_input_raises_one_line():
    gh, z = operands((1, 64, 8, 8), seed=1)
    with pytest.raises(ValueError, match="64 or 128 channels"):
        unwrap(ext().guide_wgrad(gh[:, :32].contiguous(memory_format=torch.channels_last),
                                 z[:, :32].contiguous(memory_format=torch.channels_last)))
    with pytest.raises(ValueError, match="channels-last"):
        unwrap(ext().guide_wgrad(gh.contiguous(), z))
    with pytest.raises(ValueError, match="float32"):
        unwrap(ext().guide_wgrad(gh.double(), z))
    with pytest.raises(ValueError, match="must be"):
        unwrap(ext().guide_wgrad(gh, z[:, :, :4].contiguous(memory_format=torch.channels_last)))
    if hopper():
        with pytest.raises(ValueError, match="64 or 128 channels"):
            unwrap(ext().guide_wgrad(gh[:, :32].contiguous(memory_format=torch.channels_last),
                                     z[:, :32].contiguous(memory_format=torch.channels_last), True))
    with pytest.raises(ValueError, match="specialized form is a wgmma form"):
        unwrap(ext().guide_wgrad(gh, z, False, True))


@pytest.mark.parametrize("period, width, size, wgmma, specialized",
                         [(2, 64, (2, 37, 45), False, False), (2, 64, (2, 37, 45), True, False),
                          (2, 64, (2, 37, 45), True, True), (6, 128, (2, 19, 23), False, False),
                          (6, 128, (2, 19, 23), True, False)],
                         ids=["bayer-mma", "bayer-wgmma", "bayer-wgmma-ws", "xtrans-mma", "xtrans-wgmma"])
def test_float32_network_takes_the_wgrad_kernel_with_tf32_only(monkeypatch, period, width, size, wgmma, specialized):
    """A float32 guide's block 3x3s (C -> C) take their weight gradient from
    the kernel when FUSED_WGRAD and cuDNN's TF32 are on, and the gradients
    are as close to float64's as cuDNN's TF32 path's; with TF32 off the
    kernel is not called."""
    from test_guide_train import float64_network, fused_network_grads, network_case, spy_on_projection_kernels

    layers = 4
    z, ws, gout = network_case(period, width, layers, size, seed=21)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    monkeypatch.setattr(guide_train, "WGRAD_WIDTHS", guide_train.WGRAD_COMPILED_WIDTHS)   # 128 is compiled, not routed
    monkeypatch.setattr(guide_train, "WGRAD_WGMMA", wgmma)    # (where sm_90a runs)
    monkeypatch.setattr(guide_train, "WGRAD_WGMMA_SPECIALIZED", specialized)
    monkeypatch.setattr(guide_train, "WGRAD_WGMMA_WIDTHS", guide_train.WGRAD_COMPILED_WIDTHS)
    assert guide_train._wgrad_wgmma(torch.zeros(1, width, 1, 1, device="cuda")) == (wgmma and hopper())
    calls = spy_on_projection_kernels(monkeypatch, ("guide_wgrad",))
    monkeypatch.setattr(guide_train, "FUSED_WGRAD", True)
    _, fused = fused_network_grads(z, ws, gout, torch.float32)
    assert calls == ["guide_wgrad"] * (layers - 1)
    monkeypatch.setattr(guide_train, "FUSED_WGRAD", False)
    _, cudnn = fused_network_grads(z, ws, gout, torch.float32)
    assert len(calls) == layers - 1
    _, ref_g = float64_network(z, ws, gout)
    for i, (a, b, c) in enumerate(zip(fused, cudnn, ref_g)):
        assert a.shape == b.shape and a.dtype == b.dtype and a.stride() == b.stride(), i
        assert rel(a.double(), c) < 2 * rel(b.double(), c) + 1e-5, (i, rel(a.double(), c), rel(b.double(), c))
    monkeypatch.setattr(guide_train, "FUSED_WGRAD", True)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    fused_network_grads(z, ws, gout, torch.float32)
    assert len(calls) == layers - 1            # TF32 off: cuDNN's exact float32 weight gradient
