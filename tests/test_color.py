"""Colour maths: sRGB curve (numpy and torch), camera matrices, scoring
renders and PSNR."""
import numpy as np
import pytest
import torch

from kpnt.color import (
    SRGB_TO_XYZ,
    CameraMatrixError,
    cam_to_srgb_matrix,
    camera_info,
    camera_matrix,
    find_camera,
    known_cameras,
    linear_to_srgb,
    psnr,
    render_linear_wb,
    render_srgb,
    srgb_to_cam_matrix,
    srgb_to_linear,
)
from kpnt.errors import KpntError

XTRANS_BODIES = {"X-E1", "X-E2", "X-T1", "X-T10", "X100S", "X30"}


# ----------------------------------------------------------------------
# sRGB curve
# ----------------------------------------------------------------------
def test_srgb_curve_reference_values():
    # IEC 61966-2-1: the two segments meet at 0.0031308 -> 0.04045.
    x = np.array([0.0, 0.0031308, 0.18, 0.5, 1.0])
    want = np.array([0.0, 0.04045, 0.46135, 0.73536, 1.0])
    np.testing.assert_allclose(linear_to_srgb(x), want, atol=2e-5)
    np.testing.assert_allclose(srgb_to_linear(want), x, atol=2e-5)


def test_srgb_curve_round_trip_and_dtypes():
    x = np.linspace(-0.01, 1.2, 2001)
    np.testing.assert_allclose(srgb_to_linear(linear_to_srgb(x)), x, atol=1e-12)
    assert linear_to_srgb(x).dtype == np.float64
    assert linear_to_srgb(x.astype(np.float32)).dtype == np.float32
    assert srgb_to_linear(np.arange(256, dtype=np.uint8)).dtype == np.float32
    assert np.all(np.diff(linear_to_srgb(x)) > 0)


def test_srgb_curve_torch_matches_numpy_with_finite_gradients():
    x = np.linspace(0.0, 1.0, 257)
    t = torch.tensor(x, requires_grad=True)
    y = linear_to_srgb(t)
    assert isinstance(y, torch.Tensor)
    np.testing.assert_allclose(y.detach().numpy(), linear_to_srgb(x), atol=1e-12)
    y.sum().backward()
    assert torch.isfinite(t.grad).all() and (t.grad > 0).all()

    e = torch.tensor(linear_to_srgb(x), requires_grad=True)
    lin = srgb_to_linear(e)
    np.testing.assert_allclose(lin.detach().numpy(), x, atol=1e-12)
    lin.sum().backward()
    assert torch.isfinite(e.grad).all()


