"""Unprocessing (Brooks et al. 2019): an sRGB photo back to a clean raw mosaic.

Steps, each the inverse of a step of a simple raw pipeline:

1. sRGB-encoded photo -> linear sRGB (inverse sRGB curve);
2. linear sRGB -> white-balanced camera RGB (the inverse of
   :func:`kpnt.color.cam_to_srgb_matrix`, rows summing to 1, so sRGB white
   lands on (1, 1, 1));
3. divide by an as-shot white balance (random, as real cameras' gains for
   daylight-ish scenes: R 1.9-2.4, B 1.5-1.9, G = 1);
4. scale by ``headroom`` so that photo white sits below the white level;
5. sample one colour per photosite through a CFA.

:func:`kpnt.color.render_srgb` with the same white balance, matrix and
``baseline_exposure = -log2(headroom)`` undoes steps 1-4 (up to the clip of
out-of-gamut colours below).

Example::

    >>> rng = np.random.default_rng(0)
    >>> wb = random_wb(rng)
    >>> cam = unprocess(photo, camera_matrix("Nikon", "D750"), wb)  # doctest: +SKIP
    >>> clean = mosaic(cam, CFA.bayer("RGGB"))                        # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from kpnt.color import srgb_to_cam_matrix, srgb_to_linear
from kpnt.errors import KpntError
from kpnt.mosaic.cfa import CFA

#: Ranges of the random as-shot gains (Brooks et al. 2019; DESIGN.md section 8).
WB_RED_RANGE = (1.9, 2.4)
WB_BLUE_RANGE = (1.5, 1.9)
#: Default level of photo white in the normalised raw (white level = 1).
DEFAULT_HEADROOM = 0.9


class SynthError(KpntError):
    """A synthetic raw cannot be made from these inputs."""


def load_photo(path, max_size: int | None = None) -> np.ndarray:
    """Read an 8- or 16-bit sRGB photo (PNG, JPEG, TIFF, ... via OpenCV).

    Args:
        path: the image file.
        max_size: if given, downscale (area filter) so that the longer side
            is at most this many pixels; smaller photos are left alone.
    Returns:
        (H, W, 3) float32 sRGB-encoded values in [0, 1], channels R, G, B.
        Grey photos are repeated over the three channels; alpha is dropped.
    Raises:
        SynthError: missing or undecodable file, or an unsupported sample type.
    """
    path = Path(path)
    if not path.is_file():
        raise SynthError(f"photo {path} does not exist or is not a file")
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise SynthError(f"cannot decode photo {path}: give an 8- or 16-bit image OpenCV reads (PNG, JPEG, TIFF)")
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.0
    else:
        raise SynthError(f"photo {path} has {img.dtype} samples: give an 8- or 16-bit sRGB image")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        raise SynthError(f"photo {path} has {img.shape[2]} channels: give a grey, RGB or RGBA image")
    if max_size is not None:
        if max_size < 1:
            raise SynthError(f"max_size must be a positive number of pixels, got {max_size}")
        h, w = img.shape[:2]
        if max(h, w) > max_size:
            f = max_size / max(h, w)
            size = (max(1, round(w * f)), max(1, round(h * f)))      # cv2 wants (width, height)
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img, dtype=np.float32)


def random_wb(rng: np.random.Generator) -> np.ndarray:
    """(3,) random as-shot gains: R in [1.9, 2.4], G = 1, B in [1.5, 1.9]."""
    return np.array([rng.uniform(*WB_RED_RANGE), 1.0, rng.uniform(*WB_BLUE_RANGE)])


def unprocess(photo, xyz_to_cam, wb, headroom: float = DEFAULT_HEADROOM) -> np.ndarray:
    """An sRGB photo as the linear camera RGB a sensor would have recorded.

    Args:
        photo: (H, W, 3) sRGB-encoded values in [0, 1] (float) or uint8.
        xyz_to_cam: (3, 3) XYZ (D65) -> camera matrix of the target camera.
        wb: (3,) as-shot gains (green = 1) to divide out.
        headroom: level of photo white in the normalised raw, in (0, 1].
    Returns:
        (H, W, 3) float32 linear camera RGB, white balance NOT applied,
        >= 0: sRGB colours outside the camera's gamut would need negative
        light, which no sensor records, so they are clipped at 0.
    """
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] != 3:
        raise SynthError(f"photo must have shape (H, W, 3), got {photo.shape}")
    if photo.dtype == np.uint8:
        photo = photo.astype(np.float32) / 255.0
    wb = np.asarray(wb, dtype=np.float64)
    if wb.shape != (3,) or (wb <= 0).any():
        raise SynthError(f"wb must be 3 positive gains (R, G, B), got {wb.tolist()}")
    if not 0.0 < headroom <= 1.0:
        raise SynthError(f"headroom must lie in (0, 1], got {headroom}")
    lin = srgb_to_linear(np.clip(photo.astype(np.float32), 0.0, 1.0))
    m = srgb_to_cam_matrix(xyz_to_cam).astype(np.float32)
    gain = (headroom / wb).astype(np.float32)
    cam = (lin @ m.T) * gain
    return np.maximum(cam, 0.0)


def mosaic(cam_rgb, cfa: CFA) -> np.ndarray:
    """Sample one colour per photosite: (H, W, 3) -> (H, W) float32, colour
    of photosite (y, x) given by ``cfa.colour_map`` (pattern at (0, 0))."""
    cam_rgb = np.asarray(cam_rgb)
    if cam_rgb.ndim != 3 or cam_rgb.shape[2] != 3:
        raise SynthError(f"cam_rgb must have shape (H, W, 3), got {cam_rgb.shape}")
    colour = cfa.colour_map(*cam_rgb.shape[:2])
    return np.take_along_axis(cam_rgb, colour[:, :, None], axis=2)[:, :, 0].astype(np.float32)


def to_raw_counts(mosaic_norm, black, white: float, colour=None) -> np.ndarray:
    """Normalised mosaic -> uint16 raw counts ``round(x (white - black) + black)``.

    Args:
        mosaic_norm: (H, W) normalised values (may be < 0 or > 1 from noise).
        black: black level in counts: a number, or (3,) per colour R, G, B
            (then ``colour`` is needed).
        white: white level in counts (> every black level, <= 65535).
        colour: (H, W) CFA colour map, needed for per-colour black levels.
    Returns:
        (H, W) uint16, clipped to [0, white]: below black the ADC still
        records noise down to 0, and it saturates at the white level, as a
        sensor does (photosites at ``white`` are the saturated ones).
    """
    x = np.asarray(mosaic_norm, dtype=np.float64)
    if x.ndim != 2:
        raise SynthError(f"mosaic must have shape (H, W), got {x.shape}")
    black = np.asarray(black, dtype=np.float64)
    if black.ndim == 1:
        if black.shape != (3,) or colour is None:
            raise SynthError("per-colour black levels need 3 values and the (H, W) CFA colour map")
        black = black[np.asarray(colour)]
    elif black.ndim != 0:
        raise SynthError(f"black must be a number or 3 per-colour values, got shape {black.shape}")
    white = float(white)
    if not np.all(black >= 0) or not np.all(white > black) or white > 65535:
        raise SynthError(
            f"levels must satisfy 0 <= black < white <= 65535, got black {np.unique(black)}, white {white}")
    counts = np.rint(x * (white - black) + black)
    return np.clip(counts, 0, white).astype(np.uint16)
