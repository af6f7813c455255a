"""DNG writers, checked with rawpy/LibRaw directly and with the tag reader."""
import os
from datetime import datetime

import numpy as np
import pytest
import rawpy

from kpnt.io import RawMeta, TiffWriteError, write_cfa_dng, write_linear_dng
from kpnt.io.tiff import read_ifds
from kpnt.mosaic import CFA

CFAS = [CFA.bayer(p) for p in ("RGGB", "BGGR", "GRBG", "GBRG")] + [CFA.xtrans(dy, dx) for dy, dx in
                                                                     ((0, 0), (1, 2), (3, 4), (5, 5))]


def meta(**kw):
    d = dict(black=[512, 512, 512], white=16383, wb=[2.1, 1.0, 1.6],
             xyz_to_cam=[[0.9, -0.3, -0.07], [-0.45, 1.25, 0.2], [-0.1, 0.2, 0.65]],
             make="Acme", model="Sensor One", iso=1600, exposure_time=1 / 500, f_number=4.0, focal_length=50.0,
             datetime="2023:11:12 13:14:15", orientation=1, baseline_exposure=0.0, noise_profile=None)
    d.update(kw)
    return RawMeta(**d)


def mosaic(h=36, w=48, seed=0, lo=0, hi=16383):
    return np.random.default_rng(seed).integers(lo, hi, (h, w)).astype(np.uint16)


@pytest.mark.parametrize("cfa", CFAS, ids=lambda c: c.name.replace("/", ""))
def test_cfa_dng_through_rawpy(tmp_path, cfa):
    black = [500, 510, 520] if cfa.kind == "bayer" else [512, 512, 512]  # LibRaw keeps X-Trans patterns apart
    m = meta(black=black)
    img = mosaic()
    path = write_cfa_dng(tmp_path / "x.dng", img, cfa, m)
    with rawpy.imread(str(path)) as rp:
        assert rp.raw_type == rawpy.RawType.Flat
        assert np.array_equal(rp.raw_image_visible, img)
        assert CFA.from_rawpy(rp.raw_pattern, rp.color_desc) == cfa
        desc = rp.color_desc.decode()
        blacks = rp.black_level_per_channel
        for i, ch in enumerate(desc):
            assert blacks[i] == black["RGB".index(ch)]
        assert rp.white_level == 16383
        wb = rp.camera_whitebalance
        assert np.allclose([wb[desc.index(c)] for c in "RGB"], [2.1, 1.0, 1.6], rtol=1e-6)
        o = rp.other
        assert o.iso_speed == 1600 and o.shutter_speed == pytest.approx(1 / 500)
        assert o.aperture == pytest.approx(4.0) and o.focal_length == pytest.approx(50.0)
        assert o.timestamp == datetime(2023, 11, 12, 13, 14, 15)


def test_cfa_dng_tags(tmp_path):
    m = meta(orientation=8, baseline_exposure=1.5, noise_profile=[[1e-4, 2e-6], [2e-4, 3e-6], [3e-4, 4e-6]])
    cfa = CFA.xtrans(2, 1)
    write_cfa_dng(tmp_path / "x.dng", mosaic(), cfa, m)
    ifd0, exif = read_ifds(tmp_path / "x.dng")
    assert ifd0[262] == (32803,) and ifd0[277] == (1,) and ifd0[258] == (16,) and ifd0[259] == (1,)
    assert ifd0[33421] == (6, 6) and ifd0[33422] == tuple(cfa.pattern.ravel())
    assert ifd0[50710] == (0, 1, 2) and ifd0[50711] == (1,)
    assert ifd0[50713] == (6, 6) and ifd0[50714] == (512,) * 36 and ifd0[50717] == (16383,)
    assert ifd0[50706] == (1, 4, 0, 0) and ifd0[50707] == (1, 1, 0, 0)
    assert ifd0[271] == "Acme" and ifd0[272] == "Sensor One" and ifd0[50708] == "Acme Sensor One"
    assert ifd0[274] == (8,) and ifd0[50778] == (21,) and ifd0[50730] == (1.5,)
    assert np.allclose(ifd0[50721], m.xyz_to_cam.ravel(), rtol=1e-9)
    assert np.allclose(ifd0[50728], 1 / m.wb, rtol=1e-9)
    assert ifd0[51041] == (1e-4, 2e-6, 2e-4, 3e-6, 3e-4, 4e-6)
    assert exif[34855] == (1600,) and exif[33434] == (0.002,) and exif[33437] == (4.0,)
    assert exif[37386] == (50.0,) and exif[36867] == "2023:11:12 13:14:15" and exif[36864] == b"0230"
    write_cfa_dng(tmp_path / "y.dng", mosaic(), cfa, meta(noise_profile=None, iso=0, exposure_time=None))
    ifd0, exif = read_ifds(tmp_path / "y.dng")
    assert 51041 not in ifd0 and 34855 not in exif and 33434 not in exif


