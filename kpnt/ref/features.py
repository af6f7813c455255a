"""MLP inputs of the colour levels (DESIGN.md section 2).

Per pixel p of a detail level ``D_i`` (N, 3, h, w) with per-channel noise
variance ``var`` (N, 3, h, w), 32 inputs, in this order:

* ``[0:15]``  luminance of the 15 diamond taps (``kpnt.ref.taps.DIAMOND``),
* ``[15:30]`` chroma of the same taps,
* ``[30]``    noise input ``(ln sigma(p) + 6) / 3`` (0 with ``noise_input=False``),
* ``[31]``    constant 1 (the first layer's bias).

Another tap set of T taps (``ModelConfig.colour_taps``, e.g. the 5x5 square
for ablations) keeps this order: ``[0:T]`` luminance, ``[T:2T]`` chroma,
``[2T]`` noise, ``[2T+1]`` constant, then zeros up to a multiple of 16
(:func:`n_features`: 25 taps -> 52 used of 64).

With ``sigma = sqrt(mean_c var_c)`` (RMS channel noise std of ``D_i`` at the
pixel) and ``u_c = D_c / sigma``:

* ``lum = sqrt(3) * mean_c u_c``  (unit variance on white noise),
* ``chroma = (sqrt(sum_c (u_c - mean u)^2 + eps^2) - eps) / sqrt(2)``
  (saturation-like, rms ~1 on white noise, smooth everywhere: eps = 0.1),

each then compressed by ``asinh``: SNR-like inputs, invariant to exposure
where the noise is, linear for small SNR and logarithmic for large ones, so
noise-free data stays in a range that f16 fused kernels can hold.  The map
is computed per pixel first and then gathered, so each tap's values are
normalised by the noise at that tap.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from kpnt.ref.noise import noise_feature
from kpnt.ref.taps import DIAMOND, tap_index
from kpnt.ref._cache import tensor_cache

#: Softening of the chroma norm, in units of the noise std.
CHROMA_EPS = 0.1
#: Number of MLP inputs of a colour level with the default 15-tap diamond.
N_FEATURES = 32


def n_features(n_taps: int) -> int:
    """MLP inputs of a colour level with ``n_taps`` taps: 2 per tap, noise
    and constant, padded to a multiple of 16 (15 -> 32, 25 -> 64)."""
    return -(-(2 * n_taps + 2) // 16) * 16


def detail_maps(D: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel compressed luminance/chroma and noise std.

    Args:
        D: (N, 3, h, w) detail coefficients.
        var: (N, 3, h, w) their noise variance.
    Returns:
        ``(f, sigma)``: f (N, 2, h, w) = asinh(lum), asinh(chroma); sigma (N, 1, h, w).
    """
    sigma = torch.sqrt(var.mean(1, keepdim=True))
    u = D / sigma
    mu = u.mean(1, keepdim=True)
    lum = mu * math.sqrt(3.0)
    chroma = (torch.sqrt(((u - mu) ** 2).sum(1, keepdim=True) + CHROMA_EPS ** 2) - CHROMA_EPS) / math.sqrt(2.0)
    return torch.asinh(torch.cat([lum, chroma], 1)), sigma


@tensor_cache(64)
def _feature_index(h: int, w: int, device: str, offsets_bytes: bytes) -> torch.Tensor:
    off = np.frombuffer(offsets_bytes, dtype=np.int64).reshape(-1, 2)
    taps = tap_index(h, w, off, "cpu")                              # (hw, T)
    hw = h * w
    p = torch.arange(hw)[:, None]
    pad = n_features(len(off)) - (2 * len(off) + 2)
    # source index 3hw is the constant 1, 3hw + 1 a zero (padding inputs)
    return torch.cat([taps, taps + hw, p + 2 * hw, torch.full_like(p, 3 * hw),
                      torch.full((hw, pad), 3 * hw + 1, dtype=p.dtype)], 1).to(device)


def colour_features(D: torch.Tensor, var: torch.Tensor, noise_input: bool = True,
                    taps: np.ndarray = DIAMOND) -> torch.Tensor:
    """The MLP inputs of every pixel of a colour level (module doc).

    Args:
        D: (N, 3, h, w) detail coefficients ``D_i``.
        var: (N, 3, h, w) per-channel noise variance of ``D_i``.
        noise_input: feed ``(ln sigma + 6)/3`` (else 0).
        taps: (T, 2) tap offsets (default the 15-tap diamond).
    Returns:
        (N*h*w, n_features(T)) (32 for the diamond), rows in (n, y, x)
        raster order.
    """
    N, _, h, w = D.shape
    f, sigma = detail_maps(D, var)
    nz = noise_feature(sigma) if noise_input else torch.zeros_like(sigma)
    # Source row per image: [lum (hw), chroma (hw), noise (hw), 1, 0]; one
    # gather with a cached (hw, n_in) index then yields the feature matrix.
    src = torch.cat([f.reshape(N, 2 * h * w), nz.reshape(N, h * w), D.new_ones(N, 1), D.new_zeros(N, 1)], 1)
    key = np.ascontiguousarray(taps, dtype=np.int64).tobytes()
    idx = _feature_index(h, w, str(D.device), key)
    return src.index_select(1, idx.reshape(-1)).reshape(N * h * w, idx.shape[1])
