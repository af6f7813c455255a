"""Batch reliability (issue 17 items 2, 3, 5; issue 16 item 6): a crashing
or hanging decoder costs one file, SIGTERM stops cleanly with no orphans,
stale temp files go, the output folder is checked up front, every failure
is printed once, non-finite or black results are never written."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from kpnt.batch.decoder import FAULT_ENV
from kpnt.cli.denoise import main as denoise_main
from kpnt.io.atomic import clean_stale_temp_files, remove_temp_files
from kpnt.io.dng import write_cfa_dng
from kpnt.io.meta import RawMeta
from kpnt.model import KPNT
from kpnt.mosaic import CFA
from kpnt.weights_io import save_weights

NOISE = ["--noise", "1e-3,1e-5"]
#: Seconds any test here may take before it fails (a hung batch must fail
#: CI, not stall it: each takes a few seconds).
HANG_LIMIT = 240


@pytest.fixture(autouse=True)
def fail_if_hung():
    """SIGALRM after HANG_LIMIT s raises in the test (the pool's coordinator
    loop and every wait here run in the main thread, where it lands)."""
    def hung(signum, frame):
        raise TimeoutError(f"test still running after {HANG_LIMIT} s: a batch hung")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(HANG_LIMIT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _raw(path, shape=(48, 64), seed=0):
    meta = RawMeta(black=np.full(3, 512.0), white=16383.0, wb=np.array([2.0, 1.0, 1.7]),
                   xyz_to_cam=np.array([[0.7, -0.1, -0.05], [-0.4, 1.2, 0.2], [-0.05, 0.1, 0.6]]),
                   make="Nikon", model="D750", iso=3200)
    rng = np.random.default_rng(seed)
    counts = np.rint(rng.uniform(0.2, 0.6, shape) * (16383 - 512) + 512).astype(np.uint16)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_cfa_dng(path, counts, CFA.bayer("RGGB"), meta)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "bayer.safetensors"
    save_weights(path, KPNT("bayer"), CFA.bayer("RGGB"), {"data": "untrained (test)"})
    return path


def _cli(weights, *args):
    return denoise_main([*map(str, args), "--weights", str(weights), "--no-progress", "--device", "cpu", *NOISE])


def _temp_files(folder):
    return [p for p in Path(folder).rglob("*") if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------
# issue 17 item 2: a decoder crash costs one file
# ----------------------------------------------------------------------
@pytest.mark.parametrize("mode", [[], ["--io-workers", "2"], ["--jobs", "2", "--threads", "1"]],
                         ids=["default", "io-workers", "jobs2"])
def test_decoder_crash_costs_one_file(tmp_path, weights, capsys, monkeypatch, mode):
    folder = tmp_path / "in"
    for i in range(20):
        _raw(folder / f"good{i:02d}.dng", seed=i)
    _raw(folder / "bad1.dng")
    _raw(folder / "bad2.dng")
    monkeypatch.setenv(FAULT_ENV, "segv:bad1.dng,bad2.dng")
    rc = _cli(weights, folder, "-o", tmp_path / "o", *mode)
    captured = capsys.readouterr()
    assert rc == 1
    assert "20 denoised, 0 skipped, 2 failed" in captured.out, captured.out
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [f"good{i:02d}.dng" for i in range(20)]
    errors = [line for line in captured.err.splitlines() if "error:" in line]
    for bad in ("bad1.dng", "bad2.dng"):
        lines = [line for line in errors if bad in line]
        assert len(lines) == 1, errors                      # printed once
        assert "decoder crashed (signal 11: SIGSEGV)" in lines[0], lines[0]
    assert len(errors) == 2, errors


def _same_meta(a, b) -> bool:
    """Field by field, arrays exactly (not through repr: numpy's print
    options are global and other tests' libraries change them)."""
    import dataclasses

    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        same = np.array_equal(x, y) if isinstance(x, np.ndarray) or isinstance(y, np.ndarray) else x == y
        assert same, (f.name, x, y)
    return True


def test_child_decoder_hands_over_the_same_raw(tmp_path):
    """The supervised decoder's shared-memory hand-over gives exactly what
    decoding in this process gives (arrays, CFA, metadata); the arrays are
    writable (hot-pixel repair edits the mosaic in place)."""
    from kpnt.batch.decoder import DecoderPool, decode_file

    path = _raw(tmp_path / "a.dng", shape=(60, 90), seed=3)
    pool = DecoderPool("child", 1, timeout=60)
    try:
        got = pool.decode(path)
        again = pool.decode(path)                   # the same child, a second file
    finally:
        pool.close()
    want = decode_file(path)
    for r in (got, again):
        assert np.array_equal(r.mosaic, want.mosaic) and r.mosaic.dtype == want.mosaic.dtype
        assert np.array_equal(r.saturated, want.saturated)
        assert r.cfa.kind == want.cfa.kind and np.array_equal(r.cfa.pattern, want.cfa.pattern)
        assert _same_meta(r.meta, want.meta) and r.raw is None
        r.mosaic[0, 0] = 0.5


@pytest.mark.parametrize("io_workers", [0, 2])
def test_callers_decoder_pool_serves_several_batches(tmp_path, weights, io_workers):
    """A pool started by the caller (as kpnt-denoise does before loading
    weights) serves batch after batch with the same child processes, is
    left running by each batch, started twice starts nothing new, and a
    child killed between batches is replaced for the next file."""
    from kpnt.batch import Settings, collect_inputs, plan_slots, plan_tasks, prepare_output_folder, run_batch, start_decoders

    folder = tmp_path / "in"
    for i in range(3):
        _raw(folder / f"f{i}.dng", seed=i)
    settings = Settings("dng", False, None, weights, None, (1e-3, 1e-5), "torch", False, "child")
    slots = plan_slots("cpu", threads=1)
    pool = start_decoders(settings, slots, io_workers)

    def pids():
        return [d.proc.pid for d in pool._all]

    def batch(out):
        prepare_output_folder(out)
        found, _ = collect_inputs([str(folder)], out=out)
        tasks, _ = plan_tasks(found, out, "dng", False)
        results = []
        run_batch(tasks, settings, slots, results.append, io_workers=io_workers, decoders=pool)
        return [r.status for r in results]

    try:
        assert len(pool._all) == max(1, io_workers)
        first = pids()
        pool.start()
        assert pids() == first
        assert batch(tmp_path / "a") == ["done"] * 3
        assert pids() == first and all(d.proc.poll() is None for d in pool._all)
        assert batch(tmp_path / "b") == ["done"] * 3
        assert pids() == first
        pool._all[0].proc.kill()
        pool._all[0].proc.wait()
        assert batch(tmp_path / "c") == ["done"] * 3
        for i in range(3):
            assert (tmp_path / "a" / f"f{i}.dng").read_bytes() == (tmp_path / "c" / f"f{i}.dng").read_bytes()
    finally:
        procs = [d.proc for d in pool._all]
        pool.close()
    assert all(p is None or p.poll() is not None for p in procs)


def test_pool_of_another_decoder_kind_is_refused():
    from kpnt.batch import FileProcessor, Settings
    from kpnt.batch.decoder import DecoderPool
    from kpnt.errors import KpntError

    with pytest.raises(KpntError, match="decodes inline, the settings ask for child"):
        FileProcessor(Settings(decoder="child"), "cpu", pool=DecoderPool("inline"))


def test_child_and_inline_decoding_same_bytes(tmp_path, weights, capsys):
    folder = tmp_path / "in"
    for i in range(3):
        _raw(folder / f"f{i}.dng", seed=i)
    for dec in ("child", "inline"):
        assert _cli(weights, folder, "-o", tmp_path / dec, "--decoder", dec, "--io-workers", "2") == 0
    for i in range(3):
        assert (tmp_path / "child" / f"f{i}.dng").read_bytes() == (tmp_path / "inline" / f"f{i}.dng").read_bytes()


def test_decoder_hang_times_out(tmp_path, weights, capsys, monkeypatch):
    folder = tmp_path / "in"
    _raw(folder / "a.dng")
    _raw(folder / "stuck.dng")
    monkeypatch.setenv(FAULT_ENV, "hang:stuck.dng")
    t0 = time.monotonic()
    rc = _cli(weights, folder, "-o", tmp_path / "o", "--decode-timeout", "2")
    assert time.monotonic() - t0 < 60
    captured = capsys.readouterr()
    assert rc == 1 and "1 denoised, 0 skipped, 1 failed" in captured.out
    assert "stuck.dng: decoder timed out after 2 s" in captured.err


def test_decoder_memory_blow_up_costs_one_file(tmp_path, weights, capsys, monkeypatch):
    folder = tmp_path / "in"
    _raw(folder / "a.dng")
    _raw(folder / "huge.dng")
    monkeypatch.setenv(FAULT_ENV, "alloc:huge.dng")
    rc = _cli(weights, folder, "-o", tmp_path / "o")
    captured = capsys.readouterr()
    assert rc == 1 and "1 denoised, 0 skipped, 1 failed" in captured.out
    assert "huge.dng: decoding needed more than the decoder's" in captured.err and "memory limit" in captured.err


def test_jobs_replaces_a_dead_worker(tmp_path, weights, capsys, monkeypatch):
    """With inline decoding a LibRaw crash kills the worker itself: the file
    it was decoding is named, a new worker takes the slot, the rest is done."""
    folder = tmp_path / "in"
    for i in range(4):
        _raw(folder / f"good{i}.dng", seed=i)
    _raw(folder / "bad1.dng")
    _raw(folder / "bad2.dng")
    monkeypatch.setenv(FAULT_ENV, "segv:bad1.dng,bad2.dng")
    rc = _cli(weights, folder, "-o", tmp_path / "o", "--jobs", "2", "--threads", "1", "--decoder", "inline")
    captured = capsys.readouterr()
    assert rc == 1
    assert "4 denoised, 0 skipped, 2 failed" in captured.out, captured.err
    for bad in ("bad1.dng", "bad2.dng"):
        assert any(bad in l and "worker process ended (signal 11: SIGSEGV) while decoding this file" in l
                   for l in captured.err.splitlines()), captured.err
    assert len(list((tmp_path / "o").iterdir())) == 4


# ----------------------------------------------------------------------
# issue 17 item 3: SIGTERM like SIGINT, no orphans, stale temp files
# ----------------------------------------------------------------------
def _group_gone(pgid, timeout=5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("mode", [[], ["--io-workers", "2"], ["--jobs", "2", "--threads", "1"]],
                         ids=["default", "io-workers", "jobs2"])
def test_sigterm_mid_batch(tmp_path, weights, mode):
    """SIGTERM to the batch process while a decoder hangs on one file:
    summary, exit 143, no temp file, and every process of the group
    (decoder children, workers) gone."""
    folder = tmp_path / "in"
    for name in ("a", "b", "c", "d"):
        _raw(folder / f"{name}.dng")
    out = tmp_path / "o"
    env = dict(os.environ, **{FAULT_ENV: "hang:c.dng"})
    cmd = [sys.executable, "-m", "kpnt.cli.denoise", str(folder), "-o", str(out), "--weights", str(weights),
           "--device", "cpu", "--no-progress", *NOISE, *mode]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("*.dng"))) < 2:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)            # to the batch process only, as `timeout` does
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "not done (terminated)" in stdout, stdout
    assert "terminated: no partial output" in stderr and "Traceback" not in stderr, stderr
    assert _group_gone(proc.pid), "a decoder or worker process outlived the batch"
    assert _temp_files(out) == []
    assert "c.dng" not in [p.name for p in out.iterdir()]


