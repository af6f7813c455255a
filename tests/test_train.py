"""Training loop: exact resume, NaN steps skipped, CLI end to end."""
import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch

from kpnt.cli.train import main as train_main
from kpnt.model import KPNT
from kpnt.train.loop import CHECKPOINT_NAME, Trainer, TrainConfig
from kpnt.train.loss import psnr_linear, smape
from kpnt.train.photos import PhotoSource
from kpnt.train.synthesis import CameraModel, random_cfa, synthesize
from kpnt.weights_io import load_weights

XYZ_TO_CAM = np.array([[0.7, -0.1, -0.05], [-0.4, 1.2, 0.2], [-0.05, 0.1, 0.6]])
NOISE = np.array([[[2e-3, 1e-3, 1.5e-3], [4e-6, 2e-6, 3e-6]]])


def _photos(n=3, size=72, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        img = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (rng.uniform(1, 4) * xx + rng.uniform(0, 3) * yy + rng.uniform())) for _ in range(3)])
        out.append(torch.from_numpy(img.astype(np.float32).clip(0, 1)))
    return PhotoSource(out)


def _trainer(tmp_path, sensor="bayer", steps=6, source_hook=None, seed=0):
    torch.manual_seed(seed)
    model = KPNT(sensor)
    photos = _photos()
    cams = [CameraModel("test cam", XYZ_TO_CAM, NOISE)]

    def source(gen):
        batch = synthesize(photos.sample(2, 36, gen), random_cfa(sensor, gen), cams, gen)
        return source_hook(batch) if source_hook else batch

    vgen = torch.Generator().manual_seed(7)
    val = [synthesize(photos.centre_tiles(36), random_cfa(sensor, torch.Generator().manual_seed(1)), cams, vgen)]
    cfg = TrainConfig(steps=steps, val_every=3, ckpt_every=3, seed=seed)
    return Trainer(model, cfg, source, val, tmp_path, {"data": "test"})


def test_smape_and_psnr():
    a = torch.rand(2, 3, 10, 10)
    valid = torch.ones(2, 1, 10, 10, dtype=torch.bool)
    assert smape(a, a, valid) == 0
    b = a.clone()
    b[..., 0, 0] = 100.0
    valid[..., 0, 0] = False
    assert smape(b, a, valid) == 0  # masked pixel ignored
    assert smape(b, a, torch.ones_like(valid)) > 0
    a = a * 0.9  # keep a + 0.01 inside [0, 1], where psnr_linear clips
    assert torch.allclose(psnr_linear(a + 0.01, a, border=0), torch.full((2,), 40.0), atol=1e-3)


def test_resume_equals_uninterrupted(tmp_path):
    full = _trainer(tmp_path / "full")
    full.run(progress=False)

    half = _trainer(tmp_path / "half")
    half.run(progress=False, until=3)  # interrupted after step 3
    resumed = _trainer(tmp_path / "half", seed=123)  # different init: must be overwritten by the checkpoint
    resumed.load_checkpoint(tmp_path / "half" / CHECKPOINT_NAME)
    assert resumed.step == 3
    resumed.run(progress=False)

    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=f"weight {k} differs after resume")
    # and the run really trained: weights moved from their initialisation
    init = _trainer(tmp_path / "init").model.state_dict()
    assert any(not torch.equal(init[k], a[k]) for k in a)
    assert full.history.losses == pytest.approx(half.history.losses + resumed.history.losses[3:])


