"""Benchmark cases: synthetic raws with known truth.

A clean linear-sRGB photo is *unprocessed* into a raw (Brooks et al. 2019,
the same idea as ``kpnt-synth`` and training): converted to white-balanced
camera RGB with a real camera's colour matrix, divided by an as-shot white
balance, scaled so that scene white sits at 90 % of the white level of the
channel that saturates first, clipped there, sampled by the CFA and given
Poissonian-Gaussian noise (:func:`kpnt.noise.add_noise`) of the camera's
profile at the ISO, then quantised to 14-bit counts.

Everything random in a case (the CFA phase, the white balance, the noise)
comes from one seed, :func:`case_seed` of (sensor, cell, photo index): a
case is the same whatever process, order or ``--jobs`` it runs in.  The
benchmark draws are its own (not the training synthesis's, whose
augmentations change as training evolves), so the truth a number is
measured against does not move when training changes.
"""
from __future__ import annotations

import types
import zlib

import numpy as np
import torch

from kpnt.color import srgb_to_cam_matrix
from kpnt.io.meta import RawMeta
from kpnt.mosaic import CFA
from kpnt.noise import add_noise
from kpnt.noise.profile import DARKTABLE_RAW_SCALE, NoiseProfile
from kpnt.mosaic import kinds
from kpnt.mosaic.cfa import reference_cfa

#: Raw counts of the synthetic 14-bit sensor.
BLACK, WHITE = 512.0, 16383.0
#: As-shot white balance ranges (daylight to tungsten and shade), as drawn
#: uniformly per case; green = 1.
WB_RED, WB_BLUE = (1.3, 2.7), (1.2, 2.6)
#: Scene white at this fraction of the white level in the channel with the
#: largest white-balance gain (a normally exposed raw with some headroom).
HEADROOM = 0.9
#: Clean mosaics carry the ISO-100 profile times this factor (NoiseProfile
#: refuses 0; 1e-9 leaves only the 14-bit rounding: "DNG NoiseProfile near
#: zero").
CLEAN_SCALE = 1e-9
#: The name of the noise-free cell.
CLEAN = "clean"


def case_seed(sensor: str, iso, k: int) -> int:
    """Seed of photo ``k`` in a sensor x cell (``iso`` an ISO or ``"clean"``):
    fixed per case, so results do not depend on the order or process."""
    cell = iso if isinstance(iso, str) else int(iso)
    return zlib.crc32(f"{sensor}/{cell}/{int(k)}".encode())


def case_cfa(sensor: str, seed: int) -> CFA:
    """The CFA of a case: the sensor's pattern in a phase drawn from ``seed``
    (Bayer: one of RGGB, GRBG, GBRG, BGGR; X-Trans: one of its 36 crops).

    Real raws start at any phase of their pattern (crops, sensor readout), so
    the benchmark scores every phase, reproducibly per case."""
    rng = np.random.default_rng([int(seed), 1])
    dy, dx = (int(v) for v in rng.integers(0, kinds.PHASE_DRAW, size=2))
    period = kinds.kind(sensor).period          # one-line error for an unknown kind
    return reference_cfa(sensor).crop(dy % period, dx % period)


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


def cell_profile(table, cam: dict, cell) -> tuple[NoiseProfile, str]:
    """Noise profile of a benchmark cell: an ISO (:func:`profile_at_iso`) or
    :data:`CLEAN` (the ISO-100 profile times :data:`CLEAN_SCALE`)."""
    if cell == CLEAN:
        prof, _ = profile_at_iso(table, cam["make"], cam["model"], 100)
        return prof.scaled(CLEAN_SCALE), f"none (ISO-100 profile x {CLEAN_SCALE:g})"
    return profile_at_iso(table, cam["make"], cam["model"], cell)


