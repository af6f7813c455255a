"""The loaded extension, its error protocol, and the constants the kernels
share with the reference (one source of truth: the reference modules)."""
from __future__ import annotations

from kpnt import _backend


_module = None  # the extension once loaded: every op call asks for it


def ext():
    """The compiled extension (built on first use, :func:`kpnt._backend.load`).

    The module is kept after the first successful load: ``load()`` re-reads
    and hashes every kernel source to find its build (~0.6 ms), and each op
    call asks for the extension, some twice; at ~400 calls a 24-MP forward
    that was most of the host's time (session 27, tools/mlp_call_cost.py).
    A failed load is not kept here (``load()`` caches its own errors)."""
    global _module
    if _module is None:
        _module = _backend.load()
    return _module


def unwrap(res):
    """The extension reports errors as ("ValueError" | "RuntimeError", message)
    tuples instead of raising through pybind11 (kernels/mlp_core.cuh says why)."""
    if isinstance(res, tuple) and len(res) == 2 and isinstance(res[0], str):
        kind, msg = res
        raise (ValueError if kind == "ValueError" else RuntimeError)(msg)
    return res


def colour_consts() -> list[float]:
    """[CHROMA_EPS, NOISE_LOG_CENTRE, NOISE_LOG_SCALE, PLAIN_EPS] for the colour kernels."""
    from kpnt.ref.apply import PLAIN_EPS
    from kpnt.ref.features import CHROMA_EPS
    from kpnt.ref.noise import NOISE_LOG_CENTRE, NOISE_LOG_SCALE

    return [float(CHROMA_EPS), float(NOISE_LOG_CENTRE), float(NOISE_LOG_SCALE), float(PLAIN_EPS)]


def front_consts() -> list[float]:
    """[NOISE_LOG_CENTRE, NOISE_LOG_SCALE, PLAIN_EPS, VAR_FLOOR] for the front kernels."""
    from kpnt.ref.apply import PLAIN_EPS
    from kpnt.ref.noise import NOISE_LOG_CENTRE, NOISE_LOG_SCALE, VAR_FLOOR

    return [float(NOISE_LOG_CENTRE), float(NOISE_LOG_SCALE), float(PLAIN_EPS), float(VAR_FLOOR)]
