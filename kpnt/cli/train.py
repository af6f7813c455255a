"""``kpnt-train``: train the colour KPN and the mosaic front level jointly.

Examples::

    # synthetic pairs from clean photos and a camera's noise profile
    kpnt-train --sensor bayer --clean photos/train --val photos/val \\
        --profiles noiseprofiles.json --camera "Canon EOS 5D Mark III" \\
        --isos 1600-6400 --minutes 30 -o runs/5d3

    # pairs built by kpnt-build-dataset from your own raws
    kpnt-train --sensor xtrans --data datasets/xt1 -o runs/xt1

    # data-parallel on two GPUs (one process each, NCCL); the same as
    # torchrun --standalone --nproc-per-node 2 -m kpnt.train ... --devices cuda:0,cuda:1
    kpnt-train --devices cuda:0,cuda:1 --sensor bayer --data datasets/d750 -o runs/d750
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch

from kpnt.cli._common import (ArgError, ArgumentParser, add_common_args, check_output_folder, finite_float, int_at_least, run_cli,
                              setup_logging)
from kpnt.errors import KpntError
from kpnt.mosaic.kinds import BAYER, RGB, SENSORS, period_of
# The choices of the options below come from the library's registries.
from kpnt.ops.dispatch import BACKENDS
from kpnt.ref.apply import APPLY_MODES
from kpnt.ref.taps import COLOUR_TAP_SETS
from kpnt.spec import FRONT_KERNELS, FRONT_SHARINGS
from kpnt.train.distributed import GRAD_SYNCS
from kpnt.train.loss import LOSSES, SATBIAS_WEIGHT
from kpnt.train.real import REAL_LOSSES
from kpnt.train.synthesis import SynthConfig
from kpnt.noise.trained import trained_noise_range
from kpnt.weights_io import NOISE_RANGE_KEY

log = logging.getLogger("kpnt")
PROG = "kpnt-train"
#: Most warm-up steps --init gets by default.
INIT_WARMUP = 500


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Train kpnt's four-level colour KPN and its mosaic front level (all weight sets in one step).",
        epilog="Outputs in OUT: weights.safetensors (the last step's; load with kpnt-denoise --weights), "
        "best.safetensors (the weights at the best validation PSNR so far, with that step in their provenance), "
        "checkpoint.pt (for --resume), curve.png (loss and validation PSNR), history.json. The architecture options "
        "default to the shipped model of "
        "--sensor (its weights file's metadata), so training on your own camera gives that architecture.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sensor", required=True, choices=list(SENSORS), help="sensor layout the weights are for")
    p.add_argument("-o", "--out", required=True, type=Path, help="run folder for weights, checkpoints and curves")
    data = p.add_argument_group("data (--clean with --profiles, --data, or both: real pairs teach denoising, synthetic pairs demosaicing)")
    data.add_argument("--clean", type=Path, help="folder of clean photos (sRGB JPEG/PNG) to synthesise noisy raws from; "
                      "photos that do not decode or are smaller than a --tile after --downscale are skipped with a warning")
    data.add_argument("--val", type=Path, help="folder of clean photos for validation (default: a held-out tenth of --clean)")
    data.add_argument("--profiles", type=Path, help="darktable-format noise profile table (JSON); its a, b are multiplied by 12 to reach raw-photosite scale")
    data.add_argument("--camera", action="append", default=[], help="camera 'MAKE MODEL' from the table (repeatable), or 'all' for every camera of the table "
                      "(noise profiles do not depend on the CFA; cameras without a bundled colour matrix borrow one of the sensor kind's); "
                      "default: the cameras of the sensor kind that have a bundled colour matrix")
    data.add_argument("--holdout", action="append", default=[], help="camera 'MAKE MODEL' kept out of training and used for validation only (repeatable)")
    data.add_argument("--isos", default="1600-6400", help="ISO range 'LO-HI' or list 'A,B,C' of profiles to train at (default 1600-6400; "
                      "'100-409600' takes every profiled ISO)")
    data.add_argument("--val-isos", help="ISOs of the held-out cameras' validation noise, as --isos (default: --isos)")
    data.add_argument("--data", type=Path, help="dataset folder written by kpnt-build-dataset")
    data.add_argument("--real-loss", choices=list(REAL_LOSSES), default="mosaic",
                      help="real pairs: compare only at the photosites the ISO-100 reference measured (mosaic, default), or "
                      "with LibRaw's demosaic of it (demosaiced: caps demosaicing at LibRaw's quality)")
    data.add_argument("--real-fraction", type=float, default=0.5,
                      help="with both --clean and --data: share of steps drawn from the real pairs (default 0.5)")
    data.add_argument("--downscale", type=int_at_least(1, 16), default=2, help="downscale clean photos by this factor first (removes JPEG artefacts; default 2)")
    data.add_argument("--val-images", type=int_at_least(1), default=16, help="number of validation tiles (default 16)")
    share = finite_float(0, 1)
    data.add_argument("--clean-share", type=share, help="share of synthetic tiles with no noise at all (default "
                      f"{SynthConfig.zero_noise_prob}): raise it to spend more of the training on demosaicing")
    data.add_argument("--low-noise-share", type=share, help="share of synthetic tiles whose noise is scaled down by up to "
                      f"10^4 (ISO 100 and below; default {SynthConfig.low_noise_prob})")
    data.add_argument("--blur-share", type=share, help="share of synthetic tiles given optical blur before mosaicing "
                      f"(default {SynthConfig.blur_prob})")
    data.add_argument("--zoom-out", type=finite_float(1), default=1.0,
                      help="shrink a share of the training tiles by a random factor in [1, ZOOM_OUT] before mosaicing "
                      "(cut larger, antialiased, linear light): more of the photos' detail near the sampling limit, where "
                      "demosaicing errs (default 1: off)")
    data.add_argument("--zoom-share", type=share, default=0.5, help="share of tiles --zoom-out shrinks (default 0.5)")
    data.add_argument("--hard-share", type=share, default=0.0,
                      help="share of synthetic tiles drawn near the hardest tiles for the starting model (hard-example "
                      "mining, kpnt.train.mining; needs --init or --resume; default 0: none)")
    data.add_argument("--hard-candidates", type=int_at_least(1), default=8192,
                      help="random tiles scored on their clean mosaics to find the hard ones (default 8192)")
    data.add_argument("--hard-keep", type=finite_float(0, 1, low_open=True), default=0.1,
                      help="share of the scored tiles kept as hard ones, the worst first (default 0.1)")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--steps", type=int_at_least(1), default=2000, help="optimisation steps (default 2000)")
    opt.add_argument("--minutes", type=finite_float(0, low_open=True), help="stop after this many minutes even if --steps is not reached")
    opt.add_argument("--anneal-by-time", action="store_true",
                     help="with --minutes: decay the learning rate over the time budget as well as over --steps, whichever "
                     "runs out first, so a run that --minutes stops still ends at the low learning rate (set --steps above "
                     "what the budget can reach; the steps then depend on the machine's speed)")
    opt.add_argument("--batch", type=int_at_least(1), default=8, help="tiles per step and shard (default 8; the global batch is --shards times this)")
    opt.add_argument("--tile", type=int_at_least(1), default=96,
                     help="tile side in photosites, rounded down to the CFA period; at least 18 (xtrans 24, bayer with --data 28: "
                     "validation tiles must keep photosites inside their 6-photosite PSNR border) (default 96)")
    opt.add_argument("--lr", type=finite_float(0, 1, low_open=True), default=1e-3, help="Adam learning rate (default 1e-3, cosine-decayed to 10%%)")
    opt.add_argument("--warmup", type=int_at_least(0), help="steps of linear learning-rate warm-up (default 0, with --init "
                     f"a tenth of --steps up to {INIT_WARMUP})")
    opt.add_argument("--grad-clip", type=finite_float(0), default=1.0, help="gradient-norm clipping, 0 to disable (default 1.0)")
    opt.add_argument("--weight-decay", type=finite_float(0, 1), default=0.0, help="L2 weight decay (default 0)")
    opt.add_argument("--adam-eps", type=finite_float(0, 1, low_open=True), default=1e-8,
                     help="Adam's epsilon (default 1e-8). kpnt's gradients are ~1e-7, so the default barely limits the "
                          "step of a weight whose gradients were tiny for long; a larger eps (e.g. 1e-7 to 1e-6, not "
                          "yet measured) caps such steps and slows every weight with small gradients")
    opt.add_argument("--loss", choices=list(LOSSES), default="smape", help="loss on the full-res output (default smape; "
                     "smape-lowpass adds the error of 8x8 local means, *-satbias the bias of strongly saturated pixels)")
    opt.add_argument("--satbias-weight", type=finite_float(0), default=SATBIAS_WEIGHT,
                     help=f"weight of the saturated-bias term of the *-satbias losses (default {SATBIAS_WEIGHT:g})")
    opt.add_argument("--guide-dtype", choices=["float32", "bfloat16"], default="float32",
                     help="precision of the guide while training on a GPU: with bfloat16 the shipped Bayer model's "
                          "graphed step took 8.2 ms (6.9x the reference step) against the float32 guide's 14.4 ms (3.9x) on an H100 "
                          "(docs/KERNELS.md, session 35); "
                          "default float32, as the shipped weights were trained. Inference runs the guide in float16 "
                          "on a GPU either way")
    opt.add_argument("--seed", type=int_at_least(0, 2**63 - 1), default=0, help="random seed of data and initialisation (default 0)")
    opt.add_argument("--val-every", type=int_at_least(1), default=100, help="validate every N steps (default 100)")
    opt.add_argument("--ckpt-every", type=int_at_least(1), default=200, help="checkpoint every N steps (default 200)")
    start = opt.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    start.add_argument("--restart", action="store_true", help="start a new run in OUT although it holds one (e.g. its checkpoint is "
                       "damaged): the old checkpoint is kept as checkpoint.pt.old, the run's other files are replaced")
    opt.add_argument("--init", type=Path, metavar="WEIGHTS",
                     help="start from a weights file (e.g. kpnt/weights/bayer.safetensors) instead of random weights: "
                     "fine-tuning on your own data; the architecture is the file's, the optimiser and schedule start "
                     "afresh (with --resume the checkpoint carries on and WEIGHTS is not read again)")
    opt.add_argument("--revive-dead-guide", action="store_true",
                     help="with --init: before training, give fresh small weights to the guide channels that no tile of a "
                     "probe draw activates (dead ReLUs get no gradient, so training alone never brings them back; the "
                     "shipped guides had lost most of theirs); logged and recorded in the weights' provenance")
    opt.add_argument("--threads", type=int_at_least(1), help="CPU threads for torch (default: torch's choice; with several CPU processes a share of the cores each)")
    par = p.add_argument_group("devices and data parallelism (README: 'Several GPUs')")
    par.add_argument("--devices", default="auto", help="device list, one process per entry: 'cuda:0,cuda:1' (NCCL), 'cpu', or 'auto' = cuda:0 when CUDA is usable, else the CPU (default auto)")
    par.add_argument("--nproc", type=int_at_least(1), help="number of CPU processes (gloo), e.g. to test data parallelism without GPUs")
    par.add_argument("--shards", type=int_at_least(1), help="shards of the global batch, --batch tiles each, each drawn from its own seed (default: one per process; on --resume the run's number)")
    par.add_argument("--grad-sync", choices=list(GRAD_SYNCS), default="ddp", help="average gradients with DistributedDataParallel (default), or one all-reduce after the backward pass")
    arch = p.add_argument_group("architecture (every default: the shipped model of --sensor, read from its weights file; "
                                "rgb, which has none: kpnt.model.ModelConfig's)")
    arch.add_argument("--apply", choices=list(APPLY_MODES), default=None, help="kernel normalisation")
    arch.add_argument("--no-noise-input", action="store_true", help="do not feed the noise level to the MLPs (ablation)")
    arch.add_argument("--width", type=int_at_least(1), help="colour MLP width, a multiple of 16 (default: the shipped model's)")
    arch.add_argument("--colour-taps", choices=list(COLOUR_TAP_SETS), default=None,
                      help="tap set of the colour levels (diamond15; square25, the full 5x5, exists for ablations "
                      "and runs on the PyTorch reference)")
    arch.add_argument("--front-sharing", choices=list(FRONT_SHARINGS), default=None,
                      help="front weight sets: one per site class in canonical orientation (symmetry), or none: one "
                      "per CFA site position without re-orientation (for ablations; runs on the PyTorch reference)")
    arch.add_argument("--front-kernels", choices=list(FRONT_KERNELS), default=None,
                      help="front level kernels: one shared by the three channels (shared, DESIGN.md 3), or "
                      "per_channel: one per output channel (fused at front width 128, the shipped models'; other "
                      "widths run on the PyTorch reference)")
    arch.add_argument("--front-width", type=int_at_least(1), help="front MLP width, a multiple of 16 (default: the shipped model's)")
    arch.add_argument("--front-radius", type=int_at_least(1, 8), help="front kernel radius: (2r+1)^2 taps (default: the shipped model's; the fused kernels run 2 only)")
    arch.add_argument("--guide-layers", type=int_at_least(0, 64), help="3x3 convolution layers of the guide, the convolutional demosaicer at CFA-period "
                      "resolution that sharpens the front level's estimate (0: none; see kpnt.ref.guide.py)")
    arch.add_argument("--guide-width", type=int_at_least(1), help="channels of the guide's layers; with --init of a file with "
                      "projection blocks, a larger width (or --guide-layers) grows its guide, starting as the same function")
    arch.add_argument("--guide-skip", action=argparse.BooleanOptionalAction, default=None,
                      help="residual hidden layers in the guide (a deep guide trains only with them)")
    arch.add_argument("--guide-proj", action=argparse.BooleanOptionalAction, default=None,
                      help="projection blocks in the residual guide, relu(z + P relu(conv(z))) with a 1x1 P: channels "
                      "are silenced through P instead of dying (needs --guide-skip); with --init of a file without it "
                      "the guide is converted exactly (P = identity), e.g. with --revive-dead-guide")
    arch.add_argument("--guide-pack", type=int_at_least(1, 4),
                      help="CFA repeats per packed guide position along each axis: 1 runs the guide at 1/period "
                      "resolution, 2 at half that (a quarter of the cost per layer, twice the reach)")
    p.add_argument("--backend", choices=list(BACKENDS), default="auto", help="fused CUDA kernels or the PyTorch reference (default auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(p)
    return p


def parse_isos(spec: str, available: list[int] | None, flag: str = "--isos") -> list[int]:
    """ISOs of the table within 'LO-HI', or the listed 'A,B,C' (``available``
    None: check the syntax only)."""
    try:
        if "-" in spec:
            lo, hi = (int(v) for v in spec.split("-", 1))
            if not 0 < lo <= hi:
                raise ValueError
            chosen = [i for i in available if lo <= i <= hi] if available is not None else [lo]
        else:
            chosen = [int(v) for v in spec.split(",") if v.strip()]
            if any(v <= 0 for v in chosen):
                raise ValueError
    except ValueError:
        raise ArgError(f"{flag} {spec!r}: expected 'LO-HI' (0 < LO <= HI) or a comma-separated list of positive ISOs") from None
    if not chosen:
        raise ArgError(f"{flag} {spec!r} selects none of the profiled ISOs {available}")
    return chosen


def _select_cameras(args, table, sensor: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(make, model) of the table's cameras that ``--camera`` names: listed
    ones, 'all' (every camera of the table: noise profiles do not depend on
    the CFA), or by default the cameras of the sensor kind that have a
    bundled colour matrix."""
    from kpnt.color import find_camera, known_cameras

    by_name = {f"{mk} {md}".lower(): (mk, md) for mk, md in table.cameras()}

    def named(name: str, flag: str) -> tuple[str, str]:
        hit = by_name.get(name.lower())
        if hit is None:
            close = [f"{mk} {md}" for mk, md in table.cameras() if name.lower().split()[-1] in md.lower()][:3]
            raise ArgError(f"{flag} {name!r} is not in {args.profiles}" + (f"; close: {', '.join(close)}" if close else ""))
        return hit

    held = [named(n, "--holdout") for n in args.holdout]
    if [c.lower() for c in args.camera] == ["all"]:
        wanted = table.cameras()
    elif args.camera:
        wanted = [named(n, "--camera") for n in args.camera]
    else:
        kind = BAYER.name if sensor == RGB else sensor
        infos = [find_camera(name) for name in known_cameras()]
        wanted = [(i["make"], i["model"]) for i in infos if i["sensor"] == kind and (i["make"], i["model"]) in set(table.cameras())]
    wanted = [c for c in wanted if c not in held]
    if not wanted:
        raise ArgError("no camera left to train on after --holdout: name others with --camera")
    return wanted, held


