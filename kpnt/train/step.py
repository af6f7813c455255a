"""The parts of one training step, shared by every way of running it.

The Trainer's eager step (:meth:`kpnt.train.loop.Trainer.train_step`, with
data-parallel gradient sync around it), the CUDA-graph step
(:class:`kpnt.train.graph_step.GraphedStep`, with a masked commit around
it) and the plain reference step (:func:`kpnt.train.graph_step.eager_step`)
all compute the loss, test the gradients and update the weights with these
functions, so the three cannot drift apart; what differs between them is
only what wraps the step (gradient all-reduce, graph capture, how a
non-finite step is skipped).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor


def step_loss(net: Callable, loss_fn: Callable, x: Tensor, cfa, noise: Tensor, target: Tensor,
              valid: Tensor) -> Tensor:
    """The model's output on one batch and its loss (0-d tensor):
    ``loss_fn(net(x, cfa, noise), target, valid)``."""
    return loss_fn(net(x, cfa, noise), target, valid)


def nonfinite_grads(params: Sequence[Tensor]) -> Tensor:
    """1.0 if any parameter's gradient holds a NaN or inf, else 0.0, as a
    0-d float64 tensor on the gradients' device (no host synchronisation:
    the eager step all-reduces it, the graphed step masks with it).  One
    concatenation and one test, as the captured graph has always done."""
    grads = [p.grad.reshape(-1) for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), dtype=torch.float64)
    return (~torch.isfinite(torch.cat(grads)).all()).double()


def apply_update(params: Sequence[Tensor], optimizer: torch.optim.Optimizer, clip: float) -> None:
    """Clip the global gradient norm to ``clip`` (``<= 0``: no clipping)
    and take the optimiser step."""
    if clip > 0:
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], clip)
    optimizer.step()
