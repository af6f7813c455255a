"""The trained noise range: recorded by kpnt-train, stored in the weights,
and the noise level inference hands the model clipped into it (issue 13)."""
import logging

import numpy as np
import pytest

from kpnt.noise.trained import clamp_to_trained_noise, trained_noise_range
from kpnt.model import KPNT
from kpnt.mosaic.cfa import CFA
from kpnt.train.synthesis import CameraModel, SynthConfig
from kpnt.weights_io import NOISE_RANGE_KEY, load_weights, save_weights

XYZ = np.array([[0.7, -0.1, -0.05], [-0.4, 1.2, 0.2], [-0.05, 0.1, 0.6]])


def test_range_covers_what_synthesis_draws():
    cams = [CameraModel("a", XYZ, np.array([[[1e-3, 2e-3, 3e-3], [1e-6, 2e-6, 4e-6]], [[5e-4] * 3, [5e-7] * 3]]))]
    cfg = SynthConfig()
    r = trained_noise_range(cams, cfg)
    gain = max(cfg.wb_red[1], cfg.wb_blue[1])
    assert r["a"][0] == 0 and r["b"][0] == 0                  # clean inputs are trained (zero_noise_prob > 0)
    assert r["a"][1] == pytest.approx(3e-3 * np.exp(cfg.noise_jitter) * gain, rel=1e-6)
    assert r["b"][1] == pytest.approx(4e-6 * np.exp(cfg.noise_jitter) * gain**2, rel=1e-6)
    no_clean = trained_noise_range(cams, SynthConfig(zero_noise_prob=0.0, low_noise_prob=0.0))
    assert no_clean["a"][0] == pytest.approx(5e-4 * np.exp(-cfg.noise_jitter), rel=1e-6)


def test_noise_level_is_clipped_into_the_trained_range(caplog):
    model = KPNT("bayer")
    model.noise_range = {"a": [1e-4, 1e-2], "b": [1e-8, 1e-4]}
    nz = np.array([[1e-6, 5e-3, 0.5], [0.0, 1e-6, 1.0]], dtype=np.float32)
    with caplog.at_level(logging.INFO, logger="kpnt.denoise"):
        out = clamp_to_trained_noise(model, nz, "x.dng")
    np.testing.assert_allclose(out, [[1e-4, 5e-3, 1e-2], [1e-8, 1e-6, 1e-4]], rtol=1e-6)
    assert "clipped into the trained range" in caplog.text
    inside = np.array([[1e-3] * 3, [1e-6] * 3], dtype=np.float32)
    assert clamp_to_trained_noise(model, inside) is inside or np.array_equal(clamp_to_trained_noise(model, inside), inside)
    model.noise_range = None
    np.testing.assert_array_equal(clamp_to_trained_noise(model, nz), nz)


def test_range_travels_with_the_weights(tmp_path):
    model = KPNT("xtrans")
    rng = {"a": [0.0, 0.05], "b": [0.0, 0.001]}
    save_weights(tmp_path / "w.safetensors", model, CFA.xtrans(), {NOISE_RANGE_KEY: rng})
    loaded, _ = load_weights(tmp_path / "w.safetensors", "xtrans")
    assert loaded.noise_range == rng
