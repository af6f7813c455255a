#!/usr/bin/env python3
"""Benchmark kpnt-build-dataset on 24-megapixel raws.

Synthesises ``--pairs`` pairs of 24 MP CFA DNGs on the fly (one scene per
two pairs: a base-ISO reference and two high-ISO frames, shifted, exposed
differently, with a moving object), from BSDS500 photos (``--photos``)
tiled 2x2 with mirror images and upscaled to the frame size, then runs
``kpnt-build-dataset`` on them in a child process and prints:

- wall time of the build and the extrapolation to 20 pairs;
- peak resident memory (RSS) of the build, its worker processes included
  (``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a small wrapper process: the
  largest single process of the build);
- where the time goes, per stage (from the ``timing_s`` the builder writes
  into each pair's manifest record);
- a second, incremental run (must build nothing).

Synthesis is not timed.  The CPU is shared: run it once, with a small
``--pairs``, e.g.::

    .venv/bin/python tools/bench_dataset.py --pairs 2 --jobs 2
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kpnt.mosaic.cfa import CFA  # noqa: E402
from kpnt.mosaic.kinds import BAYER, XTRANS  # noqa: E402
from kpnt.noise import load_profile_table  # noqa: E402
from kpnt.synth import make_ladder  # noqa: E402

FRAME = (4000, 6000)          # 24 MP
CAMERAS = {BAYER.name: ("Nikon", "D750", CFA.bayer("RGGB")), XTRANS.name: ("Fujifilm", "X-T1", CFA.xtrans())}


def big_photo(path: Path, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8: the photo tiled 2x2 with its mirror images (so that
    the upscale keeps some structure per pixel), then resized."""
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    top = np.concatenate([img, img[:, ::-1]], axis=1)
    tiled = np.concatenate([top, top[::-1]], axis=0)
    return cv2.resize(tiled, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def write_table(path: Path) -> Path:
    def prof(iso):
        return {"name": f"iso {iso}", "iso": iso, "a": [1.6e-6 * iso / 100, 1.2e-6 * iso / 100, 2e-6 * iso / 100],
                "b": [1e-7 * iso / 100, 0.8e-7 * iso / 100, 1.2e-7 * iso / 100]}
    doc = {"version": 0, "noiseprofiles": [
        {"maker": mk, "models": [{"model": md, "profiles": [prof(i) for i in (100, 1600, 6400)]}]}
        for mk, md, _ in CAMERAS.values()]}
    path.write_text(json.dumps(doc))
    return path


def synthesise(work: Path, n_pairs: int, sensor: str, photos: list[Path]) -> tuple[Path, Path]:
    raws = work / "raws"
    table_path = write_table(work / "profiles.json")
    table = load_profile_table(table_path)
    make, model, cfa = CAMERAS[sensor]
    margin = 8
    n_scenes = -(-n_pairs // 2)
    left = n_pairs
    for k in range(n_scenes):
        isos = [100, 1600, 6400][: 1 + min(2, left)]
        left -= len(isos) - 1
        photo = big_photo(photos[k % len(photos)], (FRAME[0] + 2 * margin, FRAME[1] + 2 * margin))
        shifts = [(0, 0), (3, -5), (-8, 6)][: len(isos)]
        evs = [0.0, 0.4, -0.7][: len(isos)]
        t0 = time.perf_counter()
        make_ladder(photo, cfa, make, model, table, isos, raws / f"scene{k}", f"s{k}", shifts=shifts,
                    exposure_ev=evs, moving_object=True, seed=k,
                    start_time=dt.datetime(2024, 1, 1, 10) + dt.timedelta(hours=k))
        print(f"synthesised scene {k}: {len(isos)} frames of {FRAME[0]}x{FRAME[1]} in {time.perf_counter() - t0:.0f} s",
              flush=True)
    return raws, table_path


#: Runs a command and reports the peak RSS of its process tree.  A small
#: process of its own: a child forked from this (big, after synthesis)
#: process would count the parent's pages in its RSS until it execs.
_WRAPPER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
            "sys.exit(r.returncode)")


def build(raws: Path, out: Path, table: Path, jobs: int) -> tuple[float, int, str]:
    cmd = [sys.executable, "-m", "kpnt.cli.build_dataset", str(raws), "-o", str(out), "--profiles", str(table),
           "--jobs", str(jobs), "--no-progress"]
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", _WRAPPER, *cmd], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"kpnt-build-dataset failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    peak_kb = int(res.stderr.strip().splitlines()[-1].split()[1])
    return wall, peak_kb, res.stdout


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=2, help="pairs to build (default 2; the target is 20 in 5 min)")
    p.add_argument("--jobs", type=int, default=2, help="kpnt-build-dataset --jobs (default 2)")
    p.add_argument("--sensor", choices=sorted(CAMERAS), default=BAYER.name)
    p.add_argument("--photos", type=Path, default=ROOT.parent / "shared" / "data" / "bsds500" / "train",
                   help="folder of JPEG photos to upscale (default ../shared/data/bsds500/train)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/kpnt-bench-dataset"))
    p.add_argument("--keep", action="store_true", help="keep the raws and the dataset")
    args = p.parse_args(argv)
    photos = sorted(args.photos.glob("*.jpg"))
    if not photos:
        sys.exit(f"no JPEG photos in {args.photos}: pass --photos DIR")
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True)
    raws, table = synthesise(args.workdir, args.pairs, args.sensor, photos)
    out = args.workdir / "dataset"

    wall, peak_kb, stdout = build(raws, out, table, args.jobs)
    m = json.loads((out / "manifest.json").read_text())
    pairs = list(m["pairs"].values())
    if not pairs:
        sys.exit(f"built no pairs:\n{stdout}")
    if len(pairs) != args.pairs:
        # Still time what was built (the rejections are part of the work),
        # and show why: the mirrored 2x2 tiling of a photo can make its
        # alignment ambiguous.
        print(f"warning: built {len(pairs)} pairs, expected {args.pairs}:\n{stdout}")
    stages: dict[str, float] = {}
    for p_ in pairs:
        for k, v in p_["timing_s"].items():
            stages[k] = stages.get(k, 0.0) + v
    for scene_ref in {p_["reference"]["sha256"]: p_["reference_timing_s"] for p_ in pairs}.values():
        for k, v in scene_ref.items():
            stages[f"reference {k}"] = stages.get(f"reference {k}", 0.0) + v
    cpu_total = sum(stages.values())
    mp = FRAME[0] * FRAME[1] / 1e6
    print(f"\nkpnt-build-dataset: {len(pairs)} pairs of {mp:.0f} MP {args.sensor} raws, --jobs {args.jobs}")
    n_scenes = len({p_["reference"]["sha256"] for p_ in pairs})
    # A scene is one job (its reference is read and demosaiced once); jobs
    # run in parallel across scenes.  20 pairs = 10 scenes of 2 pairs.
    waves = -(-10 // args.jobs)
    per_wave = wall / -(-n_scenes // args.jobs)
    print(f"  wall time        {wall:7.1f} s   ({n_scenes} scene(s), {wall / len(pairs):.1f} s per pair)")
    print(f"  20 pairs         ~{waves * per_wave / 60:5.1f} min  (10 scenes of 2 pairs in {waves} waves of "
          f"{args.jobs} parallel jobs at {per_wave:.0f} s per wave; if the {args.jobs} jobs of a wave do not slow "
          f"each other down on this CPU)")
    print(f"  peak RSS         {peak_kb / 1024:7.0f} MiB (largest process; with --jobs N about N workers of this)")
    print(f"  stage seconds (summed over workers, {cpu_total:.1f} s in all):")
    for k, v in sorted(stages.items(), key=lambda kv: -kv[1]):
        print(f"    {k:26s} {v:7.1f}  {100 * v / cpu_total:4.0f}%")
    busy = min(args.jobs, n_scenes)
    print(f"  outside the stages: {max(wall - cpu_total / busy, 0):.1f} s of the wall time (process start-up, "
          f"hashing and reading every file once for grouping, manifest)")
    wall2, _, stdout2 = build(raws, out, table, args.jobs)
    print(f"  re-run           {wall2:7.1f} s   ({stdout2.strip().splitlines()[0]})")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"  dataset size     {size / 2**20:7.0f} MiB ({size / 2**20 / len(pairs):.0f} MiB per pair)")
    if not args.keep:
        shutil.rmtree(args.workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
