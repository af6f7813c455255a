"""A small little-endian TIFF container: write IFDs, read tags, write RGB TIFFs.

kpnt writes DNGs and TIFFs itself (no external writer) so that every tag is
under control, and reads the TIFF structure of raw files for the metadata
rawpy does not expose (``BaselineExposure``, ``NoiseProfile``, DNG black
patterns, Make/Model as a fallback).

Writing: build :class:`IFD` objects (tag -> typed values), then
:func:`write_tiff_file` lays out ``header | IFD0 | sub-IFDs | pixel strip``
and writes it atomically.  Reading: :func:`read_ifds` returns every IFD of a
TIFF-based file (main chain, ``SubIFDs``, EXIF IFD) as dicts.

Example::

    >>> import numpy as np
    >>> write_tiff("out.tif", np.zeros((4, 6, 3), np.float32), "uint16")  # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from kpnt.errors import KpntError

log = logging.getLogger(__name__)
from kpnt.io.atomic import atomic_write  # the one atomic-write helper (temp naming, clean-up)


class TiffWriteError(KpntError):
    """A TIFF/DNG could not be written (bad arguments or target exists)."""


class TiffFormatError(KpntError):
    """A file is not a readable TIFF structure."""


# TIFF field types.
BYTE, ASCII, SHORT, LONG, RATIONAL = 1, 2, 3, 4, 5
SBYTE, UNDEFINED, SSHORT, SLONG, SRATIONAL, FLOAT, DOUBLE = 6, 7, 8, 9, 10, 11, 12
IFD_TYPE = 13  # LONG offsets to sub-IFDs (TIFF-EP); read like LONG

_DTYPE = {
    BYTE: "<u1", SBYTE: "<i1", UNDEFINED: "<u1", SHORT: "<u2", SSHORT: "<i2",
    LONG: "<u4", SLONG: "<i4", IFD_TYPE: "<u4", FLOAT: "<f4", DOUBLE: "<f8",
    RATIONAL: "<u4", SRATIONAL: "<i4",
}
_SIZE = {t: np.dtype(d).itemsize * (2 if t in (RATIONAL, SRATIONAL) else 1) for t, d in _DTYPE.items()}
_SIZE[ASCII] = 1

# Tags used by kpnt's writers and readers.
TAG_SUBIFDS = 330
TAG_EXIF_IFD = 34665


def to_rational(values, signed: bool) -> np.ndarray:
    """(N,) floats -> (N, 2) numerator/denominator pairs fitting 32 bits.

    The denominator is as large as the value's magnitude allows, so colour
    matrices keep ~9 significant digits and 1/4000 s stays exactly 1/4000.
    """
    vals = np.atleast_1d(np.asarray(values, dtype=np.float64))
    top = 2**31 - 1 if signed else 2**32 - 1
    out = np.zeros((len(vals), 2), dtype=np.int64)
    for i, v in enumerate(vals):
        if not np.isfinite(v) or (not signed and v < 0) or abs(v) > top:
            raise TiffWriteError(f"cannot store {v} as a {'signed ' if signed else ''}TIFF rational")
        max_den = max(1, min(top, int(top // max(abs(v), 1.0))))
        fr = Fraction(float(v)).limit_denominator(max_den)
        out[i] = fr.numerator, fr.denominator
    return out


@dataclass
class IFD:
    """One image file directory: ``tags[code] = (type, values)``.

    ``values`` is a str (ASCII), bytes (BYTE/UNDEFINED) or anything numpy can
    turn into a 1-D array (RATIONAL/SRATIONAL take floats).  ``sub_ifds``
    maps a pointer tag (e.g. 34665 EXIF) to the IFD it points at; the offset
    is filled in when the file is laid out.
    """

    tags: dict[int, tuple[int, object]] = field(default_factory=dict)
    sub_ifds: dict[int, "IFD"] = field(default_factory=dict)

    def set(self, code: int, typ: int, values) -> None:
        self.tags[code] = (typ, values)

    def _encoded(self) -> dict[int, tuple[int, int, bytes]]:
        """code -> (type, count, little-endian bytes)."""
        out = {}
        for code, (typ, values) in self.tags.items():
            if typ == ASCII:
                raw = (bytes(values) if isinstance(values, (bytes, bytearray))   # encoded as given
                       else str(values).encode("ascii", "replace") + b"\0")
                out[code] = (typ, len(raw), raw)
            elif isinstance(values, (bytes, bytearray)):   # encoded bytes (any type): written as given
                out[code] = (typ, len(values) // _SIZE[typ], bytes(values))
            elif typ in (RATIONAL, SRATIONAL):
                try:
                    pairs = to_rational(values, signed=typ == SRATIONAL)
                except TiffWriteError as exc:
                    raise TiffWriteError(f"{tag_label(code)}: {exc}") from None
                out[code] = (typ, len(pairs), pairs.astype(_DTYPE[typ]).tobytes())
            else:
                arr = np.atleast_1d(np.asarray(values))
                info = np.iinfo(_DTYPE[typ]) if np.dtype(_DTYPE[typ]).kind in "iu" else None
                if info is not None and (arr.min() < info.min or arr.max() > info.max):
                    raise TiffWriteError(f"tag {code}: values {arr.tolist()} do not fit TIFF type {typ}")
                out[code] = (typ, arr.size, arr.astype(_DTYPE[typ]).ravel().tobytes())
        for code in self.sub_ifds:
            out[code] = (LONG, 1, b"\0\0\0\0")  # placeholder, patched in encode()
        return out

    def nbytes(self) -> int:
        """Bytes this IFD occupies: entries plus out-of-line values (even-aligned)."""
        enc = self._encoded()
        n = 2 + 12 * len(enc) + 4
        for _, _, raw in enc.values():
            if len(raw) > 4:
                n += len(raw) + (len(raw) & 1)
        return n

    def encode(self, offset: int, sub_offsets: dict[int, int], next_ifd: int = 0) -> bytes:
        """The IFD's bytes when placed at file offset ``offset``."""
        enc = self._encoded()
        for code, off in sub_offsets.items():
            enc[code] = (LONG, 1, struct.pack("<I", off))
        codes = sorted(enc)
        entries = bytearray(struct.pack("<H", len(codes)))
        data = bytearray()
        data_start = offset + 2 + 12 * len(codes) + 4
        for code in codes:
            typ, count, raw = enc[code]
            if len(raw) <= 4:
                entries += struct.pack("<HHI", code, typ, count) + raw.ljust(4, b"\0")
            else:
                entries += struct.pack("<HHII", code, typ, count, data_start + len(data))
                data += raw + (b"\0" if len(raw) & 1 else b"")
        entries += struct.pack("<I", next_ifd)
        return bytes(entries + data)


