"""The quality benchmark (kpnt.bench; its CLI kpnt.bench.cli): noise push
beyond a camera's profiled ISOs, per-case seeds and CFA phases, the
synthetic raws' noise, colour-fidelity statistics, issue 13's checks, the
peer cache, and end-to-end runs on tiny photos (cache reuse, model selection,
error maps)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from kpnt.bench import cache as C
from kpnt.bench import cases, checks, metrics
from kpnt.bench.cli import main
from kpnt.color import find_camera
from kpnt.mosaic import CFA
from kpnt.noise import load_profile_table
from kpnt.noise.profile import NoiseProfile

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def table(tmp_path):
    prof = lambda iso, a, b: {"name": f"cam iso {iso}", "iso": iso, "a": [a, a * 0.8, a * 1.1], "b": [b, b * 0.9, b * 1.2]}  # noqa: E731
    doc = {"version": 0, "noiseprofiles": [{"maker": "Testmaker", "models": [{"model": "T1", "profiles": [
        prof(200, 1e-5, 2e-8), prof(800, 4e-5, 1e-7), prof(6400, 3e-4, 4e-6)]}]}]}
    p = tmp_path / "np.json"
    p.write_text(json.dumps(doc))
    return load_profile_table(p)


# ----------------------------------------------------------------------
# noise profiles of the cells
# ----------------------------------------------------------------------
def test_push_profile_scales_a_by_r_and_b_by_r_squared():
    p = NoiseProfile(a=[1e-4, 2e-4, 3e-4], b=[1e-6, 2e-6, 3e-6])
    q = cases.push_profile(p, 4.0)
    np.testing.assert_allclose(q.a, 4.0 * p.a, rtol=1e-15)
    np.testing.assert_allclose(q.b, 16.0 * p.b, rtol=1e-15)
    assert cases.push_profile(p, 1.0) == p
    with pytest.raises(ValueError):
        cases.push_profile(p, 0.0)


def test_push_profile_matches_a_simulated_push():
    """Draw x with var a m + b, multiply by r: var(y) is the pushed profile's
    variance at the pushed mean y = r m."""
    rng = np.random.default_rng(0)
    a, b, r, m = 3e-4, 4e-6, 2.0, 0.2
    x = m + rng.normal(size=400_000) * np.sqrt(a * m + b)
    y = r * x
    q = cases.push_profile(NoiseProfile(a=[a] * 3, b=[b] * 3), r)
    want = float(q.variance(np.array(r * m), np.array(1)))
    assert y.var() == pytest.approx(want, rel=0.01)
    assert want == pytest.approx(r * r * (a * m + b))
    assert y.var() > 3 * (a * m + b)   # a clamp (the old behaviour) would be 4x too low here


def test_profile_at_iso(table):
    for iso in (200, 800, 6400):
        prof, how = cases.profile_at_iso(table, "Testmaker", "T1", iso)
        assert prof == table.lookup("Testmaker", "T1", iso) and how == "profiled"
    prof, how = cases.profile_at_iso(table, "Testmaker", "T1", 3200)
    assert prof == table.lookup("Testmaker", "T1", 3200) and how == "interpolated"
    last = table.lookup("Testmaker", "T1", 6400)
    prof, how = cases.profile_at_iso(table, "Testmaker", "T1", 12800)
    assert how == "pushed from ISO 6400"
    np.testing.assert_allclose(prof.a, 2 * last.a, rtol=1e-12)
    np.testing.assert_allclose(prof.b, 4 * last.b, rtol=1e-12)
    assert table.lookup("Testmaker", "T1", 12800) == last        # the table itself still clamps
    prof, how = cases.profile_at_iso(table, "Testmaker", "T1", 100)
    assert how == "clamped to ISO 200" and prof == table.lookup("Testmaker", "T1", 200)


def test_clean_cell_profile_is_near_zero(table):
    cam = dict(make="Testmaker", model="T1")
    prof, how = cases.cell_profile(table, cam, cases.CLEAN)
    ref = table.lookup("Testmaker", "T1", 200)
    np.testing.assert_allclose(prof.a, ref.a * cases.CLEAN_SCALE)
    assert "none" in how


# ----------------------------------------------------------------------
# cases: seeds, phases, noise
# ----------------------------------------------------------------------
def test_case_seeds_are_distinct_per_photo_and_cell():
    seeds = {cases.case_seed(s, c, k) for s in ("bayer", "xtrans") for c in (cases.CLEAN, 100, 800, 3200, 12800) for k in range(60)}
    assert len(seeds) == 2 * 5 * 60


def test_case_cfa_is_random_per_case_and_reproducible():
    xtrans_phases = len({CFA.xtrans(dy, dx).pattern.tobytes() for dy in range(6) for dx in range(6)})
    assert xtrans_phases == 18          # the 6x6 repeat is its own shift by (3, 3)
    for sensor, n_phases in (("bayer", 4), ("xtrans", xtrans_phases)):
        got = [cases.case_cfa(sensor, cases.case_seed(sensor, 800, k)) for k in range(300)]
        assert got == [cases.case_cfa(sensor, cases.case_seed(sensor, 800, k)) for k in range(300)]
        assert all(c.kind == sensor for c in got)
        assert len({c.pattern.tobytes() for c in got}) == n_phases     # every phase occurs
    with pytest.raises(ValueError):
        cases.case_cfa("foveon", 1)


def _flat_case(level=0.3, seed=7, cfa=None, a=2e-4, b=2e-6, size=96):
    cam = find_camera("Nikon D750")
    img = torch.full((3, size, size), level)
    prof = NoiseProfile(a=[a] * 3, b=[b] * 3)
    return cases.make_case(img, cfa or CFA.bayer("GBRG"), cam, prof, seed, iso=800)


def test_make_case_is_reproducible_from_its_seed():
    c1, c2, c3 = _flat_case(seed=5), _flat_case(seed=5), _flat_case(seed=6)
    assert np.array_equal(c1["counts"], c2["counts"]) and np.array_equal(c1["wb"], c2["wb"])
    assert not np.array_equal(c1["counts"], c3["counts"]) and not np.array_equal(c1["wb"], c3["wb"])
    assert c1["counts"].dtype == np.uint16 and c1["meta"].iso == 800


def test_make_case_noise_has_the_profiles_variance_per_colour():
    a, b = 3e-4, 5e-6
    case = _flat_case(a=a, b=b, size=240, cfa=CFA.xtrans(1, 4))
    x = (case["counts"].astype(np.float64) - cases.BLACK) / (cases.WHITE - cases.BLACK)
    colour = case["cfa"].colour_map(*x.shape)
    ref = np.take_along_axis(case["ref_cam"], colour[..., None], axis=2)[..., 0]
    for c in range(3):
        m = colour == c
        want = a * ref[m].mean() + b
        assert (x - ref)[m].var() == pytest.approx(want, rel=0.08)
        assert abs((x - ref)[m].mean()) < 4 * np.sqrt(want / m.sum()) + 1e-4


def test_make_case_puts_each_colour_at_its_cfa_sites():
    """A pure-red scene: only the CFA's red sites of the case's phase rise
    above black (camera matrices mix a little, so 'above' is relative)."""
    cam = find_camera("Nikon D750")
    img = torch.zeros(3, 48, 48)
    img[0] = 0.8
    for cfa in (CFA.bayer("RGGB").crop(1, 0), CFA.xtrans(2, 3)):
        case = cases.make_case(img, cfa, cam, NoiseProfile(a=[1e-9] * 3, b=[1e-12] * 3), 1)
        colour = cfa.colour_map(48, 48)
        x = case["counts"].astype(float) - cases.BLACK
        assert x[colour == 0].mean() > 3 * x[colour == 1].mean()
        assert x[colour == 0].mean() > 3 * x[colour == 2].mean()


def test_memory_raw_equals_the_dng_round_trip(tmp_path):
    pytest.importorskip("rawpy")
    from kpnt.io.dng import write_cfa_dng
    from kpnt.io.raw import read_raw

    case = _flat_case(cfa=CFA.xtrans(3, 5))
    path = tmp_path / "c.dng"
    write_cfa_dng(path, case["counts"], case["cfa"], case["meta"], overwrite=True)
    disk, mem = read_raw(path), cases.memory_raw(case)
    assert disk.cfa == mem.cfa
    np.testing.assert_array_equal(disk.mosaic, mem.mosaic)
    np.testing.assert_allclose(disk.meta.wb, mem.meta.wb, rtol=1e-6)


# ----------------------------------------------------------------------
# colour fidelity
# ----------------------------------------------------------------------
def test_colour_stats_bin_a_known_bias_by_saturation():
    h, w = 40, 60
    ref = np.full((h, w, 3), 0.4)
    ref[:, 30:] = [0.6, 0.5, 0.05]            # saturation 0.92: the last bin
    out = ref.copy()
    out[:, 30:] += [-0.02, 0.0, 0.01]         # a hue shift there only
    s = metrics.pool_colour_stats([metrics.colour_stats(out, ref, border=0), metrics.colour_stats(ref, ref, border=0)])
    bias, n = np.asarray(s["bias"]), np.asarray(s["n"])
    assert n[0] == 2 * h * 30 and n[-1] == 2 * h * 30 and n[1:-1].sum() == 0
    np.testing.assert_allclose(bias[-1], [-0.01, 0.0, 0.005], atol=1e-12)   # pooled over both images
    np.testing.assert_allclose(bias[0], 0.0, atol=1e-12)
    assert np.isnan(bias[2]).all()
    np.testing.assert_allclose(np.asarray(s["rel"])[-1], [-0.01 / 0.6, 0.0, 0.005 / 0.05])


def test_score_returns_psnrs_ssim_and_colour_stats():
    case = _flat_case()
    sc = metrics.score(case["ref_cam"], case)
    assert sc["lin"] == np.inf and sc["srgb"] == np.inf and sc["ssim"] == pytest.approx(1.0)
    assert np.allclose(sc["colour"]["err"], 0.0)
    worse = metrics.score(case["ref_cam"] * 1.05, case)
    assert worse["lin"] < 60 and (np.asarray(worse["colour"]["err"]).sum() > 0)


# ----------------------------------------------------------------------
# issue 13's checks
# ----------------------------------------------------------------------
def _row(sensor, cell, method, lin, srgb):
    return dict(sensor=sensor, cell=cell, method=method, psnr_lin=lin, psnr_srgb=srgb)


def _colour(top_bias):
    bias = [[0.0] * 3] * 4 + [list(top_bias)]
    return dict(bias=bias, rel=bias, n=[10, 10, 10, 10, 5], edges=list(metrics.SAT_EDGES))


def test_acceptance_checks_on_both_sides_of_each_boundary():
    rows = [
        _row("bayer", 800, "kpnt", 40.0, 33.0), _row("bayer", 800, "demosaicnet+bm3d", 40.0, 32.9),     # tie lin: pass
        _row("bayer", 3200, "kpnt", 38.0, 31.0), _row("bayer", 3200, "demosaicnet+bm3d", 38.01, 30.0),  # lin short
        _row("bayer", 100, "kpnt", 45.0, 38.0), _row("bayer", 100, "demosaicnet", 44.0, 37.0),
        _row("bayer", "clean", "kpnt", 47.0, 39.0), _row("bayer", "clean", "demosaicnet", 50.0, 40.0),  # -1.0 sRGB: pass
        _row("bayer", "clean", "kpnt@iso100-noise", 47.5, 38.5),                                         # lin worse: fail
        _row("bayer", 12800, "kpnt", 35.0, 29.0),                                                          # no peer: n/a
    ]
    colour = {("bayer", "clean", "kpnt"): _colour([0.002, 0.001, 0.0]), ("bayer", "clean", "libraw"): _colour([0.001, 0.0006, 0.0]),
              ("bayer", 800, "kpnt"): _colour([0.003, 0.0, 0.0]), ("bayer", 800, "libraw"): _colour([-0.001, 0.0, 0.0])}
    got = {(c["point"], c["cell"], c["what"].split(" ")[-1] if c["point"] == 2 else None): c for c in checks.acceptance(rows, colour)}
    assert got[(1, 800, None)]["passed"] is True
    assert got[(1, 3200, None)]["passed"] is False and got[(1, 3200, None)]["deltas"]["lin"] == pytest.approx(-0.01)
    assert got[(1, 100, None)]["passed"] is True
    assert got[(1, 12800, None)]["passed"] is None
    assert got[(2, "clean", "(sRGB)")]["passed"] is True
    assert got[(2, "clean", "kpnt@iso100-noise")]["passed"] is False
    b = {c["cell"]: c for c in checks.acceptance(rows, colour) if c["point"] == 3}
    assert b["clean"]["passed"] is True               # 2.0x and 1.67x: at most 2x
    assert b[800]["passed"] is False                  # 3x
    assert b[3200]["passed"] is None                  # no colour statistics
    lines = checks.summary(checks.acceptance(rows, colour))
    assert lines == ["issue 13 acceptance (1) for kpnt: FAIL (1 of 4 n/a)", "issue 13 acceptance (2) for kpnt: FAIL",
                     "issue 13 acceptance (3) for kpnt: FAIL (3 of 5 n/a)"]
    assert [checks.verdict(v) for v in (True, False, None)] == ["PASS", "FAIL", "n/a"]


# ----------------------------------------------------------------------
# the peer cache
# ----------------------------------------------------------------------
def test_cache_key_changes_with_everything_the_numbers_depend_on():
    case = _flat_case()
    k = C.case_key(case, "menon", {"refining_step": True}, {"colour-demosaicing": "0.2.7"})
    assert k == C.case_key(dict(case), "menon", {"refining_step": True}, {"colour-demosaicing": "0.2.7"})
    other = dict(case, counts=case["counts"].copy())
    other["counts"][3, 4] += 1
    assert C.case_key(other, "menon", {"refining_step": True}, {"colour-demosaicing": "0.2.7"}) != k
    assert C.case_key(case, "libraw", {"refining_step": True}, {"colour-demosaicing": "0.2.7"}) != k
    assert C.case_key(case, "menon", {"refining_step": False}, {"colour-demosaicing": "0.2.7"}) != k
    assert C.case_key(case, "menon", {"refining_step": True}, {"colour-demosaicing": "0.2.8"}) != k
    assert C.case_key(dict(case, cfa=CFA.bayer("RGGB")), "menon", {"refining_step": True}, {"colour-demosaicing": "0.2.7"}) != k


def test_cache_writers_merge(tmp_path):
    """Two processes filling one cache (one per sensor) keep both's entries."""
    a, b = C.PeerCache(tmp_path / "pc"), C.PeerCache(tmp_path / "pc")
    a.put("ka", {"lin": 1.0})
    a.save()
    b.put("kb", {"lin": 2.0})
    b.save()
    merged = C.PeerCache(tmp_path / "pc")
    assert merged.get("ka") == {"lin": 1.0} and merged.get("kb") == {"lin": 2.0}
    assert [p.name for p in (tmp_path / "pc").iterdir()] == [C.FILE_NAME]


