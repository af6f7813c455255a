"""Options of a dataset build (what ``kpnt-build-dataset`` exposes)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from kpnt.dataset.group import DEFAULT_MAX_GAP, DEFAULT_MIN_SIMILARITY
from kpnt.dataset.motion import DEFAULT_DILATE, DEFAULT_THRESHOLD
from kpnt.errors import DatasetError


@dataclass
class BuildOptions:
    """Attributes:
        scene_dirs: every folder of raws is one scene (no automatic grouping).
        max_gap: seconds between frames that start a new scene.
        min_similarity: thumbnail correlation a frame needs to join a scene.
        min_usable: reject a pair whose usable area (not saturated, not
            moving, inside the overlap) is below this fraction of the frame.
        max_gain: reject gains outside [1/max_gain, max_gain].
        offset: also fit a per-channel exposure offset.
        motion_threshold, motion_dilate: see :mod:`kpnt.dataset.motion`.
        border: photosites at the reference's edges left out (demosaic).
        profiles: darktable-format table for the reference's noise, or None.
        raw_scale: factor from the table's scale to raw scale.
    """

    scene_dirs: bool = False
    max_gap: float = DEFAULT_MAX_GAP
    min_similarity: float = DEFAULT_MIN_SIMILARITY
    min_usable: float = 0.5
    max_gain: float = 8.0
    offset: bool = False
    motion_threshold: float = DEFAULT_THRESHOLD
    motion_dilate: int = DEFAULT_DILATE
    border: int = 8
    profiles: str | None = None
    raw_scale: float = 12.0

    def __post_init__(self):
        checks = [
            (self.max_gap > 0, f"max gap must be positive seconds, got {self.max_gap}"),
            (-1 <= self.min_similarity <= 1, f"min similarity must lie in [-1, 1], got {self.min_similarity}"),
            (0 <= self.min_usable <= 1, f"min usable must be a fraction in [0, 1], got {self.min_usable}"),
            (self.max_gain > 1, f"max gain must exceed 1, got {self.max_gain}"),
            (self.motion_threshold > 1, f"motion threshold must exceed 1 (noise alone scores 1), got {self.motion_threshold}"),
            (self.motion_dilate >= 0, f"motion dilation must be >= 0 photosites, got {self.motion_dilate}"),
            (self.border >= 0, f"border must be >= 0 photosites, got {self.border}"),
            (self.raw_scale > 0, f"raw scale must be positive, got {self.raw_scale}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise DatasetError(msg)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "BuildOptions":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def pair_fingerprint(self) -> dict:
        """The options that change a pair's content (grouping options do not)."""
        d = self.to_json()
        for k in ("scene_dirs", "max_gap", "min_similarity"):
            d.pop(k)
        return d
