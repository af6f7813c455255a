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

Configurations the fused kernels do not implement are never computed as
something else: the fused colour level has the 15-tap diamond compiled in,
the fused front level the radius-2 square with symmetry sharing, and the
fused MLP only the shapes of ``KPNT_MLP_CONFIGS`` in
``kernels/fused_mlp.cu`` (:data:`FUSED_MLP_CONFIGS`; the list the loaded
extension reports replaces it).  Some shapes (width 128) and per-channel
front kernels are compiled *forward only* (:data:`FUSED_FORWARD_ONLY`):
they run fused for inference, and a call that needs weight gradients
counts as unsupported.  For such a configuration ``colour_level`` /
``front_level`` under ``'auto'`` run the reference op (each reason logged
once) and under ``'cuda'`` raise a one-line ``ValueError``;
:func:`fused_problems` lists the build-independent reasons for a
``ModelConfig`` (``KPNT`` checks them when its backend is set to 'cuda',
``kpnt-train --backend cuda`` with ``training=True``).
"""
from __future__ import annotations

import functools
import logging
import re
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


#: (in, hidden, out, n_hidden) MLP shapes compiled into the fused kernels,
#: as ``KPNT_MLP_CONFIGS`` in kernels/fused_mlp.cu lists them: the colour
#: MLP (32 -> 6 x 64 -> 16) and the front MLPs (32 -> 4 x 64 -> 32) of
#: DESIGN.md, and the shipped models' width-128 colour MLP and per-channel
#: front MLPs (32 -> 4 x 128 -> 80).  Other widths or depths run on the
#: reference.  Replaced by the list the loaded extension reports
#: (:func:`_load_cuda`).
FUSED_MLP_CONFIGS: tuple[tuple[int, int, int, int], ...] = (
    (32, 64, 16, 6), (32, 64, 32, 4), (32, 128, 16, 6), (32, 128, 80, 4))
#: The shapes of :data:`FUSED_MLP_CONFIGS` compiled without a backward
#: (their weights and activations exceed a backward tile's shared memory):
#: fused for inference, trained on the reference.
FUSED_FORWARD_ONLY: frozenset[tuple[int, int, int, int]] = frozenset({(32, 128, 16, 6), (32, 128, 80, 4)})
#: Only the real kernels' loader sets these; a test's fake 'cuda' backend
#: takes any shape.
_compiled_mlp_configs: tuple[tuple[int, int, int, int], ...] | None = None
_compiled_forward_only: frozenset[tuple[int, int, int, int]] = frozenset()
#: What the fused colour/front levels have compiled in.
FUSED_COLOUR_TAPS = "diamond15"
FUSED_FRONT_SHARING = "symmetry"
FUSED_FRONT_RADIUS = 2


def mlp_shapes(config) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """(colour, front) MLP shapes ``(in, hidden, out, n_hidden)`` of a
    :class:`kpnt.model.ModelConfig`, as :data:`FUSED_MLP_CONFIGS` lists them."""
    from kpnt.ref.level import colour_widths

    _, n_in, n_out = colour_widths(config.colour_taps)
    _, f_in, f_out = _front.front_widths(config.front_radius, config.front_kernels)
    return ((n_in, config.width, n_out, config.hidden_layers),
            (f_in, config.front_width, f_out, config.front_hidden_layers))


def fused_problems(config, training: bool = False) -> list[str]:
    """Why the fused kernels cannot run a :class:`kpnt.model.ModelConfig`,
    as short phrases (empty: they can, as far as the build-independent
    limits go; MLP shapes are checked against the compiled list when an op
    runs).  ``training``: also the parts that are fused forward only
    (per-channel front kernels, :data:`FUSED_FORWARD_ONLY` shapes).  Takes
    the config duck-typed (no import of kpnt.model)."""
    out = []
    taps = getattr(config, "colour_taps", FUSED_COLOUR_TAPS)
    if taps != FUSED_COLOUR_TAPS:
        out.append(f"colour_taps={taps!r} (the fused colour level has the {FUSED_COLOUR_TAPS} taps compiled in)")
    sharing = getattr(config, "front_sharing", FUSED_FRONT_SHARING)
    if sharing != FUSED_FRONT_SHARING:
        out.append(f"front_sharing={sharing!r} (the fused front level runs {FUSED_FRONT_SHARING} sharing only)")
    radius = getattr(config, "front_radius", FUSED_FRONT_RADIUS)
    if radius != FUSED_FRONT_RADIUS:
        out.append(f"front_radius={radius} (the fused front level runs radius {FUSED_FRONT_RADIUS} only)")
    if training:
        kernels = getattr(config, "front_kernels", "shared")
        if kernels != "shared":
            out.append(f"front_kernels={kernels!r} for training (the fused per-channel front level is forward only)")
        if taps == FUSED_COLOUR_TAPS and mlp_shapes(config)[0] in FUSED_FORWARD_ONLY:
            out.append(f"width={config.width} for training (the fused colour MLP of that width is forward only)")
    return out


def runs_fused(config, backend: str, device) -> bool:
    """True if inference of a :class:`kpnt.model.ModelConfig` on ``device``
    with ``backend`` runs every fused part (colour and front levels) on the
    fused kernels: the backend resolves to 'cuda' (loading the kernels,
    see :func:`resolve_backend`), no build-independent problem
    (:func:`fused_problems`) and both MLP shapes compiled.  Only for
    choosing defaults (e.g. the GPU tile size): the ops decide for
    themselves per call."""
    device = torch.device(device)
    if device.type != "cuda" or resolve_backend(backend, device) != "cuda" or fused_problems(config):
        return False
    return _compiled_mlp_configs is None or all(s in _compiled_mlp_configs for s in mlp_shapes(config))


def _parse_mlp_configs(text: str) -> tuple[tuple[tuple[int, int, int, int], ...], frozenset]:
    """(configs, forward-only configs) from the extension's description."""
    found = re.findall(r"in=(\d+), hidden=(\d+), out=(\d+), n_hidden=(\d+)(, forward only)?", text)
    configs = tuple(tuple(int(v) for v in f[:4]) for f in found)
    return configs, frozenset(c for c, f in zip(configs, found) if f[4])


