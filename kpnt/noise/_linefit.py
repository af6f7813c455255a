"""Weighted line fits ``v = a x + b`` with ``a, b >= 0`` through per-bin
variance estimates, shared by the pair fit and the blind estimate."""
from __future__ import annotations

import numpy as np


def _wls(x: np.ndarray, v: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted least squares under a >= 0, b >= 0 (KKT: the unconstrained
    optimum, else the best one-parameter fit on a boundary)."""
    sw, sx, sv = w.sum(), (w * x).sum(), (w * v).sum()
    sxx, sxv = (w * x * x).sum(), (w * x * v).sum()
    det = sw * sxx - sx * sx
    if det > 1e-12 * sw * sxx:
        a = (sw * sxv - sx * sv) / det
        b = (sxx * sv - sx * sxv) / det
        if a >= 0 and b >= 0:
            return float(a), float(b)
    cands = [(0.0, max(sv / sw, 0.0))]
    if sxx > 0:
        cands.append((max(sxv / sxx, 0.0), 0.0))
    cost = [float((w * (v - a * x - b) ** 2).sum()) for a, b in cands]
    return cands[int(np.argmin(cost))]


def _pair_lines(x: np.ndarray, v: np.ndarray):
    """Lines through every pair of bins, plus the two one-parameter
    families' members through each bin (a = 0 or b = 0), all with a, b >= 0."""
    out = []
    for i in range(len(x)):
        out.append((0.0, float(v[i])))
        if x[i] > 0:
            out.append((float(v[i] / x[i]), 0.0))
        for j in range(i + 1, len(x)):
            if x[j] != x[i]:
                a = (v[j] - v[i]) / (x[j] - x[i])
                b = v[i] - a * x[i]
                if a >= 0 and b >= 0:
                    out.append((float(a), float(b)))
    return out


def _quantile_line(x: np.ndarray, v: np.ndarray, q: float) -> tuple[float, float]:
    """Line minimising the pinball loss at quantile ``q`` of the relative
    residuals ``(v - line) / v``.  The loss is piecewise linear and convex in
    (a, b), so its minimum lies on a line through two bins (or a boundary
    line through one): enumerating those is exact."""
    best, best_cost = (0.0, float(np.median(v))), np.inf
    scale = np.maximum(np.abs(v), 1e-30)
    for a, b in _pair_lines(x, v):
        r = (v - a * x - b) / scale
        cost = float(np.sum(np.where(r >= 0, q * r, (q - 1) * r)))
        if cost < best_cost:
            best, best_cost = (a, b), cost
    return best


def _reweighted(x: np.ndarray, v: np.ndarray, line: tuple[float, float], weights, iters: int) -> tuple[float, float]:
    """Iteratively reweighted :func:`_wls` from ``line`` = (a, b): each round
    ``weights(vhat)`` gives the weights of the next fit from the current
    line ``vhat`` (floored at 1e-3 of the median |v|, so that a line near 0
    cannot blow the weights up), or None to stop; at most ``iters`` rounds,
    fewer once a and b move by less than 1e-6 (relative)."""
    a, b = line
    floor = 1e-3 * max(float(np.median(np.abs(v))), 1e-30)
    for _ in range(iters):
        w = weights(np.maximum(a * x + b, floor))
        if w is None:
            break
        a_new, b_new = _wls(x, v, w)
        done = abs(a_new - a) <= 1e-6 * max(a, 1e-30) and abs(b_new - b) <= 1e-6 * max(b, 1e-30)
        a, b = a_new, b_new
        if done:
            break
    return a, b


def fit_variance_line(x, v, dof, robust: bool = True, iters: int = 10) -> tuple[float, float]:
    """Fit ``v ~ a x + b`` to per-bin variance estimates with symmetric errors.

    A variance estimate with ``dof`` degrees of freedom has relative variance
    ``2 / dof``; the weights are ``dof / (2 vhat^2)`` with ``vhat`` the
    current line (iteratively reweighted).  With ``robust``, bins far off the
    line (beyond ~4.7 sampling sigmas) are down-weighted by Tukey's biweight.

    Args:
        x: (K,) bin intensities.
        v: (K,) bin variance estimates.
        dof: (K,) effective degrees of freedom behind each estimate.
    Returns:
        (a, b), both >= 0.
    """
    x = np.asarray(x, np.float64)
    v = np.asarray(v, np.float64)
    rel = 2.0 / np.asarray(dof, np.float64)

    def weights(vhat: np.ndarray) -> np.ndarray:
        w = 1.0 / (vhat**2 * rel)
        if robust:
            u = (v / vhat - 1.0) / (4.685 * np.sqrt(rel))
            bw = np.where(np.abs(u) < 1, (1 - u**2) ** 2, 0.0)
            if (bw > 0).sum() >= 2:
                w = w * bw
        return w

    return _reweighted(x, v, _wls(x, v, 1.0 / (np.maximum(np.abs(v), 1e-30) ** 2 * rel)), weights, iters)


def fit_lower_line(x, v, dof, start_quantile: float = 0.3, iters: int = 20) -> tuple[float, float]:
    """Fit ``v ~ a x + b`` to estimates that can only err *upward* beyond
    their sampling noise (blind estimates: texture adds variance, nothing
    removes it).

    Start from a low-quantile line (``start_quantile`` of the relative
    residuals, so that a run of lifted bins cannot carry it), then
    reweight: bins within 2 sampling sigmas above or 4 below the line count
    fully (weights ``dof / (2 vhat^2)``, as for symmetric errors, so that
    pure noise gives the unbiased least-squares line); bins further above
    fade out by a biweight and are ignored beyond 5 sigmas, bins further
    below (gross failures) beyond 8.

    Args:
        x, v, dof: (K,) bin intensities, variance estimates and effective
            degrees of freedom.
    Returns:
        (a, b), both >= 0.
    """
    x = np.asarray(x, np.float64)
    v = np.asarray(v, np.float64)
    rel = 2.0 / np.asarray(dof, np.float64)

    def weights(vhat: np.ndarray) -> np.ndarray | None:
        z = (v / vhat - 1.0) / np.sqrt(rel)
        u = np.where(z > 0, np.clip((z - 2.0) / 3.0, 0.0, None), np.clip((-z - 4.0) / 4.0, 0.0, None))
        w = np.where(u < 1, (1 - u**2) ** 2, 0.0) / (vhat**2 * rel)
        return w if (w > 0).sum() >= 2 else None     # too few bins left to fit a line: keep the last one

    return _reweighted(x, v, _quantile_line(x, v, start_quantile), weights, iters)
