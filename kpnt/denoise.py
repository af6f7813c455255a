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
photosite), the peak is the working set of the tiles in flight.  Under
``torch.no_grad()`` the reference ops take their chunked inference paths
(``kpnt.ref``), whose working set is about :data:`BYTES_PER_TILE_PIXEL` per
tile photosite (measured by ``tools/bench_denoise.py``); :data:`DEFAULT_TILE`
is chosen from it so that a 100-megapixel raw denoises within 4 GB of RAM
(measured: 2.1 GB peak RSS), :data:`DEFAULT_TILE_GPU` (reference ops) and
:data:`DEFAULT_TILE_GPU_FUSED` (fused kernels) so that a GPU run stays
within 2 GB of GPU memory.

One tile loop (:func:`_run_tiles`) serves every caller and device: the
white balance, the model, the division by the white balance and the uint16
conversion are the same torch steps everywhere, only the schedule differs.
On a GPU the host only copies each tile's normalised mosaic into pinned
memory and the finished core out of it, so a 24-megapixel uint16 result
crosses the bus as 144 MB instead of 288 MB of float32 and costs the host
~0.04 s of copies instead of ~0.45 s of float work; uploads, model and
downloads of neighbouring tiles overlap through two staging buffers each
way, and the host copies run in their own threads.

