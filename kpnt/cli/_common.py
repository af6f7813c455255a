"""Shared CLI plumbing: one-line errors, --verbose, logging set-up.

Each console script is ``main(argv=None) -> int``; the body runs inside
:func:`run_cli`, which turns a :class:`~kpnt.errors.KpntError` (or an
``OSError`` on a user path) into one stderr line and exit code 1, and shows a
traceback only with ``--verbose``.
"""
from __future__ import annotations

import argparse
import logging
import sys
import traceback
from typing import Callable

from kpnt.errors import KpntError

log = logging.getLogger("kpnt")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--verbose`` (more log lines, tracebacks on errors)."""
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail and show tracebacks on errors")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is *now* (tests and tqdm swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def setup_logging(verbose: bool) -> None:
    """Log to stderr: INFO lines by default, DEBUG with --verbose."""
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger("kpnt")
    root.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    for h in root.handlers:
        h.setLevel(level)


def error(prog: str, message: str) -> None:
    """Print one error line ``prog: error: message`` to stderr."""
    print(f"{prog}: error: {message}", file=sys.stderr)


def run_cli(prog: str, body: Callable[[], int], verbose: bool) -> int:
    """Run ``body`` and map known failures to one-line errors and exit codes.

    Returns the body's exit code; 1 for a KpntError/OSError, 130 for Ctrl-C.
    """
    try:
        return body()
    except KeyboardInterrupt:
        error(prog, "interrupted")
        return 130
    except (KpntError, OSError) as exc:
        if verbose:
            traceback.print_exc()
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        error(prog, msg)
        return 1
