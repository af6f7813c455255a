"""The fused projection block of the guide (kernels/guide_block.cu, GPU
inference of the shipped Bayer guide) against cuDNN's two calls, alone and
inside the whole guide and model; its errors; and the width it leaves to
cuDNN (the X-Trans guide's 128) logged, not failed."""
import importlib
import logging

import pytest
import torch

from kpnt.ops import _cuda
from kpnt.ops._cuda.guide_block import KERNELS, WIDTH, wgmma_built
from kpnt.ref.guide import init_guide, proj_block
from kpnt.testing import rel_error as rel

# The module (kpnt.ops re-exports its function under the same name).
guide_op = importlib.import_module("kpnt.ops.guide")

pytestmark = pytest.mark.cuda


def hopper_build() -> bool:
    """A Hopper GPU with the kernels built for it (kpnt builds 9.0 as 9.0a)."""
    from kpnt import _backend

    return torch.cuda.get_device_capability() == (9, 0) and "9.0a" in _backend.build_flags()["arch"].split(";")


def skip_without_wgmma(kernel="wgmma"):
    if kernel == "wgmma" and not wgmma_built(torch.cuda.current_device()):
        pytest.skip("the wgmma kernel needs a Hopper GPU and an sm_90a build")


def run_block(z, w, b, p, c, kernel):
    """The kernel's output, its memory filled with NaN first: the caching
    allocator hands the freed NaN block to the output, so a position the
    kernel fails to write shows (not an earlier kernel's right answer)."""
    torch.full_like(z, float("nan"))
    try:
        return _cuda.fused_proj_block(z, w, b, p, c, kernel)
    except ValueError as e:
        # The mma.sync tilings need ~110-130 KB of shared memory a block: more than sm_86/89 GPUs give.
        if "shared memory" in str(e) and torch.cuda.get_device_capability() < (9, 0):
            pytest.skip(str(e))
        raise


@pytest.fixture(autouse=True)
def fused_block_on(monkeypatch):
    """The guide op's switch on (its default; the tests hold whatever it ships as)."""
    monkeypatch.setattr(guide_op, "FUSED_BLOCK", True)


def test_wgmma_is_built_exactly_for_hopper():
    assert wgmma_built(torch.cuda.current_device()) == hopper_build()


def block_weights(width=WIDTH, seed=0):
    """A trained-like block: He-normal 3x3, biases of the activations' order,
    a non-zero projection (init_guide's is zero: the identity block)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(width, width, 3, 3, generator=g) * (2 / (9 * width)) ** 0.5
    b = 0.1 * torch.randn(width, generator=g)
    p = torch.randn(width, width, 1, 1, generator=g) * width ** -0.5
    c = 0.1 * torch.randn(width, generator=g)
    return [t.cuda().half() for t in (w, b, p, c)]


def stream(N, H, W, width=WIDTH, seed=1):
    """A block's input: non-negative (a ReLU's output), float16 channels-last."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, width, H, W, generator=g).clamp_min(0)
    return z.cuda().half().contiguous(memory_format=torch.channels_last)


def exact_block(z, w, b, p, c):
    """The block in float64 from the same float16 inputs, h rounded to float16
    as both GPU paths store or hand it over."""
    z, w, b, p, c = (t.double() for t in (z, w, b, p, c))
    h = torch.nn.functional.conv2d(z, w, b, padding=1).relu().half().double()
    return (torch.nn.functional.conv2d(h, p, c) + z).relu()


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("N,H,W", [(2, 37, 53), (1, 16, 16), (1, 1, 1), (1, 17, 16), (3, 9, 130), (1, 300, 520)])
def test_fused_block_matches_cudnn_and_exact(N, H, W, kernel):
    """Every kernel (wgmma; mma.sync in both tilings); odd sizes (partial
    tiles at both edges), several images, a single position (every tap in the
    padding but the centre), an odd tile count (the wgmma kernel's two halves
    of a block get different numbers of tiles: 3 at 17 x 16), and more tiles
    than resident blocks (each goes round its persistent loop)."""
    skip_without_wgmma(kernel)
    w, b, p, c = block_weights()
    z = stream(N, H, W)
    with torch.no_grad():
        fused = run_block(z, w, b, p, c, kernel)
        cudnn = proj_block(z, w, b, p, c)
    exact = exact_block(z, w, b, p, c)
    assert fused.shape == z.shape and fused.dtype == torch.float16
    assert fused.is_contiguous(memory_format=torch.channels_last)
    assert torch.isfinite(fused).all()
    # Both round h and the output to float16 and sum in float32 in their own
    # order: each within a few float16 roundings (4.9e-4 relative) of exact.
    e_fused, e_cudnn = rel(fused.double(), exact), rel(cudnn.double(), exact)
    assert e_fused < 2e-3, (e_fused, e_cudnn)
    assert e_fused < 2 * e_cudnn + 5e-4, (e_fused, e_cudnn)
    worst = ((fused.double() - exact).abs() / exact.abs().clamp_min(1)).max().item()
    assert worst < 4e-3


