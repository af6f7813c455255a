"""Noise estimation: fit_pair on aligned pairs, estimate_blind on single
mosaics (Bayer and X-Trans), on procedural scenes built here."""
import cv2
import numpy as np
import pytest

from kpnt.errors import NoiseProfileError
from kpnt.mosaic.cfa import CFA
from kpnt.noise import NoiseProfile, add_noise, estimate_blind, fit_pair

#: ISO-3200-class raw-scale noise (about 1.5x an X-T1 at ISO 3200 x 12).
ISO3200 = NoiseProfile(a=[2.4e-3, 1.2e-3, 1.8e-3], b=[6e-6, 4e-6, 6e-6])
#: Read-noise-heavy: b equals the shot noise at x ~ 0.025, so b is visible.
READ_HEAVY = NoiseProfile(a=[2.4e-3, 1.2e-3, 1.8e-3], b=[6e-5, 4e-5, 6e-5])
LEVELS = (0.05, 0.2, 0.5)


def textured_scene(h, w, seed):
    """(H, W, 3) linear scene in [0.02, 0.8]: log-distributed illumination
    times a reflectance with sharp-edged regions, shading steps, grating
    patches (fabric-like texture), blobs and 1/f texture; per-channel tint;
    a mild optical blur (sigma 0.7 px)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    t = 0.55 * (xx + yy) + 0.1 * np.sin(2 * np.pi * (rng.uniform(0.5, 1.5) * xx + rng.uniform(0, 1)))
    illum = 0.025 * np.exp(np.log(1.2 / 0.025) * np.clip(t, 0, 1))
    refl = np.full((h, w), 0.7)
    for _ in range(10):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
        refl = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, rng.uniform(0.3, 1.0), refl)
    for _ in range(3):
        th, off = rng.uniform(0, 2 * np.pi), rng.uniform(-0.3, 0.3)
        refl = refl * np.where(np.cos(th) * (xx - 0.5) + np.sin(th) * (yy - 0.5) > off, rng.uniform(0.6, 1.4), 1.0)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.08, 0.2)
        f, th = rng.uniform(8, 60), rng.uniform(0, np.pi)
        patch = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        refl = refl * (1 + rng.uniform(0.1, 0.3) * patch * np.sin(2 * np.pi * f * (np.cos(th) * xx + np.sin(th) * yy)))
    for _ in range(20):
        cy, cx, s = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.005, 0.04)
        refl = refl * (1 + rng.uniform(-0.3, 0.3) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s)))
    fy, fx = np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :]
    field = np.fft.ifft2(np.fft.fft2(rng.standard_normal((h, w))) / np.maximum(np.hypot(fy, fx), 1.0 / max(h, w))).real
    refl = refl * (1 + 0.08 * field / field.std())
    lum = illum * refl
    tints = [rng.uniform(0.6, 1.1) + 0.2 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 2) + rng.uniform(0, 1))) for _ in range(3)]
    img = cv2.GaussianBlur(np.stack([lum * t for t in tints], -1), (0, 0), 0.7)
    return np.clip(img, 0.02, 0.8)


def mosaic_of(img, cfa):
    col = cfa.colour_map(*img.shape[:2])
    return np.take_along_axis(img, col[..., None], 2)[..., 0], col


def rel_err(est, true, levels=LEVELS):
    """(len(levels), 3) relative error of the predicted variance."""
    return np.array([est.variance(v, [0, 1, 2]) / true.variance(v, [0, 1, 2]) - 1 for v in levels])


@pytest.fixture(scope="module")
def scene():
    return textured_scene(384, 384, seed=1)


# ---------------------------------------------------------------- fit_pair
def test_fit_pair_within_5_percent_mosaic_and_rgb():
    # Dark-heavy scene (median ~0.03) so that b shows: b is ~40% of the
    # variance at x = 0.005.
    img = np.clip(0.002 * (textured_scene(256, 256, 3) / 0.02) ** 1.3, 0.001, 0.8)
    prof = NoiseProfile(a=[3e-3, 1.5e-3, 2.5e-3], b=[8e-6, 5e-6, 1e-5])
    for cfa in (None, CFA.bayer("GRBG"), CFA.xtrans()):
        x, col = (img, None) if cfa is None else mosaic_of(img, cfa)
        est = fit_pair(add_noise(x, prof, col, np.random.default_rng(5)), x, col)
        assert np.all(np.abs(est.a / prof.a - 1) < 0.05), (cfa, est)
        assert np.all(np.abs(rel_err(est, prof, (0.02, 0.2, 0.5))) < 0.05), (cfa, est)
        if cfa is None:
            # b from 65k dark-heavy samples per channel: ~5% rms.
            assert np.all(np.abs(est.b / prof.b - 1) < 0.15), est


def test_fit_pair_subtracts_clean_reference_noise():
    rng = np.random.default_rng(0)
    img = textured_scene(192, 192, 4)
    prof = NoiseProfile(a=[2e-3, 2e-3, 2e-3], b=[5e-6, 5e-6, 5e-6])
    base = NoiseProfile(a=[4e-4, 4e-4, 4e-4], b=[1e-6, 1e-6, 1e-6])  # the ISO-100-like reference's own noise
    clean = add_noise(img, base, None, rng)
    noisy = add_noise(img, prof, None, rng)
    naive = fit_pair(noisy, clean)
    fixed = fit_pair(noisy, clean, clean_profile=base)
    assert np.all(naive.a / prof.a - 1 > 0.12)  # 20% too high without the correction
    assert np.all(np.abs(fixed.a / prof.a - 1) < 0.05), fixed


def test_fit_pair_mask_excludes_outliers():
    rng = np.random.default_rng(1)
    img = textured_scene(192, 192, 5)
    prof = NoiseProfile(a=[2e-3] * 3, b=[5e-6] * 3)
    noisy = add_noise(img, prof, None, rng)
    noisy[:40] = img[:40] + 0.2 * rng.standard_normal(img[:40].shape)  # "misaligned" rows
    mask = np.ones(img.shape[:2], bool)
    mask[:40] = False
    est = fit_pair(noisy, img, mask=mask[..., None])
    assert np.all(np.abs(est.a / prof.a - 1) < 0.06), est


def test_fit_pair_errors():
    x = np.zeros((32, 32))
    with pytest.raises(NoiseProfileError, match="same shape"):
        fit_pair(x, np.zeros((32, 30)), CFA.bayer().colour_map(32, 32))
    with pytest.raises(NoiseProfileError, match="colour map"):
        fit_pair(x, x)
    with pytest.raises(NoiseProfileError, match="usable"):
        fit_pair(x[:8, :8], x[:8, :8], CFA.bayer().colour_map(8, 8))
    with pytest.raises(NoiseProfileError, match="bool"):
        fit_pair(x, x, CFA.bayer().colour_map(32, 32), mask=np.ones((32, 32)))


# ---------------------------------------------------------- estimate_blind
def test_blind_unbiased_without_texture():
    # Log-ramp, no texture: only sampling error remains (a within 10%).
    h = w = 256
    yy, xx = np.mgrid[0:h, 0:w] / h
    ramp = 0.02 * 40 ** (0.7 * xx + 0.3 * yy)
    for cfa in (CFA.bayer(), CFA.xtrans()):
        x = ramp
        col = cfa.colour_map(h, w)
        est = estimate_blind(add_noise(x, ISO3200, col, np.random.default_rng(2)), col)
        assert np.all(np.abs(est.a / ISO3200.a - 1) < 0.10), (cfa, est)
        assert np.all(np.abs(rel_err(est, ISO3200)) < 0.10), (cfa, est)


@pytest.mark.parametrize("cfa", [CFA.bayer("RGGB"), CFA.xtrans()], ids=["bayer", "xtrans"])
def test_blind_within_20_percent_on_textured_scene(scene, cfa):
    """Asserted: predicted variance within 20% at x = 0.05, 0.2, 0.5 for
    every colour, and a within 20%.  (b ~ 5e-6 is 2-4% of the variance at
    the darkest level here: not identifiable, not asserted.)"""
    x, col = mosaic_of(scene, cfa)
    est = estimate_blind(add_noise(x, ISO3200, col, np.random.default_rng(7)), col)
    err = rel_err(est, ISO3200)
    assert np.all(np.abs(err) < 0.20), (cfa, est, err.round(3))
    assert np.all(np.abs(est.a / ISO3200.a - 1) < 0.20), (cfa, est)


@pytest.mark.parametrize("cfa", [CFA.bayer("GBRG"), CFA.xtrans(1, 4)], ids=["bayer", "xtrans"])
def test_blind_read_noise_heavy_b_identifiable(scene, cfa):
    """Read noise equal to shot noise at x ~ 0.025: b is visible in the dark
    bins.  Asserted: variance within 20% at 0.05/0.2/0.5, b within 50% (the
    intercept of a line through 16 bins whose darkest is at x ~ 0.03)."""
    x, col = mosaic_of(scene, cfa)
    est = estimate_blind(add_noise(x, READ_HEAVY, col, np.random.default_rng(8)), col)
    assert np.all(np.abs(rel_err(est, READ_HEAVY)) < 0.20), (cfa, est)
    assert np.all(np.abs(est.b / READ_HEAVY.b - 1) < 0.50), (cfa, est)


def test_blind_mask_and_saturation(scene):
    # Clip the brightest photosites at "white" as a sensor would, mask them.
    x, col = mosaic_of(scene, CFA.bayer())
    noisy = add_noise(x, ISO3200, col, np.random.default_rng(9))
    white = np.quantile(x, 0.9)
    clipped = np.minimum(noisy, white)
    mask = noisy < white
    est = estimate_blind(clipped, col, mask=mask)
    assert np.all(np.abs(rel_err(est, ISO3200, (0.05, 0.2))) < 0.20), est


def test_blind_errors():
    col = CFA.bayer().colour_map(64, 64)
    with pytest.raises(NoiseProfileError, match="too small|usable"):
        estimate_blind(np.random.default_rng(0).random((64, 64)), col)
    with pytest.raises(NoiseProfileError, match="periodic"):
        estimate_blind(np.zeros((64, 64)), np.random.default_rng(0).integers(0, 3, (64, 64)))
    with pytest.raises(NoiseProfileError, match="mosaic"):
        estimate_blind(np.zeros((64, 64, 3)), col)
    with pytest.raises(NoiseProfileError, match="mask"):
        estimate_blind(np.zeros((64, 64)), col, mask=np.ones((64, 64)))


@pytest.mark.parametrize("cfa", [CFA.bayer("GRBG"), CFA.xtrans()], ids=["bayer", "xtrans"])
def test_fit_pair_a_and_b_within_5_percent_on_a_megapixel_pair(cfa):
    """Issue acceptance: (a, b) both within 5% of the truth.  b is the
    intercept of the variance line, so it needs enough dark samples: a
    1-megapixel dark-heavy pair (a raw is 20+ megapixels) gives them
    (worst over 6 seeds and 3 layouts when written: 3.9%)."""
    img = np.clip(0.002 * (textured_scene(1024, 1024, 3) / 0.02) ** 1.3, 0.001, 0.8)
    prof = NoiseProfile(a=[3e-3, 1.5e-3, 2.5e-3], b=[8e-6, 5e-6, 1e-5])
    x, col = mosaic_of(img, cfa)
    est = fit_pair(add_noise(x, prof, col, np.random.default_rng(11)), x, col)
    assert np.all(np.abs(est.a / prof.a - 1) < 0.05), est
    assert np.all(np.abs(est.b / prof.b - 1) < 0.05), est
