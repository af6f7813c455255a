"""Mirror padding and CFA-consistent mosaic padding."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kpnt.mosaic.cfa import BAYER_PHASES, CFA
from kpnt.ref.pad import cfa_axes, fold_indices, mosaic_pads, pad_mosaic, reflect_pad


def test_reflect_pad_matches_torch_when_small():
    x = torch.randn(2, 3, 7, 9)
    np.testing.assert_array_equal(reflect_pad(x, 2, 3, 1, 4).numpy(), F.pad(x, (1, 4, 2, 3), mode="reflect").numpy())


@pytest.mark.parametrize("n", [1, 2, 3])
def test_reflect_pad_folds_tiny_images(n):
    idx = fold_indices(n, 5, 6)
    assert idx.min() >= 0 and idx.max() < n and len(idx) == n + 11
    if n == 2:
        assert idx.tolist() == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    x = torch.arange(float(n * n)).reshape(1, 1, n, n)
    assert reflect_pad(x, 5, 6, 5, 6).shape == (1, 1, n + 11, n + 11)


def test_xtrans_axes():
    # the X-T1 repeat is mirror-symmetric about rows/columns 2 and 5
    assert cfa_axes(CFA.xtrans(), 0) == [2, 5] and cfa_axes(CFA.xtrans(), 1) == [2, 5]
    assert cfa_axes(CFA.bayer("GBRG"), 1) == [0, 1]


@pytest.mark.parametrize("cfa", [CFA.bayer(p) for p in BAYER_PHASES] + [CFA.xtrans(dy, dx) for dy, dx in [(0, 0), (1, 4), (5, 2)]])
def test_pad_mosaic_keeps_colours(cfa):
    H, W = 13, 14
    cmap = torch.from_numpy(cfa.colour_map(H, W)).double()[None, None]
    top, bottom, left, right = 7, 20, 3, 9
    padded, cfa_p = pad_mosaic(cmap, cfa, top, bottom, left, right)
    # every padded photosite holds a value of its own colour, the image is untouched
    np.testing.assert_array_equal(padded[0, 0].numpy(), cfa_p.colour_map(H + top + bottom, W + left + right))
    np.testing.assert_array_equal(padded[0, 0, top:top + H, left:left + W].numpy(), cmap[0, 0].numpy())


def test_mosaic_pads():
    before, after = mosaic_pads(37, block_offset=1, block=3, multiple=48, margin=2)
    assert before >= 2 and after >= 2 and (1 + before) % 3 == 0 and (37 + before + after) % 48 == 0
    assert mosaic_pads(32, 0, 2, 32, 2) == (2, 30)
