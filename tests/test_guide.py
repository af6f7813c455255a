"""The guide (kpnt.ref.guide.py): identity at initialisation, phase
consistency, reach, gradients, and the tile margin that covers it."""
import numpy as np
import pytest
import torch

from kpnt.errors import ConfigError
from kpnt.model import KPNT, ModelConfig
from kpnt.mosaic.cfa import CFA
from kpnt.ref.guide import block_means, guide_radius, guide_residual, init_guide, reference_shift
from kpnt.testing import central_difference

NOISE = torch.tensor([[[2e-3, 1e-3, 3e-3], [2e-5, 1e-5, 3e-5]]])


def _random_guide(period, width=8, layers=3, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    w = init_guide(period, width, layers, gen)
    w[-2] = 0.3 * torch.randn(w[-2].shape, generator=gen)        # a trained guide's last layer is not zero
    w[-1] = 0.01 * torch.randn(w[-1].shape, generator=gen)
    return [t.to(dtype) for t in w]


@pytest.mark.parametrize("sensor,cfa", [("bayer", CFA.bayer("GBRG")), ("xtrans", CFA.xtrans(2, 5))])
def test_untrained_guide_leaves_the_model_unchanged(sensor, cfa):
    x = 0.05 + 0.4 * torch.rand(1, 1, 48, 54, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        plain = KPNT(sensor, ModelConfig())(x, cfa, NOISE)
        guided = KPNT(sensor, ModelConfig(guide_layers=2, guide_width=16))(x, cfa, NOISE)
    assert torch.equal(plain, guided)


def test_trained_guide_changes_the_output():
    cfa = CFA.bayer("RGGB")
    model = KPNT("bayer", ModelConfig(guide_layers=2, guide_width=16))
    x = 0.05 + 0.4 * torch.rand(1, 1, 40, 40, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        before = model(x, cfa, NOISE)
        model.sets["guide"][-1].add_(0.05)
        after = model(x, cfa, NOISE)
    assert (after - before).abs().max() > 1e-3


@pytest.mark.parametrize("ref,shift", [(CFA.bayer("RGGB"), (1, 1)), (CFA.bayer("RGGB"), (0, 1)), (CFA.xtrans(), (5, 4)), (CFA.xtrans(), (4, 5))])
def test_the_same_photosites_get_the_same_correction_in_any_crop(ref, shift):
    """The guide packs the mosaic in the reference phase, so a crop (another
    CFA phase) sees each photosite through the same packed channel: away
    from the borders (the convolutions' zero padding) the corrections agree.
    X-Trans repeats itself shifted by (3, 3), so a crop's pattern cannot say
    which of two packing grids the whole image used: the shifts here are
    ones where the first reference phase found is the image's own; for the
    others the guide packs half a repeat apart, statistically equivalent
    (random phases in training) but not the same numbers."""
    P, layers = ref.period, 3
    gen = torch.Generator().manual_seed(5)
    H, W = 20 * P, 20 * P
    x = 0.05 + 0.4 * torch.rand(1, 1, H, W, generator=gen)
    U = 0.05 + 0.4 * torch.rand(1, 3, H, W, generator=gen)
    w = _random_guide(P, layers=layers)
    full = guide_residual(x, U, NOISE, ref, w)
    dy, dx = shift
    crop_cfa = ref.crop(dy, dx)
    assert crop_cfa.name != ref.name or P == 6
    part = guide_residual(x[..., dy:, dx:], U[..., dy:, dx:], NOISE, crop_cfa, w)
    m = guide_radius(P, layers) + P
    inner_full = full[..., dy + m:H - m, dx + m:W - m]
    inner_part = part[..., m:H - dy - m, m:W - dx - m]
    # The brightness normalisation averages U over whole repeats, which a
    # crop groups differently; with U constant per repeat it would be exact.
    # Here we only require the packed-channel identity: same photosite, same
    # role, so the correction changes far less than its own size.
    assert (inner_full - inner_part).abs().mean() < 0.3 * inner_full.abs().mean()


def test_phase_exact_when_the_smooth_estimate_is_constant_per_repeat():
    ref, P, layers = CFA.bayer("RGGB"), 2, 3
    gen = torch.Generator().manual_seed(6)
    H = W = 40
    x = 0.05 + 0.4 * torch.rand(1, 1, H, W, generator=gen)
    U = torch.full((1, 3, H, W), 0.3)
    w = _random_guide(P, layers=layers)
    full = guide_residual(x, U, NOISE, ref, w)
    part = guide_residual(x[..., 2:, 2:], U[..., 2:, 2:], NOISE, ref.crop(2, 2), w)    # same phase, shifted by a repeat
    m = guide_radius(P, layers) + P
    torch.testing.assert_close(full[..., 2 + m:H - m, 2 + m:W - m], part[..., m:H - 2 - m, m:W - 2 - m])


def test_reach_is_bounded_by_guide_radius():
    cfa, P, layers = CFA.xtrans(), 6, 2
    gen = torch.Generator().manual_seed(7)
    H = W = 96
    x = 0.05 + 0.4 * torch.rand(1, 1, H, W, generator=gen)
    U = torch.full((1, 3, H, W), 0.3)
    w = _random_guide(P, layers=layers)
    base = guide_residual(x, U, NOISE, cfa, w)
    x2 = x.clone()
    x2[..., 48, 50] += 0.2
    changed = (guide_residual(x2, U, NOISE, cfa, w) - base).abs().sum((0, 1)) > 0
    ys, xs = torch.nonzero(changed, as_tuple=True)
    assert len(ys) > 0
    reach = max((ys - 48).abs().max(), (xs - 50).abs().max())
    assert reach <= guide_radius(P, layers)


def test_tile_margin_covers_the_guide():
    from kpnt.denoise import receptive_radius

    small = KPNT("xtrans", ModelConfig())
    big = KPNT("xtrans", ModelConfig(guide_layers=12, guide_width=8))
    cfa = CFA.xtrans()
    assert receptive_radius(big, cfa) - receptive_radius(small, cfa) == guide_radius(6, 12)


def test_guide_gradients_match_finite_differences():
    torch.manual_seed(0)
    cfa = CFA.bayer("GRBG")
    model = KPNT("bayer", ModelConfig(guide_layers=2, guide_width=8)).double()
    with torch.no_grad():
        model.sets["guide"][-2].add_(0.1 * torch.randn(model.sets["guide"][-2].shape, dtype=torch.float64))
    gen = torch.Generator().manual_seed(1)
    x = 0.05 + 0.5 * torch.rand(1, 1, 24, 24, generator=gen, dtype=torch.float64)
    noise = NOISE.double()
    target = torch.rand(1, 3, 24, 24, generator=gen, dtype=torch.float64)

    def loss():
        o = model(x, cfa, noise)
        return ((o - target).abs() / (o.abs() + target.abs() + 1e-3)).mean()

    loss().backward()
    for layer in (0, 2, 4, 5):
        w = model.sets["guide"][layer]
        i = int(w.grad.abs().flatten().argmax())
        fd = central_difference(lambda: loss().item(), w, i, 1e-6)
        assert abs(fd - w.grad.flatten()[i].item()) <= 1e-5 * max(1.0, abs(fd)) + 1e-9, (layer, fd)


def test_zero_noise_gives_finite_gradients():
    """Clean training inputs (a = b = 0): the noise feature must not pass
    sqrt's infinite slope at 0 back to the weights."""
    model = KPNT("bayer", ModelConfig(guide_layers=2, guide_width=8))
    x = 0.05 + 0.4 * torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    model(x, CFA.bayer("RGGB"), torch.zeros(1, 2, 3)).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_reference_shift_finds_the_reference_phase():
    assert reference_shift(CFA.bayer("RGGB")) == (0, 0)
    assert reference_shift(CFA.bayer("BGGR")) == (1, 1)
    sy, sx = reference_shift(CFA.xtrans(2, 5))
    assert CFA.xtrans(2, 5).crop(sy, sx) == CFA.xtrans()
    # flips and transposes of X-Trans are phases of it too (mosaic/front_layout)
    sy, sx = reference_shift(CFA.xtrans().transpose())
    assert CFA.xtrans().transpose().crop(sy, sx) == CFA.xtrans()


def test_cpu_bf16_mode_runs_the_guide_in_bf16_close_to_fp32():
    """--cpu-precision bf16 (native-bf16 CPUs) also runs the guide's
    convolutions in bf16: a different rounding (so the path is taken), and
    a correction within bf16's ~3 significant digits of the fp32 one."""
    from kpnt.ref.mlp import cpu_matmul_precision

    cfa = CFA.bayer("RGGB")
    gen = torch.Generator().manual_seed(8)
    x = 0.05 + 0.4 * torch.rand(1, 1, 40, 40, generator=gen)
    U = 0.05 + 0.4 * torch.rand(1, 3, 40, 40, generator=gen)
    w = _random_guide(2, layers=3)
    with torch.no_grad():
        r32 = guide_residual(x, U, NOISE, cfa, w)
        with cpu_matmul_precision("bf16"):
            r16 = guide_residual(x, U, NOISE, cfa, w)
    assert not torch.equal(r16, r32)
    assert (r16 - r32).abs().max() < 0.02 * r32.abs().max()


def test_residual_guide_keeps_its_scale_at_depth():
    """guide_skip: residual layers initialised at 1/sqrt(layers) of He's
    scale keep the hidden activations' scale within a small factor at depth
    24, where the same stack without the down-scaling grows by ~2^24 (the
    reason the scaling exists: a deep guide must train from its start)."""
    from kpnt.ref.guide import _network

    gen = torch.Generator().manual_seed(3)
    P, layers = 2, 24
    w = init_guide(P, 32, layers, gen, skip=True)
    w[-2] = torch.zeros(32, 32, 1, 1)
    w[-2][:, :, 0, 0] = torch.eye(32)                       # read the last hidden layer out
    w[-1] = torch.zeros(32)
    z = torch.randn(2, P * P + 4, 24, 24, generator=gen)
    first = torch.relu(torch.nn.functional.conv2d(z, w[0], w[1], padding=1)).std()
    deep = _network(z, w, skip=True).std()
    assert 0.5 < float(deep / first) < 8.0
    unscaled = [t * layers ** 0.5 if i % 2 == 0 and 2 <= i < 2 * layers else t for i, t in enumerate(w)]
    assert float(_network(z, unscaled, skip=True).std() / first) > 1e3


def test_residual_guide_is_its_own_architecture():
    """The same weights give another residual with skip (it is part of the
    model's config, stored in the weights), and an untrained residual guide
    still leaves the model unchanged."""
    gen = torch.Generator().manual_seed(5)
    cfa = CFA.bayer("GRBG")
    x = 0.05 + 0.4 * torch.rand(1, 1, 40, 44, generator=gen)
    U = 0.05 + 0.4 * torch.rand(1, 3, 40, 44, generator=gen)
    w = _random_guide(2, layers=4)
    assert not torch.allclose(guide_residual(x, U, NOISE, cfa, w), guide_residual(x, U, NOISE, cfa, w, skip=True))
    plain = KPNT("bayer", ModelConfig())
    guided = KPNT("bayer", ModelConfig(guide_layers=5, guide_width=16, guide_skip=True))
    with torch.no_grad():
        assert torch.equal(plain(x, cfa, NOISE), guided(x, cfa, NOISE))
    assert ModelConfig.from_json(guided.config.to_json()).guide_skip is True
    assert ModelConfig.from_json({k: v for k, v in ModelConfig().to_json().items() if k != "guide_skip"}).guide_skip is False


def test_packed_guide_reaches_pack_times_further_and_no_further():
    """guide_pack 2: each 3x3 layer spans two repeats per packed position,
    so one photosite's change travels beyond the pack-1 bound, within the
    pack-2 bound (the tile margin is built on it)."""
    cfa, P, layers = CFA.bayer("GBRG"), 2, 3
    gen = torch.Generator().manual_seed(9)
    H = W = 96
    x = 0.05 + 0.4 * torch.rand(1, 1, H, W, generator=gen)
    U = torch.full((1, 3, H, W), 0.3)
    w = _random_guide(P * 2, layers=layers)
    base = guide_residual(x, U, NOISE, cfa, w, pack=2)
    x2 = x.clone()
    x2[..., 48, 49] += 0.2
    changed = (guide_residual(x2, U, NOISE, cfa, w, pack=2) - base).abs().sum((0, 1)) > 0
    ys, xs = torch.nonzero(changed, as_tuple=True)
    reach = int(max((ys - 48).abs().max(), (xs - 49).abs().max()))
    assert guide_radius(P, layers) < reach <= guide_radius(P, layers, pack=2)


def test_packed_guide_is_exact_under_a_shift_by_its_packing_side():
    """Crops that move the packing grid by whole packed blocks (pack * P
    photosites) give the same correction away from the borders; a shift by
    one repeat regroups the repeats (another equivalent grid), so it does
    not."""
    ref, P, pack, layers = CFA.bayer("RGGB"), 2, 2, 2
    gen = torch.Generator().manual_seed(10)
    H = W = 64
    x = 0.05 + 0.4 * torch.rand(1, 1, H, W, generator=gen)
    U = torch.full((1, 3, H, W), 0.3)
    w = _random_guide(P * pack, layers=layers)
    full = guide_residual(x, U, NOISE, ref, w, pack=pack)
    m = guide_radius(P, layers, pack) + P * pack
    for s, same in ((4, True), (2, False)):
        part = guide_residual(x[..., s:, s:], U[..., s:, s:], NOISE, ref.crop(s, s), w, pack=pack)
        a, b = full[..., s + m:H - m, s + m:W - m], part[..., m:H - s - m, m:W - s - m]
        assert torch.allclose(a, b, atol=1e-6) == same


@pytest.mark.parametrize("sensor,cfa,shape", [("bayer", CFA.bayer("GRBG"), (330, 190)), ("xtrans", CFA.xtrans(), (366, 200))])
def test_packed_guide_tiles_without_seams(sensor, cfa, shape):
    """The tile alignment includes the packing side, so every tile packs
    on the whole image's grid: tiled output equals the one-piece output."""
    from denoise_helpers import NOISE_WB, scene
    from kpnt.denoise import denoise_array

    torch.manual_seed(11)
    model = KPNT(sensor, ModelConfig(guide_layers=2, guide_width=8, guide_skip=True, guide_pack=2))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model.eval()
    x = scene(*shape, seed=2)
    whole = denoise_array(model, x, cfa, NOISE_WB, tile=0)
    tiles = []
    tiled = denoise_array(model, x, cfa, NOISE_WB, tile=shape[0] // 2, progress=tiles.append)
    assert len(tiles) > 1
    np.testing.assert_allclose(tiled, whole, atol=1e-4, rtol=0)


def test_guide_pack_is_part_of_the_config():
    cfg = ModelConfig(guide_layers=2, guide_width=8, guide_pack=2)
    assert ModelConfig.from_json(cfg.to_json()).guide_pack == 2
    assert ModelConfig.from_json({k: v for k, v in ModelConfig().to_json().items() if k != "guide_pack"}).guide_pack == 1
    model = KPNT("bayer", cfg)
    assert model.sets["guide"][0].shape[1] == 4 * 4 + 4 and model.sets["guide"][-2].shape[0] == 3 * 16
    with pytest.raises(ConfigError, match="guide_pack"):
        ModelConfig(guide_layers=2, guide_pack=0)


@pytest.mark.parametrize("skip,proj", [(True, False), (False, False), (True, True)], ids=["skip", "plain", "proj"])
def test_inference_in_place_network_equals_autograd_one_and_keeps_its_input(skip, proj):
    """Without autograd the guide's ReLU and skip adds run in place (and the
    CPU path goes channels-last): the same numbers as the autograd network,
    and the caller's input is not written."""
    from kpnt.ref.guide import _network, guide_channels

    g = torch.Generator().manual_seed(3)
    n_in, _ = guide_channels(2)
    ws = [w + (0.3 if w.dim() == 1 else 0.05) * torch.randn(w.shape, generator=g)
          for w in init_guide(2, 16, 4, g, skip=skip, proj=proj)]
    z = torch.randn(1, n_in, 20, 24, generator=g)
    kept = z.clone()
    with_grad = _network(z, ws, skip, proj=proj)          # autograd on: the out-of-place path
    with torch.no_grad():
        in_place = _network(z, ws, skip, proj=proj)
        in_place_cl = _network(z.contiguous(memory_format=torch.channels_last), ws, skip, proj=proj)
    assert torch.equal(z, kept)
    assert torch.allclose(in_place, with_grad, rtol=0, atol=1e-6) and torch.allclose(in_place_cl, with_grad, rtol=1e-5, atol=1e-5)
    last = 4 if proj else 2                                # tensors of the last hidden layer
    assert float((with_grad - _network(z, ws[:-2 - last] + ws[-2:], skip, proj=proj).detach()).abs().max()) > 1e-3   # a layer fewer shows


def test_projection_blocks_compute_their_formula():
    """``guide_proj``: layer 0 ``relu(conv(z))``, then ``relu(z + P relu(conv(z)
    + b) + c)`` per hidden layer, then the final 1x1, written out here with
    plain convolutions."""
    import torch.nn.functional as F

    from kpnt.ref.guide import _network, guide_channels, hidden_layers

    g = torch.Generator().manual_seed(4)
    n_in, _ = guide_channels(2)
    ws = [w + (0.2 if w.dim() == 1 else 0.05) * torch.randn(w.shape, generator=g)
          for w in init_guide(2, 8, 3, g, skip=True, proj=True)]
    assert len(ws) == 2 + 4 * 2 + 2
    z = torch.randn(1, n_in, 12, 14, generator=g)
    h = F.relu(F.conv2d(z, ws[0], ws[1], padding=1))
    for W, b, P, c in (ws[2:6], ws[6:10]):
        h = F.relu(h + F.conv2d(F.relu(F.conv2d(h, W, b, padding=1)), P, c))
    want = F.conv2d(h, ws[-2], ws[-1])
    assert torch.allclose(_network(z, ws, True, proj=True), want, atol=1e-6)
    assert [len(layer) for layer in hidden_layers(ws, proj=True)] == [2, 4, 4]
    with pytest.raises(ValueError, match="layout"):
        hidden_layers(ws[:-3] + ws[-2:], proj=True)


def test_block_hook_runs_every_projection_block_after_the_first():
    """``_network(..., block=)`` (the fused kernel's entry on a GPU) hands it
    each projection block after layer 0 with that block's four tensors, in
    order; ``proj_block`` as the hook computes the same network; the activity
    probe, which needs h, keeps the two convolutions."""
    from kpnt.ref.guide import _network, guide_channels, hidden_layers, proj_block, record_activity

    g = torch.Generator().manual_seed(5)
    n_in, _ = guide_channels(2)
    ws = [w + (0.2 if w.dim() == 1 else 0.05) * torch.randn(w.shape, generator=g)
          for w in init_guide(2, 8, 4, g, proj=True)]
    z = torch.randn(2, n_in, 11, 13, generator=g)
    seen = []

    def hook(zz, *layer):
        seen.append(layer)
        return proj_block(zz, *layer)

    with torch.no_grad():
        plain = _network(z, ws, False, proj=True)
        hooked = _network(z, ws, False, proj=True, block=hook)
    assert [tuple(map(id, s)) for s in seen] == [tuple(map(id, layer)) for layer in hidden_layers(ws, proj=True)[1:]]
    assert torch.allclose(hooked, plain, atol=1e-6)
    # A hook that computed something else shows in the output.
    with torch.no_grad():
        wrong = _network(z, ws, False, proj=True, block=lambda zz, w, b, p, c: proj_block(zz, w, b, p, 0 * c))
    assert (wrong - plain).abs().max() > 1e-3
    seen.clear()
    with torch.no_grad(), record_activity() as act:
        _network(z, ws, False, proj=True, block=hook)
    assert seen == [] and len(act) == 4


def test_untrained_projection_guide_is_the_identity_block_by_block():
    """Zero projections: every block passes its input through (relu of a
    non-negative stream), so only the zero final layer decides, and the
    model equals the unguided one."""
    x = 0.05 + 0.4 * torch.rand(1, 1, 48, 54, generator=torch.Generator().manual_seed(3))
    cfa = CFA.bayer("GBRG")
    with torch.no_grad():
        plain = KPNT("bayer", ModelConfig())(x, cfa, NOISE)
        guided = KPNT("bayer", ModelConfig(guide_layers=3, guide_width=16, guide_skip=True, guide_proj=True))(x, cfa, NOISE)
    assert torch.equal(plain, guided)
    with pytest.raises(ConfigError, match="guide_proj"):
        ModelConfig(guide_layers=3, guide_proj=True)


def test_projection_guide_gradients_match_finite_differences():
    torch.manual_seed(0)
    cfa = CFA.bayer("GRBG")
    model = KPNT("bayer", ModelConfig(guide_layers=3, guide_width=8, guide_skip=True, guide_proj=True)).double()
    with torch.no_grad():
        for k in (4, 8, 10):                               # the projections and the final layer: non-zero
            p = model.sets["guide"][k]
            p.add_(0.1 * torch.randn(p.shape, dtype=torch.float64))
    gen = torch.Generator().manual_seed(1)
    x = 0.05 + 0.5 * torch.rand(1, 1, 24, 24, generator=gen, dtype=torch.float64)
    target = torch.rand(1, 3, 24, 24, generator=gen, dtype=torch.float64)

    def loss():
        o = model(x, cfa, NOISE.double())
        return ((o - target).abs() / (o.abs() + target.abs() + 1e-3)).mean()

    loss().backward()
    for layer in (0, 2, 4, 5, 6, 8, 10):
        w = model.sets["guide"][layer]
        assert w.grad.abs().max() > 0, layer
        i = int(w.grad.abs().flatten().argmax())
        fd = central_difference(lambda: loss().item(), w, i, 1e-6)
        assert abs(fd - w.grad.flatten()[i].item()) <= 1e-5 * max(1.0, abs(fd)) + 1e-9, (layer, fd)


def test_a_residual_guide_converts_exactly_to_projection_blocks():
    """P = identity: relu(z + relu(a)) = z + relu(a) on the non-negative
    stream, so the converted guide computes the same residual."""
    from kpnt.ref.guide import to_projection_blocks

    g = torch.Generator().manual_seed(6)
    ws = [w + (0.2 if w.dim() == 1 else 0.05) * torch.randn(w.shape, generator=g) for w in init_guide(2, 8, 4, g, skip=True)]
    conv = to_projection_blocks(ws)
    assert len(conv) == len(ws) + 2 * 3
    x = 0.05 + 0.4 * torch.rand(1, 1, 32, 36, generator=g)
    U = 0.05 + 0.4 * torch.rand(1, 3, 32, 36, generator=g)
    cfa = CFA.bayer("RGGB")
    want = guide_residual(x, U, NOISE, cfa, ws, skip=True)
    got = guide_residual(x, U, NOISE, cfa, conv, skip=True, proj=True)
    assert torch.allclose(got, want, atol=1e-6) and want.abs().max() > 1e-3


def test_a_projection_guide_grows_wider_and_deeper_with_the_same_output():
    """grow_projection_guide: new channels and layers start switched off, so
    the residual is unchanged; the new channels are live (the final 1x1's new
    columns get gradient), and the grown stack has the asked-for shape."""
    from kpnt.ref.guide import grow_projection_guide, hidden_layers

    g = torch.Generator().manual_seed(8)
    ws = [w + (0.2 if w.dim() == 1 else 0.05) * torch.randn(w.shape, generator=g)
          for w in init_guide(6, 8, 3, g, skip=True, proj=True)]
    grown = grow_projection_guide(ws, 12, 5, torch.Generator().manual_seed(1))
    layers = hidden_layers(grown, proj=True)
    assert len(layers) == 5 and all(layer[0].shape[0] == 12 for layer in layers) and grown[-2].shape[1] == 12
    x = 0.05 + 0.4 * torch.rand(1, 1, 36, 42, generator=g)
    U = 0.05 + 0.4 * torch.rand(1, 3, 36, 42, generator=g)
    cfa = CFA.xtrans()
    want = guide_residual(x, U, NOISE, cfa, ws, skip=True, proj=True)
    grown = [w.requires_grad_() for w in grown]
    got = guide_residual(x, U, NOISE, cfa, grown, skip=True, proj=True)
    assert torch.allclose(got, want, atol=1e-6) and want.abs().max() > 1e-3
    (got * torch.randn(got.shape, generator=g)).sum().backward()
    assert grown[-2].grad[:, 8:].abs().max() > 0
    with pytest.raises(ValueError, match="grows only"):
        grow_projection_guide(ws, 4, 3, g)


def _hook_inputs(H, W, seed):
    """(x, U, noise) of two images for the hook tests."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 1, H, W, generator=g) * 0.5
    U = torch.rand(2, 3, H, W, generator=g) * 0.5
    return x, U, torch.tensor([[[1e-3] * 3, [1e-6] * 3]] * 2)


@pytest.mark.parametrize("cfa,pack", [(CFA.bayer("GRBG"), 2), (CFA.xtrans(2, 5), 1)])
def test_the_finish_hook_gets_what_the_reference_adds(cfa, pack):
    """guide_residual with ``fused_finish`` hands the hook the network's
    output, the brightness and the shuffle's geometry: with the reference's
    finish as the hook, the result is bitwise U + the residual (what the fused
    kernel computes in GPU inference, kpnt.ops.guide)."""
    from kpnt.ref.guide import finish

    H, W = 29, 37
    x, U, noise = _hook_inputs(H, W, seed=7)
    ws = _random_guide(cfa.period * pack, seed=1)
    calls = []

    def hook(U_, r, s, Q, top, left):
        calls.append((r.shape, s.shape, Q, top, left))
        return finish(U_, r, s, Q, top, left)

    with torch.no_grad():
        want = U + guide_residual(x, U, noise, cfa, ws, pack=pack)
        got = guide_residual(x, U, noise, cfa, ws, pack=pack, fused_finish=hook)
    assert torch.equal(got, want)
    (r_shape, s_shape, Q, top, left), = calls
    assert Q == cfa.period * pack and r_shape[1] == 3 * Q * Q and s_shape[1] == 1
    assert r_shape[-2:] == s_shape[-2:] and r_shape[-2] * Q >= top + H and r_shape[-1] * Q >= left + W


@pytest.mark.parametrize("cfa,pack,skip", [(CFA.bayer("GRBG"), 2, False), (CFA.xtrans(2, 5), 1, True)])
def test_the_start_hook_replaces_the_input_construction(cfa, pack, skip):
    """guide_residual with ``fused_start`` takes the network's input from the
    hook (what the fused kernel computes in GPU inference, kpnt.ops.guide):
    with the reference's start as the hook, the same residual bitwise; with a
    hook that perturbs z, another one."""
    from kpnt.ref.guide import start

    x, U, noise = _hook_inputs(31, 26, seed=8)
    ws = _random_guide(cfa.period * pack, seed=2)
    with torch.no_grad():
        want = guide_residual(x, U, noise, cfa, ws, skip, pack)
        got = guide_residual(x, U, noise, cfa, ws, skip, pack, fused_start=start)

        def nudged(*args):
            z, s, Q, top, left = start(*args)
            return z + 1e-3, s, Q, top, left

        other = guide_residual(x, U, noise, cfa, ws, skip, pack, fused_start=nudged)
    assert torch.equal(got, want)
    assert not torch.equal(other, want)


@pytest.mark.parametrize("Q", [2, 6, 12])
def test_block_means_are_avg_pool_values_and_gradients(Q):
    """The guide's start takes its block means with a written-out backward
    (cheaper on a GPU): bit for bit ``F.avg_pool2d``'s values and gradients
    (the fused inference start is avg_pool2d's bitwise twin), on a
    channels-last input as training has it, in float32 and float64."""
    gen = torch.Generator().manual_seed(Q)
    for dtype in (torch.float32, torch.float64):
        t = torch.randn(2, 3, 3 * Q, 5 * Q, generator=gen, dtype=dtype)
        t = t.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        ours, pooled = block_means(t, Q), torch.nn.functional.avg_pool2d(t, Q)
        assert ours.shape == (2, 3, 3, 5) and torch.equal(ours, pooled)
        g = torch.randn(ours.shape, generator=gen, dtype=dtype)
        (d_ours,), (d_pooled,) = torch.autograd.grad(ours, t, g), torch.autograd.grad(pooled, t, g)
        assert torch.equal(d_ours, d_pooled), dtype
