"""Size and rounding error of kpnt's DNG encodings against a compressed 14-bit source.

For each ISO: a synthetic 14-bit Bayer raw is made by kpnt's own
unprocessing (a grid of real photos, unprocessed into a Nikon D750's camera
space, that camera's darktable noise profile at the ISO, black 600, white
15520), denoised with the shipped weights, and written as a LinearRaw DNG
in each encoding ('compact', 'ljpeg', 'none').

The source is sized as a camera's lossless raw is stored: the same mosaic
written as a CFA DNG with lossless-JPEG tiles of two components, as Adobe's
DNG Converter writes it (Canon's CR2 and Nikon's lossless NEF use the same
predictive Huffman coding); rawpy must read it back to the same counts.

For 'compact' it also reports the error of the values rawpy decodes against
the float output of the denoiser, per brightness band: max and RMS in
16-bit levels, as a fraction of the source's 14-bit step and of the ISO-100
noise of the same camera (sqrt(a v + b) of its darktable profile), and the
PSNR of the round trip (peak = white).

Example::

    python tools/dng_size.py --mp 24 --isos 100,800,3200,12800 --threads 2
    python tools/dng_size.py --mp 2 --isos 3200 --json out.json      # quick
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CAMERA = ("Nikon", "D750")
BLACK, WHITE = 600.0, 15520.0
WB = np.array([2.1, 1.0, 1.6])
BANDS = [0.0, 0.001, 0.01, 0.05, 0.18, 0.5, 1.0001]


def scene(photos: list[Path], h: int, w: int, seed: int, upscale: float = 1.0) -> np.ndarray:
    """An (h, w, 3) sRGB float32 grid of centre crops of the photos, each
    first enlarged ``upscale`` times (cells of at most 860 x 570 pixels
    times that)."""
    import cv2

    rows, cols = max(1, round(h / (570 * upscale))), max(1, round(w / (860 * upscale)))
    ch, cw = -(-h // rows), -(-w // cols)
    order = np.random.default_rng(seed).permutation(len(photos))
    out = np.empty((rows * ch, cols * cw, 3), np.float32)
    for i in range(rows * cols):
        img = cv2.imread(str(photos[order[i % len(photos)]]), cv2.IMREAD_COLOR)[..., ::-1]
        if upscale != 1.0:
            img = cv2.resize(img, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
        if img.shape[0] < ch or img.shape[1] < cw:
            img = cv2.resize(img, (max(cw, img.shape[1]), max(ch, img.shape[0])), interpolation=cv2.INTER_AREA)
        y0, x0 = (img.shape[0] - ch) // 2, (img.shape[1] - cw) // 2
        r, c = divmod(i, cols)
        out[r * ch:(r + 1) * ch, c * cw:(c + 1) * cw] = img[y0:y0 + ch, x0:x0 + cw] / 255.0
    return out[:h, :w]


def make_source(photo_grid, iso: int, table, seed: int):
    """(counts uint16, RawMeta, CFA, clean camera RGB float32) of the
    synthetic raw at ``iso``."""
    from kpnt.color import camera_matrix
    from kpnt.io.meta import RawMeta
    from kpnt.mosaic import CFA
    from kpnt.noise.sampling import add_noise
    from kpnt.synth.unprocess import mosaic, to_raw_counts, unprocess

    xyz = camera_matrix(*CAMERA)
    cfa = CFA.bayer("RGGB")
    prof = table.lookup(*CAMERA, iso)
    rng = np.random.default_rng(seed)
    h, w = photo_grid.shape[:2]
    counts = np.empty((h, w), np.uint16)
    clean = np.empty((h, w, 3), np.float32)
    for y0 in range(0, h, 512):                     # bands: no full-size float64 copies
        clean[y0:y0 + 512] = unprocess(photo_grid[y0:y0 + 512], xyz, WB)
        x = mosaic(clean[y0:y0 + 512], cfa)
        colour = cfa.colour_map(*x.shape)
        noisy = add_noise(x, prof, colour, rng)
        counts[y0:y0 + 512] = to_raw_counts(noisy, BLACK, WHITE)
    meta = RawMeta(black=np.full(3, BLACK), white=WHITE, wb=WB, xyz_to_cam=xyz, make=CAMERA[0], model=CAMERA[1],
                   iso=iso, exposure_time=1 / 200, f_number=2.8)
    return counts, meta, cfa, clean


def band_errors(decoded: np.ndarray, ref: np.ndarray, noise100) -> list[dict]:
    """Per brightness band of ``ref`` (float, white 1): max / RMS error of
    ``decoded`` (uint16) in 16-bit levels and against the 14-bit step and
    the ISO-100 noise at the band's lower edge (its smallest noise)."""
    ref = np.clip(ref, 0, 1)
    err = decoded.astype(np.float32) / 65535.0 - ref
    step14 = 1.0 / (WHITE - BLACK)
    rows = []
    for lo, hi in zip(BANDS[:-1], BANDS[1:]):
        sel = (ref >= lo) & (ref < hi)
        if not sel.any():
            continue
        e = err[sel]
        a, b = noise100
        sigma = float(np.sqrt(max(a * lo + b, 1e-12)))
        mx, rms = float(np.abs(e).max()), float(np.sqrt(np.mean(e.astype(np.float64) ** 2)))
        rows.append(dict(band=f"{lo:g}-{min(hi, 1):g}", share=round(float(sel.mean()), 4),
                         max_lsb16=round(mx * 65535, 2), rms_lsb16=round(rms * 65535, 2),
                         max_over_step14=round(mx / step14, 3), rms_over_step14=round(rms / step14, 3),
                         max_over_noise100=round(mx / sigma, 4), rms_over_noise100=round(rms / sigma, 4)))
    return rows


