"""Tap sets and the neighbourhood gather shared by features and apply."""
from __future__ import annotations


import numpy as np
import torch

from kpnt.ref.pad import fold_indices
from kpnt.ref._cache import tensor_cache

#: The 15-tap diamond of the colour levels, (dy, dx) in raster order::
#:
#:       x          row -2: dx 0
#:     xxxxx        row -1: dx -2..2
#:      xxx         row  0: dx -1..1
#:     xxxxx        row  1: dx -2..2
#:       x          row  2: dx 0
DIAMOND = np.array(
    [(-2, 0)]
    + [(-1, dx) for dx in range(-2, 3)]
    + [(0, dx) for dx in range(-1, 2)]
    + [(1, dx) for dx in range(-2, 3)]
    + [(2, 0)],
    dtype=np.int64,
)
DIAMOND.setflags(write=False)

#: Index of (0, 0) in :data:`DIAMOND`.
DIAMOND_CENTRE = 7


def square_taps(radius: int) -> np.ndarray:
    """(K*K, 2) offsets of the full (2r+1)^2 square in raster order."""
    r = np.arange(-radius, radius + 1)
    return np.stack(np.meshgrid(r, r, indexing="ij"), -1).reshape(-1, 2)


#: Tap sets of the colour levels by name (``ModelConfig.colour_taps``):
#: 'diamond15' (DESIGN.md section 2, the default, the one the fused kernels
#: compile) and 'square25', the full 5x5 square (raster order), for
#: ablations.  Both reach radius 2, so the receptive field is the same.
COLOUR_TAP_SETS = {"diamond15": DIAMOND, "square25": square_taps(2)}
for _taps in COLOUR_TAP_SETS.values():
    _taps.setflags(write=False)
del _taps


def colour_taps(name: str) -> np.ndarray:
    """(T, 2) offsets of the named colour tap set (:data:`COLOUR_TAP_SETS`)."""
    try:
        return COLOUR_TAP_SETS[name]
    except KeyError:
        raise ValueError(f"colour taps must be one of {tuple(COLOUR_TAP_SETS)}, got {name!r}") from None


def centre_index(taps: np.ndarray) -> int:
    """Index of the (0, 0) offset in a tap set."""
    hit = np.flatnonzero((np.asarray(taps) == 0).all(1))
    if len(hit) != 1:
        raise ValueError("tap set has no (0, 0) tap")
    return int(hit[0])


@tensor_cache(64)
def _tap_index(offsets_bytes: bytes, h: int, w: int, device: str) -> torch.Tensor:
    off = np.frombuffer(offsets_bytes, dtype=np.int64).reshape(-1, 2)
    r = int(np.abs(off).max())
    ys = fold_indices(h, r, r)                  # padded row -> source row
    xs = fold_indices(w, r, r)
    y = np.arange(h)[:, None, None] + off[None, None, :, 0] + r
    x = np.arange(w)[None, :, None] + off[None, None, :, 1] + r
    idx = ys[y] * w + xs[x]                     # (h, w, T)
    return torch.from_numpy(idx.reshape(h * w, len(off))).to(device)


def tap_index(h: int, w: int, offsets: np.ndarray, device) -> torch.Tensor:
    """(h*w, T) raster index of every pixel's taps, mirrored at the borders
    (edge not repeated, folding as often as needed); cached."""
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    return _tap_index(offsets.tobytes(), h, w, str(device))


def gather_taps(m: torch.Tensor, offsets: np.ndarray) -> torch.Tensor:
    """Values of ``m`` at every pixel's taps, mirror-padded at the borders.

    Args:
        m: (N, C, h, w).
        offsets: (T, 2) int (dy, dx).
    Returns:
        (N, C, h, w, T): ``out[..., y, x, t] = m[..., y + dy_t, x + dx_t]``.
    """
    N, C, h, w = m.shape
    idx = tap_index(h, w, offsets, m.device)
    # One index_select (its backward is an index_add): padding is folded
    # into the index, so no padded copy is made.
    return m.reshape(N, C, h * w).index_select(2, idx.reshape(-1)).reshape(N, C, h, w, idx.shape[1])