def check_target(path, overwrite: bool) -> Path:
    """Validate an output path: parent folder exists, no clobbering unless asked."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise TiffWriteError(f"{path} already exists: pass overwrite=True to replace it")
    if path.is_dir():
        raise TiffWriteError(f"{path} is a folder, expected a file path")
    if not path.parent.is_dir():
        raise TiffWriteError(f"folder {path.parent} does not exist: create it first")
    return path


def write_tiff_file(path, ifd0: IFD, pixels: np.ndarray, overwrite: bool = False) -> Path:
    """Write a single-strip little-endian TIFF atomically.

    Args:
        path: target file.
        ifd0: the main IFD; StripOffsets (273), StripByteCounts (279) and
            RowsPerStrip (278) are set here.
        pixels: (H, W) or (H, W, S) array in its final dtype (written as
            little-endian, samples interleaved).
        overwrite: replace an existing file (otherwise an error).
    Returns:
        The path written.
    """
    path = check_target(path, overwrite)
    # The strip goes to the file straight from the array's memory: no
    # full-size ``tobytes`` copy (144 MB for a 24-MP output, ~60 ms holding
    # the GIL, which would stall the denoising thread of a pipelined batch).
    data = np.ascontiguousarray(pixels, dtype=pixels.dtype.newbyteorder("<"))
    ifd0.set(278, LONG, pixels.shape[0])
    ifd0.set(279, LONG, data.nbytes)
    ifd0.set(273, LONG, 0)  # placeholder of the right size; set by place()
    write_laid_out(path, ifd0, [memoryview(data.reshape(-1)).cast("B")],
                   lambda start: ifd0.set(273, LONG, start), overwrite)
    return path


def write_laid_out(path, ifd0: IFD, payload: list, place, overwrite: bool) -> None:
    """Write ``header | IFD0 | sub-IFDs | payload chunks`` atomically.

    Metadata comes first, like camera files, so that a truncated copy loses
    pixels and keeps its tags.  ``place(start)`` is called with the file
    offset of the first payload byte (word-aligned) and must set the
    offset tags of ``ifd0`` without changing their size (placeholders of the
    right length are set beforehand)."""
    ifd0_offset = 8
    sub_offsets, cursor = {}, ifd0_offset + ifd0.nbytes()
    for code, sub in ifd0.sub_ifds.items():
        sub_offsets[code] = cursor
        cursor += sub.nbytes()
    start = cursor + (cursor & 1)
    end = start + sum(memoryview(c).nbytes for c in payload)
    if end >= 2**32:
        raise TiffWriteError(f"{path}: image too large for a classic TIFF ({end} bytes)")
    place(start)
    blobs = [struct.pack("<2sHI", b"II", 42, ifd0_offset), ifd0.encode(ifd0_offset, sub_offsets)]
    for code, sub in ifd0.sub_ifds.items():
        blobs.append(sub.encode(sub_offsets[code], {}))
    blobs.append(b"\0" * (start - cursor))
    atomic_write(path, blobs + list(payload), overwrite)


def write_tiff(path, rgb: np.ndarray, dtype: str | None = None, overwrite: bool = False) -> Path:
    """Write a linear RGB image as an uncompressed 16-bit or float TIFF.

    Args:
        path: target file (atomic write; existing files need ``overwrite``).
        rgb: (H, W, 3) image.  Float input is linear with white = 1: for
            ``dtype='uint16'`` it is clipped to [0, 1] and scaled to 65535;
            uint16 input is written unchanged.
        dtype: 'uint16' or 'float32' (float keeps negatives and values > 1);
            None (default) follows the input: uint16 stays uint16, float
            input is written as float32.
    Returns:
        The path written.  cv2 (``IMREAD_UNCHANGED``) and tifffile read both.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise TiffWriteError(f"write_tiff expects an (H, W, 3) image, got shape {rgb.shape}")
    if dtype is None:
        if rgb.dtype == np.uint16:
            dtype = "uint16"
        elif rgb.dtype.kind == "f":
            dtype = "float32"
        else:
            raise TiffWriteError(f"write_tiff: input must be uint16 or float, got {rgb.dtype}")
    if dtype == "uint16":
        if rgb.dtype == np.uint16:
            pix = rgb
        elif rgb.dtype.kind == "f":
            if not np.isfinite(rgb).all():
                raise TiffWriteError("write_tiff: image holds NaN/inf values")
            pix = np.round(np.clip(rgb, 0.0, 1.0) * 65535.0).astype(np.uint16)
        else:
            raise TiffWriteError(f"write_tiff: uint16 output needs float or uint16 input, got {rgb.dtype}")
        bits, fmt = 16, 1
    elif dtype == "float32":
        if rgb.dtype.kind != "f":
            raise TiffWriteError(f"write_tiff: float32 output needs float input (white = 1), got {rgb.dtype}")
        if not np.isfinite(rgb).all():
            raise TiffWriteError("write_tiff: image holds NaN/inf values")
        pix = rgb.astype(np.float32)
        bits, fmt = 32, 3
    else:
        raise TiffWriteError(f"write_tiff: dtype must be 'uint16' or 'float32', got {dtype!r}")
    h, w, _ = pix.shape
    ifd = IFD()
    ifd.set(256, LONG, w)
    ifd.set(257, LONG, h)
    ifd.set(258, SHORT, [bits] * 3)
    ifd.set(259, SHORT, 1)        # no compression
    ifd.set(262, SHORT, 2)        # RGB
    ifd.set(277, SHORT, 3)
    ifd.set(284, SHORT, 1)        # interleaved
    ifd.set(339, SHORT, [fmt] * 3)
    return write_tiff_file(path, ifd, pix, overwrite=overwrite)


