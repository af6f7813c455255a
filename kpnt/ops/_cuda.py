"""Autograd glue of kpnt's fused CUDA kernels.

Layers (gsplat / flash-attention style): the kernels are wrapped as
``torch.library`` custom ops (``kpnt::mlp_fwd``, ``kpnt::mlp_bwd``) with fake
(meta) implementations, so they trace under ``torch.compile``; the backward
is attached with ``register_autograd``; the public functions below check
their arguments (naming the argument, what was expected and what came) and
pack the weights.

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

from typing import Optional, Sequence

import torch
from torch import Tensor

from kpnt import _backend
from kpnt.ref._cache import tensor_cache


def _ext():
    return _backend.load()


def _unwrap(res):
    """The extension reports errors as ("ValueError" | "RuntimeError", message)
    tuples instead of raising through pybind11 (kernels/fused_mlp.cuh says why)."""
    if isinstance(res, tuple) and len(res) == 2 and isinstance(res[0], str):
        kind, msg = res
        raise (ValueError if kind == "ValueError" else RuntimeError)(msg)
    return res


# ---------------------------------------------------------------- custom ops


@torch.library.custom_op("kpnt::mlp_fwd", mutates_args=(), device_types="cuda")
def _mlp_fwd(
    x: Tensor, w: Tensor, perm: Optional[Tensor], offsets: Optional[Tensor], dims: list[int], slope: float
) -> Tensor:
    return _unwrap(_ext().mlp_forward(x, w, perm, offsets, dims, slope))


@_mlp_fwd.register_fake
def _(x, w, perm, offsets, dims, slope):
    return x.new_empty((x.shape[0], dims[2]))


@torch.library.custom_op("kpnt::mlp_bwd", mutates_args=(), device_types="cuda")
def _mlp_bwd(
    x: Tensor,
    w: Tensor,
    perm: Optional[Tensor],
    offsets: Optional[Tensor],
    dy: Tensor,
    dims: list[int],
    slope: float,
    need_dx: bool,
) -> tuple[Tensor, Tensor]:
    dx, dw = _unwrap(_ext().mlp_backward(x, w, perm, offsets, dy, dims, slope, need_dx))
    return dx, dw


@_mlp_bwd.register_fake
def _(x, w, perm, offsets, dy, dims, slope, need_dx):
    dx = x.new_empty(x.shape) if need_dx else x.new_empty((0,))
    return dx, w.new_empty(w.shape)


def _setup_context(ctx, inputs, output):
    x, w, perm, offsets, dims, slope = inputs
    ctx.save_for_backward(x, w, perm, offsets)
    ctx.dims = dims
    ctx.slope = slope


def _backward(ctx, dy):
    x, w, perm, offsets = ctx.saved_tensors
    need_dx, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not (need_dx or need_dw):
        return None, None, None, None, None, None
    # The kernel recomputes the forward pass from x: nothing but x, the weights
    # and dL/dy is kept between forward and backward.
    dx, dw = _mlp_bwd(x, w, perm, offsets, dy.contiguous(), ctx.dims, ctx.slope, need_dx)
    return (dx if need_dx else None), (dw if need_dw else None), None, None, None, None


_mlp_fwd.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------- argument checks


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


def _check_x(x: Tensor, dims: list[int], weights: Sequence[Tensor]) -> None:
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


def supported_configs() -> str:
    """The ``(in, hidden, out, n_hidden)`` configurations compiled into the kernels (builds them)."""
    return _ext().mlp_supported_configs()


# ---------------------------------------------------------------- public ops


def fused_mlp(x: Tensor, weights: Sequence[Tensor], slope: float = 0.01) -> Tensor:
    """Per-pixel MLP on tensor cores, differentiable in ``x`` and every weight.

    Args:
        x: ``(P, in)`` float32 CUDA features, any ``P``.
        weights: ``[W0 (hidden, in), W1..W(n-1) (hidden, hidden), Wout (out, hidden)]``
            float32, bias-free, leaky ReLU after every matrix but the last.
        slope: leaky ReLU negative slope (``>= 0``).

    Returns:
        ``(P, out)`` float32.
    """
    dims = mlp_dims(weights)
    _check_x(x, dims, weights)
    w = torch.cat([wi.reshape(-1) for wi in weights])
    return _mlp_fwd(x.contiguous(), w, None, None, dims, float(slope))


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
    _check_x(x, dims, weights)
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
    w = torch.cat([wi.reshape(groups, -1) for wi in weights], dim=1)
    return _mlp_fwd(x.contiguous(), w, perm, offsets, dims, float(slope))


# ---------------------------------------------------------------- colour level


def _colour_consts() -> list[float]:
    """Constants the kernels share with the reference (one source of truth)."""
    from kpnt.ref.apply import PLAIN_EPS
    from kpnt.ref.features import CHROMA_EPS
    from kpnt.ref.noise import NOISE_LOG_CENTRE, NOISE_LOG_SCALE

    return [float(CHROMA_EPS), float(NOISE_LOG_CENTRE), float(NOISE_LOG_SCALE), float(PLAIN_EPS)]


@torch.library.custom_op("kpnt::colour_fwd", mutates_args=(), device_types="cuda")
def _colour_fwd(
    D: Tensor, var: Tensor, w: Tensor, dims: list[int], slope: float, plain: bool, noise_input: bool
) -> tuple[Tensor, Tensor, Tensor]:
    I, a, fmap = _unwrap(_ext().colour_forward(D, var, w, dims, slope, plain, noise_input, _colour_consts()))
    return I, a, fmap


@_colour_fwd.register_fake
def _(D, var, w, dims, slope, plain, noise_input):
    N, _, h, wd = D.shape
    return D.new_empty(D.shape), D.new_empty((N, 1, h, wd)), D.new_empty(D.shape)


@torch.library.custom_op("kpnt::colour_bwd", mutates_args=(), device_types="cuda")
def _colour_bwd(
    D: Tensor, fmap: Tensor, w: Tensor, dI: Tensor, da: Tensor, dims: list[int], slope: float, plain: bool
) -> Tensor:
    return _unwrap(_ext().colour_backward(D, fmap, w, dI, da, dims, slope, plain, _colour_consts()))


@_colour_bwd.register_fake
def _(D, fmap, w, dI, da, dims, slope, plain):
    return w.new_empty(w.shape)


def _colour_setup_context(ctx, inputs, output):
    D, var, w, dims, slope, plain, noise_input = inputs
    ctx.save_for_backward(D, var, w, output[2])
    ctx.dims, ctx.slope, ctx.plain, ctx.noise_input = dims, slope, plain, noise_input


def _unpack(w: Tensor, dims: list[int]) -> list[Tensor]:
    """Views of the packed weight vector as the (out, in) matrices."""
    n_in, hidden, n_out, nh = dims
    shapes = [(hidden, n_in)] + [(hidden, hidden)] * (nh - 1) + [(n_out, hidden)]
    mats, o = [], 0
    for r, c in shapes:
        mats.append(w[o:o + r * c].view(r, c))
        o += r * c
    return mats


def _colour_backward(ctx, dI, da, dfmap):
    D, var, w, fmap = ctx.saved_tensors
    need_D, need_var, need_w = ctx.needs_input_grad[:3]
    dI = torch.zeros_like(D) if dI is None else dI.contiguous()
    da = D.new_zeros((D.shape[0], 1, *D.shape[2:])) if da is None else da.contiguous()
    if need_D or need_var:
        # Gradients to the details themselves (never needed by kpnt.model,
        # whose D and var come from the data): the reference level around the
        # fused MLP, differentiated by autograd, gives all three at once.
        from kpnt.ref.level import colour_level

        with torch.enable_grad():
            D_ = D.detach().requires_grad_(need_D)
            var_ = var.detach().requires_grad_(need_var)
            w_ = w.detach().requires_grad_()
            I_, a_ = colour_level(D_, var_, _unpack(w_, ctx.dims), ctx.slope, "plain" if ctx.plain else "softmax",
                                  ctx.noise_input, mlp_fn=_dispatch_mlp)
            wrt = [t for t, n in ((D_, need_D), (var_, need_var), (w_, True)) if n]
            grads = list(torch.autograd.grad([I_, a_], wrt, [dI, da]))
        dD = grads.pop(0) if need_D else None
        dvar = grads.pop(0) if need_var else None
        return dD, dvar, (grads[0] if need_w else None), None, None, None, None
    if not need_w:
        return None, None, None, None, None, None, None
    dw = _colour_bwd(D, fmap, w, dI, da, ctx.dims, ctx.slope, ctx.plain)
    return None, None, dw, None, None, None, None


_colour_fwd.register_autograd(_colour_backward, setup_context=_colour_setup_context)


def _check_colour_image(t, name: str, like: Tensor | None = None) -> None:
    if not isinstance(t, Tensor):
        raise ValueError(f"fused colour_level: {name} must be a tensor, got {type(t).__name__}")
    if not t.is_cuda:
        raise ValueError(f"fused colour_level: {name} must be on a CUDA device, got {t.device}")
    if t.dtype != torch.float32:
        raise ValueError(f"fused colour_level: {name} must be float32, got {t.dtype} (use backend='torch' for others)")
    if like is not None and (t.shape != like.shape or t.device != like.device):
        raise ValueError(f"fused colour_level: {name} must be {tuple(like.shape)} on {like.device}, "
                         f"got {tuple(t.shape)} on {t.device}")


def fused_colour_level(D: Tensor, var: Tensor, weights: Sequence[Tensor], leaky_slope: float, apply_mode: str,
                       noise_input: bool) -> tuple[Tensor, Tensor]:
    """One colour level on the fused kernels, with :func:`kpnt.ref.level.colour_level`'s
    signature and results (within f16 tolerance).

    Features are gathered from per-pixel maps of ``D``/``var`` inside the MLP
    kernel (the (P, 32) feature matrix is never written); the kernel applies
    the predicted kernel and blend weight in its epilogue.  Differentiable in
    the weights by the fused backward; gradients to ``D``/``var``, if asked
    for, come from the reference level around the fused MLP.

    Args:
        D, var: (N, 3, h, w) float32 CUDA.
        weights: the colour MLP, input 32, output 16 (a compiled configuration).
    Returns:
        ``(I (N, 3, h, w), a (N, 1, h, w))``.
    """
    _check_colour_image(D, "D")
    if D.dim() != 4 or D.shape[1] != 3:
        raise ValueError(f"fused colour_level: D must be (N, 3, h, w), got {tuple(D.shape)}")
    _check_colour_image(var, "var", D)
    if apply_mode not in ("softmax", "plain"):
        raise ValueError(f"fused colour_level: apply_mode must be 'softmax' or 'plain', got {apply_mode!r}")
    dims = mlp_dims(weights)
    for i, wi in enumerate(weights):
        if wi.device != D.device:
            raise ValueError(f"fused colour_level: weights[{i}] is on {wi.device}, D on {D.device}")
    w = torch.cat([wi.reshape(-1) for wi in weights])
    I, a, _ = _colour_fwd(D.contiguous(), var.contiguous(), w, dims, float(leaky_slope), apply_mode == "plain",
                          bool(noise_input))
    return I, a


# ---------------------------------------------------------------- front level


def _front_consts() -> list[float]:
    from kpnt.ref.apply import PLAIN_EPS
    from kpnt.ref.noise import NOISE_LOG_CENTRE, NOISE_LOG_SCALE, VAR_FLOOR

    return [float(NOISE_LOG_CENTRE), float(NOISE_LOG_SCALE), float(PLAIN_EPS), float(VAR_FLOOR)]


def _cfa_from(pattern: Sequence[int]):
    import numpy as np

    from kpnt.mosaic.cfa import CFA

    P = int(round(len(pattern) ** 0.5))
    return CFA(np.asarray(pattern, dtype=np.int64).reshape(P, P))


@tensor_cache(32)
def _front_tables(pattern: tuple, radius: int, device: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(colour (P*P,), tap_off (P*P, T, 2), inv (P*P, L, 3), roles (P*P, 3)) int32 of a CFA.

    ``inv`` lists, for each repeat position of a photosite q, the (dy, dx, t)
    of every (pixel p = q - (dy, dx), tap t) that reads q; rows are padded
    with t = -1 to the longest list.  ``roles`` is the output channel of each
    per-channel kernel role (:func:`kpnt.mosaic.front.front_roles`).
    """
    import numpy as np

    from kpnt.mosaic.front import front_roles
    from kpnt.ref.taps import square_taps

    cfa = _cfa_from(pattern)
    P = cfa.period
    offs = cfa.canonical_offsets(square_taps(radius))                 # (P, P, T, 2)
    T = offs.shape[2]
    lists = [[] for _ in range(P * P)]
    for ry in range(P):
        for rx in range(P):
            for t in range(T):
                dy, dx = (int(v) for v in offs[ry, rx, t])
                lists[((ry + dy) % P) * P + (rx + dx) % P].append((dy, dx, t))
    L = max(len(v) for v in lists)
    inv = np.zeros((P * P, L, 3), dtype=np.int32)
    inv[..., 2] = -1
    for s, v in enumerate(lists):
        inv[s, :len(v)] = v
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32)).to(device)
    roles = front_roles(cfa, radius, "symmetry").reshape(P * P, 3)
    return as_t(cfa.pattern.reshape(-1)), as_t(offs.reshape(P * P, T, 2)), as_t(inv), as_t(roles)