@pytest.mark.parametrize("mode", [[], ["--jobs", "2", "--threads", "1"]], ids=["default", "jobs2"])
def test_sigkill_leaves_no_orphans(tmp_path, weights, mode):
    """SIGKILL to the batch process alone (no clean-up possible there): its
    decoder children and workers notice and exit; a re-run finishes."""
    folder = tmp_path / "in"
    for name in ("a", "b", "c", "d"):
        _raw(folder / f"{name}.dng")
    out = tmp_path / "o"
    env = dict(os.environ, **{FAULT_ENV: "hang:c.dng"})
    cmd = [sys.executable, "-m", "kpnt.cli.denoise", str(folder), "-o", str(out), "--weights", str(weights),
           "--device", "cpu", "--no-progress", *NOISE, *mode]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("*.dng"))) < 2:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.kill()
    proc.wait(30)
    assert _group_gone(proc.pid), "a decoder or worker process outlived the killed batch"
    assert _cli(weights, folder, "-o", out, "--decode-timeout", "60") == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.dng", "b.dng", "c.dng", "d.dng"]
    assert _temp_files(out) == []


def test_second_signal_during_the_clean_up_is_ignored(tmp_path, weights, capsys, monkeypatch):
    """Ctrl-C twice (or SIGTERM then Ctrl-C) while a file is written: one
    clean stop, the first signal's exit code, no traceback."""
    import dataclasses

    from kpnt.batch.formats import FORMATS

    folder = tmp_path / "in"
    for n in ("a", "b", "c"):
        _raw(folder / f"{n}.dng")
    real = FORMATS["dng"].write

    def write(path, *a, **k):
        if path.name == "b.dng":
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
        return real(path, *a, **k)

    monkeypatch.setitem(FORMATS, "dng", dataclasses.replace(FORMATS["dng"], write=write))
    before = signal.getsignal(signal.SIGTERM)
    rc = _cli(weights, folder, "-o", tmp_path / "o")
    captured = capsys.readouterr()
    assert rc == 143 and "not done (terminated)" in captured.out, captured
    assert "Traceback" not in captured.err and captured.err.count("terminated: no partial output") == 1
    assert signal.getsignal(signal.SIGTERM) == before
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.dng"]


