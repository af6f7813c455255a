#!/usr/bin/env python3
"""What one call of the fused MLP forward costs besides its kernel, on
mma.sync and on wgmma (issue 14, point 3: the kernel alone runs the colour
MLP at ~7.4 / 10.0 Gpix/s in tools/wgmma_probe, a call of the op at much
less).

    python tools/mlp_call_cost.py                 # colour shape, 4 M rows
    python tools/mlp_call_cost.py --rows 1048576 --shape front

For each kernel (mma.sync; wgmma where the GPU runs it) and each way of
passing the weights (a list of float32 tensors, packed on every call as
tools/bench_kernels' "fused fwd" row does; or packed once, as kpnt.model
does), prints one row:

- ``call ms``: CUDA-event time of back-to-back calls (kbench_common.time_ms:
  the host enqueues ahead, so host time only counts where it exceeds the GPU's);
- ``host ms``: the host's time from the call to its return, unsynchronised
  (near ``call ms`` means the call waits for the GPU: a sync somewhere);
- ``GPU ms``: the torch profiler's kernel time of one call, and the kernels
  it ran.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kbench_common import COLOUR, FRONT, SLOPE, gpu_kernels, make_weights, make_x, time_ms  # noqa: E402
from kpnt.ops import _cuda  # noqa: E402
from kpnt.ops._cuda.guide_block import wgmma_built  # noqa: E402
from kpnt.ops.weights import MlpWeights  # noqa: E402

mlp_op = importlib.import_module("kpnt.ops._cuda.mlp")


def host_ms(fn, calls: int = 20) -> float:
    """Mean host time of a call (ms), the GPU left to run behind."""
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    host = (time.perf_counter() - t) / calls
    torch.cuda.synchronize()
    return 1e3 * host


def kernel_summary(fn) -> tuple[float, str]:
    """(GPU kernel ms per call, the first kernels with their launches and ms)."""
    kernels = gpu_kernels(fn)
    names = ", ".join(f"{name[:48]} x{n:.0f} {ms:.3f}" for name, ms, n in kernels[:4])
    return sum(ms for _, ms, _ in kernels), names


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=4 * 1024 * 1024)
    p.add_argument("--shape", choices=("colour", "front"), default="colour")
    p.add_argument("--rounds", type=int, default=2, help="times each row is measured, alternating the kernels")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("mlp_call_cost.py: needs a CUDA GPU", file=sys.stderr)
        return 1
    dims = COLOUR if args.shape == "colour" else FRONT
    ws = make_weights(dims, seed=1)
    packed = MlpWeights(ws)
    x = make_x(args.rows, dims[0])
    kernels = [False] + ([True] if wgmma_built(torch.cuda.current_device()) else [])
    before = mlp_op.WGMMA_FORWARD
    print(f"{torch.cuda.get_device_name()}, {args.shape} MLP {dims}, {args.rows} rows")
    print(f"| kernel | weights | call ms | Gpix/s | host ms | GPU ms | kernels (ms a call) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    try:
        with torch.no_grad():
            for _ in range(args.rounds):
                for wg in kernels:
                    mlp_op.WGMMA_FORWARD = wg
                    for how, w in (("list", ws), ("packed once", packed)):
                        def call():
                            _cuda.fused_mlp(x, w, SLOPE)
                        ms = time_ms(call)[0]
                        gpu, names = kernel_summary(call)
                        print(f"| {'wgmma' if wg else 'mma.sync'} | {how} | {ms:.3f} | {args.rows / ms / 1e6:.2f} | "
                              f"{host_ms(call):.3f} | {gpu:.3f} | {names} |", flush=True)
    finally:
        mlp_op.WGMMA_FORWARD = before
    return 0


if __name__ == "__main__":
    sys.exit(main())
