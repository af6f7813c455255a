"""The fused front level's row order (kpnt.ops._cuda.front_level._partition):
rows grouped by site class, in raster order within a class or, with
ROWS_BY_SITE, by repeat position first.  Pure tensor code: runs on a CPU."""
import pytest
import torch

from kpnt.mosaic.cfa import CFA
from kpnt.ops._cuda.front_level import _partition


def rows_of(cfa, by_site, N=2, H=13, W=17):
    pattern = tuple(int(v) for v in cfa.pattern.reshape(-1))
    perm, offsets = _partition(pattern, N, H, W, "cpu", by_site)
    return perm.long(), offsets.long()


def site_and_class(cfa, rows, H=13, W=17):
    """Repeat position and site class of memory rows (n, y, x) flattened."""
    P = cfa.period
    y, x = (rows % (H * W)) // W, rows % W
    site = (y % P) * P + x % P
    return site, torch.as_tensor(cfa.site_class).reshape(-1)[site]


@pytest.mark.parametrize("cfa", [CFA.bayer("GRBG"), CFA.xtrans(1, 2)], ids=lambda c: c.kind)
@pytest.mark.parametrize("by_site", [False, True], ids=["raster", "by-site"])
def test_rows_are_a_permutation_grouped_by_class(cfa, by_site):
    perm, offsets = rows_of(cfa, by_site)
    N, H, W = 2, 13, 17
    assert perm.dtype == torch.long and torch.equal(perm.sort().values, torch.arange(N * H * W))
    site, cls = site_and_class(cfa, perm)
    counts = torch.bincount(cls, minlength=cfa.n_classes)
    assert offsets.tolist() == [0] + torch.cumsum(counts, 0).tolist()
    for g in range(cfa.n_classes):
        assert (cls[offsets[g]:offsets[g + 1]] == g).all()


@pytest.mark.parametrize("cfa", [CFA.bayer("GRBG"), CFA.xtrans(1, 2)], ids=lambda c: c.kind)
def test_row_order_within_a_class(cfa):
    """Raster order within a class by default; by site, each class's rows
    run through its repeat positions in order, each position's rows in
    raster order, so neighbouring rows share a site (and its tap layout)."""
    raster, _ = rows_of(cfa, False)
    perm, offsets = rows_of(cfa, True)
    for g in range(cfa.n_classes):
        lo, hi = offsets[g], offsets[g + 1]
        assert (raster[lo:hi].diff() > 0).all()
        seg = perm[lo:hi]
        site, _ = site_and_class(cfa, seg)
        assert (site.diff() >= 0).all()                      # positions in order
        same = site.diff() == 0
        assert (seg.diff()[same] > 0).all()                   # raster order within a position
        assert torch.equal(seg.sort().values, raster[lo:hi])  # the same rows as the raster order
    site, _ = site_and_class(cfa, perm)
    changes = int((site.diff() != 0).sum())
    assert changes == cfa.period ** 2 - 1                     # one run per repeat position