def test_sigkill_leaves_temp_files_that_the_next_run_removes(tmp_path, weights, capsys):
    folder = tmp_path / "in"
    _raw(folder / "a.dng")
    out = tmp_path / "o"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = [out / f".a.dng.{int(dead.stdout)}-0badcafe.tmp", out / ".a.dng.q1w2e3r4.tmp"]   # pid gone; old naming
    live = out / ".a.dng.1-0000beef.tmp"                                                       # pid 1 is alive
    for p in (*stale, live):
        p.write_bytes(b"partial")
    assert _cli(weights, folder, "-o", out) == 0
    assert "removed 2 temp file(s) left by an interrupted earlier run" in capsys.readouterr().err
    assert [p.exists() for p in stale] == [False, False] and live.exists()
    assert (out / "a.dng").exists()


def test_temp_file_helpers(tmp_path):
    target = tmp_path / "x.dng"
    mine = tmp_path / f".x.dng.{os.getpid()}-00000000.tmp"
    other = tmp_path / ".x.dng.1-00000000.tmp"
    unrelated = tmp_path / ".y.dng.999999999-0.tmp"
    for p in (mine, other, unrelated):
        p.write_bytes(b"")
    remove_temp_files(target)
    assert not mine.exists() and other.exists() and unrelated.exists()
    assert clean_stale_temp_files([target]) == []          # pid 1 is alive