def test_cache_round_trip_and_atomic_save(tmp_path):
    c = C.PeerCache(tmp_path / "pc")
    assert c.get("k1") is None and c.misses == 1
    c.put("k1", {"lin": 40.5, "colour": {"n": [1, 2]}})
    c.save()
    assert [p.name for p in (tmp_path / "pc").iterdir()] == [C.FILE_NAME]    # no temporary file left
    d = C.PeerCache(tmp_path / "pc")
    assert d.get("k1") == {"lin": 40.5, "colour": {"n": [1, 2]}} and d.hits == 1
    (tmp_path / "pc" / C.FILE_NAME).write_text("{not json")
    with pytest.raises(SystemExit, match="cannot read the peer cache"):
        C.PeerCache(tmp_path / "pc")
    off = C.PeerCache(None)
    off.put("k", {})
    off.save()
    assert off.get("k") is None


# ----------------------------------------------------------------------
# end to end on tiny photos
# ----------------------------------------------------------------------
@pytest.fixture()
def tiny_bench(tmp_path):
    """Two small photos and a noise table with the default cameras."""
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:60, 0:72] / 72.0
    for i in range(2):
        img = np.stack([0.2 + 0.6 * xx, 0.7 - 0.5 * yy, 0.1 + 0.8 * xx * yy], -1)
        img[20:40, 24:48] = [0.9, 0.8, 0.05] if i == 0 else [0.8, 0.05, 0.1]     # saturated patches
        img = np.clip(img + 0.03 * rng.standard_normal(img.shape), 0, 1)
        cv2.imwrite(str(photos / f"p{i}.png"), np.rint(img[:, :, ::-1] * 255).astype(np.uint8))
    prof = lambda iso, a, b: {"name": f"iso {iso}", "iso": iso, "a": [a] * 3, "b": [b] * 3}  # noqa: E731
    doc = {"version": 0, "noiseprofiles": [
        {"maker": "Nikon", "models": [{"model": "D750", "profiles": [prof(100, 2e-6, 1e-9), prof(800, 1e-5, 2e-8), prof(3200, 4e-5, 2e-7)]}]},
        {"maker": "Fujifilm", "models": [{"model": "X-T1", "profiles": [prof(200, 3e-6, 1e-9), prof(800, 1e-5, 3e-8)]}]}]}
    (tmp_path / "np.json").write_text(json.dumps(doc))
    return tmp_path


