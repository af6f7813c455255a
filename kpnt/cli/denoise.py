"""``kpnt-denoise``: batch denoise-demosaic raw files into linear DNGs.

Examples::

    kpnt-denoise IMG_0001.CR2 -o out/
    kpnt-denoise ~/photos/2026-11-wedding -o ~/photos/denoised --profiles noiseprofiles.json
    kpnt-denoise shot.RAF -o out --weights runs/xt1/weights.safetensors --format tiff
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import resources
from pathlib import Path

import numpy as np

from kpnt.cli._common import add_common_args, error, run_cli, setup_logging
from kpnt.errors import KpntError, WeightsError

log = logging.getLogger("kpnt")
PROG = "kpnt-denoise"

#: Suffixes of files collected from folders (files named explicitly are
#: always tried, whatever their suffix).
RAW_SUFFIXES = {
    ".3fr", ".ari", ".arw", ".bay", ".cr2", ".cr3", ".crw", ".dcr", ".dng", ".erf", ".fff", ".iiq", ".k25",
    ".kdc", ".mef", ".mos", ".mrw", ".nef", ".nrw", ".orf", ".pef", ".raf", ".raw", ".rw2", ".rwl", ".sr2",
    ".srf", ".srw", ".x3f",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Denoise and demosaic camera raws (Bayer or X-Trans) into clean linear DNGs "
        "(camera RGB, white balance not applied, colour matrices and metadata kept) that raw editors open like the original.",
        epilog="The noise level comes from --noise if given, else the --profiles table entry for the camera and ISO, "
        "else the file's DNG NoiseProfile tag, else a blind estimate from the raw itself (--verbose says which). "
        "Exit code 0 only when every file was denoised or skipped.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", type=Path, help="raw files and/or folders (searched recursively)")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder (mirrors the input folders' layout)")
    p.add_argument("--format", choices=["dng", "tiff", "tiff-float"], default="dng", help="dng: LinearRaw DNG (default); tiff: 16-bit TIFF; tiff-float: 32-bit float TIFF keeping values above white")
    p.add_argument("--weights", type=Path, help="weights file from kpnt-train (default: the shipped model for each file's sensor)")
    p.add_argument("--profiles", type=Path, help="darktable-format noise profile table to look the camera and ISO up in")
    p.add_argument("--noise", help="noise 'a,b' (var = a*x + b, normalised raw units) for every file and channel")
    p.add_argument("--tile", type=int, default=None, help="tile side in photosites (each tile also reads an overlap margin around it, so results are seamless); 0 for no tiling (default 768)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs (default: skip them)")
    p.add_argument("--backend", choices=["auto", "torch", "cuda"], default="auto", help="fused CUDA kernels or the PyTorch reference (default auto)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(p)
    return p


def collect_inputs(paths: list[Path]) -> tuple[list[tuple[Path, Path]], list[tuple[Path, str]]]:
    """(file, output-relative-stem) pairs, plus (path, reason) for unusable inputs.

    Files named directly keep their stem; files found in a folder keep their
    path relative to that folder, so the output tree mirrors the input tree.
    """
    found, bad = [], []
    for p in paths:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.suffix.lower() in RAW_SUFFIXES:
                    found.append((f, f.relative_to(p).with_suffix("")))
        elif p.is_file():
            found.append((p, Path(p.stem)))
        elif p.exists():
            bad.append((p, "not a regular file or folder"))
        else:
            bad.append((p, "no such file or folder"))
    return found, bad


def parse_noise(spec: str | None) -> tuple[float, float] | None:
    if spec is None:
        return None
    try:
        a, b = (float(v) for v in spec.split(","))
    except ValueError:
        raise KpntError(f"--noise {spec!r}: expected 'a,b', e.g. 1e-4,1e-6") from None
    if not (a >= 0 and b >= 0) or a == b == 0:
        raise KpntError(f"--noise {spec!r}: a and b must be non-negative and not both zero")
    return a, b


class ModelCache:
    """Loads each sensor's weights once (the user's file or the shipped one)."""

    def __init__(self, weights: Path | None, device, backend: str):
        self.weights, self.device, self.backend = weights, device, backend
        self.models = {}

    def get(self, sensor: str):
        if sensor in self.models:
            return self.models[sensor]
        from kpnt.weights_io import load_weights

        if self.weights is not None:
            path = self.weights
        else:
            ref = resources.files("kpnt") / "weights" / f"{sensor}.safetensors"
            path = Path(str(ref))
            if not path.exists():
                raise WeightsError(f"no shipped {sensor} weights in this kpnt install: train them with kpnt-train and pass --weights FILE")
        model, meta = load_weights(path, sensor=sensor, device=self.device)
        model.backend = self.backend
        model.eval()
        self.models[sensor] = model
        log.debug("loaded %s weights from %s", sensor, path)
        return model


def write_output(path: Path, rgb: np.ndarray, raw, fmt: str, force: bool) -> None:
    """Write one result atomically in the chosen format."""
    from kpnt.denoise import to_uint16
    from kpnt.io.dng import write_linear_dng
    from kpnt.io.tiff import write_tiff

    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "dng":
        write_linear_dng(path, to_uint16(rgb), raw.meta, overwrite=force)
    elif fmt == "tiff":
        write_tiff(path, to_uint16(rgb), overwrite=force)
    else:
        write_tiff(path, rgb.astype(np.float32), overwrite=force)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        import torch
        from tqdm import tqdm

        from kpnt.denoise import DEFAULT_TILE, choose_noise, denoise_raw
        from kpnt.io.raw import read_raw

        if args.threads:
            torch.set_num_threads(args.threads)
        given = parse_noise(args.noise)
        table = None
        if args.profiles is not None:
            from kpnt.noise import load_profile_table

            table = load_profile_table(args.profiles)
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        tile = args.tile if args.tile is not None else DEFAULT_TILE
        models = ModelCache(args.weights, device, args.backend)
        files, failed = collect_inputs(args.inputs)
        suffix = ".dng" if args.format == "dng" else ".tif"
        done, skipped = [], []
        seen_outputs = {}
        inputs_resolved = {f.resolve() for f, _ in files}
        bar = tqdm(files, desc="denoise", unit="file", disable=args.no_progress or len(files) < 2, dynamic_ncols=True)
        for src, rel in bar:
            out = args.out / rel.with_suffix(suffix)
            try:
                if out.resolve() in inputs_resolved:
                    raise KpntError(f"output {out} would overwrite an input: choose another --out")
                if out in seen_outputs:
                    raise KpntError(f"output {out} is also the output of {seen_outputs[out]}: give the inputs distinct names or folders")
                seen_outputs[out] = src
                if out.exists() and not args.force:
                    skipped.append(src)
                    log.debug("%s: %s exists, skipped (use --force)", src, out)
                    continue
                raw = read_raw(src)
                model = models.get(raw.cfa.kind)
                noise = choose_noise(raw, table, given)
                log.debug("%s: noise from %s: a=%s b=%s", src, noise.source, np.array2string(noise.profile[0], precision=3), np.array2string(noise.profile[1], precision=3))
                rgb = denoise_raw(model, raw, noise, tile=tile, device=device)
                write_output(out, rgb, raw, args.format, args.force)
                done.append(src)
            except KeyboardInterrupt:
                raise
            except (KpntError, OSError) as exc:
                msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if str(src) not in msg:
                    msg = f"{src}: {msg}"
                failed.append((src, msg))
                tqdm.write(f"{PROG}: error: {msg}", file=sys.stderr)
                if args.verbose:
                    log.exception("details")
        print(f"{len(done)} denoised, {len(skipped)} skipped (output exists; --force to redo), {len(failed)} failed" + (f" -> {args.out}" if done else ""))
        for src, msg in failed:
            error(PROG, msg if str(src) in msg else f"{src}: {msg}")
        return 0 if not failed else 1

    return run_cli(PROG, body, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