# ----------------------------------------------------------------------
# issue 17 item 5: the output location
# ----------------------------------------------------------------------
def test_output_location_checked_before_any_work(tmp_path, weights, capsys):
    src = _raw(tmp_path / "in" / "a.dng")
    afile = tmp_path / "afile"
    afile.write_text("x")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "missing")
    for out, expect in ((afile, "exists and is not a folder"), (dangling, "symbolic link to a missing target"),
                        (Path("/dev/full"), "exists and is not a folder")):
        assert _cli(weights, src, "-o", out) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expect in err[0], err


def test_read_only_output_is_fatal(tmp_path, weights, capsys, monkeypatch):
    import errno

    folder = tmp_path / "in"
    for n in ("a", "b", "c"):
        _raw(folder / f"{n}.dng")
    real = os.open

    def ro_open(path, flags, *a, **k):
        if str(path).endswith(".tmp") and Path(path).name.startswith(".b.dng."):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", ro_open)
    rc = _cli(weights, folder, "-o", tmp_path / "o")
    out = capsys.readouterr().out
    assert rc == 1 and "1 denoised, 0 skipped, 1 failed, 1 not done (stopped after a read-only file system)" in out, out


def test_output_inside_input_folder_is_not_searched(tmp_path, weights, capsys):
    folder = tmp_path / "in"
    _raw(folder / "a.dng")
    _raw(folder / "sub" / "b.dng")
    for _ in range(2):
        assert _cli(weights, folder, "-o", folder / "denoised") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("2 denoised, 0 skipped, 0 failed")
    assert out[1].startswith("0 denoised, 2 skipped (output exists; --force to redo), 0 failed")
    assert sorted(p.relative_to(folder / "denoised") for p in (folder / "denoised").rglob("*.dng")) == [Path("a.dng"), Path("sub/b.dng")]


