"""Noise profile of a high-ISO frame from its aligned pair.

The residual ``noisy - (gain * reference + offset)`` of one photosite holds
the noisy frame's noise, the reference's noise scaled by the gain, and any
error of the reference's value *at that scene point*.  So the clean value is
taken where the reference measured the same colour at exactly the same scene
point (the reference mosaic at the exact shift: all sites when the shift is
on the CFA lattice); only a colour with too few such sites (e.g. red and
blue after an odd Bayer shift) falls back to the demosaiced reference, whose
interpolation error adds to the residual (``method`` says which was used).

The reference's own noise is subtracted (:func:`kpnt.noise.fit_pair`'s
``clean_profile``) when it can be known: from the reference's DNG
NoiseProfile tag, from a profile table (``--profiles``), or from a blind
estimate on the reference (an upper bound on textured scenes).
"""
from __future__ import annotations

import cv2
import numpy as np

from kpnt.dataset.blocks import colour_map
from kpnt.errors import KpntError, NoiseProfileError
from kpnt.mosaic import CFA
from kpnt.noise import NoiseProfile, estimate_blind, fit_pair

#: A colour uses the reference mosaic when at least this fraction of its
#: usable sites (and at least MIN_MATCHED sites) saw the same colour.
MATCHED_FRACTION = 0.2
MIN_MATCHED = 2000
#: Sites whose predicted value is above this stay out of the fit: noise
#: pushes some of them to the white level, which truncates the residual.
BRIGHT = 0.9
#: The fit uses at most this many sites (random, fixed seed): a 24 MP pair
#: gives no better profile than 3 million sites, just slower.
MAX_SITES = 3_000_000
#: Box (photosites) over which the reference is averaged for a site's
#: intensity label.  Measured on 36 synthetic pairs of BSDS500 photos (rms
#: error of a, b over the colours fitted on the mosaic): 1 -> 4.9%, 8.2%;
#: 3 -> 4.0%, 5.7%; 5 -> 3.8%, 6.1%.
LEVEL_BOX = 3
#: Side of the central crop of the reference for the blind estimate.
BLIND_CROP = 768


def reference_profile(mosaic: np.ndarray, cfa: CFA, saturated: np.ndarray, tag, make: str, model: str, iso: int,
                      table=None, raw_scale: float = 12.0) -> tuple[NoiseProfile | None, str]:
    """Noise profile of a base-ISO reference and where it came from.

    Order: the file's NoiseProfile tag ('tag'); the profile table
    ('table'); a blind estimate on a central crop ('blind'); else
    (None, 'none: <why>').
    """
    if tag is not None:
        t = np.asarray(tag, dtype=np.float64)
        return NoiseProfile(a=t[:, 0], b=t[:, 1]), "tag"
    if table is not None:
        try:
            return table.lookup(make, model, iso, raw_scale=raw_scale), f"table x{raw_scale:g}"
        except NoiseProfileError:
            pass                                          # camera not in the table: try blind
    h, w = mosaic.shape
    p = cfa.period
    ch, cw = min(h, BLIND_CROP) // p * p, min(w, BLIND_CROP) // p * p
    y0, x0 = (h - ch) // 2 // p * p, (w - cw) // 2 // p * p
    crop = mosaic[y0:y0 + ch, x0:x0 + cw]
    try:
        prof = estimate_blind(crop, cfa.colour_map(ch, cw), mask=~saturated[y0:y0 + ch, x0:x0 + cw])
    except KpntError as exc:
        return None, f"none: blind estimate failed ({exc})"
    return prof, "blind"


def _bands(h: int, w: int, period: int, max_sites: int) -> np.ndarray | None:
    """Row indices of every k-th band of 8 periods (None: use all rows)."""
    if h * w <= 1.25 * max_sites:
        return None
    band = 8 * period
    k = int(np.ceil(h * w / max_sites))
    starts = np.arange(0, h - band + 1, band)[::k]
    return (starts[:, None] + np.arange(band)[None, :]).ravel()


