"""read_raw: round trips through our own DNGs and one-line rejections of bad input."""
from pathlib import Path

import numpy as np
import pytest
import rawpy

from kpnt.errors import RawReadError
from kpnt.io import RawMeta, read_raw, write_cfa_dng, write_linear_dng
from kpnt.io import raw as rawmod
from kpnt.io.dng import dng_ifd
from kpnt.io.tiff import BYTE, LONG, SHORT, SRATIONAL, write_tiff_file
from kpnt.mosaic import CFA

CFAS = [CFA.bayer(p) for p in ("RGGB", "BGGR", "GRBG", "GBRG")] + [CFA.xtrans(dy, dx) for dy, dx in
                                                                     ((0, 0), (1, 2), (4, 3))]
NOISE = [[1e-4, 2e-6], [1.1e-4, 2.1e-6], [1.3e-4, 2.2e-6]]


def meta(**kw):
    # Fujifilm X-T1 is in LibRaw's camera table: the round trip proves the
    # file's ColorMatrix wins over LibRaw's built-in one.
    d = dict(black=[1024, 1000, 1040], white=16383, wb=[2.1, 1.0, 1.6],
             xyz_to_cam=[[0.8, -0.2, -0.05], [-0.4, 1.2, 0.15], [-0.05, 0.1, 0.6]],
             make="Fujifilm", model="X-T1", iso=3200, exposure_time=1 / 250, f_number=5.6, focal_length=35.0,
             datetime="2024:05:06 07:08:09", orientation=1, baseline_exposure=0.5, noise_profile=NOISE)
    d.update(kw)
    return RawMeta(**d)


def mosaic(h=36, w=48, seed=0):
    return np.random.default_rng(seed).integers(900, 16800, (h, w)).astype(np.uint16)  # some above white


@pytest.mark.parametrize("cfa", CFAS, ids=lambda c: c.name.replace("/", ""))
@pytest.mark.parametrize("with_noise", [True, False])
def test_round_trip(tmp_path, cfa, with_noise):
    m = meta(noise_profile=NOISE if with_noise else None)
    img = mosaic()
    write_cfa_dng(tmp_path / "x.dng", img, cfa, m)
    got = read_raw(tmp_path / "x.dng")
    assert got.cfa == cfa
    assert got.raw.dtype == np.uint16 and np.array_equal(got.raw, img)
    black = m.black[cfa.colour_map(*img.shape)]
    want = ((img - black) / (m.white - black)).astype(np.float32)
    assert got.mosaic.dtype == np.float32 and np.array_equal(got.mosaic, want)
    assert got.mosaic.min() < 0 and got.mosaic.max() > 1  # not clipped
    assert np.array_equal(got.saturated, img >= 16383) and got.saturated.any()
    # the file's own tags travel along verbatim (kpnt.io.carry); the rest is the decoded metadata
    assert got.meta.carried.exif and got.meta.carried.ifd0
    got.meta.carried = m.carried
    assert got.meta == m, (got.meta, m)


def test_dng_matrix_wins_over_libraw_table(tmp_path):
    write_cfa_dng(tmp_path / "x.dng", mosaic(), CFA.bayer(), meta())
    with rawpy.imread(str(tmp_path / "x.dng")) as rp:
        libraw = rp.rgb_xyz_matrix[:3]
    assert not np.allclose(libraw, meta().xyz_to_cam, atol=1e-3)  # LibRaw substitutes its X-T1 matrix
    assert np.array_equal(read_raw(tmp_path / "x.dng").meta.xyz_to_cam, meta().xyz_to_cam)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_round_trip(tmp_path, orientation):
    write_cfa_dng(tmp_path / "x.dng", mosaic(24, 24), CFA.bayer("GRBG"), meta(orientation=orientation))
    assert read_raw(tmp_path / "x.dng").meta.orientation == orientation


def test_make_model_are_libraws_normalised_names(tmp_path):
    write_cfa_dng(tmp_path / "x.dng", mosaic(), CFA.bayer(), meta(make="NIKON CORPORATION", model="NIKON D750"))
    got = read_raw(tmp_path / "x.dng").meta
    assert (got.make, got.model) == ("Nikon", "D750")


