#!/usr/bin/env python3
"""Quality benchmark: kpnt against LibRaw, LibRaw + NLM, demosaicnet and demosaicnet + BM3D.

Trains nothing.  For every sensor x ISO it unprocesses clean photos into
synthetic raws with a real camera's colour matrix and noise profile
(darktable x 12, DESIGN.md section 1), writes them as CFA DNGs, and runs on
the *same* raws (``--methods``, comma-separated, default all):

* ``kpnt``: ``kpnt.io.read_raw`` + ``kpnt.denoise.denoise_raw`` with the given
  weights and the true noise profile (``--blind`` uses the blind estimate);
* ``libraw``: rawpy/LibRaw demosaic (AHD for Bayer, LibRaw's X-Trans
  interpolation), white-balanced as DESIGN.md section 8 prescribes, no
  denoising;
* ``libraw+nlm``: the same, then OpenCV non-local means per channel on a
  variance-stabilised image (generalised Anscombe transform with the known
  profile, so one strength fits every brightness), strength ``--nlm-h`` in
  units of the noise std;
* ``demosaicnet``: Gharbi et al. 2016, "Deep joint demosaicking and
  denoising", the pretrained Bayer / X-Trans networks that the PyPI package
  ``demosaicnet`` (0.0.14) ships as package files (``data/bayer.pth``,
  ``data/xtrans.pth``; loaded from disk, no network).  That package ships
  only the *noise-free* demosaicking models (3-channel masked mosaic in, RGB
  out): the paper's noise-aware joint model, which takes the noise level as
  an extra input, is not in it, so no noise level is given to it here.  Its
  input is the white-balanced linear mosaic, read from the same raw counts
  as the DNG (``--demosaicnet-domain srgb`` applies the sRGB curve first and
  inverts it after: its training photos were sRGB; on 4 BSDS val photos
  that is 1.3 dB better without noise but 0.1-0.3 dB worse at ISO 3200, so
  linear is the default), laid out
  as it expects: its Bayer pattern is GRBG and its X-Trans pattern a shift
  of LibRaw's, so the mosaic is padded by the phase shift that makes the two
  patterns coincide (found from the colour maps, never guessed), plus a
  phase-exact mirror padding for the network's valid convolutions (31 px
  Bayer, 12 px X-Trans), which is cropped off again;
* ``demosaicnet+bm3d``: the same, then colour BM3D (PyPI ``bm3d``, profile
  ``np``, opponent colour space) with the known noise level: each channel of
  the white-balanced output is variance-stabilised with the generalised
  Anscombe transform of the known white-balanced profile
  (``kpnt.baselines.gat``), BM3D runs with sigma = 1 on that scale, and the
  algebraic inverse (``gat_inverse``) maps back (the same recipe as NLM).
  sigma = 1 treats the demosaicked noise as white; after demosaicking it is
  in fact spatially and chromatically correlated, which this ignores.

It prints, per sensor x ISO x method, the mean per-image PSNR in the two
scoring spaces of DESIGN.md section 8 (white-balanced linear; sRGB through
the DNG colour matrix), the mean SSIM of the sRGB render (:func:`ssim`), a
6-pixel border ignored in all three, and seconds per megapixel (a method
built on another, e.g. ``libraw+nlm``, includes the base method's time).
A camera's profile table ends at some ISO (the Fujifilm X-T1's at 6400):
beyond it the lookup clamps to the last profile, and the script says so.
``--clean`` synthesises without noise (demosaicking only: the denoising
peers are dropped; kpnt still runs, with a ~zero profile, far outside the
noise levels it was trained on); it is how the demosaicnet phase was checked
against LibRaw (every non-equivalent phase of its pattern loses 13-19 dB).

The peers are benchmark-only, not dependencies of the kpnt package::

    pip install -e '.[bench]'      # or: pip install demosaicnet bm3d

(demosaicnet 0.0.14 imports ``pkg_resources``, which setuptools >= 81 no
longer ships; this script then provides a one-function stand-in for it that
resolves the package's own data files.)  A method whose package is missing is
skipped with a printed note.

Example::

    python tools/bench_quality.py --photos ../shared/data/bsds500/val --limit 10 \\
        --profiles ../shared/data/noiseprofiles.json \\
        --bayer-weights kpnt/weights/bayer.safetensors --xtrans-weights kpnt/weights/xtrans.safetensors \\
        --isos 800,3200,12800 --methods kpnt,libraw,libraw+nlm,demosaicnet,demosaicnet+bm3d
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import cv2
import numpy as np
import torch

from kpnt.baselines import NLM_STRENGTH, gat, gat_inverse, nlm_denoise
from kpnt.color import find_camera, linear_to_srgb, psnr, render_linear_wb, render_srgb, srgb_to_linear
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
METHODS = ("kpnt", "libraw", "libraw+nlm", "demosaicnet", "demosaicnet+bm3d")
#: methods that denoise (dropped by --clean)
DENOISERS = ("libraw+nlm", "demosaicnet+bm3d")
#: method -> the method whose output (and time) it builds on
BASE = {"libraw+nlm": "libraw", "demosaicnet+bm3d": "demosaicnet"}
#: scoring border, pixels (DESIGN.md section 8)
BORDER = 6


# ----------------------------------------------------------------------
# SSIM
# ----------------------------------------------------------------------
def ssim(a: np.ndarray, b: np.ndarray, border: int = BORDER, data_range: float = 1.0) -> float:
    """Mean SSIM (Wang, Bovik, Sheikh, Simoncelli 2004) of two images.

    The standard Gaussian-window form: 11x11 window, sigma 1.5, K1 = 0.01,
    K2 = 0.03, L = ``data_range``, population (biased) local variances.
    ``border`` pixels are dropped on every side first (as for PSNR); local
    statistics are computed with OpenCV's Gaussian blur (reflect-101 edges)
    and the SSIM map is averaged without its outer 5 pixels, where the
    window would reach past the image; colour images are scored per channel
    and the channel means averaged.  This matches scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=L, channel_axis=-1)``.

    Args:
        a, b: (H, W) or (H, W, C) arrays of equal shape, values on [0, L].
    Returns:
        Mean SSIM; 1.0 for identical images.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim not in (2, 3):
        raise ValueError(f"ssim needs two images of equal shape (H, W[, C]), got {a.shape} and {b.shape}")
    if border:
        a = a[border:-border, border:-border]
        b = b[border:-border, border:-border]
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    win, sigma, pad = 11, 1.5, 5
    if min(a.shape[:2]) <= 2 * pad:
        raise ValueError(f"image of {a.shape[:2]} too small for an 11x11 SSIM window")
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2

    def blur(x):
        return cv2.GaussianBlur(x, (win, win), sigma, borderType=cv2.BORDER_REFLECT_101)

    vals = []
    for c in range(a.shape[2]):
        x, y = np.ascontiguousarray(a[..., c]), np.ascontiguousarray(b[..., c])
        mx, my = blur(x), blur(y)
        vx = blur(x * x) - mx * mx
        vy = blur(y * y) - my * my
        cxy = blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        vals.append(s[pad:-pad, pad:-pad].mean())
    return float(np.mean(vals))


