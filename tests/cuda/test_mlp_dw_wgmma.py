"""The split backward of the 128-wide MLPs the shipped models train: its
weight-gradient pass on Hopper's wgmma (kernels/mlp_dw_wgmma.cuh) against
the f16-rounding float64 reference, the exact one and the mma.sync pass (which
reads the same core-matrix workspace), bare op, grouped, colour level and
per-channel front level; and the training forward that stores the
activations (kpnt::mlp_fwd_store) against the recomputing backward."""
import pytest
import torch

from kpnt.ops import _cuda
from kpnt.ops._cuda import mlp as mlp_op
from kpnt.testing import TOLERANCES, fused_shapes, grad_vs_exact_bound
from kpnt.testing import rel_error as rel

from test_fused_mlp import CONFIGS, SLOPE, features, poison, ref_mlp_f16, reference_grads, weights
from test_mlp_bwd_wgmma import (assert_same_up_to_order, check_grouped_per_class, colour_grads_on_off,
                                front_grads_on_off, gradients)
from test_mlp_wgmma import launched_kernels, needs_wgmma  # noqa: F401 (a fixture)

pytestmark = pytest.mark.cuda

TOL_GRAD = TOLERANCES["grad"]
#: Every trainable 128-wide shape (the split backward's; WgDw::shape_ok takes them all).
CONFIGS_128 = [d for d in CONFIGS if d[1] == 128]


def names_of(dims):
    return "x".join(map(str, dims))


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("dims", CONFIGS_128, ids=names_of)
@pytest.mark.parametrize("P", [1, 127, 129, 20_011, 300_007])
def test_wgmma_dw_matches_references_and_mma(dims, P, monkeypatch):
    """One row, a partial tile, a tile and a row, and more tiles than the
    pass's blocks (300 007: each block goes round its loop through both
    shared-memory stages).  Both passes against both references: the
    mma.sync pass reads the same workspace layout."""
    ws = weights(dims, seed=P)
    x = features(P, dims[0], seed=P + 1).requires_grad_()
    gy = torch.randn(P, dims[2], device="cuda")
    exact, ref16 = reference_grads(x, ws, gy)
    fast = gradients(x, ws, gy, monkeypatch, True)
    mma = gradients(x, ws, gy, monkeypatch, False)
    for i, (a, m, b, c) in enumerate(zip(fast, mma, ref16, exact)):
        name = "x" if i == 0 else f"weights[{i - 1}]"
        for got, which in ((a, "wgmma"), (m, "mma.sync")):
            assert torch.isfinite(got).all(), (which, name)
            assert rel(got, b) < TOL_GRAD, (which, name, rel(got, b))
            assert rel(got, c) <= grad_vs_exact_bound(rel(got, b), rel(b, c)), (which, name)
        # The same f16 workspace and tile scaling: only f32 summation orders differ.
        assert rel(a, m) < TOL_GRAD, name


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("dims", CONFIGS_128, ids=names_of)
def test_every_weight_moves_its_own_gradient(dims, monkeypatch):
    """A transposed product or a swapped block of one dW keeps its norm: each
    matrix's gradient is compared element by element with mma.sync's."""
    ws = weights(dims, seed=41)
    x = features(9_001, dims[0], seed=42)
    gy = torch.randn(9_001, dims[2], device="cuda")
    fast = gradients(x, ws, gy, monkeypatch, True)
    mma = gradients(x, ws, gy, monkeypatch, False)
    for i, (a, m) in enumerate(zip(fast, mma)):
        assert (a - m).abs().max() <= 2e-2 * m.abs().max(), f"weights[{i}]"


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("dims", CONFIGS_128, ids=names_of)
@pytest.mark.parametrize("on", [True, False], ids=["wgmma", "mma"])
def test_grouped_with_an_empty_group(dims, on, monkeypatch):
    """Uneven groups over many tiles, and a group with no rows, whose weight
    gradient must be exactly zero (tile_base, the per-group grid)."""
    check_grouped_per_class(dims, 4, 70_001, 3, (17, 18, 19), on, monkeypatch)


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("switch", [True, False])
def test_the_switch_picks_the_pass_that_runs(switch, monkeypatch):
    monkeypatch.setattr(mlp_op, "WGMMA_BACKWARD", switch)
    dims = CONFIGS_128[0]
    ws = weights(dims, seed=1)
    x = features(1_000, dims[0], seed=2)
    gy = torch.randn(1_000, dims[2], device="cuda")
    y = _cuda.fused_mlp(x, ws, SLOPE)
    names = launched_kernels(lambda: torch.autograd.grad(y, ws, gy))
    assert any("mlp_bwd_split_kernel" in n for n in names), names
    assert any("mlp_dw_wgmma_kernel" in n for n in names) == switch, names
    assert any("mlp_dw_kernel" in n for n in names) == (not switch), names


