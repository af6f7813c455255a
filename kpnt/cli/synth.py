"""``kpnt-synth``: synthetic raw ISO ladders from sRGB photos.

Example::

    kpnt-synth photos/*.jpg -o synth --profiles noiseprofiles.json \\
        --camera "Nikon D750" --isos 100,800,3200,12800 --cfa RGGB \\
        --shift-max 3 --exposure-ev 0.3 --moving-object

writes ``synth/<stem>/<stem>_ISO<iso>.dng`` per ISO and
``synth/<stem>/<stem>_truth.json`` per photo.  A folder stands for every
JPEG, PNG and TIFF under it.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import logging
import sys
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kpnt.batch.inputs import walk_files
from kpnt.cli._common import (ArgError, ArgumentParser, add_common_args, check_output_folder, finite_float, int_at_least,
                              run_cli, setup_logging)
from kpnt.color import find_camera, known_cameras
from kpnt.errors import KpntError
from kpnt.mosaic.cfa import BAYER_PHASES, CFA
from kpnt.noise import DARKTABLE_RAW_SCALE, load_profile_table
from kpnt.synth import SynthError, load_photo, make_ladder
from kpnt.synth.ladder import DEFAULT_START, SENSOR_NAMES
from kpnt.mosaic.kinds import BAYER, XTRANS

log = logging.getLogger("kpnt")
PROG = "kpnt-synth"

#: Suffixes (any case) of the photos a folder given on the command line is searched for.
PHOTO_SUFFIXES = frozenset((".jpg", ".jpeg", ".png", ".tif", ".tiff"))

#: Capture times of consecutive photos' ladders lie this far apart, so that
#: a builder grouping frames by time never merges two scenes.
LADDER_SPACING = _dt.timedelta(hours=1)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Unprocess sRGB photos into a real camera's raw space (its colour matrix, a random as-shot white "
        "balance, white at 0.9 of the range), mosaic them and write one ISO ladder per photo: CFA DNGs of the same "
        "scene at each ISO with that ISO's noise (darktable profile x 12 = raw-photosite scale), plus a JSON "
        "truth sidecar (shifts, exposure gains, noise a/b, object boxes).",
        epilog="Output: OUT/<stem>/<stem>_ISO<iso>.dng and OUT/<stem>/<stem>_truth.json per photo. Existing files "
        "are never replaced without --force. A photo that fails is reported on one line and the batch goes on; "
        "the exit status is 1 if any failed.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("photos", nargs="+", type=Path, metavar="PHOTO",
                   help="8- or 16-bit sRGB photos (JPEG, PNG, TIFF), or folders searched recursively for them")
    p.add_argument("-o", "--out", required=True, type=Path, help="output folder (one subfolder per photo)")
    p.add_argument("--profiles", required=True, type=Path,
                   help="darktable-format noise-profile table (JSON); its a and b are multiplied by --raw-scale")
    p.add_argument("--camera", required=True,
                   help=f"camera 'MAKE MODEL' with a bundled colour matrix and a profile in the table; one of: "
                   f"{', '.join(known_cameras())}")
    p.add_argument("--isos", required=True,
                   help="comma-separated ISOs in capture order, e.g. 100,800,3200,12800; the lowest is the reference")
    p.add_argument("--cfa", required=True, choices=[*BAYER_PHASES, XTRANS.name],
                   help="sensor layout: a Bayer phase (Bayer cameras) or xtrans (Fujifilm X-Trans cameras)")
    p.add_argument("--shift-max", type=int_at_least(0, 64), default=0, metavar="N",
                   help="shift the scene of every non-reference frame by a random integer (dy, dx) in [-N, N] "
                   "photosites, any value (not only multiples of the CFA period); the frame shrinks by N on each "
                   "side (default 0: no shift)")
    p.add_argument("--exposure-ev", type=finite_float(0, 6), default=0.0, metavar="X",
                   help="brighten or darken every non-reference frame by a random offset in [-X, X] EV "
                   "(default 0: same brightness)")
    p.add_argument("--moving-object", action="store_true",
                   help="paste a textured patch at a different place in every frame")
    p.add_argument("--seed", type=int_at_least(0, 2**32 - 1), default=0, help="random seed; each photo's ladder is seeded by it and the "
                   "photo's name (default 0)")
    p.add_argument("--max-size", type=int_at_least(64), metavar="N",
                   help="downscale photos so that the longer side is at most N pixels (default: full size)")
    p.add_argument("--raw-scale", type=finite_float(0, low_open=True), default=DARKTABLE_RAW_SCALE,
                   help=f"factor from the table's (darktable) noise scale to raw-photosite variance "
                   f"(default {DARKTABLE_RAW_SCALE:g}, DESIGN.md section 1)")
    p.add_argument("--noise-tag", action="store_true",
                   help="also write each frame's noise profile into the DNG NoiseProfile tag (default: no tag)")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    add_common_args(p)
    return p


def parse_isos(spec: str) -> list[int]:
    """'100,800,3200' -> [100, 800, 3200] (distinct positive integers)."""
    try:
        isos = [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise ArgError(f"--isos must be comma-separated integers like 100,800,3200, got {spec!r}") from None
    if not isos or any(v <= 0 for v in isos) or len(set(isos)) != len(isos):
        raise ArgError(f"--isos must list distinct positive ISOs like 100,800,3200, got {spec!r}")
    return isos


def check_camera(name: str, cfa_name: str) -> dict:
    """Camera info of ``--camera``; its sensor kind must fit ``--cfa``."""
    try:
        info = find_camera(name)
    except KpntError as exc:  # an unknown --camera: a command-line error
        raise ArgError(str(exc)) from None
    want = XTRANS.name if cfa_name == XTRANS.name else BAYER.name
    if info["sensor"] != want:
        fits = [n for n in known_cameras() if find_camera(n)["sensor"] == want]
        raise ArgError(
            f"--cfa {cfa_name} needs a camera with a {SENSOR_NAMES[want]} sensor, but {info['make']} {info['model']} "
            f"has a {SENSOR_NAMES[info['sensor']]} one: use one of {', '.join(fits)}"
        )
    return info


def photo_seed(seed: int, stem: str) -> int:
    """Seed of one photo's ladder from the run seed and the photo's name, so
    that adding or removing photos leaves the others' ladders unchanged."""
    return int(np.random.SeedSequence([seed, zlib.crc32(stem.encode())]).generate_state(1)[0])


