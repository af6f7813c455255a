"""The guide's fused last step (kernels/guide_finish.cu, inference): U plus
the network's output scaled, unpacked and cropped, bitwise the reference's
kpnt.ref.guide.finish for float16 channels-last and float32 outputs, odd crops
and several images; inside the guide op (the 'cuda' backend against
'torch', blocks on cuDNN in both: bitwise the same guide); one-line errors."""
import importlib

import pytest
import torch

from kpnt.ops import _cuda
from kpnt.ops._cuda.extension import ext, unwrap
from kpnt.ref.guide import finish as ref_finish

pytestmark = pytest.mark.cuda

guide_op = importlib.import_module("kpnt.ops.guide")


def case(N, Q, h, w, top, left, H, W, half, seed):
    g = torch.Generator("cuda").manual_seed(seed)
    r = torch.randn(N, 3 * Q * Q, h, w, device="cuda", generator=g) * 0.1
    if half:
        r = r.half().contiguous(memory_format=torch.channels_last)
    s = torch.rand(N, 1, h, w, device="cuda", generator=g) + 0.05
    U = torch.rand(N, 3, H, W, device="cuda", generator=g)
    return U, r, s


@pytest.mark.parametrize("half", [True, False], ids=["f16 channels-last", "f32"])
@pytest.mark.parametrize("N,Q,h,w,top,left,H,W", [
    (2, 4, 9, 11, 1, 3, 33, 40),      # Bayer packed 2x2: an odd crop inside the shuffled 36 x 44
    (1, 6, 5, 7, 5, 0, 25, 42),       # X-Trans: the crop at the right edge
    (1, 2, 1, 1, 0, 0, 2, 2),         # one packed position
    (3, 4, 300, 40, 2, 1, 1197, 158),  # more rows than the grid's: each thread walks several
])
def test_fused_finish_is_bitwise_the_reference(N, Q, h, w, top, left, H, W, half):
    U, r, s = case(N, Q, h, w, top, left, H, W, half, seed=h * w + Q)
    kept = (U.clone(), r.clone(), s.clone())
    with torch.no_grad():
        got = _cuda.fused_guide_finish(U, r, s, Q, top, left)
        want = ref_finish(U, r, s, Q, top, left)
    assert got.shape == U.shape and got.dtype == torch.float32
    assert torch.equal(got, want), (got - want).abs().max().item()
    assert all(torch.equal(a, b) for a, b in zip((U, r, s), kept))   # inputs left alone


def test_with_a_gradient_the_reference_runs():
    U, r, s = case(1, 2, 4, 5, 1, 1, 6, 8, False, seed=1)
    r.requires_grad_()
    out = _cuda.fused_guide_finish(U, r, s, 2, 1, 1)
    assert out.grad_fn is not None
    g, = torch.autograd.grad(out.sum(), r)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_inside_the_guide_the_cuda_backend_equals_the_reference(monkeypatch):
    """The same guide (blocks on cuDNN on both backends) through the op: the
    'cuda' backend's fused finish against the reference's passes, bitwise."""
    from test_guide_block import guide_through_fused_end

    fused, ref, calls = guide_through_fused_end(monkeypatch, "guide_finish", "FUSED_FINISH", _cuda.fused_guide_finish)
    assert calls == (1, 0)                          # the fused kernel made its output on 'cuda' only
    assert torch.equal(fused, ref)
    monkeypatch.setattr(guide_op, "FUSED_FINISH", False)
    with torch.no_grad():
        assert guide_op._fused_finish(torch.zeros(1, 1, 4, 4, device="cuda"), "cuda") is None


def test_bad_arguments_are_one_line_errors():
    U, r, s = case(1, 2, 4, 5, 0, 0, 8, 10, True, seed=2)
    with pytest.raises(ValueError, match=r"^guide finish: the crop \(1, 0\) \+ 8 x 10 leaves") as err:
        unwrap(ext().guide_finish(U, r, s, 2, 1, 0))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"^guide finish: r must be \(1, 27, h, w\)"):
        unwrap(ext().guide_finish(U, r, s, 3, 0, 0))
