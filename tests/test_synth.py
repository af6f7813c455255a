"""Synthetic raws: unprocessing, raw counts, ISO ladders (files, metadata,
noise, shifts, exposure, moving object) and the kpnt-synth CLI.

Expected clean frames are rebuilt here from the colour functions and the
truth numbers (not through kpnt.synth), so a wrong shift sign, exposure or
noise level in the written files shows up as a residual that is not noise.
"""
import json
import math

import cv2
import numpy as np
import pytest

from kpnt.cli.synth import main
from kpnt.color import camera_matrix, known_cameras, find_camera, render_linear_wb, render_srgb, srgb_to_cam_matrix, \
    srgb_to_linear
from kpnt.errors import KpntError
from kpnt.io import read_raw
from kpnt.mosaic.cfa import BAYER_PHASES, CFA
from kpnt.noise import load_profile_table
from kpnt.synth import (SynthError, clean_scenes, load_photo, load_truth, make_ladder, mosaic, random_wb,
                        to_raw_counts, unprocess)

ISOS = (100, 800, 3200, 12800)
CAMERAS = {"bayer": ("Nikon", "D750"), "xtrans": ("Fujifilm", "X-T1")}
CFAS = [CFA.bayer(p) for p in BAYER_PHASES] + [CFA.xtrans()]


# ----------------------------------------------------------------------
# fixtures
# ----------------------------------------------------------------------
def make_photo(h=96, w=96, seed=0) -> np.ndarray:
    """(h, w, 3) uint8 sRGB texture: smooth colour waves, edges, grain."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 32.0
    r = 0.5 + 0.35 * np.sin(2.1 * xx + 0.7 * yy)
    g = 0.5 + 0.35 * np.cos(1.3 * yy - 0.9 * xx)
    b = 0.45 + 0.3 * np.sin(0.8 * xx * yy)
    img = np.stack([r, g, b], axis=-1)
    img[h // 3: h // 2, w // 4: w // 2] *= 0.4                  # a dark block: edges
    img += rng.uniform(-0.04, 0.04, img.shape)
    return np.round(np.clip(img, 0.02, 0.95) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A darktable-format table for one Bayer and one X-Trans body."""
    def profiles(model):
        return [{"name": f"{model} iso {iso}", "iso": iso,
                 "a": [1.6e-6 * iso / 100, 1.2e-6 * iso / 100, 2.0e-6 * iso / 100],
                 "b": [2e-8 * iso / 100, 1.5e-8 * iso / 100, 2.5e-8 * iso / 100]} for iso in ISOS]
    doc = {"version": 0, "noiseprofiles": [
        {"maker": "Nikon", "models": [{"model": "D750", "profiles": profiles("D750")}]},
        {"maker": "Fujifilm", "models": [{"model": "X-T1", "profiles": profiles("X-T1")}]},
    ]}
    path = tmp_path_factory.mktemp("profiles") / "profiles.json"
    path.write_text(json.dumps(doc))
    return path


def expected_clean(photo_u8, truth, k, with_exposure=True):
    """Frame k's clean normalised mosaic rebuilt from the truth numbers:
    unprocess, crop at margin + shift, exposure gain, CFA sampling."""
    plan = truth["plan"]
    m = np.array(truth["xyz_to_cam"])
    lin = srgb_to_linear(photo_u8.astype(np.float64) / 255.0)
    cam = np.maximum(lin @ srgb_to_cam_matrix(m).T, 0.0) * plan["headroom"] / np.array(truth["wb"])
    dy, dx = truth["frames"][k]["shift"]
    mg, h, w = plan["margin"], plan["height"], plan["width"]
    scene = cam[mg + dy: mg + dy + h, mg + dx: mg + dx + w]
    if with_exposure:
        scene = scene * truth["frames"][k]["exposure_gain"]
    colour = CFA.from_json(truth["cfa"]).colour_map(h, w)
    return np.take_along_axis(scene, colour[:, :, None], 2)[:, :, 0], colour


