"""Camera metadata that travels with a raw from reading to writing.

:class:`RawMeta` holds what kpnt needs from a raw file besides the pixels:
levels, as-shot white balance, the colour matrix, the shot's identity and
exposure, the orientation and (when the file carries one) the noise profile.
It is filled by :func:`kpnt.io.read_raw` and by the synthetic-raw builder, and
written back into DNGs by :mod:`kpnt.io.dng`.

Conventions (DESIGN.md section 1): colours are indexed R=0, G=1, B=2; levels
are raw counts; the noise profile is per colour ``var(x) = a*x + b`` in
normalised units ``x = (raw - black) / (white - black)``, i.e. exactly the
DNG ``NoiseProfile`` pairs (S, O).

Example::

    >>> import numpy as np
    >>> m = RawMeta(black=np.full(3, 512.0), white=16383.0,
    ...             wb=np.array([2.1, 1.0, 1.6]), xyz_to_cam=np.eye(3),
    ...             make="Fujifilm", model="X-T1", iso=800)
    >>> m.orientation, m.noise_profile is None
    (1, True)
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

import numpy as np

from kpnt.errors import KpntError
from kpnt.io.carry import CarriedTags


class MetaError(KpntError, ValueError):
    """A :class:`RawMeta` field holds an impossible value."""


_DATETIME_RE = re.compile(r"^\d{4}:\d{2}:\d{2} \d{2}:\d{2}:\d{2}$")

#: Where ``RawMeta.wb`` came from: the file's as-shot multipliers; an
#: estimate from the image (:func:`kpnt.io.autowb.estimate_wb`) when the file
#: has none or the camera was set to auto WB (LibRaw then reports
#: ``cam_mul[0] = -1`` or zeros), as a raw converter would; LibRaw's daylight
#: multipliers when not even an estimate is possible (an all-clipped frame).
WB_SOURCES = ("as_shot", "auto", "daylight")


def _vector(name: str, value, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.array(value, dtype=np.float64)  # a copy: callers keep their arrays
    if arr.shape != shape:
        raise MetaError(f"RawMeta.{name} must have shape {shape}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise MetaError(f"RawMeta.{name} must be finite, got {arr.tolist()}")
    return arr


def _optional_positive(name: str, value) -> float | None:
    if value is None:
        return None
    v = float(value)
    if not np.isfinite(v) or v <= 0:
        raise MetaError(f"RawMeta.{name} must be a positive number or None, got {value!r}")
    return v


def is_ciff(head: bytes) -> bool:
    """Whether a file starting with ``head`` (its first 14 bytes or more) is
    a Canon CIFF raw (CRW): byte order, header length, then 'HEAPCCDR' at
    offset 6, the test LibRaw itself makes before its CIFF parser."""
    return head[:2] in (b"II", b"MM") and head[6:14] == b"HEAPCCDR"


def is_ciff_file(path) -> bool:
    """:func:`is_ciff` of a file's first bytes (False when unreadable)."""
    try:
        with open(path, "rb") as fh:
            return is_ciff(fh.read(14))
    except OSError:
        return False


def known_exposure(exposure_time: float | None, f_number: float | None,
                   ciff: bool) -> tuple[float | None, float | None]:
    """The exposure time and f-number worth writing, from LibRaw's values.

    LibRaw reads a CRW's exposure as APEX numbers (the ExposureInfo or
    ShotInfo record) and converts them as ``2^-Tv`` seconds and ``2^(Av/2)``:
    a camera that recorded nothing (zeros: an EOS D30 does this) comes out
    as exactly 1 s at exactly f/1.0, which exiftool shows as 0 and which no
    output should claim.  So from a CRW that exact pair means "unknown" and
    both are dropped.  Reading the CIFF record ourselves would not tell more:
    it holds the same zeros, and the one real shot with that pair (Canon's
    EF 50mm f/1.0L wide open for exactly 1 s) is stored identically; losing
    its exposure is better than inventing one for every unrecorded shot.
    Either value alone (a 1 s exposure, an f/1.0 lens) is kept, and other
    formats are untouched (a TIFF-based raw's own EXIF tags are copied as
    they are, :mod:`kpnt.io.carry`).
    """
    if ciff and exposure_time == 1.0 and f_number == 1.0:
        return None, None
    return exposure_time, f_number


