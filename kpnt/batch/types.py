"""The records a batch passes around: what to do, how, and what happened.

All are picklable: worker processes (``spawn``) receive :class:`Settings`
and :class:`Task` and send back :class:`FileResult`.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field
from pathlib import Path

from kpnt.errors import KpntError

#: Write errors that stop the batch: every later file would hit them too
#: (a full disk, a quota, a read-only file system).
FATAL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EROFS}

#: What stopped the batch, per fatal errno ("stopped after ...").
FATAL_WHY = {errno.ENOSPC: "a full disk", getattr(errno, "EDQUOT", errno.ENOSPC): "an exceeded disk quota",
             errno.EROFS: "a read-only file system"}


@dataclass(frozen=True)
class Settings:
    """How every file of a batch is processed (the same in every worker).

    Attributes:
        fmt: output format name (:data:`kpnt.batch.formats.FORMATS`).
        force: replace existing outputs.
        tile: tile side in photosites (0: none; None: the device's default).
        weights: a weights file, or None for the shipped weights per sensor.
        profiles: a noise-profile table, or None.
        noise: ``(a, b)`` for every file, or None.
        backend: 'auto', 'torch' or 'cuda'.
        verbose: add tracebacks to failure messages.
        decoder: 'child': raws are decoded in supervised child processes (a
            crash or hang of LibRaw costs one file); 'inline': in the
            process that denoises (a LibRaw crash ends that process).
        decode_timeout: seconds a child may take for one file ('child').
        strength: 1 full denoising, 0 demosaic only (the noise level the
            model is told is scaled by it; :func:`kpnt.denoise.denoise_raw`).
        hot_pixels: replace hot/dead photosites before denoising.
        compression: DNG pixel data, 'ljpeg' or 'none' (:data:`kpnt.io.dng.COMPRESSIONS`).
        cpu_precision: 'auto', 'fp32' or 'bf16' MLP products on a CPU.
        views: model runs per tile averaged over rotations and mirrors
            (1, 2, 4 or 8; :mod:`kpnt.ensemble`).
    """

    fmt: str = "dng"
    force: bool = False
    tile: int | None = None
    weights: Path | None = None
    profiles: Path | None = None
    noise: tuple[float, float] | None = None
    backend: str = "auto"
    verbose: bool = False
    decoder: str = "child"
    decode_timeout: float = 300.0
    strength: float = 1.0
    hot_pixels: bool = True
    compression: str = "ljpeg"
    cpu_precision: str = "auto"
    views: int = 1


@dataclass(frozen=True)
class Task:
    """One file to denoise (``index`` orders the batch)."""

    index: int
    src: Path
    out: Path


@dataclass
class FileResult:
    """What happened to one input; ``status`` is 'done', 'skipped',
    'failed', 'interrupted' or 'not started'.  ``fatal``: why this failure
    stops the batch ('a full disk', see :data:`FATAL_WHY`); empty: it does not."""

    src: Path
    status: str
    out: Path | None = None
    message: str = ""
    noise: str = ""
    seconds: dict = field(default_factory=dict)
    fatal: str = ""
    index: int = -1


def abandoned(task: Task) -> FileResult:
    """The result of ``task`` cut short by an interrupt while it was being
    processed: its temporary output files are removed first."""
    from kpnt.io.atomic import remove_temp_files

    remove_temp_files(task.out)
    return FileResult(task.src, "interrupted", task.out, "interrupted", index=task.index)


def one_line(exc: BaseException, src: Path) -> str:
    """The one-line report of a file that failed with ``exc``; names the
    file, and marks exceptions kpnt did not expect as internal errors."""
    if isinstance(exc, OSError) and exc.strerror:
        msg = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, (KpntError, OSError)):
        msg = f"internal error ({type(exc).__name__}: {msg}); --verbose shows the traceback"
    if str(src) not in msg and src.name not in msg:
        msg = f"{src}: {msg}"
    return msg
