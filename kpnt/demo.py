"""``make demo``: the main job on the bundled sample, end to end.

1. Writes synthetic ISO ladders (Bayer and X-Trans CFA DNGs) from the bundled
   photo (``kpnt/data/sample_coffee.png``, CC0) with real camera noise
   profiles (``kpnt/data/sample_profiles.json``, from darktable, x 12 to raw
   scale).
2. Denoises the high-ISO frames with the shipped weights into LinearRaw DNGs.
3. Writes a side-by-side PNG crop per sensor: noisy (LibRaw demosaic, no
   denoising), kpnt, LibRaw + non-local means, and the reference (the
   clean scene), with the PSNR of each panel printed.

Run ``python -m kpnt.demo --out demo-out``.
"""
from __future__ import annotations

import argparse
import sys
import time
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
from kpnt.mosaic.kinds import BAYER, XTRANS

#: (sensor, CFA name, camera make, model, ISOs: reference first)
LADDERS = [
    (BAYER.name, "RGGB", "Nikon", "D750", [100, 3200, 12800]),
    (XTRANS.name, XTRANS.name, "Fujifilm", "X-T1", [200, 3200, 6400]),
]


def _data(name: str) -> Path:
    return Path(str(resources.files("kpnt") / "data" / name))


def _label(img: np.ndarray, text: str) -> np.ndarray:
    img = img.copy()
    cv2.rectangle(img, (0, 0), (img.shape[1], 22), (0, 0, 0), -1)
    cv2.putText(img, text, (5, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def _to_png(srgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor((np.clip(srgb, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR)


def run(out: Path, iso_shown: int = 3200, crop: int = 200) -> int:
    from kpnt.baselines import nlm_denoise
    from kpnt.color import psnr, render_srgb
    from kpnt.denoise import NoiseChoice, denoise_raw
    from kpnt.io.demosaic import libraw_demosaic_counts
    from kpnt.io.dng import write_linear_dng
    from kpnt.io.raw import read_raw
    from kpnt.mosaic import CFA
    from kpnt.noise import load_profile_table
    from kpnt.synth import load_photo, make_ladder
    from kpnt.synth.scene import clean_scenes
    from kpnt.synth.ladder import load_truth
    from kpnt.errors import WeightsError
    from kpnt.weights_io import load_weights, shipped_weights
    from kpnt.denoise import to_uint16

    out.mkdir(parents=True, exist_ok=True)
    photo = load_photo(_data("sample_coffee.png"))
    table = load_profile_table(_data("sample_profiles.json"))
    print(f"sample photo: {_data('sample_coffee.png')} ({photo.shape[1]}x{photo.shape[0]}, CC0, Rachel Michetti via scikit-image)")
    status = 0
    for sensor, cfa_name, make, model, isos in LADDERS:
        cfa = CFA.xtrans() if cfa_name == XTRANS.name else CFA.bayer(cfa_name)
        folder = out / sensor
        frames = make_ladder(photo, cfa, make, model, table, isos, folder, "coffee", seed=7, overwrite=True)
        print(f"\n{sensor}: {make} {model}, ladder written to {folder}/")
        for path, truth in frames:
            print(f"  {path.name:24s} ISO {truth['iso']:>5}  noise a={np.round(truth['noise']['a'], 6).tolist()} b={np.format_float_scientific(truth['noise']['b'][1], 2)}")

        try:
            weights = shipped_weights(sensor)
        except WeightsError as exc:
            print(f"  {exc}: skipping the denoising step")
            status = 1
            continue
        net, meta = load_weights(weights, sensor=sensor)
        net.eval()
        truth_doc, plan = load_truth(folder / "coffee_truth.json")
        clean = clean_scenes(photo, np.asarray(truth_doc["xyz_to_cam"]), plan)
        for path, truth in frames[1:]:
            raw = read_raw(path)
            noise = NoiseChoice(np.array([truth["noise"]["a"], truth["noise"]["b"]], np.float32), "given")
            t0 = time.perf_counter()
            rgb = denoise_raw(net, raw, noise, tile=0)
            dt = time.perf_counter() - t0
            dst = folder / f"{path.stem}_kpnt.dng"
            write_linear_dng(dst, to_uint16(rgb), raw.meta, overwrite=True)
            print(f"  denoised {path.name} -> {dst.name} in {dt:.1f} s")
            if truth["iso"] != iso_shown:
                continue
            wb, m = raw.meta.wb, raw.meta.xyz_to_cam
            noisy = libraw_demosaic_counts(raw.raw, raw.cfa, raw.meta)
            nlm = nlm_denoise(noisy * wb, np.stack([noise.profile[0] * wb, noise.profile[1] * wb**2])) / wb
            reference = clean[frames.index((path, truth))]
            panels = {"noisy (LibRaw)": noisy, "kpnt": rgb, "LibRaw+NLM": nlm, "reference (clean)": reference}
            srgb = {k: render_srgb(v, wb, m) for k, v in panels.items()}
            h, w = rgb.shape[:2]
            y0, x0 = max(0, h // 2 - crop // 2), max(0, w // 2 - crop // 2)
            tiles = []
            for name, img in srgb.items():
                score = "" if name.startswith("reference") else f" {psnr(img, srgb['reference (clean)']):.1f} dB"
                tiles.append(_label(_to_png(img[y0 : y0 + crop, x0 : x0 + crop]), name + score))
            side = np.concatenate(tiles, axis=1)
            png = out / f"{sensor}_iso{iso_shown}_side_by_side.png"
            cv2.imwrite(str(png), side)
            print(f"  side-by-side crop: {png}  (sRGB PSNR of the whole frame against the clean scene in the titles)")
    return status


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m kpnt.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder (default demo-out)")
    args = p.parse_args(argv)
    return run(args.out)


if __name__ == "__main__":
    sys.exit(main())
