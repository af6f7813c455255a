"""Lossless-JPEG LinearRaw DNGs (issue 16 item 3): rawpy reads back exactly
the values written, whatever the image size against the tiles, and
the file is smaller than the uncompressed one on smooth (denoised) data.

darktable-cli and rawtherapee-cli are checked where installed (Debian
packages ``darktable`` and ``rawtherapee``): they must render the compressed
and the uncompressed file identically.
"""

import numpy as np
import pytest
import rawpy
import tifffile

from editor_helpers import EDITORS, render, require_editor
from kpnt.io import RawMeta, write_linear_dng
from kpnt.io.ljpeg_tiles import tile_side
from kpnt.io.tiff import TiffWriteError


def _meta():
    return RawMeta(black=[0] * 3, white=65535, wb=[2.0, 1.0, 1.5], xyz_to_cam=np.eye(3) + 0.1, make="Canon",
                   model="EOS 550D", iso=800)


def _smooth(h, w, seed=0, sigma=0.002):
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([0.2 + 0.15 * np.sin(xx / 40), 0.4 + 0.2 * np.cos(yy / 30), 0.3 + 0.1 * np.sin((xx + yy) / 50)], -1)
    img += np.random.default_rng(seed).normal(0, sigma, img.shape)
    return np.round(np.clip(img, 0, 1) * 65535).astype(np.uint16)


@pytest.mark.parametrize("shape", [(22, 22), (24, 30), (300, 30), (37, 271), (128, 128), (256, 256), (260, 530)])
def test_rawpy_reads_exact_values(tmp_path, shape):
    rgb = np.random.default_rng(1).integers(0, 65536, shape + (3,)).astype(np.uint16)
    write_linear_dng(tmp_path / "c.dng", rgb, _meta())
    with rawpy.imread(str(tmp_path / "c.dng")) as rp:
        rp.unpack()
        assert rp.raw_type == rawpy.RawType.Stack
        assert np.array_equal(rp.raw_image[..., :3], rgb)
    with tifffile.TiffFile(tmp_path / "c.dng") as tf:
        page = tf.pages[0]
        assert page.compression == 7 and page.tilewidth == tile_side(shape[1])


def test_smaller_than_uncompressed_and_same_pixels(tmp_path):
    rgb = _smooth(512, 640, sigma=0.0005)    # residual noise of a denoised image: ~33 LSB
    a = write_linear_dng(tmp_path / "a.dng", rgb, _meta(), compression="none")
    b = write_linear_dng(tmp_path / "b.dng", rgb, _meta())
    assert b.stat().st_size < 0.6 * a.stat().st_size
    with rawpy.imread(str(a)) as ra, rawpy.imread(str(b)) as rb:
        assert np.array_equal(ra.raw_image, rb.raw_image)


def test_unknown_compression_is_refused(tmp_path):
    with pytest.raises(TiffWriteError, match="compression must be one of"):
        write_linear_dng(tmp_path / "x.dng", _smooth(32, 32), _meta(), compression="zip")
    assert not (tmp_path / "x.dng").exists()


@pytest.mark.slow
@pytest.mark.parametrize("tool", EDITORS)
def test_raw_editors_render_compressed_like_uncompressed(tmp_path, tool):
    require_editor(tool)
    rgb = _smooth(300, 400)
    write_linear_dng(tmp_path / "u.dng", rgb, _meta(), compression="none")
    write_linear_dng(tmp_path / "c.dng", rgb, _meta())
    a = render(tool, tmp_path / "u.dng", tmp_path / "u.tif")
    b = render(tool, tmp_path / "c.dng", tmp_path / "c.tif")
    assert a.shape[:2] == (300, 400) and a.mean() > 0
    assert np.array_equal(a, b)


@pytest.mark.parametrize("sensor,shape", [("RGGB", (22, 22)), ("GRBG", (300, 530)), ("xtrans", (258, 270))])
def test_cfa_dng_lossless_jpeg_reads_back_exactly(tmp_path, sensor, shape):
    # the camera-like source tools/dng_size.py sizes against: 2 components per tile
    from kpnt.io import write_cfa_dng
    from kpnt.mosaic import CFA

    cfa = CFA.xtrans() if sensor == "xtrans" else CFA.bayer(sensor)
    mosaic = np.random.default_rng(2).integers(512, 16384, shape).astype(np.uint16)
    meta = RawMeta(black=[512] * 3, white=16383, wb=[2.0, 1.0, 1.5], xyz_to_cam=np.eye(3) + 0.1)
    a = write_cfa_dng(tmp_path / "u.dng", mosaic, cfa, meta)
    b = write_cfa_dng(tmp_path / "c.dng", mosaic, cfa, meta, compression="ljpeg")
    with rawpy.imread(str(a)) as ra, rawpy.imread(str(b)) as rb:
        assert np.array_equal(rb.raw_image_visible, mosaic)
        assert np.array_equal(ra.raw_colors_visible, rb.raw_colors_visible)
    with tifffile.TiffFile(b) as tf:
        assert tf.pages[0].compression == 7
    with pytest.raises(TiffWriteError, match="'ljpeg' or 'none'"):
        write_cfa_dng(tmp_path / "x.dng", mosaic, cfa, meta, compression="compact")
    assert not (tmp_path / "x.dng").exists()
