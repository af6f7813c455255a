"""The fused per-pixel MLP (plain and grouped) as a differentiable op.

Layers (gsplat / flash-attention style): the kernel is a ``torch.library``
custom op (``kpnt::mlp_fwd``, ``kpnt::mlp_bwd``; for training 128-wide
MLPs ``kpnt::mlp_fwd_store`` and ``kpnt::mlp_bwd_stored``) with a fake (meta)
implementation, so it traces under ``torch.compile``; the backward is
attached with ``register_autograd``; the public functions check their
arguments (naming the argument, what was expected and what came).

Batch granularity: the kernels work on tiles of 128 pixels but mask the rows
past the end themselves (loads read zeros, stores are skipped, padded rows
carry zero gradient), so no padded copy of the pixel batch is ever made here:
any ``P >= 0`` is accepted as it is.

Precision: weights and activations are float16 on the tensor cores with
float32 accumulation; inputs, outputs and gradients are float32.  Expect a
relative error of about 1e-3 on the outputs and a few 1e-3 on the weight
gradients against a float32 reference (``tests/cuda/test_fused_mlp.py``).

Example::

    >>> x = torch.randn(1000, 32, device="cuda")                # doctest: +SKIP
    >>> ws = [torch.randn(64, 32), *[torch.randn(64, 64)] * 5, torch.randn(16, 64)]
    >>> ws = [w.cuda().mul_(0.2).requires_grad_() for w in ws]  # doctest: +SKIP
    >>> y = fused_mlp(x, ws, slope=0.01)                        # (1000, 16)
    >>> y.square().sum().backward()                             # grads on every w
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch
from torch import Tensor

from kpnt.ops._cuda.extension import ext, unwrap
from kpnt.ops._cuda.glue import by_name, grads, input_names
from kpnt.ops._cuda.guide_block import wgmma_built
from kpnt.ops.weights import as_weight_sets, as_weights

log = logging.getLogger(__name__)

#: Whether the forward of 64-wide MLPs runs on the wgmma kernel
#: (``kernels/mlp_wgmma.cuh``, Hopper, kernels built for 9.0a) instead of
#: mma.sync.  On an H100 (session 27, tools/mlp_call_cost.py and
#: tools/bench_kernels.py) the colour MLP's call at 4 M rows takes 0.47 ms
#: against mma.sync's 0.60 (9.0 against 7.0 Gpix/s), and the shipped models'
#: 24-MP forward 37.7 / 26.8 ms against 38.8 / 27.2 (Bayer / X-Trans,
#: tools/time_model.py).  Other GPUs stay on mma.sync (:func:`use_wgmma`).
WGMMA_FORWARD = True

#: Whether the backward runs on Hopper's warp-group MMA (wgmma) instead of
#: mma.sync, for this op and the colour and front levels alike:
#:
#: - hidden width 64: the in-block backward (``kernels/mlp_bwd_wgmma.cuh``:
#:   the recomputed forward, dA = dZ W and the weight gradients on wgmma).  On
#:   since session 28: on an H100 its gradients were mma.sync's bit for bit in
#:   a 5 003-row probe and within the f16 tolerances in every CUDA test,
#:   memcheck clean, and the colour MLP's forward + backward at 4 M rows took
#:   2.26 ms against 2.95 (1.86 against 1.42 Gpix/s;
#:   docs/bench/kernels_mlp_s28d_h100.txt).
#: - hidden width 128 (the shipped models): the split backward's weight-gradient
#:   pass (``kernels/mlp_dw_wgmma.cuh``), its data pass unchanged.  Session 29
#:   (H100, 4 M rows, the colour MLP): 4.41 ms against the mma.sync pass's
#:   6.76, reading its 13.3 GB at the device-copy ceiling; every CUDA test and
#:   memcheck clean (docs/bench/kernels_mlp_s29b_h100.txt).
#:
#: Other GPUs stay on mma.sync.
WGMMA_BACKWARD = True

#: Whether the training forward of 128-wide MLPs (this op, plain and
#: grouped; the split backward's shapes) stores every layer's activations and
#: their sign bits for the backward (``kpnt::mlp_fwd_store``), whose data pass
#: then neither reads x nor recomputes the forward.  The colour and front
#: levels recompute (their gradient policies need the MLP's output).  Session
#: 29 (H100, 4 M rows, the colour MLP): forward + backward 10.36 ms against the
#: recomputing backward's 11.71 in the same run, the gradients the same bits
#: (docs/bench/kernels_mlp_s29f_h100.txt).  It holds the workspace (about
#: 3.3 KB a row) from the forward to the backward.
STORE_FORWARD = True

_not_built_logged: set[int] = set()


#: Output widths the wgmma forward is compiled for (kernels/wgmma.cuh's N),
#: at hidden width 64 and at 128 (kernels/mlp_wgmma.cuh wg_fwd_ok).
WGMMA_OUTPUTS = (16, 32, 64)
WGMMA_OUTPUTS_128 = (16, 32, 64, 80, 128)
#: Whether the forward of 128-wide MLPs (this op's plain and storing forwards,
#: the colour and front levels) runs on the wgmma kernel where WGMMA_FORWARD is
#: on.  Session 29 (H100): the colour MLP at 4 M rows 1.28 ms against
#: mma.sync's 1.96 (3.28 against 2.14 Gpix/s); the shipped models at 24 MP
#: within noise either way (docs/bench/time_model_wgmma128_s29e_h100.txt).
WGMMA_FORWARD_128 = True
#: Input and output widths the 64-wide wgmma backward is compiled for
#: (kernels/mlp_bwd_wgmma.cuh WgBwd::shape_ok).
WGMMA_BACKWARD_WIDTHS = (16, 32, 64)
#: Hidden widths whose backward has a wgmma form: 64 (in-block) and 128
#: (the split backward's dW pass; any input and output width that is a
#: multiple of 8 up to 256, kernels/mlp_dw_wgmma.cuh WgDw::shape_ok).
WGMMA_BACKWARD_HIDDEN = (64, 128)


def use_wgmma(x: Tensor, dims: Sequence[int], switch: bool | None = None) -> bool:
    """Whether this forward runs on the wgmma kernel: ``switch`` (default
    :data:`WGMMA_FORWARD`) on, hidden width 64 and an output width of
    :data:`WGMMA_OUTPUTS` (or 128, :data:`WGMMA_FORWARD_128` and
    :data:`WGMMA_OUTPUTS_128`), and a GPU that runs the build's sm_90a code (asked
    once per device; other GPUs stay on mma.sync, logged once)."""
    on = WGMMA_FORWARD if switch is None else switch
    shape = ((dims[1] == 64 and dims[2] in WGMMA_OUTPUTS)
             or (dims[1] == 128 and WGMMA_FORWARD_128 and dims[2] in WGMMA_OUTPUTS_128))
    if not (on and shape and x.device.type == "cuda"):
        return False  # (a CPU x: tests/_fake_extension.py's stand-in for the extension)
    return _runs_sm90a(x)


def use_wgmma_backward(x: Tensor, dims: Sequence[int], switch: bool | None = None) -> bool:
    """Whether this backward runs on the wgmma kernels: ``switch`` (default
    :data:`WGMMA_BACKWARD`) on, a hidden width of :data:`WGMMA_BACKWARD_HIDDEN`
    with input and output widths that width's kernel is compiled for, and a
    GPU that runs the build's sm_90a code."""
    on = WGMMA_BACKWARD if switch is None else switch
    n_in, hidden, n_out = dims[0], dims[1], dims[2]
    if hidden == 64:
        shape = n_in in WGMMA_BACKWARD_WIDTHS and n_out in WGMMA_BACKWARD_WIDTHS
    else:
        shape = hidden == 128 and all(n % 8 == 0 and 0 < n <= 256 for n in (n_in, n_out))
    if not (on and hidden in WGMMA_BACKWARD_HIDDEN and shape and x.device.type == "cuda"):
        return False
    return _runs_sm90a(x)


