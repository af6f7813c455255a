"""DNG writers: CFA (mosaic) DNGs for synthetic raws, LinearRaw DNGs for output.

The TIFF container is :mod:`kpnt.io.tiff`, the lossless-JPEG tiles
:mod:`kpnt.io.ljpeg_tiles`.  Both writers put the image in IFD0 (one
uncompressed strip or lossless-JPEG tiles, no preview) and the shot's EXIF
data in an EXIF IFD, where LibRaw reads the ISO.  The tags written are
listed in :func:`dng_ifd`; DESIGN.md sections 1 ('Output') and 8
('Synthetic raws') say why each matters.

Example::

    >>> from kpnt.mosaic import CFA
    >>> write_cfa_dng("shot.dng", mosaic_u16, CFA.bayer("RGGB"), meta)  # doctest: +SKIP
    >>> write_linear_dng("out.dng", rgb_u16, meta)                       # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import kpnt
from kpnt.io.carry import WB_TAGS
from kpnt.io.linearization import CODES, compact_table, to_codes
from kpnt.io.ljpeg_tiles import CFA_TILE, encode_tiles, tile_side, write_tiled_tiff
from kpnt.io.meta import RawMeta
from kpnt.io.tiff import (ASCII, BYTE, DOUBLE, IFD, LONG, RATIONAL, SHORT, SRATIONAL, TAG_EXIF_IFD, UNDEFINED,
                          TiffWriteError, check_target, write_tiff_file)
from kpnt.mosaic import CFA

PHOTOMETRIC_CFA = 32803
PHOTOMETRIC_LINEAR_RAW = 34892
ILLUMINANT_D65 = 21
DNG_VERSION = (1, 4, 0, 0)
#: Oldest reader that can read these files: nothing here needs more than 1.1
#: (NoiseProfile is optional metadata that older readers simply ignore).
DNG_BACKWARD_VERSION = (1, 1, 0, 0)
#: LibRaw rejects images narrower or shorter than this as damaged; a DNG no
#: raw reader opens is refused here instead of written.
MIN_SIZE = 22


def _check_image(name: str, img, ndim: int) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint16:
        raise TiffWriteError(f"{name} must be uint16 raw counts, got {img.dtype}: scale and round first")
    if img.ndim != ndim or (ndim == 3 and img.shape[2] != 3) or min(img.shape[:2]) < 1:
        want = "(H, W)" if ndim == 2 else "(H, W, 3)"
        raise TiffWriteError(f"{name} must have shape {want}, got {img.shape}")
    if min(img.shape[:2]) < MIN_SIZE:
        raise TiffWriteError(f"{name} is {img.shape[0]}x{img.shape[1]}: LibRaw cannot open DNGs under "
                             f"{MIN_SIZE}x{MIN_SIZE} photosites, write a larger image")
    return img


def dng_ifd(meta: RawMeta, width: int, height: int, samples: int) -> IFD:
    """IFD0 with every tag shared by CFA and LinearRaw DNGs.

    Tags: NewSubFileType 254, ImageWidth 256, ImageLength 257, BitsPerSample
    258, Compression 259 (1), Make 271, Model 272, Orientation 274,
    SamplesPerPixel 277, PlanarConfiguration 284, Software 305, DateTime 306,
    DNGVersion 50706, DNGBackwardVersion 50707, UniqueCameraModel 50708,
    ColorMatrix1 50721, AsShotNeutral 50728 (= 1 / wb), BaselineExposure
    50730, CalibrationIlluminant1 50778 (D65), NoiseProfile 51041 (when
    known), and the EXIF IFD 34665 (see :func:`exif_ifd`).
    Photometric and the level tags are set by the callers.
    """
    ifd = IFD()
    ifd.set(254, LONG, 0)                       # the full-resolution main image
    ifd.set(256, LONG, width)
    ifd.set(257, LONG, height)
    ifd.set(258, SHORT, [16] * samples)
    ifd.set(259, SHORT, 1)
    ifd.set(271, ASCII, meta.make)
    ifd.set(272, ASCII, meta.model)
    ifd.set(274, SHORT, meta.orientation)
    ifd.set(277, SHORT, samples)
    ifd.set(284, SHORT, 1)
    ifd.set(305, ASCII, f"kpnt {kpnt.__version__}")
    if meta.datetime:
        ifd.set(306, ASCII, meta.datetime)
    ifd.set(50706, BYTE, bytes(DNG_VERSION))
    ifd.set(50707, BYTE, bytes(DNG_BACKWARD_VERSION))
    unique = " ".join(s for s in (meta.make, meta.model) if s) or "kpnt synthetic"
    ifd.set(50708, ASCII, unique)
    ifd.set(50721, SRATIONAL, meta.xyz_to_cam.ravel())
    ifd.set(50728, RATIONAL, 1.0 / meta.wb)
    ifd.set(50730, SRATIONAL, meta.baseline_exposure)
    ifd.set(50778, SHORT, ILLUMINANT_D65)
    if meta.noise_profile is not None:
        # One (S, O) pair per colour plane, in CFAPlaneColor order R, G, B
        # (LinearRaw: per sample R, G, B).
        ifd.set(51041, DOUBLE, meta.noise_profile.ravel())
    ifd.sub_ifds[TAG_EXIF_IFD] = exif_ifd(meta)
    _overlay_carried(ifd, meta)
    return ifd


def _overlay_carried(ifd: IFD, meta: RawMeta) -> None:
    """Replace derived tags by the source's own entries (:mod:`kpnt.io.carry`).

    A DNG source's colour tags replace the derived ColorMatrix1 /
    CalibrationIlluminant1 / BaselineExposure outright (a tag the source
    lacks is not invented); a TIFF-based source's EXIF IFD replaces the EXIF
    IFD rebuilt from LibRaw's float values, and its IFD0 the derived
    DateTime.  The as-shot WB tags are kept only when kpnt kept the as-shot
    WB (an estimated WB is written as AsShotNeutral instead).
    """
    carried = meta.carried
    if 271 in carried.ifd0 or carried.exif:     # a TIFF-based source: its own DateTime or none
        ifd.tags.pop(306, None)
    if 50721 in carried.ifd0:
        for code in (50721, 50778, 50730):
            ifd.tags.pop(code, None)
    for code, (typ, data) in carried.ifd0.items():
        if code in WB_TAGS and meta.wb_source != "as_shot":
            continue
        ifd.set(code, typ, data)
    if 50729 in ifd.tags:           # AsShotWhiteXY and AsShotNeutral are exclusive
        ifd.tags.pop(50728, None)
    if carried.exif:
        exif = IFD()
        for code, (typ, data) in carried.exif.items():
            exif.set(code, typ, data)
        ifd.sub_ifds[TAG_EXIF_IFD] = exif


def exif_ifd(meta: RawMeta) -> IFD:
    """EXIF IFD: ExifVersion 36864, ISOSpeedRatings 34855 (plus
    SensitivityType 34864 + ISOSpeed 34867 above 65535), ExposureTime 33434,
    FNumber 33437, DateTimeOriginal 36867, FocalLength 37386 (those known)."""
    exif = IFD()
    exif.set(36864, UNDEFINED, b"0230")
    if meta.iso > 0:
        exif.set(34855, SHORT, min(meta.iso, 65535))
        if meta.iso > 65535:
            exif.set(34864, SHORT, 3)           # ISOSpeed is the sensitivity
            exif.set(34867, LONG, meta.iso)
    if meta.exposure_time is not None:
        exif.set(33434, RATIONAL, meta.exposure_time)
    if meta.f_number is not None:
        exif.set(33437, RATIONAL, meta.f_number)
    if meta.datetime:
        exif.set(36867, ASCII, meta.datetime)
    if meta.focal_length is not None:
        exif.set(37386, RATIONAL, meta.focal_length)
    return exif


def write_cfa_dng(path, mosaic_u16: np.ndarray, cfa: CFA, meta: RawMeta, overwrite: bool = False,
                  extra_tags: dict | None = None, compression: str = "none") -> Path:
    """Write a mosaic as a CFA DNG that LibRaw/rawpy and raw editors open.

    Args:
        path: target file (atomic write; an existing file needs ``overwrite``).
        mosaic_u16: (H, W) uint16 raw counts, black and white per ``meta``.
        cfa: layout of the mosaic; its pattern position (0, 0) is the
            top-left photosite.  Bayer (any phase) or X-Trans (any phase).
        meta: levels, white balance, colour matrix and shot metadata.
        extra_tags: ``{code: (type, values)}`` set last, over everything
            else, ``{code: None}`` removes a tag (test fixtures:
            ActiveArea, a file without AsShotNeutral).
        compression: 'none' (default): one uncompressed strip; 'ljpeg':
            lossless JPEG in 256x256 tiles, 2 components per tile as
            Adobe's DNG Converter writes camera raws (the size a camera's
            lossless raw has, ``tools/dng_size.py``).
    Returns:
        The path written.

    CFA-specific tags: PhotometricInterpretation 262 = 32803, CFARepeatPatternDim
    33421, CFAPattern 33422 (DNG colour codes 0 R, 1 G, 2 B), CFAPlaneColor
    50710 (0 1 2), CFALayout 50711 (1, rectangular), BlackLevelRepeatDim 50713
    (= the CFA period), BlackLevel 50714 (meta.black of each position's
    colour: LONG when integral, else RATIONAL), WhiteLevel 50717.
    """
    mosaic = _check_image("mosaic_u16", mosaic_u16, 2)
    if not isinstance(cfa, CFA):
        raise TiffWriteError(f"cfa must be a kpnt.mosaic.CFA, got {type(cfa).__name__}")
    if not isinstance(meta, RawMeta):
        raise TiffWriteError(f"meta must be a kpnt.io.RawMeta, got {type(meta).__name__}")
    if meta.white != round(meta.white) or meta.white > 65535:
        raise TiffWriteError(f"meta.white must be an integer <= 65535 for a 16-bit DNG, got {meta.white}")
    h, w = mosaic.shape
    p = cfa.period
    ifd = dng_ifd(meta, w, h, samples=1)
    ifd.set(262, SHORT, PHOTOMETRIC_CFA)
    ifd.set(33421, SHORT, [p, p])
    ifd.set(33422, BYTE, bytes(cfa.pattern.astype(np.uint8).ravel().tolist()))
    ifd.set(50710, BYTE, bytes([0, 1, 2]))
    ifd.set(50711, SHORT, 1)
    black = meta.black[cfa.pattern].ravel()
    ifd.set(50713, SHORT, [p, p])
    if np.array_equal(black, np.round(black)):
        ifd.set(50714, LONG, black.astype(np.int64))
    else:
        ifd.set(50714, RATIONAL, black)
    ifd.set(50717, LONG, int(meta.white))
    for code, tv in (extra_tags or {}).items():
        if tv is None:
            ifd.tags.pop(code, None)
        else:
            ifd.set(code, *tv)
    if compression == "none":
        return write_tiff_file(path, ifd, mosaic, overwrite=overwrite)
    if compression != "ljpeg":
        raise TiffWriteError(f"CFA DNG compression must be 'ljpeg' or 'none', got {compression!r}")
    check_target(path, overwrite)
    side = tile_side(w, CFA_TILE)
    return write_tiled_tiff(path, ifd, encode_tiles(mosaic, side), side, overwrite=overwrite)


#: LinearRaw encodings: 'compact' (lossless JPEG of 11-bit codes through a
#: LinearizationTable, :mod:`kpnt.io.linearization`), 'ljpeg' (lossless JPEG
#: of the 16-bit values, :mod:`kpnt.io.ljpeg_tiles`) or 'none'.
COMPRESSIONS = ("compact", "ljpeg", "none")
#: LinearizationTable tag.
TAG_LINEARIZATION = 50712


def write_linear_dng(path, rgb_u16: np.ndarray, meta: RawMeta, overwrite: bool = False,
                     compression: str = "ljpeg", codes: int = CODES) -> Path:
    """Write demosaiced linear camera RGB as a LinearRaw DNG.

    Args:
        path: target file (atomic write; an existing file needs ``overwrite``).
        rgb_u16: (H, W, 3) uint16 linear camera RGB, black 0, white 65535
            (the caller scales: e.g. ``round(clip(rgb, 0, 1) * 65535)``).
        meta: colour matrix, as-shot white balance, identity, orientation,
            baseline exposure and noise profile of the source; its levels are
            not used (this file has black 0 and white 65535).
        compression: 'ljpeg' (default): lossless JPEG in 128x128 tiles,
            which rawpy, darktable and RawTherapee read; 'compact': the same
            tiles holding 11-bit codes that a LinearizationTable maps back
            to 16-bit values (:mod:`kpnt.io.linearization`: not bit-exact,
            rounding error below 0.4x, RMS 0.15x, a clean camera's ISO-100
            noise; ~60% of an 'ljpeg' file, see docs/raw_editors.md);
            'none': one uncompressed strip (1.4-1.7x the bytes of an
            'ljpeg' file).
        codes: levels of the 'compact' table (default :data:`CODES`; fewer
            is smaller and coarser, see :func:`compact_table`).
    Returns:
        The path written.

    Tags as :func:`dng_ifd`, plus PhotometricInterpretation 262 = 34892,
    BlackLevel 50714 = 0 and WhiteLevel 50717 = 65535 per sample (both
    apply to the linearized values), the tile tags (322-325) for 'ljpeg'
    and 'compact', and LinearizationTable 50712 for 'compact'.
    """
    rgb = _check_image("rgb_u16", rgb_u16, 3)
    if not isinstance(meta, RawMeta):
        raise TiffWriteError(f"meta must be a kpnt.io.RawMeta, got {type(meta).__name__}")
    h, w, _ = rgb.shape
    ifd = dng_ifd(meta, w, h, samples=3)
    ifd.set(262, SHORT, PHOTOMETRIC_LINEAR_RAW)
    ifd.set(50714, LONG, [0, 0, 0])
    ifd.set(50717, LONG, [65535] * 3)
    if compression == "none":
        return write_tiff_file(path, ifd, rgb, overwrite=overwrite)
    if compression not in COMPRESSIONS:
        raise TiffWriteError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
    check_target(path, overwrite)       # before minutes of encoding, not after
    if compression == "compact":
        try:
            table = compact_table(codes)
        except ValueError as exc:
            raise TiffWriteError(str(exc)) from None
        ifd.set(TAG_LINEARIZATION, SHORT, table)
        rgb = to_codes(rgb, table)
    side = tile_side(w)
    return write_tiled_tiff(path, ifd, encode_tiles(rgb, side), side, overwrite=overwrite)
