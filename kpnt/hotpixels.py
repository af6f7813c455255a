"""Hot and dead photosites: found and replaced before denoising.

A hot (stuck-high) or dead (stuck-low) photosite survives denoising as an
isolated coloured dot, more visible once the noise around it is gone.  The
test separates it from real detail with two facts:

1. it differs from *every* photosite of its own colour around it (those
   within 2 photosites: 8 or 12 on a Bayer sensor, 3-9 on X-Trans) by far more
   than the noise level there (:data:`K_SIGMA` standard deviations of the
   file's noise profile, or of the ring's own spread where that is larger:
   texture, or a profile that underestimates the noise);
2. its direct neighbours (the photosites of other colours next to it) do
   not share the excursion: a real point of light, even a star, spreads
   over several photosites through the lens and the sensor's microlenses
   (at least :data:`SPREAD` of the peak reaches the next photosite), while
   a defective photosite is alone.

Flagged photosites are replaced by the median of their same-colour ring.
Everything runs on white-balanced values, so that the colours compare.

Limit: a point of light of a saturated colour that the lens focuses within
one photosite (a distant red LED, a very sharp lens without an
anti-aliasing filter) barely reaches the differently coloured neighbours
and is taken for a defect; ``kpnt-denoise --no-hot-pixels`` keeps it.
Synthetic raws mosaicked from photos without optical blur show this (the
bench's 24-MP raw: ~1100 such photosites).

Example::

    >>> n_hot, n_dead = fix_hot_pixels(raw.mosaic, raw.cfa, noise_ab, wb)  # doctest: +SKIP
"""
from __future__ import annotations

import logging

import numpy as np

from kpnt.mosaic import CFA

log = logging.getLogger(__name__)

#: A photosite must lie this many noise standard deviations beyond the
#: brightest (darkest) photosite of its colour around it.  With 8 neighbours
#: a clean photosite does so with probability ~1e-12.
K_SIGMA = 8.0
#: Fraction of a real highlight's excess over the background that reaches
#: the next photosite (a Gaussian spot of sigma 0.5 px gives 0.14; real
#: lenses and microlenses give more).  A candidate whose direct neighbours
#: rise by less than this (plus noise) is a defect, not light.
SPREAD = 0.05
#: Radius of the same-colour ring searched (covers Bayer and X-Trans).
RADIUS = 2
#: Nearest ring members read by the full-frame screen.
SCREEN = 4


def _offsets(cfa: CFA) -> tuple[list[list[tuple[int, int]]], list[tuple[int, int]]]:
    """Per repeat position, the same-colour offsets within :data:`RADIUS`;
    and the 4 direct neighbours."""
    p = cfa.period
    same = []
    for py in range(p):
        row = []
        for px in range(p):
            c = cfa.pattern[py, px]
            cand = [(dy, dx) for dy in range(-RADIUS, RADIUS + 1) for dx in range(-RADIUS, RADIUS + 1)
                    if (dy, dx) != (0, 0) and cfa.pattern[(py + dy) % p, (px + dx) % p] == c]
            row.append(cand)
        same.append(row)
    direct = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    return same, direct


