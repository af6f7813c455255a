"""The projection guide's network (:func:`kpnt.ref.guide._network` with
``proj``) with its backward written out: the readable statement of what the
fused backend's training path computes (:mod:`kpnt.ops._cuda.guide_train`).

Autograd runs the network as ~6 kernels a block forward and ~12 backward
(bias adds, ReLUs, the residual add, ReLU backwards, gradient adds, bias
reductions), each a pass over an activation tensor, and in float32 it makes
cuDNN convert every activation between NCHW and NHWC (session 31,
``tools/step_breakdown.py``: on the shipped Bayer training step those passes
were 16 of 28 ms).  Written out, a block is two convolutions forward, each
followed by one epilogue pass, and four convolution gradients backward with
two passes between them, on channels-last tensors:

forward, block ``i`` after layer 0 (``z`` its input)::

    h    = relu(conv3x3(z, W) + b)            # bias_relu
    z'   = relu(conv1x1(h, P) + c + z)        # bias_relu with the residual

backward, given ``gz'`` (the gradient reaching ``z'``) and ``gm'`` (the
block above's ``gm``, the residual path's share of ``gz'``, not yet added)::

    gm   = (gz' + gm') * (z' > 0),  dc = sum gm     # relu_grad_sum  \
    dP, dh = conv1x1 gradients of gm                                  > proj_backward
    gh   = dh * (h > 0),  db = sum gh              # relu_grad_sum  /
    dW, gz = conv3x3 gradients of gh
    (the block's input gradient is gz + gm: the next relu_grad_sum adds it)

Layer 0 is ``z_0 = relu(conv3x3(input, W_0) + b_0)`` and the last layer a
1x1 convolution with bias.  What is saved: the input, every block's ``h``
and ``z'``: what autograd keeps, less its bias-added copies.

:class:`Primitives` computes the passes with PyTorch ops (any device,
float64 in the tests); the fused backend swaps in its CUDA kernels for the
two elementwise passes and, in bfloat16, for :meth:`Primitives.proj_forward`
and :meth:`Primitives.proj_backward` (:mod:`kpnt.ops._cuda.guide_train`).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from kpnt.ref.guide import hidden_layers


class Primitives:
    """The passes of :class:`GuideNetwork` in PyTorch ops."""

    def conv(self, z: torch.Tensor, w: torch.Tensor, padding: int) -> torch.Tensor:
        """A convolution without bias (cuDNN on a GPU)."""
        return F.conv2d(z, w, None, padding=padding)

    def bias_relu_(self, a: torch.Tensor, bias: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """``relu(a + bias (+ z))`` into ``a``; returns ``a``."""
        t = a + bias.to(a.dtype)[:, None, None]
        if z is not None:
            t = t + z
        return a.copy_(t.clamp_min_(0))

    def conv_bias_relu(self, z: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, padding: int,
                       residual: torch.Tensor | None = None) -> torch.Tensor:
        """``relu(conv(z, w) + bias (+ residual))``: a convolution and its
        epilogue (:meth:`bias_relu_` on the convolution's fresh output)."""
        return self.bias_relu_(self.conv(z, w, padding), bias, residual)

    def proj_forward(self, h: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``relu(conv1x1(h, w) + bias + z)``: a projection block's 1x1
        convolution with its epilogue (the fused backend does it in one
        pass for bfloat16)."""
        return self.conv_bias_relu(h, w, bias, 0, z)

    def block_forward(self, z: torch.Tensor, w: torch.Tensor, b: torch.Tensor, p: torch.Tensor,
                      c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(h, z')`` of a projection block: ``h = relu(conv3x3(z, w) + b)``
        (:meth:`conv_bias_relu`), ``z' = relu(conv1x1(h, p) + c + z)``
        (:meth:`proj_forward`)."""
        h = self.conv_bias_relu(z, w, b, 1)
        return h, self.proj_forward(h, p, c, z)

    def relu_grad_sum(self, g: torch.Tensor, p: torch.Tensor | None, y: torch.Tensor):
        """``(gm, sum)``: ``gm = (g (+ p)) * (y > 0)`` and its channel sums
        (float32, or the input's dtype if wider)."""
        t = g if p is None else g + p
        gm = torch.where(y > 0, t, torch.zeros((), dtype=t.dtype, device=t.device))
        acc = torch.promote_types(gm.dtype, torch.float32)
        return gm, gm.sum((0, 2, 3), dtype=acc)

    def proj_backward(self, g: torch.Tensor, p: torch.Tensor | None, y: torch.Tensor, h: torch.Tensor,
                      w: torch.Tensor):
        """``(gm, gh, dc, db, dP)``: a projection block's backward through
        its 1x1 convolution ``w`` (P): ``gm, dc = relu_grad_sum(g, p, y)``,
        ``dh = gm P``, ``gh, db = relu_grad_sum(dh, None, h)``, ``dP = gm^T h``
        (the fused backend does it in one pass for bfloat16)."""
        gm, dc = self.relu_grad_sum(g, p, y)
        dh, dp, _ = self.conv_backward(gm, h, w, 0, True)
        gh, db = self.relu_grad_sum(dh, None, h)
        return gm, gh, dc, db, dp

    @contextmanager
    def deferred_sums(self, blocks: int):
        """The backward through ``blocks`` projection blocks: the sums and
        ``dP`` that :meth:`proj_backward` returns inside may hold their
        values only once it ends (the fused backend reduces every block's
        partial sums in one launch there).  PyTorch's ops fill them at once."""
        yield

    def conv_backward(self, grad: torch.Tensor, z: torch.Tensor, w: torch.Tensor, padding: int, need_input: bool,
                      bias: bool = False):
        """``(d input or None, d weight, d bias or None)`` of a convolution."""
        return torch.ops.aten.convolution_backward(
            grad, z, w, [w.shape[0]] if bias else None, [1, 1], [padding, padding], [1, 1], False, [0, 0], 1,
            [need_input, True, bias])


def network_forward(z: torch.Tensor, weights, prims: Primitives):
    """``(r, saved)``: the network's output and what :func:`network_backward`
    needs.  ``z`` and ``weights`` in the dtype and memory layout to compute in."""
    layers = hidden_layers(weights, proj=True)
    w0, b0 = layers[0]
    zi = prims.conv_bias_relu(z, w0, b0, 1)
    saved = [z, zi]
    for w, b, p, c in layers[1:]:
        h, zi = prims.block_forward(zi, w, b, p, c)
        saved += [h, zi]
    r = prims.conv(zi, weights[-2], 0) + weights[-1].to(zi.dtype)[:, None, None]
    return r, saved


def network_backward(gr: torch.Tensor, saved, weights, prims: Primitives, need_input: bool):
    """``(d z or None, [d weight, ...])``: the gradients of
    :func:`network_forward`'s inputs given ``gr``, the gradient reaching
    ``r`` (dtype and layout of the saved tensors).  Weight gradients in the
    order of ``weights``, each in the dtype its computation gives (the
    caller casts)."""
    layers = hidden_layers(weights, proj=True)
    z_last = saved[-1]
    gz, dwf, dbf = prims.conv_backward(gr, z_last, weights[-2], 0, True, bias=True)
    grads = [dwf, dbf]                         # built back to front
    pending = None                             # the block above's gm, to add to gz
    with prims.deferred_sums(len(layers) - 1):  # dc, db, dp: read after the loop
        for i in range(len(layers) - 1, 0, -1):
            w, b, p, c = layers[i]
            z_in, h, z_out = saved[2 * i - 1], saved[2 * i], saved[2 * i + 1]
            gm, gh, dc, db, dp = prims.proj_backward(gz, pending, z_out, h, p)
            gz, dw, _ = prims.conv_backward(gh, z_in, w, 1, True)
            pending = gm
            grads = [dw, db, dp, dc] + grads
    w0, b0 = layers[0]
    g0, db0 = prims.relu_grad_sum(gz, pending, saved[1])
    dz, dw0, _ = prims.conv_backward(g0, saved[0], w0, 1, need_input)
    return dz, [dw0, db0] + grads


def _groups(n: int, key) -> dict:
    """Indices 0..n-1 by ``key(i)``, leaving out those whose key is None."""
    groups: dict = {}
    for i in range(n):
        k = key(i)
        if k is not None:
            groups.setdefault(k, []).append(i)
    return groups


def compute_weights(weights, dtype: torch.dtype) -> list[torch.Tensor]:
    """The weights as :func:`network_forward` computes with them: matrices in
    ``dtype``, channels-last; biases in float32 at least (the epilogues add
    them in float32).  Matrices of one shape (the blocks' 3x3s, their 1x1s)
    are cast together, one stack and one cast-and-permute a shape instead of
    a copy a matrix (~60 launches a training step before session 33); each
    is a channels-last view of that group's buffer."""
    bias_dtype = torch.promote_types(dtype, torch.float32)
    out = [w.to(bias_dtype) if w.dim() == 1 else None for w in weights]
    matrices = _groups(len(weights), lambda k: tuple(weights[k].shape) if weights[k].dim() == 4 else None)
    for (o, i, kh, kw), idx in matrices.items():
        if len(idx) == 1:
            out[idx[0]] = weights[idx[0]].to(dtype=dtype, memory_format=torch.channels_last)
            continue
        stacked = torch.stack([weights[k] for k in idx])                       # (G, o, i, kh, kw)
        last = torch.empty((len(idx), o, kh, kw, i), dtype=dtype, device=stacked.device)
        last.copy_(stacked.permute(0, 1, 3, 4, 2))                             # cast and channels-last in one
        views = last.permute(0, 1, 4, 2, 3)                                    # (G, o, i, kh, kw), channels-last
        for g, k in enumerate(idx):
            out[k] = views[g]
    return out


def weight_grads(grads, dtypes) -> list[torch.Tensor]:
    """:func:`network_backward`'s weight gradients as autograd returns them:
    each in its weight's dtype, contiguous; channels-last matrices of one
    shape and dtype (the 3x3s' gradients from cuDNN) converted together (one
    stack of their channels-last storage and one cast-and-permute), each a
    view of the group's buffer."""
    out = list(grads)

    def channels_last_group(k):
        g = grads[k]
        if g.dim() != 4 or g.is_contiguous() or not g.is_contiguous(memory_format=torch.channels_last):
            return None
        return tuple(g.shape), g.dtype, dtypes[k]

    for ((o, i, kh, kw), _, want), ks in _groups(len(grads), channels_last_group).items():
        if len(ks) == 1:
            continue
        stacked = torch.stack([grads[k].permute(0, 2, 3, 1) for k in ks])      # (G, o, kh, kw, i), contiguous reads
        flat = torch.empty((len(ks), o, i, kh, kw), dtype=want, device=stacked.device)
        flat.copy_(stacked.permute(0, 1, 4, 2, 3))
        for g, k in enumerate(ks):
            out[k] = flat[g]
    return [g.to(dtype=t).contiguous() for g, t in zip(out, dtypes)]


class GuideNetwork(torch.autograd.Function):
    """The projection guide's network as one autograd node computing in
    ``dtype`` on channels-last tensors; its output and input gradient in
    ``z``'s dtype, weight gradients in the weights'.  ``apply(z, dtype,
    prims, *weights)``."""

    @staticmethod
    def forward(ctx, z, dtype, prims, *weights):
        zc = z.to(dtype=dtype, memory_format=torch.channels_last)
        ws = compute_weights(weights, dtype)
        r, saved = network_forward(zc, ws, prims)
        ctx.save_for_backward(*saved, *ws)
        ctx.n_saved, ctx.prims, ctx.z_dtype = len(saved), prims, z.dtype
        ctx.weight_dtypes = [w.dtype for w in weights]
        return r.to(z.dtype)

    @staticmethod
    def backward(ctx, gr):
        tensors = ctx.saved_tensors
        saved, ws = list(tensors[:ctx.n_saved]), list(tensors[ctx.n_saved:])
        gr = gr.to(dtype=saved[0].dtype, memory_format=torch.channels_last)
        dz, grads = network_backward(gr, saved, ws, ctx.prims, ctx.needs_input_grad[0])
        grads = weight_grads(grads, ctx.weight_dtypes)
        return (dz.to(ctx.z_dtype) if dz is not None else None), None, None, *grads


def guide_network(z: torch.Tensor, weights, dtype: torch.dtype = torch.float32,
                  prims: Primitives | None = None) -> torch.Tensor:
    """The projection guide's network output (``z``'s dtype) through
    :class:`GuideNetwork`; ``prims`` the passes (default: PyTorch's)."""
    return GuideNetwork.apply(z, dtype, prims or Primitives(), *weights)
