"""The pipelined runner (the GPU default, or ``--io-workers N``): decode
threads ahead of the device, write threads behind it, results in input
order."""
from __future__ import annotations

import threading
import time
from collections import deque

from kpnt.batch.processor import FileProcessor
from kpnt.batch.types import Settings, Task, abandoned
from kpnt.io.atomic import remove_temp_files


def run_pipelined(tasks: list[Task], settings: Settings, device: str, report, stop: threading.Event, io_workers: int,
                  tile_bar=None, decoders=None) -> None:
    """Run tasks in this process as a pipeline: ``io_workers`` threads
    decode (each through its own decoder child, then choose the noise
    profile) up to ``io_workers`` files ahead, the main thread denoises (on
    a GPU: the staged schedule of :func:`kpnt.denoise._run_tiles`), and ``io_workers``
    threads write the results.

    Threads here, not processes: numpy and file writes release the GIL, and
    the decoder children hand their arrays over through shared memory (no
    pickling; :mod:`kpnt.batch.decoder`).  Memory is bounded: at most
    ``io_workers`` decoded raws waiting and ``io_workers`` results being
    written (about 5 + 6 bytes per photosite each with uint16 output).
    Results are reported in input order, with per-file failures as in
    :func:`kpnt.batch.serial.run_serial`.  A full disk stops the batch:
    writes not yet started are dropped ('not started'); writes already
    running finish.  KeyboardInterrupt: the file being denoised is
    abandoned, writes already running finish (an atomic write leaves the
    whole file or nothing), queued ones are dropped, temp files are
    removed, and the interrupt is re-raised.  ``decoders``: the caller's
    started :class:`~kpnt.batch.decoder.DecoderPool` (kept open), else one
    made for this batch.
    """
    from concurrent.futures import ThreadPoolExecutor

    n = max(1, io_workers)
    proc = FileProcessor(settings, device, decoders=n, pool=decoders)
    proc.start()                          # the decoder children start while the first file is queued
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
            report(abandoned(current))
        raise
    finally:
        proc.close()                      # decodes in progress end now (their children are killed)
        decode_pool.shutdown(wait=True, cancel_futures=True)
        write_pool.shutdown(wait=True, cancel_futures=True)
