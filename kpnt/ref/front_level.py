"""The full-resolution mosaic level (DESIGN.md section 3), pure PyTorch.

Inputs: the mosaic ``x`` (N, 1, H, W), the denoised colour base brought to
full resolution ``U = up_block(O_0)`` (N, 3, H, W), a smooth signal
estimate ``S`` (N, 3, H, W) for the noise model, and the noise profile.

0. ``U = up_block(O_0)``: each colour interpolated from its own sites'
   positions (:func:`up_block`).
1. Detail of every photosite against the smooth estimate of its own colour:
   ``d(q) = x(q) - U_{c(q)}(q)``, and its noise std
   ``sigma(q) = sqrt(max(a_c S_c(q) + b_c, floor))``.
2. For each pixel p of site class k, gather the full ``(2r+1)^2`` square of
   taps **in the class's canonical orientation**: canonical tap t of p lies
   at ``p + cfa.canonical_offsets(taps)[p mod P, t]``.  MLP inputs, padded to
   a multiple of 16 (zeros):
   ``[0:T]`` ``asinh(d / sigma)`` of the taps (SNR, compressed as in the
   colour levels), ``[T]`` noise input ``(ln sigma(p) + 6)/3`` (0 with
   ``noise_input=False``), ``[T+1]`` constant 1.  No input says which of red
   or blue a tap measured: a tap's role (green / own colour / other) is
   fixed by its canonical position, so sites that agree up to the R/B swap
   (``cfa.swap_rb``) share one weight set.
3. The class's MLP gives T kernel logits (canonical tap order) and a blend
   logit (outputs padded to a multiple of 16, extra rows unused).  Because
   the kernel is applied to the details gathered with the *same* canonical
   indices, mapping it back to the site's orientation is implicit:
   ``O(p) = U(p) + sigmoid(blend) * sum_t w_t d(p + M_p t)``, the same
   detail added to all three channels (colour-difference transfer).

Symmetry: transposing/mirroring the mosaic with its CFA hands every site
its original neighbourhood in canonical order up to ``s = M_p^-1 G M_p'``,
an element of the class layout's own symmetry group.  Where s is the
identity (Bayer greens under transpose, X-Trans corner greens under mirror)
the output transforms exactly; sites whose layout is itself symmetric (a
Bayer red site under transpose, X-Trans centre/side sites under mirror)
cannot be oriented equivariantly by any fixed rule, and there the MLP sees
the neighbourhood permuted by s (tests/ref/test_front.py checks both).

Taps outside the image read ``d = 0`` (no detail); ``kpnt.model`` pads the
mosaic so that only cropped pixels see that.

Pixels are processed per class with precomputed flat index tensors (cached
per pattern, size and device): one gather per class, one MLP call per
class, and one final gather that puts every pixel back in raster order.

Ablation ``sharing='none'`` (``ModelConfig.front_sharing``): one weight set
per site *position* of the sensor's CFA repeat, taps in plain raster order
(no re-orientation, no sharing between orientations or between red and
blue).  Sets are keyed by the position in the fixed reference phase of the
kind (RGGB; ``CFA.xtrans()``, the reference of the canonical layouts in
:mod:`kpnt.mosaic.cfa`), found by matching the crop of the pattern that
starts at the site: a mosaic cropped at any offset (training draws random
phases) sends each physical site to the same set (:func:`front_layout`).
Bayer has 4 sets (R, the two greens, B).  X-Trans has 18, not 36: its 6x6
repeat is invariant under the shift (3, 3) (``CFA.xtrans().crop(3, 3) ==
CFA.xtrans()``), so positions p and p + (3, 3) have identical
neighbourhoods in every crop and no crop's pattern can tell them apart;
one set per distinct position is the finest keying that is well defined
(and 18 sets of 64 x 4 are practical: 18 small MLP calls per step).  Flips
and transposes of X-Trans (and its red/blue exchange) are again phases of
it, so flipped training tiles also map; a CFA that is no phase of the
reference is refused with a one-line error rather than guessed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from kpnt.mosaic.cfa import CFA
from kpnt.ref._cache import tensor_cache
from kpnt.ref.apply import normalise_kernel, normalise_kernel_columns
from kpnt.ref.front_layout import front_layout, front_roles, front_set_names
from kpnt.ref.mlp import column_buffers, inference_chunk, mlp, run_mlp_columns, use_inference_path
from kpnt.ref.noise import noise_feature, site_var
from kpnt.spec import FrontLevelSpec


@dataclass(frozen=True)
class FrontIndex:
    """Gather/scatter indices of one (pattern, H, W, radius, device).

    With ``Lp = (H+2r)(W+2r)`` (the zero-padded raster):

    Attributes:
        pos: per class, (n_k,) raster index ``y*W + x`` of the class's pixels.
        taps: per class, (n_k, T) index of each canonical tap in the padded
            raster.
        feats: per class, (n_k, n_in) index of each MLP input in the source
            row ``[snr (Lp), noise input (H*W), 1, 0]``: taps, own noise,
            constant 1, zero padding.
        inverse: (H*W,) where each raster pixel sits in ``cat(pos)``.
        roles: per class, (n_k, 3) output channel of each kernel role
            (:func:`front_roles`; used by 'per_channel' kernels).
    """

    pos: tuple[torch.Tensor, ...]
    taps: tuple[torch.Tensor, ...]
    feats: tuple[torch.Tensor, ...]
    inverse: torch.Tensor
    roles: tuple[torch.Tensor, ...] = ()


@tensor_cache(32)
def _front_index(pattern: bytes, period: int, H: int, W: int, radius: int, n_in: int, device: str,
                 sharing: str) -> FrontIndex:
    cfa = CFA(np.frombuffer(pattern, dtype=np.int64).reshape(period, period))
    sets, offsets = front_layout(cfa, radius, sharing)               # (P, P), (P, P, T, 2)
    role_map = front_roles(cfa, radius, sharing)                      # (P, P, 3)
    T = offsets.shape[2]
    Lp = (H + 2 * radius) * (W + 2 * radius)
    P = cfa.period
    ys, xs = np.mgrid[0:H, 0:W]
    cls_map = sets[ys % P, xs % P]
    pos, taps, feats, roles = [], [], [], []
    for k in range(len(front_set_names(cfa.kind, sharing))):   # 2-18 sets, each handled with array ops
        y, x = ys[cls_map == k], xs[cls_map == k]
        off = offsets[y % P, x % P]                                  # (n_k, T, 2)
        ty = y[:, None] + off[..., 0] + radius
        tx = x[:, None] + off[..., 1] + radius
        t = ty * (W + 2 * radius) + tx
        p = y * W + x
        f = np.full((len(p), n_in), Lp + H * W + 1)                 # zero padding
        f[:, :T] = t
        f[:, T] = Lp + p
        f[:, T + 1] = Lp + H * W                                     # constant 1
        pos.append(p)
        taps.append(t)
        feats.append(f)
        roles.append(role_map[y % P, x % P])
    order = np.concatenate(pos)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(device)
    return FrontIndex(tuple(map(as_t, pos)), tuple(map(as_t, taps)), tuple(map(as_t, feats)), as_t(inverse),
                      tuple(map(as_t, roles)))


def front_index(cfa: CFA, H: int, W: int, spec: FrontLevelSpec, device) -> FrontIndex:
    """Cached :class:`FrontIndex` for a mosaic of ``H x W`` with layout ``cfa``
    (per weight set of :func:`front_layout`)."""
    return _front_index(cfa.pattern.tobytes(), cfa.period, H, W, spec.radius, spec.widths()[1], str(device),
                        spec.sharing)


@tensor_cache(32)
def _colour_map(pattern: bytes, period: int, H: int, W: int, device: str) -> torch.Tensor:
    cfa = CFA(np.frombuffer(pattern, dtype=np.int64).reshape(period, period))
    return torch.from_numpy(np.ascontiguousarray(cfa.colour_map(H, W))).to(device)


def front_detail(x: torch.Tensor, U: torch.Tensor, S: torch.Tensor, noise: torch.Tensor, cfa: CFA) -> tuple[torch.Tensor, torch.Tensor]:
    """Photosite details against the smooth estimate and their noise std.

    Args:
        x: (N, 1, H, W) mosaic.  U, S: (N, 3, H, W).  noise: (N, 2, 3).
    Returns:
        ``(d, sigma)``, both (N, 1, H, W).
    """
    N, _, H, W = x.shape
    col = _colour_map(cfa.pattern.tobytes(), cfa.period, H, W, str(x.device))
    idx = col.expand(N, 1, H, W)
    a = noise[:, 0][:, col].unsqueeze(1)                              # (N, 1, H, W)
    b = noise[:, 1][:, col].unsqueeze(1)
    d = x - U.gather(1, idx)
    sigma = torch.sqrt(site_var(S.gather(1, idx), a, b))
    return d, sigma


def front_features(
    d: torch.Tensor, sigma: torch.Tensor, cfa: CFA, spec: FrontLevelSpec
) -> tuple[list[torch.Tensor], list[torch.Tensor], FrontIndex]:
    """Gather every class's MLP inputs and raw tap details.

    Args:
        d, sigma: (N, 1, H, W) from :func:`front_detail`.
        spec: radius, noise input and sharing: 'symmetry' (one entry per
            site class) or 'none' (one per weight set of :func:`front_set_names`).
    Returns:
        ``(feats, dtaps, index)``: per class k, feats[k] (N*n_k, n_in) rows in
        (image, pixel of ``index.pos[k]``) order and dtaps[k] (N, n_k, T) the
        unnormalised details at the canonical taps.
    """
    N, _, H, W = d.shape
    T, n_in, _ = spec.widths()
    radius = spec.radius
    index = front_index(cfa, H, W, spec, d.device)
    snr = F.pad(torch.asinh(d / sigma), (radius,) * 4).reshape(N, -1)
    dpad = F.pad(d, (radius,) * 4).reshape(N, -1)
    nz = noise_feature(sigma) if spec.noise_input else torch.zeros_like(sigma)
    # Source row per image [snr (Lp), noise (HW), 1, 0]: one index_select
    # with the cached (n_k, n_in) index yields a class's feature matrix.
    src = torch.cat([snr, nz.reshape(N, H * W), d.new_ones(N, 1), d.new_zeros(N, 1)], 1)
    feats, dtaps = [], []
    for f_idx, t_idx in zip(index.feats, index.taps):
        n_k = f_idx.shape[0]
        feats.append(src.index_select(1, f_idx.reshape(-1)).reshape(N * n_k, n_in))
        dtaps.append(dpad.index_select(1, t_idx.reshape(-1)).reshape(N, n_k, T))
    return feats, dtaps, index


def front_level(
    x: torch.Tensor,
    U: torch.Tensor,
    S: torch.Tensor,
    noise: torch.Tensor,
    cfa: CFA,
    weights: Sequence[Sequence[torch.Tensor]],
    spec: FrontLevelSpec,
    mlp_fn=mlp,
) -> torch.Tensor:
    """Full-resolution output of the mosaic level (module doc).

    Args:
        x: (N, 1, H, W) mosaic with layout ``cfa``.
        U: (N, 3, H, W) ``up_block(O_0)``.
        S: (N, 3, H, W) smooth signal estimate for the noise model.
        noise: (N, 2, 3) ``[a; b]`` per channel.
        weights: one MLP per site class, in ``cfa.class_names`` order
            (``sharing='none'``: per :func:`front_set_names`).
        spec: radius, kernels ('shared' or 'per_channel'), sharing
            ('symmetry' or 'none', module doc), MLP and apply settings.
        mlp_fn: MLP evaluator with the signature of :func:`kpnt.ref.mlp.mlp`
            (a backend's fused MLP slots in here).
    Returns:
        (N, 3, H, W) ``U + a * sum_t w_t d_t``: 'shared' adds the same
        value to all channels; 'per_channel' adds ``a * sum_t w_{r,t} d_t``
        to the channel of role r (:func:`front_roles`).

    Without autograd (inference) the same math runs per repeat position in
    chunks of rows (:func:`_front_level_chunked`), without the cached
    per-pixel index tensors.
    """
    n_sets = len(front_set_names(cfa.kind, spec.sharing))
    if len(weights) != n_sets:
        raise ValueError(f"front level ({spec.sharing} sharing): expected {n_sets} weight sets for {cfa.kind}, "
                         f"got {len(weights)}")
    if use_inference_path():
        return _front_level_chunked(x, U, S, noise, cfa, weights, spec, mlp_fn)
    K, apply_mode = spec.n_kernels, spec.apply_mode
    N, _, H, W = x.shape
    T, _, _ = spec.widths()
    d, sigma = front_detail(x, U, S, noise, cfa)
    feats, dtaps, index = front_features(d, sigma, cfa, spec)
    deltas = []
    for f, dt, w, role in zip(feats, dtaps, weights, index.roles):
        n_k = dt.shape[1]
        out = mlp_fn(f, w, spec.leaky_slope).reshape(N, n_k, -1)          # (N, n_k, n_out)
        k = normalise_kernel(out[..., :K * T].reshape(N, n_k, K, T), apply_mode)
        by_role = torch.sigmoid(out[..., K * T])[..., None] * (k * dt[:, :, None, :]).sum(-1)   # (N, n_k, K)
        if K == 3:   # role r of each pixel -> its channel
            by_role = torch.zeros_like(by_role).scatter(2, role.expand(N, n_k, 3), by_role)
        deltas.append(by_role)
    delta = torch.cat(deltas, 1).index_select(1, index.inverse)       # (N, H*W, K)
    return U + delta.transpose(1, 2).reshape(N, K, H, W)


def _front_level_chunked(x, U, S, noise, cfa, weights, spec: FrontLevelSpec, mlp_fn=mlp):
    """:func:`front_level` for inference.

    All photosites at one position (py, px) of the CFA repeat share their
    colour, site class and canonical tap offsets, and form the strided grid
    ``[py::P, px::P]``.  So the details and noise are computed per position
    on strided views (no colour-map tensor), and a chunk of rows of a
    position's grid gets its MLP inputs by copying, per canonical tap, one
    strided window of the zero-padded SNR map (no (pixels, 32) index, no
    feature matrix of the whole image).  The MLP runs in preallocated
    buffers that stay in cache (:func:`kpnt.ref.mlp.mlp_columns`; a
    backend's MLP gets each chunk in its row layout).  Equal to
    the autograd path up to float summation order (tests/test_denoise.py).
    """
    N, _, H, W = x.shape
    P, r = cfa.period, spec.radius
    T, n_in, _ = spec.widths()
    leaky_slope, apply_mode, noise_input = spec.leaky_slope, spec.apply_mode, spec.noise_input
    classes, offsets = front_layout(cfa, r, spec.sharing)
    offsets = offsets.tolist()                                           # [py][px][t] = (dy, dx)
    roles = front_roles(cfa, r, spec.sharing).tolist()                   # [py][px][r] = channel
    K = spec.n_kernels
    positions = [(py, px) for py in range(min(P, H)) for px in range(min(P, W))]
    widest = -(-W // P)
    rows_per_chunk = max(1, inference_chunk(x.device) // widest)
    chunk = rows_per_chunk * widest
    xin = x.new_zeros(n_in, chunk)                  # rows T+2.. stay the zero padding
    xin[T + 1] = 1.0                                # the constant input
    dt = x.new_empty(T, chunk)
    bufs = [column_buffers(w, chunk, x) if mlp_fn is mlp else None for w in weights]
    out = U.clone()
    for n in range(N):
        # Zero-padded details and SNRs (taps outside the image read d = 0)
        # and the per-site noise input, one repeat position at a time.
        dpad = x.new_zeros(H + 2 * r, W + 2 * r)
        snr = x.new_zeros(H + 2 * r, W + 2 * r)
        nz = x.new_zeros(H, W)
        for py, px in positions:
            c = int(cfa.pattern[py, px])
            site = (slice(py, H, P), slice(px, W, P))
            d = x[n, 0][site] - U[n, c][site]
            sigma = torch.sqrt(site_var(S[n, c][site], noise[n, 0, c], noise[n, 1, c]))
            padded = (slice(r + py, r + H, P), slice(r + px, r + W, P))
            dpad[padded] = d
            snr[padded] = torch.asinh(d / sigma)
            if noise_input:
                nz[site] = noise_feature(sigma)
        del d, sigma
        for py, px in positions:
            k_cls = int(classes[py, px])
            rows, cols = -(-(H - py) // P), -(-(W - px) // P)
            step = max(1, chunk // cols)
            for i0 in range(0, rows, step):
                i1 = min(rows, i0 + step)
                m = (i1 - i0) * cols
                for t, (dy, dx) in enumerate(offsets[py][px]):
                    y, xx = r + py + P * i0 + dy, r + px + dx
                    win = (slice(y, y + P * (i1 - i0 - 1) + 1, P), slice(xx, xx + P * (cols - 1) + 1, P))
                    xin[t, :m].view(i1 - i0, cols).copy_(snr[win])
                    dt[t, :m].view(i1 - i0, cols).copy_(dpad[win])
                rows_sl = slice(py + P * i0, py + P * (i1 - 1) + 1, P)
                xin[T, :m].view(i1 - i0, cols).copy_(nz[rows_sl, px::P])
                o = run_mlp_columns(mlp_fn, xin[:, :m], weights[k_cls], leaky_slope, bufs[k_cls])   # (n_out, m)
                blend = torch.sigmoid(o[K * T])
                for role in range(K):
                    k = normalise_kernel_columns(o[role * T:(role + 1) * T], apply_mode)
                    delta = (blend * (k * dt[:, :m]).sum(0)).view(1, i1 - i0, cols)
                    if K == 1:
                        out[n, :, rows_sl, px::P] += delta
                    else:
                        out[n, roles[py][px][role], rows_sl, px::P] += delta[0]
    return out
