"""Bias-free MLP, the shape a fully fused tensor-core kernel evaluates.

Every layer is a plain ``(out, in)`` matrix (widths multiples of 16, no bias
vectors); a constant-1 input feature plays the role of the first layer's
bias.  Hidden layers use leaky ReLU, the output layer is linear.

Initialisation (:func:`init_weights`) threads the constant through the net so
that every layer starts *with* a bias: hidden unit 0 of every layer is wired
to copy the constant (leaky ReLU leaves 1 unchanged), every other unit reads
it with a random weight, and the output layer reads it with the requested
output offsets.  Training may of course repurpose unit 0.
"""
from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from typing import Sequence

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def mlp(x: torch.Tensor, weights: Sequence[torch.Tensor], leaky_slope: float) -> torch.Tensor:
    """Evaluate the MLP on a batch of pixels.

    Args:
        x: (P, n_in) inputs, one row per pixel.
        weights: matrices ``W_0 (width, n_in), ..., W_last (n_out, width)``.
        leaky_slope: negative slope of the hidden activations.
    Returns:
        (P, n_out).
    """
    h = x
    for w in weights[:-1]:
        # in place on the fresh matmul output (mm saves its inputs, not its output)
        h = F.leaky_relu(h @ w.t(), leaky_slope, inplace=True)
    return h @ weights[-1].t()


def init_weights(
    n_in: int,
    width: int,
    hidden_layers: int,
    n_out: int,
    const_index: int,
    out_offset: torch.Tensor,
    leaky_slope: float,
    generator: torch.Generator,
    n_in_used: int | None = None,
    n_out_used: int | None = None,
    out_scale: float = 0.1,
) -> list[torch.Tensor]:
    """Initial weights: He-normal hidden layers, a small last layer.

    Args:
        n_in, width, hidden_layers, n_out: shapes; ``hidden_layers`` hidden
            layers of ``width`` give ``hidden_layers + 1`` matrices.
        const_index: input column that is constant 1.
        out_offset: (n_out_used,) initial output values (the output layer's
            effective bias, carried by hidden unit 0).
        n_in_used / n_out_used: columns/rows beyond these are padding (zero
            inputs, unused outputs) and start at zero.
        out_scale: std of the random part of the last layer, times
            ``1/sqrt(width)``: small so the outputs start near ``out_offset``.
    Returns:
        list of float32 tensors.
    """
    n_in_used = n_in if n_in_used is None else n_in_used
    n_out_used = n_out if n_out_used is None else n_out_used
    gain = math.sqrt(2.0 / (1.0 + leaky_slope ** 2))
    mats = []
    fan_in = n_in_used
    for layer in range(hidden_layers):
        cols = n_in if layer == 0 else width
        w = torch.zeros(width, cols)
        used = n_in_used if layer == 0 else width
        w[:, :used] = torch.randn(width, used, generator=generator) * (gain / math.sqrt(fan_in))
        src = const_index if layer == 0 else 0
        w[0, :] = 0.0
        w[0, src] = 1.0                      # unit 0 carries the constant
        mats.append(w)
        fan_in = width
    w = torch.zeros(n_out, width)
    w[:n_out_used] = torch.randn(n_out_used, width, generator=generator) * (out_scale / math.sqrt(width))
    w[:n_out_used, 0] = out_offset
    mats.append(w)
    return mats


def mlp_columns(xt: torch.Tensor, weights: Sequence[torch.Tensor], leaky_slope: float,
                buffers: list[torch.Tensor] | None = None) -> torch.Tensor:
    """:func:`mlp` on inputs stored one pixel per *column*, for inference.

    ``mlp_columns(x.t(), w, s) == mlp(x, w, s).t()`` up to float summation
    order: the same dot products, computed as ``W @ h`` on (features,
    pixels) blocks.  With ``buffers`` (from :func:`column_buffers`), every
    layer writes into preallocated memory (``mm(out=)``, in-place leaky
    ReLU): called on chunks of a few thousand pixels, the activations never
    leave the CPU caches.  No autograd (outputs overwrite each other):
    callers run it under ``torch.no_grad()``.

    Args:
        xt: (n_in, P) inputs, one column per pixel (may be a column slice of
            a larger buffer).
        weights: as :func:`mlp`.
        buffers: optional scratch space for P or more pixels.
    Returns:
        (n_out, P), a view into ``buffers[2]`` when given.
    """
    P = xt.shape[1]
    low = _MATMUL_DTYPE if xt.device.type == "cpu" and xt.dtype == torch.float32 else None
    if low is not None:
        # bf16 matmuls (cpu_matmul_dtype): weights cast once, inputs per
        # chunk; the fp32 scratch buffers hold twice as many bf16 values.
        weights = _cast_weights(weights, low)
        xt = xt.to(low)
        if buffers is not None:
            buffers = [b.view(low) for b in buffers]

    def dst(i, rows):
        # a contiguous (rows, P) view of a flat buffer (mm writes fastest there)
        return None if buffers is None else buffers[i][: rows * P].view(rows, P)

    h = xt
    for i, w in enumerate(weights[:-1]):
        out = dst(i % 2, w.shape[0])
        h = torch.mm(w, h) if out is None else torch.mm(w, h, out=out)
        F.leaky_relu(h, leaky_slope, inplace=True)
    out = dst(2, weights[-1].shape[0])
    res = torch.mm(weights[-1], h) if out is None else torch.mm(weights[-1], h, out=out)
    return res if low is None else res.float()