def noise_ratio(noisy, clean, colour, noise, mask):
    """Per colour: measured residual variance / the profile's prediction."""
    a, b = np.array(noise["a"]), np.array(noise["b"])
    res = noisy - clean
    out = []
    for c in range(3):
        sel = mask & (colour == c)
        pred = a[c] * np.maximum(clean[sel], 0) + b[c]
        out.append(np.mean(res[sel] ** 2) / np.mean(pred))
    return np.array(out)


# ----------------------------------------------------------------------
# unprocessing pieces
# ----------------------------------------------------------------------
@pytest.mark.parametrize("camera", known_cameras())
def test_unprocess_then_render_srgb_returns_the_photo(camera):
    photo = make_photo()
    info = find_camera(camera)
    wb = random_wb(np.random.default_rng(3))
    cam = unprocess(photo, info["xyz_to_cam"], wb, headroom=0.9)
    assert cam.shape == photo.shape and cam.dtype == np.float32 and cam.min() >= 0
    # White at 0.9 of the range, before white balance: green of white = 0.9.
    white = unprocess(np.full((1, 1, 3), 255, np.uint8), info["xyz_to_cam"], wb, headroom=0.9)
    np.testing.assert_allclose(white[0, 0] * wb, 0.9, rtol=1e-5)
    back = render_srgb(cam, wb, info["xyz_to_cam"], baseline_exposure=-math.log2(0.9))
    lin_wb = render_linear_wb(cam, wb, baseline_exposure=-math.log2(0.9))
    ok = (cam > 0).all(axis=2) & (lin_wb < 1).all(axis=2)       # neither out of gamut nor clipped
    assert ok.mean() > 0.5
    err = np.abs(back - photo / 255.0)[ok]
    assert err.max() < 1 / 255


def test_random_wb_ranges_and_seeding():
    gains = np.array([random_wb(np.random.default_rng(s)) for s in range(200)])
    assert (gains[:, 1] == 1).all()
    assert gains[:, 0].min() >= 1.9 and gains[:, 0].max() <= 2.4
    assert gains[:, 2].min() >= 1.5 and gains[:, 2].max() <= 1.9
    assert np.ptp(gains[:, 0]) > 0.3 and np.ptp(gains[:, 2]) > 0.25
    np.testing.assert_array_equal(random_wb(np.random.default_rng(7)), random_wb(np.random.default_rng(7)))


@pytest.mark.parametrize("cfa", CFAS, ids=lambda c: c.kind + "-" + c.name[:4])
def test_mosaic_samples_the_cfa_colour(cfa):
    rgb = np.stack([np.full((12, 18), v, np.float32) for v in (0.1, 0.5, 0.9)], axis=-1)
    got = mosaic(rgb, cfa)
    np.testing.assert_array_equal(got, np.array([0.1, 0.5, 0.9], np.float32)[cfa.colour_map(12, 18)])


def test_to_raw_counts_rounds_clips_and_uses_per_colour_black():
    x = np.array([[0.0, 0.5, -0.02, 1.2]])
    got = to_raw_counts(x, 512, 16383)
    np.testing.assert_array_equal(got, [[512, np.rint(512 + 0.5 * 15871), 512 - np.rint(0.02 * 15871), 16383]])
    assert got.dtype == np.uint16
    assert to_raw_counts(np.array([[-1.0]]), 512, 16383)[0, 0] == 0       # noise far below black stops at 0
    colour = np.array([[0, 1, 2, 1]])
    got = to_raw_counts(np.zeros((1, 4)), [100, 200, 300], 4095, colour=colour)
    np.testing.assert_array_equal(got, [[100, 200, 300, 200]])
    with pytest.raises(SynthError, match="colour map"):
        to_raw_counts(np.zeros((1, 4)), [100, 200, 300], 4095)
    with pytest.raises(SynthError, match="black < white"):
        to_raw_counts(np.zeros((1, 4)), 5000, 4095)


