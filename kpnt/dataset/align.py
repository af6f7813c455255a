"""Global translation between a high-ISO frame and its reference.

Convention (the one of :mod:`kpnt.synth.scene`): a shift ``(dy, dx)`` means
``noisy[y, x]`` shows the scene point that ``reference[y + dy, x + dx]``
shows.

1. Coarse: normalised cross-correlation of the two colour bases' log
   luminance, band-passed and shrunk to at most :data:`COARSE_SIZE`
   pixels, over shifts up to a quarter of the frame; median over a grid of
   tiles (a moving object spoils the tiles it covers, not the median).
   The same band-passed correlation at the final shift tells whether the
   frames show the same scene at all (:data:`MIN_NCC`).
2. Fine, at full resolution: both frames demosaiced alike (bilinear, on a
   central region) and compared at every pixel and channel for every
   integer shift near the coarse one, after a per-channel least-squares
   gain, block by block, leaving out blocks that no shift explains
   (moving); see :func:`_block_scores` for why this, and not photosites
   against the LibRaw target, is unbiased at any shift, on or off the CFA
   lattice.
3. Snap: the nearest shift at which the reference's CFA lands on the
   noisy frame's (a multiple of the period; for X-Trans also (3, 3)-type
   offsets, a symmetry of its pattern), so that photosite colours line up.

The exact integer shift is what the full-RGB target is cropped by; the
snapped one is what the reference *mosaic* is cropped by.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kpnt.dataset.blocks import colour_map
from kpnt.dataset.scan import colour_base
from kpnt.errors import DatasetError
from kpnt.mosaic import CFA

#: Longest side of the images the coarse correlation runs on.
COARSE_SIZE = 1024
#: Side of the central region the fine search scores (photosites).
FINE_SIZE = 1536
#: Below this band-passed correlation (at the shift found) the frames are not
#: the same scene, or barely overlap: the pair is rejected.  Measured: pairs
#: of one scene (ISO 100 against 800-12800, BSDS500 photos and the sample
#: photo) >= 0.89; frames of different photos <= 0.13.
MIN_NCC = 0.4


@dataclass
class Alignment:
    """Result of :func:`estimate_shift`.

    Attributes:
        shift: (dy, dx) exact integer photosite shift.
        snapped: (dy, dx) nearest shift on the CFA's translation lattice.
        ncc: peak normalised cross-correlation of the fine search.
    """

    shift: tuple[int, int]
    snapped: tuple[int, int]
    ncc: float


def _coarse_image(mosaic: np.ndarray, cfa: CFA, wb) -> tuple[np.ndarray, float]:
    """Band-passed log luminance of the colour base, shrunk to at most
    COARSE_SIZE a side; and photosites per pixel.

    Log: an exposure difference becomes a constant, which the band-pass
    removes.  Band-pass (difference of Gaussians, sigma 1 and 6 pixels):
    the fine end averages noise down, the coarse end removes brightness
    ramps and shading, which otherwise make the correlation peak a broad
    ridge that noise or a moving object can slide along.
    """
    base = colour_base(mosaic, cfa) * np.asarray(wb, dtype=np.float32)
    lum = base.mean(axis=2)
    scale = float(cfa.block)
    h, w = lum.shape
    f = COARSE_SIZE / max(h, w)
    if f < 1:
        lum = cv2.resize(lum, (max(8, round(w * f)), max(8, round(h * f))), interpolation=cv2.INTER_AREA)
        scale = scale * w / lum.shape[1]
    floor = max(float(np.percentile(lum, 50)) * 0.02, 1e-6)
    lg = np.log(np.maximum(lum, floor)).astype(np.float32)
    return cv2.GaussianBlur(lg, (0, 0), 1.0) - cv2.GaussianBlur(lg, (0, 0), 6.0), scale


def coarse_shift(cn: np.ndarray, cr: np.ndarray, fraction: float, grid: int = 3) -> tuple[float, float, float]:
    """Shift (in coarse pixels) of ``cn`` against ``cr``, up to ``fraction``
    of each side, by normalised cross-correlation; and its peak value.

    The central part of ``cn`` is cut into ``grid`` x ``grid`` tiles, each
    correlated with ``cr`` over every shift; the median of the tiles'
    surfaces decides, so that a textured moving object (which correlates
    with itself at its own displacement) cannot win.  (Phase correlation,
    tried first, locked onto noise on low-texture ISO 12800 frames in 4 of
    12 synthetic pairs: it whitens noise where correlation averages it.)
    """
    h, w = cn.shape
    my, mx = max(1, int(fraction * h)), max(1, int(fraction * w))
    g = grid if min(h - 2 * my, w - 2 * mx) >= 8 * grid else 1
    ys = np.linspace(my, h - my, g + 1).astype(int)
    xs = np.linspace(mx, w - mx, g + 1).astype(int)
    surfaces = []
    for i in range(g):
        for j in range(g):
            tmpl = np.ascontiguousarray(cn[ys[i]:ys[i + 1], xs[j]:xs[j + 1]])
            search = np.ascontiguousarray(cr[ys[i] - my: ys[i + 1] + my, xs[j] - mx: xs[j + 1] + mx])
            if tmpl.std() > 0 and search.std() > 0:
                surfaces.append(cv2.matchTemplate(search, tmpl, cv2.TM_CCOEFF_NORMED))
    if not surfaces:
        raise DatasetError("a frame is flat (no image content): cannot align it")
    score = np.median(np.stack(surfaces), axis=0)
    iy, ix = np.unravel_index(int(np.argmax(score)), score.shape)
    return iy + _parabola(score[:, ix], iy) - my, ix + _parabola(score[iy, :], ix) - mx, float(score[iy, ix])


def _parabola(v: np.ndarray, i: int) -> float:
    """Sub-sample offset of the extremum of the parabola through v[i-1..i+1]."""
    if i <= 0 or i >= len(v) - 1:
        return 0.0
    den = v[i - 1] - 2 * v[i] + v[i + 1]
    return float(0.5 * (v[i - 1] - v[i + 1]) / den) if den != 0 else 0.0


def _coarse_ncc(cn: np.ndarray, cr: np.ndarray, sy: float, sx: float, grid: int = 3) -> float:
    """Median over a grid of tiles of the correlation of ``cn[y]`` and
    ``cr[y + s]`` on their overlap (``s`` rounded to whole coarse pixels)."""
    iy, ix = int(round(sy)), int(round(sx))
    h, w = cn.shape
    a = cn[max(0, -iy): h - max(0, iy), max(0, -ix): w - max(0, ix)]
    b = cr[max(0, iy): h - max(0, -iy), max(0, ix): w - max(0, -ix)]
    r = median_tile_correlation(a, b, grid if min(a.shape) >= 8 * grid else 1, min_samples=16)
    return 0.0 if r is None else r


def median_tile_correlation(a: np.ndarray, b: np.ndarray, grid: int, min_samples: int) -> float | None:
    """Median over a ``grid`` x ``grid`` split of two arrays of one shape
    ((H, W) or (H, W, C)) of the correlation coefficient of each tile's
    values; tiles of fewer than ``min_samples`` values or constant ones do
    not count (None if none counts).  The median ignores the tiles a moving
    object changed."""
    ys = np.linspace(0, a.shape[0], grid + 1).astype(int)
    xs = np.linspace(0, a.shape[1], grid + 1).astype(int)
    vals = []
    for i in range(grid):
        for j in range(grid):
            u = a[ys[i]:ys[i + 1], xs[j]:xs[j + 1]].ravel()
            v = b[ys[i]:ys[i + 1], xs[j]:xs[j + 1]].ravel()
            if u.size >= min_samples and u.std() > 0 and v.std() > 0:
                vals.append(float(np.corrcoef(u, v)[0, 1]))
    return float(np.median(vals)) if vals else None


def lattice_shifts(cfa: CFA) -> list[tuple[int, int]]:
    """Shifts (sy, sx) in [0, P)^2 that leave the pattern unchanged."""
    p = cfa.period
    return [(sy, sx) for sy in range(p) for sx in range(p) if cfa.crop(sy, sx) == cfa]


def snap_shift(shift: tuple[int, int], cfa: CFA) -> tuple[int, int]:
    """Nearest shift to ``shift`` on the CFA's translation lattice (ties go
    to the smaller magnitude, then to the smaller dy, dx)."""
    p = cfa.period
    dy, dx = shift
    best = None
    for sy, sx in lattice_shifts(cfa):
        for ky in (-1, 0, 1):
            for kx in (-1, 0, 1):
                cy = dy - (dy - sy) % p + ky * p
                cx = dx - (dx - sx) % p + kx * p
                key = ((cy - dy) ** 2 + (cx - dx) ** 2, abs(cy) + abs(cx), cy, cx)
                if best is None or key < best[0]:
                    best = (key, (cy, cx))
    return best[1]


def _region(h: int, w: int, cy: int, cx: int, margin: int) -> tuple[int, int, int, int]:
    """Central region of the noisy frame that stays inside the reference
    for every shift within ``margin`` of (cy, cx), at most FINE_SIZE a side."""
    ty0, ty1 = max(margin, margin - cy), min(h - margin, h - margin - cy)
    tx0, tx1 = max(margin, margin - cx), min(w - margin, w - margin - cx)
    if ty1 - ty0 < 16 or tx1 - tx0 < 16:
        raise DatasetError(f"frames overlap by too little to align ({h}x{w}, shift ({cy}, {cx}))")
    if ty1 - ty0 > FINE_SIZE:
        c = (ty0 + ty1) // 2
        ty0, ty1 = c - FINE_SIZE // 2, c + FINE_SIZE // 2
    if tx1 - tx0 > FINE_SIZE:
        c = (tx0 + tx1) // 2
        tx0, tx1 = c - FINE_SIZE // 2, c + FINE_SIZE // 2
    return ty0, ty1, tx0, tx1


def bilinear(mosaic: np.ndarray, cfa: CFA) -> np.ndarray:
    """(H, W) mosaic -> (3, H, W) float32 by normalised convolution of each
    colour's photosites (3x3 tent for Bayer, 5x5 for X-Trans, whose sparser
    colours need the reach).  Cheap, and linear: used to compare frames
    whose CFA phases differ, not as a target."""
    h, w = mosaic.shape
    colours = colour_map(cfa, h, w)
    r = cfa.sensor_kind.preview_radius
    k1 = np.array([*range(1, r + 2), *range(r, 0, -1)], np.float32)      # tent: 1 2 1, 1 2 3 2 1
    x = mosaic.astype(np.float32)
    out = np.empty((3, h, w), np.float32)
    for c in range(3):
        m = (colours == c).astype(np.float32)
        num = cv2.sepFilter2D(x * m, -1, k1, k1, borderType=cv2.BORDER_REFLECT)
        den = cv2.sepFilter2D(m, -1, k1, k1, borderType=cv2.BORDER_REFLECT)
        out[c] = num / np.maximum(den, 1e-6)
    return out


def _block_scores(nrgb, rrgb, margin, weight, centre, half, block) -> tuple[np.ndarray, np.ndarray]:
    """Robust score of every shift within ``half`` of ``centre``.

    Args:
        nrgb: (3, h, w) noisy region, bilinear (h, w multiples of ``block``).
        rrgb: (3, h + 2M, w + 2M) reference region, bilinear, whose
            (M, M) is the noisy region's (0, 0) at shift 0 (M = ``margin``).
        weight: (h, w) 0 where the noisy frame is saturated.
        centre: (dy, dx) shift at the middle of the window.
        half: the window holds shifts centre +- half.
        block: block side, a multiple of the CFA period.

    Both frames are demosaiced the same way and compared at every pixel in
    every channel.  So the noise in the comparison does not depend on the
    candidate: summed over a window of whole CFA periods every photosite
    phase counts alike, whereas comparing photosites with a demosaiced
    reference favours shifts where the reference is interpolated (less
    noisy) over shifts where it is measured, which on weak texture wins
    over the true shift.

    Each candidate gets its own per-channel gain (least squares): with one
    gain for all, a gain error on a brightness ramp would be "fixed" by a
    shift along the ramp.  Blocks are weighted by 1 / their brightness
    (shot noise).  Blocks that no candidate explains (smallest residual
    above 3x the median block's: a moving object, content the reference
    lacks) and their neighbours within 2 blocks are left out of every
    candidate's score alike: at the edge of a moving object some candidate
    slides the object out of a block, which would otherwise pull the
    optimum towards it.

    Returns:
        (score (2h+1, 2h+1) weighted residual mean square over the kept
         blocks, kept (hb, wb) bool).
    """
    _, h, w = nrgb.shape
    hb, wb = h // block, w // block
    cy, cx = centre
    k_all = (2 * half + 1) ** 2

    def bsum(a):
        return a.reshape(*a.shape[:-2], hb, block, wb, block).sum(axis=(-3, -1))

    lum = nrgb.mean(axis=0)
    bright = bsum(weight * np.maximum(lum, 0)) / np.maximum(bsum(weight), 1.0)
    floor = max(0.05 * float(np.median(bright)), 1e-4)
    wt = (weight * np.repeat(np.repeat((1.0 / (bright + floor)).astype(np.float32), block, 0), block, 1)).astype(np.float32)
    nn = bsum(wt * nrgb * nrgb)                                       # (3, hb, wb)
    nt = np.empty((k_all, 3, hb, wb), np.float32)
    tt = np.empty((k_all, 3, hb, wb), np.float32)
    k = 0
    for dy in range(cy - half, cy + half + 1):
        for dx in range(cx - half, cx + half + 1):
            t = rrgb[:, margin + dy: margin + dy + h, margin + dx: margin + dx + w]
            wtt = wt * t
            nt[k] = bsum(wtt * nrgb)
            tt[k] = bsum(wtt * t)
            k += 1
    wsum = bsum(wt)
    full = bsum((weight > 0).astype(np.float32)) > 0.5 * block * block
    if not full.any():
        raise DatasetError("no unsaturated part of the frames to align on")

    def gains(sel):
        a = nt[:, :, sel].sum(axis=2).astype(np.float64)
        b = np.maximum(tt[:, :, sel].sum(axis=2).astype(np.float64), 1e-30)
        return a, b

    a, b = gains(full)
    g = a / b
    if not (np.isfinite(g).all() and (g > 0).all()):
        raise DatasetError("the frames are black in a colour: cannot align them")
    per = (nn[None] - 2 * g[:, :, None, None] * nt + (g * g)[:, :, None, None] * tt).sum(axis=1) / np.maximum(wsum, 1e-12)
    best = per.min(axis=0)
    unexplained = (best > 3.0 * float(np.median(best[full]))).astype(np.uint8)
    unexplained = cv2.dilate(unexplained, np.ones((5, 5), np.uint8)).astype(bool)
    kept = full & ~unexplained
    if not kept.any():
        raise DatasetError("no part of the frames agrees at any shift: not the same scene")
    a, b = gains(kept)
    score = float(nn[:, kept].sum()) - (a * a / b).sum(axis=1)
    return (score / float(wsum[kept].sum())).reshape(2 * half + 1, 2 * half + 1), kept


def estimate_shift(noisy: np.ndarray, reference: np.ndarray, cfa: CFA, wb,
                   max_shift_fraction: float = 0.25) -> Alignment:
    """Translation of ``noisy`` against ``reference`` (same camera/CFA).

    Args:
        noisy, reference: (H, W) normalised mosaics of one size.
        cfa: their (common) layout.
        wb: (3,) white-balance gains (for the coarse luminance).
        max_shift_fraction: shifts beyond this fraction of the shorter side
            are an error (the frames barely overlap).
    Returns:
        :class:`Alignment`.
    Raises:
        DatasetError: the frames do not match (correlation of their
            band-passed coarse luminance below :data:`MIN_NCC` at the shift
            found), overlap too little, or are not a plain translation apart.
    """
    if noisy.shape != reference.shape:
        raise DatasetError(f"frames of different sizes {noisy.shape} and {reference.shape} cannot be aligned")
    h, w = noisy.shape
    cn, scale = _coarse_image(noisy, cfa, wb)
    cr, _ = _coarse_image(reference, cfa, wb)
    sy, sx, _peak = coarse_shift(cn, cr, max_shift_fraction)
    # The template at noisy pixel p matched the reference at p + s:
    # noisy[y] ~ reference[y + s].
    cy, cx = int(round(sy * scale)), int(round(sx * scale))
    radius = int(np.ceil(scale)) + 4
    half = 2
    margin = radius + half + 2
    block = cfa.sensor_kind.align_tile
    ty0, ty1, tx0, tx1 = _region(h, w, cy, cx, margin + cfa.period)
    ty1 = ty0 + (ty1 - ty0) // block * block
    tx1 = tx0 + (tx1 - tx0) // block * block
    if ty1 <= ty0 or tx1 <= tx0:
        raise DatasetError(f"frames overlap by too little to align ({h}x{w}, shift ({cy}, {cx}))")

    # Fine: the shift at which the two frames, demosaiced alike, agree best,
    # searched in a 5x5 window that moves until the optimum is inside it.
    nrgb = bilinear(noisy[ty0:ty1, tx0:tx1], cfa.crop(ty0, tx0))
    ry0, rx0 = ty0 + cy - margin, tx0 + cx - margin
    rrgb = bilinear(reference[ry0: ty1 + cy + margin, rx0: tx1 + cx + margin], cfa.crop(ry0, rx0))
    weight = (noisy[ty0:ty1, tx0:tx1] < 1.0).astype(np.float32)
    centre = (0, 0)                                                # relative to (cy, cx)
    for _ in range(2 * radius):
        score, _kept = _block_scores(nrgb, rrgb, margin, weight, centre, half, block)
        iy, ix = np.unravel_index(int(np.argmin(score)), score.shape)
        if 0 < iy < 2 * half and 0 < ix < 2 * half:
            break
        centre = (centre[0] + int(iy) - half, centre[1] + int(ix) - half)   # optimum on the window's edge: move
        if abs(centre[0]) > radius or abs(centre[1]) > radius:
            raise DatasetError("alignment optimum far from the coarse estimate: the frames may not be a plain "
                               "translation apart")
    else:
        raise DatasetError("alignment did not settle: the frames may not be a plain translation apart")
    dy, dx = cy + centre[0] - half + int(iy), cx + centre[1] - half + int(ix)

    # Quality: band-passed correlation of the two frames at that shift
    # (median over tiles, as the coarse search).
    ncc = _coarse_ncc(cn, cr, dy / scale, dx / scale)
    if ncc < MIN_NCC:
        raise DatasetError(f"frames do not match (band-pass correlation {ncc:.2f} < {MIN_NCC} at the best shift): "
                           "not the same scene, or moved too much")
    return Alignment(shift=(dy, dx), snapped=snap_shift((dy, dx), cfa), ncc=ncc)


@dataclass
class Crops:
    """Regions of one pair, each ``(y0, x0, y1, x1)`` end-exclusive, all of
    the same size: ``noisy`` (offsets multiples of the CFA period, so its
    CFA is the camera's), ``target`` (the reference at the exact shift) and
    ``reference`` (the reference at the snapped shift)."""

    noisy: tuple[int, int, int, int]
    target: tuple[int, int, int, int]
    reference: tuple[int, int, int, int]

    @property
    def shape(self) -> tuple[int, int]:
        y0, x0, y1, x1 = self.noisy
        return (y1 - y0, x1 - x0)


def overlap_crops(shape: tuple[int, int], align: Alignment, period: int, border: int) -> Crops:
    """Crops of the overlap of a pair.

    Args:
        shape: (H, W) of both frames.
        align: the shifts.
        period: CFA period (crop sizes and noisy offsets are multiples).
        border: photosites at the reference's edges left out (the demosaic
            is unreliable there).
    """
    h, w = shape
    (dy, dx), (sy, sx) = align.shift, align.snapped

    def span(n, d, s):
        lo = max(0, border - d, border - s)
        lo = -(-lo // period) * period
        hi = min(n, n - border - d, n - border - s)
        hi = lo + max(0, (hi - lo) // period * period)
        return lo, hi

    y0, y1 = span(h, dy, sy)
    x0, x1 = span(w, dx, sx)
    if y1 - y0 < 4 * period or x1 - x0 < 4 * period:
        raise DatasetError(f"the overlap of the pair is too small ({y1 - y0}x{x1 - x0} photosites)")
    return Crops(noisy=(y0, x0, y1, x1), target=(y0 + dy, x0 + dx, y1 + dy, x1 + dx),
                 reference=(y0 + sy, x0 + sx, y1 + sy, x1 + sx))
