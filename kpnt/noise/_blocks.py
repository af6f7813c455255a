"""Block statistics and the truncated-mean variance estimate of the blind
noise estimate (steps 2 and 3 in :mod:`kpnt.noise.blind`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kpnt.errors import BlindEstimateError
from kpnt.noise._linefit import fit_lower_line


def _tiles(a: np.ndarray, block: int) -> np.ndarray:
    hb, wb = a.shape[0] // block, a.shape[1] // block
    return a[: hb * block, : wb * block].reshape(hb, block, wb, block)


def block_means(x, ok, colour, c: int, block: int) -> np.ndarray:
    """(H, W): mean of the valid colour-``c`` sites of each site's block
    (NaN where a block has none, or the site lies in the partial blocks at
    the right/bottom edge)."""
    sel = _tiles(ok & (colour == c), block)
    n = sel.sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(sel, _tiles(x, block), 0.0).sum(axis=(1, 3)) / n
    out = np.full(x.shape, np.nan)
    hb, wb = m.shape
    out[: hb * block, : wb * block] = np.repeat(np.repeat(m, block, 0), block, 1)
    return out


def block_stats(x, res, ok, colour, c: int, block: int, offset=None):
    """(mean intensity, mean of ``res^2 - offset``) of colour ``c`` in every
    block with at least 3/4 of its colour-``c`` sites valid; (K,) each."""
    sel = _tiles(ok & (colour == c), block)
    n = sel.sum(axis=(1, 3))
    full = _tiles(colour == c, block).sum(axis=(1, 3))
    e = res**2 if offset is None else res**2 - offset
    s2 = np.where(sel, _tiles(e, block), 0.0).sum(axis=(1, 3))
    m = np.where(sel, _tiles(x, block), 0.0).sum(axis=(1, 3))
    good = (n >= 0.75 * full) & (n >= 2)
    return m[good] / n[good], s2[good] / n[good]


@dataclass(frozen=True)
class PureNoise:
    """The pure-noise distribution D of a block statistic (``s2 / true
    variance`` on white noise), summarised for the truncated mean."""

    cut_level: float     # u: the ``cut`` quantile of D
    trunc_mean: float    # E[D | D <= u]
    median: float        # median of D, for the starting value
    rel_var: float       # n x relative variance of the estimate over n blocks

    @classmethod
    def from_samples(cls, d: np.ndarray, cut: float, seed: int) -> "PureNoise":
        d = np.sort(d)
        u = float(np.quantile(d, cut))
        dist = cls(u, float(d[d <= u].mean()), float(np.median(d)), 0.0)
        # Bootstrap the estimator on bins of n pure-noise blocks: truncation
        # costs efficiency (at a cut of 0.7 about 4x the variance of a plain
        # mean), and the line fit has to weigh the bins accordingly.
        n, reps = 64, 100
        rng = np.random.default_rng(seed + 1)
        est = np.array([truncated_variance(rng.choice(d, n), dist) for _ in range(reps)])
        est = est[np.isfinite(est)]
        return cls(dist.cut_level, dist.trunc_mean, dist.median, float(np.var(est, ddof=1) / np.mean(est) ** 2 * n))


#: A fixed point that keeps fewer than this share of a bin's blocks is not
#: a noise level: at the true level a cut at quantile q keeps q x (the flat
#: share) of the blocks.
MIN_KEPT = 0.15


def truncated_variance(s2: np.ndarray, dist: PureNoise) -> float:
    """Variance ``v`` with ``mean(s2 | s2 <= u v) = v E[D | D <= u]``: the
    mean of all blocks consistent with pure noise of variance ``v``,
    corrected for the truncation; blocks lifted by texture above the cut do
    not count.  NaN where the iteration finds no level that keeps at least
    :data:`MIN_KEPT` of the blocks (their spread is unlike pure noise at any
    level, e.g. a bin of mixed textures)."""
    # v = 0 is always a fixed point too (and an attracting one: D has little
    # mass near 0), so start from above: the median (texture only lifts
    # it) and iterate down to the first fixed point.
    v = float(np.median(s2)) / dist.median
    if not v > 0:
        v = float(np.abs(s2).mean()) / dist.trunc_mean + 1e-30
    least = max(3, int(np.ceil(MIN_KEPT * len(s2))))
    for _ in range(100):
        sel = s2[s2 <= dist.cut_level * v]
        if len(sel) < least:
            return float("nan")
        new = float(sel.mean()) / dist.trunc_mean
        if abs(new - v) <= 1e-5 * abs(v):
            return new
        v = new
    return v


def _bins_once(m, s2, dist: PureNoise, max_bins: int, min_per_bin: int, line=None):
    nb = min(max_bins, len(m) // min_per_bin)
    order = np.argsort(m, kind="stable")
    xs, vs, dofs = [], [], []
    for idx in np.array_split(order, nb):
        xb = max(float(m[idx].mean()), 0.0)
        s2b = s2[idx]
        if line is not None:
            a, b = line
            vb = a * np.maximum(m[idx], 0.0) + b
            if (vb > 0).all():
                s2b = s2b * ((a * xb + b) / vb)
        xs.append(xb)
        vs.append(truncated_variance(s2b, dist))
        dofs.append(2.0 * len(idx) / dist.rel_var)
    xs, vs, dofs = np.array(xs), np.array(vs), np.array(dofs)
    keep = np.isfinite(vs)
    return xs[keep], vs[keep], dofs[keep]


def intensity_bins(m, s2, dist: PureNoise, colour: int, max_bins: int, min_per_bin: int):
    """(xs, vs, dofs) per intensity bin of one colour's blocks.

    Two passes: within a bin the variance still grows with intensity, and a
    truncation at one level cuts the brighter blocks more often (a few %
    low); the second pass first rescales each block's statistic to the
    bin's mean intensity with the first pass's line.
    """
    if len(m) // min_per_bin < 2:
        raise BlindEstimateError(
            f"only {len(m)} usable {'RGB'[colour]} blocks (need {2 * min_per_bin}): the image is too small or mostly masked"
        )
    first = _bins_once(m, s2, dist, max_bins, min_per_bin)
    if len(first[0]) < 2:
        raise BlindEstimateError(f"no {'RGB'[colour]} intensity level looks like pure noise (texture everywhere?)")
    second = _bins_once(m, s2, dist, max_bins, min_per_bin, fit_lower_line(*first))
    return second if len(second[0]) >= 2 else first
