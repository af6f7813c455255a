"""Read camera raws into a normalised mosaic plus metadata (the only rawpy user).

:func:`read_raw` opens a file with rawpy (LibRaw), copies the visible mosaic
and everything kpnt needs before the file is closed, and returns a
:class:`RawImage`.  Anything that is not a Bayer or X-Trans mosaic raw, or
that is damaged, raises :class:`kpnt.errors.RawReadError` with one line that
names the file and the reason.

Where the metadata comes from (rawpy 0.28 / LibRaw 0.22 expose no make/model,
no BaselineExposure and no NoiseProfile):

- make/model: LibRaw's own identification (``libraw_get_iparams`` of the
  LibRaw library that rawpy ships, through ctypes; LibRaw normalises makers,
  e.g. 'NIKON CORPORATION' -> 'Nikon', as darktable's profile table does).
  Its struct layout is checked against rawpy's answers; if the library is
  not found or disagrees, the TIFF Make/Model tags are used (TIFF-based
  raws), else ''.
- ISO, exposure time, f-number, focal length, capture time: rawpy ``other``
  (LibRaw stores them as float32; they are rounded to the shortest decimal
  that float32 represents, so 1/250 s reads back as 0.004, not 0.0040000002).
- DNG files: ColorMatrix (the one calibrated nearest D65), BaselineExposure,
  NoiseProfile and the BlackLevel pattern are read from the file's own tags
  (:func:`kpnt.io.tiff.read_ifds`): LibRaw replaces a DNG's ColorMatrix by its
  built-in table for cameras it knows (and reports zeros for others), and
  does not fold a 6x6 X-Trans black pattern into its per-channel levels.
- Other raws: LibRaw's XYZ->camera matrix (Adobe's D65 matrices).

Example::

    >>> img = read_raw("DSCF1234.RAF")                     # doctest: +SKIP
    >>> img.mosaic.shape, img.cfa.kind, img.meta.iso        # doctest: +SKIP
    ((4016, 6016), 'xtrans', 800)
"""
from __future__ import annotations

import ctypes
import glob
import logging
import math
import os
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import numpy as np
import rawpy

from kpnt.errors import RawReadError
from kpnt.io.autowb import estimate_wb
from kpnt.io.carry import CarriedTags, encode_tag, read_carried_tags
from kpnt.io.tiff import ASCII
from kpnt.io.meta import MetaError, RawMeta, is_ciff_file, known_exposure
from kpnt.io.tiff import (DOUBLE, FLOAT, INTEGER_TYPES, LONG, RATIONAL, SHORT, SRATIONAL, TagError, TiffFormatError,
                          TiffWriteError, read_ifds, tag_label, tag_numbers, tag_text, to_rational)
from kpnt.io.validate import ValidationError, check_raw
from kpnt.mosaic import CFA, CFAError
from kpnt.mosaic.kinds import BAYER

log = logging.getLogger(__name__)

#: LibRaw's ``sizes.flip`` -> EXIF orientation (LibRaw maps EXIF o to flip
#: ``"50132467"[o & 7]``; this is the inverse).
_FLIP_TO_EXIF = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}

#: Colour temperature (K) of the DNG/EXIF LightSource codes, to pick the
#: ColorMatrix calibrated nearest D65 (6504 K).
_ILLUMINANT_K = {1: 5500, 2: 4150, 3: 2850, 4: 5500, 9: 5500, 10: 6500, 11: 7500, 12: 6430, 13: 5000,
                 14: 4150, 15: 3525, 16: 2940, 17: 2856, 18: 4874, 19: 6774, 20: 5503, 21: 6504,
                 22: 7504, 23: 5003, 24: 3200}


