"""The mosaic front level on the fused kernels (reference:
:mod:`kpnt.ref.front_level`).

One grouped MLP launch for all site classes (rows read through a cached
class partition); the canonical taps are gathered inside the kernel from
per-photosite maps, the predicted kernel is applied in its epilogue.
Differentiable in ``U`` and every weight set by the fused backward (an
adjoint kernel gathers dL/dd back onto the photosites, no atomics);
gradients to ``x``, ``S`` or ``noise``, if asked for, come from the
reference level around the fused MLP.  Shared and per-channel kernels
both have a fused backward where their ``kernels/shapes.def`` line says
``train 1`` (width 128 through the split backward); a line compiled
forward only is routed to the reference by :mod:`kpnt.ops` when weight
gradients are needed, before it gets here.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from kpnt.mosaic.cfa import CFA
from kpnt.ops._cuda.extension import ext, front_consts, unwrap
from kpnt.ops._cuda.glue import by_name, grads, input_names
from kpnt.ops._cuda.mlp import dispatch_mlp, partition_by_class, unpack, use_wgmma, use_wgmma_backward
from kpnt.ops.weights import as_weight_sets
from kpnt.ref._cache import tensor_cache
from kpnt.ref.front_layout import front_roles
from kpnt.spec import FrontLevelSpec

#: FrontLevelSpec.kernels name of a kernel count.
_KERNELS_NAME = {1: "shared", 3: "per_channel"}

#: Blocks a site class gets in the MLP backward, as a multiple of the GPU's
#: resident blocks over the classes, when the classes are of unequal size
#: (``MlpArgs::spread``).  Each class gets the same blocks; X-Trans's classes
#: hold 4 : 1 : 4 of the photosites, so its two large classes' blocks run on
#: after the small one's are done, and the front backward took 1.00 ms of
#: the graphed X-Trans step against 0.77 for Bayer's two equal classes (the
#: same MLP and rows: ``docs/bench/breakdown_s38a_h100.txt``), about the
#: 4/3 that imbalance predicts.  With 4 the blocks are smaller and the GPU
#: takes the next as one ends.  Measured in session 39 (H100, four graphed
#: X-Trans profiles alternating 1 and 4, float32 and bf16 guide:
#: ``docs/bench/spread_breakdown{1,4}_s39c_h100.txt``): the front backward's
#: kernel 0.991-1.000 ms at 1, 0.979-0.986 at 4, about 1 %; the graphed steps
#: did not move beyond their run-to-run spread
#: (``docs/bench/spread_steps_s39a_h100.txt``); 1 (off).  Session 42's
#: Nsight Compute profiles showed why, and that the imbalance is the cause
#: after all (``docs/bench/ncu_front_bwd_*_s42_h100.txt``): X-Trans's kernel
#: executes the same instructions as Bayer's and its SMs' mean active cycles
#: are Bayer's (1.31 against 1.30 M), but the SMs of the small class idle
#: (min 62 % below the mean, max 24 % above), so it takes 1.42x the cycles.
#: With 4, the mean rose 8 % (more blocks, more partial sums) and the busiest
#: SM stayed 16 % above it: the large classes' blocks, queued after the small
#: one's, leave a tail.  :data:`BALANCED_CLASSES` is the alternative.
UNEVEN_CLASSES_SPREAD = 1

#: Whether the front MLP backward's blocks, when the site classes are of
#: unequal size, are one wave that the classes share in proportion to their
#: rows (``MlpArgs::spread`` 0, ``kernels/mlp_bwd_wgmma.cuh``
#: ``block_of_group``; the wgmma backward only) instead of
#: :data:`UNEVEN_CLASSES_SPREAD`'s equal blocks a class.  Written in session
#: 42; measured in session 43 (H100, two off / on rounds of point 2's rows,
#: ``docs/bench/balanced_steps_s43_h100.txt``): graphed X-Trans step
#: 6.81 / 6.79 -> 6.60 / 6.60 ms (float32 guide) and 4.88 / 4.90 -> 4.72 /
#: 4.68 (bf16 guide), Bayer (equal classes, never takes it) unchanged.  Under
#: Nsight Compute the X-Trans front backward's SMs are now within -3 / +5 %
#: of the mean active cycles (session 42: -62 / +24 %) and it takes 1.37 M
#: cycles, 0.96 ms (``docs/bench/ncu_front_bwd_xtrans_balanced_s43_h100.txt``).
BALANCED_CLASSES = True

#: Whether the front MLP's rows of a site class are grouped by repeat
#: position (then raster order) rather than in raster order.  Why: the taps
#: of a site are its class's canonical taps turned by the site's D4
#: transform, and a warp's rows read tap t together; X-Trans's large classes
#: mix 4 transforms along an image row (8 over the repeat; Bayer's classes
#: one a row), so the rows of a warp read tap t at up to 4 different
#: relative positions, spread over more cache lines.  X-Trans's front
#: backward takes 1.0 ms of the graphed step against Bayer's 0.77 for the
#: same MLP and rows (session 39 thought the classes' imbalance was not why;
#: session 42's profiles showed it is: :data:`UNEVEN_CLASSES_SPREAD`).  By
#: site, a warp's rows share one transform and lie a period apart.  Only the
#: rows' order changes: the outputs are the same bits, the gradients the
#: same within float16's rounding of per-tile scaled dL/dy.  A CPU model of
#: the tap loads (``python tools/front_sectors.py``, session 40) predicted
#: the opposite of the hope: by site, the 8 rows of a warp's load span 7
#: periods (42 pixels) instead of 10-21 (mean 14), and its loads touch 19.5
#: 32-byte sectors against 10.7 in raster order (Bayer 7.9 either way).
#: Measured in session 42 (H100, ``PARTS="rows front_ncu wgrad_ncu" bash
#: tools/gpu_calls/s41_one.sh``, ``docs/bench/rows_steps_s42_h100.txt``),
#: off / on over two rounds: X-Trans 6.83 / 6.92 and 6.81 / 6.94 ms (float32
#: guide), 4.89 / 5.02 and 4.89 / 5.01 (bf16); Bayer unchanged.  Slower, as
#: the model said: off.  (Its test had claimed dU the same bits; the first
#: GPU run showed it is not, see ``tests/cuda/test_front_level.py``.)
ROWS_BY_SITE = False

#: The order of the canonical taps in the front MLP's input columns and in
#: its kernel-weight outputs (column j reads canonical tap ``order[j]``), or
#: None for canonical order.  Why: a warp's tap load reads one column for 8
#: rows x 4 consecutive columns (``kernels/mlp_core.cuh`` ``load_rows``), so
#: which taps share a load decides how many 32-byte sectors it touches.  The
#: same math: the tap table and, by one index_select on the packed weights
#: (:func:`_weights_in_tap_order`), the first layer's columns and the last
#: layer's kernel rows are permuted together, and autograd returns the
#: gradients in canonical order.  :data:`SEARCHED_TAP_ORDER` is the order
#: ``python tools/front_sectors.py --search-tap-order 3000 --size 132 132
#: --stride 1`` found (session 40): 6.12 sectors a load for Bayer (7.88
#: canonical) and 8.52 for X-Trans (10.74).  Off: measured in session 42
#: (H100, ``PARTS=taps bash tools/gpu_calls/s41_one.sh``,
#: ``docs/bench/taps_steps_s42_h100.txt``; its CUDA tests passed) over two
#: rounds, canonical / searched, the graphed steps did not get faster:
#: float32 guide Bayer 13.88 / 13.98 and 13.88 / 13.99 ms, X-Trans 6.79 /
#: 6.80 and 6.80 / 6.80; bf16 guide Bayer 7.90 / 7.98 and 7.89 / 7.99,
#: X-Trans 4.89 / 4.89 and 4.91 / 4.91.  Fewer sectors a load did not
#: move the front backward.
TAP_ORDER: tuple[int, ...] | None = None

#: See :data:`TAP_ORDER` (radius 2: 25 taps; tap 24 stays last, in the
#: block of 8 columns that holds the noise input).
SEARCHED_TAP_ORDER = (3, 22, 0, 7, 2, 9, 4, 5, 16, 13, 15, 12, 19, 17, 1, 18, 6, 20, 21, 10, 8, 14, 23, 11, 24)

#: Whether the front level's MLP forward runs on the wgmma kernel
#: (``kernels/mlp_wgmma.cuh``; Hopper, hidden width 64, 16 / 32 / 64
#: outputs, as the colour level's with :data:`kpnt.ops._cuda.mlp.WGMMA_FORWARD`).
#: On since session 28's first H100 call: its CUDA tests passed (against
#: float64 and mma.sync) and ``tools/time_model.py --front-wgmma both`` gave
#: 24-MP Bayer 32.3 ms against 34.6 on mma.sync, X-Trans 22.1 against 24.0
#: (docs/bench/time_model_s28a_h100.txt).  Off, or on another GPU or width,
#: the front runs on mma.sync.
WGMMA_FORWARD = True


def _cfa_from(pattern: Sequence[int]) -> CFA:
    P = int(round(len(pattern) ** 0.5))
    return CFA(np.asarray(pattern, dtype=np.int64).reshape(P, P))


@tensor_cache(32)
def _tables(pattern: tuple, radius: int, device: str,
            order: tuple | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(colour (P*P,), tap_off (P*P, T, 2), inv (P*P, L, 3), roles (P*P, 3)) int32 of a CFA.

    ``tap_off[s, j]`` is the offset of canonical tap ``order[j]`` of repeat
    position s (canonical order without ``order``).  ``inv`` lists, for
    each repeat position of a photosite q, the (dy, dx, t) of every (pixel
    p = q - (dy, dx), tap t) that reads q; rows are padded with t = -1 to
    the longest list.  ``roles`` is the output channel of each per-channel
    kernel role (:func:`kpnt.ref.front_layout.front_roles`).
    """
    from kpnt.ref.taps import square_taps

    cfa = _cfa_from(pattern)
    P = cfa.period
    offs = cfa.canonical_offsets(square_taps(radius))                 # (P, P, T, 2)
    T = offs.shape[2]
    if order is not None:
        if sorted(order) != list(range(T)):
            raise ValueError(f"front level tap order {order} is not a permutation of the {T} taps of radius {radius}")
        offs = offs[:, :, list(order)]
    # The kernels skip the image-bounds checks of rows at least `radius`
    # from every edge (kernels/front_level.cu FGeo::interior).
    if int(np.abs(offs).max()) > radius:
        raise ValueError(f"{cfa.name}: canonical tap offsets reach {int(np.abs(offs).max())} pixels, "
                         f"beyond the front level's radius {radius}")
    lists = [[] for _ in range(P * P)]
    for ry in range(P):
        for rx in range(P):
            for t in range(T):
                dy, dx = (int(v) for v in offs[ry, rx, t])
                lists[((ry + dy) % P) * P + (rx + dx) % P].append((dy, dx, t))
    L = max(len(v) for v in lists)
    inv = np.zeros((P * P, L, 3), dtype=np.int32)
    inv[..., 2] = -1
    for s, v in enumerate(lists):
        inv[s, :len(v)] = v
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32)).to(device)
    roles = front_roles(cfa, radius, "symmetry").reshape(P * P, 3)
    return as_t(cfa.pattern.reshape(-1)), as_t(offs.reshape(P * P, T, 2)), as_t(inv), as_t(roles)


