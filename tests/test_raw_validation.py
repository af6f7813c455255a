"""Tag validation in read_raw and the checks before denoising (issue 17 items 1 and 4).

Each case corrupts one tag of a DNG written by kpnt's own writer (in place,
with kpnt.fuzz.set_tag) and expects a one-line RawReadError that names the
file and the tag; the noise-level checks refuse non-finite and absurd levels
from every source.
"""
import logging

import numpy as np
import pytest

from kpnt.denoise import NoiseChoice
from kpnt.errors import KpntError, RawReadError
from kpnt.fuzz import set_tag
from kpnt.io import RawMeta, read_raw, write_cfa_dng
from kpnt.io import raw as rawmod
from kpnt.io.tiff import DOUBLE, SRATIONAL, UNDEFINED, TagError, read_ifds, tag_numbers
from kpnt.io.validate import ValidationError, check_noise_level, check_noise_profile
from kpnt.mosaic import CFA


def meta(**kw):
    d = dict(black=[512] * 3, white=16383, wb=[2.0, 1.0, 1.6],
             xyz_to_cam=[[0.8, -0.2, -0.05], [-0.4, 1.2, 0.15], [-0.05, 0.1, 0.6]], make="Acme", model="Test",
             iso=1600, exposure_time=1 / 125, f_number=4.0, focal_length=50.0, baseline_exposure=0.25,
             noise_profile=[[2e-4, 4e-6]] * 3)
    d.update(kw)
    return RawMeta(**d)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "good.dng"
    img = np.random.default_rng(0).integers(600, 16000, (36, 48)).astype(np.uint16)
    write_cfa_dng(path, img, CFA.bayer("RGGB"), meta())
    return path.read_bytes()


def refused(tmp_path, data, *words):
    path = tmp_path / "bad.dng"
    path.write_bytes(data)
    with pytest.raises(RawReadError) as err:
        read_raw(path)
    msg = str(err.value)
    assert "\n" not in msg and "bad.dng" in msg, msg
    for w in words:
        assert w in msg, msg
    return msg


def test_the_source_reads(tmp_path, good):
    (tmp_path / "ok.dng").write_bytes(good)
    got = read_raw(tmp_path / "ok.dng")
    assert got.meta.baseline_exposure == 0.25 and got.meta.noise_profile[0].tolist() == [2e-4, 4e-6]


@pytest.mark.parametrize("code,name", [(50730, "BaselineExposure"), (51041, "NoiseProfile"), (50714, "BlackLevel"),
                                       (50778, "CalibrationIlluminant1"), (50721, "ColorMatrix1"),
                                       (262, "PhotometricInterpretation")])
def test_zero_count_names_the_tag(tmp_path, good, code, name):
    msg = refused(tmp_path, set_tag(good, code, count=0), name, str(code))
    assert "0 value(s)" in msg or "type" in msg


def test_noise_profile_of_three_values(tmp_path, good):
    refused(tmp_path, set_tag(good, 51041, count=3), "NoiseProfile (51041)", "3 value")


def test_colour_matrix_of_type_undefined(tmp_path, good):
    refused(tmp_path, set_tag(good, 50721, typ=UNDEFINED), "ColorMatrix1 (50721)", "UNDEFINED")


@pytest.mark.parametrize("value", [1e39, 1e300, float("nan"), float("inf"), -1e-4, 5.0])
def test_noise_profile_values_out_of_range(tmp_path, good, value):
    refused(tmp_path, set_tag(good, 51041, values=[2e-4, value] * 3), "NoiseProfile (51041)")


def test_noise_profile_zero_slope(tmp_path, good):
    refused(tmp_path, set_tag(good, 51041, values=[0.0, 1e-6] * 3), "NoiseProfile (51041)", "S > 0")


def test_colour_matrix_huge_or_zero(tmp_path, good):
    refused(tmp_path, set_tag(good, 50721, values=[(2**31 - 1, 1)] * 9), "ColorMatrix1 (50721)")
    refused(tmp_path, set_tag(good, 50721, values=[(0, 1)] * 9), "no colour matrix")


def test_black_level_at_or_above_white(tmp_path, good):
    refused(tmp_path, set_tag(good, 50714, values=[16383] * 4), "white level", "black level")


def test_black_level_count_disagrees_with_repeat_dim(tmp_path, good):
    refused(tmp_path, set_tag(good, 50714, count=3), "BlackLevel (50714)", "BlackLevelRepeatDim")


def test_degenerate_as_shot_neutral(tmp_path, good):
    # AsShotNeutral 1/wb: a blue gain 100x the green one is no camera's
    refused(tmp_path, set_tag(good, 50728, values=[(1, 1), (1, 1), (1, 100)]), "white balance", "degenerate")


def test_exposure_time_no_rational_holds_is_left_out(tmp_path, good, caplog):
    path = tmp_path / "t.dng"
    path.write_bytes(set_tag(good, 33434, values=[(4294967295, 1)]))
    with caplog.at_level(logging.WARNING, logger="kpnt"):
        got = read_raw(path)
    assert got.meta.exposure_time is None and got.meta.f_number == 4.0
    assert any("ExposureTime" in r.getMessage() for r in caplog.records)
    # ... so that writing the output cannot fail after the denoise
    from kpnt.io import write_linear_dng
    write_linear_dng(tmp_path / "o.dng", np.zeros((36, 48, 3), np.uint16), got.meta)


