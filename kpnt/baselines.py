"""Peer methods kpnt is compared with (benchmark and demo): non-local means
and Menon 2007's demosaicer.

OpenCV's non-local means on LibRaw's demosaic, made fair to a
signal-dependent noise: each channel is variance-stabilised with the
generalised Anscombe transform of the known profile (noise std ~1 at every
brightness), so one strength, in units of the noise std, suits the whole
image; 16-bit input with the L1 norm keeps the precision of linear data.
"""
from __future__ import annotations

import cv2
import numpy as np

#: uint16 units per noise standard deviation on the stabilised scale.
_NLM_SCALE = 200.0

#: Default strength: the best sRGB PSNR among h = 0.4 .. 2.4 on six BSDS500
#: *train* photos, Nikon D750 ISO 3200 (0.4: 29.92, 0.6: 30.75, 0.8: 31.24,
#: 1.0: 31.38, 1.2: 31.32, 1.6: 30.94, 2.4: 30.06 dB).
NLM_STRENGTH = 1.0


def gat(y: np.ndarray, a: float, b: float) -> np.ndarray:
    """Generalised Anscombe transform: noise of variance a*y + b -> ~1."""
    return 2.0 / a * np.sqrt(np.maximum(a * y + 0.375 * a * a + b, 0.0))


def gat_inverse(z: np.ndarray, a: float, b: float) -> np.ndarray:
    """Algebraic inverse of :func:`gat`."""
    return ((z * a / 2.0) ** 2 - 0.375 * a * a - b) / a


def nlm_denoise(rgb_wb: np.ndarray, noise_wb: np.ndarray, strength: float = NLM_STRENGTH) -> np.ndarray:
    """Non-local means per channel of a white-balanced linear image.

    Args:
        rgb_wb: (H, W, 3) float, white-balanced linear RGB.
        noise_wb: (2, 3) white-balanced [a; b] (variance a*x + b per channel).
        strength: NLM ``h`` in units of the noise standard deviation.
    Returns:
        (H, W, 3) float32 denoised image, same scale.
    """
    out = np.empty(rgb_wb.shape, np.float32)
    for c in range(3):
        a, b = max(float(noise_wb[0, c]), 1e-12), float(noise_wb[1, c])
        z = gat(rgb_wb[..., c].astype(np.float64), a, b)
        off = z.min() - 1.0
        u = np.clip(np.rint((z - off) * _NLM_SCALE), 0, 65535).astype(np.uint16)
        d = cv2.fastNlMeansDenoising(u, [strength * _NLM_SCALE], templateWindowSize=5, searchWindowSize=15, normType=cv2.NORM_L1)
        out[..., c] = gat_inverse(d.astype(np.float64) / _NLM_SCALE + off, a, b)
    return out


# ----------------------------------------------------------------------
# Menon 2007 (a Bayer demosaicer, the benchmark's classical peer)
# ----------------------------------------------------------------------
#: bump when :func:`menon2007`'s numbers change (part of the benchmark's
#: peer-cache key)
MENON_VERSION = 1


def _conv1d(x: np.ndarray, taps, axis: int) -> np.ndarray:
    """Convolution of ``x`` with odd-length ``taps`` along ``axis``, edges
    mirrored about the edge sample (numpy 'reflect', scipy 'mirror')."""
    r = len(taps) // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    xp = np.pad(x, pad, mode="reflect")
    n = x.shape[axis]
    out = np.zeros(x.shape, np.float64)
    for i, t in enumerate(taps[::-1]):            # a convolution flips the taps
        if t:
            out += t * np.take(xp, np.arange(i, i + n), axis=axis)
    return out


