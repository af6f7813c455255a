#!/usr/bin/env python3
"""Train several kpnt architectures side by side on one GPU (issue 13's
ablations and the shipped models' recipe).

Every variant is one ``kpnt-train`` process with identical data, seed,
tiles, noise and learning-rate schedule; only the architecture flags
differ.  They share the GPU (synthesis runs there too), so a variant's step
count at a fixed ``--minutes`` is its speed.  Run folders land in
``--out/<variant>``; with ``--resume`` each continues from its checkpoint
(training split across device calls).

Recipe (README, "The shipped weights and how to retrain them"):

* clean scenes: ``photos/train`` (247 photos, DESIGN.md section 4), no
  further downscaling; validation tiles from ``photos/val`` (never trained
  on);
* noise: every camera of darktable's table at every ISO from 100 up (x 12,
  raw scale), the Nikon D750 / Sony ILCE-7M2 / Fujifilm X-T1 / X-E2 held
  out of training and used for validation; synthesis adds colourfulness,
  optical blur, wide white balances and noise down to zero
  (:mod:`kpnt.train.synthesis`);
* SMAPE, Adam 1e-3 cosine-decayed over ``--steps``.

Usage::

    python tools/train_variants.py --out runs/ablate --minutes 7 --steps 40000 \\
        --variant bayer:base: --variant "bayer:guide:--guide-layers 10 --guide-width 64"

A variant is ``SENSOR:NAME:FLAGS`` (flags passed to kpnt-train verbatim).
It prints one line per variant: steps, minutes, validation PSNR.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
from kpnt.heldout import ALL_HELD_OUT  # noqa: E402
from kpnt.mosaic.kinds import MOSAIC_KINDS  # noqa: E402  (numpy only: no torch import here)


def parse_variant(spec: str) -> tuple[str, str, list[str]]:
    """'SENSOR:NAME:FLAGS' -> (sensor, name, flag list)."""
    parts = spec.split(":", 2)
    if len(parts) != 3 or parts[0] not in MOSAIC_KINDS or not parts[1]:
        raise SystemExit(f"--variant {spec!r}: expected SENSOR:NAME:FLAGS with SENSOR one of {', '.join(MOSAIC_KINDS)}")
    return parts[0], parts[1], parts[2].split()


def train_argv(sensor: str, name: str, flags: list[str], args) -> list[str]:
    """The kpnt-train command line of one variant."""
    out = args.out / f"{sensor}-{name}"
    argv = [sys.executable, "-m", "kpnt.train", "--sensor", sensor, "-o", str(out),
            "--clean", str(args.clean), "--val", str(args.val), "--val-images", str(args.val_images), "--downscale", "1",
            "--profiles", str(args.profiles), "--camera", "all", "--isos", args.isos, "--val-isos", args.val_isos,
            "--batch", str(args.batch), "--tile", str(args.tile), "--lr", str(args.lr), "--seed", str(args.seed),
            "--steps", str(args.steps), "--val-every", str(args.val_every), "--ckpt-every", str(args.ckpt_every),
            "--threads", str(args.threads), "--backend", args.backend, "--no-progress", *flags]
    for cam in ALL_HELD_OUT:
        argv += ["--holdout", cam]
    if args.minutes is not None:
        argv += ["--minutes", str(args.minutes)]
    if args.resume and (out / "checkpoint.pt").exists():
        argv.append("--resume")
    return argv


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", required=True, help="SENSOR:NAME:FLAGS (repeatable)")
    p.add_argument("--clean", type=Path, default=SHARED / "photos" / "train")
    p.add_argument("--val", type=Path, default=SHARED / "photos" / "val")
    p.add_argument("--profiles", type=Path, default=SHARED / "noiseprofiles.json")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "variants")
    p.add_argument("--steps", type=int, default=20000, help="steps of the cosine schedule (default 20000)")
    p.add_argument("--minutes", type=float, help="stop each run after this many minutes")
    p.add_argument("--resume", action="store_true", help="continue runs that have a checkpoint")
    p.add_argument("--isos", default="100-409600")
    p.add_argument("--val-isos", default="800,3200,12800")
    p.add_argument("--val-images", type=int, default=16)
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tile", type=int, default=192)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "cuda"])
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    variants = [parse_variant(v) for v in args.variant]
    procs = {}
    for sensor, name, flags in variants:
        argv = train_argv(sensor, name, flags, args)
        log = open(args.out / f"{sensor}-{name}.log", "a")
        log.write(" ".join(argv) + "\n")
        log.flush()
        procs[f"{sensor}-{name}"] = (subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                                      env=dict(os.environ, PYTHONUNBUFFERED="1")), log, time.monotonic())
    rows = []
    for key, (proc, log, t0) in procs.items():
        rc = proc.wait()
        log.close()
        hist_path = args.out / key / "history.json"
        hist = json.loads(hist_path.read_text()) if hist_path.exists() else {}
        steps = hist.get("steps", [0])[-1] if hist.get("steps") else 0
        val = hist.get("val_psnr", [])
        nan = float("nan")
        best = max(range(len(val)), key=lambda i: val[i], default=None)
        best_txt = f"{val[best]:.2f} @ {hist['val_steps'][best]}" if best is not None else "-"
        rows.append((key, rc, steps, (time.monotonic() - t0) / 60, val[0] if val else nan, val[-1] if val else nan,
                     best_txt))
    print("| variant | rc | steps | minutes | val PSNR first | val PSNR last | best (step; best.safetensors) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key, rc, steps, minutes, v0, v1, vb in rows:
        print(f"| {key} | {rc} | {steps} | {minutes:.1f} | {v0:.2f} | {v1:.2f} | {vb} |")
    return max(r[1] for r in rows)


if __name__ == "__main__":
    sys.exit(main())
