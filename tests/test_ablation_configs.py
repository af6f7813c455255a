"""The ablation options of ModelConfig (issue 6): the colour levels' tap set
(``colour_taps``) and the front level's weight sharing (``front_sharing``),
and how the fused backend refuses what it does not implement."""
import json
import logging

import numpy as np
import pytest
import torch

from kpnt import ops
from kpnt.model import KPNT, ModelConfig
from kpnt.mosaic.cfa import CFA
from kpnt.ops import capability, dispatch
from kpnt.ref.front_layout import front_layout, front_set_names
from kpnt.spec import ColourLevelSpec
from kpnt.testing import central_difference

NOISE = torch.tensor([[[2e-3, 1e-3, 3e-3], [2e-5, 1e-5, 3e-5]]])
SQUARE = ModelConfig(colour_taps="square25")
NONE = ModelConfig(front_sharing="none")
CASES = [("bayer", CFA.bayer("GRBG"), 20), ("xtrans", CFA.xtrans(1, 4), 24)]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny graphs: one thread avoids OpenMP spin-waits on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def smape(o, r, eps=1e-3):
    return ((o - r).abs() / (o.abs() + r.abs() + eps)).mean()


@pytest.mark.parametrize("sensor,cfa,size", CASES)
@pytest.mark.parametrize("cfg", [SQUARE, NONE, ModelConfig(colour_taps="square25", front_sharing="none")],
                         ids=["square25", "none", "both"])
def test_forward_shape_finite_and_inference_path_agrees(sensor, cfa, size, cfg):
    model = KPNT(sensor, cfg)
    x = torch.rand(2, 1, size, size + 6, generator=torch.Generator().manual_seed(0))
    noise = NOISE.expand(2, 2, 3).contiguous()
    out = model(x, cfa, noise)
    assert out.shape == (2, 3, size, size + 6) and torch.isfinite(out).all()
    with torch.no_grad():                     # chunked inference paths
        torch.testing.assert_close(model(x, cfa, noise), out.detach(), atol=1e-5, rtol=0)


def test_weight_set_shapes_follow_the_config():
    sets = KPNT("bayer", SQUARE).weight_sets()
    assert sets["colour"][0].shape == (64, 64) and sets["colour"][-1].shape == (32, 64)   # 52 -> 64 in, 26 -> 32 out
    assert KPNT("bayer").weight_sets()["colour"][0].shape == (64, 32)
    assert list(KPNT("bayer", NONE).weight_sets()) == ["colour", "front.R00", "front.G01", "front.G10", "front.B11"]
    xt = KPNT("xtrans", NONE).weight_sets()
    assert len(xt) == 1 + 18 and "front.G00" in xt
    assert len(KPNT("rgb", NONE).weight_sets()) == 1          # no front level
    with pytest.raises(ValueError, match="colour_taps must be one of"):
        ModelConfig(colour_taps="square49")
    with pytest.raises(ValueError, match="front_sharing must be one of"):
        ModelConfig(front_sharing="some")


def test_per_position_sets_are_keyed_by_the_physical_site():
    """Two crops of a sensor send each physical site to the same set.  Keying
    by the crop's own phase would give set (y mod P, x mod P) of the crop and
    fail here for every crop offset that is not a multiple of the period."""
    for kind, ref in (("bayer", CFA.bayer("RGGB")), ("xtrans", CFA.xtrans())):
        P = ref.period
        sets_ref, offs = front_layout(ref, 2, "none")
        assert (offs == offs[0, 0]).all()                     # no re-orientation
        assert sorted(set(sets_ref.ravel().tolist())) == list(range(len(front_set_names(kind, "none"))))
        for dy in range(P):
            for dx in range(P):
                crop = ref.crop(dy, dx)
                sets_crop, _ = front_layout(crop, 2, "none")
                for Y in range(P):
                    for X in range(P):
                        assert sets_crop[(Y - dy) % P, (X - dx) % P] == sets_ref[Y, X], (kind, dy, dx, Y, X)
        if kind == "bayer":
            # the crop's own phase would be a different keying for every
            # crop but the first one: make sure the test can tell
            assert not np.array_equal(front_layout(ref.crop(1, 0), 2, "none")[0], sets_ref)
    # X-Trans positions p and p + (3, 3) are the same site of every crop (18 sets)
    s, _ = front_layout(CFA.xtrans(), 2, "none")
    assert np.array_equal(s, np.roll(s, (3, 3), axis=(0, 1)))
    # flips, transposes and the red/blue exchange of X-Trans are phases of it
    xt = CFA.xtrans()
    phases = {xt.crop(y, x).pattern.tobytes() for y in range(6) for x in range(6)}
    swapped = CFA(np.where(xt.pattern == 0, 2, np.where(xt.pattern == 2, 0, 1)))
    for c in (xt.flip(0, 7), xt.flip(1, 8), xt.transpose(), swapped):
        assert c.pattern.tobytes() in phases
        front_layout(c, 2, "none")


