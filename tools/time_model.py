#!/usr/bin/env python3
"""Time 24-MP inference of weights files, model only: the fused kernels
(backend auto: colour and front levels fused, the guide on cuDNN in f16;
with --guide-block fused, a width-64 projection guide's blocks on kpnt's
fused wgmma kernel) against the PyTorch reference, in one run, CUDA events after warm-up.

    python tools/time_model.py                    # the shipped models
    python tools/time_model.py --weights a.safetensors b.safetensors
    python tools/time_model.py --views 1 2 4      # also kpnt-denoise --ensemble 2 and 4 (fused only)
    python tools/time_model.py --guide-block both # the fused path with the guide's blocks fused, then on cuDNN
    python tools/time_model.py --mlp-wgmma both   # the fused path with the colour MLPs on wgmma, then on mma.sync
    python tools/time_model.py --front-wgmma both # the front level's MLP on wgmma, then on mma.sync
    python tools/time_model.py --guide-ends both  # the guide's first and last steps fused, then the reference's passes
    python tools/time_model.py --pyramid both     # the colour pyramid's down and up fused, then the reference's passes

Prints one line per weights file and backend, and the ratio; with --views,
one line per view count on the fused path (kpnt.ensemble: N model runs on
rotated copies plus the rotations and the mean).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kpnt.ensemble import ensemble_forward  # noqa: E402
from kpnt.mosaic.cfa import CFA  # noqa: E402
from kpnt.mosaic.kinds import MOSAIC_KINDS, kind  # noqa: E402
from kpnt.weights_io import load_weights, read_metadata, shipped_weights  # noqa: E402

# The module, whose FUSED_BLOCK switch this tool flips (kpnt.ops re-exports the
# function under the module's name).
guide_op = importlib.import_module("kpnt.ops.guide")
# The modules whose WGMMA_FORWARD switches --mlp-wgmma and --front-wgmma flip.
mlp_op = importlib.import_module("kpnt.ops._cuda.mlp")
front_op = importlib.import_module("kpnt.ops._cuda.front_level")
# The module whose FUSED switch --pyramid flips.
pyramid_op = importlib.import_module("kpnt.ops._cuda.pyramid")


def time_ms(model, x, cfa, noise, repeats: int, views: int = 1) -> float:
    """Median-free mean of ``repeats`` forwards after two warm-ups (ms);
    ``views`` > 1: the self-ensemble of that many views."""
    def run(inp):
        return ensemble_forward(model, inp, cfa, noise, views)

    with torch.no_grad():
        run(x[..., :1026, :1026])
        run(x)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            run(x)
        end.record()
        torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats


def synthetic_input(path, height: int, width: int):
    """(sensor, cfa, x, noise) of the fixed synthetic raw the GPU timings
    use for weights file ``path``: a uniform random mosaic of the kind's
    reference layout, seeded, on the GPU."""
    sensor = read_metadata(path)["sensor"]
    cfa = CFA(kind(sensor).reference_pattern())
    x = torch.rand(1, 1, height, width, device="cuda", generator=torch.Generator("cuda").manual_seed(0)) * 0.5
    noise = torch.tensor([[[1e-3] * 3, [1e-6] * 3]], device="cuda")
    return sensor, cfa, x, noise


def labels(choice: str, on: str, off: str, shipped_on, each: tuple[str, ...] = (), shipped: str | None = None):
    """The row labels of a fused-path switch's command-line choice: ``on``,
    ``off``, both, ``each`` (both and the labels between), or as shipped
    (``shipped``, else ``on`` / ``off`` by ``shipped_on``)."""
    return {"on": (on,), "off": (off,), "both": (on, off), "each": (on, *each, off),
            "shipped": (shipped or (on if shipped_on else off),)}[choice]


def ends_label(start: bool, finish: bool) -> str:
    """The row label of the guide's two fused-end switches."""
    if start == finish:
        return "fused" if start else "passes"
    return f"start {'fused' if start else 'passes'}, finish {'fused' if finish else 'passes'}"


def guide_ends(label: str) -> tuple[bool, bool]:
    """(FUSED_START, FUSED_FINISH) of a row's guide-ends label."""
    if label in ("fused", "passes"):
        return label == "fused", label == "fused"
    start, finish = label.split(", ")
    return start.endswith("fused"), finish.endswith("fused")


