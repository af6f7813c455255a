"""tools/val_levels.py: weights scored per noise level on held-out tiles."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tool_loader import load_tool

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    return load_tool("val_levels")


def _fixtures(tmp_path):
    val = tmp_path / "val"
    val.mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:96, 0:96] / 96
    for i in range(2):
        img = np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (rng.uniform(1, 4) * xx + rng.uniform(0, 3) * yy)) for _ in range(3)], -1)
        cv2.imwrite(str(val / f"p{i}.png"), (img * 255).round().astype(np.uint8))
    prof = lambda iso, k: {"name": f"iso {iso}", "iso": iso, "a": [k * 1e-5] * 3, "b": [k * 2e-8] * 3}
    models = [{"model": m, "profiles": [prof(100, 1), prof(800, 8)]} for m in ("D750",)]
    table = {"version": 1, "noiseprofiles": [
        {"maker": "Nikon", "models": models},
        {"maker": "Sony", "models": [{"model": "ILCE-7M2", "profiles": [prof(100, 1), prof(800, 8)]}]}]}
    profiles = tmp_path / "profiles.json"
    profiles.write_text(json.dumps(table))
    return val, profiles


def test_levels_are_clean_then_fixed_profiles():
    levels = _tool().level_configs([100, 800])
    assert [label for label, _, _ in levels] == ["clean", "ISO 100", "ISO 800"]
    clean, iso100 = levels[0][1], levels[1][1]
    assert clean.zero_noise_prob == 1.0
    assert (iso100.zero_noise_prob, iso100.low_noise_prob, iso100.noise_jitter, iso100.blur_prob) == (0.0, 0.0, 0.0, 0.0)


def test_table_scores_the_shipped_bayer_model_per_level(tmp_path, capsys):
    val, profiles = _fixtures(tmp_path)
    weights = ROOT / "kpnt" / "weights" / "bayer.safetensors"
    assert _tool().main([str(weights), "--val", str(val), "--profiles", str(profiles), "--images", "2",
                         "--tile", "48", "--isos", "100,800", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[1] == "| weights | clean | ISO 100 | ISO 800 |"
    row = [c.strip() for c in lines[-1].strip("|").split("|")]
    assert row[0].endswith("(bayer)")
    cells = [tuple(float(v) for v in c.split(" / ")) for c in row[1:]]
    # more noise, lower PSNR, in both spaces: clean > ISO 100 > ISO 800
    for space in (0, 1):
        assert cells[0][space] > cells[1][space] > cells[2][space]


def test_colour_bias_split_fits_the_tile_to_the_smallest_photo(tmp_path, capsys):
    # One photo smaller than --tile: the tool cuts the tile to it, as
    # val_levels.py does (session 14: it stacked a sliver and failed).
    val, profiles = _fixtures(tmp_path)
    small = np.full((60, 80, 3), 200, np.uint8)
    small[:, :, 0] = 20                                                   # saturated: feeds the top bin
    cv2.imwrite(str(val / "p2.png"), small)
    weights = ROOT / "kpnt" / "weights" / "bayer.safetensors"
    assert load_tool("colour_bias_split").main([str(weights), "--val", str(val), "--profiles", str(profiles),
                                                "--images", "3", "--tile", "96", "--isos", "800", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("3 photos of") and "60^2 centre tiles" in lines[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[3:]]
    assert [r[1] for r in rows] == ["clean", "ISO 800"]
    for r in rows:
        assert int(r[2]) + int(r[4]) > 0                                  # the saturated photo fills the top bin


def test_told_noise_rows_differ_and_the_true_level_is_the_plain_row(tmp_path, capsys):
    val, profiles = _fixtures(tmp_path)
    weights = ROOT / "kpnt" / "weights" / "bayer.safetensors"
    common = [str(weights), "--val", str(val), "--profiles", str(profiles), "--images", "2", "--tile", "48",
              "--isos", "800", "--device", "cpu"]
    assert _tool().main(common) == 0
    plain = capsys.readouterr().out.strip().splitlines()[-1]
    assert _tool().main(common + ["--told-noise", "1,0.01"]) == 0
    rows = capsys.readouterr().out.strip().splitlines()[-2:]
    assert "told 1x the noise" in rows[0] and "told 0.01x the noise" in rows[1]
    cells = lambda row: [c.strip() for c in row.strip("|").split("|")][1:]
    assert cells(rows[0]) == cells(plain)                  # factor 1 is the true level
    iso800 = lambda row: float(cells(row)[1].split(" / ")[0])
    assert iso800(rows[1]) < iso800(rows[0])               # told almost no noise at ISO 800: noisier output
    with pytest.raises(SystemExit):
        _tool().main(common + ["--told-noise", "nan"])
