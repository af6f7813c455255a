"""The MLP forward on Hopper's wgmma kernel (kernels/mlp_wgmma.cuh) against
float64 and against the mma.sync kernel, plain and grouped, on every 64-wide
shape compiled; the switch's choice and its errors elsewhere."""
import logging

import pytest
import torch

from kpnt.ops import _cuda
from kpnt.ops._cuda import mlp as mlp_op
from kpnt.ops._cuda.extension import ext, unwrap
from kpnt.ops._cuda.guide_block import wgmma_built
from kpnt.testing import TOLERANCES, fused_shapes
from kpnt.testing import rel_error as rel

from test_fused_mlp import SLOPE, features, poison, ref_mlp, weights

pytestmark = pytest.mark.cuda

#: Every 64-wide MLP shape of kernels/shapes.def (with a backward or not).
CONFIGS64 = [list(d) for d in sorted({s.mlp.as_tuple() for s in fused_shapes()}) if d[1] == 64]


def hopper() -> bool:
    return wgmma_built(torch.cuda.current_device())


@pytest.fixture
def needs_wgmma():
    if not hopper():
        pytest.skip("the wgmma forward needs a Hopper GPU and an sm_90a build")


@pytest.fixture
def wgmma_on(monkeypatch):
    monkeypatch.setattr(mlp_op, "WGMMA_FORWARD", True)


def both_kernels(x, ws, monkeypatch, grouped=None):
    """(wgmma, mma.sync) outputs of the same call, each on memory filled with NaN first."""
    out = []
    for on in (True, False):
        monkeypatch.setattr(mlp_op, "WGMMA_FORWARD", on)
        poison()
        with torch.no_grad():
            out.append(_cuda.fused_mlp(x, ws, SLOPE) if grouped is None else _cuda.fused_mlp_grouped(x, grouped, ws, SLOPE))
    return out


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("dims", CONFIGS64, ids=lambda d: "x".join(map(str, d)))
@pytest.mark.parametrize("P", [1, 63, 65, 129, 20_011, 300_007])
def test_wgmma_forward_matches_exact_and_mma(dims, P, monkeypatch):
    """Partial tiles of both warp groups (63, 65, 129 rows), one row, and more
    tiles than resident blocks (300 007: each block goes round its loop)."""
    ws = weights(dims, seed=P)
    x = features(P, dims[0], seed=P + 1)
    fast, mma = both_kernels(x, ws, monkeypatch)
    exact = ref_mlp(x.double(), [w.detach().double() for w in ws])
    assert fast.shape == (P, dims[2]) and torch.isfinite(fast).all(), "rows left unwritten"
    assert rel(fast, exact) < TOLERANCES["forward"]
    # The same f16 products summed in another order: as close to exact as mma.sync, and near it.
    assert rel(fast, exact) < 2 * rel(mma, exact) + 2e-4
    assert rel(fast, mma) < TOLERANCES["forward"]


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("dims", CONFIGS64, ids=lambda d: "x".join(map(str, d)))
def test_wgmma_forward_grouped(dims, monkeypatch):
    G, P = 3, 9_001
    ws = weights(dims, groups=G, seed=7)
    x = features(P, dims[0], seed=8)
    cls = torch.randint(0, G, (P,), generator=torch.Generator().manual_seed(10)).cuda()
    cls[:5] = 2
    fast, mma = both_kernels(x, ws, monkeypatch, grouped=cls)
    assert torch.isfinite(fast).all()
    assert rel(fast, mma) < TOLERANCES["forward"]
    for c in range(G):
        idx = (cls == c).nonzero().squeeze(1)
        assert rel(fast[idx], ref_mlp(x[idx].double(), [w[c].detach().double() for w in ws])) < TOLERANCES["forward"]


@pytest.mark.usefixtures("needs_wgmma")
def test_wgmma_forward_uses_every_weight(wgmma_on):
    dims = CONFIGS64[0]
    ws = weights(dims, seed=3)
    x = features(4_097, dims[0], seed=4)
    with torch.no_grad():
        y = _cuda.fused_mlp(x, ws, SLOPE)
        for i in range(len(ws)):
            moved = [w.detach().clone() for w in ws]
            moved[i][0].mul_(-1)  # one row of one matrix
            assert rel(_cuda.fused_mlp(x, moved, SLOPE), y) > 1e-3, i