@dataclass(eq=False)
class RawImage:
    """A mosaic raw, read and normalised.

    Attributes:
        path: the file read.
        raw: (H, W) uint16 visible area, raw counts as stored.
        mosaic: (H, W) float32 ``(raw - black) / (white - black)`` with the
            black level of each photosite; not clipped (negative noise is
            information).
        saturated: (H, W) bool, ``raw >= white``.
        cfa: layout whose pattern position (0, 0) is the visible area's
            top-left photosite.
        meta: levels, white balance, colour matrix and shot metadata.
    """

    path: Path
    raw: np.ndarray
    mosaic: np.ndarray
    saturated: np.ndarray
    cfa: CFA
    meta: RawMeta


def _f32(v: float) -> float:
    """Shortest decimal that rounds to the same float32 (LibRaw stores float32).

    Not ``str(np.float32(v))``: that follows numpy's global print options,
    which libraries change (colour-science sets ``legacy='1.13'``, where it
    prints 8 significant digits), so the same file read differently."""
    return float(np.format_float_positional(np.float32(v), unique=True, trim="-"))


# ----------------------------------------------------------------------
# LibRaw identification through ctypes (make/model)
# ----------------------------------------------------------------------
class _IParams(ctypes.Structure):
    # Leading part of LibRaw's libraw_iparams_t (stable since LibRaw 0.20).
    _fields_ = [
        ("guard", ctypes.c_char * 4), ("make", ctypes.c_char * 64), ("model", ctypes.c_char * 64),
        ("software", ctypes.c_char * 64), ("normalized_make", ctypes.c_char * 64),
        ("normalized_model", ctypes.c_char * 64), ("maker_index", ctypes.c_uint), ("raw_count", ctypes.c_uint),
        ("dng_version", ctypes.c_uint), ("is_foveon", ctypes.c_uint), ("colors", ctypes.c_int),
        ("filters", ctypes.c_uint), ("xtrans", ctypes.c_char * 36), ("xtrans_abs", ctypes.c_char * 36),
        ("cdesc", ctypes.c_char * 5),
    ]


@lru_cache(maxsize=1)
def _libraw_c():
    """rawpy's bundled LibRaw as a ctypes library, or None (logged once)."""
    pkg = os.path.dirname(rawpy.__file__)
    cands = []
    for folder in (pkg, pkg + ".libs", os.path.join(pkg, os.pardir, "rawpy.libs")):
        for pat in ("libraw_r*.so*", "libraw_r*.dylib", "*raw_r*.dll"):
            cands += sorted(glob.glob(os.path.join(folder, pat)))
    for cand in cands:
        try:
            lib = ctypes.CDLL(cand)
            lib.libraw_versionNumber.restype = ctypes.c_int
            want = rawpy.libraw_version
            have = lib.libraw_versionNumber()
            if have != (want[0] << 16) | (want[1] << 8) | want[2]:
                continue
            lib.libraw_init.restype = ctypes.c_void_p
            lib.libraw_init.argtypes = [ctypes.c_uint]
            lib.libraw_open_file.restype = ctypes.c_int
            lib.libraw_open_file.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.libraw_get_iparams.restype = ctypes.POINTER(_IParams)
            lib.libraw_get_iparams.argtypes = [ctypes.c_void_p]
            lib.libraw_close.restype = None
            lib.libraw_close.argtypes = [ctypes.c_void_p]
            return lib
        except (OSError, AttributeError):
            continue
    log.warning("rawpy's LibRaw library was not found for ctypes: camera make/model come from TIFF tags only")
    return None


def _libraw_identity(path: Path, colors: int, cdesc: bytes) -> tuple[str, str] | None:
    """(make, model) as LibRaw identifies them, or None if unavailable.

    ``colors``/``cdesc`` are rawpy's answers for the same file: they must
    match what ctypes reads, which guards against a changed struct layout.
    """
    lib = _libraw_c()
    if lib is None:
        return None
    handle = lib.libraw_init(0)
    if not handle:
        return None
    try:
        if lib.libraw_open_file(handle, os.fsencode(path)) != 0:
            return None
        ip = lib.libraw_get_iparams(handle).contents
        if ip.colors != colors or bytes(ip.cdesc) != bytes(cdesc):
            log.warning("LibRaw's iparams layout does not match rawpy's: ignoring LibRaw's make/model")
            return None
        dec = lambda b: bytes(b).decode("utf-8", "replace").strip()  # noqa: E731
        return dec(ip.make), dec(ip.model)
    finally:
        lib.libraw_close(handle)


