"""Mosaic front level: canonical gather vs a slow explicit loop, symmetry."""
import math

import numpy as np
import pytest
import torch

from kpnt.mosaic.cfa import BAYER_PHASES, CFA, D4
from kpnt.ref.front_level import front_detail, front_features, front_level
from kpnt.ref.up_block import colour_centroids, up_block
from kpnt.ref.apply import normalise_kernel
from kpnt.ref.mlp import init_weights, mlp
from kpnt.ref.noise import VAR_FLOOR, noise_feature
from kpnt.ref.taps import square_taps
from kpnt.spec import FrontLevelSpec

R = 2
#: The front level these tests run: radius 2, MLPs 32 x 2 (small: float64 loops).
SPEC = FrontLevelSpec(radius=R, width=32, hidden_layers=2)
CASES = [CFA.bayer(p) for p in BAYER_PHASES] + [CFA.xtrans(0, 0), CFA.xtrans(2, 5)]


def _inputs(cfa, H, W, seed=0, N=1):
    gen = torch.Generator().manual_seed(seed)
    f64 = dict(generator=gen, dtype=torch.float64)
    x = torch.rand(N, 1, H, W, **f64)
    U = x.mean() + 0.1 * torch.randn(N, 3, H, W, **f64)
    S = torch.rand(N, 3, H, W, **f64)
    noise = torch.tensor([[[1e-3, 5e-4, 2e-3], [1e-5, 2e-6, 3e-5]]] * N, dtype=torch.float64)
    T, n_in, n_out = SPEC.widths()
    weights = []
    for k in range(cfa.n_classes):
        off = torch.randn(T + 1, generator=gen)
        ws = init_weights(n_in, 32, 2, n_out, T + 1, off, 0.01, gen, T + 2, T + 1, out_scale=3.0)
        weights.append([w.double() for w in ws])
    return x, U, S, noise, weights


def _slow_front(x, U, S, noise, cfa, weights, noise_input=True):
    """front_level written pixel by pixel from DESIGN.md section 3."""
    _, _, H, W = x.shape
    P = cfa.period
    taps = square_taps(R)
    T, n_in, _ = SPEC.widths()
    col = cfa.colour_map(H, W)
    d = np.zeros((H, W))
    sig = np.zeros((H, W))
    for y in range(H):
        for xx in range(W):
            c = col[y, xx]
            d[y, xx] = float(x[0, 0, y, xx] - U[0, c, y, xx])
            sig[y, xx] = math.sqrt(max(float(noise[0, 0, c] * S[0, c, y, xx] + noise[0, 1, c]), VAR_FLOOR))
    out = U.clone()
    feats = {}
    for y in range(H):
        for xx in range(W):
            k = cfa.site_class[y % P, xx % P]
            M = D4[cfa.transform[y % P, xx % P]]
            snr, dv = [], []
            for t in taps:
                oy, ox = M @ t
                yy, xq = y + oy, xx + ox
                inside = 0 <= yy < H and 0 <= xq < W
                dv.append(d[yy, xq] if inside else 0.0)
                snr.append(math.asinh(d[yy, xq] / sig[yy, xq]) if inside else 0.0)
            nz = float(noise_feature(torch.tensor(sig[y, xx]))) if noise_input else 0.0
            row = torch.tensor(snr + [nz, 1.0] + [0.0] * (n_in - T - 2), dtype=torch.float64)[None]
            feats[(y, xx)] = row[0]
            o = mlp(row, weights[k], 0.01)[0]
            kern = normalise_kernel(o[:T], "softmax")
            out[0, :, y, xx] += torch.sigmoid(o[T]) * (kern * torch.tensor(dv, dtype=torch.float64)).sum()
    return out, feats


@pytest.mark.parametrize("cfa", CASES, ids=lambda c: c.name)
def test_front_matches_slow_loop(cfa):
    H, W = (8, 10) if cfa.kind == "bayer" else (12, 12)
    x, U, S, noise, weights = _inputs(cfa, H, W)
    out = front_level(x, U, S, noise, cfa, weights, SPEC)
    ref, _ = _slow_front(x, U, S, noise, cfa, weights)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    # the detail is transferred equally to all three channels
    torch.testing.assert_close(out - U, (out - U)[:, :1].expand_as(out))


def _per_pixel_features(x, U, S, noise, cfa):
    d, sigma = front_detail(x, U, S, noise, cfa)
    feats, _, index = front_features(d, sigma, cfa, SPEC)
    full = torch.zeros(x.shape[-2] * x.shape[-1], feats[0].shape[1], dtype=x.dtype)
    for pos, f in zip(index.pos, feats):
        full[pos] = f
    return full.reshape(x.shape[-2], x.shape[-1], -1)


