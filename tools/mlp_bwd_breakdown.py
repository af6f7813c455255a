#!/usr/bin/env python3
"""Where the fused MLP's forward + backward (weight gradients) spends its GPU
time, kernel by kernel, at width 64 (the in-block wgmma backward) and 128
(the split backward: data pass, then dW pass), for issue 14's point 3.

    python tools/mlp_bwd_breakdown.py                 # 4 M rows, both widths
    python tools/mlp_bwd_breakdown.py --rows 1048576 --widths 128

For each width prints the call's CUDA-event time (kbench_common.time_ms, as
tools/bench_kernels.py times its "fused fwd+bwd (dW)" row) and the torch
profiler's kernels of one call with their share, and for the split backward
the workspace each kernel moves a row (written by the storing forward or the
data pass, read back by the dW pass) and the DRAM bandwidth those bytes imply
at the kernels' times.
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


def workspace_bytes_per_row(dims) -> dict[str, int]:
    """Workspace bytes a row each kernel of the split backward moves (kernels/mlp_core.cuh
    Split, f16): the activations A_0 .. A_NH (written by the storing forward, or
    by the recomputing data pass), every dZ_{m+1} (written by the data pass),
    the sign bits (a bit a hidden activation, written by the storing forward
    and read by the data pass), and everything read back by the dW pass."""
    n_in, h, n_out, nh = dims
    acts, dz, bits = 2 * (n_in + nh * h), 2 * (nh * h + n_out), nh * h // 8
    return {"mlp_fwd_store": acts + bits, "mlp_bwd_split_kernel": dz + bits,
            "mlp_bwd_split_kernel (recomputing)": acts + dz, "mlp_dw": acts + dz}


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
            per_row = workspace_bytes_per_row(dims)
            stored = any("mlp_fwd_store" in name for name, _, _ in kernels)
            for part in ("mlp_fwd_store", "mlp_bwd_split_kernel", "mlp_dw"):
                k_ms = sum(k for name, k, _ in kernels if part in name)
                key = part if stored or part != "mlp_bwd_split_kernel" else part + " (recomputing)"
                if k_ms > 0:
                    gb = per_row[key] * args.rows / 1e9
                    print(f"{key}: {per_row[key]} workspace bytes a row, {gb:.1f} GB, {gb / k_ms:.2f} TB/s "
                          f"at {k_ms:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