def _camera_models(args, table, sensor: str, cams: list[tuple[str, str]], isos_spec: str, donors: list[dict]):
    """CameraModels for synthesis: each camera's colour matrix (or a donor's)
    and its noise profiles at the ISOs ``isos_spec`` selects."""
    from kpnt.color import camera_matrix
    from kpnt.train.synthesis import CameraModel

    out, borrowed = [], []
    for k, (mk, md) in enumerate(cams):
        try:
            xyz_to_cam = camera_matrix(mk, md)
        except KpntError:
            # Colour matrices are bundled for a few bodies only; any
            # realistic matrix serves the unprocessing, so cameras without
            # one borrow the sensor kind's matrices in turn (colour variety).
            donor = donors[k % len(donors)]
            borrowed.append(f"{mk} {md} <- {donor['make']} {donor['model']}")
            xyz_to_cam = donor["xyz_to_cam"]
        isos = parse_isos(isos_spec, table.isos(mk, md))
        noise = np.stack([table.lookup(mk, md, iso).as_array() for iso in isos])
        out.append(CameraModel(name=f"{mk} {md}", xyz_to_cam=xyz_to_cam, noise=noise))
        log.debug("camera %s %s at ISO %s", mk, md, ", ".join(map(str, isos)))
    if borrowed:
        log.info("%d camera(s) without a bundled colour matrix borrow one: %s", len(borrowed),
                 "; ".join(borrowed[:4]) + (" ..." if len(borrowed) > 4 else ""))
    return out


