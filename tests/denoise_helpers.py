"""Builders shared by the denoise tests (tests/test_denoise*.py): random
models whose every path is active, smooth test scenes, and small CFA DNGs
with full metadata."""
import numpy as np
import torch

from kpnt.io.dng import write_cfa_dng
from kpnt.io.meta import RawMeta
from kpnt.model import KPNT

NOISE_WB = np.array([[2e-3, 1e-3, 1.5e-3], [4e-6, 2e-6, 3e-6]], dtype=np.float32)


def random_model(sensor, seed=0, scale=0.3):
    """A model whose every path is active (random, not near-uniform kernels)."""
    torch.manual_seed(seed)
    m = KPNT(sensor)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * scale)
    return m.eval()


def scene(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 0.3 + 0.2 * np.sin(xx / 7.0) * np.cos(yy / 11.0) + 0.05 * rng.standard_normal((h, w))
    return img.astype(np.float32)


def raw_meta(**kw):
    base = dict(black=np.full(3, 512.0), white=16383.0, wb=np.array([2.0, 1.0, 1.7]), xyz_to_cam=np.array([[0.7, -0.1, -0.05], [-0.4, 1.2, 0.2], [-0.05, 0.1, 0.6]]),
                make="Nikon", model="D750", iso=3200, exposure_time=1 / 250, f_number=4.0, focal_length=50.0, datetime="2026:11:24 10:00:00", orientation=6)
    base.update(kw)
    return RawMeta(**base)


def write_raw(path, cfa, shape=(120, 150), seed=0, **kw):
    meta = raw_meta(**kw)
    mosaic = scene(*shape, seed=seed).clip(0, 1)
    counts = np.rint(mosaic * (meta.white - 512) + 512).astype(np.uint16)
    write_cfa_dng(path, counts, cfa, meta)
    return path
