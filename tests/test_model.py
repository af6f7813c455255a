"""KPNT: shapes, input checks, determinism, symmetry, untrained quality."""
import math

import pytest
import torch
import torch.nn.functional as F

from kpnt.model import KPNT, ModelConfig
from kpnt.mosaic.cfa import CFA


@pytest.fixture(autouse=True)
def _one_thread():
    """Small graphs: one thread avoids OpenMP spin-waits on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _noise(n=1, a=1e-3, b=1e-5, dtype=torch.float32):
    return torch.tensor([[[a] * 3, [b] * 3]] * n, dtype=dtype)


@pytest.mark.parametrize(
    "sensor,cfa,shape",
    [("bayer", CFA.bayer("GBRG"), (2, 1, 33, 45)), ("bayer", CFA.bayer("RGGB"), (1, 1, 4, 4)),
     ("xtrans", CFA.xtrans(4, 1), (1, 1, 37, 50)), ("xtrans", CFA.xtrans(), (1, 1, 12, 12)),
     ("rgb", None, (2, 3, 19, 21)), ("rgb", None, (1, 3, 2, 3))],
)
def test_output_shape_any_size(sensor, cfa, shape):
    model = KPNT(sensor)
    x = torch.rand(shape)
    out = model(x, cfa, _noise(shape[0]))
    assert out.shape == (shape[0], 3) + shape[2:]
    assert torch.isfinite(out).all()


def test_weight_sets_per_sensor():
    names = {s: list(KPNT(s).weight_sets()) for s in ("bayer", "xtrans", "rgb")}
    assert names == {
        "bayer": ["colour", "front.green", "front.red/blue"],
        "xtrans": ["colour", "front.corner green", "front.centre green", "front.side red/blue"],
        "rgb": ["colour"],
    }
    ws = KPNT("bayer").weight_sets()
    assert [tuple(w.shape) for w in ws["colour"]] == [(64, 32)] + [(64, 64)] * 5 + [(16, 64)]
    assert [tuple(w.shape) for w in ws["front.green"]] == [(64, 32)] + [(64, 64)] * 3 + [(32, 64)]
    n_params = sum(p.numel() for p in KPNT("bayer").parameters())
    assert n_params == sum(w.numel() for mats in ws.values() for w in mats)


def test_input_errors():
    bayer = KPNT("bayer")
    x = torch.rand(1, 1, 24, 24)
    with pytest.raises(ValueError, match="for bayer mosaics, the CFA is xtrans"):
        bayer(x, CFA.xtrans(), _noise())
    with pytest.raises(ValueError, match="pass the CFA"):
        bayer(x, None, _noise())
    with pytest.raises(ValueError, match="noise"):
        bayer(x, CFA.bayer(), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=">= 4"):
        bayer(torch.rand(1, 1, 3, 24), CFA.bayer(), _noise())
    with pytest.raises(ValueError, match="for rgb input"):
        KPNT("rgb")(torch.rand(1, 3, 8, 8), CFA.bayer(), _noise())
    with pytest.raises(ValueError, match="sensor"):
        KPNT("foveon")
    with pytest.raises(ValueError, match="multiple of 16"):
        ModelConfig(width=40)
    with pytest.raises(ValueError, match="backend"):
        KPNT("rgb", backend="metal")


def test_deterministic_and_reproducible_init():
    a, b = KPNT("xtrans"), KPNT("xtrans")
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    x = torch.rand(2, 1, 30, 36)
    cfa = CFA.xtrans(2, 2)
    assert torch.equal(a(x, cfa, _noise(2)), a(x, cfa, _noise(2)))
    assert torch.equal(a(x, cfa, _noise(2)), b(x, cfa, _noise(2)))


def test_batch_items_are_independent():
    model = KPNT("bayer")
    x = torch.rand(2, 1, 20, 28)
    noise = torch.cat([_noise(1), _noise(1, a=4e-3)])
    both = model(x, CFA.bayer("BGGR"), noise)
    one = model(x[1:], CFA.bayer("BGGR"), noise[1:])
    torch.testing.assert_close(both[1:], one, rtol=1e-5, atol=1e-6)


def test_config_json_round_trip_and_plain_mode():
    cfg = ModelConfig(apply_mode="plain", levels=3, width=32, hidden_layers=2, noise_input=False)
    assert ModelConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_json({"width": 64, "depth": 3})
    model = KPNT("bayer", cfg)
    x = torch.rand(1, 1, 16, 16)
    out = model(x, CFA.bayer(), _noise())
    assert out.shape == (1, 3, 16, 16) and torch.isfinite(out).all()


def _scene(H, W, seed=0):
    """A smooth scene with edges: gradients, a few discs and stripes (RGB in [0.02, 0.8])."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    img = torch.stack([0.2 + 0.3 * xx, 0.3 + 0.2 * yy, 0.25 + 0.1 * (xx + yy)])
    for _ in range(6):
        cy, cx, r = torch.rand(3, generator=g)
        col = 0.05 + 0.7 * torch.rand(3, 1, 1, generator=g)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < (0.05 + 0.2 * r) ** 2).float()
        img = img * (1 - mask) + col * mask
    img = img + 0.1 * torch.sin(40 * xx)[None] * (yy > 0.7).float()
    return img.clamp(0.02, 0.8)[None]


