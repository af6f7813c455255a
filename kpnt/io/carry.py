"""Tags carried verbatim from a TIFF-based source raw into kpnt's output DNG.

A raw editor renders kpnt's DNG like the original only if it sees the same
colour calibration, crop and shot data.  Rather than re-deriving those from
LibRaw's decoded values (floats: f/5.7 read back as 5.6568, 1/203 s as
0.004926, a second illuminant dropped), kpnt copies the source's own tag
entries, byte for byte (converted to little-endian), for an allow-list of
tags whose meaning does not change when a mosaic becomes demosaiced linear
RGB of the same geometry:

- :data:`IFD0_TAGS`: identity and authorship from IFD0 of any TIFF-based raw
  (Make/Model exactly as the camera spells them, DateTime, Artist, ...);
- :data:`DNG_TAGS`: every colour-calibration and profile tag of a DNG's IFD0
  (ColorMatrix1/2/3, CameraCalibration, ForwardMatrix, AnalogBalance,
  CalibrationIlluminant, AsShotNeutral, BaselineExposure, ProfileName,
  DefaultBlackRender, LinearResponseLimit, ...);
- :data:`RAW_IFD_TAGS`: crop and scale tags of a DNG's raw image IFD
  (DefaultCropOrigin/Size are relative to the ActiveArea, which LibRaw has
  already cut away, so they apply unchanged to kpnt's output);
- every EXIF IFD entry except :data:`EXIF_SKIP` (MakerNote and pointers,
  whose offsets point into the source file, and the pixel dimensions).

Tags that describe the pixel data (samples per pixel, photometric
interpretation, compression, strips, CFA layout, black/white levels,
linearization table, ActiveArea, masked areas, opcode lists) are never
carried: kpnt writes its own.

Example::

    >>> tags = read_carried_tags("IMG_0001.dng")          # doctest: +SKIP
    >>> tags.ifd0[50721]                                  # doctest: +SKIP
    (10, b'...')   # (TIFF type, little-endian bytes)
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from kpnt.io.tiff import _DTYPE, ASCII, BYTE, RATIONAL, SRATIONAL, TAG_EXIF_IFD, TAG_SUBIFDS, UNDEFINED, ifd_entries, new_tag_budget

#: IFD0 tags copied from any TIFF-based raw: ImageDescription, Make, Model,
#: DateTime, Artist, Copyright.
IFD0_TAGS = (270, 271, 272, 306, 315, 33432)
#: IFD0 tags copied from a DNG: identity, colour calibration, profiles.
DNG_TAGS = (
    50708, 50709,                   # UniqueCameraModel, LocalizedCameraModel
    50721, 50722,                   # ColorMatrix1/2
    50723, 50724,                   # CameraCalibration1/2
    50725, 50726,                   # ReductionMatrix1/2
    50727, 50728, 50729,            # AnalogBalance, AsShotNeutral, AsShotWhiteXY
    50730, 50731, 50732,            # BaselineExposure, BaselineNoise, BaselineSharpness
    50734, 50735, 50736, 50739,     # LinearResponseLimit, CameraSerialNumber, LensInfo, ShadowScale
    50778, 50779,                   # CalibrationIlluminant1/2
    50931, 50932, 50934, 50936,     # CameraCalibrationSignature, ProfileCalibrationSignature, AsShotProfileName, ProfileName
    50937, 50938, 50939, 50940,     # ProfileHueSatMapDims/Data1/Data2, ProfileToneCurve
    50941, 50942,                   # ProfileEmbedPolicy, ProfileCopyright
    50964, 50965,                   # ForwardMatrix1/2
    50981, 50982,                   # ProfileLookTableDims/Data
    51107, 51108, 51109, 51110,     # ProfileHueSatMapEncoding, ProfileLookTableEncoding, BaselineExposureOffset, DefaultBlackRender
    52529, 52530, 52531, 52532,     # CalibrationIlluminant3, CameraCalibration3, ColorMatrix3, ForwardMatrix3
    52533, 52534, 52535,            # IlluminantData1/2/3
)
#: Raw-IFD tags copied from a DNG: DefaultScale, DefaultCropOrigin,
#: DefaultCropSize, AntiAliasStrength, BestQualityScale, DefaultUserCrop.
RAW_IFD_TAGS = (50718, 50719, 50720, 50738, 50780, 51125)
#: EXIF entries not copied: MakerNote (offsets into the source file), the
#: Interoperability IFD pointer, and PixelX/YDimension (the source's size).
EXIF_SKIP = (37500, 40965, 40962, 40963)
#: The white-balance tags, copied only when kpnt keeps the as-shot WB.
WB_TAGS = (50728, 50729)

_MAX_IFDS = 64


@dataclass
class CarriedTags:
    """Tag entries to copy: ``code -> (TIFF type, little-endian bytes)``.

    ``ifd0`` goes into the output's IFD0 (IFD0, DNG and raw-IFD tags of the
    source), ``exif`` into its EXIF IFD.  Empty when the source is not
    TIFF-based (CR3, RAF, CRW, ...).
    """

    ifd0: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    exif: dict[int, tuple[int, bytes]] = field(default_factory=dict)


def _entries(fh, off: int, size: int, end: str, budget: list[int]) -> tuple[dict[int, tuple[int, bytes]], int]:
    """Raw entries of the IFD at ``off``: code -> (type, bytes in file order),
    and the next IFD's offset; what :func:`kpnt.io.tiff.ifd_entries` skips
    is skipped here too."""
    fh.seek(off)
    head = fh.read(2)
    if len(head) < 2:
        return {}, 0
    (n,) = struct.unpack(end + "H", head)
    raw = fh.read(12 * n + 4)
    if len(raw) < 12 * n + 4:
        return {}, 0
    out = {code: (typ, data) for code, typ, _, data in ifd_entries(fh, raw, n, size, end, budget)}
    (nxt,) = struct.unpack(end + "I", raw[12 * n: 12 * n + 4])
    return out, nxt


def to_little_endian(typ: int, data: bytes, end: str) -> bytes:
    """A tag's value bytes in little-endian order (kpnt writes 'II' files)."""
    if end == "<" or typ in (BYTE, ASCII, UNDEFINED) or typ not in _DTYPE:
        return bytes(data)
    dt = np.dtype(_DTYPE[typ])
    return np.frombuffer(data, dtype=dt.newbyteorder(">")).astype(dt.newbyteorder("<")).tobytes()