def test_resume_checkpoint_of_an_older_config_and_of_a_gpu_run(tmp_path):
    """A checkpoint written before a ModelConfig key existed (its default
    then applies) and one written by the graphed GPU step (capturable,
    fused Adam) both resume on a CPU with this run's Adam; another architecture is still refused."""
    from kpnt.errors import KpntError

    first = _trainer(tmp_path / "a", steps=3)
    first.run(progress=False)
    path = tmp_path / "a" / CHECKPOINT_NAME
    state = torch.load(path, weights_only=False)
    del state["model_config"]["guide_pack"]                   # as written before guide_pack existed
    for g in state["optim"]["param_groups"]:
        g["capturable"] = g["fused"] = True                    # as written by the graphed CUDA step
    torch.save(state, path)
    resumed = _trainer(tmp_path / "a", steps=6)
    resumed.load_checkpoint(path)
    assert all(g["capturable"] is False and not g["fused"] for g in resumed.optim.param_groups)
    resumed.run(progress=False)
    assert resumed.step == 6
    state["model_config"]["width"] = 32
    torch.save(state, path)
    with pytest.raises(KpntError, match="another architecture"):
        _trainer(tmp_path / "a", steps=6).load_checkpoint(path)


def test_nan_input_step_is_skipped_and_weights_stay_finite(tmp_path):
    calls = {"n": 0}

    def poison(batch):
        calls["n"] += 1
        if calls["n"] == 2:
            batch.x[0, 0, 5, 5] = float("nan")
        return batch

    tr = _trainer(tmp_path, steps=4, source_hook=poison)
    hist = tr.run(progress=False)
    assert [s for s, _ in hist.skipped] == [2]
    assert len(hist.losses) == 3
    model, meta = load_weights(tmp_path / "weights.safetensors", sensor="bayer")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert meta["provenance"]["skipped_steps"] == 1


def _clean_folder(tmp_path):
    folder = tmp_path / "clean"
    folder.mkdir()
    for i, p in enumerate(_photos(4, 80, seed=3).photos):
        srgb = (p.numpy().transpose(1, 2, 0) ** (1 / 2.2) * 255).round().astype(np.uint8)
        cv2.imwrite(str(folder / f"p{i}.png"), srgb[:, :, ::-1])
    return folder


def _profile_table(tmp_path):
    table = {"version": 1, "noiseprofiles": [{"maker": "Nikon", "models": [{"model": "D750", "profiles": [
        {"name": "iso 100", "iso": 100, "a": [1e-5, 8e-6, 1.2e-5], "b": [2e-8, 1e-8, 2e-8]},
        {"name": "iso 3200", "iso": 3200, "a": [3e-4, 2e-4, 3e-4], "b": [6e-7, 4e-7, 6e-7]},
    ]}]}]}
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps(table))
    return path


@pytest.mark.parametrize("sensor", ["bayer", "xtrans"])
def test_cli_trains_and_writes_outputs(tmp_path, sensor, capsys):
    clean, table = _clean_folder(tmp_path), _profile_table(tmp_path)
    camera = "Nikon D750"
    args = ["--sensor", sensor, "--clean", str(clean), "--profiles", str(table), "--camera", camera, "--isos", "3200",
            "--steps", "4", "--batch", "2", "--tile", "36", "--val-every", "2", "--ckpt-every", "2", "-o", str(tmp_path / "run"), "--no-progress"]
    assert train_main(args) == 0
    out = capsys.readouterr().out
    assert "trained 4 steps" in out
    for name in ("weights.safetensors", "curve.png", "checkpoint.pt", "history.json"):
        assert (tmp_path / "run" / name).exists()
    assert cv2.imread(str(tmp_path / "run" / "curve.png")) is not None
    # a second run into the same folder refuses; --resume continues
    assert train_main(args) == 1
    assert "pass --resume" in capsys.readouterr().err
    assert train_main(args + ["--resume"]) == 0  # already complete: nothing more to do
    assert "trained 4 steps" in capsys.readouterr().out


def test_cli_rejects_missing_data(tmp_path, capsys):
    assert train_main(["--sensor", "bayer", "-o", str(tmp_path / "r")]) == 2   # a bad command line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--clean" in err[0]


