"""Unit tests of the dataset builder's pieces: scan, grouping, alignment,
exposure, motion, manifest, writer, LibRaw targets."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kpnt.dataset import align, blocks, exposure, group, manifest, motion, scan, writer
from kpnt.dataset.noisefit import reference_profile
from kpnt.dataset.targets import demosaic_reference
from kpnt.errors import DatasetError
from kpnt.mosaic.cfa import CFA
from kpnt.noise import NoiseProfile, add_noise, load_profile_table
from kpnt.synth import mosaic, unprocess
from kpnt.color import camera_matrix

import test_dataset_helpers as H


# ----------------------------------------------------------------------
# scan
# ----------------------------------------------------------------------
def test_find_raws_by_suffix_any_case_and_named_files(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/x.NEF", "a/y.raf", "a/z.Dng", "a/notes.txt", "a/.hidden.dng", "b.jpg"):
        (tmp_path / name).write_bytes(b"x")
    paths, problems = scan.find_raws([tmp_path / "a", tmp_path / "b.jpg", tmp_path / "missing"])
    assert sorted(p.name for p in paths) == ["b.jpg", "x.NEF", "y.raf", "z.Dng"]
    assert [(p.name, r) for p, r in problems] == [("missing", "no such file or folder")]


def test_colour_base_averages_each_block():
    for cfa in (CFA.bayer("GBRG"), CFA.xtrans(2, 1)):
        h, w = 36, 48
        rgb = np.random.default_rng(0).uniform(0.1, 0.9, 3)
        m = rgb[cfa.colour_map(h, w)]
        base = scan.colour_base(m, cfa)
        assert np.allclose(base, rgb, atol=1e-6)


# ----------------------------------------------------------------------
# grouping
# ----------------------------------------------------------------------
def frame(name, iso, when, thumb, model="D750", size=(100, 150), folder="x"):
    return scan.FrameInfo(path=Path(folder) / name, sha256=name, make="Nikon", model=model, cfa=CFA.bayer(),
                          height=size[0], width=size[1], iso=iso, exposure_time=None, datetime=when, wb=[2, 1, 1.5],
                          black=[0, 0, 0], white=1.0, noise_profile=None, saturated=0.0, thumb=thumb)


def thumbs(seed, n=3, noise=0.02):
    rng = np.random.default_rng(seed)
    base = np.exp(rng.normal(0, 0.8, (16, 24, 3)))
    import cv2
    base = cv2.GaussianBlur(base.astype(np.float32), (0, 0), 2)
    return [base * (1 + noise * rng.standard_normal(base.shape)) * 2 ** rng.uniform(-1, 1) for _ in range(n)]


def test_scenes_by_time_gap_and_similarity():
    ta, tb = thumbs(1), thumbs(2)
    assert group.similarity(ta[0], ta[1]) > 0.9 and group.similarity(ta[0], tb[0]) < group.DEFAULT_MIN_SIMILARITY
    frames = [frame("a100", 100, "2024:01:01 10:00:00", ta[0]), frame("a800", 800, "2024:01:01 10:00:05", ta[1]),
              # same content, but 20 minutes later: a new scene
              frame("c3200", 3200, "2024:01:01 10:20:00", ta[2]),
              # no capture time: grouped by content alone
              frame("b100", 100, None, tb[0]), frame("b6400", 6400, None, tb[1])]
    plan = group.plan_pairs(frames)
    assert sorted((r.sha256, n.sha256) for r, n in plan.pairs) == [("a100", "a800"), ("b100", "b6400")]
    assert [(f.sha256, "alone" in why) for f, why in plan.unpaired] == [("c3200", True)]


def test_pairs_never_cross_cameras_and_references_are_lowest_iso():
    t = thumbs(3, 5)
    when = "2024:01:01 10:00:0{}"
    frames = [frame("n400", 400, when.format(0), t[0]), frame("n100", 100, when.format(1), t[1]),
              frame("n100b", 100, when.format(2), t[2]), frame("n1600", 1600, when.format(3), t[3]),
              frame("c1600", 1600, when.format(4), t[4], model="Z6")]
    plan = group.plan_pairs(frames)
    assert sorted((r.sha256, n.sha256) for r, n in plan.pairs) == [("n100", "n1600"), ("n100", "n400")]
    why = {f.sha256: r for f, r in plan.unpaired}
    assert "same ISO 100" in why["n100b"] and "alone" in why["c1600"]


def test_scene_dirs_and_unknown_iso():
    t = thumbs(4, 4)
    frames = [frame("a", 100, None, t[0], folder="s1"), frame("b", 3200, None, t[1], folder="s1"),
              frame("c", 3200, None, t[2], folder="s2"), frame("d", 0, None, t[3], folder="s1")]
    plan = group.plan_pairs(frames, scene_dirs=True)
    assert [(r.sha256, n.sha256) for r, n in plan.pairs] == [("a", "b")]
    why = {f.sha256: r for f, r in plan.unpaired}
    assert "alone in its folder" in why["c"] and "ISO unknown" in why["d"]


# ----------------------------------------------------------------------
# alignment
# ----------------------------------------------------------------------
def test_lattice_and_snapping():
    assert align.lattice_shifts(CFA.bayer()) == [(0, 0)]
    assert align.lattice_shifts(CFA.xtrans(1, 4)) == [(0, 0), (3, 3)]
    bayer, xt = CFA.bayer("RGGB"), CFA.xtrans()
    assert align.snap_shift((3, -5), bayer) in {(2, -4), (2, -6), (4, -4), (4, -6)}
    assert align.snap_shift((-6, 4), bayer) == (-6, 4)
    assert align.snap_shift((3, 3), xt) == (3, 3) and align.snap_shift((4, 2), xt) == (3, 3)
    for s in ((1, 7), (-7, 5), (2, -2)):
        sy, sx = align.snap_shift(s, xt)
        assert xt.crop(sy, sx) == xt and max(abs(sy - s[0]), abs(sx - s[1])) <= 3


def test_overlap_crops_stay_inside_and_keep_the_cfa():
    al = align.Alignment(shift=(3, -5), snapped=(2, -4), ncc=1.0)
    c = align.overlap_crops((100, 120), al, 2, border=8)
    for box in (c.noisy, c.target, c.reference):
        y0, x0, y1, x1 = box
        assert 0 <= y0 < y1 <= 100 and 0 <= x0 < x1 <= 120 and (y1 - y0, x1 - x0) == c.shape
    assert c.noisy[0] % 2 == 0 and c.noisy[1] % 2 == 0
    assert c.target[0] >= 8 and c.target[2] <= 92 and c.reference[1] >= 8
    with pytest.raises(DatasetError, match="overlap"):
        align.overlap_crops((20, 20), align.Alignment((9, 0), (8, 0), 1.0), 2, border=4)


def synthetic_pair(cfa, shift, gain=1.3, iso_noise=2e-4, seed=0):
    """(noisy, reference) mosaics of the sample photo with a known shift."""
    photo = H.photo(0)
    cam = unprocess(photo, camera_matrix("Nikon", "D750"), np.array([2.0, 1, 1.6]), 0.9)
    m = 8
    h, w = 192, 288
    dy, dx = shift
    ref = mosaic(cam[m:m + h, m:m + w], cfa)
    noisy = mosaic(cam[m + dy:m + dy + h, m + dx:m + dx + w], cfa) * gain
    rng = np.random.default_rng(seed)
    col = cfa.colour_map(h, w)
    ref = add_noise(ref, NoiseProfile(a=[1e-5] * 3, b=[1e-7] * 3), col, rng)
    noisy = add_noise(noisy, NoiseProfile(a=[iso_noise] * 3, b=[iso_noise / 20] * 3), col, rng)
    return noisy, ref


@pytest.mark.parametrize("cfa,shift", [(CFA.bayer("BGGR"), (3, -5)), (CFA.bayer("RGGB"), (-4, 2)),
                                       (CFA.xtrans(), (5, -1)), (CFA.xtrans(2, 3), (3, 3))])
def test_estimate_shift_exact_on_and_off_the_lattice(cfa, shift):
    noisy, ref = synthetic_pair(cfa, shift)
    al = align.estimate_shift(noisy, ref, cfa, [2.0, 1.0, 1.6])
    assert al.shift == shift and al.ncc > 0.8
    assert cfa.crop(*al.snapped) == cfa


def test_estimate_shift_rejects_another_scene():
    cfa = CFA.bayer()
    noisy, ref = synthetic_pair(cfa, (0, 0))
    other = np.ascontiguousarray(ref[::-1, ::-1])
    with pytest.raises(DatasetError, match="do not match|plain translation|black"):
        align.estimate_shift(noisy, other, cfa, [2.0, 1.0, 1.6])


# ----------------------------------------------------------------------
# exposure and motion
# ----------------------------------------------------------------------
def test_match_exposure_robust_to_outliers_and_rejects_absurd_gains():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.02, 0.8, (40, 60, 3))
    y = 1.7 * x + rng.normal(0, 0.002, x.shape) * np.sqrt(x / 0.1)
    y[5:15, 5:20] = rng.uniform(0, 1, (10, 15, 3))             # a moving object
    bad = np.zeros((40, 60), bool)
    m = exposure.match_exposure(y, x, bad)
    assert np.allclose(m.gain, 1.7, rtol=3e-3) and (m.offset == 0).all()
    m2 = exposure.match_exposure(y + 0.01, x, bad, with_offset=True)
    assert np.allclose(m2.gain, 1.7, rtol=5e-3) and np.allclose(m2.offset, 0.01, atol=2e-3)
    mask = bad.copy()
    mask[5:15, 5:20] = True
    var = np.full(x.shape, 0.002 ** 2)
    m3 = exposure.match_exposure(y, x, mask, variance=var)
    assert np.allclose(m3.gain, 1.7, rtol=2e-3)
    reason = exposure.check_gain(exposure.ExposureMatch(np.array([12.0, 10, 11]), np.zeros(3), np.zeros(3)), 8.0)
    assert reason and "--max-gain" in reason
    assert exposure.check_gain(m, 8.0) is None
    with pytest.raises(DatasetError, match="well-exposed"):
        exposure.match_exposure(y, x, np.ones((40, 60), bool))


def test_motion_blocks_find_the_changed_region():
    rng = np.random.default_rng(1)
    x = rng.uniform(0.05, 0.6, (50, 70, 3))
    prof = NoiseProfile(a=[1e-3] * 3, b=[1e-5] * 3)
    counts = np.array([4, 8, 4])
    sd = np.sqrt((prof.a * x + prof.b) / counts)
    y = 1.2 * x + sd * rng.standard_normal(x.shape) * np.sqrt(1.2)
    y[20:30, 30:45] += 0.2
    moved, _ = motion.motion_blocks(y, x, np.broadcast_to(counts, x.shape), np.full(3, 1.2), np.zeros(3),
                                    prof.exposure_scaled(1.2), None)
    assert moved[21:29, 31:44].all()
    assert moved.sum() < 1.3 * 10 * 15 + 60
    grown = motion.dilate_mask(moved, 2)
    assert grown[18, 28] and not grown[0, 0]


def test_masked_block_means_skip_invalid_sites():
    cfa = CFA.bayer("RGGB")
    vals = np.arange(64, dtype=np.float32).reshape(8, 8)
    valid = np.ones((8, 8), bool)
    valid[0, 0] = False                                      # an R site of the first block
    means, counts = blocks.masked_block_means(vals, cfa, 4, valid)
    assert counts[0, 0].tolist() == [3, 8, 4] and counts[1, 1].tolist() == [4, 8, 4]
    assert means[0, 0, 0] == pytest.approx(np.mean([2, 16, 18]))


# ----------------------------------------------------------------------
# manifest, writer, targets, reference noise
# ----------------------------------------------------------------------
def test_manifest_errors_and_atomic_save(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset folder"):
        manifest.load_manifest(tmp_path / "nope")
    with pytest.raises(DatasetError, match="no manifest.json here"):
        manifest.load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{broken")
    with pytest.raises(DatasetError, match="unreadable manifest"):
        manifest.load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DatasetError, match="not a kpnt dataset"):
        manifest.load_manifest(tmp_path)
    doc = manifest.new_manifest()
    manifest.save_manifest(tmp_path, doc)
    assert manifest.load_manifest(tmp_path)["format_version"] == manifest.FORMAT_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"], "no temporary file left behind"


def test_writer_is_all_or_nothing(tmp_path):
    arrays = {"noisy": np.zeros((4, 6)), "reference": np.zeros((4, 6)), "target": np.zeros((3, 4, 6)),
              "mask": np.zeros((4, 6), np.uint8)}
    writer.write_pair(tmp_path, "abc", arrays)
    assert manifest.pair_complete(tmp_path, "abc")
    assert np.load(tmp_path / "pairs" / "abc" / "noisy.npy").dtype == np.float16
    with pytest.raises(DatasetError, match="missing"):
        writer.write_pair(tmp_path, "def", {"noisy": arrays["noisy"]})
    with pytest.raises(TypeError):
        writer.write_pair(tmp_path, "ghi", {**arrays, "target": object()})
    assert sorted(p.name for p in (tmp_path / "pairs").iterdir()) == ["abc"]


@pytest.mark.parametrize("cfa", [CFA.bayer("GRBG"), CFA.xtrans(1, 2)])
def test_demosaic_reference_keeps_measured_sites_and_flags_clipping(cfa):
    rng = np.random.default_rng(2)
    h, w = 96, 132                                           # X-Trans: padded to 512 for LibRaw
    wb = np.array([2.0, 1.0, 1.5])
    m = rng.uniform(0.01, 0.45, (h, w)).astype(np.float32)
    m[10:20, 10:20] = 0.8                                    # x * wb > 1 for red and blue
    rgb, clipped = demosaic_reference(m, cfa, wb)
    assert rgb.shape == (3, h, w) and rgb.dtype == np.float32
    colour = cfa.colour_map(h, w)
    native = np.take_along_axis(rgb, colour[None], 0)[0]
    inner = np.zeros((h, w), bool)
    inner[8:-8, 8:-8] = True
    ok = inner & ~clipped
    assert np.abs(native - m)[ok].max() < 3e-5
    assert clipped[12:18, 12:18].all() and clipped.mean() < 0.05


def test_reference_profile_sources(tmp_path):
    cfa = CFA.bayer()
    rng = np.random.default_rng(3)
    clean = np.tile(np.linspace(0.05, 0.6, 240), (240, 1))
    truth = NoiseProfile(a=[2e-5] * 3, b=[2e-7] * 3)
    m = add_noise(clean, truth, cfa.colour_map(240, 240), rng)
    sat = np.zeros(m.shape, bool)
    prof, src = reference_profile(m, cfa, sat, [[1e-5, 1e-7]] * 3, "Nikon", "D750", 100)
    assert src == "tag" and np.allclose(prof.a, 1e-5)
    table = load_profile_table(H.write_table(tmp_path / "t.json"))
    prof, src = reference_profile(m, cfa, sat, None, "Nikon", "D750", 100, table)
    assert src == "table x12" and np.allclose(prof.a, [1.6e-6 * 12, 1.2e-6 * 12, 2.0e-6 * 12])
    prof, src = reference_profile(m, cfa, sat, None, "Pentax", "K-1", 100, table)
    assert src == "blind" and np.allclose(prof.a, 2e-5, rtol=0.3)
