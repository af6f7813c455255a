"""Keep freed memory inside the process during CPU inference (issue 16).

A CPU tile of the model makes many large temporaries: the guide alone makes
a 50 MB activation per layer on a 1.5-MP Bayer tile.  glibc's malloc serves
every block above its mmap threshold (at most 32 MB) with a fresh ``mmap``
and unmaps it on ``free``, so each temporary is faulted in page by page
again: on a 2-core Zen 4 machine a third of the model's time went to the
kernel (``sys`` time), and the model took 1.55-1.7 s per 1.57-MP tile.
Serving every block from the heap and never trimming it
(``mallopt(M_MMAP_MAX, 0)``, ``mallopt(M_TRIM_THRESHOLD, 2^31 - 1)``) lets
freed pages be reused already mapped: 0.9-1.1 s per tile, the same output.

The cost is memory: the heap keeps its high-water mark until the process
ends, and can be a little larger than before (fragmentation).  The setting
is process-wide, so it is made once, for CPU inference only, and logged.
Where the C library is not glibc (macOS, musl) nothing changes, and the
debug log says so.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("kpnt.denoise")

#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
#: Largest trim threshold mallopt takes (an int): in effect, never trim.
_NEVER_TRIM = 2**31 - 1

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory mapped for reuse (module doc).

    Idempotent: the first call decides, later calls return its result.
    Returns:
        True when the setting is in effect, False where it is not available.
    """
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux"):
        log.debug("CPU memory: malloc left as it is (not Linux)")
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("CPU memory: malloc left as it is (no glibc mallopt)")
        return _done
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # One arena: the tile threads' blocks come from the main heap too (a
    # thread's own arena would serve large blocks from fresh mappings).
    _done = all(mallopt(param, value) for param, value in
                ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NEVER_TRIM), (_M_ARENA_MAX, 1)))
    log.debug("CPU memory: freed blocks %s", "kept in one heap for reuse (no mmap, no trim, one arena)" if _done
              else "returned to the system (mallopt refused)")
    return _done
