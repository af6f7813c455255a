"""Drawing Poissonian-Gaussian noise (numpy for data building, torch for
on-the-fly training synthesis)."""
from __future__ import annotations

import numpy as np
import torch

from kpnt.errors import NoiseProfileError
from kpnt.noise.profile import NoiseProfile

#: Above this many expected photo-electrons a Poisson draw is replaced by a
#: Gaussian of the same mean and variance: the Poisson skewness is
#: ``lam**-0.5`` <= 0.003 there, far below anything measurable, and the
#: Gaussian draw is cheaper.
POISSON_GAUSS_LAMBDA = 1e5


def _colour_for(x: np.ndarray, colour) -> np.ndarray:
    """Broadcast colour indices against ``x`` (mosaic or H,W,3 image)."""
    if colour is None:
        if x.ndim != 3 or x.shape[-1] != 3:
            raise NoiseProfileError(f"colour=None needs an (H, W, 3) RGB image, got shape {x.shape}")
        colour = np.arange(3)
    colour = np.asarray(colour)
    if colour.dtype.kind not in "iu":
        raise NoiseProfileError(f"colour must be an integer array of 0 (R), 1 (G), 2 (B), got dtype {colour.dtype}")
    try:
        colour = np.broadcast_to(colour, x.shape)
    except ValueError:
        raise NoiseProfileError(
            f"colour of shape {colour.shape} does not broadcast to the image {x.shape}: pass a (H, W) CFA colour "
            "map for a mosaic, or [0, 1, 2] (or None) for an (H, W, 3) image"
        ) from None
    if colour.size and (colour.min() < 0 or colour.max() > 2):
        raise NoiseProfileError("colour indices must be 0 (R), 1 (G) or 2 (B)")
    return colour


def add_noise(x, profile: NoiseProfile, colour, rng: np.random.Generator) -> np.ndarray:
    """Add Poissonian-Gaussian noise of ``profile`` to a clean image.

    ``noisy = x + a * (Poisson(lam) - lam) + N(0, max(b, 0))`` with
    ``lam = max(x, 0) / a``: for ``x >= 0`` this is
    ``a * Poisson(x / a) + N(0, b)``, variance ``a x + b``; negative clean
    values get read noise only and keep their mean.  Where ``lam`` exceeds
    :data:`POISSON_GAUSS_LAMBDA` the Poisson draw is replaced by a Gaussian
    of equal mean and variance; a channel with ``a == 0`` gets read noise
    only.

    Args:
        x: (H, W) mosaic or (H, W, 3) image, normalised units.
        profile: the noise profile (raw scale).
        colour: (H, W) int colour map (0 R, 1 G, 2 B) of the mosaic, or
            ``[0, 1, 2]`` / ``None`` for an (H, W, 3) image.
        rng: numpy Generator (seed it for reproducible noise).
    Returns:
        float32 array of the shape of ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim not in (2, 3):
        raise NoiseProfileError(f"add_noise expects an (H, W) mosaic or (H, W, 3) image, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise NoiseProfileError("add_noise: the clean image holds NaN or Inf values")
    col = _colour_for(x, colour)
    a = profile.a[col]
    b = np.maximum(profile.b[col], 0.0)
    shot = np.zeros_like(x)
    pos = a > 0
    lam = np.zeros_like(x)
    lam[pos] = np.maximum(x[pos], 0.0) / a[pos]
    small = pos & (lam <= POISSON_GAUSS_LAMBDA)
    big = pos & (lam > POISSON_GAUSS_LAMBDA)
    shot[small] = a[small] * (rng.poisson(lam[small]) - lam[small])
    shot[big] = a[big] * np.sqrt(lam[big]) * rng.standard_normal(int(big.sum()))
    read = np.sqrt(b) * rng.standard_normal(x.shape)
    return (x + shot + read).astype(np.float32)


def add_noise_torch(
    x: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    colour: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Heteroscedastic Gaussian noise for on-the-fly training synthesis.

    ``noisy = x + sqrt(max(a_c max(x, 0) + b_c, 0)) * N(0, 1)``: the
    Gaussian approximation of the Poissonian-Gaussian model (same mean and
    variance; it differs only in the skew of the shot noise at a few
    photo-electrons, which does not matter for training a denoiser, and one
    ``randn`` keeps the draw fast on any device).

    Args:
        x: (N, 1, H, W) mosaic or (N, 3, H, W) RGB, float, normalised units.
        a: (N, 3) per-image shot-noise gains (R, G, B), raw scale.
        b: (N, 3) per-image read variances.
        colour: (H, W) long colour map (0 R, 1 G, 2 B) for a mosaic; None
            for RGB input (channel index = colour).
        generator: optional torch.Generator on ``x``'s device.
    Returns:
        tensor like ``x``.
    """
    if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] not in (1, 3):
        raise NoiseProfileError(f"x must be an (N, 1, H, W) mosaic or (N, 3, H, W) tensor, got {tuple(getattr(x, 'shape', ()))}")
    n = x.shape[0]
    for name, t in (("a", a), ("b", b)):
        if not torch.is_tensor(t) or tuple(t.shape) != (n, 3):
            raise NoiseProfileError(f"{name} must be an ({n}, 3) tensor (one profile per image), got {tuple(getattr(t, 'shape', ()))}")
        if t.device != x.device:
            raise NoiseProfileError(f"{name} is on {t.device} but x is on {x.device}: move them to one device")
    a = a.to(x.dtype)
    b = b.to(x.dtype)
    if x.shape[1] == 1:
        if colour is None or not torch.is_tensor(colour) or tuple(colour.shape) != tuple(x.shape[2:]):
            raise NoiseProfileError(f"a mosaic (N, 1, H, W) needs colour: a long tensor of shape {tuple(x.shape[2:])}")
        if colour.dtype != torch.long:
            raise NoiseProfileError(f"colour must be a long tensor, got {colour.dtype}")
        colour = colour.to(x.device)
        # (N, 3)[:, colour] -> (N, H, W): per-photosite parameters.
        a_px = a[:, colour].unsqueeze(1)
        b_px = b[:, colour].unsqueeze(1)
    else:
        if colour is not None:
            raise NoiseProfileError("colour must be None for (N, 3, H, W) RGB input (the channel is the colour)")
        a_px = a[:, :, None, None]
        b_px = b[:, :, None, None]
    var = (a_px * x.clamp(min=0) + b_px).clamp(min=0)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + var.sqrt() * noise
