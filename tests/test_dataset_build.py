"""kpnt-build-dataset end to end on synthetic ISO ladders (acceptance 1).

One folder holds a Nikon D750 ladder (Bayer), a Fujifilm X-T1 ladder
(X-Trans), a Canon EOS 6D pair of the same size, CFA and capture times as
the D750, a lone ISO 6400 frame and a file that is not a raw.  Every number
the builder writes is checked against the ladders' truth sidecars.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from kpnt.cli.build_dataset import main
from kpnt.dataset.align import lattice_shifts
from kpnt.dataset.manifest import FORMAT, FORMAT_VERSION, MASK_MOTION, PAIR_ARRAYS
from kpnt.mosaic.cfa import CFA
import kpnt

import test_dataset_helpers as H


def run_cli(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    raws = H.raws(tmp_path_factory)
    out = tmp_path_factory.mktemp("datasets") / "mycam"
    code, stdout, stderr = run_cli([raws["root"], "-o", out, "--profiles", raws["table"], "--no-progress"])
    manifest = json.loads((out / "manifest.json").read_text())
    return dict(root=raws["root"], table=raws["table"], out=out, code=code, stdout=stdout, stderr=stderr,
                manifest=manifest, truth=H.truth_by_file(raws["root"]))


def pairs_with_truth(built):
    for pid, p in built["manifest"]["pairs"].items():
        tn, fn = built["truth"][Path(p["noisy"]["path"]).name]
        tr, fr = built["truth"][Path(p["reference"]["path"]).name]
        yield pid, p, (tn, fn), (tr, fr)


def test_reports_broken_and_unpaired_files_and_goes_on(built):
    assert built["code"] == 1, "a file that fails to read must make the exit status non-zero"
    assert "broken.dng" in built["stderr"] and "not a raw file" in built["stderr"]
    assert "built 7 pair(s)" in built["stdout"]
    assert "not paired:" in built["stdout"] and "lone_ISO6400.dng: alone in its scene" in built["stdout"]
    stages = {(Path(r["file"]).name, r["stage"]) for r in built["manifest"]["rejections"]}
    assert ("broken.dng", "read") in stages and ("lone_ISO6400.dng", "group") in stages


def test_rerun_says_nothing_new_and_still_reports_the_broken_file(built):
    code, stdout, stderr = run_cli([built["root"], "-o", built["out"], "--profiles", built["table"], "--no-progress"])
    assert code == 1 and "nothing new to build: 7 pair(s) already built" in stdout
    assert len(stderr.strip().splitlines()) == 1 and "broken.dng" in stderr, "one line per failed file"


def test_pairs_form_only_within_a_camera(built):
    per_camera = {}
    for _, p, (tn, _), (tr, _) in pairs_with_truth(built):
        assert tn["camera"] == tr["camera"], f"{p['noisy']['path']} paired across cameras"
        assert tn is tr, "paired across scenes"
        per_camera.setdefault(tn["camera"]["model"], []).append(p)
        assert p["reference"]["iso"] == tr["reference_iso"] < p["noisy"]["iso"]
    assert {k: len(v) for k, v in per_camera.items()} == {"D750": 3, "X-T1": 3, "EOS 6D": 1}
    # The Canon frames share size, CFA and capture times with the Nikon's.
    canon = per_camera["EOS 6D"][0]
    assert Path(canon["reference"]["path"]).name == "EOS6D_ISO100.dng"


def test_shifts_recovered_exactly_and_snapped_to_the_cfa_lattice(built):
    seen_off_lattice = 0
    for _, p, (tn, fn), (_, fr) in pairs_with_truth(built):
        true = [fn["shift"][0] - fr["shift"][0], fn["shift"][1] - fr["shift"][1]]
        assert p["shift"] == true, p["noisy"]["path"]
        cfa = CFA.from_json(p["cfa"])
        sy, sx = p["shift_snapped"]
        assert cfa.crop(sy, sx) == cfa, "snapped shift must put the reference's CFA on the noisy frame's"
        assert max(abs(sy - true[0]), abs(sx - true[1])) <= cfa.period // 2
        if ((true[0] % cfa.period, true[1] % cfa.period) in lattice_shifts(cfa)):
            assert p["shift_snapped"] == true
        if true[0] % cfa.period or true[1] % cfa.period:
            seen_off_lattice += 1
    assert seen_off_lattice >= 3, "the ladders must exercise shifts that are not multiples of the period"


def test_gains_within_one_percent(built):
    for _, p, (_, fn), (_, fr) in pairs_with_truth(built):
        want = fn["exposure_gain"] / fr["exposure_gain"]
        err = np.abs(np.array(p["gain"]) / want - 1)
        assert err.max() < 0.01, (p["noisy"]["path"], p["gain"], want)
        assert p["offset"] == [0.0, 0.0, 0.0]


def test_noise_profiles_within_ten_percent(built):
    methods = set()
    for _, p, (_, fn), _ in pairs_with_truth(built):
        for key in ("a", "b"):
            got, want = np.array(p["noise"][key]), np.array(fn["noise"][key])
            err = np.abs(got / want - 1)
            assert err.max() < 0.10, (p["noisy"]["path"], key, got, want, p["noise_method"])
        methods.update(p["noise_method"])
        assert p["reference_noise"]["source"].startswith("table")
    # Off-lattice pairs fit red/blue against the demosaic; both paths ran.
    assert methods == {"mosaic", "demosaic"}


def test_moving_object_is_masked(built):
    for pid, p, (_, fn), (_, fr) in pairs_with_truth(built):
        if fn["object_bbox"] is None:
            continue
        mask = np.load(built["out"] / "pairs" / pid / "mask.npy")
        y0, x0, _, _ = p["crops"]["noisy"]
        dy, dx = p["shift"]
        h, w = mask.shape
        boxes = []
        # The object where the noisy frame shows it, and where the reference
        # shows it (reference (y, x) is noisy (y - dy, x - dx)).
        for (by0, bx0, by1, bx1), (oy, ox) in ((fn["object_bbox"], (0, 0)), (fr["object_bbox"], (dy, dx))):
            box = np.zeros((h, w), bool)
            box[max(by0 - oy - y0, 0):max(by1 - oy - y0, 0), max(bx0 - ox - x0, 0):max(bx1 - ox - x0, 0)] = True
            boxes.append(box)
            assert (mask[box] != 0).mean() > 0.99, f"{p['noisy']['path']}: moving object not masked"
        # Away from the object (beyond the dilation), motion is rare.
        near = np.zeros((h, w), bool)
        for box in boxes:
            ys, xs = np.nonzero(box)
            if ys.size:
                near[max(ys.min() - 16, 0):ys.max() + 17, max(xs.min() - 16, 0):xs.max() + 17] = True
        assert ((mask & MASK_MOTION) != 0)[~near].mean() < 0.02


def test_arrays_match_the_manifest_and_each_other(built):
    for pid, p, _, _ in pairs_with_truth(built):
        d = built["out"] / "pairs" / pid
        h, w = p["size"]
        arrays = {k: np.load(d / name) for k, (name, _, _) in PAIR_ARRAYS.items()}
        for k, (_, dtype, _) in PAIR_ARRAYS.items():
            assert arrays[k].dtype == np.dtype(dtype)
        assert arrays["noisy"].shape == arrays["reference"].shape == arrays["mask"].shape == (h, w)
        assert arrays["target"].shape == (3, h, w)
        y0, x0, y1, x1 = p["crops"]["noisy"]
        cfa = CFA.from_json(p["cfa"])
        assert (y1 - y0, x1 - x0) == (h, w) and y0 % cfa.period == 0 and x0 % cfa.period == 0
        # The noisy mosaic against the exposure-matched target at its own
        # colours: residual variance is the fitted noise (plus the
        # reference's), i.e. the arrays line up photosite by photosite.
        colour = cfa.colour_map(h, w)
        g = np.array(p["gain"])[colour]
        t = np.take_along_axis(arrays["target"].astype(np.float64), colour[None], 0)[0] * g
        n = arrays["noisy"].astype(np.float64)
        ok = (arrays["mask"] == 0) & (t < 0.9)
        a, b = np.array(p["noise"]["a"])[colour], np.array(p["noise"]["b"])[colour]
        ratio = np.var((n - t)[ok]) / np.mean((a * np.maximum(t, 0) + b)[ok])
        assert 0.9 < ratio < 1.5, (p["noisy"]["path"], ratio)


def test_manifest_records_sources_and_versions(built):
    m = built["manifest"]
    assert m["format"] == FORMAT and m["format_version"] == FORMAT_VERSION and m["kpnt_version"] == kpnt.__version__
    for p in m["pairs"].values():
        for side in ("noisy", "reference"):
            path = Path(p[side]["path"])
            assert hashlib.sha256(path.read_bytes()).hexdigest() == p[side]["sha256"]
        assert p["camera"] in m["cameras"]
        assert set(p["crops"]) == {"noisy", "target", "reference"}
        assert p["options"]["max_gain"] == 8.0
    kinds = {c["sensor"] for c in m["cameras"].values()}
    assert kinds == {"bayer", "xtrans"}


def test_scene_dirs_groups_by_folder(built, tmp_path):
    # Each folder one scene: the lone ISO 6400 frame stays alone, and the
    # D750 and Canon frames (one folder) still pair only within a camera.
    code, stdout, _ = run_cli([built["root"], "-o", tmp_path / "ds", "--scene-dirs", "--profiles", built["table"],
                               "--no-progress"])
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert code == 1 and len(m["pairs"]) == 7
    assert "lone_ISO6400.dng: alone in its folder" in stdout


def test_rejected_pairs_are_reported_and_not_retried(built, tmp_path):
    import shutil

    raws = tmp_path / "raws"
    raws.mkdir()
    for name in ("EOS6D_ISO100.dng", "EOS6D_ISO3200.dng"):
        shutil.copy2(built["root"] / "bayer" / name, raws / name)
    args = [raws, "-o", tmp_path / "ds", "--profiles", built["table"], "--no-progress", "--min-usable", "0.99"]
    code, stdout, _ = run_cli(args)
    assert code == 1 and "built 0 pair(s)" in stdout          # a dataset without a pair is an error
    assert "rejected pair EOS6D_ISO3200.dng" in stdout and "--min-usable" in stdout
    m = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert not m["pairs"] and len(m["rejected_pairs"]) == 1 and not (tmp_path / "ds" / "pairs").exists() or \
        not any((tmp_path / "ds" / "pairs").iterdir())
    code, stdout, _ = run_cli(args)
    assert code == 1 and "nothing new to build: 0 pair(s) already built, 1 rejected before" in stdout


def test_output_that_is_a_file_is_one_line_before_any_work(tmp_path, monkeypatch):
    raws = tmp_path / "raws"
    raws.mkdir()
    (raws / "a.dng").write_bytes(b"not read")
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setattr("kpnt.cli.build_dataset.build_dataset", lambda *a, **k: pytest.fail("the build started"))
    for out, expect in ((afile, "exists and is not a folder"), (afile / "sub", "afile is not a folder")):
        code, stdout, stderr = run_cli([raws, "-o", out, "--no-progress"])
        err = stderr.strip().splitlines()
        assert code == 1 and not stdout and len(err) == 1 and err[0].startswith("kpnt-build-dataset: error:"), err
        assert expect in err[0] and "choose a" in err[0] and "-o" in err[0] and "Errno" not in err[0], err
    assert afile.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile", "raws"]
