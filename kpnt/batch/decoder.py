"""Decoding raws, supervised: LibRaw runs in child processes, so that a
crash, a hang or a memory blow-up on a damaged file costs that file only.

LibRaw is C code fed with untrusted files.  In the process that denoises, a
segmentation fault ends the whole batch with no summary; in a child it is
one failed file ("decoder crashed (signal 11: SIGSEGV)") and a fresh child
for the next one.  A child that takes longer than the timeout is killed
("decoder timed out").

Hand-over without pickling the pixels: the child writes the decoded arrays
(the float32 mosaic and the saturation mask, 5 bytes a photosite) into an
anonymous memory file (``memfd``) and passes its descriptor over the pipe;
the parent maps it (pre-faulted) and uses the arrays in place.  Only the
small rest (metadata, CFA) is pickled.  So the parent's cost per file is a
few system calls, not a 120 MB copy through a pipe.

Children are started with ``spawn`` (fork can deadlock with rawpy/OpenMP,
DESIGN.md), ignore SIGINT/SIGTERM (the parent decides; a terminal's Ctrl-C
reaches the whole process group) and exit when the parent is gone (end of
their pipe, or a watchdog thread noticing a new parent pid).

A child's address space is capped (:func:`memory_limit`) and the kernel's
OOM killer is told to pick it first, so a memory blow-up is a MemoryError
for that file (or the child killed), never the batch process.

Test hook: ``KPNT_TEST_DECODER_FAULT="segv:a.dng,b.dng;hang:c.dng;alloc:d.dng"``
makes the decoder raise SIGSEGV in itself, hang, or allocate 4x the
physical memory on files of those names, wherever it runs (a child, a
``--jobs`` worker, or inline).
"""
from __future__ import annotations

import logging
import mmap
import os
import queue
import signal
import threading
import time
from pathlib import Path

import numpy as np

from kpnt.errors import KpntError

log = logging.getLogger("kpnt")

#: Environment variable of the test hook (see the module docstring).
FAULT_ENV = "KPNT_TEST_DECODER_FAULT"
#: Decoders: in supervised child processes, or in the calling process.
DECODERS = ("child", "inline")
#: Arrays of a RawImage handed over through the memory file.
_ARRAYS = ("mosaic", "saturated")


class DecoderFailed(KpntError):
    """The decoder process crashed or timed out on a file."""


def _test_fault(path: Path) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    for part in spec.split(";"):
        kind, _, names = part.partition(":")
        if path.name in names.split(","):
            if kind == "segv":
                import faulthandler

                import threading

                faulthandler.disable()      # die like a C crash, no Python handler in between
                # To this thread, as LibRaw's fault would be: os.kill's signal
                # goes to the process, any thread may take it, and this
                # decoding thread could run on (and finish) meanwhile.
                signal.pthread_kill(threading.get_ident(), signal.SIGSEGV)
            elif kind == "hang":
                time.sleep(3600)
            elif kind == "alloc":           # a memory blow-up: asks for 4x the physical memory
                np.ones(4 * _physical_memory() // 8)


def _physical_memory() -> int:
    """Bytes of RAM (0 where the platform does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def memory_limit() -> int:
    """Address-space limit of a decoder child: half the machine's memory,
    at least 8 GiB (a 100-MP raw needs ~3 GB, the interpreter ~1 GB)."""
    return max(8 << 30, _physical_memory() // 2)


def _contain_memory() -> None:
    """A child's memory blow-up (LibRaw on absurd dimensions) must cost
    that file, not the batch: cap the child's address space (allocations
    beyond it fail with MemoryError, reported for the file), and make the
    child the kernel OOM killer's first choice over the parent."""
    import resource

    limit = memory_limit()
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):
        pass                                # a lower hard limit already: keep it
    try:
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("1000")
    except OSError:
        pass                                # not Linux


def decode_file(path: Path):
    """Decode one raw in this process (the job of a child, or of the
    inline decoder): a :class:`kpnt.io.raw.RawImage` without its uint16
    counts (not used past decoding: 2 bytes a photosite less while queued)."""
    from kpnt.io.raw import read_raw

    path = Path(path)
    _test_fault(path)
    # Open it ourselves first: a permission problem then reads as one
    # (LibRaw reports any open failure as a generic I/O error).
    with open(path, "rb"):
        pass
    raw = read_raw(path)
    raw.raw = None
    return raw


def signal_text(code: int) -> str:
    """'signal 11: SIGSEGV' for a negative exit code, 'exit code N' otherwise."""
    if code is not None and code < 0:
        try:
            return f"signal {-code}: {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


# ----------------------------------------------------------------------
# the child
# ----------------------------------------------------------------------
def die_with_parent(parent_pid: int, period: float = 0.5) -> None:
    """Exit this process soon after ``parent_pid`` is gone (its children are
    re-parented then); a daemon thread, so it never delays a normal exit."""

    def watch():
        while True:
            time.sleep(period)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="kpnt-watchdog", daemon=True).start()