def test_make_model_fall_back_to_tiff_tags(tmp_path, monkeypatch):
    monkeypatch.setattr(rawmod, "_libraw_c", lambda: None)
    write_cfa_dng(tmp_path / "x.dng", mosaic(), CFA.bayer(), meta(make="NIKON CORPORATION", model="NIKON D750"))
    got = read_raw(tmp_path / "x.dng").meta
    assert (got.make, got.model) == ("NIKON CORPORATION", "NIKON D750")


def test_iso_above_65535_from_exif_iso_speed(tmp_path):
    write_cfa_dng(tmp_path / "x.dng", mosaic(), CFA.bayer(), meta(iso=102400))
    assert read_raw(tmp_path / "x.dng").meta.iso == 102400


def custom_dng(path, img, m, pattern=(0, 1, 1, 2), dims=(2, 2), photometric=32803, extra=(), drop=()):
    """A DNG with hand-picked tags (for layouts write_cfa_dng refuses to write)."""
    ifd = dng_ifd(m, img.shape[1], img.shape[0], samples=1)
    ifd.set(262, SHORT, photometric)
    if photometric == 32803:
        ifd.set(33421, SHORT, list(dims))
        ifd.set(33422, BYTE, bytes(pattern))
        ifd.set(50710, BYTE, bytes([0, 1, 2]))
    ifd.set(50714, LONG, int(m.black[1]))
    ifd.set(50717, LONG, int(m.white))
    for code, typ, values in extra:
        ifd.set(code, typ, values)
    for code in drop:
        del ifd.tags[code]
    return write_tiff_file(path, ifd, img)


def test_active_area_reanchors_the_cfa(tmp_path):
    img = mosaic(30, 40)
    # Pattern RGGB at the active area's origin (1, 3); LibRaw moves odd
    # margins to the next even row/column, so the visible area starts at
    # (2, 4), one site down and right of the pattern origin.
    custom_dng(tmp_path / "a.dng", img, meta(black=[1000] * 3), extra=[(50829, LONG, [1, 3, 30, 40])])
    got = read_raw(tmp_path / "a.dng")
    with rawpy.imread(str(tmp_path / "a.dng")) as rp:
        top, left = rp.sizes.top_margin, rp.sizes.left_margin
    assert (top, left) == (2, 4)
    assert np.array_equal(got.raw, img[top:, left:])
    assert got.cfa == CFA.bayer("RGGB").crop(top - 1, left - 3)


def test_missing_as_shot_wb_is_estimated(tmp_path):
    # no AsShotNeutral: estimated from the image (kpnt.io.autowb; tests/test_autowb.py checks its accuracy)
    custom_dng(tmp_path / "w.dng", mosaic(), meta(black=[1000] * 3), drop=[50728])
    got = read_raw(tmp_path / "w.dng").meta
    assert got.wb_source == "auto" and got.wb[1] == 1.0 and (got.wb > 0).all()


def test_colour_matrix_nearest_d65():
    a, b = np.eye(3).ravel() * 2, np.arange(1, 10) / 10
    ifd0 = {50721: tuple(a), 50778: (17,), 50722: tuple(b), 50779: (21,)}  # StdA, D65
    assert np.array_equal(rawmod._dng_colour_matrix(ifd0), b.reshape(3, 3))
    ifd0 = {50721: tuple(a), 50778: (23,), 50722: tuple(b), 50779: (17,)}  # D50 beats StdA
    assert np.array_equal(rawmod._dng_colour_matrix(ifd0), a.reshape(3, 3))


def test_noise_profile_pairs_in_plane_order():
    one = rawmod._dng_noise_profile((1e-4, 1e-6), (0, 1, 2))
    assert one.shape == (3, 2) and (one == [1e-4, 1e-6]).all()
    per = rawmod._dng_noise_profile((3, 30, 1, 10, 2, 20), (2, 0, 1))  # planes B, R, G
    assert per.tolist() == [[1, 10], [2, 20], [3, 30]]


# ----------------------------------------------------------------------
# rejections: one line, naming the file
# ----------------------------------------------------------------------
def assert_one_line(err, path, words):
    msg = str(err.value)
    assert "\n" not in msg and path.name in msg and words in msg, msg