def psnr(decoded: np.ndarray, ref: np.ndarray) -> float:
    mse = np.mean((decoded.astype(np.float64) / 65535.0 - np.clip(ref, 0, 1)) ** 2)
    return float(10 * np.log10(1.0 / mse)) if mse > 0 else float("inf")


def run(args) -> list[dict]:
    import rawpy
    import torch

    from kpnt.denoise import choose_noise, denoise_raw, to_uint16
    from kpnt.io import read_raw
    from kpnt.io.dng import write_cfa_dng, write_linear_dng
    from kpnt.mosaic.kinds import BAYER
    from kpnt.noise import load_profile_table
    from kpnt.weights_io import load_weights, shipped_weights

    torch.set_num_threads(args.threads)
    table = load_profile_table(args.profiles)
    p100 = table.lookup(*CAMERA, 100).as_array()[:, 1]       # (a, b) of green at ISO 100
    photos = sorted(p for p in Path(args.photos).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    w = int(round(np.sqrt(args.mp * 1e6 * 1.5) / 16) * 16)
    h = int(round(w / 1.5 / 16) * 16)
    grid = scene(photos, h, w, args.seed, args.upscale)
    model = load_weights(args.weights or shipped_weights(BAYER.name), sensor=BAYER.name)[0].eval()
    rows = []
    with tempfile.TemporaryDirectory(prefix="kpnt-dngsize-") as tmp:
        tmp = Path(tmp)
        for iso in args.isos:
            counts, meta, cfa, clean = make_source(grid, iso, table, args.seed)
            src, src_lj = tmp / "src.dng", tmp / "src_ljpeg.dng"
            write_cfa_dng(src, counts, cfa, meta, overwrite=True)
            write_cfa_dng(src_lj, counts, cfa, meta, overwrite=True, compression="ljpeg")
            with rawpy.imread(str(src_lj)) as rp:
                if not np.array_equal(rp.raw_image_visible, counts):
                    raise SystemExit("the lossless-JPEG source does not read back to the same counts")
            raw = read_raw(src)
            t0 = time.perf_counter()
            out = denoise_raw(model, raw, choose_noise(raw, table), dtype=np.float32, cpu_precision=args.cpu_precision)
            secs = time.perf_counter() - t0
            u16 = to_uint16(out)
            row = dict(iso=iso, width=w, height=h, denoise_s=round(secs, 1), source_uncompressed=src.stat().st_size,
                       source_ljpeg=src_lj.stat().st_size,
                       denoised_psnr_vs_clean_db=round(psnr(to_uint16(clean), out), 2))
            for enc in [f"compact{n}" for n in args.codes] + ["ljpeg", "none"]:
                dst = tmp / f"out_{enc}.dng"
                t0 = time.perf_counter()
                kind, codes = ("compact", int(enc[7:])) if enc.startswith("compact") else (enc, 4096)
                write_linear_dng(dst, u16, meta, overwrite=True, compression=kind, codes=codes)
                row[f"{enc}_write_s"] = round(time.perf_counter() - t0, 2)
                row[enc] = dst.stat().st_size
                row[f"{enc}_ratio"] = round(row[enc] / row["source_ljpeg"], 3)
                row[f"{enc}_bits_per_sample"] = round(row[enc] * 8 / u16.size, 2)
                if enc != "none":
                    with rawpy.imread(str(dst)) as rp:
                        dec = rp.raw_image[..., :3].copy()
                    row[f"{enc}_psnr_db"] = round(psnr(dec, out), 2)
                    if enc.startswith("compact"):
                        row[f"{enc}_bands"] = band_errors(dec, out, p100)
                    else:
                        assert np.array_equal(dec, u16), "lossless JPEG must read back exactly"
            row["source_bits_per_photosite"] = round(row["source_ljpeg"] * 8 / counts.size, 2)
            rows.append(row)
            print(fmt(row), flush=True)
    return rows


def fmt(r: dict) -> str:
    lines = [f"ISO {r['iso']} {r['width']}x{r['height']}: source {r['source_ljpeg'] / 1e6:.1f} MB lossless JPEG "
             f"({r['source_bits_per_photosite']} bits/photosite; {r['source_uncompressed'] / 1e6:.1f} MB uncompressed); "
             f"denoised in {r['denoise_s']} s, {r['denoised_psnr_vs_clean_db']} dB from the clean image"]
    for enc in [k[:-6] for k in r if k.endswith("_ratio")]:
        extra = f", PSNR {r[enc + '_psnr_db']} dB vs float" if enc + "_psnr_db" in r else ""
        lines.append(f"  {enc:8s} {r[enc] / 1e6:7.1f} MB = {r[enc + '_ratio']:.2f}x source, "
                     f"{r[enc + '_bits_per_sample']} bits/sample, written in {r[enc + '_write_s']} s{extra}")
    for b in [dict(b, enc=k[:-6]) for k in r if k.endswith("_bands") for b in r[k]]:
        lines.append(f"    {b['enc']} error, level {b['band']:>10s} ({b['share'] * 100:4.1f}% of samples): max "
                     f"{b['max_lsb16']:6.2f} rms {b['rms_lsb16']:6.2f} LSB16 = max {b['max_over_step14']:.3f} rms "
                     f"{b['rms_over_step14']:.3f} 14-bit steps = max {b['max_over_noise100']:.4f} rms "
                     f"{b['rms_over_noise100']:.4f} ISO-100 sigma")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mp", type=float, default=24.0, help="megapixels of the synthetic raw (default 24)")
    p.add_argument("--isos", default="100,3200", help="comma-separated ISOs (default 100,3200)")
    p.add_argument("--photos", default=str(ROOT.parent / "shared" / "data" / "photos" / "val"),
                   help="folder of sRGB photos for the scene (default ../shared/data/photos/val)")
    p.add_argument("--profiles", default=str(ROOT.parent / "shared" / "data" / "noiseprofiles.json"),
                   help="darktable noiseprofiles.json (default ../shared/data/noiseprofiles.json)")
    p.add_argument("--weights", default=None, help="weights file (default: the shipped Bayer weights)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    p.add_argument("--cpu-precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--upscale", type=float, default=1.0,
                   help="enlarge each photo this many times first (default 1: every pixel as detailed as a "
                   "downscaled photo; 2: closer to a 24-MP camera's per-pixel sharpness)")
    p.add_argument("--codes", default="2048", help="comma-separated table sizes of 'compact' to compare (default 2048, "
                   "kpnt's)")
    p.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args(argv)
    args.isos = [int(s) for s in args.isos.split(",") if s.strip()]
    args.codes = [int(s) for s in args.codes.split(",") if s.strip()]
    rows = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