# ----------------------------------------------------------------------
# demosaicnet (Gharbi et al. 2016)
# ----------------------------------------------------------------------
def import_demosaicnet():
    """Import the ``demosaicnet`` package, or return ``(None, reason)``.

    demosaicnet 0.0.14 finds its weight files with
    ``pkg_resources.resource_filename``; where setuptools no longer ships
    ``pkg_resources`` a stand-in module with just that function (resolving
    paths inside the installed package) is registered first.  Refuses the
    package when its pretrained weight files are not on disk, since then
    it would have to fetch them at run time.
    """
    spec = importlib.util.find_spec("demosaicnet")
    if spec is None or spec.origin is None:
        return None, "demosaicnet is not installed (pip install demosaicnet)"
    pkg_dir = Path(spec.origin).parent
    missing = [n for n in ("data/bayer.pth", "data/xtrans.pth") if not (pkg_dir / n).is_file()]
    if missing:
        return None, f"demosaicnet at {pkg_dir} has no {', '.join(missing)}: it would download weights at run time"
    try:
        have = "pkg_resources" in sys.modules or importlib.util.find_spec("pkg_resources") is not None
    except (ImportError, ValueError):
        have = False
    if not have:
        shim = types.ModuleType("pkg_resources")

        def resource_filename(package: str, name: str) -> str:
            return str(Path(importlib.util.find_spec(package).origin).parent / name)

        shim.resource_filename = resource_filename
        sys.modules["pkg_resources"] = shim
    import demosaicnet

    return demosaicnet, ""


