"""Public ops: argument checks, then dispatch to a backend.

Every op that :class:`kpnt.model.KPNT` runs goes through here with a
``backend`` argument.  ``'torch'`` is the pure-PyTorch reference
(``kpnt.ref``, ``kpnt.mosaic.front``), always available.  ``'cuda'`` is the
fused CUDA kernels (``kpnt.ops._cuda``), registered at import with a lazy
loader (:func:`register_backend`): nothing is built or imported until the
first op runs on it.  A backend gives a mapping ``op name -> callable`` with
the same signatures as the reference functions listed in :data:`OPS`; ops it
does not provide run the reference *by design* (e.g. padding is plain
indexing), which is logged once per op; the composite ops ``colour_level``
and ``front_level`` then run the reference with the backend's ``mlp`` if it
has one.

``'auto'`` picks ``'cuda'`` for CUDA tensors when the kernels load, else the
reference; a failed load under ``'auto'`` is logged once and the reference is
used from then on.  An explicit ``'cuda'`` never falls back: it raises
:class:`kpnt._backend.BackendUnavailableError` (a ``ValueError``) whose
one-line message carries the build or load error.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable, Mapping, Sequence

import torch

from kpnt import _backend
from kpnt.mosaic import front as _front
from kpnt.mosaic.cfa import CFA
from kpnt.ref import apply as _apply
from kpnt.ref import colour_base as _colour_base
from kpnt.ref import level as _level
from kpnt.ref import mlp as _mlp
from kpnt.ref import pad as _pad
from kpnt.ref import pyramid as _pyramid

log = logging.getLogger(__name__)

#: The reference implementation of every public op.
OPS: dict[str, Callable] = {
    "pad_mosaic": _pad.pad_mosaic,
    "reflect_pad": _pad.reflect_pad,
    "colour_base": _colour_base.colour_base,
    "pyramid_down": _pyramid.down,
    "pyramid_up": _pyramid.up,
    "detail_var": _level.detail_var,
    "colour_level": _level.colour_level,
    "mlp": _mlp.mlp,
    "up_block": _front.up_block,
    "front_level": _front.front_level,
}

BACKENDS = ("auto", "torch", "cuda")
_registered: dict[str, Mapping[str, Callable]] = {"torch": OPS}
_loaders: dict[str, Callable[[], Mapping[str, Callable]]] = {}
_fallback_logged: set[tuple[str, str]] = set()


def register_backend(name: str, ops: Mapping[str, Callable] | Callable[[], Mapping[str, Callable]]) -> None:
    """Make ``name`` available: a mapping of op name to implementation, or a
    zero-argument loader called on first use (so registering never builds
    or imports CUDA code; a loader error propagates to the caller of the op)."""
    if name not in BACKENDS or name in ("auto", "torch"):
        raise ValueError(f"backend name must be 'cuda', got {name!r}")
    if callable(ops):
        _loaders[name] = ops
        _registered.pop(name, None)
    else:
        unknown = set(ops) - set(OPS)
        if unknown:
            raise ValueError(f"backend {name!r} provides unknown ops {sorted(unknown)}; known: {sorted(OPS)}")
        _registered[name] = dict(ops)


def _backend_ops(name: str) -> Mapping[str, Callable]:
    if name not in _registered and name in _loaders:
        try:
            ops = _loaders[name]()
        except _backend.BackendError as err:
            raise _backend.BackendUnavailableError(f"backend {name!r} is not available: {err}") from err
        register_backend(name, ops)
    if name not in _registered:
        raise ValueError(f"backend {name!r} is not available (registered: {sorted(_registered)})")
    return _registered[name]


_auto_fallback_logged: set[str] = set()


def resolve_backend(backend: str, device: torch.device) -> str:
    """Concrete backend name for ``backend`` on ``device``.

    ``'auto'`` on a CUDA device loads the ``'cuda'`` backend (building the
    kernels on first use); if that fails, the reason is logged once and the
    reference is used.  ``'torch'`` and ``'cuda'`` are returned as given.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend != "auto":
        return backend
    if device.type != "cuda" or ("cuda" not in _registered and "cuda" not in _loaders):
        return "torch"
    try:
        _backend_ops("cuda")
    except _backend.BackendUnavailableError as err:
        if "cuda" not in _auto_fallback_logged:
            _auto_fallback_logged.add("cuda")
            log.warning("backend='auto': %s; using the PyTorch reference", err)
        return "torch"
    return "cuda"


