"""Group frames by camera, then into scenes; pick references; plan pairs.

Camera: frames pair only with frames of the same make, model, CFA pattern
and size (:attr:`FrameInfo.camera_key`).

Scenes, per camera, either

- by folder (``scene_dirs``): every folder holding raws is one scene; or
- by capture time and content: frames in capture-time order (file name for
  equal or missing times) start a new scene when the time gap to the
  previous frame exceeds ``max_gap`` seconds, or when the frame's thumbnail
  matches no frame of the current scene (:func:`similarity` below
  ``min_similarity``).

The reference of a scene is its lowest-ISO frame (the earliest one if
several share that ISO); every frame of the scene at a higher ISO pairs with
it.  Frames that cannot pair are reported with the reason, and the reason
names the frames that were there but could not pair: the folder's (or the
time window's) frames of another camera, size or CFA phase, e.g. a cropped
ISO 100 frame next to a full-size ISO 3200 one (pairs need the same size:
the reference must cover the noisy frame site for site).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from kpnt.dataset.align import median_tile_correlation
from kpnt.dataset.scan import FrameInfo

#: Default: a new scene after this many seconds without a frame.
DEFAULT_MAX_GAP = 300.0
#: Default: a frame joins a scene when its thumbnail correlates at least this
#: well with one of the scene's frames.  Measured on 12 synthetic ladders
#: from BSDS500 photos and the sample photo (frames of one camera, ISO
#: 100-12800, shifts, +-1 EV, a moving object): same scene >= 0.66 (X-Trans
#: ISO 12800 against a darker ISO 800 frame), different photos <= 0.56.
#: The margin is thin: capture times (``max_gap``) do most of the splitting
#: in real sessions, and ``--scene-dirs`` removes the guesswork.
DEFAULT_MIN_SIMILARITY = 0.6


def _log_normalised(thumb: np.ndarray) -> np.ndarray:
    """Exposure-normalised log thumbnail, blurred a little (so that a shift
    of a fraction of a thumbnail pixel, and noise, barely matter)."""
    t = np.asarray(thumb, dtype=np.float64)
    mean = np.maximum(t.reshape(-1, 3).mean(axis=0), 1e-6)
    # Each channel relative to its mean: an exposure change is a constant in
    # log space, removed by the correlation.  The floor keeps noise in black
    # regions from dominating.
    t = np.log(np.maximum(t / mean, 0.05))
    return cv2.GaussianBlur(t.astype(np.float32), (0, 0), 1.0).astype(np.float64)


def similarity(thumb_a: np.ndarray, thumb_b: np.ndarray, grid: int = 3) -> float:
    """Similarity of two thumbnails in [-1, 1] (1: same content up to
    exposure): the median over a ``grid`` x ``grid`` split of the
    normalised cross-correlation of their exposure-normalised log values.
    The median ignores the tiles a moving object changed."""
    if thumb_a.shape != thumb_b.shape:
        return -1.0
    r = median_tile_correlation(_log_normalised(thumb_a), _log_normalised(thumb_b), grid, min_samples=4)
    return -1.0 if r is None else r


@dataclass
class Scene:
    """One scene of one camera: frames in capture order; ``reference`` the
    lowest-ISO frame (None when no frame can serve)."""

    camera: str
    frames: list[FrameInfo]
    reference: FrameInfo | None = None
    key: str = ""


@dataclass
class Plan:
    """The grouping result.

    Attributes:
        scenes: all scenes.
        pairs: (reference, noisy) frames to pair.
        unpaired: (frame, reason) for frames that neither pair nor serve as
            a reference.
    """

    scenes: list[Scene] = field(default_factory=list)
    pairs: list[tuple[FrameInfo, FrameInfo]] = field(default_factory=list)
    unpaired: list[tuple[FrameInfo, str]] = field(default_factory=list)


def _order_key(f: FrameInfo):
    t = f.timestamp
    return (t is None, t if t is not None else 0.0, str(f.path))


def split_scenes(frames: list[FrameInfo], max_gap: float = DEFAULT_MAX_GAP,
                 min_similarity: float = DEFAULT_MIN_SIMILARITY) -> list[list[FrameInfo]]:
    """Split one camera's frames into scenes by time gaps and thumbnails."""
    scenes: list[list[FrameInfo]] = []
    for f in sorted(frames, key=_order_key):
        cur = scenes[-1] if scenes else None
        new = cur is None
        if cur is not None:
            t_prev, t = cur[-1].timestamp, f.timestamp
            if t_prev is not None and t is not None and abs(t - t_prev) > max_gap:
                new = True
            elif max(similarity(f.thumb, g.thumb) for g in cur) < min_similarity:
                new = True
        if new:
            scenes.append([f])
        else:
            cur.append(f)
    return scenes


