"""The guide's projection block as one fused kernel (inference only):
``relu(z + P relu(conv3x3(z, W) + b) + c)`` for float16 channels-last
``z`` of 64 channels (``kernels/guide_block.cuh``), the twin of
:func:`kpnt.ref.guide.proj_block`.

cuDNN runs the block as two calls whose hidden activation ``h`` goes through
device memory; the fused kernel keeps ``h`` on the chip (docs/KERNELS.md,
session 24)."""
from __future__ import annotations

import torch

from kpnt.ops._cuda.extension import ext, unwrap

#: Channels the kernel is compiled for (kernels/fused_mlp.cuh kGuideBlockWidth).
WIDTH = 64

#: Image rows per tile: 8 (4 warps, 2 blocks a multiprocessor) or 16 (8
#: warps, 1 block); chosen by tools/projblock_probe (docs/KERNELS.md).
TILE_ROWS = 8


def fused_proj_block(z: torch.Tensor, w: torch.Tensor, b: torch.Tensor, p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """One projection block: ``z`` (N, 64, H, W) float16 channels-last on a
    GPU, ``w`` (64, 64, 3, 3) and ``p`` (64, 64, 1, 1) float16, ``b`` and
    ``c`` (64,).  Returns a new tensor like ``z``; no autograd."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (z, w, b, p, c)):
        raise ValueError("guide block: the fused projection block is inference only (run it under torch.no_grad())")
    return unwrap(ext().guide_proj_block(z, w, b, p, c, TILE_ROWS))
