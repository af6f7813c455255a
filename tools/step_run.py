#!/usr/bin/env python3
"""Runs eager fused training steps of one bench architecture and sensor and
nothing else, for a profiler to wrap (Nsight Compute's ``ncu``,
``compute-sanitizer``, ``nsys``): the kernels a graphed step replays, launched
one by one.

    ncu --kernel-name regex:wgrad_tf32 --launch-skip 15 --launch-count 1 \\
        python tools/step_run.py --arch shipped --sensor bayer --steps 2 --set "g.FUSED_WGRAD = True"

``--set`` runs Python statements first, with ``g`` bound to
kpnt.ops._cuda.guide_train and ``f`` to kpnt.ops._cuda.front_level (their
module switches: ``--set f.ROWS_BY_SITE=True``).  Architectures are
tools/kbench_timing.py's STEP_ARCHS; batches are the bench's
(kbench_checks.step_batch).  Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    from kbench_timing import add_step_case_args, step_case, train_step_fn

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_step_case_args(p, sensor="bayer")
    p.add_argument("--steps", type=int, default=2, help="steps to run (default 2)")
    p.add_argument("--set", default="", metavar="PYTHON",
                   help="statements run first (g: kpnt.ops._cuda.guide_train, f: kpnt.ops._cuda.front_level)")
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("step_run.py: needs a CUDA GPU", file=sys.stderr)
        return 1
    import kpnt.ops._cuda.front_level as f
    import kpnt.ops._cuda.guide_train as g
    exec(args.set, {"g": g, "f": f})
    N, H, W = args.size
    m, b = step_case(args.arch, args.sensor, N, H, W)
    step = train_step_fn(m, b.x, b.cfa, b.noise, b.target)
    for _ in range(args.steps):
        step()
    torch.cuda.synchronize()
    print(f"step_run.py: {args.steps} {args.arch} {args.sensor} steps of {N}x{H}x{W} done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
