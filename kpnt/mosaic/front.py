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
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from kpnt.mosaic.cfa import CFA, CFAError, CLASS_NAMES, COLOUR_NAMES
from kpnt.ref.apply import normalise_kernel, normalise_kernel_columns
from kpnt.ref.mlp import column_buffers, inference_chunk, mlp, run_mlp_columns, use_inference_path
from kpnt.ref.noise import noise_feature, site_var
from kpnt.ref.taps import square_taps
from kpnt.ref._cache import tensor_cache


def _pad16(n: int) -> int:
    return -(-n // 16) * 16


#: Kernels the front MLP predicts (``ModelConfig.front_kernels``): 'shared'
#: (DESIGN.md section 3: one kernel, the same detail added to all three
#: channels) or 'per_channel' (one kernel per output channel, ordered by
#: role: :func:`front_roles`).
FRONT_KERNELS = ("shared", "per_channel")


def _check_kernels(kernels: str) -> None:
    if kernels not in FRONT_KERNELS:
        raise ValueError(f"front kernels must be one of {FRONT_KERNELS}, got {kernels!r}")


def front_kernel_count(kernels: str = "shared") -> int:
    """Kernels per pixel: 1 ('shared') or 3 ('per_channel')."""
    _check_kernels(kernels)
    return 1 if kernels == "shared" else 3


def front_widths(radius: int, kernels: str = "shared") -> tuple[int, int, int]:
    """``(T, n_in, n_out)`` of the front MLPs: T = (2r+1)^2 taps,
    n_in = pad16(T + 2) inputs, n_out = pad16(K T + 1) outputs for K
    kernels (:func:`front_kernel_count`): K x T kernel logits, then the
    blend logit at index K T."""
    T = (2 * radius + 1) ** 2
    return T, _pad16(T + 2), _pad16(front_kernel_count(kernels) * T + 1)


#: Weight-set sharing of the front level (``ModelConfig.front_sharing``):
#: 'symmetry' (DESIGN.md section 3, the default) or 'none' (module doc).
FRONT_SHARINGS = ("symmetry", "none")


def _check_sharing(sharing: str) -> None:
    if sharing not in FRONT_SHARINGS:
        raise ValueError(f"front sharing must be one of {FRONT_SHARINGS}, got {sharing!r}")


@lru_cache(maxsize=4)
def _reference_positions(kind: str) -> tuple[tuple[tuple[int, int], ...], dict]:
    """Distinct site positions of the kind's reference phase: the first
    position in raster order of every distinct crop pattern, and a map from
    a crop's pattern bytes to its set index."""
    ref = CFA.bayer("RGGB") if kind == "bayer" else CFA.xtrans()
    reps, key = [], {}
    for y in range(ref.period):
        for x in range(ref.period):
            k = ref.crop(y, x).pattern.tobytes()
            if k not in key:
                key[k] = len(reps)
                reps.append((y, x))
    return tuple(reps), key


def front_set_names(kind: str, sharing: str = "symmetry") -> tuple[str, ...]:
    """Names of the front weight sets, in the order ``weights`` takes them.

    'symmetry': the site classes (``CLASS_NAMES``).  'none': one per
    distinct position of the reference phase, colour letter and (row,
    column) there, e.g. Bayer ``('R00', 'G01', 'G10', 'B11')``, X-Trans 18
    names from ``'G00'`` to ``'G25'`` (module doc)."""
    _check_sharing(sharing)
    if sharing == "symmetry":
        return CLASS_NAMES[kind]
    ref = CFA.bayer("RGGB") if kind == "bayer" else CFA.xtrans()
    reps, _ = _reference_positions(kind)
    return tuple(f"{COLOUR_NAMES[int(ref.pattern[y, x])]}{y}{x}" for y, x in reps)


@lru_cache(maxsize=256)
def _front_layout(pattern: bytes, period: int, radius: int, sharing: str) -> tuple[np.ndarray, np.ndarray]:
    cfa = CFA(np.frombuffer(pattern, dtype=np.int64).reshape(period, period))
    taps = square_taps(radius)
    if sharing == "symmetry":
        sets, offsets = cfa.site_class.copy(), cfa.canonical_offsets(taps)
    else:
        _, key = _reference_positions(cfa.kind)
        sets = np.empty((period, period), dtype=np.int64)
        for y in range(period):
            for x in range(period):
                k = key.get(cfa.crop(y, x).pattern.tobytes())
                if k is None:
                    ref = "RGGB" if cfa.kind == "bayer" else "CFA.xtrans()"
                    raise CFAError(f"front_sharing='none' keys its weight sets by the position in the reference "
                                   f"{cfa.kind} phase ({ref}); {cfa.name} is no phase of it")
                sets[y, x] = k
        offsets = np.broadcast_to(taps, (period, period) + taps.shape).copy()
    sets.setflags(write=False)
    offsets.setflags(write=False)
    return sets, offsets


def front_layout(cfa: CFA, radius: int, sharing: str = "symmetry") -> tuple[np.ndarray, np.ndarray]:
    """Weight set and tap offsets of every position of ``cfa``'s repeat.

    Returns:
        ``(sets, offsets)``: sets (P, P) index into :func:`front_set_names`;
        offsets (P, P, T, 2): tap t of the site at repeat position (y, x)
        lies at (y, x) + offsets[y, x, t].  'symmetry': the site class and
        the canonical offsets (``cfa.canonical_offsets``); 'none': the
        reference-phase position (module doc) and the raster square.
    """
    _check_sharing(sharing)
    return _front_layout(cfa.pattern.tobytes(), cfa.period, int(radius), sharing)


@lru_cache(maxsize=256)
def _front_roles(pattern: bytes, period: int, radius: int, sharing: str) -> np.ndarray:
    cfa = CFA(np.frombuffer(pattern, dtype=np.int64).reshape(period, period))
    _, offsets = front_layout(cfa, radius, sharing)
    roles = np.empty((period, period, 3), dtype=np.int64)
    for y in range(period):
        for x in range(period):
            order = [int(cfa.pattern[y, x])]
            for dy, dx in offsets[y, x]:
                c = int(cfa.pattern[(y + dy) % period, (x + dx) % period])
                if c not in order:
                    order.append(c)
            if len(order) != 3:
                raise CFAError(f"front radius {radius}: the taps of site ({y}, {x}) of {cfa.name} miss a colour")
            roles[y, x] = order
    roles.setflags(write=False)
    return roles


def front_roles(cfa: CFA, radius: int, sharing: str = "symmetry") -> np.ndarray:
    """(P, P, 3): the output channel of each kernel role at every position of
    ``cfa``'s repeat ('per_channel' front kernels).

    Role 0 is the site's own colour; roles 1 and 2 are the other two colours
    in the order they first appear among the site's taps in canonical order
    (:func:`front_layout`).  Sites of one weight set have the same canonical
    layout up to the red/blue swap, so a role means the same thing at all of
    them (own colour; the colour at the first canonical position that is not
    the own colour; the remaining one), as the set's weights need: no role is
    tied to the names red or blue."""
    _check_sharing(sharing)
    return _front_roles(cfa.pattern.tobytes(), cfa.period, int(radius), sharing)


def colour_centroids(cfa: CFA) -> np.ndarray:
    """(3, 2) position (dy, dx) within its block of each colour's sites'
    centroid (the same in every block type; blocks start at ``block_phase``).

    Bayer RGGB: R (0, 0), G (0.5, 0.5), B (1, 1).  X-Trans: all (1, 1), the
    block centre (its two reds, two blues and five greens are symmetric)."""
    b = cfa.block
    pat = np.roll(cfa.pattern, (-cfa.block_phase[0], -cfa.block_phase[1]), axis=(0, 1))
    out = None
    for ty in range(cfa.period // b):
        for tx in range(cfa.period // b):
            blk = pat[ty * b:(ty + 1) * b, tx * b:(tx + 1) * b]
            c = np.array([np.argwhere(blk == k).mean(0) for k in range(3)])
            if out is not None and not np.array_equal(c, out):
                raise ValueError(f"CFA {cfa.name}: colour centroids differ between blocks")
            out = c
    return out


@tensor_cache(64)
def _up_block_axis(centroids: tuple, b: int, n_in: int, device: str, dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per channel, the two source indices and the weight of the second one
    for every output sample of one axis: (3, n_in * b) each."""
    y = np.arange(n_in * b)[None, :]
    u = np.clip((y - np.asarray(centroids)[:, None]) / b, 0, n_in - 1)
    i0 = np.floor(u).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return (torch.from_numpy(i0).to(device), torch.from_numpy(i1).to(device),
            torch.tensor(u - i0, dtype=dtype, device=device))


def _interp(o: torch.Tensor, dim: int, idx: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    i0, i1, f = idx
    shape = list(o.shape)
    shape[dim] = i0.shape[1]
    view = [1, 3, 1, 1]
    view[dim] = i0.shape[1]
    expand = lambda t: t.reshape(view).expand(shape)
    return o.gather(dim, expand(i0)) * (1 - expand(f)) + o.gather(dim, expand(i1)) * expand(f)


def up_block(o0: torch.Tensor, cfa: CFA) -> torch.Tensor:
    """Colour base to full resolution at each colour's sample positions.

    Separable linear interpolation per channel: the base value of colour c
    sits at ``block * j + centroid_c`` (:func:`colour_centroids`), so a Bayer
    red is interpolated from where the red sites are (no half-pixel colour
    shift; the front level cannot undo one, it adds the same detail to all
    channels); X-Trans colours all sit at block centres.  Clamped at the
    borders.  The mosaic's blocks must start at (0, 0).

    Args:
        o0: (N, 3, h, w).
        cfa: layout of the full-resolution mosaic (``block_phase == (0, 0)``).
    Returns:
        (N, 3, h*b, w*b).
    """
    b = cfa.block
    cent = colour_centroids(cfa)
    h, w = o0.shape[-2:]
    dev, dt = str(o0.device), o0.dtype
    rows = _up_block_axis(tuple(cent[:, 0].tolist()), b, h, dev, dt)
    cols = _up_block_axis(tuple(cent[:, 1].tolist()), b, w, dev, dt)
    return _interp(_interp(o0, 2, rows), 3, cols)


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
def _front_index(pattern: bytes, period: int, H: int, W: int, radius: int, device: str,
                 sharing: str = "symmetry") -> FrontIndex:
    cfa = CFA(np.frombuffer(pattern, dtype=np.int64).reshape(period, period))
    sets, offsets = front_layout(cfa, radius, sharing)               # (P, P), (P, P, T, 2)
    role_map = front_roles(cfa, radius, sharing)                      # (P, P, 3)
    T, n_in, _ = front_widths(radius)
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


def front_index(cfa: CFA, H: int, W: int, radius: int, device, sharing: str = "symmetry") -> FrontIndex:
    """Cached :class:`FrontIndex` for a mosaic of ``H x W`` with layout ``cfa``
    (per weight set of :func:`front_layout`)."""
    _check_sharing(sharing)
    return _front_index(cfa.pattern.tobytes(), cfa.period, H, W, radius, str(device), sharing)


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
    d: torch.Tensor, sigma: torch.Tensor, cfa: CFA, radius: int, noise_input: bool, sharing: str = "symmetry"
) -> tuple[list[torch.Tensor], list[torch.Tensor], FrontIndex]:
    """Gather every class's MLP inputs and raw tap details.

    Args:
        d, sigma: (N, 1, H, W) from :func:`front_detail`.
        sharing: 'symmetry' (one entry per site class) or 'none' (one per
            weight set of :func:`front_set_names`).
    Returns:
        ``(feats, dtaps, index)``: per class k, feats[k] (N*n_k, n_in) rows in
        (image, pixel of ``index.pos[k]``) order and dtaps[k] (N, n_k, T) the
        unnormalised details at the canonical taps.
    """
    N, _, H, W = d.shape
    T, n_in, _ = front_widths(radius)
    index = front_index(cfa, H, W, radius, d.device, sharing)
    snr = F.pad(torch.asinh(d / sigma), (radius,) * 4).reshape(N, -1)
    dpad = F.pad(d, (radius,) * 4).reshape(N, -1)
    nz = noise_feature(sigma) if noise_input else torch.zeros_like(sigma)
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
    radius: int,
    leaky_slope: float,
    apply_mode: str,
    noise_input: bool,
    mlp_fn=mlp,
    sharing: str = "symmetry",
    kernels: str = "shared",
) -> torch.Tensor:
    """Full-resolution output of the mosaic level (module doc).

    Args:
        x: (N, 1, H, W) mosaic with layout ``cfa``.
        U: (N, 3, H, W) ``up_block(O_0)``.
        S: (N, 3, H, W) smooth signal estimate for the noise model.
        noise: (N, 2, 3) ``[a; b]`` per channel.
        weights: one MLP per site class, in ``cfa.class_names`` order
            (``sharing='none'``: per :func:`front_set_names`).
        mlp_fn: MLP evaluator with the signature of :func:`kpnt.ref.mlp.mlp`.
        sharing: 'symmetry' or 'none' (module doc).
        kernels: 'shared' or 'per_channel' (:data:`FRONT_KERNELS`).
    Returns:
        (N, 3, H, W) ``U + a * sum_t w_t d_t``: 'shared' adds the same
        value to all channels; 'per_channel' adds ``a * sum_t w_{r,t} d_t``
        to the channel of role r (:func:`front_roles`).

    Without autograd (inference) the same math runs per repeat position in
    chunks of rows (:func:`_front_level_chunked`), without the cached
    per-pixel index tensors.
    """
    n_sets = len(front_set_names(cfa.kind, sharing))
    if len(weights) != n_sets:
        raise ValueError(f"front level ({sharing} sharing): expected {n_sets} weight sets for {cfa.kind}, got {len(weights)}")
    K = front_kernel_count(kernels)
    if use_inference_path():
        return _front_level_chunked(x, U, S, noise, cfa, weights, radius, leaky_slope, apply_mode, noise_input, mlp_fn,
                                    sharing, kernels)
    N, _, H, W = x.shape
    T, _, _ = front_widths(radius)
    d, sigma = front_detail(x, U, S, noise, cfa)
    feats, dtaps, index = front_features(d, sigma, cfa, radius, noise_input, sharing)
    deltas = []
    for f, dt, w, role in zip(feats, dtaps, weights, index.roles):
        n_k = dt.shape[1]
        out = mlp_fn(f, w, leaky_slope).reshape(N, n_k, -1)          # (N, n_k, n_out)
        k = normalise_kernel(out[..., :K * T].reshape(N, n_k, K, T), apply_mode)
        by_role = torch.sigmoid(out[..., K * T])[..., None] * (k * dt[:, :, None, :]).sum(-1)   # (N, n_k, K)
        if K == 3:   # role r of each pixel -> its channel
            by_role = torch.zeros_like(by_role).scatter(2, role.expand(N, n_k, 3), by_role)
        deltas.append(by_role)
    delta = torch.cat(deltas, 1).index_select(1, index.inverse)       # (N, H*W, K)
    return U + delta.transpose(1, 2).reshape(N, K, H, W)


def _front_level_chunked(x, U, S, noise, cfa, weights, radius, leaky_slope, apply_mode, noise_input, mlp_fn=mlp,
                         sharing="symmetry", kernels="shared"):
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
    P, r = cfa.period, radius
    T, n_in, _ = front_widths(radius)
    classes, offsets = front_layout(cfa, radius, sharing)
    offsets = offsets.tolist()                                           # [py][px][t] = (dy, dx)
    roles = front_roles(cfa, radius, sharing).tolist()                   # [py][px][r] = channel
    K = front_kernel_count(kernels)
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
