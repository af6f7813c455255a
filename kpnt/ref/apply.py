"""Normalise a predicted kernel and apply it (DESIGN.md sections 2 and 3).

Two normalisations (``ModelConfig.apply_mode``):

* ``softmax`` (default): ``w = softmax(k)``, positive, sums to 1; the seed
  found it stabler with leaky ReLU.
* ``plain``: ``w = k / sum(k)`` with the denominator kept at least
  :data:`PLAIN_EPS` away from 0 (its sign kept), so a kernel that sums to
  ~0 gives a large but finite filter instead of inf/nan.
"""
from __future__ import annotations

import numpy as np
import torch

from kpnt.ref.taps import gather_taps

#: Smallest magnitude of the plain-mode denominator.
PLAIN_EPS = 1e-3
APPLY_MODES = ("softmax", "plain")


def normalise_kernel(k: torch.Tensor, mode: str) -> torch.Tensor:
    """Kernel weights from MLP outputs along the last dim.

    Args:
        k: (..., T) raw MLP outputs.
        mode: 'softmax' or 'plain'.
    Returns:
        (..., T) weights summing to 1 along the last dim.
    """
    if mode == "softmax":
        return torch.softmax(k, -1)
    if mode == "plain":
        s = k.sum(-1, keepdim=True)
        safe = torch.where(s >= 0, torch.full_like(s, PLAIN_EPS), torch.full_like(s, -PLAIN_EPS))
        den = torch.where(s.abs() < PLAIN_EPS, safe, s)
        return k / den
    raise ValueError(f"apply mode must be one of {APPLY_MODES}, got {mode!r}")


def apply_kernel(D: torch.Tensor, w: torch.Tensor, offsets: np.ndarray) -> torch.Tensor:
    """``I(p) = sum_t w_t(p) D(p + t)`` (mirror padding at the borders).

    Args:
        D: (N, C, h, w) image.
        w: (N, h, w, T) normalised kernel per pixel.
        offsets: (T, 2) tap offsets (dy, dx).
    Returns:
        (N, C, h, w).
    """
    taps = gather_taps(D, offsets)                       # (N, C, h, w, T)
    return (taps * w.unsqueeze(1)).sum(-1)


def normalise_kernel_columns(kt: torch.Tensor, mode: str) -> torch.Tensor:
    """:func:`normalise_kernel` with the taps along dim 0 (one pixel per
    column), the layout of the inference paths (:func:`kpnt.ref.mlp.mlp_columns`).

    Args:
        kt: (T, P) raw MLP outputs.
    Returns:
        (T, P) weights summing to 1 along dim 0.
    """
    if mode == "softmax":
        return torch.softmax(kt, 0)
    if mode == "plain":
        s = kt.sum(0, keepdim=True)
        safe = torch.where(s >= 0, torch.full_like(s, PLAIN_EPS), torch.full_like(s, -PLAIN_EPS))
        den = torch.where(s.abs() < PLAIN_EPS, safe, s)
        return kt / den
    raise ValueError(f"apply mode must be one of {APPLY_MODES}, got {mode!r}")
