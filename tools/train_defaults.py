#!/usr/bin/env python3
"""Retrain kpnt's shipped default weights (Bayer and X-Trans) in one call.

The recipe (README, "Training the defaults"):

* clean scenes: BSDS500 train (200 photos, downscaled 2x to remove JPEG
  chroma blocking), validation tiles from BSDS500 val;
* noise: every camera of darktable's profile table at every profiled ISO
  from 100 up (noise profiles do not depend on the CFA, so both sensors
  train on all bodies), except the held-out cameras below, which are used
  for validation only; colour matrices from the bundled bodies of the
  sensor kind (cameras without one borrow them in turn);
* held out: Nikon D750, Sony ILCE-7M2 (Bayer) and Fujifilm X-T1, X-E2
  (X-Trans) -- out of both sensors' training; each model validates on its
  own kind's held-out bodies at ISO 800/3200/6400;
* the model of DESIGN.md with the changes the ablation table chose
  (``SHIPPED_ARCH``: per-channel front kernels, plain normalisation, MLP
  width 128; fused since session 10's split backward), SMAPE loss, Adam
  1e-3 cosine-decayed to 10%, batch 16 tiles of 144 photosites, random CFA
  phases; fused CUDA kernels with the CUDA-graph training step.

Both sensors train at the same time, one process each, on one GPU (the
synthesis of training pairs runs on the CPU and is the slower half, so two
processes keep the GPU busier than one).  The step count is not guessed:
a short calibration run of both processes side by side measures steps per
second, and the real runs get ``--budget-minutes`` worth of steps, so that
the cosine schedule ends where the time does.

Usage (on the GPU machine, from the repository root)::

    python tools/train_defaults.py --budget-minutes 6.5 --out runs/defaults

It prints the calibration, each run's validation curve end points and a
summary table, and copies ``weights.safetensors``, ``curve.png`` and
``history.json`` of each sensor into ``--out``.  ``--install`` copies the
weights over ``kpnt/weights/{bayer,xtrans}.safetensors``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
from kpnt.heldout import ALL_HELD_OUT  # noqa: E402
from kpnt.mosaic.kinds import MOSAIC_KINDS  # noqa: E402  (numpy only: no torch import here)

SENSORS = list(MOSAIC_KINDS)
#: Architecture of the shipped models: per-channel front kernels, plain
#: kernel normalisation and width-128 MLPs (README "Ablations": +1.9 dB
#: sRGB at ISO 800 on Bayer over DESIGN.md's defaults after equal training).
SHIPPED_ARCH = "--front-kernels per_channel --apply plain --width 128 --front-width 128"


def train_argv(sensor: str, args, out: Path, steps: int, minutes: float | None, val_every: int) -> list[str]:
    """The kpnt-train command line of one sensor's run."""
    argv = [sys.executable, "-m", "kpnt.train", "--sensor", sensor, "-o", str(out),
            "--clean", str(args.clean), "--val", str(args.val), "--val-images", str(args.val_images),
            "--profiles", str(args.profiles), "--camera", "all", "--isos", args.isos, "--val-isos", args.val_isos,
            "--batch", str(args.batch), "--tile", str(args.tile), "--lr", str(args.lr), "--seed", str(args.seed),
            "--steps", str(steps), "--val-every", str(val_every), "--ckpt-every", str(max(steps, 1)),
            "--threads", str(args.threads), "--backend", args.backend, "--no-progress", *args.arch.split()]
    for cam in ALL_HELD_OUT:
        argv += ["--holdout", cam]
    if minutes is not None:
        argv += ["--minutes", str(minutes)]
    return argv


def run_all(argvs: dict[str, list[str]], logs: Path) -> dict[str, tuple[int, float, str]]:
    """Start every command at once, wait for all; returns (rc, seconds, log)."""
    procs = {}
    for name, argv in argvs.items():
        f = open(logs / f"{name}.log", "w")
        procs[name] = (subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT), f, time.monotonic())
    out = {}
    for name, (p, f, t0) in procs.items():
        rc = p.wait()
        f.close()
        out[name] = (rc, time.monotonic() - t0, (logs / f"{name}.log").read_text())
    return out


