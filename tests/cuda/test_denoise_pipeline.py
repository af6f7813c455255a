"""kpnt-denoise on a GPU: the staged tile loop (device-side white balance
and uint16 conversion, pinned double-buffered staging) and the pipelined
CLI path.  Reference backend (no kernel build); marked ``cuda``."""
import numpy as np
import pytest
import torch

from kpnt.mosaic import CFA

pytestmark = pytest.mark.cuda


@pytest.fixture()
def td():
    """The shared denoise-test builders (tests/denoise_helpers.py).  They read
    and write DNGs through rawpy, a dependency of kpnt that a bare GPU test
    machine may lack: skipped there, not failed."""
    pytest.importorskip("rawpy")
    import denoise_helpers

    return denoise_helpers


@pytest.mark.parametrize("sensor,cfa,shape", [("bayer", CFA.bayer("GRBG"), (400, 520)), ("xtrans", CFA.xtrans(), (420, 504))])
def test_staged_on_gpu_matches_cpu(tmp_path, td, sensor, cfa, shape):
    from kpnt.denoise import NoiseChoice, denoise_raw
    from kpnt.io.raw import read_raw

    raw = read_raw(td.write_raw(tmp_path / "r.dng", cfa, shape=shape))
    model = td.random_model(sensor, scale=0.1)
    noise = NoiseChoice(np.array([[1e-3] * 3, [1e-5] * 3], np.float32), "given")
    for dtype, tol in ((np.uint16, 8), (np.float32, 1e-4)):
        ref = denoise_raw(model, raw, noise, tile=128, dtype=dtype, reproducible=True)
        timing, ticks = {}, []
        got = denoise_raw(model.to("cuda"), raw, noise, tile=128, device="cuda", dtype=dtype, timing=timing,
                          progress=ticks.append)
        model.to("cpu")
        assert got.dtype == ref.dtype and got.shape == ref.shape
        assert np.abs(got.astype(np.float64) - ref).max() <= tol, dtype
        assert timing["gpu"] > 0 and len(ticks) > 1


def test_pipelined_cli_on_gpu(tmp_path, td, capsys):
    from kpnt.cli.denoise import main
    from kpnt.model import KPNT
    from kpnt.weights_io import save_weights

    weights = tmp_path / "bayer.safetensors"
    save_weights(weights, KPNT("bayer"), CFA.bayer("RGGB"), {"data": "untrained test weights"})
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        td.write_raw(folder / f"f{i}.dng", CFA.bayer("RGGB"), shape=(300, 420), seed=i)
    (folder / "broken.dng").write_bytes(b"II*\0" + b"\0" * 100)
    outs = {}
    for name, workers in (("serial", "0"), ("pipe", "3")):
        res = []
        rc = main([str(folder), "-o", str(tmp_path / name), "--weights", str(weights), "--noise", "1e-3,1e-5", "--device", "cuda",
                   "--backend", "torch", "--tile", "128", "--no-progress", "--io-workers", workers], on_result=res.append)
        assert rc == 1
        assert [r.status for r in res] == ["failed"] + ["done"] * 6          # input order: broken.dng first
        assert all(r.seconds.get("gpu", 0) > 0 for r in res if r.status == "done")
        outs[name] = sorted((tmp_path / name).glob("*.dng"))
    assert [p.name for p in outs["serial"]] == [p.name for p in outs["pipe"]]
    import rawpy

    for a, b in zip(outs["serial"], outs["pipe"]):       # same GPU path: equal up to non-deterministic GPU sums
        with rawpy.imread(str(a)) as ra, rawpy.imread(str(b)) as rb:
            ia, ib = ra.raw_image.astype(np.int32), rb.raw_image.astype(np.int32)
        assert ia.shape == ib.shape and np.abs(ia - ib).max() <= 1, a.name
    assert "6 denoised" in capsys.readouterr().out