def _mlp_shape(weights: Sequence[torch.Tensor]) -> tuple[int, int, int, int]:
    return (int(weights[0].shape[1]), int(weights[0].shape[0]), int(weights[-1].shape[0]), len(weights) - 1)


def _needs_weight_grad(weights) -> bool:
    """True if autograd will want gradients of any of ``weights`` (a list of
    tensors or of lists of tensors)."""
    if not torch.is_grad_enabled():
        return False
    flat = [w for ws in weights for w in (ws if isinstance(ws, (list, tuple)) else [ws])]
    return any(w.requires_grad for w in flat)


def _mlp_problem(weights: Sequence[torch.Tensor], what: str, training: bool = False) -> str | None:
    if _compiled_mlp_configs is None:
        return None
    shape = _mlp_shape(weights)
    desc = f"{what} MLP (in={shape[0]}, hidden={shape[1]}, out={shape[2]}, n_hidden={shape[3]})"
    if shape not in _compiled_mlp_configs:
        return f"{desc} is not a compiled configuration (compiled: {', '.join(map(str, _compiled_mlp_configs))})"
    if training and shape in _compiled_forward_only:
        return f"{desc} is compiled forward only (inference), and this call needs weight gradients"
    return None


_unsupported_logged: set[str] = set()


def _level_impl(op: str, backend: str, device: torch.device, problem: Callable[[], str | None]) -> Callable:
    """The implementation of a colour/front level: the backend's,
    unless ``problem()`` names something its kernels do not implement; then
    an explicit 'cuda' raises and 'auto' logs once and takes the reference."""
    name = resolve_backend(backend, device)
    if name != "torch":
        _backend_ops(name)                # load first: the compiled shapes are known then
        why = problem()
        if why is not None:
            if backend != "auto":
                raise ValueError(f"backend={backend!r} cannot run {op}: {why} (use backend='auto' or 'torch')")
            if why not in _unsupported_logged:
                _unsupported_logged.add(why)
                log.warning("backend='auto': %s: running %s on the PyTorch reference", why, op)
            return OPS[op]
    return _impl(op, backend, device)


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