def _cameras(args, sensor: str):
    """Training and validation CameraModels.

    Training: the cameras ``--camera`` selects minus ``--holdout``, at the
    ISOs of ``--isos``.  Validation: the held-out cameras at ``--val-isos``
    when there are any (so validation measures cameras the model never saw),
    else the training cameras."""
    from kpnt.color import find_camera, known_cameras
    from kpnt.noise import load_profile_table

    table = load_profile_table(args.profiles)  # main() made sure there is one
    wanted, held = _select_cameras(args, table, sensor)
    kind = BAYER.name if sensor == RGB else sensor
    held_set = {f"{mk} {md}".lower() for mk, md in held}
    donors = [i for i in map(find_camera, known_cameras()) if i["sensor"] == kind and f"{i['make']} {i['model']}".lower() not in held_set]
    if not donors:
        raise KpntError(f"every bundled {kind} colour matrix belongs to a held-out camera: hold out fewer")
    cams = _camera_models(args, table, sensor, wanted, args.isos, donors)
    isos = sorted({int(round(v)) for c in wanted for v in parse_isos(args.isos, table.isos(*c))})
    log.info("training on %d camera(s) (%s), ISO %d-%d", len(cams),
             ", ".join(c.name for c in cams[:6]) + (", ..." if len(cams) > 6 else ""), isos[0], isos[-1])
    if held:
        # Validate on the held-out cameras of this sensor kind when there are
        # any (the others are held out for the other sensor's model).
        def kind_of(mk, md):
            try:
                return find_camera(f"{mk} {md}")["sensor"]
            except KpntError:
                return None
        val_held = [c for c in held if kind_of(*c) == kind] or held
        val_cams = _camera_models(args, table, sensor, val_held, args.val_isos or args.isos, donors)
        log.info("validating on held-out camera(s) %s", ", ".join(c.name for c in val_cams))
    else:
        val_cams = cams
    return cams, val_cams


