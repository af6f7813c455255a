"""OpenEXR output: uncompressed scanline files of 32-bit float RGB.

kpnt writes EXR itself: the opencv-python wheels kpnt uses ship without an
EXR encoder (OpenCV 5.0.0 here: "could not find encoder" even with
``OPENCV_IO_ENABLE_OPENEXR=1``), and an uncompressed single-part scanline
file is small to write from the OpenEXR file-layout specification:

    magic 20000630 | version 2 | header attributes | 0
    | offset table (one uint64 per scanline)
    | per scanline: int32 y, int32 byte count, then each channel's row
      (channels in alphabetical order: B, G, R), float32 little-endian

The header holds the required attributes only: channels, compression
(NONE), dataWindow, displayWindow, lineOrder (INCREASING_Y),
pixelAspectRatio, screenWindowCenter, screenWindowWidth.  The file is
written atomically (:func:`kpnt.io.tiff.atomic_write`), streamed in blocks
of rows, so a 100-megapixel image never exists twice in memory.

Example::

    >>> write_exr("out.exr", rgb_float32)                # doctest: +SKIP
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from kpnt.io.tiff import TiffWriteError, atomic_write

EXR_MAGIC = 20000630
#: Version field: file format 2, single-part scanline (no flag bits).
EXR_VERSION = 2
PIXEL_FLOAT = 2
#: Rows per write: bounds the bytes built at once (about 12 MB at 6000 px wide).
ROWS_PER_BLOCK = 256


class ExrWriteError(TiffWriteError):
    """An EXR could not be written (bad arguments or target exists)."""


def _attr(name: str, typ: str, value: bytes) -> bytes:
    return name.encode() + b"\0" + typ.encode() + b"\0" + struct.pack("<i", len(value)) + value


def exr_header(width: int, height: int) -> bytes:
    """Magic, version and header of a float32 B/G/R scanline EXR."""
    chlist = b"".join(c + b"\0" + struct.pack("<iB3xii", PIXEL_FLOAT, 0, 1, 1) for c in (b"B", b"G", b"R")) + b"\0"
    box = struct.pack("<iiii", 0, 0, width - 1, height - 1)
    attrs = [
        _attr("channels", "chlist", chlist),
        _attr("compression", "compression", b"\0"),
        _attr("dataWindow", "box2i", box),
        _attr("displayWindow", "box2i", box),
        _attr("lineOrder", "lineOrder", b"\0"),
        _attr("pixelAspectRatio", "float", struct.pack("<f", 1.0)),
        _attr("screenWindowCenter", "v2f", struct.pack("<ff", 0.0, 0.0)),
        _attr("screenWindowWidth", "float", struct.pack("<f", 1.0)),
    ]
    return struct.pack("<ii", EXR_MAGIC, EXR_VERSION) + b"".join(attrs) + b"\0"


def write_exr(path, rgb: np.ndarray, overwrite: bool = False) -> Path:
    """Write (H, W, 3) linear RGB as an uncompressed float32 OpenEXR.

    Args:
        path: target file (atomic write; an existing file needs ``overwrite``).
        rgb: (H, W, 3) float image (any range: negatives and values above 1
            are kept, as in ``tiff-float``); NaN/inf are refused.
    Returns:
        The path written.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
        raise ExrWriteError(f"write_exr expects an (H, W, 3) image, got shape {rgb.shape}")
    if rgb.dtype.kind != "f":
        raise ExrWriteError(f"write_exr expects float input (linear, white = 1), got {rgb.dtype}")
    h, w, _ = rgb.shape
    for y0 in range(0, h, ROWS_PER_BLOCK):
        if not np.isfinite(rgb[y0:y0 + ROWS_PER_BLOCK]).all():
            raise ExrWriteError("write_exr: image holds NaN/inf values")
    header = exr_header(w, h)
    line = 8 + 12 * w                      # y, byte count, 3 channel rows of float32
    first = len(header) + 8 * h
    offsets = (first + line * np.arange(h, dtype=np.uint64)).astype("<u8").tobytes()
    row = np.dtype([("y", "<i4"), ("n", "<i4"), ("data", "<f4", (3, w))])

    def blocks():
        yield header
        yield offsets
        for y0 in range(0, h, ROWS_PER_BLOCK):
            part = rgb[y0:y0 + ROWS_PER_BLOCK]
            rec = np.empty(len(part), dtype=row)
            rec["y"] = np.arange(y0, y0 + len(part))
            rec["n"] = 12 * w
            rec["data"] = part[..., ::-1].transpose(0, 2, 1)       # (rows, [B, G, R], W)
            yield rec.tobytes()

    atomic_write(path, blocks(), overwrite)
    return Path(path)
