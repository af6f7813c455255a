"""CPU inference precision (issue 16 item 7): bf16 MLP products stay within
a few 1e-3 of fp32 on the shipped model, the setting is scoped, and the
training path (autograd on) never sees it."""
import numpy as np
import pytest
import torch

from kpnt.denoise import NoiseChoice, denoise_raw
from kpnt.io import RawMeta
from kpnt.io.raw import RawImage
from kpnt.mosaic import CFA
from kpnt.ref import mlp as M
from kpnt.weights_io import load_weights, shipped_weights

WB = np.array([2.0, 1.0, 1.6])


def _raw(seed=0, h=80, w=96):
    cfa = CFA.bayer("GRBG")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([0.2 + 0.1 * np.sin(xx / 5), 0.3 + 0.1 * np.cos(yy / 7), 0.25 + 0.05 * np.sin((xx + yy) / 3)], -1) / WB
    x = np.take_along_axis(rgb, cfa.colour_map(h, w)[..., None], 2)[..., 0]
    x = (x + rng.normal(0, 1, x.shape) * np.sqrt(1e-3 * x + 4e-6)).astype(np.float32)
    meta = RawMeta(black=[0] * 3, white=16383, wb=WB, xyz_to_cam=np.eye(3) + 0.1)
    return RawImage(path="synthetic", raw=None, mosaic=x, saturated=np.zeros_like(x, bool), cfa=cfa, meta=meta)


def test_bf16_close_to_fp32_and_scoped():
    model, _ = load_weights(shipped_weights("bayer"), sensor="bayer", device="cpu")
    model.eval()
    noise = NoiseChoice(np.array([[1e-3] * 3, [4e-6] * 3], dtype=np.float32), "given")
    a = denoise_raw(model, _raw(), noise, tile=0)
    b = denoise_raw(model, _raw(), noise, tile=0, cpu_precision="bf16")
    diff = np.abs(a - b)[4:-4, 4:-4]
    assert 0 < diff.max() < 1e-2, diff.max()                 # it did run in bf16, and stays close
    assert 10 * np.log10(1 / np.mean(diff ** 2)) > 60         # PSNR of bf16 against fp32 (peak 1)
    assert M._MATMUL_DTYPE is None                            # restored after the call
    assert np.array_equal(a, denoise_raw(model, _raw(), noise, tile=0))


def test_training_path_unaffected():
    gen = torch.Generator().manual_seed(0)      # fixed draws: the bf16 tolerance below is for values of this size
    w = [torch.randn(16, 8, generator=gen).requires_grad_(), torch.randn(4, 16, generator=gen).requires_grad_()]
    x = torch.randn(32, 8, generator=gen)
    with M.cpu_matmul_precision("bf16"):
        y = M.mlp(x, w, 0.01)                 # autograd path: float32 throughout
        y.sum().backward()
        assert y.dtype == torch.float32 and w[0].grad is not None
        with torch.no_grad():
            z = M.mlp_columns(x.t(), w, 0.01)
        assert z.dtype == torch.float32 and torch.allclose(z.t(), y, rtol=0.05, atol=0.05)
        assert not torch.equal(z.t(), y)      # the columns path did use bf16


def test_auto_and_bad_values():
    with M.cpu_matmul_precision("auto") as chosen:
        assert chosen == ("bf16" if M.cpu_has_native_bf16() else "fp32")
    with pytest.raises(ValueError, match="CPU precision must be one of"):
        M.set_cpu_matmul_dtype("fp16")
