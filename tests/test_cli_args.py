"""Every bad argument of the four CLIs: one stderr line, exit 2, no traceback
(issue 17 item 6); kpnt-train's way out of a damaged checkpoint; kpnt-train's
architecture defaults are the shipped model's; kpnt-train's output folder:
checked before any work, earlier weights not replaced silently."""
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from kpnt.cli import build_dataset, denoise, synth, train

NAN, INF = "nan", "inf"


def train_args(*extra, sensor="bayer"):
    return ["--sensor", sensor, "-o", "/nonexistent/run", "--clean", "/nonexistent/photos", "--profiles",
            "/nonexistent/p.json", *extra]


def synth_args(*extra, cfa="RGGB", camera="Nikon D750", isos="100,3200"):
    return ["/nonexistent/p.png", "-o", "/nonexistent/out", "--profiles", "/nonexistent/p.json", "--camera", camera,
            "--isos", isos, "--cfa", cfa, *extra]


def dataset_args(*extra):
    return ["/nonexistent/raws", "-o", "/nonexistent/ds", *extra]


def denoise_args(*extra):
    return ["/nonexistent/raws", "-o", "/nonexistent/out", *extra]


CASES = [
    # kpnt-train: ranges, NaN/inf, architecture, combinations
    (train, train_args("--width", "8"), "multiple of 16"),
    (train, train_args("--width", "100"), "multiple of 16"),
    (train, train_args("--front-width", "0"), "--front-width"),
    (train, train_args("--front-width", "24"), "multiple of 16"),
    (train, train_args("--batch", "0"), "--batch"),
    (train, train_args("--lr", "-1"), "--lr"),
    (train, train_args("--lr", NAN), "finite"),
    (train, train_args("--lr", INF), "finite"),
    (train, train_args("--lr", "0"), "> 0"),
    (train, train_args("--val-every", "0"), "--val-every"),
    (train, train_args("--ckpt-every", "0"), "--ckpt-every"),
    (train, train_args("--tile", "0"), "--tile"),
    (train, train_args("--tile", "12", sensor="xtrans"), "at least 24"),
    (train, train_args("--tile", "17"), "at least 18 photosites (a smaller one can leave no photosite"),
    (train, train_args("--tile", "16", sensor="rgb"), "at least 18"),
    (train, train_args("--data", "/nonexistent/ds", "--tile", "26"), "with --data needs at least 28"),
    (train, train_args("--steps", "0"), "--steps"),
    (train, train_args("--steps", "many"), "whole number"),
    (train, train_args("--minutes", "0"), "--minutes"),
    (train, train_args("--minutes", NAN), "finite"),
    (train, train_args("--grad-clip", "-1"), "--grad-clip"),
    (train, train_args("--weight-decay", NAN), "finite"),
    (train, train_args("--seed", "-1"), "--seed"),
    (train, train_args("--threads", "0"), "--threads"),
    (train, train_args("--nproc", "0"), "--nproc"),
    (train, train_args("--shards", "0"), "--shards"),
    (train, train_args("--downscale", "0"), "--downscale"),
    (train, train_args("--val-images", "0"), "--val-images"),
    (train, train_args("--clean-share", "1.5"), "--clean-share"),
    (train, train_args("--low-noise-share", NAN), "finite"),
    (train, train_args("--blur-share", "-0.1"), "--blur-share"),
    (train, train_args("--hard-share", "1.5"), "--hard-share"),
    (train, train_args("--zoom-out", "0.5"), "--zoom-out"),
    (train, train_args("--zoom-share", "2"), "--zoom-share"),
    (train, train_args("--hard-keep", "0"), "--hard-keep"),
    (train, train_args("--hard-candidates", "0"), "--hard-candidates"),
    (train, train_args("--front-radius", "0"), "--front-radius"),
    (train, train_args("--guide-layers", "-1"), "--guide-layers"),
    (train, train_args("--guide-layers", "2", "--guide-width", "4"), "guide_width"),
    (train, train_args("--guide-layers", "0", "--guide-dtype", "bfloat16"), "has no guide"),
    (train, train_args("--guide-pack", "5"), "--guide-pack"),
    (train, train_args("--apply", "cubic"), "invalid choice"),
    (train, train_args("--isos", "abc"), "--isos"),
    (train, train_args("--isos", "6400-100"), "--isos"),
    (train, train_args("--val-isos", "0"), "--val-isos"),
    (train, train_args("--resume", "--restart"), "not allowed with"),
    (train, train_args("--devices", "gpu0"), "--devices"),
    (train, ["--sensor", "foveon", "-o", "r", "--clean", "c", "--profiles", "p"], "invalid choice"),
    (train, ["--sensor", "bayer", "-o", "/nonexistent/r"], "--clean"),
    (train, ["--sensor", "bayer", "-o", "/nonexistent/r", "--clean", "c"], "--profiles"),
    (train, train_args("--no-such-flag"), "unrecognized"),
    # kpnt-build-dataset
    (build_dataset, dataset_args("--max-gap", "0"), "--max-gap"),
    (build_dataset, dataset_args("--max-gap", NAN), "finite"),
    (build_dataset, dataset_args("--min-similarity", "2"), "--min-similarity"),
    (build_dataset, dataset_args("--min-usable", "-0.1"), "--min-usable"),
    (build_dataset, dataset_args("--max-gain", "1"), "--max-gain"),
    (build_dataset, dataset_args("--motion-threshold", "0.5"), "--motion-threshold"),
    (build_dataset, dataset_args("--motion-dilate", "-1"), "--motion-dilate"),
    (build_dataset, dataset_args("--raw-scale", "0"), "--raw-scale"),
    (build_dataset, dataset_args("--raw-scale", INF), "finite"),
    (build_dataset, dataset_args("--jobs", "0"), "--jobs"),
    (build_dataset, [], "required"),
    # kpnt-synth
    (synth, synth_args("--shift-max", "-1"), "--shift-max"),
    (synth, synth_args("--exposure-ev", "7"), "--exposure-ev"),
    (synth, synth_args("--exposure-ev", NAN), "finite"),
    (synth, synth_args("--max-size", "0"), "--max-size"),
    (synth, synth_args("--raw-scale", "-1"), "--raw-scale"),
    (synth, synth_args("--seed", "-5"), "--seed"),
    (synth, synth_args(isos="100,abc"), "--isos"),
    (synth, synth_args(isos="100,100"), "distinct"),
    (synth, synth_args(cfa="xtrans"), "X-Trans sensor"),
    (synth, synth_args(camera="Leica M9"), "Leica M9"),
    (synth, synth_args(cfa="RGBG"), "invalid choice"),
    # kpnt-denoise (its argparse section belongs to the batch engine)
    (denoise, denoise_args("--ensemble", "3"), "--ensemble"),
    (denoise, denoise_args("--ensemble", "two"), "--ensemble"),
    (denoise, denoise_args("--noise", "inf,0"), "finite"),
    (denoise, denoise_args("--noise", "1e300,0"), "not a plausible"),
    (denoise, denoise_args("--noise", "1,2,3"), "'a,b'"),
    (denoise, denoise_args("--noise", "-1e-4,0"), "--noise"),
    (denoise, denoise_args("--jobs", "0"), "--jobs"),
    (denoise, denoise_args("--threads", "0"), "--threads"),
    (denoise, denoise_args("--tile", "-1"), "--tile"),
    (denoise, denoise_args("--format", "jpeg"), "invalid choice"),
    (denoise, denoise_args("--backend", "metal"), "invalid choice"),
]


