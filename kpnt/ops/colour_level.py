"""Public colour-level op: checks, then the reference
(:mod:`kpnt.ref.colour_level`) or the fused kernels
(:mod:`kpnt.ops._cuda.colour_level`), both called ``(D, var, weights, spec)``."""
from __future__ import annotations

import torch

from kpnt.ops.capability import colour_problem
from kpnt.ops.checks import check_image, check_mlp, check_same
from kpnt.ops.dispatch import implementation
from kpnt.ops.weights import needs_weight_grad
from kpnt.spec import ColourLevelSpec


def colour_level(D: torch.Tensor, var: torch.Tensor, weights, spec: ColourLevelSpec,
                 backend: str = "torch") -> tuple[torch.Tensor, torch.Tensor]:
    """``(I, a)`` of one colour level; see :func:`kpnt.ref.colour_level.colour_level`.

    Args:
        D, var: (N, 3, h, w) details and their noise variance.
        weights: the colour MLP, shape ``spec.mlp`` (a list of matrices, or
            :class:`kpnt.ops.weights.MlpWeights` to pack it once for all
            levels of a forward).
        spec: built once from the model config (``config.colour_spec``).
        backend: 'torch', 'cuda' or 'auto'.  A spec the fused kernels do not
            run (:func:`kpnt.ops.capability.colour_problem`) runs on the
            reference under 'auto' and raises under 'cuda'.
    """
    check_image(D, "details", 3)
    check_image(var, "detail variance", 3)
    check_same(var, D, "detail variance")
    check_mlp(weights, spec.mlp, "colour MLP")
    fn = implementation("colour_level", backend, D.device,
                        lambda: colour_problem(spec, needs_weight_grad(weights)))
    return fn(D, var, weights, spec)
