"""``kpnt-build-dataset``: training pairs from your own raws.

Shoot each scene on a tripod at the base ISO and at a few high ISOs, put the
raws in folders, then::

    kpnt-build-dataset raws/ -o datasets/mycam
    kpnt-train --sensor xtrans --data datasets/mycam -o runs/mycam

Re-running adds what is new (pairs are identified by file hashes) and says
"nothing new to build" otherwise.  See ``datasets/README.md`` for the format.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from kpnt.cli._common import (ArgumentParser, add_common_args, check_output_folder, finite_float, int_at_least, run_cli,
                              setup_logging)
from kpnt.dataset.build import build_dataset
from kpnt.dataset.group import DEFAULT_MAX_GAP, DEFAULT_MIN_SIMILARITY
from kpnt.dataset.motion import DEFAULT_DILATE, DEFAULT_THRESHOLD
from kpnt.dataset.options import BuildOptions

log = logging.getLogger("kpnt")
PROG = "kpnt-build-dataset"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Pair every high-ISO raw with the base-ISO raw of the same scene and camera: align (to the CFA "
        "period), match exposure per channel, mask motion and saturation, fit the high-ISO frame's noise profile, "
        "demosaic the reference with LibRaw as the full-RGB target, and write compact arrays plus manifest.json "
        "that kpnt-train --data reads without rawpy.",
        epilog="Scenes: frames of one camera in capture-time order, split where the time gap exceeds --max-gap or "
        "the content changes (thumbnail correlation below --min-similarity); or one scene per folder with "
        "--scene-dirs. The lowest-ISO frame of a scene is its reference. Files that fail to read are reported and "
        "skipped; the exit status is then 1, as it is when the dataset holds no pair. Re-running builds only pairs "
        "not built yet.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="RAWS",
                   help="folders (searched recursively for raw files by suffix) and/or raw files (any name)")
    p.add_argument("-o", "--out", type=Path,
                   help="dataset folder (default: datasets/<name of the first input>)")
    p.add_argument("--scene-dirs", action="store_true", help="each folder of raws is one scene (no automatic grouping)")
    p.add_argument("--max-gap", type=finite_float(0, low_open=True), default=DEFAULT_MAX_GAP, metavar="S",
                   help=f"start a new scene after S seconds without a frame (default {DEFAULT_MAX_GAP:g})")
    p.add_argument("--min-similarity", type=finite_float(-1, 1), default=DEFAULT_MIN_SIMILARITY, metavar="R",
                   help=f"a frame joins a scene when its thumbnail correlates >= R with one of the scene's frames "
                   f"(default {DEFAULT_MIN_SIMILARITY:g})")
    p.add_argument("--min-usable", type=finite_float(0, 1), default=0.5, metavar="F",
                   help="reject a pair whose usable area (overlap, not saturated, not moving) is below this fraction "
                   "of the frame (default 0.5)")
    p.add_argument("--max-gain", type=finite_float(1, low_open=True), default=8.0, metavar="G",
                   help="reject a pair whose exposure gain is outside 1/G..G (default 8)")
    p.add_argument("--offset", action="store_true", help="also fit a per-channel exposure offset (black-level drift)")
    p.add_argument("--motion-threshold", type=finite_float(1, low_open=True), default=DEFAULT_THRESHOLD, metavar="T",
                   help=f"motion where the smoothed squared residual exceeds T times the noise (default {DEFAULT_THRESHOLD:g})")
    p.add_argument("--motion-dilate", type=int_at_least(0, 256), default=DEFAULT_DILATE, metavar="N",
                   help=f"grow the motion mask by N photosites (default {DEFAULT_DILATE})")
    p.add_argument("--profiles", type=Path,
                   help="darktable-format noise-profile table for the references' own noise (subtracted from the "
                   "pair residual); default: the DNG NoiseProfile tag, else a blind estimate")
    p.add_argument("--raw-scale", type=finite_float(0, low_open=True), default=12.0,
                   help="factor from the --profiles table's scale to raw-photosite variance (default 12, DESIGN.md section 1)")
    p.add_argument("-j", "--jobs", type=int_at_least(1), default=1, help="worker processes (default 1)")
    p.add_argument("--force", action="store_true", help="rebuild pairs already built or rejected, re-read every file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_common_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)

    def body() -> int:
        out = args.out or Path("datasets") / (args.inputs[0].resolve().name or "dataset")
        check_output_folder(out)            # before any raw is read; creates nothing
        if args.profiles is not None and not args.profiles.is_file():
            raise FileNotFoundError(2, "no such noise-profile table", str(args.profiles))
        opts = BuildOptions(
            scene_dirs=args.scene_dirs, max_gap=args.max_gap, min_similarity=args.min_similarity,
            min_usable=args.min_usable, max_gain=args.max_gain, offset=args.offset,
            motion_threshold=args.motion_threshold, motion_dilate=args.motion_dilate,
            profiles=str(args.profiles.resolve()) if args.profiles else None, raw_scale=args.raw_scale,
        )
        report = build_dataset(args.inputs, out, opts, jobs=args.jobs, force=args.force,
                               progress=not args.no_progress, verbose=args.verbose)
        for line in report.lines():
            print(line)
        for line in report.error_lines():
            print(f"{PROG}: {line}", file=sys.stderr)
        return report.exit_code

    return run_cli(PROG, body, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
