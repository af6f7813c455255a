"""Tap sets and the neighbourhood gather shared by features and apply."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from kpnt.ref.pad import reflect_pad

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


@lru_cache(maxsize=32)
def _tap_index(offsets_bytes: bytes, radius: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    off = np.frombuffer(offsets_bytes, dtype=np.int64).reshape(-1, 2)
    return (torch.from_numpy(off[:, 0] + radius).to(device), torch.from_numpy(off[:, 1] + radius).to(device))


def gather_taps(m: torch.Tensor, offsets: np.ndarray) -> torch.Tensor:
    """Values of ``m`` at every pixel's taps, mirror-padded at the borders.

    Args:
        m: (N, C, h, w).
        offsets: (T, 2) int (dy, dx).
    Returns:
        (N, C, h, w, T): ``out[..., y, x, t] = m[..., y + dy_t, x + dx_t]``.
    """
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    r = int(np.abs(offsets).max())
    k = 2 * r + 1
    # unfold gives a strided (N, C, h, w, k, k) view of every window; the
    # advanced index then copies only the T wanted taps.
    win = reflect_pad(m, r, r, r, r).unfold(2, k, 1).unfold(3, k, 1)
    ty, tx = _tap_index(offsets.tobytes(), r, str(m.device))
    return win[..., ty, tx]