@pytest.mark.usefixtures("needs_wgmma")
def test_wgmma_forward_keeps_gradients_right(wgmma_on):
    """Training with the switch on: the forward on wgmma, the backward (which
    recomputes the forward on mma.sync) unchanged against the switch off."""
    dims = [d for d in CONFIGS64 if d in [list(s.mlp.as_tuple()) for s in fused_shapes(train=True)]][0]
    ws = weights(dims, seed=5)
    x = features(2_001, dims[0], seed=6)
    gy = torch.randn(2_001, dims[2], device="cuda")
    g_on = torch.autograd.grad(_cuda.fused_mlp(x, ws, SLOPE), ws, gy)
    mlp_op.WGMMA_FORWARD = False
    g_off = torch.autograd.grad(_cuda.fused_mlp(x, ws, SLOPE), ws, gy)
    assert all(torch.equal(a, b) for a, b in zip(g_on, g_off))


def test_switch_off_or_other_width_stays_on_mma(monkeypatch):
    x = torch.zeros(4, 32, device="cuda")
    monkeypatch.setattr(mlp_op, "WGMMA_FORWARD", False)
    assert not mlp_op.use_wgmma(x, [32, 64, 16, 6])
    monkeypatch.setattr(mlp_op, "WGMMA_FORWARD", True)
    assert not mlp_op.use_wgmma(x, [32, 96, 16, 6])
    assert not mlp_op.use_wgmma(x, [32, 64, 80, 6])
    assert mlp_op.use_wgmma(x, [32, 64, 16, 6]) == hopper()
    assert mlp_op.use_wgmma(x, [32, 128, 80, 4]) == hopper()
    monkeypatch.setattr(mlp_op, "WGMMA_FORWARD_128", False)
    assert not mlp_op.use_wgmma(x, [32, 128, 16, 6])


def test_other_gpus_log_once_and_use_mma(wgmma_on, caplog, monkeypatch):
    if hopper():
        pytest.skip("the log is for GPUs that do not run the wgmma forward")
    monkeypatch.setattr(mlp_op, "_not_built_logged", set())
    x = torch.zeros(4, 32, device="cuda")
    with caplog.at_level(logging.INFO, logger=mlp_op.__name__):
        assert not mlp_op.use_wgmma(x, [32, 64, 16, 6])
        assert not mlp_op.use_wgmma(x, [32, 64, 16, 6])
    assert sum("wgmma" in r.getMessage() for r in caplog.records) == 1


def test_binding_refuses_what_it_cannot_run():
    dims = CONFIGS64[0]
    w16 = torch.zeros(sum(r * c for r, c in [(64, dims[0])] + [(64, 64)] * (dims[3] - 1) + [(dims[2], 64)]),
                      device="cuda", dtype=torch.float16)
    x = torch.zeros(8, dims[0], device="cuda")
    if not hopper():
        with pytest.raises(Exception, match="Hopper"):
            unwrap(ext().mlp_forward(x, w16, None, None, dims, SLOPE, True))
    wide = [d for d in (list(s.mlp.as_tuple()) for s in fused_shapes()) if d[1] not in (64, 128)]
    if wide:
        d = wide[0]
        n = sum(r * c for r, c in [(d[1], d[0])] + [(d[1], d[1])] * (d[3] - 1) + [(d[2], d[1])])
        with pytest.raises(Exception, match="hidden widths 64 and 128"):
            unwrap(ext().mlp_forward(torch.zeros(8, d[0], device="cuda"),
                                     torch.zeros(n, device="cuda", dtype=torch.float16), None, None, d, SLOPE, True))


