"""Shared CLI plumbing: one-line errors, --verbose, logging set-up.

Each console script is ``main(argv=None) -> int``; the body runs inside
:func:`run_cli`, which turns a :class:`~kpnt.errors.KpntError` (or an
``OSError`` on a user path) into one stderr line and exit code 1, and shows a
traceback only with ``--verbose``.

Bad arguments exit 2 with one line, never a usage block or a traceback:
:class:`ArgumentParser` (argparse with one-line errors), the range-checked
``type=`` helpers :func:`int_at_least` and :func:`finite_float`, and
:class:`ArgError` / :class:`~kpnt.errors.ConfigError` for checks that need
several arguments (``run_cli`` maps both to exit 2).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import traceback
from typing import Callable

from kpnt.errors import ConfigError, KpntError

log = logging.getLogger("kpnt")


#: Exit status of a bad command line (argparse's convention).
EXIT_USAGE = 2


class ArgError(KpntError):
    """A command-line argument out of range or inconsistent with another:
    one line naming the argument and what to pass instead (exit 2)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, ``prog: error: message (see
    --help)``, and exit status 2: no usage block (it can span many lines
    and hide the message)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def int_at_least(low: int, high: int | None = None):
    """An argparse ``type=``: a whole number in ``[low, high]``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {'in ' + str(low) + '..' + str(high) if high is not None else '>= ' + str(low)}"
                                             f", got {value}")
        return value
    parse.__name__ = "whole number"
    return parse


def finite_float(low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse ``type=``: a finite number in ``[low, high]`` (``(low,
    high]`` with ``low_open``); NaN and inf are refused."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high):
            lo = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
            hi = "" if high is None else f"<= {high:g}"
            raise argparse.ArgumentTypeError(f"must be {' and '.join(x for x in (lo, hi) if x)}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--verbose`` (more log lines, tracebacks on errors)."""
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail and show tracebacks on errors")


def check_output_folder(out) -> None:
    """The commands' check of ``-o`` before any work, creating nothing
    (:func:`kpnt.batch.inputs.check_output_folder`, imported here only when
    called: the batch package is slow to import for ``--help``)."""
    from kpnt.batch.inputs import check_output_folder as check

    check(out)


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

    Returns the body's exit code; 2 for an :class:`ArgError` or a
    :class:`~kpnt.errors.ConfigError` (a bad command line), 1 for another
    KpntError/OSError, 130 for Ctrl-C.
    """
    try:
        return body()
    except KeyboardInterrupt:
        error(prog, "interrupted")
        return 130
    except (ArgError, ConfigError) as exc:
        if verbose:
            traceback.print_exc()
        error(prog, " ".join(str(exc).split()) or type(exc).__name__)
        return EXIT_USAGE
    except (KpntError, OSError) as exc:
        if verbose:
            traceback.print_exc()
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        error(prog, msg)
        return 1