def test_folder_in_place_of_output_dangling_links_and_dng_folders(tmp_path, weights, capsys):
    folder = tmp_path / "in"
    _raw(folder / "a.dng")
    _raw(folder / "b.dng")
    (folder / "gone.nef").symlink_to(tmp_path / "nowhere.nef")
    (folder / "bundle.dng").mkdir()
    _raw(folder / "bundle.dng" / "c.dng")
    (tmp_path / "o" / "b.dng").mkdir(parents=True)          # a folder where b's output goes
    rc = _cli(weights, folder, "-o", tmp_path / "o")
    captured = capsys.readouterr()
    assert rc == 1
    assert "2 denoised, 0 skipped, 2 failed" in captured.out
    err = captured.err
    assert "gone.nef: symbolic link to a missing file" in err
    assert "a folder is in the way of its output" in err and "b.dng" in err
    assert "bundle.dng: a folder named like a raw file" in err
    assert (tmp_path / "o" / "bundle.dng" / "c.dng").is_file()


# ----------------------------------------------------------------------
# messages (issue 16 item 6, issue 17 minor points)
# ----------------------------------------------------------------------
def test_no_raws_found_exits_1(tmp_path, weights, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert _cli(weights, tmp_path / "empty", "-o", tmp_path / "o") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no raw files found" in err[0]


def test_bad_weights_reported_once_up_front(tmp_path, capsys):
    folder = tmp_path / "in"
    for n in ("a", "b", "c"):
        _raw(folder / f"{n}.dng")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not weights")
    rc = denoise_main([str(folder), "-o", str(tmp_path / "o"), "--weights", str(bad), "--no-progress", "--device", "cpu"])
    captured = capsys.readouterr()
    assert rc == 1 and captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and "bad.safetensors" in captured.err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_verbose_on_cpu_does_not_mention_the_cuda_allocator(tmp_path, weights, capsys, caplog, monkeypatch):
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    src = _raw(tmp_path / "a.dng")
    with caplog.at_level("DEBUG", logger="kpnt"):
        assert _cli(weights, src, "-o", tmp_path / "o", "--verbose") == 0
    assert "PYTORCH_CUDA_ALLOC_CONF" not in capsys.readouterr().err + caplog.text
    assert "PYTORCH_CUDA_ALLOC_CONF" not in os.environ


# ----------------------------------------------------------------------
# issue 17 item 1, the batch side: nothing non-finite or black is written
# ----------------------------------------------------------------------
@pytest.mark.parametrize("fault,expect", [("nan", "NaN or inf"), ("zero", "black everywhere")])
def test_non_finite_or_black_output_fails_the_file(tmp_path, weights, capsys, monkeypatch, fault, expect):
    real = KPNT.forward

    def broken(self, *a, **k):
        out = real(self, *a, **k)
        return out * float("nan") if fault == "nan" else out * 0

    monkeypatch.setattr(KPNT, "forward", broken)
    src = _raw(tmp_path / "a.dng")
    for fmt in ("dng", "exr"):
        rc = _cli(weights, src, "-o", tmp_path / fmt, "--format", fmt)
        captured = capsys.readouterr()
        assert rc == 1 and "0 denoised, 0 skipped, 1 failed" in captured.out
        lines = [l for l in captured.err.splitlines() if "error:" in l]
        assert len(lines) == 1 and expect in lines[0] and "a.dng" in lines[0], lines
        assert list((tmp_path / fmt).iterdir()) == []


def test_own_output_as_input_is_named_correctly(tmp_path, weights, capsys):
    src = _raw(tmp_path / "in" / "a.dng")
    assert _cli(weights, src, "-o", tmp_path / "o") == 0
    assert _cli(weights, tmp_path / "o" / "a.dng", "-o", tmp_path / "o2") == 1
    err = [l for l in capsys.readouterr().err.splitlines() if "error:" in l]
    assert len(err) == 1 and "LinearRaw DNG such as kpnt's own output" in err[0] and "samples per pixel" not in err[0], err


def test_atomic_file_renames_on_success_and_removes_on_error(tmp_path):
    from kpnt.io.atomic import OutputPathError, atomic_file

    target = tmp_path / "x.bin"
    with atomic_file(target) as fh:
        fh.write(b"abc")
        assert not target.exists() and len(_temp_files(tmp_path)) == 1    # nothing under the name until done
    assert target.read_bytes() == b"abc" and _temp_files(tmp_path) == []
    with pytest.raises(RuntimeError):
        with atomic_file(target) as fh:
            fh.write(b"partial")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"abc" and _temp_files(tmp_path) == []
    with pytest.raises(OutputPathError, match="already exists"):
        with atomic_file(target, overwrite=False):
            pass
