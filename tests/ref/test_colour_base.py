"""Colour base: per-block colour means."""
import pytest
import torch

from kpnt.mosaic.cfa import BAYER_PHASES, CFA
from kpnt.ref.colour_base import colour_base


@pytest.mark.parametrize("cfa", [CFA.bayer(p) for p in BAYER_PHASES] + [CFA.xtrans(0, 0).crop(*CFA.xtrans(0, 0).block_phase), CFA.xtrans(4, 1).crop(*CFA.xtrans(4, 1).block_phase)])
def test_colour_base_is_block_mean_per_colour(cfa):
    assert cfa.block_phase == (0, 0)
    b = cfa.block
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 4 * b * 3, 2 * b * 3, generator=gen, dtype=torch.float64)
    c0 = colour_base(x, cfa)
    assert c0.shape == (2, 3, 12, 6)
    cmap = cfa.colour_map(*x.shape[-2:])
    for by in range(12):
        for bx in range(6):
            blk = x[:, 0, by * b:(by + 1) * b, bx * b:(bx + 1) * b]
            cols = cmap[by * b:(by + 1) * b, bx * b:(bx + 1) * b]
            for c in range(3):
                assert (cols == c).sum() == cfa.base_counts[c]
                torch.testing.assert_close(c0[:, c, by, bx], blk[:, torch.from_numpy(cols == c)].mean(-1))


def test_xtrans_base_counts():
    assert CFA.xtrans().base_counts.tolist() == [2, 5, 2]


def test_gradcheck_colour_base():
    cfa = CFA.xtrans().crop(*CFA.xtrans().block_phase)
    x = torch.rand(1, 1, 6, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: colour_base(t, cfa), (x,))
