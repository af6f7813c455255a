#!/usr/bin/env python3
"""Where 24-MP inference time goes: GPU kernel time per kernel (torch
profiler) of one model-only forward on the fused backend, after warm-up.

    python tools/profile_inference.py                      # the shipped models
    python tools/profile_inference.py --weights a.safetensors --top 30

Prints, per weights file, the total GPU kernel time of a forward and the
``--top`` kernels by time with their launch counts.  ``tools/time_model.py``
is the timing of record (CUDA events, beside the reference); this says
which kernels make up the fused number.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kpnt.mosaic.kinds import MOSAIC_KINDS  # noqa: E402
from kpnt.weights_io import load_weights, shipped_weights  # noqa: E402
from kbench_common import gpu_kernels  # noqa: E402
from time_model import mlp_op, synthetic_input  # noqa: E402


def forward_times(model, x, cfa, noise, repeats: int) -> tuple[float, float]:
    """(wall, host) ms per forward, unprofiled: the CUDA-event time of
    ``repeats`` forwards, and the host's time to launch one forward (from the
    call to its return, before the GPU has finished).  A wall time well
    above the GPU kernel time with host time near it means the forward is
    bound by its launches, not its kernels."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    host = 0.0
    start.record()
    for _ in range(repeats):
        t = time.perf_counter()
        model(x, cfa, noise)
        host += time.perf_counter() - t
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats, 1e3 * host / repeats


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", nargs="+", type=Path, help="weights files (default: the shipped Bayer and X-Trans models)")
    p.add_argument("--height", type=int, default=4002)
    p.add_argument("--width", type=int, default=6006)
    p.add_argument("--repeats", type=int, default=3, help="profiled forwards (the table is per forward)")
    p.add_argument("--top", type=int, default=22, help="kernels listed (default 22)")
    p.add_argument("--mlp-wgmma", choices=("shipped", "on", "off"), default="shipped",
                   help="the 64-wide MLP forwards on the wgmma kernel (on), on mma.sync (off), or as kpnt ships "
                        "(kpnt.ops._cuda.mlp.WGMMA_FORWARD; the default)")
    args = p.parse_args()
    if args.mlp_wgmma != "shipped":
        mlp_op.WGMMA_FORWARD = args.mlp_wgmma == "on"
    if not torch.cuda.is_available():
        print("profile_inference.py: needs a CUDA GPU", file=sys.stderr)
        return 1
    for path in args.weights or [shipped_weights(s) for s in MOSAIC_KINDS]:
        sensor, cfa, x, noise = synthetic_input(path, args.height, args.width)
        model, _ = load_weights(path, sensor, device="cuda")
        model.backend = "auto"
        with torch.no_grad():
            for _ in range(2):
                model(x, cfa, noise)
            torch.cuda.synchronize()
            wall, host = forward_times(model, x, cfa, noise, args.repeats)
            kernels = gpu_kernels(lambda: model(x, cfa, noise), args.repeats)
        total = sum(ms for _, ms, _ in kernels)
        launches = sum(n for _, _, n in kernels)
        print(f"{path}: {sensor} {args.height}x{args.width}, MLP forward "
              f"{'wgmma' if mlp_op.WGMMA_FORWARD else 'mma'}: GPU kernel time {total:.2f} ms/forward, "
              f"{launches:.0f} kernels; unprofiled: {wall:.2f} ms a forward (CUDA events), the host's "
              f"launching {host:.2f} ms of it")
        for name, ms, n in kernels[:args.top]:
            print(f"  {ms:7.3f} ms  x{n:5.0f}  {name[:120]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