def test_use_wgmma_backward_shapes():
    """Which widths ask for the wgmma backward at all (no GPU query for a refusal)."""
    x = torch.zeros(4, 32, device="cuda")
    assert not mlp_op.use_wgmma_backward(x, [32, 128, 16, 6], switch=False)
    assert not mlp_op.use_wgmma_backward(x, [32, 96, 16, 6], switch=True)
    assert not mlp_op.use_wgmma_backward(x, [32, 128, 20, 6], switch=True)
    assert not mlp_op.use_wgmma_backward(x, [32, 128, 264, 6], switch=True)


COLOUR128 = [list(s.mlp.as_tuple()) for s in fused_shapes("colour", train=True) if s.mlp.hidden == 128]
FRONT128 = [s for s in fused_shapes("front", train=True) if s.mlp.hidden == 128]


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("mode", ["softmax", "plain"])
@pytest.mark.parametrize("size", [(1, 9, 13), (2, 150, 160)], ids=str)
def test_colour_level_128_on_wgmma(mode, size, monkeypatch):
    """The shipped colour level's weight gradient with the switch on: the
    wgmma dW pass runs, and the gradient is mma.sync's up to f32 summation order."""
    if not COLOUR128:
        pytest.skip("no colour line with a 128-wide MLP compiled")
    assert_same_up_to_order(colour_grads_on_off(COLOUR128[0], mode, size, "mlp_dw_wgmma_kernel", monkeypatch))


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("cfa_name,size", [("bayer", (2, 23, 31)), ("xtrans", (1, 301, 517))], ids=lambda v: str(v))
def test_front_level_128_on_wgmma(cfa_name, size, monkeypatch):
    """The shipped front level (per-channel kernels, 3 x 25 + 1 outputs: the
    output matrix's product is 64 + 16 columns wide) with the switch on:
    every class's weight gradient and dL/dU are mma.sync's up to f32 order."""
    if not FRONT128:
        pytest.skip("no front line with a 128-wide MLP compiled")
    out = front_grads_on_off(FRONT128[0], 128, cfa_name, size, "mlp_dw_wgmma_kernel", monkeypatch)
    assert_same_up_to_order(out, first="U")


# ---- the training forward that stores the activations (STORE_FORWARD, kpnt::mlp_fwd_store)


def store_run(x, ws, gy, monkeypatch, store, grouped=None, wgmma=False):
    """(y, gradients, kernels launched by the forward) with the storing forward
    on or off, the forward on wgmma or mma.sync."""
    monkeypatch.setattr(mlp_op, "STORE_FORWARD", store)
    monkeypatch.setattr(mlp_op, "WGMMA_FORWARD", wgmma)
    poison()
    box = {}

    def fwd():
        box["y"] = (_cuda.fused_mlp(x, ws, SLOPE) if grouped is None
                    else _cuda.fused_mlp_grouped(x, grouped, ws, SLOPE))

    names = launched_kernels(fwd)
    inputs = [x, *ws] if x.requires_grad else list(ws)
    return box["y"], torch.autograd.grad(box["y"], inputs, gy), names


