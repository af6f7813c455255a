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


def test_leaky_relu_f16_matches_f16_arithmetic_and_its_gradient_is_the_applied_slope():
    """kpnt.testing.leaky_relu_f16 is the kernels' activation: max(h, h hi +
    f16(h lo)) on f16 values, built here from torch's CPU half arithmetic
    (which rounds a half product like HMUL2) and an exact float64 sum rounded
    once (HFMA2); its gradient is 1 or hi + lo, the factor the kernels'
    backward applies.  And the pair is what it is for: hi + lo is the slope to
    f16-squared precision, and the activation is within an f16 rounding of
    r * slope, where f16(slope) alone is off by 2e-4."""
    from kpnt.testing import half_slope, leaky_relu_f16

    g = torch.Generator().manual_seed(3)
    z = (torch.randn(4096, generator=g, dtype=torch.float64) * torch.logspace(-6, 3, 4096, dtype=torch.float64))
    z = torch.cat([z, torch.tensor([0.0, -0.0, 1e-9, -1e-9, 65504.0, -65504.0], dtype=torch.float64)])
    z.requires_grad_()
    slope = 0.01
    hi, lo = half_slope(slope)
    assert abs(hi - slope) > 1e-4 * slope and abs(hi + lo - slope) < 1e-6 * slope
    got = leaky_relu_f16(z, slope)
    h = z.detach().half()
    lo_part = h * torch.tensor(lo, dtype=torch.float16)                       # HMUL2
    fma = (h.double() * hi + lo_part.double()).half()                          # HFMA2: exact sum, one rounding
    want = torch.maximum(h, fma).double()
    assert torch.equal(got.detach(), want)
    # Where h lo is still an f16 number (|h| > 0.1), the activation is r * slope
    # rounded once, unbiased; f16(slope) alone would be biased by 0.45 of the
    # rounding unit 2^-11 on average.
    neg = h.double() < -0.1
    exact = h.double()[neg] * slope
    err = (want[neg] - exact) / exact.abs() * 2.0 ** 11
    assert err.abs().max() <= 1.0 and abs(err.mean()) < 0.1
    hi_only = ((h.double()[neg] * hi).half().double() - exact) / exact.abs() * 2.0 ** 11
    assert abs(hi_only.mean()) > 0.3
    (dz,) = torch.autograd.grad(got.sum(), z)
    one = torch.tensor(1.0, dtype=torch.float64)
    assert torch.equal(dz, torch.where(h.double() > 0, one, torch.tensor(hi + lo, dtype=torch.float64)))


def test_a_kink_flip_of_f32_accumulation_stays_within_the_exact_bound():
    """The CUDA tests bound a fused gradient's distance from the exact one by
    kpnt.testing.grad_vs_exact_bound.  Here the emulated kernels (f32
    accumulation like the tensor cores) flip a leaky-ReLU kink that the
    float64 f16-rounding reference does not (width 128, 127 rows, this seed:
    1.8e-2 from that reference, where float64 accumulation gives 6e-4), and
    every gradient stays within the bound; the bound is the old
    1.25 x reference error + 1e-3 when the two computations agree."""
    import math

    from kpnt.testing import TOLERANCES, grad_vs_exact_bound

    assert grad_vs_exact_bound(0.0, 0.02) == TOLERANCES["grad_vs_exact_factor"] * 0.02 + TOLERANCES["grad_vs_exact_slack"]
    slope, P, seed, dims = 0.1, 127, 131, (32, 128, 16, 6)
    g = torch.Generator().manual_seed(seed)
    shapes = [(dims[1], dims[0])] + [(dims[1], dims[1])] * (dims[3] - 1) + [(dims[2], dims[1])]
    ws = [(torch.randn(*s, generator=g) * math.sqrt(2 / s[1])).double().requires_grad_() for s in shapes]
    x = torch.randn(P, dims[0], generator=torch.Generator().manual_seed(seed + 1)).double()
    x[:, -1] = 1.0
    x.requires_grad_()
    dy = torch.randn(P, dims[2], generator=torch.Generator().manual_seed(seed + 2)).double()

    def exact_mlp(h):
        for w in ws[:-1]:
            h = torch.nn.functional.leaky_relu(h @ w.t(), slope)
        return h @ ws[-1].t()

    exact = torch.autograd.grad(exact_mlp(x), [x, *ws], dy)
    f16 = torch.autograd.grad(mlp_f16_rounded(x, ws, slope), [x, *ws], dy)
    f32acc = torch.autograd.grad(emu._KernelLikeMlp.apply(x, slope, True, *ws), [x, *ws], dy)
    f64acc = torch.autograd.grad(emu.kernel_like_mlp(x, ws, slope), [x, *ws], dy)
    assert max(rel(a, b) for a, b in zip(f32acc, f16)) > 1e-2       # the flip
    assert max(rel(a, b) for a, b in zip(f64acc, f16)) < 2e-3       # no flip without f32 accumulation
    for a, b, c in zip(f32acc, f16, exact):
        assert rel(a, c) <= grad_vs_exact_bound(rel(a, b), rel(b, c))
