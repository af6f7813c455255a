"""One file through the pipeline: decode, noise level, denoise, check, write.

:class:`FileProcessor` runs on one device, in the main process or in a
worker process; the runners (:mod:`kpnt.batch.serial`,
:mod:`kpnt.batch.pipelined`, :mod:`kpnt.batch.pool`) decide which file goes
where and when.  Every failure of a file becomes a failed
:class:`~kpnt.batch.types.FileResult` with a one-line message; only
KeyboardInterrupt (Ctrl-C, SIGTERM) propagates.
"""
from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass

import numpy as np

from kpnt.batch.decoder import DecoderPool
from kpnt.batch.formats import get_format
from kpnt.batch.models import ModelCache, NonFiniteOutputError
from kpnt.batch.types import FATAL_ERRNOS, FATAL_WHY, FileResult, Settings, Task, one_line
from kpnt.errors import KpntError
from kpnt.hotpixels import fix_raw

log = logging.getLogger("kpnt")


class BlackOutputError(KpntError):
    """A file's result is black everywhere; it is not written."""


@dataclass
class Decoded:
    """What a decode thread hands the main thread: the raw (or why it could
    not be read), its noise profile (or why none), and their seconds."""

    raw: object = None
    exc: BaseException | None = None
    t_decode: float = 0.0
    noise: object = None
    noise_exc: BaseException | None = None
    t_noise: float = 0.0
    hot_fixed: bool = False     # hot/dead photosites already replaced (off the main thread)