def colour_level(D, var, weights, leaky_slope: float, apply_mode: str, noise_input: bool, backend: str = "torch",
                 taps: str = "diamond15"):
    """``(I, a)`` of one colour level; see :func:`kpnt.ref.level.colour_level`.

    ``taps`` other than the diamond, or an MLP shape that is not compiled,
    run on the reference under 'auto' and raise under 'cuda' (module doc)."""
    _check_image(D, "details", 3)
    _check_image(var, "detail variance", 3)
    _check_same(var, D, "detail variance")
    _check(apply_mode in _apply.APPLY_MODES, "apply_mode", str(_apply.APPLY_MODES), apply_mode)
    _, n_in, n_out = _level.colour_widths(taps)
    _check_weights(weights, n_in, n_out, "colour MLP")

    def problem():
        if taps != FUSED_COLOUR_TAPS:
            return f"colour taps {taps!r} (the fused colour level has the {FUSED_COLOUR_TAPS} taps compiled in)"
        return _mlp_problem(weights, "colour", _needs_weight_grad(weights))

    fn = _level_impl("colour_level", backend, D.device, problem)
    if taps == FUSED_COLOUR_TAPS:         # the backends' signature has no taps (the diamond is theirs)
        return fn(D, var, weights, leaky_slope, apply_mode, noise_input)
    return fn(D, var, weights, leaky_slope, apply_mode, noise_input, taps=taps)


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
                noise_input: bool, backend: str = "torch", sharing: str = "symmetry", kernels: str = "shared") -> torch.Tensor:
    """(N,3,H,W) output of the mosaic level; see :func:`kpnt.mosaic.front.front_level`.

    ``sharing='none'``, a radius other than 2 or an MLP shape that is not
    compiled run on the reference under 'auto' and raise under 'cuda'
    (module doc)."""
    _check_image(x, "mosaic", 1)
    _check_image(U, "U", 3)
    _check_image(S, "S", 3)
    _check_same(U, x, "U")
    _check_same(S, x, "S")
    _check_noise(noise, x.shape[0], x)
    _check(apply_mode in _apply.APPLY_MODES, "apply_mode", str(_apply.APPLY_MODES), apply_mode)
    _check(sharing in _front.FRONT_SHARINGS, "front sharing", str(_front.FRONT_SHARINGS), sharing)
    _check(kernels in _front.FRONT_KERNELS, "front kernels", str(_front.FRONT_KERNELS), kernels)
    names = _front.front_set_names(cfa.kind, sharing)
    _check(len(weights) == len(names), "front weight sets",
           f"{len(names)} ({', '.join(names) if len(names) <= 4 else f'{names[0]} .. {names[-1]}'})", len(weights))
    T, n_in, n_out = _front.front_widths(radius, kernels)
    for name, w in zip(names, weights):
        _check_weights(w, n_in, n_out, f"front MLP '{name}'")

    def problem():
        training = _needs_weight_grad(weights)
        if kernels != "shared" and training:
            return f"front kernels {kernels!r} with weight gradients (the fused per-channel front level is forward only)"
        if sharing != FUSED_FRONT_SHARING:
            return f"front sharing {sharing!r} (the fused front level runs {FUSED_FRONT_SHARING} sharing only)"
        if radius != FUSED_FRONT_RADIUS:
            return f"front radius {radius} (the fused front level runs radius {FUSED_FRONT_RADIUS} only)"
        return _mlp_problem(weights[0], "front", training)

    fn = _level_impl("front_level", backend, x.device, problem)
    if sharing == FUSED_FRONT_SHARING:     # the backends' signature (symmetry sharing is theirs)
        if kernels == "shared":
            return fn(x, U, S, noise, cfa, weights, radius, leaky_slope, apply_mode, noise_input)
        return fn(x, U, S, noise, cfa, weights, radius, leaky_slope, apply_mode, noise_input, kernels=kernels)
    return fn(x, U, S, noise, cfa, weights, radius, leaky_slope, apply_mode, noise_input, sharing=sharing, kernels=kernels)


def _load_cuda() -> Mapping[str, Callable]:
    global _compiled_mlp_configs, _compiled_forward_only
    from kpnt.ops import _cuda

    table = _cuda.backend_ops()
    compiled, forward_only = _parse_mlp_configs(_cuda.supported_configs())
    if not compiled:
        raise _backend.BackendError(f"cannot read the compiled MLP configurations from {_cuda.supported_configs()!r}")
    _compiled_mlp_configs, _compiled_forward_only = compiled, forward_only
    return table


register_backend("cuda", _load_cuda)
