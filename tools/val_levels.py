#!/usr/bin/env python3
"""Score weights files on held-out photos at every noise level, clean included
(issue 13's ablations, on the GPU machine, which has no rawpy).

The trainer's own validation (``history.json``) mixes ISO 800-12800 with a
few low-noise tiles, so it says little about demosaicing.  This scores each
model on the same synthetic tiles of ``--val`` photos (held-out cameras'
colour matrices and noise, as kpnt-train validates) at separate levels:
clean (noise 0, the level the model is told clipped into its trained range,
as ``kpnt-denoise`` does) and each ISO of ``--isos`` (the profile itself: no
jitter, no low-noise or clean draws), with no optical blur or colourfulness
change (test photos get neither).  Linear PSNR is the white-balanced camera
RGB (the trainer's measure); sRGB PSNR converts it with the camera's matrix
and the sRGB curve.  It is a proxy for ``tools/bench_quality.py`` (full
photos through DNG files and rawpy, with the peers); use it to rank
variants, that one for claims.

Usage::

    python tools/val_levels.py --val photos/val --profiles noiseprofiles.json \\
        kpnt/weights/bayer.safetensors runs/v/bayer-ft/weights.safetensors
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))


def level_configs(isos: list[int]):
    """(label, SynthConfig, ISO or None) per scored level."""
    from kpnt.train.synthesis import SynthConfig

    fixed = dataclasses.replace(SynthConfig(), noise_jitter=0.0, low_noise_prob=0.0, zero_noise_prob=0.0,
                                blur_prob=0.0, saturation_prob=0.0)
    out = [("clean", dataclasses.replace(fixed, zero_noise_prob=1.0), None)]
    return out + [(f"ISO {iso}", fixed, iso) for iso in isos]


def camera_models(sensor: str, table, iso: int | None):
    """The held-out cameras of ``sensor`` at ``iso`` from the noise profile
    ``table`` (any profiled ISO for clean tiles, whose noise is zeroed)."""
    from kpnt.color import camera_matrix
    from kpnt.heldout import HELD_OUT_CAMERAS
    from kpnt.train.synthesis import CameraModel

    out = []
    for name in HELD_OUT_CAMERAS[sensor]:
        make, model = name.split(" ", 1)
        prof = table.lookup(make, model, iso or 100)            # darktable's a, b x 12: raw-photosite scale
        noise = np.stack([np.asarray(prof.a, np.float32), np.asarray(prof.b, np.float32)])[None]
        out.append(CameraModel(name, camera_matrix(make, model), noise))
    return out


def fitting_tile(photos, tile: int) -> int:
    """The centre-tile side used for ``photos``: ``tile``, cut to the
    smallest photo's side, rounded down to whole CFA repeats (6 fits both
    Bayer's 2 and X-Trans's 6)."""
    return min(tile, photos.min_side()) // 6 * 6


def scored_batches(sensor: str, photos, tile: int, profiles: Path, isos: list[int], per_batch: int = 8):
    """{label: [(Batch, cam_to_srgb (3, 3))]}: the same scenes and exposure
    draws at every level, one camera per batch (so sRGB needs one matrix)."""
    from kpnt.color import cam_to_srgb_matrix
    from kpnt.noise import load_profile_table
    from kpnt.train.loop import canonical_cfa
    from kpnt.train.synthesis import synthesize

    table = load_profile_table(profiles)
    scenes = photos.centre_tiles(tile)
    out = {}
    for label, config, iso in level_configs(isos):
        batches = []
        for k, cam in enumerate(camera_models(sensor, table, iso)):
            gen = torch.Generator().manual_seed(1000 + k)
            m = torch.tensor(cam_to_srgb_matrix(cam.xyz_to_cam), dtype=torch.float32)
            for i in range(0, len(scenes), per_batch):
                batches.append((synthesize(scenes[i:i + per_batch], canonical_cfa(sensor), [cam], gen, config), m))
        out[label] = batches
    return out


def psnr_pair(out: torch.Tensor, ref: torch.Tensor, m: torch.Tensor, border: int = 6) -> tuple[list, list]:
    """Per-image (linear, sRGB) PSNR of the batch: both clipped to [0, 1],
    ``border`` pixels dropped; sRGB through the camera matrix ``m``."""
    from kpnt.color import linear_to_srgb
    from kpnt.train.loss import psnr_linear

    out = out[..., border:-border, border:-border].clamp(0, 1)
    ref = ref[..., border:-border, border:-border].clamp(0, 1)

    def to_srgb(x):
        return linear_to_srgb(torch.einsum("ij,njhw->nihw", m.to(x.device), x).clamp(0, 1))

    return psnr_linear(out, ref, border=0).tolist(), psnr_linear(to_srgb(out), to_srgb(ref), border=0).tolist()


def trained_noise(model, noise: torch.Tensor) -> torch.Tensor:
    """(N, 2, 3) noise levels clipped into ``model``'s trained range, as
    ``kpnt-denoise`` tells the model, on ``noise``'s device."""
    from kpnt.noise.trained import clamp_to_trained_noise

    return torch.stack([torch.from_numpy(clamp_to_trained_noise(model, n.cpu().numpy())) for n in noise]).to(noise.device)