def _cli_args(tmp_path, out, *extra, sensor="bayer", steps=2):
    clean, table = tmp_path / "clean", tmp_path / "profiles.json"
    if not clean.exists():
        _clean_folder(tmp_path), _profile_table(tmp_path)
    return ["--sensor", sensor, "--clean", str(clean), "--profiles", str(table), "--camera", "Nikon D750", "--isos", "3200",
            "--steps", str(steps), "--batch", "2", "--tile", "36", "--val-every", "2", "--ckpt-every", "2",
            "-o", str(tmp_path / out), "--no-progress", *extra]


def _max_weight_diff(a, b) -> float:
    ma, mb = load_weights(a)[0], load_weights(b)[0]
    return max(float((x - y).detach().abs().max()) for x, y in zip(ma.parameters(), mb.parameters()))


def test_cli_init_fine_tunes_from_a_weights_file(tmp_path, capsys):
    assert train_main(_cli_args(tmp_path, "a", "--seed", "1")) == 0
    start = tmp_path / "a" / "weights.safetensors"
    # A tiny learning rate barely moves the weights --init loaded ...
    assert train_main(_cli_args(tmp_path, "b", "--init", str(start), "--lr", "1e-9", "--steps", "1")) == 0
    assert _max_weight_diff(start, tmp_path / "b" / "weights.safetensors") < 1e-6
    # ... while the same run from random weights ends far from them.
    assert train_main(_cli_args(tmp_path, "c", "--lr", "1e-9", "--steps", "1")) == 0
    assert _max_weight_diff(start, tmp_path / "c" / "weights.safetensors") > 1e-3
    meta = load_weights(tmp_path / "b" / "weights.safetensors")[1]
    assert meta["provenance"]["init"] == str(start)
    # resuming a fine-tuning run continues its checkpoint, --init or not
    capsys.readouterr()
    assert train_main(_cli_args(tmp_path, "b", "--init", str(start), "--lr", "1e-9", "--steps", "2", "--resume")) == 0
    assert "trained 2 steps" in capsys.readouterr().out