def _anon_fd(size: int) -> int:
    """A descriptor of an anonymous memory file of ``size`` bytes."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("kpnt-raw", os.MFD_CLOEXEC)
    else:                                   # not Linux: an unlinked temp file does the same job
        import tempfile

        fh = tempfile.TemporaryFile()
        fd = os.dup(fh.fileno())
        fh.close()
    os.ftruncate(fd, max(size, 1))
    return fd


def _export(raw, keep_saturated: bool = True) -> tuple[dict, int, int]:
    """Move ``raw``'s arrays into a memory file: (layout, size, fd).  The
    saturation mask (1 byte a photosite) is left out unless
    ``keep_saturated``: only the blind noise estimate reads it."""
    layout, parts, off = {}, [], 0
    for name in _ARRAYS:
        if name == "saturated" and not keep_saturated:
            raw.saturated = None
            continue
        a = np.ascontiguousarray(getattr(raw, name))
        layout[name] = (off, a.shape, a.dtype.str)
        parts.append((off, a))
        off += -(-a.nbytes // 64) * 64
        setattr(raw, name, None)
    fd = _anon_fd(off)
    for start, a in parts:
        view = memoryview(a.reshape(-1)).cast("B")
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], start + done)
    return layout, off, fd


def _child_main(fd: int, parent_pid: int) -> None:
    """A decoder child (``python -c`` entry, see :meth:`ChildDecoder.start`):
    decodes the paths it receives on socket ``fd`` until the socket ends."""
    from multiprocessing.connection import Connection
    from multiprocessing.reduction import send_handle

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent(parent_pid)
    _contain_memory()
    conn = Connection(fd)
    import kpnt.io.raw  # noqa: F401  (imported before 'ready': the per-file timeout excludes start-up)

    conn.send(("ready", None))
    while True:
        try:
            path, blind_possible = conn.recv()
        except (EOFError, OSError):
            return
        try:
            raw = decode_file(Path(path))
        except MemoryError:
            conn.send(("err", DecoderFailed(f"{path}: decoding needed more than the decoder's {memory_limit() / 2**30:.0f} GB "
                                            "memory limit: the file is probably damaged")))
            continue
        except Exception as e:  # noqa: BLE001  (handed to the parent, which reports it for this file)
            try:
                conn.send(("err", e))
            except Exception:  # noqa: BLE001  (an exception that does not pickle)
                from kpnt.batch.types import one_line

                conn.send(("err", KpntError(one_line(e, Path(path)))))
            continue
        # a DNG noise profile wins over the blind estimate (kpnt.denoise.choose_noise)
        layout, size, fd = _export(raw, blind_possible and raw.meta.noise_profile is None)
        try:
            conn.send(("ok", (raw, layout, size)))
            send_handle(conn, fd, parent_pid)
        except OSError:
            return                          # the parent is gone
        finally:
            os.close(fd)


# ----------------------------------------------------------------------
# the parent's side
# ----------------------------------------------------------------------
def _attach(raw, layout: dict, size: int, fd: int):
    """Map the child's memory file and hang its arrays on ``raw`` (they stay
    valid as long as they are referenced; the memory goes with the last)."""
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)   # pre-fault here, not in the denoising thread
    try:
        mm = mmap.mmap(fd, max(size, 1), flags=flags, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    for name, (off, shape, dtype) in layout.items():
        count = int(np.prod(shape))
        setattr(raw, name, np.frombuffer(mm, dtype=np.dtype(dtype), count=count, offset=off).reshape(shape))
    return raw


class ChildDecoder:
    """One supervised decoder process, started on first use and again after
    it died.  Not thread-safe: one caller at a time (see :class:`DecoderPool`)."""

    #: Seconds a child may take to start (interpreter, numpy, rawpy): not
    #: part of any file's timeout, and generous for a loaded machine.
    START_TIMEOUT = 120.0

    def __init__(self, timeout: float, blind_possible: bool = True, quiet: bool = True):
        self.timeout, self.blind_possible, self.quiet = timeout, blind_possible, quiet
        self.proc = self.conn = None
        self.ready = False

    def start(self) -> None:
        """Start the child (also done lazily by :meth:`decode`).

        A fresh interpreter through ``subprocess`` (fork + exec: no fork
        hazards with rawpy/OpenMP, like multiprocessing's ``spawn``), but
        without re-importing the caller's main module, so scripts without a
        ``__main__`` guard can run batches too.  The pipe is one end of a
        socket pair (it also carries the memory files' descriptors).
        Does nothing while a started child is alive."""
        if self.proc is not None and self.proc.poll() is None:
            return
        import socket
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        import kpnt

        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        root = str(Path(kpnt.__file__).resolve().parent.parent)     # kpnt importable whatever the cwd
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        code = "import sys; from kpnt.batch.decoder import _child_main; _child_main(int(sys.argv[1]), int(sys.argv[2]))"
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", code, str(theirs.fileno()), str(os.getpid())],
                                         pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         # quiet: LibRaw's own lines ("Unexpected end of file") do not leak into
                                         # the batch's output; the file's error line says it all
                                         stderr=subprocess.DEVNULL if self.quiet else None, env=env, close_fds=True)
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        self.ready = False

    def _wait_ready(self, path: Path) -> None:
        """Wait for the child's 'ready' (its imports done)."""
        try:
            if not self.conn.poll(self.START_TIMEOUT):
                self._stop()
                raise DecoderFailed(f"{path}: the decoder process did not start within {self.START_TIMEOUT:g} s "
                                    "(machine overloaded?)")
            self.conn.recv()
        except (EOFError, OSError):
            code = self._stop()
            raise DecoderFailed(f"{path}: the decoder process failed to start ({signal_text(code)}; "
                                "--verbose shows its output)") from None
        self.ready = True

    def _stop(self) -> int | None:
        """Kill the child (if alive) and reap it; its exit code."""
        proc, conn = self.proc, self.conn
        self.proc = self.conn = None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if conn is not None:
            conn.close()
        return proc.returncode

    def decode(self, path: Path):
        """Decode ``path`` in the child; raises the child's own error for the
        file, or :class:`DecoderFailed` when it crashed or timed out."""
        from multiprocessing.reduction import recv_handle

        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                log.debug("decoder process ended (%s) while idle: restarting it", signal_text(self._stop()))
            self.start()
        if not self.ready:
            self._wait_ready(path)
        proc, conn = self.proc, self.conn
        try:
            conn.send((str(path), self.blind_possible))
            if not conn.poll(self.timeout):
                self._stop()
                raise DecoderFailed(f"{path}: decoder timed out after {self.timeout:g} s (LibRaw stuck on this file?); "
                                    "file skipped, raise --decode-timeout if the file is just huge")
            kind, payload = conn.recv()
            fd = recv_handle(conn) if kind == "ok" else None
        except (EOFError, OSError):
            if self.proc is not proc:       # closed under us (the batch is stopping)
                raise DecoderFailed(f"{path}: decoding stopped") from None
            code = self._stop()
            hint = "" if code is not None and code < 0 else " (--verbose shows the decoder's own output)"
            raise DecoderFailed(f"{path}: decoder crashed ({signal_text(code)}): the file is probably damaged{hint}") from None
        if kind == "err":
            raise payload                   # the file's own error (unreadable, not a raw, ...)
        raw, layout, size = payload
        return _attach(raw, layout, size, fd)

    def close(self) -> None:
        self._stop()


class InlineDecoder:
    """Decodes in the calling process (``--decoder inline``): no process
    hop, but a LibRaw crash takes the process down."""

    def decode(self, path: Path):
        return decode_file(path)

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class DecoderPool:
    """``n`` decoders shared by threads: :meth:`decode` borrows a free one.

    A batch makes its own pool, or uses one its caller made and started
    earlier (``run_batch(decoders=...)``): ``kpnt-denoise`` starts its
    children before loading weights and scanning folders, so that their
    start-up (a fresh interpreter, numpy, rawpy each) overlaps that work
    instead of delaying the first file; a program running several batches
    keeps one pool for all of them.

    Args:
        kind: 'child' (supervised processes) or 'inline'.
        n: how many files may be decoded at once.
        timeout: seconds a child may take for one file.
        blind_possible: whether the blind noise estimate may run (it reads
            the saturation mask; False: the noise level is given, so the
            children do not hand the mask over).
        quiet: the children's stderr (LibRaw's messages) goes nowhere.
    """

    def __init__(self, kind: str, n: int = 1, timeout: float = 300.0, blind_possible: bool = True, quiet: bool = True):
        if kind not in DECODERS:
            raise KpntError(f"unknown decoder {kind!r}: choose one of {', '.join(DECODERS)}")
        self.kind = kind
        if kind == "child":
            self._all = [ChildDecoder(timeout, blind_possible, quiet) for _ in range(max(1, n))]
        else:
            self._all = [InlineDecoder() for _ in range(max(1, n))]
        self._free: queue.Queue = queue.Queue()
        for d in self._all:
            self._free.put(d)
        self._busy: set = set()
        self._lock = threading.Lock()

    def configure(self, timeout: float, blind_possible: bool) -> None:
        """Set the per-file timeout and whether the saturation mask is
        handed over (a batch's settings; read by each decode)."""
        for d in self._all:
            if isinstance(d, ChildDecoder):
                d.timeout, d.blind_possible = timeout, blind_possible

    def start(self) -> None:
        """Start every child now (their imports overlap the model loading)."""
        for d in self._all:
            d.start()

    def decode(self, path: Path):
        """Decode ``path`` on a free decoder (waits for one)."""
        d = self._free.get()
        with self._lock:
            self._busy.add(d)
        try:
            return d.decode(path)
        finally:
            with self._lock:
                self._busy.discard(d)
            self._free.put(d)

    def stop_busy(self) -> None:
        """Kill the children decoding right now (their files fail in their
        threads as 'decoding stopped'); idle ones stay for the next batch,
        and a killed one is restarted when next used."""
        with self._lock:
            busy = list(self._busy)
        for d in busy:
            d.close()

    def close(self) -> None:
        """Kill every child (a decode in progress fails in its thread)."""
        for d in self._all:
            d.close()