@tensor_cache(16)
def _front_partition(pattern: tuple, N: int, H: int, W: int, device: str) -> tuple[Tensor, Tensor]:
    """Rows (n, y, x) of an N x H x W mosaic grouped by site class (cached)."""
    cfa = _cfa_from(pattern)
    P = cfa.period
    cls = torch.as_tensor(cfa.site_class, dtype=torch.int64)
    ys, xs = torch.arange(H) % P, torch.arange(W) % P
    rows = cls[ys[:, None], xs[None, :]].reshape(-1).repeat(N).to(device)
    return partition_by_class(rows, cfa.n_classes)


@torch.library.custom_op("kpnt::front_fwd", mutates_args=(), device_types="cuda")
def _front_fwd(
    x: Tensor, U: Tensor, S: Tensor, noise: Tensor, w: Tensor, perm: Tensor, row_offsets: Tensor, colour: Tensor,
    tap_off: Tensor, inv: Tensor, roles: Tensor, dims: list[int], pattern: list[int], radius: int, kernels: int,
    slope: float, plain: bool, noise_input: bool,
) -> tuple[Tensor, Tensor]:
    P, T = int(round(len(pattern) ** 0.5)), (2 * radius + 1) ** 2
    O, fmap = _unwrap(_ext().front_forward(x, U, S, noise, w, [perm, row_offsets, colour, tap_off, inv, roles], dims,
                                           [P, T, kernels], slope, plain, noise_input, _front_consts()))
    return O, fmap


