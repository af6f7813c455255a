"""tools/average_weights.py: the mean of several weights files, refused for mixed sensors or overwriting an input."""
import pytest
import torch

from kpnt.model import KPNT
from kpnt.mosaic.cfa import CFA
from kpnt.weights_io import CHECKSUM_KEY, load_weights, read_metadata, save_weights
from tool_loader import load_tool

avg = load_tool("average_weights")


def _saved(path, sensor, seed, steps):
    model = KPNT(sensor)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.1)
    cfa = CFA.bayer("RGGB") if sensor == "bayer" else CFA.xtrans()
    save_weights(path, model, cfa, {"steps": steps, "noise_range_wb": {"a": [0.0, 0.1], "b": [0.0, 0.01]}})
    return model


def test_average_is_the_elementwise_mean_and_keeps_the_last_provenance(tmp_path):
    models = [_saved(tmp_path / f"w{i}.safetensors", "bayer", seed=i, steps=10 * (i + 1)) for i in range(3)]
    out = tmp_path / "mean.safetensors"
    assert avg.main([str(tmp_path / f"w{i}.safetensors") for i in range(3)] + ["-o", str(out)]) == 0
    mean, meta = load_weights(out, sensor="bayer")
    for name, mats in mean.weight_sets().items():
        for i, mat in enumerate(mats):
            want = sum(m.weight_sets()[name][i].detach() for m in models) / 3
            torch.testing.assert_close(mat.detach(), want, rtol=0, atol=1e-6)
    prov = meta["provenance"]
    assert prov["steps"] == 30 and prov["noise_range_wb"]["a"] == [0.0, 0.1]
    assert [a[CHECKSUM_KEY] for a in prov["averaged_from"]] == [
        read_metadata(tmp_path / f"w{i}.safetensors")[CHECKSUM_KEY] for i in range(3)]


def test_mixed_sensors_single_file_and_overwriting_an_input_are_refused(tmp_path, capsys):
    a, b, x = (tmp_path / n for n in ("a.safetensors", "b.safetensors", "x.safetensors"))
    _saved(a, "bayer", 1, 1), _saved(b, "bayer", 2, 1), _saved(x, "xtrans", 3, 1)
    before = a.read_bytes()
    assert avg.main([str(a), str(x), "-o", str(tmp_path / "m.safetensors")]) == 2
    assert "one sensor" in capsys.readouterr().err
    assert avg.main([str(a), "-o", str(tmp_path / "m.safetensors")]) == 2
    assert "at least two" in capsys.readouterr().err
    assert avg.main([str(a), str(b), "-o", str(a)]) == 2
    assert a.read_bytes() == before and not (tmp_path / "m.safetensors").exists()
