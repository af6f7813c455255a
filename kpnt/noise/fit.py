"""Noise profile from an aligned noisy/clean pair of the same exposure."""
from __future__ import annotations

import numpy as np

from kpnt.errors import NoiseProfileError
from kpnt.noise._linefit import fit_variance_line
from kpnt.noise.profile import NoiseProfile
from kpnt.noise.sampling import _colour_for

#: A residual further than this many robust sigmas from its bin's median is
#: an outlier (misalignment, a moving object, a hot pixel), not noise.  At 6
#: sigma a Gaussian loses 2e-9 of its samples, so the clipped variance is
#: unbiased for real noise.
_CLIP_SIGMAS = 6.0
_MIN_PER_BIN = 64


def _robust_var(r: np.ndarray) -> float:
    med = np.median(r)
    s = 1.4826 * np.median(np.abs(r - med))
    if s > 0:
        r = r[np.abs(r - med) <= _CLIP_SIGMAS * s]
    return float(np.var(r, ddof=1))


def fit_pair(noisy, clean, colour=None, mask=None, clean_profile: NoiseProfile | None = None, n_bins: int = 24) -> NoiseProfile:
    """Fit ``(a, b)`` per colour from an aligned noisy/clean pair.

    Per colour: sort the photosites by clean intensity into ``n_bins``
    equal-count bins, take a robust (6-sigma clipped) variance of
    ``noisy - clean`` in each bin, subtract the clean reference's own
    variance there if ``clean_profile`` is given, and fit a weighted line
    (weights from the sampling variance of each bin's estimate).  The model
    is linear, so regressing a bin's variance on its mean ``max(clean, 0)``
    is exact whatever the spread of intensities inside the bin.

    Args:
        noisy: (H, W) mosaic or (H, W, 3) image, normalised units.
        clean: same shape, the low-noise reference at the same exposure.
        colour: (H, W) int colour map for a mosaic; ``None`` or
            ``[0, 1, 2]`` for an (H, W, 3) image.
        mask: optional bool array broadcastable to ``noisy``: True where a
            photosite may be used (leave out saturated or misaligned ones).
        clean_profile: noise profile of ``clean`` (e.g. the base-ISO
            reference), subtracted from the residual variance.
        n_bins: intensity bins per colour.
    Returns:
        :class:`NoiseProfile` on the scale of the inputs (raw scale for
        normalised raw data), ``a, b >= 0``.
    Raises:
        NoiseProfileError: shapes disagree or a colour has too few valid
            photosites (fewer than ``2 * 64``).
    """
    noisy = np.asarray(noisy, dtype=np.float64)
    clean = np.asarray(clean, dtype=np.float64)
    if noisy.shape != clean.shape:
        raise NoiseProfileError(f"fit_pair: noisy {noisy.shape} and clean {clean.shape} must have the same shape (align them first)")
    if noisy.ndim not in (2, 3):
        raise NoiseProfileError(f"fit_pair expects (H, W) mosaics or (H, W, 3) images, got shape {noisy.shape}")
    if noisy.ndim == 2 and colour is None:
        raise NoiseProfileError("fit_pair: a mosaic needs its (H, W) colour map (CFA.colour_map(H, W))")
    col = _colour_for(noisy, colour)
    valid = np.isfinite(noisy) & np.isfinite(clean)
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != bool:
            raise NoiseProfileError(f"fit_pair: mask must be a bool array (True = usable photosite), got {m.dtype}")
        try:
            valid &= np.broadcast_to(m, noisy.shape)
        except ValueError:
            raise NoiseProfileError(f"fit_pair: mask of shape {m.shape} does not match the image {noisy.shape}") from None
    a = np.zeros(3)
    b = np.zeros(3)
    for c in range(3):
        sel = valid & (col == c)
        n = int(sel.sum())
        if n < 2 * _MIN_PER_BIN:
            raise NoiseProfileError(f"fit_pair: only {n} usable {'RGB'[c]} photosites (need {2 * _MIN_PER_BIN}): use a larger or less saturated crop")
        xc = clean[sel]
        r = noisy[sel] - xc
        order = np.argsort(xc, kind="stable")
        k = int(min(n_bins, n // _MIN_PER_BIN))
        xs, vs, dofs = [], [], []
        for idx in np.array_split(order, k):
            v = _robust_var(r[idx])
            xb = float(np.maximum(xc[idx], 0).mean())
            if clean_profile is not None:
                v -= float(clean_profile.variance(xb, c))
            xs.append(xb)
            vs.append(v)
            dofs.append(len(idx) - 1)
        a[c], b[c] = fit_variance_line(np.array(xs), np.array(vs), np.array(dofs))
    return NoiseProfile(a=a, b=b)
