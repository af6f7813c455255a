"""The projection guide's network while it trains on the fused backend:
:class:`kpnt.ref.guide_backward.GuideNetwork` (its forward and backward
written out, on channels-last tensors) with its two elementwise passes on
CUDA kernels (``kernels/guide_train.cu``):

- ``bias_relu_``: a convolution's bias, the projection block's residual add
  and the ReLU, in place on the convolution's output: one pass where
  autograd's float32 path makes three (and cuDNN's layout conversions);
- ``relu_grad_sum``: the ReLU's backward, the residual stream's gradient add
  and the bias's gradient (the channel sums) in one pass where PyTorch makes
  three, its bias reduction the slowest of them (~75 us a layer in bfloat16
  on an H100, session 31);
- ``proj_forward`` (bfloat16, widths 32 / 64 / 128): a projection block's
  1x1 convolution, bias, residual add and ReLU in one pass (session 33):
  the GEMM's output never stored (float32 twins on TF32,
  :data:`FUSED_PROJ_TF32` at :data:`TF32_WIDTHS`, session 34); with
  :data:`FUSED_PROJ_PROLOGUE` also the block's 3x3 epilogue before it;
- ``proj_backward`` (bfloat16, widths 32 / 64 / 128): a projection block's
  backward through its 1x1 convolution in one pass (session 32): the two
  ``relu_grad_sum`` passes around it and the 1x1's two gradient GEMMs, with
  ``gm`` and ``h`` read once and ``dh`` never stored.

The other convolutions and their gradients are cuDNN's, as on the reference.
The kernels take CUDA float32 and bfloat16 activations whose channels are a
multiple of 8; :func:`supported` tells, and :mod:`kpnt.ops.guide` routes only
such guides here (others keep autograd's path, logged once).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch

from kpnt.ops._cuda.extension import ext, unwrap
from kpnt.ops._cuda.guide_block import wgmma_built
from kpnt.ref.guide_backward import GuideNetwork, Primitives

#: Activation dtypes the kernels take.
KERNEL_DTYPES = (torch.float32, torch.bfloat16)

#: Whether a bfloat16 guide's projection blocks run their backward through the
#: 1x1 convolution as one kernel (``guide_proj_backward``: both ReLU backwards,
#: ``dh = gm P`` and ``dP = gm^T h`` on the tensor cores, the three gradient
#: sums) instead of two passes and two GEMMs; float32 guides run it on the
#: TF32 twins (:data:`FUSED_PROJ_TF32`), other widths keep the two passes.
FUSED_PROJ_BACKWARD = True
#: The same for the forward: a bfloat16 guide's projection blocks run their
#: 1x1 convolution with its bias, residual add and ReLU as one kernel
#: (``guide_proj_forward``) instead of cuDNN's GEMM and a ``bias_relu`` pass.
#: On since session 33's H100 call: its tests passed (float64's value within
#: one bfloat16 rounding), memcheck clean, the shipped bf16 guide's fwd + bwd
#: 5.75 -> 5.45 ms (Bayer), 6.96 -> 4.85 (X-Trans) (guide_probe_s33b_h100.txt).
FUSED_PROJ_FORWARD = True
#: Whether a projection block's forward also does its 3x3 convolution's bias
#: and ReLU inside the projection kernel (``guide_proj_forward``'s
#: ``h_bias``: h made in place from the convolution's raw output as
#: ``bias_relu`` makes it, the same bits, then multiplied): one pass over h
#: fewer a block (``bias_relu`` took 0.78 ms of the graphed float32 Bayer
#: step, 0.35 of the bf16 one: sessions 34-35).  On since session 37's H200
#: calls (``docs/bench/*_s37{a,b}_h200.txt``): its bitwise tests passed,
#: memcheck clean; graphed steps off -> on over three rounds, float32 Bayer
#: 13.13 / 13.15 / 13.18 -> 13.02 / 13.03 / 13.06 ms, float32 X-Trans
#: 7.08 / 7.09 / 7.10 -> 6.95 / 6.98 / 6.99, bf16 X-Trans 5.27 / 5.28 / 5.31
#: -> 5.22 / 5.24 / 5.27; bf16 Bayer the other way, 7.41 / 7.41 / 7.46 ->
#: 7.45 / 7.48 / 7.50 (on by default because the float32 guide is training's
#: default).
FUSED_PROJ_PROLOGUE = True
#: Hidden widths the fused projection kernels are compiled for (bfloat16
#: and the float32 twins).
PROJ_WIDTHS = (32, 64, 128)
#: Whether a float32 guide's projection blocks run on the kernels' float32
#: twins (the products on TF32, as cuDNN runs a float32 1x1 convolution when
#: ``torch.backends.cudnn.allow_tf32`` is on; never when it is off), at the
#: widths of :data:`TF32_WIDTHS`.  On since session 34's first H100 call
#: (``docs/bench/*_s34a_h100.txt``): tests/cuda/test_guide_train.py 33 passed
#: (TF32-rounded float64 within 3e-5), memcheck clean, the shipped Bayer
#: graphed step (float32 guide, width 64) 17.02 -> 14.84 ms.
FUSED_PROJ_TF32 = True
#: Whether a backward pass reduces its projection blocks' gradient sums in
#: one launch at its end (:meth:`CudaPrimitives.deferred_sums`) instead of
#: one a block.  On since session 35's H100 call
#: (``docs/bench/*_s35a_h100.txt``, ``tools/gpu_calls/s35_one.sh``): its
#: tests passed, memcheck clean; the guide backward's ``aten::sum`` launches
#: 18 -> 4 (0.185 -> 0.057 ms of the graphed float32 Bayer step); the graphed
#: bf16 steps 8.34 -> 8.21 ms (Bayer), 5.47 -> 5.43 (X-Trans).
DEFER_SUMS = True
#: Whether a float32 guide's 3x3 convolutions (C -> C at :data:`WGRAD_WIDTHS`)
#: take their weight gradient from kpnt's TF32 kernel (``guide_wgrad``,
#: kernels/guide_wgrad.cu) instead of cuDNN's, which ran at 87-100 TFLOP/s at
#: the shipped guides' shapes on an H100 (session 38,
#: ``docs/bench/convs_s38a_h100.txt``: 2.95 ms of the graphed float32 Bayer
#: step).  Like the projection twins, only while cuDNN's TF32 is on.
#: Sessions 39-41 left it off: faster than cuDNN alone at 4 x 64 x 256 x 256
#: but not inside the step (0.204 ms a call against cuDNN's 0.196).  Session
#: 42 found why with ncu: the step's Bayer grid is 258 wide, not 256, and
#: strips of 64 left a fifth strip of 2 positions that cost a full one.  With
#: strips of equal width and equal runs of lines a block (H100,
#: ``tools/gpu_calls/s42_one.sh``,
#: ``docs/bench/wgrad_{convs,steps}_s42_h100.txt``): 0.164 ms against
#: cuDNN's 0.215 at 4 x 64 x 258 x 258, and the graphed float32 Bayer step
#: 13.90 / 13.87 -> 13.29 / 13.30 ms over two off / on rounds.
#: On, for :data:`WGRAD_WIDTHS`.
FUSED_WGRAD = True
#: Channel counts the weight-gradient kernel is compiled for.
WGRAD_COMPILED_WIDTHS = (64, 128)
#: Of those, the widths routed to it: 64 (the Bayer guide).  Not 128: at the
#: X-Trans guide's 4 x 128 x 86 x 86 it takes 0.099 ms against cuDNN's 0.074
#: (same run); with it on, the float32 X-Trans step went 6.84 -> 7.29 ms
#: in session 39.
WGRAD_WIDTHS = (64,)
#: Whether the 64-channel weight gradient runs on the kernel's Hopper form
#: (``wgrad_wgmma_kernel``: warp-group MMA m64n64k8 in TF32, A (z at the taps)
#: from registers, B = gh^T from shared memory, the next row prepared under
#: this row's products; session 43) where the GPU runs the build's sm_90a
#: code, instead of its mma.sync form (other GPUs).  H100, same runs
#: (``docs/bench/wgrad_wgmma_{convs2,steps_s43c}*``): 0.128 ms against the
#: mma.sync form's 0.163 and cuDNN's 0.210 at 4 x 64 x 258 x 258; graphed
#: float32 Bayer step 13.34 / 13.33 -> 12.79 / 12.83 ms over two off / on
#: rounds (X-Trans, 128 channels on cuDNN, the control: 6.62 / 6.62 -> 6.61 /
#: 6.60).  On, for :data:`WGRAD_WGMMA_WIDTHS`.
WGRAD_WGMMA = True
#: Widths routed to the Hopper form: 64 (Bayer) and, since session 44, 128
#: (the X-Trans guide, four blocks a run of lines: 64 output x 64 input
#: channels each).  On the plain wgmma form 128 beat cuDNN only just (0.0676
#: ms against 0.0723 at 4 x 128 x 86 x 86) and the X-Trans step did not move
#: (session 43); on the warp-specialized form it takes 0.0589 ms against
#: cuDNN's 0.0720 (``docs/bench/wgrad_ws_rounda_convs_s44_h100.txt``) and the
#: graphed float32 X-Trans step went 6.60 / 6.59 -> 6.48 / 6.49 ms over two
#: rounds (``wgrad_ws_widths_steps_s44_h100.txt``; H100).
WGRAD_WGMMA_WIDTHS = (64, 128)
#: Whether the Hopper form runs warp-specialized (``wgrad_wgmma_ws_kernel``:
#: three warp groups only multiply, rounding z to TF32 as they load it; a
#: fourth copies z and gh and writes B up to two rows ahead, handing rows over
#: through named barriers; setmaxnreg gives the multipliers 144 registers).
#: Written in session 43, run in session 44 (H100, same runs,
#: ``docs/bench/wgrad_ws_*_s44_h100.txt``): its tests give the wgmma form's
#: bits; synccheck and memcheck 0 errors; 0.111 ms against the wgmma form's
#: 0.130 and cuDNN's 0.209 at 4 x 64 x 258 x 258.  Graphed float32 Bayer step
#: 12.82 / 12.85 -> 12.69 / 12.68 ms over two off / on rounds with the
#: producer rounding z, 12.72 / 12.71 -> 12.59 / 12.59 more with the
#: multipliers rounding it.  compute-sanitizer's racecheck reports hazards on
#: its bar.arrive handoff; it does so too on a probe of that handoff whose
#: values are all right, and not on the probe's bar.sync form
#: (``tools/gpu_calls/racecheck_arrive_probe.cu``,
#: ``docs/bench/racecheck_probe_s44_h100.txt``).  On.
WGRAD_WGMMA_SPECIALIZED = True
#: Widths a float32 guide's projection blocks are routed to the twins at.
#: 128 (the X-Trans guide; its backward takes tiles of half the rows) since
#: session 35's H100 call: tests against float64 of TF32-rounded operands
#: passed, memcheck clean; with the deferred sums, the graphed float32
#: X-Trans step 7.59 -> 7.42 ms (``docs/bench/steps_{A,B}_s35a_h100.txt``).
TF32_WIDTHS = (32, 64, 128)


def supported(z: torch.Tensor, weights, dtype: torch.dtype) -> bool:
    """Whether the fused passes take a guide network of these ``weights``
    on ``z`` computing in ``dtype``: a CUDA input, a kernel dtype, and hidden
    widths that are a multiple of 8 (8..2048)."""
    width = int(weights[0].shape[0])
    return z.is_cuda and dtype in KERNEL_DTYPES and width % 8 == 0 and 8 <= width <= 2048


class CudaPrimitives(Primitives):
    """:class:`~kpnt.ref.guide_backward.Primitives` with the elementwise
    passes on the fused kernels (CUDA float32 / bfloat16 channels-last
    tensors; the extension raises a one-line ValueError for others)."""

    def __init__(self):
        self._sums: _BlockSums | None = None     # the open deferred_sums's buffer

    def bias_relu_(self, a, bias, z=None):
        unwrap(ext().guide_bias_relu_(a, bias, z))      # GuideNetwork passes float32 biases
        return a

    def relu_grad_sum(self, g, p, y):
        return unwrap(ext().guide_relu_grad_sum(_channels_last(g), _channels_last(p), y))

    def proj_forward(self, h, w, bias, z):
        if not (FUSED_PROJ_FORWARD and _projection_kernels(h)):
            return super().proj_forward(h, w, bias, z)
        return unwrap(ext().guide_proj_forward(h, w.contiguous(), bias, z))

    def block_forward(self, z, w, b, p, c):
        if not (FUSED_PROJ_PROLOGUE and FUSED_PROJ_FORWARD and _projection_kernels(z)):
            return super().block_forward(z, w, b, p, c)
        h = self.conv(z, w, 1)            # the 3x3's raw output: the kernel adds b and the ReLU, in place
        return h, unwrap(ext().guide_proj_forward(h, p.contiguous(), c, z, b))

    def proj_backward(self, g, p, y, h, w):
        if not (FUSED_PROJ_BACKWARD and _projection_kernels(g)):
            return super().proj_backward(g, p, y, h, w)
        args = (_channels_last(g), _channels_last(p), y, h, w.contiguous())
        slot = self._sums.take(g) if self._sums is not None else None
        if slot is None:
            return unwrap(ext().guide_proj_backward(*args))
        partial, sums = slot
        gm, gh = unwrap(ext().guide_proj_backward(*args, partial))
        C = g.shape[1]
        return gm, gh, sums[:C], sums[C:2 * C], sums[2 * C:].view(C, C, 1, 1)

    def conv_backward(self, grad, z, w, padding, need_input, bias=False):
        form = None if bias or padding != 1 else _wgrad_form(grad, w)
        if form is None:
            return super().conv_backward(grad, z, w, padding, need_input, bias)
        dz = None
        if need_input:
            dz = torch.ops.aten.convolution_backward(grad, z, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                     [True, False, False])[0]
        dw = unwrap(ext().guide_wgrad(_channels_last(grad), z, *form))     # (o, kh, kw, i)
        return dz, dw.permute(0, 3, 1, 2), None                      # (o, i, kh, kw), channels-last as cuDNN's

    @contextmanager
    def deferred_sums(self, blocks):
        if not DEFER_SUMS:
            yield
            return
        outer, self._sums = self._sums, _BlockSums(blocks)
        try:
            yield
            self._sums.reduce()
        finally:
            self._sums = outer


class _BlockSums:
    """The projection blocks' gradient sums (``dc``, ``db``, ``dP``) of one
    backward pass: each block's kernel writes its partial rows into a slot
    of one buffer, and one reduction at the end fills every block's sums."""

    def __init__(self, blocks: int):
        self.blocks, self.used = blocks, 0
        self.partial = self.sums = None

    def take(self, g: torch.Tensor):
        """``(partial rows, sums)`` for the next block like ``g``, or None
        (the slots are used up, or the block's shape differs from the first
        one's: the kernel reduces its own)."""
        rows, C = unwrap(ext().guide_proj_partial_rows(g)), g.shape[1]
        if self.partial is None:
            self.partial = torch.empty((self.blocks, rows, 2 * C + C * C), dtype=torch.float32, device=g.device)
            self.sums = torch.empty((self.blocks, 2 * C + C * C), dtype=torch.float32, device=g.device)
        if self.used == self.blocks or self.partial.shape[1:] != (rows, 2 * C + C * C):
            return None
        k, self.used = self.used, self.used + 1
        return self.partial[k], self.sums[k]

    def reduce(self):
        """Every taken slot's sums from its partial rows (one launch)."""
        if self.used:
            torch.sum(self.partial[:self.used], 1, out=self.sums[:self.used])