def test_load_photo_formats_and_errors(tmp_path):
    photo = make_photo(40, 60)
    cv2.imwrite(str(tmp_path / "p.png"), photo[:, :, ::-1])                  # cv2 writes BGR
    got = load_photo(tmp_path / "p.png")
    np.testing.assert_allclose(got, photo / 255.0, atol=1e-7)
    cv2.imwrite(str(tmp_path / "p16.png"), (photo[:, :, ::-1].astype(np.uint16) * 257))
    np.testing.assert_allclose(load_photo(tmp_path / "p16.png"), photo / 255.0, atol=1e-6)
    cv2.imwrite(str(tmp_path / "grey.png"), photo[:, :, 0])
    assert (load_photo(tmp_path / "grey.png") == load_photo(tmp_path / "grey.png")[:, :, :1]).all()
    rgba = np.concatenate([photo[:, :, ::-1], np.full((40, 60, 1), 7, np.uint8)], axis=2)
    cv2.imwrite(str(tmp_path / "rgba.png"), rgba)
    np.testing.assert_allclose(load_photo(tmp_path / "rgba.png"), photo / 255.0, atol=1e-7)
    assert load_photo(tmp_path / "p.png", max_size=30).shape == (20, 30, 3)
    assert load_photo(tmp_path / "p.png", max_size=100).shape == (40, 60, 3)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    for bad, msg in ((tmp_path / "bad.png", "cannot decode"), (tmp_path / "none.png", "does not exist")):
        with pytest.raises(SynthError, match=msg):
            load_photo(bad)


# ----------------------------------------------------------------------
# ladders
# ----------------------------------------------------------------------
@pytest.mark.parametrize("cfa", CFAS, ids=lambda c: c.kind + "-" + c.name[:4])
def test_ladder_files_metadata_and_noise(cfa, table, tmp_path):
    photo = make_photo()
    make, model = CAMERAS[cfa.kind]
    tab = load_profile_table(table)
    written = make_ladder(photo, cfa, make, model, tab, [100, 12800], tmp_path, "scene", seed=5)
    assert [p.name for p, _ in written] == ["scene_ISO100.dng", "scene_ISO12800.dng"]
    truth, plan = load_truth(tmp_path / "scene_truth.json")
    assert [f["file"] for f in truth["frames"]] == [p.name for p, _ in written]
    assert [f["reference"] for f in truth["frames"]] == [True, False]
    times, products = [], []
    for k, (path, frame) in enumerate(written):
        r = read_raw(path)
        assert r.cfa == cfa
        assert (r.meta.make, r.meta.model, r.meta.iso) == (make, model, frame["iso"])
        np.testing.assert_allclose(r.meta.wb, truth["wb"], rtol=1e-6)
        np.testing.assert_allclose(r.meta.xyz_to_cam, camera_matrix(make, model), atol=1e-6)
        np.testing.assert_array_equal(r.meta.black, [512, 512, 512])
        assert r.meta.white == 16383 and r.meta.baseline_exposure == 0 and r.meta.noise_profile is None
        assert r.mosaic.shape == (plan.height, plan.width)
        times.append(r.meta.datetime)
        products.append(r.meta.iso * r.meta.exposure_time)
        # Noise at raw scale: the table's numbers x 12.
        iso = frame["iso"]
        np.testing.assert_allclose(frame["noise"]["a"], 12 * np.array([1.6e-6, 1.2e-6, 2.0e-6]) * iso / 100)
        clean, colour = expected_clean(photo, truth, k)
        ratio = noise_ratio(r.mosaic, clean, colour, frame["noise"], ~r.saturated)
        assert np.all(np.abs(ratio - 1) < 0.1), (iso, ratio)
    assert times == sorted(set(times))
    np.testing.assert_allclose(products, products[0], rtol=1e-5)