#: Reference ops that evaluate MLPs through an ``mlp_fn`` argument.
_COMPOSITES = ("colour_level", "front_level")


def _impl(op: str, backend: str, device: torch.device) -> Callable:
    name = resolve_backend(backend, device)
    table = _backend_ops(name)
    if op in table:
        return table[op]
    use_mlp = op in _COMPOSITES and "mlp" in table
    if (name, op) not in _fallback_logged:
        _fallback_logged.add((name, op))
        log.info("backend %s has no %s: using the reference%s", name, op, " with its mlp" if use_mlp else "")
    if use_mlp:
        return functools.partial(OPS[op], mlp_fn=table["mlp"])
    return OPS[op]


# ----------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------
def _check(cond: bool, what: str, expected: str, got) -> None:
    if not cond:
        raise ValueError(f"{what}: expected {expected}, got {got}")


def _check_image(t: torch.Tensor, name: str, channels: int | None = None) -> None:
    _check(isinstance(t, torch.Tensor), name, "a torch.Tensor", type(t).__name__)
    _check(t.dim() == 4, name, "shape (N, C, H, W)", tuple(t.shape))
    _check(t.is_floating_point(), name, "a floating-point tensor", t.dtype)
    if channels is not None:
        _check(t.shape[1] == channels, f"{name} channels", str(channels), t.shape[1])


def _check_noise(noise: torch.Tensor, n: int, ref: torch.Tensor) -> None:
    _check(isinstance(noise, torch.Tensor) and tuple(noise.shape) == (n, 2, 3), "noise", f"shape ({n}, 2, 3)",
           tuple(getattr(noise, "shape", ())))
    _check(noise.dtype == ref.dtype and noise.device == ref.device, "noise dtype/device",
           f"{ref.dtype} on {ref.device}", f"{noise.dtype} on {noise.device}")


def _check_same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    _check(a.shape[0] == b.shape[0] and a.shape[-2:] == b.shape[-2:], f"{what} batch/size",
           f"{tuple(b.shape[:1]) + tuple(b.shape[-2:])}", tuple(a.shape[:1]) + tuple(a.shape[-2:]))
    _check(a.dtype == b.dtype and a.device == b.device, f"{what} dtype/device", f"{b.dtype} on {b.device}",
           f"{a.dtype} on {a.device}")


def _check_weights(weights: Sequence[torch.Tensor], n_in: int, n_out: int, what: str) -> None:
    _check(len(weights) >= 2, f"{what} layers", "at least 2 matrices", len(weights))
    _check(weights[0].shape[1] == n_in, f"{what} input width", str(n_in), weights[0].shape[1])
    _check(weights[-1].shape[0] == n_out, f"{what} output width", str(n_out), weights[-1].shape[0])
    for i in range(1, len(weights)):
        _check(weights[i].shape[1] == weights[i - 1].shape[0], f"{what} layer {i} input width",
               str(weights[i - 1].shape[0]), weights[i].shape[1])


# ----------------------------------------------------------------------
# ops
# ----------------------------------------------------------------------
def pad_mosaic(x: torch.Tensor, cfa: CFA, top: int, bottom: int, left: int, right: int, backend: str = "torch"):
    """CFA-consistent mirror padding; see :func:`kpnt.ref.pad.pad_mosaic`."""
    _check_image(x, "mosaic", 1)
    _check(min(top, bottom, left, right) >= 0, "pads", "non-negative", (top, bottom, left, right))
    return _impl("pad_mosaic", backend, x.device)(x, cfa, top, bottom, left, right)


def reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int, backend: str = "torch"):
    """Mirror padding of any amount; see :func:`kpnt.ref.pad.reflect_pad`."""
    _check_image(x, "image")
    _check(min(top, bottom, left, right) >= 0, "pads", "non-negative", (top, bottom, left, right))
    return _impl("reflect_pad", backend, x.device)(x, top, bottom, left, right)


def colour_base(x: torch.Tensor, cfa: CFA, backend: str = "torch") -> torch.Tensor:
    """(N,1,H,W) mosaic -> (N,3,H/b,W/b) colour base; see :mod:`kpnt.ref.colour_base`."""
    _check_image(x, "mosaic", 1)
    b = cfa.block
    _check(x.shape[-2] % b == 0 and x.shape[-1] % b == 0, "mosaic size", f"multiples of the block size {b}",
           tuple(x.shape[-2:]))
    _check(cfa.block_phase == (0, 0), "CFA block phase", "(0, 0) (pad or crop the mosaic so blocks start at the origin)",
           cfa.block_phase)
    return _impl("colour_base", backend, x.device)(x, cfa)


