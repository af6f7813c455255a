"""Checks that run before the expensive part: a raw and a noise level are
fit to denoise and the result is fit to write.

Denoising a 24-MP raw takes seconds to minutes; a value that makes it
produce NaN (a noise variance of 1e39 is inf in float32) or makes the writer
fail afterwards (an ExposureTime no TIFF rational holds) must be refused
first, with one line that names the value and says what to do.

- :func:`check_noise_level` / :func:`check_noise_profile`: finite,
  non-negative, plausible noise variances (any source: ``--noise``, a
  profile table, a DNG NoiseProfile, the blind estimate).
- :func:`check_raw`: a :class:`kpnt.io.raw.RawImage` as :func:`read_raw`
  returns it: plausible size, ordered levels, finite matrices, a
  non-degenerate white balance, a usable noise profile, and metadata that
  the DNG writer can encode (a dry run of its tag encoding).

Example::

    >>> check_noise_level(1e-4, 1e-6, "--noise")
    >>> check_noise_level(float("inf"), 0.0, "--noise")
    Traceback (most recent call last):
    ...
    kpnt.io.validate.ValidationError: --noise: a = inf is not a finite number: give a noise variance slope a (e.g. 1e-4)
"""
from __future__ import annotations

import math

import numpy as np

from kpnt.errors import KpntError

#: Largest plausible noise variance parameter (normalised units, white = 1):
#: a variance of 1 is noise as large as the whole range; the noisiest
#: profiled camera at ISO 409600 is near 0.05.  Far below float32 overflow.
MAX_NOISE = 1.0
#: Smallest visible area kpnt writes (LibRaw rejects DNGs under 22x22).
MIN_SIDE = 22
#: Largest visible area: the LinearRaw DNG output (6 bytes a pixel) must fit
#: a classic TIFF (4 GiB); no camera comes near (150 MP = 0.9 GB).
MAX_PIXELS = (2**32 - 2**20) // 6
#: White-balance gains (green = 1) outside this range are not a camera's.
MAX_WB_RATIO = 64.0


class ValidationError(KpntError, ValueError):
    """A value that would make denoising or writing fail; one line."""


def check_noise_level(a: float, b: float, source: str) -> None:
    """One (a, b) noise pair, ``var = a*x + b`` in normalised units.

    Args:
        a, b: slope and offset of the variance line.
        source: where they came from, for the message (e.g. '--noise').
    Raises:
        ValidationError: non-finite, a negative slope, a magnitude above
            :data:`MAX_NOISE`, or no noise at the white level
            (``a + b <= 0``).  A slightly negative offset ``b`` is allowed:
            fitted profile tables hold some (the variance line's fit
            artefact in the shadows).
    """
    for name, v, eg in (("a", a, "1e-4"), ("b", b, "1e-6")):
        what = "slope a" if name == "a" else "offset b"
        if not math.isfinite(v):
            raise ValidationError(f"{source}: {name} = {v} is not a finite number: give a noise variance {what} "
                                  f"(e.g. {eg})")
        if abs(v) > MAX_NOISE:
            raise ValidationError(f"{source}: {name} = {v:g} is not a plausible noise variance (magnitude at most "
                                  f"{MAX_NOISE:g} in units of the white level; cameras stay below 0.1): check the value")
    if a < 0:
        raise ValidationError(f"{source}: a = {a:g} is negative: the noise variance slope must be >= 0")
    if a + b <= 0:
        raise ValidationError(f"{source}: a = {a:g}, b = {b:g} give no noise at the white level (a + b <= 0): "
                              "give the noise variance, e.g. 1e-4,1e-6")


def check_noise_profile(profile, source: str) -> np.ndarray:
    """A per-channel noise profile, checked like :func:`check_noise_level`.

    Args:
        profile: (2, 3) ``[a; b]`` rows (kpnt.denoise.NoiseChoice layout) or
            (3, 2) per-colour ``(a, b)`` pairs (RawMeta layout).
        source: where it came from, for the message.
    Returns:
        The profile as float64, same layout.
    Raises:
        ValidationError: wrong shape, or any channel fails
            :func:`check_noise_level`.
    """
    arr = np.asarray(profile, dtype=np.float64)
    if arr.shape == (2, 3):
        pairs = arr.T
    elif arr.shape == (3, 2):
        pairs = arr
    else:
        raise ValidationError(f"{source}: noise profile of shape {arr.shape}, expected (2, 3) or (3, 2)")
    for c, (a, b) in zip("RGB", pairs):
        check_noise_level(float(a), float(b), f"{source} ({c})")
    return arr


def check_raw(img) -> None:
    """Everything denoising and writing will need from a read raw.

    Args:
        img: a :class:`kpnt.io.raw.RawImage`.
    Raises:
        ValidationError: one line naming the first problem (the caller adds
            the file name).
    """
    h, w = img.raw.shape
    if img.mosaic.shape != (h, w) or img.saturated.shape != (h, w):
        raise ValidationError(f"mosaic {img.mosaic.shape} and raw {img.raw.shape} sizes differ")
    if min(h, w) < MIN_SIDE:
        raise ValidationError(f"visible area {w}x{h} is smaller than {MIN_SIDE}x{MIN_SIDE} photosites: not a photo kpnt "
                              f"can denoise")
    if h * w > MAX_PIXELS:
        raise ValidationError(f"visible area {w}x{h} ({h * w / 1e6:.0f} MP) is larger than any camera's and than a DNG "
                              f"output holds: the size tags are probably damaged")
    m = img.meta
    if not (np.isfinite(m.black).all() and math.isfinite(m.white) and 0 <= m.black.min() and m.black.max() < m.white):
        raise ValidationError(f"levels not ordered: black {m.black.tolist()} must lie in [0, white {m.white:g})")
    if not np.isfinite(m.xyz_to_cam).all() or abs(np.linalg.det(m.xyz_to_cam)) < 1e-12:
        raise ValidationError("colour matrix is singular or not finite: the file's ColorMatrix is damaged")
    wb = np.asarray(m.wb, dtype=np.float64)
    if not (np.isfinite(wb).all() and (wb > 0).all()) or (wb.max() / wb.min()) > MAX_WB_RATIO:
        raise ValidationError(f"white balance {wb.tolist()} is degenerate (gains must be positive and within "
                              f"1:{MAX_WB_RATIO:g}): the file's AsShotNeutral is damaged")
    if m.noise_profile is not None:
        check_noise_profile(m.noise_profile, "NoiseProfile")
    _check_writable_metadata(m, w, h)


def _check_writable_metadata(meta, width: int, height: int) -> None:
    """Dry run of the LinearRaw DNG writer's tag encoding (no pixels, no
    file): a value no TIFF field holds (e.g. an ExposureTime of 2^32 s)
    fails here, not after the denoise."""
    from kpnt.io.dng import dng_ifd
    from kpnt.io.tiff import TiffWriteError

    try:
        ifd = dng_ifd(meta, width, height, samples=3)
        todo = [ifd]
        while todo:
            one = todo.pop()
            one.nbytes()  # encodes every tag
            todo.extend(one.sub_ifds.values())
    except TiffWriteError as exc:
        raise ValidationError(f"metadata the output DNG cannot hold: {exc}") from None
