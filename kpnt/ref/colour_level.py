"""One colour level of the KPN (DESIGN.md section 2): features of ``D_i``, MLP, apply.

The noise of ``D_i`` is :func:`kpnt.ref.noise.detail_var`."""
from __future__ import annotations

from typing import Sequence

import torch

from kpnt.ref.apply import apply_kernel, normalise_kernel, normalise_kernel_columns
from kpnt.ref.features import colour_features, detail_maps, n_features
from kpnt.ref.mlp import column_buffers, inference_chunk, mlp, run_mlp_columns, use_inference_path
from kpnt.ref.noise import noise_feature
from kpnt.ref.pad import reflect_pad
from kpnt.spec import ColourLevelSpec


def colour_level(
    D: torch.Tensor,
    var: torch.Tensor,
    weights: Sequence[torch.Tensor],
    spec: ColourLevelSpec,
    mlp_fn=mlp,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predict and apply the per-pixel kernel of one colour level.

    Args:
        D: (N, 3, h, w) detail coefficients.
        var: (N, 3, h, w) their noise variance (:func:`detail_var`).
        weights: the colour MLP of shape ``spec.mlp`` (diamond: input 32,
            output 16).
        spec: tap set, MLP and apply settings.
        mlp_fn: MLP evaluator with the signature of :func:`kpnt.ref.mlp.mlp`
            (a backend's fused MLP slots in here).
    Returns:
        ``(I, a)``: filtered details (N, 3, h, w) and blend weights
        ``sigmoid`` of output T (the 16th for the diamond) (N, 1, h, w).

    Without autograd (inference) the same math runs in chunks of image rows
    (:func:`_colour_level_chunked`): no (pixels, 32) feature matrix, no
    cached (pixels, 32) index.
    """
    if use_inference_path():
        return _colour_level_chunked(D, var, weights, spec, mlp_fn)
    offsets = spec.offsets
    N, _, h, w = D.shape
    T = len(offsets)
    out = mlp_fn(colour_features(D, var, spec.noise_input, offsets), weights, spec.leaky_slope)   # (P, 16)
    k = normalise_kernel(out[:, :T].reshape(N, h, w, T), spec.apply_mode)
    a = torch.sigmoid(out[:, T]).reshape(N, 1, h, w)
    return apply_kernel(D, k, offsets), a


def _colour_level_chunked(D, var, weights, spec: ColourLevelSpec, mlp_fn=mlp):
    """:func:`colour_level` for inference, in chunks of whole rows.

    The features of a chunk are copied from shifted windows of the
    mirror-padded maps (one row of the (32, pixels) input per tap) instead of
    being gathered through a cached index, the MLP runs in preallocated
    buffers (:func:`kpnt.ref.mlp.mlp_columns`; a backend's MLP gets each
    chunk in its row layout), and the kernel is applied to
    shifted windows of the padded details: peak memory is a few maps of the
    level plus O(chunk), and everything per chunk stays in cache.  Equal to
    the autograd path up to float summation order (tests/test_denoise.py).
    """
    offsets = spec.offsets
    leaky_slope, apply_mode, noise_input = spec.leaky_slope, spec.apply_mode, spec.noise_input
    N, C, h, w = D.shape
    T = len(offsets)
    n_in = n_features(T)
    r = int(abs(offsets).max())
    f, sigma = detail_maps(D, var)
    nz = noise_feature(sigma) if noise_input else torch.zeros_like(sigma)
    del sigma
    fpad = reflect_pad(f, r, r, r, r)              # (N, 2, h+2r, w+2r), the fold of tap_index
    dpad = reflect_pad(D, r, r, r, r)              # (N, C, h+2r, w+2r)
    del f
    rows_per_chunk = max(1, inference_chunk(D.device) // w)
    chunk = rows_per_chunk * w
    xin = D.new_zeros(n_in, chunk)                 # rows 2T+2.. stay the zero padding
    xin[2 * T + 1] = 1.0                           # the constant input
    taps = D.new_empty(T, C, chunk)
    bufs = column_buffers(weights, chunk, D) if mlp_fn is mlp else None
    I = D.new_empty(N, C, h, w)
    a = D.new_empty(N, 1, h, w)
    for n in range(N):
        for y0 in range(0, h, rows_per_chunk):
            y1 = min(h, y0 + rows_per_chunk)
            m = (y1 - y0) * w
            for t, (dy, dx) in enumerate(offsets.tolist()):
                win = (slice(y0 + r + dy, y1 + r + dy), slice(r + dx, r + dx + w))
                xin[t, :m].view(y1 - y0, w).copy_(fpad[n, 0][win])
                xin[T + t, :m].view(y1 - y0, w).copy_(fpad[n, 1][win])
                taps[t, :, :m].view(C, y1 - y0, w).copy_(dpad[n][(slice(None),) + win])
            xin[2 * T, :m].view(y1 - y0, w).copy_(nz[n, 0, y0:y1])
            out = run_mlp_columns(mlp_fn, xin[:, :m], weights, leaky_slope, bufs)   # (16, m)
            k = normalise_kernel_columns(out[:T], apply_mode)                # (T, m)
            I[n, :, y0:y1] = (taps[:, :, :m] * k[:, None, :]).sum(0).view(C, y1 - y0, w)
            a[n, 0, y0:y1] = torch.sigmoid(out[T]).view(y1 - y0, w)
    return I, a
