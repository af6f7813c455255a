"""Quality benchmark: kpnt against LibRaw, LibRaw + NLM, Menon 2007, demosaicnet and demosaicnet + BM3D.

Trains nothing.  For every sensor x cell it unprocesses clean photos
(default ``../shared/data/photos/val``, 76 photos, already downscaled:
``--downscale 1``; BSDS500 val stays a secondary set: pass its folder and
``--downscale 2``) into synthetic raws with a held-out camera's colour
matrix and noise profile (darktable x 12, DESIGN.md section 1; defaults
Nikon D750, Bayer, and Fujifilm X-T1, X-Trans, both held out of the shipped
weights' training), each case in a CFA phase, white balance and noise drawn
from its own seed (``kpnt.bench.cases``), and runs on the *same* raws:

* ``kpnt``: ``kpnt.denoise.denoise_raw`` with the weights and the true noise
  profile (``--blind``: its blind estimate), reading the case as a CFA DNG
  through rawpy (``--kpnt-input dng``) or from memory (``memory``: the same
  normalisation, no rawpy; ``auto``, the default, takes dng where rawpy is
  installed).  On clean mosaics it also runs as ``kpnt@iso100-noise``: the
  same mosaic given the camera's ISO-100 noise level;
* the peers of ``kpnt.bench.peers``: ``libraw``, ``libraw+nlm``, ``menon``
  (Bayer only), ``demosaicnet``, ``demosaicnet+bm3d`` (the denoisers only in
  noisy cells).

Cells (``--isos``): ``clean`` (no noise, NoiseProfile ~0) and ISOs (default
clean,100,800,3200,12800); beyond a camera's profiled ISOs the profile is
pushed (``a -> r a``, ``b -> r^2 b``), and the table says so.

It prints per sensor a table (methods x cells: PSNR white-balanced linear /
PSNR sRGB / SSIM sRGB, 6-pixel border ignored), the colour-fidelity table
(signed per-channel mean error by the reference's saturation), issue 13's
acceptance checks (PASS/FAIL lines, never asserted), a model-selection table
when ``--weights-glob`` names several weights files (rows = weights), and
speed.  ``--peer-cache DIR`` keeps the peers' scores keyed by a hash of the
exact input raw, method, options and package versions, so a later call
reuses them without changing a number (marked ``(c)`` in the tables);
``--error-maps DIR`` writes error-map pictures; ``--json FILE`` writes
everything.

The peers are benchmark-only, not dependencies of kpnt::

    pip install -e '.[bench]'   # demosaicnet, bm3d (colour-demosaicing: the tests' Menon cross-check)

A peer whose package is missing is skipped with a printed note.

Examples::

    # full benchmark with peers (GPU machine, 16 cores), cache kept
    python tools/bench_quality.py --jobs 15 --time-device cuda --peer-cache .peer-cache --json quality.json

    # on a machine with a time limit: fill the peer cache in calls that stop
    # in time (exit 3 until everything is cached), then the full run above
    python tools/bench_quality.py --methods libraw,libraw+nlm,menon,demosaicnet,demosaicnet+bm3d \
        --jobs 15 --time-device cuda --speed-mp 0 --peer-cache .peer-cache --time-budget 420

    # model selection: several weights files on the same cases, kpnt only
    python tools/bench_quality.py --methods kpnt --weights-glob 'runs/*/weights.safetensors' \\
        --isos clean,100,3200 --limit 30 --speed-mp 0
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from kpnt.bench.cases import CLEAN
from kpnt.bench.runner import METHODS
from kpnt.mosaic.kinds import BAYER, MOSAIC_KINDS, XTRANS

_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
# the default data: ../shared/data beside the checkout (this file is <checkout>/kpnt/bench/cli.py)
_SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _methods(s: str) -> list[str]:
    out = [m.strip().lower() for m in s.split(",") if m.strip()]
    bad = [m for m in out if m not in METHODS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"unknown method(s) {bad}: choose from {','.join(METHODS)}")
    return list(dict.fromkeys(out))


def _views(s: str) -> list[int]:
    from kpnt.ensemble import VIEWS

    try:
        out = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        out = []
    if not out or any(v not in VIEWS for v in out):
        raise argparse.ArgumentTypeError(f"{s!r}: a list of view counts from {', '.join(map(str, VIEWS))}, e.g. 1,4")
    return list(dict.fromkeys(out))


def _cells(s: str) -> list:
    out = []
    for v in s.split(","):
        v = v.strip().lower()
        if v == CLEAN:
            out.append(CLEAN)
            continue
        try:
            iso = int(v)
        except ValueError:
            raise argparse.ArgumentTypeError(f"cell {v!r} is neither 'clean' nor an ISO: pass e.g. clean,100,800,3200") from None
        if iso <= 0:
            raise argparse.ArgumentTypeError(f"ISO {iso} must be positive")
        out.append(iso)
    if not out:
        raise argparse.ArgumentTypeError("no cells: pass e.g. clean,100,800,3200,12800")
    return list(dict.fromkeys(out))


def _photo_indices(s: str) -> list[int]:
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--error-map-photos {s!r}: pass photo indices, e.g. 0,5,9") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, default=_SHARED / "photos" / "val",
                   help="folder of clean sRGB photos (default ../shared/data/photos/val)")
    p.add_argument("--profiles", type=Path, default=_SHARED / "noiseprofiles.json", help="darktable noiseprofiles.json (default ../shared/data/)")
    p.add_argument("--limit", type=int, default=None,
                   help="use N photos spread evenly over the sorted folder (default all; their cases are the full run's)")
    p.add_argument("--downscale", type=int, default=1, help="downscale photos first (default 1: photos/val is downscaled already; BSDS500: 2)")
    p.add_argument("--sensors", nargs="+", default=list(MOSAIC_KINDS), choices=list(MOSAIC_KINDS))
    p.add_argument("--isos", type=_cells, default=[CLEAN, 100, 800, 3200, 12800], help="cells: 'clean' and ISOs (default clean,100,800,3200,12800)")
    p.add_argument("--methods", type=_methods, default=list(METHODS), help=f"comma-separated, from {','.join(METHODS)} (default all)")
    p.add_argument("--bayer-camera", default="Nikon D750", help="default Nikon D750: held out of the shipped weights' training")
    p.add_argument("--xtrans-camera", default="Fujifilm X-T1", help="default Fujifilm X-T1: held out of the shipped weights' training")
    p.add_argument("--bayer-weights", type=Path, default=_WEIGHTS / BAYER.weights_file, help="default: the shipped weights")
    p.add_argument("--xtrans-weights", type=Path, default=_WEIGHTS / XTRANS.weights_file, help="default: the shipped weights")
    p.add_argument("--weights-glob", help="score every weights file this glob matches instead (quoted; e.g. 'runs/*/weights.safetensors'): one table row per file")
    p.add_argument("--kpnt-input", choices=["auto", "dng", "memory"], default="auto",
                   help="kpnt reads each case as a DNG through rawpy, or from memory (no rawpy); auto: dng where rawpy is installed")
    p.add_argument("--ensemble", type=_views, default=[1], metavar="N[,N...]",
                   help="also score each kpnt model as the mean of N rotated/mirrored views (kpnt-denoise --ensemble N), "
                   "as rows 'kpnt:viewsN' (default 1: the model alone)")
    p.add_argument("--blind", action="store_true", help="kpnt uses its blind noise estimate instead of the true profile")
    p.add_argument("--nlm-h", type=float, default=None, help="NLM strength in noise standard deviations (default kpnt.baselines.NLM_STRENGTH)")
    p.add_argument("--demosaicnet-domain", choices=["linear", "srgb"], default="srgb",
                   help="values fed to demosaicnet: sRGB-curve encoded (default: as its training photos; 3.5 dB better on clean "
                        "photos/val mosaics, equal or better with noise) or white-balanced linear")
    p.add_argument("--bm3d-min-iso", type=int, default=0,
                   help="run demosaicnet+bm3d only in cells of at least this ISO (default 0: every noisy cell; "
                        "issue 13's check (1) needs it from ISO 800; BM3D costs ~67 s per MP on one core)")
    p.add_argument("--peer-cache", type=Path, help="folder of the peers' score cache (read and updated): peers found there are not run again")
    p.add_argument("--error-maps", type=Path, help="write error-map pictures (kpnt and demosaicnet) into this folder")
    p.add_argument("--error-map-cell", type=lambda s: _cells(s)[0], default=CLEAN, help="cell of the error maps (default clean)")
    p.add_argument("--error-map-photos", type=_photo_indices, help="photos of the error-map crops, by index in the sorted folder (default: the 3 most saturated photos)")
    p.add_argument("--time-device", choices=["cpu", "cuda", "both"], default=None,
                   help="devices of the large-raw speed test (default cpu, plus cuda when available); outputs are scored on the first (cuda if listed)")
    p.add_argument("--speed-mp", type=float, default=24.0, help="time kpnt and demosaicnet on one synthetic raw of this many MP (default 24; 0 skips)")
    p.add_argument("--cpu-speed-mp", type=float, default=4.0, help="on the CPU, time on a raw of at most this many MP (default 4)")
    p.add_argument("--bm3d-speed-mp", type=float, default=1.0, help="BM3D's speed: one synthetic raw of this many MP (default 1)")
    p.add_argument("--time-budget", type=float, default=None,
                   help="stop after this many seconds (queued peer jobs cancelled, running ones finished and cached), "
                        "exit 3 without tables: for machines with a time limit; rerun to continue from the peer cache")
    p.add_argument("--jobs", type=int, default=1,
                   help="worker processes for scoring and the CPU-only peers, one thread each (default 1: in this process)")
    p.add_argument("--threads", type=int, default=2, help="torch/OpenCV threads of this process (default 2)")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    return p


def _check_args(p: argparse.ArgumentParser, args) -> None:
    if not args.photos.is_dir():
        p.error(f"--photos {args.photos}: no such folder: pass a folder of clean photos (e.g. ../shared/data/photos/val)")
    if not args.profiles.is_file():
        p.error(f"--profiles {args.profiles}: no such file: pass darktable's noiseprofiles.json")
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit {args.limit}: pass a positive number of photos")
    if args.downscale < 1 or args.jobs < 1 or args.threads < 1:
        p.error("--downscale, --jobs and --threads must be >= 1")
    if args.time_budget is not None and args.time_budget <= 0:
        p.error(f"--time-budget {args.time_budget:g}: pass a positive number of seconds")
    if args.time_budget is not None and not args.peer_cache:
        p.error("--time-budget without --peer-cache would throw the finished peer jobs away: pass --peer-cache DIR")
    if args.json and args.json.exists() and not args.json.is_file():
        p.error(f"--json {args.json}: exists and is not a file")
    if not args.weights_glob and "kpnt" in args.methods:
        for sensor in args.sensors:
            w = getattr(args, f"{sensor}_weights")
            if not w.is_file():
                p.error(f"--{sensor}-weights {w}: no such file: pass a weights file (.safetensors)")
    if args.nlm_h is None:
        from kpnt.baselines import NLM_STRENGTH

        args.nlm_h = NLM_STRENGTH


def _write_json(path: Path, doc: dict) -> None:
    """Write ``doc`` atomically (temporary file beside it, renamed)."""
    from kpnt.io.atomic import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, [json.dumps(doc, indent=1).encode()], overwrite=True)


def main(argv=None) -> int:
    """Parse ``argv``, run the benchmark, print the report; 0 on success."""
    from kpnt.bench import report
    from kpnt.bench.runner import run

    p = parser()
    args = p.parse_args(argv)
    _check_args(p, args)
    # a TERM (e.g. from timeout) ends the run through the finally blocks,
    # which save the peer cache
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    res = run(args)
    rows = res["rows"]
    if res["partial"]:
        c = res["cache"]
        print(f"partial run: --time-budget {args.time_budget:g} s spent after {res['wall_s']:.0f} s; peer cache {c['path'] or 'off'} "
              f"keeps what was computed: run the same command again to continue", file=sys.stderr)
        return 3
    if not rows:
        print("error: nothing was scored: check --methods and the notes above", file=sys.stderr)
        return 1
    print(f"\n{'sensor':7} {'cell':>6} {'method':24} {'n':>3} {'PSNR lin':>9} {'PSNR sRGB':>10} {'SSIM sRGB':>10} {'s/MP':>8} cached  noise")
    for r in rows:
        print(f"{r['sensor']:7} {str(r['cell']):>6} {r['method']:24} {r['n']:>3} {r['psnr_lin']:9.2f} {r['psnr_srgb']:10.2f} "
              f"{r['ssim_srgb']:10.4f} {r['sec_per_mpix']:8.3f} {r['cached']:>6}  {r['noise']}")
    print(report.quality_tables(rows))
    print(report.model_table(rows))
    print(report.colour_table(res["colour"]))
    text, checks = report.check_report(rows, res["colour"])
    print(text)
    text, ups = report.speed_report(rows, res["speed"])
    print(text)
    c = res["cache"]
    print(f"\nscored on {res['quality_device']}; kpnt input {res['kpnt_input'] or '-'}; kpnt backends {res['backends'] or '-'}; "
          f"CPU peers in {res['jobs']} worker process(es), one thread each; peer cache {c['path'] or 'off'}"
          + (f" ({c['hits']} hits, {c['misses']} misses)" if c["path"] else "")
          + f"; kernel build {res['build_s'] or '-'} s (not timed); wall {res['wall_s']:.0f} s")
    if args.json:
        cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        colour = [dict(sensor=s, cell=cl, method=m, **v) for (s, cl, m), v in res["colour"].items()]
        _write_json(args.json, dict(rows=rows, colour=colour, checks=checks, speed=res["speed"], speedup=ups, config=cfg,
                                    devices=res["devices"], backends=res["backends"], build_s=res["build_s"],
                                    cache=c, error_maps=res.get("error_maps"), notes=res["notes"], wall_s=res["wall_s"],
                                    photo_names=res["photo_names"]))
    return 0