# ----------------------------------------------------------------------
# TIFF/DNG tags rawpy does not expose
# ----------------------------------------------------------------------
@dataclass
class _FileTags:
    make: str = ""
    model: str = ""
    is_dng: bool = False
    xyz_to_cam: np.ndarray | None = None
    baseline_exposure: float = 0.0
    noise_profile: np.ndarray | None = None
    black_dims: tuple[int, int] | None = None
    black_pattern: np.ndarray | None = None
    iso_speed: int | None = None


#: Largest plausible magnitudes of the DNG values kpnt parses itself (far
#: beyond any camera's, far below float32 overflow).  A NoiseProfile is a
#: variance in units of the white level: 1 means noise as large as the
#: whole range.
_MAX_NOISE = 1.0
_MAX_MATRIX = 1e3
_MAX_BASELINE_EV = 16.0


def _file_tags(path: Path) -> _FileTags:
    """The TIFF/DNG tags kpnt parses itself, each checked for type, count
    and range (:func:`kpnt.io.tiff.tag_numbers`; a bad one raises
    :class:`kpnt.io.tiff.TagError` naming it)."""
    out = _FileTags()
    try:
        ifds = read_ifds(path)
    except TiffFormatError:
        return out  # not TIFF-based (CR3, RAF, ...): nothing to add
    if not ifds:
        return out
    ifd0 = ifds[0]
    for code, field_ in ((271, "make"), (272, "model")):
        try:  # only a fallback for LibRaw's identification: a bad one is ignored
            setattr(out, field_, tag_text(ifd0, code))
        except TagError as exc:
            log.warning("%s: %s: ignored (the camera's identity comes from LibRaw)", path.name, exc)
    exif = next((d for d in ifds if d["_kind"] == "exif"), {})
    if 34867 in exif:  # EXIF ISOSpeed: LibRaw stops at ISOSpeedRatings' 65535
        out.iso_speed = int(tag_numbers(exif, 34867, INTEGER_TYPES, count=1, lo=0, hi=2**32 - 1)[0])
    out.is_dng = 50706 in ifd0
    if not out.is_dng:
        return out

    def first(ifd, code, default):
        # 254 NewSubfileType / 262 Photometric: one integer each
        return int(tag_numbers(ifd, code, INTEGER_TYPES, count=1)[0]) if code in ifd else default

    main = [d for d in ifds if d["_kind"] != "exif" and first(d, 254, 0) == 0 and first(d, 262, 0) in (32803, 34892)]
    raw_ifd = main[0] if main else ifd0
    out.xyz_to_cam = _dng_colour_matrix(ifd0)
    if 50730 in ifd0:
        out.baseline_exposure = float(tag_numbers(ifd0, 50730, count=1, lo=-_MAX_BASELINE_EV, hi=_MAX_BASELINE_EV)[0])
    np_ifd = raw_ifd if 51041 in raw_ifd else ifd0
    if 51041 in np_ifd:
        planes = (0, 1, 2)
        if 50710 in raw_ifd:
            planes = tuple(int(v) for v in tag_numbers(raw_ifd, 50710, INTEGER_TYPES, count=(1, 4), lo=0, hi=6))
        # DNG: S > 0 and O >= 0 for every pair (S = 0 would be a noiseless sensor).
        pairs = tag_numbers(np_ifd, 51041, (DOUBLE, FLOAT, RATIONAL, SRATIONAL), count=(2, 8), lo=0, hi=_MAX_NOISE)
        if pairs.size % 2:
            raise TagError(f"{tag_label(51041)} has {pairs.size} values, expected (S, O) pairs: 2 or 2 per colour plane")
        if (pairs[0::2] <= 0).any():
            raise TagError(f"{tag_label(51041)} has a noise slope S of 0: the DNG specification needs S > 0")
        out.noise_profile = _dng_noise_profile(tuple(pairs), planes)
    if 50714 in raw_ifd and (277 not in raw_ifd or first(raw_ifd, 277, 1) == 1):
        dims = (1, 1)
        if 50713 in raw_ifd:
            dims = tuple(int(v) for v in tag_numbers(raw_ifd, 50713, (SHORT, LONG), count=2, lo=1, hi=64))
        vals = tag_numbers(raw_ifd, 50714, (SHORT, LONG, RATIONAL), count=(1, 64 * 64), lo=0, hi=2**32 - 1)
        if vals.size != dims[0] * dims[1]:
            raise TagError(f"{tag_label(50714)} has {vals.size} value(s), {tag_label(50713)} {dims[0]}x{dims[1]} "
                           f"needs {dims[0] * dims[1]}")
        out.black_dims, out.black_pattern = dims, vals.reshape(dims)
    return out


