"""The dataset manifest (``manifest.json``) and the layout of a dataset
folder; see ``datasets/README.md`` for the format.  Needs neither rawpy nor
OpenCV: training machines read datasets through this module.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import kpnt
from kpnt.errors import DatasetError
from kpnt.io.atomic import atomic_file

FORMAT = "kpnt-dataset"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
PAIRS_DIR = "pairs"
THUMBS_DIR = "thumbs"

#: Arrays of one pair: file name, dtype, shape (h, w = the pair's size).
PAIR_ARRAYS = {
    "noisy": ("noisy.npy", "float16", "(h, w) high-ISO mosaic, normalised, camera CFA"),
    "reference": ("reference.npy", "float16", "(h, w) reference mosaic at the snapped shift, same CFA"),
    "target": ("target.npy", "float16", "(3, h, w) reference demosaiced by LibRaw, camera RGB, exact shift"),
    "mask": ("mask.npy", "uint8", "(h, w) bit field, 0 = usable"),
}
#: Bits of ``mask.npy``.
MASK_NOISY_SATURATED = 1
MASK_REFERENCE_SATURATED = 2
MASK_MOTION = 4


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_manifest() -> dict:
    """An empty manifest of the current format."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kpnt_version": kpnt.__version__,
        "created": now(),
        "updated": now(),
        "options": {},
        "cameras": {},
        "frames": {},
        "unreadable": {},
        "scenes": [],
        "pairs": {},
        "rejected_pairs": {},
        "rejections": [],
    }


def load_manifest(folder, missing_ok: bool = False) -> dict | None:
    """Read and check ``folder/manifest.json``.

    Returns None when it does not exist and ``missing_ok``.
    Raises:
        DatasetError: no manifest (unless ``missing_ok``), unreadable JSON,
            another format or a newer format version.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        if missing_ok:
            return None
        if not folder.exists():
            raise DatasetError(f"{folder}: no such dataset folder: build one with kpnt-build-dataset RAWS -o {folder}")
        raise DatasetError(f"{folder}: no {MANIFEST_NAME} here: not a dataset built by kpnt-build-dataset")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: unreadable manifest ({type(exc).__name__}: {exc}): rebuild the dataset") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DatasetError(f"{path}: not a kpnt dataset manifest (format {doc.get('format') if isinstance(doc, dict) else None!r})")
    version = doc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DatasetError(f"{path}: dataset format version {version!r}, this kpnt reads up to {FORMAT_VERSION}: update kpnt")
    for key, empty in new_manifest().items():
        doc.setdefault(key, empty)
    return doc


def save_manifest(folder, doc: dict) -> Path:
    """Write ``folder/manifest.json`` atomically (temp file + rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    doc["updated"] = now()
    doc["kpnt_version"] = kpnt.__version__
    path = folder / MANIFEST_NAME
    with atomic_file(path) as fh:
        fh.write((json.dumps(doc, indent=1, sort_keys=False) + "\n").encode("utf-8"))
    return path


def pair_dir(folder, pair_id: str) -> Path:
    return Path(folder) / PAIRS_DIR / pair_id


def pair_complete(folder, pair_id: str) -> bool:
    """All array files of a pair exist."""
    d = pair_dir(folder, pair_id)
    return all((d / name).is_file() for name, _, _ in PAIR_ARRAYS.values())
