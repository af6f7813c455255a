"""The simple runner: one file after another in this process, the next
file decoded in the background while the current one is denoised (the
CPU default: there the denoising needs the cores)."""
from __future__ import annotations

import threading
import time

from kpnt.batch.processor import FileProcessor
from kpnt.batch.types import Settings, Task, abandoned


class Prefetch:
    """Decodes the next file in a background thread (the decoder child, or
    rawpy/numpy inline, release the GIL, so decoding overlaps denoising)."""

    def __init__(self, read):
        self._read = read
        self._pending = None

    def start(self, task: Task) -> None:
        """Start decoding ``task``."""
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


def run_serial(tasks: list[Task], settings: Settings, device: str, report, stop: threading.Event, tile_bar=None,
               proc: FileProcessor | None = None, decoders=None) -> None:
    """Run tasks in this process, decoding one file ahead.

    ``report(FileResult)`` is called for each file in input order.  A fatal
    failure (full disk) sets ``stop``.  On KeyboardInterrupt the file in
    progress is reported 'interrupted', its temp files are removed, and the
    interrupt is re-raised.
    """
    own = proc is None
    proc = proc or FileProcessor(settings, device, decoders=1, pool=decoders)
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
            report(abandoned(current))
        raise
    finally:
        if own:
            proc.close()
