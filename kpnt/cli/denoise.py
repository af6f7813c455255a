"""``kpnt-denoise``: batch denoise-demosaic raw files into linear DNGs.

Examples::

    kpnt-denoise IMG_0001.CR2 -o out/
    kpnt-denoise ~/photos/2026-11-wedding -o ~/photos/denoised --profiles noiseprofiles.json
    kpnt-denoise 'shots/*.NEF' -o out --jobs 2
    kpnt-denoise shoot/ -o out --devices cuda:0,cuda:1
    kpnt-denoise shot.RAF -o out --weights runs/xt1/weights.safetensors --format exr

How a batch runs:

- Inputs are files, folders (searched recursively for raw suffixes) and glob
  patterns expanded here (quote them: ``'shots/*.NEF'``, ``'**'`` recurses).
  Outputs mirror the input tree under ``-o``: a folder's files keep their
  path relative to the folder, a pattern's files their path relative to the
  pattern's folder part, a named file its name.  Existing outputs are
  skipped unless ``--force``; an output that would replace an input, or two
  inputs with the same output, is an error for that input.  Inputs are only
  ever read.
- Each file: decode (rawpy), noise profile (``--noise``, else ``--profiles``,
  else the DNG NoiseProfile tag, else a blind estimate; ``--verbose`` says
  which), denoise in overlapping tiles, write atomically (a temp file beside
  the target, renamed over it: no partial output ever exists under the
  output's name).
- Pipelining: on a GPU (or with ``--io-workers N``) ``N`` threads decode
  files ahead (rawpy and numpy release the GIL), the main thread denoises
  (white balance, model and the uint16 conversion on the GPU, tiles staged
  through pinned memory) and ``N`` threads write the results; at most ``N``
  files wait at each end, results are reported in input order.  On a CPU
  (default ``--io-workers 0``) the next file is decoded in a background
  thread while the current one is denoised and written.
- Parallelism: ``--jobs N`` worker processes (``spawn``) with ``cores / N``
  torch threads each, or ``--devices cuda:0,cuda:1`` with one worker per
  device; files go to whichever worker is free.
- Failures: a file that cannot be read, is not a supported raw, or fails to
  denoise or write is reported (one line) and the batch goes on.  A full
  disk (ENOSPC, EDQUOT) stops the batch: every later file would fail the
  same way after minutes of work; the files not started are counted in the
  summary.  Ctrl-C stops cleanly: the file in progress is abandoned (its
  temp file removed), the summary says what was done, exit code 130.
- Exit code 0 only when nothing failed.
"""
from __future__ import annotations

import argparse
import errno
import glob
import logging
import os
import queue as queue_mod
import signal
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from kpnt.cli._common import add_common_args, error, run_cli, setup_logging
from kpnt.errors import KpntError, WeightsError

log = logging.getLogger("kpnt")
PROG = "kpnt-denoise"