@tensor_cache(16)
def _partition(pattern: tuple, N: int, H: int, W: int, device: str, by_site: bool = False) -> tuple[Tensor, Tensor]:
    """Rows (n, y, x) of an N x H x W mosaic grouped by site class (cached):
    ``(perm, offsets)`` as :func:`partition_by_class` gives them.  Within a
    class the rows are in raster order, or with ``by_site`` (see
    :data:`ROWS_BY_SITE`) grouped by repeat position first, each position's
    rows in raster order."""
    cfa = _cfa_from(pattern)
    P = cfa.period
    ys, xs = torch.arange(H) % P, torch.arange(W) % P
    site = (ys[:, None] * P + xs[None, :]).reshape(-1).repeat(N)        # repeat position of every row
    cls = torch.as_tensor(cfa.site_class, dtype=torch.int64).reshape(-1)[site]
    perm, offsets = partition_by_class(cls.to(device), cfa.n_classes)
    if by_site:
        perm = torch.argsort(cls * (P * P) + site, stable=True).to(device=device, dtype=torch.int32)
    return perm, offsets


@tensor_cache(16)
def _tap_order_index(dims: tuple, kernels: int, order: tuple, device: str) -> tuple[Tensor, Tensor]:
    """(index, inverse) int64 over a packed weight set (:func:`unpack`'s
    layout): ``packed[..., index]`` has the first layer's tap columns and the
    last layer's kernel-weight rows (``kernels`` blocks of T) in ``order``,
    as :func:`_tables` with that order lays out the taps; ``[..., inverse]``
    of that is the canonical set again."""
    n_in, hidden, n_out, n_hidden = dims
    T = len(order)
    mats = unpack(torch.arange(hidden * (n_in + hidden * (n_hidden - 1) + n_out)), dims)
    columns = list(order) + list(range(T, n_in))                       # the constant and noise inputs stay
    rows = [k * T + t for k in range(kernels) for t in order] + list(range(kernels * T, n_out))   # the blend too
    mats[0], mats[-1] = mats[0][:, columns], mats[-1][rows]
    index = torch.cat([m.reshape(-1) for m in mats])
    return index.to(device), torch.argsort(index).to(device)


