"""The colour base to full resolution (:func:`kpnt.ref.up_block.up_block`)
as one fused kernel for inference (``kernels/up_block.cu``).

The reference runs each axis as two gathers, two multiplies, a subtraction
and an add over full-resolution tensors: a 24-MP forward calls it twice (U
and S), some twenty passes over 288 MB.  The kernel reads the small colour
base and writes each output value once, from the reference's own index and
weight tables with the reference's roundings, so its result is bitwise the
reference's (tests/cuda/test_up_block.py).

Where autograd needs a backward (training: U of the colour KPN's output),
the kernel's adjoint computes it (session 33, :data:`FUSED_BACKWARD`): the
reference's forward and backward are some 27 launches over full-resolution
tensors (gathers, multiplies, zero fills, scatter-adds), here two.
"""
from __future__ import annotations

import torch

from kpnt.mosaic.cfa import CFA
from kpnt.ops._cuda.extension import ext, unwrap
from kpnt.ref.up_block import up_block as ref_up_block, up_block_tables

#: The kernels that compute it (the same values): "flat", one output value a
#: thread (H100, session 27: 0.54 ms a 24-MP call, the two calls of a Bayer
#: forward 1.08 ms where the reference's passes took about 4), or "columns",
#: a thread a column walking the rows (no index division or column-table
#: read per value; H100, session 28: 0.294 ms against flat's 0.550 in the same
#: run, both bitwise the reference; docs/bench/up_block_s28b_h100.txt).
KERNELS = ("flat", "columns")
#: The one the model uses: "columns" since session 28 (faster, same values).
KERNEL = "columns"
#: Whether up_block of a tensor that needs a gradient runs on the kernel with
#: the adjoint kernel as its backward (:class:`_UpBlockWithAdjoint`, session
#: 33); off, such calls run the reference and its autograd.  On since session
#: 33's H100 call: its CUDA tests passed (the adjoint within 1e-6 of float64
#: autograd, both sensors, odd sizes), memcheck clean, and with the pyramid's
#: twin below the shipped bf16 step's launches fell 687 -> 398 (Bayer)
#: (docs/bench/callers_s33b_h100.txt).
FUSED_BACKWARD = True


class _UpBlockWithAdjoint(torch.autograd.Function):
    """up_block on the kernel, its backward on the adjoint kernel
    (``apply(o0, rows, cols, kernel)``, the tables of
    :func:`kpnt.ref.up_block.up_block_tables`)."""

    @staticmethod
    def forward(ctx, o0, rows, cols, kernel):
        ctx.tables, ctx.size = (*rows, *cols), tuple(o0.shape[-2:])
        return unwrap(ext().up_block(o0.contiguous(), *rows, *cols, kernel))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        return unwrap(ext().up_block_adjoint(g.contiguous(), *ctx.tables, *ctx.size)), None, None, None


def fused_up_block(o0: torch.Tensor, cfa: CFA, kernel: str | None = None) -> torch.Tensor:
    """:func:`kpnt.ref.up_block.up_block` on the fused kernel (``kernel``, one
    of :data:`KERNELS`; default :data:`KERNEL`) for a float32 CUDA ``o0``;
    where it needs a gradient, with the adjoint kernel as its backward
    (:data:`FUSED_BACKWARD` on; off, the reference)."""
    needs_backward = torch.is_grad_enabled() and o0.requires_grad
    if o0.dtype != torch.float32 or not o0.is_cuda or (needs_backward and not FUSED_BACKWARD):
        return ref_up_block(o0, cfa)
    rows, cols = up_block_tables(o0, cfa)
    if needs_backward:
        return _UpBlockWithAdjoint.apply(o0, rows, cols, kernel or KERNEL)
    return unwrap(ext().up_block(o0.contiguous(), *rows, *cols, kernel or KERNEL))