@_front_fwd.register_fake
def _(x, U, S, noise, w, perm, row_offsets, colour, tap_off, inv, roles, dims, pattern, radius, kernels, slope, plain,
      noise_input):
    N, _, H, W = x.shape
    return U.new_empty(U.shape), x.new_empty((N, 4, H, W))


@torch.library.custom_op("kpnt::front_bwd", mutates_args=(), device_types="cuda")
def _front_bwd(
    x: Tensor, U: Tensor, S: Tensor, noise: Tensor, w: Tensor, perm: Tensor, row_offsets: Tensor, colour: Tensor,
    tap_off: Tensor, inv: Tensor, roles: Tensor, fmap: Tensor, dO: Tensor, dims: list[int], pattern: list[int],
    radius: int, kernels: int, slope: float, plain: bool, noise_input: bool,
) -> tuple[Tensor, Tensor]:
    P, T = int(round(len(pattern) ** 0.5)), (2 * radius + 1) ** 2
    dU, dw = _unwrap(_ext().front_backward(x, U, S, noise, w, [perm, row_offsets, colour, tap_off, inv, roles], fmap,
                                           dO, dims, [P, T, kernels], slope, plain, noise_input, _front_consts()))
    return dU, dw


@_front_bwd.register_fake
def _(x, U, S, noise, w, perm, row_offsets, colour, tap_off, inv, roles, fmap, dO, dims, pattern, radius, kernels,
      slope, plain, noise_input):
    return U.new_empty(U.shape), w.new_empty(w.shape)