def _dng_colour_matrix(ifd0: dict) -> np.ndarray | None:
    """The DNG ColorMatrix (XYZ -> camera) calibrated nearest D65.

    Only 3-colour matrices (9 values) are used; a ColorMatrix tag of another
    type, with non-finite or absurd values raises :class:`TagError`.
    """
    best = None
    for tag, ill_tag in ((50721, 50778), (50722, 50779)):
        if tag not in ifd0:
            continue
        vals = tag_numbers(ifd0, tag, (SRATIONAL, RATIONAL, FLOAT, DOUBLE), count=(1, 12),
                           lo=-_MAX_MATRIX, hi=_MAX_MATRIX)
        if vals.size != 9:
            continue  # a 4-colour (CMYG) matrix: not for an RGB mosaic
        ill = int(tag_numbers(ifd0, ill_tag, INTEGER_TYPES, count=1, lo=0, hi=65535)[0]) if ill_tag in ifd0 else 21
        kelvin = _ILLUMINANT_K.get(ill, 5000)
        if best is None or abs(kelvin - 6504) < best[0]:
            best = (abs(kelvin - 6504), vals.reshape(3, 3))
    return None if best is None else best[1]


def _dng_noise_profile(values, plane_colours) -> np.ndarray | None:
    """(3, 2) per-colour (S, O) from a DNG NoiseProfile: one pair for all
    planes, or one per plane in CFAPlaneColor order."""
    if values is None:
        return None
    pairs = np.asarray(values, dtype=np.float64).reshape(-1, 2)
    if len(pairs) == 1:
        return np.repeat(pairs, 3, axis=0)
    planes = list(plane_colours)
    if len(pairs) != len(planes) or sorted(planes) != [0, 1, 2]:
        log.warning("DNG NoiseProfile with %d pairs for planes %s not understood: ignored", len(pairs), planes)
        return None
    return pairs[np.argsort(planes)]


# ----------------------------------------------------------------------
# read_raw
# ----------------------------------------------------------------------
def _fail(path: Path, reason: str) -> RawReadError:
    # The name first (what a batch's report is scanned for), the path after it only where it says more.
    where = f" ({path})" if str(path) != path.name else ""
    return RawReadError(f"{path.name}: {reason}{where}")


def _colour_index(desc: str, colour: str, path: Path) -> int:
    if colour not in desc:
        raise _fail(path, f"colour description {desc!r} has no {colour} filter: not an RGB mosaic raw")
    return desc.index(colour)