def _runs_sm90a(x: Tensor) -> bool:
    """Whether x's GPU runs the build's sm_90a (wgmma) code; logged once per device where not."""
    index = x.device.index if x.device.index is not None else torch.cuda.current_device()
    if wgmma_built(index):
        return True
    if index not in _not_built_logged:
        _not_built_logged.add(index)
        log.info("fused_mlp: %s does not run the wgmma kernels (Hopper, kernels built for 9.0a): mma.sync",
                 torch.cuda.get_device_name(index))
    return False


def _mlp_fwd_impl(x: Tensor, w: Tensor, w16: Tensor, perm: Optional[Tensor], offsets: Optional[Tensor],
                  dims: list[int], slope: float, wgmma: bool) -> Tensor:
    # ``w`` (float32) is the autograd input; the kernels read ``w16``.
    return unwrap(ext().mlp_forward(x, w16, perm, offsets, dims, slope, wgmma))


MLP_INPUTS = input_names(_mlp_fwd_impl)
_mlp_fwd = torch.library.custom_op("kpnt::mlp_fwd", mutates_args=(), device_types="cuda")(_mlp_fwd_impl)


@_mlp_fwd.register_fake
def _(x, w, w16, perm, offsets, dims, slope, wgmma):
    return x.new_empty((x.shape[0], dims[2]))


