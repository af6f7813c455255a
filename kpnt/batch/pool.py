"""The worker-process runner (``--jobs N``, ``--devices``): one process per
(device, threads) slot, files to whichever worker is free, dead workers
replaced.

Each worker decodes through its own supervised decoder child, so a LibRaw
crash costs one file and the worker goes on.  A worker that dies anyway
(out of memory, a crash in the model) fails the file it was denoising,
hands its queued file back, and a fresh worker takes its slot.  Workers
exit when the coordinator is gone (killed with SIGKILL, say): no orphans.
"""
from __future__ import annotations

import logging
import os
import queue as queue_mod
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from kpnt.batch.decoder import die_with_parent, signal_text
from kpnt.batch.types import FileResult, Settings, Task, abandoned
from kpnt.io.atomic import remove_temp_files

log = logging.getLogger("kpnt")


def _worker_main(serial: int, device: str, threads: int, settings: Settings, task_q, result_q, stop_evt,
                 parent_pid: int, decoding) -> None:
    """A worker process: takes tasks from its own queue (the coordinator
    keeps at most one queued ahead, which is decoded in the background),
    sends ('ready', serial), ('start', serial, index), ('result', serial,
    FileResult) and finally ('exit', serial).  ``decoding`` (shared memory,
    written at once, unlike a queue's buffered messages) holds the index of
    the file being decoded, -1 when none: if a decoder crash takes the
    worker down (``--decoder inline``), the coordinator blames that file.
    SIGINT/SIGTERM abandon the current file cleanly."""
    from kpnt.batch.processor import FileProcessor
    from kpnt.batch.serial import Prefetch
    from kpnt.batch.signals import StopSignals
    from kpnt.cli._common import setup_logging

    die_with_parent(parent_pid)
    current = proc = None
    try:
        with StopSignals():
            try:
                import torch

                torch.set_num_threads(threads)
                setup_logging(settings.verbose)
                proc = FileProcessor(settings, device, decoders=1)
                proc.start()
                result_q.put(("ready", serial))
                def read(task):
                    decoding.value = task.index
                    raw = proc.read(task)
                    decoding.value = -1
                    return raw

                pf = Prefetch(read)
                task = task_q.get()
                if task is not None:
                    pf.start(task)
                while task is not None:
                    result_q.put(("start", serial, task.index))
                    nxt = task_q.get()
                    task, raw, exc, t_dec = pf.take()
                    current = task
                    if stop_evt.is_set():
                        result_q.put(("result", serial, FileResult(task.src, "not started", task.out, index=task.index)))
                    else:
                        if nxt is not None:
                            pf.start(nxt)
                        res = proc.process(task, raw, exc, t_dec)
                        del raw
                        result_q.put(("result", serial, res))
                    current = None
                    task = nxt
                    if stop_evt.is_set() and task is not None:
                        result_q.put(("result", serial, FileResult(task.src, "not started", task.out, index=task.index)))
                        task = None
            except KeyboardInterrupt:
                if current is not None:
                    result_q.put(("result", serial, abandoned(current)))
    except BaseException as e:  # noqa: BLE001  (reported, the coordinator goes on)
        result_q.put(("crash", serial, f"worker on {device} failed: {type(e).__name__}: {e}".splitlines()[0]))
    finally:
        if proc is not None:
            proc.close()
        result_q.put(("exit", serial))
        result_q.close()
        result_q.join_thread()


@dataclass
class _Worker:
    serial: int
    slot: int
    proc: object
    queue: object
    decoding: object = None                         # shared int: index of the file being decoded, -1: none
    inflight: list = field(default_factory=list)   # task indexes: the one started first, then the one queued
    ready: bool = False
    crash: str | None = None