@pytest.mark.parametrize("kernel", KERNELS)
def test_fused_block_leaves_its_input_alone_and_uses_every_weight(kernel):
    skip_without_wgmma(kernel)
    w, b, p, c = block_weights()
    z = stream(1, 20, 24)
    z0 = z.clone()
    with torch.no_grad():
        ref = run_block(z, w, b, p, c, kernel)
        assert torch.equal(z, z0)
        # Each weight matters: dropping one moves the output by far more than rounding.
        for i in range(4):
            ws = [t if j != i else torch.zeros_like(t) for j, t in enumerate((w, b, p, c))]
            assert rel(_cuda.fused_proj_block(z, *ws, kernel).float(), ref.float()) > 1e-2, f"weight {i} unused"


def test_fused_block_rejects_what_it_cannot_run():
    w, b, p, c = block_weights()
    z = stream(1, 8, 8)
    with torch.no_grad():
        with pytest.raises(ValueError, match="channels-last"):
            _cuda.fused_proj_block(z.contiguous(), w, b, p, c)
        with pytest.raises(ValueError, match="float16"):
            _cuda.fused_proj_block(z.float().contiguous(memory_format=torch.channels_last), w, b, p, c)
        wide = block_weights(128)
        with pytest.raises(ValueError, match=r"\(N, 64, H, W\)"):
            _cuda.fused_proj_block(stream(1, 8, 8, 128), *wide)
        with pytest.raises(ValueError, match="aligned"):
            flat = torch.zeros(1 + 8 * 8 * 64, device="cuda", dtype=torch.float16)
            _cuda.fused_proj_block(flat[1:].view(1, 8, 8, 64).permute(0, 3, 1, 2), w, b, p, c)
        with pytest.raises(ValueError, match="kernel must be 'wgmma', 'mma8' or 'mma16'"):
            _cuda.fused_proj_block(z, w, b, p, c, "mma12")
        if not wgmma_built(torch.cuda.current_device()):
            with pytest.raises(ValueError, match="sm_90a"):
                _cuda.fused_proj_block(z, w, b, p, c, "wgmma")
    with pytest.raises(ValueError, match="inference only"):
        _cuda.fused_proj_block(z, w.clone().requires_grad_(), b, p, c)


def guide_inputs(cfa, N=2, H=70, W=94, seed=3):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(N, 1, H, W, generator=g) * 0.5 + 0.1).cuda()
    U = (torch.rand(N, 3, H, W, generator=g) * 0.5 + 0.1).cuda()
    noise = torch.tensor([[[2e-3] * 3, [1e-5] * 3]] * N).cuda()
    return x, U, noise


def trained_like_guide(period, width, layers, seed=4):
    """init_guide's projection layout with every weight non-zero."""
    g = torch.Generator().manual_seed(seed)
    ws = init_guide(period, width, layers, g, proj=True)
    return [(w + (0.1 if w.dim() == 1 else 0.05) * torch.randn(w.shape, generator=g)).cuda() for w in ws]


def guide_through_fused_end(monkeypatch, op: str, switch: str, fused):
    """(guide on 'cuda' with the fused op ``op`` switched on, the same guide on
    'torch', calls of the fused op during each): the shipped Bayer guide's
    shape, blocks on cuDNN on both backends, so only ``op`` differs."""
    from kpnt.mosaic.cfa import CFA
    from kpnt.ops import dispatch

    monkeypatch.setattr(guide_op, "FUSED_BLOCK", False)
    monkeypatch.setattr(guide_op, switch, True)
    calls = []

    def counted(*args):
        calls.append(1)
        return fused(*args)

    monkeypatch.setitem(dispatch._backend_ops("cuda"), op, counted)
    cfa = CFA.bayer("GRBG")
    ws = trained_like_guide(4, WIDTH, 4)
    x, U, noise = guide_inputs(cfa)
    with torch.no_grad():
        on_cuda = guide_op.guide(x, U, noise, cfa, ws, pack=2, proj=True, backend="cuda")
        calls_cuda = len(calls)
        on_torch = guide_op.guide(x, U, noise, cfa, ws, pack=2, proj=True, backend="torch")
    return on_cuda, on_torch, (calls_cuda, len(calls) - calls_cuda)