def plan_pairs(frames: list[FrameInfo], scene_dirs: bool = False, max_gap: float = DEFAULT_MAX_GAP,
               min_similarity: float = DEFAULT_MIN_SIMILARITY) -> Plan:
    """Group frames into scenes and plan the pairs (see module docstring)."""
    plan = Plan()
    by_camera: dict[str, list[FrameInfo]] = {}
    for f in frames:
        by_camera.setdefault(f.camera_key, []).append(f)
    for cam in sorted(by_camera):
        group = by_camera[cam]
        if scene_dirs:
            by_dir: dict[Path, list[FrameInfo]] = {}
            for f in group:
                by_dir.setdefault(Path(f.path).parent, []).append(f)
            parts = [sorted(v, key=_order_key) for _, v in sorted(by_dir.items())]
        else:
            parts = split_scenes(group, max_gap, min_similarity)
        for part in parts:
            scene = Scene(camera=cam, frames=part)
            plan.scenes.append(scene)
            others = _neighbours(part, frames, scene_dirs, max_gap)
            _pair_scene(scene, plan, scene_dirs, others)
    return plan


def _neighbours(part: list[FrameInfo], frames: list[FrameInfo], scene_dirs: bool, max_gap: float) -> list[FrameInfo]:
    """Frames of other camera groups that were shot with this scene: in the
    same folder (``scene_dirs``), or by the same make and model within
    ``max_gap`` seconds of one of its frames (a crop or another size)."""
    mine = {id(f) for f in part}
    key = part[0].camera_key
    if scene_dirs:
        folders = {Path(f.path).parent for f in part}
        return [g for g in frames if id(g) not in mine and g.camera_key != key and Path(g.path).parent in folders]
    times = [f.timestamp for f in part if f.timestamp is not None]
    out = []
    for g in frames:
        if id(g) in mine or g.camera_key == key or (g.make, g.model) != (part[0].make, part[0].model):
            continue
        if g.timestamp is not None and any(abs(g.timestamp - t) <= max_gap for t in times):
            out.append(g)
    return out


def _difference(f: FrameInfo, g: FrameInfo) -> str:
    """How frame ``g`` differs from ``f`` so that they cannot pair."""
    if (g.make, g.model) != (f.make, f.model):
        return f"another camera ({g.make} {g.model})".replace("( ", "(")
    if (g.height, g.width) != (f.height, f.width):
        return f"{g.width}x{g.height}, this one {f.width}x{f.height} (cropped?)"
    return f"CFA {g.cfa.name}, this one {f.cfa.name}"


def _others_note(f: FrameInfo, others: list[FrameInfo], where: str) -> str:
    """'; ...' naming the frames shot with ``f`` that cannot pair with it,
    lowest ISO first (a lower-ISO one is what the user expected to pair)."""
    if not others:
        return ""
    first = sorted(others, key=lambda g: (g.iso <= 0, g.iso, str(g.path)))
    g = first[0]
    lower = "the lower-ISO " if 0 < g.iso < f.iso else ""
    more = f" (and {len(others) - 1} more)" if len(others) > 1 else ""
    return (f"; {where} also holds {len(others)} frame(s) that cannot pair with it: {lower}frame {Path(g.path).name} "
            f"(ISO {g.iso}) is {_difference(f, g)}{more}; frames pair only at the same camera, size and CFA phase")


def _pair_scene(scene: Scene, plan: Plan, scene_dirs: bool, others: list[FrameInfo] = ()) -> None:
    where = "its folder" if scene_dirs else "its scene"
    around = "the folder" if scene_dirs else "the same time window"
    known = [f for f in scene.frames if f.iso > 0]
    for f in scene.frames:
        if f.iso <= 0:
            plan.unpaired.append((f, "ISO unknown (not in the file's metadata): cannot tell reference from noisy frame"))
    if not known:
        return
    if len(scene.frames) == 1:
        what = "alone in its folder" if scene_dirs and not others else (
            f"the only frame of its camera, size and CFA in {where}" if others else f"alone in {where}")
        plan.unpaired.append((known[0], f"{what}: no lower-ISO frame of the same scene to pair with"
                              + _others_note(known[0], list(others), around)))
        return
    low = min(f.iso for f in known)
    ref = min((f for f in known if f.iso == low), key=_order_key)
    scene.reference = ref
    scene.key = ref.sha256
    higher = [f for f in known if f.iso > low]
    for f in known:
        if f is not ref and f.iso == low:
            plan.unpaired.append((f, f"same ISO {low} as the scene's reference {Path(ref.path).name}: no noise gap to learn from"))
    if not higher:
        plan.unpaired.append((ref, f"no higher-ISO frame in {where}: all its frames are ISO {low}"
                              + _others_note(ref, list(others), around)))
        scene.reference = None
        return
    for f in higher:
        plan.pairs.append((ref, f))
