"""Reference helpers shared by the CUDA tests and ``tools/bench_kernels.py``.

Kept in the package (not in ``tests/``) so the benchmark, which runs on the
GPU machine from a plain checkout, uses the very same references as the
tests.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _round_f16(t: torch.Tensor) -> torch.Tensor:
    """``t`` rounded to f16 in the forward pass, identity in the backward."""
    return t + (t.half().double() - t).detach()


def mlp_f16_rounded(x: torch.Tensor, ws: list[torch.Tensor], slope: float) -> torch.Tensor:
    """float64 bias-free leaky-ReLU MLP that rounds what the fused kernels
    round to f16 (inputs, weights, post-activations), with straight-through
    gradients.

    Its leaky-ReLU kink decisions are those of an f16 forward pass: on random
    data ~2e-4 of the hidden units flip sign under f16 rounding, and each
    flip changes that unit's gradient by (1 - slope), so *any* f16 forward
    differs from an exact reference by a few 1e-2 in the gradients.  Against
    this reference the kernels' own error shows.

    Args:
        x: (P, in) inputs; ws: (out, in) weight matrices, first to last.
    Returns:
        (P, out) float64.
    """
    h = _round_f16(x)
    for w in ws[:-1]:
        h = _round_f16(F.leaky_relu(h @ _round_f16(w).t(), slope))
    return h @ _round_f16(ws[-1]).t()


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` in float64 (a zero reference gives inf or nan,
    never a pass)."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()
