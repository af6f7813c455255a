"""'compact' LinearRaw DNGs (issue 16, acceptance 2): lossless JPEG of codes
that a LinearizationTable maps back to 16-bit levels.

Checked: the table's steps stay under the noise bound it is built for at
every level (and at black under a 14-bit raw's step), rawpy reads back
exactly the table's value of every code (so the round-trip error per level
is the rounding bound), the file is much smaller than the bit-exact
'ljpeg' one on a textured fixture, kpnt-denoise writes it by default, and
darktable-cli / rawtherapee-cli apply the table (where installed).
"""

import numpy as np
import pytest
import rawpy
import tifffile

from editor_helpers import EDITORS, render, require_editor
from kpnt.io import RawMeta, write_linear_dng
from kpnt.io.linearization import A_REF, CODES, FLOOR, compact_table, max_error, to_codes
from kpnt.io.tiff import read_ifds

STEP14 = 65535 / 16383          # one step of a 14-bit raw, in 16-bit levels


def _meta():
    return RawMeta(black=[0] * 3, white=65535, wb=[2.0, 1.0, 1.5], xyz_to_cam=np.eye(3) + 0.1, make="Canon",
                   model="EOS 550D", iso=800)


def _textured(h, w, seed=0):
    """Denoised-looking data: smooth shading, fine texture at every level
    from deep shadow to white, a little residual noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    base = np.exp(np.log(1e-4) * (1 - xx))[..., None] * np.array([0.5, 1.0, 0.7])      # 1e-4 .. 1 across
    texture = 1 + 0.2 * np.sin(2 * np.pi * (yy * 37 + xx * 11))[..., None] * np.sin(np.arange(3) + yy[..., None] * 90)
    img = base * texture * (1 + rng.normal(0, 0.003, (h, w, 3)))
    return np.round(np.clip(img, 0, 1) * 65535).astype(np.uint16)


def test_table_shape():
    t = compact_table()
    assert t.dtype == np.uint16 and len(t) == CODES
    assert t[0] == 0 and t[-1] == 65535 and (np.diff(t.astype(int)) > 0).all()
    with pytest.raises(ValueError):
        t[5] = 1                                        # shared read-only table


def test_steps_under_the_noise_bound_at_every_level():
    t = compact_table().astype(np.float64)
    steps = np.diff(t)
    v = t[:-1] / 65535
    # k = 0.30 for 2048 codes (module docstring); +1 for the rounding of levels
    bound = 0.30 * np.sqrt(A_REF * v + (FLOOR / 0.30) ** 2) * 65535 + 1
    assert (steps <= bound).all()
    assert steps[0] <= STEP14 / 2 + 0.5                            # half a 14-bit step at black,
    assert steps[v < 1e-3].max() <= STEP14                         # under one through the deep shadows
    assert (steps[v > 0.05] <= 0.31 * np.sqrt(A_REF * v[v > 0.05]) * 65535 + 1).all()


def test_nearest_code_and_error_bound():
    t = compact_table()
    x = np.arange(65536, dtype=np.uint16)
    codes = to_codes(x, t)
    err = np.abs(t[codes].astype(int) - x.astype(int))
    assert codes.dtype == np.uint16 and codes.max() == CODES - 1
    assert err.max() == max_error(t)
    # nothing nearer: the neighbouring codes are no closer
    lo, hi = np.clip(codes.astype(int) - 1, 0, CODES - 1), np.clip(codes.astype(int) + 1, 0, CODES - 1)
    assert (np.abs(t[lo].astype(int) - x) >= err).all() and (np.abs(t[hi].astype(int) - x) >= err).all()


@pytest.mark.parametrize("shape", [(22, 22), (37, 271), (260, 530)])
def test_rawpy_applies_the_table(tmp_path, shape):
    rgb = _textured(*shape)
    write_linear_dng(tmp_path / "c.dng", rgb, _meta(), compression="compact")
    t = compact_table()
    with rawpy.imread(str(tmp_path / "c.dng")) as rp:
        got = rp.raw_image[..., :3].copy()
        assert rp.raw_type == rawpy.RawType.Stack and rp.white_level == 65535
    assert np.array_equal(got, t[to_codes(rgb, t)])
    # round-trip error per level: half the local step, under the bound
    err = np.abs(got.astype(np.float64) - rgb)
    v = rgb / 65535
    assert (err <= 0.15 * np.sqrt(A_REF * v + (FLOOR / 0.30) ** 2) * 65535 + 1).all()
    assert err[v < 1e-3].max() <= STEP14 / 4 + 0.5
    ifd0 = read_ifds(tmp_path / "c.dng")[0]
    assert ifd0[50712] == tuple(int(c) for c in t) and ifd0[259] == (7,) and ifd0[258] == (16, 16, 16)


def test_smaller_than_lossless_on_texture(tmp_path):
    rgb = _textured(512, 768)
    exact = write_linear_dng(tmp_path / "l.dng", rgb, _meta(), compression="ljpeg")
    compact = write_linear_dng(tmp_path / "c.dng", rgb, _meta(), compression="compact")
    assert compact.stat().st_size < 0.7 * exact.stat().st_size
    with tifffile.TiffFile(compact) as tf:
        assert tf.pages[0].compression == 7


def test_fewer_codes_smaller_and_coarser(tmp_path):
    rgb = _textured(256, 256)
    sizes, errs = [], []
    for n in (4096, 2048, 1024):
        p = write_linear_dng(tmp_path / f"{n}.dng", rgb, _meta(), compression="compact", codes=n, overwrite=True)
        with rawpy.imread(str(p)) as rp:
            errs.append(np.abs(rp.raw_image[..., :3].astype(int) - rgb).max())
        sizes.append(p.stat().st_size)
    assert sizes[0] > sizes[1] > sizes[2] and errs[0] < errs[1] < errs[2]


def test_cli_writes_compact_by_default():
    from kpnt.cli.denoise import build_parser

    assert build_parser().parse_args(["x.NEF", "-o", "out"]).compression == "compact"
    assert build_parser().parse_args(["x.NEF", "-o", "out", "--compression", "ljpeg"]).compression == "ljpeg"


@pytest.mark.slow
@pytest.mark.parametrize("tool", EDITORS)
def test_raw_editors_apply_the_table(tmp_path, tool):
    require_editor(tool)
    rgb = _textured(300, 400)
    t = compact_table()
    decoded = t[to_codes(rgb, t)]
    write_linear_dng(tmp_path / "c.dng", rgb, _meta(), compression="compact")
    write_linear_dng(tmp_path / "d.dng", decoded, _meta(), compression="ljpeg")     # the table's values, exact
    write_linear_dng(tmp_path / "k.dng", to_codes(rgb, t), _meta(), compression="ljpeg")  # the codes as values
    a = render(tool, tmp_path / "c.dng", tmp_path / "c.tif")
    b = render(tool, tmp_path / "d.dng", tmp_path / "d.tif")
    ignored = render(tool, tmp_path / "k.dng", tmp_path / "k.tif")
    assert a.shape[:2] == (300, 400) and b.mean() > 0
    if tool == "rawtherapee-cli":
        assert np.array_equal(a, b)                   # the table's values themselves
    else:
        # rawspeed dithers each value within its code's cell: same picture,
        # a few output levels of grain at most
        assert abs(a.mean() - b.mean()) < 0.002 * b.mean()
        assert np.percentile(np.abs(a - b), 99) <= 0.02 * b.max()
    assert abs(ignored.mean() - b.mean()) > 0.2 * b.mean()      # a reader ignoring the table would fail here


@pytest.mark.parametrize("codes,words", [(1, "2 to 65536 codes"), (70000, "2 to 65536 codes"),
                                         (40000, "at most 32769")])
def test_bad_table_size_is_one_line(tmp_path, codes, words):
    from kpnt.io.tiff import TiffWriteError

    with pytest.raises(TiffWriteError, match=words) as err:
        write_linear_dng(tmp_path / "x.dng", _textured(32, 32), _meta(), compression="compact", codes=codes)
    assert "\n" not in str(err.value) and not (tmp_path / "x.dng").exists()