def fix_hot_pixels(mosaic: np.ndarray, cfa: CFA, noise_ab: np.ndarray, wb: np.ndarray) -> tuple[int, int]:
    """Find hot and dead photosites and replace them, in place.

    Args:
        mosaic: (H, W) float32 normalised mosaic (white balance not applied);
            corrected in place.
        cfa: its layout.
        noise_ab: (2, 3) ``[a; b]`` noise profile (``var = a x + b``, white
            balance not applied), as :class:`kpnt.denoise.NoiseChoice`.
        wb: (3,) white-balance gains R, G, B.
    Returns:
        ``(hot, dead)``: how many photosites were replaced.
    """
    h, w = mosaic.shape
    p = cfa.period
    wb = np.asarray(wb, dtype=np.float32)
    a, b = (np.asarray(noise_ab, dtype=np.float32)[i] for i in range(2))
    same, direct = _offsets(cfa)
    hp, wp = -(-h // p), -(-w // p)
    # One white-balanced plane per repeat position, with a one-site NaN
    # border (neighbours outside the image are ignored by fmax/fmin and
    # nanmedian): the neighbour at offset (dy, dx) of every site of one
    # position is then a contiguous slice of another plane, fast to scan.
    planes = {}
    for qy in range(p):
        for qx in range(p):
            sub = mosaic[qy::p, qx::p]
            plane = np.full((hp + 2, wp + 2), np.nan, dtype=np.float32)
            np.multiply(sub, wb[int(cfa.pattern[qy, qx])], out=plane[1:1 + sub.shape[0], 1:1 + sub.shape[1]])
            planes[qy, qx] = plane

    def view(py, px, dy, dx):
        ty, tx = py + dy, px + dx
        oy, ox = ty // p, tx // p
        return planes[ty % p, tx % p][1 + oy: 1 + oy + hp, 1 + ox: 1 + ox + wp]

    n_hot = n_dead = 0
    fixes = []
    for py in range(p):
        for px in range(p):
            c = int(cfa.pattern[py, px])
            yc = view(py, px, 0, 0)
            # Screen on the nearest members of the ring only (4 of 8-12):
            # the exact test below reads the whole ring.
            first, *rest = sorted(same[py][px], key=lambda o: o[0] ** 2 + o[1] ** 2)[:SCREEN]
            hi, lo = view(py, px, *first).copy(), view(py, px, *first).copy()
            for dy, dx in rest:
                v = view(py, px, dy, dx)
                np.fmax(hi, v, out=hi)
                np.fmin(lo, v, out=lo)
            # Cheap screen first: a photosite beyond every member of the
            # whole ring is beyond these; the noise at their minimum is at
            # most the noise at the ring's median except next to a sharp
            # edge, where a defect may go unflagged (never a false flag).
            with np.errstate(invalid="ignore"):
                k_lo = K_SIGMA * _sigma(np.maximum(lo, 0), a[c], b[c], wb[c])
                cand = (yc - hi > k_lo) | (lo - yc > k_lo)
            iy, ix = np.nonzero(cand)         # NaN (outside the image) never passes
            if len(iy) == 0:
                continue
            ring = np.stack([view(py, px, dy, dx)[iy, ix] for dy, dx in same[py][px]])
            hi_all, lo_all = np.nanmax(ring, axis=0), np.nanmin(ring, axis=0)
            direct_v = np.stack([view(py, px, dy, dx)[iy, ix] for dy, dx in direct])
            with np.errstate(all="ignore"):
                med = np.nanmedian(ring, axis=0)
                v = yc[iy, ix]
                # The profile's noise, or the ring's own spread where that is
                # larger (texture, or a profile that underestimates the noise).
                spread = 1.4826 * np.nanmedian(np.abs(ring - med), axis=0)
                sigma = np.maximum(_sigma(np.maximum(med, 0), a[c], b[c], wb[c]), spread)
                excess = v - med
                d_hi, d_lo = np.nanmax(direct_v, axis=0), np.nanmin(direct_v, axis=0)
                is_hot = (v - hi_all > K_SIGMA * sigma) & (d_hi - med < SPREAD * excess + 3 * sigma)
                is_dead = (lo_all - v > K_SIGMA * sigma) & (d_lo - med > SPREAD * excess - 3 * sigma)
            ok = np.isfinite(med)
            is_hot &= ok
            is_dead &= ok
            n_hot += int(is_hot.sum())
            n_dead += int(is_dead.sum())
            fix = is_hot | is_dead
            # Replace after every position is tested: the tests read the
            # original values of their neighbours.
            fixes.append((py + p * iy[fix], px + p * ix[fix], med[fix] / wb[c]))
    for ry, rx, val in fixes:
        mosaic[ry, rx] = val
    return n_hot, n_dead


def fix_raw(raw, noise_ab: np.ndarray) -> tuple[int, int]:
    """:func:`fix_hot_pixels` on a :class:`kpnt.io.raw.RawImage` (its
    mosaic, in place), logged at debug level with the file name."""
    n_hot, n_dead = fix_hot_pixels(raw.mosaic, raw.cfa, noise_ab, raw.meta.wb)
    log.debug("%s: %d hot and %d dead photosite(s) replaced", raw.path, n_hot, n_dead)
    return n_hot, n_dead


def _sigma(level: np.ndarray, a: float, b: float, gain: float) -> np.ndarray:
    """Noise standard deviation of a white-balanced photosite at ``level``
    (white-balanced), from the profile ``var(x) = a x + b`` of the raw value."""
    return gain * np.sqrt(np.maximum(a * level / gain + b, 0))
