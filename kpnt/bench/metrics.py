"""Scoring: PSNR and SSIM against the clean scene, and colour fidelity.

Two scoring spaces (DESIGN.md section 8): white-balanced linear camera RGB
clipped to [0, 1], and sRGB through the DNG colour matrix; :data:`BORDER`
pixels are ignored on every side in both.

Colour fidelity (issue 13): the signed per-channel mean error of the
white-balanced linear output, pooled over the pixels of each bin of the
reference's saturation ``(max - min) / max`` (HSV's S of the
white-balanced reference).  A hue shift in saturated areas shows as a bias
of opposite signs in the last bin, which PSNR dilutes among all pixels.
"""
from __future__ import annotations

import cv2
import numpy as np

from kpnt.color import psnr, render_linear_wb, render_srgb, scored_pair

#: scoring border, pixels (DESIGN.md section 8)
BORDER = 6
#: saturation bin edges of the colour-fidelity statistics
SAT_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0 + 1e-9)
#: reference pixels darker than this (max channel, white-balanced linear)
#: have no meaningful saturation and are left out of the bins
SAT_MIN_VALUE = 0.02


def ssim(a: np.ndarray, b: np.ndarray, border: int = BORDER, data_range: float = 1.0) -> float:
    """Mean SSIM (Wang, Bovik, Sheikh, Simoncelli 2004) of two images.

    The standard Gaussian-window form: 11x11 window, sigma 1.5, K1 = 0.01,
    K2 = 0.03, L = ``data_range``, population (biased) local variances.
    ``border`` pixels are dropped on every side first (as for PSNR); local
    statistics are computed with OpenCV's Gaussian blur (reflect-101 edges)
    and the SSIM map is averaged without its outer 5 pixels, where the
    window would reach past the image; colour images are scored per channel
    and the channel means averaged.  This matches scikit-image's
    ``structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=L, channel_axis=-1)``.

    Args:
        a, b: (H, W) or (H, W, C) arrays of equal shape, values on [0, L].
    Returns:
        Mean SSIM; 1.0 for identical images.
    """
    a, b = scored_pair(a, b, border, "ssim")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    win, sigma, pad = 11, 1.5, 5
    if min(a.shape[:2]) <= 2 * pad:
        raise ValueError(f"image of {a.shape[:2]} too small for an 11x11 SSIM window")
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2

    def blur(x):
        return cv2.GaussianBlur(x, (win, win), sigma, borderType=cv2.BORDER_REFLECT_101)

    vals = []
    for c in range(a.shape[2]):
        x, y = np.ascontiguousarray(a[..., c]), np.ascontiguousarray(b[..., c])
        mx, my = blur(x), blur(y)
        vx = blur(x * x) - mx * mx
        vy = blur(y * y) - my * my
        cxy = blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        vals.append(s[pad:-pad, pad:-pad].mean())
    return float(np.mean(vals))


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation ``(max - min) / max`` of (H, W, 3) linear RGB (0 where
    the max is 0)."""
    mx, mn = rgb.max(axis=2), rgb.min(axis=2)
    return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-12), 0.0)


def colour_stats(out_wb: np.ndarray, ref_wb: np.ndarray, border: int = BORDER) -> dict:
    """Colour-fidelity sums of one image (module doc), to be pooled over
    images with :func:`pool_colour_stats`.

    Args:
        out_wb, ref_wb: (H, W, 3) white-balanced linear output and reference.
    Returns:
        ``err`` (bins, 3): sum of ``out - ref`` per saturation bin and
        channel; ``ref`` (bins, 3): sum of the reference; ``n`` (bins,):
        pixel counts (lists, so that the dict is JSON-ready).
    """
    if border:
        out_wb, ref_wb = out_wb[border:-border, border:-border], ref_wb[border:-border, border:-border]
    ref = np.asarray(ref_wb, np.float64)
    err = np.asarray(out_wb, np.float64) - ref
    sat = saturation(ref)
    keep = ref.max(axis=2) > SAT_MIN_VALUE
    bins = np.digitize(sat, SAT_EDGES[1:-1])
    nb = len(SAT_EDGES) - 1
    e, r, n = np.zeros((nb, 3)), np.zeros((nb, 3)), np.zeros(nb)
    for i in range(nb):
        m = keep & (bins == i)
        n[i] = m.sum()
        if n[i]:
            e[i] = err[m].sum(axis=0)
            r[i] = ref[m].sum(axis=0)
    return dict(err=e.tolist(), ref=r.tolist(), n=n.tolist())


def pool_colour_stats(stats: list[dict]) -> dict:
    """Pool :func:`colour_stats` of many images: ``bias`` (bins, 3) mean
    signed error, ``rel`` (bins, 3) bias over the mean reference value,
    ``n`` (bins,) pixels, ``edges`` the bin edges (NaN where a bin is empty)."""
    e = sum(np.asarray(s["err"]) for s in stats)
    r = sum(np.asarray(s["ref"]) for s in stats)
    n = sum(np.asarray(s["n"]) for s in stats)
    with np.errstate(invalid="ignore", divide="ignore"):
        bias = np.where(n[:, None] > 0, e / n[:, None], np.nan)
        rel = np.where(r > 0, e / r, np.nan)
    return dict(bias=bias.tolist(), rel=rel.tolist(), n=n.tolist(), edges=[min(v, 1.0) for v in SAT_EDGES])


def score(out_cam: np.ndarray, case: dict) -> dict:
    """Score a camera-RGB result against the case's clean scene.

    Returns:
        ``lin`` (PSNR, white-balanced linear), ``srgb`` (PSNR, sRGB),
        ``ssim`` (SSIM, sRGB) and ``colour`` (:func:`colour_stats` on the
        white-balanced linear images), :data:`BORDER` pixels ignored.
    """
    wb, m = case["wb"], case["xyz_to_cam"]
    ref_srgb = render_srgb(case["ref_cam"], wb, m)
    srgb = render_srgb(out_cam, wb, m)
    lin_out, lin_ref = render_linear_wb(out_cam, wb), render_linear_wb(case["ref_cam"], wb)
    return dict(lin=psnr(lin_out, lin_ref, border=BORDER), srgb=psnr(srgb, ref_srgb, border=BORDER),
                ssim=ssim(srgb, ref_srgb, border=BORDER), colour=colour_stats(lin_out, lin_ref))