def _load_photos(folder: Path, flag: str, downscale: int, tile: int, limit: int | None = None):
    """The photos of a ``--clean``/``--val`` folder that decode and hold a
    training tile; the others are skipped with one warning that names them
    (a damaged or tiny file among thousands must not stop a run, nor a
    tiny one become a validation tile too small to score).

    Raises:
        KpntError: no photo of the folder is usable.
    """
    from kpnt.train.photos import PhotoSource, list_photos, load_linear_photo

    photos, names, skipped = [], [], []
    for f in list_photos(folder):
        if limit is not None and len(photos) >= limit:
            break
        try:
            img = load_linear_photo(f, downscale)
        except KpntError:
            skipped.append(f"{f.name} (cannot decode)")
            continue
        if min(img.shape[1:]) < tile:
            skipped.append(f"{f.name} ({img.shape[2]}x{img.shape[1]} after --downscale {downscale})")
            continue
        photos.append(img)
        names.append(f.name)
    if skipped:
        log.warning("%s: %d photo(s) skipped, damaged or smaller than a %d-pixel tile: %s%s", folder, len(skipped), tile,
                    ", ".join(skipped[:3]), ", ..." if len(skipped) > 3 else "")
    if not photos:
        raise KpntError(f"{folder}: none of its {len(skipped)} photo(s) decodes to at least {tile}x{tile} pixels after "
                        f"--downscale {downscale}: pass {flag} with larger photos, or a smaller --tile or --downscale")
    return PhotoSource(photos, names)


