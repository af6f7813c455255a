"""The guide: a small convolutional demosaicer that sharpens the front
level's smooth estimate (issue 13, "features from a coarser band").

The front level (:mod:`kpnt.ref.front_level`) adds a kernel-weighted sum of
photosite details to ``U = up_block(O_0)``, an estimate interpolated from
the colour base at block resolution.  Its MLP sees a 5x5 neighbourhood, about
what classical demosaicers see, and measures like one on real photographs
(issue 13: ~7 dB sRGB behind a learned demosaicer on clean mosaics).  What a
5x5 window cannot do is tell fine detail from its alias, which needs context
tens of photosites wide.  The guide supplies that context cheaply:

1. the details ``d = x - U_c`` of every photosite and the smooth colour are
   packed per CFA repeat (``pixel_unshuffle`` by the period P: Bayer 4
   channels at 1/2 resolution, X-Trans 36 at 1/6) after a shift that puts
   the mosaic in the kind's reference phase, so every packed channel always
   holds the same repeat position whatever the crop (X-Trans repeats itself
   shifted by (3, 3), so there two packing grids are equally valid and a
   crop may get the other one: equivalent for a network trained on random
   phases, not bitwise the same);
2. they are divided by the local brightness ``s`` (plus a floor): the
   network works on relative detail, so a dark and a bright copy of a scene
   look alike to it (the data are linear and span 4+ EV);
3. ``layers`` 3x3 convolutions of ``width`` channels with ReLU, then a 1x1
   convolution to 3 P^2 channels (RGB of every photosite of the repeat),
   multiplied by ``s`` and unpacked, give a residual ``R``;
4. the front level then refines ``U' = U + R`` exactly as before (its
   details are taken against ``U'``), with its per-site-class weight sets.

With ``skip`` (``ModelConfig.guide_skip``, issue 13's ablation) every
hidden layer after the first is residual, ``z + relu(conv(z))`` with its
convolution initialised at ``1/sqrt(layers)`` of He's scale (so the
activations' scale grows by about e over the whole stack, not 2^layers), and
the noise feature enters centred and scaled to about [-2, 2]: a plain
12x64 stack barely trained (H200, 8439 steps: its loss stayed at the
unguided model's), while the residual one trains at any depth.

The last convolution starts at zero, so an untrained guide leaves the model
as it was.  The guide has one weight set (it sees whole repeats, so it needs
no per-class sharing: each output channel is one photosite position of the
reference phase).  It runs on cuDNN on a GPU (half precision at inference)
and on the CPU through PyTorch's convolutions; it is pure PyTorch, so the
reference and the GPU path are the same code.
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from kpnt.mosaic.cfa import CFA, CFAError, reference_cfa
from kpnt.ref.front_level import _colour_map
from kpnt.ref.mlp import cpu_matmul_dtype

#: Brightness floor of the normalisation (units of the white level): below
#: it details are measured against the floor, so the deep shadows of a
#: noisy raw are not blown up into apparent detail.
BRIGHTNESS_FLOOR = 1e-2
#: Floor of the noise std inside the log noise feature.
_SIGMA_FLOOR = 1e-5
#: Residual guides (``skip``) feed ``(log(sigma) - centre) / scale``: the
#: relative noise std spans about 1e-5..1, so the feature spans about -2..2.
NOISE_FEATURE_CENTRE = -6.0
NOISE_FEATURE_SCALE = 3.0


@lru_cache(maxsize=64)
def _reference_shift(pattern: bytes, period: int) -> tuple[int, int]:
    cfa = CFA(np.frombuffer(pattern, dtype=np.int64).reshape(period, period))
    ref = reference_cfa(cfa.kind)
    for sy in range(period):
        for sx in range(period):
            if np.array_equal(cfa.crop(sy, sx).pattern, ref.pattern):
                return sy, sx
    raise CFAError(f"the guide needs a phase of the reference {cfa.kind} layout; {cfa.name} is none")


def reference_shift(cfa: CFA) -> tuple[int, int]:
    """(sy, sx): the position of ``cfa``'s repeat where the kind's reference
    phase (Bayer RGGB, ``CFA.xtrans()``) starts."""
    return _reference_shift(cfa.pattern.tobytes(), cfa.period)


def guide_channels(period: int) -> tuple[int, int]:
    """(inputs, outputs) of the guide network for a packing side ``period``
    (the CFA period times ``guide_pack``): Q^2 packed details + 3 smooth
    colours + 1 noise feature in, 3 Q^2 out."""
    return period * period + 4, 3 * period * period


def init_guide(period: int, width: int, layers: int, gen: torch.Generator, skip: bool = False,
               proj: bool = False) -> list[torch.Tensor]:
    """Initial weights, flat: ``[W_0, b_0, <hidden layers 1..>, W_L, b_L]``.

    Hidden layers are ``W_i, b_i`` (He-normal 3x3 convolution, zero bias; a
    ``skip`` guide's scaled by ``1/sqrt(layers)``), or with ``proj``
    ``W_i, b_i, P_i, c_i``: He-normal 3x3 at full scale and a zero 1x1
    projection ``P_i`` with zero bias ``c_i`` (the block is the identity
    until ``P_i`` learns; :func:`_network`).  The final 1x1 convolution
    starts at zero, so the untrained guide adds nothing."""
    n_in, n_out = guide_channels(period)
    out, c = [], n_in
    for i in range(layers):
        w = torch.randn(width, c, 3, 3, generator=gen) * (2.0 / (c * 9)) ** 0.5
        if skip and i > 0 and not proj:
            w = w / layers ** 0.5
        out += [w, torch.zeros(width)]
        if proj and i > 0:
            out += [torch.zeros(width, width, 1, 1), torch.zeros(width)]
        c = width
    out += [torch.zeros(n_out, c, 1, 1), torch.zeros(n_out)]
    return out


def hidden_layers(weights, proj: bool = False) -> list[tuple]:
    """Per hidden layer of a flat guide weight list, ``(W, b)`` or with
    ``proj`` ``(W, b, P, c)`` for layers after the first (:func:`init_guide`)."""
    out, k, i = [], 0, 0
    while k < len(weights) - 2:
        n = 4 if proj and i > 0 else 2
        out.append(tuple(weights[k:k + n]))
        k, i = k + n, i + 1
    if k != len(weights) - 2:
        raise ValueError(f"a guide weight list of {len(weights)} tensors does not fit the {'proj' if proj else 'plain'} layout")
    return out


def to_projection_blocks(weights) -> list[torch.Tensor]:
    """A residual (``skip``) guide's weights as projection blocks computing
    the same function: each hidden layer after the first gets ``P = I`` and
    ``c = 0``.  Exact because the stream is non-negative (layer 0's ReLU,
    then sums of ReLUs): ``relu(z + relu(a)) = z + relu(a)`` for ``z >= 0``."""
    out = []
    for i, layer in enumerate(hidden_layers(weights)):
        out += list(layer)
        if i > 0:
            w = layer[0]
            eye = torch.eye(w.shape[0], dtype=w.dtype, device=w.device)[:, :, None, None]
            out += [eye, torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)]
    return out + list(weights[-2:])


def grow_projection_guide(weights, width: int, layers: int, gen: torch.Generator) -> list[torch.Tensor]:
    """A projection-block guide (:func:`init_guide` with ``proj``) made wider
    and/or deeper, computing the same function (issue 13, session 21: the
    X-Trans guide packs a whole 6x6 repeat, 108 output values, through 64
    channels, where Bayer's packs 12 through the same 64).

    - New channels (``width`` above the current one) get fresh He-normal
      incoming weights in every 3x3 convolution (they read all channels, old
      and new) and a zero projection row, so each new stream channel is layer
      0's fresh feature carried forward; the old channels' weights *from* the
      new ones (3x3, projection and the final 1x1) start at zero, so nothing
      reaches the output until training opens those paths (the final 1x1's
      new columns get gradient from the first step).
    - New layers (``layers`` above the current count) are appended before the
      final 1x1 as blocks with a zero projection: ``relu(z + 0) = z`` on the
      non-negative stream, the identity, exactly as :func:`init_guide` starts
      every block.

    Raises ValueError if ``width`` or ``layers`` is smaller than the guide's.
    """
    blocks = hidden_layers(weights, proj=True)
    w_old, n_old = blocks[0][0].shape[0], len(blocks)
    if width < w_old or layers < n_old:
        raise ValueError(f"a guide grows only: it has {n_old} layers x {w_old} channels, asked for {layers} x {width}")
    dtype, dev = blocks[0][0].dtype, blocks[0][0].device
    extra = width - w_old

    def he(rows: int, cols: int, k: int) -> torch.Tensor:
        return (torch.randn(rows, cols, k, k, generator=gen) * (2.0 / (cols * k * k)) ** 0.5).to(dtype=dtype, device=dev)

    def zeros(*shape) -> torch.Tensor:
        return torch.zeros(*shape, dtype=dtype, device=dev)

    out = []
    for i, layer in enumerate(blocks):
        W, b = layer[0], layer[1]
        c_in = W.shape[1] if i == 0 else width
        grown = zeros(width, c_in, 3, 3)
        grown[:w_old, :W.shape[1]] = W
        grown[w_old:] = he(extra, c_in, 3)
        out += [grown, torch.cat([b, zeros(extra)])]
        if i > 0:
            P, c = layer[2], layer[3]
            p = zeros(width, width, 1, 1)
            p[:w_old, :w_old] = P
            out += [p, torch.cat([c, zeros(extra)])]
    for _ in range(layers - n_old):
        out += [he(width, width, 3), zeros(width), zeros(width, width, 1, 1), zeros(width)]
    last_w, last_b = weights[-2], weights[-1]
    out += [torch.cat([last_w, zeros(last_w.shape[0], extra, 1, 1)], 1), last_b.clone()]
    return out


def guide_radius(period: int, layers: int, pack: int = 1) -> int:
    """Photosites an input detail reaches through the guide (one packed
    position, ``pack`` repeats wide, per 3x3 layer, plus the packed block
    itself)."""
    return (layers + 1) * period * pack


#: Set by :func:`record_activity` while it runs: the list each hidden layer
#: appends its per-channel active share to.
_ACTIVITY: list | None = None
#: Set by :func:`record_preactivation` while it runs.
_PREACTIVATION: list | None = None


@contextmanager
def record_activity():
    """Record how often each hidden channel of the guide is active.

    Inside the block every guide network that runs (any path: reference,
    autocast or cuDNN) appends, per hidden layer in order, a (width,) float
    tensor: the share of packed positions where the channel's ReLU output is
    positive.  Yields that list.  A channel at 0 on every input is *dead*: its
    ReLU passes no gradient, so training can never bring it back
    (:mod:`kpnt.train.revive`).
    """
    global _ACTIVITY
    previous, _ACTIVITY = _ACTIVITY, []
    try:
        yield _ACTIVITY
    finally:
        _ACTIVITY = previous


@contextmanager
def record_preactivation():
    """Record, per hidden layer in order, each channel's largest
    pre-activation *without its bias*: a (width,) float tensor, the maximum
    of ``conv(z, W)`` over the batch and positions.

    It tells how a dead channel (:func:`record_activity`) was switched off:
    at or below 0 means its weights alone keep it off on the non-negative
    stream, whatever its bias; above 0, a negative bias does it.  Costs one
    extra convolution per layer while recording; a diagnosis tool's probe
    (``tools/guide_activity.py --why``), not for inference.
    """
    global _PREACTIVATION
    previous, _PREACTIVATION = _PREACTIVATION, []
    try:
        yield _PREACTIVATION
    finally:
        _PREACTIVATION = previous


def _conv_relu(z: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """One hidden layer: 3x3 convolution, bias, ReLU (in place without
    autograd: no second activation tensor)."""
    h = F.conv2d(z, w, b, padding=1)
    return F.relu(h) if torch.is_grad_enabled() else h.relu_()


def _cudnn_conv_relu(z: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:func:`_conv_relu` as one cuDNN call with bias and ReLU in its
    epilogue (float16, channels-last, no autograd)."""
    w = w.contiguous(memory_format=torch.channels_last)
    return torch.cudnn_convolution_relu(z, w, b, [1, 1], [1, 1], [1, 1], 1)


def _conv_add_relu(h: torch.Tensor, p: torch.Tensor, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """A projection block's output ``relu(z + conv1x1(h, p) + c)`` (in
    place on the fresh convolution output without autograd)."""
    t = F.conv2d(h, p, c)
    return F.relu(t + z) if torch.is_grad_enabled() else t.add_(z).relu_()


def _cudnn_conv_add_relu(h: torch.Tensor, p: torch.Tensor, c: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """:func:`_conv_add_relu` as one cuDNN call: the add of ``z`` and the
    ReLU in the 1x1 convolution's epilogue (float16, channels-last)."""
    p = p.contiguous(memory_format=torch.channels_last)
    return torch.cudnn_convolution_add_relu(h, p, z, 1.0, c, [1, 1], [0, 0], [1, 1], 1)


def proj_block(z: torch.Tensor, w: torch.Tensor, b: torch.Tensor, p: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """One projection block after the first layer, ``relu(z + P relu(conv(z)) + c)``
    (:func:`_network`): the reference of the fused inference kernel
    (:mod:`kpnt.ops._cuda.guide_block`), in cuDNN's two calls on a GPU in
    float16 channels-last, else in PyTorch's convolutions."""
    if z.is_cuda and z.dtype == torch.float16 and not torch.is_grad_enabled():
        return _cudnn_conv_add_relu(_cudnn_conv_relu(z, w, b), p, c, z)
    return _conv_add_relu(_conv_relu(z, w, b), p, c, z)


def _network(z: torch.Tensor, weights, skip: bool, conv_relu=_conv_relu, proj: bool = False,
             conv_add_relu=_conv_add_relu, block=None) -> torch.Tensor:
    """The hidden layers and the final 1x1 convolution.

    Hidden layer 0 is ``relu(conv(z))``.  After it, each layer is
    - plain: ``relu(conv(z))``;
    - ``skip``: ``z + relu(conv(z))``.  Its channels add to the stream with
      weight 1, so the only way training can silence an unhelpful one is to
      switch its ReLU off for good; the shipped guides lost most channels
      this way (:mod:`kpnt.train.revive`);
    - ``proj``: ``relu(z + P relu(conv(z)) + c)`` with a 1x1 projection
      ``P`` (ResNet's basic block with one 3x3 and one 1x1 convolution):
      an unhelpful channel can be silenced through ``P`` while its ReLU
      stays alive, and both halves are one cuDNN call each at inference
      (the add and the last ReLU in the projection's epilogue).

    ``block(z, W, b, P, c)``, if given, computes a whole projection block
    after the first layer instead of ``conv_relu`` and ``conv_add_relu``
    (the fused inference kernel, :func:`proj_block`'s twin); the activity
    probes, which need ``h``, keep the two calls.
    """
    if _PREACTIVATION is not None or _ACTIVITY is not None:
        block = None
    # Without autograd (inference) the ReLU and the skip add work in place:
    # the same numbers, but no fresh activation tensor per layer (each one
    # tens of MB on a CPU tile, first-touched page by page where freed
    # memory is not kept mapped; kpnt/cpu_memory.py).  Layer 0's input is the
    # caller's and is never written.
    in_place = not torch.is_grad_enabled()
    for i, layer in enumerate(hidden_layers(weights, proj)):
        if proj and i > 0 and block is not None:
            z = block(z, *layer)
            continue
        if _PREACTIVATION is not None:
            _PREACTIVATION.append(F.conv2d(z, layer[0], None, padding=1).detach().amax((0, 2, 3)).float())
        h = conv_relu(z, layer[0], layer[1])
        if _ACTIVITY is not None:
            _ACTIVITY.append((h.detach() > 0).float().mean((0, 2, 3)))
        if i == 0:
            z = h
        elif proj:
            z = conv_add_relu(h, layer[2], layer[3], z)
        elif skip:
            z = z.add_(h) if in_place else z + h
        else:
            z = h
    return F.conv2d(z, weights[-2], weights[-1])


def finish(U: torch.Tensor, r: torch.Tensor, s: torch.Tensor, Q: int, top: int, left: int) -> torch.Tensor:
    """``U + R``: the guide's network output ``r`` (N, 3 Q^2, h, w), any
    float dtype and layout, scaled by the brightness ``s`` (N, 1, h, w),
    unpacked to full resolution (pixel shuffle by ``Q``), cropped at
    (``top``, ``left``) to ``U``'s size, and added to ``U`` (N, 3, H, W).
    The reference of the fused inference kernel (:mod:`kpnt.ops._cuda.guide_finish`),
    which computes it in one pass from the network's float16 output."""
    H, W = U.shape[-2:]
    R = F.pixel_shuffle(r.float() * s, Q)                                  # (N, 3, Hp, Wp)
    return U + R[..., top:top + H, left:left + W]


def _network_cudnn_inference(z: torch.Tensor, weights, skip: bool, proj: bool = False, block=None,
                             half_out: bool = False) -> torch.Tensor:
    """:func:`_network` for GPU inference in float16, channels-last, with
    each hidden layer's bias and ReLU fused into its convolution
    (:func:`_cudnn_conv_relu`).

    Same maths and precision as ``_network`` under float16 autocast; the
    difference is memory traffic.  Unfused, PyTorch adds a channels-last
    bias with a broadcasting (unvectorised) kernel and applies the ReLU as a
    second pass: on the H200 those two passes took 23 of the shipped Bayer
    model's 68 ms at 24 MP (16 layers of 64 channels at 6 M positions),
    against 13 ms for the convolutions themselves (session 14, torch
    profiler).  A residual (``skip``) guide's add stays a separate,
    vectorised pass (it comes after the ReLU, which no cuDNN fused epilogue
    expresses); a ``proj`` guide's add and last ReLU run in its 1x1
    projection's epilogue (:func:`_cudnn_conv_add_relu`), unless ``block``
    (the fused projection-block kernel, :func:`_network`) runs the whole
    block.  ``half_out``: the output as the network leaves it (float16
    channels-last), for a caller that reads it once (the fused finish).
    """
    z = z.to(torch.float16).contiguous(memory_format=torch.channels_last)
    r = _network(z, [w.to(torch.float16) for w in weights], skip, _cudnn_conv_relu, proj, _cudnn_conv_add_relu, block)
    return r if half_out else r.float()


def _half_precision(x: torch.Tensor, train_dtype: torch.dtype | None):
    """(device type, dtype, weight-cast cache) of the autocast the guide's
    network runs under for input ``x`` (channels-last), or None: float32.

    - inference on a GPU: cuDNN in float16 (the residual is a small
      correction; f16 rounding of it is ~1e-4 of s);
    - training on a GPU with ``train_dtype`` (``kpnt-train --guide-dtype``):
      on the shipped Bayer model's step the float32 (TF32) guide is ~14 of
      19 ms, bf16 channels-last ~6 (docs/KERNELS.md, session 11); bf16 keeps
      float32's range, so the ~1e-7 gradients of a mean loss need no
      scaling; no weight-cast cache, as the step may be a captured graph;
    - CPU inference in bf16 mode (``--cpu-precision``, native bf16 CPUs):
      the convolutions too, channels-last for oneDNN.
    """
    if x.is_cuda and not torch.is_grad_enabled():
        return "cuda", torch.float16, True
    if x.is_cuda and train_dtype is not None and x.dtype == torch.float32:
        return "cuda", train_dtype, False
    if x.device.type == "cpu" and not torch.is_grad_enabled() and cpu_matmul_dtype() == torch.bfloat16:
        return "cpu", torch.bfloat16, True
    return None


def packing(cfa: CFA, pack: int, H: int, W: int) -> tuple[int, int, int, int, int]:
    """(Q, top, bottom, left, right): the packing side and the zero / edge
    padding that puts the reference phase at the packed grid's origin and
    makes both sides multiples of Q."""
    P = cfa.period
    Q = P * pack
    sy, sx = reference_shift(cfa)
    top, left = (P - sy) % P, (P - sx) % P
    return Q, top, (-(top + H)) % Q, left, (-(left + W)) % Q


class _BlockMeans(torch.autograd.Function):
    """``F.avg_pool2d(t, Q)`` with its backward written out (:func:`block_means`)."""

    @staticmethod
    def forward(ctx, t, Q):
        ctx.Q, ctx.shape = Q, t.shape
        return F.avg_pool2d(t, Q)

    @staticmethod
    def backward(ctx, g):
        # avg_pool2d's backward for non-overlapping windows: each element's
        # gradient is its block's g divided by Q^2 (the same division, so the
        # same bits), spread over the block.  The divisor is a tensor on g's
        # device: CUDA turns division by a Python number into multiplication
        # by its reciprocal, which differs in the last bit when Q^2 is not a
        # power of two (Q = 6, 12), while avg_pool2d's kernel divides.
        N, C, h, w = g.shape
        Q = ctx.Q
        d = (g / g.new_full((), Q * Q))[:, :, :, None, :, None].expand(N, C, h, Q, w, Q)
        return d.reshape(ctx.shape), None


def block_means(t: torch.Tensor, Q: int) -> torch.Tensor:
    """The means of ``t``'s (N, C, H, W) Q x Q blocks (H and W multiples of
    ``Q``): ``F.avg_pool2d(t, Q)``, the same values and gradient bits, with
    the backward as one division and one broadcast copy.  avg_pool2d's own
    backward kernel took 55 us of the graphed Bayer training step (4 x 512 x
    512 float32, H100, session 34's ``step_breakdown.py``), about ten times
    what its bytes need.  (A reshaped mean would do as well but sums in
    another order: the fused inference start, :mod:`kpnt.ops._cuda.guide_start`,
    is avg_pool2d's bitwise twin.)"""
    return _BlockMeans.apply(t, Q)


def start(x: torch.Tensor, U: torch.Tensor, noise: torch.Tensor, cfa: CFA, pack: int = 1,
          skip: bool = False) -> tuple[torch.Tensor, torch.Tensor, int, int, int]:
    """The network's input: ``(z, s, Q, top, left)``.

    ``z`` (N, Q^2 + 4, h, w): the photosite details against ``U`` packed
    Q x Q, and the block means of ``U``, both divided by the brightness
    ``s`` (N, 1, h, w), and the log relative noise std; (``top``, ``left``)
    the padding before the image (:func:`packing`).  The reference of the
    fused inference kernel (:mod:`kpnt.ops._cuda.guide_start`), which writes
    ``z`` in float16 channels-last in one pass."""
    N, _, H, W = x.shape
    Q, top, bottom, left, right = packing(cfa, pack, H, W)
    # Cached on the device: no host copy inside a captured CUDA graph.
    col = _colour_map(cfa.pattern.tobytes(), cfa.period, H, W, str(x.device)).expand(N, 1, H, W)
    d = x - U.gather(1, col)
    pad = (left, right, top, bottom)
    packed = F.pixel_unshuffle(F.pad(d, pad), Q)                        # (N, Q^2, h, w)
    smooth = block_means(F.pad(U, pad, mode="replicate"), Q)              # (N, 3, h, w)
    s = smooth.mean(1, keepdim=True).clamp_min(0) + BRIGHTNESS_FLOOR
    a, b = noise[:, 0].mean(1), noise[:, 1].mean(1)                        # (N,)
    # The noise feature carries no gradient to s: with a = b = 0 (clean
    # training inputs) sqrt would pass an infinite slope times 0 = NaN.
    sd = s.detach()
    sigma = torch.sqrt((a[:, None, None, None] * sd + b[:, None, None, None]).clamp_min(0)) / sd
    noise_feature = torch.log(sigma + _SIGMA_FLOOR)
    if skip:
        noise_feature = (noise_feature - NOISE_FEATURE_CENTRE) / NOISE_FEATURE_SCALE
    return torch.cat([packed / s, smooth / s, noise_feature], 1), s, Q, top, left


def guide_residual(x: torch.Tensor, U: torch.Tensor, noise: torch.Tensor, cfa: CFA, weights,
                   skip: bool = False, pack: int = 1, train_dtype: torch.dtype | None = None,
                   proj: bool = False, block=None, fused_finish=None, fused_start=None,
                   network=None) -> torch.Tensor:
    """The guide's correction ``R`` of the smooth estimate (module doc).

    Args:
        x: (N, 1, H, W) white-balanced mosaic with layout ``cfa``.
        U: (N, 3, H, W) smooth full-resolution estimate (``up_block(O_0)``).
        noise: (N, 2, 3) white-balanced ``[a; b]``.
        weights: ``[W_0, b_0, ..., W_L, b_L]`` (:func:`init_guide`).
        skip: residual hidden layers and a normalised noise feature (module
            doc); must match how ``weights`` were trained.
        pack: CFA repeats per packed position along each axis
            (``ModelConfig.guide_pack``): the guide runs at ``1/(pack P)`` of
            the mosaic's resolution, ``pack^2`` times cheaper per layer, and
            each layer reaches ``pack`` times further.  The packing grid
            starts at a reference phase, so with ``pack > 1`` crops that
            differ by a repeat (not by ``pack`` repeats) see another of the
            equivalent grids, as X-Trans's half-repeat does.
        train_dtype: ``torch.bfloat16`` runs the network in that precision,
            channels-last, also while training on a GPU (``kpnt-train
            --guide-dtype``); None: float32 there.  Inference on a GPU runs
            it in float16 either way.
        proj: projection blocks (:func:`_network`; ``weights`` laid out by
            :func:`init_guide` with ``proj``).
        block: ``block(z, W, b, P, c)`` computes one projection block in
            GPU float16 inference (the fused kernel, which
            :func:`kpnt.ops.guide.guide` picks); None, and everywhere
            else: the convolutions.
        fused_finish: ``fused_finish(U, r, s, Q, top, left)`` computes
            :func:`finish` (``U + R``) in one pass (the fused kernel, which
            :func:`kpnt.ops.guide.guide` picks in GPU inference); ``r`` is
            then the network's float16 output on the cuDNN inference path.
        fused_start: computes :func:`start` (its arguments and results; ``z``
            may come as float16 channels-last) in one pass: the fused
            kernel, which :func:`kpnt.ops.guide.guide` picks in GPU inference.
        network: ``network(z, weights, dtype)`` computes the network while
            it trains on a GPU, in ``train_dtype`` (None: float32): the
            fused backend's :class:`kpnt.ref.guide_backward.GuideNetwork`
            (its backward written out), which :func:`kpnt.ops.guide.guide`
            picks for a projection guide; None, and while an activity probe
            (:func:`record_activity`) records: autograd's layers.
    Returns:
        (N, 3, H, W), to be added to ``U``; with ``fused_finish``, ``U + R``.
    """
    H, W = x.shape[-2:]
    z, s, Q, top, left = (fused_start or start)(x, U, noise, cfa, pack, skip)
    weights = list(weights)
    half = _half_precision(x, train_dtype)
    # The activity probes record inside autograd's layers (_network), so they keep them, as they keep `block` off.
    probing = _ACTIVITY is not None or _PREACTIVATION is not None
    if network is not None and x.is_cuda and torch.is_grad_enabled() and not probing:
        r = network(z, weights, train_dtype or torch.float32)
    elif half is None:
        if x.device.type == "cpu" and not torch.is_grad_enabled():
            # oneDNN's convolutions run faster channels-last.  With the
            # in-place layers (session 14, 2 cores, 24-MP Bayer raw end to
            # end, tools/bench_denoise.py --e2e 24 --tile-only): fp32 56.4
            # -> 44.3 s, bf16 (already channels-last) 26.7 -> 25.4 s.
            z = z.contiguous(memory_format=torch.channels_last)
        r = _network(z, weights, skip, proj=proj).contiguous()
    elif half == ("cuda", torch.float16, True) and torch.backends.cudnn.is_available() and torch.backends.cudnn.enabled:
        r = _network_cudnn_inference(z, weights, skip, proj, block, half_out=fused_finish is not None)
    else:
        device, dtype, cache = half
        with torch.autocast(device, dtype=dtype, cache_enabled=cache):
            r = _network(z.contiguous(memory_format=torch.channels_last), weights, skip, proj=proj).float()
    if fused_finish is not None:
        return fused_finish(U, r, s, Q, top, left)
    r = F.pixel_shuffle(r * s, Q)                                          # (N, 3, Hp, Wp)
    return r[..., top:top + H, left:left + W]
