"""Pyramid: down/up conventions, reconstruction, exact detail-noise gains."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kpnt.ref import pyramid
from kpnt.ref.noise import detail_var
from kpnt.ref.mlp import init_weights
from kpnt.ref.colour_level import colour_level
from kpnt.ref.taps import DIAMOND, DIAMOND_CENTRE
from kpnt.spec import ColourLevelSpec


def test_blur_and_down_match_conv2d():
    x = torch.randn(2, 3, 12, 17, dtype=torch.float64)
    k = torch.tensor(pyramid.B5, dtype=torch.float64)
    ref = F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), (k[:, None] * k[None, :]).expand(3, 1, 5, 5), groups=3)
    torch.testing.assert_close(pyramid.blur5(x), ref, rtol=0, atol=1e-14)
    torch.testing.assert_close(pyramid.down(x), ref[..., ::2, ::2], rtol=0, atol=1e-14)


@pytest.mark.parametrize("H,W", [(8, 8), (7, 5), (1, 4)])
def test_up_is_bilinear_with_coarse_samples_on_even_positions(H, W):
    c = torch.randn(1, 2, (H + 1) // 2, (W + 1) // 2, dtype=torch.float64)
    out = pyramid.up(c, (H, W))
    ce = torch.cat([c, c[:, :, -1:]], 2)
    ce = torch.cat([ce, ce[:, :, :, -1:]], 3)          # repeat past the last sample
    for y in range(H):
        for x in range(W):
            iy, ix, fy, fx = y // 2, x // 2, (y % 2) / 2, (x % 2) / 2
            v = ((1 - fy) * (1 - fx) * ce[..., iy, ix] + (1 - fy) * fx * ce[..., iy, ix + 1]
                 + fy * (1 - fx) * ce[..., iy + 1, ix] + fy * fx * ce[..., iy + 1, ix + 1])
            torch.testing.assert_close(out[..., y, x], v)


def test_up_rejects_wrong_size():
    with pytest.raises(ValueError, match="does not match"):
        pyramid.up(torch.zeros(1, 1, 3, 3), (8, 6))


def test_reconstruction_with_identity_kernel_gives_back_c0():
    """a = 1 and a delta kernel at every level: O_0 == C0 (odd sizes too)."""
    gen = torch.Generator().manual_seed(1)
    c0 = torch.rand(2, 3, 37, 22, dtype=torch.float64)
    out = torch.zeros(16)
    out[DIAMOND_CENTRE] = 60.0          # softmax -> delta at the centre
    out[len(DIAMOND)] = 60.0            # sigmoid -> 1
    w = [m.double() for m in init_weights(32, 64, 3, 16, 31, out, 0.01, gen, out_scale=0.0)]
    M, D, S = pyramid.build(c0, 4)
    noise = torch.tensor([[[1e-3] * 3, [1e-5] * 3]] * 2, dtype=torch.float64)
    Is, As = [], []
    for i in range(4):
        I, a = colour_level(D[i], detail_var(S[i], noise, (1, 2, 1), i), w, ColourLevelSpec(hidden_layers=3))
        Is.append(I)
        As.append(a)
    torch.testing.assert_close(pyramid.reconstruct(M[-1], Is, As), c0, rtol=0, atol=1e-12)


def test_gains_exact_values():
    g = pyramid.detail_noise_gain(4)
    # level 0, even/even pixel: D = (1 - B) x with B the 2D B5 kernel, so
    # var = 1 - 2 b0 + sum b^2 (b0 = (6/16)^2, sum b^2 = (70/256)^2)
    assert g[0, 0, 0] == pytest.approx(1 - 2 * (6 / 16) ** 2 + (70 / 256) ** 2, rel=1e-12)
    assert g.shape == (4, 2, 2) and np.all(g[1:] < g[:-1])
    np.testing.assert_allclose(g[:, 0, 1], g[:, 1, 0], rtol=1e-12)      # x/y symmetry
    assert not np.allclose(g[1] / g[0], 0.25)                            # not the seed's 0.5^i in std


def test_predicted_detail_noise_matches_empirical():
    """Pure noise at three brightnesses, var = (a s + b)/n: predicted std of
    every D_i (per channel and pixel parity) within a few % of measured."""
    gen = torch.Generator().manual_seed(0)
    N, size, levels = 24, 256, 4
    s = torch.tensor([0.1, 0.4, 0.05], dtype=torch.float64).reshape(1, 3, 1, 1)
    noise = torch.tensor([[[2e-3, 1e-3, 3e-3], [1e-5, 2e-5, 4e-6]]] * N, dtype=torch.float64)
    counts = (2, 5, 2)
    var0 = (noise[:, 0, :, None, None] * s + noise[:, 1, :, None, None]) / torch.tensor(counts).reshape(1, 3, 1, 1)
    c0 = s + var0.sqrt() * torch.randn(N, 3, size, size, generator=gen, dtype=torch.float64)
    M, D, S = pyramid.build(c0, levels)
    for i in range(levels):
        pred = detail_var(S[i], noise, counts, i)
        b = 4                                  # stay clear of the mirrored borders
        for py in range(2):
            for px in range(2):
                sl = (slice(None), slice(None), slice(2 * b + py, -2 * b, 2), slice(2 * b + px, -2 * b, 2))
                emp = D[i][sl].std(dim=(0, 2, 3))
                want = pred[sl].mean(dim=(0, 2, 3)).sqrt()
                np.testing.assert_allclose(emp.numpy(), want.numpy(), rtol=0.03 if i < 3 else 0.05,
                                           err_msg=f"level {i} parity {(py, px)}")


def test_gradcheck_pyramid_ops():
    x = torch.randn(1, 2, 7, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pyramid.blur5, (x,))
    assert torch.autograd.gradcheck(pyramid.down, (x,))
    c = torch.randn(1, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: pyramid.up(t, (7, 6)), (c,))