def test_cli_init_refuses_another_sensor_or_architecture(tmp_path, capsys):
    assert train_main(_cli_args(tmp_path, "x", sensor="xtrans")) == 0
    xtrans = tmp_path / "x" / "weights.safetensors"
    capsys.readouterr()
    assert train_main(_cli_args(tmp_path, "b", "--init", str(xtrans))) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--init" in err[0] and "xtrans" in err[0]
    assert train_main(_cli_args(tmp_path, "x2", "--init", str(xtrans), "--width", "32", sensor="xtrans")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--width 32" in err[0]
    assert not (tmp_path / "b").exists() and not (tmp_path / "x2" / "checkpoint.pt").exists()


def test_share_options_reach_the_synthesis(tmp_path):
    from kpnt.cli.train import build_parser, synth_config

    args = build_parser().parse_args(["--sensor", "bayer", "-o", "r", "--clean-share", "1", "--blur-share", "0"])
    cfg = synth_config(args)
    assert (cfg.zero_noise_prob, cfg.blur_prob) == (1.0, 0.0)
    assert cfg.low_noise_prob == synth_config(build_parser().parse_args(["--sensor", "bayer", "-o", "r"])).low_noise_prob
    cams = [CameraModel("test cam", XYZ_TO_CAM, NOISE)]
    gen = torch.Generator().manual_seed(0)
    cfa = random_cfa("bayer", gen)
    batch = synthesize(_photos(2, 48).sample(2, 36, gen), cfa, cams, gen, cfg)
    col = torch.from_numpy(cfa.colour_map(36, 36)).long()
    assert torch.equal(batch.noise, torch.zeros_like(batch.noise))
    # no noise: the mosaic is the target sampled by the CFA
    assert torch.allclose(batch.x, batch.target.gather(1, col.expand(2, 1, 36, 36)), atol=1e-6)


def test_learning_rate_warms_up_then_decays():
    from kpnt.train.loop import learning_rate

    cfg = TrainConfig(steps=1000, lr=1e-3, warmup=100)
    assert learning_rate(cfg, 0) == pytest.approx(1e-5, rel=0.01)
    assert learning_rate(cfg, 49) == pytest.approx(5e-4, rel=0.01)
    assert learning_rate(cfg, 99) == pytest.approx(1e-3, rel=0.03)
    assert learning_rate(cfg, 999) == pytest.approx(1e-4, rel=0.01)
    assert learning_rate(TrainConfig(steps=1000, lr=1e-3), 0) == pytest.approx(1e-3)
    from kpnt.cli.train import _warmup, build_parser

    base = ["--sensor", "bayer", "-o", "r", "--steps", "2000"]
    assert _warmup(build_parser().parse_args(base)) == 0
    assert _warmup(build_parser().parse_args(base + ["--init", "w.safetensors"])) == 200
    assert _warmup(build_parser().parse_args(base + ["--init", "w.safetensors", "--warmup", "7"])) == 7


def test_srgb_l2_is_the_squared_error_after_the_srgb_curve():
    from kpnt.color import linear_to_srgb
    from kpnt.train.loss import LOSSES

    ref = torch.tensor([0.0, 0.001, 0.18, 0.9]).view(1, 1, 1, 4)
    out = ref + torch.tensor([0.001, -0.002, 0.01, 0.02]).view(1, 1, 1, 4)
    valid = torch.ones(1, 1, 1, 4, dtype=torch.bool)
    want = float(np.mean((np.asarray(linear_to_srgb(out.numpy())) - np.asarray(linear_to_srgb(ref.numpy()))) ** 2))
    assert float(LOSSES["srgb-l2"](out, ref, valid)) == pytest.approx(want, rel=1e-5)
    # the same linear error costs more in the shadows than in the highlights
    dark, bright = ref.clone(), ref.clone()
    dark[..., 1] += 0.01
    bright[..., 3] += 0.01
    assert float(LOSSES["srgb-l2"](dark, ref, valid)) > 5 * float(LOSSES["srgb-l2"](bright, ref, valid))
    out.requires_grad_(True)
    LOSSES["srgb-l2"](out - 0.01, ref, valid).backward()
    assert torch.isfinite(out.grad).all()


def test_trained_noise_range_follows_the_clean_share(tmp_path):
    # Clean tiles put 0 in the trained range (inference may then tell the
    # model "no noise"); without them the range starts at the smallest level.
    assert train_main(_cli_args(tmp_path, "with", "--steps", "1")) == 0
    assert train_main(_cli_args(tmp_path, "without", "--steps", "1", "--clean-share", "0", "--zoom-out", "1.5")) == 0
    lo = lambda run: load_weights(tmp_path / run / "weights.safetensors")[1]["provenance"]["noise_range_wb"]["a"][0]  # noqa: E731
    assert lo("with") == 0.0 and lo("without") > 0.0
    meta = load_weights(tmp_path / "without" / "weights.safetensors")[1]["provenance"]
    assert (meta["clean_share"], meta["low_noise_share"], meta["blur_share"]) == (0.0, 0.15, 0.5)
    assert (meta["zoom_out"], meta["zoom_share"]) == (1.5, 0.5)
    assert "zoom_out" not in load_weights(tmp_path / "with" / "weights.safetensors")[1]["provenance"]


def test_lowpass_bias_charges_a_colour_cast_not_zero_mean_detail():
    from kpnt.train.loss import LOSSES, lowpass_bias, smape

    g = torch.Generator().manual_seed(0)
    ref = 0.2 + 0.6 * torch.rand(1, 3, 32, 32, generator=g)
    valid = torch.ones(1, 1, 32, 32, dtype=torch.bool)
    # +-e in a checkerboard: per-pixel error, but every 8x8 mean is exact
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2 - 1).float()
    detail = ref + 0.02 * checker
    cast = ref.clone()
    cast[:, 0] += 0.02          # red 0.02 high everywhere
    assert float(lowpass_bias(detail, ref, valid)) < 1e-6
    assert float(lowpass_bias(cast, ref, valid)) > 0.005
    # per pixel, SMAPE charges the detail more than the cast
    assert float(smape(detail, ref, valid)) > float(smape(cast, ref, valid))
    # ... and the combined loss adds the cast's bias term only
    assert float(LOSSES["smape-lowpass"](cast, ref, valid) - smape(cast, ref, valid)) > 0.01
    assert float(LOSSES["smape-lowpass"](detail, ref, valid) - smape(detail, ref, valid)) < 1e-6
    # invalid pixels are left out of both means
    masked = valid.clone()
    masked[..., :8, :8] = False
    bad = cast.clone()
    bad[..., :8, :8] = 5.0
    assert float(lowpass_bias(bad, ref, masked)) < float(lowpass_bias(cast, ref, valid)) * 1.01