def _ids(case):
    mod, argv, _ = case
    flags = [a for a in argv if a.startswith("-") and a != "-o"] or ["positional"]
    return f"{mod.__name__.rsplit('.', 1)[-1]}:{'/'.join(flags)}:{argv[argv.index(flags[-1]) + 1] if flags[-1] in argv and argv.index(flags[-1]) + 1 < len(argv) else ''}"


def run(mod, argv, capsys):
    try:
        rc = mod.main(argv)
    except SystemExit as ex:  # argparse
        rc = ex.code
    return rc, capsys.readouterr()


def test_at_least_forty_cases():
    assert len(CASES) >= 40 and {m for m, _, _ in CASES} == {train, build_dataset, synth, denoise}


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_bad_argument_is_one_line_exit_2(case, capsys):
    mod, argv, words = case
    rc, cap = run(mod, argv, capsys)
    lines = [line for line in cap.err.splitlines() if line.strip()]
    assert rc == 2, (rc, cap.err)
    assert len(lines) == 1 and "Traceback" not in cap.err, cap.err
    assert ": error: " in lines[0] and words in lines[0], lines[0]
    assert cap.out == ""


# ----------------------------------------------------------------------
# kpnt-train: a damaged checkpoint has a way out
# ----------------------------------------------------------------------
def _tiny_setup(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(photos / f"p{i}.png"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    table = {"version": 1, "noiseprofiles": [{"maker": "Nikon", "models": [{"model": "D750", "profiles": [
        {"name": "iso 3200", "iso": 3200, "a": [3e-4, 2e-4, 3e-4], "b": [6e-7, 4e-7, 6e-7]}]}]}]}
    (tmp_path / "p.json").write_text(json.dumps(table))
    return ["--sensor", "bayer", "--clean", str(photos), "--profiles", str(tmp_path / "p.json"), "--camera",
            "Nikon D750", "--isos", "3200", "--steps", "1", "--batch", "1", "--tile", "18", "--val-images", "1",
            "--width", "16", "--front-width", "16", "--no-progress", "-o", str(tmp_path / "run")]


def test_damaged_checkpoint_names_the_way_out(tmp_path, capsys):
    args = _tiny_setup(tmp_path)
    (tmp_path / "run").mkdir()
    ckpt = tmp_path / "run" / "checkpoint.pt"
    ckpt.write_bytes(b"not a checkpoint at all")
    rc, cap = run(train, args + ["--resume"], capsys)
    assert rc == 1 and "--restart" in cap.err and "checkpoint.pt" in cap.err, cap.err
    rc, cap = run(train, args, capsys)                     # without --resume: no loop back to --resume only
    assert rc == 1 and "--restart" in cap.err, cap.err
    rc, cap = run(train, args + ["--restart"], capsys)
    assert rc == 0, cap.err
    assert (tmp_path / "run" / "checkpoint.pt.old").read_bytes() == b"not a checkpoint at all"
    assert (tmp_path / "run" / "weights.safetensors").is_file()
    # --resume takes the run's architecture from its checkpoint (width 16 here,
    # not the shipped model's): no need to repeat the options
    i = args.index("--width")
    plain = args[:i] + args[i + 4:]                       # without --width 16 --front-width 16
    plain[plain.index("--steps") + 1] = "2"
    rc, cap = run(train, plain + ["--resume"], capsys)
    assert rc == 0 and "trained 2 steps" in cap.out, cap.err


def test_weights_without_checkpoint_are_not_clobbered(tmp_path, capsys):
    # A run folder whose (large) checkpoint was deleted still holds weights:
    # a new run into it must not replace them unless --restart is passed.
    args = _tiny_setup(tmp_path)
    (tmp_path / "run").mkdir()
    kept = tmp_path / "run" / "weights.safetensors"
    kept.write_bytes(b"earlier weights")
    rc, cap = run(train, args, capsys)
    assert rc == 1 and "--restart" in cap.err and "weights.safetensors" in cap.err, cap.err
    assert "Traceback" not in cap.err and len(cap.err.strip().splitlines()) == 1
    assert kept.read_bytes() == b"earlier weights"
    rc, cap = run(train, args + ["--restart"], capsys)
    assert rc == 0 and kept.read_bytes() != b"earlier weights", cap.err


def test_damaged_and_tiny_clean_photos_are_skipped(tmp_path, capsys):
    # One damaged file and one thumbnail among the --clean photos: training
    # goes on without them (the thumbnail, sorted last, was the validation
    # photo: a 6-pixel tile whose PSNR was NaN), and says which were skipped.
    args = _tiny_setup(tmp_path)
    photos = tmp_path / "photos"
    (photos / "b_damaged.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    cv2.imwrite(str(photos / "z_thumb.png"), np.zeros((16, 16, 3), np.uint8))
    rc, cap = run(train, args, capsys)
    assert rc == 0, cap.err
    assert "b_damaged.png (cannot decode)" in cap.err and "z_thumb.png (8x8" in cap.err, cap.err
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["val_psnr"] and all(np.isfinite(history["val_psnr"])), history
    for f in photos.glob("p*.png"):
        f.unlink()
    rc, cap = run(train, args + ["--restart"], capsys)
    assert rc == 1 and "none of its 2 photo(s)" in cap.err and "--clean" in cap.err, cap.err


def test_smallest_tile_scores_its_validation(tmp_path, capsys):
    # --tile 18 on photos of just 18x18 (after --downscale 2): the
    # validation tile is 18, and 6x6 photosites inside its 6-photosite
    # border give a finite PSNR (--tile 16 gave a 12-pixel tile and NaN).
    args = _tiny_setup(tmp_path)
    photos = tmp_path / "photos"
    for f in photos.glob("p*.png"):
        cv2.imwrite(str(f), np.random.default_rng(1).integers(0, 255, (36, 36, 3), dtype=np.uint8))
    rc, cap = run(train, args, capsys)
    assert rc == 0, cap.err
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history["val_psnr"] and all(np.isfinite(history["val_psnr"])), history


@pytest.mark.parametrize("where", ["file", "under_file", "not_writable"])
def test_bad_output_folder_is_one_line_before_training(tmp_path, capsys, monkeypatch, where):
    args = _tiny_setup(tmp_path)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    out = {"file": blocker, "under_file": blocker / "run", "not_writable": tmp_path / "ro" / "run"}[where]
    if where == "not_writable":
        (tmp_path / "ro").mkdir()
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != tmp_path / "ro" and real_access(p, mode, **kw))
    loaded = []
    import kpnt.cli.train as train_cli

    real_sources = train_cli._synthetic_sources
    monkeypatch.setattr(train_cli, "_synthetic_sources", lambda *a, **k: loaded.append(1) or real_sources(*a, **k))
    args[args.index("-o") + 1] = str(out)
    rc, cap = run(train, args, capsys)
    assert rc == 1 and "-o" in cap.err and "Errno" not in cap.err, cap.err
    assert len(cap.err.strip().splitlines()) == 1, cap.err
    assert not loaded                     # refused before the photos were read
    assert not (tmp_path / "ro" / "run").exists()


# ----------------------------------------------------------------------
# kpnt-train: architecture defaults come from the shipped weights
# ----------------------------------------------------------------------
def test_architecture_defaults_are_the_shipped_models(tmp_path, monkeypatch):
    from kpnt.model import KPNT, ModelConfig
    from kpnt.mosaic import CFA
    from kpnt.weights_io import read_metadata, save_weights, shipped_weights

    args = train.build_parser().parse_args(train_args())
    for sensor in ("bayer", "xtrans"):
        args.sensor = sensor
        shipped = ModelConfig.from_json(read_metadata(shipped_weights(sensor))["config"])
        assert train._model_config(args) == shipped
    args.sensor, args.width = "bayer", 32
    bayer = ModelConfig.from_json(read_metadata(shipped_weights("bayer"))["config"])
    assert train._model_config(args).width == 32 and train._model_config(args).front_width == bayer.front_width
    # derived, not copied: another shipped model, other defaults
    other = ModelConfig(width=48, front_width=32, hidden_layers=2, front_hidden_layers=2)
    save_weights(tmp_path / "b.safetensors", KPNT("bayer", other), CFA.bayer(), {})
    monkeypatch.setattr("kpnt.weights_io.shipped_weights", lambda sensor: tmp_path / "b.safetensors")
    args.width = None
    assert train._model_config(args) == other
    args.sensor = "rgb"  # no shipped rgb model: ModelConfig's defaults
    assert train._model_config(args) == ModelConfig()


def test_ensemble_choices_are_the_ensemble_modules():
    from kpnt.ensemble import VIEWS

    assert denoise.ENSEMBLE_VIEWS == VIEWS


def test_removing_the_guide_or_its_skips_drops_inherited_projection_blocks():
    """The shipped files have projection blocks, which live inside a residual
    guide: --guide-layers 0 or --no-guide-skip must drop them (not fail), and
    an explicit --guide-proj with them is a one-line error."""
    from kpnt.errors import KpntError

    base = train.build_parser().parse_args(train_args())
    base.sensor = "bayer"
    assert train._model_config(base).guide_proj        # the shipped Bayer file's guide
    for flags, check in ((["--guide-layers", "0"], lambda c: c.guide_layers == 0),
                         (["--no-guide-skip"], lambda c: c.guide_skip is False)):
        args = train.build_parser().parse_args(train_args(*flags))
        config = train._model_config(args)
        assert check(config) and config.guide_proj is False, config
        args = train.build_parser().parse_args(train_args(*flags, "--guide-proj"))
        with pytest.raises((KpntError, SystemExit, ValueError), match="guide_proj|residual guide|guide"):
            train._model_config(args)
