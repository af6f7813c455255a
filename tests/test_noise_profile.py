"""NoiseProfile: variance model, white balance / exposure math, JSON."""
import json

import numpy as np
import pytest

from kpnt.errors import NoiseProfileError
from kpnt.mosaic.cfa import CFA
from kpnt.noise import DARKTABLE_RAW_SCALE, NoiseProfile

P = NoiseProfile(a=[2e-3, 1e-3, 1.5e-3], b=[4e-6, 3e-6, 5e-6])


def test_variance_mosaic_and_rgb():
    col = CFA.bayer("RGGB").colour_map(4, 4)
    x = np.full((4, 4), 0.5)
    v = P.variance(x, col)
    assert v.shape == (4, 4)
    assert v[0, 0] == pytest.approx(2e-3 * 0.5 + 4e-6)  # R
    assert v[0, 1] == pytest.approx(1e-3 * 0.5 + 3e-6)  # G
    assert v[1, 1] == pytest.approx(1.5e-3 * 0.5 + 5e-6)  # B
    rgb = P.variance(np.full((2, 2, 3), 0.25), [0, 1, 2])
    np.testing.assert_allclose(rgb[0, 0], P.a * 0.25 + P.b)
    # No photons below black: shot-noise term is 0 there.
    np.testing.assert_allclose(P.variance(-0.1, [0, 1, 2]), P.b)


def test_white_balanced_matches_scaled_samples():
    g = np.array([2.1, 1.0, 1.7])
    wb = P.white_balanced(g)
    np.testing.assert_allclose(wb.a, g * P.a)
    np.testing.assert_allclose(wb.b, g * g * P.b)
    # var(g x) at y = g x equals g^2 var(x) at x
    x = 0.3
    np.testing.assert_allclose(wb.variance(g * x, [0, 1, 2]), g**2 * P.variance(x, [0, 1, 2]))
    with pytest.raises(NoiseProfileError, match="gains"):
        P.white_balanced([1.0, 0.0, 1.0])


def test_exposure_scaled_and_scaled():
    k = 4.0
    e = P.exposure_scaled(k)
    np.testing.assert_allclose(e.variance(k * 0.1, [0, 1, 2]), k * k * P.variance(0.1, [0, 1, 2]))
    s = P.scaled(DARKTABLE_RAW_SCALE)
    np.testing.assert_allclose(s.a, 12 * P.a)
    np.testing.assert_allclose(s.b, 12 * P.b)
    with pytest.raises(NoiseProfileError):
        P.exposure_scaled(-1)


def test_json_roundtrip_and_array():
    d = json.loads(json.dumps(P.to_json()))
    assert NoiseProfile.from_json(d) == P
    arr = P.as_array()
    assert arr.shape == (2, 3) and arr.dtype == np.float32
    np.testing.assert_allclose(arr, np.stack([P.a, P.b]), rtol=1e-6)


@pytest.mark.parametrize(
    "a, b, msg",
    [([1, 2], [1, 2, 3], "3 values"), ([-1e-3, 1e-3, 1e-3], [0, 0, 0], ">= 0"), ([np.nan, 1, 1], [0, 0, 0], "finite")],
)
def test_validation(a, b, msg):
    with pytest.raises(NoiseProfileError, match=msg):
        NoiseProfile(a=a, b=b)


def test_immutable_and_bad_colour():
    with pytest.raises(ValueError):
        P.a[0] = 1.0
    with pytest.raises(NoiseProfileError, match="colour"):
        P.variance(0.1, 3)
    with pytest.raises(NoiseProfileError, match="'a' and 'b'"):
        NoiseProfile.from_json({"a": [1, 1, 1]})