@pytest.mark.parametrize("pack", [1, 2])
def test_whole_guide_with_fused_blocks_matches_cudnn(monkeypatch, pack):
    """The shipped Bayer guide's shape (width 64, projection blocks; packed
    1x1 as shipped, and 2x2): the guide op on the 'cuda' backend runs its
    blocks fused, the same guide on 'torch' on cuDNN, and the two residuals
    agree to float16 rounding over 5 blocks."""
    from kpnt.mosaic.cfa import CFA

    skip_without_wgmma()
    cfa = CFA.bayer("GRBG")
    ws = trained_like_guide(2 * pack, WIDTH, 6)
    x, U, noise = guide_inputs(cfa)
    with torch.no_grad():
        fused = guide_op.guide(x, U, noise, cfa, ws, pack=pack, proj=True, backend="cuda")
        cudnn = guide_op.guide(x, U, noise, cfa, ws, pack=pack, proj=True, backend="torch")
        monkeypatch.setattr(guide_op, "FUSED_BLOCK", False)
        switched_off = guide_op.guide(x, U, noise, cfa, ws, pack=pack, proj=True, backend="cuda")
    r_fused, r_cudnn = fused - U, cudnn - U
    assert rel(r_cudnn, r_fused) < 5e-3
    assert rel(r_cudnn, r_fused) > 0      # another path, not cuDNN's again
    assert torch.equal(switched_off, cudnn)


def test_fused_block_is_chosen_only_where_it_runs(caplog, monkeypatch):
    """The 'cuda' backend's op at width 64 in inference on a GPU with the
    wgmma kernel (any GPU here: the query is the next test's); None (cuDNN)
    while training, on 'torch', at width 128 (logged once) and with the
    switch off."""
    from kpnt.mosaic.cfa import CFA
    from kpnt.ops._cuda import guide_block

    monkeypatch.setattr(guide_block, "wgmma_built", lambda index: True)
    x, _, _ = guide_inputs(CFA.bayer("GRBG"), N=1, H=8, W=8)
    ws64 = trained_like_guide(4, WIDTH, 3)
    with torch.no_grad():
        assert guide_op._fused_block(x, ws64, True, "cuda") is _cuda.fused_proj_block
        assert guide_op._fused_block(x, ws64, True, "torch") is None
        assert guide_op._fused_block(x, ws64, False, "cuda") is None
    assert guide_op._fused_block(x, ws64, True, "cuda") is None           # autograd on: training
    ws128 = trained_like_guide(6, 128, 3)
    guide_op._width_logged.discard(128)
    with torch.no_grad(), caplog.at_level(logging.INFO, logger="kpnt.ops.guide"):
        assert guide_op._fused_block(x, ws128, True, "cuda") is None
        assert guide_op._fused_block(x, ws128, True, "cuda") is None
    assert sum("width 128 run on cuDNN" in r.getMessage() for r in caplog.records) == 1
    monkeypatch.setattr(guide_op, "FUSED_BLOCK", False)
    with torch.no_grad():
        assert guide_op._fused_block(x, ws64, True, "cuda") is None


def test_gpus_without_the_wgmma_kernel_stay_on_cudnn_and_say_so(monkeypatch, caplog):
    """Where the wgmma kernel is not in the build (any GPU but Hopper), the
    guide's blocks run on cuDNN (the mma.sync kernel is no faster there on an
    H100), logged once per device."""
    from kpnt.mosaic.cfa import CFA
    from kpnt.ops._cuda import guide_block

    monkeypatch.setattr(guide_block, "wgmma_built", lambda index: False)
    guide_op._device_logged.clear()
    x, _, _ = guide_inputs(CFA.bayer("GRBG"), N=1, H=8, W=8)
    ws64 = trained_like_guide(4, WIDTH, 3)
    with torch.no_grad(), caplog.at_level(logging.INFO, logger="kpnt.ops.guide"):
        assert guide_op._fused_block(x, ws64, True, "cuda") is None
        assert guide_op._fused_block(x, ws64, True, "cuda") is None
    assert sum("needs a Hopper GPU" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("sensor", ["bayer", "xtrans"])
def test_shipped_model_with_fused_blocks_matches_cudnn(sensor, monkeypatch):
    """The shipped weights end to end on the 'cuda' backend: with the fused
    blocks (Bayer; X-Trans's width-128 guide stays on cuDNN) against every
    block on cuDNN, to float16 rounding of the guide's residual."""
    from kpnt.weights_io import load_weights, shipped_weights
    from kpnt.mosaic.cfa import CFA

    if sensor == "bayer":
        skip_without_wgmma()
    model, _ = load_weights(shipped_weights(sensor), sensor, device="cuda")
    model.backend = "cuda"
    cfa = CFA.bayer("RGGB") if sensor == "bayer" else CFA.xtrans()
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(1, 1, 96, 132, generator=g) * 0.4 + 0.05).cuda()
    noise = torch.tensor([[[1e-3] * 3, [1e-5] * 3]]).cuda()
    with torch.no_grad():
        fused = model(x, cfa, noise)
        monkeypatch.setattr(guide_op, "FUSED_BLOCK", False)
        cudnn = model(x, cfa, noise)
    assert torch.isfinite(fused).all()
    assert rel(fused, cudnn) < 1e-3
    if sensor == "xtrans":
        assert torch.equal(fused, cudnn)
    else:
        assert not torch.equal(fused, cudnn)      # the fused blocks ran