# ----------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------
#: TIFF magic numbers: standard, Olympus ORF (IIRO, IIRS), Panasonic RW2.
_MAGICS = (42, 0x4F52, 0x5352, 0x55)


def read_ifds(path, max_ifds: int = 64) -> list[dict]:
    """Every IFD of a TIFF-based file: the main chain, SubIFDs, EXIF IFD.

    Returns:
        A list of dicts ``{tag: value}`` (value: str for ASCII, bytes for
        UNDEFINED, tuple of numbers otherwise, rationals as floats), in
        discovery order; each dict also has ``'_kind'``: 'main', 'sub' or
        'exif', and ``'_types'``: ``{tag: TIFF field type}`` (for
        :func:`tag_numbers`' type checks).
    Raises:
        TiffFormatError: not a TIFF header, or offsets outside the file.  A
            SubIFDs/ExifIFD pointer tag of the wrong type or count is not
            followed (logged at debug level).
    """
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(0)
        head = fh.read(8)
        if len(head) < 8 or head[:2] not in (b"II", b"MM"):
            raise TiffFormatError(f"{path}: not a TIFF-based file")
        end = "<" if head[:2] == b"II" else ">"
        magic, first = struct.unpack(end + "HI", head[2:8])
        if magic not in _MAGICS:
            raise TiffFormatError(f"{path}: not a TIFF-based file (magic {magic})")
        out, seen = [], set()
        todo = [(first, "main")]
        budget = new_tag_budget()  # shared by the IFDs of this file
        while todo and len(out) < max_ifds:
            off, kind = todo.pop(0)
            if off == 0 or off in seen:
                continue
            seen.add(off)
            ifd, nxt = _read_ifd(fh, off, size, end, path, budget)
            ifd["_kind"] = kind
            out.append(ifd)
            for code, kind_, count in ((TAG_SUBIFDS, "sub", (1, max_ifds)), (TAG_EXIF_IFD, "exif", 1)):
                if code not in ifd:
                    continue
                try:
                    todo += [(int(v), kind_) for v in tag_numbers(ifd, code, _POINTER_TYPES, count=count, lo=8)]
                except TagError as exc:
                    # Not followed: what kpnt reads there is optional, and
                    # LibRaw judges the file itself.
                    log.debug("%s: %s: not followed", path, exc)
            if kind == "main":
                todo.append((nxt, "main"))
    return out


