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

Cameras: the defaults, ``--bayer-camera "Nikon D750"`` and
``--xtrans-camera "Fujifilm X-T1"``, are *held out* of the shipped weights'
training (issue 6: those weights are trained on every bundled camera except
the Nikon D750 and Sony ILCE-7M2, Bayer, and the Fujifilm X-T1 and X-E2,
X-Trans), so the benchmark scores cameras the network has not seen.

Noise: the camera's darktable profile at the ISO (x 12, raw scale).  A
profile table ends at some ISO (the Fujifilm X-T1's at 6400); extended ISOs
are a digital push of the last analogue ISO, so beyond it the profile is
the last one pushed by ``r = iso / last`` (:func:`push_profile`: ``a -> r a``,
``b -> r^2 b``), not the table's clamp; the script prints a note and the
rows say ``"noise": "pushed from ISO 6400"``.  Each photo of each cell has
its own seed (:func:`case_seed`), so results do not depend on ``--jobs``.

It prints, per sensor x ISO x method, the mean per-image PSNR in the two
scoring spaces of DESIGN.md section 8 (white-balanced linear; sRGB through
the DNG colour matrix), the mean SSIM of the sRGB render (:func:`ssim`), a
6-pixel border ignored in all three; then a markdown table per sensor
(methods x ISO cells) with the issue-6 acceptance checks of every cell
(kpnt - (LibRaw+NLM) >= 2 dB, kpnt > demosaicnet, kpnt >= demosaicnet+BM3D
- 0.5 dB, on both PSNRs: :func:`acceptance_checks`; printed PASS/FAIL,
never asserted); then a speed table.

Speed (``--time-device cpu|cuda|both``; default the CPU, plus CUDA when
torch sees a GPU; outputs are scored from CUDA when it is timed): kpnt
(``denoise_raw`` on the decoded raw: on CUDA with the fused kernels,
``backend='cuda'``, built before any timing and their build time reported
apart; the PyTorch reference with a printed reason if they cannot be built)
and demosaicnet (whole call, host array in and out) run on every timed
device; LibRaw, NLM and BM3D always on the CPU (the ``bm3d`` package has no
GPU path), in ``--jobs`` worker processes of one thread each.  CUDA timings
are synchronised and follow an untimed warm-up.  Seconds per megapixel are
given (a) over the benchmark's photos (a method built on another, e.g.
``libraw+nlm``, includes the base method's time; small photos are
launch-bound on a GPU, and CPU timings share the machine with the
workers) and (b), the headline, on one synthetic raw of ``--speed-mp``
megapixels (default 24; on the CPU at most ``--cpu-speed-mp``, default 4)
for kpnt and demosaicnet, with BM3D timed on demosaicnet's output of one
``--bm3d-speed-mp`` synthetic raw (default 1 MP; queued first, in a worker):
demosaicnet+BM3D's headline s/MP is demosaicnet's on the large raw plus
BM3D's on the crop, and kpnt's speed-up over it is printed from numbers of
the same run.
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
        --isos 800,3200,12800 --methods kpnt,libraw,libraw+nlm,demosaicnet,demosaicnet+bm3d --jobs 4

