"""The worker-process runner (``--jobs N``, ``--devices``): one process per
(device, threads) slot, files to whichever worker is free, dead workers
replaced.

Each worker decodes through its own supervised decoder child, so a LibRaw
crash costs one file and the worker goes on.  A worker that dies anyway
(out of memory, a crash in the model) fails the file it was denoising,
hands its queued file back, and a fresh worker takes its slot.  Workers
exit when the coordinator is gone (killed with SIGKILL, say): no orphans.

Each worker reports through a pipe of its own, written synchronously.  A
shared ``multiprocessing.Queue`` is not safe here: its messages leave
through a feeder thread, so a worker killed by a crash in inline decoding
could lose its 'ready' just sent (the coordinator then took it for one that
never started), or die while holding the queue's shared write lock or
halfway through a message, which stalls or corrupts every other worker's
reports (a batch hung that way in a test).  A dying worker can only break
its own pipe, which the coordinator reads to the end and drops.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from kpnt.batch.decoder import die_with_parent, signal_text
from kpnt.batch.types import FileResult, Settings, Task, abandoned
from kpnt.io.atomic import remove_temp_files

log = logging.getLogger("kpnt")

#: What reading a worker's report can raise: EOFError once the worker has
#: exited, the others when its death tore a message in half.
_UNREADABLE = (EOFError, OSError, ValueError, TypeError, AttributeError, ImportError, IndexError)


def _worker_main(serial: int, device: str, threads: int, settings: Settings, task_q, reports, stop_evt,
                 parent_pid: int, decoding) -> None:
    """A worker process: takes tasks from its own queue (the coordinator
    keeps at most one queued ahead, which is decoded in the background),
    sends on its pipe ``reports`` ('ready', serial), ('start', serial,
    index), ('result', serial, FileResult) and finally ('exit', serial).
    ``decoding`` (shared memory, which the coordinator reads after the
    worker's death) holds the index of the file being decoded, -1 when
    none: if a decoder crash takes the worker down (``--decoder inline``),
    the coordinator blames that file.
    SIGINT/SIGTERM abandon the current file cleanly."""
    from kpnt.batch.processor import FileProcessor
    from kpnt.batch.serial import Prefetch
    from kpnt.batch.signals import StopSignals
    from kpnt.cli._common import setup_logging

    die_with_parent(parent_pid)

    def tell(*msg) -> None:
        try:
            reports.send(msg)
        except OSError:             # the coordinator is gone: no one to tell (this worker exits with it)
            pass

    current = proc = None
    try:
        with StopSignals():
            try:
                import torch

                torch.set_num_threads(threads)
                setup_logging(settings.verbose)
                proc = FileProcessor(settings, device, decoders=1)
                proc.start()
                tell("ready", serial)
                def read(task):
                    decoding.value = task.index
                    try:
                        return proc.read(task)
                    finally:
                        decoding.value = -1

                pf = Prefetch(read)
                task = task_q.get()
                if task is not None:
                    pf.start(task)
                while task is not None:
                    tell("start", serial, task.index)
                    nxt = task_q.get()
                    task, raw, exc, t_dec = pf.take()
                    current = task
                    if stop_evt.is_set():
                        tell("result", serial, FileResult(task.src, "not started", task.out, index=task.index))
                    else:
                        if nxt is not None:
                            pf.start(nxt)
                        res = proc.process(task, raw, exc, t_dec)
                        del raw
                        tell("result", serial, res)
                    current = None
                    task = nxt
                    if stop_evt.is_set() and task is not None:
                        tell("result", serial, FileResult(task.src, "not started", task.out, index=task.index))
                        task = None
            except KeyboardInterrupt:
                if current is not None:
                    tell("result", serial, abandoned(current))
    except BaseException as e:  # noqa: BLE001  (reported, the coordinator goes on)
        tell("crash", serial, f"worker on {device} failed: {type(e).__name__}: {e}".splitlines()[0])
    finally:
        if proc is not None:
            proc.close()
        tell("exit", serial)
        reports.close()


@dataclass
class _Worker:
    serial: int
    slot: int
    proc: object
    queue: object
    reports: object = None                          # the reading end of the worker's pipe
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
    from multiprocessing.connection import wait as wait_readable

    ctx = mp.get_context("spawn")      # fork can deadlock with rawpy/OpenMP (DESIGN.md section 8)
    stop_evt = ctx.Event()
    pending = deque(tasks)
    by_index = {t.index: t for t in tasks}
    workers: dict[int, _Worker] = {}
    spawns_left = len(slots) + len(tasks)      # each replacement follows a lost file: bounded
    serials = iter(range(1 << 30))              # never reused: a late message cannot reach the wrong worker

    def spawn(slot: int) -> None:
        nonlocal spawns_left
        spawns_left -= 1
        serial = next(serials)
        device, threads = slots[slot]
        q = ctx.Queue()
        reader, writer = ctx.Pipe(duplex=False)
        decoding = ctx.Value("q", -1, lock=False)
        p = ctx.Process(target=_worker_main, args=(serial, device, threads, settings, q, writer, stop_evt, os.getpid(),
                                                   decoding), name=f"kpnt-denoise-{serial}", daemon=True)
        p.start()
        writer.close()                  # the worker holds the only writing end: its death is EOF here
        workers[serial] = _Worker(serial, slot, p, q, reader, decoding)
        send(serial)

    def send(serial: int) -> None:
        w = workers[serial]
        task = pending.popleft() if pending and not stop.is_set() else None
        if task is not None:
            w.inflight.append(task.index)
        w.queue.put(task)

    def started(w: _Worker) -> bool:
        # 'ready' is sent before the first decode, but a worker whose decoder
        # crashed may have set its shared ``decoding`` before its pipe was read
        return w.ready or w.decoding.value >= 0

    def died(w: _Worker, why: str) -> None:
        """Account for a worker that has gone: its started file failed, its
        queued one goes back; a new worker takes the slot if there is work."""
        del workers[w.serial]
        w.reports.close()
        left, w.inflight = w.inflight, []
        if left and started(w):
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
        if w.crash and not started(w):
            log.warning("%s", w.crash)
        if started(w) and pending and not stop.is_set() and spawns_left > 0:
            log.debug("worker %d ended (%s): starting another", w.serial, why)
            spawn(w.slot)

    def gone(w: _Worker) -> None:
        w.proc.join(10)
        if w.serial in workers:
            died(w, w.crash or signal_text(w.proc.exitcode))

    def messages(timeout: float):
        """(worker, message) pairs that arrived within ``timeout``; a worker
        whose pipe is at its end (or torn by its death) is ended with
        :func:`gone` once its earlier messages are read."""
        by_conn = {w.reports: w for w in workers.values()}
        for conn in wait_readable(list(by_conn), timeout):
            w = by_conn[conn]
            while w.serial in workers:
                try:
                    if not conn.poll():
                        break
                    msg = conn.recv()
                except _UNREADABLE as e:
                    if not isinstance(e, EOFError):
                        log.debug("worker %d: unreadable report (%s): taken as its end", w.serial, e)
                    gone(w)
                    break
                yield w, msg
        # A worker can die without its pipe reaching EOF here (a child that
        # inherited the writing end): a dead process with nothing left to read has ended.
        for w in list(workers.values()):
            if not w.proc.is_alive() and not _readable(w.reports):
                gone(w)

    for slot in range(len(slots)):
        spawn(slot)
    try:
        while workers:
            for w, msg in messages(0.5):
                kind = msg[0]
                if w.serial not in workers:
                    continue                      # a worker already accounted for
                if kind == "ready":
                    w.ready = True
                elif kind == "start":
                    send(w.serial)
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
                    gone(w)
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
            finished = set()
            by_conn = {w.reports: w for w in workers.values()}
            for conn in wait_readable(list(by_conn), 0.5):
                w = by_conn[conn]
                try:
                    msg = conn.recv()
                except _UNREADABLE:
                    finished.add(w.serial)
                    continue
                if msg[0] == "result":
                    if msg[2].index in w.inflight:
                        w.inflight.remove(msg[2].index)
                    report(msg[2])
                elif msg[0] == "exit":
                    finished.add(w.serial)
            finished |= {w.serial for w in workers.values() if not w.proc.is_alive() and not _readable(w.reports)}
            for serial in finished:
                w = workers.pop(serial)
                w.proc.join(5)
                w.reports.close()
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


def _readable(conn) -> bool:
    """Whether a pipe has data (or its end) to read; False once closed."""
    try:
        return conn.poll()
    except (OSError, ValueError):
        return False