def test_saturated_bias_charges_dull_saturated_pixels_only():
    from kpnt.train.loss import LOSSES, SATBIAS_WEIGHT, saturated_bias, smape

    g = torch.Generator().manual_seed(0)
    ref = 0.3 + 0.4 * torch.rand(2, 3, 128, 128, generator=g)      # greyish: saturation < 0.8
    ref[:, :, :64, :64] = torch.tensor([0.6, 0.05, 0.04])[None, :, None, None]   # saturated red: 8192 pixels
    valid = torch.ones(2, 1, 128, 128, dtype=torch.bool)
    checker = ((torch.arange(128)[:, None] + torch.arange(128)[None, :]) % 2 * 2 - 1).float()
    dull = ref.clone()
    dull[:, 0, :64, :64] -= 0.02                                    # the red patch 0.02 less red
    grey_cast = ref.clone()
    grey_cast[:, 0, 64:, 64:] -= 0.02                               # the same error on grey pixels
    detail = ref + 0.01 * checker                                   # zero-mean over the patch
    assert float(saturated_bias(ref, ref, valid)) == 0.0
    # red 0.02 / 1.18 relative, over 3 channels, x 8192 / (8192 + 4096) pixels' weight
    assert abs(float(saturated_bias(dull, ref, valid)) - 0.02 / 1.18 / 3 * 2 / 3) < 1e-4
    # the same relative bias on a few pixels weighs far less
    few = valid.clone()
    few[..., :64, :64] = False
    few[0, :, :4, :4] = True
    assert float(saturated_bias(dull, ref, few)) < float(saturated_bias(dull, ref, valid)) / 50
    assert float(saturated_bias(grey_cast, ref, valid)) == 0.0
    assert float(saturated_bias(detail, ref, valid)) < 1e-6
    # the combined loss adds the bias term to SMAPE
    term = SATBIAS_WEIGHT * float(saturated_bias(dull, ref, valid))
    assert abs(float(LOSSES["smape-satbias"](dull, ref, valid) - smape(dull, ref, valid)) - term) < 1e-6
    assert abs(float(LOSSES["smape-lowpass-satbias"](dull, ref, valid) - LOSSES["smape-lowpass"](dull, ref, valid)) - term) < 1e-6
    # invalid pixels and dark ones have no say; a batch without saturated pixels costs 0 (finite)
    masked = valid.clone()
    masked[..., :64, :64] = False
    assert float(saturated_bias(dull, ref, masked)) == 0.0
    dark = ref * 0.01
    assert float(saturated_bias(dark * 0.5, dark, valid)) == 0.0
    out = dull.clone().requires_grad_(True)
    saturated_bias(out, ref, valid).backward()
    assert torch.isfinite(out.grad).all() and float(out.grad[:, 0, :64, :64].mean()) < 0   # pushes the red up
    assert float(out.grad[:, :, 64:, 64:].abs().max()) == 0.0


