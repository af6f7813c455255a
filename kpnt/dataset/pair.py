"""Build one pair: align, crop, match exposure, mask motion, fit noise.

:func:`process_pair` takes the scene's reference (already read and
demosaiced, :class:`Reference`) and one high-ISO frame and returns the
pair's manifest record and arrays (see ``datasets/README.md``), or raises
:class:`PairRejected` with the reason.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from kpnt.dataset import blocks
from kpnt.dataset.align import bilinear, estimate_shift, overlap_crops
from kpnt.dataset.exposure import check_gain, match_exposure
from kpnt.dataset.manifest import MASK_MOTION, MASK_NOISY_SATURATED, MASK_REFERENCE_SATURATED, now
from kpnt.dataset.motion import dilate_mask, motion_blocks
from kpnt.dataset.noisefit import MAX_SITES, colour_methods, fit_noise
from kpnt.dataset.options import BuildOptions
from kpnt.errors import DatasetError, KpntError
from kpnt.mosaic import CFA
from kpnt.noise import NoiseProfile


class PairRejected(DatasetError):
    """A pair that cannot be used; the message is the reason."""


@dataclass
class Reference:
    """A scene's reference, read once for all its pairs.

    Attributes:
        mosaic: (H, W) float32 normalised; saturated: (H, W) bool.
        cfa: layout; wb: (3,) as-shot gains.
        target: (3, H, W) float32 LibRaw demosaic (camera RGB).
        bad: (H, W) bool, saturated sites (dilated) or clipped demosaic.
        profile: its noise profile or None; profile_source: where from.
        timing: seconds spent reading, profiling and demosaicing it.
    """

    mosaic: np.ndarray
    saturated: np.ndarray
    cfa: CFA
    wb: np.ndarray
    target: np.ndarray
    bad: np.ndarray
    profile: NoiseProfile | None
    profile_source: str
    timing: dict | None = None


def _cut(a: np.ndarray, box) -> np.ndarray:
    y0, x0, y1, x1 = box
    return a[..., y0:y1, x0:x1]


#: A noisy frame must show at least this much noise variance (normalised
#: units, at a quarter of the white level) beyond its reference's; a base-ISO
#: sensor reads about 1e-5 there, so this is far below any real ISO step.
MIN_NOISE_GAP = 1e-8


def _matched(nb: np.ndarray, rb: np.ndarray, excluded: np.ndarray, opts: BuildOptions, variance=None):
    """:func:`match_exposure` of the noisy block means ``nb`` to the
    reference's ``rb`` (blocks in ``excluded`` left out), its gain checked
    against ``opts.max_gain``; either failing rejects the pair."""
    try:
        m = match_exposure(nb, rb, excluded, opts.offset, variance=variance)
    except DatasetError as exc:
        raise PairRejected(str(exc)) from None
    reason = check_gain(m, opts.max_gain)
    if reason:
        raise PairRejected(reason)
    return m


def check_noise_gap(prof: NoiseProfile) -> str | None:
    """Why a pair has nothing to teach (its noisy frame is as clean as its
    reference: the same frame tagged with two ISOs, or an ISO tag that does
    not match the data), or None."""
    var = prof.a * 0.25 + prof.b
    if float(np.max(var)) > MIN_NOISE_GAP:
        return None
    return (f"no noise beyond the reference's (fitted a = {prof.a.max():.3g}, b = {prof.b.max():.3g}): "
            "the two frames are identical or the higher ISO tag does not match the data")


def process_pair(ref: Reference, noisy_mosaic: np.ndarray, noisy_saturated: np.ndarray, noisy_cfa: CFA, noisy_wb,
                 opts: BuildOptions) -> tuple[dict, dict[str, np.ndarray]]:
    """One pair's record (without identity fields) and arrays.

    Args:
        ref: the scene's :class:`Reference`.
        noisy_mosaic: (H, W) normalised high-ISO frame; noisy_saturated: (H, W).
        noisy_cfa: its layout (must equal the reference's).
        noisy_wb: its as-shot gains.
    Raises:
        PairRejected: with the reason.
    """
    if noisy_mosaic.shape != ref.mosaic.shape or noisy_cfa != ref.cfa:
        raise PairRejected(f"frame {noisy_mosaic.shape} {noisy_cfa} differs from its reference {ref.mosaic.shape} {ref.cfa}")
    if np.array_equal(noisy_mosaic, ref.mosaic):
        raise PairRejected("same pixel data as its reference: the same frame under two ISO tags? (no noise gap to "
                           "learn from)")
    cfa = noisy_cfa
    H, W = noisy_mosaic.shape
    clock = [time.perf_counter()]
    timing = {}

    def lap(name):
        now = time.perf_counter()
        timing[name] = round(now - clock[0], 3)
        clock[0] = now

    try:
        al = estimate_shift(noisy_mosaic, ref.mosaic, cfa, noisy_wb)
        crops = overlap_crops((H, W), al, cfa.period, opts.border)
    except DatasetError as exc:
        raise PairRejected(f"alignment failed: {exc}") from None
    lap("align")
    n = _cut(noisy_mosaic, crops.noisy)
    t = _cut(ref.target, crops.target)
    r = _cut(ref.mosaic, crops.reference)
    r_exact = _cut(ref.mosaic, crops.target)
    r_exact_cfa = cfa.crop(crops.target[0], crops.target[1])
    n_sat = _cut(noisy_saturated, crops.noisy)
    r_bad = _cut(ref.bad, crops.target) | _cut(ref.bad, crops.reference)
    h, w = n.shape

    s = blocks.block_size(cfa)
    nb = blocks.mosaic_block_means(n, cfa, s)
    # Exposure is matched against a *linear* interpolation of the
    # reference's own photosites at the noisy frame's sites.  Off the CFA
    # lattice LibRaw's interpolated colours are biased (its blue read 2%
    # high on a brown scene), and the reference's measured sites elsewhere
    # in each block differ from the noisy frame's by texture (+-1% on the
    # blue gain of a 0.1 MP crop); a normalised-convolution interpolation
    # preserves sums exactly and compares the same scene points.
    rb = blocks.rgb_block_means(bilinear(r_exact, r_exact_cfa), cfa, s)
    sat_blocks = blocks.block_any(n_sat | r_bad, s)
    m0 = _matched(nb, rb, sat_blocks, opts)

    usable0 = ~(n_sat | r_bad)
    try:
        # Preliminary, for the motion test only: a third of the sites do.
        prelim, _ = fit_noise(n, r_exact, t, cfa, r_exact_cfa, m0.gain, m0.offset, usable0, ref.profile,
                              max_sites=MAX_SITES // 3)
    except KpntError as exc:
        raise PairRejected(f"noise fit failed: {exc}") from None
    # Motion is judged on every block, over its usable sites only (a moving
    # object that saturates in places must still be found in the rest), and
    # off the CFA lattice only on the colours the reference measured at the
    # same scene points: the demosaic's interpolation error in textured
    # areas (wood grain) read as motion on 7% of a frame.
    matched, use_mosaic = colour_methods(cfa, r_exact_cfa, usable0)
    judge = usable0 & matched & use_mosaic[blocks.colour_map(cfa, h, w)] if use_mosaic.any() else usable0
    nbu, cnt = blocks.masked_block_means(n, cfa, s, judge)
    tbu, _ = blocks.masked_block_means(t, cfa, s, judge)
    moved_b, _score = motion_blocks(nbu, tbu, cnt, m0.gain, m0.offset, prelim, ref.profile, opts.motion_threshold)
    moved = dilate_mask(blocks.upsample_blocks(moved_b, s, (h, w)), opts.motion_dilate)
    lap("exposure_motion")

    counts = blocks.site_counts(cfa, s)
    pred = m0.gain * rb + m0.offset
    var_b = (prelim.a * np.maximum(pred, 0) + np.maximum(prelim.b, 0)) / counts
    if ref.profile is not None:
        var_b = var_b + m0.gain ** 2 * (ref.profile.a * np.maximum(rb, 0) + np.maximum(ref.profile.b, 0)) / counts
    m = _matched(nb, rb, sat_blocks | blocks.block_any(moved, s), opts, variance=var_b)
    usable = usable0 & ~moved
    frac = float(usable.sum()) / float(H * W)
    if frac < opts.min_usable:
        raise PairRejected(f"usable area {frac:.0%} of the frame < {opts.min_usable:.0%} (--min-usable): "
                           f"motion {moved.mean():.0%}, saturated {(~usable0).mean():.0%} of the overlap")
    try:
        prof, methods = fit_noise(n, r_exact, t, cfa, r_exact_cfa, m.gain, m.offset, usable, ref.profile)
    except KpntError as exc:
        raise PairRejected(f"noise fit failed: {exc}") from None
    reason = check_noise_gap(prof)
    if reason:
        raise PairRejected(reason)
    lap("noise_fit")

    mask = np.zeros((h, w), np.uint8)
    mask[n_sat] |= MASK_NOISY_SATURATED
    mask[r_bad] |= MASK_REFERENCE_SATURATED
    mask[moved] |= MASK_MOTION
    record = {
        "size": [h, w],
        "cfa": cfa.to_json(),
        "shift": list(al.shift),
        "shift_snapped": list(al.snapped),
        "align_ncc": round(al.ncc, 4),
        "crops": {"noisy": list(crops.noisy), "target": list(crops.target), "reference": list(crops.reference)},
        "wb": [float(v) for v in np.asarray(noisy_wb)],
        "reference_wb": [float(v) for v in ref.wb],
        "gain": [float(v) for v in m.gain],
        "offset": [float(v) for v in m.offset],
        "exposure_blocks": [int(v) for v in m.blocks],
        "noise": prof.to_json(),
        "noise_method": methods,
        "reference_noise": {"source": ref.profile_source, **(ref.profile.to_json() if ref.profile else {})},
        "usable_fraction": round(frac, 5),
        "motion_fraction": round(float(moved.mean()), 5),
        "saturated_fraction": round(float((~usable0).mean()), 5),
        "built": now(),
        "timing_s": timing,
    }
    arrays = {"noisy": n, "reference": r, "target": t, "mask": mask}
    return record, arrays
