"""Colour-level MLP inputs: layout and values on a tiny example."""
import math

import torch

from kpnt.ref.features import CHROMA_EPS, colour_features, detail_maps
from kpnt.ref.noise import noise_feature
from kpnt.ref.taps import DIAMOND


def _explicit(D, var, noise_input=True):
    """Slow per-pixel statement of the features (module doc of features.py)."""
    N, _, h, w = D.shape
    rows = []
    mirror = lambda i, n: -i if i < 0 else (2 * (n - 1) - i if i >= n else i)
    for n in range(N):
        for y in range(h):
            for x in range(w):
                lum, chroma = [], []
                for dy, dx in DIAMOND:
                    yy, xx = mirror(y + dy, h), mirror(x + dx, w)
                    sig = math.sqrt(float(var[n, :, yy, xx].mean()))
                    u = D[n, :, yy, xx] / sig
                    mu = float(u.mean())
                    lum.append(math.asinh(mu * math.sqrt(3)))
                    c = (math.sqrt(float(((u - mu) ** 2).sum()) + CHROMA_EPS ** 2) - CHROMA_EPS) / math.sqrt(2)
                    chroma.append(math.asinh(c))
                sig = math.sqrt(float(var[n, :, y, x].mean()))
                nz = (math.log(sig) + 6) / 3 if noise_input else 0.0
                rows.append(lum + chroma + [nz, 1.0])
    return torch.tensor(rows, dtype=torch.float64)


def test_features_match_explicit_statement():
    gen = torch.Generator().manual_seed(3)
    D = torch.randn(2, 3, 5, 6, generator=gen, dtype=torch.float64) * 0.01
    var = torch.rand(2, 3, 5, 6, generator=gen, dtype=torch.float64) * 1e-4 + 1e-6
    f = colour_features(D, var)
    assert f.shape == (2 * 5 * 6, 32)
    torch.testing.assert_close(f, _explicit(D, var), rtol=1e-12, atol=1e-12)
    f0 = colour_features(D, var, noise_input=False)
    assert (f0[:, 30] == 0).all() and torch.equal(f0[:, :30], f[:, :30])


def test_grey_detail_has_zero_chroma_and_exposure_invariance():
    D = torch.full((1, 3, 4, 4), 0.02, dtype=torch.float64)
    var = torch.full((1, 3, 4, 4), 1e-4, dtype=torch.float64)
    f, sigma = detail_maps(D, var)
    torch.testing.assert_close(f[:, 1], torch.zeros_like(f[:, 1]))                  # grey: no chroma
    torch.testing.assert_close(f[:, 0], torch.full_like(f[:, 0], math.asinh(2 * math.sqrt(3))))
    # scaling details and noise std together leaves the tap features unchanged
    g = colour_features(D * 4, var * 16)
    torch.testing.assert_close(g[:, :30], colour_features(D, var)[:, :30])
    torch.testing.assert_close(noise_feature(torch.tensor(math.exp(-6.0))), torch.tensor(0.0))


def test_gradcheck_features():
    gen = torch.Generator().manual_seed(4)
    D = (torch.randn(1, 3, 4, 3, generator=gen, dtype=torch.float64) * 0.01).requires_grad_()
    var = torch.rand(1, 3, 4, 3, generator=gen, dtype=torch.float64) * 1e-4 + 1e-6
    assert torch.autograd.gradcheck(lambda d: colour_features(d, var), (D,))