@torch.library.custom_op("kpnt::mlp_bwd", mutates_args=(), device_types="cuda")
def _mlp_bwd(x: Tensor, w16: Tensor, perm: Optional[Tensor], offsets: Optional[Tensor], dy: Tensor, dims: list[int],
             slope: float, need_dx: bool, wgmma: bool) -> tuple[Tensor, Tensor]:
    dx, dw = unwrap(ext().mlp_backward(x, w16, perm, offsets, dy, dims, slope, need_dx, wgmma))
    return dx, dw


@_mlp_bwd.register_fake
def _(x, w16, perm, offsets, dy, dims, slope, need_dx, wgmma):
    dx = x.new_empty(x.shape) if need_dx else x.new_empty((0,))
    return dx, x.new_empty(w16.shape)


def _setup_context(ctx, inputs, output):
    a = by_name(MLP_INPUTS, inputs)
    ctx.save_for_backward(a["x"], a["w16"], a["perm"], a["offsets"])
    ctx.dims, ctx.slope = a["dims"], a["slope"]


def _backward(ctx, dy):
    x, w16, perm, offsets = ctx.saved_tensors
    need = by_name(MLP_INPUTS, ctx.needs_input_grad)
    if not (need["x"] or need["w"]):
        return grads(MLP_INPUTS)
    # The kernel recomputes the forward pass from x: nothing but x, the weights
    # and dL/dy is kept between forward and backward.
    dx, dw = _mlp_bwd(x, w16, perm, offsets, dy.contiguous(), ctx.dims, ctx.slope, need["x"],
                      use_wgmma_backward(x, ctx.dims))
    return grads(MLP_INPUTS, x=dx if need["x"] else None, w=dw if need["w"] else None)


_mlp_fwd.register_autograd(_backward, setup_context=_setup_context)


def _mlp_fwd_store_impl(x: Tensor, w: Tensor, w16: Tensor, perm: Optional[Tensor], offsets: Optional[Tensor],
                        dims: list[int], slope: float, wgmma: bool) -> tuple[Tensor, Tensor]:
    # ``w`` (float32) is the autograd input; the kernel reads ``w16``.
    y, work = unwrap(ext().mlp_forward_store(x, w16, perm, offsets, dims, slope, wgmma))
    return y, work


STORE_INPUTS = input_names(_mlp_fwd_store_impl)
_mlp_fwd_store = torch.library.custom_op("kpnt::mlp_fwd_store", mutates_args=(),
                                         device_types="cuda")(_mlp_fwd_store_impl)


@_mlp_fwd_store.register_fake
def _(x, w, w16, perm, offsets, dims, slope, wgmma):
    groups = 1 if w16.dim() == 1 else w16.shape[0]
    work = x.new_empty((ext().mlp_workspace_bytes(dims, x.shape[0], groups),), dtype=torch.uint8)
    return x.new_empty((x.shape[0], dims[2])), work


@torch.library.custom_op("kpnt::mlp_bwd_stored", mutates_args=(), device_types="cuda")
def _mlp_bwd_stored(x: Tensor, w16: Tensor, perm: Optional[Tensor], offsets: Optional[Tensor], dy: Tensor,
                    work: Tensor, dims: list[int], slope: float, need_dx: bool,
                    wgmma: bool) -> tuple[Tensor, Tensor]:
    dx, dw = unwrap(ext().mlp_backward_stored(x, w16, perm, offsets, dy, work, dims, slope, need_dx, wgmma))
    return dx, dw


@_mlp_bwd_stored.register_fake
def _(x, w16, perm, offsets, dy, work, dims, slope, need_dx, wgmma):
    dx = x.new_empty(x.shape) if need_dx else x.new_empty((0,))
    return dx, x.new_empty(w16.shape)


def _setup_store_context(ctx, inputs, output):
    a = by_name(STORE_INPUTS, inputs)
    ctx.save_for_backward(a["x"], a["w16"], a["perm"], a["offsets"], output[1])
    ctx.dims, ctx.slope = a["dims"], a["slope"]
    # No zeros for the workspace's gradient (autograd would fill a tensor of
    # the workspace's size, 13 GB at 4 M rows, on every backward: 4 ms on an H100).
    ctx.set_materialize_grads(False)


