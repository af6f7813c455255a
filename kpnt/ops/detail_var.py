"""Public detail-variance op (reference :func:`kpnt.ref.noise.detail_var`)."""
from __future__ import annotations

import torch

from kpnt.ops.checks import check, check_image, check_noise
from kpnt.ops.dispatch import implementation


def detail_var(signal: torch.Tensor, noise: torch.Tensor, counts, level: int, backend: str = "torch") -> torch.Tensor:
    """Noise variance of ``D_level``; see :func:`kpnt.ref.noise.detail_var`."""
    check_image(signal, "signal estimate", 3)
    check_noise(noise, signal.shape[0], signal)
    check(len(counts) == 3, "counts", "3 values", len(counts))
    return implementation("detail_var", backend, signal.device)(signal, noise, counts, level)
