#!/usr/bin/env python3
"""Ablation table of kpnt's design choices (issue 6).

Trains one model per (sensor, variant) with identical data, seed and step
count, evaluates each on the synthetic validation of
``tools/bench_quality.py`` (its ``make_case``/``case_seed``/
``profile_at_iso``/``score``, imported, not copied: the same photos, camera,
noise, seeds, 14-bit quantisation and scoring) and prints a markdown table:
variant, what changed, parameters, training-step time, sRGB and linear PSNR
per ISO on the held-out camera, and the difference to the default.

Variants (``--variants``; the default runs all of them for every sensor):

=============  ==========================================================
default        ModelConfig's defaults: softmax kernels, noise input,
               15-tap diamond, colour MLP width 64, symmetry sharing
plain          ``--apply plain``: kernels normalised by their sum
no-noise       ``--no-noise-input``: the MLPs do not see the noise level
square25       ``--colour-taps square25``: full 5x5 colour kernels
width128       ``--width 128``: colour MLP 128 wide
no-sharing     ``--front-sharing none``: one front set per site position
=============  ==========================================================

Training: every run calls ``kpnt-train``'s ``main(argv)`` in its own
subprocess (``--parallel K`` at a time, e.g. several on one GPU; each gets
``--threads`` = CPU cores / K unless given), with ``--sensor``, ``-o``,
``--steps``, ``--profiles``, ``--holdout <evaluation camera>`` (so the
table scores a camera the runs never trained on) and the variant's flags
added to the common arguments, which are everything on this command line
that ablate.py does not know itself (``--clean DIR --camera all --batch 16
--tile 144 --isos 100-409600 ...``, passed through unchanged).  A run whose
folder already holds ``weights.safetensors`` is not trained again (delete
it, or pass ``--retrain``).  Under ``--backend auto`` (default) parts the
fused kernels do not implement (square25's colour level, width128's colour
MLP, no-sharing's front level) run on the PyTorch reference: the ``fused``
column says which.  If such a run fails to capture its CUDA-graph training
step, it is retried once with ``--backend torch`` (said in the table).

Evaluation (on ``--device``, default CUDA when available): per sensor the
evaluation camera (``--bayer-camera`` Nikon D750, ``--xtrans-camera``
Fujifilm X-T1, bench_quality's defaults), per ISO (``--isos``, default
800,3200,12800; beyond the camera's table the profile is pushed, as in
bench_quality), ``--val-limit`` photos of ``--val-photos`` (downscaled 2x).
Each synthetic raw goes through ``kpnt.denoise.denoise_raw`` with the true
profile, exactly as bench_quality's kpnt method, except that the raw
counts are normalised in memory instead of being written to a DNG and read
back with LibRaw (the same ``(counts - black) / (white - black)``; no rawpy
needed).  ``ms/step``: one training step (forward, SMAPE, backward, Adam;
eager, no CUDA graph) on a fixed batch of ``--batch`` x ``--tile`` tiles,
timed alone after training (median of 10 after 3 warm-up steps), so that
concurrent runs do not distort it.

Example (GPU machine)::

    python tools/ablate.py --sensors bayer xtrans --steps 3000 --parallel 4 \\
        --val-photos ../shared/data/bsds500/val --val-limit 20 --out runs/ablate --json runs/ablate/ablate.json \\
        --profiles ../shared/data/noiseprofiles.json \\
        --clean ../shared/data/bsds500/train --val ../shared/data/bsds500/val --camera all \\
        --isos 100-409600 --val-isos 800,3200,6400 --batch 16 --tile 144
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kpnt.mosaic import kinds  # noqa: E402
from kpnt.mosaic.cfa import reference_cfa  # noqa: E402
from kpnt.mosaic.kinds import MOSAIC_KINDS  # noqa: E402

#: Sensor kinds by the registry's names (kpnt.mosaic.kinds).
BAYER, XTRANS = kinds.BAYER.name, kinds.XTRANS.name

#: name -> (kpnt-train flags, what changed)
VARIANTS = {
    "default": ([], "defaults: softmax, noise input, 15-tap diamond, width 64, symmetry sharing"),
    "plain": (["--apply", "plain"], "plain kernel normalisation (k / sum k) instead of softmax"),
    "no-noise": (["--no-noise-input"], "no noise-level input to the MLPs"),
    "square25": (["--colour-taps", "square25"], "colour levels: full 5x5 kernel (25 taps) instead of the 15-tap diamond"),
    "width128": (["--width", "128"], "colour MLP width 128 instead of 64"),
    "no-sharing": (["--front-sharing", "none"], "front level: one weight set per site position, no symmetry sharing"),
    "per-channel": (["--front-kernels", "per_channel"], "front level: one kernel per output channel instead of one shared"),
    "front128": (["--front-width", "128"], "front MLP width 128 instead of 64"),
    "radius3": (["--front-radius", "3"], "front level: 7x7 taps instead of 5x5"),
    "pc-plain": (["--front-kernels", "per_channel", "--apply", "plain"], "per-channel front kernels and plain normalisation"),
    "big": (["--front-kernels", "per_channel", "--apply", "plain", "--width", "128", "--front-width", "128"],
            "per-channel front kernels, plain normalisation, both MLPs width 128"),
}
EVAL_CAMERAS = {BAYER: "Nikon D750", XTRANS: "Fujifilm X-T1"}
TRAIN_MAIN = "import sys; from kpnt.cli.train import main; sys.exit(main(sys.argv[1:]))"


def import_bench_quality():
    """The quality benchmark's case builders and scoring, from the library
    (:mod:`kpnt.bench`; tools/bench_quality.py is only its CLI)."""
    from kpnt.bench import cases, metrics

    return types.SimpleNamespace(BLACK=cases.BLACK, WHITE=cases.WHITE, case_seed=cases.case_seed, make_case=cases.make_case,
                                 profile_at_iso=cases.profile_at_iso, score=metrics.score)


# ----------------------------------------------------------------------
# training
# ----------------------------------------------------------------------
def _has_flag(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def train_argv(sensor: str, variant: str, run_dir: Path, args, common: list[str], backend: str) -> list[str]:
    argv = ["--sensor", sensor, "-o", str(run_dir), "--steps", str(args.steps), "--profiles", str(args.profiles),
            "--holdout", args.cameras[sensor], "--backend", backend, "--no-progress", *common, *VARIANTS[variant][0]]
    if not _has_flag(common, "--threads"):
        argv += ["--threads", str(max(1, (os.cpu_count() or 2) // max(1, args.parallel)))]
    if not _has_flag(common, "--ckpt-every"):
        argv += ["--ckpt-every", str(max(args.steps, 1))]
    return argv


def run_trainings(jobs: list[dict], parallel: int, logs: Path) -> None:
    """Run the jobs' kpnt-train commands, ``parallel`` at a time; fills in
    ``rc``, ``train_s`` and ``log`` of each job.  A job whose CUDA-graph
    capture fails under the 'auto' backend is retried with 'torch'."""
    queue = list(jobs)
    running = []
    while queue or running:
        while queue and len(running) < parallel:
            job = queue.pop(0)
            log = logs / f"{job['name']}.log"
            f = open(log, "w")
            cmd = [sys.executable, "-c", TRAIN_MAIN, *job["argv"]]
            print(f"start {job['name']}: kpnt-train {' '.join(job['argv'])}", flush=True)
            running.append((job, subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT), f, time.monotonic()))
        time.sleep(0.5)
        for item in list(running):
            job, p, f, t0 = item
            if p.poll() is None:
                continue
            running.remove(item)
            f.close()
            text = (logs / f"{job['name']}.log").read_text(errors="replace")
            job.update(rc=p.returncode, train_s=time.monotonic() - t0, log=str(logs / f"{job['name']}.log"))
            if p.returncode and "GraphedStep" in text and job["backend"] == "auto":
                print(f"{job['name']}: CUDA-graph capture failed under --backend auto; retrying with --backend torch",
                      flush=True)
                shutil.rmtree(job["run_dir"], ignore_errors=True)
                job["backend"] = "torch"
                job["note"] = "graph capture failed under auto: trained on the reference"
                job["argv"] = [("torch" if a == "auto" and i and job["argv"][i - 1] == "--backend" else a)
                               for i, a in enumerate(job["argv"])]
                queue.insert(0, job)
                continue
            tail = "\n".join(text.strip().splitlines()[-2:])
            print(f"done {job['name']}: rc {p.returncode} in {job['train_s']:.0f} s\n  {tail}", flush=True)


# ----------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------
def fused_parts(config) -> str:
    """Which parts the fused kernels train for ``config`` ('all' or what
    runs on the reference), from the capability table
    (kpnt.ops.capability: kernels/shapes.def)."""
    from kpnt.ops import capability

    ref = [name for name, problem in (("colour", capability.colour_problem(config.colour_spec, training=True)),
                                      ("front", capability.front_problem(config.front_spec, training=True)))
           if problem is not None]
    return "all" if not ref else "ref: " + "+".join(ref)


def step_ms(model, batch, device: str, warmup: int = 3, reps: int = 10) -> float:
    """Median ms of one eager training step (forward, SMAPE, backward, Adam)."""
    from kpnt.train.loss import smape

    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    x, t, n, v = (getattr(batch, k).to(device) for k in ("x", "target", "noise", "valid"))
    times = []
    for i in range(warmup + reps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        smape(model(x, batch.cfa, n), t, v, 4).backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


class Evaluator:
    """bench_quality's synthetic validation of one sensor, cases built once
    and shared by every variant."""

    def __init__(self, bq, sensor: str, camera: str, table, photos, isos: list[int]):
        from kpnt.color import find_camera

        self.bq, self.sensor = bq, sensor
        self.cam = find_camera(camera)
        self.cfa = reference_cfa(sensor)
        self.cases, self.noise_how = {}, {}
        for iso in isos:
            prof, how = bq.profile_at_iso(table, self.cam["make"], self.cam["model"], iso)
            self.noise_how[iso] = how
            self.cases[iso] = [bq.make_case(img, self.cfa, self.cam, prof, bq.case_seed(sensor, iso, k), iso)
                               for k, img in enumerate(photos.photos)]

    def raw(self, case: dict) -> types.SimpleNamespace:
        """What ``read_raw`` makes of the case's DNG: counts normalised by
        the one black and white level bench_quality writes."""
        bq = self.bq
        mosaic = ((case["counts"].astype(np.float32) - np.float32(bq.BLACK)) / np.float32(bq.WHITE - bq.BLACK))
        return types.SimpleNamespace(mosaic=mosaic, meta=case["meta"], cfa=case["cfa"], path=f"synthetic {self.sensor}")

    def evaluate(self, model, device: str) -> dict:
        from kpnt.denoise import NoiseChoice, denoise_raw

        out = {}
        with torch.no_grad():
            for iso, cases in self.cases.items():
                acc = {"lin": [], "srgb": [], "ssim": []}
                for case in cases:
                    rgb = denoise_raw(model, self.raw(case), NoiseChoice(case["noise"], "given"), tile=0, device=device)
                    sc = self.bq.score(rgb, case)
                    for k in acc:
                        acc[k].append(sc[k])
                out[iso] = {k: float(np.mean(v)) for k, v in acc.items()}
        return out


def fmt_cell(v: float, ref: float | None) -> str:
    if ref is None or v is None:
        return "-" if v is None else f"{v:.2f}"
    return f"{v:.2f} ({v - ref:+.2f})"


def table(rows: list[dict], isos: list[int]) -> str:
    head = ("| sensor | variant | what changed | params | fused | ms/step | train min | "
            + " | ".join(f"sRGB {i}" for i in isos) + " | " + " | ".join(f"lin {i}" for i in isos)
            + " | mean Δ sRGB | mean Δ lin |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        base = next((b for b in rows if b["sensor"] == r["sensor"] and b["variant"] == "default" and b.get("psnr")), None)
        if not r.get("psnr"):
            lines.append(f"| {r['sensor']} | {r['variant']} | {r['what']} | failed (rc {r.get('rc')}, see {r.get('log')}) |")
            continue
        cells, deltas = [], {"srgb": [], "lin": []}
        for space in ("srgb", "lin"):
            for i in isos:
                v = r["psnr"][str(i)][space]
                ref = base["psnr"][str(i)][space] if base and r is not base else None
                cells.append(fmt_cell(v, ref))
                if base:
                    deltas[space].append(v - base["psnr"][str(i)][space])
        d = [f"{statistics.mean(deltas[s]):+.2f}" if base and r is not base else "0" for s in ("srgb", "lin")]
        fused = r["fused"] + (f" ({r['backend']})" if r["backend"] != "auto" else "")
        lines.append(f"| {r['sensor']} | {r['variant']} | {r['what']} | {r['params']:,} | {fused} | {r['ms_step']:.1f} | "
                     f"{r['train_s'] / 60:.1f} | " + " | ".join(cells) + f" | {d[0]} | {d[1]} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Unknown arguments go to kpnt-train.", allow_abbrev=False,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sensors", nargs="+", default=list(MOSAIC_KINDS), choices=list(MOSAIC_KINDS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                   help="variants to train for every sensor (default all; 'default' is always added)")
    p.add_argument("--steps", type=int, default=2000, help="training steps of every run (default 2000)")
    p.add_argument("--parallel", type=int, default=1, help="training runs at once (default 1)")
    p.add_argument("--profiles", type=Path, default=ROOT.parent / "shared" / "data" / "noiseprofiles.json",
                   help="darktable noise profile table, for training and evaluation")
    p.add_argument("--val-photos", type=Path, default=ROOT.parent / "shared" / "data" / "bsds500" / "val",
                   help="clean photos of the evaluation (default BSDS500 val)")
    p.add_argument("--val-limit", type=int, default=20, help="evaluation photos (default 20)")
    p.add_argument("--isos", type=lambda s: [int(v) for v in s.split(",")], default=[800, 3200, 12800],
                   help="evaluation ISOs (default 800,3200,12800)")
    p.add_argument("--bayer-camera", default=EVAL_CAMERAS[BAYER], help="Bayer evaluation camera, held out of training")
    p.add_argument("--xtrans-camera", default=EVAL_CAMERAS[XTRANS], help="X-Trans evaluation camera, held out of training")
    p.add_argument("--backend", choices=["auto", "torch"], default="auto",
                   help="training backend (default auto: fused kernels where they apply)")
    p.add_argument("--device", help="evaluation/timing device (default cuda when available, else cpu)")
    p.add_argument("--batch", type=int, default=8, help="batch of the ms/step timing, and passed to kpnt-train (default 8)")
    p.add_argument("--tile", type=int, default=96, help="tile of the ms/step timing, and passed to kpnt-train (default 96)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "ablate", help="run folders and logs (default runs/ablate)")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    p.add_argument("--retrain", action="store_true", help="train again even where a run folder holds weights")
    p.add_argument("--eval-only", action="store_true", help="train nothing; evaluate the runs found in --out")
    p.add_argument("--train-isos", help="ISOs of the training noise, passed to kpnt-train as --isos (e.g. 100-409600; "
                   "default: kpnt-train's)")
    args, common = p.parse_known_args(argv)
    if args.train_isos:
        common += ["--isos", args.train_isos]
    for flag in ("--sensor", "-o", "--out", "--steps", "--backend"):
        if _has_flag(common, flag):
            p.error(f"{flag} is set by ablate.py per run; leave it out of the kpnt-train arguments")
    common = ["--batch", str(args.batch), "--tile", str(args.tile), *common]
    args.cameras = {BAYER: args.bayer_camera, XTRANS: args.xtrans_camera}
    variants = ["default"] + [v for v in args.variants if v != "default"]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)
    t_start = time.monotonic()

    jobs = []
    for sensor in args.sensors:
        for v in variants:
            run_dir = args.out / f"{sensor}-{v}"
            job = dict(name=f"{sensor}-{v}", sensor=sensor, variant=v, run_dir=run_dir, backend=args.backend,
                       rc=0, train_s=float("nan"), log=None)
            if (run_dir / "weights.safetensors").exists() and not args.retrain or args.eval_only:
                job["reused"] = True
            else:
                shutil.rmtree(run_dir, ignore_errors=True)
                job["argv"] = train_argv(sensor, v, run_dir, args, common, args.backend)
            jobs.append(job)
    todo = [j for j in jobs if "argv" in j]
    if todo:
        if args.backend != "torch" and torch.cuda.is_available():
            t0 = time.monotonic()   # build the fused kernels once, before the runs race to do it
            subprocess.run([sys.executable, "-c", "from kpnt.ops import _cuda; _cuda.ext()"], cwd=ROOT, check=True)
            print(f"fused kernels ready in {time.monotonic() - t0:.0f} s", flush=True)
        print(f"training {len(todo)} run(s) of {args.steps} steps, {args.parallel} at a time", flush=True)
        run_trainings(todo, args.parallel, logs)
    t_train = time.monotonic() - t_start

    # ---- evaluation, one variant after another on one device
    bq = import_bench_quality()
    from kpnt.noise import load_profile_table
    from kpnt.train.photos import PhotoSource
    from kpnt.train.synthesis import CameraModel, random_cfa, synthesize
    from kpnt.weights_io import load_weights

    table_ = load_profile_table(args.profiles)
    photos = PhotoSource.from_folder(args.val_photos, downscale=2, limit=args.val_limit)
    tile = args.tile
    rows = []
    for sensor in args.sensors:
        ev = Evaluator(bq, sensor, args.cameras[sensor], table_, photos, args.isos)
        for iso, how in ev.noise_how.items():
            if how != "profiled":
                print(f"note: {args.cameras[sensor]} ISO {iso}: noise {how}")
        gen = torch.Generator().manual_seed(0)
        period = kinds.kind(sensor).period
        timing_cam = CameraModel("timing", ev.cam["xyz_to_cam"], np.stack([c[0]["noise"] for c in ev.cases.values()]))
        timing = synthesize(photos.sample(args.batch, max(period * 4, tile // period * period), gen),
                            random_cfa(sensor, gen), [timing_cam], gen)
        for job in (j for j in jobs if j["sensor"] == sensor):
            v = job["variant"]
            row = dict(sensor=sensor, variant=v, what=VARIANTS[v][1], rc=job.get("rc"), log=job.get("log"),
                       backend=job["backend"], train_s=job.get("train_s", float("nan")), note=job.get("note"),
                       steps=args.steps, camera=args.cameras[sensor])
            wpath = job["run_dir"] / "weights.safetensors"
            if not wpath.exists():
                rows.append(row)
                continue
            model, meta = load_weights(wpath, sensor=sensor, device=device)
            model.backend = "auto"
            cfg = model.config
            hist_path = job["run_dir"] / "history.json"
            hist = json.loads(hist_path.read_text()) if hist_path.exists() else {}
            fused = fused_parts(cfg) if torch.device(device).type == "cuda" else "- (cpu)"
            row.update(config=cfg.to_json(), params=sum(p.numel() for p in model.parameters()), fused=fused,
                       trained_steps=meta.get("provenance", {}).get("steps"),
                       train_val_psnr=hist.get("val_psnr", [None])[-1] if hist.get("val_psnr") else None)
            row["ms_step"] = step_ms(model, timing, device)
            t0 = time.monotonic()
            row["psnr"] = {str(k): val for k, val in ev.evaluate(model.eval(), device).items()}
            row["eval_s"] = time.monotonic() - t0
            rows.append(row)
            print(f"{sensor} {v}: " + ", ".join(f"ISO {i} {row['psnr'][str(i)]['srgb']:.2f}/{row['psnr'][str(i)]['lin']:.2f}"
                                                 for i in args.isos) + f" dB sRGB/lin; {row['ms_step']:.1f} ms/step",
                  flush=True)
    md = table(rows, args.isos)
    print(f"\n## Ablation: {args.steps} steps per run, seed and data identical; evaluation on held-out "
          f"{' / '.join(args.cameras[s] for s in args.sensors)}, {len(photos.photos)} photos of {args.val_photos}, "
          f"device {device}\n")
    print(md)
    print("\nCells: PSNR in dB (difference to the default of the same sensor). fused: parts on the fused kernels "
          "under --backend auto ('ref: colour' = that level ran on the PyTorch reference). ms/step: one eager "
          f"training step of {args.batch}x{tile}^2 alone on {device}. train min: wall time of the run "
          f"(with start-up, validation and up to {args.parallel} runs sharing the machine).")
    for r in rows:
        if r.get("note"):
            print(f"note: {r['sensor']} {r['variant']}: {r['note']}")
    print(f"total {(time.monotonic() - t_start) / 60:.1f} min (training {t_train / 60:.1f})", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        clean = [{k: (str(v) if isinstance(v, Path) else v) for k, v in r.items()} for r in rows]
        args.json.write_text(json.dumps(dict(rows=clean, isos=args.isos, steps=args.steps, device=device,
                                             common_train_args=common, val_photos=str(args.val_photos),
                                             val_limit=len(photos.photos)), indent=1, default=str))
    return 0 if all(r.get("psnr") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
