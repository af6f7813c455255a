"""Colour base to full resolution at each colour's sample positions
(DESIGN.md section 3, ``U = up_block(O_0)``)."""
from __future__ import annotations

import numpy as np
import torch

from kpnt.mosaic.cfa import CFA
from kpnt.ref._cache import tensor_cache


def colour_centroids(cfa: CFA) -> np.ndarray:
    """(3, 2) position (dy, dx) within its block of each colour's sites'
    centroid (the same in every block type; blocks start at ``block_phase``).

    Bayer RGGB: R (0, 0), G (0.5, 0.5), B (1, 1).  X-Trans: all (1, 1), the
    block centre (its two reds, two blues and five greens are symmetric)."""
    b = cfa.block
    pat = np.roll(cfa.pattern, (-cfa.block_phase[0], -cfa.block_phase[1]), axis=(0, 1))
    out = None
    for ty in range(cfa.period // b):
        for tx in range(cfa.period // b):
            blk = pat[ty * b:(ty + 1) * b, tx * b:(tx + 1) * b]
            c = np.array([np.argwhere(blk == k).mean(0) for k in range(3)])
            if out is not None and not np.array_equal(c, out):
                raise ValueError(f"CFA {cfa.name}: colour centroids differ between blocks")
            out = c
    return out


@tensor_cache(64)
def _up_block_axis(centroids: tuple, b: int, n_in: int, device: str, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per channel, the two source indices and the weight of the second one
    for every output sample of one axis: (3, n_in * b) each."""
    y = np.arange(n_in * b)[None, :]
    u = np.clip((y - np.asarray(centroids)[:, None]) / b, 0, n_in - 1)
    i0 = np.floor(u).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return (torch.from_numpy(i0).to(device), torch.from_numpy(i1).to(device),
            torch.tensor(u - i0, dtype=dtype, device=device))


def up_block_tables(o0: torch.Tensor, cfa: CFA):
    """(rows, cols): per axis, each channel's two source indices and the
    second one's weight for every output sample, (3, H) / (3, W) each, on
    ``o0``'s device in its dtype (cached; also what the fused kernel reads)."""
    b = cfa.block
    cent = colour_centroids(cfa)
    h, w = o0.shape[-2:]
    dev, dt = str(o0.device), o0.dtype
    return (_up_block_axis(tuple(cent[:, 0].tolist()), b, h, dev, dt),
            _up_block_axis(tuple(cent[:, 1].tolist()), b, w, dev, dt))


def _interp(o: torch.Tensor, dim: int, idx: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    i0, i1, f = idx
    shape = list(o.shape)
    shape[dim] = i0.shape[1]
    view = [1, 3, 1, 1]
    view[dim] = i0.shape[1]
    expand = lambda t: t.reshape(view).expand(shape)
    return o.gather(dim, expand(i0)) * (1 - expand(f)) + o.gather(dim, expand(i1)) * expand(f)


def up_block(o0: torch.Tensor, cfa: CFA) -> torch.Tensor:
    """Colour base to full resolution at each colour's sample positions.

    Separable linear interpolation per channel: the base value of colour c
    sits at ``block * j + centroid_c`` (:func:`colour_centroids`), so a Bayer
    red is interpolated from where the red sites are (no half-pixel colour
    shift; the front level cannot undo one, it adds the same detail to all
    channels); X-Trans colours all sit at block centres.  Clamped at the
    borders.  The mosaic's blocks must start at (0, 0).

    Args:
        o0: (N, 3, h, w).
        cfa: layout of the full-resolution mosaic (``block_phase == (0, 0)``).
    Returns:
        (N, 3, h*b, w*b).
    """
    rows, cols = up_block_tables(o0, cfa)
    return _interp(_interp(o0, 2, rows), 3, cols)

