"""A DNG LinearizationTable that makes denoised LinearRaw DNGs compact.

A LinearRaw DNG stores three 16-bit samples per pixel where the source raw
stored one 12-14-bit photosite; even losslessly compressed that is ~3x the
source's bytes.  Most of those bits are below the noise any camera records:
DNG's LinearizationTable (tag 50712) lets the file store *codes* instead and
the reader map every code to a 16-bit linear value through the table (the
DNG spec names this use: "to increase compression ratios by storing the raw
data in a non-linear, more visually uniform space with fewer total encoding
levels").  rawpy/LibRaw, darktable (rawspeed) and RawTherapee all apply it
(``tests/test_dng_compact.py``; darktable dithers each value within its
code's quantisation cell, the others return the table value).

The table (:func:`compact_table`) spaces its :data:`CODES` levels like the
noise of a clean low-ISO sensor, so that one code step is

    step(v) = k * sqrt(A_REF * v + (FLOOR / k)^2)        (v in [0, 1] = white)

i.e. ``FLOOR`` (half the step of a 14-bit raw) at black, and ``k`` times the
shot noise of a sensor with :data:`A_REF` (a full well of 100 000
electrons; a Nikon D750's green photosites at ISO 100 hold ~69 000 by
darktable's profile) above the shadows.  With 2048 codes, ``k`` is 0.30: the rounding error (at most half
a step, RMS step/sqrt(12)) is at most 0.15 and in RMS 0.09 of the photon
noise of such a sensor at its base ISO at every level above the shadows,
and at black at most a quarter of a 14-bit raw's own step.  Measured on a
denoised 24-MP image (``tools/dng_size.py``, Nikon D750 profile): at most
0.37 and in RMS at most 0.15 of the camera's ISO-100 noise in every
brightness band, 79.5 dB PSNR from the float output, whose own error from
the clean image is ~51 dB at ISO 100.  It is not bit-lossless:
``--compression ljpeg`` keeps every 16-bit value for whoever needs that.

The codes are stored as 16-bit samples (BitsPerSample 16, JPEG precision
16): lossless JPEG codes differences between neighbours, so the unused high
bits cost nothing (12-bit precision gave the same bytes), while a file with
BitsPerSample 12 rendered white in RawTherapee 5.9.

Example::

    >>> table = compact_table()
    >>> codes = to_codes(rgb_u16, table)            # doctest: +SKIP
    >>> np.abs(table[codes].astype(int) - rgb_u16).max() <= max_error(table)  # doctest: +SKIP
    True
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Codes in the table (11 bits).  Measured on a denoised 24-MP ISO-100
#: image (docs/raw_editors.md): 2048 codes give 1.84x the source's bytes,
#: 1024 1.52x (4096: 2.19x in 256-px tiles, where 2048 gave 1.88x); each
#: halving doubles the error.
CODES = 2048
#: Shot-noise slope of the reference sensor, normalised units (variance
#: ``A_REF * v`` at level ``v``): 1 / 100 000 electrons at white.
A_REF = 1e-5
#: Code step at black: half a 14-bit step (1/32768 of white).
FLOOR = 1.0 / 32768


def _codes_for(k: float, a: float, floor: float) -> float:
    """Codes needed to reach white with steps ``k * sqrt(a v + (floor/k)^2)``
    (the integral of 1/step over [0, 1])."""
    return 2.0 / (k * k * a) * (np.sqrt(k * k * a + floor * floor) - floor)


@lru_cache(maxsize=4)
def compact_table(codes: int = CODES, a: float = A_REF, floor: float = FLOOR) -> np.ndarray:
    """The LinearizationTable: ``codes`` strictly increasing uint16 linear
    values from 0 to 65535 (read-only array).

    ``k`` is solved so that ``codes - 1`` steps span [0, 1] exactly; the
    level of code ``c`` is the inverse of the code count
    ``c(v) = 2 / (k^2 a) * (sqrt(k^2 a v + floor^2) - floor)``.
    """
    if not (isinstance(codes, (int, np.integer)) and 2 <= codes <= 65536):
        raise ValueError(f"a LinearizationTable needs 2 to 65536 codes, got {codes!r}")
    lo, hi = 1e-6, 1e3          # _codes_for falls as k grows: bisect in log space
    for _ in range(200):
        mid = np.sqrt(lo * hi)
        lo, hi = (mid, hi) if _codes_for(mid, a, floor) > codes - 1 else (lo, mid)
    k = hi
    if abs(_codes_for(k, a, floor) - (codes - 1)) > 0.5:     # k ran into the search bound
        raise ValueError(f"{codes} codes cannot all be steps of at least the floor {floor:g}: use at most "
                         f"{int(1 / floor) + 1}")
    s = np.arange(codes) * (k * k * a) / 2.0 + floor       # sqrt(k^2 a v + floor^2) at each code
    v = (s * s - floor * floor) / (k * k * a)
    table = np.rint(v / v[-1] * 65535.0).astype(np.int64)
    if table[0] != 0 or table[-1] != 65535 or (np.diff(table) <= 0).any():
        raise ValueError(f"a {codes}-code table with floor {floor} has repeated 16-bit levels: use fewer codes "
                         "or a larger floor")
    out = table.astype(np.uint16)
    out.flags.writeable = False
    return out


@lru_cache(maxsize=4)
def _nearest(table_bytes: bytes) -> np.ndarray:
    table = np.frombuffer(table_bytes, np.uint16).astype(np.int64)
    x = np.arange(65536)
    upper = np.clip(np.searchsorted(table, x), 1, len(table) - 1)     # first level >= x
    lower = upper - 1
    nearest = np.where(x - table[lower] <= table[upper] - x, lower, upper)
    lut = nearest.astype(np.uint16)
    lut.flags.writeable = False
    return lut


def to_codes(values_u16: np.ndarray, table: np.ndarray) -> np.ndarray:
    """The code of every uint16 value: the index of the nearest table level
    (ties to the lower one); same shape, uint16."""
    return _nearest(np.ascontiguousarray(table, np.uint16).tobytes())[values_u16]


def max_error(table: np.ndarray) -> float:
    """The largest distance, in 16-bit levels, from any uint16 value to its
    nearest table level (half the widest step)."""
    return float(np.diff(np.asarray(table, np.int64)).max()) / 2.0
