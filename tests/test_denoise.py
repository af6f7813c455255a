"""Denoise pipeline and kpnt-denoise CLI: tiling, outputs, bad inputs."""
import numpy as np
import pytest
import rawpy
import torch

from kpnt.cli.denoise import main as denoise_main
from kpnt.denoise import denoise_array, receptive_radius
from kpnt.io.dng import write_cfa_dng
from kpnt.io.meta import RawMeta
from kpnt.model import KPNT
from kpnt.mosaic import CFA
from kpnt.weights_io import save_weights

NOISE_WB = np.array([[2e-3, 1e-3, 1.5e-3], [4e-6, 2e-6, 3e-6]], dtype=np.float32)


def _random_model(sensor, seed=0, scale=0.3):
    """A model whose every path is active (random, not near-uniform kernels)."""
    torch.manual_seed(seed)
    m = KPNT(sensor)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * scale)
    return m.eval()


def _scene(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = 0.3 + 0.2 * np.sin(xx / 7.0) * np.cos(yy / 11.0) + 0.05 * rng.standard_normal((h, w))
    return img.astype(np.float32)


@pytest.mark.parametrize("sensor,cfa,size", [("bayer", CFA.bayer("GRBG"), 256), ("xtrans", CFA.xtrans(2, 3), 360)])
def test_receptive_radius_bound_covers_measured(sensor, cfa, size):
    model = _random_model(sensor).double()
    x = torch.from_numpy(_scene(size, size)).double()[None, None]
    noise = torch.from_numpy(NOISE_WB).double()[None]
    c = size // 2
    with torch.no_grad():
        a = model(x, cfa, noise)
        x2 = x.clone()
        x2[..., c, c] += 0.2
        b = model(x2, cfa, noise)
    changed = torch.nonzero((a - b).abs().amax(dim=1)[0] > 1e-13)
    measured = int((changed - c).abs().max())
    bound = receptive_radius(model, cfa)
    assert 0 < measured <= bound, (measured, bound)
    assert measured < c - 8, "test image too small to measure the radius"


@pytest.mark.parametrize("sensor,cfa,shape", [("bayer", CFA.bayer("RGGB"), (330, 190)), ("xtrans", CFA.xtrans(), (366, 200))])
def test_tiled_equals_untiled(sensor, cfa, shape):
    model = _random_model(sensor, seed=1)
    x = _scene(*shape, seed=2)
    whole = denoise_array(model, x, cfa, NOISE_WB, tile=0)
    tiles = []
    tiled = denoise_array(model, x, cfa, NOISE_WB, tile=shape[0] // 2, progress=tiles.append)
    assert len(tiles) > 1, "the test must actually tile"
    np.testing.assert_allclose(tiled, whole, atol=1e-4, rtol=0)


def _meta(**kw):
    base = dict(black=np.full(3, 512.0), white=16383.0, wb=np.array([2.0, 1.0, 1.7]), xyz_to_cam=np.array([[0.7, -0.1, -0.05], [-0.4, 1.2, 0.2], [-0.05, 0.1, 0.6]]),
                make="Nikon", model="D750", iso=3200, exposure_time=1 / 250, f_number=4.0, focal_length=50.0, datetime="2026:11:24 10:00:00", orientation=6)
    base.update(kw)
    return RawMeta(**base)


def _write_raw(path, cfa, shape=(120, 150), seed=0, **kw):
    meta = _meta(**kw)
    mosaic = _scene(*shape, seed=seed).clip(0, 1)
    counts = np.rint(mosaic * (meta.white - 512) + 512).astype(np.uint16)
    write_cfa_dng(path, counts, cfa, meta)
    return path


@pytest.fixture()
def weights(tmp_path):
    paths = {}
    for sensor, cfa in (("bayer", CFA.bayer("RGGB")), ("xtrans", CFA.xtrans())):
        paths[sensor] = tmp_path / f"{sensor}.safetensors"
        save_weights(paths[sensor], KPNT(sensor), cfa, {"data": "untrained test weights"})
    return paths


def test_cli_writes_linear_dng_with_metadata(tmp_path, weights, capsys):
    (tmp_path / "in").mkdir()
    src = _write_raw(tmp_path / "in" / "shot.dng", CFA.bayer("BGGR"))
    out = tmp_path / "out"
    assert denoise_main([str(src), "-o", str(out), "--weights", str(weights["bayer"]), "--noise", "1e-3,1e-5", "--no-progress"]) == 0
    dng = out / "shot.dng"
    with rawpy.imread(str(dng)) as r:
        assert r.raw_type == rawpy.RawType.Stack
        img = r.raw_image_visible.copy() if r.raw_image_visible.ndim == 3 else None
        assert r.sizes.raw_height == 120 and r.sizes.raw_width == 150
        assert r.other.iso_speed == 3200
        assert r.sizes.flip == 5 or r.sizes.flip == 6  # orientation 6 (rotate 90 CW) kept
    from kpnt.io.tiff import read_ifds  # noqa: F401  (the tag reader exists)
    # values: 0 is black and 65535 the white level; a smooth scene stays near its input
    if img is not None:
        assert 0.1 * 65535 < img.mean() < 0.6 * 65535
    assert "1 denoised" in capsys.readouterr().out


def test_cli_tiff_and_skip_force(tmp_path, weights, capsys):
    src = _write_raw(tmp_path / "shot.dng", CFA.bayer("RGGB"))
    args = [str(src), "-o", str(tmp_path / "o"), "--weights", str(weights["bayer"]), "--format", "tiff", "--noise", "1e-3,1e-5", "--no-progress"]
    assert denoise_main(args) == 0
    tif = tmp_path / "o" / "shot.tif"
    import cv2

    img = cv2.imread(str(tif), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and img.shape == (120, 150, 3)
    before = tif.stat().st_mtime_ns
    assert denoise_main(args) == 0
    assert "1 skipped" in capsys.readouterr().out
    assert tif.stat().st_mtime_ns == before
    assert denoise_main(args + ["--force"]) == 0
    assert "1 denoised" in capsys.readouterr().out


def test_cli_weights_for_other_sensor_fail_clearly(tmp_path, weights, capsys):
    src = _write_raw(tmp_path / "fuji.dng", CFA.xtrans(), shape=(120, 150), make="Fujifilm", model="X-T1")
    rc = denoise_main([str(src), "-o", str(tmp_path / "o"), "--weights", str(weights["bayer"]), "--noise", "1e-3,1e-5", "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "bayer" in err and "xtrans" in err and "--weights" in err
    assert not (tmp_path / "o" / "fuji.dng").exists()


def test_cli_batch_goes_on_after_bad_files(tmp_path, weights, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _write_raw(folder / "good.dng", CFA.bayer("RGGB"))
    (folder / "empty.nef").write_bytes(b"")
    (folder / "notes.nef").write_text("this is not a raw file\n")
    whole = _write_raw(tmp_path / "whole.dng", CFA.bayer("RGGB")).read_bytes()
    (folder / "truncated.dng").write_bytes(whole[: len(whole) // 2])
    from kpnt.io.dng import write_linear_dng

    write_linear_dng(folder / "linear.dng", np.full((64, 80, 3), 20000, np.uint16), _meta())
    bad = ["empty.nef", "notes.nef", "truncated.dng", "linear.dng"]
    rc = denoise_main([str(folder), str(tmp_path / "missing.cr2"), "-o", str(tmp_path / "o"), "--weights", str(weights["bayer"]), "--noise", "1e-3,1e-5", "--no-progress"])
    assert rc == 1
    captured = capsys.readouterr()
    assert "1 denoised" in captured.out and "5 failed" in captured.out
    assert (tmp_path / "o" / "good.dng").exists()
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["good.dng"], "no output, partial or temp file for bad inputs"
    # each failure: one line as it happens, and again in the closing summary
    err_lines = [l for l in captured.err.splitlines() if l.startswith("kpnt-denoise: error:")]
    summary = err_lines[-5:]
    for name in bad + ["missing.cr2"]:
        assert sum(name in l for l in summary) == 1, (name, summary)
    assert "Traceback" not in captured.err


def test_cli_blind_noise_used_without_profile(tmp_path, weights, caplog):
    src = _write_raw(tmp_path / "shot.dng", CFA.bayer("RGGB"), shape=(128, 160))
    import logging

    with caplog.at_level(logging.DEBUG, logger="kpnt"):
        assert denoise_main([str(src), "-o", str(tmp_path / "o"), "--weights", str(weights["bayer"]), "--no-progress", "--verbose"]) == 0
    assert "noise from blind" in caplog.text