def phase_mirror_index(n: int, before: int, after: int, period: int) -> np.ndarray:
    """Source indices that pad an axis of length ``n`` of a mosaic by mirroring
    while keeping the CFA phase.

    A padded position ``i`` (``-before <= i < n + after``) takes the sample
    of the mirror image of ``i`` moved by less than one ``period`` towards the
    inside, to the nearest index ``j`` with ``j = i (mod period)``: the
    padding has the right colour at every site and continues the image
    smoothly (plain reflection would put wrong colours there).
    """
    i = np.arange(-before, n + after)
    j = i.copy()
    lo = i < 0
    j[lo] = -i[lo] + np.mod(2 * i[lo], period)
    hi = i >= n
    m = 2 * (n - 1) - i[hi]
    j[hi] = m - np.mod(m - i[hi], period)
    if (j < 0).any() or (j >= n).any():
        raise ValueError(f"an axis of {n} is too short to mirror-pad by {before}/{after} with period {period}")
    assert (np.mod(j - i, period) == 0).all()
    return j


class DemosaicNet:
    """One of demosaicnet's pretrained networks, fed a kpnt mosaic.

    Args:
        dn: the imported ``demosaicnet`` module.
        sensor: ``"bayer"`` or ``"xtrans"``.
        domain: ``"linear"`` (the white-balanced mosaic as it is) or
            ``"srgb"`` (the sRGB curve is applied before the network and
            inverted after it).
    """

    def __init__(self, dn, sensor: str, domain: str = "linear"):
        if sensor == "bayer":
            self.net = dn.BayerDemosaick(pretrained=True).eval()
            self.pattern = dn.bayer(np.ones((3, 2, 2), np.float32), return_mask=True).argmax(0)
        else:
            self.net = dn.XTransDemosaick(pretrained=True).eval()
            self.pattern = dn.xtrans_cell(torch=False).argmax(0)
        self.domain = domain
        with torch.no_grad():  # the valid convolutions' margin, per side
            s = 96
            out = self.net(torch.zeros(1, 3, s, s)).shape[-1]
        if (s - out) % 2:
            raise RuntimeError(f"demosaicnet crops {s - out} px: not symmetric")
        self.margin = (s - out) // 2

    def shift(self, cfa: CFA) -> tuple[int, int]:
        """(sy, sx): padding ``cfa``'s mosaic by sy rows and sx columns (plus
        whole periods) puts it in the network's pattern."""
        p = int(np.lcm(cfa.period, self.pattern.shape[0]))
        ours = cfa.colour_map(2 * p, 2 * p)
        theirs = np.tile(self.pattern, (p // self.pattern.shape[0],) * 2)
        for sy in range(p):
            for sx in range(p):
                if (ours[p - sy : 2 * p - sy, p - sx : 2 * p - sx] == theirs).all():
                    return sy, sx
        raise ValueError(f"{cfa} is no phase of demosaicnet's pattern {self.pattern.tolist()}")

    def __call__(self, mosaic_wb: np.ndarray, cfa: CFA) -> np.ndarray:
        """Demosaic a white-balanced mosaic.

        Args:
            mosaic_wb: (H, W) white-balanced linear mosaic (white = 1).
            cfa: its CFA.
        Returns:
            (H, W, 3) float32 white-balanced linear RGB.
        """
        h, w = mosaic_wb.shape
        pd = self.pattern.shape[0]
        p = int(np.lcm(cfa.period, pd))
        sy, sx = self.shift(cfa)
        top = sy + -(-(self.margin - sy) // p) * p
        left = sx + -(-(self.margin - sx) // p) * p
        bottom = self.margin + (-(top + h + self.margin)) % pd
        right = self.margin + (-(left + w + self.margin)) % pd
        iy = phase_mirror_index(h, top, bottom, cfa.period)
        ix = phase_mirror_index(w, left, right, cfa.period)
        m = mosaic_wb[np.ix_(iy, ix)].astype(np.float32)
        if self.domain == "srgb":
            m = linear_to_srgb(m)
        colour = np.tile(self.pattern, (-(-m.shape[0] // pd), -(-m.shape[1] // pd)))[: m.shape[0], : m.shape[1]]
        x = np.zeros((1, 3) + m.shape, np.float32)
        for c in range(3):
            x[0, c][colour == c] = m[colour == c]
        with torch.no_grad():
            y = self.net(torch.from_numpy(x))[0].permute(1, 2, 0).numpy()
        y = y[top - self.margin : top - self.margin + h, left - self.margin : left - self.margin + w]
        if self.domain == "srgb":
            y = srgb_to_linear(y)
        return np.ascontiguousarray(y, dtype=np.float32)


def bm3d_denoise(rgb_wb: np.ndarray, noise_wb: np.ndarray) -> np.ndarray:
    """Colour BM3D of a white-balanced linear image with a known noise profile.

    Each channel goes through the generalised Anscombe transform of its
    white-balanced profile (noise std ~1 at every brightness), ``bm3d_rgb``
    (profile ``np``, opponent colour space) runs with sigma = 1, and
    :func:`kpnt.baselines.gat_inverse` maps back.

    Args:
        rgb_wb: (H, W, 3) white-balanced linear RGB.
        noise_wb: (2, 3) white-balanced [a; b] (variance a*x + b).
    Returns:
        (H, W, 3) float32, same scale.
    """
    import bm3d

    z = np.empty(rgb_wb.shape, np.float64)
    ab = [(max(float(noise_wb[0, c]), 1e-12), float(noise_wb[1, c])) for c in range(3)]
    for c, (a, b) in enumerate(ab):
        z[..., c] = gat(rgb_wb[..., c].astype(np.float64), a, b)
    d = bm3d.bm3d_rgb(z, 1.0, profile="np", colorspace="opp")
    out = np.empty(rgb_wb.shape, np.float32)
    for c, (a, b) in enumerate(ab):
        out[..., c] = gat_inverse(d[..., c], a, b)
    return out


# ----------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------
def resolve_methods(requested: list[str], args) -> tuple[list[str], dict]:
    """Drop methods that cannot run here, with a printed note; import peers."""
    peers = {}
    methods = []
    for m in requested:
        if args.clean and m in DENOISERS:
            print(f"note: --clean: {m} skipped (it denoises, and the clean raws have no noise)")
            continue
        if m.startswith("demosaicnet") and "demosaicnet" not in peers:
            peers["demosaicnet"], why = import_demosaicnet()
            if why:
                print(f"note: {why}; demosaicnet methods skipped")
        if m.startswith("demosaicnet") and peers["demosaicnet"] is None:
            continue
        if m == "demosaicnet+bm3d" and importlib.util.find_spec("bm3d") is None:
            print("note: bm3d is not installed (pip install bm3d); demosaicnet+bm3d skipped")
            continue
        methods.append(m)
    return methods, peers


def run(args) -> list[dict]:
    from kpnt.weights_io import load_weights

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    methods, peers = resolve_methods(args.methods, args)
    needed = set(methods) | {BASE[m] for m in methods if m in BASE}
    table = load_profile_table(args.profiles)
    photos = PhotoSource.from_folder(args.photos, downscale=args.downscale, limit=args.limit)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="kpnt-bench-"))
    for sensor in args.sensors:
        cam = find_camera(args.bayer_camera if sensor == "bayer" else args.xtrans_camera)
        model = None
        if "kpnt" in needed:
            weights = args.bayer_weights if sensor == "bayer" else args.xtrans_weights
            if weights:
                model = load_weights(weights, sensor=sensor)[0].eval()
            else:
                print(f"note: no --{sensor}-weights: kpnt skipped for {sensor}")
        dnet = DemosaicNet(peers["demosaicnet"], sensor, args.demosaicnet_domain) if "demosaicnet" in needed else None
        cfa = CFA.bayer("RGGB") if sensor == "bayer" else CFA.xtrans()
        profiled = table.isos(cam["make"], cam["model"])
        for iso in args.isos:
            clamped = not (profiled[0] <= iso <= profiled[-1])
            if clamped:
                edge = profiled[-1] if iso > profiled[-1] else profiled[0]
                print(f"note: ISO {iso} is outside {cam['make']} {cam['model']}'s profiled ISOs "
                      f"({profiled[0]}-{profiled[-1]}): the table lookup clamps to the ISO {edge} profile")
            prof = table.lookup(cam["make"], cam["model"], iso)
            if args.clean:  # NoiseProfile refuses 0: 1e-9 x leaves only the 14-bit rounding
                prof = prof.scaled(1e-9)
            cm = CameraModel(f"{cam['make']} {cam['model']}", cam["xyz_to_cam"], prof.as_array()[None])
            gen = torch.Generator().manual_seed(1000 + iso)
            scores = {m: {"lin": [], "srgb": [], "ssim": [], "sec": 0.0, "mpix": 0.0} for m in METHODS}
            for k, img in enumerate(photos.photos):
                h = img.shape[1] // 6 * 6
                w = img.shape[2] // 6 * 6
                b = synthesize(img[None, :, :h, :w], cfa, [cm], gen, SynthConfig(exposure_ev=(0.0, 0.0), headroom=(0.9, 0.9), noise_jitter=0.0))
                wb = b.wb[0].numpy().astype(np.float64)
                ref_cam = (b.target[0].permute(1, 2, 0).numpy() / wb)
                colour = cfa.colour_map(h, w)
                mosaic = (b.x[0, 0].numpy() / wb[colour])
                counts = np.clip(np.rint(mosaic * (WHITE - BLACK) + BLACK), 0, 65535).astype(np.uint16)
                meta = RawMeta(black=np.full(3, BLACK), white=WHITE, wb=wb, xyz_to_cam=cam["xyz_to_cam"], make=cam["make"], model=cam["model"], iso=int(iso))
                dng = tmp / f"{sensor}_{iso}_{k}.dng"
                write_cfa_dng(dng, counts, cfa, meta, overwrite=True)
                mp = h * w / 1e6
                noise_wb = np.stack([prof.a * wb, prof.b * wb**2])
                outs = {}

                def timed(name, fn):
                    t0 = time.perf_counter()
                    outs[name] = fn()
                    scores[name]["sec"] += time.perf_counter() - t0
                    scores[name]["mpix"] += mp

                if model is not None:
                    def run_kpnt():
                        raw = read_raw(dng)
                        noise = choose_noise(raw) if args.blind else NoiseChoice(prof.as_array(), "given")
                        return denoise_raw(model, raw, noise, tile=0)
                    timed("kpnt", run_kpnt)
                if "libraw" in needed:
                    timed("libraw", lambda: libraw_demosaic_counts(counts, cfa, meta, tmp_dir=tmp))
                if "libraw+nlm" in needed:
                    timed("libraw+nlm", lambda: nlm_denoise(outs["libraw"] * wb, noise_wb, args.nlm_h) / wb)
                if dnet is not None:
                    # the counts the DNG holds, white-balanced, white = 1
                    timed("demosaicnet", lambda: dnet((counts.astype(np.float64) - BLACK) / (WHITE - BLACK) * wb[colour], cfa) / wb)
                if "demosaicnet+bm3d" in needed:
                    timed("demosaicnet+bm3d", lambda: bm3d_denoise(outs["demosaicnet"] * wb, noise_wb) / wb)
                ref_lin = render_linear_wb(ref_cam, wb)
                ref_srgb = render_srgb(ref_cam, wb, cam["xyz_to_cam"])
                for m, o in outs.items():
                    srgb = render_srgb(o, wb, cam["xyz_to_cam"])
                    scores[m]["lin"].append(psnr(render_linear_wb(o, wb), ref_lin, border=BORDER))
                    scores[m]["srgb"].append(psnr(srgb, ref_srgb, border=BORDER))
                    scores[m]["ssim"].append(ssim(srgb, ref_srgb, border=BORDER))
                if args.verbose:
                    print(f"  {sensor} ISO {iso} photo {k}: " + ", ".join(f"{m} {scores[m]['srgb'][-1]:.2f}" for m in outs), flush=True)
            for m in methods:
                s = scores[m]
                if s["lin"]:
                    sec = s["sec"] + (scores[BASE[m]]["sec"] if m in BASE else 0.0)
                    rows.append(dict(sensor=sensor, iso=iso, camera=cm.name, method=m, n=len(s["lin"]), clean=bool(args.clean),
                                     iso_clamped=clamped, psnr_lin=float(np.mean(s["lin"])), psnr_srgb=float(np.mean(s["srgb"])),
                                     ssim_srgb=float(np.mean(s["ssim"])), sec_per_mpix=sec / s["mpix"]))
    return rows


def _methods(s: str) -> list[str]:
    out = [m.strip().lower() for m in s.split(",") if m.strip()]
    bad = [m for m in out if m not in METHODS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"unknown method(s) {bad}: choose from {','.join(METHODS)}")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, required=True, help="folder of clean sRGB photos (BSDS500 val)")
    p.add_argument("--profiles", type=Path, required=True, help="darktable noiseprofiles.json")
    p.add_argument("--limit", type=int, default=20, help="number of photos (default 20)")
    p.add_argument("--downscale", type=int, default=2, help="downscale photos first, as in training (default 2)")
    p.add_argument("--sensors", nargs="+", default=["bayer", "xtrans"], choices=["bayer", "xtrans"])
    p.add_argument("--isos", type=lambda s: [int(v) for v in s.split(",")], default=[3200], help="comma-separated ISOs (default 3200)")
    p.add_argument("--methods", type=_methods, default=list(METHODS), help=f"comma-separated, from {','.join(METHODS)} (default all)")
    p.add_argument("--bayer-camera", default="Nikon D750")
    p.add_argument("--xtrans-camera", default="Fujifilm X-T1")
    p.add_argument("--bayer-weights", type=Path)
    p.add_argument("--xtrans-weights", type=Path)
    p.add_argument("--blind", action="store_true", help="kpnt uses its blind noise estimate instead of the true profile")
    p.add_argument("--nlm-h", type=float, default=NLM_STRENGTH, help=f"NLM strength in noise standard deviations (default {NLM_STRENGTH}, tuned on BSDS train)")
    p.add_argument("--demosaicnet-domain", choices=["linear", "srgb"], default="linear",
                   help="values fed to demosaicnet: white-balanced linear (default) or sRGB-curve encoded (as its training photos)")
    p.add_argument("--clean", action="store_true", help="no noise (demosaicking check; denoising methods dropped)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--verbose", action="store_true", help="print each photo's sRGB PSNRs")
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = p.parse_args(argv)
    rows = run(args)
    print(f"\n{'sensor':7} {'ISO':>6} {'method':16} {'n':>3} {'PSNR lin':>9} {'PSNR sRGB':>10} {'SSIM sRGB':>10} {'s/MP':>7}")
    for r in rows:
        flag = " (profile clamped)" if r["iso_clamped"] else ""
        print(f"{r['sensor']:7} {r['iso']:>6} {r['method']:16} {r['n']:>3} {r['psnr_lin']:9.2f} {r['psnr_srgb']:10.2f} {r['ssim_srgb']:10.4f} {r['sec_per_mpix']:7.2f}{flag}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
