#!/usr/bin/env python3
"""Quality benchmark: kpnt against LibRaw demosaic and LibRaw + non-local means.

Trains nothing.  For every sensor x ISO it unprocesses clean photos into
synthetic raws with a real camera's colour matrix and noise profile
(darktable x 12, DESIGN.md section 1), writes them as CFA DNGs, and runs

* ``kpnt``: ``kpnt.io.read_raw`` + ``kpnt.denoise.denoise_raw`` with the given
  weights and the true noise profile (``--blind`` uses the blind estimate);
* ``libraw``: rawpy/LibRaw demosaic (AHD for Bayer, LibRaw's X-Trans
  interpolation), white-balanced as DESIGN.md section 8 prescribes, no
  denoising;
* ``libraw+nlm``: the same, then OpenCV non-local means per channel on a
  variance-stabilised image (generalised Anscombe transform with the known
  profile, so one strength fits every brightness), strength ``--nlm-h`` in
  units of the noise std.

and prints mean per-image PSNR in the two scoring spaces of DESIGN.md
section 8 (white-balanced linear; sRGB through the DNG colour matrix), with a
6-pixel border ignored, plus seconds per megapixel.

Example::

    python tools/bench_quality.py --photos ../shared/data/bsds500/val --limit 20 \\
        --profiles ../shared/data/noiseprofiles.json \\
        --bayer-weights runs/bayer/weights.safetensors --xtrans-weights runs/xt/weights.safetensors \\
        --isos 3200
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from kpnt.baselines import NLM_STRENGTH, nlm_denoise
from kpnt.color import find_camera, psnr, render_linear_wb, render_srgb
from kpnt.denoise import NoiseChoice, choose_noise, denoise_raw
from kpnt.io.demosaic import libraw_demosaic_counts
from kpnt.io.dng import write_cfa_dng
from kpnt.io.meta import RawMeta
from kpnt.io.raw import read_raw
from kpnt.mosaic import CFA
from kpnt.noise import load_profile_table
from kpnt.train.photos import PhotoSource
from kpnt.train.synthesis import CameraModel, SynthConfig, synthesize

BLACK, WHITE = 512.0, 16383.0


def run(args) -> list[dict]:
    from kpnt.weights_io import load_weights

    torch.set_num_threads(args.threads)
    table = load_profile_table(args.profiles)
    photos = PhotoSource.from_folder(args.photos, downscale=args.downscale, limit=args.limit)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="kpnt-bench-"))
    for sensor in args.sensors:
        cam = find_camera(args.bayer_camera if sensor == "bayer" else args.xtrans_camera)
        weights = args.bayer_weights if sensor == "bayer" else args.xtrans_weights
        model = load_weights(weights, sensor=sensor)[0].eval() if weights else None
        cfa = CFA.bayer("RGGB") if sensor == "bayer" else CFA.xtrans()
        for iso in args.isos:
            prof = table.lookup(cam["make"], cam["model"], iso)
            cm = CameraModel(f"{cam['make']} {cam['model']}", cam["xyz_to_cam"], prof.as_array()[None])
            gen = torch.Generator().manual_seed(1000 + iso)
            scores = {m: {"lin": [], "srgb": [], "sec": 0.0, "mpix": 0.0} for m in ("kpnt", "libraw", "libraw+nlm")}
            for k, img in enumerate(photos.photos):
                h = img.shape[1] // 6 * 6
                w = img.shape[2] // 6 * 6
                b = synthesize(img[None, :, :h, :w], cfa, [cm], gen, SynthConfig(exposure_ev=(0.0, 0.0), headroom=(0.9, 0.9), noise_jitter=0.0))
                wb = b.wb[0].numpy().astype(np.float64)
                ref_cam = (b.target[0].permute(1, 2, 0).numpy() / wb)
                mosaic = (b.x[0, 0].numpy() / wb[cfa.colour_map(h, w)])
                counts = np.clip(np.rint(mosaic * (WHITE - BLACK) + BLACK), 0, 65535).astype(np.uint16)
                meta = RawMeta(black=np.full(3, BLACK), white=WHITE, wb=wb, xyz_to_cam=cam["xyz_to_cam"], make=cam["make"], model=cam["model"], iso=int(iso))
                dng = tmp / f"{sensor}_{iso}_{k}.dng"
                write_cfa_dng(dng, counts, cfa, meta, overwrite=True)
                mp = h * w / 1e6
                outs = {}
                if model is not None:
                    t0 = time.perf_counter()
                    raw = read_raw(dng)
                    noise = choose_noise(raw) if args.blind else NoiseChoice(prof.as_array(), "given")
                    outs["kpnt"] = denoise_raw(model, raw, noise, tile=0)
                    scores["kpnt"]["sec"] += time.perf_counter() - t0
                    scores["kpnt"]["mpix"] += mp
                t0 = time.perf_counter()
                lr = libraw_demosaic_counts(counts, cfa, meta, tmp_dir=tmp)
                scores["libraw"]["sec"] += time.perf_counter() - t0
                scores["libraw"]["mpix"] += mp
                outs["libraw"] = lr
                t0 = time.perf_counter()
                noise_wb = np.stack([prof.a * wb, prof.b * wb**2])
                outs["libraw+nlm"] = nlm_denoise(lr * wb, noise_wb, args.nlm_h) / wb
                scores["libraw+nlm"]["sec"] += time.perf_counter() - t0
                scores["libraw+nlm"]["mpix"] += mp
                ref_lin = render_linear_wb(ref_cam, wb)
                ref_srgb = render_srgb(ref_cam, wb, cam["xyz_to_cam"])
                for m, o in outs.items():
                    scores[m]["lin"].append(psnr(render_linear_wb(o, wb), ref_lin))
                    scores[m]["srgb"].append(psnr(render_srgb(o, wb, cam["xyz_to_cam"]), ref_srgb))
            for m, s in scores.items():
                if s["lin"]:
                    # NLM runs on LibRaw's output: its time includes LibRaw's
                    sec = s["sec"] + (scores["libraw"]["sec"] if m == "libraw+nlm" else 0.0)
                    rows.append(dict(sensor=sensor, iso=iso, camera=cm.name, method=m, n=len(s["lin"]), psnr_lin=float(np.mean(s["lin"])), psnr_srgb=float(np.mean(s["srgb"])), sec_per_mpix=sec / s["mpix"]))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, required=True, help="folder of clean sRGB photos (BSDS500 val)")
    p.add_argument("--profiles", type=Path, required=True, help="darktable noiseprofiles.json")
    p.add_argument("--limit", type=int, default=20, help="number of photos (default 20)")
    p.add_argument("--downscale", type=int, default=2, help="downscale photos first, as in training (default 2)")
    p.add_argument("--sensors", nargs="+", default=["bayer", "xtrans"], choices=["bayer", "xtrans"])
    p.add_argument("--isos", type=lambda s: [int(v) for v in s.split(",")], default=[3200], help="comma-separated ISOs (default 3200)")
    p.add_argument("--bayer-camera", default="Nikon D750")
    p.add_argument("--xtrans-camera", default="Fujifilm X-T1")
    p.add_argument("--bayer-weights", type=Path)
    p.add_argument("--xtrans-weights", type=Path)
    p.add_argument("--blind", action="store_true", help="kpnt uses its blind noise estimate instead of the true profile")
    p.add_argument("--nlm-h", type=float, default=NLM_STRENGTH, help=f"NLM strength in noise standard deviations (default {NLM_STRENGTH}, tuned on BSDS train)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = p.parse_args(argv)
    rows = run(args)
    print(f"\n{'sensor':7} {'ISO':>6} {'method':11} {'n':>3} {'PSNR lin':>9} {'PSNR sRGB':>10} {'s/MP':>7}")
    for r in rows:
        print(f"{r['sensor']:7} {r['iso']:>6} {r['method']:11} {r['n']:>3} {r['psnr_lin']:9.2f} {r['psnr_srgb']:10.2f} {r['sec_per_mpix']:7.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
