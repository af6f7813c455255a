"""Adaptive residual kernels on a CFA mosaic for the blind noise estimate.

A *group* is a set of CFA repeat positions whose neighbourhoods have the
same geometry: the same-colour taps within a radius ("own" taps) and,
optionally, the green taps within a guide radius ("guide" taps, for red and
blue sites).  Its kernel is learned from the image:

- own taps only: the unit-norm kernel annihilating polynomials up to
  ``order`` with the least energy on the image (smallest eigenvector of the
  neighbourhood covariance in the polynomial null space);
- with guide taps: the same, after the guide's best linear prediction of
  the own-tap high-pass has been subtracted (a Schur complement).  Texture
  is shared across colours, so the co-located green high-pass cancels much
  of it; the guide part adds green noise of a known gain ``|k_guide|^2``.

Kernels are *cross-fitted*: blocks form a checkerboard, and the kernel used
on one colour of squares is learned on the other, so that picking the
least-energy direction cannot pull the measured noise down.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kpnt.errors import BlindEstimateError

G = 1


def moment_rows(dy: np.ndarray, dx: np.ndarray, order: int) -> np.ndarray:
    """(M, d) monomials ``dy^i dx^j`` (i + j <= order) at the taps."""
    rows = []
    for total in range(order + 1):
        for i in range(total + 1):
            rows.append(dy.astype(np.float64) ** i * dx.astype(np.float64) ** (total - i))
    return np.array(rows)


def _null_basis(dy, dx, order: int) -> np.ndarray:
    m = moment_rows(dy, dx, order)
    _, _, vt = np.linalg.svd(m)
    return vt[len(m):].T


@dataclass(frozen=True)
class Group:
    """Repeat positions sharing one neighbourhood geometry.

    ``dy, dx``: (d,) tap offsets, own taps first, then guide taps;
    ``n_own``: number of own taps; ``null_own`` (n_own, n_own - M) and
    ``null_guide`` (d - n_own, ...) orthonormal bases of the kernels that
    annihilate polynomials on each part.
    """

    colour: int
    positions: tuple[tuple[int, int], ...]
    dy: np.ndarray
    dx: np.ndarray
    n_own: int
    null_own: np.ndarray
    null_guide: np.ndarray | None


def groups(pattern: np.ndarray, radius: int, order: int, colours=(0, 1, 2), guide_radius: int | None = None) -> list[Group]:
    """Neighbourhood groups of the sites of ``colours`` in the (P, P) CFA
    repeat ``pattern``; green guide taps within ``guide_radius`` for red
    and blue sites if given."""
    p = pattern.shape[0]

    def offsets(r):
        off = np.arange(-r, r + 1)
        return [a.ravel() for a in np.meshgrid(off, off, indexing="ij")]

    gy, gx = offsets(radius)
    by_key: dict[tuple, list] = {}
    for py in range(p):
        for px in range(p):
            c = int(pattern[py, px])
            if c not in colours:
                continue
            own = pattern[(py + gy) % p, (px + gx) % p] == c
            key = (c, tuple(gy[own]), tuple(gx[own]), (), ())
            if guide_radius is not None and c != G:
                hy, hx = offsets(guide_radius)
                gd = pattern[(py + hy) % p, (px + hx) % p] == G
                key = key[:3] + (tuple(hy[gd]), tuple(hx[gd]))
            by_key.setdefault(key, []).append((py, px))
    out = []
    for (c, dy, dx, hy, hx), pos in by_key.items():
        dy, dx, hy, hx = (np.array(a, dtype=np.int64) for a in (dy, dx, hy, hx))
        if len(dy) <= len(moment_rows(dy, dx, order)):
            raise BlindEstimateError(
                f"colour {'RGB'[c]} has too few same-colour neighbours within radius {radius} for an order-{order} residual"
            )
        null_guide = _null_basis(hy, hx, order) if len(hy) > len(moment_rows(hy, hx, order)) else None
        if null_guide is None:
            hy, hx = hy[:0], hx[:0]
        out.append(Group(c, tuple(pos), np.r_[dy, hy], np.r_[dx, hx], len(dy), _null_basis(dy, dx, order), null_guide))
    return out


def _pad_of(grps) -> int:
    return max(int(np.abs(np.concatenate([np.r_[g.dy, g.dx] for g in grps])).max()), 1)


def gather(xp: np.ndarray, vp: np.ndarray, pad: int, shape, p: int, py: int, px: int, g: Group):
    """Neighbourhood vectors (ny, nx, d) of the sites at repeat position
    (py, px) of the padded image ``xp``, and whether all their taps are
    valid in ``vp`` (ny, nx)."""
    h, w = shape
    ny, nx = len(range(py, h, p)), len(range(px, w, p))
    vals, oks = [], []
    for ddy, ddx in zip(g.dy, g.dx):
        y0, x0 = pad + py + ddy, pad + px + ddx
        vals.append(xp[y0 : y0 + p * ny : p, x0 : x0 + p * nx : p])
        oks.append(vp[y0 : y0 + p * ny : p, x0 : x0 + p * nx : p])
    return np.stack(vals, -1), np.logical_and.reduce(oks)


def least_energy_kernel(v: np.ndarray, g: Group, max_guide_gain: float = 0.25) -> np.ndarray:
    """(d,) kernel for sample vectors ``v`` (n, d): own part unit-norm,
    both parts annihilating polynomials, least energy on ``v``; the guide
    part's energy (the multiple of green noise variance it adds) is capped
    at ``max_guide_gain`` so that an error in the green estimate cannot
    dominate the result."""
    z1 = v[:, : g.n_own] @ g.null_own
    z1 = z1 - z1.mean(axis=0)
    cov = z1.T @ z1
    if g.null_guide is None:
        _, vec = np.linalg.eigh(cov)
        return g.null_own @ vec[:, 0]
    z2 = v[:, g.n_own :] @ g.null_guide
    z2 = z2 - z2.mean(axis=0)
    c12 = z1.T @ z2
    c22 = z2.T @ z2
    # Regression of the own high-pass on the guide high-pass; it includes the
    # guide's noise in c22, so it shrinks towards 0 where green is noisy.
    beta = np.linalg.solve(c22 + 1e-12 * np.trace(c22) * np.eye(len(c22)), c12.T)
    _, vec = np.linalg.eigh(cov - c12 @ beta)
    u = vec[:, 0]
    k_guide = -(g.null_guide @ (beta @ u))
    gain = float(k_guide @ k_guide)
    if gain > max_guide_gain:
        k_guide *= np.sqrt(max_guide_gain / gain)
    return np.r_[g.null_own @ u, k_guide]


def learn(x, valid, p: int, grps, half, max_samples: int, rng, max_guide_gain: float = 0.25):
    """Per group, (kernel for half 0, kernel for half 1), each learned on
    the other half (cross-fitting); at most ``max_samples`` vectors each."""
    pad = _pad_of(grps)
    xp, vp = np.pad(x, pad), np.pad(valid, pad)
    kernels = []
    for g in grps:
        samples = [[], []]
        for py, px in g.positions:
            v, ok = gather(xp, vp, pad, x.shape, p, py, px, g)
            hv = half[py::p, px::p]
            for h in (0, 1):
                samples[h].append(v[ok & (hv == h)])
        pair = []
        for h in (1, 0):
            s = np.concatenate(samples[h])
            if len(s) < 4 * len(g.dy):
                raise BlindEstimateError(
                    f"only {len(s)} usable {'RGB'[g.colour]} neighbourhoods: image too small or mostly masked"
                )
            if len(s) > max_samples:
                s = s[rng.choice(len(s), max_samples, replace=False)]
            pair.append(least_energy_kernel(s, g, max_guide_gain))
        kernels.append(tuple(pair))
    return kernels


def residuals(x, valid, p: int, grps, kernels, half):
    """(H, W) residual of every site of the groups' colours under its
    kernel, (H, W) validity, and (H, W) guide gain ``|k_guide|^2`` (the
    multiple of the green noise variance the residual carries)."""
    pad = _pad_of(grps)
    xp, vp = np.pad(x, pad), np.pad(valid, pad)
    res = np.zeros(x.shape)
    ok = np.zeros(x.shape, bool)
    gain = np.zeros(x.shape)
    for g, pair in zip(grps, kernels):
        gains = [float((k[g.n_own :] ** 2).sum()) for k in pair]
        for py, px in g.positions:
            v, okk = gather(xp, vp, pad, x.shape, p, py, px, g)
            hv = half[py::p, px::p]
            res[py::p, px::p] = np.where(hv == 1, v @ pair[1], v @ pair[0])
            ok[py::p, px::p] = okk & valid[py::p, px::p]
            gain[py::p, px::p] = np.where(hv == 1, gains[1], gains[0])
    return res, ok, gain


def checkerboard(shape, block: int) -> np.ndarray:
    """(H, W) 0/1: which half of the block checkerboard a site is in."""
    yy, xx = np.indices(shape)
    return (yy // block + xx // block) % 2
