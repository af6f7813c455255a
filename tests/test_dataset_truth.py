"""kpnt-build-dataset reports what it did truthfully (issue 17 item 7, issue 16
item 8): a byte-duplicate in another folder does not cost its scene a pair,
frames that cannot pair are named with the reason, identical frames tagged
with two ISOs are rejected, and an empty first build says so."""
from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest

from kpnt.cli.build_dataset import main
from kpnt.io import RawMeta, write_cfa_dng
from kpnt.mosaic import CFA

H, W = 120, 160


def scene(seed=0) -> np.ndarray:
    """A smooth, textured scene in normalised units (alignment needs texture)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H + 40, 0:W + 40] / 20.0
    img = 0.3 + 0.15 * np.sin(xx * 1.3 + rng.uniform(0, 3)) * np.cos(yy * 0.9) + 0.1 * np.sin(xx * yy * 0.05)
    return img


def frame(path, iso, seed, noise_var, crop=None, when="2026:01:01 10:00:00", img=None):
    """Write one CFA DNG of the scene at ``iso`` with noise of that variance."""
    base = scene()[:H, :W] if img is None else img
    rng = np.random.default_rng(seed)
    x = base + rng.normal(0, np.sqrt(noise_var), base.shape)
    if crop:
        x = x[crop[0]:crop[0] + crop[2], crop[1]:crop[1] + crop[3]]
    counts = np.clip(np.round(512 + x * (16383 - 512)), 0, 16383).astype(np.uint16)
    meta = RawMeta(black=[512] * 3, white=16383, wb=[2.0, 1.0, 1.5], xyz_to_cam=np.eye(3) * 0.8 + 0.05,
                   make="Acme", model="Cam", iso=iso, exposure_time=1 / 100, datetime=when)
    write_cfa_dng(path, counts, CFA.bayer("RGGB"), meta)
    return counts


def run(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv] + ["--no-progress"])
    return code, out.getvalue(), err.getvalue()


def test_duplicate_in_another_folder_does_not_cost_a_pair(tmp_path):
    raws = tmp_path / "raws"
    (raws / "a_extra").mkdir(parents=True)       # sorts before the scene's folder
    (raws / "scene").mkdir()
    frame(raws / "scene" / "s100.dng", 100, 1, 1e-6)
    frame(raws / "scene" / "s1600.dng", 1600, 2, 4e-4)
    frame(raws / "scene" / "s3200.dng", 3200, 3, 8e-4)
    shutil.copy2(raws / "scene" / "s100.dng", raws / "a_extra" / "copy_of_s100.dng")
    code, out, err = run(raws, "-o", tmp_path / "ds", "--scene-dirs")
    assert code == 0, err
    assert "built 2 pair(s)" in out, out
    line = next(ln for ln in out.splitlines() if "copy_of_s100.dng" in ln)
    assert "same bytes as" in line and "s100.dng" in line and "that copy is used" in line
    assert "alone in its folder" not in out


def test_cropped_lower_iso_frame_is_named(tmp_path):
    raws = tmp_path / "raws"
    raws.mkdir()
    frame(raws / "full1600.dng", 1600, 2, 4e-4)
    frame(raws / "crop100.dng", 100, 1, 1e-6, crop=(8, 8, H - 24, W - 40))
    code, out, err = run(raws, "-o", tmp_path / "ds", "--scene-dirs")
    line = next(ln for ln in out.splitlines() if "full1600.dng:" in ln)
    assert "no lower-ISO frame" in line and "the lower-ISO frame crop100.dng (ISO 100)" in line, line
    assert f"{W - 40}x{H - 24}" in line and "cropped?" in line
    assert "alone in its folder" not in line          # it is not: the folder holds two frames
    # by capture time the same (same camera, same minute)
    code, out, err = run(raws, "-o", tmp_path / "ds2")
    line = next(ln for ln in out.splitlines() if "full1600.dng:" in ln)
    assert "the lower-ISO frame crop100.dng (ISO 100)" in line, line


@pytest.mark.parametrize("extra_var,reason", [(0.0, "same pixel data as its reference"),
                                              (1e-9, "no noise beyond the reference's (fitted a = 0, b = 0)")])
def test_identical_frames_tagged_with_two_isos_are_rejected(tmp_path, extra_var, reason):
    raws = tmp_path / "raws"
    raws.mkdir()
    shot = scene()[:H, :W] + np.random.default_rng(5).normal(0, 0.014, (H, W))
    frame(raws / "x100.dng", 100, 1, 0.0, img=shot)
    frame(raws / "x1600.dng", 1600, 2, extra_var, img=shot)   # the same frame (or all but rounding) tagged ISO 1600
    code, out, err = run(raws, "-o", tmp_path / "ds", "--scene-dirs")
    assert code == 1 and "built 0 pair(s)" in out and "rejected pair x1600.dng" in out, out
    assert reason in out, out
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert not m["pairs"] and len(m["rejected_pairs"]) == 1


def test_real_pair_still_builds(tmp_path):
    raws = tmp_path / "raws"
    raws.mkdir()
    frame(raws / "x100.dng", 100, 1, 1e-6)
    frame(raws / "x1600.dng", 1600, 2, 4e-4)
    code, out, err = run(raws, "-o", tmp_path / "ds", "--scene-dirs")
    assert code == 0 and "built 1 pair(s)" in out, (out, err)


def test_empty_first_build_says_so(tmp_path):
    raws = tmp_path / "raws"
    raws.mkdir()
    frame(raws / "only1600.dng", 1600, 2, 4e-4)
    code, out, err = run(raws, "-o", tmp_path / "ds")
    first = out.splitlines()[0]
    assert first.startswith("no pairs to build") and "already built" not in first, out
    assert "only1600.dng: alone in its scene" in out
    errors = err.strip().splitlines()            # nothing to train on: an error that says what to do, exit 1
    assert code == 1 and len(errors) == 1 and "holds no pair" in errors[0] and "--scene-dirs" in errors[0], err
