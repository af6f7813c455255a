"""One colour level of the KPN: noise of ``D_i``, features, MLP, apply."""
from __future__ import annotations

from typing import Sequence

import torch

from kpnt.ref.apply import apply_kernel, normalise_kernel
from kpnt.ref.features import colour_features
from kpnt.ref.mlp import mlp
from kpnt.ref.noise import base_var
from kpnt.ref.pyramid import gain_map
from kpnt.ref.taps import DIAMOND

#: MLP outputs of a colour level: 15 kernel logits + 1 blend logit.
N_OUTPUTS = 16


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


def colour_level(
    D: torch.Tensor,
    var: torch.Tensor,
    weights: Sequence[torch.Tensor],
    leaky_slope: float,
    apply_mode: str,
    noise_input: bool,
    mlp_fn=mlp,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predict and apply the per-pixel kernel of one colour level.

    Args:
        D: (N, 3, h, w) detail coefficients.
        var: (N, 3, h, w) their noise variance (:func:`detail_var`).
        weights: the colour MLP, input 32, output 16.
        mlp_fn: MLP evaluator with the signature of :func:`kpnt.ref.mlp.mlp`
            (a backend's fused MLP slots in here).
    Returns:
        ``(I, a)``: filtered details (N, 3, h, w) and blend weights
        ``sigmoid`` of the 16th output (N, 1, h, w).
    """
    N, _, h, w = D.shape
    out = mlp_fn(colour_features(D, var, noise_input), weights, leaky_slope)   # (P, 16)
    k = normalise_kernel(out[:, : len(DIAMOND)].reshape(N, h, w, len(DIAMOND)), apply_mode)
    a = torch.sigmoid(out[:, len(DIAMOND)]).reshape(N, 1, h, w)
    return apply_kernel(D, k, DIAMOND), a
