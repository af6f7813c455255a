"""Tiled lossless-JPEG image data for DNGs (TIFF Compression 7).

Why lossless JPEG: it is the one lossless compression of 16-bit integer
LinearRaw data that every reader kpnt targets decodes.  Measured here
(rawpy 0.28 / LibRaw 0.22, darktable 4.2, RawTherapee 5.9): Deflate (8) of
uint16 data is refused by LibRaw ("Corrupted data"); Deflate of 16/32-bit
float data with the floating-point predictor opens in LibRaw and darktable
but RawTherapee refuses it ("demosaiced float dng files are not
supported"); lossless JPEG opens in all three, like Adobe's own LinearRaw
DNGs.

The codec is libjpeg-turbo's lossless mode (SOF3, 16-bit precision,
predictor 1 = left neighbour: the only one rawspeed, darktable's decoder,
accepts) through ``imagecodecs``; each tile (:data:`TILE`) is one JPEG stream with
three components (a CFA mosaic's: two, see :func:`encode_tiles`), edge
tiles padded as cheaply as the predictor allows (DNG tiles are all full
size; the padding is never displayed); images narrower than a tile get narrower
tiles (:func:`tile_side`).  The 'compact' encoding stores codes of a
LinearizationTable in the same tiles (:mod:`kpnt.io.linearization`).

Example::

    >>> side = tile_side(rgb_u16.shape[1])
    >>> write_tiled_tiff("x.dng", ifd0, encode_tiles(rgb_u16, side), side)  # doctest: +SKIP
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from kpnt.io.tiff import IFD, LONG, SHORT, TiffWriteError, check_target, write_laid_out

#: Tile side of LinearRaw data in pixels (a multiple of 16, as TIFF
#: requires).  Smaller tiles code smaller: every tile gets its own Huffman
#: tables and less padding; on a denoised 24-MP image ('compact') 256 gave
#: 1.842x the source's bytes, 128 1.811x, 64 1.799x (5922 tiles).  rawpy,
#: darktable and RawTherapee read all three as fast.
TILE = 128
#: Tile side of CFA DNGs: Adobe's DNG Converter's, so that a synthetic raw
#: written with lossless JPEG is sized as a converted camera raw.
CFA_TILE = 256
COMPRESSION_LJPEG = 7
#: Threads that encode tiles at once (at most the CPU count).
ENCODE_THREADS = 4


def _codec():
    try:
        import imagecodecs
    except ImportError:
        raise TiffWriteError("compressed DNG output needs the 'imagecodecs' package: pip install imagecodecs "
                             "(or write uncompressed DNGs with --compression none)") from None
    return imagecodecs


def tile_side(width: int, tile: int = TILE) -> int:
    """``tile``, or for images narrower than that the largest multiple of
    16 that fits: LibRaw misplaces the rows of tiles wider than the image."""
    return max(16, min(tile, 16 * (width // 16)))


def encode_tiles(img: np.ndarray, tile: int) -> list[bytes]:
    """Lossless-JPEG streams of an image in ``tile`` x ``tile`` pieces,
    row-major (TIFF's TileOffsets order).

    ``img``: (H, W, 3) uint16 (LinearRaw: one 3-component stream per tile)
    or (H, W) uint16 (a CFA mosaic: each tile is coded as a tile/2-wide
    image of 2 components, as Adobe's DNG Converter does, so that the left
    neighbour predicting a photosite is the nearest one of the same colour
    on a Bayer row; readers reassemble it from the JPEG header).
    """
    codec = _codec()
    h, w = img.shape[:2]
    colours = dict(colorspace="RGB", outcolorspace="RGB") if img.ndim == 3 else {}

    def one(yx) -> bytes:
        y, x = yx
        part = img[y:y + tile, x:x + tile]
        rows, cols = part.shape[:2]
        if cols < tile:     # repeat the last column: zero differences along each row
            part = np.pad(part, ((0, 0), (0, tile - cols)) + ((0, 0),) * (img.ndim - 2), mode="edge")
        part = part.reshape(rows, tile // 2, 2) if img.ndim == 2 else part
        if rows < tile:
            # Rows below the image hold one value per component (the first of
            # the last row): all differences zero, ~1 bit a sample, where
            # repeating the last row would cost as much as a real one
            # (predictor 1 predicts from the left): 1.8% of a 24-MP file.
            part = np.concatenate([part, np.broadcast_to(part[-1:, :1], (tile - rows,) + part.shape[1:])])
        return bytes(codec.jpeg8_encode(np.ascontiguousarray(part), lossless=True, bitspersample=16,
                                        predictor=1, **colours))

    corners = [(y, x) for y in range(0, h, tile) for x in range(0, w, tile)]
    # libjpeg-turbo releases the GIL: tiles encode in parallel (24 MP: ~2.5 s
    # on one core), in order (map keeps it), the same bytes as one by one.
    with ThreadPoolExecutor(max(1, min(ENCODE_THREADS, os.cpu_count() or 1)), thread_name_prefix="kpnt-ljpeg") as pool:
        return list(pool.map(one, corners))


def write_tiled_tiff(path, ifd0: IFD, tiles: list[bytes], tile: int, compression: int = COMPRESSION_LJPEG,
                     overwrite: bool = False) -> Path:
    """Write a little-endian TIFF whose IFD0 image is stored as ``tiles``.

    Sets Compression 259, TileWidth 322, TileLength 323, TileOffsets 324 and
    TileByteCounts 325 in ``ifd0`` (which must not hold strip tags); the
    layout is ``header | IFD0 | sub-IFDs | tiles`` (metadata first, as in
    :func:`kpnt.io.tiff.write_tiff_file`), written atomically.
    """
    path = check_target(path, overwrite)
    for code in (273, 278, 279):
        ifd0.tags.pop(code, None)
    ifd0.set(259, SHORT, compression)
    ifd0.set(322, LONG, tile)
    ifd0.set(323, LONG, tile)
    ifd0.set(324, LONG, [0] * len(tiles))            # placeholders of the right size; set below
    ifd0.set(325, LONG, [len(t) for t in tiles])
    write_laid_out(path, ifd0, tiles,
                   lambda start: ifd0.set(324, LONG, np.cumsum([start] + [len(t) for t in tiles[:-1]])), overwrite)
    return path
