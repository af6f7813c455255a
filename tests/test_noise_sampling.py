"""Noise sampling: empirical moments of add_noise / add_noise_torch."""
import numpy as np
import pytest
import torch

from kpnt.errors import NoiseProfileError
from kpnt.mosaic.cfa import CFA
from kpnt.noise import NoiseProfile, add_noise, add_noise_torch

P = NoiseProfile(a=[3e-3, 1.5e-3, 2.5e-3], b=[8e-6, 5e-6, 1e-5])


@pytest.mark.parametrize("level", [0.02, 0.2, 0.7])
def test_add_noise_mosaic_moments(level):
    cfa = CFA.xtrans()
    col = cfa.colour_map(600, 600)
    x = np.full(col.shape, level)
    n = add_noise(x, P, col, np.random.default_rng(0))
    assert n.dtype == np.float32 and n.shape == x.shape
    n = n.astype(np.float64)
    for c in range(3):
        r = n[col == c] - level
        # >= 86k samples: variance known to ~0.5%, mean to ~0.01 sigma.
        assert r.var() == pytest.approx(P.a[c] * level + P.b[c], rel=0.03)
        assert abs(r.mean()) < 0.02 * np.sqrt(P.a[c] * level + P.b[c])


def test_add_noise_rgb_and_poisson_shape():
    # Few photons (lam = x / a = 2): the shot noise is Poisson, not Gaussian.
    p = NoiseProfile(a=[0.05, 0.05, 0.05], b=[0, 0, 0])
    x = np.full((400, 400, 3), 0.1)
    n = add_noise(x, p, None, np.random.default_rng(1))
    k = n[..., 0] / 0.05  # photon counts
    np.testing.assert_allclose(k, np.round(k), atol=1e-3)
    assert k.mean() == pytest.approx(2.0, rel=0.01) and k.var() == pytest.approx(2.0, rel=0.03)
    assert np.mean(k == 0) == pytest.approx(np.exp(-2), rel=0.05)
    # Huge photon counts take the Gaussian branch: same moments.
    q = NoiseProfile(a=[1e-7] * 3, b=[0] * 3)
    big = add_noise(np.full((300, 300, 3), 0.5), q, [0, 1, 2], np.random.default_rng(2)).astype(np.float64)
    assert (big - 0.5).var() == pytest.approx(0.5e-7, rel=0.03)


def test_add_noise_negative_clean_values_keep_mean():
    x = np.full((300, 300), -0.01)
    col = CFA.bayer().colour_map(300, 300)
    n = add_noise(x, P, col, np.random.default_rng(3)).astype(np.float64)
    assert abs(n.mean() + 0.01) < 1e-4
    assert n[col == 1].var() == pytest.approx(P.b[1], rel=0.05)


def test_add_noise_errors():
    col = CFA.bayer().colour_map(8, 8)
    rng = np.random.default_rng(0)
    with pytest.raises(NoiseProfileError, match="broadcast"):
        add_noise(np.zeros((8, 8)), P, col[:4], rng)
    with pytest.raises(NoiseProfileError, match="RGB"):
        add_noise(np.zeros((8, 8)), P, None, rng)
    with pytest.raises(NoiseProfileError, match="NaN"):
        add_noise(np.full((8, 8), np.nan), P, col, rng)


def test_add_noise_torch_mosaic_and_rgb_moments():
    g = torch.Generator().manual_seed(0)
    col = torch.from_numpy(CFA.bayer("BGGR").colour_map(256, 256)).long()
    a = torch.tensor([[3e-3, 1.5e-3, 2.5e-3], [1e-3, 5e-4, 8e-4]])
    b = torch.tensor([[8e-6, 5e-6, 1e-5], [1e-6, 1e-6, 2e-6]])
    x = torch.full((2, 1, 256, 256), 0.3)
    n = add_noise_torch(x, a, b, col, generator=g)
    assert n.shape == x.shape and n.dtype == x.dtype
    for i in range(2):
        for c in range(3):
            r = (n[i, 0] - 0.3)[col == c].double()
            assert r.var().item() == pytest.approx((a[i, c] * 0.3 + b[i, c]).item(), rel=0.04)
    rgb = add_noise_torch(torch.full((2, 3, 200, 200), 0.1), a, b, None, generator=g)
    for i in range(2):
        for c in range(3):
            assert (rgb[i, c] - 0.1).double().var().item() == pytest.approx((a[i, c] * 0.1 + b[i, c]).item(), rel=0.04)


def test_add_noise_torch_errors():
    a = torch.zeros(1, 3)
    with pytest.raises(NoiseProfileError, match="colour"):
        add_noise_torch(torch.zeros(1, 1, 8, 8), a, a)
    with pytest.raises(NoiseProfileError, match=r"\(2, 3\)"):
        add_noise_torch(torch.zeros(2, 3, 8, 8), a, a)
    with pytest.raises(NoiseProfileError, match="None"):
        add_noise_torch(torch.zeros(1, 3, 8, 8), a, a, torch.zeros(8, 8, dtype=torch.long))