# ----------------------------------------------------------------------
# matrices
# ----------------------------------------------------------------------
@pytest.mark.parametrize("name", known_cameras())
def test_camera_matrices_map_white_to_white(name):
    m = find_camera(name)["xyz_to_cam"]
    c2s = cam_to_srgb_matrix(m)
    s2c = srgb_to_cam_matrix(m)
    np.testing.assert_allclose(c2s.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(s2c.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(c2s @ s2c, np.eye(3), atol=1e-12)
    # A camera matrix sees green most in its green row; sanity of the data.
    assert np.argmax(m[1]) == 1 and m[0, 0] > 0 and m[2, 2] > 0


def test_srgb_to_cam_is_the_row_normalised_product():
    m = camera_matrix("Canon", "EOS 5D Mark III")
    raw = m @ SRGB_TO_XYZ
    np.testing.assert_allclose(srgb_to_cam_matrix(m), raw / raw.sum(axis=1, keepdims=True))


def test_camera_lookup_spelling_sensor_kinds_and_source_numbers():
    # Spot check against LibRaw's adobe_coeff row for the D750, / 10000.
    d750 = np.array([9020, -2890, -715, -4535, 12436, 2348, -934, 1919, 7086]).reshape(3, 3) / 10000
    np.testing.assert_array_equal(camera_matrix("nikon", "d750"), d750)
    assert camera_info("FUJIFILM", "x-t10")["model"] == "X-T10"         # the table's spelling back
    info = find_camera("Fujifilm X-T10")
    assert info["sensor"] == "xtrans" and info["make"] == "Fujifilm"
    np.testing.assert_array_equal(info["xyz_to_cam"], camera_matrix("Fujifilm", "X-T1"))
    kinds = {n: find_camera(n)["sensor"] for n in known_cameras()}
    assert {n.split(" ", 1)[1] for n, k in kinds.items() if k == "xtrans"} == XTRANS_BODIES
    assert sum(k == "bayer" for k in kinds.values()) >= 5
    # The returned matrix is a copy: editing it leaves the table alone.
    info["xyz_to_cam"][0, 0] = 99.0
    assert camera_matrix("Fujifilm", "X-T10")[0, 0] != 99.0


def test_unknown_camera_is_a_one_line_error_listing_known_ones():
    with pytest.raises(CameraMatrixError) as err:
        camera_matrix("Canon", "EOS 1D Mark XX")
    msg = str(err.value)
    assert isinstance(err.value, KpntError) and "\n" not in msg
    assert "EOS 1D Mark XX" in msg and "Nikon D750" in msg
    with pytest.raises(CameraMatrixError, match="MAKE MODEL"):
        find_camera("D750")
    with pytest.raises(CameraMatrixError, match="3, 3"):
        cam_to_srgb_matrix(np.eye(2))
    with pytest.raises(CameraMatrixError, match="singular"):
        cam_to_srgb_matrix(np.array([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]]) @ np.linalg.inv(SRGB_TO_XYZ))


# ----------------------------------------------------------------------
# scoring renders
# ----------------------------------------------------------------------
def test_render_linear_wb_applies_gains_exposure_and_clip():
    wb = np.array([2.0, 1.0, 1.5])
    cam = np.array([[[0.25, 0.25, 0.25], [0.8, 0.8, 0.8]]])
    out = render_linear_wb(cam, wb)
    np.testing.assert_allclose(out, [[[0.5, 0.25, 0.375], [1.0, 0.8, 1.0]]])
    out_be = render_linear_wb(cam, wb, baseline_exposure=1.0)
    np.testing.assert_allclose(out_be, [[[1.0, 0.5, 0.75], [1.0, 1.0, 1.0]]])
    assert out.dtype == np.float32
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        render_linear_wb(cam[0], wb)
    with pytest.raises(ValueError, match="positive"):
        render_linear_wb(cam, [1.0, 0.0, 1.0])


def test_render_srgb_turns_camera_grey_into_neutral_grey():
    m = camera_matrix("Sony", "ILCE-7M2")
    wb = np.array([2.2, 1.0, 1.7])
    levels = np.array([0.02, 0.18, 0.5, 0.9])
    cam = (levels[:, None] / wb[None, :])[None]            # (1, 4, 3) greys seen by the camera
    out = render_srgb(cam, wb, m)
    np.testing.assert_allclose(out[0], np.repeat(linear_to_srgb(levels)[:, None], 3, 1), atol=1e-5)
    # One stop of baseline exposure doubles linear grey before the curve.
    out_be = render_srgb(cam, wb, m, baseline_exposure=1.0)
    np.testing.assert_allclose(out_be[0, :3, 1], linear_to_srgb(np.minimum(2 * levels[:3], 1.0)), atol=1e-5)


def test_render_srgb_inverts_a_forward_colour_transform():
    rng = np.random.default_rng(0)
    m = camera_matrix("Olympus", "E-M10")
    wb = np.array([1.9, 1.0, 1.6])
    srgb_lin = rng.uniform(0.05, 0.6, (8, 8, 3))
    cam = (srgb_lin @ srgb_to_cam_matrix(m).T) / wb
    np.testing.assert_allclose(render_srgb(cam, wb, m), linear_to_srgb(srgb_lin), atol=1e-5)


# ----------------------------------------------------------------------
# PSNR
# ----------------------------------------------------------------------
def test_psnr_known_value_and_border():
    a = np.zeros((20, 20, 3))
    b = a.copy()
    b[6:-6, 6:-6] = 0.1                                     # MSE 0.01 inside the border
    assert psnr(a, b) == pytest.approx(20.0)
    assert psnr(a, b, peak=2.0) == pytest.approx(20.0 + 20 * np.log10(2))
    c = a.copy()
    c[:6] = 1.0                                             # differences only in the border
    assert psnr(a, c) == float("inf")
    assert psnr(a, c, border=0) < 10
    assert psnr(a[..., 0], b[..., 0]) == pytest.approx(20.0)


def test_psnr_rejects_bad_shapes():
    with pytest.raises(ValueError, match="equal shape"):
        psnr(np.zeros((10, 10)), np.zeros((10, 11)))
    with pytest.raises(ValueError, match="border"):
        psnr(np.zeros((10, 10)), np.zeros((10, 10)), border=5)
