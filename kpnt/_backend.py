"""Lazy build of kpnt's fused CUDA kernels (``kernels/``).

``import kpnt`` never compiles anything and never touches CUDA: the kernels
are built with :func:`torch.utils.cpp_extension.load` on the first call of
:func:`load` (which the CUDA ops make on their first use), for the GPU that
is present, and cached on disk under ``$KPNT_CACHE_DIR`` (default
``~/.cache/kpnt/kernels``).  Within one process the module, or the error that
prevented it, is cached too: a failed build is not retried on every call, and
an explicit ``backend="cuda"`` re-raises the same :class:`BackendError`.

The build directory's name carries a hash of everything that changes the
binary besides the sources (compiler flags, target architectures, torch and
CUDA versions), so changing a flag builds afresh instead of loading a stale
module; edits to the sources are picked up by ninja's dependency tracking.

Environment:

- ``TORCH_CUDA_ARCH_LIST``: target architectures (default: the current GPU's,
  e.g. ``9.0``).  Hopper's ``9.0`` is built as ``9.0a``, the arch-specific
  target whose code runs on the same GPUs and may use wgmma (the guide
  block's fastest kernel); ``9.0+PTX`` stays portable PTX (no wgmma).
- ``KPNT_CACHE_DIR``: where builds are kept.
- ``KPNT_KERNELS_DIR``: the CUDA sources (default: ``kernels/`` next to the
  package, i.e. the repository checkout, else ``<sys.prefix>/share/kpnt/kernels``
  where a wheel installs them).
- ``KPNT_BUILD_VERBOSE=1``: show compiler output and ``ptxas`` resource use.

Example::

    >>> from kpnt import _backend
    >>> ext = _backend.load()            # doctest: +SKIP  (builds on first use)
    >>> ext.mlp_supported_configs()      # doctest: +SKIP
    '(in=32, hidden=64, out=16, n_hidden=6), (in=32, hidden=64, out=32, n_hidden=4)'
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from kpnt.errors import KpntError

log = logging.getLogger("kpnt.backend")

#: Translation units of the extension, relative to the kernels directory.
#: One per op (kernels/mlp.cu, colour_level.cu, front_level.cu, guide_block.cu) over the shared
#: core kernels/mlp_core.cuh, instantiated from kernels/shapes.def.
SOURCES = ("mlp.cu", "colour_level.cu", "front_level.cu", "guide_block.cu", "up_block.cu", "guide_finish.cu",
           "guide_start.cu", "guide_train.cu", "guide_wgrad.cu", "pyramid.cu", "train_update.cu",
           "bindings.cpp")

_lock = threading.Lock()
_cache: dict[str, Any] = {}  # build key -> module, or the BackendError that stopped it


class BackendError(KpntError):
    """The fused CUDA kernels are unavailable: no GPU, no compiler, or a failed build."""


class BackendUnavailableError(BackendError, ValueError):
    """An explicitly requested backend cannot run here (``kpnt.ops`` raises it
    for ``backend='cuda'``; a ``ValueError`` because the argument is unusable)."""


def kernels_dir() -> Path:
    """Directory of the CUDA sources: ``$KPNT_KERNELS_DIR``, else the
    checkout's ``kernels/``, else ``<prefix>/share/kpnt/kernels`` where a
    wheel installs them (pyproject.toml ``data-files``)."""
    env = os.environ.get("KPNT_KERNELS_DIR")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent / "kernels"
    installed = Path(sys.prefix) / "share" / "kpnt" / "kernels"
    if not (checkout / SOURCES[0]).is_file() and (installed / SOURCES[0]).is_file():
        return installed
    return checkout


def cache_dir() -> Path:
    """Directory that holds one build folder per flag set."""
    env = os.environ.get("KPNT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "kpnt" / "kernels"


def _arch_list() -> str:
    env = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if env:
        return env
    import torch

    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def with_hopper_features(arch_list: str, cuda_version: str | None) -> str:
    """``arch_list`` with every plain ``9.0`` entry built as ``9.0a`` where
    the CUDA compiler knows it (CUDA 12 and later; torch's CUDA 11.8 builds
    keep ``9.0``).

    sm_90a code runs on exactly the GPUs sm_90 code runs on (Hopper) and may
    use its arch-specific instructions (wgmma, kernels/guide_block_wgmma.cuh);
    ``+PTX`` entries are kept as written, since sm_90a PTX would not carry
    to later GPUs (torch's named lists such as ``Hopper`` expand to
    ``9.0+PTX``, so they build no wgmma either).  Entries may be separated by
    ``;`` or spaces, as torch reads them."""
    entries = [e for e in arch_list.replace(" ", ";").split(";") if e]
    try:
        cuda_major = int((cuda_version or "0").split(".")[0])
    except ValueError:
        cuda_major = 0
    if cuda_major < 12:
        return ";".join(entries)
    return ";".join("9.0a" if e == "9.0" else e for e in entries)


def build_flags(arch_list: str | None = None) -> dict[str, Any]:
    """Everything besides the sources that determines the built module.

    Pure function of the environment (no compiler is run); its hash names the
    build directory, so a change here means a fresh build.
    """
    import torch

    verbose = os.environ.get("KPNT_BUILD_VERBOSE", "") not in ("", "0")
    # No -std here: cpp_extension passes the standard that torch's headers
    # need (C++17 or newer) to both compilers; the kernels need C++17.
    # torch's extension builder stopped passing the libstdc++ ABI macro
    # (2.11 does not); state it so that std::string and exceptions crossing
    # into libtorch agree with the ABI torch was built with, whatever the
    # host compiler's default.
    abi = [f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"]
    cuda_cflags = ["-O3", "-lineinfo", *abi]
    if verbose:
        cuda_cflags.append("-Xptxas=-v")
    return {
        "arch": with_hopper_features(arch_list if arch_list is not None else _arch_list(), torch.version.cuda),
        "cflags": ["-O3", *abi],
        "cuda_cflags": cuda_cflags,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }


def build_name(flags: dict[str, Any]) -> str:
    """Module / build-directory name for a flag set."""
    digest = hashlib.sha256(json.dumps(flags, sort_keys=True).encode()).hexdigest()[:12]
    return f"kpnt_cuda_{digest}"


def _sources_digest(src_dir: Path) -> str:
    """SHA-256 (12 hex digits) of the CUDA sources in ``src_dir``: what a build
    is made of, whatever the git state of the tree they came from."""
    h = hashlib.sha256()
    for path in sorted(src_dir.glob("*")):
        if path.suffix in (".cu", ".cuh", ".cpp", ".h", ".def"):
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def sources_digest() -> str:
    """:func:`_sources_digest` of :func:`kernels_dir`: names the kernels a
    benchmark ran (a copy of the tree on another machine can carry a stale
    ``.git``, so its commit alone may not)."""
    return _sources_digest(kernels_dir())


def is_built() -> bool:
    """True if :func:`load` already returned a module in this process."""
    return any(not isinstance(v, BaseException) for v in _cache.values())


def load(verbose: bool | None = None):
    """Return the compiled extension module, building it on first use.

    Raises :class:`BackendError` (cached: later calls raise the same error
    without retrying) when there is no CUDA GPU, no CUDA compiler, or the
    build fails.
    """
    import torch

    if not torch.cuda.is_available():
        # Not cached: a process may gain a GPU later (e.g. CUDA_VISIBLE_DEVICES
        # set before torch initialises), and this check costs nothing.
        raise BackendError(
            "the CUDA backend needs a CUDA GPU, but torch.cuda.is_available() is False "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); use backend='torch'"
        )
    src_dir = kernels_dir()
    missing = [s for s in SOURCES if not (src_dir / s).is_file()]
    if missing:
        raise BackendError(
            f"the CUDA kernel sources {', '.join(missing)} are not in {src_dir}; "
            "set KPNT_KERNELS_DIR to the repository's kernels/ folder"
        )
    flags = build_flags()
    key = build_name(flags) + ":" + _sources_digest(src_dir)
    with _lock:
        hit = _cache.get(key)
        if isinstance(hit, BaseException):
            raise hit
        if hit is not None:
            return hit
        try:
            module = _build(src_dir, flags, verbose)
        except BackendError as err:
            _cache[key] = err
            raise
        except Exception as exc:  # compiler errors, linker errors, import errors
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            err = BackendError(
                f"building the fused CUDA kernels failed ({first}); "
                "run with KPNT_BUILD_VERBOSE=1 for the compiler output, or use backend='torch'"
            )
            err.__cause__ = exc
            _cache[key] = err
            raise err from exc
        _cache[key] = module
        return module


def _build(src_dir: Path, flags: dict[str, Any], verbose: bool | None):
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:
        raise BackendError(
            "no CUDA compiler found for the fused kernels: install the CUDA toolkit (nvcc) "
            f"matching torch's CUDA {flags['cuda']} and set CUDA_HOME, or use backend='torch'"
        )
    if verbose is None:
        verbose = os.environ.get("KPNT_BUILD_VERBOSE", "") not in ("", "0")
    name = build_name(flags)
    build_dir = cache_dir() / name
    build_dir.mkdir(parents=True, exist_ok=True)
    # cpp_extension reads the target architectures from this variable.
    old_arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = flags["arch"]
    t0 = time.perf_counter()
    try:
        module = cpp_extension.load(
            name=name,
            sources=[str(src_dir / s) for s in SOURCES],
            extra_cflags=flags["cflags"],
            extra_cuda_cflags=flags["cuda_cflags"],
            extra_include_paths=[str(src_dir)],
            build_directory=str(build_dir),
            verbose=verbose,
        )
    finally:
        if old_arch is None:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = old_arch
    log.info("fused CUDA kernels ready (%s, arch %s, %.1f s)", name, flags["arch"], time.perf_counter() - t0)
    return module
