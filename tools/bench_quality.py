#!/usr/bin/env python3
"""Quality benchmark: kpnt against LibRaw, LibRaw + NLM, Menon 2007, demosaicnet and demosaicnet + BM3D.

A thin command line over the library: :mod:`kpnt.bench.cli` parses the
arguments and prints the report (``--help``, or that module's docstring,
says what is measured and how to run it), the rest of :mod:`kpnt.bench`
does the work.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:          # run from a checkout without installing kpnt
    sys.path.insert(0, str(ROOT))

from kpnt.bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
