"""darktable profile table: loading, lookup, ISO interpolation, errors."""
import json
from pathlib import Path

import numpy as np
import pytest

from kpnt.errors import NoiseProfileError
from kpnt.noise import DARKTABLE_RAW_SCALE, load_profile_table


def prof(iso, a, b, **extra):
    return {"name": f"iso {iso}", "iso": iso, "a": [a, a / 2, a * 1.5], "b": [b, b / 2, b * 2], **extra}


TABLE = {
    "version": 0,
    "noiseprofiles": [
        {
            "maker": "Fujifilm",
            "models": [
                {"model": "X-T1", "profiles": [prof(200, 1e-5, 1e-8), prof(800, 4e-5, 4e-8), prof(3200, 1e-4, 1e-7)]},
                {"model": "X-E2", "profiles": [prof(400, 2e-5, 2e-8)]},
            ],
        },
        {
            "maker": "Nikon",
            "models": [
                {"model": "D750", "profiles": [prof(100, 1e-6, 1e-9), prof(100, 3e-6, 3e-9), prof(100, 2e-6, 2e-9), prof(6400, 9e-5, 9e-8)]},
                {"model": "D750", "comment": "second contributor", "profiles": [prof(1600, 2e-5, 2e-8)]},
                {"model": "D7000", "skip": True, "profiles": [prof(100, 1e-6, 1e-9)]},
                {"model": "D810", "profiles": [prof(100, 1e-6, 1e-9), prof(200, 1e-6, 1e-9, skip=True), {"iso": 400, "a": [-1e-6, 1e-6, 1e-6], "b": [0, 0, 0]}]},
            ],
        },
        {"maker": "Canon", "models": [{"model": "EOS 5D Mark III", "profiles": [prof(100, 5e-6, 5e-9)]}]},
    ],
}


@pytest.fixture()
def table(tmp_path):
    p = tmp_path / "noiseprofiles.json"
    p.write_text(json.dumps(TABLE))
    return load_profile_table(p)


def test_cameras_and_isos(table):
    cams = table.cameras()
    assert ("Fujifilm", "X-T1") in cams and ("Nikon", "D750") in cams
    assert ("Nikon", "D7000") not in cams  # model-level skip
    assert table.isos("Fujifilm", "X-T1") == [200, 800, 3200]
    # two contributors merged; duplicate ISO 100 merged by median
    assert table.isos("Nikon", "D750") == [100, 1600, 6400]
    # profile-level skip and negative a left out (and reported)
    assert table.isos("Nikon", "D810") == [100]
    assert len(table.rejected) == 1 and "D810" in table.rejected[0]


def test_lookup_exact_raw_scale(table):
    p = table.lookup("Fujifilm", "X-T1", 800)
    np.testing.assert_allclose(p.a, DARKTABLE_RAW_SCALE * np.array([4e-5, 2e-5, 6e-5]))
    np.testing.assert_allclose(p.b, DARKTABLE_RAW_SCALE * np.array([4e-8, 2e-8, 8e-8]))
    q = table.lookup("Fujifilm", "X-T1", 800, raw_scale=1.0)
    np.testing.assert_allclose(q.a, [4e-5, 2e-5, 6e-5])
    # median of three duplicates at ISO 100
    np.testing.assert_allclose(table.lookup("Nikon", "D750", 100, raw_scale=1.0).a[0], 2e-6)


def test_lookup_interpolates_and_clamps(table):
    mid = table.lookup("Fujifilm", "X-T1", 2000, raw_scale=1.0)  # halfway 800..3200
    np.testing.assert_allclose(mid.a[0], 4e-5 + 0.5 * (1e-4 - 4e-5))
    np.testing.assert_allclose(mid.b[2], 2 * (4e-8 + 0.5 * (1e-7 - 4e-8)))
    hi = table.lookup("Fujifilm", "X-T1", 12800, raw_scale=1.0)
    np.testing.assert_allclose(hi.a, table.lookup("Fujifilm", "X-T1", 3200, raw_scale=1.0).a)
    lo = table.lookup("Fujifilm", "X-T1", 50, raw_scale=1.0)
    np.testing.assert_allclose(lo.a, table.lookup("Fujifilm", "X-T1", 200, raw_scale=1.0).a)


