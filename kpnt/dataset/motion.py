"""Local motion mask of an aligned, exposure-matched pair.

Per block (:mod:`kpnt.dataset.blocks`) and colour, the residual of the noisy
block mean against the exposure-matched reference is divided by the noise
it should have (noisy profile and reference profile, averaged over the
block's sites); the squared standardised residuals of the three colours are
averaged, then smoothed over 3x3 blocks.  Where that exceeds ``threshold``
(noise alone gives 1 +- 0.27), the block moved; the mask is dilated by
``dilate`` photosites so that the blurry edges of a moving object go too.

The standardisation is recalibrated by the median block: texture the
demosaic cannot reproduce (detail finer than the CFA) inflates every block a
little, and must not read as motion everywhere.
"""
from __future__ import annotations

import cv2
import numpy as np

from kpnt.noise import NoiseProfile

#: Default threshold on the smoothed mean squared standardised residual.
DEFAULT_THRESHOLD = 3.0
#: Default dilation of the mask in photosites.
DEFAULT_DILATE = 8
#: Median of chi-square(3) / 3: the median block of a static pair.
_CHI2_3_MEDIAN = 0.7887


def motion_blocks(noisy_blocks: np.ndarray, ref_blocks: np.ndarray, counts: np.ndarray, gain: np.ndarray,
                  offset: np.ndarray, noisy_profile: NoiseProfile, ref_profile: NoiseProfile | None,
                  threshold: float = DEFAULT_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Blocks that moved.

    Args:
        noisy_blocks, ref_blocks: (hb, wb, 3) block means over the usable
            (unsaturated) sites of each colour (see
            :func:`kpnt.dataset.blocks.masked_block_means`).
        counts: (hb, wb, 3) sites behind each mean (0: colour left out; a
            block with no usable site is never flagged, it is masked anyway).
        gain, offset: (3,) exposure match ``noisy ~ gain * ref + offset``.
        noisy_profile: noise of the noisy frame (a preliminary fit is fine).
        ref_profile: noise of the reference, or None (ignored).
        threshold: see module docstring.
    Returns:
        (moved (hb, wb) bool, score (hb, wb) float32 smoothed statistic).
    """
    ref = ref_blocks.astype(np.float64)
    pred = gain * ref + offset
    var = noisy_profile.a * np.maximum(pred, 0) + np.maximum(noisy_profile.b, 0)
    if ref_profile is not None:
        var = var + gain**2 * (ref_profile.a * np.maximum(ref, 0) + np.maximum(ref_profile.b, 0))
    have = counts > 0
    var = np.maximum(var / np.maximum(counts, 1), 1e-12)
    z2 = np.where(have, (noisy_blocks - pred) ** 2 / var, 0.0)
    n_col = have.sum(axis=2)
    good = n_col > 0
    e = np.where(good, z2.sum(axis=2) / np.maximum(n_col, 1), 1.0)
    if good.any():
        scale = float(np.median(e[good])) / _CHI2_3_MEDIAN
        if scale > 1:
            e = np.where(good, e / scale, 1.0)
    score = cv2.blur(e.astype(np.float32), (3, 3), borderType=cv2.BORDER_REFLECT)
    return (score > threshold) & good, score


def dilate_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2r+1) square."""
    if radius <= 0 or not mask.any():
        return mask
    k = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), k).astype(bool)
