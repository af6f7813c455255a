"""tools/front_sectors.py: the model of the front MLP's tap loads."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import front_sectors as fs  # noqa: E402

LANE = np.arange(32)


def test_eight_neighbours_in_one_sector_count_one():
    # Every column reads the centre; the 8 rows of a load are 8 adjacent floats, 32-byte aligned.
    W, P = 64, 2
    tap_off = np.zeros((P * P, 25, 2), dtype=np.int64)
    ys = np.full((1, 32), 10)
    xs = (8 + LANE // 4)[None, :]
    assert fs.sectors_a_load(tap_off, P, ys, xs, W) == 1.0


def test_columns_on_four_image_rows_count_four():
    # Column j reads the row j // 2 below (the lanes' columns 2 (L % 4) + e land on four image rows).
    W, P = 64, 2
    tap_off = np.zeros((P * P, 25, 2), dtype=np.int64)
    tap_off[:, :, 0] = (np.arange(25) % 8) // 2
    ys = np.full((1, 32), 10)
    xs = (8 + LANE // 4)[None, :]
    assert fs.sectors_a_load(tap_off, P, ys, xs, W) == 4.0
    # The order argument picks which tap a column reads: all columns reading tap 0 bring it back to one.
    assert fs.sectors_a_load(tap_off, P, ys, xs, W, order=np.zeros(25, dtype=np.int64)) == 1.0


def test_a_warp_holds_sixteen_consecutive_rows_of_a_class():
    from kpnt.mosaic.cfa import CFA
    pattern = tuple(int(v) for v in CFA.bayer().pattern.reshape(-1))
    ys, xs = fs.warp_positions(pattern, False, 20, 100, 1)
    first = (ys[0], xs[0])                      # lanes' rows L // 4 of the first interior warp
    # Bayer in raster order: a class's consecutive rows lie 2 pixels apart on one image row.
    assert (first[0] == first[0][0]).all()
    assert set(np.diff(first[1][::4])) == {2}
    # Lane L and L + 4 hold consecutive rows; the second half of the warp is 8 rows on.
    second = (ys[1], xs[1])
    assert (second[1] - first[1] == 16).all() and (second[0] == first[0]).all()


def test_rows_by_site_lie_a_period_apart():
    from kpnt.mosaic.cfa import CFA
    pattern = tuple(int(v) for v in CFA.xtrans().pattern.reshape(-1))
    ys, xs = fs.warp_positions(pattern, True, 60, 60, 1)
    assert (np.diff(xs[0][::4]) == 6).all() and (ys[0] == ys[0][0]).all()
