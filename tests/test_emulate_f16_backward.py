"""tools/emulate_f16_backward.py: its kernel-like MLP backward is the
f16-rounding reference's gradient up to the kernels' dZ rounding."""
import torch

from kpnt.testing import mlp_f16_rounded, rel_error as rel
from tool_loader import load_tool

emu = load_tool("emulate_f16_backward")


def _case(seed, P=300, dims=(32, 16, 16, 8)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(P, dims[0], generator=g, dtype=torch.float64)
    ws = [(torch.randn(o, i, generator=g, dtype=torch.float64) / i ** 0.5).requires_grad_()
          for i, o in zip(dims[:-1], dims[1:])]
    dy = torch.randn(P, dims[-1], generator=g, dtype=torch.float64)
    return x.requires_grad_(), ws, dy


def test_forward_is_the_f16_rounding_reference_and_backward_close_to_it():
    x, ws, dy = _case(1)
    y = emu.kernel_like_mlp(x, ws, 0.01)
    torch.testing.assert_close(y, mlp_f16_rounded(x, ws, 0.01), rtol=0, atol=0)
    got = torch.autograd.grad(y, [x, *ws], dy)
    want = torch.autograd.grad(mlp_f16_rounded(x, ws, 0.01), [x, *ws], dy)
    for a, b in zip(got, want):
        assert 0 < rel(a, b) < 3e-3          # f16 dZ: close, never identical


def test_tile_scaling_keeps_range_and_loses_small_rows():
    """Row 0 of a tile has a zero input (so it adds nothing to dW) and
    gradients 1e6 times the others'.  The tile's power-of-two scale keeps it
    in f16 range (unscaled, 1e6 x randn overflows f16: inf x 0 = nan) and
    pushes the other rows into f16 subnormals, where they lose precision:
    the same rows in a tile of their own keep it."""
    x, ws, dy = _case(2, P=128)
    x = x.detach().clone()
    x[0] = 0
    dy[0] *= 1e6
    got = torch.autograd.grad(emu.kernel_like_mlp(x, ws, 0.01), ws, dy)
    want = torch.autograd.grad(mlp_f16_rounded(x, ws, 0.01), ws, dy)
    assert all(torch.isfinite(g).all() for g in got)
    assert rel(got[0], want[0]) > 3e-2                 # the small rows, scaled by 2^-20 or so
    alone = torch.autograd.grad(emu.kernel_like_mlp(x[1:], ws, 0.01), ws, dy[1:])
    assert rel(alone[0], want[0]) < 3e-3               # their own tile: full f16 precision


def test_leaky_relu_f16_matches_f16_arithmetic_and_its_gradient_is_the_f16_slope():
    """kpnt.testing.leaky_relu_f16 is the kernels' activation: max(h, h s)
    on f16 values with f16 products (torch's CPU half arithmetic rounds each
    product like HMUL2), and its gradient is 1 or the f16 slope, the factor
    the kernels' backward applies."""
    from kpnt.testing import leaky_relu_f16

    g = torch.Generator().manual_seed(3)
    z = (torch.randn(4096, generator=g, dtype=torch.float64) * torch.logspace(-6, 3, 4096, dtype=torch.float64))
    z = torch.cat([z, torch.tensor([0.0, -0.0, 1e-9, -1e-9, 65504.0, -65504.0], dtype=torch.float64)])
    z.requires_grad_()
    slope = 0.01
    got = leaky_relu_f16(z, slope)
    h = z.detach().half()
    want = torch.maximum(h, h * torch.tensor(slope, dtype=torch.float16)).double()
    assert torch.equal(got.detach(), want)
    (dz,) = torch.autograd.grad(got.sum(), z)
    one = torch.tensor(1.0, dtype=torch.float64)
    s64 = torch.tensor(slope, dtype=torch.float16).double()  # 0.0100021...
    assert torch.equal(dz, torch.where(h.double() > 0, one, s64))