@pytest.mark.parametrize("cfa", [CFA.bayer("GBRG"), CFA.xtrans()], ids=["bayer", "xtrans"])
def test_ladder_shift_exposure_and_moving_object_match_the_truth(cfa, table, tmp_path):
    photo = make_photo(110, 110, seed=2)
    make, model = CAMERAS[cfa.kind]
    shifts = [(0, 0), (1, -3), (-4, 5)]                   # none a multiple of the CFA period
    evs = [0.0, 0.5, -1.0]
    written = make_ladder(photo, cfa, make, model, load_profile_table(table), [800, 100, 3200], tmp_path, "s",
                          shifts=shifts, exposure_ev=evs, moving_object=True, seed=9)
    truth, plan = load_truth(tmp_path / "s_truth.json")
    assert truth["reference_iso"] == 100 and [f["reference"] for f in truth["frames"]] == [False, True, False]
    assert plan.margin == 5 and plan.height % cfa.period == 0 and plan.width % cfa.period == 0
    boxes = [tuple(f["object_bbox"]) for f in truth["frames"]]
    assert len(set(boxes)) == 3
    scenes = clean_scenes(photo, np.array(truth["xyz_to_cam"]), plan)
    for k, (path, frame) in enumerate(written):
        assert frame["shift"] == list(shifts[k]) and frame["exposure_gain"] == pytest.approx(2 ** evs[k])
        r = read_raw(path)
        clean, colour = expected_clean(photo, truth, k)
        y0, x0, y1, x1 = frame["object_bbox"]
        assert 0 <= y0 < y1 <= plan.height and 0 <= x0 < x1 <= plan.width
        obj = np.zeros(clean.shape, bool)
        obj[y0:y1, x0:x1] = True
        usable = ~r.saturated
        # Outside the object: exactly the shifted, exposure-scaled scene plus noise of the frame's ISO.
        ratio = noise_ratio(r.mosaic, clean, colour, frame["noise"], usable & ~obj)
        assert np.all(np.abs(ratio - 1) < 0.12), (k, ratio)
        # Inside: something else (the object), far beyond the noise ...
        assert noise_ratio(r.mosaic, clean, colour, frame["noise"], usable & obj).min() > 10
        # ... which the plan rebuilds exactly (clean_scenes from the sidecar).
        rebuilt = mosaic(scenes[k], cfa)
        np.testing.assert_allclose(rebuilt[~obj], clean[~obj], rtol=1e-4, atol=1e-6)
        ratio_obj = noise_ratio(r.mosaic, rebuilt, colour, frame["noise"], usable & obj)
        assert np.all(np.abs(ratio_obj - 1) < 0.35), (k, ratio_obj)    # few samples in the box
    # A wrong-sign shift would not fit: the test above can fail.
    truth["frames"][2]["shift"] = [4, -5]
    wrong, colour = expected_clean(photo, truth, 2)
    assert noise_ratio(read_raw(written[2][0]).mosaic, wrong, colour, written[2][1]["noise"],
                       np.ones(wrong.shape, bool)).min() > 3


