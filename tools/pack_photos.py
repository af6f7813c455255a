#!/usr/bin/env python
"""Copy training photos losslessly into size-balanced parts for the GPU machine.

A call to the lent GPU machine carries at most 64 MiB with the working tree,
and ``photos/train`` is 125 MB of PNG.  Session 8 carried JPEG q93 4:4:4
copies (36 MB), which are only 39.9 dB PSNR (8-bit sRGB, mean) from the PNGs: their error
is larger than the demosaicing error being trained away, and training on
them cost 0.3 dB on clean mosaics (docs/QUALITY.md, "Lossless training photos").
This tool writes WebP *lossless* copies (about 98 MB in all), checks each
one decodes to the original pixels, and splits them into ``--parts``
folders of about equal size, each small enough to carry in its own call
while the machine stays warm; ``kpnt-train --clean OUT`` reads the parts
recursively as one set.

    python tools/pack_photos.py ../shared/data/photos/train .gpu5/train --parts 2
    python tools/pack_photos.py ../shared/data/photos/val .gpu4/val8w --parts 1 --first 8   # a validation subset
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from kpnt.train.photos import list_photos  # noqa: E402

#: OpenCV's WebP quality above 100 selects lossless compression.
WEBP_LOSSLESS = [cv2.IMWRITE_WEBP_QUALITY, 101]


def pack(src: Path, out: Path, parts: int, first: int | None = None) -> list[int]:
    """Write lossless WebP copies of every photo under ``src`` (or of the
    ``first`` of them, by sorted path) into ``out/a``, ``out/b``, ...
    (largest first, each into the part holding the fewest bytes so far);
    returns the bytes per part."""
    chosen = list_photos(src)[:first]                 # list_photos sorts by path
    files = sorted(chosen, key=lambda p: p.stat().st_size, reverse=True)
    names = [chr(ord("a") + i) for i in range(parts)]
    sizes = [0] * parts
    for name in names:
        (out / name).mkdir(parents=True, exist_ok=True)
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        if img is None:
            raise SystemExit(f"{f}: cannot decode")
        if img.dtype != np.uint8:
            raise SystemExit(f"{f}: {img.dtype} pixels; WebP holds 8 bits: keep this photo as PNG")
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[:, :, :3]                      # training reads RGB only
        i = int(np.argmin(sizes))
        dst = out / names[i] / (f.stem + ".webp")
        if not cv2.imwrite(str(dst), img, WEBP_LOSSLESS):
            raise SystemExit(f"{dst}: cannot write")
        back = cv2.imread(str(dst), cv2.IMREAD_UNCHANGED)
        if back is None or back.shape != img.shape or not np.array_equal(back, img):
            raise SystemExit(f"{dst}: the copy does not decode to the original pixels")
        sizes[i] += dst.stat().st_size
    return sizes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", type=Path, help="folder of photos (PNG/JPEG), e.g. ../shared/data/photos/train")
    p.add_argument("out", type=Path, help="output folder (gets subfolders a, b, ...)")
    p.add_argument("--parts", type=int, default=2, help="number of size-balanced subfolders (default 2)")
    p.add_argument("--first", type=int, help="copy only the first N photos, by sorted path (e.g. a validation subset)")
    args = p.parse_args()
    if args.parts < 1 or args.parts > 26:
        raise SystemExit("--parts must be 1..26")
    if args.first is not None and args.first < 1:
        raise SystemExit("--first must be at least 1")
    sizes = pack(args.src, args.out, args.parts, args.first)
    for i, s in enumerate(sizes):
        print(f"{args.out / chr(ord('a') + i)}: {s / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
