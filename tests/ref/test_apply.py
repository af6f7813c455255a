"""Kernel normalisation and application."""
import pytest
import torch

from kpnt.ref.apply import PLAIN_EPS, apply_kernel, normalise_kernel
from kpnt.ref.taps import DIAMOND


@pytest.mark.parametrize("mode", ["softmax", "plain"])
def test_normalised_kernels_sum_to_one(mode):
    k = torch.rand(4, 5, 15, dtype=torch.float64) + 0.1
    w = normalise_kernel(k, mode)
    torch.testing.assert_close(w.sum(-1), torch.ones(4, 5, dtype=torch.float64))
    if mode == "plain":
        torch.testing.assert_close(w, k / k.sum(-1, keepdim=True))
    else:
        assert (w > 0).all()


def test_plain_denominator_is_safe():
    k = torch.tensor([[1.0, -1.0, 0.0], [1.0, -1.0 - 1e-5, 0.0]], dtype=torch.float64, requires_grad=True)
    w = normalise_kernel(k, "plain")
    assert torch.isfinite(w).all()
    torch.testing.assert_close(w[0], k[0].detach() / PLAIN_EPS)
    torch.testing.assert_close(w[1], k[1].detach() / -PLAIN_EPS)
    w.sum().backward()
    assert torch.isfinite(k.grad).all()
    with pytest.raises(ValueError, match="apply mode"):
        normalise_kernel(k, "max")


def test_apply_matches_explicit_sum_with_mirrored_borders():
    gen = torch.Generator().manual_seed(0)
    D = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    w = torch.randn(2, 4, 5, 15, generator=gen, dtype=torch.float64)
    out = apply_kernel(D, w, DIAMOND)
    mirror = lambda i, n: -i if i < 0 else (2 * (n - 1) - i if i >= n else i)
    for n in range(2):
        for y in range(4):
            for x in range(5):
                ref = sum(w[n, y, x, t] * D[n, :, mirror(y + dy, 4), mirror(x + dx, 5)] for t, (dy, dx) in enumerate(DIAMOND))
                torch.testing.assert_close(out[n, :, y, x], ref)


@pytest.mark.parametrize("mode", ["softmax", "plain"])
def test_gradcheck_apply(mode):
    gen = torch.Generator().manual_seed(2)
    D = torch.randn(1, 3, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    k = (torch.rand(1, 4, 3, 15, generator=gen, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda d, kk: apply_kernel(d, normalise_kernel(kk, mode), DIAMOND), (D, k))