def test_ladder_is_seeded_and_noise_tag_is_optional(table, tmp_path):
    photo = make_photo(64, 64)
    tab = load_profile_table(table)
    args = (photo, CFA.bayer("RGGB"), "Nikon", "D750", tab, [100, 3200])
    make_ladder(*args, tmp_path / "a", "x", seed=3)
    make_ladder(*args, tmp_path / "b", "x", seed=3)
    make_ladder(*args, tmp_path / "c", "x", seed=4, noise_tag=True)
    for name in ("x_ISO100.dng", "x_ISO3200.dng", "x_truth.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "x_ISO3200.dng").read_bytes() != (tmp_path / "c" / "x_ISO3200.dng").read_bytes()
    r = read_raw(tmp_path / "c" / "x_ISO3200.dng")
    truth, _ = load_truth(tmp_path / "c" / "x_truth.json")
    noise = truth["frames"][1]["noise"]
    np.testing.assert_allclose(r.meta.noise_profile, np.stack([noise["a"], noise["b"]], 1), rtol=1e-9)
    assert read_raw(tmp_path / "a" / "x_ISO3200.dng").meta.noise_profile is None


def test_ladder_refuses_bad_inputs_and_existing_files(table, tmp_path):
    photo = make_photo(64, 64)
    tab = load_profile_table(table)
    rggb = CFA.bayer("RGGB")
    make_ladder(photo, rggb, "Nikon", "D750", tab, [100, 800], tmp_path, "p")
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    with pytest.raises(SynthError, match="exists"):
        make_ladder(photo, rggb, "Nikon", "D750", tab, [100, 800], tmp_path, "p", seed=1)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    make_ladder(photo, rggb, "Nikon", "D750", tab, [100, 800], tmp_path, "p", seed=1, overwrite=True)
    bad = [
        (dict(cfa=CFA.xtrans()), "X-Trans"),
        (dict(make="Fujifilm", model="X-T1"), "Bayer"),
        (dict(isos=[100, 100]), "distinct"),
        (dict(isos=[100, -5]), "positive"),
        (dict(shifts=[(0, 0)]), "one \\(dy, dx\\) per ISO"),
        (dict(shifts=[(0, 0), (0.5, 1)]), "integers"),
        (dict(shifts=[(0, 0), (30, 0)]), "larger photo"),
        (dict(exposure_ev=[0, 9]), "6 EV"),
        (dict(stem="a/b"), "stem"),
    ]
    for change, msg in bad:
        kw = dict(photo=photo, cfa=rggb, make="Nikon", model="D750", table=tab, isos=[100, 800],
                  out_dir=tmp_path / "bad", stem="q")
        kw.update(change)
        with pytest.raises(KpntError, match=msg):
            make_ladder(**kw)
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


# ----------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------
def _cli_args(photos, out, table, *extra):
    return [*map(str, photos), "-o", str(out), "--profiles", str(table), "--camera", "Nikon D750",
            "--isos", "100,800,3200,12800", "--cfa", "RGGB", *extra]


def test_cli_writes_ladders_with_offsets(table, tmp_path, capsys):
    photos = []
    for i, name in enumerate(("one.png", "two.jpg")):
        cv2.imwrite(str(tmp_path / name), make_photo(90, 120, seed=i))
        photos.append(tmp_path / name)
    out = tmp_path / "out"
    rc = main(_cli_args(photos, out, table, "--shift-max", "3", "--exposure-ev", "0.5", "--moving-object",
                        "--max-size", "100"))
    assert rc == 0
    err = capsys.readouterr().err
    assert "error" not in err and "wrote 2 ladder(s), 8 DNG(s)" in err
    for stem in ("one", "two"):
        truth, plan = load_truth(out / stem / f"{stem}_truth.json")
        assert truth["photo_size"] == [75, 100]                 # --max-size 100
        assert [f["iso"] for f in truth["frames"]] == list(ISOS)
        ref = truth["frames"][0]
        assert ref["shift"] == [0, 0] and ref["exposure_ev"] == 0
        others = truth["frames"][1:]
        assert all(max(map(abs, f["shift"])) <= 3 and abs(f["exposure_ev"]) <= 0.5 for f in others)
        assert any(f["shift"] != [0, 0] for f in others) and all(f["object_bbox"] for f in others)
        for iso in ISOS:
            assert (out / stem / f"{stem}_ISO{iso}.dng").is_file()
    t_one = load_truth(out / "one" / "one_truth.json")[0]["frames"][-1]["datetime"]
    t_two = load_truth(out / "two" / "two_truth.json")[0]["frames"][0]["datetime"]
    assert t_one < t_two                                         # ladders apart in time
    # Never overwrites without --force; with it, it does.
    assert main(_cli_args(photos[:1], out, table)) == 1
    assert "exists" in capsys.readouterr().err
    assert main(_cli_args(photos[:1], out, table, "--force")) == 0


def test_cli_bad_photo_is_one_line_and_the_batch_goes_on(table, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "good.png"), make_photo(64, 64))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    photos = [tmp_path / "missing.png", tmp_path / "broken.png", tmp_path / "good.png"]
    rc = main(_cli_args(photos, tmp_path / "out", table))
    assert rc == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 2 and "missing.png" in errors[0] and "broken.png" in errors[1]
    assert (tmp_path / "out" / "good" / "good_ISO12800.dng").is_file()
    assert not (tmp_path / "out" / "missing").exists()


