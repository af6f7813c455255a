"""Metadata a raw editor needs survives kpnt: a DNG with two illuminants,
forward matrices, a profile name, a default crop inside an active area and
exact EXIF rationals goes through ``kpnt-denoise`` and comes out with the same
tags (issue 16, acceptance 1).

The fixture is written here (no file from ../shared is needed).  The
``exiftool -a -G1`` comparison runs where exiftool is installed (Debian
``libimage-exiftool-perl``) and is skipped elsewhere; the byte-level check of
every carried tag always runs.
"""
import re
import shutil
import subprocess

import numpy as np
import pytest
import tifffile

from kpnt.cli.denoise import main as denoise_main
from kpnt.io import RawMeta, read_raw, write_cfa_dng
from kpnt.io.carry import DNG_TAGS, IFD0_TAGS, RAW_IFD_TAGS, CarriedTags, encode_tag, read_carried_tags
from kpnt.io.tiff import ASCII, LONG, RATIONAL, SHORT, SRATIONAL, UNDEFINED
from kpnt.mosaic import CFA


def _r(*nums_dens):
    return np.array(nums_dens, dtype=np.int64).reshape(-1, 2)


def _mat(*vals):
    return _r(*[v for x in vals for v in (x, 10000)])


#: The source's IFD0 tags: a Canon as Magic Lantern / Adobe's converter
#: spell it, two calibration illuminants, forward matrices, a profile.
SOURCE_IFD0 = {
    271: encode_tag(ASCII, "Canon"),
    272: encode_tag(ASCII, "Canon EOS 550D"),
    50708: encode_tag(ASCII, "Canon EOS 550D"),
    50721: encode_tag(SRATIONAL, _mat(7754, -2236, -301, -4300, 12184, 2378, -819, 1944, 5931)),
    50722: encode_tag(SRATIONAL, _mat(6461, -907, -882, -4300, 12184, 2378, -819, 1944, 5931)),
    50778: encode_tag(SHORT, [17]),           # Standard light A
    50779: encode_tag(SHORT, [21]),           # D65
    50964: encode_tag(SRATIONAL, _mat(7763, 1066, 814, 3000, 8500, -1500, 100, -1300, 9500)),
    50965: encode_tag(SRATIONAL, _mat(7000, 1500, 1100, 2800, 9000, -1800, 0, -1000, 9200)),
    50723: encode_tag(SRATIONAL, _mat(10120, 0, 0, 0, 10000, 0, 0, 0, 9870)),
    50724: encode_tag(SRATIONAL, _mat(10120, 0, 0, 0, 10000, 0, 0, 0, 9870)),
    50727: encode_tag(RATIONAL, _r(1, 1, 1, 1, 1, 1)),
    50728: encode_tag(RATIONAL, _r(4733, 10000, 1, 1, 6522, 10000)),
    50730: encode_tag(SRATIONAL, _r(-1, 4)),
    50734: encode_tag(RATIONAL, _r(1, 1)),
    50936: encode_tag(ASCII, "Fixture Standard"),
    51110: encode_tag(LONG, [0]),
    50719: encode_tag(RATIONAL, _r(4, 1, 4, 1)),     # DefaultCropOrigin, relative to the ActiveArea
    50720: encode_tag(RATIONAL, _r(88, 1, 56, 1)),   # DefaultCropSize
}
#: EXIF as cameras write it: 1/203 s and f/5.7 as exact rationals, a lens.
SOURCE_EXIF = {
    36864: encode_tag(UNDEFINED, b"0230"),
    33434: encode_tag(RATIONAL, _r(1, 203)),
    33437: encode_tag(RATIONAL, _r(57, 10)),
    34855: encode_tag(SHORT, [1600]),
    36867: encode_tag(ASCII, "2024:05:06 07:08:09"),
    37380: encode_tag(SRATIONAL, _r(-1, 3)),
    37386: encode_tag(RATIONAL, _r(50, 1)),
    42036: encode_tag(ASCII, "EF-S18-55mm f/3.5-5.6 IS"),
}
ACTIVE_AREA = [2, 4, 66, 100]      # top, left, bottom, right: a 64x96 visible area


def write_fixture(path, exif=SOURCE_EXIF, seed=0):
    """A 68x104 CFA DNG with the tags above and an ActiveArea."""
    m = RawMeta(black=[2048] * 3, white=15000, wb=[1 / 0.4733, 1, 1 / 0.6522], xyz_to_cam=np.eye(3) + 0.1,
                make="Canon", model="EOS 550D", iso=1600, carried=CarriedTags(dict(SOURCE_IFD0), dict(exif)))
    rng = np.random.default_rng(seed)
    mosaic = (2048 + 3000 + rng.normal(0, 80, (68, 104))).astype(np.uint16)
    write_cfa_dng(path, mosaic, CFA.bayer("RGGB"), m, extra_tags={50829: (LONG, ACTIVE_AREA)})
    return path


@pytest.fixture(scope="module")
def denoised(tmp_path_factory):
    d = tmp_path_factory.mktemp("rt")
    src = write_fixture(d / "src.dng")
    assert denoise_main([str(src), "-o", str(d / "out"), "--device", "cpu", "--no-progress", "--noise", "1e-4,1e-6"]) == 0
    return src, d / "out" / "src.dng"


