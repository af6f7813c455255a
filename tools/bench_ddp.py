"""Time data-parallel training steps with 1 and N processes; print the
scaling efficiency (issue 8: >= 85% from 1 to 2 GPUs is the target).

Weak scaling, as kpnt-train does it: every process trains one shard of
``--batch`` tiles per step, so N processes train N times the tiles; the
efficiency is ``t(1) / t(N)`` (step time of one process over step time of
N), i.e. the throughput of N processes over N times that of one.  Each
configuration starts fresh processes (``torch.multiprocessing.spawn``), so
1 and N processes run the same code path: ``Trainer.train_step`` with its
CPU synthesis of the batch, forward, backward, gradient averaging (DDP or
one all-reduce), the all-reduced finite check and the Adam step.  "data ms"
is the part of the step spent synthesising the batch on the CPU.  Step times
are medians over ``--steps``; each configuration runs ``--repeats`` times,
interleaved with the others, and its fastest round counts (the rounds are
printed too).

Usage::

    python tools/bench_ddp.py --nproc 2 --device cuda --json $OUT/ddp.json   # 2 GPUs, NCCL
    python tools/bench_ddp.py --nproc 2 --device cpu --tile 48 --batch 2     # gloo, CPU

On the CPU each process gets ``cores // nproc`` threads in both runs (so a
process has the same resources alone as beside the others); numbers from a
shared machine include whatever else runs on its cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kpnt.model import KPNT  # noqa: E402
from kpnt.mosaic.kinds import SENSORS  # noqa: E402
from kpnt.train.distributed import DistContext, shutdown  # noqa: E402
from kpnt.train.loop import Trainer, TrainConfig  # noqa: E402
from kpnt.train.photos import PhotoSource  # noqa: E402
from kpnt.train.synthesis import CameraModel, random_cfa, synthesize  # noqa: E402

XYZ_TO_CAM = np.array([[0.7, -0.1, -0.05], [-0.4, 1.2, 0.2], [-0.05, 0.1, 0.6]])
NOISE = np.array([[[2e-3, 1e-3, 1.5e-3], [4e-6, 2e-6, 3e-6]]])


def _photos(n: int, size: int) -> PhotoSource:
    """Smooth random scenes with some texture (fixed seed)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        img = np.stack([0.5 + 0.3 * np.sin(2 * np.pi * (rng.uniform(1, 8) * xx + rng.uniform(0, 8) * yy + rng.uniform())) for _ in range(3)])
        img = img + 0.1 * rng.standard_normal((3, size, size))
        out.append(torch.from_numpy(img.astype(np.float32).clip(0, 1)))
    return PhotoSource(out)