def run_pool(tasks: list[Task], settings: Settings, slots: list[tuple[str, int]], report, stop: threading.Event) -> None:
    """Run tasks on worker processes, one per (device, threads) slot.

    Files go to whichever worker asks next.  A worker that dies after it
    started fails only its file in progress (reported with the signal that
    ended it); its queued file goes back to the queue and a new worker takes
    the slot.  A worker that cannot start (no device, say) is not replaced.
    KeyboardInterrupt: SIGTERM to every worker (each removes its temp file
    and reports), then the interrupt is re-raised.
    """
    import multiprocessing as mp

    ctx = mp.get_context("spawn")      # fork can deadlock with rawpy/OpenMP (DESIGN.md section 8)
    result_q = ctx.Queue()
    stop_evt = ctx.Event()
    pending = deque(tasks)
    by_index = {t.index: t for t in tasks}
    workers: dict[int, _Worker] = {}
    spawns_left = len(slots) + len(tasks)      # each replacement follows a lost file: bounded

    def spawn(slot: int) -> None:
        nonlocal spawns_left
        spawns_left -= 1
        serial = max(workers, default=-1) + 1
        device, threads = slots[slot]
        q = ctx.Queue()
        decoding = ctx.Value("q", -1, lock=False)
        p = ctx.Process(target=_worker_main, args=(serial, device, threads, settings, q, result_q, stop_evt, os.getpid(),
                                                   decoding), name=f"kpnt-denoise-{serial}", daemon=True)
        p.start()
        workers[serial] = _Worker(serial, slot, p, q, decoding)
        send(serial)

    def send(serial: int) -> None:
        w = workers[serial]
        task = pending.popleft() if pending and not stop.is_set() else None
        if task is not None:
            w.inflight.append(task.index)
        w.queue.put(task)

    def died(w: _Worker, why: str) -> None:
        """Account for a worker that has gone: its started file failed, its
        queued one goes back; a new worker takes the slot if there is work."""
        del workers[w.serial]
        left, w.inflight = w.inflight, []
        if left and w.ready:
            # a decode in progress is the likelier culprit (LibRaw on a damaged file) than the denoising
            blame = w.decoding.value if w.decoding.value in left else left[0]
            left.remove(blame)
            task = by_index[blame]
            remove_temp_files(task.out)
            doing = "decoding" if blame == w.decoding.value else "on"
            report(FileResult(task.src, "failed", task.out, f"{task.src}: worker process ended ({why}) while {doing} this file",
                              index=task.index))
        for index in reversed(left):
            pending.appendleft(by_index[index])
        if w.crash and not w.ready:
            log.warning("%s", w.crash)
        if w.ready and pending and not stop.is_set() and spawns_left > 0:
            log.debug("worker %d ended (%s): starting another", w.serial, why)
            spawn(w.slot)

    for slot in range(len(slots)):
        spawn(slot)
    try:
        while workers:
            try:
                msg = result_q.get(timeout=0.5)
            except queue_mod.Empty:
                for w in list(workers.values()):
                    if not w.proc.is_alive():
                        w.proc.join(1)
                        died(w, w.crash or signal_text(w.proc.exitcode))
                continue
            kind, serial = msg[0], msg[1]
            w = workers.get(serial)
            if w is None:
                continue                      # a message of a worker already accounted for
            if kind == "ready":
                w.ready = True
            elif kind == "start":
                send(serial)
            elif kind == "result":
                res = msg[2]
                if res.index in w.inflight:
                    w.inflight.remove(res.index)
                report(res)
                if res.fatal:
                    stop.set()
            elif kind == "crash":
                w.crash = msg[2]
            elif kind == "exit":
                w.proc.join(10)
                died(w, w.crash or signal_text(w.proc.exitcode))
            if stop.is_set():
                stop_evt.set()
        for task in pending:
            if stop.is_set():
                report(FileResult(task.src, "not started", task.out, index=task.index))
            else:
                report(FileResult(task.src, "failed", task.out, f"{task.src}: no worker process could start to run it "
                                  "(see the warning above)", index=task.index))
        pending.clear()
    except KeyboardInterrupt:
        stop.set()
        stop_evt.set()
        for w in workers.values():
            if w.proc.is_alive():
                w.proc.terminate()          # SIGTERM: the worker cleans up and reports
        deadline = time.monotonic() + 15
        while workers and time.monotonic() < deadline:
            try:
                msg = result_q.get(timeout=0.5)
            except queue_mod.Empty:
                msg = None
            w = workers.get(msg[1]) if msg else None
            if msg and msg[0] == "result" and w is not None:
                if msg[2].index in w.inflight:
                    w.inflight.remove(msg[2].index)
                report(msg[2])
            elif msg and msg[0] == "exit" and w is not None:
                w.proc.join(5)
                del workers[w.serial]
                for index in w.inflight:
                    remove_temp_files(by_index[index].out)
            if msg is None:
                for w in list(workers.values()):
                    if not w.proc.is_alive():
                        del workers[w.serial]
                        for index in w.inflight:
                            remove_temp_files(by_index[index].out)
        for w in workers.values():
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(5)
            for index in w.inflight:
                remove_temp_files(by_index[index].out)
        raise
    finally:
        for w in workers.values():
            w.proc.join(5)
