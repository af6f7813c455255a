"""Reference helpers shared by the tests and ``tools/bench_kernels.py``.

Kept in the package (not in ``tests/``) so the benchmark, which runs on the
GPU machine from a plain checkout, uses the very same references as the
tests.
"""
from __future__ import annotations

import functools
import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F


#: The one tolerance table of the fused-kernel checks (tests/cuda and
#: tools/bench_kernels.py), relative Frobenius errors (:func:`rel_error`):
#:
#: - ``forward``: fused output vs the exact float64 reference (f16 weights
#:   and activations, f32 accumulation give ~1e-3);
#: - ``grad``: fused weight/input gradients vs the float64 reference that
#:   rounds to f16 where the kernels do (:func:`mlp_f16_rounded`);
#: - ``grad_vs_exact_factor`` / ``grad_vs_exact_slack``: against the exact
#:   reference a fused gradient may be off by at most factor x what the
#:   f16-rounding reference's own error and the fused gradient's distance
#:   from that reference add up to, plus slack (:func:`grad_vs_exact_bound`;
#:   f16 kink flips, docs/KERNELS.md);
#: - ``glue``: the same arithmetic reached through another path (the
#:   reference level around the fused MLP, float32 both);
#: - ``graphed_step``: a CUDA-graph training step vs the eager one (same
#:   kernels, other launch order: float summation order only).
TOLERANCES = {
    "forward": 2e-3,
    "grad": 1e-2,
    "grad_vs_exact_factor": 1.25,
    "grad_vs_exact_slack": 1e-3,
    "glue": 1e-5,
    "graphed_step": 1e-3,
}


def fused_shapes(op: str | None = None, train: bool | None = None):
    """The compiled shapes (:func:`kpnt.ops.capability.shapes`: the loaded
    extension's table, else ``kernels/shapes.def``), optionally of one op
    ('colour' or 'front') and of one kind (``train`` True: with a backward;
    False: forward only).  The tests and the benchmark parametrise over
    these, so a line added to the shape list is tested without a test edit."""
    from kpnt.ops import capability

    return [s for s in capability.shapes() if (op is None or s.op == op) and (train is None or s.train == train)]


def _round_f16(t: torch.Tensor) -> torch.Tensor:
    """``t`` rounded to f16 in the forward pass, identity in the backward."""
    return t + (t.half().double() - t).detach()


def grad_vs_exact_bound(fused_vs_f16: float, f16_vs_exact: float) -> float:
    """How far a fused gradient may lie from the exact float64 one.

    fused - exact = (fused - f16 ref) + (f16 ref - exact).  The second part is
    f16 rounding itself, mostly leaky-ReLU kinks that flip sign; the first is
    the kernels' own, mostly *other* kinks that flip because f32 tensor-core
    accumulation orders the sums differently (with a few hundred rows one
    such flip moves a weight gradient by 1e-2: session 23,
    ``tools/emulate_f16_backward.py``).  Different flips add in quadrature;
    the factor leaves room for correlation and the slack for tiny errors.
    Where the kernels track the f16 reference closely this is factor x the
    reference's own error, the bound before session 23."""
    return TOLERANCES["grad_vs_exact_factor"] * math.hypot(fused_vs_f16, f16_vs_exact) + TOLERANCES["grad_vs_exact_slack"]


@functools.lru_cache(maxsize=None)
def half_slope(slope: float) -> tuple[float, float]:
    """The slope as the kernels hold it (kernels/mlp_core.cuh ``HalfSlope``):
    ``hi`` = f16(slope), ``lo`` = f16(slope - hi), both as floats."""
    hi = float(torch.tensor(slope, dtype=torch.float16))
    return hi, float(torch.tensor(slope - hi, dtype=torch.float16))


def scale_like_hfma2(v: torch.Tensor, slope: float) -> torch.Tensor:
    """``v`` (f16 values in float64) times the slope as the kernels form it:
    f16(v hi + f16(v lo)), an HMUL2 then an HFMA2 (one rounding of the exact
    sum, which float64 holds exactly for f16 operands)."""
    hi, lo = half_slope(slope)
    return (v * hi + (v * lo).half().double()).half().double()


