"""Running a batch: where the files go (this process or worker processes),
with what parallelism, and what it adds up to.

The library entry point is :func:`run_batch`; :mod:`kpnt.cli.denoise` and
``tools/bench_denoise.py`` both call it.

Example::

    from kpnt.batch import Settings, collect_inputs, plan_tasks, run_batch
    found, bad = collect_inputs(["shots/"], out=Path("out"))
    tasks, decided = plan_tasks(found, Path("out"), "dng", force=False)
    results = []
    run_batch(tasks, Settings(), plan_slots(device="cpu"), report=results.append)
"""
from __future__ import annotations

import logging
import os
import threading

from kpnt.batch.pipelined import run_pipelined
from kpnt.batch.pool import run_pool
from kpnt.batch.serial import run_serial
from kpnt.batch.types import FileResult, Settings, Task
from kpnt.errors import KpntError

log = logging.getLogger("kpnt")


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def default_device() -> str:
    """'cuda' when torch sees a GPU, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_io_workers(device: str) -> int:
    """``--io-workers`` default: on a GPU, min(8, cores // 2) (at least 1);
    on a CPU 0, since the denoising itself needs the cores."""
    import torch

    if torch.device(device).type == "cpu":
        return 0
    return max(1, min(8, cores() // 2))


def plan_slots(device: str | None = None, jobs: int = 1, devices: list[str] | None = None,
               threads: int | None = None) -> list[tuple[str, int]]:
    """(device, torch threads) of each worker: ``jobs`` on ``device`` (default
    cuda if available), or one per entry of ``devices``; threads default to
    cores / workers.  Raises KpntError (one line) for a device torch does not
    know or does not have."""
    import torch

    if devices:
        if device or jobs != 1:
            raise KpntError("--devices gives one worker per device: do not combine it with --device or --jobs")
        names = list(devices)
    else:
        names = [device or default_device()] * jobs
    for d in names:
        try:
            dev = torch.device(d)
        except RuntimeError:
            raise KpntError(f"device {d!r} is not a torch device (e.g. cpu, cuda:0)") from None
        if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
            raise KpntError(f"device {d}: no such CUDA device here ({torch.cuda.device_count()} visible)")
    per = threads or max(1, cores() // len(names))
    return [(d, per) for d in names]


def start_decoders(settings: Settings, slots: list[tuple[str, int]], io_workers: int | None = None):
    """A started :class:`~kpnt.batch.decoder.DecoderPool` sized for the
    batch :func:`run_batch` would run in this process with these arguments
    (``io_workers`` decoders when pipelined, one when serial), or None when
    the batch runs in worker processes (each has its own).  Starting it
    before loading weights and scanning inputs hides the children's
    start-up; pass it as ``run_batch(decoders=...)`` and close it after."""
    from kpnt.batch.decoder import DecoderPool

    if len(slots) != 1:
        return None
    n = default_io_workers(slots[0][0]) if io_workers is None else io_workers
    pool = DecoderPool(settings.decoder, max(1, n), settings.decode_timeout, blind_possible=settings.noise is None,
                       quiet=not settings.verbose)
    pool.start()
    return pool


def run_batch(tasks: list[Task], settings: Settings, slots: list[tuple[str, int]], report,
              io_workers: int | None = None, stop: threading.Event | None = None, tile_bar=None, decoders=None) -> None:
    """Denoise ``tasks``; ``report(FileResult)`` gets every file's result.

    One slot runs in this process: pipelined (``io_workers`` > 0; default
    :func:`default_io_workers`) or serial; several slots run in worker
    processes (:func:`kpnt.batch.pool.run_pool`).  Files with no result when
    this returns (a full disk stopped the batch) or raises
    (KeyboardInterrupt: Ctrl-C or SIGTERM, re-raised after the clean-up) are
    the caller's to count as not started: :func:`not_reported`.
    ``decoders``: a started pool from :func:`start_decoders` (ignored by
    worker processes), left open for the caller to reuse or close.
    """
    stop = stop or threading.Event()
    if len(slots) == 1:
        device, _threads = slots[0]
        n = default_io_workers(device) if io_workers is None else io_workers
        if n > 0:
            run_pipelined(tasks, settings, device, report, stop, n, tile_bar, decoders=decoders)
        else:
            run_serial(tasks, settings, device, report, stop, tile_bar, decoders=decoders)
    else:
        if io_workers:
            raise KpntError("--io-workers pipelines one device in this process: do not combine it with --jobs or --devices")
        run_pool(tasks, settings, slots, report, stop)


def not_reported(tasks: list[Task], results: list[FileResult]) -> list[FileResult]:
    """'not started' results for the tasks that got none."""
    seen = {r.index for r in results if r.index >= 0}
    return [FileResult(t.src, "not started", t.out, index=t.index) for t in tasks if t.index not in seen]


def count(results: list[FileResult]) -> dict[str, int]:
    """How many results have each status (every status present, 0 if none)."""
    out = dict.fromkeys(("done", "skipped", "failed", "interrupted", "not started"), 0)
    for r in results:
        out[r.status] = out.get(r.status, 0) + 1
    return out