def colour_methods(cfa: CFA, ref_cfa: CFA, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the reference measured the noisy frame's colour.

    Args:
        cfa, ref_cfa: layouts of the noisy crop and of the reference crop at
            the exact shift.
        usable: (h, w) bool.
    Returns:
        (matched (h, w) bool: same colour at the same scene point;
         use_mosaic (3,) bool: colour c has enough matched usable sites to
         be compared with the reference mosaic rather than the demosaic).
    """
    h, w = usable.shape
    colour = colour_map(cfa, h, w)
    matched = colour == colour_map(ref_cfa, h, w)
    use_mosaic = np.zeros(3, dtype=bool)
    for c in range(3):
        n_c = int((usable & (colour == c)).sum())
        n_m = int((usable & matched & (colour == c)).sum())
        use_mosaic[c] = n_m >= max(MIN_MATCHED, MATCHED_FRACTION * n_c)
    return matched, use_mosaic


def _textured(target: np.ndarray, colour: np.ndarray, sel: np.ndarray, keep: float = 0.25, bins: int = 16) -> np.ndarray:
    """(h, w) bool: among ``sel``, the sites whose channel of the demosaiced
    reference varies most around them (the ``1 - keep`` most textured of
    each colour and intensity bin).  Interpolation error lives there."""
    out = np.zeros(colour.shape, dtype=bool)
    for c in range(3):
        t = target[c].astype(np.float32)
        mean = cv2.blur(t, (5, 5))
        var = cv2.blur(t * t, (5, 5)) - mean * mean
        m = sel & (colour == c)
        idx = np.flatnonzero(m)
        if idx.size < bins * 16:
            continue
        v = var.ravel()[idx]
        lvl = t.ravel()[idx]
        order = np.argsort(lvl, kind="stable")
        for part in np.array_split(order, bins):
            cut = np.quantile(v[part], keep)
            out.ravel()[idx[part[v[part] > cut]]] = True
    return out


def fit_noise(noisy: np.ndarray, ref_exact: np.ndarray, target: np.ndarray, cfa: CFA, ref_cfa: CFA, gain: np.ndarray,
              offset: np.ndarray, usable: np.ndarray, ref_profile: NoiseProfile | None,
              seed: int = 0, max_sites: int = MAX_SITES) -> tuple[NoiseProfile, list[str]]:
    """Fit the noisy frame's profile.

    Args:
        noisy: (h, w) noisy crop (layout ``cfa``).
        ref_exact: (h, w) reference mosaic crop at the exact shift (layout
            ``ref_cfa``, which differs from ``cfa`` off the CFA lattice).
        target: (3, h, w) demosaiced reference crop at the exact shift.
        gain, offset: (3,) exposure match.
        usable: (h, w) bool, sites free of saturation and motion.
        ref_profile: reference noise (subtracted) or None.
        max_sites: at most about this many sites are used.
    Returns:
        (profile on the noisy frame's scale, per-colour method 'mosaic' or
        'demosaic').
    Raises:
        NoiseProfileError: too few usable sites.
    """
    h, w = noisy.shape
    rows = _bands(h, w, cfa.period, max_sites)
    if rows is not None:
        # Every k-th band of rows, each a whole number of CFA periods high
        # and starting on one, so the CFA layouts are unchanged: a 24 MP
        # pair costs no more than max_sites sites (smoothing and sorting the
        # whole frame took seconds for no better profile).
        noisy, ref_exact, usable = noisy[rows], ref_exact[rows], usable[rows]
        target = target[:, rows]
        h = len(rows)
    colour = colour_map(cfa, h, w)
    matched, use_mosaic = colour_methods(cfa, ref_cfa, usable)
    site_mosaic = use_mosaic[colour]
    sel = usable & (matched | ~site_mosaic)
    if not use_mosaic.all():
        sel &= ~_textured(target, colour, ~site_mosaic & usable)
    idx = np.flatnonzero(sel)
    if idx.size > 1.5 * max_sites:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_sites, replace=False))
    yy, xx = np.unravel_index(idx, (h, w))
    col = colour[yy, xx]
    clean_raw = np.where(site_mosaic[yy, xx], ref_exact[yy, xx], target[col, yy, xx]).astype(np.float64)
    clean = gain[col] * clean_raw + offset[col]
    resid = noisy[yy, xx] - clean
    # Intensity label of each site: the reference smoothed over
    # LEVEL_BOX x LEVEL_BOX (3x3 measured best, see LEVEL_BOX).
    # Binning by the site's own (noisy) reference value would select on
    # the reference's noise: within a narrow bin its variance is smaller
    # than the profile says, so subtracting the profile over-corrects (b
    # came out ~10% low at ISO 800 against ISO 100).  fit_pair bins by its
    # ``clean`` argument and fits the variance of ``noisy - clean``, so it
    # is handed (level + residual, level).
    level = np.empty_like(clean)
    for c in range(3):
        sel_c = col == c
        if sel_c.any():
            sm = cv2.blur(np.ascontiguousarray(target[c], dtype=np.float32), (LEVEL_BOX, LEVEL_BOX), borderType=cv2.BORDER_REFLECT)
            level[sel_c] = gain[c] * sm[yy[sel_c], xx[sel_c]] + offset[c]
    keep = (clean < BRIGHT) & (level < BRIGHT)
    clean_profile = ref_profile.white_balanced(gain) if ref_profile is not None else None
    prof = fit_pair((level + resid)[keep][None, :], level[keep][None, :], col[keep][None, :],
                    clean_profile=clean_profile)
    return prof, ["mosaic" if m else "demosaic" for m in use_mosaic]