def _weights_in_tap_order(w, dims: tuple, kernels: int, order: tuple | None) -> tuple[Tensor, Tensor]:
    """(float32, float16) packed weight sets of ``w`` (:class:`MlpWeightSets`)
    with their columns and rows in the tap ``order`` (:data:`TAP_ORDER`);
    the float32 one carries autograd back to ``w``'s matrices."""
    if order is None:
        return w.packed(), w.half()
    index, _ = _tap_order_index(dims, kernels, order, str(w.packed().device))
    packed = w.packed().index_select(1, index)
    return packed, packed.detach().to(torch.float16)


def _weights_in_canonical_order(packed: Tensor, dims: Sequence[int], kernels: int,
                                order: Sequence[int] | None) -> Tensor:
    """Packed weight sets laid out in the tap ``order`` (as
    :func:`_weights_in_tap_order` gives them) back in canonical order, for
    the reference, which knows only that; ``packed`` itself when the order
    is empty or None."""
    if not order:
        return packed
    _, inverse = _tap_order_index(tuple(dims), kernels, tuple(order), str(packed.device))
    return packed.index_select(1, inverse)


def _front_fwd_impl(
    x: Tensor, U: Tensor, S: Tensor, noise: Tensor, w: Tensor, w16: Tensor, perm: Tensor, row_offsets: Tensor,
    colour: Tensor, tap_off: Tensor, inv: Tensor, roles: Tensor, dims: list[int], pattern: list[int], radius: int,
    kernels: int, slope: float, plain: bool, noise_input: bool, wgmma: bool, tap_order: list[int],
) -> tuple[Tensor, Tensor]:
    # ``w`` (float32) is the autograd input; the kernels read ``w16``.  Both
    # hold the weights in ``tap_order`` (empty: canonical), as ``tap_off``
    # lays out the taps; only the reference fallback of the backward needs
    # the order itself.
    P, T = int(round(len(pattern) ** 0.5)), (2 * radius + 1) ** 2
    O, fmap = unwrap(ext().front_forward(x, U, S, noise, w16, [perm, row_offsets, colour, tap_off, inv, roles], dims,
                                         [P, T, kernels], slope, plain, noise_input, front_consts(), wgmma))
    return O, fmap