# ----------------------------------------------------------------------
# CPU inference precision
# ----------------------------------------------------------------------
#: dtype of the inference MLP matmuls on a CPU; None: float32 (the weights').
#: Set through :func:`set_cpu_matmul_dtype` (the CLIs do it once per process).
_MATMUL_DTYPE: torch.dtype | None = None
_CAST_CACHE: dict = {}
CPU_PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), where
    bf16 matmuls run ~4x faster than fp32 (measured here: 265 vs 55-62
    GFLOP/s per core for the MLP's (128 x 128) @ (128 x 16384) products);
    elsewhere oneDNN emulates bf16, slower than fp32."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = next((line for line in fh if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_matmul_dtype() -> torch.dtype | None:
    """The dtype CPU products run in now (``torch.bfloat16``), or None for
    float32 (:func:`set_cpu_matmul_dtype`)."""
    return _MATMUL_DTYPE


def set_cpu_matmul_dtype(precision: str) -> str:
    """Choose the precision of the CPU inference MLPs for this process.

    Args:
        precision: 'fp32'; 'bf16' (bfloat16 products, float32 everywhere
            else: ~3x faster end to end where the CPU has native bf16;
            outputs differ from fp32 by ~1e-3 at most); 'auto': 'bf16' when
            :func:`cpu_has_native_bf16`, else 'fp32'.
    Returns:
        The precision chosen ('fp32' or 'bf16').
    """
    global _MATMUL_DTYPE
    if precision not in CPU_PRECISIONS:
        raise ValueError(f"CPU precision must be one of {CPU_PRECISIONS}, got {precision!r}")
    if precision == "auto":
        precision = "bf16" if cpu_has_native_bf16() else "fp32"
        log.debug("CPU inference matmuls: %s (%s)", precision,
                  "native bf16 on this CPU" if precision == "bf16" else "no native bf16 on this CPU")
    _MATMUL_DTYPE = torch.bfloat16 if precision == "bf16" else None
    _CAST_CACHE.clear()
    return precision


@contextmanager
def cpu_matmul_precision(precision: str):
    """:func:`set_cpu_matmul_dtype` for the duration of a ``with`` block,
    then the previous setting again (one setting per process: don't run
    two blocks with different precisions in parallel threads)."""
    global _MATMUL_DTYPE
    before = _MATMUL_DTYPE
    try:
        yield set_cpu_matmul_dtype(precision)
    finally:
        _MATMUL_DTYPE = before
        _CAST_CACHE.clear()


def _cast_weights(weights: Sequence[torch.Tensor], dtype: torch.dtype) -> list[torch.Tensor]:
    """``weights`` in ``dtype``, cast once per weight set (keyed by identity
    and version: an optimiser step makes a new entry)."""
    key = tuple((id(w), w._version) for w in weights) + (dtype,)
    hit = _CAST_CACHE.get(key)
    if hit is None:
        if len(_CAST_CACHE) > 64:        # stale entries of weights that changed
            _CAST_CACHE.clear()
        hit = _CAST_CACHE[key] = ([w.detach().to(dtype) for w in weights], list(weights))
    return hit[0]


def column_buffers(weights: Sequence[torch.Tensor], pixels: int, like: torch.Tensor) -> list[torch.Tensor]:
    """Flat scratch buffers of :func:`mlp_columns` for chunks of up to ``pixels``."""
    width = max(w.shape[0] for w in weights[:-1])
    return [like.new_empty(width * pixels), like.new_empty(width * pixels), like.new_empty(weights[-1].shape[0] * pixels)]


#: Pixels per chunk of the inference paths: on a CPU, small enough that
#: the (64, chunk) activations (4 MB at 16384) stay in the L2/L3 caches,
#: large enough that the per-chunk Python overhead stays small; on a GPU,
#: big enough to keep the kernels busy, small enough that the chunk buffers
#: (~1 KB per chunk pixel) stay near 250 MB (at 2^20 they took 1 GB and
#: pushed a 1536 tile past 2 GB on an H100).
INFERENCE_CHUNK_CPU = 16384
INFERENCE_CHUNK_GPU = 1 << 18


def inference_chunk(device: torch.device) -> int:
    """Pixels per chunk of the chunked inference paths on ``device``."""
    return INFERENCE_CHUNK_CPU if device.type == "cpu" else INFERENCE_CHUNK_GPU


def use_inference_path() -> bool:
    """Whether a level takes its chunked inference path: autograd is off
    (``torch.no_grad()`` / inference mode).  Any MLP evaluator works there
    (:func:`run_mlp_columns`)."""
    return not torch.is_grad_enabled()


def run_mlp_columns(mlp_fn, xt: torch.Tensor, weights: Sequence[torch.Tensor], leaky_slope: float,
                    buffers: list[torch.Tensor] | None) -> torch.Tensor:
    """(n_out, P) outputs of ``mlp_fn`` for column inputs ``xt`` (n_in, P):
    the reference MLP runs in place (:func:`mlp_columns`); another
    evaluator (a backend's fused MLP) gets the row layout it was written for
    and its output is viewed transposed."""
    if mlp_fn is mlp:
        return mlp_columns(xt, weights, leaky_slope, buffers)
    return mlp_fn(xt.t().contiguous(), weights, leaky_slope).t()
