"""TIFF container: rationals, IFD round trips, RGB TIFFs read by cv2/tifffile, atomic writes."""
import os

import cv2
import numpy as np
import pytest
import tifffile

from kpnt.io import tiff
from kpnt.io.tiff import (ASCII, BYTE, DOUBLE, IFD, LONG, RATIONAL, SHORT, SRATIONAL, TAG_EXIF_IFD, UNDEFINED,
                          TiffFormatError, TiffWriteError, read_ifds, to_rational, write_tiff, write_tiff_file)


def test_rationals_exact_for_camera_values():
    pairs = to_rational([1 / 4000, 1 / 3, 5.6, 0.8], signed=False)
    assert pairs.tolist() == [[1, 4000], [1, 3], [28, 5], [4, 5]]
    signed = to_rational([-0.05, -2.5], signed=True)
    assert signed.tolist() == [[-1, 20], [-5, 2]]
    x = np.array([0.123456789123, -1.98765432])
    back = to_rational(x, signed=True)
    assert np.allclose(back[:, 0] / back[:, 1], x, rtol=1e-9, atol=0)
    with pytest.raises(TiffWriteError, match="rational"):
        to_rational([-1.0], signed=False)
    with pytest.raises(TiffWriteError, match="rational"):
        to_rational([np.inf], signed=True)


def test_ifd_round_trip_all_types(tmp_path):
    ifd = IFD()
    ifd.set(256, LONG, 7)
    ifd.set(257, LONG, 5)
    ifd.set(258, SHORT, 16)
    ifd.set(259, SHORT, 1)
    ifd.set(262, SHORT, 1)
    ifd.set(271, ASCII, "Acme Corp")
    ifd.set(33421, SHORT, [2, 2])
    ifd.set(33422, BYTE, bytes([0, 1, 1, 2]))
    ifd.set(50721, SRATIONAL, [0.5, -0.25, 1.0])
    ifd.set(50728, RATIONAL, [0.5, 1.0, 0.625])
    ifd.set(51041, DOUBLE, [1e-4, 2e-6])
    exif = IFD()
    exif.set(36864, UNDEFINED, b"0230")
    exif.set(34855, SHORT, 400)
    ifd.sub_ifds[TAG_EXIF_IFD] = exif
    pix = np.arange(35, dtype=np.uint16).reshape(5, 7)
    write_tiff_file(tmp_path / "a.tif", ifd, pix)

    main, ex = read_ifds(tmp_path / "a.tif")
    assert main["_kind"] == "main" and ex["_kind"] == "exif"
    assert main[271] == "Acme Corp" and main[33421] == (2, 2) and main[33422] == (0, 1, 1, 2)
    assert main[50721] == (0.5, -0.25, 1.0) and main[50728] == (0.5, 1.0, 0.625)
    assert main[51041] == (1e-4, 2e-6)
    assert ex[36864] == b"0230" and ex[34855] == (400,)
    # An independent reader agrees on the pixels and the EXIF IFD.
    with tifffile.TiffFile(tmp_path / "a.tif") as tf:
        assert np.array_equal(tf.asarray(), pix)
        assert tf.pages[0].tags["ExifTag"].value["ISOSpeedRatings"] == 400


def test_read_ifds_big_endian(tmp_path):
    img = np.arange(12, dtype=np.uint16).reshape(3, 4)
    tifffile.imwrite(tmp_path / "be.tif", img, byteorder=">", metadata=None)
    (ifd,) = read_ifds(tmp_path / "be.tif")
    assert ifd[256] == (4,) and ifd[257] == (3,)


def test_read_ifds_rejects_non_tiff_and_broken_offsets(tmp_path):
    (tmp_path / "t.txt").write_text("hello world, not a tiff")
    with pytest.raises(TiffFormatError, match="not a TIFF"):
        read_ifds(tmp_path / "t.txt")
    (tmp_path / "b.tif").write_bytes(b"II*\0" + (10_000).to_bytes(4, "little"))
    with pytest.raises(TiffFormatError, match="beyond end of file"):
        read_ifds(tmp_path / "b.tif")


def test_write_tiff_uint16_read_by_cv2_and_tifffile(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.uniform(-0.1, 1.1, (9, 13, 3)).astype(np.float32)
    write_tiff(tmp_path / "u.tif", rgb, "uint16")
    want = np.round(np.clip(rgb, 0, 1) * 65535).astype(np.uint16)
    got = cv2.imread(str(tmp_path / "u.tif"), cv2.IMREAD_UNCHANGED)
    assert got.dtype == np.uint16 and np.array_equal(got[..., ::-1], want)  # cv2 is BGR
    assert np.array_equal(tifffile.imread(tmp_path / "u.tif"), want)


def test_write_tiff_float_keeps_values_and_infers_dtype(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.normal(0.5, 0.6, (8, 6, 3))
    write_tiff(tmp_path / "f.tif", rgb)                    # float64 in -> float32 out
    got = tifffile.imread(tmp_path / "f.tif")
    assert got.dtype == np.float32 and np.array_equal(got, rgb.astype(np.float32))
    got_cv = cv2.imread(str(tmp_path / "f.tif"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(got_cv[..., ::-1], rgb.astype(np.float32))
    u16 = rng.integers(0, 65536, (4, 5, 3)).astype(np.uint16)
    write_tiff(tmp_path / "i.tif", u16)                    # uint16 stays uint16
    assert np.array_equal(tifffile.imread(tmp_path / "i.tif"), u16)


@pytest.mark.parametrize("rgb,dtype,words", [
    (np.zeros((4, 4)), None, "(H, W, 3)"),
    (np.zeros((4, 4, 4)), None, "(H, W, 3)"),
    (np.zeros((4, 4, 3), np.int32), None, "uint16 or float"),
    (np.full((4, 4, 3), np.nan), "uint16", "NaN"),
    (np.zeros((4, 4, 3), np.uint16), "float32", "float input"),
    (np.zeros((4, 4, 3)), "float16", "dtype must be"),
])
def test_write_tiff_bad_input(tmp_path, rgb, dtype, words):
    with pytest.raises(TiffWriteError) as err:
        write_tiff(tmp_path / "x.tif", rgb, dtype)
    assert words in str(err.value)
    assert os.listdir(tmp_path) == []


def test_refuses_overwrite_and_replaces_when_asked(tmp_path):
    target = tmp_path / "o.tif"
    target.write_bytes(b"precious")
    with pytest.raises(TiffWriteError, match="overwrite=True"):
        write_tiff(target, np.zeros((2, 2, 3), np.uint16))
    assert target.read_bytes() == b"precious"
    write_tiff(target, np.ones((2, 2, 3), np.uint16), overwrite=True)
    assert np.array_equal(tifffile.imread(target), np.ones((2, 2, 3), np.uint16))
    assert sorted(os.listdir(tmp_path)) == ["o.tif"]
    with pytest.raises(TiffWriteError, match="does not exist"):
        write_tiff(tmp_path / "nope" / "o.tif", np.zeros((2, 2, 3), np.uint16))


def test_failed_write_leaves_no_temp_file(tmp_path, monkeypatch):
    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(tiff.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_tiff(tmp_path / "x.tif", np.zeros((3, 3, 3), np.uint16))
    assert os.listdir(tmp_path) == []