#: Suffixes of files collected from folders (files named explicitly are
#: always tried, whatever their suffix).
RAW_SUFFIXES = {
    ".3fr", ".ari", ".arw", ".bay", ".cr2", ".cr3", ".crw", ".dcr", ".dng", ".erf", ".fff", ".iiq", ".k25",
    ".kdc", ".mef", ".mos", ".mrw", ".nef", ".nrw", ".orf", ".pef", ".raf", ".raw", ".rw2", ".rwl", ".sr2",
    ".srf", ".srw", ".x3f",
}
#: Output suffix of each --format.
FORMATS = {"dng": ".dng", "tiff": ".tif", "tiff-float": ".tif", "exr": ".exr"}
#: Write errors that stop the batch: every later file would hit them too.
FATAL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Denoise and demosaic camera raws (Bayer or X-Trans) into clean linear DNGs "
        "(camera RGB, white balance not applied, colour matrices and metadata kept) that raw editors open like the original.",
        epilog="The noise level comes from --noise if given, else the --profiles table entry for the camera and ISO, "
        "else the file's DNG NoiseProfile tag, else a blind estimate from the raw itself (--verbose says which). "
        "A full disk stops the batch; Ctrl-C stops it cleanly (exit 130). "
        "Exit code 0 only when every file was denoised or skipped.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", help="raw files, folders (searched recursively) and/or quoted glob patterns such as 'shots/*.NEF'")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder (mirrors the input folders' layout)")
    p.add_argument("--format", choices=list(FORMATS), default="dng",
                   help="dng: LinearRaw DNG with the source's metadata (default); tiff: 16-bit TIFF; "
                   "tiff-float: 32-bit float TIFF keeping values above white; exr: 32-bit float OpenEXR")
    p.add_argument("--weights", type=Path, help="weights file from kpnt-train (default: the shipped model for each file's sensor)")
    p.add_argument("--profiles", type=Path, help="darktable-format noise profile table to look the camera and ISO up in")
    p.add_argument("--noise", help="noise 'a,b' (var = a*x + b, normalised raw units) for every file and channel")
    p.add_argument("--tile", type=int, default=None,
                   help="tile side in photosites (each tile also reads an overlap margin around it, so results are seamless); "
                   "0 for no tiling (default 2048 on a CPU: ~1 GB of working set; on a GPU 3072 when the fused kernels "
                   "run the model, else 2048: under 2 GB of GPU memory)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs (default: skip them)")
    p.add_argument("--backend", choices=["auto", "torch", "cuda"], default="auto", help="fused CUDA kernels or the PyTorch reference (default auto)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    p.add_argument("--devices", default=None, help="comma-separated devices, one worker process each, e.g. cuda:0,cuda:1 (files are shared out)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="worker processes on --device (default 1: in this process); each gets cores/N torch threads")
    p.add_argument("--threads", type=int, help="torch threads per worker (default: CPU cores / workers)")
    p.add_argument("--io-workers", type=int, default=None, metavar="N",
                   help="pipeline one device in this process: N threads decode files ahead (at most N waiting) and N threads "
                   "write results while the main thread denoises; 0: decode one file ahead, write in turn. "
                   "Default: min(8, cores/2) on a GPU, 0 on a CPU (there the denoising needs the cores). "
                   "Not with --jobs/--devices (their workers decode one file ahead)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(p)
    return p


# ----------------------------------------------------------------------
# inputs and outputs
# ----------------------------------------------------------------------
def _walk(folder: Path, bad: list) -> list[Path]:
    """Raw files under ``folder``, sorted; unreadable subfolders are
    reported in ``bad`` (``Path.rglob`` would skip them silently)."""
    found = []

    def onerror(exc: OSError):
        bad.append((Path(exc.filename or folder), f"cannot list folder: {exc.strerror or exc}"))

    for root, dirs, files in os.walk(folder, onerror=onerror):
        dirs.sort()
        for name in sorted(files):
            f = Path(root) / name
            if f.suffix.lower() in RAW_SUFFIXES and f.is_file():
                found.append(f)
    return found


def _glob_base(pattern: str) -> Path:
    """The folder part of a pattern before its first wildcard component."""
    parts = Path(pattern).parts
    keep = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        keep.append(part)
    return Path(*keep) if keep else Path(".")


def collect_inputs(specs) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """(file, output-relative-stem) pairs, plus (path, reason) for unusable inputs.

    Files named directly keep their stem; files found in a folder keep their
    path relative to that folder; files matched by a glob pattern keep their
    path relative to the pattern's folder part; so the output tree mirrors
    the input tree.  A pattern that matches nothing is an error for that
    input (a literal path of that name wins over the pattern).
    """
    found, bad = [], []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found += [(f, f.relative_to(p).with_suffix("")) for f in _walk(p, bad)]
        elif p.is_file():
            found.append((p, Path(p.stem)))
        elif p.exists():
            bad.append((p, "not a regular file or folder"))
        elif glob.has_magic(str(spec)):
            base = _glob_base(str(spec))
            matches = sorted(Path(m) for m in glob.glob(str(spec), recursive=True))
            files = []
            for m in matches:
                if m.is_dir():
                    files += [(f, f.relative_to(base).with_suffix("")) for f in _walk(m, bad)]
                elif m.is_file():
                    files.append((m, m.relative_to(base).with_suffix("")))
            if not files:
                bad.append((p, "no file matches this pattern"))
            found += files
        else:
            bad.append((p, "no such file or folder"))
    return found, bad


def parse_noise(spec: str | None) -> tuple[float, float] | None:
    if spec is None:
        return None
    try:
        a, b = (float(v) for v in spec.split(","))
    except ValueError:
        raise KpntError(f"--noise {spec!r}: expected 'a,b', e.g. 1e-4,1e-6") from None
    if not (a >= 0 and b >= 0) or a == b == 0:
        raise KpntError(f"--noise {spec!r}: a and b must be non-negative and not both zero")
    return a, b


@dataclass(frozen=True)
class Task:
    """One file to denoise (``index`` orders the batch)."""

    index: int
    src: Path
    out: Path


@dataclass
class FileResult:
    """What happened to one input; ``status`` is 'done', 'skipped',
    'failed', 'interrupted' or 'not started'."""

    src: Path
    status: str
    out: Path | None = None
    message: str = ""
    noise: str = ""
    seconds: dict = field(default_factory=dict)
    fatal: bool = False
    index: int = -1


def plan_tasks(found, out_root: Path, fmt: str, force: bool) -> tuple[list[Task], list[FileResult]]:
    """Tasks to run, and results decided up front (skipped, clashing outputs)."""
    suffix = FORMATS[fmt]
    inputs_resolved = {f.resolve() for f, _ in found}
    tasks, decided, seen = [], [], {}
    for src, rel in found:
        out = out_root / rel.with_suffix(suffix)
        if out.resolve() in inputs_resolved:
            decided.append(FileResult(src, "failed", out, f"{src}: output {out} would overwrite an input: choose another --out"))
        elif out in seen:
            decided.append(FileResult(src, "failed", out, f"{src}: output {out} is also the output of {seen[out]}: give the inputs distinct names or folders"))
        else:
            seen[out] = src
            if out.exists() and not force:
                decided.append(FileResult(src, "skipped", out, f"{out} exists (use --force)"))
            else:
                tasks.append(Task(len(tasks), src, out))
    return tasks, decided


def write_output(path: Path, rgb: np.ndarray, meta, fmt: str, force: bool) -> None:
    """Write one result atomically in the chosen format (``rgb`` is uint16
    for dng/tiff, float32 for tiff-float/exr, see :func:`output_dtype`)."""
    from kpnt.io.dng import write_linear_dng
    from kpnt.io.exr import write_exr
    from kpnt.io.tiff import write_tiff

    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dng":
        write_linear_dng(path, rgb, meta, overwrite=force)
    elif fmt == "tiff":
        write_tiff(path, rgb, overwrite=force)
    elif fmt == "tiff-float":
        write_tiff(path, rgb, "float32", overwrite=force)
    elif fmt == "exr":
        write_exr(path, rgb, overwrite=force)
    else:
        raise KpntError(f"unknown output format {fmt!r}")


def output_dtype(fmt: str):
    return np.float32 if fmt in ("tiff-float", "exr") else np.uint16


def remove_temp_files(out: Path) -> None:
    """Remove the temp files an interrupted atomic write of ``out`` may have
    left (``kpnt.io.tiff.atomic_write`` names them ``.NAME.*.tmp``)."""
    for tmp in out.parent.glob(f".{glob.escape(out.name)}.*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


# ----------------------------------------------------------------------
# one file
# ----------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """Everything a worker needs (picklable for ``spawn``)."""

    fmt: str
    force: bool
    tile: int | None
    weights: Path | None
    profiles: Path | None
    noise: tuple[float, float] | None
    backend: str
    verbose: bool


class ModelCache:
    """Loads each sensor's weights once (the user's file or the shipped one)."""

    def __init__(self, weights: Path | None, device, backend: str):
        self.weights, self.device, self.backend = weights, device, backend
        self.models = {}

    def get(self, sensor: str):
        if sensor in self.models:
            return self.models[sensor]
        from kpnt.weights_io import load_weights

        if self.weights is not None:
            path = self.weights
        else:
            ref = resources.files("kpnt") / "weights" / f"{sensor}.safetensors"
            path = Path(str(ref))
            if not path.exists():
                raise WeightsError(f"no shipped {sensor} weights in this kpnt install: train them with kpnt-train and pass --weights FILE")
        model, meta = load_weights(path, sensor=sensor, device=self.device)
        model.backend = self.backend
        model.eval()
        self.models[sensor] = model
        log.debug("loaded %s weights from %s", sensor, path)
        return model


def _one_line(exc: BaseException, src: Path) -> str:
    """The one-line report of a failed file."""
    if isinstance(exc, OSError) and exc.strerror:
        msg = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not isinstance(exc, (KpntError, OSError)):
        msg = f"internal error ({type(exc).__name__}: {msg}); --verbose shows the traceback"
    if str(src) not in msg and src.name not in msg:
        msg = f"{src}: {msg}"
    return msg


class FileProcessor:
    """Decodes, denoises and writes files on one device (in the main
    process, or in a worker process)."""

    def __init__(self, settings: Settings, device: str):
        self.s = settings
        self.device = device
        self.models = ModelCache(settings.weights, device, settings.backend)
        self._table = None

    def tile_for(self, model) -> int:
        """--tile, else the device's default for this model (larger on a GPU
        when the fused kernels run it: :data:`kpnt.denoise.DEFAULT_TILE_GPU_FUSED`)."""
        from kpnt.denoise import default_tile
        from kpnt.ops.dispatch import runs_fused

        if self.s.tile is not None:
            return self.s.tile
        return default_tile(self.device, runs_fused(model.config, self.s.backend, self.device))

    def table(self):
        if self.s.profiles is None:
            return None
        if self._table is None:
            from kpnt.noise import load_profile_table

            self._table = load_profile_table(self.s.profiles)
        return self._table

    def read(self, task: Task):
        """Decode one raw (runs in the background decode thread)."""
        from kpnt.io.raw import read_raw

        # Open it ourselves first: a permission problem then reads as one
        # (LibRaw reports any open failure as a generic I/O error).
        with open(task.src, "rb"):
            pass
        raw = read_raw(task.src)
        raw.raw = None          # the uint16 counts are not used past decoding: 2 bytes/photosite less while queued
        return raw

    def decode(self, task: Task) -> "Decoded":
        """Decode one raw and choose its noise profile (a decode thread of
        the pipelined path, :func:`run_pipelined`); never raises: failures
        are handed over in the result."""
        import kpnt.denoise as dn

        t0 = time.perf_counter()
        d = Decoded()
        try:
            d.raw = self.read(task)
        except Exception as e:  # noqa: BLE001  (reported for this file by the main thread)
            d.exc = e
        t1 = time.perf_counter()
        d.t_decode = t1 - t0
        if d.raw is not None:
            try:
                d.noise = dn.choose_noise(d.raw, self.table(), self.s.noise)
                d.raw.saturated = None      # only the blind estimate reads it
            except Exception as e:  # noqa: BLE001
                d.noise_exc = e
            d.t_noise = time.perf_counter() - t1
        return d

    def process(self, task: Task, raw, exc: BaseException | None, t_decode: float, progress=None, on_tiles=None) -> FileResult:
        """Denoise and write one decoded raw; errors become a failed result
        (KeyboardInterrupt propagates)."""
        res, rgb, meta = self.denoise(task, raw, exc, t_decode, progress=progress, on_tiles=on_tiles)
        del raw
        if rgb is not None:
            self.write(task, res, rgb, meta)
        return res

    def denoise(self, task: Task, raw, exc: BaseException | None, t_decode: float, progress=None, on_tiles=None,
                decoded: "Decoded | None" = None):
        """Noise profile (unless ``decoded`` brings it) and tiled denoise of
        one decoded raw: (result, image, metadata); the image is None when
        the file failed (the result says why).  KeyboardInterrupt propagates."""
        import kpnt.denoise as dn

        res = FileResult(task.src, "failed", task.out, index=task.index)
        res.seconds["decode"] = t_decode
        try:
            if exc is not None:
                raise exc
            model = self.models.get(raw.cfa.kind)
            t0 = time.perf_counter()
            if decoded is None:
                noise = dn.choose_noise(raw, self.table(), self.s.noise)
                raw.saturated = None    # only the blind estimate reads it: free it before the tiles run
                res.seconds["noise"] = time.perf_counter() - t0
            else:
                if decoded.noise_exc is not None:
                    raise decoded.noise_exc
                noise = decoded.noise
                res.seconds["noise"] = decoded.t_noise
            res.noise = noise.describe()
            t1 = time.perf_counter()
            tile = self.tile_for(model)
            if on_tiles is not None:
                on_tiles(dn.count_tiles(raw.mosaic.shape, model, raw.cfa, tile))
            # reproducible: the same bytes with any --jobs / --threads
            timing = {}
            rgb = dn.denoise_raw(model, raw, noise, tile=tile, device=self.device, progress=progress,
                                 dtype=output_dtype(self.s.fmt), reproducible=True, timing=timing)
            res.seconds["denoise"] = time.perf_counter() - t1
            if "gpu" in timing:
                res.seconds["gpu"] = timing["gpu"]
            meta = raw.meta
            raw.raw = raw.mosaic = raw.saturated = None      # free the decoded raw before encoding
            return res, rgb, meta
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001  (one bad file must not end a batch of a thousand)
            self._failed(res, e, task)
        return res, None, None

    def write(self, task: Task, res: FileResult, rgb: np.ndarray, meta) -> FileResult:
        """Write one result atomically; sets ``res`` to done or failed (runs
        in the main thread, or in a write thread of the pipelined path)."""
        t0 = time.perf_counter()
        try:
            write_output(task.out, rgb, meta, self.s.fmt, self.s.force)
            res.seconds["encode"] = time.perf_counter() - t0
            res.status = "done"
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001
            self._failed(res, e, task)
        return res

    def _failed(self, res: FileResult, e: BaseException, task: Task) -> None:
        res.status = "failed"
        res.message = _one_line(e, task.src)
        res.fatal = isinstance(e, OSError) and e.errno in FATAL_ERRNOS
        if res.fatal:
            res.message += " (disk full: batch stopped)"
        if self.s.verbose:
            res.message += "\n" + "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip()


@dataclass
class Decoded:
    """What a decode thread hands the main thread: the raw (or why it could
    not be read), its noise profile (or why none), and their seconds."""

    raw: object = None
    exc: BaseException | None = None
    t_decode: float = 0.0
    noise: object = None
    noise_exc: BaseException | None = None
    t_noise: float = 0.0


class Prefetch:
    """Decodes the next file in a background thread (rawpy and numpy release
    the GIL, so decoding overlaps the denoising of the current file)."""

    def __init__(self, read):
        self._read = read
        self._pending = None

    def start(self, task: Task) -> None:
        box = {}

        def run():
            t0 = time.perf_counter()
            try:
                box["raw"] = self._read(task)
            except BaseException as e:  # noqa: BLE001  (handed to the main thread)
                box["exc"] = e
            box["seconds"] = time.perf_counter() - t0

        thread = threading.Thread(target=run, name="kpnt-decode", daemon=True)
        thread.start()
        self._pending = (task, thread, box)

    def take(self):
        """(task, raw or None, exception or None, decode seconds) of the
        file started last; waits for it."""
        task, thread, box = self._pending
        self._pending = None
        thread.join()
        return task, box.get("raw"), box.get("exc"), box.get("seconds", 0.0)


# ----------------------------------------------------------------------
# running a batch: in this process, or in worker processes
# ----------------------------------------------------------------------
def _install_interrupt_handler(signals=(signal.SIGINT,)):
    """First signal: raise KeyboardInterrupt; later ones do nothing, so that
    the clean-up (temp files, summary) cannot itself be interrupted.  (A
    no-op handler, not SIG_IGN: a signal already pending when the handler
    changed to SIG_IGN would raise "ignored due to race condition".)
    Returns the previous handlers (None outside the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    fired = []

    def handler(signum, frame):
        if not fired:
            fired.append(signum)
            raise KeyboardInterrupt

    return {s: signal.signal(s, handler) for s in signals}


def run_serial(tasks: list[Task], settings: Settings, device: str, report, stop: threading.Event, tile_bar=None) -> None:
    """Run tasks in this process, decoding one file ahead.

    On Ctrl-C the file in progress is reported 'interrupted', its temp
    files are removed, and KeyboardInterrupt is re-raised.
    """
    proc = FileProcessor(settings, device)
    pf = Prefetch(proc.read)
    current = None
    try:
        if tasks:
            pf.start(tasks[0])
        for i in range(len(tasks)):
            if stop.is_set():
                break
            task, raw, exc, t_dec = pf.take()
            current = task
            if i + 1 < len(tasks):
                pf.start(tasks[i + 1])   # decode the next file while this one is denoised
            res = proc.process(task, raw, exc, t_dec, progress=tile_bar.update if tile_bar else None,
                               on_tiles=tile_bar.reset_for if tile_bar else None)
            del raw
            current = None
            report(res)
            if res.fatal:
                stop.set()
    except KeyboardInterrupt:
        if current is not None:
            remove_temp_files(current.out)
            report(FileResult(current.src, "interrupted", current.out, "interrupted", index=current.index))
        raise


def run_pipelined(tasks: list[Task], settings: Settings, device: str, report, stop: threading.Event, io_workers: int,
                  tile_bar=None) -> None:
    """Run tasks in this process as a pipeline: ``io_workers`` threads
    decode (and choose noise profiles) up to ``io_workers`` files ahead, the
    main thread denoises (on a GPU: :func:`kpnt.denoise._run_tiles_staged`),
    and ``io_workers`` threads write the results.

    Threads, not processes: rawpy/LibRaw, numpy and file writes release the
    GIL (measured: a 24-megapixel decode stalls another Python thread for
    ~3 ms in total), and a decoded raw handed over from a process would be
    pickled (~0.3 s of copies for 24 MP).  Memory is bounded: at most
    ``io_workers`` decoded raws waiting and ``io_workers`` results being
    written (about 5 + 6 bytes per photosite each with uint16 output).
    Results are reported in input order, with per-file failures as in
    :func:`run_serial`.  A full disk stops the batch: writes not yet started
    are dropped ('not started'); writes already running finish.  Ctrl-C:
    the file being denoised is abandoned, writes already running finish
    (an atomic write leaves the whole file or nothing), queued ones are
    dropped, temp files are removed, and KeyboardInterrupt is re-raised.
    """
    from concurrent.futures import ThreadPoolExecutor

    n = max(1, io_workers)
    proc = FileProcessor(settings, device)
    proc.table()                          # loaded once, before the decode threads share it
    decode_pool = ThreadPoolExecutor(n, thread_name_prefix="kpnt-decode")
    write_pool = ThreadPoolExecutor(n, thread_name_prefix="kpnt-write")
    decoding: deque = deque()             # (task, future of Decoded), input order
    finishing: deque = deque()            # (task, FileResult, write future or None), input order
    nxt = 0
    current = None

    def submit_decodes() -> None:
        nonlocal nxt
        while nxt < len(tasks) and len(decoding) < n and not stop.is_set():
            decoding.append((tasks[nxt], decode_pool.submit(proc.decode, tasks[nxt])))
            nxt += 1

    def drop_queued_writes(status: str) -> None:
        """Writes not started yet are cancelled: their files are not done."""
        for task, res, fut in finishing:
            if fut is not None and fut.cancel():
                res.status, res.message = status, status

    def settle(keep: int) -> None:
        """Report finished files in input order; wait for the oldest while
        more than ``keep`` are pending."""
        while finishing:
            task, res, fut = finishing[0]
            if fut is not None and not fut.cancelled():
                if not fut.done() and len(finishing) <= keep:
                    return
                fut.result()                  # FileProcessor.write reports its errors in res
            finishing.popleft()
            if res.status != "done":
                remove_temp_files(task.out)
            report(res)
            if res.fatal:
                stop.set()
                drop_queued_writes("not started")

    try:
        submit_decodes()
        while decoding and not stop.is_set():
            task, fut = decoding.popleft()
            current = task
            t0 = time.perf_counter()
            got = fut.result()
            waited = time.perf_counter() - t0
            submit_decodes()
            res, rgb, meta = proc.denoise(task, got.raw, got.exc, got.t_decode, decoded=got,
                                          progress=tile_bar.update if tile_bar else None,
                                          on_tiles=tile_bar.reset_for if tile_bar else None)
            res.seconds["wait"] = waited      # the main thread idle, waiting for this file's decode
            got = None
            write = write_pool.submit(proc.write, task, res, rgb, meta) if rgb is not None else None
            finishing.append((task, res, write))
            rgb = None
            current = None
            settle(keep=n)
        settle(keep=0)
    except KeyboardInterrupt:
        stop.set()
        for _, f in decoding:
            f.cancel()
        drop_queued_writes("interrupted")
        for task, res, fut in finishing:
            if fut is not None and not fut.cancelled():
                fut.result()                  # a running write finishes (seconds at most)
            if res.status != "done":
                remove_temp_files(task.out)
            report(res)
        finishing.clear()
        if current is not None:
            remove_temp_files(current.out)
            report(FileResult(current.src, "interrupted", current.out, "interrupted", index=current.index))
        raise
    finally:
        decode_pool.shutdown(wait=True, cancel_futures=True)
        write_pool.shutdown(wait=True, cancel_futures=True)


def default_io_workers(device: str) -> int:
    """``--io-workers`` default: on a GPU, min(8, cores // 2) (at least 1);
    on a CPU 0, since the denoising itself needs the cores."""
    import torch

    if torch.device(device).type == "cpu":
        return 0
    return max(1, min(8, _cores() // 2))


def _worker_main(wid: int, device: str, threads: int, settings: Settings, task_q, result_q, stop_evt) -> None:
    """A worker process: takes tasks from its own queue (the coordinator
    keeps at most one queued ahead, which is decoded in the background),
    sends ('start', wid, index), ('result', wid, FileResult) and finally
    ('exit', wid).  SIGINT/SIGTERM abandon the current file cleanly."""
    _install_interrupt_handler((signal.SIGINT, signal.SIGTERM))
    current = None
    try:
        import torch

        torch.set_num_threads(threads)
        setup_logging(settings.verbose)
        proc = FileProcessor(settings, device)
        pf = Prefetch(proc.read)
        task = task_q.get()
        if task is not None:
            pf.start(task)
        while task is not None:
            result_q.put(("start", wid, task.index))
            nxt = task_q.get()
            task, raw, exc, t_dec = pf.take()
            current = task
            if stop_evt.is_set():
                result_q.put(("result", wid, FileResult(task.src, "not started", task.out, index=task.index)))
            else:
                if nxt is not None:
                    pf.start(nxt)
                res = proc.process(task, raw, exc, t_dec)
                del raw
                result_q.put(("result", wid, res))
            current = None
            task = nxt
            if stop_evt.is_set() and task is not None:
                result_q.put(("result", wid, FileResult(task.src, "not started", task.out, index=task.index)))
                task = None
    except KeyboardInterrupt:
        if current is not None:
            remove_temp_files(current.out)
            result_q.put(("result", wid, FileResult(current.src, "interrupted", current.out, "interrupted", index=current.index)))
    except BaseException as e:  # noqa: BLE001  (reported, the coordinator goes on)
        result_q.put(("crash", wid, f"worker {wid} on {device} failed: {type(e).__name__}: {e}".splitlines()[0]))
    finally:
        result_q.put(("exit", wid))
        result_q.close()
        result_q.join_thread()


def run_pool(tasks: list[Task], settings: Settings, workers: list[tuple[str, int]], report, stop: threading.Event) -> None:
    """Run tasks on worker processes, one per (device, threads) entry.

    Files go to whichever worker asks next; a worker that dies takes only
    its file in progress with it (reported), its queued one goes to another.
    Ctrl-C: SIGTERM to every worker (each removes its temp file and reports),
    then KeyboardInterrupt is re-raised.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")      # fork can deadlock with rawpy/OpenMP (DESIGN.md section 8)
    result_q = ctx.Queue()
    stop_evt = ctx.Event()
    pending = deque(tasks)
    by_index = {t.index: t for t in tasks}
    procs, queues, inflight, alive, crashes = [], [], [], set(), {}
    for wid, (device, threads) in enumerate(workers):
        q = ctx.Queue()
        p = ctx.Process(target=_worker_main, args=(wid, device, threads, settings, q, result_q, stop_evt),
                        name=f"kpnt-denoise-{wid}", daemon=True)
        p.start()
        procs.append(p)
        queues.append(q)
        inflight.append([])
        alive.add(wid)

    def send(wid):
        task = pending.popleft() if pending and not stop.is_set() else None
        if task is not None:
            inflight[wid].append(task.index)
        queues[wid].put(task)

    for wid in range(len(procs)):
        send(wid)
    try:
        while alive:
            try:
                msg = result_q.get(timeout=0.5)
            except queue_mod.Empty:
                for wid in list(alive):
                    if not procs[wid].is_alive():
                        _worker_died(wid, f"exit code {procs[wid].exitcode}", inflight, by_index, pending, alive, report)
                continue
            kind, wid = msg[0], msg[1]
            if kind == "start":
                send(wid)
            elif kind == "result":
                res = msg[2]
                if res.index in inflight[wid]:
                    inflight[wid].remove(res.index)
                report(res)
                if res.fatal:
                    stop.set()
                    stop_evt.set()
            elif kind == "crash":
                crashes[wid] = msg[2]
            elif kind == "exit":
                procs[wid].join(timeout=10)
                _worker_died(wid, crashes.get(wid, f"exit code {procs[wid].exitcode}"), inflight, by_index, pending,
                             alive, report)
            if stop.is_set():
                stop_evt.set()
        for task in pending:
            if stop.is_set():
                report(FileResult(task.src, "not started", task.out, index=task.index))
            else:
                report(FileResult(task.src, "failed", task.out, f"{task.src}: no worker process left to run it", index=task.index))
        pending.clear()
    except KeyboardInterrupt:
        stop.set()
        stop_evt.set()
        for p in procs:
            if p.is_alive():
                p.terminate()          # SIGTERM: the worker cleans up and reports
        deadline = time.monotonic() + 15
        while alive and time.monotonic() < deadline:
            try:
                msg = result_q.get(timeout=0.5)
            except queue_mod.Empty:
                msg = None
            if msg and msg[0] == "result":
                if msg[2].index in inflight[msg[1]]:
                    inflight[msg[1]].remove(msg[2].index)
                report(msg[2])
            elif msg and msg[0] == "exit":
                alive.discard(msg[1])
            for wid in list(alive):
                if not procs[wid].is_alive() and msg is None:
                    alive.discard(wid)
        for wid, p in enumerate(procs):
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
            for index in inflight[wid]:
                remove_temp_files(by_index[index].out)
        raise
    finally:
        for p in procs:
            p.join(timeout=5)


def _worker_died(wid, why: str, inflight, by_index, pending, alive, report) -> None:
    """Account for a worker that has gone: its started file failed (``why``:
    its exit code or crash), its queued one goes back to the queue."""
    alive.discard(wid)
    left = inflight[wid]
    inflight[wid] = []
    if not left:
        return
    first, rest = left[0], left[1:]
    task = by_index[first]
    remove_temp_files(task.out)
    report(FileResult(task.src, "failed", task.out, f"{task.src}: worker process ended ({why}) while on this file", index=first))
    for index in reversed(rest):
        pending.appendleft(by_index[index])


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _workers(args, torch) -> tuple[list[tuple[str, int]], bool]:
    """(device, threads) per worker, and whether they run in this process."""
    if args.jobs < 1:
        raise KpntError(f"--jobs must be >= 1, got {args.jobs}")
    if args.threads is not None and args.threads < 1:
        raise KpntError(f"--threads must be >= 1, got {args.threads}")
    if args.tile is not None and args.tile < 0:
        raise KpntError(f"--tile must be >= 0 (0: no tiling), got {args.tile}")
    if args.io_workers is not None and args.io_workers < 0:
        raise KpntError(f"--io-workers must be >= 0, got {args.io_workers}")
    if args.io_workers and (args.devices or args.jobs != 1):
        raise KpntError("--io-workers pipelines one device in this process: do not combine it with --jobs or --devices")
    if args.devices:
        if args.device or args.jobs != 1:
            raise KpntError("--devices gives one worker per device: do not combine it with --device or --jobs")
        devices = [d.strip() for d in args.devices.split(",") if d.strip()]
        if not devices:
            raise KpntError(f"--devices {args.devices!r}: expected e.g. cuda:0,cuda:1")
    else:
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        devices = [device] * args.jobs
    for d in devices:
        try:
            dev = torch.device(d)
        except RuntimeError:
            raise KpntError(f"device {d!r} is not a torch device (e.g. cpu, cuda:0)") from None
        if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
            raise KpntError(f"device {d}: no such CUDA device here ({torch.cuda.device_count()} visible)")
    threads = args.threads or max(1, _cores() // len(devices))
    return [(d, threads) for d in devices], len(devices) == 1


class TileBar:
    """Tile progress of the file in progress (a second bar under the file bar)."""

    def __init__(self, tqdm, disable: bool):
        self._tqdm, self._disable, self._bar = tqdm, disable, None

    def reset_for(self, n: int) -> None:
        self.close()
        if n > 1 and not self._disable:
            self._bar = self._tqdm(total=n, desc="tiles", unit="tile", position=1, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def main(argv=None, on_result=None) -> int:
    """The command; ``on_result(FileResult)`` (for tools such as
    tools/bench_denoise.py) is called with every file's result."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    from kpnt.denoise import configure_cuda_allocator

    configure_cuda_allocator()      # before the first CUDA allocation (inherited by --devices workers)

    def body() -> int:
        import torch
        from tqdm import tqdm

        given = parse_noise(args.noise)
        if args.profiles is not None:
            from kpnt.noise import load_profile_table

            load_profile_table(args.profiles)        # a bad table is an error before any work
        workers, in_process = _workers(args, torch)
        settings = Settings(args.format, args.force, args.tile, args.weights, args.profiles, given, args.backend, args.verbose)
        found, bad = collect_inputs(args.inputs)
        tasks, decided = plan_tasks(found, args.out, args.format, args.force)
        results: list[FileResult] = [FileResult(p, "failed", None, f"{p}: {why}") for p, why in bad] + decided
        for r in results:
            if r.status == "skipped":
                log.debug("%s: %s, skipped", r.src, r.message)
            else:
                tqdm.write(f"{PROG}: error: {r.message}", file=sys.stderr)
        bar = tqdm(total=len(tasks), desc="denoise", unit="file", disable=args.no_progress or len(tasks) < 2, dynamic_ncols=True)
        tile_bar = TileBar(tqdm, args.no_progress)

        def report(res: FileResult) -> None:
            results.append(res)
            if on_result is not None:
                on_result(res)
            tile_bar.close()
            bar.update(1)
            if res.status == "done":
                secs = ", ".join(f"{k} {v:.1f} s" for k, v in res.seconds.items())
                log.debug("%s -> %s: %s; %s", res.src, res.out, res.noise, secs)
            elif res.status == "failed":
                tqdm.write(f"{PROG}: error: {res.message}", file=sys.stderr)

        stop = threading.Event()
        interrupted = False
        previous = _install_interrupt_handler()
        try:
            if in_process:
                device, threads = workers[0]
                if args.threads:
                    torch.set_num_threads(threads)
                io_workers = default_io_workers(device) if args.io_workers is None else args.io_workers
                if io_workers > 0:
                    run_pipelined(tasks, settings, device, report, stop, io_workers, tile_bar)
                else:
                    run_serial(tasks, settings, device, report, stop, tile_bar)
            else:
                run_pool(tasks, settings, workers, report, stop)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if previous:
                for s, h in previous.items():
                    signal.signal(s, h)
            tile_bar.close()
            bar.close()
        reported = {r.index for r in results if r.index >= 0}
        for t in tasks:
            if t.index not in reported:
                results.append(FileResult(t.src, "not started", t.out, index=t.index))
        return summarise(results, args.out, interrupted)

    return run_cli(PROG, body, args.verbose)


def summarise(results: list[FileResult], out: Path, interrupted: bool) -> int:
    """Print the closing summary; return the exit code (0 only when nothing
    failed, 130 after Ctrl-C, else 1)."""
    count = lambda s: sum(r.status == s for r in results)  # noqa: E731
    done, skipped, failed = count("done"), count("skipped"), count("failed")
    left = count("not started") + count("interrupted")
    line = f"{done} denoised, {skipped} skipped (output exists; --force to redo), {failed} failed"
    if left:
        why = "interrupted" if interrupted else "stopped after a full disk"
        line += f", {left} not done ({why})"
    print(line + (f" -> {out}" if done else ""))
    for r in results:
        if r.status == "failed":
            error(PROG, r.message.splitlines()[0])
    if interrupted:
        error(PROG, "interrupted: no partial output was left; run the same command again to finish (done files are skipped)")
        return 130
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    # Through the importable module (python -m kpnt.cli.denoise): worker
    # processes unpickle its functions and classes by that name.
    from kpnt.cli.denoise import main as _main

    sys.exit(_main())