def test_reject_missing_and_empty(tmp_path):
    for path, words in ((tmp_path / "gone.NEF", "not found"), (tmp_path / "empty.NEF", "empty file (0 bytes): copy it again")):
        if "empty" in path.name:
            path.write_bytes(b"")
        with pytest.raises(RawReadError) as err:
            read_raw(path)
        assert_one_line(err, path, words)


def test_reject_text_renamed_nef(tmp_path):
    path = tmp_path / "holiday.NEF"
    path.write_text("this is a text file, not a raw\n" * 20)
    with pytest.raises(RawReadError) as err:
        read_raw(path)
    assert_one_line(err, path, "not a raw file")
    assert "leave it out" in str(err.value) and "DNG" in str(err.value)     # and what to do


@pytest.mark.parametrize("keep", [0.3, 0.7, 0.999])
def test_reject_truncated_dng(tmp_path, keep):
    full = write_cfa_dng(tmp_path / "full.dng", mosaic(), CFA.bayer(), meta()).read_bytes()
    path = tmp_path / "cut.dng"
    path.write_bytes(full[: int(len(full) * keep)])
    with pytest.raises(RawReadError) as err:
        read_raw(path)
    assert_one_line(err, path, "truncated")
    assert "copy it again" in str(err.value)


def test_reject_linear_dng(tmp_path):
    path = write_linear_dng(tmp_path / "lin.dng", np.zeros((24, 30, 3), np.uint16), meta())
    with pytest.raises(RawReadError) as err:
        read_raw(path)
    assert_one_line(err, path, "not a mosaic raw")


def test_reject_monochrome(tmp_path):
    path = custom_dng(tmp_path / "mono.dng", mosaic(), meta(black=[1000] * 3), photometric=34892)
    with pytest.raises(RawReadError) as err:
        read_raw(path)
    assert_one_line(err, path, "monochrome")


def test_reject_unknown_cfa(tmp_path):
    path = custom_dng(tmp_path / "odd.dng", mosaic(), meta(black=[1000] * 3), pattern=(0, 1, 2, 1))
    with pytest.raises(RawReadError) as err:
        read_raw(path)
    assert_one_line(err, path, "unsupported CFA layout")


def test_reject_unknown_camera_without_matrix(tmp_path):
    m = meta(make="Acme", model="Nobody", black=[1000] * 3)
    path = custom_dng(tmp_path / "nomat.dng", mosaic(), m, drop=[50721, 50778])
    with pytest.raises(RawReadError) as err:
        read_raw(path)
    assert_one_line(err, path, "no colour matrix")
    custom_dng(tmp_path / "mat.dng", mosaic(), m, extra=[(50721, SRATIONAL, m.xyz_to_cam.ravel())])
    assert np.array_equal(read_raw(tmp_path / "mat.dng").meta.xyz_to_cam, m.xyz_to_cam)


@pytest.mark.parametrize("top,left", [(0, 0), (1, 0), (0, 3), (5, 7), (14, 42)])
@pytest.mark.parametrize("desc,pattern", [
    ("RGBG", [[0, 1], [3, 2]]),
    ("RGBG", CFA.xtrans(2, 5).pattern),
])
def test_visible_cfa_matches_rawpys_visible_colours(top, left, desc, pattern):
    # rawpy's raw_colors_visible: the raw_pattern tiled from the full raw's
    # (0, 0), then cut at the margins (LibRaw rounds DNG margins to whole
    # repeats, so our DNGs cannot exercise odd margins).
    pattern = np.asarray(pattern)
    h, w = top + 12, left + 12
    full = np.pad(pattern, ((0, h - len(pattern)), (0, w - len(pattern))), mode="wrap")
    visible = np.asarray(list(desc))[full[top:, left:]]
    cfa = rawmod.visible_cfa(pattern, desc, top, left)
    assert np.array_equal(np.asarray(list("RGB"))[cfa.colour_map(12, 12)], visible)


def test_error_names_the_path_once_when_it_is_bare(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    for given, expected in (("gone.NEF", "gone.NEF: file not found"),
                            ("sub/gone.NEF", "gone.NEF: file not found (sub/gone.NEF)")):
        with pytest.raises(RawReadError) as err:
            read_raw(Path(given))
        assert str(err.value) == expected