def _front_setup_context(ctx, inputs, output):
    (x, U, S, noise, w, perm, row_offsets, colour, tap_off, inv, roles, dims, pattern, radius, kernels, slope, plain,
     noise_input) = inputs
    ctx.save_for_backward(x, U, S, noise, w, perm, row_offsets, colour, tap_off, inv, roles, output[1])
    ctx.args = (dims, pattern, radius, kernels, slope, plain, noise_input)


def _front_backward(ctx, dO, dfmap):
    x, U, S, noise, w, perm, row_offsets, colour, tap_off, inv, roles, fmap = ctx.saved_tensors
    dims, pattern, radius, kernels, slope, plain, noise_input = ctx.args
    need = ctx.needs_input_grad[:5]
    none = (None,) * 13
    dO = torch.zeros_like(U) if dO is None else dO.contiguous()
    if need[0] or need[2] or need[3]:
        # Gradients to the mosaic, S or the noise profile (never needed by
        # kpnt.model, where they come from the data): the reference level
        # around the fused MLP, differentiated by autograd.
        from kpnt.mosaic.front import front_level

        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(n) for t, n in zip((x, U, S, noise), need[:4])]
            w_ = w.detach().requires_grad_()
            sets = [_unpack(w_[g], dims) for g in range(w_.shape[0])]
            O_ = front_level(*leaves, _cfa_from(pattern), sets, radius, slope, "plain" if plain else "softmax",
                             noise_input, mlp_fn=_dispatch_mlp, kernels=_KERNELS_NAME[kernels])
            wrt = [t for t, n in zip(leaves, need[:4]) if n] + [w_]
            grads = list(torch.autograd.grad(O_, wrt, dO))
        out = [grads.pop(0) if n else None for n in need[:4]]
        return (*out, grads[0] if need[4] else None, *none)
    if not (need[1] or need[4]):
        return (None,) * 18
    dU, dw = _front_bwd(x, U, S, noise, w, perm, row_offsets, colour, tap_off, inv, roles, fmap, dO, dims, pattern,
                        radius, kernels, slope, plain, noise_input)
    return None, (dU if need[1] else None), None, None, (dw if need[4] else None), *none