def _projection_kernels(t: torch.Tensor) -> bool:
    """Whether the projection kernels take activations like ``t``: bfloat16
    at :data:`PROJ_WIDTHS`; float32 at :data:`TF32_WIDTHS` with
    :data:`FUSED_PROJ_TF32` and cuDNN's TF32 on (the precision the unfused
    path's 1x1 convolutions then run at)."""
    if t.dtype == torch.bfloat16:
        return t.shape[1] in PROJ_WIDTHS
    return (t.dtype == torch.float32 and FUSED_PROJ_TF32 and torch.backends.cudnn.allow_tf32
            and t.shape[1] in TF32_WIDTHS)


def _wgrad_form(g: torch.Tensor, w: torch.Tensor) -> tuple[bool, bool] | None:
    """The weight-gradient kernel's form, ``(wgmma, specialized)`` as
    ``guide_wgrad`` takes it, for a 3x3 convolution of weights ``w`` whose
    output gradient is ``g``; None where cuDNN's weight gradient runs.  The
    kernel takes float32, C -> C at :data:`WGRAD_WIDTHS` (or in its Hopper
    form at :data:`WGRAD_WGMMA_WIDTHS`), with :data:`FUSED_WGRAD` and cuDNN's
    TF32 on."""
    C = g.shape[1]
    if not (FUSED_WGRAD and g.dtype == torch.float32 and torch.backends.cudnn.allow_tf32
            and tuple(w.shape) == (C, C, 3, 3)):
        return None
    wgmma = _wgrad_wgmma(g)
    if not (C in WGRAD_WIDTHS or wgmma):
        return None
    return wgmma, wgmma and WGRAD_WGMMA_SPECIALIZED


