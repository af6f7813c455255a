"""The guide op (issue 13): the convolutional demosaicer whose residual
sharpens the front level's smooth estimate (reference and maths:
:mod:`kpnt.ref.guide`).

PyTorch convolutions on every device (cuDNN on a GPU, half precision at
inference there, each layer's bias and ReLU fused into its convolution by
cuDNN).  One exception, behind :data:`FUSED_BLOCK`: in GPU inference on
the ``'cuda'`` backend on a Hopper GPU (the kernels built as sm_90a), a
projection guide of width 64 (the shipped Bayer guide) runs each block
after the first as one fused wgmma kernel
(:mod:`kpnt.ops._cuda.guide_block`), whose hidden activation never reaches
device memory.  Other widths and other GPUs keep cuDNN's two calls a block,
logged once.  Behind :data:`FUSED_START` and :data:`FUSED_FINISH`, in GPU
inference on the ``'cuda'`` backend, the network's input is built in one
kernel (:mod:`kpnt.ops._cuda.guide_start`), and its float16 output scaled,
unpacked, cropped and added to ``U`` in another
(:mod:`kpnt.ops._cuda.guide_finish`), both bitwise the reference's.
Behind :data:`FUSED_TRAIN`, while a projection guide trains on a GPU on the
``'cuda'`` backend, its network is one autograd node with its backward
written out (:mod:`kpnt.ref.guide_backward`) and its elementwise passes on
kernels (:mod:`kpnt.ops._cuda.guide_train`).
"""
from __future__ import annotations

import logging

import torch

from kpnt.ops.dispatch import OPS, implementation
from kpnt.ref.guide import guide_residual, hidden_layers

log = logging.getLogger(__name__)

#: Whether GPU inference may run projection blocks on the fused kernel.  On
#: since session 26, whose H100 call ran the wgmma kernel inside kpnt: every
#: CUDA test passed (150; the block against cuDNN and float64, the whole guide
#: and model), memcheck clean, 24-MP Bayer 41.9 ms against 47.4 on cuDNN
#: (docs/bench/time_model_s26_h100.txt); 40.3 ms with the prefetching
#: kernel launched since (time_model_s26b_h100.txt).  Off, the blocks run on cuDNN.
FUSED_BLOCK = True

#: Whether GPU inference on the 'cuda' backend runs the guide's last step
#: (scale, unpack, crop, add to U) as one fused kernel
#: (:mod:`kpnt.ops._cuda.guide_finish`, bitwise the reference's).  On since
#: session 28's first H100 call: its CUDA tests passed (285 in all) and
#: ``tools/time_model.py --guide-ends each`` gave 24-MP Bayer 33.8 ms with it
#: alone, 32.6 with both ends fused, against 34.8 on the reference's passes
#: (X-Trans 23.2 / 22.5 / 24.0; docs/bench/time_model_s28a_h100.txt).
FUSED_FINISH = True
#: The same for its first step, the network's input (:mod:`kpnt.ops._cuda.guide_start`,
#: bitwise the reference's :func:`kpnt.ref.guide.start`).  On since the same
#: call: Bayer 33.1 ms with it alone against 34.8 (X-Trans 23.3 against 24.0).
FUSED_START = True

#: Whether a projection guide training on a GPU on the 'cuda' backend runs
#: its network as :class:`kpnt.ref.guide_backward.GuideNetwork` with the
#: fused elementwise passes (:mod:`kpnt.ops._cuda.guide_train`); off, autograd
#: runs :func:`kpnt.ref.guide._network` as on the reference.  On since session
#: 31's H100 calls: 392 CUDA tests, bench 151/151 checks (the shipped guides'
#: gradients against the f16-rounding float64 reference: 2.8e-4 Bayer, 1.4e-3
#: X-Trans), memcheck clean, parity within 0.05 dB over 2 seeds a sensor; the
#: shipped graphed step 28.5 -> 17.8 ms (Bayer), 11.3 -> 8.5 ms (X-Trans)
#: (docs/bench/kernels_s31c_h100.txt).
FUSED_TRAIN = True

_width_logged: set[int] = set()
_train_logged: set[str] = set()
_device_logged: set[str] = set()


