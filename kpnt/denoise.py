"""Inference: one raw file in, one denoised linear camera-RGB image out.

The flow is io -> white balance -> model (tiled) -> WB divided back out ->
io (DESIGN.md section 7).  The model sees white-balanced data and a
white-balanced noise profile; its output is returned to camera RGB so that a
raw editor applies white balance and the colour matrix as usual.

Tiling keeps memory bounded.  Tiles start on a grid that is a multiple of the
CFA period and of the pyramid's coarsest block (so that every tile sees the
same CFA phase and the same decimation grid as the whole image) and overlap
by more than the model's receptive radius, so the tiled result equals the
untiled one up to float rounding.

Memory: :func:`denoise_raw` never builds a full-size white-balanced copy or
a full-size float result when asked for ``uint16`` output: each tile is
white-balanced on the fly, and its kept core is converted and stored into
the output array.  Beside the decoded raw (``RawImage``: 7 bytes per
photosite) and the output (6 bytes uint16 or 12 bytes float32 per
photosite), the peak is one tile's working set.  Under ``torch.no_grad()``
the reference ops take their chunked inference paths (``kpnt.ref``), whose
working set is about :data:`BYTES_PER_TILE_PIXEL` per tile photosite
(measured by ``tools/bench_denoise.py``); :data:`DEFAULT_TILE` is chosen
from it so that a 100-megapixel raw denoises within 4 GB of RAM.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from kpnt.errors import KpntError
from kpnt.mosaic import CFA

log = logging.getLogger("kpnt.denoise")

#: Default tile side on a CPU (photosites, before the overlap margin is
#: added on each side).  Measured with tools/bench_denoise.py (see
#: docs in its header): a 3072 tile (3328^2 photosites read with the Bayer
#: margin) keeps a 100-MP raw well under 4 GB of peak RSS, and its overlap
#: costs 17% extra compute (a 768 tile cost 78%).
DEFAULT_TILE = 3072
#: Default tile side on a GPU: the whole process must stay within 2 GB of
#: GPU memory.  Not measured on a GPU: the expected peak is
#: ``BYTES_PER_TILE_PIXEL * (tile + 2 margin)^2`` plus the inference chunk
#: buffers (~60 MB at 2^18 pixels) and the CUDA context, i.e. about 1.1 GB
#: for the Bayer margin and 1.2 GB for X-Trans at 1536 (see the bench).
DEFAULT_TILE_GPU = 1536
#: Working set of the chunked inference path per photosite of a tile
#: (including its overlap margin), measured on the CPU by
#: tools/bench_denoise.py (peak RSS growth over tile area, Bayer and X-Trans).
BYTES_PER_TILE_PIXEL = 400

#: The blind noise estimate reads at most this many photosites (a central,
#: CFA-aligned crop): plenty of flat blocks for the statistics, and its
#: float64 working copies stay bounded on 100-megapixel raws.
BLIND_MAX_PIXELS = 16_000_000

NOISE_SOURCES = ("given", "table", "dng", "blind")


def default_tile(device) -> int:
    """Default tile side for a torch device (CPU or GPU)."""
    return DEFAULT_TILE if torch.device(device).type == "cpu" else DEFAULT_TILE_GPU


@dataclass
class NoiseChoice:
    """The white-balance-free noise profile used for one file and its source."""

    profile: np.ndarray  # (2, 3) [a; b] in normalised raw units
    source: str  # one of NOISE_SOURCES: 'given', 'table', 'dng', 'blind'

    def describe(self) -> str:
        """One line for logs: source and per-channel a, b."""
        a = ", ".join(f"{v:.3g}" for v in self.profile[0])
        b = ", ".join(f"{v:.3g}" for v in self.profile[1])
        return f"noise from {self.source}: a=[{a}] b=[{b}]"


def choose_noise(raw, table=None, given: tuple[float, float] | None = None) -> NoiseChoice:
    """Noise profile for a raw, in order of trust: the user's ``--noise a,b``,
    the profile table's entry for the camera and ISO, the DNG NoiseProfile
    tag, and the blind estimate from the mosaic itself."""
    if given is not None:
        a, b = given
        return NoiseChoice(np.array([[a] * 3, [b] * 3], dtype=np.float32), "given")
    meta = raw.meta
    if table is not None:
        try:
            prof = table.lookup(meta.make, meta.model, meta.iso)
            return NoiseChoice(prof.as_array(), "table")
        except KpntError as exc:
            log.debug("%s: no table profile (%s)", raw.path, exc)
    if meta.noise_profile is not None:
        return NoiseChoice(np.asarray(meta.noise_profile, dtype=np.float32).T.copy(), "dng")
    from kpnt.noise import estimate_blind

    ys, xs = _blind_crop(raw.mosaic.shape, raw.cfa.period)
    mosaic = raw.mosaic[ys, xs]
    # uint8 colour map: the int64 one of CFA.colour_map costs 8 bytes a photosite
    colour = np.tile(raw.cfa.pattern.astype(np.uint8), (-(-mosaic.shape[0] // raw.cfa.period), -(-mosaic.shape[1] // raw.cfa.period)))
    colour = colour[: mosaic.shape[0], : mosaic.shape[1]]
    prof = estimate_blind(mosaic, colour, mask=~raw.saturated[ys, xs])
    return NoiseChoice(prof.as_array(), "blind")


def _blind_crop(shape, period: int) -> tuple[slice, slice]:
    """Central crop of at most :data:`BLIND_MAX_PIXELS` photosites, starting
    on a CFA repeat boundary (so the crop has the raw's own CFA phase)."""
    h, w = shape
    if h * w <= BLIND_MAX_PIXELS:
        return slice(0, h), slice(0, w)
    scale = math.sqrt(BLIND_MAX_PIXELS / (h * w))
    ch, cw = max(period, int(h * scale) // period * period), max(period, int(w * scale) // period * period)
    y0, x0 = (h - ch) // 2 // period * period, (w - cw) // 2 // period * period
    return slice(y0, y0 + ch), slice(x0, x0 + cw)


def tile_alignment(model, cfa: CFA | None) -> int:
    """Tile origins must be multiples of this: the CFA period and the block
    size times the pyramid's total decimation."""
    block = 1 if cfa is None else cfa.block
    period = 1 if cfa is None else cfa.period
    step = block * 2 ** model.config.levels
    return step * period // math.gcd(step, period)


def receptive_radius(model, cfa: CFA | None) -> int:
    """Bound (photosites) on how far an input sample influences the output.

    In colour-base pixels the colour KPN reaches ``4 * (2^levels - 1)``: at
    level i (pixels 2^i wide) the features and the kernel read radius 2 of
    D_i, D_i needs the 5-tap blur and the bilinear up of the next level, and
    the reconstruction's up chain adds about one pixel per level; these
    paths overlap, and ``tests/test_denoise.py`` measures the true radius of
    a random model (Bayer 99, X-Trans 146 photosites for the default
    configuration) and checks that this bound covers it.  The front level
    adds its tap radius and one block for the block-aware upsample.
    """
    block = 1 if cfa is None else cfa.block
    colour_px = 4 * (2 ** model.config.levels - 1)
    return colour_px * block + model.config.front_radius + block


@dataclass(frozen=True)
class Tile:
    """One tile: the model reads rows ``y0:y1``, columns ``x0:x1`` and the
    core ``cy0:cy1, cx0:cx1`` of its result is kept (image coordinates)."""

    y0: int
    y1: int
    x0: int
    x1: int
    cy0: int
    cy1: int
    cx0: int
    cx1: int

    @property
    def pixels(self) -> int:
        return (self.y1 - self.y0) * (self.x1 - self.x0)


def _tiling(model, cfa: CFA | None, tile: int) -> tuple[int, int]:
    """(kept tile side, overlap margin), both multiples of the alignment."""
    align = tile_alignment(model, cfa)
    margin = -(-receptive_radius(model, cfa) // align) * align
    core = max(align, -(-tile // align) * align)
    return core, margin


def plan_tiles(shape, model, cfa: CFA | None, tile: int) -> list[Tile]:
    """The tiles :func:`denoise_array` runs for an image of ``shape`` (H, W, ...).

    ``tile <= 0``, or an image no larger than ``tile``, is one tile.
    """
    h, w = shape[:2]
    if tile <= 0 or (h <= tile and w <= tile):
        return [Tile(0, h, 0, w, 0, h, 0, w)]
    core, margin = _tiling(model, cfa, tile)
    out = []
    for ty in range(0, h, core):
        for tx in range(0, w, core):
            out.append(Tile(max(0, ty - margin), min(h, ty + core + margin), max(0, tx - margin), min(w, tx + core + margin),
                            ty, min(h, ty + core), tx, min(w, tx + core)))
    return out


def count_tiles(shape, model, cfa, tile: int) -> int:
    """Number of tiles :func:`denoise_array` runs for an image of ``shape``."""
    return len(plan_tiles(shape, model, cfa, tile))


def _run_model(model, x: torch.Tensor, cfa: CFA | None, noise: torch.Tensor) -> torch.Tensor:
    # no_grad, not inference_mode: the reference ops cache index tensors,
    # and inference tensors in those caches would break later training.
    # no_grad also selects the ops' chunked inference paths (kpnt.ref).
    with torch.no_grad():
        return model(x, cfa, noise)


def _run_tiles(model, shape, cfa: CFA | None, noise_wb: np.ndarray, tile: int, device,
               read: Callable[[Tile], np.ndarray], store: Callable[[Tile, np.ndarray], None], progress=None) -> None:
    """Run the model tile by tile: ``read(t)`` gives the white-balanced
    input of tile ``t`` ((h, w) mosaic or (h, w, 3) rgb, float32),
    ``store(t, rgb)`` receives the (cy1-cy0, cx1-cx0, 3) float32 core of its
    result; ``progress(1)`` after each tile."""
    noise = torch.from_numpy(np.asarray(noise_wb, dtype=np.float32))[None].to(device)
    for t in plan_tiles(shape, model, cfa, tile):
        piece = torch.from_numpy(np.ascontiguousarray(read(t), dtype=np.float32))
        piece = piece[None, None] if piece.ndim == 2 else piece.permute(2, 0, 1)[None]
        piece_cfa = None if cfa is None else cfa.crop(t.y0, t.x0)
        res = _run_model(model, piece.to(device), piece_cfa, noise)[0]
        core = res[:, t.cy0 - t.y0:t.cy1 - t.y0, t.cx0 - t.x0:t.cx1 - t.x0].permute(1, 2, 0)
        store(t, core.float().cpu().numpy())
        del res, core, piece
        if progress is not None:
            progress(1)


def denoise_array(model, x: np.ndarray, cfa: CFA | None, noise_wb: np.ndarray, tile: int = DEFAULT_TILE, device="cpu", progress=None) -> np.ndarray:
    """Run the model on a whole white-balanced image in overlapping tiles.

    Args:
        x: (H, W) white-balanced normalised mosaic, or (H, W, 3) for rgb.
        cfa: the CFA of ``x`` (None for rgb).
        noise_wb: (2, 3) white-balanced [a; b].
        tile: side of the part of each tile that is kept, in photosites
            (rounded to the tiling alignment); every tile also reads an
            overlap margin of :func:`receptive_radius` on each inner side.
            0, or an image no larger than the tile, runs in one piece.
        progress: called with 1 after each tile.
    Returns:
        (H, W, 3) float32 white-balanced camera RGB.
    """
    h, w = x.shape[:2]
    out = np.empty((h, w, 3), dtype=np.float32)

    def store(t: Tile, rgb: np.ndarray) -> None:
        out[t.cy0:t.cy1, t.cx0:t.cx1] = rgb

    _run_tiles(model, x.shape, cfa, noise_wb, tile, device, lambda t: x[t.y0:t.y1, t.x0:t.x1], store, progress)
    return out


def denoise_raw(model, raw, noise: NoiseChoice, tile: int = DEFAULT_TILE, device="cpu", progress=None,
                dtype=np.float32) -> np.ndarray:
    """Denoise and demosaic a :class:`kpnt.io.raw.RawImage`.

    Args:
        dtype: ``np.float32``: linear camera RGB, white level 1 (values above
            1 where highlights were clipped); ``np.uint16``: the same through
            :func:`to_uint16` (0 black, 65535 white), converted tile by tile
            so that no full-size float image is ever held.
    Returns:
        (H, W, 3) camera RGB, white balance *not* applied.
    """
    if model.sensor != raw.cfa.kind:
        from kpnt.errors import WeightsError

        raise WeightsError(f"{raw.path}: weights are for {model.sensor}, this raw is {raw.cfa.kind}: pass --weights with a {raw.cfa.kind} model")
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.uint16)):
        raise ValueError(f"denoise_raw: dtype must be float32 or uint16, got {dtype}")
    wb = np.asarray(raw.meta.wb, dtype=np.float32)
    period = raw.cfa.period
    wb_rep = wb[raw.cfa.pattern]                                   # (P, P) gain of each repeat position
    noise_wb = np.stack([noise.profile[0] * wb, noise.profile[1] * wb**2]).astype(np.float32)
    h, w = raw.mosaic.shape
    out = np.empty((h, w, 3), dtype=dtype)

    def read(t: Tile) -> np.ndarray:
        # Tile origins are multiples of the CFA period, so the repeat's
        # gains tile the piece from its (0, 0).
        piece = raw.mosaic[t.y0:t.y1, t.x0:t.x1]
        gains = np.tile(wb_rep, (-(-piece.shape[0] // period), -(-piece.shape[1] // period)))
        return piece * gains[: piece.shape[0], : piece.shape[1]]

    def store(t: Tile, rgb: np.ndarray) -> None:
        rgb /= wb
        out[t.cy0:t.cy1, t.cx0:t.cx1] = rgb if dtype == np.float32 else to_uint16(rgb)

    _run_tiles(model, (h, w), raw.cfa, noise_wb, tile, device, read, store, progress)
    return out


def to_uint16(rgb: np.ndarray) -> np.ndarray:
    """Scale so that 0 is black and 65535 the white level; clip, round."""
    return np.clip(np.rint(rgb * 65535.0), 0, 65535).astype(np.uint16)
