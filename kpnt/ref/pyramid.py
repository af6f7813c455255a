"""Laplacian-style pyramid of the colour base (DESIGN.md section 2).

Conventions (the fused kernels must match them):

* ``down(M)``: separable 5-tap B-spline ``[1 4 6 4 1] / 16`` with mirror
  padding (edge not repeated, :func:`kpnt.ref.pad.reflect_pad`), then keep
  the samples at even positions: coarse sample ``i`` sits on fine sample
  ``2 i``.  Size ``n -> ceil(n / 2)``.
* ``up(C, size)``: bilinear back to ``size`` with coarse sample ``i`` at fine
  position ``2 i``: even fine positions copy a coarse sample, odd ones average
  their two neighbours; past the last coarse sample the coarse row/column is
  repeated (which is what mirror padding of the fine level implies).
* ``D_i = M_i - up(M_{i+1})``; reconstruction ``O_i = up(O_{i+1}) + a_i I_i``.

Noise of ``D_i``: the pyramid is linear, so unit-variance white noise in
``C0`` gives ``D_i`` a variance that depends only on the level and on the
parity of the pixel on its own grid (even positions copy a coarse sample, odd
ones average two or four).  :func:`detail_noise_gain` computes these factors
exactly, once, from impulse responses (sum of squared weights of the linear
map ``C0 -> D_i(q)``), away from borders.
"""
from __future__ import annotations


import numpy as np
import torch

from kpnt.ref.pad import reflect_pad
from kpnt.ref._cache import tensor_cache

#: The 5-tap B-spline, normalised.
B5 = (1.0 / 16, 4.0 / 16, 6.0 / 16, 4.0 / 16, 1.0 / 16)


def _take(x: torch.Tensor, dim: int, start: int, n: int, step: int) -> torch.Tensor:
    """View of ``n`` samples along ``dim`` from ``start`` with ``step``."""
    idx = [slice(None)] * x.dim()
    idx[dim] = slice(start, start + step * (n - 1) + 1, step)
    return x[tuple(idx)]


def _fir5(xp: torch.Tensor, dim: int, n_out: int, step: int) -> torch.Tensor:
    """B5 along ``dim`` of a tensor padded by 2 on both sides; output sample
    j reads padded samples ``step*j .. step*j+4`` (step 2 = filter + decimate)."""
    out = _take(xp, dim, 0, n_out, step) * B5[0]
    for k in range(1, 5):   # the 5 taps of a fixed filter (a formula, not a data loop)
        out = out + _take(xp, dim, k, n_out, step) * B5[k]
    return out


def blur5(x: torch.Tensor) -> torch.Tensor:
    """Separable ``[1 4 6 4 1]/16`` blur of the last two dims, mirror padded.

    Args:
        x: (N, C, H, W).
    Returns:
        (N, C, H, W).
    """
    H, W = x.shape[-2:]
    xp = reflect_pad(x, 2, 2, 2, 2)
    return _fir5(_fir5(xp, x.dim() - 2, H, 1), x.dim() - 1, W, 1)


def down(x: torch.Tensor) -> torch.Tensor:
    """Blur with B5 and keep even samples.

    Args:
        x: (N, C, H, W).
    Returns:
        (N, C, ceil(H/2), ceil(W/2)).
    """
    H, W = x.shape[-2:]
    h, w = (H + 1) // 2, (W + 1) // 2
    xp = reflect_pad(x, 2, 2, 2, 2)
    # Only the kept samples are filtered: rows first (all padded columns),
    # then columns.
    return _fir5(_fir5(xp, x.dim() - 2, h, 2), x.dim() - 1, w, 2)