@pytest.mark.parametrize("kind,ref,dy,dx,name", [("bayer", CFA.bayer("RGGB"), 1, 1, "front.R00"),
                                                 ("xtrans", CFA.xtrans(), 2, 5, "front.G01")])
def test_a_set_changes_the_output_only_at_its_physical_sites(kind, ref, dy, dx, name):
    """Model level: perturbing one per-position set changes the output exactly
    at the photosites of that reference position, for an uncropped mosaic
    and for one cropped by (dy, dx)."""
    model = KPNT(kind, NONE)
    g = torch.Generator().manual_seed(3)
    full = torch.rand(1, 1, 48, 48, generator=g)
    ry, rx = (int(v) for v in name[-2:])
    P = ref.period
    for (oy, ox) in ((0, 0), (dy, dx)):
        x = full[..., oy:oy + 36, ox:ox + 36]
        cfa = ref.crop(oy, ox)
        with torch.no_grad():
            before = model(x, cfa, NOISE)
            last = model.weight_sets()[name][-1]
            saved = last.clone()
            last.add_(0.3 * torch.randn(last.shape, generator=g))
            after = model(x, cfa, NOISE)
            last.copy_(saved)
        changed = (after - before).abs().amax(1)[0] > 0        # elsewhere bitwise equal
        Y, X = np.mgrid[0:36, 0:36]
        Y, X = Y + oy, X + ox                          # physical coordinates
        want = ((Y - ry) % P == 0) & ((X - rx) % P == 0)
        if kind == "xtrans":                           # the (3, 3) twin is the same set
            want |= ((Y - ry - 3) % P == 0) & ((X - rx - 3) % P == 0)
        assert np.array_equal(changed.numpy(), want), (oy, ox)


