"""Weights on disk: round trip and every refusal."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from kpnt.errors import WeightsError
from kpnt.model import KPNT, ModelConfig
from kpnt.mosaic.cfa import CFA
import numpy as np

from kpnt.weights_io import FORMAT_VERSION, META_KEY, export_vkdt_lut, load_weights, read_metadata, save_weights


def _perturbed(sensor, config=ModelConfig()):
    model = KPNT(sensor, config)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.01)
    return model


@pytest.mark.parametrize("sensor,cfa", [("bayer", CFA.bayer("GBRG")), ("xtrans", CFA.xtrans(2, 3)), ("rgb", None)])
def test_round_trip(tmp_path, sensor, cfa):
    cfg = ModelConfig(levels=3, apply_mode="plain", front_width=32)
    model = _perturbed(sensor, cfg)
    path = tmp_path / "w.safetensors"
    save_weights(path, model, cfa, {"data": "synthetic", "steps": 12, "val_psnr": 41.5})
    loaded, meta = load_weights(path, sensor)
    assert loaded.config == cfg and loaded.sensor == sensor
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), loaded.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    assert meta["provenance"]["steps"] == 12 and meta["format_version"] == FORMAT_VERSION
    if cfa is not None:
        assert meta["provenance"]["train_cfa"] == cfa.to_json()
        assert CFA.from_json(meta["cfa"]).kind == sensor
    shape = (1, 1, 24, 24) if cfa is not None else (1, 3, 16, 16)
    x = torch.rand(shape)
    noise = torch.tensor([[[1e-3] * 3, [1e-5] * 3]])
    with torch.no_grad():
        assert torch.equal(model(x, cfa, noise), loaded(x, cfa, noise))
    assert not list(tmp_path.glob(".*"))            # no temp file left behind
    assert load_weights(path)[0].sensor == sensor   # sensor=None accepts any


def test_wrong_sensor_is_one_clear_line(tmp_path):
    path = tmp_path / "x.safetensors"
    save_weights(path, KPNT("xtrans"), CFA.xtrans(), {})
    with pytest.raises(WeightsError) as e:
        load_weights(path, "bayer")
    assert str(e.value) == f"{path}: weights are for xtrans, this raw is bayer: pass --weights with a bayer model"


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(WeightsError, match="no such weights file"):
        load_weights(tmp_path / "nope.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 5 + b"not a safetensors file at all")
    with pytest.raises(WeightsError, match="not a readable safetensors file") as e:
        load_weights(junk)
    assert "\n" not in str(e.value)
    good = tmp_path / "good.safetensors"
    save_weights(good, KPNT("rgb"), None, {})
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(WeightsError) as e:
        load_weights(truncated)
    assert "\n" not in str(e.value)
    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(2)}, str(plain))
    with pytest.raises(WeightsError, match="without kpnt metadata"):
        load_weights(plain)


def test_bad_weights_paths_say_what_to_do(tmp_path):
    # each message names the fault and the way out
    with pytest.raises(WeightsError, match="no such weights file: check the path .*RUN/weights.safetensors"):
        load_weights(tmp_path / "nope.safetensors")
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(WeightsError, match="a folder, not a weights file: give the path of a .safetensors file"):
        load_weights(run)
    save_weights(run / "weights.safetensors", KPNT("rgb"), None, {})
    with pytest.raises(WeightsError, match=f"a folder, not a weights file: give a file in it, e.g. {run / 'weights.safetensors'}"):
        load_weights(run)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes((run / "weights.safetensors").read_bytes()[:50])
    with pytest.raises(WeightsError, match="copy it again"):
        load_weights(junk)


def _rewrite(path, out, meta_edit=None, tensor_edit=None):
    tensors = load_file(str(path))
    meta = read_metadata(path)
    if meta_edit:
        meta_edit(meta)
    if tensor_edit:
        tensor_edit(tensors)
    save_file(tensors, str(out), metadata={META_KEY: json.dumps(meta)})


def test_architecture_mismatch_and_newer_version(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, KPNT("bayer"), CFA.bayer(), {})
    bad = tmp_path / "bad.safetensors"

    _rewrite(path, bad, meta_edit=lambda m: m["config"].update(width=32))
    with pytest.raises(WeightsError, match="architecture mismatch: colour.w0 is"):
        load_weights(bad, "bayer")

    _rewrite(path, bad, meta_edit=lambda m: m["config"].update(hidden_layers=7))
    with pytest.raises(WeightsError, match="architecture mismatch: missing tensors"):
        load_weights(bad)

    _rewrite(path, bad, meta_edit=lambda m: m["config"].update(activation="tanh"))
    with pytest.raises(WeightsError, match="architecture mismatch: model config"):
        load_weights(bad)

    _rewrite(path, bad, tensor_edit=lambda t: t.pop("front.green.w4"))
    with pytest.raises(WeightsError, match="missing tensors \\['front.green.w4'\\]"):
        load_weights(bad)

    _rewrite(path, bad, meta_edit=lambda m: m.update(cfa=CFA.bayer("BGGR").to_json()))
    with pytest.raises(WeightsError, match="canonical CFA"):
        load_weights(bad)

    _rewrite(path, bad, tensor_edit=lambda t: t["colour.w1"].fill_(float("nan")))
    with pytest.raises(WeightsError, match="inf or nan"):
        load_weights(bad)

    _rewrite(path, bad, meta_edit=lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(WeightsError, match="newer than this kpnt"):
        load_weights(bad)


def test_save_refuses_cfa_of_other_sensor(tmp_path):
    with pytest.raises(ValueError, match="needs a bayer CFA"):
        save_weights(tmp_path / "w.safetensors", KPNT("bayer"), CFA.xtrans(), {})
    with pytest.raises(ValueError, match="no CFA"):
        save_weights(tmp_path / "w.safetensors", KPNT("rgb"), CFA.bayer(), {})


def test_vkdt_lut_export(tmp_path):
    model = _perturbed("bayer", ModelConfig(width=32, hidden_layers=3))
    path = tmp_path / "mlp-w.lut"
    export_vkdt_lut(path, model)
    raw = path.read_bytes()
    magic, version, channels, dtype, wd, ht = np.frombuffer(raw[:4], "<u4")[0], *np.frombuffer(raw[4:6], "<u2"), \
        raw[6], raw[7], *np.frombuffer(raw[8:16], "<u4")
    assert (magic, version, channels, dtype, wd, ht) == (1234, 2, 1, 16, 32, 4 * 32)
    data = np.frombuffer(raw[16:], np.float16)
    assert data.size == wd * ht
    mats = model.weight_sets()["colour"]
    offset = 0
    for m in mats:                        # (out, in) row-major, back to back
        want = m.detach().numpy().astype(np.float16).reshape(-1)
        np.testing.assert_array_equal(data[offset:offset + want.size], want)
        offset += want.size
    assert offset == 32 * 32 + 2 * 32 * 32 + 16 * 32 and not data[offset:].any()
