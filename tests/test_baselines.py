"""The benchmark's helpers and peers: GAT, SSIM, phase-exact mirror padding,
demosaicnet's CFA alignment and BM3D (the peers are skipped where their
optional packages, ``pip install -e '.[bench]'``, are not installed)."""
from __future__ import annotations

import numpy as np
import pytest

from kpnt.baselines import gat, gat_inverse
from kpnt.bench.metrics import ssim
from kpnt.bench.peers import DemosaicNet, bm3d_denoise, import_demosaicnet, phase_mirror_index
from kpnt.mosaic import CFA



def test_gat_roundtrip_and_unit_variance():
    a, b = 2e-4, 1e-6
    y = np.linspace(0.0, 1.0, 11)
    assert np.allclose(gat_inverse(gat(y, a, b), a, b), y)
    rng = np.random.default_rng(0)
    x = 0.3
    z = gat(x + rng.normal(0, np.sqrt(a * x + b), 200_000), a, b)
    assert abs(z.std() - 1.0) < 0.02


def _ssim_bruteforce(x, y, l=1.0):
    """Wang et al.'s SSIM with an explicit 11x11 Gaussian (sigma 1.5) over
    every window that fits inside the image (single channel)."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = (0.01 * l) ** 2, (0.03 * l) ** 2
    vals = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            px, py = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
            mx, my = (w * px).sum(), (w * py).sum()
            vx = (w * px * px).sum() - mx * mx
            vy = (w * py * py).sum() - my * my
            cxy = (w * px * py).sum() - mx * my
            vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_matches_definition():
    rng = np.random.default_rng(1)
    x = rng.random((40, 36, 3))
    y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1)
    want = np.mean([_ssim_bruteforce(x[6:-6, 6:-6, c], y[6:-6, 6:-6, c]) for c in range(3)])
    assert ssim(x, y) == pytest.approx(want, abs=1e-9)
    assert ssim(x, x) == pytest.approx(1.0)
    # constant images: only the luminance term is left
    c1 = 1e-4
    got = ssim(np.full((30, 30), 0.2), np.full((30, 30), 0.5))
    assert got == pytest.approx((2 * 0.2 * 0.5 + c1) / (0.04 + 0.25 + c1))


@pytest.mark.parametrize("period", [2, 6])
def test_phase_mirror_index(period):
    n = 40
    j = phase_mirror_index(n, 13, 17, period)
    i = np.arange(-13, n + 17)
    assert (np.mod(j - i, period) == 0).all()
    assert (j[13 : 13 + n] == np.arange(n)).all()
    # a mirror: within one period of the plain reflection
    assert (np.abs(j[:13] - (-i[:13])) < period).all()
    assert (np.abs(j[13 + n :] - (2 * (n - 1) - i[13 + n :])) < period).all()


def _net(sensor):
    dn, why = import_demosaicnet()
    if dn is None:
        pytest.skip(why)
    return DemosaicNet(dn, sensor)


@pytest.mark.parametrize("sensor,cfa,shift", [("bayer", CFA.bayer("RGGB"), (0, 1)), ("xtrans", CFA.xtrans(), (2, 2))])
def test_demosaicnet_alignment(sensor, cfa, shift):
    net = _net(sensor)
    sy, sx = net.shift(cfa)
    assert (sy % cfa.period, sx % cfa.period) in {shift, (shift[0] + 3, shift[1] + 3)}
    p = cfa.period
    ours = np.roll(cfa.colour_map(4 * p, 4 * p), (sy, sx), axis=(0, 1))[:p, :p]
    assert (ours == np.tile(net.pattern, (p // net.pattern.shape[0],) * 2)).all()
    # a smooth colour ramp comes back close to itself, with the input's size
    h, w = 48, 60
    yy, xx = np.mgrid[0:h, 0:w] / 60.0
    rgb = np.stack([0.2 + 0.3 * xx, 0.4 + 0.2 * yy, 0.3 + 0.1 * (xx + yy)], -1)
    m = rgb[np.arange(h)[:, None], np.arange(w)[None], cfa.colour_map(h, w)]
    out = net(m, cfa)
    assert out.shape == (h, w, 3)
    assert np.abs(out - rgb)[6:-6, 6:-6].mean() < 0.01


def test_bm3d_denoises():
    pytest.importorskip("bm3d")
    rng = np.random.default_rng(2)
    h, w = 48, 48
    yy, xx = np.mgrid[0:h, 0:w] / 48.0
    clean = np.stack([0.2 + 0.5 * xx, 0.3 + 0.4 * yy, 0.25 + 0.2 * xx], -1)
    noise = np.array([[4e-4] * 3, [1e-5] * 3])
    noisy = clean + rng.normal(size=clean.shape) * np.sqrt(noise[0] * clean + noise[1])
    out = bm3d_denoise(noisy, noise)
    assert out.shape == clean.shape and out.dtype == np.float32
    assert np.mean((out - clean) ** 2) < 0.25 * np.mean((noisy - clean) ** 2)


@pytest.mark.parametrize("phase", ["RGGB", "BGGR", "GRBG", "GBRG"])
def test_menon_demosaics_every_bayer_phase(phase):
    """Menon 2007 on a smooth colour ramp in each Bayer phase returns the
    ramp (a wrong colour map would swap colours: errors of ~0.1)."""
    from kpnt.bench.peers import menon_demosaic

    h, w = 36, 48
    yy, xx = np.mgrid[0:h, 0:w] / 48.0
    rgb_wb = np.stack([0.2 + 0.3 * xx, 0.4 + 0.2 * yy, 0.3 + 0.1 * (xx + yy)], -1)
    cfa = CFA.bayer(phase)
    wb = np.array([2.0, 1.0, 1.5])
    counts_norm = (rgb_wb / wb)[np.arange(h)[:, None], np.arange(w)[None], cfa.colour_map(h, w)]
    case = dict(cfa=cfa, wb=wb, counts=np.rint(counts_norm * (16383 - 512) + 512).astype(np.uint16))
    out = menon_demosaic(case)
    assert out.shape == (h, w, 3)
    assert np.abs(out * wb - rgb_wb)[4:-4, 4:-4].max() < 2e-3
    with pytest.raises(ValueError, match="Bayer mosaics only"):
        menon_demosaic(dict(case, cfa=CFA.xtrans()))


@pytest.mark.parametrize("phase", ["RGGB", "BGGR", "GRBG", "GBRG"])
@pytest.mark.parametrize("refine", [True, False])
def test_menon2007_equals_colour_demosaicing(phase, refine):
    """kpnt.baselines.menon2007 against colour-demosaicing's implementation of
    the same paper, on random mosaics (every site's neighbourhood differs),
    odd sizes, every phase, with and without the refining step."""
    colour_demosaicing = pytest.importorskip("colour_demosaicing")
    from kpnt.baselines import menon2007

    rng = np.random.default_rng(4)
    x = rng.random((37, 50))
    want = colour_demosaicing.demosaicing_CFA_Bayer_Menon2007(x, phase, refining_step=refine)
    got = menon2007(x, CFA.bayer(phase).colour_map(37, 50), refine=refine)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="Bayer mosaic"):
        menon2007(x, CFA.xtrans().colour_map(37, 50))


def test_menon_wrapper_feeds_the_white_balanced_mosaic():
    """The benchmark's wrapper demosaics the white-balanced mosaic and divides
    the gains back out."""
    from kpnt.baselines import menon2007
    from kpnt.bench.cases import mosaic_wb
    from kpnt.bench.peers import menon_demosaic

    rng = np.random.default_rng(4)
    cfa = CFA.bayer("GBRG")
    wb = np.array([1.7, 1.0, 2.2])
    case = dict(cfa=cfa, wb=wb, counts=rng.integers(512, 16383, (24, 30)).astype(np.uint16))
    want = menon2007(mosaic_wb(case), cfa.colour_map(24, 30)) / wb
    np.testing.assert_allclose(menon_demosaic(case), want, rtol=1e-6, atol=1e-7)
