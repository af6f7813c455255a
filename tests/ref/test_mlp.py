"""Bias-free MLP and its initialisation."""
import torch
import torch.nn.functional as F

from kpnt.ref.mlp import init_weights, mlp


def test_mlp_is_plain_matrices_with_leaky_relu():
    gen = torch.Generator().manual_seed(0)
    ws = [torch.randn(64, 32, generator=gen), torch.randn(64, 64, generator=gen), torch.randn(16, 64, generator=gen)]
    x = torch.randn(10, 32, generator=gen)
    h = F.leaky_relu(x @ ws[0].T, 0.01)
    h = F.leaky_relu(h @ ws[1].T, 0.01)
    torch.testing.assert_close(mlp(x, ws, 0.01), h @ ws[2].T)


def test_init_threads_the_constant_as_bias():
    gen = torch.Generator().manual_seed(0)
    off = torch.arange(26.0)
    ws = init_weights(32, 64, 4, 32, 26, off, 0.01, gen, n_in_used=27, n_out_used=26, out_scale=0.0)
    assert [tuple(w.shape) for w in ws] == [(64, 32)] + [(64, 64)] * 3 + [(32, 64)]
    x = torch.zeros(3, 32)
    x[:, 26] = 1.0                                  # only the constant input
    out = mlp(x, ws, 0.01)
    torch.testing.assert_close(out[:, :26], off.expand(3, 26))
    assert (out[:, 26:] == 0).all()
    assert (ws[0][:, 27:] == 0).all()                # padding inputs start at zero
    # with the random part on, outputs start near the offsets but not on them
    ws = init_weights(32, 64, 4, 32, 26, off, 0.01, gen, n_in_used=27, n_out_used=26)
    x[:, :25] = torch.randn(3, 25, generator=gen)
    d = (mlp(x, ws, 0.01)[:, :26] - off).abs()
    assert 0 < d.max() < 1.0