def _backward_store(ctx, dy, _dwork):
    x, w16, perm, offsets, work = ctx.saved_tensors
    need = by_name(STORE_INPUTS, ctx.needs_input_grad)
    if dy is None or not (need["x"] or need["w"]):
        return grads(STORE_INPUTS)
    dx, dw = _mlp_bwd_stored(x, w16, perm, offsets, dy.contiguous(), work, ctx.dims, ctx.slope, need["x"],
                             use_wgmma_backward(x, ctx.dims))
    return grads(STORE_INPUTS, x=dx if need["x"] else None, w=dw if need["w"] else None)


_mlp_fwd_store.register_autograd(_backward_store, setup_context=_setup_store_context)


def _forward(x: Tensor, w, perm: Optional[Tensor], offsets: Optional[Tensor], dims: list[int],
             slope: float) -> Tensor:
    """The op's forward: storing the activations where the backward will want
    them (:data:`STORE_FORWARD`, a 128-wide MLP, gradients asked for), else
    plain (the backward then recomputes)."""
    packed = w.packed()
    if (STORE_FORWARD and dims[1] == 128 and x.device.type == "cuda" and torch.is_grad_enabled()
            and (x.requires_grad or packed.requires_grad)):
        return _mlp_fwd_store(x, packed, w.half(), perm, offsets, dims, slope, use_wgmma(x, dims))[0]
    return _mlp_fwd(x, packed, w.half(), perm, offsets, dims, slope, use_wgmma(x, dims))


def mlp_dims(weights: Sequence[Tensor], grouped: bool = False) -> list[int]:
    """``[in, hidden, out, n_hidden]`` of a weight list, checking that it chains.

    ``weights`` are ``W0 (hidden, in)``, ``W1..W(n-1) (hidden, hidden)``,
    ``Wout (out, hidden)`` stored ``(out, in)``; with ``grouped`` each carries
    a leading group axis ``(G, out, in)``.
    """
    if len(weights) < 2:
        raise ValueError(f"fused_mlp: weights must hold at least 2 matrices (W0 and Wout), got {len(weights)}")
    nd = 3 if grouped else 2
    for i, w in enumerate(weights):
        if not isinstance(w, Tensor) or w.dim() != nd:
            shape = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
            raise ValueError(f"fused_mlp: weights[{i}] must be a {nd}-D tensor, got {shape}")
        if w.dtype != torch.float32:
            raise ValueError(f"fused_mlp: weights[{i}] must be float32, got {w.dtype}")
    hidden, n_in = weights[0].shape[-2:]
    n_out = weights[-1].shape[-2]
    for i, w in enumerate(weights):
        rows = n_out if i == len(weights) - 1 else hidden
        cols = n_in if i == 0 else hidden
        if tuple(w.shape[-2:]) != (rows, cols):
            raise ValueError(f"fused_mlp: weights[{i}] must be ({rows}, {cols}) (out, in), got {tuple(w.shape[-2:])}")
        if grouped and w.shape[0] != weights[0].shape[0]:
            raise ValueError(
                f"fused_mlp: weights[{i}] has {w.shape[0]} groups, weights[0] has {weights[0].shape[0]}"
            )
    return [int(n_in), int(hidden), int(n_out), len(weights) - 1]


def check_x(x: Tensor, dims: list[int], weights: Sequence[Tensor]) -> None:
    """``x`` is float32 ``(P, in)`` on the weights' CUDA device."""
    if not isinstance(x, Tensor):
        raise ValueError(f"fused_mlp: x must be a tensor, got {type(x).__name__}")
    if not x.is_cuda:
        raise ValueError(f"fused_mlp: x must be on a CUDA device for the fused kernels, got {x.device}")
    if x.dtype != torch.float32:
        raise ValueError(f"fused_mlp: x must be float32, got {x.dtype}")
    if x.dim() != 2 or x.shape[1] != dims[0]:
        raise ValueError(f"fused_mlp: x must be (P, {dims[0]}), got {tuple(x.shape)}")
    for i, w in enumerate(weights):
        if w.device != x.device:
            raise ValueError(f"fused_mlp: weights[{i}] is on {w.device}, x on {x.device}")


