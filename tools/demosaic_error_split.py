#!/usr/bin/env python3
"""Where a Bayer model loses to demosaicnet on clean mosaics.

On ``tools/val_levels.py``'s clean centre tiles of a photo folder (held-out
cameras' colour matrices, no noise) it prints, for each weights file and for
demosaicnet (sRGB-fed, as the benchmark runs it):

- mean PSNR, linear / sRGB (as val_levels.py);
- the sRGB squared error per pixel, split by local activity (the largest
  sRGB-luma gradient in a 5x5 window of the reference) and into luma (the
  error's channel mean) and chroma (the rest).  The cells of a row add up to
  the mean squared error over all pixels.

Run it on training photos and on held-out ones: a model that trails by the
same amount on both is underfitting (capacity or optimisation), not
overfitting (issue 13, session 15).

Usage::

    python tools/demosaic_error_split.py --photos ../shared/data/photos/train --every 15 kpnt/weights/bayer.safetensors
    python tools/demosaic_error_split.py --photos ../shared/data/photos/val --skip-prefix polyu --every 2 kpnt/weights/bayer.safetensors
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

#: Activity bins: the 5x5 max of |d luma/dx| + |d luma/dy| (central
#: differences of the sRGB reference, white = 1).
ACTIVITY_BINS = [(0.0, 0.01), (0.01, 0.04), (0.04, 0.15), (0.15, float("inf"))]
BORDER = 6


def activity(ref_srgb: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) local activity of sRGB references (module doc)."""
    y = ref_srgb.mean(1, keepdim=True)
    gx = (y[..., :, 2:] - y[..., :, :-2]).abs()[..., 1:-1, :]
    gy = (y[..., 2:, :] - y[..., :-2, :]).abs()[..., :, 1:-1]
    g = F.pad(gx + gy, (1, 1, 1, 1), mode="replicate")
    return F.max_pool2d(g, 5, 1, 2)


class Tally:
    """PSNRs and the split squared error of one method."""

    def __init__(self):
        self.lin, self.srgb = [], []
        self.sums = np.zeros((len(ACTIVITY_BINS), 3))   # luma, chroma, pixels
        self.pixels = 0

    def add(self, out: torch.Tensor, target: torch.Tensor, m: torch.Tensor) -> None:
        from kpnt.color import linear_to_srgb
        from val_levels import psnr_pair

        a, s = psnr_pair(out, target, m, BORDER)
        self.lin += a
        self.srgb += s

        def srgb(x):
            return linear_to_srgb(torch.einsum("ij,njhw->nihw", m, x.clamp(0, 1)).clamp(0, 1))[..., BORDER:-BORDER, BORDER:-BORDER]

        ref = srgb(target)
        err = srgb(out) - ref
        luma = err.mean(1, keepdim=True)
        luma_sq = 3 * luma ** 2
        chroma_sq = ((err - luma) ** 2).sum(1, keepdim=True)
        act = activity(ref)
        for k, (lo, hi) in enumerate(ACTIVITY_BINS):
            mask = ((act >= lo) & (act < hi)).to(err.dtype)
            self.sums[k] += [float((luma_sq * mask).sum()), float((chroma_sq * mask).sum()), float(mask.sum())]
        self.pixels += act.numel()

    def row(self, name: str) -> str:
        cells = [f"{np.mean(self.lin):.2f} / {np.mean(self.srgb):.2f}"]
        cells += [f"{1e6 * lum / self.pixels:.2f} / {1e6 * chro / self.pixels:.2f}" for lum, chro, _ in self.sums]
        return f"| {name} | " + " | ".join(cells) + " |"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", nargs="+", type=Path, help="Bayer weights files")
    p.add_argument("--photos", type=Path, default=SHARED / "photos" / "val")
    p.add_argument("--profiles", type=Path, default=SHARED / "noiseprofiles.json")
    p.add_argument("--images", type=int, default=16, help="photos used (default 16): the first of the selection, sorted")
    p.add_argument("--every", type=int, default=1, help="select every N-th photo of the folder, sorted (default 1)")
    p.add_argument("--skip-prefix", action="append", default=[], metavar="PREFIX",
                   help="leave out photos whose file name starts with PREFIX (repeatable)")
    p.add_argument("--tile", type=int, default=384, help="centre tile side (default 384, cut to the smallest photo)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    from kpnt.bench.peers import DemosaicNet, import_demosaicnet
    from kpnt.train.loop import batch_to
    from kpnt.train.photos import PhotoSource
    from kpnt.weights_io import load_weights
    from val_levels import fitting_tile, scored_batches, trained_noise

    from kpnt.train.photos import list_photos

    files = [f for f in list_photos(args.photos) if not any(f.name.startswith(x) for x in args.skip_prefix)]
    photos = PhotoSource.from_files(files[:: args.every][: args.images], downscale=1)
    tile = fitting_tile(photos, args.tile)
    batches = scored_batches("bayer", photos, tile, args.profiles, [])["clean"]
    tallies: dict[str, Tally] = {}
    for w in args.weights:
        model, meta = load_weights(w, device=args.device)
        if meta["sensor"] != "bayer":
            p.error(f"{w}: weights for {meta['sensor']}; this tool compares Bayer models with demosaicnet")
        model.backend = "auto"
        t = tallies.setdefault(str(w), Tally())
        with torch.no_grad():
            for b, m in batches:
                bd = batch_to(b, args.device)
                t.add(model(bd.x, bd.cfa, trained_noise(model, bd.noise)).cpu(), b.target, m)
    dn, why = import_demosaicnet()
    if dn is None:
        print(f"demosaicnet left out: {why}", file=sys.stderr)
    else:
        net = DemosaicNet(dn, "bayer", device=args.device)
        t = tallies.setdefault("demosaicnet", Tally())
        for b, m in batches:
            out = torch.stack([torch.from_numpy(net(b.x[i, 0].numpy(), b.cfa)).permute(2, 0, 1) for i in range(b.x.shape[0])])
            t.add(out, b.target, m)
    print(f"{len(photos.photos)} photos of {args.photos} (every {args.every}, without {args.skip_prefix or 'none'}), {tile}^2 centre tiles, clean mosaics, held-out cameras")
    print("PSNR linear / sRGB (dB); then sRGB squared error per pixel (1e-6), luma / chroma, by local activity")
    bins = [f"activity {lo:g}-{hi:g}" for lo, hi in ACTIVITY_BINS]
    print("| method | PSNR | " + " | ".join(bins) + " |")
    print("| --- | ---: | " + " | ".join("---:" for _ in bins) + " |")
    any_tally = next(iter(tallies.values()))
    print("| share of pixels | | " + " | ".join(f"{s[2] / any_tally.pixels:.3f}" for s in any_tally.sums) + " |")
    for name, t in tallies.items():
        print(t.row(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