def _fused_block(x: torch.Tensor, weights, proj: bool, backend: str):
    """The fused projection-block op for this call, or None (cuDNN): only
    with :data:`FUSED_BLOCK` on, for GPU inference of a projection guide on
    the 'cuda' backend, at the width its kernel is compiled for, on a GPU
    that runs the build's wgmma kernel (Hopper)."""
    if not (FUSED_BLOCK and proj and x.is_cuda and not torch.is_grad_enabled()):
        return None
    layers = hidden_layers(weights, proj)
    if len(layers) < 2:
        return None
    impl = implementation("guide_proj_block", backend, x.device)
    if impl is OPS["guide_proj_block"]:
        return None
    from kpnt.ops._cuda.guide_block import WIDTH, wgmma_built

    width = int(layers[1][0].shape[0])
    if width != WIDTH or layers[1][0].shape[1] != WIDTH:
        if width not in _width_logged:
            _width_logged.add(width)
            log.info("guide: projection blocks of width %d run on cuDNN (the fused block kernel is compiled for "
                     "width %d)", width, WIDTH)
        return None
    device = torch.device(x.device.type, x.device.index if x.device.index is not None else torch.cuda.current_device())
    if not wgmma_built(device.index):
        if str(device) not in _device_logged:
            _device_logged.add(str(device))
            log.info("guide: projection blocks run on cuDNN on %s (%s): the fused block's wgmma kernel needs a "
                     "Hopper GPU and kernels built for 9.0a, and its mma.sync kernel is no faster than cuDNN",
                     device, torch.cuda.get_device_name(device))
        return None
    return impl


def _fused_end(op: str, switch: bool, x: torch.Tensor, backend: str):
    """The fused implementation of the guide's ``op`` ('guide_start' or
    'guide_finish') for GPU inference on the 'cuda' backend with ``switch``
    on, else None (the reference's passes)."""
    if not (switch and x.is_cuda and not torch.is_grad_enabled()):
        return None
    impl = implementation(op, backend, x.device)
    return None if impl is OPS[op] else impl


def _fused_start(x: torch.Tensor, backend: str):
    """The fused :func:`kpnt.ref.guide.start` (:data:`FUSED_START`), or None."""
    return _fused_end("guide_start", FUSED_START, x, backend)


def _fused_finish(x: torch.Tensor, backend: str):
    """The fused :func:`kpnt.ref.guide.finish` (``U + R`` from the network's
    output in one pass; :data:`FUSED_FINISH`), or None."""
    return _fused_end("guide_finish", FUSED_FINISH, x, backend)


def _fused_network(x: torch.Tensor, weights, proj: bool, train_dtype: torch.dtype | None, backend: str):
    """The fused training network op for this call (:data:`FUSED_TRAIN`), or
    None (autograd's): for a projection guide training on a GPU on the
    'cuda' backend, in a dtype and width its kernels take (the activity
    probes keep autograd's layers: :func:`kpnt.ref.guide.guide_residual`)."""
    if not (FUSED_TRAIN and proj and x.is_cuda and torch.is_grad_enabled()):
        return None
    impl = implementation("guide_network", backend, x.device)
    if impl is OPS["guide_network"]:
        return None
    from kpnt.ops._cuda.guide_train import supported

    dtype = train_dtype or torch.float32
    if not supported(x, weights, dtype):
        key = f"{dtype} {tuple(weights[0].shape)}"
        if key not in _train_logged:
            _train_logged.add(key)
            log.info("guide: training runs on autograd's layers for %s, width %d (the fused passes take float32 "
                     "and bfloat16, widths a multiple of 8)", dtype, int(weights[0].shape[0]))
        return None
    return impl


def guide(x: torch.Tensor, U: torch.Tensor, noise: torch.Tensor, cfa, weights, skip: bool = False,
          pack: int = 1, train_dtype: torch.dtype | None = None, proj: bool = False,
          backend: str = "auto") -> torch.Tensor:
    """``U + R``: the smooth estimate corrected by the guide (shapes and
    ``train_dtype``, ``proj`` as :func:`kpnt.ref.guide.guide_residual`;
    ``backend`` as the other ops: it decides whether GPU inference of a
    width-64 projection guide runs its blocks on the fused kernel, its ends
    on theirs, and whether its training runs on the fused passes)."""
    if x.dim() != 4 or x.shape[1] != 1 or U.shape[1] != 3 or U.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"guide: x (N, 1, H, W) and U (N, 3, H, W) of one size, got {tuple(x.shape)} and {tuple(U.shape)}")
    block = _fused_block(x, weights, proj, backend)
    finish, start = _fused_finish(x, backend), _fused_start(x, backend)
    network = _fused_network(x, weights, proj, train_dtype, backend)
    R = guide_residual(x, U, noise, cfa, weights, skip, pack, train_dtype, proj, block, finish, start, network)
    return R if finish is not None else U + R       # the fused finish returns U + R