def leaky_relu_f16(z: torch.Tensor, slope: float) -> torch.Tensor:
    """The fused kernels' activation (kernels/mlp_core.cuh ``lrelu_frags``):
    ``z`` rounded to f16, then max(r, r s) with r s formed in f16 arithmetic
    as :func:`scale_like_hfma2` does.  Gradient: 1 where the rounded value is
    positive, else hi + lo (:func:`half_slope`), the derivative of what the
    kernels compute (their backward, ``lrelu_grad_frags``, scales by the same
    two parts); the roundings pass gradients straight through."""
    r = _round_f16(z)
    hi, lo = half_slope(slope)
    neg = r * (hi + lo)
    return torch.where(r > 0, r, neg + (scale_like_hfma2(r.detach(), slope) - neg).detach())


def mlp_f16_rounded(x: torch.Tensor, ws: list[torch.Tensor], slope: float) -> torch.Tensor:
    """float64 bias-free leaky-ReLU MLP that rounds what the fused kernels
    round to f16 (inputs, weights, pre-activations, the activation's
    product: :func:`leaky_relu_f16`), with straight-through gradients.

    Its leaky-ReLU kink decisions are those of an f16 forward pass: on random
    data ~2e-4 of the hidden units flip sign under f16 rounding, and each
    flip changes that unit's gradient by (1 - slope), so *any* f16 forward
    differs from an exact reference by a few 1e-2 in the gradients.  Against
    this reference the kernels' own error shows.

    Args:
        x: (P, in) inputs; ws: (out, in) weight matrices, first to last.
    Returns:
        (P, out) float64.
    """
    h = _round_f16(x)
    for w in ws[:-1]:
        h = leaky_relu_f16(h @ _round_f16(w).t(), slope)
    return h @ _round_f16(ws[-1]).t()


@contextmanager
def reference_mlp(mlp_fn):
    """Within: the reference backend's MLPs, the bare op and the ones inside
    both levels, are ``mlp_fn`` (``mlp_f16_rounded``: a model whose MLPs
    round like the fused kernels).  The reference backend calls
    ``dispatch.OPS`` directly, so that table is the one patched."""
    from kpnt.ops import dispatch

    saved = dict(dispatch.OPS)
    dispatch.OPS["mlp"] = mlp_fn
    for op in ("colour_level", "front_level"):
        dispatch.OPS[op] = functools.partial(saved[op], mlp_fn=mlp_fn)
    try:
        yield
    finally:
        dispatch.OPS.update(saved)


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` in float64 (a zero reference gives inf or nan,
    never a pass)."""
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def central_difference(loss, w: torch.Tensor, i: int, step: float) -> float:
    """``(loss(w_i + step) - loss(w_i - step)) / (2 step)`` for flat element
    ``i`` of ``w`` (changed in place under no_grad, then restored);
    ``loss()`` returns a float."""
    flat = w.data.view(-1)
    old = flat[i].item()
    with torch.no_grad():
        flat[i] = old + step
        lp = loss()
        flat[i] = old - step
        lm = loss()
        flat[i] = old
    return (lp - lm) / (2 * step)


def front_level_inputs(cfa, N: int, H: int, W: int, seed: int, device="cuda"):
    """``(x, U, S, noise)`` for a front-level check: a smooth-ish colour
    image ``S`` in (0.05, 0.45), its mosaic with layout ``cfa`` plus noise,
    ``U`` = ``S`` plus a little noise, and a fixed per-channel profile."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(N, 3, H, W, generator=g) * 0.4 + 0.05
    col = torch.from_numpy(cfa.colour_map(H, W)).long().expand(N, 1, H, W)
    x = base.gather(1, col) + torch.randn(N, 1, H, W, generator=g) * 0.02
    U = base + torch.randn(N, 3, H, W, generator=g) * 0.01
    noise = torch.tensor([[[2e-3, 1e-3, 3e-3], [1e-5, 2e-5, 1e-5]]]).expand(N, 2, 3).contiguous()
    return x.to(device), U.to(device), base.to(device), noise.to(device)
