"""kpnt-denoise's issue-16 options end to end: --strength, hot pixels on by
default (counted with --verbose), --compression, the size ratio in the
summary."""
import logging

import numpy as np
import rawpy
import tifffile

from kpnt.cli.denoise import main as denoise_main
from kpnt.io import RawMeta, write_cfa_dng
from kpnt.mosaic import CFA

HOT = [(20, 31), (41, 60), (70, 90)]


def _raw(path):
    cfa = CFA.bayer("RGGB")
    rng = np.random.default_rng(0)
    x = 0.2 / np.array([2.0, 1.0, 1.6])[cfa.colour_map(96, 128)]
    x = x + rng.normal(0, 1, x.shape) * np.sqrt(1e-4 * x + 1e-6)
    raw = np.round(512 + x * (16383 - 512)).astype(np.uint16)
    for y, xx in HOT:
        raw[y, xx] = 16383                              # stuck at white
    meta = RawMeta(black=[512] * 3, white=16383, wb=[2.0, 1.0, 1.6], xyz_to_cam=np.eye(3) + 0.1, make="Nikon",
                   model="D750", iso=800)
    write_cfa_dng(path, raw, cfa, meta)
    return path


def _run(tmp_path, name, *extra):
    src = _raw(tmp_path / f"{name}.dng")
    out = tmp_path / f"out-{name}"
    code = denoise_main([str(src), "-o", str(out), "--device", "cpu", "--no-progress", "--noise", "1e-4,1e-6",
                         "--decoder", "inline", *extra])
    assert code == 0
    return out / f"{name}.dng"


def _pixels(path):
    # through rawpy: the default 'compact' DNG stores codes that its
    # LinearizationTable maps to the 16-bit values
    with rawpy.imread(str(path)) as rp:
        return rp.raw_image[..., :3].astype(np.float64) / 65535


def test_hot_pixels_counted_and_removed(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG, logger="kpnt"):
        fixed = _run(tmp_path, "a", "--verbose")
    assert "3 hot and 0 dead photosite(s) replaced" in caplog.text
    kept = _run(tmp_path, "b", "--no-hot-pixels")
    for y, x in HOT:
        assert _pixels(kept)[y, x].max() > 0.5 > _pixels(fixed)[y, x].max()


def test_strength_and_compression(tmp_path, capsys):
    full = _run(tmp_path, "c")
    none = _run(tmp_path, "d", "--strength", "0", "--compression", "none")
    with tifffile.TiffFile(full) as a, tifffile.TiffFile(none) as b:
        assert a.pages[0].compression == 7 and b.pages[0].compression == 1
    flat = (slice(8, 88), slice(8, 120))
    noise_full = (_pixels(full)[flat] * [2.0, 1.0, 1.6]).std()
    noise_none = (_pixels(none)[flat] * [2.0, 1.0, 1.6]).std()
    assert noise_none > 2 * noise_full
    assert "x their raws'" in capsys.readouterr().out


def test_missing_wb_said_with_verbose(tmp_path, caplog):
    # the default decoder runs in a child process: the main process says it
    src = tmp_path / "nowb.dng"
    cfa = CFA.bayer("RGGB")
    meta = RawMeta(black=[512] * 3, white=16383, wb=[2.0, 1.0, 1.6], xyz_to_cam=np.eye(3) + 0.1)
    raw = np.random.default_rng(1).integers(2000, 6000, (64, 96)).astype(np.uint16)
    write_cfa_dng(src, raw, cfa, meta, extra_tags={50728: None})
    with caplog.at_level(logging.DEBUG, logger="kpnt"):
        assert denoise_main([str(src), "-o", str(tmp_path / "o"), "--device", "cpu", "--no-progress", "--noise",
                             "1e-4,1e-6", "--verbose"]) == 0
    assert "no as-shot white balance in the file: estimated from the image" in caplog.text
