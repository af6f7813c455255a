"""Find raw files, hash them, and read what grouping needs from each.

:func:`find_raws` walks folders recursively and keeps files whose suffix is
one LibRaw reads (case-insensitive); files named explicitly are taken
whatever their suffix.  :func:`scan_frame` reads one raw (through
:func:`kpnt.io.read_raw`) into a :class:`FrameInfo`: identity, camera, ISO,
capture time and a small colour-base thumbnail for scene grouping.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from kpnt.errors import DatasetError
from kpnt.mosaic import CFA

#: Suffixes of the raw formats LibRaw (and so rawpy) reads.  Foveon (.x3f)
#: and monochrome files are listed because LibRaw opens them; read_raw
#: then rejects them with a reason, which the summary reports.
RAW_SUFFIXES = frozenset(
    "." + s for s in (
        "3fr ari arw bay braw cap cr2 cr3 crw cs1 data dcr dcs dng drf eip erf fff gpr iiq k25 kc2 kdc "
        "mdc mef mfw mos mrw nef nrw obm orf ori pef ptx pxn qtk r3d raf raw rdc rw2 rwl rwz sr2 srf srw "
        "sti x3f"
    ).split()
)

#: Longest side of the scene-grouping thumbnails (colour-base pixels).
THUMB_SIZE = 48


def find_raws(inputs) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Raw files under ``inputs`` (folders recursively, or files).

    Returns:
        (paths, problems): resolved paths, sorted and without duplicates;
        ``problems`` lists inputs that do not exist as ``(path, reason)``.
    """
    found: dict[Path, None] = {}
    problems = []
    for item in inputs:
        p = Path(item)
        if p.is_file():
            found[p.resolve()] = None            # named explicitly: any suffix
        elif p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in files:
                    if not name.startswith(".") and Path(name).suffix.lower() in RAW_SUFFIXES:
                        found[(Path(root) / name).resolve()] = None
        else:
            problems.append((p, "no such file or folder"))
    return sorted(found), problems


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def colour_base(mosaic: np.ndarray, cfa: CFA) -> np.ndarray:
    """Colour base: every CFA block (2x2 Bayer, 3x3 X-Trans at its
    green-corner phase) averaged per colour.

    Args:
        mosaic: (H, W) normalised mosaic.
    Returns:
        (H', W', 3) float32, H' = (H - oy) // block (whole blocks only).
    """
    b = cfa.block
    oy, ox = cfa.block_phase
    h, w = mosaic.shape
    hb, wb = (h - oy) // b, (w - ox) // b
    if hb < 1 or wb < 1:
        raise DatasetError(f"a {h}x{w} mosaic holds no whole {b}x{b} colour block")
    # Sum sub-grids: the photosites at (i, j) of every block form a grid
    # whose colour repeats every k blocks (k = P / b: 1 Bayer, 2 X-Trans,
    # which swaps red and blue in alternate blocks); each (i, j, phase)
    # slice has a single colour.
    p = cfa.period
    k = max(p // b, 1)
    x = np.asarray(mosaic, dtype=np.float32)
    out = np.zeros((hb, wb, 3), np.float32)
    count = np.zeros((k, k, 3), np.float32)
    for i in range(b):
        for j in range(b):
            sub = x[oy + i: oy + i + hb * b: b, ox + j: ox + j + wb * b: b]
            for py in range(k):
                for px in range(k):
                    c = int(cfa.pattern[(oy + i + b * py) % p, (ox + j + b * px) % p])
                    out[py::k, px::k, c] += sub[py::k, px::k]
                    count[py, px, c] += 1
    reps = (-(-hb // k), -(-wb // k), 1)
    out /= np.tile(count, reps)[:hb, :wb]
    return out


def thumbnail(mosaic: np.ndarray, cfa: CFA, size: int = THUMB_SIZE) -> np.ndarray:
    """(h, w, 3) float32 colour-base thumbnail, longest side ``size``
    (area-averaged, so noise is averaged down too)."""
    base = colour_base(mosaic, cfa)
    h, w = base.shape[:2]
    scale = size / max(h, w)
    if scale < 1:
        base = cv2.resize(base, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(base, dtype=np.float32)


@dataclass
class FrameInfo:
    """What the builder knows about one raw file.

    Attributes:
        path: the file (resolved).
        sha256: hex digest of its bytes (identity for incremental builds).
        make, model: camera identity.
        cfa: layout of the visible area.
        height, width: visible size in photosites.
        iso: ISO (0 unknown); exposure_time: s or None.
        datetime: 'YYYY:MM:DD HH:MM:SS' or None.
        wb: (3,) as-shot gains; black (3,), white: raw levels.
        noise_profile: (3, 2) DNG NoiseProfile (a, b) or None.
        saturated: fraction of saturated photosites.
        thumb: (h, w, 3) colour-base thumbnail (not stored in the manifest).
    """

    path: Path
    sha256: str
    make: str
    model: str
    cfa: CFA
    height: int
    width: int
    iso: int
    exposure_time: float | None
    datetime: str | None
    wb: list
    black: list
    white: float
    noise_profile: list | None
    saturated: float
    thumb: np.ndarray | None = field(default=None, repr=False)

    @property
    def camera_key(self) -> str:
        """Frames pair only within one key: make, model, CFA, size."""
        return camera_id(self.make, self.model, self.cfa, self.height, self.width)

    @property
    def timestamp(self) -> float | None:
        """Capture time in seconds (naive local time), or None."""
        if not self.datetime:
            return None
        return datetime.strptime(self.datetime, "%Y:%m:%d %H:%M:%S").timestamp()

    def to_json(self) -> dict:
        return {
            "path": str(self.path), "make": self.make, "model": self.model, "cfa": self.cfa.to_json(),
            "height": self.height, "width": self.width, "iso": self.iso, "exposure_time": self.exposure_time,
            "datetime": self.datetime, "wb": list(self.wb), "black": list(self.black), "white": self.white,
            "noise_profile": self.noise_profile, "saturated": self.saturated,
        }

    @classmethod
    def from_json(cls, sha: str, d: dict, thumb: np.ndarray | None = None) -> "FrameInfo":
        return cls(path=Path(d["path"]), sha256=sha, make=d["make"], model=d["model"], cfa=CFA.from_json(d["cfa"]),
                   height=int(d["height"]), width=int(d["width"]), iso=int(d["iso"]),
                   exposure_time=d["exposure_time"], datetime=d["datetime"], wb=list(d["wb"]),
                   black=list(d["black"]), white=float(d["white"]), noise_profile=d["noise_profile"],
                   saturated=float(d["saturated"]), thumb=thumb)


def camera_id(make: str, model: str, cfa: CFA, height: int, width: int) -> str:
    """Readable id of a camera group, e.g. 'Fujifilm X-T1 xtrans 4016x6016 <pattern>'."""
    name = f"{make} {model}".strip() or "unknown camera"
    return f"{name} {cfa.kind} {cfa.name} {height}x{width}"


def scan_frame(path, sha: str | None = None) -> FrameInfo:
    """Read one raw and summarise it.

    Raises:
        RawReadError: the file cannot be read (one line with the reason).
    """
    from kpnt.io import read_raw

    path = Path(path)
    img = read_raw(path)
    m = img.meta
    return FrameInfo(
        path=path, sha256=sha or sha256_file(path), make=m.make, model=m.model, cfa=img.cfa,
        height=int(img.mosaic.shape[0]), width=int(img.mosaic.shape[1]), iso=int(m.iso),
        exposure_time=m.exposure_time, datetime=m.datetime, wb=[float(v) for v in m.wb],
        black=[float(v) for v in m.black], white=float(m.white),
        noise_profile=None if m.noise_profile is None else m.noise_profile.tolist(),
        saturated=float(img.saturated.mean()), thumb=thumbnail(img.mosaic, img.cfa),
    )
