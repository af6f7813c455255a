"""Noise variances of the quantities the network reads (DESIGN.md 1-3).

Photosites follow ``var(x) = a_c x + b_c`` (normalised, white-balanced units).
Everything here evaluates that model at a *smooth signal estimate* ``s``
(never at the noisy value itself, whose noise would leak into the variance),
clamped below by :data:`VAR_FLOOR` so that noise-free data or negative
signal estimates never divide by zero.
"""
from __future__ import annotations


import torch

from kpnt.ref.pyramid import gain_map

#: Lower bound of every per-photosite variance: ``(1e-6)^2``, far below the
#: quantisation noise of a 16-bit raw (``(2^-16)^2 / 12 ~ 2e-11``).
VAR_FLOOR = 1e-12

#: Noise input of the MLPs: ``(ln sigma - NOISE_LOG_CENTRE) / NOISE_LOG_SCALE``
#: maps typical raw noise (sigma ~ 2.5e-3 = e^-6) to about 0 and the range
#: 1e-5 .. 1e-1 to about -1.8 .. +1.2, so it starts on the scale of the other
#: inputs.
NOISE_LOG_CENTRE = -6.0
NOISE_LOG_SCALE = 3.0


def site_var(signal: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-photosite variance ``max(a s + b, VAR_FLOOR)``; broadcasting."""
    return (a * signal + b).clamp_min(VAR_FLOOR)


def base_var(signal: torch.Tensor, noise: torch.Tensor, counts) -> torch.Tensor:
    """Variance of the colour base ``C0`` (mean of ``counts[c]`` photosites).

    Args:
        signal: (N, 3, h, w) smooth estimate of the signal in ``C0`` units.
        noise: (N, 2, 3) per image ``[a; b]`` for R, G, B.
        counts: (3,) photosites per colour-base pixel (``cfa.base_counts``;
            ones for RGB input).
    Returns:
        (N, 3, h, w).
    """
    a = noise[:, 0, :, None, None]
    b = noise[:, 1, :, None, None]
    n = torch.as_tensor(counts, dtype=signal.dtype, device=signal.device).reshape(1, 3, 1, 1)
    return site_var(signal, a, b) / n


def noise_feature(sigma: torch.Tensor) -> torch.Tensor:
    """MLP noise input from a standard deviation (same shape)."""
    return (torch.log(sigma) - NOISE_LOG_CENTRE) / NOISE_LOG_SCALE


__all__ = ["VAR_FLOOR", "NOISE_LOG_CENTRE", "NOISE_LOG_SCALE", "site_var", "base_var", "noise_feature"]


def detail_var(signal: torch.Tensor, noise: torch.Tensor, counts, level: int) -> torch.Tensor:
    """Per-channel noise variance of ``D_level``.

    ``var = max(a_c s + b_c, floor) / n_c * gain[level, y%2, x%2]``: the colour
    base noise at the local brightness ``s`` times the exact pyramid factor
    (:func:`kpnt.ref.pyramid.detail_noise_gain`).

    Args:
        signal: (N, 3, h, w) smooth signal estimate at this level
            (``up(M_{level+1})``).
        noise: (N, 2, 3) ``[a; b]`` per channel.
        counts: (3,) photosites per colour-base pixel.
        level: pyramid level of ``signal``'s grid.
    Returns:
        (N, 3, h, w).
    """
    h, w = signal.shape[-2:]
    return base_var(signal, noise, counts) * gain_map(level, h, w, signal.dtype, signal.device)
