#!/usr/bin/env python3
"""Training parity from saved ``bench_kernels.py --parity-only`` outputs,
including runs cut short before their own summary (the GPU calls' time limit):
per (architecture, sensor), the validation-PSNR difference fused minus
reference of every complete seed pair, their mean and standard error.

    python tools/parity_stats.py docs/bench/parity_s25_h100.txt docs/bench/parity_s26_h100.txt \\
        docs/bench/parity_s26b_h100.txt

A pair is a reference ('torch') run followed by a fused ('cuda') run of the
same case; a lone last run (cut by the limit) is left out.  Pairs of all the
files given are pooled per case.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

RUN = re.compile(r"parity (\S+) (\S+) (torch|cuda): val PSNR [\d.]+ -> ([\d.]+) dB")


def pairs(text: str) -> dict[tuple[str, str], list[float]]:
    """{(architecture, sensor): [fused - reference PSNR of each complete pair]}."""
    out: dict[tuple[str, str], list[float]] = {}
    pending: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = RUN.search(line)
        if not m:
            continue
        case, backend, psnr = (m.group(1), m.group(2)), m.group(3), float(m.group(4))
        if backend == "torch":
            pending[case] = psnr
        elif case in pending:
            out.setdefault(case, []).append(psnr - pending.pop(case))
    return out


def mean_se(d: list[float]) -> tuple[float, float]:
    """Mean and standard error (nan with one value)."""
    m = sum(d) / len(d)
    if len(d) < 2:
        return m, math.nan
    return m, math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1) / len(d))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help="saved outputs of bench_kernels.py --parity-only")
    args = ap.parse_args(argv)
    pooled: dict[tuple[str, str], list[float]] = {}
    for f in args.files:
        for case, d in pairs(f.read_text()).items():
            pooled.setdefault(case, []).extend(d)
    if not pooled:
        print("parity_stats.py: no complete seed pair in the files given", file=sys.stderr)
        return 1
    print("| case | pairs | fused - reference, dB: mean | standard error |")
    print("| --- | ---: | ---: | ---: |")
    for (arch, sensor), d in sorted(pooled.items()):
        m, se = mean_se(d)
        print(f"| {arch} {sensor} | {len(d)} | {m:+.3f} | {se:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
