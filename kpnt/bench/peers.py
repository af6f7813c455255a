"""The peers kpnt is scored against, each run on a benchmark case.

* ``libraw``: rawpy/LibRaw (AHD for Bayer, LibRaw's X-Trans interpolation),
  white-balanced as DESIGN.md section 8 prescribes, no denoising;
* ``libraw+nlm``: the same, then OpenCV non-local means per channel on a
  variance-stabilised image (:func:`kpnt.baselines.nlm_denoise`);
* ``menon``: Menon, Andriani, Calvagno 2007, "Demosaicing with directional
  filtering and a posteriori decision" (:func:`kpnt.baselines.menon2007`,
  numpy, equal to ``colour-demosaicing``'s ``demosaicing_CFA_Bayer_Menon2007``
  to float rounding, without its 12 MB of dependencies), with its refining
  step, on the white-balanced mosaic; Bayer only (the method is defined for
  the 2x2 Bayer pattern: X-Trans rows say so);
* ``demosaicnet``: Gharbi et al. 2016's pretrained Bayer / X-Trans
  demosaicking networks (PyPI ``demosaicnet`` 0.0.14, loaded from its
  package files, no network; the package ships only the noise-free models,
  so no noise level is given), on the white-balanced mosaic, sRGB-encoded
  (``--demosaicnet-domain``, measured in :class:`DemosaicNet`) and laid out
  in its own CFA phase;
* ``demosaicnet+bm3d``: the same, then colour BM3D (PyPI ``bm3d``) on the
  variance-stabilised output with the known profile (:func:`bm3d_denoise`).

Every function takes and returns camera RGB (white balance *not* applied)
or says otherwise.  The optional packages are imported where used.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch

from kpnt.baselines import MENON_VERSION, gat, gat_inverse, menon2007, nlm_denoise
from kpnt.bench.cases import mosaic_wb
from kpnt.color import linear_to_srgb, srgb_to_linear
from kpnt.mosaic import CFA
from kpnt.mosaic.kinds import BAYER

#: peers that only demosaic
DEMOSAICKERS = ("libraw", "menon", "demosaicnet")
#: peers that denoise (not run on clean mosaics)
DENOISERS = ("libraw+nlm", "demosaicnet+bm3d")
#: method -> the method whose output it builds on
BASE = {"libraw+nlm": "libraw", "demosaicnet+bm3d": "demosaicnet"}
#: peers that run in CPU worker processes (no GPU path)
CPU_PEERS = ("libraw", "libraw+nlm", "menon", "demosaicnet+bm3d")
#: Python packages whose version is part of each peer's cache key
PACKAGES = {
    "libraw": ("rawpy",),
    "libraw+nlm": ("rawpy", "opencv-python-headless"),
    "demosaicnet": ("demosaicnet", "torch"),
    "demosaicnet+bm3d": ("demosaicnet", "torch", "bm3d", "bm4d"),
}


def package_versions(method: str) -> dict:
    """Installed versions of the packages a peer's numbers depend on."""
    out = {}
    for name in PACKAGES.get(method, ()):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    if method == "menon":
        out["kpnt.baselines.menon2007"] = MENON_VERSION
    if method in ("libraw", "libraw+nlm") and importlib.util.find_spec("rawpy") is not None:
        import rawpy

        out["libraw"] = getattr(rawpy, "libraw_version", None) and ".".join(map(str, rawpy.libraw_version))
    return out


def missing_package(method: str) -> str | None:
    """Why ``method`` cannot run here (a one-line note), or None."""
    need = {"libraw": "rawpy", "libraw+nlm": "rawpy", "demosaicnet+bm3d": "bm3d"}
    mod = need.get(method)
    if mod and importlib.util.find_spec(mod) is None:
        return f"{mod} is not installed (pip install {mod}): {method} skipped"
    if method.startswith("demosaicnet"):
        _, why = import_demosaicnet()
        if why:
            return f"{why}: {method} skipped"
    return None


# ----------------------------------------------------------------------
# Menon 2007 (colour-demosaicing)
# ----------------------------------------------------------------------
def menon_demosaic(case: dict) -> np.ndarray:
    """Menon 2007 (:func:`kpnt.baselines.menon2007`, with its refining
    step) of a Bayer case's white-balanced mosaic, returned as camera RGB;
    X-Trans raises ValueError."""
    cfa = case["cfa"]
    if cfa.sensor_kind is not BAYER:
        raise ValueError("Menon 2007 is defined for Bayer mosaics only, not X-Trans")
    m = mosaic_wb(case)
    return (menon2007(m, cfa.colour_map(*m.shape)) / case["wb"]).astype(np.float32)


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

    Its Bayer pattern is GRBG and its X-Trans pattern a shift of LibRaw's,
    so the mosaic is padded by the phase shift that makes the two patterns
    coincide (:meth:`shift`, found from the colour maps, never guessed),
    plus a phase-exact mirror padding for the network's valid convolutions
    (31 px Bayer, 12 px X-Trans), which is cropped off again.

    Args:
        dn: the imported ``demosaicnet`` module.
        sensor: a sensor kind (:data:`kpnt.mosaic.kinds.MOSAIC_KINDS`).
        domain: ``"srgb"`` (the sRGB curve is applied before the network
            and inverted after it, as its training photos were sRGB-encoded)
            or ``"linear"`` (the white-balanced mosaic as it is).  On 8
            photos of photos/val, sRGB PSNR of clean mosaics: Bayer 42.80
            (srgb) vs 39.33 (linear), X-Trans 40.17 vs 36.49 (linear feeds
            shift dark colours: a bias of ~1e-3 of white in every saturation
            bin); ISO 3200: 31.75 vs 31.72 and 30.60 vs 30.32.  So ``srgb``
            is the benchmark's default (the peer at its best).
        device: torch device of the network (host array in, host array out).
    """

    def __init__(self, dn, sensor: str, domain: str = "srgb", device="cpu"):
        if sensor == BAYER.name:
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
    :func:`kpnt.baselines.gat_inverse` maps back.  sigma = 1 treats the
    demosaicked noise as white; after demosaicking it is in fact spatially
    and chromatically correlated, which this ignores.

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


def libraw(case: dict, tmp_dir: str | None = None) -> np.ndarray:
    """LibRaw's demosaic of the case's counts (through a temporary DNG)."""
    from kpnt.io.demosaic import libraw_demosaic_counts

    return libraw_demosaic_counts(case["counts"], case["cfa"], case["meta"], tmp_dir=tmp_dir)


def libraw_nlm(libraw_out: np.ndarray, case: dict, strength: float) -> np.ndarray:
    """Non-local means on LibRaw's output (white-balanced, known profile)."""
    wb = case["wb"]
    return nlm_denoise(libraw_out * wb, case["noise_wb"], strength) / wb