FRONT_INPUTS = input_names(_front_fwd_impl)
_front_fwd = torch.library.custom_op("kpnt::front_fwd", mutates_args=(), device_types="cuda")(_front_fwd_impl)


@_front_fwd.register_fake
def _(x, U, S, noise, w, w16, perm, row_offsets, colour, tap_off, inv, roles, dims, pattern, radius, kernels, slope,
      plain, noise_input, wgmma, tap_order):
    N, _, H, W = x.shape
    return U.new_empty(U.shape), x.new_empty((N, 4, H, W))


@torch.library.custom_op("kpnt::front_bwd", mutates_args=(), device_types="cuda")
def _front_bwd(
    x: Tensor, U: Tensor, S: Tensor, noise: Tensor, w16: Tensor, perm: Tensor, row_offsets: Tensor, colour: Tensor,
    tap_off: Tensor, inv: Tensor, roles: Tensor, fmap: Tensor, dO: Tensor, dims: list[int], pattern: list[int],
    radius: int, kernels: int, slope: float, plain: bool, noise_input: bool, wgmma: bool, spread: int,
) -> tuple[Tensor, Tensor]:
    P, T = int(round(len(pattern) ** 0.5)), (2 * radius + 1) ** 2
    dU, dw = unwrap(ext().front_backward(x, U, S, noise, w16, [perm, row_offsets, colour, tap_off, inv, roles], fmap,
                                         dO, dims, [P, T, kernels], slope, plain, noise_input, front_consts(), wgmma,
                                         spread))
    return dU, dw


