"""Clean photographs as linear-light scenes for synthetic training pairs.

Photos (sRGB JPEG/PNG, e.g. BSDS500) are decoded once, optionally downscaled
(``downscale=2`` by area averaging removes most JPEG 4:2:0 chroma blocking
and compression artefacts, which would otherwise be learnt as "detail"),
linearised with the inverse sRGB curve and kept in memory as float32
``(3, H, W)`` tensors in linear sRGB.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from kpnt.color import srgb_to_linear
from kpnt.errors import KpntError

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"}


def list_photos(folder: str | Path) -> list[Path]:
    """All photo files below ``folder`` (recursive), sorted for determinism."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KpntError(f"{folder}: no such folder of clean photos: pass --clean with a folder of JPEG/PNG images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise KpntError(f"{folder}: holds no JPEG/PNG photos: pass --clean with a folder of clean photos")
    return files


def load_linear_photo(path: str | Path, downscale: int = 1) -> torch.Tensor:
    """Decode one photo to linear sRGB, float32 ``(3, H, W)`` in [0, 1]."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise KpntError(f"{path}: cannot decode as an image")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = img[:, :, :3][:, :, ::-1]  # BGR -> RGB
    peak = 65535.0 if img.dtype == np.uint16 else 255.0
    v = img.astype(np.float32) / peak
    lin = srgb_to_linear(v).astype(np.float32)
    if downscale > 1:
        h, w = lin.shape[0] // downscale * downscale, lin.shape[1] // downscale * downscale
        lin = lin[:h, :w].reshape(h // downscale, downscale, w // downscale, downscale, 3).mean(axis=(1, 3))
    return torch.from_numpy(np.ascontiguousarray(lin.transpose(2, 0, 1)))


class PhotoSource:
    """An in-memory set of linear photos that yields random scene tiles.

    Tiles are random crops with random flips and transposes (applied to the
    scene *before* mosaicing, so they never disturb the CFA phase).  With
    ``zoom_out > 1`` a share ``zoom_share`` of them is cut ``f`` times
    larger and shrunk back to the tile size, ``f`` uniform in
    ``[1, zoom_out]`` (antialiased, in linear light, as a lens forming a
    smaller image would): the training photos are already downscaled, and
    zooming out further brings more of their detail near the sampling
    limit, where demosaicing errs (issue 13: the gap to learned demosaicers
    lives in fine texture), with fresh phases of it on every draw.
    """

    def __init__(self, photos: list[torch.Tensor], names: list[str] | None = None):
        if not photos:
            raise KpntError("no photos to train on")
        self.photos = photos
        self.names = names or [str(i) for i in range(len(photos))]
        #: hard-example mining (:mod:`kpnt.train.mining`): ``(photo, y, x)``
        #: corners of tiles the model got most wrong, and the share of
        #: sampled tiles drawn near one of them
        self.hard_boxes: list[tuple[int, int, int]] = []
        self.hard_share = 0.0
        #: zoom-out augmentation (class doc): largest shrink factor, and
        #: the share of tiles shrunk
        self.zoom_out = 1.0
        self.zoom_share = 0.0

    @classmethod
    def from_folder(cls, folder, downscale: int = 2, limit: int | None = None) -> "PhotoSource":
        return cls.from_files(list_photos(folder)[:limit], downscale)

    @classmethod
    def from_files(cls, files, downscale: int = 2) -> "PhotoSource":
        """The photos at the paths ``files``, named by their file names."""
        return cls([load_linear_photo(f, downscale) for f in files], [Path(f).name for f in files])

    def to(self, device) -> "PhotoSource":
        """The same photos on ``device`` (tiles are then cut there)."""
        moved = PhotoSource([p.to(device) for p in self.photos], self.names)
        moved.zoom_out, moved.zoom_share = self.zoom_out, self.zoom_share
        return moved

    def min_side(self) -> int:
        return min(min(p.shape[1:]) for p in self.photos)

    def sample(self, n: int, size: int, gen: torch.Generator, augment: bool = True) -> torch.Tensor:
        """``(n, 3, size, size)`` random linear scene tiles."""
        if size > self.min_side():
            raise KpntError(f"tile size {size} exceeds the smallest photo side {self.min_side()}: use a smaller --tile")
        out = torch.empty(n, 3, size, size, device=self.photos[0].device)
        hard = torch.rand(n, generator=gen) < self.hard_share if self.hard_boxes else torch.zeros(n, dtype=torch.bool)
        # Drawn only when zooming is on, so runs without it keep their tiles.
        cut = self._zoomed_sides(n, size, gen) if augment and self.zoom_out > 1 and self.zoom_share > 0 else [size] * n
        for i in range(n):
            if hard[i]:
                k, y, x = self._near_hard_box(cut[i], gen)
            else:
                k, y, x = self.random_box(cut[i], gen)
            tile = self.photos[k][:, y : y + cut[i], x : x + cut[i]]
            if cut[i] != size:
                tile = F.interpolate(tile[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
            if augment:
                flips = torch.randint(2, (3,), generator=gen).tolist()
                if flips[0]:
                    tile = tile.flip(1)
                if flips[1]:
                    tile = tile.flip(2)
                if flips[2]:
                    tile = tile.transpose(1, 2)
            out[i] = tile
        return out

    def _zoomed_sides(self, n: int, size: int, gen: torch.Generator) -> list[int]:
        """Per tile, the side of the crop shrunk to ``size`` (``size``: not
        zoomed), at most the smallest photo side."""
        zoomed = torch.rand(n, generator=gen) < self.zoom_share
        factor = 1 + torch.rand(n, generator=gen) * (self.zoom_out - 1)
        limit = self.min_side()
        return [min(int(round(size * float(f))), limit) if z else size for z, f in zip(zoomed, factor)]

    def random_box(self, size: int, gen: torch.Generator) -> tuple[int, int, int]:
        """``(photo, y, x)``: a uniformly random tile corner of a random photo."""
        k = int(torch.randint(len(self.photos), (1,), generator=gen))
        img = self.photos[k]
        y = int(torch.randint(img.shape[1] - size + 1, (1,), generator=gen))
        x = int(torch.randint(img.shape[2] - size + 1, (1,), generator=gen))
        return k, y, x

    def _near_hard_box(self, size: int, gen: torch.Generator) -> tuple[int, int, int]:
        # A mined tile moved by up to a quarter of its side, so that the few
        # hundred mined places do not become a few hundred memorised tiles.
        k, y, x = self.hard_boxes[int(torch.randint(len(self.hard_boxes), (1,), generator=gen))]
        img = self.photos[k]
        dy, dx = (torch.randint(-(size // 4), size // 4 + 1, (2,), generator=gen)).tolist()
        return k, min(max(y + dy, 0), img.shape[1] - size), min(max(x + dx, 0), img.shape[2] - size)

    def crops(self, boxes: list[tuple[int, int, int]], size: int) -> torch.Tensor:
        """``(len(boxes), 3, size, size)``: the tiles at ``boxes``, unaugmented."""
        return torch.stack([self.photos[k][:, y : y + size, x : x + size] for k, y, x in boxes])

    def centre_tiles(self, size: int) -> torch.Tensor:
        """One deterministic centre crop per photo: ``(len, 3, size, size)``."""
        if size > self.min_side():
            raise KpntError(f"centre tile size {size} exceeds the smallest photo side {self.min_side()}: use a smaller tile")
        tiles = []
        for img in self.photos:
            y, x = (img.shape[1] - size) // 2, (img.shape[2] - size) // 2
            tiles.append(img[:, y : y + size, x : x + size])
        return torch.stack(tiles)
