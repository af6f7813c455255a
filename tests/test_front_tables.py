"""The front level's lookup tables for the fused kernels
(kpnt/ops/_cuda/front_level.py ``_tables``), built on the CPU: the kernels
read the taps of rows at least ``radius`` from every edge without bounds
checks (kernels/front_level.cu ``FGeo::interior``), which is only right if
every canonical tap offset lies within the radius; and the inverse table
must list each (pixel, tap) pair once, as the adjoint kernel sums over it."""
import numpy as np
import torch
import pytest

from kpnt.mosaic.cfa import CFA
from kpnt.ops._cuda.front_level import _tables

CFAS = [CFA.bayer(p) for p in ("RGGB", "GRBG", "GBRG", "BGGR")] + [CFA.xtrans(), CFA.xtrans(2, 5), CFA.xtrans(3, 1)]


@pytest.mark.parametrize("cfa", CFAS, ids=lambda c: c.name)
@pytest.mark.parametrize("radius", [1, 2, 3])
def test_tap_offsets_stay_within_the_radius(cfa, radius):
    pattern = tuple(int(v) for v in cfa.pattern.reshape(-1))
    colour, tap_off, inv, roles = _tables(pattern, radius, "cpu")
    P, T = cfa.period, (2 * radius + 1) ** 2
    offs = tap_off.numpy().reshape(P * P, T, 2)
    assert np.abs(offs).max() == radius
    # Each site reads T distinct photosites.
    for s in range(P * P):
        assert len({tuple(o) for o in offs[s]}) == T
    # The inverse lists every (pixel, tap) pair exactly once: P * P * T entries in all.
    inv = inv.numpy()
    entries = inv[inv[..., 2] >= 0]
    assert len(entries) == P * P * T
    assert colour.numel() == P * P and roles.shape == (P * P, 3)


@pytest.mark.parametrize("cfa", [CFA.bayer("BGGR"), CFA.xtrans(4, 1)], ids=lambda c: c.name)
def test_a_tap_order_permutes_the_tap_table_and_its_inverse(cfa):
    """front_level.TAP_ORDER's tables: column j holds canonical tap order[j],
    and the inverse table names the permuted columns."""
    from kpnt.ops._cuda.front_level import SEARCHED_TAP_ORDER

    pattern = tuple(int(v) for v in cfa.pattern.reshape(-1))
    _, canonical, _, _ = _tables(pattern, 2, "cpu")
    _, ordered, inv, _ = _tables(pattern, 2, "cpu", SEARCHED_TAP_ORDER)
    assert SEARCHED_TAP_ORDER != tuple(range(25))
    assert torch.equal(ordered, canonical[:, list(SEARCHED_TAP_ORDER)])
    # Every (pixel, column) pair once, and each entry's offset is that column's offset at the reading pixel.
    P = cfa.period
    entries = inv.numpy()
    listed = set()
    for q in range(P * P):
        for dy, dx, t in entries[q][entries[q, :, 2] >= 0]:
            p = ((q // P - dy) % P) * P + (q % P - dx) % P
            assert tuple(ordered[p, t].tolist()) == (dy, dx)
            listed.add((p, t))
    assert len(listed) == P * P * 25


def test_a_tap_order_that_is_not_a_permutation_is_refused(monkeypatch):
    from kpnt.ops._cuda import front_level

    pattern = tuple(int(v) for v in CFA.bayer().pattern.reshape(-1))
    with pytest.raises(ValueError, match="not a permutation"):
        _tables(pattern, 2, "cpu", (0,) * 25)
    monkeypatch.setattr(front_level, "TAP_ORDER", tuple(range(9)))
    with pytest.raises(ValueError, match="has 9 taps.*radius 2 has 25"):
        front_level._tap_order(2)


@pytest.mark.parametrize("cfa", [CFA.bayer("GRBG"), CFA.xtrans()], ids=lambda c: c.kind)
def test_backward_blocks_spread_only_over_unequal_classes(monkeypatch, cfa):
    """The ``spread`` the front backward passes (kernels: MlpArgs::spread):
    X-Trans's 4 : 1 : 4 classes take UNEVEN_CLASSES_SPREAD, or 0 (one wave
    shared by rows) with BALANCED_CLASSES; Bayer's equal classes always 1."""
    from kpnt.ops._cuda import front_level

    pattern = tuple(int(v) for v in cfa.pattern.reshape(-1))
    unequal = cfa.kind == "xtrans"
    for balanced, spread, want in [(False, 1, 1), (False, 4, 4 if unequal else 1), (True, 4, 0 if unequal else 1)]:
        monkeypatch.setattr(front_level, "BALANCED_CLASSES", balanced)
        monkeypatch.setattr(front_level, "UNEVEN_CLASSES_SPREAD", spread)
        assert front_level._spread(pattern) == want, (balanced, spread)
