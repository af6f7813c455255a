#!/usr/bin/env python3
"""Where the saturated-colour bias lives: the per-channel mean error of the
most saturated bin (issue 13's colour check, ``kpnt.bench.metrics``), split
into flat and textured pixels of the reference.

Same cases as ``tools/val_levels.py`` (centre tiles of ``--val`` photos,
the held-out cameras' matrices and noise, no blur or colour boost, the
noise level clipped into the trained range as ``kpnt-denoise`` does).  A
top-bin pixel is *flat* when the reference's luminance varies by less than
``--flat`` (std over mean) in the 7x7 window around it, *textured*
otherwise.  A bias that lives in flat areas is a calibration error; one
that lives in texture is chroma smoothed at edges, which binning by the
reference's saturation shows as a deficit of the dominant channel.

    python tools/colour_bias_split.py kpnt/weights/bayer.safetensors --images 16 --isos 800,3200
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from val_levels import SHARED, fitting_tile, scored_batches, trained_noise  # noqa: E402


def split_bias(out: np.ndarray, ref: np.ndarray, flat_below: float) -> dict:
    """Sums of ``out - ref`` (3,) and pixel counts of the top saturation
    bin's flat and textured pixels of one (H, W, 3) image pair."""
    from kpnt.bench.metrics import BORDER, SAT_EDGES, SAT_MIN_VALUE, saturation

    ref = ref[BORDER:-BORDER, BORDER:-BORDER].astype(np.float64)
    out = out[BORDER:-BORDER, BORDER:-BORDER].astype(np.float64)
    top = (ref.max(2) > SAT_MIN_VALUE) & (saturation(ref) >= SAT_EDGES[-2])
    lum = ref.mean(2).astype(np.float32)
    mean = cv2.blur(lum, (7, 7))
    var = cv2.blur(lum * lum, (7, 7)) - mean * mean
    variation = np.sqrt(np.maximum(var, 0)) / np.maximum(mean, 1e-4)
    res = {}
    for name, mask in (("flat", top & (variation < flat_below)), ("textured", top & (variation >= flat_below))):
        res[name] = ((out - ref)[mask].sum(0), int(mask.sum()))
    return res


def menon_batch(b) -> torch.Tensor:
    """(N, 3, H, W) Menon 2007 demosaics of a batch's white-balanced mosaics."""
    from kpnt.baselines import menon2007

    H, W = b.x.shape[-2:]
    colour = b.cfa.colour_map(H, W)
    return torch.stack([torch.from_numpy(menon2007(x[0].double().numpy(), colour)).permute(2, 0, 1).float() for x in b.x])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", nargs="*", type=Path, help="weights files (Bayer and X-Trans may be mixed)")
    p.add_argument("--val", type=Path, default=SHARED / "photos" / "val")
    p.add_argument("--profiles", type=Path, default=SHARED / "noiseprofiles.json")
    p.add_argument("--images", type=int, default=16, help="photos of --val (the first, sorted; default 16)")
    p.add_argument("--tile", type=int, default=384)
    p.add_argument("--isos", default="800,3200", help="noisy levels besides clean (default 800,3200)")
    p.add_argument("--flat", type=float, default=0.03, help="flat: 7x7 luminance std/mean below this (default 0.03)")
    p.add_argument("--menon", action="store_true", help="also Menon 2007 (kpnt.baselines, no denoising) on the Bayer cases, "
                   "as a classical demosaicer's reference")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="where the models run (default cuda when available)")
    args = p.parse_args(argv)

    from kpnt.train.loop import batch_to
    from kpnt.train.photos import PhotoSource
    from kpnt.weights_io import load_weights, read_metadata

    photos = PhotoSource.from_folder(args.val, downscale=1, limit=args.images)
    tile = fitting_tile(photos, args.tile)
    isos = [int(i) for i in args.isos.split(",") if i]
    cases = {}
    print(f"{len(photos.photos)} photos of {args.val}, {tile}^2 centre tiles, held-out cameras")
    print("| weights | level | flat: pixels | flat R / G / B (1e-3 of white) | textured: pixels | textured R / G / B |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    runs = [(str(path), path) for path in args.weights] + ([("Menon 2007", None)] if args.menon else [])
    for name, path in runs:
        sensor = read_metadata(path)["sensor"] if path is not None else "bayer"
        if sensor not in cases:
            cases[sensor] = scored_batches(sensor, photos, tile, args.profiles, isos)
        if path is not None:
            model, _ = load_weights(path, sensor, device=args.device)
            model.eval()
        for label, batches in cases[sensor].items():
            acc = {"flat": [np.zeros(3), 0], "textured": [np.zeros(3), 0]}
            with torch.no_grad():
                for b, _ in batches:
                    if path is None:
                        out = menon_batch(b)
                    else:
                        d = batch_to(b, args.device)
                        out = model(d.x, d.cfa, trained_noise(model, d.noise)).cpu()
                    for i in range(out.shape[0]):
                        part = split_bias(out[i].permute(1, 2, 0).numpy(), b.target[i].permute(1, 2, 0).numpy(), args.flat)
                        for k, (e, n) in part.items():
                            acc[k][0] += e
                            acc[k][1] += n
            cells = []
            for k in ("flat", "textured"):
                e, n = acc[k]
                cells += [str(n), " / ".join(f"{v:+.2f}" for v in e / max(n, 1) * 1e3)]
            print(f"| {name} | {label} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
