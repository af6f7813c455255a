"""Raw input (rawpy) and DNG/TIFF output.

``read_raw``/``RawImage`` live in :mod:`kpnt.io.raw`, the only module that
imports rawpy; they are loaded on first use so that writing DNGs (synthetic
data, outputs) never needs rawpy.
"""
from kpnt.io.dng import write_cfa_dng, write_linear_dng
from kpnt.io.meta import MetaError, RawMeta
from kpnt.io.tiff import TiffFormatError, TiffWriteError, write_tiff

__all__ = [
    "RawMeta", "MetaError", "RawImage", "read_raw",
    "write_cfa_dng", "write_linear_dng", "write_tiff", "TiffWriteError", "TiffFormatError",
]


def __getattr__(name):
    if name in ("read_raw", "RawImage"):
        from kpnt.io import raw

        return getattr(raw, name)
    raise AttributeError(f"module 'kpnt.io' has no attribute {name!r}")
