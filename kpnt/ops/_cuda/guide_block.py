"""The guide's projection block as one fused kernel (inference only):
``relu(z + P relu(conv3x3(z, W) + b) + c)`` for float16 channels-last
``z`` of 64 channels, the twin of :func:`kpnt.ref.guide.proj_block`.

cuDNN runs the block as two calls whose hidden activation ``h`` goes through
device memory; the fused kernels keep ``h`` on the chip.  Two kinds
(docs/KERNELS.md, sessions 23-27):

- ``'wgmma'`` (``kernels/guide_block_wgmma.cuh``): Hopper's warp-group MMA,
  in sm_90a builds only (kpnt builds Hopper as sm_90a, :mod:`kpnt._backend`).
  A block is two halves on 8 x 16 tiles, each streaming its next tile's
  halo in while it computes this one: on an H100 1.18 ms a block at 24-MP
  Bayer size against cuDNN's 1.87 (in tools/projblock_probe, session 27):
  the one the guide op uses on Hopper
  while :data:`kpnt.ops.guide.FUSED_BLOCK` is on (the default).
- ``'mma8'`` / ``'mma16'`` (``kernels/guide_block.cuh``): mma.sync, sm_80 and
  later, 8 or 16 image rows a tile.  On an H100 no faster than cuDNN (1.81
  and 1.91 ms), so the guide op leaves other GPUs on cuDNN; kept as the
  measured baseline of the probe and for GPUs where it may pay.
"""
from __future__ import annotations

import torch

from kpnt.ops._cuda.extension import ext, unwrap

#: Channels the kernels are compiled for (kernels/fused_mlp.cuh kGuideBlockWidth).
WIDTH = 64

#: The kernels by name (kernels/fused_mlp.cuh GuideBlockKernel).
KERNELS = ("wgmma", "mma8", "mma16")


def wgmma_built(device_index: int) -> bool:
    """Whether GPU ``device_index`` runs this build's sm_90a code, i.e. the
    ``'wgmma'`` kernel (a Hopper GPU and an arch list with ``9.0a``).  The
    extension asks the GPU once per device (a sync) and remembers."""
    return bool(unwrap(ext().guide_block_wgmma_built(device_index)))


def fused_proj_block(z: torch.Tensor, w: torch.Tensor, b: torch.Tensor, p: torch.Tensor, c: torch.Tensor,
                     kernel: str = "wgmma") -> torch.Tensor:
    """One projection block: ``z`` (N, 64, H, W) float16 channels-last on a
    GPU, ``w`` (64, 64, 3, 3) and ``p`` (64, 64, 1, 1) float16, ``b`` and
    ``c`` (64,); ``kernel`` one of :data:`KERNELS`.  Returns a new tensor
    like ``z``; no autograd."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in (z, w, b, p, c)):
        raise ValueError("guide block: the fused projection block is inference only (run it under torch.no_grad())")
    return unwrap(ext().guide_proj_block(z, w, b, p, c, kernel))