_front_fwd.register_autograd(_front_backward, setup_context=_front_setup_context)


#: ModelConfig.front_kernels name of a kernel count.
_KERNELS_NAME = {1: "shared", 3: "per_channel"}


def fused_front_level(x: Tensor, U: Tensor, S: Tensor, noise: Tensor, cfa, weights, radius: int, leaky_slope: float,
                      apply_mode: str, noise_input: bool, kernels: str = "shared") -> Tensor:
    """The mosaic front level on the fused kernels, with
    :func:`kpnt.mosaic.front.front_level`'s signature and results (within
    f16 tolerance).

    One grouped MLP launch for all site classes (rows read through a cached
    class partition); the canonical taps are gathered inside the kernel from
    per-photosite maps, the predicted kernel is applied in its epilogue.
    Differentiable in ``U`` and every weight set by the fused backward (an
    adjoint kernel gathers dL/dd back onto the photosites, no atomics);
    gradients to ``x``, ``S`` or ``noise``, if asked for, come from the
    reference level around the fused MLP.

    ``kernels='per_channel'`` (three kernels per photosite, one per output
    channel by role, :func:`kpnt.mosaic.front.front_roles`) runs forward
    only: the fused backward has the shared kernel's head; differentiating
    it raises (``kpnt.ops`` routes training to the reference before that).

    Args:
        x: (N, 1, H, W) mosaic; U, S: (N, 3, H, W); noise: (N, 2, 3); all
            float32 on one CUDA device.
        weights: one MLP per site class (``cfa.class_names`` order), each
            32 -> ... -> 32 (radius 2: 25 taps), or -> 80 for per-channel
            kernels (3 x 25 + 1 outputs, padded).
        kernels: 'shared' or 'per_channel'.
    Returns:
        (N, 3, H, W).
    """
    from kpnt.mosaic.front import front_kernel_count, front_widths

    for name, t in (("x", x), ("U", U), ("S", S), ("noise", noise)):
        if not isinstance(t, Tensor) or not t.is_cuda or t.dtype != torch.float32:
            got = f"{t.dtype} on {t.device}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"fused front_level: {name} must be a float32 CUDA tensor, got {got} "
                             "(use backend='torch' for others)")
        if t.device != x.device:
            raise ValueError(f"fused front_level: {name} is on {t.device}, x on {x.device}")
    K = front_kernel_count(kernels)
    T, n_in, n_out = front_widths(radius, kernels)
    kernel_out = 32 if K == 1 else 80          # kernels/fused_mlp.cuh front_outputs
    if n_in != 32 or n_out != kernel_out:
        raise ValueError(f"fused front_level: radius {radius} gives {n_in} inputs and {n_out} outputs; the kernels "
                         f"take 32 and {kernel_out} (radius 2)")
    if apply_mode not in ("softmax", "plain"):
        raise ValueError(f"fused front_level: apply_mode must be 'softmax' or 'plain', got {apply_mode!r}")
    dims = mlp_dims(weights[0])
    for k, ws in enumerate(weights):
        if mlp_dims(ws) != dims:
            raise ValueError(f"fused front_level: weight set {k} has shape {mlp_dims(ws)}, set 0 {dims}")
        for i, wi in enumerate(ws):
            if wi.device != x.device:
                raise ValueError(f"fused front_level: weights[{k}][{i}] is on {wi.device}, x on {x.device}")
    N, _, H, W = x.shape
    pattern = tuple(int(v) for v in cfa.pattern.reshape(-1))
    dev = str(x.device)
    colour, tap_off, inv, roles = _front_tables(pattern, int(radius), dev)
    perm, row_offsets = _front_partition(pattern, N, H, W, dev)
    w = torch.stack([torch.cat([m.reshape(-1) for m in ws]) for ws in weights])
    O, _ = _front_fwd(x.contiguous(), U.contiguous(), S.contiguous(), noise.contiguous(), w, perm, row_offsets, colour,
                      tap_off, inv, roles, dims, list(pattern), int(radius), K, float(leaky_slope),
                      apply_mode == "plain", bool(noise_input))
    return O


