"""The graphed training step's update on the fused kernels
(``kernels/train_update.cu``): the finite check, the global gradient-norm
clip and Adam, with the masked commit built in.

:func:`masked_update` does what :class:`kpnt.train.graph_step.GraphedStep`
otherwise does with PyTorch after the backward pass:

- ``finite`` = the loss and every gradient finite (``nonfinite_grads``);
- ``clip_grad_norm_``: every gradient times ``min(1, clip / (norm + 1e-6))``
  (here inside Adam's read of the gradient, which stays unscaled in memory);
- ``torch.optim.Adam.step()``: PyTorch's formula in float32, on the
  optimiser's own state tensors (``exp_avg``, ``exp_avg_sq``, ``step``), so
  checkpoints and ``state_dict`` are unchanged;
- the masked commit: a step that is not finite writes nothing, so weights
  and Adam state keep their bits (PyTorch's path backs everything up and
  restores it).

Three kinds of launch for the whole model instead of about 30 kernels, most
of them multi-tensor kernels that gave a launch 36 tensors and ~35 blocks
(session 35's breakdown: ~0.5 ms of the graphed X-Trans step).  The sum of
squares is added in another order than PyTorch's per-tensor norms, so the
coefficient, and the weights after it, agree to float32 rounding, not bit
for bit.

:func:`unsupported` says why an optimiser cannot take this path (AMSGrad,
maximize, decoupled weight decay, tensors other than float32 on one GPU);
the caller then keeps PyTorch's and logs it.
"""
from __future__ import annotations

import torch

from kpnt.ops._cuda.extension import ext, unwrap


def unsupported(optimizer: torch.optim.Optimizer, params) -> str | None:
    """Why ``optimizer`` (a ``torch.optim.Adam``) over ``params`` cannot be
    updated by :func:`masked_update`, or None when it can.  Call after Adam
    has its state (the first step creates it)."""
    if type(optimizer) is not torch.optim.Adam:
        return f"the optimizer is {type(optimizer).__name__}, not torch.optim.Adam"
    for g in optimizer.param_groups:
        for key in ("amsgrad", "maximize", "differentiable", "decoupled_weight_decay"):
            if g.get(key, False):
                return f"Adam with {key}=True"
        if not isinstance(g["lr"], torch.Tensor):
            return "a learning rate that is not a device tensor"
        if any(isinstance(b, torch.Tensor) for b in g["betas"]):
            return "betas given as tensors"
    devices = {p.device for p in params}
    if len(devices) != 1 or next(iter(devices)).type != "cuda":
        return f"parameters on {sorted(map(str, devices))}, not one CUDA device"
    for p in params:
        st = optimizer.state.get(p)
        if not st:
            return "a parameter without Adam state"
        tensors = [p, st["exp_avg"], st["exp_avg_sq"], st["step"]]
        if any(t.dtype != torch.float32 for t in tensors) or st["step"].device != p.device:
            return "a parameter, its Adam state or step count that is not float32 on the parameter's GPU"
        if not (p.is_contiguous() and st["exp_avg"].is_contiguous() and st["exp_avg_sq"].is_contiguous()):
            return "a parameter or Adam moment that is not contiguous"
    return None


def masked_update(params, optimizer: torch.optim.Optimizer, clip: float, loss: torch.Tensor) -> torch.Tensor:
    """Clip and take ``optimizer``'s Adam step on the parameters of
    ``params`` that have a gradient, unless the loss or a gradient is not
    finite, then nothing is written.  Returns ``applied``: a float32 0-d
    device tensor, 1.0 when the step was taken (no host synchronisation).
    ``clip <= 0``: no clipping.  :func:`unsupported` must have passed."""
    trained = [p for p in params if p.grad is not None]
    if not trained:
        raise ValueError("masked_update: no parameter has a gradient")
    grads = [p.grad if p.grad.is_contiguous() else p.grad.contiguous() for p in trained]
    state = unwrap(ext().train_update_check(grads, loss.detach().float().reshape(1), float(clip)))
    grad_of = {id(p): g for p, g in zip(trained, grads)}
    for group in optimizer.param_groups:
        ps = [p for p in group["params"] if id(p) in grad_of]
        if not ps:
            continue
        st = [optimizer.state[p] for p in ps]
        beta1, beta2 = group["betas"]
        unwrap(ext().train_update_adam(ps, [grad_of[id(p)] for p in ps], [s["exp_avg"] for s in st],
                                       [s["exp_avg_sq"] for s in st], [s["step"] for s in st], state, group["lr"],
                                       float(beta1), float(beta2), float(group["eps"]),
                                       float(group["weight_decay"])))
    return state[1]
