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

Synthetic raws: the sample photo (kpnt/data/sample_coffee.png) mirrored and
tiled up to the requested size, unprocessed to camera RGB (Nikon D750-like
matrix, as-shot WB), mosaicked, Poisson-Gaussian noise at ISO-3200-like raw
scale (a = 2e-3, b = 4e-6), written as a CFA DNG with a NoiseProfile tag
(as Adobe's converter writes it), so the e2e noise stage reads the tag;
``--blind`` drops the tag and times the blind estimate instead.

Weights: ``--weights FILE``, or an untrained ``KPNT(sensor)`` (speed and
memory do not depend on the weights).

Usage::

    python tools/bench_denoise.py                       # 24 MP + 100 MP Bayer e2e, tile sizes
    python tools/bench_denoise.py --e2e 24 --sensor xtrans --threads 2
    python tools/bench_denoise.py --tile-only 1024 2048 --json out.json

Run it on an otherwise idle machine: other processes on the same cores
inflate every number here.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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

    return CFA.bayer("RGGB") if sensor == "bayer" else CFA.xtrans()


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


def run_e2e(path: Path, sensor: str, weights, tile, threads: int, device: str = "cpu") -> dict:
    """One file through the CLI's FileProcessor; per-stage seconds, peak RSS
    (and peak GPU memory on a GPU)."""
    import torch

    torch.set_num_threads(threads)
    from kpnt.cli.denoise import FileProcessor, Settings, Task

    out = path.with_name(path.stem + "-out.dng")
    if out.exists():
        out.unlink()
    weights_path = weights
    if weights_path is None:
        from kpnt.weights_io import save_weights

        weights_path = path.with_name(f"untrained-{sensor}.safetensors")
        save_weights(weights_path, _model(sensor, None), _cfa(sensor), {"data": "untrained (benchmark)"})
    s = Settings("dng", True, tile, Path(weights_path), None, None, "torch", False)
    proc = FileProcessor(s, device)
    t0 = time.perf_counter()
    raw = proc.read(Task(0, path, out))
    t_dec = time.perf_counter() - t0
    shape = raw.mosaic.shape
    tiles = []
    cpu0 = _cpu_seconds()
    res = proc.process(Task(0, path, out), raw, None, t_dec, on_tiles=tiles.append)
    cpu = _cpu_seconds() - cpu0
    if res.status != "done":
        raise SystemExit(f"bench: {res.message}")
    out.unlink()
    row = dict(scenario="e2e", sensor=sensor, mp=shape[0] * shape[1] / 1e6, tiles=tiles[0], tile=proc.tile,
               threads=threads, noise_source=res.noise.split(":")[0], peak_rss_gb=_peak_rss() / 2**30, device=device)
    row.update(_gpu_peak(device))
    row.update({k: round(v, 2) for k, v in res.seconds.items()})
    row["total"] = round(sum(res.seconds.values()), 2)
    row["cpu_after_decode"] = round(cpu, 2)
    row["s_per_mp"] = round(row["total"] / row["mp"], 3)
    return row


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
    p.add_argument("--sensor", choices=["bayer", "xtrans"], default="bayer")
    p.add_argument("--weights", type=Path)
    p.add_argument("--tile", type=int, default=None, help="--tile of the e2e runs (default: kpnt's CPU default)")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cpu", help="torch device of the runs (cuda: peak GPU memory is reported)")
    p.add_argument("--blind", action="store_true", help="no NoiseProfile tag: time the blind noise estimate")
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
            print(json.dumps(run_e2e(Path(rest[0]), rest[1], rest[2], rest[3], rest[4], rest[5])))
        else:
            print(json.dumps(run_tile(rest[0], rest[1], rest[2], rest[3], rest[4])))
        return 0

    e2e = [24, 100] if args.e2e is None else args.e2e
    tiles = [1024, 2048] if args.tile_only is None else args.tile_only
    rows = []
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kpnt-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    weights = str(args.weights) if args.weights else None
    for n in tiles:
        rows.append(_child(["tile", n, args.sensor, weights, args.threads, args.device]))
        print(_fmt_tile(rows[-1]), flush=True)
    for mp in e2e:
        shape = SIZES.get(mp) or (int((mp * 1e6 / 1.5) ** 0.5) // 6 * 6, int((mp * 1e6 * 1.5) ** 0.5) // 6 * 6)
        path = work / f"synthetic-{args.sensor}-{mp}mp{'-blind' if args.blind else ''}.dng"
        if not path.exists():
            _child(["make", str(path), list(shape), args.sensor, not args.blind])
        rows.append(_child(["e2e", str(path), args.sensor, weights, args.tile, args.threads, args.device]))
        print(_fmt_e2e(rows[-1]), flush=True)
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


def _fmt_tile(r) -> str:
    return (f"tile {r['device']} {r['sensor']:6s} {r['n']}^2 ({r['mp']:.1f} MP, {r['threads']} thr): {r['seconds']:7.2f} s = "
            f"{r['s_per_mp']:.3f} s/MP (CPU {r['cpu_s']:.2f} s), working set {r['bytes_per_px']} B/photosite, peak RSS {r['peak_rss_gb']:.2f} GB" + _gpu(r))


def _fmt_e2e(r) -> str:
    return (f"e2e  {r['device']} {r['sensor']:6s} {r['mp']:5.1f} MP tile {r['tile']} ({r['tiles']} tiles, {r['threads']} thr): "
            f"decode {r.get('decode', 0):6.2f} | noise ({r['noise_source']}) {r.get('noise', 0):6.2f} | "
            f"denoise {r.get('denoise', 0):7.2f} | encode {r.get('encode', 0):5.2f} | total {r['total']:7.2f} s "
            f"({r['s_per_mp']:.2f} s/MP; CPU after decode {r['cpu_after_decode']:.1f} s) | peak RSS {r['peak_rss_gb']:.2f} GB" + _gpu(r))


if __name__ == "__main__":
    sys.exit(main())