@pytest.mark.parametrize("sensor,cfa,size", CASES)
def test_a_few_training_steps_change_every_weight_set(sensor, cfa, size):
    torch.manual_seed(0)
    model = KPNT(sensor, ModelConfig(colour_taps="square25", front_sharing="none"))
    before = {k: [m.detach().clone() for m in v] for k, v in model.weight_sets().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    target = torch.rand(2, 3, size, size, generator=g)
    x = (target.mean(1, keepdim=True) + 0.02 * torch.randn(2, 1, size, size, generator=g)).clamp(0, 1)
    noise = NOISE.expand(2, 2, 3).contiguous()
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = smape(model(x, cfa, noise), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    for name, mats in model.weight_sets().items():
        assert any(not torch.equal(m, b) for m, b in zip(mats, before[name])), name


def test_train_cli_flags_reach_the_config():
    from kpnt.cli.train import build_parser

    a = build_parser().parse_args(["--sensor", "bayer", "-o", "x", "--colour-taps", "square25", "--front-sharing", "none"])
    assert (a.colour_taps, a.front_sharing) == ("square25", "none")
    a = build_parser().parse_args(["--sensor", "bayer", "-o", "x"])
    assert (a.colour_taps, a.front_sharing) == (None, None)


def test_save_load_round_trip_with_the_new_options(tmp_path):
    from kpnt.weights_io import load_weights, read_metadata, save_weights

    cfg = ModelConfig(colour_taps="square25", front_sharing="none", apply_mode="plain")
    model = KPNT("xtrans", cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "w.safetensors"
    save_weights(path, model, CFA.xtrans(2, 1), {"steps": 0})
    assert read_metadata(path)["config"]["front_sharing"] == "none"
    loaded, _ = load_weights(path, sensor="xtrans")
    assert loaded.config == cfg
    x = torch.rand(1, 1, 24, 30)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, CFA.xtrans(2, 1), NOISE), model(x, CFA.xtrans(2, 1), NOISE), rtol=0, atol=0)


def test_old_config_without_the_new_keys_loads_with_defaults(tmp_path):
    from safetensors.torch import save

    from kpnt.weights_io import META_KEY, load_weights, save_weights

    old = {k: v for k, v in ModelConfig().to_json().items() if k not in ("colour_taps", "front_sharing")}
    assert ModelConfig.from_json(old) == ModelConfig()
    # a whole file as written before the keys existed
    model = KPNT("bayer")
    path = tmp_path / "new.safetensors"
    save_weights(path, model, CFA.bayer(), {})
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()[META_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta["config"] = old
    (tmp_path / "old.safetensors").write_bytes(save(tensors, metadata={META_KEY: json.dumps(meta)}))
    loaded, _ = load_weights(tmp_path / "old.safetensors", sensor="bayer")
    assert loaded.config == ModelConfig() and loaded.config.colour_taps == "diamond15"
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_json({**old, "colour_tapz": "x"})


@pytest.mark.parametrize("sensor,cfa,shape,cfg", [
    ("bayer", CFA.bayer("GRBG"), (1, 1, 16, 16), SQUARE),
    ("rgb", None, (1, 3, 12, 12), SQUARE),
    ("bayer", CFA.bayer("GBRG"), (1, 1, 16, 16), NONE),
    ("xtrans", CFA.xtrans(1, 4), (1, 1, 24, 24), NONE),
], ids=["bayer-square25", "rgb-square25", "bayer-none", "xtrans-none"])
def test_gradients_match_finite_differences(sensor, cfa, shape, cfg):
    """tests/test_derivatives.py's float64 check for the ablation configs: a
    few weights of the colour set and of up to three front sets (X-Trans
    'none' has 18) against central differences of the SMAPE loss."""
    step = 1e-6
    model = KPNT(sensor, cfg).double()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype) * (p != 0))
    x = 0.05 + 0.5 * torch.rand(shape, generator=gen, dtype=torch.float64)
    noise = NOISE.double()
    target = torch.rand(1, 3, *shape[-2:], generator=gen, dtype=torch.float64)
    smape(model(x, cfa, noise), target).backward()
    sets = model.weight_sets()
    names = list(sets)[:4]
    for name in names:
        mats = sets[name]
        checked = 0
        for layer in (0, len(mats) - 1):
            g = mats[layer].grad
            flat = g.abs().flatten()
            cand = torch.nonzero(flat > 0.1 * flat.max()).flatten()
            for i in cand[torch.randperm(len(cand), generator=gen)[:2]].tolist():
                fd = central_difference(lambda: smape(model(x, cfa, noise), target).item(), mats[layer], i, step)
                ad = g.view(-1)[i].item()
                assert abs(fd - ad) <= 1e-5 * abs(ad), f"{name} layer {layer} weight {i}: autograd {ad:.9g} vs FD {fd:.9g}"
                checked += 1
        assert checked == 4, name


# ----------------------------------------------------------------------
# the fused backend never computes something else
# ----------------------------------------------------------------------
def test_cuda_backend_refuses_unsupported_configs_at_once():
    """No GPU needed: the check runs when the backend is set, before any
    kernel is built or called."""
    for cfg, what in ((SQUARE, "colour_taps='square25'"), (NONE, "front_sharing='none'"),
                      (ModelConfig(front_radius=3), "front_radius=3")):
        with pytest.raises(ValueError, match=f"backend='cuda' cannot run this model: {what}") as e:
            KPNT("bayer", cfg, backend="cuda")
        assert "\n" not in str(e.value)
        model = KPNT("bayer", cfg)
        with pytest.raises(ValueError, match="cannot run this model"):
            model.backend = "cuda"
        assert model.backend == "torch"
        model.backend = "auto"                       # allowed: falls back per op
    assert capability.config_problems(ModelConfig()) == []
    # the compiled shapes are known without a build (kernels/shapes.def)
    assert any("not compiled" in p for p in capability.config_problems(ModelConfig(width=96)))
    assert capability.config_problems(ModelConfig(width=128)) == []
    assert capability.config_problems(ModelConfig(width=128), training=True) == []   # the split backward
    # a line compiled forward only (train 0) serves inference and refuses training
    text = capability.shapes_file().read_text().replace("KPNT_COLOUR(15, 32, 128, 16, 6, 1)",
                                                        "KPNT_COLOUR(15, 32, 128, 16, 6, 0)")
    saved = capability._loaded
    capability.set_loaded(capability.parse_shapes(text))
    try:
        assert capability.config_problems(ModelConfig(width=128)) == []
        assert any("forward only" in p for p in capability.config_problems(ModelConfig(width=128), training=True))
    finally:
        capability.set_loaded(saved)


#: kernels/shapes.def with the width-128 colour line compiled forward only
#: (train 0), as a build may list it: what 'auto' does with such a line.
def _forward_only_128():
    text = capability.shapes_file().read_text()
    line = "KPNT_COLOUR(15, 32, 128, 16, 6, 1)"
    assert line in text
    return capability.parse_shapes(text.replace(line, "KPNT_COLOUR(15, 32, 128, 16, 6, 0)"))


