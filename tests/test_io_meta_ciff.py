"""Issue 16 item 2: a CRW without recorded exposure does not come out as
1 s at f/1.0.

No real CRW can ship with the tests, so the decision is tested on the values
LibRaw reports for one (it turns the zero APEX fields of an EOS D30 CRW into
exactly 1.0 s and f/1.0), and its wiring in ``read_raw`` on a DNG carrying
those values with the CIFF test forced on.
"""
import numpy as np
import pytest

from kpnt.io import RawMeta, read_raw, write_cfa_dng
from kpnt.io import raw as rawmod
from kpnt.io.meta import is_ciff, is_ciff_file, known_exposure
from kpnt.mosaic import CFA

# The first 14 bytes of a CRW (EOS D30): byte order, header length 26, 'HEAPCCDR'.
CRW_HEAD = b"II\x1a\x00\x00\x00HEAPCCDR\x01\x00"


def test_ciff_header_is_recognised():
    assert is_ciff(CRW_HEAD)
    assert is_ciff(b"MM\x00\x00\x00\x1aHEAPCCDR")
    assert not is_ciff(b"II*\x00\x08\x00\x00\x00")          # a TIFF (CR2, NEF, DNG)
    assert not is_ciff(b"II\x1a\x00\x00\x00HEAPJPGM")       # CIFF-like, not a raw heap
    assert not is_ciff(b"II\x1a")


def test_ciff_file(tmp_path):
    (tmp_path / "a.crw").write_bytes(CRW_HEAD + bytes(100))
    (tmp_path / "b.crw").write_bytes(b"II*\x00" + bytes(100))
    assert is_ciff_file(tmp_path / "a.crw") and not is_ciff_file(tmp_path / "b.crw")
    assert not is_ciff_file(tmp_path / "missing.crw")


@pytest.mark.parametrize("ciff,exposure,f_number,want", [
    (True, 1.0, 1.0, (None, None)),          # D30 with nothing recorded: LibRaw's 2^0, 2^0
    (True, 1.0, 5.6, (1.0, 5.6)),            # a real 1 s exposure
    (True, 1 / 203, 1.0, (1 / 203, 1.0)),    # an f/1.0 lens
    (True, None, None, (None, None)),
    (False, 1.0, 1.0, (1.0, 1.0)),           # other formats hold real rationals: kept
    (False, 1 / 203, 5.7, (1 / 203, 5.7)),
])
def test_known_exposure(ciff, exposure, f_number, want):
    assert known_exposure(exposure, f_number, ciff) == want


def _meta(**kw):
    d = dict(black=[512] * 3, white=16383, wb=[2.0, 1.0, 1.5], xyz_to_cam=np.eye(3) + 0.1, make="Canon",
             model="EOS D30", iso=100, exposure_time=1.0, f_number=1.0)
    d.update(kw)
    return RawMeta(**d)


def _mosaic():
    return np.random.default_rng(0).integers(600, 4000, (36, 48)).astype(np.uint16)


@pytest.mark.parametrize("ciff,want", [(True, (None, None)), (False, (1.0, 1.0))])
def test_read_raw_drops_the_invented_pair_only_for_ciff(tmp_path, monkeypatch, ciff, want):
    path = write_cfa_dng(tmp_path / "x.dng", _mosaic(), CFA.bayer(), _meta())
    monkeypatch.setattr(rawmod, "is_ciff_file", lambda p: ciff)
    got = read_raw(path).meta
    assert (got.exposure_time, got.f_number) == want


def test_read_raw_keeps_a_real_exposure_of_a_ciff(tmp_path, monkeypatch):
    path = write_cfa_dng(tmp_path / "x.dng", _mosaic(), CFA.bayer(), _meta(exposure_time=1.0, f_number=8.0))
    monkeypatch.setattr(rawmod, "is_ciff_file", lambda p: True)
    got = read_raw(path).meta
    assert (got.exposure_time, got.f_number) == (1.0, 8.0)