def _worker(rank: int, world: int, port: int, args, result_path: str) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device("cuda", rank) if args.device == "cuda" else torch.device("cpu")
    if world > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=timedelta(minutes=5), device_id=device if device.type == "cuda" else None)
    ok = False
    ctx = DistContext(rank=rank, world_size=world, local_rank=rank, local_world_size=world, device=device)
    try:
        photos = _photos(8, max(2 * args.tile, 128))
        cams = [CameraModel("bench cam", XYZ_TO_CAM, NOISE)]
        data_s = []

        def source(gen):
            t = time.perf_counter()
            b = synthesize(photos.sample(args.batch, args.tile, gen), random_cfa(args.sensor, gen), cams, gen)
            data_s.append(time.perf_counter() - t)
            return b

        model = KPNT(args.sensor, backend=args.backend)
        cfg = TrainConfig(steps=10**6, grad_sync=args.grad_sync, val_every=10**9, ckpt_every=10**9)
        tr = Trainer(model, cfg, source, [], tempfile.gettempdir(), {}, ctx)
        for _ in range(args.warmup):
            tr.train_step()
        data_s.clear()
        times = []
        for _ in range(args.steps):
            if ctx.distributed:
                dist.barrier()  # start together: measure the step, not the stragglers of the last one
            t = time.perf_counter()
            tr.train_step()  # ends in .tolist() of the all-reduced stats: a device sync
            times.append(time.perf_counter() - t)
        if ctx.is_main:
            Path(result_path).write_text(json.dumps({"step_s": times, "data_s": data_s}))
        ok = True
    finally:
        shutdown(ctx, wait=ok)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(world: int, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "result.json")
        mp.spawn(_worker, args=(world, _free_port(), args, path), nprocs=world, join=True, start_method="spawn")
        r = json.loads(Path(path).read_text())
    return {"procs": world, "step_ms": 1e3 * statistics.median(r["step_s"]), "data_ms": 1e3 * statistics.median(r["data_s"]),
            "step_ms_all": [1e3 * t for t in r["step_s"]]}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, default=2, help="processes of the parallel run (default 2)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backend", choices=["auto", "torch", "cuda"], default="auto", help="op backend of the model (default auto)")
    p.add_argument("--sensor", choices=list(SENSORS), default=SENSORS[0])
    p.add_argument("--tile", type=int, default=96, help="tile side (default 96, kpnt-train's)")
    p.add_argument("--batch", type=int, default=8, help="tiles per process and step (default 8, kpnt-train's)")
    p.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (default 3)")
    p.add_argument("--repeats", type=int, default=3, help="rounds over all configurations; each reports its fastest (default 3)")
    p.add_argument("--grad-sync", default="ddp,allreduce", help="comma list of gradient syncs to time (default both)")
    p.add_argument("--threads", type=int, help="torch threads per process (default: cores // nproc)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.nproc < 2:
        p.error("--nproc must be >= 2 (the 1-process run is always made)")
    if args.device == "cuda" and torch.cuda.device_count() < args.nproc:
        p.error(f"--nproc {args.nproc} needs {args.nproc} GPUs, {torch.cuda.device_count()} visible")
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.nproc)
    syncs = [s.strip() for s in args.grad_sync.split(",") if s.strip()]

    dev_name = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or platform.machine()
    print(f"kpnt DDP scaling: {args.sensor}, {args.batch} tiles of {args.tile} px per process and step, {args.device} ({dev_name}), "
          f"{args.threads} thread(s) per process, {os.cpu_count()} cores, torch {torch.__version__}, commit {_commit()}")
    # Rounds interleave the configurations, and each reports its fastest
    # round: load from elsewhere on the machine only ever adds time.
    rounds = {}
    for _ in range(args.repeats):
        for sync in syncs:
            args.grad_sync = sync
            for world in (1, args.nproc):
                rounds.setdefault((sync, world), []).append(measure(world, args))
    rows = []
    for (sync, world), rs in rounds.items():
        best = min(rs, key=lambda r: r["step_ms"])
        r = {"grad_sync": sync, "procs": world, "step_ms": best["step_ms"], "data_ms": best["data_ms"],
             "step_ms_rounds": [x["step_ms"] for x in rs], "step_ms_all": [x["step_ms_all"] for x in rs]}
        base = min(x["step_ms"] for x in rounds[(sync, 1)])
        r["tiles_per_s"] = 1e3 * world * args.batch / r["step_ms"]
        r["efficiency"] = base / r["step_ms"]
        rows.append(r)
    print(f"{'sync':<10} {'procs':>5} {'step ms':>9} {'data ms':>8} {'tiles/s':>8} {'efficiency':>10}  step ms of each round")
    for r in rows:
        each = " ".join(f"{t:.1f}" for t in r["step_ms_rounds"])
        print(f"{r['grad_sync']:<10} {r['procs']:>5} {r['step_ms']:>9.1f} {r['data_ms']:>8.1f} {r['tiles_per_s']:>8.1f} {100 * r['efficiency']:>9.0f}%  {each}")
    if args.json:
        meta = {"device": args.device, "device_name": dev_name, "torch": torch.__version__, "commit": _commit(), "cores": os.cpu_count(),
                "args": {**{k: v for k, v in vars(args).items() if k != "json"}, "grad_sync": syncs}}
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
