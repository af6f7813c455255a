"""kpnt-denoise CLI: outputs and metadata, noise sources, formats, globs,
bad files, full disk, Ctrl-C, --jobs, the pipelined path.  (Reliability
under crashes, signals and bad output locations: test_batch_reliability.py.)"""
from pathlib import Path

import numpy as np
import pytest
import rawpy

from denoise_helpers import raw_meta, write_raw
from kpnt.cli.denoise import main as denoise_main
from kpnt.model import KPNT
from kpnt.mosaic import CFA
from kpnt.weights_io import save_weights


@pytest.fixture()
def weights(tmp_path):
    paths = {}
    for sensor, cfa in (("bayer", CFA.bayer("RGGB")), ("xtrans", CFA.xtrans())):
        paths[sensor] = tmp_path / f"{sensor}.safetensors"
        save_weights(paths[sensor], KPNT(sensor), cfa, {"data": "untrained test weights"})
    return paths


def test_cli_writes_linear_dng_with_metadata(tmp_path, weights, capsys):
    (tmp_path / "in").mkdir()
    src = write_raw(tmp_path / "in" / "shot.dng", CFA.bayer("BGGR"))
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
    src = write_raw(tmp_path / "shot.dng", CFA.bayer("RGGB"))
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
    src = write_raw(tmp_path / "fuji.dng", CFA.xtrans(), shape=(120, 150), make="Fujifilm", model="X-T1")
    rc = denoise_main([str(src), "-o", str(tmp_path / "o"), "--weights", str(weights["bayer"]), "--noise", "1e-3,1e-5", "--no-progress"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "bayer" in err and "xtrans" in err and "--weights" in err
    assert not (tmp_path / "o" / "fuji.dng").exists()


def test_cli_batch_goes_on_after_bad_files(tmp_path, weights, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    write_raw(folder / "good.dng", CFA.bayer("RGGB"))
    (folder / "empty.nef").write_bytes(b"")
    (folder / "notes.nef").write_text("this is not a raw file\n")
    whole = write_raw(tmp_path / "whole.dng", CFA.bayer("RGGB")).read_bytes()
    (folder / "truncated.dng").write_bytes(whole[: len(whole) // 2])
    from kpnt.io.dng import write_linear_dng

    write_linear_dng(folder / "linear.dng", np.full((64, 80, 3), 20000, np.uint16), raw_meta())
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
    src = write_raw(tmp_path / "shot.dng", CFA.bayer("RGGB"), shape=(128, 160))
    import logging

    with caplog.at_level(logging.DEBUG, logger="kpnt"):
        assert denoise_main([str(src), "-o", str(tmp_path / "o"), "--weights", str(weights["bayer"]), "--no-progress", "--verbose"]) == 0
    assert "noise from blind" in caplog.text


def test_cli_failed_blind_estimate_names_the_other_noise_sources(tmp_path, weights, capsys):
    # too small for the blind estimate, no NoiseProfile tag: the user is told
    # which options give the noise level instead
    src = write_raw(tmp_path / "small.dng", CFA.bayer("RGGB"), shape=(64, 80))
    rc = denoise_main([str(src), "-o", str(tmp_path / "o"), "--weights", str(weights["bayer"]), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "--noise a,b" in err and "--profiles" in err and "estimate_blind" not in err, err
    assert len(err.strip().splitlines()) == 1, err


# ----------------------------------------------------------------------
# CLI: metadata, noise sources, formats, globs
# ----------------------------------------------------------------------
def _cli(tmp_path, weights, *args):
    """kpnt-denoise on the CPU unless the test names a device: these tests
    expect the same paths on every machine (the GPU pipeline has its own
    tests in tests/cuda/test_denoise_pipeline.py)."""
    args = [*map(str, args)]
    if "--device" not in args and "--devices" not in args:
        args += ["--device", "cpu"]
    return denoise_main([*args, "--weights", str(weights["bayer"]), "--no-progress"])


def test_dng_metadata_round_trip(tmp_path, weights):
    """Everything a raw editor needs survives: read the input with kpnt's
    reader and the output with rawpy and the TIFF tag reader."""
    from kpnt.io.raw import read_raw
    from kpnt.io.tiff import read_ifds

    (tmp_path / "in").mkdir()
    src = write_raw(tmp_path / "in" / "shot.dng", CFA.bayer("RGGB"), make="Nikon", model="D750", iso=6400,
                     exposure_time=1 / 320, f_number=5.6, focal_length=85.0, datetime="2026:11:24 15:42:07",
                     orientation=8, noise_profile=np.array([[1e-3, 2e-6], [5e-4, 1e-6], [8e-4, 1.5e-6]]))
    assert _cli(tmp_path, weights, src, "-o", tmp_path / "o") == 0
    out = tmp_path / "o" / "shot.dng"
    m_in = read_raw(src).meta
    with rawpy.imread(str(src)) as a, rawpy.imread(str(out)) as b:
        assert b.raw_type == rawpy.RawType.Stack
        for attr in ("iso_speed", "shutter_speed", "aperture", "focal_length", "timestamp"):
            assert getattr(b.other, attr) == getattr(a.other, attr), attr
        assert b.sizes.flip == a.sizes.flip
        np.testing.assert_allclose(np.asarray(b.camera_whitebalance)[:3], np.asarray(a.camera_whitebalance)[:3], rtol=1e-6)
    ifds = read_ifds(out)
    ifd0 = ifds[0]
    exif = next(d for d in ifds if d["_kind"] == "exif")
    assert ifd0[271].strip() == m_in.make and ifd0[272].strip() == m_in.model
    assert int(ifd0[274][0]) == m_in.orientation == 8
    assert exif[34855][0] == m_in.iso == 6400
    assert exif[36867].strip() == m_in.datetime
    np.testing.assert_allclose(np.asarray(ifd0[50721], float).reshape(3, 3), m_in.xyz_to_cam, rtol=1e-7)
    np.testing.assert_allclose(np.asarray(ifd0[50728], float), 1 / m_in.wb, rtol=1e-7)
    np.testing.assert_allclose(np.asarray(ifd0[51041], float).reshape(3, 2), m_in.noise_profile, rtol=1e-12)
    import shutil
    import subprocess

    if shutil.which("exiftool"):
        tags = ["-Make", "-Model", "-ISO", "-ExposureTime", "-FNumber", "-FocalLength", "-DateTimeOriginal",
                "-Orientation", "-ColorMatrix1", "-AsShotNeutral"]
        read = lambda p: subprocess.run(["exiftool", "-s", "-s", "-s", *tags, str(p)], capture_output=True, text=True).stdout  # noqa: E731
        assert read(out) == read(src)


def test_noise_source_per_file_in_verbose(tmp_path, weights, caplog):
    import logging

    folder = tmp_path / "in"
    folder.mkdir()
    write_raw(folder / "tagged.dng", CFA.bayer("RGGB"), make="Sony", model="Tagged", noise_profile=np.array([[1e-3, 2e-6]] * 3))
    write_raw(folder / "plain.dng", CFA.bayer("RGGB"), shape=(128, 160), make="Unknown", model="Cam")
    write_raw(folder / "d750.dng", CFA.bayer("RGGB"), make="Nikon", model="D750")
    table = Path(__file__).resolve().parent.parent / "kpnt" / "data" / "sample_profiles.json"
    with caplog.at_level(logging.DEBUG, logger="kpnt"):
        assert _cli(tmp_path, weights, folder, "-o", tmp_path / "o", "--profiles", table, "--verbose") == 0
    lines = {n: [l for l in caplog.text.splitlines() if f"{n}.dng ->" in l] for n in ("tagged", "plain", "d750")}
    assert "noise from dng" in lines["tagged"][0]
    assert "noise from blind" in lines["plain"][0]
    assert "noise from table" in lines["d750"][0]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="kpnt"):
        assert _cli(tmp_path, weights, folder, "-o", tmp_path / "o2", "--noise", "1e-3,1e-5", "--verbose") == 0
    assert caplog.text.count("noise from given") == 3


def _read_exr(path):
    """Minimal reader of the uncompressed scanline EXRs kpnt writes, from
    the OpenEXR layout: magic, version, attributes, offsets, scanlines."""
    import struct

    data = Path(path).read_bytes()
    magic, version = struct.unpack_from("<ii", data, 0)
    assert (magic, version) == (20000630, 2)
    pos, attrs = 8, {}
    while data[pos] != 0:
        name_end = data.index(b"\0", pos)
        type_end = data.index(b"\0", name_end + 1)
        (size,) = struct.unpack_from("<i", data, type_end + 1)
        attrs[data[pos:name_end].decode()] = (data[name_end + 1:type_end].decode(), data[type_end + 5:type_end + 5 + size])
        pos = type_end + 5 + size
    pos += 1
    assert attrs["compression"] == ("compression", b"\0")
    assert attrs["channels"][1] == b"".join(c + b"\0" + struct.pack("<iB3xii", 2, 0, 1, 1) for c in (b"B", b"G", b"R")) + b"\0"
    x0, y0, x1, y1 = struct.unpack("<iiii", attrs["dataWindow"][1])
    h, w = y1 - y0 + 1, x1 - x0 + 1
    offsets = np.frombuffer(data, "<u8", h, pos)
    img = np.empty((h, w, 3), np.float32)
    for row, off in enumerate(offsets):
        y, n = struct.unpack_from("<ii", data, int(off))
        assert y == row and n == 12 * w
        planes = np.frombuffer(data, "<f4", 3 * w, int(off) + 8).reshape(3, w)
        img[row] = planes[::-1].T                       # B, G, R -> R, G, B
    return img


def test_float_formats_agree(tmp_path, weights):
    """tiff-float and exr hold the same float32 pixels (values above white kept)."""
    import tifffile

    src = write_raw(tmp_path / "shot.dng", CFA.bayer("RGGB"), shape=(300, 100))
    assert _cli(tmp_path, weights, src, "-o", tmp_path / "t", "--format", "tiff-float", "--noise", "1e-3,1e-5") == 0
    assert _cli(tmp_path, weights, src, "-o", tmp_path / "e", "--format", "exr", "--noise", "1e-3,1e-5") == 0
    tif = tifffile.imread(tmp_path / "t" / "shot.tif")
    exr = _read_exr(tmp_path / "e" / "shot.exr")
    assert tif.dtype == np.float32 and tif.shape == (300, 100, 3)
    np.testing.assert_array_equal(exr, tif)


def test_ensemble_option_reaches_the_model(tmp_path, weights):
    """--ensemble 2 averages two views: the same file gives other pixels, and
    the same pixels as denoise_raw with views=2."""
    import tifffile

    from kpnt.denoise import NoiseChoice, denoise_raw
    from kpnt.io.raw import read_raw
    from kpnt.weights_io import load_weights

    src = write_raw(tmp_path / "shot.dng", CFA.bayer("GRBG"), shape=(120, 90))
    assert _cli(tmp_path, weights, src, "-o", tmp_path / "one", "--format", "tiff-float", "--noise", "1e-3,1e-5") == 0
    assert _cli(tmp_path, weights, src, "-o", tmp_path / "two", "--format", "tiff-float", "--noise", "1e-3,1e-5",
                "--ensemble", "2", "--cpu-precision", "fp32", "--no-hot-pixels") == 0
    one, two = (tifffile.imread(tmp_path / d / "shot.tif") for d in ("one", "two"))
    assert np.abs(one - two).max() > 1e-4
    model = load_weights(weights["bayer"])[0]
    raw = read_raw(src)
    want = denoise_raw(model, raw, NoiseChoice(np.array([[1e-3] * 3, [1e-5] * 3]), "given"), tile=0, views=2)
    np.testing.assert_allclose(two, want, atol=2e-5, rtol=0)


def test_globs_and_mirrored_tree(tmp_path, weights, capsys, monkeypatch):
    shots = tmp_path / "shots"
    (shots / "day1").mkdir(parents=True)
    (shots / "day2").mkdir()
    for rel in ("day1/a.dng", "day1/b.DNG", "day2/c.dng"):
        write_raw(shots / rel, CFA.bayer("RGGB"))
    monkeypatch.chdir(tmp_path)
    rc = _cli(tmp_path, weights, "shots/*/*.dng", "shots/day2/*.nef", "-o", "out", "--noise", "1e-3,1e-5")
    assert rc == 1, "the unmatched pattern is an error for that input"
    captured = capsys.readouterr()
    assert "2 denoised" in captured.out and "1 failed" in captured.out
    assert "shots/day2/*.nef: no file matches this pattern" in captured.err
    assert sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*") if p.is_file()) == \
        ["day1/a.dng", "day2/c.dng"], "glob (case-sensitive) files mirrored under the pattern's folder"
    assert _cli(tmp_path, weights, "shots/**/*.DNG", "-o", "out2", "--noise", "1e-3,1e-5") == 0
    assert [p.name for p in (tmp_path / "out2").rglob("*") if p.is_file()] == ["b.dng"]
    assert (tmp_path / "out2" / "day1" / "b.dng").exists()


def test_exit_code_zero_only_without_failures(tmp_path, weights, capsys):
    src = write_raw(tmp_path / "in.dng", CFA.bayer("RGGB"))
    (tmp_path / "bad.dng").write_bytes(b"II*\0junk")
    assert _cli(tmp_path, weights, src, "-o", tmp_path / "o", "--noise", "1e-3,1e-5") == 0
    assert _cli(tmp_path, weights, src, "-o", tmp_path / "o", "--noise", "1e-3,1e-5") == 0, "skipped only"
    assert _cli(tmp_path, weights, src, tmp_path / "bad.dng", "-o", tmp_path / "o", "--noise", "1e-3,1e-5") == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1].startswith("0 denoised, 1 skipped") and "1 failed" in out[-1]


# ----------------------------------------------------------------------
# robustness: unsupported sensors, permissions, full disk, Ctrl-C
# ----------------------------------------------------------------------
def _mono_dng(path):
    from kpnt.io.dng import PHOTOMETRIC_LINEAR_RAW, dng_ifd
    from kpnt.io.tiff import LONG, SHORT, write_tiff_file

    ifd = dng_ifd(raw_meta(make="Leica", model="M Monochrom"), 80, 64, samples=1)
    ifd.set(262, SHORT, PHOTOMETRIC_LINEAR_RAW)
    ifd.set(50714, LONG, [0])
    ifd.set(50717, LONG, [65535])
    write_tiff_file(path, ifd, np.full((64, 80), 3000, np.uint16))
    return path


def test_unsupported_sensor_and_unreadable_file(tmp_path, weights, capsys, monkeypatch):
    import errno
    import os

    import kpnt.batch.decoder as decoder

    folder = tmp_path / "in"
    folder.mkdir()
    _mono_dng(folder / "mono.dng")
    locked = write_raw(folder / "locked.dng", CFA.bayer("RGGB"))
    write_raw(folder / "ok.dng", CFA.bayer("RGGB"))
    locked.chmod(0)
    if os.access(locked, os.R_OK):     # root reads anything: make the open fail as it would for a user
        real_open = open

        def fake_open(path, *a, **k):
            if Path(path) == locked:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_open(path, *a, **k)

        monkeypatch.setattr(decoder, "open", fake_open, raising=False)
    try:   # inline decoding: the patched open is this process's
        rc = _cli(tmp_path, weights, folder, "-o", tmp_path / "o", "--noise", "1e-3,1e-5", "--decoder", "inline")
    finally:
        locked.chmod(0o644)
    assert rc == 1
    captured = capsys.readouterr()
    assert "1 denoised" in captured.out and "2 failed" in captured.out
    summary = captured.err.splitlines()[-2:]
    assert any("mono.dng" in l and "monochrome" in l for l in summary)
    assert any("locked.dng" in l and "Permission denied" in l for l in summary)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["ok.dng"]


def _failing_fdopen(monkeypatch, name, exc):
    """Make atomic writes of files called ``name`` fail with ``exc`` after
    half of their bytes (a temp file with partial content exists then)."""
    import os

    import kpnt.io.tiff as tiff

    real = os.fdopen

    class Half:
        def __init__(self, fh):
            self.fh, self.n = fh, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            self.fh.close()

        def write(self, b):
            self.n += 1
            if self.n == 2:
                self.fh.write(b[: len(b) // 2])
                self.fh.flush()
                if isinstance(exc, BaseException):
                    raise exc
                exc()
            return self.fh.write(b)

    def fdopen(fd, mode="r", *a, **k):
        fh = real(fd, mode, *a, **k)
        return Half(fh) if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(f".{name}.") else fh

    monkeypatch.setattr(tiff.os, "fdopen", fdopen)


def _no_temp_files(folder):
    return [p for p in Path(folder).rglob("*") if p.name.endswith(".tmp")] == []


def test_full_disk_stops_batch_without_partial_output(tmp_path, weights, capsys, monkeypatch):
    import errno

    folder = tmp_path / "in"
    folder.mkdir()
    for n in ("a", "b", "c"):
        write_raw(folder / f"{n}.dng", CFA.bayer("RGGB"))
    _failing_fdopen(monkeypatch, "b.dng", OSError(errno.ENOSPC, "No space left on device"))
    rc = _cli(tmp_path, weights, folder, "-o", tmp_path / "o", "--noise", "1e-3,1e-5")
    assert rc == 1
    captured = capsys.readouterr()
    assert "1 denoised, 0 skipped, 1 failed, 1 not done (stopped after a full disk)" in captured.out
    assert "b.dng" in captured.err.splitlines()[-1] and "No space left on device" in captured.err.splitlines()[-1]
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.dng"], "no partial b.dng, c.dng not started"
    assert _no_temp_files(tmp_path / "o")


def test_ctrl_c_in_process_cleans_up(tmp_path, weights, capsys, monkeypatch):
    import os
    import signal

    folder = tmp_path / "in"
    folder.mkdir()
    for n in ("a", "b", "c"):
        write_raw(folder / f"{n}.dng", CFA.bayer("RGGB"))
    # a real SIGINT in the middle of writing b.dng (half of its bytes on disk)
    _failing_fdopen(monkeypatch, "b.dng", lambda: os.kill(os.getpid(), signal.SIGINT))
    before = signal.getsignal(signal.SIGINT)
    rc = _cli(tmp_path, weights, folder, "-o", tmp_path / "o", "--noise", "1e-3,1e-5")
    assert rc == 130
    assert signal.getsignal(signal.SIGINT) == before, "the CLI restores the SIGINT handler"
    captured = capsys.readouterr()
    assert "1 denoised" in captured.out and "2 not done (interrupted)" in captured.out
    assert "interrupted" in captured.err
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.dng"]
    assert _no_temp_files(tmp_path / "o")
    # the same command again finishes the batch, skipping what was done
    monkeypatch.undo()
    assert _cli(tmp_path, weights, folder, "-o", tmp_path / "o", "--noise", "1e-3,1e-5") == 0
    assert "2 denoised, 1 skipped" in capsys.readouterr().out


def test_jobs_2_same_bytes_as_jobs_1(tmp_path, weights, capsys):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for i, rel in enumerate(("a.dng", "b.dng", "sub/c.dng")):
        write_raw(folder / rel, CFA.bayer("GRBG"), shape=(96 + 8 * i, 128), seed=i)
    write_raw(folder / "big.dng", CFA.bayer("RGGB"), shape=(400, 520), seed=9)
    (folder / "broken.dng").write_bytes(b"II*\0" + b"\0" * 100)
    # --tile 64: several tiles per file, run in 2 parallel threads with
    # --jobs 1 and single-threaded in each of the 2 workers of --jobs 2
    common = ["--noise", "1e-3,1e-5", "--tile", "64"]
    rc1 = _cli(tmp_path, weights, folder, "-o", tmp_path / "o1", *common, "--threads", "2")
    rc2 = _cli(tmp_path, weights, folder, "-o", tmp_path / "o2", *common, "--jobs", "2")
    assert rc1 == rc2 == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("4 denoised") and out[1].startswith("4 denoised")
    files1 = sorted(p.relative_to(tmp_path / "o1") for p in (tmp_path / "o1").rglob("*.dng"))
    files2 = sorted(p.relative_to(tmp_path / "o2") for p in (tmp_path / "o2").rglob("*.dng"))
    assert files1 == files2 == [Path("a.dng"), Path("b.dng"), Path("big.dng"), Path("sub/c.dng")]
    for rel in files1:
        assert (tmp_path / "o1" / rel).read_bytes() == (tmp_path / "o2" / rel).read_bytes(), rel
    # a lone tile (default tile size) with 2 threads and with 1: same bytes
    for threads in ("1", "2"):
        assert _cli(tmp_path, weights, folder / "big.dng", "-o", tmp_path / f"t{threads}", "--noise", "1e-3,1e-5",
                    "--threads", threads) == 0
    assert (tmp_path / "t1" / "big.dng").read_bytes() == (tmp_path / "t2" / "big.dng").read_bytes()


def test_ctrl_c_with_worker_processes(tmp_path, weights):
    """SIGINT to the whole process group (what a terminal's Ctrl-C does)
    while two workers run: exit 130, finished outputs complete, no temp or
    partial files."""
    import os
    import signal
    import subprocess
    import sys
    import time

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(8):
        write_raw(folder / f"f{i}.dng", CFA.bayer("RGGB"), shape=(480, 640), seed=i)
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "kpnt.cli.denoise", str(folder), "-o", str(out), "--weights", str(weights["bayer"]),
           "--noise", "1e-3,1e-5", "--no-progress", "--devices", "cpu,cpu", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.exists() and any(out.glob("*.dng"))):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "not done (interrupted)" in stdout, stdout
    assert "Traceback" not in stderr, stderr
    assert _no_temp_files(out)
    done = sorted(out.glob("*.dng"))
    assert 1 <= len(done) < 8
    for f in done:
        with rawpy.imread(str(f)) as r:
            assert r.raw_type == rawpy.RawType.Stack and r.raw_image.shape[:2] == (480, 640)


def _pipeline_folder(tmp_path, n=5):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for i in range(n):
        write_raw(folder / ("sub" if i == 2 else "") / f"f{i}.dng", CFA.bayer("RGGB"), shape=(96 + 8 * i, 128), seed=i)
    return folder


def test_pipelined_same_bytes_order_and_failures(tmp_path, weights, capsys):
    folder = _pipeline_folder(tmp_path)
    (folder / "broken.dng").write_bytes(b"II*\0" + b"\0" * 100)
    (folder / "f9.nef").write_text("not a raw\n")
    runs = {}
    for name, extra in (("serial", ["--io-workers", "0"]), ("pipe", ["--io-workers", "3"]), ("pipe1", ["--io-workers", "1"])):
        order = []
        rc = denoise_main([str(folder), "-o", str(tmp_path / name), "--weights", str(weights["bayer"]), "--noise", "1e-3,1e-5",
                           "--tile", "64", "--no-progress", *extra], on_result=lambda r: order.append((r.src.name, r.status)))
        captured = capsys.readouterr()
        runs[name] = (rc, order, captured.out.splitlines()[-1].split(" -> ")[0], [l for l in captured.err.splitlines() if "error:" in l])
    assert runs["serial"][0] == runs["pipe"][0] == runs["pipe1"][0] == 1
    assert runs["serial"][1] == runs["pipe"][1] == runs["pipe1"][1], "results reported in the same (input) order"
    assert runs["serial"][2] == runs["pipe"][2] == runs["pipe1"][2]
    assert runs["pipe"][2].startswith("5 denoised, 0 skipped, 2 failed")
    # each failure: one line, as it happens (not repeated in the summary)
    for name in ("broken.dng", "f9.nef"):
        assert sum(name in l for l in runs["pipe"][3]) == 1, runs["pipe"][3]
    files = sorted(p.relative_to(tmp_path / "serial") for p in (tmp_path / "serial").rglob("*") if p.is_file())
    assert len(files) == 5
    for rel in files:
        ref = (tmp_path / "serial" / rel).read_bytes()
        assert (tmp_path / "pipe" / rel).read_bytes() == ref and (tmp_path / "pipe1" / rel).read_bytes() == ref, rel
    assert _no_temp_files(tmp_path / "pipe")


def test_pipelined_write_failure_is_per_file(tmp_path, weights, capsys, monkeypatch):
    """A write that fails (not a full disk) fails only its own file."""
    folder = _pipeline_folder(tmp_path, n=4)
    _failing_fdopen(monkeypatch, "f1.dng", OSError(5, "Input/output error"))
    rc = _cli(tmp_path, weights, folder, "-o", tmp_path / "o", "--noise", "1e-3,1e-5", "--io-workers", "2")
    assert rc == 1
    captured = capsys.readouterr()
    assert "3 denoised, 0 skipped, 1 failed" in captured.out
    assert "f1.dng" in captured.err.splitlines()[-1] and "Input/output error" in captured.err.splitlines()[-1]
    assert sorted(p.name for p in (tmp_path / "o").rglob("*.dng")) == ["f0.dng", "f2.dng", "f3.dng"]
    assert _no_temp_files(tmp_path / "o")


def test_pipelined_full_disk_stops_batch(tmp_path, weights, capsys, monkeypatch):
    import errno

    folder = _pipeline_folder(tmp_path, n=6)
    _failing_fdopen(monkeypatch, "f1.dng", OSError(errno.ENOSPC, "No space left on device"))
    rc = _cli(tmp_path, weights, folder, "-o", tmp_path / "o", "--noise", "1e-3,1e-5", "--io-workers", "1")
    assert rc == 1
    captured = capsys.readouterr()
    line = captured.out.splitlines()[-1]
    assert "1 failed" in line and "not done (stopped after a full disk)" in line, line
    assert "f1.dng" in captured.err.splitlines()[-1] and "No space left on device" in captured.err.splitlines()[-1]
    done = sorted(p.name for p in (tmp_path / "o").rglob("*.dng"))
    assert "f0.dng" in done and "f1.dng" not in done and len(done) < 5, done
    assert _no_temp_files(tmp_path / "o")
    for f in (tmp_path / "o").rglob("*.dng"):
        with rawpy.imread(str(f)) as r:
            assert r.raw_type == rawpy.RawType.Stack


def test_pipelined_ctrl_c_cleans_up(tmp_path, weights, capsys, monkeypatch):
    import os
    import signal

    import time

    import dataclasses

    from kpnt.batch.formats import FORMATS

    folder = _pipeline_folder(tmp_path, n=6)
    # a real SIGINT sent by the write thread as it starts writing f1.dng:
    # the main thread stops, the running write finishes
    real = FORMATS["dng"].write

    def write_output(path, *a, **k):
        if path.name == "f1.dng":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.3)
        return real(path, *a, **k)

    monkeypatch.setitem(FORMATS, "dng", dataclasses.replace(FORMATS["dng"], write=write_output))
    before = signal.getsignal(signal.SIGINT)
    rc = _cli(tmp_path, weights, folder, "-o", tmp_path / "o", "--noise", "1e-3,1e-5", "--io-workers", "2")
    assert rc == 130
    assert signal.getsignal(signal.SIGINT) == before
    captured = capsys.readouterr()
    assert "not done (interrupted)" in captured.out and "interrupted" in captured.err
    assert _no_temp_files(tmp_path / "o")
    done = sorted((tmp_path / "o").rglob("*.dng"))
    assert 1 <= len(done) < 6
    for f in done:                      # whatever exists is complete
        with rawpy.imread(str(f)) as r:
            assert r.raw_type == rawpy.RawType.Stack
    monkeypatch.undo()
    assert _cli(tmp_path, weights, folder, "-o", tmp_path / "o", "--noise", "1e-3,1e-5", "--io-workers", "2") == 0
    assert f"{6 - len(done)} denoised, {len(done)} skipped" in capsys.readouterr().out


def test_io_workers_arguments(tmp_path, weights, capsys):
    from kpnt.batch import default_io_workers

    src = write_raw(tmp_path / "a.dng", CFA.bayer("RGGB"))
    with pytest.raises(SystemExit) as exit_info:
        _cli(tmp_path, weights, src, "-o", tmp_path / "o", "--io-workers", "-1")
    assert exit_info.value.code == 2
    assert "--io-workers: must be >= 0" in capsys.readouterr().err
    assert _cli(tmp_path, weights, src, "-o", tmp_path / "o", "--io-workers", "2", "--jobs", "2") == 2
    assert "--jobs or --devices" in capsys.readouterr().err
    for bad, words in ((["--devices", "cpu,cpu", "--jobs", "2"], "--device or --jobs"), (["--device", "tpu"], "not a torch device"),
                       (["--decode-timeout", "0"], "--decode-timeout"), (["--decoder", "thread"], "invalid choice")):
        try:
            rc = _cli(tmp_path, weights, src, "-o", tmp_path / "o", *bad)
        except SystemExit as exit_info:      # argparse's own checks
            rc = exit_info.code
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and words in err[0], (bad, err)
    assert default_io_workers("cpu") == 0
    assert 1 <= default_io_workers("cuda:0") <= 8
