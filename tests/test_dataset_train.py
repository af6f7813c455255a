"""kpnt.train.real: training batches from a built dataset (no rawpy), and
kpnt-train --data on a built X-Trans dataset (acceptance 4)."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kpnt.cli.build_dataset import main as build_main
from kpnt.errors import DatasetError
from kpnt.train.real import EXPOSURE_EV, dataset_sources

import test_dataset_helpers as H


@pytest.fixture(scope="module")
def xtrans_dataset(tmp_path_factory):
    """Dataset of the X-T1 ladder alone (3 pairs)."""
    raws = H.raws(tmp_path_factory)
    out = tmp_path_factory.mktemp("xt") / "ds"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = build_main([str(raws["root"] / "xtrans"), "-o", str(out), "--profiles", str(raws["table"]),
                           "--no-progress"])
    assert code == 0
    return out


def test_batches_follow_the_model_conventions(xtrans_dataset):
    m = json.loads((xtrans_dataset / "manifest.json").read_text())
    source, val, prov = dataset_sources(xtrans_dataset, "xtrans", 48, 6, 4, "demosaiced")
    assert len(prov["pairs_val"]) == 1 and len(prov["pairs_train"]) == 2
    gen = torch.Generator().manual_seed(3)
    cfas = set()
    for _ in range(3):
        b = source(gen)
        n, _, t, _ = b.x.shape
        assert b.x.shape == (6, 1, 48, 48) and b.target.shape == (6, 3, 48, 48) and b.valid.dtype == torch.bool
        assert b.noise.shape == (6, 2, 3) and b.wb.shape == (6, 3)
        cfas.add(b.cfa.name)
        # The input photosites, white-balanced, equal the white-balanced
        # target at the batch CFA's colours up to noise: a wrong CFA phase,
        # flip or white balance would leave a residual far above the noise.
        colour = torch.from_numpy(b.cfa.colour_map(48, 48)).long()
        tx = torch.gather(b.target, 1, colour.expand(6, 1, 48, 48))
        a = b.noise[:, 0][:, colour][:, None]
        bb = b.noise[:, 1][:, colour][:, None]
        z2 = ((b.x - tx) ** 2 / (a * tx.clamp_min(0) + bb))[b.valid]
        assert 0.7 < float(z2.mean()) < 1.6, float(z2.mean())
        assert float(b.x.max()) <= float(b.wb.max()) + 1e-6, "inputs are clipped at the white level before wb"
    assert len(cfas) > 1, "batches should come in several CFA phases"
    # Noise scales with the exposure factor k: a' = k a wb, b' = k^2 b wb^2.
    noise = {p["id"]: (np.array(p["noise"]["a"]), np.array(p["noise"]["b"]), np.array(p["wb"])) for p in m["pairs"].values()}
    b = source(torch.Generator().manual_seed(5))
    for i in range(6):
        wb = b.wb[i].numpy()
        ks = []
        for a0, b0, w0 in noise.values():
            if np.allclose(w0, wb, atol=1e-5):
                ka = b.noise[i, 0].numpy() / (a0 * wb)
                kb = np.sqrt(b.noise[i, 1].numpy() / (b0 * wb * wb))
                if np.allclose(ka, ka[0], rtol=1e-4) and np.allclose(kb, ka[0], rtol=1e-3):
                    ks.append(ka[0])
        assert ks and any(2 ** -EXPOSURE_EV - 1e-6 <= k <= 2 ** EXPOSURE_EV + 1e-6 for k in ks)
    # Validation: fixed tiles in the canonical phase, no augmentation.
    v2 = dataset_sources(xtrans_dataset, "xtrans", 48, 6, 4)[1]
    assert torch.equal(val[0].x, v2[0].x) and val[0].cfa.name == v2[0].cfa.name


def test_mosaic_domain_compares_only_measured_photosites(xtrans_dataset):
    """--real-loss mosaic (the default): the target holds the exposure-matched
    ISO-100 reference mosaic in the channel its photosite measured, and only
    that channel is valid; it agrees with the noisy input up to the noise
    (a wrong colour, gain or flip would not)."""
    source, val, prov = dataset_sources(xtrans_dataset, "xtrans", 48, 6, 4)
    assert prov["real_loss"] == "mosaic"
    b = source(torch.Generator().manual_seed(3))
    assert b.valid.shape == (6, 3, 48, 48) and b.target.shape == (6, 3, 48, 48)
    colour = torch.from_numpy(b.cfa.colour_map(48, 48)).long()
    onehot = torch.nn.functional.one_hot(colour, 3).permute(2, 0, 1).bool()
    assert not (b.valid & ~onehot).any(), "only the measured channel may be valid"
    assert (b.target[:, ~onehot] == 0).all()
    assert b.valid.any(1).float().mean() > 0.5
    tx = torch.gather(b.target, 1, colour.expand(6, 1, 48, 48))
    a = b.noise[:, 0][:, colour][:, None]
    bb = b.noise[:, 1][:, colour][:, None]
    z2 = ((b.x - tx) ** 2 / (a * tx.clamp_min(0) + bb))[b.valid.any(1, keepdim=True)]
    assert 0.5 < float(z2.mean()) < 2.5, float(z2.mean())
    # validation still scores against the demosaiced reference (all channels)
    assert val[0].valid.shape[1] == 1


def test_real_and_synthetic_pairs_mix_in_one_run(xtrans_dataset):
    from kpnt.cli.train import mixed_sources
    from kpnt.mosaic import CFA
    from kpnt.train.synthesis import CameraModel, random_cfa, synthesize

    real = dataset_sources(xtrans_dataset, "xtrans", 48, 4, 4)
    cam = CameraModel("c", np.eye(3), np.array([[[1e-3] * 3, [1e-6] * 3]]))
    scenes = torch.rand(4, 3, 48, 48)

    def syn(gen):
        return synthesize(scenes, random_cfa("xtrans", gen), [cam], gen)

    syn_val = [synthesize(scenes, CFA.xtrans(), [cam], torch.Generator().manual_seed(1))]
    source, val, prov = mixed_sources(real, (syn, syn_val, {"data": "synthetic from x"}), 0.5)
    gen = torch.Generator().manual_seed(0)
    kinds = set()
    for _ in range(12):
        b = source(gen)
        assert b.valid.shape == (4, 3, 48, 48)
        kinds.add(bool((b.target == 0).any(1).float().mean() > 0.5))      # real mosaic-domain targets are mostly zeros
    assert kinds == {True, False}, "both sources must be drawn"
    assert len(val) == len(real[1]) + 1 and "mixed with" in prov["data"] and "real_pairs" in prov


def test_clear_errors(xtrans_dataset, tmp_path):
    with pytest.raises(DatasetError, match="no manifest.json|no such dataset"):
        dataset_sources(tmp_path, "xtrans", 48, 4, 4)
    with pytest.raises(DatasetError, match="xtrans pairs only, not bayer"):
        dataset_sources(xtrans_dataset, "bayer", 48, 4, 4)
    empty = tmp_path / "empty"
    empty.mkdir()
    doc = json.loads((xtrans_dataset / "manifest.json").read_text())
    doc["pairs"] = {}
    (empty / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="holds no pairs"):
        dataset_sources(empty, "xtrans", 48, 4, 4)
    doc["format_version"] = 99
    (empty / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="update kpnt"):
        dataset_sources(empty, "xtrans", 48, 4, 4)


def _with_manifest(src, dst, edit):
    """A copy of dataset ``src`` at ``dst`` (pair folders linked, not copied)
    whose manifest ``edit`` changes in place."""
    dst.mkdir()
    (dst / "pairs").symlink_to(src / "pairs")
    doc = json.loads((src / "manifest.json").read_text())
    edit(doc)
    (dst / "manifest.json").write_text(json.dumps(doc))
    return dst


def test_damaged_manifest_records_are_skipped_then_one_error(xtrans_dataset, tmp_path, capsys):
    from kpnt.cli.train import main as train_main

    ids = sorted(json.loads((xtrans_dataset / "manifest.json").read_text())["pairs"])

    def drop(key):
        def edit(doc):
            del doc["pairs"][ids[0]][key]
        return edit

    for n, key in enumerate(("gain", "camera", "cfa")):       # one record lacks a key: the others train
        data = _with_manifest(xtrans_dataset, tmp_path / f"one{n}", drop(key))
        _, val, prov = dataset_sources(data, "xtrans", 48, 2, 2)
        assert ids[0] not in prov["pairs_train"] + prov["pairs_val"] and len(prov["pairs_train"] + prov["pairs_val"]) == 2

    def wreck(doc):
        doc["pairs"] = {k: ({} if i % 2 else [1]) for i, k in enumerate(doc["pairs"])}
    data = _with_manifest(xtrans_dataset, tmp_path / "all", wreck)
    with pytest.raises(DatasetError, match="damaged record.*rebuild"):
        dataset_sources(data, "xtrans", 48, 2, 2)
    capsys.readouterr()
    rc = train_main(["--sensor", "xtrans", "--data", str(data), "-o", str(tmp_path / "run"), "--steps", "1",
                     "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and "kpnt-build-dataset" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_reading_a_dataset_needs_no_rawpy(xtrans_dataset):
    code = (
        "import sys; sys.modules['rawpy'] = None\n"          # any 'import rawpy' now fails
        "import torch\n"
        "from kpnt.train.real import dataset_sources\n"
        f"src, val, prov = dataset_sources({str(xtrans_dataset)!r}, 'xtrans', 48, 2, 2)\n"
        "b = src(torch.Generator().manual_seed(0))\n"
        "assert 'rawpy' not in sys.modules or sys.modules['rawpy'] is None\n"
        "print(b.x.shape)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "torch.Size([2, 1, 48, 48])" in res.stdout


@pytest.mark.slow
def test_kpnt_train_on_a_built_xtrans_dataset(xtrans_dataset, tmp_path):
    """30 steps on the tiny dataset; validation PSNR (step 10 vs step 30)
    rises.  L2 loss, which is what PSNR measures: with SMAPE the first few
    dozen steps trade PSNR for relative error in the shadows and the
    validation PSNR wanders by +-1 dB (as on synthetic data)."""
    from kpnt.cli.train import main as train_main

    out = tmp_path / "run"
    with contextlib.redirect_stdout(io.StringIO()) as so, contextlib.redirect_stderr(io.StringIO()):
        code = train_main(["--sensor", "xtrans", "--data", str(xtrans_dataset), "--steps", "30", "--tile", "24",
                           "--batch", "4", "--val-every", "10", "--val-images", "8", "--loss", "l2", "--backend", "torch",
                           # DESIGN.md's small architecture (the default is the shipped model's,
                           # whose PSNR wanders more in the first 30 steps)
                           "--apply", "softmax", "--width", "64", "--front-width", "64", "--front-kernels", "shared",
                           # validation scores against LibRaw's demosaic of the reference, so
                           # train towards it here (the mosaic-domain default has its own test)
                           "--real-loss", "demosaiced",
                           "--no-progress", "-o", str(out)])
    assert code == 0, so.getvalue()
    hist = json.loads((out / "history.json").read_text())
    assert hist["val_steps"] == [10, 20, 30]
    assert hist["val_psnr"][-1] > hist["val_psnr"][0], hist["val_psnr"]
    assert (out / "weights.safetensors").is_file()
    assert Path(out / "curve.png").is_file()
