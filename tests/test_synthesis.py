"""On-the-fly training synthesis: shapes, white balance, noise statistics."""
import numpy as np
import torch

from kpnt.mosaic import CFA
from kpnt.train.synthesis import CameraModel, SynthConfig, random_cfa, synthesize

XYZ_TO_CAM = np.array([[0.7, -0.1, -0.05], [-0.4, 1.2, 0.2], [-0.05, 0.1, 0.6]])


def _flat_scene(n=4, size=48, level=0.3):
    return torch.full((n, 3, size, size), level)


def test_negative_read_variance_gives_finite_input():
    """darktable fits can have b < 0 (X-T1 profiles do): the variance must be
    clamped, else dark photosites get NaN noise (this once broke training)."""
    cam = CameraModel("neg b", XYZ_TO_CAM, np.array([[[3e-3, 4e-4, 1e-3], [-2e-6, 1e-6, 8e-6]]]))
    scene = torch.zeros(2, 3, 36, 36)  # black: a*x + b < 0 for red
    b = synthesize(scene, CFA.xtrans(), [cam], torch.Generator().manual_seed(0))
    assert torch.isfinite(b.x).all()


def test_white_balance_and_noise_statistics():
    a, bb = np.array([2e-3, 1e-3, 1.5e-3]), np.array([4e-6, 2e-6, 3e-6])
    cam = CameraModel("c", XYZ_TO_CAM, np.array([[a, bb]]))
    cfg = SynthConfig(exposure_ev=(0.0, 0.0), headroom=(0.5, 0.5), noise_jitter=0.0, wb_red=(1.9, 2.4), wb_blue=(1.5, 1.9),
                      low_noise_prob=0.0, zero_noise_prob=0.0)
    cfa = CFA.bayer("GBRG")
    batch = synthesize(_flat_scene(8, 64), cfa, [cam], torch.Generator().manual_seed(1), cfg)
    wb = batch.wb
    assert torch.allclose(wb[:, 1], torch.ones(8)) and (wb[:, 0] > 1.8).all() and (wb[:, 2] > 1.4).all()
    # the model's noise parameters are the white-balanced profile
    torch.testing.assert_close(batch.noise[:, 0], torch.tensor(a, dtype=torch.float32) * wb)
    torch.testing.assert_close(batch.noise[:, 1], torch.tensor(bb, dtype=torch.float32) * wb**2)
    # input minus white-balanced clean mosaic has the predicted variance per colour
    colour = torch.from_numpy(cfa.colour_map(64, 64)).long()
    clean = torch.gather(batch.target, 1, colour.expand(8, 1, 64, 64))
    resid = batch.x - clean
    for c in range(3):
        sel = (colour == c).expand(8, 1, 64, 64)
        pred = (batch.noise[:, 0, c, None, None, None] * clean + batch.noise[:, 1, c, None, None, None]).expand_as(clean)[sel].mean()
        emp = resid[sel].var()
        assert abs(float(emp / pred) - 1) < 0.1, (c, float(emp), float(pred))


def test_random_cfa_covers_phases():
    gen = torch.Generator().manual_seed(0)
    names = {random_cfa("bayer", gen).name for _ in range(60)}
    assert names == {"RGGB", "GRBG", "GBRG", "BGGR"}
    assert random_cfa("rgb", gen) is None
    # X-Trans repeats itself shifted by (3, 3): 18 distinct phases of 36
    every = {CFA.xtrans(dy, dx).name for dy in range(6) for dx in range(6)}
    assert len(every) == 18
    assert {random_cfa("xtrans", gen).name for _ in range(300)} == every