def test_cli_trains_with_the_saturated_bias_loss(tmp_path):
    assert train_main(_cli_args(tmp_path, "s", "--loss", "smape-satbias", "--satbias-weight", "0.5")) == 0
    cfg = load_weights(tmp_path / "s" / "weights.safetensors")[1]["provenance"]["train_config"]
    assert (cfg["loss"], cfg["satbias_weight"]) == ("smape-satbias", 0.5)


def test_satbias_weight_scales_the_term_only():
    from kpnt.train.loss import LOSSES, loss_function, saturated_bias, smape

    g = torch.Generator().manual_seed(1)
    ref = 0.3 + 0.4 * torch.rand(1, 3, 96, 96, generator=g)
    ref[:, :, :64, :64] = torch.tensor([0.05, 0.5, 0.04])[None, :, None, None]      # saturated green
    out = ref * 0.97 + 0.003 * torch.randn(1, 3, 96, 96, generator=g)
    valid = torch.ones(1, 1, 96, 96, dtype=torch.bool)
    term = float(saturated_bias(out, ref, valid))
    assert term > 1e-3
    for w in (0.0, 0.5, 3.0):
        got = float(loss_function("smape-satbias", w)(out, ref, valid))
        assert abs(got - float(smape(out, ref, valid)) - w * term) < 1e-6
    assert loss_function("smape", 0.5) is LOSSES["smape"]


def test_best_validation_weights_are_kept(tmp_path, monkeypatch):
    # Validations 30, 33, 31 dB at steps 2, 4, 6: best.safetensors holds the
    # step-4 weights (not the final ones), and a resumed run that validates
    # lower leaves it alone.
    import kpnt.train.loop as loop

    scores = iter([30.0, 33.0, 31.0, 32.0])
    snapshots = {}

    def fake_validate(model, batches, ctx=None):
        snapshots[len(snapshots)] = [p.detach().clone() for p in model.parameters()]
        return next(scores)

    monkeypatch.setattr(loop, "validate", fake_validate)
    assert train_main(_cli_args(tmp_path, "run", steps=6)) == 0
    best_model, best_meta = load_weights(tmp_path / "run" / "best.safetensors")
    assert best_meta["provenance"]["best_step"] == 4 and best_meta["provenance"]["val_psnr_linear"] == 33.0
    for got, want in zip(best_model.parameters(), snapshots[1]):
        assert torch.equal(got.detach(), want)
    final = load_weights(tmp_path / "run" / "weights.safetensors")[0]
    assert any(not torch.equal(a.detach(), b.detach()) for a, b in zip(final.parameters(), best_model.parameters()))
    # resumed to step 8: 32 dB < 33 dB, the best file stays the step-4 one
    assert train_main(_cli_args(tmp_path, "run", "--resume", steps=8)) == 0
    assert load_weights(tmp_path / "run" / "best.safetensors")[1]["provenance"]["best_step"] == 4


def test_adam_eps_reaches_the_optimiser_the_provenance_and_a_resumed_run(tmp_path):
    assert train_main(_cli_args(tmp_path, "plain")) == 0
    assert train_main(_cli_args(tmp_path, "eps", "--adam-eps", "1e-3")) == 0
    cfg = load_weights(tmp_path / "eps" / "weights.safetensors")[1]["provenance"]["train_config"]
    assert cfg["adam_eps"] == 1e-3
    # eps 1e-3 against gradients far below it shrinks every step: other weights
    assert _max_weight_diff(tmp_path / "plain" / "weights.safetensors", tmp_path / "eps" / "weights.safetensors") > 1e-5
    # A resumed run takes this run's eps, not the checkpoint's (load_state_dict
    # would bring the saved param groups back).
    half = _trainer(tmp_path / "half")
    half.run(progress=False, until=3)
    resumed = _trainer(tmp_path / "half")
    resumed.cfg = dataclasses.replace(resumed.cfg, adam_eps=1e-4)
    resumed.load_checkpoint(tmp_path / "half" / CHECKPOINT_NAME)
    assert [g["eps"] for g in resumed.optim.param_groups] == [1e-4]
    with pytest.raises(SystemExit) as bad:                                # argparse: eps must be > 0
        train_main(_cli_args(tmp_path, "bad", "--adam-eps", "0"))
    assert bad.value.code == 2


