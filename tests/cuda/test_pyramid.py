"""The colour pyramid's fused down and up (kernels/pyramid.cu, inference)
against kpnt.ref.pyramid: bitwise, at even, odd and tiny sizes (the mirror
padding folding more than once), several images and channels; through the
ops on the 'cuda' backend with the switch on and off; the reference where
autograd needs a backward, the kernels where it does not (training's data
pyramid)."""
import pytest
import torch

from kpnt import ops
from kpnt.ops import _cuda
from kpnt.ops._cuda import pyramid as pyr
from kpnt.ref import pyramid as ref

pytestmark = pytest.mark.cuda

# Odd, even and tiny sizes (the mirror folding more than once), strips, several planes, and more outputs
# than a one-wave grid (1001 x 999: both kernels' loops go round).
SIZES = [(2, 3, 37, 53), (1, 3, 1, 1), (1, 3, 1, 2), (1, 3, 2, 3), (3, 1, 5, 4), (2, 1, 1, 9), (1, 2, 9, 1),
         (1, 3, 301, 517), (1, 3, 1001, 999)]


class Spy:
    """The extension, counting the pyramid kernels' calls."""

    def __init__(self):
        self.calls = {"pyramid_down": 0, "pyramid_up": 0, "pyramid_up_adjoint": 0}

    def __getattr__(self, name):
        real = getattr(_cuda.extension.ext(), name)
        if name not in self.calls:
            return real

        def counted(*args):
            self.calls[name] += 1
            return real(*args)
        return counted


@pytest.fixture
def fused_on(monkeypatch):
    """The switch on and the kernels' calls counted (a fused op that fell
    back to the reference would compare the reference with itself)."""
    monkeypatch.setattr(pyr, "FUSED", True)
    spy = Spy()
    monkeypatch.setattr(pyr, "ext", lambda: spy)
    return spy.calls


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels-last"])
@pytest.mark.parametrize("shape", SIZES, ids=str)
def test_down_and_up_are_bitwise_the_reference(shape, channels_last, fused_on):
    x = torch.rand(*shape, device="cuda", generator=torch.Generator("cuda").manual_seed(sum(shape))) * 2 - 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    kept = x.clone()
    with torch.no_grad():
        down, down_ref = _cuda.fused_pyramid_down(x), ref.down(x)
        size = tuple(shape[-2:])
        up, up_ref = _cuda.fused_pyramid_up(down_ref, size), ref.up(down_ref, size)
    assert fused_on == {"pyramid_down": 1, "pyramid_up": 1, "pyramid_up_adjoint": 0}     # the kernels ran
    assert down.shape == down_ref.shape and torch.equal(down, down_ref), (down - down_ref).abs().max().item()
    assert up.shape == up_ref.shape and torch.equal(up, up_ref), (up - up_ref).abs().max().item()
    assert torch.equal(x, kept)


def test_the_cuda_backend_runs_them_when_switched_on(monkeypatch):
    from kpnt.ops.dispatch import implementation

    x = torch.rand(1, 3, 20, 30, device="cuda")
    assert implementation("pyramid_down", "cuda", x.device) is _cuda.fused_pyramid_down
    assert implementation("pyramid_up", "cuda", x.device) is _cuda.fused_pyramid_up
    spy = Spy()
    monkeypatch.setattr(pyr, "ext", lambda: spy)
    monkeypatch.setattr(pyr, "FUSED", False)
    with torch.no_grad():
        off = ops.pyramid_up(ops.pyramid_down(x, backend="cuda"), (20, 30), backend="cuda")
        assert spy.calls == {"pyramid_down": 0, "pyramid_up": 0, "pyramid_up_adjoint": 0}   # off: the reference's
        monkeypatch.setattr(pyr, "FUSED", True)
        on = ops.pyramid_up(ops.pyramid_down(x, backend="cuda"), (20, 30), backend="cuda")
        assert spy.calls == {"pyramid_down": 1, "pyramid_up": 1, "pyramid_up_adjoint": 0}
    assert torch.equal(on, off)


def test_down_with_a_gradient_is_the_reference(fused_on):
    x = torch.rand(1, 3, 9, 9, device="cuda", requires_grad=True)
    out = _cuda.fused_pyramid_down(x)
    assert out.grad_fn is not None and fused_on["pyramid_down"] == 0


@pytest.mark.parametrize("shape", SIZES, ids=str)
def test_up_with_a_gradient_runs_the_kernel_and_its_adjoint(shape, fused_on):
    """up of a tensor needing a gradient: the forward bitwise the
    reference's, the backward (the adjoint kernel) float64 autograd's within
    float32 rounding of a few sums; a rerun the same bits."""
    N, C, H, W = shape
    gen = torch.Generator("cuda").manual_seed(H * 1000 + W)
    c = torch.rand(N, C, (H + 1) // 2, (W + 1) // 2, device="cuda", generator=gen).requires_grad_()
    g = torch.randn(N, C, H, W, device="cuda", generator=gen)
    out = _cuda.fused_pyramid_up(c, (H, W))
    assert torch.equal(out, ref.up(c.detach(), (H, W)))
    got, = torch.autograd.grad(out, c, g)
    assert fused_on == {"pyramid_down": 0, "pyramid_up": 1, "pyramid_up_adjoint": 1}
    cd = c.detach().double().requires_grad_()
    want, = torch.autograd.grad(ref.up(cd, (H, W)), cd, g.double())
    assert got.shape == want.shape and (got.double() - want).abs().max() <= 1e-6 * (want.abs().max() + 1)
    again, = torch.autograd.grad(_cuda.fused_pyramid_up(c, (H, W)), c, g)
    assert torch.equal(got, again)


def test_up_with_a_gradient_and_the_switch_off_is_the_reference(monkeypatch, fused_on):
    monkeypatch.setattr(pyr, "FUSED_BACKWARD", False)
    c = torch.rand(1, 3, 5, 5, device="cuda", requires_grad=True)
    out = _cuda.fused_pyramid_up(c, (9, 9))
    out.sum().backward()
    assert fused_on == {"pyramid_down": 0, "pyramid_up": 0, "pyramid_up_adjoint": 0}


def test_up_adjoint_bad_input_raises_one_line():
    from kpnt.ops._cuda.extension import ext, unwrap

    with pytest.raises(ValueError, match="contiguous float32"):
        unwrap(ext().pyramid_up_adjoint(torch.rand(1, 3, 4, 4, device="cuda", dtype=torch.float64)))


def test_with_autograd_on_data_without_gradient_runs_the_kernels(fused_on):
    """Training's data pyramid (grad mode on, inputs wanting no gradient):
    the kernels, bitwise the reference, no graph recorded."""
    x = torch.rand(2, 3, 19, 23, device="cuda")
    assert torch.is_grad_enabled()
    down = _cuda.fused_pyramid_down(x)
    up = _cuda.fused_pyramid_up(down, (19, 23))
    assert fused_on == {"pyramid_down": 1, "pyramid_up": 1, "pyramid_up_adjoint": 0}
    assert down.grad_fn is None and up.grad_fn is None
    assert torch.equal(down, ref.down(x)) and torch.equal(up, ref.up(ref.down(x), (19, 23)))


@pytest.mark.usefixtures("fused_on")
def test_a_mismatched_size_is_the_references_error():
    c = torch.rand(1, 3, 4, 4, device="cuda")
    with torch.no_grad(), pytest.raises(ValueError, match="does not match fine size"):
        _cuda.fused_pyramid_up(c, (10, 10))
