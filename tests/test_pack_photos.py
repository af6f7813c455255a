"""tools/pack_photos.py: lossless copies, balanced parts, one training set."""
import cv2
import numpy as np

from kpnt.train.photos import PhotoSource
from tool_loader import load_tool


def _tool():
    return load_tool("pack_photos")


def test_pack_photos_is_lossless_and_balanced(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    src.mkdir()
    for i, side in enumerate([64, 60, 56, 40, 36]):
        img = rng.integers(0, 256, (side, side + 8, 3), dtype=np.uint8)   # noise: barely compressible
        cv2.imwrite(str(src / f"p{i}.png"), img)
    sizes = _tool().pack(src, tmp_path / "out", parts=2)
    copies = sorted((tmp_path / "out").rglob("*.webp"))
    assert len(copies) == 5 and {c.parent.name for c in copies} == {"a", "b"}
    assert max(sizes) < 0.75 * sum(sizes)          # largest-first packing: no part holds nearly everything
    for c in copies:
        assert np.array_equal(cv2.imread(str(c)), cv2.imread(str(src / (c.stem + ".png"))))
    # the trainer reads both parts as one set, with the pixels of the PNGs
    packed = PhotoSource.from_folder(tmp_path / "out", downscale=1)
    original = PhotoSource.from_folder(src, downscale=1)
    assert sorted(p.shape for p in packed.photos) == sorted(p.shape for p in original.photos)
    by_name = dict(zip([n.split(".")[0] for n in original.names], original.photos))
    for name, photo in zip(packed.names, packed.photos):
        assert np.array_equal(photo.numpy(), by_name[name.split(".")[0]].numpy())


def test_pack_photos_first_takes_the_first_photos_by_name(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "src"
    src.mkdir()
    for name, side in (("c", 64), ("a", 32), ("d", 48), ("b", 40)):
        cv2.imwrite(str(src / f"{name}.png"), rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    _tool().pack(src, tmp_path / "out", parts=1, first=2)
    assert sorted(c.name for c in (tmp_path / "out").rglob("*.webp")) == ["a.webp", "b.webp"]