(the shipped weights by default; ``--bayer-weights``/``--xtrans-weights``
for others).  ``--json`` writes ``{rows, speed, speedup, checks, config,
...}``.  Optional packages (rawpy, demosaicnet, bm3d, safetensors) are
checked before use, with a one-line note or error naming what is missing;
demosaicnet loads only the weight files its package ships (imageio,
wget and tqdm, which it imports for downloads and training, are stubbed
when absent).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import sys
import tempfile
import time
import types
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from kpnt.baselines import NLM_STRENGTH, gat, gat_inverse, nlm_denoise
from kpnt.color import find_camera, linear_to_srgb, psnr, render_linear_wb, render_srgb, srgb_to_linear
from kpnt.denoise import NoiseChoice, choose_noise, default_tile, denoise_array, denoise_raw
from kpnt.io.demosaic import libraw_demosaic_counts
from kpnt.io.dng import write_cfa_dng
from kpnt.io.meta import RawMeta
from kpnt.mosaic import CFA
from kpnt.noise import load_profile_table
from kpnt.noise.profile import DARKTABLE_RAW_SCALE, NoiseProfile
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
    # demosaicnet imports imageio and wget (dataset download) and tqdm
    # (training loop) at import time; none is used here, so where they are
    # missing, stand-ins that raise on use let the models import.
    for name, attr in (("imageio", "imread"), ("wget", "download"), ("tqdm", "tqdm")):
        try:
            found = name in sys.modules or importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            stub = types.ModuleType(name)

            def unavailable(*_a, _name=name, **_k):
                raise ImportError(f"{_name} is not installed (only demosaicnet's dataset download needs it)")

            setattr(stub, attr, unavailable)
            sys.modules[name] = stub
    if not have:
        shim = types.ModuleType("pkg_resources")

        def resource_filename(package: str, name: str) -> str:
            return str(Path(importlib.util.find_spec(package).origin).parent / name)

        shim.resource_filename = resource_filename
        sys.modules["pkg_resources"] = shim
    try:
        import demosaicnet
    except ImportError as err:
        return None, f"demosaicnet at {pkg_dir} cannot be imported ({err})"
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
        device: torch device of the network (the mosaic is prepared with
            numpy on the host and the result copied back: a call is host
            array in, host array out, like kpnt's ``denoise_raw``).
    """

    def __init__(self, dn, sensor: str, domain: str = "linear", device="cpu"):
        if sensor == "bayer":
            self.net = dn.BayerDemosaick(pretrained=True).eval()
            self.pattern = dn.bayer(np.ones((3, 2, 2), np.float32), return_mask=True).argmax(0)
        else:
            self.net = dn.XTransDemosaick(pretrained=True).eval()
            self.pattern = dn.xtrans_cell(torch=False).argmax(0)
        self.domain = domain
        self.device = torch.device(device)
        self.net = self.net.to(self.device)
        with torch.no_grad():  # the valid convolutions' margin, per side
            s = 96
            out = self.net(torch.zeros(1, 3, s, s, device=self.device)).shape[-1]
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
            y = self.net(torch.from_numpy(x).to(self.device))[0].permute(1, 2, 0).float().cpu().numpy()
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
# noise beyond a camera's profiled ISOs
# ----------------------------------------------------------------------
def push_profile(profile: NoiseProfile, r: float) -> NoiseProfile:
    """Noise profile of a raw digitally pushed by the factor ``r``.

    Extended ISOs are the last analogue ISO's raw multiplied by
    ``r = iso / last``.  In normalised raw units, a pushed value is
    ``y = r x`` where ``x`` has ``var(x) = a m + b`` at its mean
    ``m = E[x] = E[y] / r``, so

        var(y) = r^2 var(x) = r^2 (a y / r + b) = (r a) y + r^2 b,

    i.e. ``a -> r a``, ``b -> r^2 b`` (the same algebra as an exposure push,
    :meth:`NoiseProfile.exposure_scaled`).  ``r = 1`` returns the profile
    unchanged.
    """
    r = float(r)
    if not np.isfinite(r) or r <= 0:
        raise ValueError(f"push factor must be a positive finite number, got {r}")
    return NoiseProfile(a=profile.a * r, b=profile.b * (r * r))


def profile_at_iso(table, make: str, model: str, iso: float, raw_scale: float = DARKTABLE_RAW_SCALE) -> tuple[NoiseProfile, str]:
    """Raw-scale noise profile of a camera at ``iso`` and how it was found.

    Within the profiled range: the table's lookup (``"profiled"`` at a
    profiled ISO, else ``"interpolated"``).  Above the last profiled ISO the
    camera pushes digitally (:func:`push_profile` of the last profile by
    ``iso / last``; ``"pushed from ISO <last>"``) instead of the table's
    clamp, which would give ISO 12800 the ISO 6400 noise.  Below the first
    it is the table's clamp (``"clamped to ISO <first>"``).
    """
    profiled = table.isos(make, model)
    first, last = profiled[0], profiled[-1]
    if iso > last:
        return push_profile(table.lookup(make, model, last, raw_scale), iso / last), f"pushed from ISO {last}"
    prof = table.lookup(make, model, iso, raw_scale)
    if iso < first:
        return prof, f"clamped to ISO {first}"
    return prof, ("profiled" if any(abs(iso - v) < 1e-6 for v in profiled) else "interpolated")


# ----------------------------------------------------------------------
# the acceptance checks of issue 6 (computed and printed, never asserted)
# ----------------------------------------------------------------------
#: (name, peer, test on d = kpnt - peer): kpnt beats LibRaw+NLM by >= 2 dB,
#: beats demosaicnet, is within 0.5 dB of demosaicnet+BM3D or better.
ACCEPTANCE = (
    ("kpnt - (libraw+nlm) >= 2 dB", "libraw+nlm", lambda d: d >= 2.0 - 1e-9),
    ("kpnt > demosaicnet", "demosaicnet", lambda d: d > 0.0),
    ("kpnt >= demosaicnet+bm3d - 0.5 dB", "demosaicnet+bm3d", lambda d: d >= -0.5 - 1e-9),
)


def acceptance_checks(psnr: dict[str, float]) -> list[dict]:
    """The issue-6 checks of one cell from its per-method PSNRs.

    Args:
        psnr: method -> mean PSNR (one scoring space) of one sensor x ISO cell.
    Returns:
        One dict per check: ``check`` (its name), ``delta`` (kpnt minus the
        peer, dB, or None) and ``passed`` (True/False, or None where kpnt or
        the peer did not run).
    """
    out = []
    for name, peer, test in ACCEPTANCE:
        if "kpnt" in psnr and peer in psnr:
            d = float(psnr["kpnt"]) - float(psnr[peer])
            out.append(dict(check=name, delta=d, passed=bool(test(d))))
        else:
            out.append(dict(check=name, delta=None, passed=None))
    return out


def verdict(passed) -> str:
    return "n/a" if passed is None else ("PASS" if passed else "FAIL")


# ----------------------------------------------------------------------
# one benchmark case: a synthetic raw and its scoring
# ----------------------------------------------------------------------
def case_seed(sensor: str, iso: int, k: int) -> int:
    """Noise/white-balance seed of photo ``k`` in a sensor x ISO cell: fixed
    per case, so results do not depend on the order or process it runs in."""
    return zlib.crc32(f"{sensor}/{int(iso)}/{int(k)}".encode())


def make_case(img: torch.Tensor, cfa: CFA, cam: dict, prof: NoiseProfile, seed: int, iso: int = 0) -> dict:
    """Unprocess a clean linear photo into a synthetic raw.

    Args:
        img: (3, H, W) linear sRGB photo (cropped to multiples of 6).
        cfa: the sensor's CFA; cam: :func:`kpnt.color.find_camera`'s dict.
        prof: raw-scale noise profile; seed: :func:`case_seed`.
    Returns:
        dict with ``counts`` ((H, W) uint16 raw counts), ``meta`` (RawMeta),
        ``cfa``, ``wb`` (3,), ``ref_cam`` ((H, W, 3) clean camera RGB, white
        1), ``noise`` ((2, 3) raw profile), ``noise_wb`` ((2, 3)
        white-balanced profile), ``xyz_to_cam``, ``mp`` (megapixels).
    """
    h = img.shape[1] // 6 * 6
    w = img.shape[2] // 6 * 6
    cm = CameraModel(f"{cam['make']} {cam['model']}", cam["xyz_to_cam"], prof.as_array()[None])
    gen = torch.Generator().manual_seed(int(seed))
    b = synthesize(img[None, :, :h, :w], cfa, [cm], gen, SynthConfig(exposure_ev=(0.0, 0.0), headroom=(0.9, 0.9), noise_jitter=0.0))
    wb = b.wb[0].numpy().astype(np.float64)
    ref_cam = b.target[0].permute(1, 2, 0).numpy() / wb
    colour = cfa.colour_map(h, w)
    mosaic = b.x[0, 0].numpy() / wb[colour]
    counts = np.clip(np.rint(mosaic * (WHITE - BLACK) + BLACK), 0, 65535).astype(np.uint16)
    meta = RawMeta(black=np.full(3, BLACK), white=WHITE, wb=wb, xyz_to_cam=cam["xyz_to_cam"], make=cam["make"], model=cam["model"], iso=int(iso))
    return dict(counts=counts, meta=meta, cfa=cfa, wb=wb, ref_cam=ref_cam, noise=prof.as_array(),
                noise_wb=np.stack([prof.a * wb, prof.b * wb**2]), xyz_to_cam=cam["xyz_to_cam"], mp=h * w / 1e6)


def mosaic_wb(case: dict) -> np.ndarray:
    """The counts the DNG holds, white-balanced, white = 1 (demosaicnet's input)."""
    colour = case["cfa"].colour_map(*case["counts"].shape)
    return (case["counts"].astype(np.float64) - BLACK) / (WHITE - BLACK) * case["wb"][colour]


def score(out_cam: np.ndarray, case: dict) -> dict:
    """PSNR (white-balanced linear, sRGB) and sRGB SSIM of a camera-RGB
    result against the case's clean scene, :data:`BORDER` pixels ignored."""
    wb, m = case["wb"], case["xyz_to_cam"]
    ref_srgb = render_srgb(case["ref_cam"], wb, m)
    srgb = render_srgb(out_cam, wb, m)
    return dict(lin=psnr(render_linear_wb(out_cam, wb), render_linear_wb(case["ref_cam"], wb), border=BORDER),
                srgb=psnr(srgb, ref_srgb, border=BORDER), ssim=ssim(srgb, ref_srgb, border=BORDER))


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device="cpu"):
    """``(fn(), seconds)``; on a CUDA device synchronised before and after,
    so queued work is neither charged to nor hidden from ``fn``."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


# ----------------------------------------------------------------------
# CPU-only methods (LibRaw, NLM, BM3D): run in worker processes
# ----------------------------------------------------------------------
def _worker_init(threads: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    cv2.setNumThreads(threads)
    torch.set_num_threads(threads)


def cpu_methods(case: dict, methods: list[str], dnet_out: np.ndarray | None, nlm_h: float, tmp_dir: str) -> dict:
    """Run the CPU-only methods of one case and score them.

    Args:
        methods: which of ``libraw``, ``libraw+nlm``, ``demosaicnet+bm3d`` to
            run (``libraw`` also runs when only ``libraw+nlm`` is asked).
        dnet_out: demosaicnet's camera-RGB output (for ``demosaicnet+bm3d``).
    Returns:
        method -> dict(lin, srgb, ssim, sec) (``sec`` of the method's own
        step: ``libraw+nlm``'s excludes LibRaw's, ``demosaicnet+bm3d``'s is
        BM3D's alone).
    """
    wb, res, outs = case["wb"], {}, {}
    if "libraw" in methods or "libraw+nlm" in methods:
        outs["libraw"], sec = timed(lambda: libraw_demosaic_counts(case["counts"], case["cfa"], case["meta"], tmp_dir=tmp_dir))
        res["libraw"] = dict(score(outs["libraw"], case), sec=sec)
    if "libraw+nlm" in methods:
        out, sec = timed(lambda: nlm_denoise(outs["libraw"] * wb, case["noise_wb"], nlm_h) / wb)
        res["libraw+nlm"] = dict(score(out, case), sec=sec)
    if "demosaicnet+bm3d" in methods and dnet_out is not None:
        out, sec = timed(lambda: bm3d_denoise(dnet_out * wb, case["noise_wb"]) / wb)
        res["demosaicnet+bm3d"] = dict(score(out, case), sec=sec)
    return res


def bm3d_crop_seconds(rgb_wb: np.ndarray, noise_wb: np.ndarray) -> float:
    """Wall seconds of :func:`bm3d_denoise` on one image (speed test)."""
    return timed(lambda: bm3d_denoise(rgb_wb, noise_wb))[1]


class _Inline:
    """A stand-in for a process pool that runs each job at once (--jobs 1)."""

    class _Done:
        def __init__(self, fn, a):
            self.value = fn(*a)

        def result(self):
            return self.value

    def submit(self, fn, *a):
        return self._Done(fn, a)

    def shutdown(self, wait=True):
        pass


# ----------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------
def resolve_methods(requested: list[str], args) -> tuple[list[str], dict]:
    """Drop methods that cannot run here, with a printed note; import peers."""
    peers = {}
    methods = []
    for m in requested:
        if getattr(args, "clean", False) and m in DENOISERS:
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
        if m in ("libraw", "libraw+nlm") and importlib.util.find_spec("rawpy") is None:
            print(f"note: rawpy is not installed (pip install rawpy); {m} skipped")
            continue
        methods.append(m)
    return methods, peers


def time_devices(spec: str | None) -> list[str]:
    """``--time-device``: ``cpu``, ``cuda``, ``both``, or None (the CPU, plus
    CUDA when torch sees a GPU).  The first device of the list is the one
    whose outputs are scored (CUDA when it is in the list)."""
    have_cuda = torch.cuda.is_available()
    if spec is None:
        return ["cuda", "cpu"] if have_cuda else ["cpu"]
    if spec in ("cuda", "both") and not have_cuda:
        raise SystemExit(f"--time-device {spec}: torch sees no CUDA GPU (torch {torch.__version__}, CUDA {torch.version.cuda})")
    return {"cpu": ["cpu"], "cuda": ["cuda"], "both": ["cuda", "cpu"]}[spec]


def load_kpnt(weights: Path, sensor: str, device: str) -> tuple[object, str, dict]:
    """kpnt's model on ``device`` with its best backend: on CUDA the fused
    kernels (built here, the build timed apart: ``info['build_s']``), or the
    PyTorch reference with a printed reason when they cannot be built.
    Returns ``(model, backend, info)``."""
    from kpnt.weights_io import load_weights

    try:
        import safetensors  # noqa: F401
    except ImportError:
        raise SystemExit("kpnt's weights need the safetensors package (pip install safetensors)")
    model = load_weights(weights, sensor=sensor, device=device)[0].eval()
    info = {}
    backend = "torch"
    if torch.device(device).type == "cuda":
        from kpnt import _backend

        try:
            _, info["build_s"] = timed(_backend.load, device)
            # 'auto': the fused kernels for what they implement, the
            # reference (logged) for the rest of the weights' config.
            from kpnt.ops.dispatch import fused_problems

            problems = fused_problems(model.config)
            backend = "cuda" if not problems else "auto"
            if problems:
                info["reference_parts"] = "; ".join(problems)
                print(f"note: on {device} these parts run on the PyTorch reference: {info['reference_parts']}")
        except _backend.BackendError as err:
            info["fallback"] = str(err)
            print(f"note: fused CUDA kernels unavailable ({err}); kpnt on {device} runs the PyTorch reference")
    model.backend = backend
    return model, backend, info


def speed_image(photo: torch.Tensor, mp: float) -> torch.Tensor:
    """(3, H, W) scene of about ``mp`` megapixels, 3:2, sides multiples of 6,
    upsampled (bilinear) from a photo: what the timed methods do does not
    depend on the content, except BM3D's a little."""
    h = max(6, int(round((mp * 1e6 / 1.5) ** 0.5 / 6)) * 6)
    w = max(6, int(round(h * 1.5 / 6)) * 6)
    return torch.nn.functional.interpolate(photo[None], size=(h, w), mode="bilinear", align_corners=False)[0].clamp(0, 1)


def speed_test(sensor, cam, cfa, prof, photo, mp, models, dnets, reps_cuda=3, cpu_mp=4.0) -> tuple[list[dict], dict]:
    """Time kpnt and demosaicnet on one synthetic raw of ``mp`` megapixels on
    each device (host array in, host array out: kpnt's ``denoise_raw`` with
    the device's default tile on the decoded raw, demosaicnet's whole call;
    :func:`_time_reps`); on the CPU a raw of at most ``cpu_mp`` megapixels
    (s/MP no longer depends on the size there, and demosaicnet's X-Trans
    model takes ~13 s/MP on two cores).  Returns the rows
    and the demosaicnet output + white-balanced profile of the first device
    (for the BM3D crop)."""

    cases = {}

    def case_of(dev):
        """The synthetic raw timed on ``dev`` (the CPU's at most ``cpu_mp``)."""
        size = mp if torch.device(dev).type == "cuda" else min(mp, cpu_mp)
        if size not in cases:
            case = make_case(speed_image(photo, size), cfa, cam, prof, seed=case_seed(sensor, 0, 0))
            tmp = Path(tempfile.mkdtemp(prefix="kpnt-speed-"))
            dng = tmp / "speed.dng"
            write_cfa_dng(dng, case["counts"], cfa, case["meta"], overwrite=True)
            from kpnt.io.raw import read_raw      # rawpy: only where a DNG is decoded

            case["raw"] = read_raw(dng)
            dng.unlink()
            case["mosaic_wb"] = mosaic_wb(case)
            cases[size] = case
        return cases[size]

    rows, dn_out = [], None
    for dev, (model, backend) in models.items():
        c = case_of(dev)
        noise = NoiseChoice(c["noise"], "given")

        def run_kpnt(r=c["raw"], m=model, d=dev, n=noise):
            return denoise_raw(m, r, n, tile=default_tile(d), device=d)

        rows.append(dict(sensor=sensor, method="kpnt", device=dev, backend=backend, **_time_reps(run_kpnt, dev, reps_cuda, c["mp"])))
    for dev, dnet in dnets.items():
        c = case_of(dev)
        holder = {}

        def run_dnet(dn=dnet, x=c["mosaic_wb"]):
            holder["out"] = dn(x, cfa)
            return holder["out"]

        rows.append(dict(sensor=sensor, method="demosaicnet", device=dev, backend="torch", **_time_reps(run_dnet, dev, reps_cuda, c["mp"])))
        if dn_out is None:
            dn_out, noise_wb = holder["out"], c["noise_wb"]
    if dn_out is None:
        noise_wb = None
    return rows, dict(dn_out=dn_out, noise_wb=noise_wb)


def _time_reps(fn, dev, reps_cuda, mp) -> dict:
    """One untimed warm-up call of the full size (allocations, cuDNN
    choices, the reference ops' per-shape index caches), then the median of
    ``reps_cuda`` synchronised calls on CUDA, one call on the CPU."""
    timed(fn, dev)
    reps = reps_cuda if torch.device(dev).type == "cuda" else 1
    secs = sorted(timed(fn, dev)[1] for _ in range(reps))
    sec = secs[len(secs) // 2]
    return dict(mp=mp, sec=sec, sec_per_mpix=sec / mp, how=f"median of {reps} after a warm-up call" if reps > 1 else "1 call after a warm-up call")


def run(args) -> list[dict]:
    """The benchmark; returns the per-cell rows (and keeps the speed rows,
    checks and notes in ``args._extra`` for :func:`main`).  ``args`` as
    :func:`main` parses them; options added since the first version may be
    missing (older callers): no speed test, one process, the default devices."""
    for k, v in dict(time_device=None, speed_mp=0.0, cpu_speed_mp=4.0, bm3d_speed_mp=1.0, jobs=1, time_photos=10,
                     verbose=False, blind=False, clean=False, threads=2).items():
        if not hasattr(args, k):
            setattr(args, k, v)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    methods, peers = resolve_methods(args.methods, args)
    needed = set(methods) | {BASE[m] for m in methods if m in BASE}
    devices = time_devices(getattr(args, "time_device", None))
    qdev = devices[0]
    table = load_profile_table(args.profiles)
    photos = PhotoSource.from_folder(args.photos, downscale=args.downscale, limit=args.limit)
    jobs = max(1, int(getattr(args, "jobs", 1)))
    cpu_needed = [m for m in ("libraw", "libraw+nlm", "demosaicnet+bm3d") if m in needed]
    if jobs > 1 and cpu_needed:
        pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_worker_init, initargs=(1,))
        worker_threads = 1
    else:
        pool, worker_threads = _Inline(), args.threads
    tmp = Path(tempfile.mkdtemp(prefix="kpnt-bench-"))
    rows, speed_rows, notes, pending, bm3d_jobs = [], [], [], [], []
    extra = dict(devices=devices, quality_device=qdev, jobs=jobs, backends={}, build_s={}, notes=notes, threads=args.threads)
    args._extra = extra
    t_start = time.perf_counter()
    try:
        for sensor in args.sensors:
            cam = find_camera(args.bayer_camera if sensor == "bayer" else args.xtrans_camera)
            cfa = CFA.bayer("RGGB") if sensor == "bayer" else CFA.xtrans()
            models, dnets = {}, {}
            if "kpnt" in needed:
                weights = args.bayer_weights if sensor == "bayer" else args.xtrans_weights
                if weights:
                    for dev in devices:
                        model, backend, info = load_kpnt(weights, sensor, dev)
                        models[dev] = (model, backend)
                        extra["backends"][f"{sensor}/{dev}"] = backend
                        if "build_s" in info:
                            extra["build_s"][f"{sensor}/{dev}"] = info["build_s"]
                            print(f"fused CUDA kernels built/loaded in {info['build_s']:.1f} s (excluded from every timing)")
                        if "fallback" in info:
                            notes.append(f"{sensor} {dev}: fused kernels unavailable ({info['fallback']}); reference ran")
                else:
                    print(f"note: no --{sensor}-weights: kpnt skipped for {sensor}")
            if "demosaicnet" in needed:
                for dev in devices:
                    dnets[dev] = DemosaicNet(peers["demosaicnet"], sensor, args.demosaicnet_domain, device=dev)
            # BM3D's speed: one --bm3d-speed-mp raw, demosaicked here, BM3D
            # queued first so that it overlaps the photos' jobs
            iso_s = 3200 if 3200 in args.isos else args.isos[0]
            prof_s, _ = profile_at_iso(table, cam["make"], cam["model"], iso_s)
            if args.speed_mp > 0 and args.bm3d_speed_mp > 0 and "demosaicnet+bm3d" in needed:
                bc = make_case(speed_image(photos.photos[0], args.bm3d_speed_mp), cfa, cam, prof_s, seed=case_seed(sensor, 0, 1))
                crop = dnets[qdev](mosaic_wb(bc), cfa)            # white-balanced
                bm3d_jobs.append((sensor, bc["mp"], pool.submit(bm3d_crop_seconds, crop, bc["noise_wb"])))
            for iso in args.isos:
                prof, how = profile_at_iso(table, cam["make"], cam["model"], iso)
                if how.startswith(("pushed", "clamped")):
                    print(f"note: {cam['make']} {cam['model']} ISO {iso}: {how} "
                          + ("(a -> r a, b -> r^2 b, r = %g)" % (iso / table.isos(cam['make'], cam['model'])[-1]) if how.startswith("pushed") else ""))
                if args.clean:  # NoiseProfile refuses 0: 1e-9 x leaves only the 14-bit rounding
                    prof = prof.scaled(1e-9)
                acc = {m: dict(lin=[], srgb=[], ssim=[], sec={}, mpix=0.0) for m in METHODS}
                futures = []
                for k, img in enumerate(photos.photos):
                    case = make_case(img, cfa, cam, prof, case_seed(sensor, iso, k), iso)
                    mp = case["mp"]
                    noise = NoiseChoice(case["noise"], "given")
                    dnet_out = None
                    raw = None
                    if models:
                        dng = tmp / f"{sensor}_{iso}_{k}.dng"
                        write_cfa_dng(dng, case["counts"], cfa, case["meta"], overwrite=True)
                        from kpnt.io.raw import read_raw

                        raw = read_raw(dng)      # decoding is not timed (demosaicnet reads no file either)
                        if args.blind:
                            noise = choose_noise(raw)
                    for dev in devices:          # the scored device first
                        if dev != qdev and k >= args.time_photos:
                            continue                 # other devices: timed on the first --time-photos photos only
                        if dev in models:
                            model = models[dev][0]
                            if k == 0:           # warm-up, untimed
                                timed(lambda: denoise_raw(model, raw, noise, tile=0, device=dev), dev)
                            out, sec = timed(lambda: denoise_raw(model, raw, noise, tile=0, device=dev), dev)
                            acc["kpnt"]["sec"][dev] = acc["kpnt"]["sec"].get(dev, 0.0) + sec
                            if dev == qdev:
                                sc = score(out, case)
                                for key in ("lin", "srgb", "ssim"):
                                    acc["kpnt"][key].append(sc[key])
                        if dev in dnets:
                            mwb = mosaic_wb(case)
                            if k == 0:
                                timed(lambda: dnets[dev](mwb, cfa), dev)
                            out, sec = timed(lambda: dnets[dev](mwb, cfa) / case["wb"], dev)
                            acc["demosaicnet"]["sec"][dev] = acc["demosaicnet"]["sec"].get(dev, 0.0) + sec
                            if dev == qdev:
                                dnet_out = out
                                sc = score(out, case)
                                for key in ("lin", "srgb", "ssim"):
                                    acc["demosaicnet"][key].append(sc[key])
                    for m in METHODS:
                        acc[m]["mpix"] += mp
                        if k < args.time_photos:
                            acc[m]["mpix_timed"] = acc[m].get("mpix_timed", 0.0) + mp
                    if cpu_needed:
                        futures.append(pool.submit(cpu_methods, case, cpu_needed, dnet_out, args.nlm_h, str(tmp)))
                    if raw is not None:
                        (tmp / f"{sensor}_{iso}_{k}.dng").unlink(missing_ok=True)
                pending.append((sensor, iso, cam, how, acc, futures))
                print(f"{sensor} ISO {iso}: {len(photos.photos)} photos through {', '.join(sorted(set(models) | set(dnets))) or 'no'} "
                      f"device methods; {len(futures)} CPU jobs queued ({time.perf_counter() - t_start:.0f} s)", flush=True)
            # headline speed: one synthetic raw of --speed-mp megapixels (after
            # the photos, while the workers run their jobs)
            if args.speed_mp > 0 and (models or dnets):
                print(f"{sensor}: timing kpnt/demosaicnet on a {args.speed_mp:g}-MP synthetic raw on {', '.join(devices)} ...", flush=True)
                srows, _ = speed_test(sensor, cam, cfa, prof_s, photos.photos[0], args.speed_mp, models, dnets, cpu_mp=args.cpu_speed_mp)
                speed_rows += srows
        # collect the CPU workers' results, in submission order
        for sensor, iso, cam, how, acc, futures in pending:
            for k, fut in enumerate(futures):
                for m, r in fut.result().items():
                    for key in ("lin", "srgb", "ssim"):
                        acc[m][key].append(r[key])
                    acc[m]["sec"]["cpu"] = acc[m]["sec"].get("cpu", 0.0) + r["sec"]
                if args.verbose:
                    print(f"  {sensor} ISO {iso} photo {k}: " + ", ".join(f"{m} {acc[m]['srgb'][k]:.2f}" for m in METHODS if len(acc[m]["srgb"]) > k), flush=True)
            for m in methods:
                s = acc[m]
                if not s["lin"]:
                    continue
                by_dev = {}
                for dev in devices:
                    # CPU-only steps run on the CPU whatever the device; a
                    # device that is not scored ran on the first --time-photos
                    # photos only
                    mpix = s["mpix"] if dev == qdev else s.get("mpix_timed", s["mpix"])
                    if m in ("libraw", "libraw+nlm"):
                        own, base = s["sec"].get("cpu"), (acc["libraw"]["sec"].get("cpu") if m in BASE else 0.0)
                        mpix = s["mpix"]
                    elif m == "demosaicnet+bm3d":
                        bm = s["sec"].get("cpu")
                        dn = acc["demosaicnet"]["sec"].get(dev)
                        own, base = (None, None) if bm is None or dn is None else (bm * mpix / s["mpix"], dn)
                    else:
                        own, base = s["sec"].get(dev), 0.0
                    if own is not None and base is not None:
                        by_dev[dev] = (own + base) / mpix
                dev_m = "cpu" if m in ("libraw", "libraw+nlm") else qdev   # demosaicnet+bm3d: demosaicnet's device
                rows.append(dict(sensor=sensor, iso=iso, camera=f"{cam['make']} {cam['model']}", method=m, n=len(s["lin"]),
                                 clean=bool(args.clean), iso_clamped=how.startswith("clamped"), noise=how,
                                 psnr_lin=float(np.mean(s["lin"])), psnr_srgb=float(np.mean(s["srgb"])), ssim_srgb=float(np.mean(s["ssim"])),
                                 sec_per_mpix=by_dev.get(dev_m, next(iter(by_dev.values()), float("nan"))),
                                 sec_per_mpix_by_device=by_dev, device=dev_m,
                                 backend=extra["backends"].get(f"{sensor}/{qdev}") if m == "kpnt" else None))
        for sensor, mp, fut in bm3d_jobs:
            sec = fut.result()
            speed_rows.append(dict(sensor=sensor, method="bm3d", device="cpu", backend="bm3d (no GPU path)", mp=mp, sec=sec,
                                   sec_per_mpix=sec / mp, how=f"one {mp:.2f}-MP synthetic raw demosaicked by demosaicnet"))
    finally:
        pool.shutdown(wait=True)
    extra["speed"] = speed_rows
    extra["wall_s"] = time.perf_counter() - t_start
    return rows


# ----------------------------------------------------------------------
# reports
# ----------------------------------------------------------------------
def cell_label(r: dict) -> str:
    return f"ISO {r['iso']}" + (f" ({r['noise']})" if r.get("noise", "profiled") not in ("profiled", "interpolated") else "")


def quality_tables(rows: list[dict]) -> str:
    """Markdown tables per sensor (rows methods, columns ISO cells; each
    entry 'PSNR linear / PSNR sRGB / SSIM'), each followed by the
    acceptance check lines of its cells (on both PSNRs)."""
    out = []
    for sensor in dict.fromkeys(r["sensor"] for r in rows):
        rs = [r for r in rows if r["sensor"] == sensor]
        cells = list(dict.fromkeys(r["iso"] for r in rs))
        label = {r["iso"]: cell_label(r) for r in rs}
        methods = [m for m in METHODS if any(r["method"] == m for r in rs)]
        n = max(r["n"] for r in rs)
        out.append(f"\n### {sensor} ({rs[0]['camera']}, {n} photos): PSNR linear / PSNR sRGB / SSIM sRGB\n")
        out.append("| method | " + " | ".join(label[c] for c in cells) + " |")
        out.append("| --- |" + " ---: |" * len(cells))
        for m in methods:
            ent = []
            for c in cells:
                r = next((r for r in rs if r["iso"] == c and r["method"] == m), None)
                ent.append("-" if r is None else f"{r['psnr_lin']:.2f} / {r['psnr_srgb']:.2f} / {r['ssim_srgb']:.3f}")
            out.append(f"| {m} | " + " | ".join(ent) + " |")
        out.append("")
        for c in cells:
            lin = acceptance_checks({r["method"]: r["psnr_lin"] for r in rs if r["iso"] == c})
            srgb = acceptance_checks({r["method"]: r["psnr_srgb"] for r in rs if r["iso"] == c})
            parts = []
            for cl, cs in zip(lin, srgb):
                if cl["passed"] is None:
                    parts.append(f"{cl['check']}: n/a")
                    continue
                ok = cl["passed"] and cs["passed"]
                parts.append(f"{cl['check']}: {cl['delta']:+.2f} lin / {cs['delta']:+.2f} sRGB {verdict(ok)}")
            out.append(f"- check {sensor} {label[c]}: " + "; ".join(parts))
    return "\n".join(out)


def speed_report(rows: list[dict], speed: list[dict], extra: dict) -> tuple[str, list[dict]]:
    """The speed table (method, device, s/MP on the large raw and on the
    photos) and kpnt's speed-up over demosaicnet+BM3D from this run."""
    out = ["\n### speed (s per megapixel)\n",
           "| sensor | method | device (backend) | s/MP, synthetic raw | s/MP, benchmark photos |",
           "| --- | --- | --- | ---: | ---: |"]
    ups = []
    for sensor in dict.fromkeys([r["sensor"] for r in rows] + [r["sensor"] for r in speed]):
        photo_rows = [r for r in rows if r["sensor"] == sensor]

        def photos_spm(method, dev):
            v = [r["sec_per_mpix_by_device"].get(dev) for r in photo_rows if r["method"] == method]
            v = [x for x in v if x is not None]
            return sum(v) / len(v) if v else None       # mean over the ISO cells

        sp = {(r["method"], r["device"]): r for r in speed if r["sensor"] == sensor}
        bm = sp.get(("bm3d", "cpu"))
        for method in ("kpnt", "demosaicnet"):
            for dev in extra["devices"]:
                r = sp.get((method, dev))
                ph = photos_spm(method, dev)
                if r is None and ph is None:
                    continue
                be = r["backend"] if r else extra["backends"].get(f"{sensor}/{dev}", "torch")
                if dev == "cpu":
                    be += f", {extra['threads']} threads"
                big = f"{r['sec_per_mpix']:.4g} ({r['mp']:.1f} MP)" if r else "-"
                out.append(f"| {sensor} | {method} | {dev} ({be}) | {big} | {'-' if ph is None else f'{ph:.4g}'} |")
        if bm:
            out.append(f"| {sensor} | BM3D alone | cpu (bm3d package: no GPU path) | {bm['sec_per_mpix']:.4g} ({bm['mp']:.2f} MP) | - |")
        for dev in extra["devices"]:
            dn, kp = sp.get(("demosaicnet", dev)), sp.get(("kpnt", dev))
            ph = photos_spm("demosaicnet+bm3d", dev)
            big = dn["sec_per_mpix"] + bm["sec_per_mpix"] if (dn and bm) else None
            if big is None and ph is None:
                continue
            out.append(f"| {sensor} | demosaicnet+bm3d | {dev} + cpu | {'-' if big is None else f'{big:.4g}'} | {'-' if ph is None else f'{ph:.4g}'} |")
            if big is not None and kp:
                ups.append(dict(sensor=sensor, device=dev, backend=kp["backend"], kpnt_s_per_mp=kp["sec_per_mpix"],
                                demosaicnet_bm3d_s_per_mp=big, speedup=big / kp["sec_per_mpix"]))
        for method in ("libraw", "libraw+nlm"):
            ph = photos_spm(method, "cpu")
            if ph is not None:
                out.append(f"| {sensor} | {method} | cpu | - | {ph:.4g} |")
    for u in ups:
        ok = "PASS" if (u["device"] == "cuda" and u["speedup"] >= 100) else ("FAIL" if u["device"] == "cuda" else "")
        out.append(f"- kpnt speed-up vs demosaicnet+BM3D, {u['sensor']} on {u['device']} ({u['backend']}): "
                   f"{u['demosaicnet_bm3d_s_per_mp']:.4g} / {u['kpnt_s_per_mp']:.4g} s/MP = {u['speedup']:.0f}x"
                   + (f" (>= 100x on the GPU: {ok})" if ok else ""))
    return "\n".join(out), ups


def _methods(s: str) -> list[str]:
    out = [m.strip().lower() for m in s.split(",") if m.strip()]
    bad = [m for m in out if m not in METHODS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"unknown method(s) {bad}: choose from {','.join(METHODS)}")
    return out


_WEIGHTS = Path(__file__).resolve().parents[1] / "kpnt" / "weights"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--photos", type=Path, required=True, help="folder of clean sRGB photos (BSDS500 val)")
    p.add_argument("--profiles", type=Path, required=True, help="darktable noiseprofiles.json")
    p.add_argument("--limit", type=int, default=20, help="number of photos (default 20)")
    p.add_argument("--downscale", type=int, default=2, help="downscale photos first, as in training (default 2)")
    p.add_argument("--sensors", nargs="+", default=["bayer", "xtrans"], choices=["bayer", "xtrans"])
    p.add_argument("--isos", type=lambda s: [int(v) for v in s.split(",")], default=[3200], help="comma-separated ISOs (default 3200)")
    p.add_argument("--methods", type=_methods, default=list(METHODS), help=f"comma-separated, from {','.join(METHODS)} (default all)")
    p.add_argument("--bayer-camera", default="Nikon D750", help="default Nikon D750: held out of the shipped weights' training")
    p.add_argument("--xtrans-camera", default="Fujifilm X-T1", help="default Fujifilm X-T1: held out of the shipped weights' training")
    p.add_argument("--bayer-weights", type=Path, default=_WEIGHTS / "bayer.safetensors", help="default: the shipped weights")
    p.add_argument("--xtrans-weights", type=Path, default=_WEIGHTS / "xtrans.safetensors", help="default: the shipped weights")
    p.add_argument("--blind", action="store_true", help="kpnt uses its blind noise estimate instead of the true profile")
    p.add_argument("--nlm-h", type=float, default=NLM_STRENGTH, help=f"NLM strength in noise standard deviations (default {NLM_STRENGTH}, tuned on BSDS train)")
    p.add_argument("--demosaicnet-domain", choices=["linear", "srgb"], default="linear",
                   help="values fed to demosaicnet: white-balanced linear (default) or sRGB-curve encoded (as its training photos)")
    p.add_argument("--clean", action="store_true", help="no noise (demosaicking check; denoising methods dropped)")
    p.add_argument("--time-device", choices=["cpu", "cuda", "both"], default=None,
                   help="devices kpnt and demosaicnet are timed on (default: cpu, plus cuda when available); "
                        "outputs are scored from cuda when it is one of them")
    p.add_argument("--speed-mp", type=float, default=24.0, help="also time kpnt and demosaicnet on one synthetic raw of this many MP (default 24; 0 skips)")
    p.add_argument("--cpu-speed-mp", type=float, default=4.0, help="on the CPU, time on a raw of at most this many MP (default 4)")
    p.add_argument("--bm3d-speed-mp", type=float, default=1.0, help="BM3D's speed: timed on one synthetic raw of this many MP, demosaicked by demosaicnet (default 1)")
    p.add_argument("--time-photos", type=int, default=10,
                   help="per cell, time kpnt/demosaicnet on a device whose outputs are not scored (the CPU beside CUDA) on this many photos (default 10)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes for the CPU-only methods (LibRaw, NLM, BM3D), one thread each (default 1: in this process)")
    p.add_argument("--threads", type=int, default=2, help="torch/OpenCV threads of this process (default 2)")
    p.add_argument("--verbose", action="store_true", help="print each photo's sRGB PSNRs")
    p.add_argument("--json", type=Path, help="also write the results as JSON: {rows, speed, speedup, checks, config}")
    args = p.parse_args(argv)
    rows = run(args)
    extra = args._extra
    print(f"\n{'sensor':7} {'ISO':>6} {'method':16} {'n':>3} {'PSNR lin':>9} {'PSNR sRGB':>10} {'SSIM sRGB':>10} {'s/MP':>8}  noise")
    for r in rows:
        print(f"{r['sensor']:7} {r['iso']:>6} {r['method']:16} {r['n']:>3} {r['psnr_lin']:9.2f} {r['psnr_srgb']:10.2f} {r['ssim_srgb']:10.4f} "
              f"{r['sec_per_mpix']:8.3f}  {r['noise']}")
    print(quality_tables(rows))
    text, ups = speed_report(rows, extra["speed"], extra)
    print(text)
    print(f"\nscored outputs from {extra['quality_device']}; kpnt backends {extra['backends'] or '-'}; "
          f"CPU-only methods in {extra['jobs']} worker process(es), one thread each, photos' s/MP measured under that load; "
          f"kernel build {extra['build_s'] or '-'} s (not timed); wall {extra['wall_s']:.0f} s")
    if args.json:
        checks = []
        for r in rows:
            if r["method"] == "kpnt":
                cell = [q for q in rows if q["sensor"] == r["sensor"] and q["iso"] == r["iso"]]
                for space in ("psnr_lin", "psnr_srgb"):
                    for c in acceptance_checks({q["method"]: q[space] for q in cell}):
                        checks.append(dict(sensor=r["sensor"], iso=r["iso"], space=space, **c))
        cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if not k.startswith("_")}
        args.json.write_text(json.dumps(dict(rows=rows, speed=extra["speed"], speedup=ups, checks=checks,
                                             config=cfg, devices=extra["devices"], build_s=extra["build_s"],
                                             wall_s=extra["wall_s"]), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