# ---------------------------------------------------------------- detail variance


@tensor_cache(256)
def _detail_var_consts(counts: tuple, level: int, h: int, w: int, dtype, device: str) -> tuple[Tensor, Tensor]:
    """The two constant tensors of :func:`kpnt.ref.level.detail_var` (counts
    as (1, 3, 1, 1), the pyramid gain map (1, 1, h, w)), built once per
    (counts, level, size): the reference makes both from host data on every
    call, a host-to-device copy that waits for the stream and so cannot be
    captured in a CUDA graph."""
    from kpnt.ref.pyramid import gain_map

    n = torch.as_tensor(counts, dtype=dtype, device=device).reshape(1, 3, 1, 1)
    return n, gain_map(level, h, w, dtype, device)


def capturable_detail_var(signal: Tensor, noise: Tensor, counts, level: int) -> Tensor:
    """:func:`kpnt.ref.level.detail_var` with its constants cached on the
    device: the same arithmetic in the same order (bitwise the reference's
    result), and no host-to-device copy per call, so a training step that
    runs it can be captured in a CUDA graph (:mod:`kpnt.train.graph_step`)."""
    from kpnt.ref.noise import site_var

    if isinstance(counts, Tensor):      # device counts: nothing to cache by value
        from kpnt.ref.level import detail_var

        return detail_var(signal, noise, counts, level)
    h, w = signal.shape[-2:]
    n, gain = _detail_var_consts(tuple(float(c) for c in counts), int(level), int(h), int(w), signal.dtype,
                                 str(signal.device))
    a = noise[:, 0, :, None, None]
    b = noise[:, 1, :, None, None]
    return site_var(signal, a, b) / n * gain


# ---------------------------------------------------------------- dispatch hook


def _dispatch_mlp(x: Tensor, weights: Sequence[Tensor], leaky_slope: float) -> Tensor:
    """:func:`kpnt.ref.mlp.mlp`'s signature on the fused kernel (any compiled shape)."""
    return fused_mlp(x, weights, leaky_slope)


def backend_ops() -> dict:
    """Op table that ``kpnt.ops`` registers as the ``'cuda'`` backend.

    Builds the kernels first, so that a missing GPU or compiler surfaces as a
    :class:`kpnt._backend.BackendError` when the backend is first used, and
    checks that the compiled colour taps are the reference's diamond.  Fused:
    the MLP, the colour level and the mosaic front level; ``detail_var`` is
    the reference's arithmetic with its constants cached on the device
    (capturable in a CUDA graph); the other ops (padding, pyramid, colour
    base, up_block) are the reference's.
    """
    from kpnt.ref.taps import DIAMOND

    ext = _ext()
    taps = [tuple(t) for t in ext.colour_taps()]
    if taps != [tuple(int(v) for v in t) for t in DIAMOND]:
        raise _backend.BackendError(
            f"the compiled colour taps {taps} differ from kpnt.ref.taps.DIAMOND: rebuild the kernels"
        )
    return {"mlp": _dispatch_mlp, "colour_level": fused_colour_level, "front_level": fused_front_level,
            "detail_var": capturable_detail_var}
