"""One colour level on the fused kernels (reference: :mod:`kpnt.ref.colour_level`).

Features are gathered from per-pixel maps of ``D``/``var`` inside the MLP
kernel (the (P, 32) feature matrix is never written); the kernel applies
the predicted kernel and blend weight in its epilogue.  Differentiable in
the weights by the fused backward; gradients to ``D``/``var``, if asked
for, come from the reference level around the fused MLP.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from kpnt.ops._cuda.extension import colour_consts, ext, unwrap
from kpnt.ops._cuda.glue import by_name, grads, input_names
from kpnt.ops._cuda.mlp import dispatch_mlp, unpack, use_wgmma, use_wgmma_backward
from kpnt.ops.weights import as_weights
from kpnt.spec import ColourLevelSpec


def _colour_fwd_impl(D: Tensor, var: Tensor, w: Tensor, w16: Tensor, dims: list[int], slope: float, plain: bool,
                     noise_input: bool, wgmma: bool) -> tuple[Tensor, Tensor, Tensor]:
    # ``w`` (float32) is the autograd input; the kernels read ``w16``.
    I, a, fmap = unwrap(ext().colour_forward(D, var, w16, dims, slope, plain, noise_input, colour_consts(), wgmma))
    return I, a, fmap


COLOUR_INPUTS = input_names(_colour_fwd_impl)
_colour_fwd = torch.library.custom_op("kpnt::colour_fwd", mutates_args=(), device_types="cuda")(_colour_fwd_impl)


@_colour_fwd.register_fake
def _(D, var, w, w16, dims, slope, plain, noise_input, wgmma):
    N, _, h, wd = D.shape
    return D.new_empty(D.shape), D.new_empty((N, 1, h, wd)), D.new_empty(D.shape)


@torch.library.custom_op("kpnt::colour_bwd", mutates_args=(), device_types="cuda")
def _colour_bwd(D: Tensor, fmap: Tensor, w16: Tensor, dI: Tensor, da: Tensor, dims: list[int], slope: float,
                plain: bool, wgmma: bool) -> Tensor:
    return unwrap(ext().colour_backward(D, fmap, w16, dI, da, dims, slope, plain, colour_consts(), wgmma))


@_colour_bwd.register_fake
def _(D, fmap, w16, dI, da, dims, slope, plain, wgmma):
    return D.new_empty(w16.shape)


def _setup_context(ctx, inputs, output):
    a = by_name(COLOUR_INPUTS, inputs)
    ctx.save_for_backward(a["D"], a["var"], a["w"], a["w16"], output[2])
    ctx.spec = ColourLevelSpec(taps="diamond15", width=a["dims"][1], hidden_layers=a["dims"][3],
                               leaky_slope=a["slope"], apply_mode="plain" if a["plain"] else "softmax",
                               noise_input=a["noise_input"])


def _backward(ctx, dI, da, dfmap):
    D, var, w, w16, fmap = ctx.saved_tensors
    need = by_name(COLOUR_INPUTS, ctx.needs_input_grad)
    spec = ctx.spec
    dI = torch.zeros_like(D) if dI is None else dI.contiguous()
    da = D.new_zeros((D.shape[0], 1, *D.shape[2:])) if da is None else da.contiguous()
    if need["D"] or need["var"]:
        # Gradients to the details themselves (never needed by kpnt.model,
        # whose D and var come from the data): the reference level around the
        # fused MLP, differentiated by autograd, gives all three at once.
        from kpnt.ref.colour_level import colour_level

        with torch.enable_grad():
            D_ = D.detach().requires_grad_(need["D"])
            var_ = var.detach().requires_grad_(need["var"])
            w_ = w.detach().requires_grad_()
            I_, a_ = colour_level(D_, var_, unpack(w_, spec.mlp.as_tuple()), spec, mlp_fn=dispatch_mlp)
            wrt = {n: t for n, t in (("D", D_), ("var", var_), ("w", w_)) if n == "w" or need[n]}
            got = dict(zip(wrt, torch.autograd.grad([I_, a_], list(wrt.values()), [dI, da])))
        return grads(COLOUR_INPUTS, D=got.get("D"), var=got.get("var"), w=got["w"] if need["w"] else None)
    if not need["w"]:
        return grads(COLOUR_INPUTS)
    dims = list(spec.mlp.as_tuple())
    return grads(COLOUR_INPUTS, w=_colour_bwd(D, fmap, w16, dI, da, dims, spec.leaky_slope,
                                              spec.apply_mode == "plain", use_wgmma_backward(D, dims)))


_colour_fwd.register_autograd(_backward, setup_context=_setup_context)


def _check_image(t, name: str, like: Tensor | None = None) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"fused colour_level: {name} must be a tensor, got {type(t).__name__}")
    if not t.is_cuda:
        raise ValueError(f"fused colour_level: {name} must be on a CUDA device, got {t.device}")
    if t.dtype != torch.float32:
        raise ValueError(f"fused colour_level: {name} must be float32, got {t.dtype} (use backend='torch' for others)")
    if like is not None and (t.shape != like.shape or t.device != like.device):
        raise ValueError(f"fused colour_level: {name} must be {tuple(like.shape)} on {like.device}, "
                         f"got {tuple(t.shape)} on {t.device}")


def colour_level(D: Tensor, var: Tensor, weights: Sequence[Tensor], spec: ColourLevelSpec) -> tuple[Tensor, Tensor]:
    """:func:`kpnt.ref.colour_level.colour_level` on the fused kernels: same
    arguments, same results within f16 tolerance.

    Args:
        D, var: (N, 3, h, w) float32 CUDA.
        weights: the colour MLP of shape ``spec.mlp`` (a list, or
            :class:`kpnt.ops.weights.MlpWeights`: packed once for all levels).
        spec: a spec the capability table accepts
            (:func:`kpnt.ops.capability.colour_problem`).
    Returns:
        ``(I (N, 3, h, w), a (N, 1, h, w))``.
    """
    _check_image(D, "D")
    if D.dim() != 4 or D.shape[1] != 3:
        raise ValueError(f"fused colour_level: D must be (N, 3, h, w), got {tuple(D.shape)}")
    _check_image(var, "var", D)
    for i, wi in enumerate(weights):
        if wi.device != D.device:
            raise ValueError(f"fused colour_level: weights[{i}] is on {wi.device}, D on {D.device}")
    w = as_weights(weights)
    dims = list(spec.mlp.as_tuple())
    I, a, _ = _colour_fwd(D.contiguous(), var.contiguous(), w.packed(), w.half(), dims, float(spec.leaky_slope),
                          spec.apply_mode == "plain", bool(spec.noise_input), use_wgmma(D, dims))
    return I, a