Parallelism: on a CPU the tiles of a raw run single-threaded in parallel
threads (:func:`tile_workers`); the tile plan does not depend on the thread
count, so the output is the same however the work is spread (for a lone
tile, with ``reproducible=True``).
"""
from __future__ import annotations

import contextlib
import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import numpy as np
import torch

from kpnt.cpu_memory import keep_freed_memory
from kpnt.ensemble import ensemble_forward
from kpnt.errors import BlindEstimateError, KpntError, NoiseProfileError
from kpnt.mosaic import CFA
from kpnt.noise.trained import clamp_to_trained_noise

log = logging.getLogger("kpnt.denoise")

#: Default tile side on a CPU (photosites, before the overlap margin is
#: added on each side).  Measured with tools/bench_denoise.py (session 8,
#: shipped Bayer model, 24-MP raw end to end, 2 cores, freed memory kept
#: mapped by kpnt.cpu_memory): 1024 took 26.4-26.9 s at 1.4-2.1 GB peak RSS;
#: 2048 took 25-37 s at 4.0-5.5 GB, because every fresh page costs ~20 us
#: on a virtual machine and a larger heap has more of them to touch (sys
#: time 17-33 s against 4-7 s).  The working set is ~80-100 bytes per tile
#: photosite (BYTES_PER_TILE_PIXEL).
DEFAULT_TILE = 1024
#: Default tile side on a GPU.  Measured on an H100 with the reference ops
#: (tools/bench_denoise.py --device cuda): torch's peak allocation was
#: 0.71 GB (Bayer) / 0.81 GB (X-Trans) for a 2048^2 tile, 0.62 GB over a
#: whole 24 MP raw at 1536; growth ~60 bytes per tile photosite over ~0.45 GB
#: of chunk buffers, model and allocator slack.  At 2048 (+ margins:
#: <= 2432^2) that is <= 0.95 GB, plus the CUDA context (~0.5 GB): within
#: the 2 GB budget with room for allocator fragmentation.
DEFAULT_TILE_GPU = 2048
#: Default tile side on a GPU when the fused kernels run the whole model
#: (:func:`kpnt.ops.capability.runs_fused`).  Measured on an H100 with the
#: shipped models (tools/bench_denoise.py, allocator configured by
#: :func:`configure_cuda_allocator`): a 100-megapixel raw peaked at 1.17 GB
#: allocated / 1.40 GB reserved at 3072 (0.49 / 0.63 GB at 2048; 4096 took
#: 1.41 / 3.25 GB reserved without expandable segments), and a folder of
#: 24-MP raws ran at 8.8 files/s at 3072 against 6.2 at 2048: fewer tiles,
#: less overlap and fewer launches per file.
DEFAULT_TILE_GPU_FUSED = 3072
#: Working set of the chunked inference path per photosite of a tile
#: (including its overlap margin) on a CPU, measured by
#: tools/bench_denoise.py (peak RSS growth over tile area: 79-100 bytes for
#: 1024^2-2048^2 Bayer tiles; the index-based path it replaced took ~1300).
BYTES_PER_TILE_PIXEL = 100

#: Tiles run in parallel only while their working sets together stay
#: below this (bytes; see :func:`tile_workers`).
TILE_MEMORY_BUDGET = 2 * 2**30

#: The blind noise estimate reads at most this many photosites (a central,
#: CFA-aligned crop): plenty of flat blocks for the statistics, and its
#: float64 working copies stay bounded on 100-megapixel raws.
BLIND_MAX_PIXELS = 16_000_000

NOISE_SOURCES = ("given", "table", "dng", "blind")


def default_tile(device, fused: bool = False) -> int:
    """Default tile side for a torch device (CPU or GPU); ``fused``: the
    fused CUDA kernels run the whole model (a smaller working set)."""
    if torch.device(device).type == "cpu":
        return DEFAULT_TILE
    return DEFAULT_TILE_GPU_FUSED if fused else DEFAULT_TILE_GPU


#: What :func:`configure_cuda_allocator` sets.
CUDA_ALLOC_CONF = "expandable_segments:True"


def configure_cuda_allocator() -> bool:
    """Let torch's CUDA caching allocator grow segments in place
    (``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``) for a denoising
    run, unless the user set ``PYTORCH_CUDA_ALLOC_CONF`` or CUDA is already
    initialised (the setting is read once, at the first allocation).

    Why: tiles of different sizes (edges) fragment fixed segments; on an
    H100 a 100-megapixel raw at 3072 tiles reserved 2.28 GB without it and
    1.40 GB with it (1.17 GB allocated either way).  Returns whether it set
    the variable."""
    import os

    if "PYTORCH_CUDA_ALLOC_CONF" in os.environ or torch.cuda.is_initialized():
        return False
    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = CUDA_ALLOC_CONF
    log.debug("PYTORCH_CUDA_ALLOC_CONF=%s", CUDA_ALLOC_CONF)
    return True


@dataclass
class NoiseChoice:
    """The white-balance-free noise profile used for one file and its source."""

    profile: np.ndarray  # (2, 3) [a; b] in normalised raw units
    source: str  # one of NOISE_SOURCES: 'given', 'table', 'dng', 'blind'

    def __post_init__(self):
        # Every source is checked before the denoise: a non-finite or absurd
        # level (1e39 is inf in float32) would make the output NaN.
        from kpnt.io.validate import check_noise_profile

        check_noise_profile(self.profile, f"noise level from {self.source}")

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
    try:
        prof = estimate_blind(mosaic, colour, mask=~raw.saturated[ys, xs])
    except BlindEstimateError as exc:   # the last source: say which others there are
        raise NoiseProfileError(f"cannot estimate the noise level from the image ({exc.reason}): pass --noise a,b, or "
                                "--profiles TABLE (darktable noise profiles with this camera and ISO)") from None
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
    if cfa is not None and getattr(model.config, "guide_layers", 0):
        period *= model.config.guide_pack       # the guide's packing grid must be the same in every tile
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
    guide = 0
    if cfa is not None and getattr(model.config, "guide_layers", 0):
        from kpnt.ref.guide import guide_radius   # the guide reads U, so its reach adds to the colour KPN's
        guide = guide_radius(cfa.period, model.config.guide_layers, model.config.guide_pack)
    return colour_px * block + guide + model.config.front_radius + block


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

    ``tile <= 0``, or an image no larger than ``tile``, is one tile.  Else
    each axis is cut into ``ceil(side / tile)`` cores of (nearly) equal,
    aligned size, so the tiles are balanced (they run in parallel) and none
    is larger than asked.  The plan depends only on the shape, the model and
    ``tile`` (not on the thread count: the same input gives the same bytes
    however it is run).
    """
    h, w = shape[:2]
    if tile <= 0 or (h <= tile and w <= tile):
        return [Tile(0, h, 0, w, 0, h, 0, w)]
    core, margin = _tiling(model, cfa, tile)
    align = tile_alignment(model, cfa)

    def cuts(n: int) -> list[int]:
        """Core starts along one axis: ceil(n / core) cores of equal aligned size."""
        k = -(-n // core)
        step = -(-(-(-n // k)) // align) * align
        return list(range(0, n, step))

    ys, xs = cuts(h), cuts(w)
    tiles = []
    for i, ty in enumerate(ys):
        cy1 = ys[i + 1] if i + 1 < len(ys) else h
        for j, tx in enumerate(xs):
            cx1 = xs[j + 1] if j + 1 < len(xs) else w
            tiles.append(Tile(max(0, ty - margin), min(h, cy1 + margin), max(0, tx - margin), min(w, cx1 + margin),
                              ty, cy1, tx, cx1))
    return tiles


def count_tiles(shape, model, cfa, tile: int) -> int:
    """Number of tiles :func:`denoise_array` runs for an image of ``shape``."""
    return len(plan_tiles(shape, model, cfa, tile))


def _run_model(model, x: torch.Tensor, cfa: CFA | None, noise: torch.Tensor, views: int = 1) -> torch.Tensor:
    # no_grad, not inference_mode: the reference ops cache index tensors,
    # and inference tensors in those caches would break later training.
    # no_grad also selects the ops' chunked inference paths (kpnt.ref).
    with torch.no_grad():
        return ensemble_forward(model, x, cfa, noise, views)


def tile_workers(tiles: list[Tile], device) -> int:
    """How many tiles run at once: on a CPU, one per torch thread, as long
    as their working sets fit :data:`TILE_MEMORY_BUDGET`; on a GPU, one.

    On a CPU every tile runs its ops on one thread, in parallel with the
    other tiles (Python threads; torch releases the GIL).  Two reasons:

    * the result does not depend on the thread count (torch's intra-op
      threads change float summation order: 2e-9 between 1 and 2 threads
      here), so ``--jobs 2`` writes the same bytes as ``--jobs 1``;
    * the ops of the chunked inference paths are small (a few MB each), and
      OpenMP threads that wait for each other at every op collapse when
      anything else runs on the machine (measured here: a 2-thread run 4-8x
      slower than a 1-thread run while other processes were busy);
      independent tiles degrade gracefully instead.

    A lone tile (an image no larger than ``tile``) runs its ops on torch's
    threads instead, unless the caller asks for ``reproducible`` results
    (:func:`denoise_array`): the CLI does, so there such a file uses one
    core (``--jobs`` spreads small files over the cores).
    """
    if torch.device(device).type != "cpu" or len(tiles) < 2:
        return 1
    largest = max(t.pixels for t in tiles)
    fit = max(1, TILE_MEMORY_BUDGET // (BYTES_PER_TILE_PIXEL * largest))
    return max(1, min(len(tiles), torch.get_num_threads(), fit))


def _to_uint16_tensor(rgb: torch.Tensor) -> torch.Tensor:
    """:func:`to_uint16` on a tensor (same float32 arithmetic, same bytes),
    returned as int16 with the uint16 bit pattern (``.view(np.uint16)`` on
    the host): int16 copies and conversions exist on every torch build and
    device, uint16 ones only on recent ones."""
    q = torch.round(rgb * 65535.0).clamp_(0, 65535).to(torch.int32)
    return torch.where(q >= 32768, q - 65536, q).to(torch.int16)


def _run_tiles(model, src: np.ndarray, cfa: CFA | None, noise_wb: np.ndarray, tile: int, device, out: np.ndarray, *,
               gains: np.ndarray | None = None, wb: np.ndarray | None = None, staged: bool = False,
               reproducible: bool = False, progress=None, timing: dict | None = None, views: int = 1) -> None:
    """The one tile loop (of :func:`denoise_array` and :func:`denoise_raw`):
    the model over ``src`` ((H, W) mosaic or (H, W, 3) rgb) in the tiles of
    :func:`plan_tiles`, each kept core written into ``out`` ((H, W, 3),
    float32 or uint16); ``progress(1)`` after each tile is stored.

    Every tile takes the same steps, on ``device``: its input times
    ``gains`` if given ((P, P), one gain per CFA repeat position: the white
    balance; tile origins are multiples of the period, so the repeat's
    gains tile the piece from its (0, 0)); the model; the kept core divided
    by ``wb`` if given ((3,): the white balance back out) and converted to
    ``out.dtype`` (uint16: exactly :func:`to_uint16`).  ``views`` > 1 runs
    the model that many times per tile, on rotated and mirrored copies, and
    averages (:mod:`kpnt.ensemble`).  Only the schedule
    depends on the device:

    * An accelerator (or ``staged``, for tests, on a CPU) pipelines the
      tiles through three threads, so that the one launching the device
      work never copies: a stager copies tile ``i+1``'s input into a
      (pinned) staging buffer and a drainer copies tile ``i-1``'s result out
      of one into ``out`` while this thread launches tile ``i`` (the copies
      release the GIL; on an H100 they took ~40 ms of a 24-MP file's
      ~110 ms on this thread before, and the GPU waited for them).  Two
      staging buffers each way: the stager waits for the upload that last
      read its buffer (a CUDA event per tile), this thread waits for the
      drain that last read an output buffer before it queues the next
      download into it.  GPU memory stays that of one tile in flight (plus
      the next one's input); a uint16 result crosses the bus at 6 bytes a
      photosite instead of 12 and the host does no float work.  ``timing``,
      if given, gets ``gpu`` (seconds of device work, summed over the
      tiles from CUDA events: H2D copy, model, conversion, D2H copy).  On a
      CPU (unpinned buffers, synchronous copies) it gives the same bytes as
      the CPU schedule for the same torch thread count (the tests check
      this).
    * A CPU runs the tiles single-threaded in parallel threads
      (:func:`tile_workers`), each taking its tile through all the steps
      (tiles write disjoint cores: no lock); a lone tile runs on torch's
      threads unless ``reproducible``.
    """
    dev = torch.device(device)
    if dev.type == "cpu":
        # Large temporaries reused already mapped, not faulted in again per
        # tile and layer (kpnt.cpu_memory: ~1.6x the CPU model speed).
        keep_freed_memory()
    cuda = dev.type == "cuda"
    staged = staged or dev.type != "cpu"
    tiles = plan_tiles(src.shape, model, cfa, tile)
    noise = torch.from_numpy(np.asarray(noise_wb, dtype=np.float32))[None].to(dev)
    gains_t = None if gains is None else torch.from_numpy(np.ascontiguousarray(gains, dtype=np.float32)).to(dev)
    wb_t = None if wb is None else torch.from_numpy(np.asarray(wb, dtype=np.float32)).to(dev)
    u16 = out.dtype == np.uint16
    uploaded: list = [None] * len(tiles)   # staged on CUDA: per tile, a CUDA event after its input's upload
    lock = threading.Lock()

    def compute(i: int, x: torch.Tensor) -> torch.Tensor:
        """Tile ``i``'s steps from its host input ``x`` to the core that ``out`` stores (on the device)."""
        t = tiles[i]
        x = x.to(dev, torch.float32, non_blocking=cuda)
        if cuda and staged:
            uploaded[i] = torch.cuda.Event()
            uploaded[i].record()
        if gains_t is not None:
            h, w = x.shape
            x = x * gains_t.repeat(-(-h // cfa.period), -(-w // cfa.period))[:h, :w]
        x = x.contiguous()
        x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
        res = _run_model(model, x, None if cfa is None else cfa.crop(t.y0, t.x0), noise, views)[0]
        core = res[:, t.cy0 - t.y0:t.cy1 - t.y0, t.cx0 - t.x0:t.cx1 - t.x0].permute(1, 2, 0).float()
        if wb_t is not None:
            core = core / wb_t
        return _to_uint16_tensor(core) if u16 else core

    def store(i: int, core: torch.Tensor, done=None) -> None:
        """Tile ``i``'s core (a host tensor; ready once the event ``done`` is) into ``out``."""
        if done is not None:
            done.synchronize()
        t = tiles[i]
        host = core.numpy()
        out[t.cy0:t.cy1, t.cx0:t.cx1] = host.view(np.uint16) if u16 else host
        if progress is not None:
            with lock:
                progress(1)

    if not staged:
        def one(i: int) -> None:
            t = tiles[i]
            store(i, compute(i, torch.from_numpy(np.ascontiguousarray(src[t.y0:t.y1, t.x0:t.x1], dtype=np.float32))).cpu())

        if len(tiles) == 1 and not reproducible:
            one(0)
            return
        workers = tile_workers(tiles, dev)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            if workers == 1:
                for i in range(len(tiles)):
                    one(i)
            else:
                with ThreadPoolExecutor(workers, thread_name_prefix="kpnt-tile") as pool:
                    for fut in [pool.submit(one, i) for i in range(len(tiles))]:
                        fut.result()             # re-raises a tile's error here
        finally:
            torch.set_num_threads(threads)
        return

    channels = 1 if src.ndim == 2 else src.shape[2]
    max_core = max((t.cy1 - t.cy0) * (t.cx1 - t.cx0) for t in tiles)
    in_bufs = [torch.empty(max(t.pixels for t in tiles) * channels, dtype=torch.float32, pin_memory=cuda)
               for _ in range(min(2, len(tiles)))]
    out_bufs = [torch.empty(max_core * 3, dtype=torch.int16 if u16 else torch.float32, pin_memory=cuda)
                for _ in range(min(2, len(tiles)))]
    events = []           # (start, end) per tile, for ``timing``

    def stage_in(i: int) -> torch.Tensor:
        t = tiles[i]
        if i >= 2 and uploaded[i - 2] is not None:
            uploaded[i - 2].synchronize()                   # the buffer's last reader
        piece = src[t.y0:t.y1, t.x0:t.x1]
        buf = in_bufs[i % 2][: piece.size].view(piece.shape)
        buf.numpy()[...] = piece                            # numpy copy: releases the GIL
        return buf

    with ThreadPoolExecutor(1, thread_name_prefix="kpnt-stage") as stager, \
            ThreadPoolExecutor(1, thread_name_prefix="kpnt-drain") as drainer:
        pending = stager.submit(stage_in, 0)
        drains = []
        try:
            for i in range(len(tiles)):
                x = pending.result()
                if i + 1 < len(tiles):
                    pending = stager.submit(stage_in, i + 1)   # needs only tile i-1's upload, queued already
                start = end = None
                if cuda and timing is not None:
                    start = torch.cuda.Event(enable_timing=True)
                    start.record()
                core = compute(i, x)
                if i >= 2:
                    drains[i - 2].result()                    # tile i-2 has left this output buffer
                buf = out_bufs[i % 2][: core.numel()].view(core.shape)
                buf.copy_(core, non_blocking=cuda)
                del x, core
                if cuda:
                    end = torch.cuda.Event(enable_timing=timing is not None)
                    end.record()
                    if start is not None:
                        events.append((start, end))
                drains.append(drainer.submit(store, i, buf, end))
        except BaseException:
            for f in drains:                                 # let queued drains finish; the loop's error wins
                f.exception()
            raise
        for f in drains:
            f.result()                                       # re-raises a drain's error here
    if timing is not None and events:
        timing["gpu"] = timing.get("gpu", 0.0) + sum(s.elapsed_time(e) for s, e in events) / 1000.0


def denoise_array(model, x: np.ndarray, cfa: CFA | None, noise_wb: np.ndarray, tile: int = DEFAULT_TILE, device="cpu", progress=None,
                  reproducible: bool = False, views: int = 1) -> np.ndarray:
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
        reproducible: the same bytes whatever torch's thread count: on a
            CPU every tile runs single-threaded (several tiles run in
            parallel anyway; see :func:`tile_workers`), even a lone one.
        views: 1, or 2, 4, 8: the mean of the model over that many rotations
            and mirrors of each tile (:mod:`kpnt.ensemble`; that many times
            the model time).
    Returns:
        (H, W, 3) float32 white-balanced camera RGB.
    """
    out = np.empty((*x.shape[:2], 3), dtype=np.float32)
    _run_tiles(model, x, cfa, noise_wb, tile, device, out, reproducible=reproducible, progress=progress, views=views)
    return out


def denoise_raw(model, raw, noise: NoiseChoice, tile: int = DEFAULT_TILE, device="cpu", progress=None,
                dtype=np.float32, reproducible: bool = False, timing: dict | None = None,
                staged: bool = False, strength: float = 1.0, hot_pixels: bool = False,
                cpu_precision: str = "fp32", views: int = 1) -> np.ndarray:
    """Denoise and demosaic a :class:`kpnt.io.raw.RawImage`.

    Args:
        dtype: ``np.float32``: linear camera RGB, white level 1 (values above
            1 where highlights were clipped); ``np.uint16``: the same through
            :func:`to_uint16` (0 black, 65535 white), converted tile by tile
            so that no full-size float image is ever held.
        reproducible: as :func:`denoise_array`.
        timing: on a CUDA device, receives ``gpu``: seconds of device work
            (CUDA events; see :func:`_run_tiles`).
        staged: run the accelerator's tile schedule (:func:`_run_tiles`)
            even on a CPU (for tests; on any other device it always runs).
        strength: 1 denoises fully, 0 only demosaics, values between keep
            some noise: the noise level (standard deviation) the model is
            told is scaled by ``strength`` (the model was trained down to
            zero noise, where it leaves the signal alone).
        hot_pixels: replace hot and dead photosites first
            (:func:`kpnt.hotpixels.fix_hot_pixels`; corrects ``raw.mosaic``
            in place; the counts go to ``timing['hot_pixels']`` and the
            debug log).  ``kpnt-denoise`` turns it on.
        cpu_precision: 'fp32', 'bf16' or 'auto' (bf16 where the CPU has
            native bf16): precision of the model's MLP products on a CPU
            (:func:`kpnt.ref.mlp.set_cpu_matmul_dtype`; ~3x faster in bf16,
            outputs within ~3e-3 of fp32).  ``kpnt-denoise`` uses 'auto'.
        views: as :func:`denoise_array` (``kpnt-denoise --ensemble``).
    Returns:
        (H, W, 3) camera RGB, white balance *not* applied.
    """
    if model.sensor != raw.cfa.kind:
        from kpnt.errors import WeightsError

        raise WeightsError(f"{raw.path}: weights are for {model.sensor}, this raw is {raw.cfa.kind}: pass --weights with a {raw.cfa.kind} model")
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.uint16)):
        raise ValueError(f"denoise_raw: dtype must be float32 or uint16, got {dtype}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must lie in [0, 1] (0 = demosaic only, 1 = full denoising), got {strength}")
    wb = np.asarray(raw.meta.wb, dtype=np.float32)
    if hot_pixels:
        from kpnt.hotpixels import fix_raw

        n_hot, n_dead = fix_raw(raw, noise.profile)
        if timing is not None:
            timing["hot_pixels"] = (n_hot, n_dead)
    s2 = float(strength) ** 2     # variance scales with the square of the level
    noise_wb = np.stack([noise.profile[0] * wb * s2, noise.profile[1] * wb**2 * s2]).astype(np.float32)
    noise_wb = clamp_to_trained_noise(model, noise_wb, raw.path)
    out = np.empty((*raw.mosaic.shape, 3), dtype=dtype)
    from kpnt.ref.mlp import cpu_matmul_precision

    # the white balance in per tile (one gain per CFA repeat position) and out again
    with cpu_matmul_precision(cpu_precision) if torch.device(device).type == "cpu" else contextlib.nullcontext():
        _run_tiles(model, raw.mosaic, raw.cfa, noise_wb, tile, device, out, gains=wb[raw.cfa.pattern], wb=wb,
                   staged=staged, reproducible=reproducible, progress=progress, timing=timing, views=views)
    return out


def to_uint16(rgb: np.ndarray) -> np.ndarray:
    """Scale so that 0 is black and 65535 the white level; clip, round."""
    return np.clip(np.rint(rgb * 65535.0), 0, 65535).astype(np.uint16)