@pytest.fixture
def fake_cuda(monkeypatch):
    """A 'cuda' backend of reference wrappers that count calls; 'auto'
    resolves to it on CPU tensors, and the compiled shapes are those of
    kernels/shapes.def with the width-128 colour line forward only (what
    real kernels built from such a list would report)."""
    monkeypatch.setattr(dispatch, "_registered", dict(dispatch._registered))
    monkeypatch.setattr(dispatch, "_loaders", {})
    monkeypatch.setattr(dispatch, "_unsupported_logged", set())
    monkeypatch.setattr(capability, "_loaded", _forward_only_128())
    real = dispatch.resolve_backend
    monkeypatch.setattr(dispatch, "resolve_backend", lambda b, d: "cuda" if b == "auto" else real(b, d))
    calls = []

    def wrap(op):
        def fn(*args, **kw):
            assert not kw, f"the fused {op} got arguments it does not know: {kw}"
            calls.append(op)
            return dispatch.OPS[op](*args)
        return fn

    ops.register_backend("cuda", {"colour_level": wrap("colour_level"), "front_level": wrap("front_level")})
    return calls


def test_auto_runs_unsupported_parts_on_the_reference_and_logs_once(fake_cuda, caplog):
    calls = fake_cuda
    x = torch.rand(1, 1, 16, 16)
    for cfg, fused, reason in ((ModelConfig(), {"colour_level", "front_level"}, None),
                               (SQUARE, {"front_level"}, "colour_taps='square25'"),
                               (NONE, {"colour_level"}, "front_sharing='none'"),
                               (ModelConfig(width=96), {"front_level"}, "colour MLP (in=32, hidden=96, out=16, n_hidden=6) is not compiled"),
                               (ModelConfig(width=128), {"front_level"}, "hidden=128, out=16, n_hidden=6) is compiled "
                                                                        "forward only")):
        calls.clear()
        caplog.clear()
        model = KPNT("bayer", cfg, backend="auto")
        with caplog.at_level(logging.WARNING, logger="kpnt.ops.dispatch"):
            out = model(x, CFA.bayer(), NOISE)
            model(x, CFA.bayer(), NOISE)
        assert set(calls) == fused, cfg
        warned = [r.getMessage() for r in caplog.records if "PyTorch reference" in r.getMessage()]
        if reason is None:
            assert not warned
        else:
            assert len(warned) == 1 and reason in warned[0], warned
        model.backend = "torch"
        torch.testing.assert_close(out, model(x, CFA.bayer(), NOISE), rtol=0, atol=0)


def test_explicit_cuda_raises_for_an_uncompiled_mlp_shape(fake_cuda):
    compiled = (r"\(compiled: colour level, 15 taps, MLP \(in=32, hidden=64, out=16, n_hidden=6\); colour level, "
                r"15 taps, MLP \(in=32, hidden=128, out=16, n_hidden=6\), forward only; kernels/shapes.def\)")
    with pytest.raises(ValueError, match=r"cannot run this model: colour MLP \(in=32, hidden=96, .* is not compiled "
                                         + compiled):
        KPNT("bayer", ModelConfig(width=96), backend="cuda")
    spec = ColourLevelSpec(width=96)
    weights = [torch.zeros(96, 32)] + [torch.zeros(96, 96)] * 5 + [torch.zeros(16, 96)]
    D = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"cannot run colour_level: colour MLP \(in=32, hidden=96, .* is not compiled "
                                         + compiled):
        ops.colour_level(D, D + 1, weights, spec, backend="cuda")
    assert fake_cuda == []                        # nothing ran on the "kernels"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_the_gpu_auto_falls_back_and_cuda_refuses():
    x = torch.rand(1, 1, 40, 40, device="cuda")
    noise = NOISE.cuda()
    for cfg in (SQUARE, NONE, ModelConfig(width=96), ModelConfig(width=128)):
        model = KPNT("xtrans" if cfg is NONE else "bayer", cfg, backend="auto").cuda()
        cfa = CFA.xtrans() if cfg is NONE else CFA.bayer()
        out = model(x, cfa, noise)
        model.backend = "torch"
        ref = model(x, cfa, noise)
        assert (out - ref).abs().max() < 1e-2
    with pytest.raises(ValueError, match="is not compiled"):
        KPNT("bayer", ModelConfig(width=96), backend="cuda")
