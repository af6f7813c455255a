"""Synthetic ISO ladders: one scene shot at several ISOs, written as CFA DNGs
with a JSON truth sidecar.

A ladder models what the dataset builder expects from a real session on a
tripod: a base-ISO reference (the lowest ISO) and higher-ISO frames of the
same scene at the same raw brightness (ISO x exposure time constant, so
``BaselineExposure`` stays 0), each with the noise of its own ISO.  Noise is
drawn from a real camera's profile at raw scale: darktable's table values
times ``raw_scale`` (12 by default, DESIGN.md section 1).  Optional per-frame
shifts, exposure offsets and a moving object make the builder's alignment,
exposure matching and motion masking testable against known truth.

Files: ``OUT/<stem>_ISO<iso>.dng`` per frame and ``OUT/<stem>_truth.json``
(see :func:`make_ladder` for its content).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path

import numpy as np

from kpnt.color import camera_info
from kpnt.io.atomic import atomic_file
from kpnt.io.dng import write_cfa_dng
from kpnt.io.meta import RawMeta
from kpnt.mosaic.cfa import CFA
from kpnt.noise import DARKTABLE_RAW_SCALE, ProfileTable, add_noise
from kpnt.synth.scene import LadderPlan, clean_scenes, plan_ladder
from kpnt.synth.unprocess import DEFAULT_HEADROOM, SynthError, mosaic, to_raw_counts
from kpnt.mosaic.kinds import KINDS

#: Version of the truth sidecar layout.
TRUTH_VERSION = 1
#: Raw levels of the synthetic files: a 14-bit sensor with a typical offset.
DEFAULT_BLACK = 512.0
DEFAULT_WHITE = 16383.0
#: Exposure time of the reference frame; the others scale with ISO.
BASE_EXPOSURE_TIME = 1.0 / 30.0
#: Seconds between consecutive frames' capture times.
FRAME_INTERVAL_S = 2
DEFAULT_START = _dt.datetime(2024, 1, 1, 12, 0, 0)
#: Display names of the sensor kinds.
SENSOR_NAMES = {name: k.label for name, k in KINDS.items()}

CONVENTIONS = {
    "normalised": "x = (raw - black) / (white - black); camera RGB, white balance not applied",
    "shift": "frame k at photosite (y, x) shows the scene point that frame j shows at "
             "(y + dy_k - dy_j, x + dx_k - dx_j); the CFA is fixed to the sensor (pattern at (0, 0) of every frame)",
    "exposure_gain": "2**exposure_ev: this frame's clean raw values over the same scene in a frame with ev 0",
    "noise": "var(x) = a[c] * x + b[c] in normalised units per colour R, G, B: darktable's profile "
             "times raw_scale",
    "object_bbox": "[y0, x0, y1, x1] of the moving object in frame photosites, end exclusive",
    "white_in_raw": "photo white (sRGB 1.0) lands at plan.headroom in normalised camera RGB x wb, i.e. "
                    "render with baseline_exposure = -log2(headroom) to get the photo back",
}


def dng_name(stem: str, iso: int) -> str:
    """File name of one frame: ``<stem>_ISO<iso>.dng``."""
    return f"{stem}_ISO{iso}.dng"


def truth_name(stem: str) -> str:
    """File name of a ladder's truth sidecar: ``<stem>_truth.json``."""
    return f"{stem}_truth.json"


def _check_isos(isos) -> list[int]:
    out = []
    for v in isos:
        if int(v) != v or v <= 0:
            raise SynthError(f"ISOs must be positive integers, got {v!r}")
        out.append(int(v))
    if not out:
        raise SynthError("give at least one ISO")
    if len(set(out)) != len(out):
        raise SynthError(f"ISOs must be distinct (one file each), got {out}")
    return out