def _clocked_run(tmp_path, monkeypatch, anneal: bool, seconds_per_step: float, resume_from=None):
    """A run of 10000 scheduled steps under a 1-minute budget on a fake clock
    that advances ``seconds_per_step`` a call; returns the trainer and the
    learning rate of each step taken."""
    import kpnt.train.loop as loop

    clock = iter(np.arange(0.0, 1e6, seconds_per_step))
    monkeypatch.setattr(loop.time, "monotonic", lambda: float(next(clock)))
    t = _trainer(tmp_path)
    t.cfg = dataclasses.replace(t.cfg, steps=10000, minutes=1.0, anneal_by_time=anneal, val_every=1000, ckpt_every=1000)
    if resume_from is not None:
        t.load_checkpoint(resume_from)
    step = t.train_step
    seen = []

    def record():
        out = step()
        seen.append(t.optim.param_groups[0]["lr"])
        return out

    t.train_step = record
    t.run(progress=False)
    return t, seen


def test_anneal_by_time_ends_a_time_cut_run_at_the_low_learning_rate(tmp_path, monkeypatch):
    # 10000 steps cannot fit a minute at 7.5 s a step: the budget stops the run
    # after about 8 steps.  By step count the learning rate has hardly moved;
    # annealed by time it falls to lr_final at the budget's end.
    t, by_steps = _clocked_run(tmp_path / "steps", monkeypatch, anneal=False, seconds_per_step=7.5)
    assert 5 <= len(by_steps) <= 10
    assert by_steps[-1] == pytest.approx(t.cfg.lr, rel=1e-3)
    t, by_time = _clocked_run(tmp_path / "time", monkeypatch, anneal=True, seconds_per_step=7.5)
    assert 5 <= len(by_time) <= 10
    assert by_time == sorted(by_time, reverse=True)          # the cosine falls step by step
    assert by_time[-1] < 0.2 * t.cfg.lr                     # and ends near lr_final (0.1 lr)
    assert by_time[0] > 0.9 * t.cfg.lr
    # The checkpoint keeps how far the schedule got; a resumed run spreads
    # what is left over its new budget instead of starting the decay again.
    saved = torch.load(tmp_path / "time" / CHECKPOINT_NAME, weights_only=False)["time_progress"]
    assert saved == pytest.approx(1.0, abs=0.15)
    _, resumed = _clocked_run(tmp_path / "time", monkeypatch, anneal=True, seconds_per_step=7.5,
                              resume_from=tmp_path / "time" / CHECKPOINT_NAME)
    assert max(resumed) <= by_time[-2] + 1e-12
    # Resumed without the flag, the run follows its steps again (10000 of them:
    # the learning rate is back near lr), whatever the checkpoint's clock says.
    _, by_steps_again = _clocked_run(tmp_path / "time", monkeypatch, anneal=False, seconds_per_step=7.5,
                                     resume_from=tmp_path / "time" / CHECKPOINT_NAME)
    assert min(by_steps_again) > 0.99 * t.cfg.lr


def test_anneal_by_time_needs_a_time_budget(tmp_path, capsys):
    from kpnt.errors import KpntError

    with pytest.raises(KpntError, match="--minutes"):
        TrainConfig(anneal_by_time=True)
    code = train_main(["--sensor", "bayer", "--clean", str(tmp_path), "--profiles", str(tmp_path / "p.json"),
                       "-o", str(tmp_path / "run"), "--anneal-by-time"])
    assert code == 2
    assert "--anneal-by-time" in capsys.readouterr().err and not (tmp_path / "run").exists()
