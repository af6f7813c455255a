"""RawMeta: validation of every field, copies, dict round trip."""
import json

import numpy as np
import pytest

from kpnt.errors import KpntError
from kpnt.io.meta import MetaError, RawMeta


def good(**kw):
    d = dict(black=[512.0, 510.0, 514.0], white=16383, wb=[2.1, 1.0, 1.6],
             xyz_to_cam=[[0.8, -0.2, -0.05], [-0.4, 1.2, 0.15], [-0.05, 0.1, 0.6]],
             make="Fujifilm", model="X-T1", iso=800, exposure_time=0.004, f_number=2.8, focal_length=23.0,
             datetime="2024:01:02 03:04:05", orientation=6, baseline_exposure=1.0,
             noise_profile=[[1e-4, 1e-6], [9e-5, 1e-6], [1.1e-4, 1e-6]])
    d.update(kw)
    return d


def test_defaults_and_types():
    m = RawMeta(black=[0, 0, 0], white=4095, wb=[2, 1, 1.5], xyz_to_cam=np.eye(3))
    assert (m.make, m.model, m.iso, m.orientation, m.baseline_exposure) == ("", "", 0, 1, 0.0)
    assert m.exposure_time is None and m.noise_profile is None and m.wb_source == "as_shot"
    assert m.black.dtype == np.float64 and m.white == 4095.0 and isinstance(m.white, float)


def test_arrays_are_copied():
    black = np.array([1.0, 2.0, 3.0])
    m = RawMeta(**good(black=black))
    black[0] = 99
    assert m.black[0] == 1.0


@pytest.mark.parametrize("field,value,words", [
    ("black", [1, 2], "shape"),
    ("black", [-1, 0, 0], ">= 0"),
    ("white", 500, "exceed"),
    ("wb", [2.0, 1.2, 1.5], "green = 1"),
    ("wb", [2.0, 1.0, 0.0], "positive"),
    ("wb", [np.nan, 1.0, 1.0], "finite"),
    ("xyz_to_cam", np.zeros((3, 3)), "singular"),
    ("xyz_to_cam", np.eye(4), "shape"),
    ("iso", -5, "non-negative"),
    ("iso", 100.5, "integer"),
    ("exposure_time", 0.0, "positive"),
    ("f_number", -2.0, "positive"),
    ("datetime", "2024-01-02 03:04:05", "YYYY:MM:DD"),
    ("orientation", 0, "1..8"),
    ("orientation", 9, "1..8"),
    ("noise_profile", [[1e-4, 1e-6]], "shape"),
    ("noise_profile", [[-1e-4, 0], [1e-4, 0], [1e-4, 0]], "slopes"),
    ("wb_source", "guess", "wb_source"),
    ("make", None, "strings"),
])
def test_bad_values_name_the_field(field, value, words):
    with pytest.raises(MetaError) as err:
        RawMeta(**good(**{field: value}))
    msg = str(err.value)
    assert words in msg and "\n" not in msg
    assert f"RawMeta.{field}" in msg or field in ("make",)
    assert isinstance(err.value, KpntError)


def test_equality_compares_arrays():
    assert RawMeta(**good()) == RawMeta(**good())
    assert RawMeta(**good()) != RawMeta(**good(black=[512.0, 510.0, 515.0]))
    assert RawMeta(**good()) != RawMeta(**good(noise_profile=None))
    assert RawMeta(**good()) != RawMeta(**good(iso=801))


def test_dict_round_trip_through_json():
    m = RawMeta(**good())
    back = RawMeta.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back == m
    with pytest.raises(MetaError, match="unknown RawMeta fields"):
        RawMeta.from_dict({**m.to_dict(), "lens": "XF23"})