@_front_bwd.register_fake
def _(x, U, S, noise, w16, perm, row_offsets, colour, tap_off, inv, roles, fmap, dO, dims, pattern, radius, kernels,
      slope, plain, noise_input, wgmma, spread):
    return U.new_empty(U.shape), U.new_empty(w16.shape)


_SAVED = ("x", "U", "S", "noise", "w", "w16", "perm", "row_offsets", "colour", "tap_off", "inv", "roles")


def _setup_context(ctx, inputs, output):
    a = by_name(FRONT_INPUTS, inputs)
    ctx.save_for_backward(*(a[n] for n in _SAVED), output[1])
    ctx.args = {n: a[n] for n in ("dims", "pattern", "radius", "kernels", "slope", "plain", "noise_input",
                                  "tap_order")}


def _backward(ctx, dO, dfmap):
    *saved, fmap = ctx.saved_tensors
    t = dict(zip(_SAVED, saved))
    a = ctx.args
    need = by_name(FRONT_INPUTS, ctx.needs_input_grad)
    dO = torch.zeros_like(t["U"]) if dO is None else dO.contiguous()
    if need["x"] or need["S"] or need["noise"]:
        # Gradients to the mosaic, S or the noise profile (never needed by
        # kpnt.model, where they come from the data): the reference level
        # around the fused MLP, differentiated by autograd.
        from kpnt.ref.front_level import front_level

        dims = a["dims"]
        spec = FrontLevelSpec(radius=a["radius"], kernels=_KERNELS_NAME[a["kernels"]], width=dims[1],
                              hidden_layers=dims[3], leaky_slope=a["slope"],
                              apply_mode="plain" if a["plain"] else "softmax", noise_input=a["noise_input"])
        names = ("x", "U", "S", "noise")
        with torch.enable_grad():
            leaves = {n: t[n].detach().requires_grad_(need[n]) for n in names}
            w_ = t["w"].detach().requires_grad_()
            canonical = _weights_in_canonical_order(w_, dims, a["kernels"], a["tap_order"])
            sets = [unpack(canonical[g], dims) for g in range(w_.shape[0])]
            O_ = front_level(*(leaves[n] for n in names), _cfa_from(a["pattern"]), sets, spec, mlp_fn=dispatch_mlp)
            wrt = {n: leaves[n] for n in names if need[n]}
            wrt["w"] = w_
            got = dict(zip(wrt, torch.autograd.grad(O_, list(wrt.values()), dO)))
        return grads(FRONT_INPUTS, **{n: got[n] for n in names if n in got}, w=got["w"] if need["w"] else None)
    if not (need["U"] or need["w"]):
        return grads(FRONT_INPUTS)
    dU, dw = _front_bwd(*(t[n] for n in _SAVED if n != "w"), fmap, dO, a["dims"], a["pattern"], a["radius"],
                        a["kernels"], a["slope"], a["plain"], a["noise_input"], use_wgmma_backward(t["x"], a["dims"]),
                        _spread(a["pattern"]))
    return grads(FRONT_INPUTS, U=dU if need["U"] else None, w=dw if need["w"] else None)


_front_fwd.register_autograd(_backward, setup_context=_setup_context)