def _wgrad_kernel(g: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether the weight-gradient kernel (any form) takes the convolution (:func:`_wgrad_form`)."""
    return _wgrad_form(g, w) is not None


def _wgrad_wgmma(g: torch.Tensor) -> bool:
    """Whether the weight-gradient kernel takes ``g`` in its Hopper form:
    :data:`WGRAD_WGMMA` on, ``g``'s channels in :data:`WGRAD_WGMMA_WIDTHS`
    and a GPU that runs the build's sm_90a code (elsewhere the mma.sync form
    at :data:`WGRAD_WIDTHS`, cuDNN otherwise)."""
    if not (WGRAD_WGMMA and g.shape[1] in WGRAD_WGMMA_WIDTHS and g.device.type == "cuda"):
        return False
    return wgmma_built(g.device.index if g.device.index is not None else torch.cuda.current_device())


def _channels_last(t: torch.Tensor | None) -> torch.Tensor | None:
    """A gradient as the kernels take it (autograd may hand another layout)."""
    return None if t is None else t.contiguous(memory_format=torch.channels_last)


class CudnnEpiloguePrimitives(CudaPrimitives):
    """:class:`CudaPrimitives` with each forward convolution's epilogue
    (bias, residual add, ReLU) inside cuDNN's convolution
    (``torch.cudnn_convolution_relu`` / ``_add_relu``, as GPU inference runs
    the guide): one pass fewer a layer, if cuDNN has a fused plan for the
    dtype (:data:`CUDNN_EPILOGUE`)."""

    def block_forward(self, z, w, b, p, c):
        return Primitives.block_forward(self, z, w, b, p, c)   # cuDNN's epilogue, not the kernel's prologue

    def conv_bias_relu(self, z, w, bias, padding, residual=None):
        b = bias.to(z.dtype)
        if residual is None:
            return torch.cudnn_convolution_relu(z, w, b, [1, 1], [padding, padding], [1, 1], 1)
        return torch.cudnn_convolution_add_relu(z, w, residual, 1.0, b, [1, 1], [padding, padding], [1, 1], 1)


#: Whether the forward's epilogues run inside cuDNN's convolutions
#: (:class:`CudnnEpiloguePrimitives`) instead of the bias_relu kernel.
CUDNN_EPILOGUE = False

_PRIMS = {False: CudaPrimitives(), True: CudnnEpiloguePrimitives()}


def fused_guide_network(z: torch.Tensor, weights, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """:func:`kpnt.ref.guide_backward.guide_network` with the fused
    elementwise passes (the ``'cuda'`` backend's ``guide_network`` op)."""
    return GuideNetwork.apply(z, dtype, _PRIMS[CUDNN_EPILOGUE], *weights)