def _main(tmp, *extra):
    return main(["--photos", str(tmp / "photos"), "--profiles", str(tmp / "np.json"), "--speed-mp", "0",
                    "--kpnt-input", "memory", "--threads", "1", *extra])


def test_end_to_end_cache_reuse_changes_no_number(tiny_bench, capsys):
    tmp = tiny_bench
    args = ["--sensors", "bayer", "--isos", "clean,800", "--methods", "kpnt,menon", "--peer-cache", str(tmp / "pc"),
            "--error-maps", str(tmp / "maps"), "--error-map-photos", "0,1"]
    assert _main(tmp, *args, "--json", str(tmp / "a.json")) == 0
    first = capsys.readouterr().out
    # the second run in two worker processes: the cache and the scoring in
    # workers must not change a number
    assert _main(tmp, *args, "--jobs", "2", "--json", str(tmp / "b.json")) == 0
    second = capsys.readouterr().out
    a, b = (json.loads((tmp / f"{n}.json").read_text()) for n in "ab")
    key = lambda r: (r["cell"], r["method"])  # noqa: E731
    ra, rb = {key(r): r for r in a["rows"]}, {key(r): r for r in b["rows"]}
    assert set(ra) == {("clean", "kpnt"), ("clean", "kpnt@iso100-noise"), ("clean", "menon"), (800, "kpnt"), (800, "menon")}
    for k in ra:
        for f in ("psnr_lin", "psnr_srgb", "ssim_srgb"):
            assert ra[k][f] == rb[k][f], (k, f)
    assert ra[("clean", "menon")]["cached"] == 0 and rb[("clean", "menon")]["cached"] == 2
    per = ra[(800, "kpnt")]["photos"]                                   # per-photo scores, by photo number
    assert sorted(per) == ["0", "1"] and np.mean([v[1] for v in per.values()]) == pytest.approx(ra[(800, "kpnt")]["psnr_srgb"])
    assert rb[(800, "kpnt")]["cached"] == 0                              # kpnt is measured, never cached
    assert a["cache"]["misses"] == 4 and b["cache"]["hits"] == 4
    assert "(c)" not in first and "| menon | " in second and "(c)" in second
    assert "check (2) bayer clean" in second and "check (3) bayer ISO 800" in second
    assert "issue 13 acceptance (1) for kpnt: n/a" in second              # no demosaicnet+bm3d ran
    img = cv2.imread(str(tmp / "maps" / "errormap_bayer.png"))
    # two crops (rows) of reference + kpnt's output, error and low-pass error
    assert img is not None and img.shape[0] > 2 * 60 and img.shape[1] > 4 * 60
    assert "without demosaicnet" in second


