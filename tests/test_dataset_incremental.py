"""Incremental builds (acceptance 2): a re-run builds nothing and says so;
adding one raw builds only its pairs (in a spawn process pool); a new
lower-ISO frame becomes the scene's reference and replaces its pairs."""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import shutil

import pytest

from kpnt.cli.build_dataset import main
from kpnt.noise import load_profile_table
from kpnt.synth import make_ladder

import test_dataset_helpers as H


def run_cli(argv) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main([str(a) for a in argv])
    return code, out.getvalue()


@pytest.fixture()
def folder(tmp_path_factory, tmp_path):
    """A copy of the D750 ladder without its ISO 12800 frame, and the Canon pair."""
    raws = H.raws(tmp_path_factory)
    src = raws["root"] / "bayer"
    dst = tmp_path / "raws"
    dst.mkdir()
    for name in ("D750_ISO100.dng", "D750_ISO800.dng", "D750_ISO3200.dng", "EOS6D_ISO100.dng", "EOS6D_ISO3200.dng"):
        shutil.copy2(src / name, dst / name)
    return dict(raws=dst, extra=src / "D750_ISO12800.dng", table=raws["table"], out=tmp_path / "ds")


def manifest(out):
    return json.loads((out / "manifest.json").read_text())


def test_rerun_builds_nothing_and_adding_a_raw_builds_only_its_pair(folder):
    args = ["-o", folder["out"], "--profiles", folder["table"], "--no-progress"]
    code, text = run_cli([folder["raws"], *args, "--jobs", "2"])      # two scenes: a spawn pool of 2
    assert code == 0 and "built 3 pair(s)" in text, text
    first = manifest(folder["out"])["pairs"]
    assert len(first) == 3

    code, text = run_cli([folder["raws"], *args])
    assert code == 0 and "nothing new to build: 3 pair(s) already built" in text
    again = manifest(folder["out"])["pairs"]
    assert again == first, "a re-run must not rebuild or change pairs"

    shutil.copy2(folder["extra"], folder["raws"] / folder["extra"].name)
    code, text = run_cli([folder["raws"], *args])
    assert code == 0 and "built 1 pair(s), skipped 3 already built" in text, text
    now = manifest(folder["out"])["pairs"]
    assert set(first) < set(now) and len(now) == 4
    assert all(now[k] == first[k] for k in first)
    new = [p for k, p in now.items() if k not in first][0]
    assert new["noisy"]["path"].endswith("D750_ISO12800.dng") and new["shift"] == [1, 7]


def test_new_reference_replaces_the_scenes_pairs(folder):
    args = ["-o", folder["out"], "--profiles", folder["table"], "--no-progress"]
    run_cli([folder["raws"], *args])
    old = {k for k, p in manifest(folder["out"])["pairs"].items() if "D750" in p["noisy"]["path"]}
    # An ISO 50 frame of the same scene (shifted by (7, 7)), 6 s later.
    table = load_profile_table(folder["table"])
    make_ladder(H.photo(0), H.BAYER["cfa"], "Nikon", "D750", table, [50], folder["raws"], "D750low",
                shifts=[(7, 7)], seed=9, start_time=H.START + dt.timedelta(seconds=6))
    (folder["raws"] / "D750low_truth.json").unlink()
    code, text = run_cli([folder["raws"], *args])
    assert code == 0 and "built 3 pair(s)" in text and "removed 2 stale pair(s)" in text, text
    m = manifest(folder["out"])
    nikon = {k: p for k, p in m["pairs"].items() if "D750" in p["noisy"]["path"]}
    assert len(nikon) == 3 and not old & set(nikon)
    assert {p["reference"]["iso"] for p in nikon.values()} == {50}
    assert len(m["pairs"]) == 4, "the Canon pair is untouched"
    assert not any((folder["out"] / "pairs" / pid).exists() for pid in old)


def test_rerun_with_other_options_keeps_pairs_and_says_so(folder):
    args = [folder["raws"], "-o", folder["out"], "--profiles", folder["table"], "--no-progress"]
    run_cli(args)
    code, text = run_cli([*args, "--motion-dilate", "4"])
    assert code == 0 and "nothing new to build" in text and "3 of the pairs kept were built with other options" in text
