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


@lru_cache(maxsize=64)
def _block_weights(pattern_bytes: bytes, period: int) -> np.ndarray:
    cfa = CFA(np.frombuffer(pattern_bytes, dtype=np.int64).reshape(period, period))
    b = cfa.block
    blk = cfa.pattern[:b, :b].reshape(-1)
    w = np.zeros((b * b, 3))
    for c in range(3):
        w[blk == c, c] = 1.0 / (blk == c).sum()
    return w


def block_weights(cfa: CFA) -> np.ndarray:
    """(b*b, 3) averaging weights: ``C0[c] = sum_j w[j, c] x[block site j]``
    (sites in raster order of the block at the image origin)."""
    return _block_weights(cfa.pattern.tobytes(), cfa.period)


def colour_base(x: torch.Tensor, cfa: CFA) -> torch.Tensor:
    """Average each colour within each CFA block.

    Args:
        x: (N, 1, H, W) mosaic; H, W multiples of ``cfa.block`` and
            ``cfa.block_phase == (0, 0)``.
        cfa: layout of ``x`` (``cfa.pattern[0, 0]`` is the colour of x[..., 0, 0]).
    Returns:
        (N, 3, H/b, W/b).
    """
    N, _, H, W = x.shape
    b = cfa.block
    h, w = H // b, W // b
    # (N, h, b, w, b) -> (N, h, w, b*b): one row of block sites per base pixel.
    blocks = x.reshape(N, h, b, w, b).permute(0, 1, 3, 2, 4).reshape(N, h, w, b * b)
    wts = torch.as_tensor(block_weights(cfa), dtype=x.dtype, device=x.device)
    return (blocks @ wts).permute(0, 3, 1, 2)