class FileProcessor:
    """Decodes, denoises and writes files on one device.

    Args:
        settings: the batch's :class:`~kpnt.batch.types.Settings`.
        device: torch device string.
        decoders: how many files may be decoded at once (one decoder child
            each with ``settings.decoder == 'child'``).
    """

    def __init__(self, settings: Settings, device: str, decoders: int = 1, pool: DecoderPool | None = None):
        self.s = settings
        self.device = device
        self.fmt = get_format(settings.fmt)
        self.models = ModelCache(settings.weights, device, settings.backend)
        if pool is not None and pool.kind != settings.decoder:
            raise KpntError(f"the decoder pool given decodes {pool.kind}, the settings ask for {settings.decoder}")
        self._own_pool = pool is None
        self.decoders = pool or DecoderPool(settings.decoder, decoders, quiet=not settings.verbose)
        self.decoders.configure(settings.decode_timeout, blind_possible=settings.noise is None)
        self._table = None

    def start(self) -> None:
        """Start the decoder children now (else on first use)."""
        self.decoders.start()

    def close(self) -> None:
        """Stop the decoder children: all of them if this processor made
        the pool, else only those still decoding (the caller's pool stays)."""
        if self._own_pool:
            self.decoders.close()
        else:
            self.decoders.stop_busy()

    def tile_for(self, model) -> int:
        """--tile, else the device's default for this model (larger on a GPU
        when the fused kernels run it: :data:`kpnt.denoise.DEFAULT_TILE_GPU_FUSED`)."""
        from kpnt.denoise import default_tile
        from kpnt.ops.capability import runs_fused

        if self.s.tile is not None:
            return self.s.tile
        return default_tile(self.device, runs_fused(model.config, self.s.backend, self.device))

    def table(self):
        """The noise-profile table (loaded once), or None."""
        if self.s.profiles is None:
            return None
        if self._table is None:
            from kpnt.noise import load_profile_table

            self._table = load_profile_table(self.s.profiles)
        return self._table

    def read(self, task: Task):
        """Decode one raw (supervised child or inline, ``settings.decoder``)."""
        return self.decoders.decode(task.src)

    def decode(self, task: Task) -> Decoded:
        """Decode one raw and choose its noise profile (a decode thread of
        the pipelined path); never raises: failures are handed over."""
        import kpnt.denoise as dn

        t0 = time.perf_counter()
        d = Decoded()
        try:
            d.raw = self.read(task)
        except Exception as e:  # noqa: BLE001  (reported for this file by the main thread)
            d.exc = e
        t1 = time.perf_counter()
        d.t_decode = t1 - t0
        if d.raw is not None:
            try:
                d.noise = dn.choose_noise(d.raw, self.table(), self.s.noise)
                d.raw.saturated = None      # only the blind estimate reads it
                if self.s.hot_pixels:
                    # here, not in the main thread: 0.8 s a 24-MP file of
                    # numpy that would stall a GPU pipeline's device thread
                    fix_raw(d.raw, d.noise.profile)
                    d.hot_fixed = True
            except Exception as e:  # noqa: BLE001
                d.noise_exc = e
            d.t_noise = time.perf_counter() - t1
        return d

    def process(self, task: Task, raw, exc: BaseException | None, t_decode: float, progress=None, on_tiles=None) -> FileResult:
        """Denoise and write one decoded raw; errors become a failed result
        (KeyboardInterrupt propagates)."""
        res, rgb, meta = self.denoise(task, raw, exc, t_decode, progress=progress, on_tiles=on_tiles)
        del raw
        if rgb is not None:
            self.write(task, res, rgb, meta)
        return res

    def denoise(self, task: Task, raw, exc: BaseException | None, t_decode: float, progress=None, on_tiles=None,
                decoded: Decoded | None = None):
        """Noise profile (unless ``decoded`` brings it) and tiled denoise of
        one decoded raw: (result, image, metadata); the image is None when
        the file failed (the result says why).  KeyboardInterrupt propagates."""
        import kpnt.denoise as dn

        res = FileResult(task.src, "failed", task.out, index=task.index)
        res.seconds["decode"] = t_decode
        try:
            if exc is not None:
                raise exc
            model = self.models.get(raw.cfa.kind)
            if raw.meta.wb_source != "as_shot":   # said here: the decoder may run in a child process
                log.debug("%s: no as-shot white balance in the file: %s (R x%.3f, B x%.3f), written as AsShotNeutral",
                          task.src, "estimated from the image" if raw.meta.wb_source == "auto"
                          else "LibRaw's daylight multipliers", raw.meta.wb[0], raw.meta.wb[2])
            t0 = time.perf_counter()
            if decoded is None:
                noise = dn.choose_noise(raw, self.table(), self.s.noise)
                raw.saturated = None    # only the blind estimate reads it: free it before the tiles run
                res.seconds["noise"] = time.perf_counter() - t0
            else:
                if decoded.noise_exc is not None:
                    raise decoded.noise_exc
                noise = decoded.noise
                res.seconds["noise"] = decoded.t_noise
            res.noise = noise.describe()
            t1 = time.perf_counter()
            tile = self.tile_for(model)
            if on_tiles is not None:
                on_tiles(dn.count_tiles(raw.mosaic.shape, model, raw.cfa, tile))
            timing = {}
            self.models.guard.reset()
            # reproducible: the same bytes with any --jobs / --threads
            rgb = dn.denoise_raw(model, raw, noise, tile=tile, device=self.device, progress=progress,
                                 dtype=self.fmt.dtype, reproducible=True, timing=timing, strength=self.s.strength,
                                 hot_pixels=self.s.hot_pixels and not (decoded is not None and decoded.hot_fixed),
                                 cpu_precision=self.s.cpu_precision, views=self.s.views)
            if self.models.guard.tripped():
                raise NonFiniteOutputError(f"{task.src}: the model's output holds NaN or inf ({res.noise}): "
                                           "nothing written; check the noise level and the weights")
            res.seconds["denoise"] = time.perf_counter() - t1
            if "gpu" in timing:
                res.seconds["gpu"] = timing["gpu"]
            meta = raw.meta
            raw.raw = raw.mosaic = raw.saturated = None      # free the decoded raw before encoding
            return res, rgb, meta
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001  (one bad file must not end a batch of a thousand)
            self._failed(res, e, task)
        return res, None, None

    def write(self, task: Task, res: FileResult, rgb: np.ndarray, meta) -> FileResult:
        """Check and write one result atomically; sets ``res`` to done or
        failed (the main thread, or a write thread of the pipelined path)."""
        t0 = time.perf_counter()
        try:
            if rgb.size and rgb.max() <= 0:
                raise BlackOutputError(f"{task.src}: the result is black everywhere: not written "
                                       "(the raw's black/white levels or the noise level look wrong)")
            task.out.parent.mkdir(parents=True, exist_ok=True)
            self.fmt.write(task.out, rgb, meta, self.s.force, compression=self.s.compression)
            res.seconds["encode"] = time.perf_counter() - t0
            res.status = "done"
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001
            self._failed(res, e, task)
        return res

    def _failed(self, res: FileResult, e: BaseException, task: Task) -> None:
        res.status = "failed"
        res.message = one_line(e, task.src)
        if isinstance(e, OSError) and e.errno in FATAL_ERRNOS:
            res.fatal = FATAL_WHY[e.errno]
            res.message += " (batch stopped: every later file would fail the same way)"
        if self.s.verbose:
            res.message += "\n" + "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip()