def fused_mlp(x: Tensor, weights: Sequence[Tensor], slope: float = 0.01) -> Tensor:
    """Per-pixel MLP on tensor cores, differentiable in ``x`` and every weight.

    Args:
        x: ``(P, in)`` float32 CUDA features, any ``P``.
        weights: ``[W0 (hidden, in), W1..W(n-1) (hidden, hidden), Wout (out, hidden)]``
            float32, bias-free, leaky ReLU after every matrix but the last
            (a list, or :class:`kpnt.ops.weights.MlpWeights`, packed once).
        slope: leaky ReLU negative slope (``>= 0``).

    Returns:
        ``(P, out)`` float32.
    """
    dims = mlp_dims(list(weights))
    check_x(x, dims, list(weights))
    return _forward(x.contiguous(), as_weights(weights), None, None, dims, float(slope))


def partition_by_class(cls: Tensor, groups: int) -> tuple[Tensor, Tensor]:
    """Pixel order grouped by class: ``(perm int32 (P,), offsets int32 (G+1,))``.

    Logical rows ``offsets[g]..offsets[g+1]-1`` are the pixels of class ``g``
    and ``perm`` maps them to memory rows.  The kernels read rows through
    ``perm`` (no gathered copy of ``x``); for a fixed CFA the result can be
    computed once and reused.
    """
    if cls.dim() != 1:
        raise ValueError(f"fused_mlp_grouped: cls must be (P,), got {tuple(cls.shape)}")
    if cls.dtype not in (torch.int32, torch.int64, torch.uint8, torch.int16):
        raise ValueError(f"fused_mlp_grouped: cls must be an integer tensor, got {cls.dtype}")
    cls = cls.to(torch.int64)
    counts = torch.bincount(cls, minlength=groups)  # raises on negative classes
    if counts.numel() != groups:
        raise ValueError(f"fused_mlp_grouped: class indices must be in [0, {groups}), got up to {counts.numel() - 1}")
    perm = torch.argsort(cls, stable=True).to(torch.int32)
    offsets = torch.zeros(groups + 1, dtype=torch.int32, device=cls.device)
    offsets[1:] = torch.cumsum(counts, 0).to(torch.int32)
    return perm, offsets


def fused_mlp_grouped(
    x: Tensor,
    cls: Tensor | tuple[Tensor, Tensor],
    weights: Sequence[Tensor],
    slope: float = 0.01,
) -> Tensor:
    """Per-pixel MLP with one weight set per pixel class (the mosaic front level).

    Args:
        x: ``(P, in)`` float32 CUDA features.
        cls: ``(P,)`` integer class of each pixel in ``[0, G)``, or the
            ``(perm, offsets)`` pair from :func:`partition_by_class`.
        weights: as for :func:`fused_mlp`, each with a leading group axis
            ``(G, out, in)``.
        slope: leaky ReLU negative slope.

    Returns:
        ``(P, out)`` float32: row ``p`` evaluated with the weights of ``cls[p]``.
    """
    dims = mlp_dims(weights, grouped=True)
    check_x(x, dims, weights)
    groups = int(weights[0].shape[0])
    if isinstance(cls, tuple):
        perm, offsets = cls
        if perm.shape != (x.shape[0],) or offsets.shape != (groups + 1,):
            raise ValueError(
                f"fused_mlp_grouped: (perm, offsets) must be ({x.shape[0]},) and ({groups + 1},), "
                f"got {tuple(perm.shape)} and {tuple(offsets.shape)}"
            )
    else:
        if cls.shape != (x.shape[0],):
            raise ValueError(f"fused_mlp_grouped: cls must be ({x.shape[0]},), got {tuple(cls.shape)}")
        perm, offsets = partition_by_class(cls, groups)
    w = as_weight_sets([[m[g] for m in weights] for g in range(groups)])
    return _forward(x.contiguous(), w, perm, offsets, dims, float(slope))


def dispatch_mlp(x: Tensor, weights: Sequence[Tensor], leaky_slope: float) -> Tensor:
    """:func:`kpnt.ref.mlp.mlp`'s signature on the fused kernel (any compiled shape)."""
    return fused_mlp(x, weights, leaky_slope)


def unpack(w: Tensor, dims: Sequence[int]) -> list[Tensor]:
    """Views of a packed weight vector as the (out, in) matrices."""
    n_in, hidden, n_out, nh = dims
    shapes = [(hidden, n_in)] + [(hidden, hidden)] * (nh - 1) + [(n_out, hidden)]
    mats, o = [], 0
    for r, c in shapes:
        mats.append(w[o:o + r * c].view(r, c))
        o += r * c
    return mats
