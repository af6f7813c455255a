"""The guide's last step, :func:`kpnt.ref.guide.finish` (``U + R``: the
network's output scaled by the brightness, unpacked to full resolution,
cropped and added to ``U``), as one fused kernel for inference
(``kernels/guide_finish.cu``).

The reference converts the network's float16 output to float32, scales
it, shuffles it to full resolution and adds it: four passes over ~300-MB
tensors at 24 MP.  The kernel reads each input value once and writes each
output once, with the reference's roundings, so its result is bitwise the
reference's (tests/cuda/test_guide_finish.py).  It has no backward: where
autograd needs one, the op is the reference's (by design; nothing is
logged).
"""
from __future__ import annotations

import torch

from kpnt.ops._cuda.extension import ext, unwrap
from kpnt.ref.guide import finish as ref_finish


def fused_guide_finish(U: torch.Tensor, r: torch.Tensor, s: torch.Tensor, Q: int, top: int, left: int) -> torch.Tensor:
    """:func:`kpnt.ref.guide.finish` on the fused kernel for CUDA tensors that
    need no gradient (``r`` float16 or float32, any layout); the reference
    otherwise."""
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in (U, r, s))
    if needs_grad or not (U.is_cuda and U.dtype == torch.float32 and s.dtype == torch.float32):
        return ref_finish(U, r, s, Q, top, left)
    return unwrap(ext().guide_finish(U.contiguous(), r, s, int(Q), int(top), int(left)))
