"""What a batch reads and writes: inputs found, the output folder checked,
and one task per file with its output path.

Inputs are files, folders (searched recursively for raw suffixes) and glob
patterns expanded here.  Outputs mirror the input tree under the output
folder: a folder's files keep their path relative to the folder, a
pattern's files their path relative to the pattern's folder part, a named
file its name.  An output folder inside an input folder is never searched,
so a second run of the same command does not pick up its own outputs.
"""
from __future__ import annotations

import glob
import logging
import os
import tempfile
from pathlib import Path

from kpnt.batch.formats import get_format
from kpnt.batch.types import FileResult, Task
from kpnt.errors import KpntError

log = logging.getLogger("kpnt")

#: Suffixes of files collected from folders (files named explicitly are
#: always tried, whatever their suffix).
RAW_SUFFIXES = {
    ".3fr", ".ari", ".arw", ".bay", ".cr2", ".cr3", ".crw", ".dcr", ".dng", ".erf", ".fff", ".iiq", ".k25",
    ".kdc", ".mef", ".mos", ".mrw", ".nef", ".nrw", ".orf", ".pef", ".raf", ".raw", ".rw2", ".rwl", ".sr2",
    ".srf", ".srw", ".x3f",
}


class OutputFolderError(KpntError):
    """The output folder cannot be used (a file, a dangling link, not writable)."""


def check_output_folder(out: Path) -> None:
    """Check ``-o`` before any work, creating nothing (a later error leaves
    no empty folder): it is a folder or can be made one, and is writable.

    Raises:
        OutputFolderError: one line saying what is wrong and what to do.
    """
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise OutputFolderError(f"output folder {out} is a symbolic link to a missing target: remove it or choose another -o")
    if out.exists() and not out.is_dir():
        raise OutputFolderError(f"output folder {out} exists and is not a folder: choose a folder for -o (created if missing)")
    parent = out.absolute()
    while not parent.exists():      # the nearest existing folder is where it would be created
        parent = parent.parent
    if not parent.is_dir():
        raise OutputFolderError(f"cannot create output folder {out}: {parent} is not a folder; choose another -o")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputFolderError(f"output folder {out} is not writable ({parent}: permission denied): "
                                "fix its permissions or choose another -o")


def prepare_output_folder(out: Path) -> Path:
    """Check the output folder once, before any work (:func:`check_output_folder`),
    create it if missing, and prove it writable by creating (and removing) a
    file in it (permission bits do not tell everything: a read-only mount,
    a full disk).

    Raises:
        OutputFolderError: one line saying what is wrong and what to do.
    """
    out = Path(out)
    check_output_folder(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputFolderError(f"cannot create output folder {out} ({e.strerror or e}): choose another -o") from None
    try:
        fd, probe = tempfile.mkstemp(dir=out, prefix=".kpnt-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputFolderError(f"output folder {out} is not writable ({e.strerror or e}): "
                                "fix its permissions or choose another -o") from None
    return out


def walk_files(folder: Path, bad: list, exclude: Path | None, suffixes=RAW_SUFFIXES, kind: str = "raw",
               skip_hidden: bool = False) -> list[Path]:
    """Files under ``folder`` with one of ``suffixes`` (any case; ``kind``
    names them in messages: raw files by default), folder by folder in
    sorted order.  Reported in ``bad``: unreadable subfolders
    (``Path.rglob`` would skip them silently) and dangling links with such a
    suffix.  ``exclude`` (the output folder) is not entered; with
    ``skip_hidden``, neither are files and folders whose names start with a
    dot."""
    found = []

    def onerror(exc: OSError):
        bad.append((Path(exc.filename or folder), f"cannot list folder: {exc.strerror or exc}"))

    for root, dirs, files in os.walk(folder, onerror=onerror):
        keep = []
        for d in sorted(dirs):
            if skip_hidden and d.startswith("."):
                continue
            sub = Path(root) / d
            if exclude is not None and sub.resolve() == exclude:
                log.debug("%s: the output folder, not searched for inputs", sub)
                continue
            if Path(d).suffix.lower() in suffixes:
                log.warning("%s: a folder named like a %s file; searched like any folder", sub, kind)
            keep.append(d)
        dirs[:] = keep
        for name in sorted(files):
            f = Path(root) / name
            if f.suffix.lower() not in suffixes or (skip_hidden and name.startswith(".")):
                continue
            if f.is_file():
                found.append(f)
            elif f.is_symlink() and not f.exists():
                bad.append((f, "symbolic link to a missing file"))
            else:
                bad.append((f, "not a regular file"))
    return found


def _glob_base(pattern: str) -> Path:
    """The folder part of a pattern before its first wildcard component."""
    keep = []
    for part in Path(pattern).parts[:-1]:
        if glob.has_magic(part):
            break
        keep.append(part)
    return Path(*keep) if keep else Path(".")


def collect_inputs(specs, out: Path | None = None) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """(file, output-relative-stem) pairs, plus (path, reason) for unusable inputs.

    A pattern that matches nothing is an error for that input (a literal
    path of that name wins over the pattern).  ``out`` (the output folder)
    is not searched when it lies inside an input folder.
    """
    exclude = Path(out).resolve() if out is not None else None
    found, bad = [], []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found += [(f, f.relative_to(p).with_suffix("")) for f in walk_files(p, bad, exclude)]
        elif p.is_file():
            found.append((p, Path(p.stem)))
        elif p.is_symlink() and not p.exists():
            bad.append((p, "symbolic link to a missing file"))
        elif p.exists():
            bad.append((p, "not a regular file or folder"))
        elif glob.has_magic(str(spec)):
            base = _glob_base(str(spec))
            files = []
            for m in sorted(Path(m) for m in glob.glob(str(spec), recursive=True)):
                if m.is_dir():
                    if exclude is not None and m.resolve() == exclude:
                        continue
                    files += [(f, f.relative_to(base).with_suffix("")) for f in walk_files(m, bad, exclude)]
                elif m.is_file():
                    files.append((m, m.relative_to(base).with_suffix("")))
            if not files:
                bad.append((p, "no file matches this pattern"))
            found += files
        else:
            bad.append((p, "no such file or folder"))
    return found, bad


def plan_tasks(found, out_root: Path, fmt: str, force: bool) -> tuple[list[Task], list[FileResult]]:
    """Tasks to run, and results decided up front: skipped (output exists),
    failed (the output would replace an input, two inputs share an output,
    a folder is in the output's place)."""
    suffix = get_format(fmt).suffix
    inputs_resolved = {f.resolve() for f, _ in found}
    tasks, decided, seen = [], [], {}
    for src, rel in found:
        out = out_root / rel.with_suffix(suffix)
        if out.resolve() in inputs_resolved:
            decided.append(FileResult(src, "failed", out, f"{src}: output {out} would overwrite an input: choose another --out"))
        elif out in seen:
            decided.append(FileResult(src, "failed", out, f"{src}: output {out} is also the output of {seen[out]}: "
                                      "give the inputs distinct names or folders"))
        elif out.is_dir():
            decided.append(FileResult(src, "failed", out, f"{src}: a folder is in the way of its output {out}: remove or rename it"))
        else:
            seen[out] = src
            if (out.exists() or out.is_symlink()) and not force:
                decided.append(FileResult(src, "skipped", out, f"{out} exists (use --force)"))
            else:
                tasks.append(Task(len(tasks), src, out))
    return tasks, decided