#: The 64-wide colour-level shapes of kernels/shapes.def.
COLOUR64 = [list(s.mlp.as_tuple()) for s in fused_shapes("colour") if s.mlp.as_tuple()[1] == 64]


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("dims", COLOUR64, ids=lambda d: "x".join(map(str, d)))
@pytest.mark.parametrize("mode", ["softmax", "plain"])
@pytest.mark.parametrize("shape", [(2, 37, 53), (1, 1, 3), (3, 5, 130), (1, 301, 517)], ids=str)
def test_colour_level_on_wgmma(shape, mode, dims, monkeypatch):
    """The colour level with its MLP on wgmma (the epilogue applying kernels
    from R = 1 row block a warp) against the float64 level and the mma.sync
    level; its weight gradients unchanged (the backward recomputes on mma.sync)."""
    from test_colour_level import inputs, spec
    from test_colour_level import weights as colour_weights

    from kpnt.ref.colour_level import colour_level as ref_colour_level

    N, h, w = shape
    ws = colour_weights(sum(shape), mode, dims)
    D, var = inputs(N, h, w, seed=h * w)
    s = spec(mode, True, dims)
    ref = ref_colour_level(D.double(), var.double(), [x.detach().double() for x in ws], s)
    gI = torch.randn(N, 3, h, w, device="cuda")
    out = {}
    for on in (True, False):
        monkeypatch.setattr(mlp_op, "WGMMA_FORWARD", on)
        poison()
        I, a = _cuda.fused_colour_level(D, var, ws, s)
        out[on] = (I, a, torch.autograd.grad(I, ws, gI))
    I, a, g = out[True]
    I_mma, a_mma, g_mma = out[False]
    assert torch.isfinite(I).all() and torch.isfinite(a).all(), "outputs left unwritten"
    # Against float64: the level's own tolerance, or (plain normalisation near a zero kernel sum, where any f16
    # evaluation moves) no worse than twice the mma.sync level's distance.
    tol = TOLERANCES["forward"]
    assert rel(I, ref[0]) < max(tol, 2 * rel(I_mma, ref[0]) + 1e-4)
    assert rel(a, ref[1]) < max(tol, 2 * rel(a_mma, ref[1]) + 1e-4)
    assert rel(I, I_mma) < max(tol, 2 * rel(I_mma, ref[0])) and rel(a, a_mma) < max(tol, 2 * rel(a_mma, ref[1]))
    assert all(torch.equal(x, y) for x, y in zip(g, g_mma))


