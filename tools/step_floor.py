#!/usr/bin/env python3
"""The guide's arithmetic in one training step of the shipped models, and
the step time it bounds (issue 14, point 2: the graphed step at 10x the
reference's).

    python tools/step_floor.py                                  # shipped, 4 x 512 x 512
    python tools/step_floor.py --ref-ms 50.85 38.56 --rest-ms 2.92 3.24

For each sensor: the packed grid the guide runs on (from the real packing of
a ``--size`` batch), the multiply-add work of its convolutions in one
training step (forward, the input gradients, the weight gradients; layer 0's
input gradient counted, since the guide's input depends on trained weights),
and how long that work takes at the GPU's dense tensor-core peak in TF32
(the float32 guide) and in bfloat16.  Those times are floors: no memory
traffic, no launch, every multiply at peak.

With ``--ref-ms`` (the reference step, one per sensor) and ``--rest-ms``
(the graphed step's GPU time outside the guide's kernels and convolutions,
from ``tools/step_breakdown.py --graphed``) it prints the 10x target and
what the guide may take within it: the fraction of the tensor-core peak its
whole training would have to run at.  Also the front level's MLP (the
largest part of the rest of the step) against its own floor.  CPU only.
"""
from __future__ import annotations

import argparse
import sys
from functools import lru_cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Dense tensor-core peaks of the lent GPUs (H100 SXM and H200 share them:
#: NVIDIA's data sheets give 989 / 1979 TFLOP/s "with sparsity", half dense).
PEAK_TF32 = 494.7
PEAK_BF16 = 989.4


@lru_cache(maxsize=None)
def shipped_model(sensor: str):
    """A model of the shipped weights' configuration for ``sensor`` (its initial weights: only shapes are read)."""
    from kpnt.model import KPNT, ModelConfig
    from kpnt.weights_io import read_metadata, shipped_weights

    return KPNT(sensor, ModelConfig.from_json(read_metadata(shipped_weights(sensor))["config"]), backend="torch")


def guide_shapes(sensor: str):
    """The shipped model's guide convolution weights' shapes ``(o, i, kh, kw)``
    and its packing configuration ``(cfa, pack)``."""
    from kpnt.mosaic.cfa import CFA

    model = shipped_model(sensor)
    shapes = [tuple(p.shape) for p in model.sets["guide"] if p.dim() == 4]
    cfa = CFA.bayer("RGGB") if sensor == "bayer" else CFA.xtrans()
    return shapes, cfa, model.config.guide_pack


def front_mlp_flop(sensor: str, photosites: int) -> float:
    """FLOP of the front level's MLP in one training step: every photosite's
    row through one weight set, forward, the backward's recomputed forward,
    the data gradient and the weight gradient (4 x the forward)."""
    model = shipped_model(sensor)
    first = next(name for name in model.sets if name.startswith("front"))
    per_row = sum(2.0 * p.numel() for p in model.sets[first])
    return 4 * per_row * photosites


def step_flop(shapes, positions: int) -> dict[str, float]:
    """FLOP (2 per multiply-add) of the guide's convolutions in one training
    step over ``positions`` packed positions, by pass and kernel size."""
    out = {"fprop": 0.0, "dgrad": 0.0, "wgrad": 0.0, "3x3": 0.0, "1x1": 0.0}
    for o, i, kh, kw in shapes:
        one = 2.0 * o * i * kh * kw * positions
        for name in ("fprop", "dgrad", "wgrad"):
            out[name] += one
        out["3x3" if kh == 3 else "1x1"] += 3 * one
    out["total"] = out["fprop"] + out["dgrad"] + out["wgrad"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, nargs=3, default=[4, 512, 512], metavar=("N", "H", "W"))
    p.add_argument("--sensors", nargs="+", default=["bayer", "xtrans"])
    p.add_argument("--ref-ms", type=float, nargs="+", default=None,
                   help="the reference training step's ms, one per sensor (bench_kernels.py's point-2 rows)")
    p.add_argument("--rest-ms", type=float, nargs="+", default=None,
                   help="the graphed step's GPU ms outside the guide (kpnt guide and cuDNN groups of "
                        "step_breakdown.py --graphed), one per sensor")
    args = p.parse_args()
    for name in ("ref_ms", "rest_ms"):
        v = getattr(args, name)
        if v is not None and len(v) != len(args.sensors):
            p.error(f"--{name.replace('_', '-')} takes one number per sensor ({len(args.sensors)})")
    from kpnt.ref.guide import packing

    N, H, W = args.size
    print(f"# guide convolutions of one training step, {N} x {H} x {W}; dense peaks TF32 {PEAK_TF32}, "
          f"bfloat16 {PEAK_BF16} TFLOP/s")
    print("| sensor | packed grid | GFLOP fprop / dgrad / wgrad | 3x3 share | floor TF32 | floor bf16 |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    floors = []
    for sensor in args.sensors:
        shapes, cfa, pack = guide_shapes(sensor)
        Q, top, bottom, left, right = packing(cfa, pack, H, W)
        h, w = (H + top + bottom) // Q, (W + left + right) // Q
        f = step_flop(shapes, N * h * w)
        tf32, bf16 = f["total"] / PEAK_TF32 / 1e9, f["total"] / PEAK_BF16 / 1e9
        floors.append((tf32, bf16))
        print(f"| {sensor} | {N} x {h} x {w}, {len(shapes)} convolutions | {f['fprop'] / 1e9:.0f} / "
              f"{f['dgrad'] / 1e9:.0f} / {f['wgrad'] / 1e9:.0f} ({f['total'] / 1e9:.0f}) | "
              f"{100 * f['3x3'] / f['total']:.0f} % | {tf32:.2f} ms | {bf16:.2f} ms |")
    print("\n| sensor | front MLP, GFLOP a step | its floor at the dense f16 peak |")
    print("| --- | ---: | ---: |")
    for sensor in args.sensors:
        f = front_mlp_flop(sensor, N * H * W)
        print(f"| {sensor} | {f / 1e9:.0f} | {f / PEAK_BF16 / 1e9:.2f} ms |")
    if args.ref_ms and args.rest_ms:
        print("\n| sensor | reference | 10x target | rest of the step | left for the guide | "
              "guide's rate needed, TF32 / bf16 |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for sensor, ref, rest, (tf32, bf16) in zip(args.sensors, args.ref_ms, args.rest_ms, floors):
            left = ref / 10 - rest
            need = lambda floor: "impossible" if left <= 0 else f"{100 * floor / left:.0f} % of peak"  # noqa: E731
            print(f"| {sensor} | {ref:.2f} ms | {ref / 10:.2f} ms | {rest:.2f} ms | {max(left, 0):.2f} ms | "
                  f"{need(tf32)} / {need(bf16)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
