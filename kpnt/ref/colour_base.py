"""The colour base ``C0``: per CFA block, the mean of each colour's sites.

Bayer blocks are 2x2 (1 R, 2 G, 1 B); X-Trans blocks are the 3x3 blocks
whose corners and centre are green (5 G, 2 R, 2 B), ``cfa.block_phase``.
The caller aligns the mosaic so that blocks start at photosite (0, 0)
(``kpnt.model`` pads it so): that keeps this op a plain reshape + matmul.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from kpnt.mosaic.cfa import CFA
from kpnt.ref._cache import tensor_cache


@lru_cache(maxsize=64)
def _block_weights(pattern_bytes: bytes, period: int) -> np.ndarray:
    cfa = CFA(np.frombuffer(pattern_bytes, dtype=np.int64).reshape(period, period))
    b = cfa.block
    r = period // b                     # block types per repeat and axis (1 Bayer, 2 X-Trans)
    w = np.zeros((r, r, b * b, 3))
    for ty in range(r):
        for tx in range(r):
            blk = cfa.pattern[ty * b:(ty + 1) * b, tx * b:(tx + 1) * b].reshape(-1)
            for c in range(3):
                w[ty, tx, blk == c, c] = 1.0 / (blk == c).sum()
    return w


def block_weights(cfa: CFA) -> np.ndarray:
    """(r, r, b*b, 3) averaging weights, r = period / block: the block at
    block index (by, bx) uses ``w[by % r, bx % r]``, and
    ``C0[c] = sum_j w[.., j, c] x[block site j]`` (sites in raster order).
    X-Trans needs r = 2: its four 3x3 blocks place red and blue differently."""
    return _block_weights(cfa.pattern.tobytes(), cfa.period)


def colour_base(x: torch.Tensor, cfa: CFA) -> torch.Tensor:
    """Average each colour within each CFA block.

    Args:
        x: (N, 1, H, W) mosaic; H, W multiples of ``cfa.block`` and
            ``cfa.block_phase == (0, 0)``.
        cfa: layout of ``x`` (``cfa.pattern[0, 0]`` is the colour of x[..., 0, 0]).
    Returns:
        (N, 3, H/b, W/b).

    Without autograd (inference) the same weighted sums are taken over
    strided views (:func:`_colour_base_strided`), without the cached
    per-pixel weight map (12 floats per photosite, kept per image size).
    """
    if not torch.is_grad_enabled():
        return _colour_base_strided(x, cfa)
    N, _, H, W = x.shape
    b = cfa.block
    h, w = H // b, W // b
    # (N, h, b, w, b) -> (N, h, w, b*b): one row of block sites per base pixel.
    blocks = x.reshape(N, h, b, w, b).permute(0, 1, 3, 2, 4).reshape(N, h, w, b * b)
    wts = _weight_map(cfa.pattern.tobytes(), cfa.period, h, w, x.dtype, str(x.device))
    return torch.einsum("nhwj,hwjc->nchw", blocks, wts)


@tensor_cache(64)
def _weight_map(pattern_bytes: bytes, period: int, h: int, w: int, dtype, device: str) -> torch.Tensor:
    """(h, w, b*b, 3) block weights of every base pixel."""
    wb = _block_weights(pattern_bytes, period)
    r = wb.shape[0]
    wmap = np.tile(wb, (-(-h // r), -(-w // r), 1, 1))[:h, :w]
    return torch.tensor(wmap, dtype=dtype, device=device)


def _colour_base_strided(x: torch.Tensor, cfa: CFA) -> torch.Tensor:
    """:func:`colour_base` for inference: per block type (ty, tx) of the
    repeat and colour, the weighted sum of the sites of that colour, read
    as strided views of ``x`` (zero weights skipped: they add exact zeros)."""
    N, _, H, W = x.shape
    b = cfa.block
    h, w = H // b, W // b
    wts = block_weights(cfa)                                # (r, r, b*b, 3)
    r = wts.shape[0]
    out = x.new_empty(N, 3, h, w)
    for ty in range(min(r, h)):
        for tx in range(min(r, w)):
            for c in range(3):
                acc = None
                for j in np.flatnonzero(wts[ty, tx, :, c]).tolist():
                    jy, jx = divmod(j, b)
                    site = x[:, 0, ty * b + jy::r * b, tx * b + jx::r * b] * float(wts[ty, tx, j, c])
                    acc = site if acc is None else acc.add_(site)
                out[:, c, ty::r, tx::r] = acc
    return out