@pytest.mark.parametrize(
    "cfa,op",
    [(CFA.bayer("RGGB"), "transpose"), (CFA.bayer("GBRG"), "transpose"), (CFA.xtrans(0, 0), "mirror"),
     (CFA.xtrans(3, 1), "mirror")],
    ids=lambda v: getattr(v, "name", v),
)
def test_front_equivariance(cfa, op):
    """Transforming the mosaic with its CFA transforms the output.

    Every site of the transformed image sees its original neighbourhood, in
    canonical tap order up to ``s = M^-1 G M'``, an element of the class's
    layout symmetry.  Where s is the identity (Bayer greens under transpose,
    X-Trans corner greens under mirror) the output is exactly the
    transformed output; where the canonical layout itself is symmetric (a
    Bayer red site is invariant under transpose) no fixed choice of frame can
    be equivariant, and features agree up to the permutation s.
    """
    H = W = 12
    x, U, S, noise, weights = _inputs(cfa, H, W, seed=5)
    if op == "transpose":
        tf = lambda t: t.transpose(-1, -2)
        cfa2, G, where = cfa.transpose(), D4[1], lambda y, x_: (x_, y)
    else:
        tf = lambda t: t.flip(-1)
        cfa2, G, where = cfa.flip(1, W), D4[2], lambda y, x_: (y, W - 1 - x_)
    out = front_level(x, U, S, noise, cfa, weights, SPEC)
    out2 = front_level(tf(x), tf(U), tf(S), noise, cfa2, weights, SPEC)
    f1 = _per_pixel_features(x, U, S, noise, cfa)
    f2 = _per_pixel_features(tf(x), tf(U), tf(S), noise, cfa2)
    taps = [tuple(t) for t in square_taps(R)]
    T = len(taps)
    exact = 0
    for y in range(H):
        for xx in range(W):
            y2, x2 = where(y, xx)
            M = D4[cfa.transform[y % cfa.period, xx % cfa.period]]
            M2 = D4[cfa2.transform[y2 % cfa.period, x2 % cfa.period]]
            s = M.T @ G @ M2                                  # D4 matrices are orthogonal
            perm = [taps.index(tuple(s @ np.array(t))) for t in taps]
            torch.testing.assert_close(f2[y2, x2, :T], f1[y, xx, perm], rtol=0, atol=1e-14)
            torch.testing.assert_close(f2[y2, x2, T:], f1[y, xx, T:], rtol=0, atol=1e-14)
            if np.array_equal(s, np.eye(2, dtype=int)):
                exact += 1
                torch.testing.assert_close(out2[0, :, y2, x2], out[0, :, y, xx], rtol=1e-12, atol=1e-14)
    assert exact >= H * W * (0.5 if cfa.kind == "bayer" else 16 / 36)


def test_every_phase_orients_a_class_alike():
    """One weight set serves every crop: after the canonical transform the
    green/non-green layout of a class is the same in all phases."""
    taps = square_taps(3)
    for cfas in ([CFA.bayer(p) for p in BAYER_PHASES], [CFA.xtrans(dy, dx) for dy in range(6) for dx in range(6)]):
        layouts = {}
        for cfa in cfas:
            off = cfa.canonical_offsets(taps)
            for y in range(cfa.period):
                for x in range(cfa.period):
                    green = cfa.colour_at(y + off[y, x, :, 0], x + off[y, x, :, 1]) == 1
                    layouts.setdefault(int(cfa.site_class[y, x]), set()).add(green.tobytes())
        assert all(len(v) == 1 for v in layouts.values())


@pytest.mark.parametrize("cfa", [CFA.bayer("RGGB"), CFA.bayer("GBRG"), CFA.xtrans(1, 1)], ids=lambda c: c.name)
def test_up_block_interpolates_each_colour_from_its_sites(cfa):
    """Bayer: R and B sit on their sites, G between its two; X-Trans: all at
    the block centre.  Linear in between, clamped at the borders."""
    assert cfa.block_phase == (0, 0)
    b = cfa.block
    cent = {"RGGB": [(0, 0), (0.5, 0.5), (1, 1)], "GBRG": [(1, 0), (0.5, 0.5), (0, 1)]}.get(cfa.name, [(1, 1)] * 3)
    np.testing.assert_array_equal(colour_centroids(cfa), np.array(cent))
    o0 = torch.randn(1, 3, 4, 5, dtype=torch.float64)
    U = up_block(o0, cfa)
    assert U.shape == (1, 3, 4 * b, 5 * b)
    for c in range(3):
        for y in range(4 * b):
            for x in range(5 * b):
                cy = min(max((y - cent[c][0]) / b, 0), 3)
                cx = min(max((x - cent[c][1]) / b, 0), 4)
                y0, x0 = int(math.floor(cy)), int(math.floor(cx))
                y1, x1 = min(y0 + 1, 3), min(x0 + 1, 4)
                fy, fx = cy - y0, cx - x0
                v = ((1 - fy) * (1 - fx) * o0[0, c, y0, x0] + (1 - fy) * fx * o0[0, c, y0, x1]
                     + fy * (1 - fx) * o0[0, c, y1, x0] + fy * fx * o0[0, c, y1, x1])
                torch.testing.assert_close(U[0, c, y, x], v)
    # a Bayer red value comes back exactly on its own site
    if cfa.kind == "bayer":
        cmap = torch.from_numpy(cfa.colour_map(8, 10))
        red = U[0, 0][cmap == 0].reshape(4, 5)
        torch.testing.assert_close(red, o0[0, 0])


def test_gradcheck_front_level():
    cfa = CFA.bayer("GRBG")
    x, U, S, noise, weights = _inputs(cfa, 6, 6, seed=9)
    U.requires_grad_()
    x.requires_grad_()
    f = lambda xx, uu: front_level(xx, uu, S, noise, cfa, weights, SPEC)
    assert torch.autograd.gradcheck(f, (x, U))
