"""SIGINT and SIGTERM stop a batch the same way: the first one raises
KeyboardInterrupt in the main thread, so the runners abandon the file in
progress, remove its temp file and report; later ones are ignored, so that
the clean-up and the summary cannot themselves be interrupted (no
traceback on a double Ctrl-C).

SIGTERM is what ``timeout``, systemd, Docker and batch schedulers send; the
exit code tells the two apart (130 for SIGINT, 143 for SIGTERM).
"""
from __future__ import annotations

import signal
import threading

#: Signals that stop a batch cleanly.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Install the handler for :data:`STOP_SIGNALS` (main thread only; a
    no-op elsewhere) and remember which signal came first.

    Use as a context manager; the previous handlers come back on exit.
    (A no-op handler for later signals, not SIG_IGN: a signal already
    pending when the handler changed to SIG_IGN would raise "ignored due
    to race condition".)
    """

    def __init__(self, signals=STOP_SIGNALS):
        self.signals = signals
        self.received: int | None = None
        self._previous = None

    def _handler(self, signum, frame):
        if self.received is None:
            self.received = signum
            raise KeyboardInterrupt

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handler) for s in self.signals}
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous:
            for s, h in self._previous.items():
                signal.signal(s, h)
            self._previous = None

    def exit_code(self) -> int:
        """128 + the signal number (130 for SIGINT, 143 for SIGTERM); 130
        for a KeyboardInterrupt that came another way."""
        return 128 + (self.received or signal.SIGINT)

    def name(self) -> str:
        """'interrupted' (SIGINT) or 'terminated' (SIGTERM)."""
        return "terminated" if self.received == signal.SIGTERM else "interrupted"