def test_any_other_error_while_reading_is_one_typed_line(tmp_path, good, monkeypatch):
    (tmp_path / "bad.dng").write_bytes(good)

    def boom(*a, **k):
        raise IndexError("tuple index out of range")

    monkeypatch.setattr(rawmod, "_file_tags", boom)
    msg = refused(tmp_path, good, "looks damaged", "IndexError")
    assert "re-copy" in msg


@pytest.mark.parametrize("change", [dict(typ=DOUBLE), dict(count=0), dict(values=[3])])
def test_bad_exif_pointer_is_not_followed(tmp_path, good, change):
    # an optional IFD: not followed (no IndexError on count 0, no seek to 3)
    path = tmp_path / "bad.dng"
    path.write_bytes(set_tag(good, 34665, **change))
    ifds = read_ifds(path)
    assert [d["_kind"] for d in ifds] == ["main"]


def test_make_of_another_type_is_ignored(tmp_path, good, monkeypatch, caplog):
    monkeypatch.setattr(rawmod, "_libraw_c", lambda: None)   # the TIFF tags are the fallback
    path = tmp_path / "m.dng"
    path.write_bytes(set_tag(good, 271, typ=UNDEFINED))
    with caplog.at_level(logging.WARNING, logger="kpnt"):
        got = read_raw(path)
    assert got.meta.make == "" and got.meta.model == "Test"
    assert any("Make (271)" in r.getMessage() for r in caplog.records)


def test_tag_numbers_checks_type_count_range():
    ifd = {50721: (1.0, 2.0), "_types": {50721: SRATIONAL}}
    assert tag_numbers(ifd, 50721, count=2).tolist() == [1.0, 2.0]
    with pytest.raises(TagError, match=r"ColorMatrix1 \(50721\) has 2 value\(s\), expected 9"):
        tag_numbers(ifd, 50721, count=9)
    with pytest.raises(TagError, match="expected DOUBLE"):
        tag_numbers(ifd, 50721, (DOUBLE,))
    with pytest.raises(TagError, match="holds 2"):
        tag_numbers(ifd, 50721, lo=0, hi=1)


# ----------------------------------------------------------------------
# noise levels, whatever their source
# ----------------------------------------------------------------------
@pytest.mark.parametrize("a,b,words", [
    (float("inf"), 0.0, "not a finite number"), (1e300, 0.0, "not a plausible"), (float("nan"), 1e-6, "finite"),
    (1e-4, 1e39, "not a plausible"), (-1e-4, 1e-6, "negative"), (0.0, 0.0, "no noise"), (1e-4, -2e-4, "no noise"),
])
def test_check_noise_level_refuses(a, b, words):
    with pytest.raises(ValidationError) as err:
        check_noise_level(a, b, "--noise")
    assert words in str(err.value) and str(err.value).startswith("--noise") and "\n" not in str(err.value)
    assert isinstance(err.value, KpntError)


def test_check_noise_level_accepts_real_profiles():
    check_noise_level(1e-4, 1e-6, "x")
    check_noise_level(0.05, 1e-3, "x")          # ISO 409600-ish
    check_noise_level(2e-4, -1e-7, "x")         # fitted tables hold slightly negative offsets
    assert check_noise_profile(np.array([[1e-4] * 3, [1e-6] * 3]), "x").shape == (2, 3)


def test_noise_choice_refuses_float32_overflow():
    # 1e39 is inf in float32: the model would return NaN everywhere
    with pytest.raises(ValidationError, match="noise level from dng"):
        NoiseChoice(np.array([[1e39] * 3, [0.0] * 3]), "dng")
    with pytest.raises(ValidationError, match="noise level from given"):
        NoiseChoice(np.array([[np.inf, 1e-4, 1e-4], [0.0] * 3]), "given")


def test_tag_counts_claiming_the_whole_file_are_skipped(tmp_path):
    # 5000 entries, each claiming the whole 4 MB file as DOUBLE values: read
    # naively that is 20 GB of tag data; they are skipped like out-of-file values
    import struct
    import time

    size, n = 4 << 20, 5000
    ents = b"".join(struct.pack("<HHII", 40000 + i, 12, (size - 64) // 8, 16) for i in range(n))
    ents += struct.pack("<HHI", 271, 2, 5) + struct.pack("<I", 8 + 2 + 12 * (n + 1) + 4)
    data = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", n + 1) + ents + struct.pack("<I", 0) + b"Acme\0"
    (tmp_path / "big.tif").write_bytes(data + b"\0" * (size - len(data)))
    t0 = time.perf_counter()
    (ifd,) = read_ifds(tmp_path / "big.tif")
    assert time.perf_counter() - t0 < 5
    assert ifd[271] == "Acme" and not any(40000 <= k < 40000 + n for k in ifd if isinstance(k, int))