def _up_axis(c: torch.Tensor, dim: int, n: int) -> torch.Tensor:
    """Bilinear 2x along ``dim`` (coarse i at fine 2i), cropped to ``n``."""
    m = c.shape[dim]
    nxt = torch.cat([c.narrow(dim, 1, m - 1), c.narrow(dim, m - 1, 1)], dim=dim)
    odd = 0.5 * (c + nxt)
    both = torch.stack([c, odd], dim=dim + 1 if dim >= 0 else dim)
    shape = list(c.shape)
    shape[dim] = 2 * m
    return both.reshape(shape).narrow(dim, 0, n)


def up(c: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of a coarse level to ``size`` (see module doc).

    Args:
        c: (N, C, h, w) with ``h == ceil(H/2)``, ``w == ceil(W/2)``.
        size: (H, W).
    Returns:
        (N, C, H, W).
    """
    H, W = size
    if c.shape[-2] != (H + 1) // 2 or c.shape[-1] != (W + 1) // 2:
        raise ValueError(f"up: coarse shape {tuple(c.shape[-2:])} does not match fine size {(H, W)}")
    return _up_axis(_up_axis(c, c.dim() - 2, H), c.dim() - 1, W)


def build(c0: torch.Tensor, levels: int) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """The pyramid of a colour base.

    Args:
        c0: (N, C, H, W).
        levels: number of detail levels L.
    Returns:
        ``(M, D, S)``: M = [M_0 .. M_L] (M_0 = c0), D = [D_0 .. D_{L-1}],
        S = [up(M_1) .. up(M_L)] (S_i is ``M_i - D_i``, the smooth part of
        level i, used as signal estimate for the noise of ``D_i``).
    """
    M = [c0]
    for _ in range(levels):
        M.append(down(M[-1]))
    S = [up(M[i + 1], tuple(M[i].shape[-2:])) for i in range(levels)]
    D = [M[i] - S[i] for i in range(levels)]
    return M, D, S


def reconstruct(coarse: torch.Tensor, details: list[torch.Tensor], alphas: list[torch.Tensor]) -> torch.Tensor:
    """``O_L = coarse``, ``O_i = up(O_{i+1}) + a_i * I_i``; returns ``O_0``.

    Args:
        coarse: (N, C, h_L, w_L).
        details: [I_0 .. I_{L-1}], I_i (N, C, h_i, w_i).
        alphas: [a_0 .. a_{L-1}], each broadcastable to I_i (e.g. (N, 1, h_i, w_i)).
    """
    o = coarse
    for i in reversed(range(len(details))):
        o = up(o, tuple(details[i].shape[-2:])) + alphas[i] * details[i]
    return o


@tensor_cache(8)
def detail_noise_gain(levels: int) -> np.ndarray:
    """Variance of ``D_i`` per unit white-noise variance of ``C0``.

    Returns:
        (levels, 2, 2) float64: ``gain[i, y % 2, x % 2]`` for pixel (y, x) of
        level i (parity on the level's own grid; exact away from borders).
    """
    size = 16 << levels                      # interior far from every border
    # The first call may come from inference (no_grad / inference_mode):
    # this one-off impulse-response computation needs autograd regardless.
    with torch.inference_mode(False), torch.enable_grad():
        c0 = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
        _, D, _ = build(c0, levels)
        gain = np.zeros((levels, 2, 2))
        for i, d in enumerate(D):
            h = d.shape[-1] // 2                # even: parity of q equals parity of (q - h)
            for py in range(2):
                for px in range(2):
                    (g,) = torch.autograd.grad(d[0, 0, h + py, h + px], c0, retain_graph=True)
                    gain[i, py, px] = float((g ** 2).sum())
    gain.setflags(write=False)
    return gain


def gain_map(level: int, h: int, w: int, dtype, device) -> torch.Tensor:
    """(1, 1, h, w) tensor of :func:`detail_noise_gain` for level ``level``."""
    g = torch.tensor(np.array(detail_noise_gain(level + 1)[level]), dtype=dtype, device=device)
    return g.repeat((h + 1) // 2, (w + 1) // 2)[:h, :w].reshape(1, 1, h, w)
