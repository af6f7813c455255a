"""Public MLP op (reference :func:`kpnt.ref.mlp.mlp`)."""
from __future__ import annotations

from typing import Sequence

import torch

from kpnt.ops.capability import mlp_problem
from kpnt.ops.checks import check, check_weights
from kpnt.ops.dispatch import implementation
from kpnt.ops.weights import needs_weight_grad
from kpnt.ref.mlp import init_weights  # noqa: F401  (the op's weight initialisation, for models)
from kpnt.spec import MlpShape


def mlp(x: torch.Tensor, weights: Sequence[torch.Tensor], leaky_slope: float, backend: str = "torch") -> torch.Tensor:
    """(P, n_in) -> (P, n_out); see :func:`kpnt.ref.mlp.mlp`.  On a fused
    backend, a shape that is not compiled (``kernels/shapes.def``) runs on
    the reference under 'auto' and raises under 'cuda'."""
    check(x.dim() == 2, "MLP input", "shape (P, n_in)", tuple(x.shape))
    check_weights(weights, x.shape[1], weights[-1].shape[0] if weights else -1, "MLP")
    fn = implementation("mlp", backend, x.device,
                        lambda: mlp_problem(MlpShape.of(weights), needs_weight_grad(weights) or x.requires_grad))
    return fn(x, weights, leaky_slope)
