"""Hot/dead photosites (issue 16, acceptance 4): of 100 hot photosites added
to a noisy star field at least 95 are removed, and no star loses a
photosite; dead photosites are filled; a clean frame is left alone."""
import numpy as np
import pytest
from scipy.special import erf

from kpnt.hotpixels import fix_hot_pixels
from kpnt.mosaic import CFA

A, B = 2e-4, 4e-6                      # noise var = A x + B (about ISO 3200 on a 14-bit camera)
NOISE = np.array([[A] * 3, [B] * 3], dtype=np.float32)
WB = np.array([2.0, 1.0, 1.6], dtype=np.float32)


def _pixel_integrated_gauss(h, w, cy, cx, sigma):
    """Light of a Gaussian spot integrated over each photosite's area."""
    ey = erf((np.arange(h + 1) - cy) / (np.sqrt(2) * sigma))
    ex = erf((np.arange(w + 1) - cx) / (np.sqrt(2) * sigma))
    return np.outer(np.diff(ey), np.diff(ex)) / 4


def star_field(cfa, h=256, w=320, n_stars=60, seed=0):
    """(mosaic without noise, star mask): a dark sky with stars of 0.5-1.3
    photosite PSF sigma, random colours, peaks up to clipping."""
    rng = np.random.default_rng(seed)
    rgb = np.full((h, w, 3), 0.02, dtype=np.float64) / WB        # neutral sky after WB
    stars = np.zeros((h, w), dtype=bool)
    for _ in range(n_stars):
        cy, cx = rng.uniform(8, h - 8), rng.uniform(8, w - 8)
        spot = _pixel_integrated_gauss(h, w, cy, cx, rng.uniform(0.5, 1.3))
        colour = rng.uniform(0.4, 1.0, 3) / WB
        flux = rng.uniform(0.2, 4.0)
        rgb += flux * spot[..., None] * colour / spot.max()
        stars |= spot / spot.max() > 0.02
    colour_map = cfa.colour_map(h, w)
    x = np.take_along_axis(rgb, colour_map[..., None], axis=2)[..., 0]
    return np.minimum(x, 1.0), stars


def noisy(x, seed=1):
    rng = np.random.default_rng(seed)
    return (x + rng.normal(0, 1, x.shape) * np.sqrt(A * np.maximum(x, 0) + B)).astype(np.float32)


@pytest.mark.parametrize("cfa", [CFA.bayer("RGGB"), CFA.bayer("GBRG"), CFA.xtrans(0, 0)], ids=lambda c: c.name)
def test_hot_pixels_removed_stars_kept(cfa):
    clean, stars = star_field(cfa)
    x = noisy(clean)
    rng = np.random.default_rng(2)
    free = np.argwhere(~stars)
    pick = free[rng.choice(len(free), 100, replace=False)]
    hy, hx = pick[:, 0], pick[:, 1]
    x[hy, hx] = np.minimum(x[hy, hx] + rng.uniform(0.1, 1.0, 100), 1.0)    # stuck high, some clipped
    before = x.copy()
    n_hot, n_dead = fix_hot_pixels(x, cfa, NOISE, WB)
    changed = x != before
    sigma = np.sqrt(A * 0.02 + B)
    removed = np.abs(x[hy, hx] - clean[hy, hx]) < 6 * sigma * 3
    assert removed.sum() >= 95, removed.sum()
    assert not (changed & stars).any(), np.argwhere(changed & stars)[:5]
    assert n_hot >= 95 and n_hot <= 100 + 2 and n_dead <= 2


def test_dead_pixels_filled():
    cfa = CFA.bayer("RGGB")
    rng = np.random.default_rng(3)
    clean = np.full((128, 128), 0.3 / np.asarray(WB)[cfa.colour_map(128, 128)])
    x = noisy(clean)
    dy, dx = rng.integers(4, 124, 30), rng.integers(4, 124, 30)
    x[dy, dx] = 0.0
    n_hot, n_dead = fix_hot_pixels(x, cfa, NOISE, WB)
    assert n_dead == len(set(zip(dy.tolist(), dx.tolist()))) and n_hot == 0
    assert np.abs(x[dy, dx] - clean[dy, dx]).max() < 0.05


def test_clean_frames_untouched():
    # Pure noise, and a hard edge: nothing is flagged.
    cfa = CFA.bayer("RGGB")
    clean = np.full((200, 200), 0.1)
    clean[:, 100:] = 0.8
    x = noisy(clean)
    before = x.copy()
    assert fix_hot_pixels(x, cfa, NOISE, WB) == (0, 0)
    assert np.array_equal(x, before)