def set_switches(row) -> None:
    """Set kpnt's fused-path switches as a timing row says."""
    _, block, mlp, front, finish, pyramid = row
    guide_op.FUSED_BLOCK = block == "fused"
    mlp_op.WGMMA_FORWARD = mlp == "wgmma"
    front_op.WGMMA_FORWARD = front == "wgmma"
    guide_op.FUSED_START, guide_op.FUSED_FINISH = guide_ends(finish)
    pyramid_op.FUSED = pyramid == "fused"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", nargs="+", type=Path, help="weights files (default: the shipped Bayer and X-Trans models)")
    p.add_argument("--height", type=int, default=4002)
    p.add_argument("--width", type=int, default=6006)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--views", type=int, nargs="+", default=[], help="also time the fused self-ensemble of these view counts (1, 2, 4, 8)")
    p.add_argument("--cudnn-benchmark", choices=("on", "off", "both"), default="off",
                   help="cuDNN autotuning (torch.backends.cudnn.benchmark) of the guide's convolutions: off (cuDNN's "
                        "heuristics, what kpnt-denoise uses), on, or both, one after the other (default off; H200, "
                        "session 12: no change on the fused path, docs/KERNELS.md)")
    p.add_argument("--guide-block", choices=("fused", "cudnn", "both"), default="fused",
                   help="on the fused path, a width-64 projection guide's blocks on kpnt's fused wgmma kernel "
                        "(Hopper; what kpnt-denoise uses there, kpnt.ops.guide.FUSED_BLOCK on; the default), on "
                        "cuDNN's two calls a block, or both, one after the other")
    def switch(flag: str, what: str, where: str, extra: tuple[str, ...] = (), more: str = "") -> None:
        """A fused-path switch: on, off, both one after the other, or as kpnt ships (``where``)."""
        p.add_argument(flag, choices=("shipped", "on", "off", "both", *extra), default="shipped",
                       help=f"on the fused path, {what} (on), or not (off), both one after the other{more}, or as "
                            f"kpnt ships ({where}; the default)")

    switch("--mlp-wgmma", "the 64-wide MLP forwards (the colour levels) on the wgmma kernel (Hopper) instead of "
           "mma.sync", "kpnt.ops._cuda.mlp.WGMMA_FORWARD")
    switch("--front-wgmma", "the front level's 64-wide MLP forward on the wgmma kernel (Hopper) instead of mma.sync",
           "kpnt.ops._cuda.front_level.WGMMA_FORWARD")
    switch("--guide-ends", "the guide's first step (its input) and last step (scale, unpack, crop, add) each as one "
           "kernel instead of the reference's passes", "kpnt.ops.guide.FUSED_START and FUSED_FINISH", ("each",),
           ", each: also one end fused at a time")
    switch("--pyramid", "the colour pyramid's down and up steps each as one kernel instead of the reference's passes",
           "kpnt.ops._cuda.pyramid.FUSED")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("time_model.py: needs a CUDA GPU", file=sys.stderr)
        return 1
    files = args.weights or [shipped_weights(s) for s in MOSAIC_KINDS]
    if args.guide_block != "cudnn":
        from kpnt.ops._cuda.guide_block import wgmma_built

        if not wgmma_built(torch.cuda.current_device()):
            print(f"time_model.py: note: {torch.cuda.get_device_name()} does not run the fused guide block's wgmma "
                  "kernel (Hopper, kernels built for 9.0a): the 'fused' rows run the guide's blocks on cuDNN",
                  flush=True)
    before = (guide_op.FUSED_BLOCK, mlp_op.WGMMA_FORWARD, front_op.WGMMA_FORWARD, guide_op.FUSED_START,
              guide_op.FUSED_FINISH, pyramid_op.FUSED)
    # The labels of each switch's rows (they depend on the arguments and the shipped switches only).
    blocks = ("fused", "cudnn") if args.guide_block == "both" else (args.guide_block,)
    mlps = labels(args.mlp_wgmma, "wgmma", "mma", before[1])
    fronts = labels(args.front_wgmma, "wgmma", "mma", before[2])
    finishes = labels(args.guide_ends, "fused", "passes", None,
                      each=("start fused, finish passes", "start passes, finish fused"),
                      shipped=ends_label(before[3], before[4]))
    pyramids = labels(args.pyramid, "fused", "passes", before[5])
    rows = ([("auto", b, m, f, g, q) for b in blocks for m in mlps for f in fronts for g in finishes
             for q in pyramids] + [("torch", "cudnn", "mma", "mma", "passes", "passes")])
    ref = rows[-1]
    for path in files:
        sensor, cfa, x, noise = synthetic_input(path, args.height, args.width)
        for bench in (("off", "on") if args.cudnn_benchmark == "both" else (args.cudnn_benchmark,)):
            torch.backends.cudnn.benchmark = bench == "on"
            ms = {}
            for row in rows:
                backend, block, mlp, front, finish, pyramid = row
                model, _ = load_weights(path, sensor, device="cuda")
                model.backend = backend
                set_switches(row)
                ms[row] = time_ms(model, x, cfa, noise, args.repeats)
                print(f"{path}: {sensor} {args.height}x{args.width} backend {backend}, guide blocks {block}, "
                      f"MLP forward {mlp}, front MLP {front}, guide ends {finish}, pyramid {pyramid}, "
                      f"cuDNN autotuning {bench}: {ms[row]:.1f} ms", flush=True)
            for row in rows[:-1]:
                _, block, mlp, front, finish, pyramid = row
                print(f"{path}: fused/reference speed-up {ms[ref] / ms[row]:.2f}x (guide blocks {block}, MLP "
                      f"forward {mlp}, front MLP {front}, guide ends {finish}, pyramid {pyramid}, cuDNN autotuning "
                      f"{bench})")
            ms["auto"] = ms[rows[0]]
        model.backend = "auto"
        set_switches(rows[0])                           # the views on the path of ms["auto"]
        for v in args.views:
            t = time_ms(model, x, cfa, noise, args.repeats, v)
            print(f"{path}: {sensor} {args.height}x{args.width} backend auto, {v} view(s): {t:.1f} ms "
                  f"({t / ms['auto']:.2f}x one view)", flush=True)
    (guide_op.FUSED_BLOCK, mlp_op.WGMMA_FORWARD, front_op.WGMMA_FORWARD, guide_op.FUSED_START,
     guide_op.FUSED_FINISH, pyramid_op.FUSED) = before
    return 0


if __name__ == "__main__":
    sys.exit(main())
