"""Exposure matching: per-channel gain (and optional offset) from the
reference to the high-ISO frame.

Model, per colour c: ``noisy ~ gain[c] * reference + offset[c]``.  Fitted on
block means (:mod:`kpnt.dataset.blocks`) of the noisy mosaic against block
means of the exactly aligned reference's own photosites, over blocks that
are unsaturated, unmasked and well exposed.  Block means average the noise
down (a 4x4 Bayer block holds 4 red sites).  A first, robust pass ignores
blocks that moved; the final pass runs with motion masked (see
:func:`match_exposure` for why it differs).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kpnt.errors import DatasetError

#: Blocks darker than this (normalised units, or 2% of the channel's 99th
#: percentile if that is higher) are left out: noise and black-level
#: clipping of the demosaic dominate there.
DARK = 0.005
MIN_BLOCKS = 16
_TUKEY = 4.685


@dataclass
class ExposureMatch:
    """Per-channel ``noisy ~ gain * reference + offset``.

    Attributes:
        gain: (3,) R, G, B.
        offset: (3,) zeros unless fitted.
        blocks: (3,) blocks with weight > 0 in the last iteration.
    """

    gain: np.ndarray
    offset: np.ndarray
    blocks: np.ndarray


def _wls(x, y, w, with_offset: bool) -> tuple[float, float]:
    if not with_offset:
        return float((w * x * y).sum() / (w * x * x).sum()), 0.0
    sw, sx, sy = w.sum(), (w * x).sum(), (w * y).sum()
    sxx, sxy = (w * x * x).sum(), (w * x * y).sum()
    det = sw * sxx - sx * sx
    if det <= 1e-12 * sw * sxx:
        return float(sxy / sxx), 0.0
    g = (sw * sxy - sx * sy) / det
    return float(g), float((sy - g * sx) / sw)


def _box3(a: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``a`` over each 3x3 neighbourhood of blocks (valid ones only)
    and whether all 9 were valid."""
    v = valid.astype(np.float32)
    num = cv2.blur(np.where(valid, a, 0).astype(np.float32), (3, 3), borderType=cv2.BORDER_CONSTANT)
    den = cv2.blur(v, (3, 3), borderType=cv2.BORDER_CONSTANT)
    return num / np.maximum(den, 1e-6), den > 1 - 1e-4


def match_exposure(noisy_blocks: np.ndarray, ref_blocks: np.ndarray, bad: np.ndarray, with_offset: bool = False,
                   variance: np.ndarray | None = None, iters: int = 12) -> ExposureMatch:
    """Fit gains (and offsets) per colour.

    Two modes:

    - ``variance`` None (first pass, motion not masked yet): blocks weighted
      as shot noise (1 / reference), outliers (motion) down-weighted with
      Tukey's biweight.
    - ``variance`` given (final pass, motion masked): the block means are
      first averaged over 3x3 blocks (complete neighbourhoods only), then
      gain = ratio of sums (or, with an offset, least squares weighted by
      1 / variance), dropping only neighbourhoods beyond 8 sigma.  Off the
      CFA lattice the reference's photosites sit elsewhere in each block
      than the noisy frame's, so its block means carry a "sampling noise"
      of texture: a least-squares slope on them is diluted, and cutting
      dark blocks or residual outliers selects on it (both biased the blue
      gain by -1..-2% at ISO 12800).  Averaging over 9 blocks shrinks that
      noise 9-fold; the ratio of sums is not diluted by it at all.

    Args:
        noisy_blocks: (hb, wb, 3) block means of the noisy mosaic.
        ref_blocks: (hb, wb, 3) block means of the aligned reference.
        bad: (hb, wb) bool, blocks holding a saturated or masked site.
        with_offset: also fit an offset (black-level drift between ISOs).
        variance: (hb, wb, 3) expected variance of each noisy block mean.
    Raises:
        DatasetError: a colour has fewer than 16 usable blocks.
    """
    gain, offset, used = np.ones(3), np.zeros(3), np.zeros(3, dtype=np.int64)
    for c in range(3):
        x = ref_blocks[..., c].astype(np.float64)
        y = noisy_blocks[..., c].astype(np.float64)
        ok = ~bad & np.isfinite(x) & np.isfinite(y)
        if variance is not None:
            v = np.maximum(variance[..., c].astype(np.float64), 1e-30)
            x, ok3 = _box3(x, ok)
            y, _ = _box3(y, ok)
            v, _ = _box3(v, ok)
            v = v / 9.0
            x, y, v = x.astype(np.float64), y.astype(np.float64), v.astype(np.float64)
            ok = ok3
        if ok.sum() >= MIN_BLOCKS:
            lo = max(DARK, 0.02 * float(np.percentile(x[ok], 99)))
            ok &= x > lo
        if ok.sum() < MIN_BLOCKS:
            raise DatasetError(f"only {int(ok.sum())} well-exposed, unsaturated {'RGB'[c]} blocks to match exposure "
                               f"(need {MIN_BLOCKS}): the pair is too dark, too saturated or too small")
        x, y = x[ok], y[ok]
        if variance is None:
            base_w, sd = 1.0 / x, np.sqrt(x)
        else:
            v = v[ok]
            # Gain only: weights 1/x make least squares the ratio of sums.
            base_w, sd = (1.0 / v if with_offset else 1.0 / x), np.sqrt(v)
        w = base_w
        g, o = _wls(x, y, w, with_offset)
        for _ in range(iters):
            z = (y - g * x - o) / sd
            if variance is None:
                s = 1.4826 * float(np.median(np.abs(z - np.median(z))))
                if s <= 0:
                    break
                u = z / (_TUKEY * s)
                w = base_w * np.where(np.abs(u) < 1, (1 - u * u) ** 2, 0.0)
            else:
                w = base_w * (np.abs(z) < 8.0)
            if (w > 0).sum() < MIN_BLOCKS:
                raise DatasetError(f"exposure match of {'RGB'[c]} failed: the frames disagree almost everywhere (large motion?)")
            g_new, o_new = _wls(x, y, w, with_offset)
            done = abs(g_new - g) <= 1e-7 * abs(g) and abs(o_new - o) <= 1e-9
            g, o = g_new, o_new
            if done:
                break
        gain[c], offset[c], used[c] = g, o, int((w > 0).sum())
    return ExposureMatch(gain=gain, offset=offset, blocks=used)


def check_gain(match: ExposureMatch, max_gain: float) -> str | None:
    """Reason to reject the pair for an absurd gain (outside
    ``[1/max_gain, max_gain]``), or None."""
    g = match.gain
    if not np.isfinite(g).all() or (g <= 0).any():
        return f"exposure gains {np.round(g, 4).tolist()} are not positive: the frames do not match"
    bad = (g > max_gain) | (g < 1.0 / max_gain)
    if bad.any():
        return (f"exposure gain {'RGB'[int(np.argmax(bad))]} = {g[bad][0]:.3g} outside 1/{max_gain:g}..{max_gain:g} "
                f"(--max-gain): exposures too far apart to learn from")
    return None
