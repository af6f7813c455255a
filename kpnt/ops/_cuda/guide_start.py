"""The guide network's input, :func:`kpnt.ref.guide.start` (the packed
details and block means of ``U`` over the brightness ``s``, and the log
noise feature), as one fused kernel for inference
(``kernels/guide_start.cu``).

The reference gathers, pads and unshuffles the details, pads and pools
``U``, divides, concatenates and converts to float16 channels-last: about
ten passes at full or packed resolution.  The kernel reads each packed
position's window of ``x`` and ``U`` once and writes its inputs in float16
channels-last, with the reference's operations in the reference's order
(tests/cuda/test_guide_start.py compares bitwise).  It has no backward:
where autograd needs one, the op is the reference's (by design; nothing is
logged).
"""
from __future__ import annotations

import torch

from kpnt.mosaic.cfa import CFA
from kpnt.ops._cuda.extension import ext, unwrap
from kpnt.ref._cache import tensor_cache
from kpnt.ref.guide import (BRIGHTNESS_FLOOR, NOISE_FEATURE_CENTRE, NOISE_FEATURE_SCALE, _SIGMA_FLOOR, packing,
                            start as ref_start)


@tensor_cache(64)
def _pattern(pattern: bytes, period: int, device: str) -> torch.Tensor:
    """The CFA's (P, P) colour indices as int32 on the device, once per layout."""
    import numpy as np

    return torch.from_numpy(np.frombuffer(pattern, dtype=np.int64).reshape(period, period).astype(np.int32)).to(device)


def fused_guide_start(x: torch.Tensor, U: torch.Tensor, noise: torch.Tensor, cfa: CFA, pack: int = 1,
                      skip: bool = False) -> tuple[torch.Tensor, torch.Tensor, int, int, int]:
    """:func:`kpnt.ref.guide.start` on the fused kernel in inference (autograd
    off) for float32 CUDA tensors, ``z`` then float16 channels-last (what the
    guide's network takes); the reference otherwise, ``z`` float32.

    Also the reference for an image of one packed position: there PyTorch's
    channel mean sums (c0 + c2) + c1 (the reduced axis becomes the fastest,
    split over two threads), not the kernel's (c0 + c1) + c2."""
    if torch.is_grad_enabled() or not (x.is_cuda and x.dtype == U.dtype == noise.dtype == torch.float32):
        return ref_start(x, U, noise, cfa, pack, skip)
    N, _, H, W = x.shape
    Q, top, bottom, left, right = packing(cfa, pack, H, W)
    if (top + H + bottom) * (left + W + right) == Q * Q:
        return ref_start(x, U, noise, cfa, pack, skip)
    a, b = noise[:, 0].mean(1), noise[:, 1].mean(1)           # the reference's own means
    pattern = _pattern(cfa.pattern.tobytes(), cfa.period, str(x.device))
    z, s = unwrap(ext().guide_start(x.contiguous(), U.contiguous(), a.contiguous(), b.contiguous(), pattern, Q,
                                    [top, bottom, left, right], bool(skip),
                                    [BRIGHTNESS_FLOOR, _SIGMA_FLOOR, NOISE_FEATURE_CENTRE, NOISE_FEATURE_SCALE]))
    return z, s, Q, top, left