def test_fractional_black_is_rational(tmp_path):
    write_cfa_dng(tmp_path / "x.dng", mosaic(), CFA.bayer("RGGB"), meta(black=[512.5, 511.25, 512.5]))
    (ifd0, _) = read_ifds(tmp_path / "x.dng")
    assert ifd0[50714] == (512.5, 511.25, 511.25, 512.5)


def test_high_iso_goes_to_iso_speed_tag(tmp_path):
    write_cfa_dng(tmp_path / "x.dng", mosaic(), CFA.bayer(), meta(iso=204800))
    _, exif = read_ifds(tmp_path / "x.dng")
    assert exif[34855] == (65535,) and exif[34864] == (3,) and exif[34867] == (204800,)


def test_linear_dng_through_rawpy(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 65536, (24, 30, 3)).astype(np.uint16)
    m = meta(orientation=6, noise_profile=[[1e-4, 2e-6]] * 3)
    write_linear_dng(tmp_path / "l.dng", rgb, m)
    with rawpy.imread(str(tmp_path / "l.dng")) as rp:
        assert rp.raw_type == rawpy.RawType.Stack and rp.num_colors == 3
        assert np.array_equal(rp.raw_image[..., :3], rgb)
        assert rp.white_level == 65535 and rp.black_level_per_channel[:3] == [0, 0, 0]
        assert np.allclose(rp.camera_whitebalance[:3], [2.1, 1.0, 1.6], rtol=1e-6)
        assert rp.sizes.flip == 6 and rp.other.iso_speed == 1600
    ifd0, _ = read_ifds(tmp_path / "l.dng")
    assert ifd0[262] == (34892,) and ifd0[277] == (3,) and ifd0[258] == (16, 16, 16)
    assert ifd0[50714] == (0, 0, 0) and ifd0[50717] == (65535,) * 3 and 33422 not in ifd0


@pytest.mark.parametrize("args,words", [
    (dict(mosaic_u16=np.zeros((30, 30), np.float32)), "uint16"),
    (dict(mosaic_u16=np.zeros((30, 30, 3), np.uint16)), "(H, W)"),
    (dict(mosaic_u16=np.zeros((21, 30), np.uint16)), "22x22"),
    (dict(cfa="RGGB"), "kpnt.mosaic.CFA"),
    (dict(meta=meta(white=16383.5)), "integer"),
    (dict(meta={"black": 0}), "RawMeta"),
])
def test_cfa_dng_bad_arguments(tmp_path, args, words):
    call = dict(path=tmp_path / "x.dng", mosaic_u16=np.zeros((30, 30), np.uint16), cfa=CFA.bayer(), meta=meta())
    call.update(args)
    with pytest.raises(TiffWriteError) as err:
        write_cfa_dng(**call)
    assert words in str(err.value)
    assert os.listdir(tmp_path) == []


def test_linear_dng_bad_arguments(tmp_path):
    with pytest.raises(TiffWriteError, match=r"\(H, W, 3\)"):
        write_linear_dng(tmp_path / "l.dng", np.zeros((30, 30), np.uint16), meta())
    with pytest.raises(TiffWriteError, match="uint16"):
        write_linear_dng(tmp_path / "l.dng", np.zeros((30, 30, 3)), meta())


def test_dng_refuses_overwrite(tmp_path):
    path = write_cfa_dng(tmp_path / "x.dng", mosaic(), CFA.bayer(), meta())
    before = path.read_bytes()
    with pytest.raises(TiffWriteError, match="already exists"):
        write_cfa_dng(path, mosaic(seed=9), CFA.bayer(), meta())
    assert path.read_bytes() == before
    write_cfa_dng(path, mosaic(seed=9), CFA.bayer(), meta(), overwrite=True)
    assert path.read_bytes() != before
    assert os.listdir(tmp_path) == ["x.dng"]


def test_writing_needs_no_rawpy():
    import subprocess
    import sys

    code = ("import sys, kpnt.io; from kpnt.io import write_cfa_dng, write_tiff; "
            "assert 'rawpy' not in sys.modules; kpnt.io.read_raw; assert 'rawpy' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))