@pytest.mark.parametrize(
    "make, model",
    [("FUJIFILM", "X-T1"), ("fujifilm", "x-t1"), ("NIKON CORPORATION", "NIKON D750"), ("Canon", "Canon EOS 5D Mark III"), ("Canon", "EOS 5D MARK III")],
)
def test_lookup_name_variants(table, make, model):
    canonical = {"X-T1": ("Fujifilm", "X-T1"), "D750": ("Nikon", "D750")}
    key = next((v for k, v in canonical.items() if k.lower() in model.lower()), ("Canon", "EOS 5D Mark III"))
    assert table.lookup(make, model, 400) == table.lookup(*key, 400)


def test_unknown_camera_lists_close_names(table):
    with pytest.raises(NoiseProfileError) as e:
        table.lookup("Fujifilm", "X-T2", 800)
    msg = str(e.value)
    assert "X-T2" in msg and "Fujifilm X-T1" in msg and "\n" not in msg
    with pytest.raises(NoiseProfileError, match="ISO"):
        table.lookup("Fujifilm", "X-T1", 0)


def test_load_errors(tmp_path):
    with pytest.raises(NoiseProfileError, match="not found"):
        load_profile_table(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(NoiseProfileError, match="not valid JSON"):
        load_profile_table(bad)
    bad.write_text(json.dumps({"profiles": []}))
    with pytest.raises(NoiseProfileError, match="noiseprofiles"):
        load_profile_table(bad)
    t = json.loads(json.dumps(TABLE))
    t["noiseprofiles"][0]["models"][0]["profiles"][1]["a"] = [1, 2]
    bad.write_text(json.dumps(t))
    with pytest.raises(NoiseProfileError, match=r"noiseprofiles\[0\]\.models\[0\]\.profiles\[1\].*'a'"):
        load_profile_table(bad)
    bad.write_text(json.dumps({"noiseprofiles": [{"maker": "X", "models": []}]}))
    with pytest.raises(NoiseProfileError, match="no usable"):
        load_profile_table(bad)


def test_table_that_is_not_json_says_what_it_should_be(tmp_path):
    import kpnt

    sample = Path(kpnt.__file__).resolve().parent / "data" / "sample_profiles.json"
    assert load_profile_table(sample).lookup("Nikon", "D750", 3200)       # the example named is a table
    for name, data in (("notes.json", b"{not json"), ("photo.dng", b"II*\x00\x89\xff\xfe binary")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(NoiseProfileError) as e:
            load_profile_table(tmp_path / name)
        msg = str(e.value)
        assert "\n" not in msg and name in msg and "not valid JSON" in msg
        assert "darktable's noiseprofiles.json" in msg and str(sample) in msg and "pass such a file instead" in msg


def test_canon_regional_names_find_the_european_profile():
    """darktable's table names Canon bodies as sold in Europe; a raw from a
    Japanese or American body ('EOS Kiss X4', 'EOS Rebel T2i') must find
    the same profile as 'EOS 550D'."""
    from kpnt.noise.table import model_key

    assert model_key("Canon", "Canon EOS Kiss X4") == model_key("Canon", "EOS 550D")
    assert model_key("Canon", "EOS Rebel T2i") == model_key("Canon", "Canon EOS 550D")
    assert model_key("Canon", "EOS Kiss X7") == model_key("Canon", "EOS 100D") != model_key("Canon", "EOS 700D")
    assert model_key("Canon", "EOS 5D") == "eos5d"                       # names without aliases unchanged
    assert model_key("Nikon", "Kiss X4") != model_key("Canon", "EOS 550D")  # aliases are per maker
