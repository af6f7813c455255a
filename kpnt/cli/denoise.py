"""``kpnt-denoise``: batch denoise-demosaic raw files into linear DNGs.

Examples::

    kpnt-denoise IMG_0001.CR2 -o out/
    kpnt-denoise ~/photos/2026-11-wedding -o ~/photos/denoised --profiles noiseprofiles.json
    kpnt-denoise 'shots/*.NEF' -o out --jobs 2
    kpnt-denoise shoot/ -o out --devices cuda:0,cuda:1
    kpnt-denoise shot.RAF -o out --weights runs/xt1/weights.safetensors --format exr

This module parses the arguments, calls the batch engine (:mod:`kpnt.batch`)
and reports; how a batch runs (inputs and outputs, supervised decoding,
pipelining, worker processes, failures, signals) is documented there.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from kpnt.batch import FORMATS, RAW_SUFFIXES, StopSignals
from kpnt.batch.decoder import DECODERS
from kpnt.cli._common import ArgError, ArgumentParser, add_common_args, error, finite_float, int_at_least, run_cli, setup_logging
from kpnt.ensemble import VIEWS as ENSEMBLE_VIEWS
from kpnt.errors import KpntError
from kpnt.io.dng import COMPRESSIONS
from kpnt.ops import BACKENDS
from kpnt.ref.mlp import CPU_PRECISIONS

PROG = "kpnt-denoise"
log = logging.getLogger("kpnt")


def parse_noise(spec: str) -> tuple[float, float]:
    """``--noise a,b``: two finite, non-negative numbers, not both zero."""
    try:
        a, b = (float(v) for v in spec.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{spec!r}: expected 'a,b', e.g. 1e-4,1e-6") from None
    if not (math.isfinite(a) and math.isfinite(b) and a >= 0 and b >= 0) or a == b == 0:
        raise argparse.ArgumentTypeError(f"{spec!r}: a and b must be finite, non-negative and not both zero")
    from kpnt.io.validate import ValidationError, check_noise_level

    try:  # plausible too: 1e300 is finite but inf in float32
        check_noise_level(a, b, repr(spec))
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return a, b


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (choices come from the library's registries)."""
    p = ArgumentParser(
        prog=PROG,
        description="Denoise and demosaic camera raws (Bayer or X-Trans) into clean linear DNGs "
        "(camera RGB, white balance not applied, colour matrices and metadata kept) that raw editors open like the original.",
        epilog="The noise level comes from --noise if given, else the --profiles table entry for the camera and ISO, "
        "else the file's DNG NoiseProfile tag, else a blind estimate from the raw itself (--verbose says which). "
        "Raws are decoded in supervised child processes: a decoder crash or hang costs that file only. "
        "A full disk or read-only output stops the batch; Ctrl-C or SIGTERM stops it cleanly (exit 130 / 143). "
        f"Folders are searched for: {' '.join(sorted(RAW_SUFFIXES))}. "
        "Exit code 0 only when every file was denoised or skipped.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", help="raw files, folders (searched recursively) and/or quoted glob patterns such as 'shots/*.NEF'")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder (mirrors the input folders' layout; created if missing)")
    p.add_argument("--format", choices=list(FORMATS), default=next(iter(FORMATS)),
                   help="; ".join(f"{f.name}: {f.help}" for f in FORMATS.values()))
    p.add_argument("--weights", type=Path, help="weights file from kpnt-train (default: the shipped model for each file's sensor)")
    p.add_argument("--profiles", type=Path, help="darktable-format noise profile table to look the camera and ISO up in")
    p.add_argument("--noise", type=parse_noise, help="noise 'a,b' (var = a*x + b, normalised raw units) for every file and channel")
    p.add_argument("--tile", type=int_at_least(0), default=None,
                   help="tile side in photosites (each tile also reads an overlap margin around it, so results are seamless); "
                   "0 for no tiling (default 1024 on a CPU: ~0.15 GB of working set per tile; on a GPU 3072 when the fused kernels "
                   "run the model, else 2048: under 2 GB of GPU memory)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs (default: skip them)")
    p.add_argument("--backend", choices=BACKENDS, default=BACKENDS[0], help="fused CUDA kernels or the PyTorch reference (default auto)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    p.add_argument("--devices", default=None, help="comma-separated devices, one worker process each, e.g. cuda:0,cuda:1 (files are shared out)")
    p.add_argument("-j", "--jobs", type=int_at_least(1), default=1, help="worker processes on --device (default 1: in this process); each gets cores/N torch threads")
    p.add_argument("--threads", type=int_at_least(1), help="torch threads per worker (default: CPU cores / workers)")
    p.add_argument("--io-workers", type=int_at_least(0), default=None, metavar="N",
                   help="pipeline one device in this process: N threads decode files ahead (at most N waiting) and N threads "
                   "write results while the main thread denoises; 0: decode one file ahead, write in turn. "
                   "Default: min(8, cores/2) on a GPU, 0 on a CPU (there the denoising needs the cores). "
                   "Not with --jobs/--devices (their workers decode one file ahead)")
    p.add_argument("--decoder", choices=DECODERS, default=DECODERS[0],
                   help="child (default): LibRaw runs in supervised child processes, so a crash or hang on a damaged file "
                   "costs that file only; inline: in the denoising process (a LibRaw crash ends the batch)")
    p.add_argument("--decode-timeout", type=finite_float(0, low_open=True), default=300.0, metavar="SECONDS",
                   help="a file whose decoding takes longer fails as 'timed out' (--decoder child; default 300)")
    p.add_argument("--strength", type=finite_float(0, 1), default=1.0,
                   help="how much noise to remove: 1 (default) all the model can, 0 none (demosaic only), 0.5 keeps some "
                   "grain; scales the noise level the model is told")
    p.add_argument("--ensemble", type=int, choices=ENSEMBLE_VIEWS, default=1, metavar="N",
                   help="average the model over N rotations and mirrors of each tile (1, 2, 4 or 8; default 1): "
                   "N times the model time for less false colour in fine texture (held-out photos, clean mosaics: "
                   "4 views gain about 0.7 dB sRGB Bayer, 1.0 X-Trans; README 'Self-ensemble')")
    p.add_argument("--no-hot-pixels", dest="hot_pixels", action="store_false",
                   help="keep hot and dead photosites (default: replaced before denoising; --verbose counts them)")
    p.add_argument("--compression", choices=COMPRESSIONS, default="compact",
                   help="DNG pixel data, all read by darktable, RawTherapee and rawpy: compact (default): lossless JPEG "
                   "of 11-bit codes that a LinearizationTable maps to 16-bit levels, not bit-exact: rounding error below "
                   "0.4x (RMS 0.15x) a clean camera's ISO-100 noise; ~1.7-2x the bytes of a lossless 14-bit raw; "
                   "ljpeg: lossless JPEG of the exact 16-bit values, ~3.2x; none: uncompressed, ~5x")
    p.add_argument("--cpu-precision", choices=CPU_PRECISIONS, default="auto",
                   help="precision of the model's matrix products on a CPU: auto (default): bf16 where the CPU has native "
                   "bf16 (AVX512-BF16/AMX; ~3x faster, within 1e-2 of fp32), else fp32")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(p)
    return p


class TileBar:
    """Tile progress of the file in progress (a second bar under the file bar)."""

    def __init__(self, tqdm, disable: bool):
        self._tqdm, self._disable, self._bar = tqdm, disable, None

    def reset_for(self, n: int) -> None:
        self.close()
        if n > 1 and not self._disable:
            self._bar = self._tqdm(total=n, desc="tiles", unit="tile", position=1, leave=False, dynamic_ncols=True)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def main(argv=None, on_result=None) -> int:
    """The command; ``on_result(FileResult)`` is called with every file's
    result (for tools and tests)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    with StopSignals() as signals:      # SIGINT and SIGTERM alike; a second one is ignored
        return run_cli(PROG, lambda: _run(args, on_result, signals), args.verbose)


def _run(args, on_result, signals: StopSignals) -> int:
    try:
        return _batch(args, on_result, signals)
    except KeyboardInterrupt:           # before the batch started (the batch itself reports its own)
        error(PROG, signals.name())
        return signals.exit_code()


def _batch(args, on_result, signals: StopSignals) -> int:
    import torch

    from kpnt.batch import plan_slots, start_decoders
    from kpnt.batch.types import Settings

    if args.io_workers and (args.devices or args.jobs != 1):
        raise ArgError("--io-workers pipelines one device in this process: do not combine it with --jobs or --devices")
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    if args.devices is not None and not devices:
        raise ArgError(f"--devices {args.devices!r}: expected e.g. cuda:0,cuda:1")
    if devices and (args.device or args.jobs != 1):
        raise ArgError("--devices gives one worker per device: do not combine it with --device or --jobs")
    try:
        slots = plan_slots(args.device, args.jobs, devices, args.threads)
    except KpntError as e:          # a device torch does not know or does not have: a bad argument
        raise ArgError(str(e)) from None
    if any(torch.device(d).type == "cpu" for d, _ in slots):
        from kpnt.cpu_memory import keep_freed_memory

        keep_freed_memory()     # before other threads make malloc arenas of their own
    if any(torch.device(d).type == "cuda" for d, _ in slots):
        from kpnt.denoise import configure_cuda_allocator

        configure_cuda_allocator()      # before the first CUDA allocation (inherited by --devices workers)
    settings = Settings(args.format, args.force, args.tile, args.weights, args.profiles, args.noise, args.backend,
                        args.verbose, args.decoder, args.decode_timeout, strength=args.strength,
                        hot_pixels=args.hot_pixels, compression=args.compression, cpu_precision=args.cpu_precision,
                        views=args.ensemble)
    decoders = start_decoders(settings, slots, args.io_workers)     # their start-up overlaps what follows
    try:
        return _batch_with(args, settings, slots, decoders, on_result, signals)
    finally:
        if decoders is not None:
            decoders.close()


def _batch_with(args, settings, slots, decoders, on_result, signals: StopSignals) -> int:
    from tqdm import tqdm

    from kpnt.batch import collect_inputs, count, not_reported, plan_tasks, prepare_output_folder, run_batch
    from kpnt.batch.models import check_weights_file
    from kpnt.batch.types import FileResult
    from kpnt.io.atomic import clean_stale_temp_files

    if args.profiles is not None:
        from kpnt.noise import load_profile_table

        load_profile_table(args.profiles)        # a bad table is one error before any work
    if args.weights is not None:
        check_weights_file(args.weights)         # a bad weights file too (not one error per input)
    prepare_output_folder(args.out)
    found, bad = collect_inputs(args.inputs, out=args.out)
    if not found and not bad:
        raise KpntError(f"no raw files found in {' '.join(args.inputs)}: give raw files, or folders holding "
                        "files with a raw suffix (see --help)")
    tasks, decided = plan_tasks(found, args.out, args.format, args.force)
    stale = clean_stale_temp_files([t.out for t in tasks] + [r.out for r in decided if r.out is not None])
    if stale:
        tqdm.write(f"{PROG}: removed {len(stale)} temp file(s) left by an interrupted earlier run", file=sys.stderr)
    results: list[FileResult] = [FileResult(p, "failed", None, f"{p}: {why}") for p, why in bad] + decided
    for r in results:
        if r.status == "failed":
            tqdm.write(f"{PROG}: error: {r.message}", file=sys.stderr)
    bar = tqdm(total=len(tasks), desc="denoise", unit="file", disable=args.no_progress or len(tasks) < 2, dynamic_ncols=True)
    tile_bar = TileBar(tqdm, args.no_progress)

    def report(res: FileResult) -> None:
        results.append(res)
        if on_result is not None:
            on_result(res)
        tile_bar.close()
        bar.update(1)
        if res.status == "done":
            secs = ", ".join(f"{k} {v:.1f} s" for k, v in res.seconds.items())
            log.debug("%s -> %s: %s; %s", res.src, res.out, res.noise, secs)
        elif res.status == "failed":
            tqdm.write(f"{PROG}: error: {res.message}", file=sys.stderr)     # the one report of this failure

    interrupted = False
    try:
        run_batch(tasks, settings, slots, report, io_workers=args.io_workers, tile_bar=tile_bar, decoders=decoders)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        tile_bar.close()
        bar.close()
    results += not_reported(tasks, results)
    stopped = next((r.fatal for r in results if r.fatal), "")
    return summarise(count(results), args.out, signals.name() if interrupted else None, stopped, sizes=output_sizes(results))


def output_sizes(results) -> tuple[int, int]:
    """(bytes written, bytes of their inputs) over the files denoised now."""
    out = src = 0
    for r in results:
        if r.status == "done" and r.out is not None:
            try:
                out, src = out + r.out.stat().st_size, src + r.src.stat().st_size
            except OSError:
                pass
    return out, src


def summarise(n: dict[str, int], out: Path, interrupted: str | None, stopped: str = "",
              sizes: tuple[int, int] | None = None) -> int:
    """Print the closing line; return the exit code (0 only when nothing
    failed; 130 after SIGINT, 143 after SIGTERM; else 1).  Failures were
    printed as they happened, so they are counted here, not repeated.
    ``sizes``: (output bytes, input bytes) of the files denoised, shown as
    a ratio."""
    line = f"{n['done']} denoised, {n['skipped']} skipped"
    if n["skipped"]:
        line += " (output exists; --force to redo)"
    line += f", {n['failed']} failed"
    left = n["not started"] + n["interrupted"]
    if left:
        line += f", {left} not done ({interrupted or 'stopped after ' + (stopped or 'a fatal error')})"
    if n["done"] and sizes and sizes[1]:
        line += f"; outputs {sizes[0] / 1e6:.1f} MB, {sizes[0] / sizes[1]:.2f}x their raws' {sizes[1] / 1e6:.1f} MB"
    print(line + (f" -> {out}" if n["done"] else ""))
    if interrupted:
        error(PROG, f"{interrupted}: no partial output was left; run the same command again to finish (done files are skipped)")
        return 143 if interrupted == "terminated" else 130
    return 0 if n["failed"] == 0 else 1


if __name__ == "__main__":
    # Through the importable module (python -m kpnt.cli.denoise): worker
    # processes unpickle its functions and classes by that name.
    from kpnt.cli.denoise import main as _main

    sys.exit(_main())
