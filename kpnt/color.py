"""Colour maths: the sRGB curve, camera -> sRGB matrices, scoring renders, PSNR.

Conventions (DESIGN.md sections 1 and 8): camera RGB is linear, white = 1,
*without* white balance; ``wb`` are as-shot gains with green = 1; an
``xyz_to_cam`` matrix maps XYZ (D65) to camera RGB (the DNG ``ColorMatrix``,
rows R, G, B of the camera).

The camera -> sRGB matrix follows dcraw's ``cam_xyz_coeff`` and Brooks et al.
2019 ("Unprocessing images for learned raw denoising"): ``rgb_to_cam =
xyz_to_cam @ SRGB_TO_XYZ`` with every row scaled to sum to 1, so that sRGB
white maps to white-balanced camera white (1, 1, 1); ``cam_to_srgb`` is its
inverse.  That is why the renders below apply the white balance first.

The sRGB curve functions take numpy arrays or torch tensors and return the
same type (training synthesises on the fly in torch).

Example::

    >>> import numpy as np
    >>> m = camera_matrix("Nikon", "D750")
    >>> np.allclose(cam_to_srgb_matrix(m) @ np.ones(3), 1.0)
    True
    >>> float(linear_to_srgb(np.array(0.5)))  # doctest: +ELLIPSIS
    0.735...
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from kpnt.errors import KpntError

#: Linear sRGB -> XYZ, D65 white (IEC 61966-2-1; Lindbloom's table).
SRGB_TO_XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)

#: Where the bundled camera matrices live (source: kpnt/data/README.md).
CAMERA_MATRICES_PATH = Path(__file__).resolve().parent / "data" / "camera_matrices.json"

# sRGB curve constants (IEC 61966-2-1).
_LIN_THRESHOLD = 0.0031308
_ENC_THRESHOLD = 0.04045


class CameraMatrixError(KpntError):
    """A camera has no bundled colour matrix, or a matrix is unusable."""


# ----------------------------------------------------------------------
# sRGB transfer function
# ----------------------------------------------------------------------
def _float_array(x) -> np.ndarray:
    """float64 stays float64; everything else (ints, float16/32) -> float32."""
    x = np.asarray(x)
    return x if x.dtype == np.float64 else x.astype(np.float32)


def linear_to_srgb(x):
    """Apply the sRGB curve (linear light -> encoded value).

    Args:
        x: numpy array or torch tensor, any shape, linear values (1 = white).
    Returns:
        Same type and shape.  Values <= 0.0031308 (negatives included) use
        the linear segment ``12.92 x``; the power branch is evaluated on a
        clamped copy so that torch gradients stay finite everywhere.
    """
    if isinstance(x, torch.Tensor):
        power = 1.055 * torch.clamp(x, min=_LIN_THRESHOLD) ** (1 / 2.4) - 0.055
        return torch.where(x <= _LIN_THRESHOLD, 12.92 * x, power)
    x = _float_array(x)
    power = 1.055 * np.maximum(x, _LIN_THRESHOLD) ** (1 / 2.4) - 0.055
    return np.where(x <= _LIN_THRESHOLD, 12.92 * x, power).astype(x.dtype)


def srgb_to_linear(x):
    """Invert the sRGB curve (encoded value -> linear light).

    Args:
        x: numpy array or torch tensor, any shape, encoded values in [0, 1]
            (an 8-bit photo divided by 255).
    Returns:
        Same type and shape, linear values.
    """
    if isinstance(x, torch.Tensor):
        power = ((torch.clamp(x, min=_ENC_THRESHOLD) + 0.055) / 1.055) ** 2.4
        return torch.where(x <= _ENC_THRESHOLD, x / 12.92, power)
    x = _float_array(x)
    power = ((np.maximum(x, _ENC_THRESHOLD) + 0.055) / 1.055) ** 2.4
    return np.where(x <= _ENC_THRESHOLD, x / 12.92, power).astype(x.dtype)


# ----------------------------------------------------------------------
# matrices
# ----------------------------------------------------------------------
def _check_matrix(name: str, m) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.shape != (3, 3) or not np.isfinite(m).all():
        raise CameraMatrixError(f"{name} must be a finite (3, 3) matrix, got shape {m.shape}")
    return m


def srgb_to_cam_matrix(xyz_to_cam) -> np.ndarray:
    """(3, 3) linear sRGB -> white-balanced camera RGB, rows summing to 1.

    ``xyz_to_cam @ SRGB_TO_XYZ`` with each row divided by its sum (dcraw,
    Brooks et al.): sRGB white (1, 1, 1) lands on (1, 1, 1), i.e. camera
    white after the as-shot white balance.
    """
    m = _check_matrix("xyz_to_cam", xyz_to_cam) @ SRGB_TO_XYZ
    sums = m.sum(axis=1, keepdims=True)
    if (np.abs(sums) < 1e-6).any():
        raise CameraMatrixError("xyz_to_cam maps sRGB white to zero in some channel: not a camera colour matrix")
    return m / sums


def cam_to_srgb_matrix(xyz_to_cam) -> np.ndarray:
    """(3, 3) white-balanced camera RGB -> linear sRGB.

    The inverse of :func:`srgb_to_cam_matrix`, so its rows also sum to 1
    (camera white maps to sRGB white).  Apply as ``rgb @ M.T``.
    """
    m = srgb_to_cam_matrix(xyz_to_cam)
    if abs(np.linalg.det(m)) < 1e-9:
        raise CameraMatrixError("xyz_to_cam is singular: expected a camera's XYZ->camera colour matrix")
    return np.linalg.inv(m)


# ----------------------------------------------------------------------
# bundled camera matrices
# ----------------------------------------------------------------------
@lru_cache(maxsize=None)
def _camera_table() -> dict:
    with open(CAMERA_MATRICES_PATH, encoding="utf-8") as f:
        doc = json.load(f)
    table = {}
    for e in doc["cameras"]:
        key = (e["make"].lower(), e["model"].lower())
        table[key] = {
            "make": e["make"],
            "model": e["model"],
            "sensor": e["sensor"],
            "xyz_to_cam": np.array(e["xyz_to_cam"], dtype=np.float64),
        }
    return table


def known_cameras() -> list[str]:
    """'Make Model' of every camera with a bundled colour matrix."""
    return [f"{e['make']} {e['model']}" for e in _camera_table().values()]


def camera_info(make: str, model: str) -> dict:
    """Bundled data of one camera (case-insensitive match on make and model).

    Returns:
        dict with 'make', 'model' (the table's spelling), 'sensor'
        (a kind of :data:`kpnt.mosaic.kinds.MOSAIC_KINDS`) and 'xyz_to_cam' ((3, 3) float64 copy).
    Raises:
        CameraMatrixError listing the known cameras if there is no entry.
    """
    e = _camera_table().get((make.strip().lower(), model.strip().lower()))
    if e is None:
        raise CameraMatrixError(
            f"no colour matrix for camera '{make} {model}': known cameras are {', '.join(known_cameras())}"
        )
    return {**e, "xyz_to_cam": e["xyz_to_cam"].copy()}


def camera_matrix(make: str, model: str) -> np.ndarray:
    """(3, 3) XYZ (D65) -> camera matrix of a bundled camera (see
    :func:`camera_info`)."""
    return camera_info(make, model)["xyz_to_cam"]


def find_camera(name: str) -> dict:
    """Look a camera up by one 'Make Model' string (e.g. 'Canon EOS 5D Mark
    III'): the first word is the make.  Returns :func:`camera_info`'s dict."""
    parts = name.strip().split(None, 1)
    if len(parts) != 2:
        raise CameraMatrixError(
            f"camera {name!r} must be 'MAKE MODEL', e.g. 'Nikon D750': known cameras are {', '.join(known_cameras())}"
        )
    return camera_info(parts[0], parts[1])


# ----------------------------------------------------------------------
# scoring renders (DESIGN.md section 8)
# ----------------------------------------------------------------------
def _check_rgb(cam_rgb, wb) -> tuple[np.ndarray, np.ndarray]:
    cam_rgb = np.asarray(cam_rgb)
    if cam_rgb.ndim != 3 or cam_rgb.shape[2] != 3:
        raise ValueError(f"cam_rgb must have shape (H, W, 3), got {cam_rgb.shape}")
    wb = np.asarray(wb, dtype=np.float64)
    if wb.shape != (3,) or (wb <= 0).any():
        raise ValueError(f"wb must be 3 positive gains (R, G, B), got {wb.tolist()}")
    return cam_rgb, wb


def render_linear_wb(cam_rgb, wb, baseline_exposure: float = 0.0) -> np.ndarray:
    """The linear scoring space: ``clip(cam_rgb * wb * 2**baseline_exposure, 0, 1)``.

    Args:
        cam_rgb: (H, W, 3) linear camera RGB, white balance NOT applied.
        wb: (3,) as-shot gains, green = 1.
        baseline_exposure: DNG ``BaselineExposure`` in EV.
    Returns:
        (H, W, 3) float32 in [0, 1].
    """
    cam_rgb, wb = _check_rgb(cam_rgb, wb)
    gain = (wb * 2.0 ** float(baseline_exposure)).astype(np.float32)
    return np.clip(cam_rgb.astype(np.float32) * gain, 0.0, 1.0)


def render_srgb(cam_rgb, wb, xyz_to_cam, baseline_exposure: float = 0.0) -> np.ndarray:
    """The sRGB scoring space: :func:`render_linear_wb`, then camera ->
    linear sRGB (:func:`cam_to_srgb_matrix`), clip to [0, 1], sRGB curve.

    Args:
        cam_rgb: (H, W, 3) linear camera RGB, white balance NOT applied.
        wb: (3,) as-shot gains, green = 1.
        xyz_to_cam: (3, 3) XYZ (D65) -> camera matrix.
        baseline_exposure: DNG ``BaselineExposure`` in EV.
    Returns:
        (H, W, 3) float32 sRGB-encoded values in [0, 1].
    """
    lin = render_linear_wb(cam_rgb, wb, baseline_exposure)
    m = cam_to_srgb_matrix(xyz_to_cam).astype(np.float32)
    return linear_to_srgb(np.clip(lin @ m.T, 0.0, 1.0))


def scored_pair(a, b, border: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Two images to compare (:func:`psnr`, :func:`kpnt.bench.metrics.ssim`):
    float64, ``border`` pixels dropped on every side of both spatial axes,
    after checking that they have one shape (H, W) or (H, W, C) and that the
    border leaves something; ``what`` names the measure in the errors."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim not in (2, 3):
        raise ValueError(f"{what} needs two images of equal shape (H, W[, C]), got {a.shape} and {b.shape}")
    h, w = a.shape[:2]
    if border < 0 or 2 * border >= min(h, w):
        raise ValueError(f"border {border} leaves nothing of a {h}x{w} image")
    if border:
        a = a[border:-border, border:-border]
        b = b[border:-border, border:-border]
    return a, b


def psnr(a, b, peak: float = 1.0, border: int = 6) -> float:
    """PSNR in dB between two images, ignoring ``border`` pixels on each side.

    Args:
        a, b: arrays of equal shape (H, W) or (H, W, C).
        peak: the signal peak (1 for the scoring spaces above).
        border: pixels dropped on every side of both spatial axes.
    Returns:
        ``10 log10(peak^2 / MSE)``; ``inf`` for identical images.
    """
    a, b = scored_pair(a, b, border, "psnr")
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0.0 else 10.0 * np.log10(peak * peak / mse)