def test_every_carried_tag_equals_the_source(denoised):
    src, out = denoised
    a, b = read_carried_tags(src), read_carried_tags(out)
    for code in IFD0_TAGS + DNG_TAGS + RAW_IFD_TAGS:
        assert a.ifd0.get(code) == b.ifd0.get(code), code
    assert a.exif == b.exif
    assert set(SOURCE_IFD0) <= set(a.ifd0) and set(SOURCE_EXIF) == set(a.exif)


def test_active_area_applied_and_crop_kept(denoised):
    src, out = denoised
    with tifffile.TiffFile(out) as tf:
        page = tf.pages[0]
        assert (page.imagelength, page.imagewidth, page.samplesperpixel) == (64, 96, 3)
        assert 50829 not in page.tags                       # ActiveArea applied, not repeated
        assert page.tags[50719].value == (4, 1, 4, 1)       # DefaultCropOrigin, exactly as in the source
        assert page.tags[50720].value == (88, 1, 56, 1)
    assert read_raw(src).mosaic.shape == (64, 96)


def test_nothing_invented_when_the_source_has_none(tmp_path):
    # ExposureTime and FNumber 0 (lens without contacts) stay 0; no ISO, lens
    # or focal length is added.
    exif = {36864: encode_tag(UNDEFINED, b"0230"), 33434: encode_tag(RATIONAL, _r(0, 1)),
            33437: encode_tag(RATIONAL, _r(0, 1))}
    src = write_fixture(tmp_path / "z.dng", exif=exif)
    assert denoise_main([str(src), "-o", str(tmp_path / "o"), "--device", "cpu", "--no-progress", "--noise", "1e-4,1e-6"]) == 0
    assert read_carried_tags(tmp_path / "o" / "z.dng").exif == read_carried_tags(src).exif


#: Tags that must differ between a CFA source and kpnt's LinearRaw output
#: (pixel layout, levels, ActiveArea already applied, file name/size/dates).
MUST_CHANGE = {
    "FileName", "Directory", "FileSize", "FileModifyDate", "FileAccessDate", "FileInodeChangeDate",
    "FilePermissions", "ImageWidth", "ImageHeight", "BitsPerSample", "Compression", "PhotometricInterpretation",
    "StripOffsets", "SamplesPerPixel", "RowsPerStrip", "StripByteCounts", "CFARepeatPatternDim", "CFAPattern2",
    "CFAPlaneColor", "CFALayout", "BlackLevelRepeatDim", "BlackLevel", "WhiteLevel", "ActiveArea", "CFAPattern",
    "ImageSize", "Megapixels", "Software", "NoiseProfile", "Predictor", "TileWidth", "TileLength", "TileOffsets",
    "TileByteCounts", "LinearizationTable",
}


def _exiftool(path):
    out = subprocess.run(["exiftool", "-a", "-G1", "-s", str(path)], capture_output=True, text=True, check=True).stdout
    tags = {}
    for line in out.splitlines():
        m = re.match(r"\[(\S+)\]\s+(\S+)\s*: (.*)$", line)
        if m:
            tags[(m.group(1), m.group(2))] = m.group(3)
    return tags


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed (apt: libimage-exiftool-perl)")
def test_exiftool_diff_limited_to_tags_that_must_change(denoised):
    src, out = denoised
    a, b = _exiftool(src), _exiftool(out)
    differ = {name for key in set(a) | set(b) if a.get(key) != b.get(key) for name in [key[1]]}
    assert differ <= MUST_CHANGE, sorted(differ - MUST_CHANGE)
    assert b[("IFD0", "ForwardMatrix2")] == a[("IFD0", "ForwardMatrix2")]
    assert b[("ExifIFD", "FNumber")] == "5.7" and b[("ExifIFD", "ExposureTime")] == "1/203"
    assert b[("IFD0", "Model")] == "Canon EOS 550D"


def test_canon_model_spelled_as_canon_does_for_non_tiff_raws(tmp_path):
    # CRW/CR3 are not TIFF-based: nothing is carried, and LibRaw's model
    # ('EOS D30') lacks the maker that Canon's own Model tag has.
    from kpnt.io import raw as rawmod

    crw = tmp_path / "x.crw"
    crw.write_bytes(b"II\x1a\x00\x00\x00HEAPCCDR" + bytes(64))
    assert rawmod._carried(crw, "Canon", "EOS D30").ifd0[272] == encode_tag(ASCII, "Canon EOS D30")
    assert 272 not in rawmod._carried(crw, "Fujifilm", "X-T1").ifd0
    tiff_src = write_fixture(tmp_path / "t.dng")               # a TIFF source keeps its own spelling
    assert rawmod._carried(tiff_src, "Canon", "EOS 550D").ifd0[272] == SOURCE_IFD0[272]


def test_non_tiff_source_keeps_derived_date(tmp_path):
    from kpnt.io import write_linear_dng
    from kpnt.io.tiff import read_ifds

    meta = RawMeta(black=[0] * 3, white=4095, wb=[2, 1, 1.5], xyz_to_cam=np.eye(3), make="Canon", model="EOS D30",
                   datetime="2003:01:02 03:04:05", carried=CarriedTags({272: encode_tag(ASCII, "Canon EOS D30")}, {}))
    write_linear_dng(tmp_path / "o.dng", np.zeros((32, 32, 3), np.uint16), meta)
    ifd0 = read_ifds(tmp_path / "o.dng")[0]
    assert ifd0[306] == "2003:01:02 03:04:05" and ifd0[272] == "Canon EOS D30"
