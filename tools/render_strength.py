"""Side-by-side crops of one noisy raw denoised at several ``--strength``
values (docs/img/strength_bayer_iso12800.png in the README).

The raw is the demo's synthetic ISO ladder frame (the bundled CC0 photo
``kpnt/data/sample_coffee.png``, unprocessed to a Nikon D750's camera RGB,
mosaicked, darktable's D750 noise profile at raw scale; see
:mod:`kpnt.demo`), denoised with the shipped weights (or ``--weights``) at
each strength; every panel is rendered to sRGB the same way and titled with
its strength and the sRGB PSNR of the whole frame against the clean scene.
Re-run it after the weights change::

    python tools/render_strength.py                       # -> docs/img/strength_bayer_iso12800.png
    python tools/render_strength.py --iso 3200 --strengths 0 0.3 0.6 1 --out /tmp/s.png
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from kpnt.mosaic.kinds import BAYER  # noqa: E402


def render(out: Path, iso: int, strengths: list[float], weights: Path | None, crop: int) -> None:
    from kpnt.color import psnr, render_srgb
    from kpnt.demo import _data, _label, _to_png
    from kpnt.denoise import NoiseChoice, denoise_raw
    from kpnt.io.raw import read_raw
    from kpnt.mosaic import CFA
    from kpnt.noise import load_profile_table
    from kpnt.synth import load_photo, make_ladder
    from kpnt.synth.ladder import load_truth
    from kpnt.synth.scene import clean_scenes
    from kpnt.weights_io import load_weights, shipped_weights

    photo = load_photo(_data("sample_coffee.png"))
    table = load_profile_table(_data("sample_profiles.json"))
    sensor = BAYER.name                   # the strength pictures are of the Bayer model
    net, _ = load_weights(weights or shipped_weights(sensor), sensor=sensor)
    net.eval()
    with tempfile.TemporaryDirectory() as tmp:
        frames = make_ladder(photo, CFA.bayer("RGGB"), "Nikon", "D750", table, [100, iso], Path(tmp), "coffee", seed=7)
        truth_doc, plan = load_truth(Path(tmp) / "coffee_truth.json")
        path, truth = frames[1]
        raw = read_raw(path)
        clean = clean_scenes(photo, np.asarray(truth_doc["xyz_to_cam"]), plan)[1]
    noise = NoiseChoice(np.array([truth["noise"]["a"], truth["noise"]["b"]], np.float32), "given")
    wb, m = raw.meta.wb, raw.meta.xyz_to_cam
    ref = render_srgb(clean, wb, m)
    h, w = ref.shape[:2]
    y0, x0 = max(0, h // 2 - crop // 2), max(0, w // 2 - crop // 2)
    tiles = []
    for s in strengths:
        mosaic = raw.mosaic.copy()          # denoise_raw fixes hot pixels in place: every panel starts alike
        rgb = denoise_raw(net, raw, noise, tile=0, strength=s, hot_pixels=True, cpu_precision="auto")
        raw.mosaic = mosaic
        img = render_srgb(rgb, wb, m)
        label = f"strength {s:g}{' (demosaic only)' if s == 0 else ''}: {psnr(img, ref):.1f} dB"
        tiles.append(_label(_to_png(img[y0:y0 + crop, x0:x0 + crop]), label))
        print(label, flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), np.concatenate(tiles, axis=1))
    print(f"wrote {out} (ISO {iso}, {crop}x{crop} crops; PSNR: whole frame, sRGB, against the clean scene)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iso", type=int, default=12800, help="ISO of the synthetic frame (default 12800)")
    p.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    p.add_argument("--weights", type=Path, help="Bayer weights (default: the shipped ones)")
    p.add_argument("--crop", type=int, default=240, help="side of each panel in pixels (default 240)")
    p.add_argument("--out", type=Path, default=None, help="PNG to write (default docs/img/strength_bayer_iso<ISO>.png)")
    args = p.parse_args(argv)
    render(args.out or ROOT / "docs" / "img" / f"strength_bayer_iso{args.iso}.png", args.iso, args.strengths, args.weights,
           args.crop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
