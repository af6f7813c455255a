"""The default weights shipped in the package."""
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from kpnt.cli.denoise import main as denoise_main
from kpnt.io.dng import write_cfa_dng
from kpnt.io.meta import RawMeta
from kpnt.mosaic import CFA
from kpnt.weights_io import load_weights

WEIGHTS = Path(str(resources.files("kpnt") / "weights"))


@pytest.mark.parametrize("sensor", ["bayer", "xtrans"])
def test_shipped_weights_small_fast_and_for_their_sensor(sensor):
    path = WEIGHTS / f"{sensor}.safetensors"
    # float32 weights, no optimiser state: the X-Trans file's 16 x 128 guide
    # (session 21) is 10.4 MB; a checkpoint with Adam's moments would be 3x.
    assert path.stat().st_size < 12 * 2**20
    t0 = time.perf_counter()
    model, meta = load_weights(path, sensor=sensor)
    assert time.perf_counter() - t0 < 1.0
    assert model.sensor == sensor and meta["provenance"]["steps"] > 0
    other = "xtrans" if sensor == "bayer" else "bayer"
    with pytest.raises(Exception, match=other):
        load_weights(path, sensor=other)


def test_denoise_picks_weights_by_cfa(tmp_path):
    rng = np.random.default_rng(0)
    for name, cfa in (("b.dng", CFA.bayer("GRBG")), ("x.dng", CFA.xtrans())):
        meta = RawMeta(black=np.full(3, 512.0), white=16383.0, wb=np.array([2.0, 1.0, 1.6]), xyz_to_cam=np.eye(3) + 0.1, make="Test", model="Cam", iso=1600)
        counts = (512 + 4000 + 300 * rng.standard_normal((96, 120))).astype(np.uint16)
        write_cfa_dng(tmp_path / name, counts, cfa, meta)
    assert denoise_main([str(tmp_path / "b.dng"), str(tmp_path / "x.dng"), "-o", str(tmp_path / "o"), "--noise", "1e-3,1e-6", "--no-progress"]) == 0
    assert (tmp_path / "o" / "b.dng").exists() and (tmp_path / "o" / "x.dng").exists()
