"""Centre tiles of validation photos (``PhotoSource.centre_tiles``)."""
import pytest
import torch

from kpnt.errors import KpntError
from kpnt.train.photos import PhotoSource


def test_centre_tiles_are_the_centres():
    img = torch.arange(3 * 10 * 12, dtype=torch.float32).reshape(3, 10, 12)
    tiles = PhotoSource([img, img + 1]).centre_tiles(4)
    assert tiles.shape == (2, 3, 4, 4)
    assert torch.equal(tiles[0], img[:, 3:7, 4:8]) and torch.equal(tiles[1], img[:, 3:7, 4:8] + 1)


def test_centre_tile_larger_than_a_photo_is_an_error_not_a_sliver():
    # Before session 14 a photo smaller than the tile gave a (3, 1, 88)
    # sliver, and the stack failed with a shape error far from the cause.
    photos = PhotoSource([torch.zeros(3, 64, 64), torch.zeros(3, 40, 90)])
    with pytest.raises(KpntError, match="smallest photo side 40"):
        photos.centre_tiles(48)
    assert photos.centre_tiles(40).shape == (2, 3, 40, 40)
