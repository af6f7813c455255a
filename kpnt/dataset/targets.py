"""Full-RGB targets: the base-ISO reference demosaiced by LibRaw.

Uses :func:`kpnt.io.demosaic.libraw_demosaic_counts` (AHD for Bayer,
LibRaw's X-Trans interpolation, small X-Trans mosaics padded by whole 6x6
repeats; white-balanced demosaic with the gains divided back out, DESIGN.md
section 8).  The normalised mosaic is handed over as counts ``OFFSET + x *
SPAN`` with one black level for every photosite, so per-site black patterns
of the camera are already gone and slightly negative values survive the
encoding (LibRaw clips them to 0 in its output).
"""
from __future__ import annotations

import numpy as np

from kpnt.dataset.motion import dilate_mask
from kpnt.io.meta import RawMeta
from kpnt.mosaic import CFA

OFFSET = 4096
SPAN = 60000
#: Reference saturation spreads into the demosaic of its neighbours: the
#: mask of saturated reference sites is dilated by this many photosites.
SATURATION_REACH = 3


def demosaic_reference(mosaic: np.ndarray, cfa: CFA, wb) -> tuple[np.ndarray, np.ndarray]:
    """LibRaw demosaic of a normalised mosaic.

    Args:
        mosaic: (H, W) normalised reference mosaic.
        cfa: its layout.
        wb: (3,) as-shot gains (green 1) for LibRaw's white-balanced demosaic.
    Returns:
        rgb: (3, H, W) float32 camera RGB, same units as ``mosaic``.
        clipped: (H, W) bool, a channel reached LibRaw's ceiling
            (``rgb[c] * wb[c] >= 1``): the value there is not the scene's.
    """
    from kpnt.io.demosaic import libraw_demosaic_counts

    wb = np.asarray(wb, dtype=np.float64)
    counts = np.clip(np.rint(OFFSET + np.asarray(mosaic, np.float32) * np.float32(SPAN)), 0, 65535).astype(np.uint16)
    meta = RawMeta(black=np.full(3, float(OFFSET)), white=float(OFFSET + SPAN), wb=wb / wb[1], xyz_to_cam=np.eye(3))
    rgb = libraw_demosaic_counts(counts, cfa, meta)
    del counts
    # LibRaw's output is 16-bit: wb-balanced value 1 is code 65535.
    clipped = np.zeros(rgb.shape[:2], dtype=bool)
    for c in range(3):
        clipped |= rgb[..., c] * np.float32(wb[c] / wb[1]) >= np.float32(65534.5 / 65535.0)
    return np.ascontiguousarray(np.moveaxis(rgb, 2, 0)), clipped


def spread(mask: np.ndarray, reach: int = SATURATION_REACH) -> np.ndarray:
    """Dilate a bool mask by ``reach`` photosites (square)."""
    return dilate_mask(mask, reach)
