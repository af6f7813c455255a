"""Per-channel front kernels (ModelConfig.front_kernels='per_channel')."""
import numpy as np
import pytest
import torch

from kpnt.model import KPNT, ModelConfig
from kpnt.mosaic.cfa import CFA, D4
from kpnt.ops.capability import config_problems
from kpnt.ref.front_layout import front_roles
from kpnt.ref.front_level import front_level
from kpnt.ref.mlp import init_weights
from kpnt.spec import FrontLevelSpec

R = 2
#: Per-channel front kernels of radius 2 on small float64 MLPs (32 x 2).
PER = FrontLevelSpec(radius=R, kernels="per_channel", width=32, hidden_layers=2)
NOISE = torch.tensor([[[2e-3, 1e-3, 3e-3], [2e-5, 1e-5, 3e-5]]], dtype=torch.float64)


def _perturbed(model, seed=1, scale=0.05):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype) * (p != 0))
    return model


def test_roles_of_rggb():
    """Own colour first; a red or blue site's next role is green."""
    roles = front_roles(CFA.bayer("RGGB"), R)
    assert roles[0, 0].tolist() == [0, 1, 2]          # red site: R, G, B
    assert roles[1, 1].tolist() == [2, 1, 0]          # blue site: B, G, R
    # The two greens are exact transposes: in canonical orientation both have
    # red where the first non-green tap is, so their roles agree.
    assert roles[0, 1].tolist() == roles[1, 0].tolist() == [1, 0, 2]
    # Against a plain raster order (no canonical frame) they would differ:
    # the green on the blue row meets blue first.
    assert CFA.bayer("RGGB").pattern[1, 0 + 1] == 2


@pytest.mark.parametrize("cfa", [CFA.bayer("GBRG"), CFA.xtrans(0, 0), CFA.xtrans(4, 1)], ids=lambda c: c.name)
def test_every_role_is_a_permutation(cfa):
    roles = front_roles(cfa, R)
    for y in range(cfa.period):
        for x in range(cfa.period):
            assert sorted(roles[y, x].tolist()) == [0, 1, 2]
            assert roles[y, x][0] == cfa.pattern[y, x]


