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
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kpnt.errors import KpntError
from kpnt.mosaic import CFA

log = logging.getLogger("kpnt.denoise")

#: Default tile side (photosites, before the overlap margin is added on each
#: side): peak memory grows with the tile area.
DEFAULT_TILE = 768


@dataclass
class NoiseChoice:
    """The white-balance-free noise profile used for one file and its source."""

    profile: np.ndarray  # (2, 3) [a; b] in normalised raw units
    source: str  # 'given', 'table', 'dng', 'blind'


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

    colour = raw.cfa.colour_map(*raw.mosaic.shape)
    prof = estimate_blind(raw.mosaic, colour, mask=~raw.saturated)
    return NoiseChoice(prof.as_array(), "blind")


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


def _run_model(model, x: torch.Tensor, cfa: CFA | None, noise: torch.Tensor) -> torch.Tensor:
    # no_grad, not inference_mode: the reference ops cache index tensors,
    # and inference tensors in those caches would break later training.
    with torch.no_grad():
        return model(x, cfa, noise)


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
    Returns:
        (H, W, 3) float32 white-balanced camera RGB.
    """
    h, w = x.shape[:2]
    inp = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    inp = inp[None, None] if inp.ndim == 2 else inp.permute(2, 0, 1)[None]
    noise = torch.from_numpy(np.asarray(noise_wb, dtype=np.float32))[None].to(device)
    if tile <= 0 or (h <= tile and w <= tile):
        out = _run_model(model, inp.to(device), cfa, noise)[0]
        return out.permute(1, 2, 0).float().cpu().numpy()

    core, margin = _tiling(model, cfa, tile)
    out = np.empty((h, w, 3), dtype=np.float32)
    starts_y = list(range(0, h, core))
    starts_x = list(range(0, w, core))
    for ty in starts_y:
        for tx in starts_x:
            y0, x0 = max(0, ty - margin), max(0, tx - margin)
            y1, x1 = min(h, ty + core + margin), min(w, tx + core + margin)
            piece = inp[..., y0:y1, x0:x1].to(device)
            piece_cfa = None if cfa is None else cfa.crop(y0, x0)
            res = _run_model(model, piece, piece_cfa, noise)[0].permute(1, 2, 0).float().cpu().numpy()
            cy1, cx1 = min(h, ty + core), min(w, tx + core)
            out[ty:cy1, tx:cx1] = res[ty - y0 : cy1 - y0, tx - x0 : cx1 - x0]
            if progress is not None:
                progress(1)
    return out


def _tiling(model, cfa: CFA | None, tile: int) -> tuple[int, int]:
    """(kept tile side, overlap margin), both multiples of the alignment."""
    align = tile_alignment(model, cfa)
    margin = -(-receptive_radius(model, cfa) // align) * align
    core = max(align, -(-tile // align) * align)
    return core, margin


def count_tiles(shape, model, cfa, tile: int) -> int:
    """Number of tiles :func:`denoise_array` runs for an image of ``shape``."""
    h, w = shape[:2]
    if tile <= 0 or (h <= tile and w <= tile):
        return 1
    core, _ = _tiling(model, cfa, tile)
    return -(-h // core) * -(-w // core)


def denoise_raw(model, raw, noise: NoiseChoice, tile: int = DEFAULT_TILE, device="cpu", progress=None) -> np.ndarray:
    """Denoise and demosaic a :class:`kpnt.io.raw.RawImage`.

    Returns (H, W, 3) float32 linear camera RGB, white balance *not* applied,
    white level = 1 (values above 1 possible where highlights were clipped).
    """
    if model.sensor != raw.cfa.kind:
        from kpnt.errors import WeightsError

        raise WeightsError(f"{raw.path}: weights are for {model.sensor}, this raw is {raw.cfa.kind}: pass --weights with a {raw.cfa.kind} model")
    wb = np.asarray(raw.meta.wb, dtype=np.float32)
    colour = raw.cfa.colour_map(*raw.mosaic.shape)
    x = raw.mosaic * wb[colour]
    noise_wb = np.stack([noise.profile[0] * wb, noise.profile[1] * wb**2]).astype(np.float32)
    out = denoise_array(model, x, raw.cfa, noise_wb, tile=tile, device=device, progress=progress)
    return out / wb[None, None, :]


def to_uint16(rgb: np.ndarray) -> np.ndarray:
    """Scale so that 0 is black and 65535 the white level; clip, round."""
    return np.clip(np.rint(rgb * 65535.0), 0, 65535).astype(np.uint16)