def _value(entry: tuple[int, bytes], end: str) -> int:
    typ, data = entry
    if typ in (RATIONAL, SRATIONAL) or typ not in _DTYPE:
        return -1
    dt = np.dtype(_DTYPE[typ]).newbyteorder(end)
    arr = np.frombuffer(data, dtype=dt)
    return int(arr[0]) if arr.size else -1


def read_carried_tags(path) -> CarriedTags:
    """The tags of ``path`` to carry into its output (see module docstring).

    Never raises for a file that is not TIFF-based or whose structure is
    broken: it then carries what it could read (possibly nothing), and the
    output falls back to LibRaw's decoded metadata.
    """
    out = CarriedTags()
    try:
        fh = open(path, "rb")
    except OSError:
        return out
    with fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(0)
        head = fh.read(8)
        if len(head) < 8 or head[:2] not in (b"II", b"MM"):
            return out
        end = "<" if head[:2] == b"II" else ">"
        magic, first = struct.unpack(end + "HI", head[2:8])
        if magic != 42 or first >= size:
            return out
        budget = new_tag_budget()        # shared by this file's IFDs
        ifd0, _ = _entries(fh, first, size, end, budget)
        is_dng = 50706 in ifd0
        # The raw IFD: the full-resolution (NewSubFileType 0) CFA or
        # LinearRaw image, IFD0 itself or one of its SubIFDs.
        raw_ifd = ifd0
        if is_dng and not _is_raw_ifd(ifd0, end) and TAG_SUBIFDS in ifd0:
            typ, data = ifd0[TAG_SUBIFDS]
            for sub in np.frombuffer(data, dtype=np.dtype("u4").newbyteorder(end))[:_MAX_IFDS]:
                if 0 < int(sub) < size:
                    cand, _ = _entries(fh, int(sub), size, end, budget)
                    if _is_raw_ifd(cand, end):
                        raw_ifd = cand
                        break
        allow = IFD0_TAGS + (DNG_TAGS if is_dng else ())
        for code in allow:
            if code in ifd0:
                typ, data = ifd0[code]
                out.ifd0[code] = (typ, to_little_endian(typ, data, end))
        if is_dng:
            for code in RAW_IFD_TAGS:
                if code in raw_ifd:
                    typ, data = raw_ifd[code]
                    out.ifd0[code] = (typ, to_little_endian(typ, data, end))
        if TAG_EXIF_IFD in ifd0:
            exif_off = _value(ifd0[TAG_EXIF_IFD], end)
            if 0 < exif_off < size:
                exif, _ = _entries(fh, exif_off, size, end, budget)
                for code, (typ, data) in exif.items():
                    if code in EXIF_SKIP or typ == 13:
                        continue
                    out.exif[code] = (typ, to_little_endian(typ, data, end))
    return out


def _is_raw_ifd(ifd: dict, end: str) -> bool:
    subfile = _value(ifd[254], end) if 254 in ifd else 0
    photometric = _value(ifd[262], end) if 262 in ifd else -1
    return subfile == 0 and photometric in (32803, 34892)


def encode_tag(typ: int, values) -> tuple[int, bytes]:
    """``(typ, little-endian bytes)`` of a tag value, the form
    :class:`CarriedTags` holds (rationals from floats or exact (num, den)
    pairs: an (N, 2) int array is written as given)."""
    from kpnt.io.tiff import IFD

    arr = None if isinstance(values, (str, bytes)) else np.asarray(values)
    if typ in (RATIONAL, SRATIONAL) and arr is not None and arr.ndim == 2 and arr.dtype.kind in "iu":
        return typ, arr.astype(_DTYPE[typ]).tobytes()
    ifd = IFD()
    ifd.set(0, typ, values)
    t, _, raw = ifd._encoded()[0]
    return t, raw
