"""Output formats of a batch: one registry entry per format.

Each :class:`OutputFormat` says what the denoiser must produce for it
(``dtype``: uint16 scaled to 65535 at the white level, or float32 linear)
and how a result is written; the CLI's ``--format`` choices and help come
from :data:`FORMATS`.  Adding a format is one :func:`register` call.

Example::

    >>> from kpnt.batch.formats import get_format
    >>> get_format("tiff").suffix
    '.tif'
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from kpnt.errors import KpntError


@dataclass(frozen=True)
class OutputFormat:
    """One output format.

    Attributes:
        name: the ``--format`` value.
        suffix: file suffix of its outputs.
        dtype: what the denoiser produces for it (``np.uint16`` or
            ``np.float32``, see :func:`kpnt.denoise.denoise_raw`).
        help: one phrase for ``--help``.
        write: ``write(path, rgb, meta, overwrite, compression)``, atomic
            (``compression``: :data:`kpnt.io.dng.COMPRESSIONS`; formats
            without a choice ignore it).
    """

    name: str
    suffix: str
    dtype: type
    help: str
    write: Callable[[Path, np.ndarray, object, bool], None]


#: name -> format, in the order ``--help`` lists them (the first is the default).
FORMATS: dict[str, OutputFormat] = {}


def register(fmt: OutputFormat) -> OutputFormat:
    """Add a format to :data:`FORMATS` (names are unique)."""
    if fmt.name in FORMATS:
        raise ValueError(f"output format {fmt.name!r} is registered twice")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> OutputFormat:
    """The registered format ``name``; one-line KpntError listing the others."""
    try:
        return FORMATS[name]
    except KeyError:
        raise KpntError(f"unknown output format {name!r}: choose one of {', '.join(FORMATS)}") from None


# The writers import lazily: listing the formats (``--help``) needs none of them.
def _dng(path, rgb, meta, overwrite, compression="ljpeg"):
    from kpnt.io.dng import write_linear_dng

    write_linear_dng(path, rgb, meta, overwrite=overwrite, compression=compression)


def _tiff(path, rgb, meta, overwrite, compression=None):
    from kpnt.io.tiff import write_tiff

    write_tiff(path, rgb, overwrite=overwrite)


def _tiff_float(path, rgb, meta, overwrite, compression=None):
    from kpnt.io.tiff import write_tiff

    write_tiff(path, rgb, "float32", overwrite=overwrite)


def _exr(path, rgb, meta, overwrite, compression=None):
    from kpnt.io.exr import write_exr

    write_exr(path, rgb, overwrite=overwrite)


register(OutputFormat("dng", ".dng", np.uint16, "LinearRaw DNG with the source's metadata (default)", _dng))
register(OutputFormat("tiff", ".tif", np.uint16, "16-bit TIFF", _tiff))
register(OutputFormat("tiff-float", ".tif", np.float32, "32-bit float TIFF keeping values above white", _tiff_float))
register(OutputFormat("exr", ".exr", np.float32, "32-bit float OpenEXR", _exr))