def read_raw(path) -> RawImage:
    """Read a Bayer or X-Trans raw file.

    Args:
        path: any raw LibRaw reads (NEF, CR2, CR3, ARW, RAF, ORF, RW2, DNG, ...).
    Returns:
        :class:`RawImage` with the visible area's (H, W) raw counts, float32
        normalised mosaic, saturation mask, CFA and metadata.
    Raises:
        RawReadError: missing/empty/truncated/corrupt file, not a raw, a
            LinearRaw (demosaiced) DNG, sRAW or Foveon data, a monochrome
            sensor or a CFA other than Bayer/X-Trans.  One line, with the
            file name.
    """
    path = Path(path)
    if not path.exists():
        raise _fail(path, "file not found")
    if not path.is_file():
        raise _fail(path, "not a file")
    if path.stat().st_size == 0:
        raise _fail(path, "empty file (0 bytes): copy it again from the card")
    try:
        with rawpy.imread(str(path)) as rp:
            rp.unpack()
            fields = _read_open(path, rp)
        img = _assemble(path, **fields)
        check_raw(img)
    except RawReadError:
        raise
    except ValidationError as exc:
        raise _fail(path, f"{exc}") from None
    except TagError as exc:
        raise _fail(path, f"damaged metadata: {exc}; the file is corrupt (re-copy it, or convert it again)") from None
    except rawpy.LibRawFileUnsupportedError:
        raise _fail(path, "not a raw file LibRaw can read (unsupported format, not a raw, or damaged header): leave it out; a raw of a camera "
                    "newer than this LibRaw can be converted to DNG (Adobe DNG Converter)") from None
    except rawpy.LibRawIOError:
        raise _fail(path, "truncated or unreadable file (LibRaw I/O error): copy it again from the card, or leave it "
                    "out if it is not a raw") from None
    except rawpy.LibRawDataError:
        raise _fail(path, "corrupt raw data (LibRaw data error): copy it again from the card") from None
    except rawpy.LibRawTooBigError:
        raise _fail(path, "image too big for LibRaw") from None
    except rawpy.LibRawError as exc:
        msg = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise _fail(path, f"LibRaw error: {msg} ({type(exc).__name__})") from None
    except Exception as exc:
        # Anything else while reading (a malformed structure LibRaw or the
        # tag reader did not foresee, an allocation for absurd dimensions)
        # is the file's fault, not a reason to lose the batch: one typed
        # line; --verbose shows where it came from.
        log.debug("%s: unexpected error while reading", path, exc_info=True)
        detail = " ".join(str(exc).split())[:120]
        raise _fail(path, f"file looks damaged ({type(exc).__name__} while reading it{': ' + detail if detail else ''}); "
                          "re-copy it from the card or skip it") from None
    return img


def visible_cfa(raw_pattern: np.ndarray, color_desc: str | bytes, top_margin: int, left_margin: int) -> CFA:
    """CFA of the visible area from rawpy's ``raw_pattern``.

    rawpy anchors ``raw_pattern`` at the full raw's (0, 0) (its
    ``raw_colors_visible`` is the tiled pattern cut at the margins), so the
    visible area's pattern is the pattern cropped by the margins.
    """
    return CFA.from_rawpy(raw_pattern, color_desc).crop(top_margin, left_margin)