def launched_kernels(fn) -> list[str]:
    """Names of the CUDA kernels ``fn`` launches (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.key for e in prof.key_averages()]


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("switch", [True, False])
def test_the_switch_picks_the_kernel_that_runs(switch, monkeypatch):
    """Not only the same numbers: with the switch on, the wgmma kernel is what
    runs (for the bare op and the colour level), and with it off it is not."""
    from test_colour_level import inputs, spec
    from test_colour_level import weights as colour_weights

    monkeypatch.setattr(mlp_op, "WGMMA_FORWARD", switch)
    dims = CONFIGS64[0]
    ws = weights(dims, seed=1)
    x = features(1_000, dims[0], seed=2)
    with torch.no_grad():
        names = launched_kernels(lambda: _cuda.fused_mlp(x, ws, SLOPE))
    assert any("mlp_fwd_wgmma_kernel" in n for n in names) == switch, names
    assert any("mlp_fwd_kernel" in n for n in names) == (not switch), names
    if COLOUR64:
        cw = colour_weights(1, "softmax", COLOUR64[0])
        D, var = inputs(1, 20, 30, seed=3)
        with torch.no_grad():
            names = launched_kernels(lambda: _cuda.fused_colour_level(D, var, cw, spec("softmax", True, COLOUR64[0])))
        assert any("mlp_fwd_wgmma_kernel" in n for n in names) == switch, names


#: Every trainable front line of kernels/shapes.def whose MLP the wgmma forward runs (hidden 64; 16, 32 or 64
#: outputs); trainable, as the test checks the gradients too.
FRONT64 = [s for s in fused_shapes("front", train=True) if s.mlp.hidden == 64 and s.mlp.n_out in mlp_op.WGMMA_OUTPUTS]


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("shape", FRONT64, ids=str)
@pytest.mark.parametrize("mode", ["softmax", "plain"])
@pytest.mark.parametrize("cfa_name,size", [("bayer", (2, 23, 31)), ("xtrans", (1, 3, 4)), ("xtrans25", (1, 301, 517))],
                         ids=lambda v: str(v))
def test_front_level_on_wgmma(shape, mode, cfa_name, size, monkeypatch):
    """The front level with its MLP on wgmma (kpnt.ops._cuda.front_level's
    switch; its tap-gather input and kernel-applying output policies from
    R = 1 row block a warp) against the float64 level and the mma.sync level;
    gradients unchanged (the backward recomputes the MLP on mma.sync)."""
    from test_front_level import inputs, weight_sets

    from kpnt.mosaic.cfa import CFA
    from kpnt.ops._cuda import front_level as front_op
    from kpnt.ref.front_level import front_level as ref_front
    from kpnt.spec import FrontLevelSpec

    cfa = {"bayer": CFA.bayer("GRBG"), "xtrans": CFA.xtrans(), "xtrans25": CFA.xtrans(2, 5)}[cfa_name]
    spec = FrontLevelSpec(radius=shape.key[0], kernels="shared" if shape.key[1] == 1 else "per_channel",
                          width=64, hidden_layers=shape.mlp.n_hidden, leaky_slope=SLOPE, apply_mode=mode)
    N, H, W = size
    x, U, S, noise = inputs(cfa, N, H, W, seed=H * W)
    sets = weight_sets(cfa.n_classes, seed=W, spec=spec)
    flat = [w for ws in sets for w in ws]
    ref = ref_front(x.double(), U.detach().double(), S.double(), noise.double(), cfa,
                    [[w.detach().double() for w in ws] for ws in sets], spec)
    gO = torch.randn(N, 3, H, W, device="cuda")
    out = {}
    for on in (True, False):
        monkeypatch.setattr(front_op, "WGMMA_FORWARD", on)
        poison()
        O = _cuda.fused_front_level(x, U, S, noise, cfa, sets, spec)
        out[on] = (O, torch.autograd.grad(O, [U, *flat], gO))
    (O, g), (O_mma, g_mma) = out[True], out[False]
    assert torch.isfinite(O).all(), "outputs left unwritten"
    # Against float64: the level's own tolerance, or (plain normalisation near a zero kernel sum, where any f16
    # evaluation moves) no worse than twice the mma.sync level's distance; against the mma.sync level, what the
    # triangle inequality allows two such results.
    tol, ref_d = TOLERANCES["forward"], ref - U.detach().double()
    d_mma = rel(O_mma - U, ref_d)
    assert rel(O - U, ref_d) < max(tol, 2 * d_mma + 1e-4)
    assert rel(O - U, O_mma - U) < max(tol, 3 * d_mma + 1e-4)
    assert all(torch.equal(a, b) for a, b in zip(g, g_mma))


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("switch", [True, False])
def test_the_front_switch_picks_the_kernel_that_runs(switch, monkeypatch):
    from test_front_level import inputs, weight_sets

    from kpnt.mosaic.cfa import CFA
    from kpnt.ops._cuda import front_level as front_op
    from kpnt.spec import FrontLevelSpec

    if not FRONT64:
        pytest.skip("no front line with a 64-wide MLP compiled")
    monkeypatch.setattr(front_op, "WGMMA_FORWARD", switch)
    shape, cfa = FRONT64[0], CFA.bayer("RGGB")
    spec = FrontLevelSpec(radius=shape.key[0], kernels="shared" if shape.key[1] == 1 else "per_channel", width=64,
                          hidden_layers=shape.mlp.n_hidden, leaky_slope=SLOPE)
    x, U, S, noise = inputs(cfa, 1, 20, 30, seed=4)
    sets = weight_sets(cfa.n_classes, seed=5, spec=spec)
    with torch.no_grad():
        names = launched_kernels(lambda: _cuda.fused_front_level(x, U, S, noise, cfa, sets, spec))
    assert any("mlp_fwd_wgmma_kernel" in n for n in names) == switch, names
    assert any("mlp_fwd_kernel" in n for n in names) == (not switch), names