def _psnr(a, b):
    return -10 * math.log10(float(((a - b) ** 2)[..., 6:-6, 6:-6].mean()))


def _bilinear_demosaic(mosaic, cfa):
    H, W = mosaic.shape[-2:]
    cmap = torch.from_numpy(cfa.colour_map(H, W))
    k = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]])[None, None]
    out = []
    for c in range(3):
        mask = (cmap == c).float()[None, None]
        num = F.conv2d(F.pad(mosaic * mask, (1, 1, 1, 1), mode="reflect"), k)
        den = F.conv2d(F.pad(mask, (1, 1, 1, 1), mode="reflect"), k)
        out.append(num / den)
    return torch.cat(out, 1)


def test_untrained_model_beats_bilinear_demosaicing():
    """Before training the model already demosaics and mildly denoises: on a
    synthetic scene it beats bilinear demosaicing, clean and noisy."""
    cfa = CFA.bayer("RGGB")
    truth = _scene(96, 96)
    mosaic = truth.gather(1, torch.from_numpy(cfa.colour_map(96, 96)).expand(1, 1, 96, 96))
    a, b = 2e-3, 2e-5
    noisy = mosaic + torch.randn(mosaic.shape, generator=torch.Generator().manual_seed(1)) * (a * mosaic + b).sqrt()
    model = KPNT("bayer")
    with torch.no_grad():
        clean = model(mosaic, cfa, _noise(a=1e-6, b=1e-8))
        out = model(noisy, cfa, _noise(a=a, b=b))
    assert _psnr(clean, truth) > _psnr(_bilinear_demosaic(mosaic, cfa), truth) + 0.2
    assert _psnr(out, truth) > _psnr(_bilinear_demosaic(noisy, cfa), truth) + 0.2


@pytest.mark.parametrize("sensor,cfa,size,shift", [("bayer", CFA.bayer("GRBG"), 400, 32), ("xtrans", CFA.xtrans(1, 2), 528, 48)])
def test_translation_by_whole_pyramid_periods(sensor, cfa, size, shift):
    """Cropping ``block * 2^levels`` photosites (a whole CFA period too) off
    the top-left shifts the output exactly, away from the borders: the pyramid
    grids, the CFA phase and the front indexing all stay aligned.  (The
    front's own transpose/mirror equivariance is in tests/ref/test_front.py.)"""
    model = KPNT(sensor)
    x = torch.rand(1, 1, size, size, generator=torch.Generator().manual_seed(3))
    noise = _noise()
    with torch.no_grad():
        full = model(x, cfa, noise)
        moved = model(x[..., shift:, shift:], cfa.crop(shift, shift), noise)
    c = size // 2
    torch.testing.assert_close(moved[..., c - shift - 8:c - shift + 8, c - shift - 8:c - shift + 8],
                               full[..., c - 8:c + 8, c - 8:c + 8], rtol=1e-5, atol=1e-6)
    # not vacuous: a shift by one photosite-period only does not align the pyramid
    with torch.no_grad():
        off = model(x[..., cfa.period:, cfa.period:], cfa, noise)
    p = cfa.period
    assert (off[..., c - p - 8:c - p + 8, c - p - 8:c - p + 8] - full[..., c - 8:c + 8, c - 8:c + 8]).abs().max() > 1e-4


def test_inference_mode_first_then_training():
    """Index caches filled under inference_mode must not break a later
    backward pass (inference tensors cannot be saved for backward)."""
    from kpnt.ref import pyramid

    pyramid.detail_noise_gain.cache_clear()
    model = KPNT("xtrans")
    x = torch.rand(1, 1, 25, 31)                    # a size no other test uses: fresh cache entries
    cfa = CFA.xtrans(5, 0)
    with torch.inference_mode():
        ref = model(x, cfa, _noise())
    out = model(x, cfa, _noise())
    out.sum().backward()
    torch.testing.assert_close(out.detach(), ref)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p.abs().sum() > 0)
