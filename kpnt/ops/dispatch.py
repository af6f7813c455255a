"""Backends of the public ops and the choice between them.

``'torch'`` is the pure-PyTorch reference (:mod:`kpnt.ref`), always
available.  ``'cuda'`` is the fused CUDA kernels (:mod:`kpnt.ops._cuda`),
registered at import with a lazy loader (:func:`register_backend`): nothing
is built or imported until the first op runs on it.  A backend gives a
mapping ``op name -> callable`` with the reference's signatures (the names
of :data:`OPS`); ops it does not provide run the reference *by design*
(e.g. padding is plain indexing), which is logged once per op; the
composite ops ``colour_level`` and ``front_level`` then run the reference
with the backend's ``mlp`` if it has one.

``'auto'`` picks ``'cuda'`` for CUDA tensors when the kernels load, else the
reference; a failed load under ``'auto'`` is logged once and the reference is
used from then on.  An explicit ``'cuda'`` never falls back: it raises
:class:`kpnt._backend.BackendUnavailableError` (a ``ValueError``) whose
one-line message carries the build or load error.

Specs the fused kernels do not implement are never computed as something
else: :func:`implementation` asks the capability table
(:mod:`kpnt.ops.capability`); under ``'auto'`` such a call runs the
reference op (each reason logged once), under ``'cuda'`` it raises a
one-line :class:`kpnt.errors.ConfigError`.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable, Mapping

import torch

from kpnt import _backend
from kpnt.errors import ConfigError
from kpnt.ref import colour_base as _colour_base
from kpnt.ref import colour_level as _colour_level
from kpnt.ref import front_level as _front_level
from kpnt.ref import guide as _guide
from kpnt.ref import guide_backward as _guide_backward
from kpnt.ref import mlp as _mlp
from kpnt.ref import noise as _noise
from kpnt.ref import pad as _pad
from kpnt.ref import pyramid as _pyramid
from kpnt.ref import up_block as _up_block

log = logging.getLogger(__name__)

#: The reference implementation of every public op.
OPS: dict[str, Callable] = {
    "pad_mosaic": _pad.pad_mosaic,
    "reflect_pad": _pad.reflect_pad,
    "colour_base": _colour_base.colour_base,
    "pyramid_down": _pyramid.down,
    "pyramid_up": _pyramid.up,
    "detail_var": _noise.detail_var,
    "colour_level": _colour_level.colour_level,
    "mlp": _mlp.mlp,
    "up_block": _up_block.up_block,
    "front_level": _front_level.front_level,
    "guide_proj_block": _guide.proj_block,
    "guide_start": _guide.start,
    "guide_finish": _guide.finish,
    "guide_network": _guide_backward.guide_network,
}

BACKENDS = ("auto", "torch", "cuda")
_registered: dict[str, Mapping[str, Callable]] = {"torch": OPS}
_loaders: dict[str, Callable[[], Mapping[str, Callable]]] = {}
_fallback_logged: set[tuple[str, str]] = set()
_auto_fallback_logged: set[str] = set()
_unsupported_logged: set[str] = set()

#: Reference ops that evaluate MLPs through an ``mlp_fn`` argument.
_COMPOSITES = ("colour_level", "front_level")


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


def implementation(op: str, backend: str, device: torch.device,
                   problem: Callable[[], str | None] | None = None) -> Callable:
    """The implementation of ``op`` for ``backend`` on ``device``.

    ``problem()`` (asked only when a fused backend is chosen, after it has
    loaded, so the compiled shapes are known) names what its kernels cannot
    run for this call; then an explicit backend raises a one-line
    :class:`kpnt.errors.ConfigError` and 'auto' logs the reason once and
    returns the reference.  A backend without the op gives the reference
    (composites with the backend's MLP)."""
    name = resolve_backend(backend, device)
    if name == "torch":
        return OPS[op]
    table = _backend_ops(name)
    why = problem() if problem is not None else None
    if why is not None:
        if backend != "auto":
            raise ConfigError(f"backend={backend!r} cannot run {op}: {why} (use backend='auto' or 'torch')")
        if why not in _unsupported_logged:
            _unsupported_logged.add(why)
            log.warning("backend='auto': %s: running %s on the PyTorch reference", why, op)
        return OPS[op]
    if op in table:
        return table[op]
    use_mlp = op in _COMPOSITES and "mlp" in table
    if (name, op) not in _fallback_logged:
        _fallback_logged.add((name, op))
        log.info("backend %s has no %s: using the reference%s", name, op, " with its mlp" if use_mlp else "")
    if use_mlp:
        return functools.partial(OPS[op], mlp_fn=table["mlp"])
    return OPS[op]


def _load_cuda() -> Mapping[str, Callable]:
    """Loader of the 'cuda' backend: builds the extension, hands its shape
    table to :mod:`kpnt.ops.capability`, returns the op table."""
    from kpnt.ops import _cuda, capability

    table = _cuda.backend_ops()
    rows = _cuda.shape_table()
    if not rows:
        raise _backend.BackendError("the extension reports no compiled shapes: rebuild the kernels")
    capability.set_loaded(capability.from_extension(rows))
    return table


register_backend("cuda", _load_cuda)
