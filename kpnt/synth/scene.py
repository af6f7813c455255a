"""The clean scenes of a synthetic ISO ladder: one photo seen by a fixed
sensor in several frames, each optionally shifted, exposed differently and
with a moving object pasted in.

Everything random is decided up front in a :class:`LadderPlan` (seeded), so
the clean frames can be rebuilt exactly from a ladder's truth sidecar:
``clean_scenes(photo, xyz_to_cam, LadderPlan.from_json(truth["plan"]))``.

Geometry.  The unprocessed photo is the *scene*; the sensor sees a crop of
it of ``height x width`` photosites starting at ``(margin + dy, margin +
dx)`` for a frame with shift ``(dy, dx)``.  The sensor and its CFA stay put
(the CFA pattern sits at the crop's (0, 0) in every frame), so a shift that
is not a multiple of the CFA period puts different colours on the same
scene point, as a real hand-held burst does.  ``margin`` is the largest
shift, so no frame reads outside the photo.  Hence::

    frame_k[y, x] == frame_j[y + dy_k - dy_j, x + dx_k - dx_j]   (scene, before
                                                                 exposure and object)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kpnt.mosaic.cfa import CFA
from kpnt.synth.unprocess import DEFAULT_HEADROOM, SynthError, random_wb, unprocess

#: The moving object's side is this fraction of the frame's shorter side.
OBJECT_FRACTION = 0.2
#: Smallest frame (photosites per side) worth writing.
MIN_FRAME = 16


@dataclass
class LadderPlan:
    """Everything random about a ladder, decided before any pixel is made.

    Attributes:
        wb: (3,) as-shot gains (green = 1) divided out of the scene.
        headroom: level of photo white in the normalised raw.
        margin: photosites cropped on every side of the photo.
        height, width: frame size in photosites (multiples of the CFA period).
        shifts: per frame (dy, dx) in photosites (see module docstring).
        exposure_ev: per frame brightness offset in EV (gain ``2**ev``).
        object_seed: seed of the moving object's texture, or None (no object).
        object_boxes: per frame (y0, x0, y1, x1) of the object in frame
            coordinates (end exclusive), or None.
    """

    wb: np.ndarray
    headroom: float
    margin: int
    height: int
    width: int
    shifts: list[tuple[int, int]]
    exposure_ev: list[float]
    object_seed: int | None = None
    object_boxes: list[tuple[int, int, int, int]] | None = None

    @property
    def n_frames(self) -> int:
        return len(self.shifts)

    def to_json(self) -> dict:
        return {
            "wb": [float(v) for v in self.wb],
            "headroom": self.headroom,
            "margin": self.margin,
            "height": self.height,
            "width": self.width,
            "shifts": [list(s) for s in self.shifts],
            "exposure_ev": list(self.exposure_ev),
            "object_seed": self.object_seed,
            "object_boxes": None if self.object_boxes is None else [list(b) for b in self.object_boxes],
        }

    @classmethod
    def from_json(cls, d: dict) -> "LadderPlan":
        boxes = d.get("object_boxes")
        return cls(
            wb=np.asarray(d["wb"], dtype=np.float64),
            headroom=float(d["headroom"]),
            margin=int(d["margin"]),
            height=int(d["height"]),
            width=int(d["width"]),
            shifts=[(int(a), int(b)) for a, b in d["shifts"]],
            exposure_ev=[float(v) for v in d["exposure_ev"]],
            object_seed=d.get("object_seed"),
            object_boxes=None if boxes is None else [tuple(int(v) for v in b) for b in boxes],
        )


def _check_shifts(shifts, n: int) -> list[tuple[int, int]]:
    if shifts is None:
        return [(0, 0)] * n
    out = []
    for s in shifts:
        if len(s) != 2 or any(int(v) != v for v in s):
            raise SynthError(f"each shift must be two integers (dy, dx) in photosites, got {s!r}")
        out.append((int(s[0]), int(s[1])))
    if len(out) != n:
        raise SynthError(f"got {len(out)} shifts for {n} frames: give one (dy, dx) per ISO")
    return out


def _check_evs(evs, n: int) -> list[float]:
    if evs is None:
        return [0.0] * n
    out = [float(v) for v in evs]
    if len(out) != n:
        raise SynthError(f"got {len(out)} exposure offsets for {n} frames: give one EV per ISO")
    if not all(np.isfinite(v) and abs(v) <= 6 for v in out):
        raise SynthError(f"exposure offsets must be finite and within +-6 EV, got {out}")
    return out


def _object_boxes(rng: np.random.Generator, n: int, height: int, width: int, period: int) -> list[tuple]:
    """n boxes of one size at distinct positions: each at least half a side
    away (Chebyshev) from every earlier one, so the object visibly moves."""
    side = max(period, int(round(min(height, width) * OBJECT_FRACTION)))
    oh, ow = side, min(width, int(round(side * 1.25)))
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(n):
        for _attempt in range(200):
            y0 = int(rng.integers(0, height - oh + 1))
            x0 = int(rng.integers(0, width - ow + 1))
            if all(max(abs(y0 - b[0]), abs(x0 - b[1])) >= side // 2 for b in boxes):
                break
        else:
            raise SynthError(f"a {height}x{width} frame is too small for {n} distinct moving-object positions")
        boxes.append((y0, x0, y0 + oh, x0 + ow))
    return boxes


def plan_ladder(
    photo_shape: tuple[int, ...],
    cfa: CFA,
    n_frames: int,
    shifts=None,
    exposure_ev=None,
    moving_object: bool = False,
    seed: int = 0,
    headroom: float = DEFAULT_HEADROOM,
) -> LadderPlan:
    """Decide white balance, crop, shifts, exposures and object positions.

    Args:
        photo_shape: (H, W[, 3]) of the photo.
        cfa: the sensor layout (frame sizes become multiples of its period).
        n_frames: number of frames of the ladder.
        shifts: per frame (dy, dx) integer photosite shifts, or None (all 0).
        exposure_ev: per frame EV offsets, or None (all 0).
        moving_object: paste a textured patch at a new position per frame.
        seed: seeds white balance and object (not the noise).
    """
    if n_frames < 1:
        raise SynthError("a ladder needs at least one frame")
    shifts = _check_shifts(shifts, n_frames)
    evs = _check_evs(exposure_ev, n_frames)
    h, w = int(photo_shape[0]), int(photo_shape[1])
    margin = max(abs(v) for s in shifts for v in s)
    p = cfa.period
    height = (h - 2 * margin) // p * p
    width = (w - 2 * margin) // p * p
    if min(height, width) < MIN_FRAME:
        raise SynthError(
            f"a {h}x{w} photo leaves a {max(height, 0)}x{max(width, 0)} frame after a {margin}-photosite shift "
            f"margin: use a larger photo or smaller shifts (frames need {MIN_FRAME}+ photosites per side)"
        )
    rng = np.random.default_rng([seed, 0])
    wb = random_wb(rng)
    obj_seed, boxes = None, None
    if moving_object:
        obj_seed = int(rng.integers(0, 2**31 - 1))
        boxes = _object_boxes(rng, n_frames, height, width, p)
    return LadderPlan(wb=wb, headroom=float(headroom), margin=margin, height=height, width=width,
                      shifts=shifts, exposure_ev=evs, object_seed=obj_seed, object_boxes=boxes)


def object_texture(seed: int, height: int, width: int) -> np.ndarray:
    """(height, width, 3) sRGB-encoded texture of the moving object: a
    checkerboard of two random colours with a sinusoidal ripple and fine
    noise, so that it has edges and detail at several scales."""
    rng = np.random.default_rng(seed)
    c1, c2 = rng.uniform(0.1, 0.9, (2, 3))
    cell = int(rng.integers(3, 9))
    yy, xx = np.mgrid[0:height, 0:width]
    check = ((yy // cell + xx // cell) % 2)[:, :, None]
    tex = np.where(check == 1, c1, c2)
    ripple = 0.08 * np.sin(2 * np.pi * (yy + 0.5 * xx) / rng.uniform(5, 15))[:, :, None]
    tex = tex + ripple + rng.uniform(-0.04, 0.04, (height, width, 3))
    return np.clip(tex, 0.0, 1.0).astype(np.float32)


def clean_scenes(photo, xyz_to_cam, plan: LadderPlan) -> list[np.ndarray]:
    """The clean frames of a ladder in linear camera RGB.

    Args:
        photo: (H, W, 3) sRGB-encoded photo in [0, 1] (or uint8), the one
            the plan was made for.
        xyz_to_cam: (3, 3) camera matrix.
        plan: see :func:`plan_ladder`.
    Returns:
        One (height, width, 3) float32 array per frame: camera RGB without
        white balance, normalised to the white level (values above 1 will
        saturate), exposure gain ``2**ev`` and moving object included.
    """
    cam = unprocess(photo, xyz_to_cam, plan.wb, plan.headroom)
    h, w = cam.shape[:2]
    m = plan.margin
    if h < plan.height + 2 * m or w < plan.width + 2 * m:
        raise SynthError(f"photo {h}x{w} is smaller than this plan needs ({plan.height + 2 * m}x{plan.width + 2 * m})")
    obj = None
    if plan.object_boxes is not None:
        y0, x0, y1, x1 = plan.object_boxes[0]
        obj = unprocess(object_texture(plan.object_seed, y1 - y0, x1 - x0), xyz_to_cam, plan.wb, plan.headroom)
    frames = []
    for k, ((dy, dx), ev) in enumerate(zip(plan.shifts, plan.exposure_ev)):
        f = cam[m + dy: m + dy + plan.height, m + dx: m + dx + plan.width].copy()
        if obj is not None:
            y0, x0, y1, x1 = plan.object_boxes[k]
            f[y0:y1, x0:x1] = obj
        f *= np.float32(2.0 ** ev)
        frames.append(f)
    return frames
