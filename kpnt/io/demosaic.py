"""LibRaw's demosaic through rawpy, as a baseline and for dataset targets.

DESIGN.md section 8 fixes how: LibRaw must demosaic *white-balanced* data
(with unit gains it loses 2-6 dB to colour shifts), must not rescale the
image to its own maximum, and must see the levels kpnt uses.  The gains are
divided back out, so the result is camera RGB with white = 1, comparable to
kpnt's output.  LibRaw's X-Trans interpolation fails on images under 512
pixels: such mosaics are padded by whole 6x6 repeats first.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from kpnt.errors import RawReadError
from kpnt.mosaic.kinds import XTRANS

#: LibRaw's X-Trans demosaic needs at least this many pixels per side.
LIBRAW_XTRANS_MIN = 512


def libraw_demosaic(path, wb, black: float, white: float) -> np.ndarray:
    """Demosaic a CFA raw file with LibRaw (AHD for Bayer, LibRaw's own
    X-Trans interpolation), white balance divided back out.

    Args:
        path: raw file rawpy can open.
        wb: (3,) as-shot gains R, G, B (green = 1).
        black, white: levels in raw counts.
    Returns:
        (H, W, 3) float32 camera RGB of the visible area, white level = 1.
    """
    import rawpy

    wb = np.asarray(wb, dtype=np.float64)
    try:
        with rawpy.imread(str(path)) as raw:
            rgb = raw.postprocess(
                demosaic_algorithm=rawpy.DemosaicAlgorithm.AHD,
                gamma=(1, 1),
                no_auto_bright=True,
                output_bps=16,
                output_color=rawpy.ColorSpace.raw,
                user_black=int(round(black)),
                # LibRaw measures saturation above black.
                user_sat=int(round(white - black)),
                adjust_maximum_thr=0.0,
                user_wb=[float(wb[0]), float(wb[1]), float(wb[2]), float(wb[1])],
                use_camera_wb=False,
                use_auto_wb=False,
                user_flip=0,
            )
    except (rawpy.LibRawError, OSError) as exc:
        raise RawReadError(f"{path}: LibRaw could not demosaic it ({type(exc).__name__}: {exc})") from exc
    return (rgb.astype(np.float32) / 65535.0 / wb[None, None, :]).astype(np.float32)


def libraw_demosaic_counts(counts: np.ndarray, cfa, meta, tmp_dir=None) -> np.ndarray:
    """LibRaw demosaic of an in-memory mosaic of raw counts.

    Writes a temporary CFA DNG (padded by whole X-Trans repeats to
    :data:`LIBRAW_XTRANS_MIN` where needed, padding cropped off again).

    Args:
        counts: (H, W) uint16 raw counts; cfa: its CFA; meta: a RawMeta with
            levels, white balance and colour matrix.
    Returns:
        (H, W, 3) float32 camera RGB, white = 1.
    """
    from kpnt.io.dng import write_cfa_dng

    h, w = counts.shape
    padded = counts
    if cfa.sensor_kind is XTRANS and min(h, w) < LIBRAW_XTRANS_MIN:
        p = cfa.period
        # Pad with whole repeats (wrap keeps the phase when the sides are
        # multiples of the period; crop to that first, then restore).
        hh, ww = h // p * p, w // p * p
        core = counts[:hh, :ww]
        ph = max(0, -(-(LIBRAW_XTRANS_MIN - hh) // p) * p)
        pw = max(0, -(-(LIBRAW_XTRANS_MIN - ww) // p) * p)
        padded = np.pad(core, ((0, ph), (0, pw)), mode="wrap")
    fd, name = tempfile.mkstemp(suffix=".dng", dir=tmp_dir)
    os.close(fd)
    tmp = Path(name)
    try:
        write_cfa_dng(tmp, padded, cfa, meta, overwrite=True)
        rgb = libraw_demosaic(tmp, meta.wb, float(np.mean(meta.black)), meta.white)
    finally:
        tmp.unlink(missing_ok=True)
    out = np.zeros((h, w, 3), np.float32)
    hh, ww = min(h, rgb.shape[0]), min(w, rgb.shape[1])
    out[:hh, :ww] = rgb[:hh, :ww]
    if hh < h or ww < w:  # rows/columns beyond whole repeats: edge-extend
        out[hh:, :ww] = out[hh - 1 : hh, :ww]
        out[:, ww:] = out[:, ww - 1 : ww]
    return out