#: Value bytes read per tag (numbers are decoded into Python tuples: keep
#: them small; opaque bytes such as maker notes may be larger) and per file.
#: No tag kpnt uses comes near; a damaged count must not make kpnt read a
#: whole raw as tag data once per entry (65535 entries a directory).
_MAX_NUMERIC_TAG_BYTES = 1 << 20
_MAX_BYTES_TAG_BYTES = 1 << 24
_MAX_FILE_TAG_BYTES = 1 << 26


def ifd_entries(fh, raw: bytes, n: int, size: int, end: str, budget: list[int]):
    """The ``n`` entries of an IFD whose 12-byte records are ``raw``, as
    ``(code, type, count, value bytes in file order)``.  Unknown types, values
    outside the file and values over the per-tag caps or the file's
    remaining ``budget`` (a one-element list, decremented) are skipped, as
    TIFF readers must: a broken maker tag must not hide the rest."""
    for i in range(n):
        code, typ, count = struct.unpack(end + "HHI", raw[12 * i: 12 * i + 8])
        if typ not in _SIZE:
            continue
        nbytes = _SIZE[typ] * count
        if nbytes <= 4:
            data = raw[12 * i + 8: 12 * i + 8 + nbytes]
        else:
            (voff,) = struct.unpack(end + "I", raw[12 * i + 8: 12 * i + 12])
            if voff + nbytes > size:
                continue
            cap = _MAX_BYTES_TAG_BYTES if typ in (BYTE, ASCII, UNDEFINED) else _MAX_NUMERIC_TAG_BYTES
            if nbytes > min(cap, budget[0]):
                continue  # a damaged count: skipped like an out-of-file value
            budget[0] -= nbytes
            here = fh.tell()
            fh.seek(voff)
            data = fh.read(nbytes)
            fh.seek(here)
        yield code, typ, count, data


def new_tag_budget() -> list[int]:
    """The value bytes one file's IFDs may read in all (:func:`ifd_entries`)."""
    return [_MAX_FILE_TAG_BYTES]


def _read_ifd(fh, off: int, size: int, end: str, path, budget: list[int]) -> tuple[dict, int]:
    if off + 2 > size:
        raise TiffFormatError(f"{path}: IFD offset {off} beyond end of file ({size} bytes)")
    fh.seek(off)
    (n,) = struct.unpack(end + "H", fh.read(2))
    raw = fh.read(12 * n + 4)
    if len(raw) < 12 * n + 4:
        raise TiffFormatError(f"{path}: IFD at {off} runs past the end of the file")
    ifd, types = {}, {}
    for code, typ, count, data in ifd_entries(fh, raw, n, size, end, budget):
        ifd[code] = _decode(typ, count, data, end)
        types[code] = typ
    ifd["_types"] = types
    (nxt,) = struct.unpack(end + "I", raw[12 * n: 12 * n + 4])
    return ifd, nxt


def _decode(typ: int, count: int, data: bytes, end: str):
    if typ == ASCII:
        return data.split(b"\0", 1)[0].decode("latin-1").strip()
    if typ == UNDEFINED:
        return bytes(data)
    dt = np.dtype(_DTYPE[typ]).newbyteorder(end)
    arr = np.frombuffer(data, dtype=dt)
    if typ in (RATIONAL, SRATIONAL):
        num, den = arr[0::2].astype(np.float64), arr[1::2].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            return tuple(np.where(den != 0, num / np.where(den == 0, 1, den), 0.0).tolist())
    return tuple(arr.tolist())


