"""The colour base to full resolution (:func:`kpnt.ref.up_block.up_block`)
as one fused kernel for inference (``kernels/up_block.cu``).

The reference runs each axis as two gathers, two multiplies, a subtraction
and an add over full-resolution tensors: a 24-MP forward calls it twice (U
and S), some twenty passes over 288 MB.  The kernel reads the small colour
base and writes each output value once, from the reference's own index and
weight tables with the reference's roundings, so its result is bitwise the
reference's (tests/cuda/test_up_block.py).

It has no backward: where autograd needs one (training), the op is the
reference's, whose autograd is the math's; that is the design, not a
fallback, so nothing is logged.
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


def fused_up_block(o0: torch.Tensor, cfa: CFA, kernel: str | None = None) -> torch.Tensor:
    """:func:`kpnt.ref.up_block.up_block` on the fused kernel (``kernel``, one
    of :data:`KERNELS`; default :data:`KERNEL`) for a float32 CUDA ``o0``
    that needs no gradient; the reference otherwise."""
    if torch.is_grad_enabled() and o0.requires_grad or o0.dtype != torch.float32 or not o0.is_cuda:
        return ref_up_block(o0, cfa)
    rows, cols = up_block_tables(o0, cfa)
    return unwrap(ext().up_block(o0.contiguous(), *rows, *cols, kernel or KERNEL))
