"""Weights files carry a checksum of their tensors, verified on load; absurd
or non-finite weights are refused with one line (issue 17 item 1)."""
import json
import logging

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from kpnt.errors import WeightsError
from kpnt.model import KPNT, ModelConfig
from kpnt.mosaic import CFA
from kpnt.weights_io import CHECKSUM_KEY, META_KEY, load_weights, read_metadata, save_weights, tensor_checksum

SMALL = ModelConfig(width=16, hidden_layers=1, front_width=16, front_hidden_layers=1)


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(path, KPNT("bayer", SMALL), CFA.bayer("RGGB"), {"steps": 1})
    return path


def rewrite(src, dst, change=None, meta_change=None):
    """Copy a weights file, changing tensors and/or metadata (as a damaged or
    hand-edited copy would)."""
    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
        meta = json.loads(f.metadata()[META_KEY])
    if change:
        change(tensors)
    if meta_change:
        meta_change(meta)
    save_file(tensors, str(dst), metadata={META_KEY: json.dumps(meta)})
    return dst


def test_saver_stores_the_checksum_and_loader_accepts_it(saved):
    meta = read_metadata(saved)
    with safe_open(str(saved), framework="pt") as f:
        assert meta[CHECKSUM_KEY] == tensor_checksum({k: f.get_tensor(k) for k in f.keys()})
    model, _ = load_weights(saved, sensor="bayer")
    assert isinstance(model, KPNT)


def test_one_flipped_bit_is_refused(saved, tmp_path):
    def flip(t):
        name = sorted(t)[0]
        raw = t[name].view(torch.int32).flatten()
        raw[3] ^= 1 << 7                                  # a mantissa bit: the value stays plausible
        t[name] = raw.view(torch.float32).reshape(t[name].shape)

    bad = rewrite(saved, tmp_path / "flipped.safetensors", flip)
    with pytest.raises(WeightsError) as err:
        load_weights(bad)
    msg = str(err.value)
    assert "checksum" in msg and "flipped.safetensors" in msg and "\n" not in msg


@pytest.mark.parametrize("value,words", [(1e38, "holds 1e+38"), (float("inf"), "inf or nan"),
                                         (float("nan"), "inf or nan")])
def test_absurd_weights_are_refused_even_with_a_matching_checksum(saved, tmp_path, value, words):
    # a file whose checksum was recomputed after the edit (or a broken trainer's output):
    # the magnitude check names the tensor
    def poke(t):
        t["colour.w0"][0, 0] = value

    def fix(meta):
        meta[CHECKSUM_KEY] = tensor_checksum(changed)

    with safe_open(str(saved), framework="pt") as f:
        changed = {k: f.get_tensor(k).clone() for k in f.keys()}
    poke(changed)
    bad = rewrite(saved, tmp_path / "absurd.safetensors", poke, fix)
    with pytest.raises(WeightsError, match="corrupt weights") as err:
        load_weights(bad)
    assert words in str(err.value) and "colour.w0" in str(err.value)


def test_files_without_a_checksum_load_with_a_note(saved, tmp_path, caplog):
    old = rewrite(saved, tmp_path / "old.safetensors", meta_change=lambda m: m.pop(CHECKSUM_KEY))
    with caplog.at_level(logging.INFO, logger="kpnt"):
        load_weights(old)
    assert any("no tensor checksum" in r.getMessage() for r in caplog.records)


def test_shipped_weights_verify():
    from kpnt.weights_io import shipped_weights

    for sensor in ("bayer", "xtrans"):
        path = shipped_weights(sensor)
        meta = read_metadata(path)
        load_weights(path, sensor=sensor)   # checksum (when present) and magnitudes pass
        assert CHECKSUM_KEY in meta, f"{path}: re-save the shipped weights with a checksum"