def score(model, batches, device, told_noise: float = 1.0) -> tuple[float, float]:
    """Mean (linear, sRGB) PSNR of ``model`` over ``batches``, told
    ``told_noise`` times each batch's true noise level (clipped into the
    trained range, as kpnt-denoise does)."""
    from kpnt.train.loop import batch_to

    lin, srgb = [], []
    with torch.no_grad():
        for b, m in batches:
            b = batch_to(b, device)
            a, s = psnr_pair(model(b.x, b.cfa, trained_noise(model, b.noise * told_noise)), b.target, m)
            lin += a
            srgb += s
    return float(np.mean(lin)), float(np.mean(srgb))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", nargs="+", type=Path, help="weights files (Bayer and X-Trans may be mixed)")
    p.add_argument("--val", type=Path, default=SHARED / "photos" / "val", help="folder of held-out photos")
    p.add_argument("--profiles", type=Path, default=SHARED / "noiseprofiles.json")
    p.add_argument("--images", type=int, default=16, help="photos of --val used (the first, sorted; default 16)")
    p.add_argument("--tile", type=int, default=384, help="centre tile side (default 384)")
    p.add_argument("--isos", default="100,800,3200,12800")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--told-noise", default="1", help="comma-separated factors of the true noise level the model is told "
                   "(like kpnt-denoise --strength); one row per factor (default 1)")
    args = p.parse_args(argv)

    from kpnt.train.photos import PhotoSource
    from kpnt.weights_io import load_weights

    isos = [int(v) for v in args.isos.split(",")]
    factors = [float(v) for v in args.told_noise.split(",")]
    if not all(np.isfinite(k) and k >= 0 for k in factors):
        p.error(f"--told-noise: factors must be finite and >= 0, got {args.told_noise}")
    photos = PhotoSource.from_folder(args.val, downscale=1, limit=args.images)
    tile = fitting_tile(photos, args.tile)
    cache = {}
    labels = [lab for lab, _, _ in level_configs(isos)]
    print(f"{len(photos.photos)} photos of {args.val}, {tile}^2 centre tiles, held-out cameras; linear / sRGB PSNR (dB)")
    print("| weights | " + " | ".join(labels) + " |")
    print("| --- | " + " | ".join("---:" for _ in labels) + " |")
    for w in args.weights:
        model, meta = load_weights(w, device=args.device)
        model.backend = "auto"   # the fused kernels on a GPU, the reference on a CPU
        sensor = meta["sensor"]
        if sensor not in cache:
            cache[sensor] = scored_batches(sensor, photos, tile, args.profiles, isos)
        for k in factors:
            cells = [score(model, cache[sensor][lab], args.device, k) for lab in labels]
            told = "" if factors == [1.0] else f", told {k:g}x the noise"
            print(f"| {w} ({sensor}{told}) | " + " | ".join(f"{a:.2f} / {s:.2f}" for a, s in cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