@pytest.mark.parametrize("dims", CONFIGS_128, ids=names_of)
@pytest.mark.parametrize("P", [1, 129, 300_007])
def test_stored_forward_gives_the_recomputed_gradients_bit_for_bit(dims, P, monkeypatch):
    """The storing forward (mma.sync) writes the f16 activations and sign
    bits the recomputing data pass would compute, in the same layout: y, dL/dx
    and every dW are the same bits either way.  Its own forward kernel runs."""
    ws = weights(dims, seed=P + 5)
    x = features(P, dims[0], seed=P + 6).requires_grad_()
    gy = torch.randn(P, dims[2], device="cuda")
    y1, g1, names1 = store_run(x, ws, gy, monkeypatch, True)
    y0, g0, names0 = store_run(x, ws, gy, monkeypatch, False)
    assert any("mlp_fwd_store_kernel" in n for n in names1), names1
    assert not any("mlp_fwd_store_kernel" in n for n in names0), names0
    assert torch.equal(y1, y0)
    for i, (a, b) in enumerate(zip(g1, g0)):
        assert torch.isfinite(a).all() and torch.equal(a, b), ("x" if i == 0 else f"weights[{i - 1}]")


@pytest.mark.parametrize("dims", CONFIGS_128, ids=names_of)
def test_stored_forward_grouped_with_an_empty_group(dims, monkeypatch):
    G, P, used = 4, 70_001, 3
    ws = weights(dims, groups=G, seed=23)
    x = features(P, dims[0], seed=24)
    cls = torch.randint(0, used, (P,), generator=torch.Generator().manual_seed(25)).cuda()
    gy = torch.randn(P, dims[2], device="cuda")
    y1, g1, names = store_run(x, ws, gy, monkeypatch, True, grouped=cls)
    y0, g0, _ = store_run(x, ws, gy, monkeypatch, False, grouped=cls)
    assert any("mlp_fwd_store_kernel" in n for n in names), names
    assert torch.equal(y1, y0)
    assert all(torch.equal(a, b) for a, b in zip(g1, g0))
    assert all(torch.equal(a[used:], torch.zeros_like(a[used:])) for a in g1)


def test_no_gradient_no_storing(monkeypatch):
    """Inference (no_grad, or nothing that wants a gradient) runs the plain forward."""
    monkeypatch.setattr(mlp_op, "STORE_FORWARD", True)
    dims = CONFIGS_128[0]
    ws = weights(dims, seed=3)
    x = features(500, dims[0], seed=4)
    with torch.no_grad():
        names = launched_kernels(lambda: _cuda.fused_mlp(x, ws, SLOPE))
    assert not any("mlp_fwd_store_kernel" in n for n in names), names
    frozen = [w.detach() for w in ws]
    names = launched_kernels(lambda: _cuda.fused_mlp(x, frozen, SLOPE))
    assert not any("mlp_fwd_store_kernel" in n for n in names), names


def test_stored_backward_refuses_a_foreign_workspace():
    from kpnt.ops._cuda.extension import ext, unwrap

    dims = CONFIGS_128[0]
    ws = weights(dims, seed=8)
    w16 = torch.cat([w.detach().reshape(-1) for w in ws]).half()
    x = features(300, dims[0], seed=9)
    y, work = unwrap(ext().mlp_forward_store(x, w16, None, None, dims, SLOPE))
    gy = torch.randn(300, dims[2], device="cuda")
    with pytest.raises(Exception, match="stored forward's workspace"):
        unwrap(ext().mlp_backward_stored(x[:200], w16, None, None, gy[:200], work, dims, SLOPE, False))
    wide64 = [d for d in CONFIGS if d[1] == 64]
    if wide64:
        d = wide64[0]
        w64 = torch.cat([w.detach().reshape(-1) for w in weights(d, seed=1)]).half()
        with pytest.raises(Exception, match="hidden width 128"):
            unwrap(ext().mlp_forward_store(features(10, d[0]), w64, None, None, d, SLOPE))