@dataclass(eq=False)
class RawMeta:
    """Metadata of one raw image (see module docstring for conventions).

    Attributes:
        black: (3,) black level per colour R, G, B in raw counts.
        white: saturation level in raw counts (same for all colours).
        wb: (3,) as-shot white-balance multipliers R, G, B, green = 1.
        xyz_to_cam: (3, 3) XYZ (D65) -> camera RGB matrix, the DNG
            ``ColorMatrix`` (rows R, G, B of the camera).
        make, model: camera maker and model ('' when unknown).
        iso: ISO speed (0 when unknown).
        exposure_time: seconds, or None.
        f_number: aperture f-number, or None.
        focal_length: millimetres, or None.
        datetime: capture time 'YYYY:MM:DD HH:MM:SS', or None.
        orientation: EXIF orientation 1..8 (1 = as stored).
        baseline_exposure: DNG ``BaselineExposure`` in EV (pushed ISOs).
        noise_profile: (3, 2) per-colour (a, b) with ``var(x) = a*x + b`` in
            normalised units (DNG ``NoiseProfile`` S, O), or None.
        wb_source: 'as_shot', 'auto' or 'daylight' (see :data:`WB_SOURCES`).
        carried: tag entries of a TIFF-based source copied verbatim into
            the output DNG (:mod:`kpnt.io.carry`); empty for other sources
            and for synthetic raws.
    """

    black: np.ndarray
    white: float
    wb: np.ndarray
    xyz_to_cam: np.ndarray
    make: str = ""
    model: str = ""
    iso: int = 0
    exposure_time: float | None = None
    f_number: float | None = None
    focal_length: float | None = None
    datetime: str | None = None
    orientation: int = 1
    baseline_exposure: float = 0.0
    noise_profile: np.ndarray | None = None
    wb_source: str = field(default="as_shot")
    carried: CarriedTags = field(default_factory=CarriedTags)

    def __post_init__(self):
        self.black = _vector("black", self.black, (3,))
        self.white = float(self.white)
        if not np.isfinite(self.white) or self.white <= self.black.max():
            raise MetaError(f"RawMeta.white ({self.white}) must exceed every black level ({self.black.tolist()})")
        if self.black.min() < 0:
            raise MetaError(f"RawMeta.black must be >= 0, got {self.black.tolist()}")
        self.wb = _vector("wb", self.wb, (3,))
        if (self.wb <= 0).any():
            raise MetaError(f"RawMeta.wb must be positive, got {self.wb.tolist()}")
        if abs(self.wb[1] - 1.0) > 1e-6:
            raise MetaError(f"RawMeta.wb must be normalised to green = 1, got {self.wb.tolist()}: divide by wb[1]")
        self.xyz_to_cam = _vector("xyz_to_cam", self.xyz_to_cam, (3, 3))
        if abs(np.linalg.det(self.xyz_to_cam)) < 1e-12:
            raise MetaError("RawMeta.xyz_to_cam is singular: expected a camera's XYZ->camera colour matrix")
        if not isinstance(self.make, str) or not isinstance(self.model, str):
            raise MetaError(f"RawMeta.make/model must be strings, got {self.make!r}, {self.model!r}")
        if int(self.iso) != self.iso or self.iso < 0:
            raise MetaError(f"RawMeta.iso must be a non-negative integer (0 = unknown), got {self.iso!r}")
        self.iso = int(self.iso)
        self.exposure_time = _optional_positive("exposure_time", self.exposure_time)
        self.f_number = _optional_positive("f_number", self.f_number)
        self.focal_length = _optional_positive("focal_length", self.focal_length)
        if self.datetime is not None and not _DATETIME_RE.match(str(self.datetime)):
            raise MetaError(f"RawMeta.datetime must look like 'YYYY:MM:DD HH:MM:SS', got {self.datetime!r}")
        if self.orientation not in range(1, 9):
            raise MetaError(f"RawMeta.orientation must be an EXIF orientation 1..8, got {self.orientation!r}")
        self.orientation = int(self.orientation)
        self.baseline_exposure = float(self.baseline_exposure)
        if not np.isfinite(self.baseline_exposure):
            raise MetaError(f"RawMeta.baseline_exposure must be finite, got {self.baseline_exposure}")
        if self.noise_profile is not None:
            self.noise_profile = _vector("noise_profile", self.noise_profile, (3, 2))
            if (self.noise_profile[:, 0] < 0).any():
                raise MetaError(f"RawMeta.noise_profile slopes a must be >= 0, got {self.noise_profile.tolist()}")
        if self.wb_source not in WB_SOURCES:
            raise MetaError(f"RawMeta.wb_source must be one of {WB_SOURCES}, got {self.wb_source!r}")
        if isinstance(self.carried, dict):     # the form to_dict writes
            self.carried = CarriedTags(**{k: {int(c): (int(t), bytes.fromhex(h)) for c, (t, h) in v.items()}
                                          for k, v in self.carried.items()})
        if not isinstance(self.carried, CarriedTags):
            raise MetaError(f"RawMeta.carried must be a kpnt.io.carry.CarriedTags, got {type(self.carried).__name__}")

    def __eq__(self, other):
        if not isinstance(other, RawMeta):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if a is None or b is None or not np.array_equal(a, b):
                    return False
            elif a != b:
                return False
        return True

    def to_dict(self) -> dict:
        """A JSON-friendly dict (arrays as nested lists); see :meth:`from_dict`."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, CarriedTags):
                v = {k: {str(c): [t, b.hex()] for c, (t, b) in getattr(v, k).items()} for k in ("ifd0", "exif")}
            out[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "RawMeta":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise MetaError(f"unknown RawMeta fields {unknown}: expected a subset of {sorted(names)}")
        return cls(**d)
