#!/usr/bin/env python3
"""Where the fused MLP's forward + backward (weight gradients) spends its GPU
time, kernel by kernel, at width 64 (the in-block wgmma backward) and 128
(the split backward: data pass, then dW pass), for issue 14's point 3.

    python tools/mlp_bwd_breakdown.py                 # 4 M rows, both widths
    python tools/mlp_bwd_breakdown.py --rows 1048576 --widths 128

For each width prints the call's CUDA-event time (kbench_common.time_ms, as
tools/bench_kernels.py times its "fused fwd+bwd (dW)" row) and the torch
profiler's kernels of one call with their share, and for the split backward
the workspace it moves: bytes a row written by the data pass and read back by
the dW pass, and the DRAM bandwidth those bytes imply at the kernels' times.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kbench_common import COLOUR, COLOUR128, SLOPE, gpu_kernels, make_weights, make_x, time_ms  # noqa: E402
from kpnt.ops import _cuda  # noqa: E402


def workspace_bytes_per_row(dims) -> int:
    """The split backward's workspace a row: every A_m and every dZ_{m+1}, f16
    (kernels/mlp_core.cuh Split: in + out + 2 n_hidden hidden halves)."""
    n_in, h, n_out, nh = dims
    return 2 * (n_in + n_out + 2 * nh * h)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=4 * 1024 * 1024)
    p.add_argument("--widths", type=int, nargs="+", default=[64, 128], choices=(64, 128))
    p.add_argument("--reps", type=int, default=20)
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("mlp_bwd_breakdown.py: needs a CUDA GPU", file=sys.stderr)
        return 1
    print(f"{torch.cuda.get_device_name()}, {args.rows} rows")
    for width in args.widths:
        dims = COLOUR if width == 64 else COLOUR128
        ws = make_weights(dims, seed=11)
        x = make_x(args.rows, dims[0], seed=12)
        gy = torch.randn(args.rows, dims[2], device="cuda")

        def fwd_bwd():
            torch.autograd.grad(_cuda.fused_mlp(x, ws, SLOPE), ws, gy)

        ms, lo, hi = time_ms(fwd_bwd, reps=args.reps)
        kernels = gpu_kernels(fwd_bwd)
        total = sum(k_ms for _, k_ms, _ in kernels)
        print(f"\n== width {width}, MLP {dims}: call {ms:.3f} ms [{lo:.3f}, {hi:.3f}], "
              f"{args.rows / ms / 1e6:.2f} Gpix/s; GPU kernels {total:.3f} ms")
        print(f"| kernel | launches | ms | share |")
        print("| --- | ---: | ---: | ---: |")
        for name, k_ms, n in kernels:
            print(f"| {name[:90]} | {n:.0f} | {k_ms:.3f} | {100 * k_ms / total:.1f} % |")
        if width == 128:
            b = workspace_bytes_per_row(dims)
            gb = b * args.rows / 1e9
            for part in ("mlp_bwd_split_kernel", "mlp_dw_kernel"):
                k_ms = sum(k for name, k, _ in kernels if part in name)
                if k_ms > 0:
                    print(f"{part}: {b} workspace bytes a row, {gb:.1f} GB, {gb / k_ms:.2f} TB/s at {k_ms:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
