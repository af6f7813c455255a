"""The colour pyramid's down and up steps (:mod:`kpnt.ref.pyramid`) as one
fused kernel each for inference (``kernels/pyramid.cu``).

The reference builds a level from index selects (the mirror padding),
strided views, and a multiply and an add per filter tap and axis: some
twenty launches a level.  Each kernel computes an output value from its
inputs directly, with the reference's padding tables and its roundings in
its order, so the result is bitwise the reference's
(tests/cuda/test_pyramid.py).

In training (session 33) the pyramid of the data (four downs and four ups
a step, no gradient) runs on the kernels too, and so does the colour KPN's
output on its way up, whose gradient comes from a third kernel, up's
adjoint (:data:`FUSED_BACKWARD`): on the reference's passes these are
about 170 small kernel launches a training step (four downs of 18 ops, four
ups of 8, four ups with a backward of 8 + 8, counted on the CPU), here 12.
``down`` has no backward kernel (the model never needs one): where autograd
would need it, it is the reference's, by design, and nothing is logged.
"""
from __future__ import annotations

import torch

from kpnt.ops._cuda.extension import ext, unwrap
from kpnt.ref import pyramid as ref
from kpnt.ref.pad import _fold_tensor

#: Whether the cuda backend runs the pyramid on these kernels.  On since
#: session 28's first H100 call: its CUDA tests passed (bitwise the reference)
#: and ``tools/time_model.py --pyramid both`` gave 24-MP Bayer 33.0 ms against
#: 34.8 on the reference's passes, X-Trans 23.4 against 24.4
#: (docs/bench/time_model_s28a_h100.txt).
FUSED = True
#: Whether ``up`` of a tensor that needs a gradient runs on the kernel with
#: its adjoint kernel as the backward (:class:`_UpWithAdjoint`; session 33);
#: off, such calls run the reference's passes and their autograd.  On since
#: session 33's H100 call (tests against float64 autograd to 1e-6, memcheck
#: clean; the step's launches as in kpnt.ops._cuda.up_block.FUSED_BACKWARD).
FUSED_BACKWARD = True


def _fused_ok(x: torch.Tensor) -> bool:
    return FUSED and x.is_cuda and x.dtype == torch.float32 and x.dim() == 4


def _needs_backward(x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and x.requires_grad


class _UpWithAdjoint(torch.autograd.Function):
    """``up`` on the kernel, its backward on the adjoint kernel (``apply(c, H, W)``)."""

    @staticmethod
    def forward(ctx, c, H, W):
        return unwrap(ext().pyramid_up(c.contiguous(), int(H), int(W)))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        return unwrap(ext().pyramid_up_adjoint(g.contiguous())), None, None


def fused_pyramid_down(x: torch.Tensor) -> torch.Tensor:
    """:func:`kpnt.ref.pyramid.down` on the fused kernel (float32 CUDA, no
    gradient through it, :data:`FUSED` on); the reference otherwise."""
    if not _fused_ok(x) or _needs_backward(x):
        return ref.down(x)
    H, W = x.shape[-2:]
    dev = str(x.device)
    return unwrap(ext().pyramid_down(x.contiguous(), _fold_tensor(H, 2, 2, 0, H - 1, dev),
                                     _fold_tensor(W, 2, 2, 0, W - 1, dev)))


def fused_pyramid_up(c: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """:func:`kpnt.ref.pyramid.up` on the fused kernel (float32 CUDA,
    :data:`FUSED` on; where a gradient flows, with the adjoint kernel as its
    backward if :data:`FUSED_BACKWARD` is on); the reference otherwise."""
    H, W = size
    if not _fused_ok(c) or c.shape[-2:] != ((H + 1) // 2, (W + 1) // 2):
        return ref.up(c, size)                       # (a mismatch: the reference's error)
    if _needs_backward(c):
        return _UpWithAdjoint.apply(c, H, W) if FUSED_BACKWARD else ref.up(c, size)
    return unwrap(ext().pyramid_up(c.contiguous(), int(H), int(W)))
