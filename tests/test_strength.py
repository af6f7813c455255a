"""``strength`` (issue 16, acceptance 3): the noise left on a flat patch
falls monotonically from strength 0 (demosaic only) to 1 (full denoising),
with 0.5 in between; the shipped Bayer model is used, as users get it."""
import numpy as np
import pytest

from kpnt.denoise import NoiseChoice, denoise_raw
from kpnt.io import RawMeta
from kpnt.io.raw import RawImage
from kpnt.mosaic import CFA
from kpnt.weights_io import load_weights, shipped_weights

A, B = 4e-4, 1e-5        # a high-ISO noise level: the differences are large
WB = np.array([2.0, 1.0, 1.6])


@pytest.fixture(scope="module")
def model():
    m, _ = load_weights(shipped_weights("bayer"), sensor="bayer", device="cpu")
    m.eval()
    return m


def flat_raw(h=96, w=96, level=0.25, seed=0):
    cfa = CFA.bayer("RGGB")
    clean = level / WB[cfa.colour_map(h, w)]
    rng = np.random.default_rng(seed)
    mosaic = (clean + rng.normal(0, 1, clean.shape) * np.sqrt(A * clean + B)).astype(np.float32)
    meta = RawMeta(black=[0] * 3, white=16383, wb=WB, xyz_to_cam=np.eye(3) + 0.1)
    return RawImage(path="flat", raw=None, mosaic=mosaic, saturated=np.zeros_like(mosaic, bool), cfa=cfa, meta=meta)


def residual_noise(model, strength):
    raw = flat_raw()
    noise = NoiseChoice(np.array([[A] * 3, [B] * 3], dtype=np.float32), "given")
    rgb = denoise_raw(model, raw, noise, tile=0, strength=strength)
    core = rgb[16:-16, 16:-16] * WB          # white-balanced: every channel at the same level
    return float(core.std(axis=(0, 1)).mean())


def test_noise_falls_monotonically_with_strength(model):
    levels = [residual_noise(model, s) for s in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(a > b for a, b in zip(levels, levels[1:])), levels
    # 0 keeps (nearly) the input's noise, 1 removes most of it
    assert levels[0] > 3 * levels[-1], levels


def test_strength_out_of_range(model):
    with pytest.raises(ValueError, match=r"strength must lie in \[0, 1\]"):
        denoise_raw(model, flat_raw(), NoiseChoice(np.ones((2, 3), np.float32) * 1e-5, "given"), tile=0, strength=1.5)
