"""White balance estimated from the image, for raws without an as-shot WB.

Cameras set to auto WB sometimes store no usable multipliers (LibRaw reports
``cam_mul[0] = -1`` for the Canon EOS D30's CRWs, zeros for others), and a
DNG may lack AsShotNeutral.  Falling back to daylight multipliers renders
such a frame strongly tinted wherever the light was not daylight; raw
converters instead estimate the WB from the image (dcraw/LibRaw's
"auto WB" for ``cam_mul[0] = -1``: a grey-world average).  kpnt does the
same, refined towards near-grey areas:

1. Per CFA block (one repeat of the pattern) the mean of each colour;
   blocks with a clipped photosite, or too dark to carry colour, are left
   out.
2. Grey world: gains that make the mean of those blocks neutral.
3. Grey pixels: re-estimate from the blocks that are already within
   :data:`GREY_TOLERANCE` of neutral under the current gains (a colour chart
   or a coloured wall no longer drags the estimate), twice.

Example::

    >>> wb = estimate_wb(raw.mosaic, raw.cfa, raw.saturated)   # doctest: +SKIP
    >>> wb                                                    # doctest: +SKIP
    array([1.93, 1.  , 1.61])
"""
from __future__ import annotations

import numpy as np

from kpnt.mosaic import CFA

#: Blocks darker than this (normalised units, green mean) are too noisy to
#: say anything about the light's colour.
MIN_LEVEL = 0.01
#: Blocks whose red/green or blue/green ratio, after the current gains, is
#: within this factor of 1 (|log ratio| < log(1 + tol)) count as grey.
GREY_TOLERANCE = 0.15
#: The grey-pixel refinement runs only when at least this share of the
#: usable blocks is grey (else the grey-world answer stands).
MIN_GREY_SHARE = 0.02
#: At most this many blocks are used (a regular subsample of larger images):
#: the estimate needs statistics, not every block of a 60-MP frame.
MAX_BLOCKS = 1_000_000


def block_means(mosaic: np.ndarray, cfa: CFA, saturated: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-block colour means of a mosaic.

    Args:
        mosaic: (H, W) normalised mosaic.
        cfa: its layout (pattern position (0, 0) at the top-left photosite).
        saturated: optional (H, W) bool mask of clipped photosites.
    Returns:
        ``(means, ok)``: (N, 3) mean R, G, B of each of N blocks, and (N,)
        bool, False where the block holds a clipped photosite.
    """
    p = cfa.period
    h, w = (mosaic.shape[0] // p) * p, (mosaic.shape[1] // p) * p
    step = max(1, int(np.ceil(np.sqrt((h // p) * (w // p) / MAX_BLOCKS))))
    sums = np.zeros((3,) + ((h // p + step - 1) // step, (w // p + step - 1) // step))
    ok = np.ones(sums.shape[1:], dtype=bool)
    counts = np.zeros(3)
    for dy in range(p):
        for dx in range(p):
            c = int(cfa.pattern[dy, dx])
            plane = mosaic[dy:h:p, dx:w:p][::step, ::step]
            sums[c] += plane
            counts[c] += 1
            if saturated is not None:
                ok &= ~saturated[dy:h:p, dx:w:p][::step, ::step]
    means = (sums / counts[:, None, None]).reshape(3, -1).T
    return means, ok.ravel()


def estimate_wb(mosaic: np.ndarray, cfa: CFA, saturated: np.ndarray | None = None) -> np.ndarray | None:
    """White-balance gains (R, G, B; green = 1) estimated from a mosaic.

    Args:
        mosaic: (H, W) normalised mosaic (black 0, white 1).
        cfa: its layout.
        saturated: optional clipped-photosite mask.
    Returns:
        (3,) float64 gains, or None when no block is usable (a black or
        fully clipped frame).
    """
    means, ok = block_means(mosaic, cfa, saturated)
    ok &= (means[:, 1] > MIN_LEVEL) & (means > 0).all(axis=1)
    use = means[ok]
    if len(use) == 0:
        return None
    gains = use[:, 1].sum() / use.sum(axis=0)
    tol = np.log1p(GREY_TOLERANCE)
    for _ in range(2):
        ratio = np.log(use * gains / use[:, 1:2])
        grey = (np.abs(ratio[:, 0]) < tol) & (np.abs(ratio[:, 2]) < tol)
        if grey.sum() < max(1, MIN_GREY_SHARE * len(use)):
            break
        gains = use[grey, 1].sum() / use[grey].sum(axis=0)
    return gains / gains[1]