# ----------------------------------------------------------------------
# validated tag access (every tag kpnt parses itself goes through these)
# ----------------------------------------------------------------------
class TagError(TiffFormatError):
    """A tag kpnt needs has the wrong type, count or a value out of range.

    ``str(error)`` names the tag (name and code) and what is wrong with it.
    """


#: Names of the tags kpnt reads, for error messages.
TAG_NAMES = {
    254: "NewSubfileType", 262: "PhotometricInterpretation", 271: "Make", 272: "Model", 277: "SamplesPerPixel",
    TAG_SUBIFDS: "SubIFDs", TAG_EXIF_IFD: "ExifIFD", 34867: "ISOSpeed", 50706: "DNGVersion",
    50710: "CFAPlaneColor", 50713: "BlackLevelRepeatDim", 50714: "BlackLevel", 50721: "ColorMatrix1",
    50722: "ColorMatrix2", 50730: "BaselineExposure", 50778: "CalibrationIlluminant1",
    50779: "CalibrationIlluminant2", 51041: "NoiseProfile",
}
#: Field types that hold numbers (ASCII and UNDEFINED do not).
NUMERIC_TYPES = (BYTE, SHORT, LONG, RATIONAL, SBYTE, SSHORT, SLONG, SRATIONAL, FLOAT, DOUBLE, IFD_TYPE)
INTEGER_TYPES = (BYTE, SHORT, LONG, SBYTE, SSHORT, SLONG, IFD_TYPE)
_POINTER_TYPES = (LONG, IFD_TYPE)
_TYPE_NAMES = {BYTE: "BYTE", ASCII: "ASCII", SHORT: "SHORT", LONG: "LONG", RATIONAL: "RATIONAL", SBYTE: "SBYTE",
               UNDEFINED: "UNDEFINED", SSHORT: "SSHORT", SLONG: "SLONG", SRATIONAL: "SRATIONAL", FLOAT: "FLOAT",
               DOUBLE: "DOUBLE", IFD_TYPE: "IFD"}


def tag_label(code: int) -> str:
    """'NoiseProfile (51041)' for a known tag, 'tag 12345' otherwise."""
    return f"{TAG_NAMES[code]} ({code})" if code in TAG_NAMES else f"tag {code}"


def tag_numbers(ifd: dict, code: int, types=NUMERIC_TYPES, count=None, lo=None, hi=None) -> np.ndarray:
    """A numeric tag of a :func:`read_ifds` dict, checked, as float64.

    Args:
        ifd: one dict of :func:`read_ifds` (a dict without ``'_types'``,
            built by hand, skips the type check).
        code: the tag (must be present: test ``code in ifd`` first).
        types: accepted TIFF field types.
        count: required number of values: an int, a ``(min, max)`` pair, or
            None for "at least one".
        lo, hi: inclusive range every value must lie in (None: no bound);
            values must be finite either way.
    Raises:
        TagError: wrong type, count, a non-finite value or one out of range;
            the message names the tag.
    """
    label = tag_label(code)
    typ = ifd["_types"].get(code) if "_types" in ifd else None
    if "_types" in ifd and typ not in types:  # hand-built dicts carry no types
        want = "/".join(_TYPE_NAMES[t] for t in types if t != IFD_TYPE)
        raise TagError(f"{label} has type {_TYPE_NAMES.get(typ, typ)}, expected {want}")
    vals = np.asarray(ifd[code], dtype=np.float64).ravel()
    lo_n, hi_n = (count, count) if isinstance(count, int) else (count or (1, None))
    if vals.size < lo_n or (hi_n is not None and vals.size > hi_n):
        want = f"{lo_n}" if lo_n == hi_n else f"{lo_n}..{hi_n}" if hi_n is not None else f">= {lo_n}"
        raise TagError(f"{label} has {vals.size} value(s), expected {want}")
    bad = ~np.isfinite(vals)
    if lo is not None:
        bad |= vals < lo
    if hi is not None:
        bad |= vals > hi
    if bad.any():
        rng = f" (expected {lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'})"
        raise TagError(f"{label} holds {vals[bad][0]:g}{rng if lo is not None or hi is not None else ' (not finite)'}")
    return vals


def tag_text(ifd: dict, code: int, default: str = "") -> str:
    """An ASCII tag as a str (``default`` when absent).

    Raises:
        TagError: the tag is present with another type.
    """
    if code not in ifd:
        return default
    typ = ifd["_types"].get(code) if "_types" in ifd else ASCII
    if typ != ASCII:
        raise TagError(f"{tag_label(code)} has type {_TYPE_NAMES.get(typ, typ)}, expected ASCII")
    return ifd[code]