def make_case(img: torch.Tensor, cfa: CFA, cam: dict, prof: NoiseProfile, seed: int, iso: int = 0) -> dict:
    """Unprocess a clean linear photo into a synthetic raw (module doc).

    Args:
        img: (3, H, W) linear sRGB photo (cropped here to multiples of 6).
        cfa: the case's CFA (:func:`case_cfa`); cam:
            :func:`kpnt.color.find_camera`'s dict.
        prof: raw-scale noise profile; seed: :func:`case_seed`.
        iso: the ISO written to the metadata (0: unknown).
    Returns:
        dict with ``counts`` ((H, W) uint16 raw counts), ``meta`` (RawMeta,
        its ``noise_profile`` the true one), ``cfa``, ``wb`` (3,),
        ``ref_cam`` ((H, W, 3) clean camera RGB, white 1), ``noise`` ((2, 3)
        raw profile), ``noise_wb`` ((2, 3) white-balanced profile),
        ``xyz_to_cam``, ``mp`` (megapixels), ``seed``.
    """
    h = img.shape[1] // 6 * 6
    w = img.shape[2] // 6 * 6
    rng = np.random.default_rng([int(seed), 2])
    wb = np.array([rng.uniform(*WB_RED), 1.0, rng.uniform(*WB_BLUE)])
    scene = np.asarray(img[:, :h, :w], dtype=np.float64).transpose(1, 2, 0)
    m = srgb_to_cam_matrix(cam["xyz_to_cam"])
    # elementwise, not a BLAS product: the same bits on every machine, so
    # the peer cache's keys (a hash of the case) match across machines
    wbcam = np.maximum(np.stack([scene[..., 0] * m[i, 0] + scene[..., 1] * m[i, 1] + scene[..., 2] * m[i, 2]
                                 for i in range(3)], axis=-1), 0.0)
    ref_cam = np.minimum(wbcam * (HEADROOM / wb.max()) / wb, 1.0)       # the sensor clips at white
    colour = cfa.colour_map(h, w)
    clean = np.take_along_axis(ref_cam, colour[..., None], axis=2)[..., 0]
    noisy = np.minimum(add_noise(clean, prof, colour, rng), 1.0)
    counts = np.clip(np.rint(noisy * (WHITE - BLACK) + BLACK), 0, 65535).astype(np.uint16)
    meta = RawMeta(black=np.full(3, BLACK), white=WHITE, wb=wb, xyz_to_cam=cam["xyz_to_cam"], make=cam["make"],
                   model=cam["model"], iso=int(iso), noise_profile=np.stack([prof.a, prof.b], axis=1))
    return dict(counts=counts, meta=meta, cfa=cfa, wb=wb, ref_cam=ref_cam.astype(np.float32), noise=prof.as_array(),
                noise_wb=np.stack([prof.a * wb, prof.b * wb**2]), xyz_to_cam=cam["xyz_to_cam"], mp=h * w / 1e6, seed=int(seed))


def mosaic_wb(case: dict) -> np.ndarray:
    """The counts the DNG holds, white-balanced, white = 1 (the input of the
    peers that take a mosaic: demosaicnet, Menon)."""
    colour = case["cfa"].colour_map(*case["counts"].shape)
    return (case["counts"].astype(np.float64) - BLACK) / (WHITE - BLACK) * case["wb"][colour]


def memory_raw(case: dict, path: str = "synthetic raw") -> types.SimpleNamespace:
    """What :func:`kpnt.io.read_raw` makes of the case's DNG, without the
    file: the counts normalised by the one black and white level the DNG
    carries (``(counts - black) / (white - black)``, float32, not clipped),
    the CFA and the metadata.  kpnt's input where rawpy is not installed."""
    mosaic = (case["counts"].astype(np.float32) - np.float32(BLACK)) / np.float32(WHITE - BLACK)
    return types.SimpleNamespace(mosaic=mosaic, meta=case["meta"], cfa=case["cfa"], path=path,
                                 raw=case["counts"], saturated=case["counts"] >= WHITE)