def test_stored_backward_fills_nothing_the_size_of_the_workspace(monkeypatch):
    """Autograd would hand the backward a zero gradient for the workspace
    output, a fill of its whole size on every step (13 GB at 4 M rows)
    unless the op asks for none (ctx.set_materialize_grads(False))."""
    monkeypatch.setattr(mlp_op, "STORE_FORWARD", True)
    dims = CONFIGS_128[0]
    ws = weights(dims, seed=12)
    x = features(5_000, dims[0], seed=13)
    gy = torch.randn(5_000, dims[2], device="cuda")
    y = _cuda.fused_mlp(x, ws, SLOPE)
    names = launched_kernels(lambda: torch.autograd.grad(y, ws, gy))
    assert any("mlp_bwd_split_kernel" in n for n in names), names
    assert not any("FillFunctor<unsigned char>" in n for n in names), names


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("dims", CONFIGS_128, ids=names_of)
@pytest.mark.parametrize("P", [1, 129, 300_007])
def test_stored_forward_on_wgmma(dims, P, monkeypatch):
    """The storing forward on wgmma (mlp_fwd_store_wgmma_kernel): y and the
    gradients of its stored activations against the recomputing mma.sync
    path (f32 summation orders differ, so f16 roundings may) and against the
    f16-rounding float64 reference."""
    ws = weights(dims, seed=P + 7)
    x = features(P, dims[0], seed=P + 8).requires_grad_()
    gy = torch.randn(P, dims[2], device="cuda")
    y1, g1, names = store_run(x, ws, gy, monkeypatch, True, wgmma=True)
    y0, g0, _ = store_run(x, ws, gy, monkeypatch, False, wgmma=False)
    assert any("mlp_fwd_store_wgmma_kernel" in n for n in names), names
    assert rel(y1, y0) < TOLERANCES["forward"]
    x64 = x.detach().double().requires_grad_()
    ws64 = [w.detach().double().requires_grad_() for w in ws]
    ref16 = torch.autograd.grad(ref_mlp_f16(x64, ws64), [x64, *ws64], gy.double())
    for i, (a, b, r) in enumerate(zip(g1, g0, ref16)):
        name = "x" if i == 0 else f"weights[{i - 1}]"
        assert torch.isfinite(a).all() and rel(a, b) < TOL_GRAD and rel(a, r) < TOL_GRAD, name


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("dims", CONFIGS_128, ids=names_of)
@pytest.mark.parametrize("P", [1, 127, 129, 300_007])
def test_forward_128_on_wgmma(dims, P, monkeypatch):
    """The plain 128-wide forward on wgmma (WGMMA_FORWARD_128) against
    mma.sync and the f16-rounding float64 reference; the switch picks the kernel."""
    ws = weights(dims, seed=P + 9)
    x = features(P, dims[0], seed=P + 10)
    out = {}
    for on in (True, False):
        monkeypatch.setattr(mlp_op, "WGMMA_FORWARD_128", on)
        poison()
        with torch.no_grad():
            names = launched_kernels(lambda: out.__setitem__(on, _cuda.fused_mlp(x, ws, SLOPE)))
        assert any("mlp_fwd_wgmma_kernel" in n for n in names) == on, names
    with torch.no_grad():
        ref = ref_mlp_f16(x.double(), [w.detach().double() for w in ws])
    assert torch.isfinite(out[True]).all()
    assert rel(out[True], ref) < TOLERANCES["forward"]
    assert rel(out[True], out[False]) < TOLERANCES["forward"]


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("mode", ["softmax", "plain"])
def test_colour_level_128_forward_on_wgmma(mode, monkeypatch):
    """The shipped colour level's forward with its MLP on wgmma against mma.sync."""
    from test_colour_level import inputs, spec
    from test_colour_level import weights as colour_weights

    if not COLOUR128:
        pytest.skip("no colour line with a 128-wide MLP compiled")
    dims = COLOUR128[0]
    cw = colour_weights(1, mode, dims)
    D, var = inputs(2, 150, 160, seed=5)
    out = {}
    for on in (True, False):
        monkeypatch.setattr(mlp_op, "WGMMA_FORWARD_128", on)
        poison()
        with torch.no_grad():
            names = launched_kernels(lambda: out.__setitem__(on, _cuda.fused_colour_level(D, var, cw,
                                                                                           spec(mode, True, dims))))
        assert any("mlp_fwd_wgmma_kernel" in n for n in names) == on, names
    for i, (a, b) in enumerate(zip(out[True], out[False])):
        assert torch.isfinite(a).all() and rel(a, b) < TOLERANCES["forward"], i