def _spread(pattern: Sequence[int]) -> int:
    """The backward's ``spread`` for the CFA ``pattern`` (flattened): when
    its site classes hold unequal shares of the photosites, 0 (one wave of
    blocks shared by rows) with :data:`BALANCED_CLASSES`, else
    :data:`UNEVEN_CLASSES_SPREAD`; 1 for equal classes."""
    if not _unequal_classes(tuple(pattern)):
        return 1
    return 0 if BALANCED_CLASSES else UNEVEN_CLASSES_SPREAD


@lru_cache(maxsize=64)
def _unequal_classes(pattern: tuple) -> bool:
    """Whether the site classes of a CFA pattern hold unequal shares of its photosites (once a pattern: every
    backward asks)."""
    counts = np.bincount(_cfa_from(pattern).site_class.ravel())
    return bool(counts.min() != counts.max())


def _tap_order(radius: int) -> tuple[int, ...] | None:
    """:data:`TAP_ORDER` as a tuple, or None (canonical order); an error if
    it does not have the taps of ``radius``."""
    if TAP_ORDER is None:
        return None
    if len(TAP_ORDER) != (2 * radius + 1) ** 2:
        raise ValueError(f"front_level.TAP_ORDER has {len(TAP_ORDER)} taps, the front level's radius {radius} has "
                         f"{(2 * radius + 1) ** 2}: set it to None or to an order of those taps")
    return tuple(TAP_ORDER)


def _check_tensors(x: Tensor, U: Tensor, S: Tensor, noise: Tensor) -> None:
    for name, t in (("x", x), ("U", U), ("S", S), ("noise", noise)):
        if not isinstance(t, Tensor) or not t.is_cuda or t.dtype != torch.float32:
            got = f"{t.dtype} on {t.device}" if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"fused front_level: {name} must be a float32 CUDA tensor, got {got} "
                             "(use backend='torch' for others)")
        if t.device != x.device:
            raise ValueError(f"fused front_level: {name} is on {t.device}, x on {x.device}")


def front_level(x: Tensor, U: Tensor, S: Tensor, noise: Tensor, cfa: CFA, weights, spec: FrontLevelSpec) -> Tensor:
    """:func:`kpnt.ref.front_level.front_level` on the fused kernels: same
    arguments, same results within f16 tolerance.

    Args:
        x: (N, 1, H, W) mosaic; U, S: (N, 3, H, W); noise: (N, 2, 3); all
            float32 on one CUDA device.
        weights: one MLP per site class (``cfa.class_names`` order), each of
            shape ``spec.mlp`` (a list of lists, or
            :class:`kpnt.ops.weights.MlpWeightSets`, packed once).
        spec: a spec the capability table accepts
            (:func:`kpnt.ops.capability.front_problem`; symmetry sharing).
    Returns:
        (N, 3, H, W).
    """
    _check_tensors(x, U, S, noise)
    if spec.sharing != "symmetry":
        raise ValueError(f"fused front_level: runs symmetry sharing only, got {spec.sharing!r}")
    for k, ws in enumerate(weights):
        for i, wi in enumerate(ws):
            if wi.device != x.device:
                raise ValueError(f"fused front_level: weights[{k}][{i}] is on {wi.device}, x on {x.device}")
    N, _, H, W = x.shape
    pattern = tuple(int(v) for v in cfa.pattern.reshape(-1))
    dev = str(x.device)
    order = _tap_order(int(spec.radius))
    colour, tap_off, inv, roles = _tables(pattern, int(spec.radius), dev, order)
    perm, row_offsets = _partition(pattern, N, H, W, dev, ROWS_BY_SITE)
    dims = spec.mlp.as_tuple()
    w, w16 = _weights_in_tap_order(as_weight_sets(weights), dims, spec.n_kernels, order)
    O, _ = _front_fwd(x.contiguous(), U.contiguous(), S.contiguous(), noise.contiguous(), w, w16, perm,
                      row_offsets, colour, tap_off, inv, roles, list(dims), list(pattern),
                      int(spec.radius), spec.n_kernels, float(spec.leaky_slope), spec.apply_mode == "plain",
                      bool(spec.noise_input), use_wgmma(x, dims, WGMMA_FORWARD), list(order or ()))
    return O
