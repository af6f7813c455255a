"""Reflect padding that never runs out of image and keeps the CFA phase.

Two uses:

* :func:`reflect_pad` pads the last two dims of any tensor by mirroring about
  the edge samples (the edge is not repeated, as ``F.pad(mode='reflect')``),
  but folds again and again, so it works for pads larger than the image
  (the coarse pyramid levels of a small tile are 1 or 2 pixels wide).
* :func:`pad_mosaic` pads a mosaic so that every padded photosite carries the
  colour the CFA says it has there: it mirrors about the row/column nearest
  to each edge about which the CFA repeat is itself symmetric (every row and
  column for Bayer, two in six for X-Trans), so the padded image is a valid
  mosaic of ``cfa.crop(-top, -left)``.

Padding is pure indexing (one ``index_select`` per axis): differentiable and
the same on every backend.
"""
from __future__ import annotations


import numpy as np
import torch

from kpnt.mosaic.cfa import CFA
from kpnt.ref._cache import tensor_cache


def fold_indices(n: int, before: int, after: int, lo: int = 0, hi: int | None = None) -> np.ndarray:
    """Source index in ``[0, n)`` for padded positions ``-before .. n+after-1``.

    Positions inside the image map to themselves; outside, they are mirrored
    about sample ``lo`` (left) or ``hi`` (right), folding back and forth
    between the two as often as needed.  With ``lo == hi`` every padded
    position maps to ``lo``.

    Returns:
        (before + n + after,) int64 array.
    """
    hi = n - 1 if hi is None else hi
    if not (0 <= lo <= hi < n):
        raise ValueError(f"fold axes must satisfy 0 <= lo <= hi < n, got lo={lo} hi={hi} n={n}")
    pos = np.arange(-before, n + after, dtype=np.int64)
    if hi == lo:
        folded = np.full_like(pos, lo)
    else:
        period = 2 * (hi - lo)
        r = (pos - lo) % period
        folded = lo + np.where(r <= hi - lo, r, period - r)
    inside = (pos >= 0) & (pos < n)
    return np.where(inside, pos, folded)


@tensor_cache(256)
def _fold_tensor(n: int, before: int, after: int, lo: int, hi: int, device: str) -> torch.Tensor:
    return torch.from_numpy(fold_indices(n, before, after, lo, hi)).to(device)


def _pad_axes(x: torch.Tensor, rows: tuple, cols: tuple) -> torch.Tensor:
    """rows/cols = (before, after, lo, hi); index the last two dims."""
    H, W = x.shape[-2:]
    dev = str(x.device)
    if rows[0] or rows[1]:
        x = x.index_select(-2, _fold_tensor(H, rows[0], rows[1], rows[2], rows[3], dev))
    if cols[0] or cols[1]:
        x = x.index_select(-1, _fold_tensor(W, cols[0], cols[1], cols[2], cols[3], dev))
    return x


def reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Mirror-pad the last two dims (edge sample not repeated), any amount.

    Args:
        x: (..., H, W) tensor.
    Returns:
        (..., H + top + bottom, W + left + right) tensor.
    """
    H, W = x.shape[-2:]
    return _pad_axes(x, (top, bottom, 0, H - 1), (left, right, 0, W - 1))


def cfa_axes(cfa: CFA, axis: int) -> list[int]:
    """Positions ``a`` in ``[0, period)`` such that the repeat is symmetric
    under mirroring about row (``axis=0``) or column (``axis=1``) ``a``."""
    pat = cfa.pattern if axis == 0 else cfa.pattern.T
    p = cfa.period
    idx = np.arange(p)
    return [a for a in range(p) if np.array_equal(pat[(2 * a - idx) % p], pat)]


def _mirror_limits(cfa: CFA, axis: int, n: int) -> tuple[int, int]:
    axes = cfa_axes(cfa, axis)
    if not axes:
        raise ValueError(f"CFA {cfa.name} has no mirror axis along dim {axis}: cannot pad it consistently")
    lo = min(a for a in range(n) if a % cfa.period in axes)
    hi = max(a for a in range(n) if a % cfa.period in axes)
    if hi <= lo:
        raise ValueError(f"mosaic of {n} photosites along dim {axis} is too small to pad ({cfa.kind} needs {2 * cfa.period})")
    return lo, hi


def pad_mosaic(x: torch.Tensor, cfa: CFA, top: int, bottom: int, left: int, right: int) -> tuple[torch.Tensor, CFA]:
    """Pad a mosaic so that the padded photosites keep the CFA's colours.

    Args:
        x: (N, 1, H, W) mosaic whose photosite (0, 0) has colour
            ``cfa.pattern[0, 0]``.
    Returns:
        ``(xp, cfa_p)``: xp (N, 1, H+top+bottom, W+left+right) and the CFA of
        the padded image, ``cfa.crop(-top, -left)``.
    """
    H, W = x.shape[-2:]
    lo_y, hi_y = _mirror_limits(cfa, 0, H)
    lo_x, hi_x = _mirror_limits(cfa, 1, W)
    xp = _pad_axes(x, (top, bottom, lo_y, hi_y), (left, right, lo_x, hi_x))
    return xp, cfa.crop(-top, -left)


def mosaic_pads(n: int, block_offset: int, block: int, multiple: int, margin: int) -> tuple[int, int]:
    """Pad amounts (before, after) along one axis of a mosaic.

    ``before`` is the smallest pad >= ``margin`` that puts a block boundary
    at the padded origin (``(block_offset + before) % block == 0``), and
    ``after`` >= ``margin`` makes the padded length a multiple of ``multiple``.
    """
    before = margin + (-(block_offset + margin)) % block
    total = -(-(n + before + margin) // multiple) * multiple
    return before, total - n - before