def test_model_selection_scores_every_weights_file(tiny_bench, capsys):
    tmp = tiny_bench
    for name in ("run_a", "run_b"):
        (tmp / "runs" / name).mkdir(parents=True)
        shutil.copy(ROOT / "kpnt" / "weights" / "bayer.safetensors", tmp / "runs" / name / "weights.safetensors")
    # both sensors asked, Bayer weights only: X-Trans is skipped with a note
    assert _main(tmp, "--isos", "800", "--methods", "kpnt", "--limit", "1",
                 "--weights-glob", str(tmp / "runs" / "*" / "weights.safetensors"), "--json", str(tmp / "m.json")) == 0
    out = capsys.readouterr().out
    rows = json.loads((tmp / "m.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["kpnt:run_a", "kpnt:run_b"]
    assert rows[0]["psnr_srgb"] == rows[1]["psnr_srgb"]                 # the same weights on the same cases
    assert "weights files, PSNR linear / sRGB" in out and "| run_a |" in out and "| run_b |" in out
    assert "no xtrans weights: kpnt skipped for xtrans" in out


def test_time_budget_stops_early_and_keeps_the_cache(tiny_bench, capsys):
    tmp = tiny_bench
    args = ["--sensors", "bayer", "--isos", "800", "--methods", "menon", "--peer-cache", str(tmp / "pc")]
    assert _main(tmp, *args, "--time-budget", "1e-6") == 3
    assert "partial run" in capsys.readouterr().err
    assert _main(tmp, *args, "--json", str(tmp / "full.json")) == 0
    assert [r["n"] for r in json.loads((tmp / "full.json").read_text())["rows"]] == [2]
    with pytest.raises(SystemExit):
        _main(tmp, "--time-budget", "60")
    assert "without --peer-cache" in capsys.readouterr().err


def test_limit_spreads_the_subset_over_the_folder(tmp_path):
    from kpnt.bench.runner import select_photos

    for i in range(7):
        cv2.imwrite(str(tmp_path / f"{i:02d}.png"), np.full((12, 18, 3), 20 * i, np.uint8))
    idx, photos = select_photos(tmp_path, 3, 1)
    assert idx == [0, 2, 4] and photos.names == ["00.png", "02.png", "04.png"]
    idx, photos = select_photos(tmp_path, None, 1)
    assert idx == list(range(7)) and len(photos.photos) == 7
    assert select_photos(tmp_path, 50, 1)[0] == list(range(7))


def test_cli_errors_are_one_line(tiny_bench, capsys):
    tmp = tiny_bench
    with pytest.raises(SystemExit):
        _main(tmp, "--isos", "clean,abc")
    assert "neither 'clean' nor an ISO" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="matches no file"):
        _main(tmp, "--methods", "kpnt", "--weights-glob", str(tmp / "nothing*.safetensors"))
    with pytest.raises(SystemExit):
        main(["--photos", str(tmp / "missing"), "--profiles", str(tmp / "np.json")])
    assert "no such folder" in capsys.readouterr().err


def test_gap_map_finds_where_kpnt_trails_demosaicnet(tmp_path):
    from kpnt.bench import errormaps as E

    rng = np.random.default_rng(0)
    size = 200
    xyz_to_cam = np.array([[0.7, -0.1, -0.05], [-0.4, 1.2, 0.2], [-0.05, 0.1, 0.6]])
    photos = type("P", (), {"photos": [torch.rand(3, 8, 8) for _ in range(4)]})()
    maps = E.ErrorMaps(tmp_path, "clean", photos, [0, 1, 2, 3], which=[0])
    for k, amount in enumerate([0.01, 0.08, 0.04, 0.02]):
        ref = 0.2 + 0.3 * rng.random((size, size, 3))
        case = {"wb": np.ones(3), "xyz_to_cam": xyz_to_cam, "ref_cam": ref}
        kpnt = ref.copy()
        kpnt[20:60, 120:180] += amount                  # kpnt's error: one patch, larger on photo 1
        dn = ref.copy()
        dn[140:190, 10:60] += 0.1                       # demosaicnet's error: elsewhere
        maps.add("bayer", "clean", k, "kpnt", kpnt, case)
        maps.add("bayer", "clean", k, "demosaicnet", dn, case)
        (y, x), excess = E.gap_window(*(E.render_srgb(a, case["wb"], xyz_to_cam) for a in (kpnt, dn, ref)), size=40)
        assert 10 <= y <= 30 and 110 <= x <= 150 and excess > 0, (y, x)
    assert [k for _, k, _ in maps.gaps["bayer"]] == [1, 2, 3]           # the three largest excesses, largest first
    written = maps.write()
    assert str(tmp_path / "errorgap_bayer.png") in written and str(tmp_path / "errormap_bayer.png") in written
    img = cv2.imread(str(tmp_path / "errorgap_bayer.png"))
    assert img.shape[0] > 3 * E.CROP and img.shape[1] > 7 * E.CROP   # 3 rows; reference + 2 x 3 panels


def test_ensemble_rows_are_scored_beside_the_model(tiny_bench, capsys):
    tmp = tiny_bench
    assert _main(tmp, "--sensors", "bayer", "--isos", "clean", "--methods", "kpnt", "--limit", "1", "--ensemble", "1,2",
                 "--json", str(tmp / "e.json")) == 0
    out = capsys.readouterr().out
    rows = {r["method"]: r for r in json.loads((tmp / "e.json").read_text())["rows"]}
    assert {"kpnt", "kpnt:views2", "kpnt@iso100-noise", "kpnt:views2@iso100-noise"} <= set(rows)
    assert rows["kpnt"]["psnr_lin"] != rows["kpnt:views2"]["psnr_lin"]      # another output, not a copy
    assert "check (2) bayer clean: kpnt:views2 >= demosaicnet - 1 dB" in out
    from kpnt.bench.cli import parser

    with pytest.raises(SystemExit) as e:
        parser().parse_args(["--ensemble", "3"])
    assert e.value.code == 2 and "view counts from 1, 2, 4, 8" in capsys.readouterr().err