def pyramid_down(x: torch.Tensor, backend: str = "torch") -> torch.Tensor:
    """(N,C,H,W) -> (N,C,ceil(H/2),ceil(W/2)); see :func:`kpnt.ref.pyramid.down`."""
    _check_image(x, "pyramid level")
    return _impl("pyramid_down", backend, x.device)(x)


def pyramid_up(x: torch.Tensor, size: tuple[int, int], backend: str = "torch") -> torch.Tensor:
    """(N,C,h,w) -> (N,C,*size); see :func:`kpnt.ref.pyramid.up`."""
    _check_image(x, "pyramid level")
    return _impl("pyramid_up", backend, x.device)(x, tuple(size))


def detail_var(signal: torch.Tensor, noise: torch.Tensor, counts, level: int, backend: str = "torch") -> torch.Tensor:
    """Noise variance of ``D_level``; see :func:`kpnt.ref.level.detail_var`."""
    _check_image(signal, "signal estimate", 3)
    _check_noise(noise, signal.shape[0], signal)
    _check(len(counts) == 3, "counts", "3 values", len(counts))
    return _impl("detail_var", backend, signal.device)(signal, noise, counts, level)


def colour_level(D, var, weights, leaky_slope: float, apply_mode: str, noise_input: bool, backend: str = "torch"):
    """``(I, a)`` of one colour level; see :func:`kpnt.ref.level.colour_level`."""
    _check_image(D, "details", 3)
    _check_image(var, "detail variance", 3)
    _check_same(var, D, "detail variance")
    _check(apply_mode in _apply.APPLY_MODES, "apply_mode", str(_apply.APPLY_MODES), apply_mode)
    _check_weights(weights, 32, _level.N_OUTPUTS, "colour MLP")
    return _impl("colour_level", backend, D.device)(D, var, weights, leaky_slope, apply_mode, noise_input)


def mlp(x: torch.Tensor, weights: Sequence[torch.Tensor], leaky_slope: float, backend: str = "torch") -> torch.Tensor:
    """(P, n_in) -> (P, n_out); see :func:`kpnt.ref.mlp.mlp`."""
    _check(x.dim() == 2, "MLP input", "shape (P, n_in)", tuple(x.shape))
    _check_weights(weights, x.shape[1], weights[-1].shape[0] if weights else -1, "MLP")
    return _impl("mlp", backend, x.device)(x, weights, leaky_slope)


def up_block(o0: torch.Tensor, cfa: CFA, backend: str = "torch") -> torch.Tensor:
    """(N,3,h,w) -> (N,3,h*b,w*b); see :func:`kpnt.mosaic.front.up_block`."""
    _check_image(o0, "colour base", 3)
    _check(cfa.block_phase == (0, 0), "CFA block phase", "(0, 0)", cfa.block_phase)
    return _impl("up_block", backend, o0.device)(o0, cfa)


def front_level(x, U, S, noise, cfa: CFA, weights, radius: int, leaky_slope: float, apply_mode: str,
                noise_input: bool, backend: str = "torch") -> torch.Tensor:
    """(N,3,H,W) output of the mosaic level; see :func:`kpnt.mosaic.front.front_level`."""
    _check_image(x, "mosaic", 1)
    _check_image(U, "U", 3)
    _check_image(S, "S", 3)
    _check_same(U, x, "U")
    _check_same(S, x, "S")
    _check_noise(noise, x.shape[0], x)
    _check(apply_mode in _apply.APPLY_MODES, "apply_mode", str(_apply.APPLY_MODES), apply_mode)
    _check(len(weights) == cfa.n_classes, "front weight sets", f"{cfa.n_classes} ({', '.join(cfa.class_names)})",
           len(weights))
    T, n_in, n_out = _front.front_widths(radius)
    for name, w in zip(cfa.class_names, weights):
        _check_weights(w, n_in, n_out, f"front MLP '{name}'")
    return _impl("front_level", backend, x.device)(x, U, S, noise, cfa, weights, radius, leaky_slope, apply_mode,
                                                   noise_input)


def _load_cuda() -> Mapping[str, Callable]:
    from kpnt.ops import _cuda

    return _cuda.backend_ops()


register_backend("cuda", _load_cuda)