def _conv2d_zero(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """2-D convolution of ``x`` with an odd-sized kernel ``k``, zeros outside."""
    ry, rx = k.shape[0] // 2, k.shape[1] // 2
    xp = np.pad(x, ((ry, ry), (rx, rx)))
    h, w = x.shape
    out = np.zeros(x.shape, np.float64)
    kf = k[::-1, ::-1]
    for i, j in zip(*np.nonzero(kf)):
        out += kf[i, j] * xp[i : i + h, j : j + w]
    return out


def menon2007(mosaic: np.ndarray, colour: np.ndarray, refine: bool = True) -> np.ndarray:
    """Demosaic a Bayer mosaic with Menon, Andriani and Calvagno's method.

    D. Menon, S. Andriani, G. Calvagno, "Demosaicing with directional
    filtering and a posteriori decision", IEEE Trans. Image Processing 16(1),
    2007 (DDFAPD):

    1. green is interpolated at red/blue sites twice, along the row and
       along the column, with the filter ``[-1/4, 1/2, 1/2, 1/2, -1/4]``
       (half the neighbours' green plus a second-order correction from the
       site's own colour);
    2. the *a posteriori decision*: the colour difference ``X - G`` (X the
       site's red or blue) of each direction is differenced with the same
       difference two sites further along that direction; these gradients,
       summed over a 5x5 window (weight 3 on the site's own line, 1 on the
       others), pick per site the direction of smaller chroma variation;
    3. red and blue at green sites: bilinear on the colour differences along
       the line holding that colour; red at blue sites (and blue at red
       sites): along the chosen direction;
    4. ``refine``: green at red/blue sites re-estimated from the colour
       difference low-passed (3 taps) along the chosen direction, then red
       and blue at green sites, then red at blue sites and blue at red sites
       from the refined differences.

    Edges are mirrored (the sample at the edge is not repeated); the
    decision's window sums zeros outside.  Made for white-balanced data
    (colour differences assume comparable channels).  Checked against
    ``colour-demosaicing``'s ``demosaicing_CFA_Bayer_Menon2007`` in the tests.

    Args:
        mosaic: (H, W) float mosaic.
        colour: (H, W) int colour map of a Bayer CFA (0 R, 1 G, 2 B), e.g.
            ``CFA.colour_map(H, W)``.
        refine: run step 4 (the paper's refining step; default True).
    Returns:
        (H, W, 3) float64 RGB, same scale as ``mosaic``.
    """
    cfa = np.asarray(mosaic, np.float64)
    colour = np.asarray(colour)
    if cfa.ndim != 2 or colour.shape != cfa.shape:
        raise ValueError(f"menon2007 needs an (H, W) mosaic and a colour map of its shape, got {cfa.shape} and {colour.shape}")
    if min(cfa.shape) < 3 or sorted(np.bincount(colour[:2, :2].ravel(), minlength=3)) != [1, 1, 2]:
        raise ValueError("menon2007 needs a Bayer mosaic (a 2x2 repeat of one red, two green, one blue) of at least 3x3 sites")
    r_m, g_m, b_m = (colour == 0), (colour == 1), (colour == 2)
    h_dir = (0.0, 0.5, 0.0, 0.5, 0.0)
    h_corr = (-0.25, 0.0, 0.5, 0.0, -0.25)
    R, G, B = cfa * r_m, cfa * g_m, cfa * b_m

    # 1. directional green
    g_h = np.where(g_m, G, _conv1d(cfa, h_dir, 1) + _conv1d(cfa, h_corr, 1))
    g_v = np.where(g_m, G, _conv1d(cfa, h_dir, 0) + _conv1d(cfa, h_corr, 0))
    # 2. decision on the chroma gradients
    c_h = np.where(r_m, R - g_h, 0.0) + np.where(b_m, B - g_h, 0.0)
    c_v = np.where(r_m, R - g_v, 0.0) + np.where(b_m, B - g_v, 0.0)
    d_h = np.abs(c_h - np.pad(c_h, ((0, 0), (0, 2)), mode="reflect")[:, 2:])
    d_v = np.abs(c_v - np.pad(c_v, ((0, 2), (0, 0)), mode="reflect")[2:, :])
    k = np.array([[0, 0, 1, 0, 1], [0, 0, 0, 1, 0], [0, 0, 3, 0, 3], [0, 0, 0, 1, 0], [0, 0, 1, 0, 1]], np.float64)
    horizontal = _conv2d_zero(d_v, k.T) >= _conv2d_zero(d_h, k)
    G = np.where(horizontal, g_h, g_v)

    # 3. red and blue
    r_rows = np.broadcast_to(r_m.any(axis=1, keepdims=True), cfa.shape)
    b_rows = np.broadcast_to(b_m.any(axis=1, keepdims=True), cfa.shape)
    kb = (0.5, 0.0, 0.5)

    def along(x, y, axis):           # x + the y - x difference interpolated along ``axis``
        return x + _conv1d(y, kb, axis) - _conv1d(x, kb, axis)

    R = np.where(g_m & r_rows, along(G, R, 1), R)
    R = np.where(g_m & b_rows, along(G, R, 0), R)
    B = np.where(g_m & b_rows, along(G, B, 1), B)
    B = np.where(g_m & r_rows, along(G, B, 0), B)
    R = np.where(b_rows & b_m, np.where(horizontal, along(B, R, 1), along(B, R, 0)), R)
    B = np.where(r_rows & r_m, np.where(horizontal, along(R, B, 1), along(R, B, 0)), B)
    if not refine:
        return np.stack([R, G, B], axis=-1)

    # 4. refinement
    fir = (1 / 3, 1 / 3, 1 / 3)

    def directional(x):
        return np.where(horizontal, _conv1d(x, fir, 1), _conv1d(x, fir, 0))

    b_g = np.where(b_m, directional(B - G), 0.0)
    r_g = np.where(r_m, directional(R - G), 0.0)
    G = np.where(r_m, R - r_g, G)
    G = np.where(b_m, B - b_g, G)
    r_cols = np.broadcast_to(r_m.any(axis=0, keepdims=True), cfa.shape)
    b_cols = np.broadcast_to(b_m.any(axis=0, keepdims=True), cfa.shape)
    r_g, b_g = R - G, B - G
    R = np.where(g_m & b_rows, G + _conv1d(r_g, kb, 0), R)
    R = np.where(g_m & b_cols, G + _conv1d(r_g, kb, 1), R)
    B = np.where(g_m & r_rows, G + _conv1d(b_g, kb, 0), B)
    B = np.where(g_m & r_cols, G + _conv1d(b_g, kb, 1), B)
    r_b = R - B
    R = np.where(b_m, B + directional(r_b), R)
    B = np.where(r_m, R - directional(r_b), B)
    return np.stack([R, G, B], axis=-1)
