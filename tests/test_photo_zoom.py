"""The zoom-out augmentation of training tiles (``kpnt-train --zoom-out``)."""
import torch

from kpnt.train.photos import PhotoSource


def _ramp_photo(h=300, w=320, slope_y=1e-3, slope_x=2e-3):
    """A linear scene whose brightness rises by known amounts per pixel."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return (0.1 + slope_y * yy + slope_x * xx).expand(3, h, w).contiguous()


def _step_sum(tiles):
    """Per tile, |mean step down| + |mean step right|: a flip or transpose
    keeps it, shrinking the scene by f multiplies it by f."""
    dy = (tiles[:, 0, 1:, :] - tiles[:, 0, :-1, :]).mean((1, 2)).abs()
    dx = (tiles[:, 0, :, 1:] - tiles[:, 0, :, :-1]).mean((1, 2)).abs()
    return dy + dx


def test_zoom_off_gives_the_same_tiles_as_before():
    photos = PhotoSource([_ramp_photo()])
    plain = photos.sample(6, 64, torch.Generator().manual_seed(3))
    photos.zoom_out, photos.zoom_share = 1.0, 0.5          # factor 1: off, draws nothing
    assert torch.equal(photos.sample(6, 64, torch.Generator().manual_seed(3)), plain)


def test_zoomed_tiles_shrink_the_scene_by_factors_in_range():
    photos = PhotoSource([_ramp_photo()])
    base = 3e-3                                               # slope_y + slope_x
    assert torch.allclose(_step_sum(photos.sample(8, 64, torch.Generator().manual_seed(0))), torch.full((8,), base), rtol=1e-3)
    photos.zoom_out, photos.zoom_share = 2.0, 1.0
    tiles = photos.sample(64, 64, torch.Generator().manual_seed(1))
    assert tiles.shape == (64, 3, 64, 64)
    factor = _step_sum(tiles) / base
    # crop side round(64 f) shrunk to 64: the steps grow by round(64 f) / 64
    assert factor.min() >= 1 - 1e-3 and factor.max() <= 2 + 1e-3
    assert factor.max() > 1.8 and factor.min() < 1.2 and (factor > 1.05).float().mean() > 0.8


def test_zoom_share_is_the_share_of_shrunk_tiles():
    photos = PhotoSource([_ramp_photo()])
    photos.zoom_out, photos.zoom_share = 3.0, 0.25
    factor = _step_sum(photos.sample(400, 48, torch.Generator().manual_seed(2))) / 3e-3
    shrunk = (factor > 1.01).float().mean().item()
    assert 0.17 < shrunk < 0.33


def test_zoom_is_capped_by_the_smallest_photo():
    photos = PhotoSource([_ramp_photo(h=100, w=100)])
    photos.zoom_out, photos.zoom_share = 4.0, 1.0
    tiles = photos.sample(10, 64, torch.Generator().manual_seed(4))
    factor = _step_sum(tiles) / 3e-3
    assert torch.isfinite(tiles).all() and factor.max() <= 100 / 64 + 1e-3