def trained_steps(log: str) -> int:
    m = re.search(r"trained (\d+) steps", log)
    if not m:
        raise SystemExit("a run printed no 'trained N steps' line:\n" + log[-3000:])
    return int(m.group(1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clean", type=Path, default=SHARED / "bsds500" / "train")
    p.add_argument("--val", type=Path, default=SHARED / "bsds500" / "val")
    p.add_argument("--profiles", type=Path, default=SHARED / "noiseprofiles.json")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "defaults")
    p.add_argument("--sensors", nargs="+", default=SENSORS, choices=SENSORS)
    p.add_argument("--budget-minutes", type=float, default=6.5, help="training time of each run after calibration (default 6.5)")
    p.add_argument("--calib-minutes", type=float, default=0.6, help="length of the calibration runs (default 0.6)")
    p.add_argument("--steps", type=int, help="skip calibration and train this many steps")
    p.add_argument("--isos", default="100-409600")
    p.add_argument("--val-isos", default="800,3200,6400")
    p.add_argument("--val-images", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--tile", type=int, default=144)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) // 4))
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "cuda"])
    p.add_argument("--arch", default=SHIPPED_ARCH,
                   help=f"architecture flags passed to kpnt-train (default: the shipped models', {SHIPPED_ARCH!r}; "
                   "tools/ablate.py measured why)")
    p.add_argument("--install", action="store_true", help="copy the weights over kpnt/weights/")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()

    t_start = time.monotonic()
    if args.backend != "torch":
        # Build (or load) the fused kernels once, before any timing.
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "import torch; from kpnt.ops import _cuda; "
                        "assert torch.cuda.is_available(); _cuda.ext()"], cwd=ROOT, check=True)
        print(f"fused kernels ready in {time.monotonic() - t0:.0f} s", flush=True)

    steps = args.steps
    if steps is None:
        calib = run_all({s: train_argv(s, args, work / f"calib-{s}", 10**7, args.calib_minutes, 10**7) for s in args.sensors}, work)
        rates = {}
        for s, (rc, secs, log) in calib.items():
            if rc:
                raise SystemExit(f"calibration run {s} failed (rc {rc}):\n{log[-3000:]}")
            rates[s] = trained_steps(log) / (args.calib_minutes * 60)
            print(f"calibration {s}: {trained_steps(log)} steps in {args.calib_minutes * 60:.0f} s of training "
                  f"({rates[s]:.1f} steps/s side by side; {secs:.0f} s with start-up)", flush=True)
        # The slower sensor sets the pace; both get the same step count.
        steps = int(min(rates.values()) * args.budget_minutes * 60 * 0.95)
    print(f"training {steps} steps per sensor", flush=True)
    val_every = max(100, steps // 40)
    runs = run_all({s: train_argv(s, args, work / s, steps, args.budget_minutes * 1.4, val_every) for s in args.sensors}, work)

    rows = []
    for s, (rc, secs, log) in runs.items():
        print(f"--- {s} (rc {rc}, {secs / 60:.1f} min) ---\n" + "\n".join(log.strip().splitlines()[-6:]), flush=True)
        if rc:
            continue
        hist = json.loads((work / s / "history.json").read_text())
        for name in ("weights.safetensors", "curve.png", "history.json"):
            shutil.copy2(work / s / name, args.out / f"{s}-{name}")
        rows.append((s, trained_steps(log), secs / 60, hist["val_psnr"][0], hist["val_psnr"][-1]))
        if args.install:
            shutil.copy2(work / s / "weights.safetensors", ROOT / "kpnt" / "weights" / f"{s}.safetensors")
    print("\n| sensor | steps | minutes (with start-up) | val PSNR first | val PSNR last |\n|---|---|---|---|---|")
    for s, n, m, a, b in rows:
        print(f"| {s} | {n} | {m:.1f} | {a:.2f} | {b:.2f} |")
    print(f"total {(time.monotonic() - t_start) / 60:.1f} min", flush=True)
    return 0 if len(rows) == len(args.sensors) else 1


if __name__ == "__main__":
    sys.exit(main())