def _read_open(path: Path, rp) -> dict:
    """Everything needed from an open rawpy object, copied (arrays die on close)."""
    if rp.raw_type != rawpy.RawType.Flat:
        # No sample count here: LibRaw pads 3-sample data to 4 channels, so
        # its count would misreport kpnt's own (3-sample) output DNGs.
        raise _fail(path, "not a mosaic raw: it holds demosaiced colour pixels (a LinearRaw DNG such as kpnt's own output, "
                          "an sRAW or Foveon data); kpnt needs the camera's Bayer or X-Trans raw")
    desc = bytes(rp.color_desc).decode("ascii", "replace").rstrip("\0")
    try:
        pattern = rp.raw_pattern
    except NotImplementedError:
        raise _fail(path, "unknown colour filter array layout (LibRaw filters code)") from None
    if pattern is None or pattern.shape == (1, 1) or rp.num_colors == 1:
        raise _fail(path, "monochrome sensor (no colour filter array): kpnt needs a Bayer or X-Trans raw")
    sizes = rp.sizes
    try:
        cfa = visible_cfa(pattern, desc, sizes.top_margin, sizes.left_margin)
    except CFAError as exc:
        raise _fail(path, f"unsupported CFA layout: {exc}") from None
    raw = np.array(rp.raw_image_visible, dtype=np.uint16, copy=True)
    if raw.shape[0] < cfa.period or raw.shape[1] < cfa.period:
        raise _fail(path, f"visible area {raw.shape} is smaller than one CFA repeat")
    # Black of every photosite from rawpy's per-channel levels (indexed by
    # LibRaw's colour index, so a second green of its own is kept).
    per_channel = np.asarray(rp.black_level_per_channel, dtype=np.float64)
    n = pattern.shape[0]
    rows = (sizes.top_margin + np.arange(cfa.period)) % n
    cols = (sizes.left_margin + np.arange(cfa.period)) % n
    black_rep = per_channel[np.asarray(pattern, dtype=np.int64)[np.ix_(rows, cols)]]
    colours = {c: _colour_index(desc, c, path) for c in "RGB"}
    cam_wb = np.asarray(rp.camera_whitebalance, dtype=np.float64)
    day_wb = np.asarray(rp.daylight_whitebalance, dtype=np.float64)
    other = rp.other
    return dict(
        raw=raw, cfa=cfa, black_rep=black_rep, white=float(rp.white_level),
        cam_wb=np.array([cam_wb[colours[c]] for c in "RGB"]),
        day_wb=np.array([day_wb[colours[c]] for c in "RGB"]),
        xyz_to_cam=np.asarray(rp.rgb_xyz_matrix, dtype=np.float64)[[colours[c] for c in "RGB"]],
        flip=int(sizes.flip), other=other,
        identity=_libraw_identity(path, rp.num_colors, rp.color_desc),
    )


def _exif_number(path: Path, name: str, value: float) -> float | None:
    """An EXIF exposure value as LibRaw reports it, None when absent (0);
    a value no TIFF rational holds (negative, non-finite, >= 2^32, e.g. a
    damaged ExposureTime of 4294967295/1, which LibRaw's float32 rounds up
    to 2^32) is dropped with a warning: it is not needed to denoise, and
    the writer could not encode it (a TIFF-based source's own tag is still
    copied verbatim, :mod:`kpnt.io.carry`)."""
    v = _f32(value)
    if v == 0:
        return None
    try:
        to_rational([v], signed=False)
    except TiffWriteError:
        log.warning("%s: EXIF %s %s cannot be written as a TIFF rational: not used (a TIFF-based source's own "
                    "tag is copied as it is)", path.name, name, v)
        return None
    return v


def _carried(path: Path, make: str, model: str) -> CarriedTags:
    """The source's own tags (:func:`kpnt.io.carry.read_carried_tags`).

    A raw that is not TIFF-based has none; its Model tag is then written
    from LibRaw's model, which drops the maker: Canon spells every model
    with it ('Canon EOS D30', 'Canon PowerShot G5' in CRW and CR3 files), so
    it is put back for Canon.
    """
    carried = read_carried_tags(path)
    if 272 not in carried.ifd0 and make == "Canon" and model and not model.startswith("Canon"):
        carried.ifd0[272] = encode_tag(ASCII, f"Canon {model}")
    return carried


def _iso(libraw_iso: float, exif_iso: int | None) -> int:
    """LibRaw's ISO, or EXIF ISOSpeed where LibRaw saturates at 65535."""
    iso = int(round(libraw_iso))
    return exif_iso if iso >= 65535 and exif_iso else iso


