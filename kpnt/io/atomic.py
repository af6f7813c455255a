"""Atomic file writes: a temp file beside the target, renamed over it.

The one place that knows how temp files are named, so that the writers
(:func:`atomic_write`, :func:`atomic_file`) and the batch engine's clean-up
(:func:`remove_temp_files`, :func:`clean_stale_temp_files`) agree:
``.NAME.PID-RANDOM.tmp`` in the target's folder.  A reader of the folder
never sees a partial file under the target's name; a process killed
mid-write (SIGKILL, power loss) leaves only a hidden temp file, which the
next batch run over the same outputs removes once its writer is gone.

Example::

    >>> atomic_write("out/a.dng", [b"II*\\0", payload], overwrite=False)  # doctest: +SKIP
"""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

from kpnt.errors import KpntError

_SUFFIX = ".tmp"


class OutputPathError(KpntError):
    """An output path cannot be written (exists, is a folder, no parent folder)."""


def temp_name(path: Path) -> str:
    """A fresh temp file name for ``path``: ``.NAME.PID-RANDOM.tmp``."""
    return f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{_SUFFIX}"


def _owner(target_name: str, name: str) -> int | None | bool:
    """For a file ``name`` in the target's folder: False when it is not a
    temp file of ``target_name``; else its writer's pid, or None when the
    name carries none (temp files of kpnt versions before the pid naming)."""
    prefix = f".{target_name}."
    if not (name.startswith(prefix) and name.endswith(_SUFFIX)):
        return False
    middle = name[len(prefix):-len(_SUFFIX)]
    pid = middle.split("-", 1)[0]
    return int(pid) if "-" in middle and pid.isdigit() else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:        # exists, owned by someone else
        return True
    return True


def check_target(path, overwrite: bool) -> Path:
    """Validate an output path: parent folder exists, not a folder, no
    clobbering unless ``overwrite``."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{path} is a folder, expected a file path: remove or rename the folder")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise OutputPathError(f"{path} already exists: pass overwrite=True (--force) to replace it")
    if not path.parent.is_dir():
        raise OutputPathError(f"folder {path.parent} does not exist: create it first")
    return path


@contextmanager
def atomic_file(path, overwrite: bool = True):
    """``with atomic_file(path) as fh: ...``: a binary file handle on a temp
    file beside ``path``, renamed over ``path`` when the block ends without
    an error, removed otherwise (for writers that need a file object:
    ``torch.save``, ``np.save``, ``json.dump`` through a wrapper).

    Raises:
        OutputPathError: as :func:`check_target`.
    """
    path = check_target(path, overwrite)
    tmp = path.parent / temp_name(path)
    # O_EXCL: never write through a file or link someone else put there.
    # The mode is the umask's usual one (mkstemp's would be owner-only).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path, blobs: Iterable, overwrite: bool) -> None:
    """Write byte blobs (bytes or buffers, e.g. a numpy array's memoryview)
    to a temp file beside ``path``, then rename it over ``path``.

    A failure (or Ctrl-C) leaves neither a partial target nor a temp file
    behind.  The existence check and the rename are two steps: a file
    created in between by another process is replaced (the caller asked for
    a fresh path).

    Raises:
        OutputPathError: ``path`` exists (without ``overwrite``), is a
            folder, or its folder is missing.
        OSError: the write itself failed (disk full, read-only, ...).
    """
    with atomic_file(path, overwrite) as fh:
        for b in blobs:
            fh.write(b)


def remove_temp_files(path) -> None:
    """Remove the temp files that interrupted writes of ``path`` left: this
    process's and those of writers that are gone (a worker process that
    died); a live process's temp files are its own to remove."""
    path = Path(path)
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        owner = _owner(path.name, name)
        if owner is False or (owner is not None and owner != os.getpid() and _alive(owner)):
            continue
        try:
            os.unlink(path.parent / name)
        except OSError:
            pass


def clean_stale_temp_files(targets: Iterable[Path]) -> list[Path]:
    """Remove temp files of ``targets`` whose writer process is gone (a run
    killed by SIGKILL or a power cut); returns what was removed.

    Each folder is listed once, so this costs one ``listdir`` per output
    folder whatever the number of targets.  Temp files of a live process
    (another run writing the same outputs) are left alone.
    """
    by_folder: dict[Path, set[str]] = {}
    for t in targets:
        t = Path(t)
        by_folder.setdefault(t.parent, set()).add(t.name)
    removed = []
    for folder, wanted in by_folder.items():
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            if not (name.startswith(".") and name.endswith(_SUFFIX)):
                continue
            # the target name is everything up to the last '.' before the tag
            target = name[1:-len(_SUFFIX)].rsplit(".", 1)[0]
            if target not in wanted:
                continue
            owner = _owner(target, name)
            if owner is False or (owner is not None and _alive(owner)):
                continue
            try:
                os.unlink(folder / name)
                removed.append(folder / name)
            except OSError:
                pass
    return removed
