"""The front level's lookup tables for the fused kernels
(kpnt/ops/_cuda/front_level.py ``_tables``), built on the CPU: the kernels
read the taps of rows at least ``radius`` from every edge without bounds
checks (kernels/front_level.cu ``FGeo::interior``), which is only right if
every canonical tap offset lies within the radius; and the inverse table
must list each (pixel, tap) pair once, as the adjoint kernel sums over it."""
import numpy as np
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