def _assemble(path: Path, raw, cfa, black_rep, white, cam_wb, day_wb, xyz_to_cam, flip, other,
              identity) -> RawImage:
    tags = _file_tags(path)
    h, w = raw.shape
    p = cfa.period
    # Black of every position of a block over which all black patterns repeat.
    block = black_rep
    if tags.black_pattern is not None:
        r, c = tags.black_dims
        # LibRaw folds 1x1 patterns (and Bayer patterns up to 2x2) into its
        # per-channel levels and keeps only the minimum of any other pattern
        # there; add back what it left out.
        folded = (r, c) == (1, 1) or (cfa.sensor_kind is BAYER and r <= 2 and c <= 2)
        if not folded:
            bh, bw = math.lcm(p, r), math.lcm(p, c)
            resid = tags.black_pattern - tags.black_pattern.min()
            block = np.tile(black_rep, (bh // p, bw // p)) + np.tile(resid, (bh // r, bw // c))
    if white <= block.max():
        raise _fail(path, f"white level {white:g} is not above the black level {block.max():g}")
    # Normalise one phase of the block at a time: exact float64 arithmetic
    # without full-size float64 temporaries (a 24 MP raw stays cheap).
    mosaic = np.empty((h, w), dtype=np.float32)
    bh, bw = block.shape
    for dy in range(bh):
        for dx in range(bw):
            b = float(block[dy, dx])
            mosaic[dy::bh, dx::bw] = (raw[dy::bh, dx::bw] - b) / (white - b)
    # Per-colour black for the metadata: the mean over the block (exact
    # unless a camera gives sites of one colour different levels).
    colours = cfa.colour_map(bh, bw)
    black = np.array([block[colours == c].mean() for c in range(3)])

    wb_source, wb = "as_shot", cam_wb
    if not (np.isfinite(wb).all() and (wb > 0).all()):
        # Auto WB (LibRaw: cam_mul[0] = -1) or none stored: estimate it from
        # the image as raw converters do; daylight would tint most scenes.
        kind = "camera set to auto WB" if cam_wb[0] == -1 else "none stored"
        est = estimate_wb(mosaic, cfa, raw >= white)
        if est is not None:
            wb_source, wb = "auto", est
            log.info("%s: no as-shot white balance (%s): estimated from the image (grey world, refined on grey "
                     "areas): R x%.3f, B x%.3f", path.name, kind, est[0], est[2])
        else:
            wb_source, wb = "daylight", day_wb
            log.info("%s: no as-shot white balance (%s) and none can be estimated (no unclipped area with colour): "
                     "using LibRaw's daylight multipliers", path.name, kind)
        if not (np.isfinite(wb).all() and (wb > 0).all()):
            raise _fail(path, "no white balance in the file (neither as-shot nor daylight multipliers)")
    wb = np.array([_f32(v) for v in wb / wb[1]])

    if tags.xyz_to_cam is not None:
        xyz = tags.xyz_to_cam
    else:
        xyz = np.array([[_f32(v) for v in row] for row in xyz_to_cam])
    if abs(np.linalg.det(xyz)) < 1e-12:
        raise _fail(path, "no colour matrix for this camera (unknown to LibRaw and none in the file): convert the raw "
                          "to DNG with Adobe DNG Converter, which stores the camera's matrix, and denoise the DNG")

    if identity is not None and any(identity):
        make, model = identity
    else:
        make, model = tags.make, tags.model
    stamp = None
    if other.timestamp != datetime.fromtimestamp(0):
        stamp = other.timestamp.strftime("%Y:%m:%d %H:%M:%S")
    exposure_time, f_number = known_exposure(_exif_number(path, "ExposureTime", other.shutter_speed),
                                             _exif_number(path, "FNumber", other.aperture), is_ciff_file(path))
    try:
        meta = RawMeta(
            black=black, white=white, wb=wb, xyz_to_cam=xyz, make=make, model=model,
            iso=_iso(other.iso_speed, tags.iso_speed), exposure_time=exposure_time, f_number=f_number,
            focal_length=_exif_number(path, "FocalLength", other.focal_length),
            datetime=stamp, orientation=_FLIP_TO_EXIF.get(flip, 1), baseline_exposure=tags.baseline_exposure,
            noise_profile=tags.noise_profile, wb_source=wb_source, carried=_carried(path, make, model),
        )
    except MetaError as exc:
        raise _fail(path, f"implausible metadata: {exc}") from None
    return RawImage(path=path, raw=raw, mosaic=mosaic, saturated=raw >= white, cfa=cfa, meta=meta)