def test_cli_takes_folders_of_photos(table, tmp_path, capsys):
    shots = tmp_path / "shots"
    (shots / "day2").mkdir(parents=True)
    (shots / ".cache").mkdir()
    cv2.imwrite(str(shots / "a.PNG"), make_photo(48, 48, seed=1))
    cv2.imwrite(str(shots / "day2" / "b.jpg"), make_photo(48, 48, seed=2))
    cv2.imwrite(str(shots / ".cache" / "hidden.png"), make_photo(48, 48, seed=3))
    (shots / "notes.txt").write_text("not a photo")
    (tmp_path / "empty").mkdir()
    out = shots / "synth"                      # the ladders inside the photo folder: not searched on a rerun
    rc = main(_cli_args([shots, tmp_path / "empty"], out, table, "--isos", "100,3200"))
    assert rc == 1                             # the empty folder failed; the photos went on
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "empty" in errors[0] and "no JPEG, PNG or TIFF" in errors[0]
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]
    assert (out / "b" / "b_ISO3200.dng").is_file()
    cv2.imwrite(str(out / "a" / "preview.png"), make_photo(48, 48, seed=4))
    assert main(_cli_args([shots], out, table, "--isos", "100,3200", "--force")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a", "b"]      # out's own files were not taken as photos


@pytest.mark.parametrize("extra, msg", [
    (["--cfa", "xtrans"], "X-Trans sensor"),
    (["--camera", "Fujifilm X-T1"], "Bayer sensor"),
    (["--camera", "Leica M9"], "no colour matrix"),
    (["--isos", "100,abc"], "comma-separated"),
    (["--shift-max", "-1"], "shift-max"),
])
def test_cli_bad_options_are_one_line_errors(extra, msg, table, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "p.png"), make_photo(48, 48))
    try:
        rc = main(_cli_args([tmp_path / "p.png"], tmp_path / "out", table, *extra))
    except SystemExit as ex:        # refused by argparse
        rc = ex.code
    assert rc == 2                  # a bad command line
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("kpnt-synth: error:") and msg in err[0]
    assert not (tmp_path / "out" / "p").exists()


def test_cli_output_that_is_a_file_is_one_line_before_any_work(table, tmp_path, capsys, monkeypatch):
    cv2.imwrite(str(tmp_path / "p.png"), make_photo(48, 48))
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setattr("kpnt.cli.synth.load_photo", lambda *a: pytest.fail("a photo was read"))
    for out, expect in ((afile, "exists and is not a folder"), (afile / "sub" / "dir", "afile is not a folder")):
        assert main(_cli_args([tmp_path / "p.png"], out, table)) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("kpnt-synth: error:"), err
        assert expect in err[0] and "choose a" in err[0] and "-o" in err[0] and "Errno" not in err[0], err
    assert afile.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == ["afile", "p.png"]


def test_cli_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as ex:
        main(["--help"])
    assert ex.value.code == 0
    text = " ".join(capsys.readouterr().out.split())        # argparse wraps lines
    for opt in ("--out", "--profiles", "--camera", "--isos", "--cfa", "--shift-max", "--exposure-ev",
                "--moving-object", "--seed", "--max-size", "--raw-scale", "--noise-tag", "--force", "--verbose"):
        assert opt in text
    assert "Nikon D750" in text and "x 12" in text