@pytest.mark.parametrize("sensor,cfa", [("bayer", CFA.bayer("GRBG")), ("xtrans", CFA.xtrans(1, 4))])
def test_replicated_kernels_equal_the_shared_front(sensor, cfa):
    """per_channel weights whose three kernels are the shared kernel compute
    the shared model's output (autograd and inference paths)."""
    shared = _perturbed(KPNT(sensor).double())
    per = KPNT(sensor, ModelConfig(front_kernels="per_channel")).double()
    T, _, _ = ModelConfig().front_spec.widths()
    with torch.no_grad():
        for name, mats in shared.weight_sets().items():
            dst = per.weight_sets()[name]
            for a, b in zip(mats[:-1], dst[:-1]):
                b.copy_(a)
            last, out = mats[-1], dst[-1]
            if name == "colour":
                out.copy_(last)
                continue
            out.zero_()
            for r in range(3):
                out[r * T:(r + 1) * T] = last[:T]
            out[3 * T] = last[T]
    gen = torch.Generator().manual_seed(3)
    x = 0.05 + 0.5 * torch.rand(1, 1, 36, 36, generator=gen, dtype=torch.float64)
    want = shared(x, cfa, NOISE)
    torch.testing.assert_close(per(x, cfa, NOISE), want, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(per(x, cfa, NOISE), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sensor,cfa", [("bayer", CFA.bayer("RGGB").crop(1, 1)), ("xtrans", CFA.xtrans(2, 3))])
def test_per_channel_kernels_differ_per_channel_and_paths_agree(sensor, cfa):
    """Trained-like (perturbed) per-channel weights give channel-specific
    details (the output minus U differs between channels) and the inference
    path equals the autograd path."""
    model = _perturbed(KPNT(sensor, ModelConfig(front_kernels="per_channel")).double(), scale=0.3)
    gen = torch.Generator().manual_seed(4)
    x = 0.05 + 0.5 * torch.rand(2, 1, 36, 36, generator=gen, dtype=torch.float64)
    noise = NOISE.expand(2, 2, 3)
    y = model(x, cfa, noise)
    with torch.no_grad():
        y2 = model(x, cfa, noise)
    torch.testing.assert_close(y2, y, rtol=1e-10, atol=1e-12)
    # detail added per channel is not the same for all channels
    hp = y - torch.nn.functional.avg_pool2d(y, 3, 1, 1)
    assert (hp[:, 0] - hp[:, 1]).abs().mean() > 1e-4


def test_per_channel_equivariance_bayer_transpose():
    """Transposing a Bayer mosaic with its CFA transposes the output at the
    sites whose canonical frame maps exactly (greens), all three channels."""
    cfa = CFA.bayer("RGGB")
    H = W = 12
    gen = torch.Generator().manual_seed(5)
    f64 = dict(generator=gen, dtype=torch.float64)
    x = torch.rand(1, 1, H, W, **f64)
    U = x.mean() + 0.1 * torch.randn(1, 3, H, W, **f64)
    S = torch.rand(1, 3, H, W, **f64)
    T, n_in, n_out = PER.widths()
    weights = []
    for _ in range(cfa.n_classes):
        off = torch.randn(3 * T + 1, generator=gen)
        ws = init_weights(n_in, 32, 2, n_out, T + 1, off, 0.01, gen, T + 2, 3 * T + 1, out_scale=3.0)
        weights.append([w.double() for w in ws])
    out = front_level(x, U, S, NOISE, cfa, weights, PER)
    tf = lambda t: t.transpose(-1, -2)
    cfa2 = cfa.transpose()
    out2 = front_level(tf(x), tf(U), tf(S), NOISE, cfa2, weights, PER)
    exact = 0
    for y in range(H):
        for xx in range(W):
            M = D4[cfa.transform[y % 2, xx % 2]]
            M2 = D4[cfa2.transform[xx % 2, y % 2]]
            if np.array_equal(M.T @ D4[1] @ M2, np.eye(2, dtype=int)):
                exact += 1
                torch.testing.assert_close(out2[0, :, xx, y], out[0, :, y, xx], rtol=1e-12, atol=1e-14)
    assert exact >= H * W // 2
    assert (out - U).abs().max() > 1e-3          # the level did something


def test_gradients_match_finite_differences_per_channel():
    torch.manual_seed(0)
    model = _perturbed(KPNT("bayer", ModelConfig(front_kernels="per_channel")).double())
    gen = torch.Generator().manual_seed(2)
    x = 0.05 + 0.5 * torch.rand(1, 1, 24, 24, generator=gen, dtype=torch.float64)
    target = torch.rand(1, 3, 24, 24, generator=gen, dtype=torch.float64)
    loss_of = lambda: ((model(x, CFA.bayer("GRBG"), NOISE) - target) ** 2).mean()
    loss_of().backward()
    checked = 0
    for name, mats in model.weight_sets().items():
        if not name.startswith("front"):
            continue
        g = mats[-1].grad.flatten()
        for i in torch.topk(g.abs(), 4).indices.tolist():
            w = mats[-1].data.view(-1)
            old = w[i].item()
            with torch.no_grad():
                w[i] = old + 1e-6
                lp = loss_of().item()
                w[i] = old - 1e-6
                lm = loss_of().item()
                w[i] = old
            fd = (lp - lm) / 2e-6
            assert abs(fd - g[i].item()) <= 1e-5 * abs(g[i].item()), (name, i, fd, g[i].item())
            checked += 1
    assert checked == 8


def test_fused_backend_runs_and_trains_per_channel_kernels():
    """Per-channel front kernels are fused for inference and for training
    (the compiled per-channel shape is the shipped models' width 128)."""
    per = ModelConfig(front_kernels="per_channel", width=128, front_width=128)
    assert config_problems(per) == []
    assert config_problems(per, training=True) == []
    assert any("not compiled" in p for p in config_problems(ModelConfig(front_kernels="per_channel")))
    assert config_problems(ModelConfig()) == []
    assert config_problems(ModelConfig(), training=True) == []
    with pytest.raises(ValueError, match="front_kernels"):
        ModelConfig(front_kernels="per_pixel")
