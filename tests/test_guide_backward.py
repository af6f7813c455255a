"""kpnt.ref.guide_backward: the projection guide's network with its backward
written out computes autograd's gradients of kpnt.ref.guide._network (float64,
so any wrong mask, missed residual add or misplaced gradient shows as an
error far above rounding)."""
import pytest
import torch

from kpnt.ref.guide import _network, guide_channels, init_guide
from kpnt.ref.guide_backward import Primitives, guide_network
from kpnt.testing import rel_error as rel


def trained_like(period, width, layers, seed):
    """Projection-guide weights with non-zero projections, biases of the
    activations' order (some channels switched off) and a non-zero last layer."""
    g = torch.Generator().manual_seed(seed)
    ws = init_guide(period, width, layers, g, skip=True, proj=True)
    return [w + (0.3 if w.dim() == 1 else 0.1) * torch.randn(w.shape, generator=g, dtype=w.dtype) for w in ws], g


@pytest.mark.parametrize("period, width, layers, size", [(2, 16, 5, (2, 13, 17)), (6, 24, 3, (1, 9, 11))],
                         ids=["bayer-like", "xtrans-like"])
def test_written_out_backward_equals_autograd(period, width, layers, size):
    ws, g = trained_like(period, width, layers, seed=period)
    ws = [w.double().requires_grad_() for w in ws]
    N, h, w = size
    z = torch.randn(N, guide_channels(period)[0], h, w, generator=g, dtype=torch.float64).requires_grad_()
    ref = _network(z, ws, True, proj=True)
    gout = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    ref_g = torch.autograd.grad(ref, [z, *ws], gout)
    out = guide_network(z, ws, torch.float64)
    got = torch.autograd.grad(out, [z, *ws], gout)
    assert out.dtype == torch.float64 and out.shape == ref.shape
    assert rel(out, ref) < 1e-13
    for i, (a, b) in enumerate(zip(got, ref_g)):
        assert a.shape == b.shape and a.dtype == b.dtype, i
        assert rel(a, b) < 1e-12, (i, rel(a, b))
    # Dead channels exist (the masks matter): some hidden ReLU outputs are 0.
    with torch.no_grad():
        h0 = torch.relu(torch.nn.functional.conv2d(z, ws[0], ws[1], padding=1))
    assert 0 < float((h0 == 0).double().mean()) < 1


def test_no_input_gradient_when_the_input_needs_none():
    ws, g = trained_like(2, 8, 3, seed=5)
    ws = [w.requires_grad_() for w in ws]
    z = torch.randn(1, guide_channels(2)[0], 7, 9, generator=g)
    out = guide_network(z, ws, torch.float32)
    grads = torch.autograd.grad(out.sum(), ws)
    ref = torch.autograd.grad(_network(z, ws, True, proj=True).sum(), ws)
    assert all(rel(a, b) < 1e-5 for a, b in zip(grads, ref))
    assert z.grad is None


def test_relu_grad_sum_masks_adds_and_sums():
    prims = Primitives()
    g = torch.tensor([1.0, -2.0, 3.0, 4.0]).view(1, 4, 1, 1).repeat(2, 1, 1, 3)
    p = torch.full_like(g, 0.5)
    y = torch.tensor([0.0, 1.0, 2.0, 0.0]).view(1, 4, 1, 1).repeat(2, 1, 1, 3)
    gm, s = prims.relu_grad_sum(g, p, y)
    assert gm[0, :, 0, 0].tolist() == [0.0, -1.5, 3.5, 0.0]
    assert s.tolist() == [0.0, -9.0, 21.0, 0.0] and s.dtype == torch.float32
    gm, s = prims.relu_grad_sum(g, None, y)
    assert gm[0, :, 0, 0].tolist() == [0.0, -2.0, 3.0, 0.0]


def test_batched_weight_casts_are_the_per_weight_ones():
    """compute_weights / weight_grads convert matrices of one shape together:
    the values and layouts are those of a cast a matrix, each a view."""
    from kpnt.ref.guide_backward import compute_weights, weight_grads

    ws, _ = trained_like(2, 16, 4, seed=7)
    for dtype in (torch.bfloat16, torch.float32, torch.float64):
        got = compute_weights(ws, dtype)
        for w, c in zip(ws, got):
            if w.dim() == 1:
                assert c.dtype == torch.promote_types(dtype, torch.float32) and torch.equal(c, w.to(c.dtype))
            else:
                assert c.dtype == dtype and c.is_contiguous(memory_format=torch.channels_last)
                assert torch.equal(c, w.to(dtype))
    grads = [w.to(torch.bfloat16).contiguous(memory_format=torch.channels_last) if w.dim() == 4 else w
             for w in ws]
    out = weight_grads(grads, [w.dtype for w in ws])
    for w, g, given in zip(ws, out, grads):
        assert g.dtype == w.dtype and g.is_contiguous() and torch.equal(g, given.to(w.dtype))
    assert sum(g._base is not None for g in out) == 3     # the 3 blocks' 3x3s (channels-last): views