def frame_offsets(rng: np.random.Generator, isos: list[int], shift_max: int, ev_max: float):
    """Per-frame shifts and EV offsets; the reference (lowest ISO) gets none."""
    ref = isos.index(min(isos))
    shifts, evs = [], []
    for k in range(len(isos)):
        if k == ref:
            shifts.append((0, 0))
            evs.append(0.0)
        else:
            shifts.append(tuple(int(v) for v in rng.integers(-shift_max, shift_max + 1, 2)))
            evs.append(float(rng.uniform(-ev_max, ev_max)) if ev_max > 0 else 0.0)
    return shifts, evs


def expand_photos(items, out: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The photos ``items`` name: files as given (whatever their suffix: :func:`load_photo` says if OpenCV cannot
    read one), and for each folder the files under it with a :data:`PHOTO_SUFFIXES` suffix, sorted, leaving out
    hidden files and folders and the output folder ``out`` (its ladders may lie inside the photo folder).

    Returns:
        (photos, problems): ``problems`` lists folders without a photo, and unreadable subfolders, as
        ``(path, reason)``.
    """
    exclude = out.resolve()
    photos, problems = [], []
    for item in items:
        if not item.is_dir():
            photos.append(item)
            continue
        found = walk_files(item, problems, exclude, PHOTO_SUFFIXES, "photo", skip_hidden=True)
        if found:
            photos += sorted(found)
        else:
            problems.append((item, "no JPEG, PNG or TIFF photo in this folder"))
    return photos, problems


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    return run_cli(PROG, lambda: _run(args), args.verbose)


def _run(args) -> int:
    # single values are range-checked by their argparse types
    isos = parse_isos(args.isos)
    info = check_camera(args.camera, args.cfa)
    cfa = CFA.xtrans() if args.cfa == XTRANS.name else CFA.bayer(args.cfa)
    check_output_folder(args.out)           # before any photo is read; creates nothing
    table = load_profile_table(args.profiles)
    for iso in isos:   # fail once, before the batch, on a camera missing from the table
        table.lookup(info["make"], info["model"], iso, raw_scale=args.raw_scale)

    photos, problems = expand_photos(args.photos, args.out)
    for item, reason in problems:
        tqdm.write(f"{PROG}: error: {item}: {reason}", file=sys.stderr)
    n_ok, n_files, failed = 0, 0, len(problems)
    stems: dict[str, Path] = {}
    bar = tqdm(photos, desc=PROG, unit="photo", disable=None, file=sys.stderr)
    for k, photo_path in enumerate(bar):
        stem = photo_path.stem
        try:
            if stem in stems:
                raise SynthError(f"{photo_path}: its name stem {stem!r} is already used by {stems[stem]}: rename one")
            stems[stem] = photo_path
            photo = load_photo(photo_path, args.max_size)
            rng = np.random.default_rng(photo_seed(args.seed, stem))
            shifts, evs = frame_offsets(rng, isos, args.shift_max, args.exposure_ev)
            written = make_ladder(
                photo, cfa, info["make"], info["model"], table, isos, args.out / stem, stem,
                shifts=shifts, exposure_ev=evs, moving_object=args.moving_object,
                seed=int(rng.integers(0, 2**31 - 1)), raw_scale=args.raw_scale, noise_tag=args.noise_tag,
                start_time=DEFAULT_START + k * LADDER_SPACING, source=str(photo_path), overwrite=args.force,
            )
        except (KpntError, OSError) as exc:
            failed += 1
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if str(photo_path) not in msg:
                msg = f"{photo_path}: {msg}"
            tqdm.write(f"{PROG}: error: {msg}", file=sys.stderr)
            if args.verbose:
                log.exception("traceback")
            continue
        n_ok += 1
        n_files += len(written)
        log.debug("%s: %d frames in %s", photo_path, len(written), args.out / stem)
    bar.close()
    log.info("%s: wrote %d ladder(s), %d DNG(s) (%s %s, ISO %s, %s) to %s; %d failed (photos or folders)",
             PROG, n_ok, n_files, info["make"], info["model"], ",".join(map(str, isos)), cfa.name if cfa.sensor_kind is
             BAYER else XTRANS.label, args.out, failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
