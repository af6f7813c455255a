"""Time and size kpnt-denoise end to end on synthetic raws; print a table.

Scenarios (each in a fresh subprocess, so that its peak RSS is its own):

* ``e2e``: one raw file through the CLI's per-file path (decode with rawpy,
  noise profile, tiled denoise, LinearRaw DNG encode), seconds per stage
  and peak RSS.  Default: a 24-megapixel Bayer raw (6000 x 4000) and a
  100-megapixel one (12000 x 8400).
* ``tile``: the model alone on one tile of N x N photosites: seconds and the
  RSS growth over the tile's input, i.e. the working set per tile
  photosite (``kpnt.denoise.BYTES_PER_TILE_PIXEL``), from which the
  default tile sizes follow.
* ``folder`` (``--folder N``): a batch the way ``kpnt-denoise DIR -o OUT``
  runs it (the library's :func:`kpnt.batch.run_batch` in-process, so the
  same pipeline: decode threads feeding on supervised decoder processes,
  denoise in the main thread, write threads on a GPU; ``--decoder inline``
  decodes in this process's threads instead, ``--decoder both`` runs both
  and prints the ratio).  One
  synthetic raw of ``--folder-mp`` megapixels (default 24) is written and
  copied to N names (each is still decoded on its own); one warm-up file
  first (kernel build/load, model load; timed and reported apart), then the
  N files: files/s end to end, per-file seconds of each stage (stages
  overlap in the pipeline: their sums exceed the wall time; ``wait``: the
  main thread idle, waiting for a decode), GPU busy
  fraction, peak GPU memory (torch allocated and reserved, since the warm-up),
  peak host RSS.  GPU busy is reported two ways: ``events``: the device
  time of every tile (CUDA events around upload, model, conversion and
  download, summed over the files) over the wall time (an upper bound: it
  counts the device waiting for kernel launches inside a tile); ``smi``:
  the mean of ``nvidia-smi --query-gpu=utilization.gpu -lms 100`` samples
  over the timed run (percent of time a kernel was running), when
  nvidia-smi exists.  ``--stub-denoise`` replaces the model by a host-side
  stand-in (an output of the right size, no GPU): the CPU side's ceiling
  (decode, hand-over, encode) on this machine.  The folders are deleted at
  the end.

Synthetic raws: the sample photo (kpnt/data/sample_coffee.png) mirrored and
tiled up to the requested size, unprocessed to camera RGB (Nikon D750-like
matrix, as-shot WB), mosaicked, Poisson-Gaussian noise at ISO-3200-like raw
scale (a = 2e-3, b = 4e-6), written as a CFA DNG with a NoiseProfile tag
(as Adobe's converter writes it), so the e2e noise stage reads the tag;
``--blind`` drops the tag and times the blind estimate instead.

Weights: by default the shipped weights of ``--sensor`` (the model users
run; its architecture, not its values, sets speed and memory), or
``--weights FILE``, or ``--untrained``: an untrained ``KPNT(sensor)`` of the
default architecture.

Usage::

    python tools/bench_denoise.py                       # 24 MP + 100 MP Bayer e2e, tile sizes
    python tools/bench_denoise.py --e2e 24 --sensor xtrans --threads 2
    python tools/bench_denoise.py --tile-only 1024 2048 --json out.json
    python tools/bench_denoise.py --folder 50 --device cuda --backend cuda --tile-only --e2e 100
    python tools/bench_denoise.py --folder 8 --stub-denoise --tile-only --e2e   # CPU side alone
    python tools/bench_denoise.py --folder 50 --device cuda --decoder both --rounds 2 --tile-only --e2e  # supervised vs inline decoding

Run it on an otherwise idle machine: other processes on the same cores
inflate every number here.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from kpnt.mosaic.kinds import MOSAIC_KINDS  # noqa: E402

NOISE = (2e-3, 4e-6)
SIZES = {24: (4000, 6000), 100: (8400, 12000)}


def _peak_rss() -> int:
    """Peak resident set size of this process so far, bytes (Linux: KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_seconds() -> float:
    """CPU seconds (user + system, all threads) this process has used: with
    other processes on the machine, CPU time / threads is what the wall
    time would be on idle cores (if the threads are kept busy)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cfa(sensor):
    from kpnt.mosaic import CFA

    from kpnt.mosaic.cfa import reference_cfa

    return reference_cfa(sensor)


def _model(sensor, weights):
    from kpnt.model import KPNT

    if weights:
        from kpnt.weights_io import load_weights

        return load_weights(weights, sensor=sensor)[0].eval()
    return KPNT(sensor).eval()


def make_raw(path: Path, shape, sensor: str, with_profile: bool, seed: int = 0) -> None:
    """Write a synthetic CFA DNG of ``shape`` (built in bands of rows)."""
    import cv2

    from kpnt.io.dng import write_cfa_dng
    from kpnt.io.meta import RawMeta

    h, w = shape
    photo = cv2.imread(str(ROOT / "kpnt" / "data" / "sample_coffee.png"))[..., ::-1].astype(np.float32) / 255.0
    photo = photo ** 2.2                                          # roughly linear
    cell = np.concatenate([photo, photo[:, ::-1]], 1)
    cell = np.concatenate([cell, cell[::-1]], 0)                  # mirror-tiled: no seams
    xyz_to_cam = np.array([[0.7, -0.1, -0.05], [-0.4, 1.2, 0.2], [-0.05, 0.1, 0.6]])
    wb = np.array([2.1, 1.0, 1.6])
    black, white = 600.0, 15520.0
    cfa = _cfa(sensor)
    meta = RawMeta(black=np.full(3, black), white=white, wb=wb, xyz_to_cam=xyz_to_cam, make="Nikon", model="D750",
                   iso=3200, exposure_time=1 / 200, f_number=2.8, focal_length=35.0, datetime="2026:11:24 12:00:00",
                   noise_profile=np.array([NOISE] * 3) if with_profile else None)
    rng = np.random.default_rng(seed)
    counts = np.empty((h, w), np.uint16)
    band = 512                                                     # multiple of both CFA periods
    ch, cw = cell.shape[:2]
    for y0 in range(0, h, band):
        y1 = min(h, y0 + band)
        rows = cell[np.arange(y0, y1) % ch][:, np.arange(w) % cw]  # (band, w, 3) sRGB-ish linear
        cam = (rows / wb) * 0.8                                   # as-shot WB undone, headroom
        col = cfa.crop(y0, 0).colour_map(y1 - y0, w)
        x = np.take_along_axis(cam, col[..., None], 2)[..., 0]
        x = x + rng.standard_normal(x.shape).astype(np.float32) * np.sqrt(np.maximum(NOISE[0] * x + NOISE[1], 0))
        counts[y0:y1] = np.clip(np.rint(x * (white - black) + black), 0, white).astype(np.uint16)
    write_cfa_dng(path, counts, cfa, meta, overwrite=True)


def _gpu_peak(device) -> dict:
    import torch

    if torch.device(device).type != "cuda":
        return {}
    torch.cuda.synchronize(device)
    return dict(gpu_peak_alloc_gb=round(torch.cuda.max_memory_allocated(device) / 2**30, 3),
                gpu_peak_reserved_gb=round(torch.cuda.max_memory_reserved(device) / 2**30, 3))


def run_e2e(path: Path, sensor: str, weights, tile, threads: int, device: str = "cpu", backend: str = "torch",
            cpu_precision: str = "auto") -> dict:
    """One file through the CLI's FileProcessor; per-stage seconds, peak RSS
    (and peak GPU memory on a GPU, where the file is run twice: the first
    run loads the kernels; the second is timed, the peak covers both)."""
    if device == "cpu":
        from kpnt.cpu_memory import keep_freed_memory

        keep_freed_memory()             # as kpnt-denoise's main does, before any other thread
    import torch

    torch.set_num_threads(threads)
    from kpnt.batch import FileProcessor, Settings, Task
    from kpnt.denoise import configure_cuda_allocator

    configure_cuda_allocator()          # as kpnt-denoise's main does

    out = path.with_name(path.stem + "-out.dng")
    if out.exists():
        out.unlink()
    weights_path = weights
    if weights_path is None:
        from kpnt.weights_io import save_weights

        weights_path = path.with_name(f"untrained-{sensor}.safetensors")
        save_weights(weights_path, _model(sensor, None), _cfa(sensor), {"data": "untrained (benchmark)"})
    s = Settings("dng", True, tile, Path(weights_path), None, None, backend, False, decoder="inline", cpu_precision=cpu_precision)
    proc = FileProcessor(s, device)
    first = None
    for attempt in range(2 if device != "cpu" else 1):
        t0 = time.perf_counter()
        raw = proc.read(Task(0, path, out))
        t_dec = time.perf_counter() - t0
        shape = raw.mosaic.shape
        tiles = []
        cpu0 = _cpu_seconds()
        res = proc.process(Task(0, path, out), raw, None, t_dec, on_tiles=tiles.append)
        del raw
        proc.close()
        cpu = _cpu_seconds() - cpu0
        if res.status != "done":
            raise SystemExit(f"bench: {res.message}")
        out.unlink()
        if attempt == 0 and device != "cpu":
            first = round(sum(v for k, v in res.seconds.items() if k != "gpu"), 2)
    row = dict(scenario="e2e", sensor=sensor, cpu_precision=cpu_precision, load=round(os.getloadavg()[0], 2), mp=shape[0] * shape[1] / 1e6, tiles=tiles[0], tile=proc.tile_for(proc.models.get(sensor)),
               threads=threads, noise_source=res.noise.split(":")[0], peak_rss_gb=_peak_rss() / 2**30, device=device,
               backend=backend, first_run_s=first)
    row.update(_gpu_peak(device))
    row.update({k: round(v, 2) for k, v in res.seconds.items()})
    row["total"] = round(sum(v for k, v in res.seconds.items() if k != "gpu"), 2)     # gpu is part of denoise
    row["cpu_after_decode"] = round(cpu, 2)
    row["s_per_mp"] = round(row["total"] / row["mp"], 3)
    return row


class SmiSampler:
    """``nvidia-smi --query-gpu=utilization.gpu,memory.used -lms 100`` in a
    background process; samples are kept from :meth:`mark` on."""

    def __init__(self, index: int):
        self.samples, self._on = [], False
        exe = shutil.which("nvidia-smi")
        self.proc = None
        if exe is None:
            return
        self.proc = subprocess.Popen([exe, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                                      "-lms", "100", "-i", str(index)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                util, mem = (float(v) for v in line.split(","))
            except ValueError:
                continue
            if self._on:
                self.samples.append((util, mem))

    def mark(self, on: bool) -> None:
        self._on = on

    def stop(self) -> dict:
        if self.proc is None:
            return {}
        self.proc.terminate()
        self.proc.wait(timeout=10)
        if not self.samples:
            return {}
        util = [u for u, _ in self.samples]
        return dict(smi_util_mean=round(sum(util) / len(util), 1), smi_samples=len(util),
                    smi_mem_used_max_gb=round(max(m for _, m in self.samples) / 1024, 2))


def _stub_denoise():
    """Replace kpnt.denoise.denoise_raw by a host-side stand-in: an output
    of the right shape and dtype (one fill), no model, no device: what is
    left is the CPU side of the pipeline."""
    import kpnt.denoise as dn

    def stub(model, raw, noise, tile=0, device="cpu", progress=None, dtype=np.float32, reproducible=False, timing=None,
             staged=False, **options):                  # strength, hot_pixels, cpu_precision: no model, nothing to do
        h, w = raw.mosaic.shape
        return np.full((h, w, 3), 30000 if dtype == np.uint16 else 0.5, dtype=dtype)

    dn.denoise_raw = stub


def _run_folder_batch(folder: Path, out: Path, settings, device: str, io_workers, results: list, decoders) -> None:
    """``kpnt-denoise FOLDER -o OUT`` through the library (kpnt.batch), as
    the CLI runs it: same inputs, plan, runner and defaults."""
    from kpnt.batch import collect_inputs, plan_slots, plan_tasks, prepare_output_folder, run_batch

    prepare_output_folder(out)
    found, bad = collect_inputs([str(folder)], out=out)
    tasks, decided = plan_tasks(found, out, settings.fmt, settings.force)
    if bad or decided:
        raise SystemExit(f"bench: unexpected inputs: {bad or [r.message for r in decided]}")
    run_batch(tasks, settings, plan_slots(device), results.append, io_workers=io_workers, decoders=decoders)


def run_folder(n: int, mp: int, sensor: str, weights, device: str, backend: str, io_workers, work: Path,
               stub: bool = False, tile=None, decoder: str = "child") -> dict:
    """N copies of one synthetic raw through the batch engine, as
    ``kpnt-denoise DIR -o OUT`` runs them (in this process), after one
    warm-up file.  ``decoder``: 'child' (supervised decoder processes, the
    default) or 'inline' (decoded in this process's threads).  As in
    ``kpnt-denoise``, the decoders start once, before the model is loaded,
    and serve the warm-up file and the timed batch: the timed batch sees a
    warm process in both modes (imports done, children started)."""
    import torch

    from kpnt.batch import Settings, cores, default_io_workers, plan_slots, start_decoders
    from kpnt.denoise import configure_cuda_allocator

    if stub:
        _stub_denoise()
    if torch.device(device).type == "cuda":
        configure_cuda_allocator()          # as kpnt-denoise does
    shape = SIZES.get(mp) or _shape(mp)
    src = work / f"synthetic-{sensor}-{mp}mp.dng"
    if not src.exists():
        make_raw(src, shape, sensor, True)
    folder, out, warm_in, warm_out = (work / f"folder-{k}" for k in ("in", "out", "warm-in", "warm-out"))
    for d in (folder, out, warm_in, warm_out):
        shutil.rmtree(d, ignore_errors=True)
    folder.mkdir()
    warm_in.mkdir()
    t0 = time.perf_counter()
    for i in range(n):
        shutil.copyfile(src, folder / f"IMG_{i:04d}.dng")
    shutil.copyfile(src, warm_in / "warm.dng")
    copy_s = time.perf_counter() - t0
    settings = Settings("dng", True, tile, Path(weights) if weights else None, None, None, backend, False, decoder=decoder)
    cuda = torch.device(device).type == "cuda"
    sampler = SmiSampler(torch.device(device).index or 0) if cuda else None
    decoders = None
    try:
        warm = []
        t0 = time.perf_counter()
        decoders = start_decoders(settings, plan_slots(device), io_workers)
        _run_folder_batch(warm_in, warm_out, settings, device, io_workers, warm, decoders)
        warm_s = time.perf_counter() - t0
        if [r.status for r in warm] != ["done"]:
            raise SystemExit(f"bench: warm-up failed: {[r.message for r in warm]}")
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        results = []
        if sampler:
            sampler.mark(True)
        t0, c0 = time.perf_counter(), _cpu_seconds()
        _run_folder_batch(folder, out, settings, device, io_workers, results, decoders)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
        if sampler:
            sampler.mark(False)
    finally:
        if decoders is not None:
            decoders.close()
        smi = sampler.stop() if sampler else {}
        for d in (folder, out, warm_in, warm_out):
            shutil.rmtree(d, ignore_errors=True)
    done = [r for r in results if r.status == "done"]
    if len(done) != n:
        raise SystemExit(f"bench: {len(done)} of {n} done: {[r.message for r in results if r.status != 'done'][:3]}")
    stages = {}
    for k in ("decode", "noise", "wait", "denoise", "gpu", "encode"):
        vals = [r.seconds[k] for r in done if k in r.seconds]
        if vals:
            stages[k] = dict(mean=round(sum(vals) / len(vals), 4), max=round(max(vals), 4), sum=round(sum(vals), 3))
    row = dict(scenario="folder", sensor=sensor, files=n, mp=shape[0] * shape[1] / 1e6, device=device, backend=backend,
               stub=stub, decoder=decoder, io_workers=io_workers if io_workers is not None else default_io_workers(device),
               cores=cores(), tile=tile if tile is not None else "default",
               wall_s=round(wall, 3), files_per_s=round(n / wall, 3), cpu_s=round(cpu, 1), copy_s=round(copy_s, 2),
               warmup_s=round(warm_s, 2), warmup_stages={k: round(v, 3) for k, v in warm[0].seconds.items()},
               stages=stages, peak_rss_gb=round(_peak_rss() / 2**30, 2))
    if "gpu" in stages:
        row["gpu_busy_events"] = round(stages["gpu"]["sum"] / wall, 3)
    row.update(smi)
    row.update(_gpu_peak(device))
    return row


def _shape(mp) -> tuple[int, int]:
    return (int((mp * 1e6 / 1.5) ** 0.5) // 6 * 6, int((mp * 1e6 * 1.5) ** 0.5) // 6 * 6)


def run_tile(n: int, sensor: str, weights, threads: int, device: str = "cpu") -> dict:
    """The model on one n x n tile: seconds and working set per photosite
    (on a GPU: peak GPU memory per photosite)."""
    import torch

    torch.set_num_threads(threads)
    from kpnt.denoise import denoise_array

    model = _model(sensor, weights).to(device)
    cfa = _cfa(sensor)
    x = np.random.default_rng(0).random((n, n), dtype=np.float32) * 0.5
    noise = np.array([[NOISE[0]] * 3, [NOISE[1]] * 3], np.float32)
    small = np.ascontiguousarray(x[:96, :96])
    denoise_array(model, small, cfa, noise, tile=0, device=device)   # warm-up: imports, caches
    out = np.empty((n, n, 3), np.float32)
    out[:] = 0                                                     # touch the result pages first
    base = _rss()
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats(device)
        base_gpu = torch.cuda.memory_allocated(device)
    t0, c0 = time.perf_counter(), _cpu_seconds()
    res = denoise_array(model, x, cfa, noise, tile=0, device=device)
    dt, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    peak = _peak_rss()
    del res
    row = dict(scenario="tile", sensor=sensor, n=n, mp=n * n / 1e6, threads=threads, seconds=round(dt, 2),
               s_per_mp=round(dt / (n * n / 1e6), 3), cpu_s=round(cpu, 2), peak_rss_gb=peak / 2**30,
               bytes_per_px=round(max(0, peak - base - 12 * n * n) / (n * n)), device=device)
    if device != "cpu":
        row.update(_gpu_peak(device))
        row["gpu_bytes_per_px"] = round((torch.cuda.max_memory_allocated(device) - base_gpu) / (n * n))
    return row


def _child(argv) -> dict:
    """Run one scenario in a fresh interpreter; parse its JSON line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(argv)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"bench child {argv} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--e2e", type=int, nargs="*", default=None, help="megapixels of e2e raws (24 and/or 100; default both)")
    p.add_argument("--tile-only", type=int, nargs="*", default=None, help="tile sides for the tile scenario (default 1024 2048)")
    p.add_argument("--sensor", choices=list(MOSAIC_KINDS), default=MOSAIC_KINDS[0])
    p.add_argument("--weights", type=Path, help="weights file (default: the shipped weights of --sensor)")
    p.add_argument("--cpu-precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="the e2e run's --cpu-precision (default auto, as kpnt-denoise)")
    p.add_argument("--untrained", action="store_true", help="time an untrained default-architecture KPNT instead of the shipped weights")
    p.add_argument("--tile", type=int, default=None,
                   help="--tile of the e2e and folder runs (default: kpnt's default for the device)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cpu", help="torch device of the runs (cuda: peak GPU memory is reported)")
    p.add_argument("--blind", action="store_true", help="no NoiseProfile tag: time the blind noise estimate")
    p.add_argument("--backend", choices=["auto", "torch", "cuda"], default=None,
                   help="model backend (default: torch for e2e, the CLI's auto for --folder)")
    p.add_argument("--folder", type=int, default=0, metavar="N", help="folder scenario: N copies of one raw through kpnt-denoise DIR -o OUT")
    p.add_argument("--folder-mp", type=int, default=24, help="megapixels of the folder scenario's raw (default 24)")
    p.add_argument("--io-workers", type=int, default=None, help="--io-workers of the folder run (default: the CLI's)")
    p.add_argument("--stub-denoise", action="store_true", help="folder scenario without the model (the CPU side's ceiling)")
    p.add_argument("--decoder", choices=["child", "inline", "both"], default="child",
                   help="folder scenario: raws decoded in supervised child processes (kpnt-denoise's default), inline "
                   "(in this process's threads), or both, alternating, with the throughput ratio")
    p.add_argument("--rounds", type=int, default=1, help="folder runs per decoder (default 1)")
    p.add_argument("--workdir", type=Path, default=None, help="where the synthetic raws go (default: a temp folder)")
    p.add_argument("--json", type=Path, help="also write all rows as JSON")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        kind, *rest = json.loads(args.child)
        if kind == "make":
            make_raw(Path(rest[0]), tuple(rest[1]), rest[2], rest[3])
            print(json.dumps({}))
        elif kind == "e2e":
            print(json.dumps(run_e2e(Path(rest[0]), rest[1], rest[2], rest[3], rest[4], rest[5], rest[6], rest[7])))
        elif kind == "folder":
            import torch

            torch.set_num_threads(rest[7])
            print(json.dumps(run_folder(rest[0], rest[1], rest[2], rest[3], rest[4], rest[5], rest[6], Path(rest[8]), rest[9],
                                        rest[10], rest[11])))
        else:
            print(json.dumps(run_tile(rest[0], rest[1], rest[2], rest[3], rest[4])))
        return 0

    e2e = [24, 100] if args.e2e is None else args.e2e
    tiles = [1024, 2048] if args.tile_only is None else args.tile_only
    rows = []
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kpnt-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.weights and args.untrained:
        p.error("--weights and --untrained exclude each other")
    if args.weights:
        weights = str(args.weights)
    elif args.untrained:
        weights = None
    else:
        from kpnt.weights_io import shipped_weights

        weights = str(shipped_weights(args.sensor))
    created = args.workdir is None
    try:
        if args.folder:
            # 'both': the two decoders alternate, each run in a fresh process, so drift hits both alike
            decoders = ["child", "inline"] * args.rounds if args.decoder == "both" else [args.decoder] * args.rounds
            folder_rows = []
            for dec in decoders:
                folder_rows.append(_child(["folder", args.folder, args.folder_mp, args.sensor, weights, args.device,
                                           args.backend or "auto", args.io_workers, args.threads, str(work), args.stub_denoise,
                                           args.tile, dec]))
                print(_fmt_folder(folder_rows[-1]), flush=True)
            rows += folder_rows
            if args.decoder == "both":
                print(_fmt_decoders(folder_rows), flush=True)
        for n in tiles:
            rows.append(_child(["tile", n, args.sensor, weights, args.threads, args.device]))
            print(_fmt_tile(rows[-1]), flush=True)
        for mp in e2e:
            shape = SIZES.get(mp) or _shape(mp)
            path = work / f"synthetic-{args.sensor}-{mp}mp{'-blind' if args.blind else ''}.dng"
            if not path.exists():
                _child(["make", str(path), list(shape), args.sensor, not args.blind])
            rows.append(_child(["e2e", str(path), args.sensor, weights, args.tile, args.threads, args.device, args.backend or "torch",
                                args.cpu_precision]))
            print(_fmt_e2e(rows[-1]), flush=True)
    finally:
        if created:
            shutil.rmtree(work, ignore_errors=True)
    import torch

    info = dict(machine=platform.processor() or platform.machine(), cores=os.cpu_count(), torch=torch.__version__,
                commit=subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip())
    print(f"# {info}")
    if args.json:
        args.json.write_text(json.dumps(dict(info=info, rows=rows), indent=1))
    return 0


def _gpu(r) -> str:
    if "gpu_peak_alloc_gb" not in r:
        return ""
    per = f", {r['gpu_bytes_per_px']} B/photosite" if "gpu_bytes_per_px" in r else ""
    return f" | GPU peak {r['gpu_peak_alloc_gb']:.2f} GB allocated, {r['gpu_peak_reserved_gb']:.2f} GB reserved{per}"


def _fmt_folder(r) -> str:
    """The folder scenario as a table."""
    lines = [f"folder: {r['files']} x {r['mp']:.1f} MP {r['sensor']} DNG, device {r['device']}, backend {r['backend']}"
             f"{' (STUB: no model)' if r['stub'] else ''}, --io-workers {r['io_workers']}, decoder {r['decoder']}, {r['cores']} cores",
             f"  warm-up file (kernel build/load, model load): {r['warmup_s']:.2f} s  stages {r['warmup_stages']}",
             "| metric | value |", "| --- | ---: |",
             f"| files/s end to end | **{r['files_per_s']:.2f}** ({r['files']} files in {r['wall_s']:.2f} s) |"]
    for k, v in r["stages"].items():
        lines.append(f"| {k} s/file (mean / max; sum) | {v['mean']:.3f} / {v['max']:.3f}; {v['sum']:.2f} |")
    if "gpu_busy_events" in r:
        lines.append(f"| GPU busy, CUDA events (device time of the tiles / wall) | {100 * r['gpu_busy_events']:.1f}% |")
    if "smi_util_mean" in r:
        lines.append(f"| GPU busy, nvidia-smi utilization.gpu mean ({r['smi_samples']} samples @100 ms) | {r['smi_util_mean']:.1f}% |")
        lines.append(f"| GPU memory used, nvidia-smi max (whole device) | {r['smi_mem_used_max_gb']:.2f} GB |")
    if "gpu_peak_alloc_gb" in r:
        lines.append(f"| GPU peak torch allocated / reserved | {r['gpu_peak_alloc_gb']:.2f} / {r['gpu_peak_reserved_gb']:.2f} GB |")
    lines.append(f"| peak host RSS (whole process) | {r['peak_rss_gb']:.2f} GB |")
    lines.append(f"| process CPU seconds during the run | {r['cpu_s']:.1f} ({r['cpu_s'] / r['wall_s']:.1f} cores busy) |")
    return "\n".join(lines)


def _fmt_decoders(rows) -> str:
    """Folder throughput with the supervised decoder against inline decoding."""
    mean = {}
    for dec in ("child", "inline"):
        vals = [r["files_per_s"] for r in rows if r["decoder"] == dec]
        mean[dec] = sum(vals) / len(vals)
    ratio = mean["child"] / mean["inline"]
    return (f"decoders: child {mean['child']:.3f} files/s, inline {mean['inline']:.3f} files/s (means of "
            f"{len(rows) // 2} run(s) each): child / inline = {ratio:.3f} ({100 * (ratio - 1):+.1f}%; "
            f"issue 17 acceptance 5: within 5%: {'yes' if ratio >= 0.95 else 'NO'})")


def _fmt_tile(r) -> str:
    return (f"tile {r['device']} {r['sensor']:6s} {r['n']}^2 ({r['mp']:.1f} MP, {r['threads']} thr): {r['seconds']:7.2f} s = "
            f"{r['s_per_mp']:.3f} s/MP (CPU {r['cpu_s']:.2f} s), working set {r['bytes_per_px']} B/photosite, peak RSS {r['peak_rss_gb']:.2f} GB" + _gpu(r))


def _fmt_e2e(r) -> str:
    first = f" | first run (kernel load) {r['first_run_s']:.2f} s" if r.get("first_run_s") else ""
    gpu = f" | GPU work {r['gpu']:.3f} s" if "gpu" in r else ""
    budget = ""
    if "gpu_peak_reserved_gb" in r:
        budget = f" | within 2 GB: {'yes' if r['gpu_peak_reserved_gb'] < 2 else 'NO'}"
    return (f"e2e  {r['device']} {r.get('backend', 'torch')} {r.get('cpu_precision', '')} (load {r.get('load', 0):.1f}) {r['sensor']:6s} {r['mp']:5.1f} MP tile {r['tile']} ({r['tiles']} tiles, {r['threads']} thr): "
            f"decode {r.get('decode', 0):6.2f} | noise ({r['noise_source']}) {r.get('noise', 0):6.2f} | "
            f"denoise {r.get('denoise', 0):7.2f} | encode {r.get('encode', 0):5.2f} | total {r['total']:7.2f} s "
            f"({r['s_per_mp']:.2f} s/MP; CPU after decode {r['cpu_after_decode']:.1f} s) | peak RSS {r['peak_rss_gb']:.2f} GB" + _gpu(r)
            + gpu + first + budget)


if __name__ == "__main__":
    sys.exit(main())