def _synthetic_sources(args, sensor: str, tile: int, device=None):
    from kpnt.train.photos import PhotoSource
    from kpnt.train.synthesis import random_cfa, synthesize

    cams, val_cams = _cameras(args, sensor)
    train_photos = _load_photos(args.clean, "--clean", args.downscale, tile)
    train_photos.zoom_out, train_photos.zoom_share = args.zoom_out, args.zoom_share
    if device is not None and torch.device(device).type == "cuda":
        # Synthesis on the GPU: the CPU would be the slower half of a step.
        train_photos = train_photos.to(device)
    if args.val is not None:
        val_photos = _load_photos(args.val, "--val", args.downscale, tile, limit=args.val_images)
    else:
        n_val = max(1, len(train_photos.photos) // 10)
        val_photos = PhotoSource(train_photos.photos[-n_val:][: args.val_images])
        train_photos = PhotoSource(train_photos.photos[:-n_val] or train_photos.photos)
    log.info("%d training photos, %d validation tiles, tile %d, batch %d", len(train_photos.photos), len(val_photos.photos), tile, args.batch)

    synth = synth_config(args)

    def source(gen: torch.Generator):
        cfa = random_cfa(sensor, gen)
        return synthesize(train_photos.sample(args.batch, tile, gen), cfa, cams, gen, synth)

    # Validation: fixed tiles, fixed noise, the sensor's canonical phase.
    val_gen = torch.Generator().manual_seed(12345)
    from kpnt.train.loop import canonical_cfa

    scenes = val_photos.centre_tiles(min(tile * 2, val_photos.min_side() // 6 * 6))
    val_batches = [synthesize(scenes[i : i + 8], canonical_cfa(sensor), val_cams, val_gen) for i in range(0, len(scenes), 8)]
    prov = {"data": f"synthetic from {args.clean}", "val": str(args.val or "held-out tenth of --clean"),
            "cameras": [c.name for c in cams], "isos": args.isos, "profiles": str(args.profiles), "noise_scale": "darktable x 12",
            "holdout": list(args.holdout), "val_cameras": [c.name for c in val_cams], "val_isos": args.val_isos or args.isos,
            "clean_share": synth.zero_noise_prob, "low_noise_share": synth.low_noise_prob, "blur_share": synth.blur_prob}
    prov[NOISE_RANGE_KEY] = trained_noise_range(cams, synth)
    if args.zoom_out > 1:
        prov.update(zoom_out=args.zoom_out, zoom_share=args.zoom_share)
    if args.hard_share > 0:
        prov.update(hard_share=args.hard_share, hard_candidates=args.hard_candidates, hard_keep=args.hard_keep)

    def mine(model) -> None:
        """Hard-example mining with ``model`` as it starts (after --init or
        --resume): a seeded draw, so a resumed run mines the same
        candidates (scored by its current weights)."""
        if args.hard_share <= 0:
            return
        from kpnt.train.mining import mine_hard_boxes

        gen = torch.Generator().manual_seed(args.seed + 7919)
        train_photos.hard_boxes = mine_hard_boxes(model, train_photos, sensor, cams, tile, args.hard_candidates, args.hard_keep, gen)
        train_photos.hard_share = args.hard_share

    return source, val_batches, prov, mine


def synth_config(args) -> SynthConfig:
    """The synthesis ranges with the --*-share options applied (validation
    keeps the defaults, so runs with other shares stay comparable)."""
    import dataclasses

    given = {"zero_noise_prob": args.clean_share, "low_noise_prob": args.low_noise_share, "blur_prob": args.blur_share}
    return dataclasses.replace(SynthConfig(), **{k: v for k, v in given.items() if v is not None})


def init_model(path: Path, sensor: str):
    """The model of the weights file ``--init`` names, checked to be for
    ``sensor`` (its config is the run's architecture base)."""
    from kpnt.weights_io import load_weights, read_metadata

    file_sensor = read_metadata(path).get("sensor")
    if file_sensor != sensor:
        raise ArgError(f"--init {path}: the weights are for {file_sensor}, this run trains {sensor}: give a {sensor} weights file")
    return load_weights(path, sensor)[0]


def _warmup(args) -> int:
    """--warmup, or its default: none for random weights; with --init a
    tenth of the steps, at most INIT_WARMUP (TrainConfig.warmup says why)."""
    if args.warmup is not None:
        return args.warmup
    return min(INIT_WARMUP, args.steps // 10) if args.init is not None else 0


def _start_model(path: Path, start, config):
    """The --init model ``start`` in the run's architecture ``config``: itself
    when they agree; otherwise a new model computing the same function, for
    - --guide-proj on a residual guide: the guide converted exactly
      (:func:`kpnt.ref.guide.to_projection_blocks`);
    - a larger --guide-width and/or --guide-layers on a projection-block guide:
      the guide grown with the new parts switched off
      (:func:`kpnt.ref.guide.grow_projection_guide`).
    Any other difference is an ArgError."""
    import dataclasses

    from kpnt.model import KPNT
    from kpnt.ref.guide import grow_projection_guide, to_projection_blocks

    guide = list(start.sets["guide"]) if start.config.guide_layers else []
    have = start.config
    if config.guide_proj and not have.guide_proj and have.guide_skip \
            and dataclasses.replace(have, guide_proj=True, guide_width=config.guide_width,
                                    guide_layers=config.guide_layers) == config:
        guide, have = to_projection_blocks(guide), dataclasses.replace(have, guide_proj=True)
        log.info("--guide-proj: the guide of %s becomes projection blocks with P = identity (the same function)", path)
    grows = (config.guide_width, config.guide_layers) != (have.guide_width, have.guide_layers)
    if grows and have.guide_proj and have.guide_layers \
            and config.guide_width >= have.guide_width and config.guide_layers >= have.guide_layers \
            and dataclasses.replace(have, guide_width=config.guide_width, guide_layers=config.guide_layers) == config:
        # Seeded: the fresh channels are the same in every process of a run.
        guide = grow_projection_guide(guide, config.guide_width, config.guide_layers, torch.Generator().manual_seed(104723))
        log.info("the guide of %s grows from %d x %d to %d x %d; the new channels and layers start switched off (the same function)",
                 path, start.config.guide_layers, start.config.guide_width, config.guide_layers, config.guide_width)
        have = config
    if have != config:
        theirs = start.config.to_json()
        diff = ", ".join(f"{_ARCH_FLAGS.get(k, k)} {v}" for k, v in config.to_json().items() if theirs.get(k) != v)
        raise ArgError(f"--init {path}: the architecture options ({diff}) differ from the file's: leave them out to fine-tune "
                       "its architecture (only --guide-proj, and a wider or deeper projection-block guide, convert a file)")
    if have is start.config:
        return start
    converted = KPNT(start.sensor, config)
    state = {k: v for k, v in start.state_dict().items() if not k.startswith("sets.guide.")}
    for i, w in enumerate(guide):
        state[f"sets.guide.{i}"] = w.detach()
    converted.load_state_dict(state)
    return converted


def mixed_sources(real, synthetic, real_fraction: float):
    """One run on real pairs and synthetic pairs (issue 13): each step draws
    its whole batch from the real source with probability ``real_fraction``
    (one draw of the step's generator), else from the synthetic one; both
    batches carry a per-channel mask so every step has the same shapes;
    validation scores both sets."""
    from dataclasses import replace

    if not 0.0 <= real_fraction <= 1.0:
        raise ArgError(f"--real-fraction must lie in [0, 1], got {real_fraction}")
    real_source, real_val, real_prov = real
    syn_source, syn_val, syn_prov = synthetic

    def three(batch):
        return batch if batch.valid.shape[1] == 3 else replace(batch, valid=batch.valid.expand(-1, 3, -1, -1).contiguous())

    def source(gen: torch.Generator):
        use_real = float(torch.rand(1, generator=gen)) < real_fraction
        return three(real_source(gen) if use_real else syn_source(gen))

    prov = dict(syn_prov)
    prov.pop(NOISE_RANGE_KEY, None)    # real pairs bring their own noise levels
    prov.update(data=f"{syn_prov['data']} mixed with {real_prov['data']} ({real_fraction:g} of the steps real)",
                real_pairs=real_prov)
    return source, list(real_val) + list(syn_val), prov


def _processes(args) -> tuple[int, list[torch.device]]:
    """Number of processes the arguments ask for, and the device list."""
    from kpnt.train.distributed import parse_devices

    try:
        devices = parse_devices(args.devices)
    except KpntError as exc:  # a bad --devices value: a command-line error
        raise ArgError(str(exc)) from None
    if args.nproc is not None:
        if devices[0].type == "cuda" and args.devices != "auto":
            raise ArgError("--nproc starts CPU processes: for GPUs list them with --devices cuda:0,cuda:1")
        return args.nproc, [torch.device("cpu")]
    return len(devices), devices


def _check_args(args) -> None:
    """Checks that need several arguments (single values are range-checked
    by their argparse types); one line each, exit 2."""
    if args.clean is None and args.data is None:
        raise ArgError("give --clean DIR (with --profiles), --data DIR (from kpnt-build-dataset), or both to mix them")
    if args.anneal_by_time and args.minutes is None:
        raise ArgError("--anneal-by-time decays the learning rate over a time budget: give --minutes too")
    if args.clean is not None and args.profiles is None:
        raise ArgError("--clean needs --profiles TABLE (a darktable noiseprofiles.json) to synthesise noise")
    if args.hard_share > 0 and args.init is None and not args.resume:
        raise ArgError("--hard-share mines the tiles a trained model gets wrong: give --init WEIGHTS (or --resume a run)")
    if args.revive_dead_guide and args.init is None:
        raise ArgError("--revive-dead-guide re-initialises the dead channels of a trained guide: give --init WEIGHTS")
    if args.hard_share > 0 and args.clean is None:
        raise ArgError("--hard-share mines tiles of the --clean photos: give --clean DIR")
    for flag, spec in (("--isos", args.isos), ("--val-isos", args.val_isos)):
        if spec is not None:
            parse_isos(spec, None, flag)
    _tile(args)


def _tile(args) -> int:
    """--tile rounded down to the CFA period; at least 4 periods, and large
    enough that a validation tile keeps a photosite inside the border (else
    the validation PSNR is NaN): a --clean/--val one can be the tile rounded
    down to 6 (a photo of just the tile's size), so 18; a --data one half
    the tile rounded down to the period, not under 4 periods (held-out pairs
    too small or masked for larger ones), so 28 for Bayer."""
    from kpnt.train.loss import PSNR_BORDER as VAL_BORDER   # what validate() leaves out

    period = period_of(args.sensor)
    scored = 2 * VAL_BORDER + 1                 # the smallest validation tile with a photosite to score
    val_least, where = -(-scored // 6) * 6, ""  # --clean/--val
    if args.data is not None and args.sensor != RGB and 4 * period < scored:
        val_least, where = max(val_least, 2 * (-(-scored // period) * period)), " with --data"
    least, why = 4 * period, "4 CFA periods"
    if val_least > least:
        least, why = val_least, f"a smaller one can leave no photosite of a validation tile inside its {VAL_BORDER}-photosite border"
    if args.tile < least:
        raise ArgError(f"--tile {args.tile}: a {args.sensor} tile{where if least == val_least else ''} needs at least {least} "
                       f"photosites ({why}); the default is 96")
    return args.tile // period * period


def shipped_config(sensor: str):
    """The architecture of the shipped model of a sensor kind, read from its
    weights file's metadata (so it follows whatever model is shipped), or
    None for a sensor kind without one (rgb) or an install without it."""
    from kpnt.errors import WeightsError
    from kpnt.model import ModelConfig
    from kpnt.weights_io import read_metadata, shipped_weights

    if sensor == RGB:
        return None
    try:
        return ModelConfig.from_json(read_metadata(shipped_weights(sensor))["config"])
    except WeightsError as exc:
        log.warning("no shipped %s model to take the architecture from (%s): using kpnt's defaults", sensor, exc)
        return None


#: --flag of each architecture option, for messages.
_ARCH_FLAGS = {"apply_mode": "--apply", "width": "--width", "colour_taps": "--colour-taps",
               "front_sharing": "--front-sharing", "front_kernels": "--front-kernels", "front_width": "--front-width",
               "front_radius": "--front-radius", "guide_layers": "--guide-layers", "guide_width": "--guide-width",
               "guide_skip": "--guide-skip", "guide_pack": "--guide-pack", "guide_proj": "--guide-proj"}


def checkpoint_config(ckpt: Path):
    """The architecture a checkpoint was trained with (so that --resume
    continues a run without repeating its architecture options).

    Raises:
        KpntError: the file is damaged or not a kpnt checkpoint; the message
            names the way out.
    """
    from kpnt.model import ModelConfig

    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        return ModelConfig.from_json(state["model_config"])
    except Exception as exc:  # any failure to read it: one line with the way out
        raise KpntError(f"{ckpt}: cannot read checkpoint ({type(exc).__name__}): it is damaged or not a kpnt "
                        f"checkpoint; start over with --restart (keeps it as {ckpt.name}.old) or delete it") from None


def _model_config(args, base=None):
    """``base`` (a resumed run's architecture), else the shipped model's
    (ModelConfig's defaults for rgb), with the architecture options given on
    the command line."""
    import dataclasses

    from kpnt.model import ModelConfig

    dest = {"apply_mode": "apply"}
    overrides = {f: getattr(args, dest.get(f, f)) for f in _ARCH_FLAGS if getattr(args, dest.get(f, f)) is not None}
    if args.no_noise_input:
        overrides["noise_input"] = False
    base = base if base is not None else shipped_config(args.sensor)
    # Projection blocks live inside a residual guide: a base that has them
    # (the shipped models since session 19) loses them with the guide or its
    # skips, unless --guide-proj was asked for (then ModelConfig says why not).
    no_residual_guide = overrides.get("guide_layers") == 0 or overrides.get("guide_skip") is False
    if base is not None and base.guide_proj and no_residual_guide and "guide_proj" not in overrides:
        overrides["guide_proj"] = False
    try:
        return dataclasses.replace(base, **overrides) if base is not None else ModelConfig(**overrides)
    except ValueError as exc:  # ModelConfig's checks (ConfigError or ValueError): a bad option
        given = ", ".join(f"{_ARCH_FLAGS[k]} {v}" for k, v in overrides.items() if k in _ARCH_FLAGS)
        raise ArgError(f"architecture options{' (' + given + ')' if given else ''}: {' '.join(str(exc).split())}") from None


#: Batches of the training draw that --revive-dead-guide probes the guide with.
REVIVE_PROBES = 4


def _revive(args, model, source, ctx) -> dict:
    """--revive-dead-guide: probe the starting model with a seeded draw of
    training batches and re-initialise its dead guide channels
    (:func:`kpnt.train.revive.revive_dead_guide_channels`); the result for
    the provenance.  One process only: the revived weights come from that
    process's probes."""
    from kpnt.train.loop import batch_to
    from kpnt.train.revive import revive_dead_guide_channels

    if ctx.distributed:
        raise ArgError("--revive-dead-guide runs in one process: revive in a short single-process run, then --init its weights")
    if not model.config.guide_layers:
        raise ArgError("--revive-dead-guide: this model has no guide (--guide-layers 0)")
    model.to(ctx.device)
    gen = torch.Generator().manual_seed(args.seed + 104729)
    probes = [batch_to(source(gen), ctx.device) for _ in range(REVIVE_PROBES)]
    return revive_dead_guide_channels(model, probes, gen)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    ctx = None

    def body() -> int:
        nonlocal ctx
        from kpnt.model import KPNT
        from kpnt.train import distributed
        from kpnt.train.loop import BEST_NAME, CHECKPOINT_NAME, WEIGHTS_NAME, Trainer, TrainConfig

        # Checks of the arguments alone come first: before a launch, they
        # fail once here instead of once per process.
        _check_args(args)
        ckpt = args.out / CHECKPOINT_NAME
        if args.resume and not ckpt.exists():
            raise KpntError(f"--resume: no checkpoint at {ckpt}: start without --resume")
        start = init_model(args.init, args.sensor) if args.init is not None and not args.resume else None
        base = checkpoint_config(ckpt) if args.resume else (start.config if start is not None else None)
        config = _model_config(args, base)
        init_config = start.config if start is not None else None
        if start is not None:
            start = _start_model(args.init, start, config)
        check_output_folder(args.out)       # before the data are read
        if not (args.resume or args.restart) and ckpt.exists():
            raise KpntError(f"{args.out} already holds a run: pass --resume to continue it, --restart to start over "
                            f"(keeps its checkpoint as {CHECKPOINT_NAME}.old), or choose another --out")
        weights = [n for n in (WEIGHTS_NAME, BEST_NAME) if (args.out / n).exists()]
        if not (args.resume or args.restart) and weights:     # a run whose checkpoint was removed: not clobbered silently
            raise KpntError(f"{args.out} already holds {' and '.join(weights)} of an earlier run (no checkpoint to resume): "
                            "pass --restart to replace them, or choose another --out")
        nproc, devices = _processes(args)
        if args.restart and ckpt.exists() and not distributed.in_torchrun():
            # Before any worker starts: they see no checkpoint and start afresh.
            os.replace(ckpt, ckpt.with_name(CHECKPOINT_NAME + ".old"))
            log.info("--restart: the old checkpoint is now %s", ckpt.with_name(CHECKPOINT_NAME + ".old"))
        if distributed.in_torchrun():
            # A worker (of torchrun or of the launch below): its device is
            # devices[LOCAL_RANK]; without --devices torchrun's own choice.
            if args.nproc is not None and args.nproc != int(os.environ.get("LOCAL_WORLD_SIZE", 0)):
                raise KpntError(f"--nproc {args.nproc} does not match torchrun's {os.environ.get('LOCAL_WORLD_SIZE')} processes on this host: leave --nproc out")
            ctx = distributed.init_from_env(None if args.devices == "auto" and args.nproc is None else devices)
        elif nproc > 1:
            return distributed.launch(nproc, argv, args.verbose)
        else:
            ctx = distributed.DistContext(device=devices[0])
        if not ctx.is_main:
            logging.getLogger("kpnt").setLevel(logging.ERROR)  # rank 0 speaks for all
        if args.threads:
            torch.set_num_threads(args.threads)
        torch.manual_seed(args.seed)
        if args.backend == "cuda":
            from kpnt.ops.capability import config_problems as fused_problems

            unfused = fused_problems(config, training=True)
            if unfused:
                raise ArgError(f"--backend cuda cannot run {'; '.join(unfused)}: use --backend auto (those parts then run on the PyTorch reference)")
        # The backend is chosen per call from the data's device ('auto': the
        # fused kernels for CUDA tensors when they load, else the reference).
        model = KPNT(args.sensor, config, backend=args.backend)
        if args.guide_dtype == "bfloat16":
            if not config.guide_layers:
                raise ArgError("--guide-dtype bfloat16: this architecture has no guide (--guide-layers 0)")
            if ctx.device.type != "cuda":
                log.warning("--guide-dtype bfloat16 applies on a GPU only: training on %s keeps the guide in float32", ctx.device)
            model.guide_train_dtype = torch.bfloat16
        if start is not None:
            model.load_state_dict(start.state_dict())
            log.info("starting from the weights of %s", args.init)
        tile = _tile(args)
        if args.data is not None:
            from kpnt.train.real import dataset_sources

            real = dataset_sources(args.data, args.sensor, tile, args.batch, args.val_images, args.real_loss)
        if args.clean is None:
            source, val_batches, prov = real
        else:
            source, val_batches, prov, mine = _synthetic_sources(args, args.sensor, tile, ctx.device)
            if args.data is not None:
                source, val_batches, prov = mixed_sources(real, (source, val_batches, prov), args.real_fraction)
        cfg = TrainConfig(
            steps=args.steps, lr=args.lr, grad_clip=args.grad_clip, weight_decay=args.weight_decay, adam_eps=args.adam_eps,
            loss=args.loss,
            satbias_weight=args.satbias_weight,
            seed=args.seed, val_every=args.val_every, ckpt_every=args.ckpt_every, minutes=args.minutes,
            anneal_by_time=args.anneal_by_time, shards=args.shards, grad_sync=args.grad_sync, warmup=_warmup(args),
        )
        if args.init is not None:
            prov["init"] = str(args.init)
        if init_config is not None and init_config != config:
            # What the --init file was before its guide was converted or grown.
            prov["init_guide"] = {k: getattr(init_config, k) for k in ("guide_layers", "guide_width", "guide_proj")}
        prov["guide_train_dtype"] = args.guide_dtype
        if args.revive_dead_guide and not args.resume:
            prov["revived_guide_channels"] = _revive(args, model, source, ctx)
        trainer = Trainer(model, cfg, source, val_batches, args.out, prov, ctx)
        if args.resume:
            trainer.load_checkpoint(ckpt)
            log.info("resumed at step %d", trainer.step)
        if args.clean is not None:
            mine(model)             # the Trainer has put it on ctx.device
        if ctx.distributed:
            log.info("data-parallel training: %d processes (%s), rank 0 on %s; global batch %d shards of %d tiles, %d shard(s) per process",
                     ctx.world_size, "nccl" if ctx.device.type == "cuda" else "gloo", ctx.device, trainer.shards, args.batch, len(trainer.local))
        else:
            log.info("training on %s%s", ctx.device, f", global batch {trainer.shards} shards of {args.batch} tiles" if trainer.shards > 1 else "")
        hist = trainer.run(progress=not args.no_progress)
        if not ctx.is_main:
            return 0
        msg = f"trained {trainer.step} steps"
        if hist.val_psnr:
            msg += f"; validation PSNR {hist.val_psnr[0]:.2f} -> {hist.val_psnr[-1]:.2f} dB (linear, white-balanced)"
        if hist.skipped:
            msg += f"; {len(hist.skipped)} step(s) skipped for non-finite loss/gradients (first at step {hist.skipped[0][0]})"
        print(msg)
        print(f"weights: {args.out / 'weights.safetensors'}  curve: {args.out / 'curve.png'}")
        return 0

    # Every process of a job prints its own errors; say which one it is.
    prog = PROG if os.environ.get("RANK", "0") == "0" else f"{PROG} [rank {os.environ['RANK']}]"
    rc = 1
    try:
        rc = run_cli(prog, body, args.verbose)
        return rc
    finally:
        if ctx is not None:
            from kpnt.train.distributed import shutdown

            shutdown(ctx, wait=rc == 0)


if __name__ == "__main__":
    sys.exit(main())
