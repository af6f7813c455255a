"""Public front-level op: checks, then the reference
(:mod:`kpnt.ref.front_level`) or the fused kernels
(:mod:`kpnt.ops._cuda.front_level`), both called
``(x, U, S, noise, cfa, weights, spec)``."""
from __future__ import annotations

import torch

from kpnt.mosaic.cfa import CFA
from kpnt.ops.capability import front_problem
from kpnt.ops.checks import check, check_image, check_mlp, check_noise, check_same
from kpnt.ops.dispatch import implementation
from kpnt.ops.weights import needs_weight_grad
from kpnt.ref.front_layout import front_set_names
from kpnt.spec import FrontLevelSpec


def front_level(x: torch.Tensor, U: torch.Tensor, S: torch.Tensor, noise: torch.Tensor, cfa: CFA, weights,
                spec: FrontLevelSpec, backend: str = "torch") -> torch.Tensor:
    """(N,3,H,W) output of the mosaic level; see :func:`kpnt.ref.front_level.front_level`.

    Args:
        x: (N, 1, H, W) mosaic; U, S: (N, 3, H, W); noise (N, 2, 3).
        cfa: layout of ``x``.
        weights: one MLP per weight set (:func:`kpnt.ref.front_layout.front_set_names`),
            each of shape ``spec.mlp`` (lists, or
            :class:`kpnt.ops.weights.MlpWeightSets` to pack them once).
        spec: built once from the model config (``config.front_spec``).
        backend: 'torch', 'cuda' or 'auto'.  A spec the fused kernels do not
            run (:func:`kpnt.ops.capability.front_problem`) runs on the
            reference under 'auto' and raises under 'cuda'.
    """
    check_image(x, "mosaic", 1)
    check_image(U, "U", 3)
    check_image(S, "S", 3)
    check_same(U, x, "U")
    check_same(S, x, "S")
    check_noise(noise, x.shape[0], x)
    names = front_set_names(cfa.kind, spec.sharing)
    check(len(weights) == len(names), "front weight sets",
          f"{len(names)} ({', '.join(names) if len(names) <= 4 else f'{names[0]} .. {names[-1]}'})", len(weights))
    for name, w in zip(names, weights):
        check_mlp(w, spec.mlp, f"front MLP '{name}'")
    fn = implementation("front_level", backend, x.device,
                        lambda: front_problem(spec, needs_weight_grad(weights)))
    return fn(x, U, S, noise, cfa, weights, spec)