def _write_json_atomic(path: Path, doc: dict, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise SynthError(f"{path} exists: remove it or allow overwriting")
    with atomic_file(path) as fh:
        fh.write((json.dumps(doc, indent=1) + "\n").encode("utf-8"))


def make_ladder(
    photo,
    cfa: CFA,
    make: str,
    model: str,
    table: ProfileTable,
    isos,
    out_dir,
    stem: str,
    shifts=None,
    exposure_ev=None,
    moving_object: bool = False,
    seed: int = 0,
    *,
    black: float = DEFAULT_BLACK,
    white: float = DEFAULT_WHITE,
    headroom: float = DEFAULT_HEADROOM,
    raw_scale: float = DARKTABLE_RAW_SCALE,
    noise_tag: bool = False,
    start_time: _dt.datetime | None = None,
    source: str = "",
    overwrite: bool = False,
) -> list[tuple[Path, dict]]:
    """Write an ISO ladder of one photo as CFA DNGs plus a truth sidecar.

    Args:
        photo: (H, W, 3) sRGB-encoded photo, float in [0, 1] or uint8.
        cfa: sensor layout (its kind must match the camera's sensor).
        make, model: a camera with a bundled colour matrix
            (:func:`kpnt.color.known_cameras`) and a profile in ``table``.
        table: noise-profile table (darktable scale; ``raw_scale`` applied).
        isos: the frames' ISOs, in capture order; the lowest is the reference.
        out_dir: folder for the files (created if missing).
        stem: file-name stem (no path separators).
        shifts: per frame (dy, dx) photosite shifts of the scene, or None.
        exposure_ev: per frame brightness offsets in EV, or None.
        moving_object: paste a textured patch at a new place in every frame.
        seed: seeds white balance, object and noise.
        black, white: raw levels in counts (black the same for R, G, B).
        headroom: level of photo white in the normalised raw.
        raw_scale: factor from darktable's profile scale to raw scale.
        noise_tag: also write each frame's profile as the DNG NoiseProfile tag.
        start_time: capture time of the first frame (later frames follow
            every 2 s); default 2024-01-01 12:00:00.
        source: where the photo came from (recorded in the truth).
        overwrite: replace existing files instead of refusing.
    Returns:
        ``[(dng_path, frame_truth), ...]`` in capture order; ``frame_truth``
        is the frame's entry of the sidecar: file, iso, reference, shift
        [dy, dx], exposure_ev, exposure_gain, exposure_time, datetime,
        noise {a, b, raw_scale} (normalised units, raw scale), object_bbox.
        The sidecar ``<stem>_truth.json`` also holds the camera, CFA, white
        balance, colour matrix, levels, the :class:`LadderPlan` (to rebuild
        the clean frames with :func:`kpnt.synth.scene.clean_scenes`) and the
        conventions these numbers follow.
    Raises:
        SynthError (a KpntError) for bad inputs or existing files; nothing
        is left behind when a frame fails.
    """
    info = camera_info(make, model)
    if info["sensor"] != cfa.kind:
        raise SynthError(
            f"{info['make']} {info['model']} has a {SENSOR_NAMES[info['sensor']]} sensor, but the CFA is "
            f"{SENSOR_NAMES[cfa.kind]}: pick a camera and CFA of the same kind"
        )
    isos = _check_isos(isos)
    if not stem or os.sep in stem or (os.altsep and os.altsep in stem):
        raise SynthError(f"stem must be a plain file-name stem, got {stem!r}")
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] != 3:
        raise SynthError(f"photo must have shape (H, W, 3), got {photo.shape}")
    profiles = [table.lookup(make, model, iso, raw_scale=raw_scale) for iso in isos]

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / dng_name(stem, iso) for iso in isos]
    truth_path = out_dir / truth_name(stem)
    if not overwrite:
        existing = [str(p) for p in [*paths, truth_path] if p.exists()]
        if existing:
            raise SynthError(f"{existing[0]} exists ({len(existing)} of this ladder's files do): "
                             "remove them or allow overwriting (kpnt-synth --force)")

    plan = plan_ladder(photo.shape, cfa, len(isos), shifts, exposure_ev, moving_object, seed, headroom)
    xyz_to_cam = info["xyz_to_cam"]
    scenes = clean_scenes(photo, xyz_to_cam, plan)
    colour = cfa.colour_map(plan.height, plan.width)
    ref_iso = min(isos)
    start = start_time or DEFAULT_START

    frames_truth = []
    written: list[Path] = []
    try:
        for k, (iso, prof, scene, path) in enumerate(zip(isos, profiles, scenes, paths)):
            ev = plan.exposure_ev[k]
            clean = mosaic(scene, cfa)
            noisy = add_noise(clean, prof, colour, np.random.default_rng([seed, 1, k]))
            counts = to_raw_counts(noisy, black, white)
            # Same raw brightness at every ISO: exposure time falls as ISO rises.
            t_exp = BASE_EXPOSURE_TIME * ref_iso / iso * 2.0 ** ev
            when = (start + _dt.timedelta(seconds=FRAME_INTERVAL_S * k)).strftime("%Y:%m:%d %H:%M:%S")
            meta = RawMeta(
                black=np.full(3, float(black)), white=float(white), wb=plan.wb, xyz_to_cam=xyz_to_cam,
                make=info["make"], model=info["model"], iso=iso, exposure_time=t_exp,
                datetime=when, orientation=1, baseline_exposure=0.0,
                noise_profile=np.stack([prof.a, prof.b], axis=1) if noise_tag else None,
            )
            write_cfa_dng(path, counts, cfa, meta, overwrite=overwrite)
            written.append(path)
            frames_truth.append({
                "file": path.name,
                "iso": iso,
                "reference": iso == ref_iso,
                "shift": list(plan.shifts[k]),
                "exposure_ev": ev,
                "exposure_gain": 2.0 ** ev,
                "exposure_time": t_exp,
                "datetime": when,
                "noise": {"a": prof.a.tolist(), "b": prof.b.tolist(), "raw_scale": raw_scale},
                "noise_tag": noise_tag,
                "object_bbox": None if plan.object_boxes is None else list(plan.object_boxes[k]),
                "saturated_fraction": float((counts >= white).mean()),
            })
        truth = {
            "version": TRUTH_VERSION,
            "source": source,
            "camera": {"make": info["make"], "model": info["model"], "sensor": info["sensor"]},
            "cfa": cfa.to_json(),
            "wb": plan.wb.tolist(),
            "xyz_to_cam": xyz_to_cam.tolist(),
            "black": float(black),
            "white": float(white),
            "reference_iso": ref_iso,
            "photo_size": [int(photo.shape[0]), int(photo.shape[1])],
            "seed": seed,
            "plan": plan.to_json(),
            "conventions": CONVENTIONS,
            "frames": frames_truth,
        }
        _write_json_atomic(truth_path, truth, overwrite)
    except BaseException:
        for p in written:
            p.unlink(missing_ok=True)
        raise
    return list(zip(paths, frames_truth))


def load_truth(path) -> tuple[dict, LadderPlan]:
    """Read a ladder's truth sidecar: ``(truth dict, LadderPlan)``."""
    with open(path, encoding="utf-8") as f:
        truth = json.load(f)
    if truth.get("version") != TRUTH_VERSION:
        raise SynthError(f"{path} is not a kpnt-synth truth file of version {TRUTH_VERSION}")
    return truth, LadderPlan.from_json(truth["plan"])
